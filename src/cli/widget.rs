//! `callgate widget …`

use std::fmt;
use std::str::FromStr;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::output::{Table, fields, json, or_dash, yes_no};
use super::trunk::switch;
use super::{CliError, ListArgs, ShowArgs};
use crate::db::widgets::{DEFAULT_MAX_CONCURRENT, DEFAULT_MAX_PER_MINUTE};
use crate::db::{
    CallerId, Database, Destination, HostPort, Name, NewWidget, Origin, Origins, SecretChange, Widget,
    WidgetChanges,
};

#[derive(Debug, Subcommand)]
pub(super) enum WidgetCommand {
    /// Add a widget: a click-to-call button that calls DESTINATION through TRUNK.
    Add(AddArgs),
    /// List widgets by name.
    List(ListArgs),
    /// Show one widget, including the public id its embed code carries.
    Show(ShowArgs),
    /// Change a widget; only the options given change.
    Update(UpdateArgs),
    /// Remove a widget (its call records stay). Websites still embedding it stop working.
    Remove(NameArg),
    /// Print the HTML to paste into a website to embed the widget.
    Snippet(SnippetArgs),
    /// Print a signed token for a widget created with --require-token, valid for --ttl seconds. Website
    /// backends mint their own the same way: see the README's "Widget tokens".
    Token(TokenArgs),
    /// Print the widget's token-signing secret (and nothing else) on stdout, for the website backend that
    /// mints tokens. The one command that prints a secret: each export is logged at warn level.
    Secret(NameArg),
}

impl WidgetCommand {
    /// Whether the command prints a secret, so that its audit line needs the log set up.
    pub(super) fn exports_secret(&self) -> bool {
        matches!(self, Self::Secret(_))
    }
}

#[derive(Debug, Args)]
pub(super) struct TokenArgs {
    /// The widget's name.
    name: Name,
    /// How long the token stays valid, in seconds (1 to 31536000).
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    ttl: u64,
}

#[derive(Debug, Args)]
pub(super) struct NameArg {
    /// The widget's name.
    name: Name,
}

#[derive(Debug, Args)]
pub(super) struct SnippetArgs {
    /// The widget's name.
    name: Name,
    /// Base URL browsers reach the gateway at: http(s)://HOST[:PORT][/PATH].
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    gateway: GatewayUrl,
}

const ORIGIN_HELP: &str = "Website allowed to use the widget, exactly https://HOST[:PORT] with no path; \
                           http:// only for localhost and 127.0.0.1 (local development). Repeat for several";

#[derive(Debug, Args)]
pub(super) struct AddArgs {
    /// Unique name: 1 to 64 of A-Z a-z 0-9 . _ - starting with a letter or digit.
    name: Name,
    /// The trunk calls go through.
    #[arg(long)]
    trunk: Name,
    /// The number or extension called: digits, * and # with an optional leading +, or a SIP user name.
    #[arg(long)]
    destination: Destination,
    #[arg(long = "origin", value_name = "ORIGIN", required = true, help = ORIGIN_HELP)]
    origins: Vec<Origin>,
    /// Caller id presented to the PBX (a number or SIP user name).
    #[arg(long)]
    caller_id: Option<CallerId>,
    /// Calls allowed at the same time.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONCURRENT, value_parser = limit)]
    max_concurrent: u32,
    /// Calls allowed to start per minute.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PER_MINUTE, value_parser = limit)]
    max_per_minute: u32,
    /// Accept only calls carrying a token signed with the widget's secret (generated now).
    #[arg(long)]
    require_token: bool,
    /// Add it disabled: it takes no calls until `widget update NAME --enable`.
    #[arg(long)]
    disabled: bool,
}

#[derive(Debug, Args)]
pub(super) struct UpdateArgs {
    /// The widget's name.
    name: Name,
    /// New trunk.
    #[arg(long)]
    trunk: Option<Name>,
    /// New destination.
    #[arg(long)]
    destination: Option<Destination>,
    #[arg(
        long = "origin",
        value_name = "ORIGIN",
        help = "Replaces the allowed origins (repeat for several); same rules as for `add`"
    )]
    origins: Vec<Origin>,
    /// New caller id.
    #[arg(long)]
    caller_id: Option<CallerId>,
    /// Present the trunk's default caller id.
    #[arg(long, conflicts_with = "caller_id")]
    no_caller_id: bool,
    /// New limit of calls at the same time.
    #[arg(long, value_name = "N", value_parser = limit)]
    max_concurrent: Option<u32>,
    /// New limit of calls started per minute.
    #[arg(long, value_name = "N", value_parser = limit)]
    max_per_minute: Option<u32>,
    /// Require signed tokens (keeps the secret if there is one).
    #[arg(long)]
    require_token: bool,
    /// Require tokens signed with a new secret; tokens signed with the old one stop working.
    #[arg(long, conflicts_with = "require_token")]
    rotate_secret: bool,
    /// Stop requiring tokens and forget the secret.
    #[arg(long, conflicts_with_all = ["require_token", "rotate_secret"])]
    no_require_token: bool,
    /// Accept calls (a widget whose trunk was removed needs --trunk too).
    #[arg(long)]
    enable: bool,
    /// Stop accepting calls.
    #[arg(long, conflicts_with = "enable")]
    disable: bool,
}

fn limit(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(limit) if (1..=100_000).contains(&limit) => Ok(limit),
        _ => Err("a limit is a whole number from 1 to 100000".to_owned()),
    }
}

/// Where browsers load `widget.js` from: `http(s)://host[:port]` and an optional path prefix, printed
/// without a trailing slash. Its characters are safe inside an HTML attribute.
#[derive(Debug, Clone)]
pub(super) struct GatewayUrl(String);

impl FromStr for GatewayUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const PROBLEM: &str = "the gateway URL is http(s)://HOST[:PORT][/PATH]";
        let rest = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"))
            .ok_or(PROBLEM)?;
        let (authority, path) = rest
            .split_once('/')
            .map_or((rest, ""), |(authority, path)| (authority, path));
        authority.parse::<HostPort>().map_err(|_| PROBLEM)?;
        let path_ok = path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.' | '~'));
        if !path_ok {
            return Err(PROBLEM.to_owned());
        }
        Ok(Self(text.trim_end_matches('/').to_owned()))
    }
}

impl fmt::Display for GatewayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The embed code: the public id is base64url and the gateway URL is checked, so neither needs escaping.
fn snippet(gateway: &GatewayUrl, widget: &Widget) -> String {
    format!(
        "<script src=\"{gateway}/widget.js\" data-widget=\"{}\" async></script>\n",
        widget.public_id
    )
}

pub(super) async fn run(command: WidgetCommand, database: &Database) -> Result<String, CliError> {
    let widgets = database.widgets();
    match command {
        WidgetCommand::Add(args) => {
            let new = NewWidget {
                caller_id: args.caller_id,
                max_concurrent: args.max_concurrent,
                max_per_minute: args.max_per_minute,
                require_token: args.require_token,
                enabled: !args.disabled,
                ..NewWidget::new(
                    args.name,
                    args.trunk,
                    args.destination,
                    Origins::new(args.origins)?,
                )
            };
            let widget = widgets.add(new).await?;
            Ok(format!(
                "added widget {} with public id {}\n",
                widget.name, widget.public_id
            ))
        }
        WidgetCommand::List(args) => {
            let list = widgets.list().await?;
            if args.json {
                return Ok(json(&list.iter().map(WidgetView::from).collect::<Vec<_>>()));
            }
            let mut table = Table::new(&[
                "NAME",
                "PUBLIC ID",
                "TRUNK",
                "DESTINATION",
                "ORIGINS",
                "CONCURRENT",
                "PER MINUTE",
                "TOKEN",
                "ENABLED",
            ]);
            for widget in &list {
                table.row(vec![
                    widget.name.to_string(),
                    widget.public_id.to_string(),
                    or_dash(widget.trunk.as_ref().map(|trunk| &trunk.name)),
                    widget.destination.to_string(),
                    widget
                        .origins
                        .iter()
                        .map(Origin::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                    widget.max_concurrent.to_string(),
                    widget.max_per_minute.to_string(),
                    yes_no(widget.secret.is_some()),
                    yes_no(widget.enabled),
                ]);
            }
            Ok(table.render())
        }
        WidgetCommand::Show(args) => {
            let widget = widgets.by_name(&args.name).await?;
            Ok(if args.json {
                json(&WidgetView::from(&widget))
            } else {
                describe(&widget)
            })
        }
        WidgetCommand::Update(args) => {
            let secret = match (args.require_token, args.rotate_secret, args.no_require_token) {
                (true, _, _) => SecretChange::Require,
                (_, true, _) => SecretChange::Rotate,
                (_, _, true) => SecretChange::Remove,
                _ => SecretChange::Keep,
            };
            let changes = WidgetChanges {
                trunk: args.trunk,
                destination: args.destination,
                // No --origin given: the list stays as it is.
                origins: Origins::new(args.origins).ok(),
                caller_id: if args.no_caller_id {
                    Some(None)
                } else {
                    args.caller_id.map(Some)
                },
                max_concurrent: args.max_concurrent,
                max_per_minute: args.max_per_minute,
                secret,
                enabled: switch(args.enable, args.disable),
            };
            let widget = widgets.update(&args.name, changes).await?;
            Ok(format!("updated widget {}\n", widget.name))
        }
        WidgetCommand::Remove(args) => {
            widgets.remove(&args.name).await?;
            Ok(format!("removed widget {}\n", args.name))
        }
        WidgetCommand::Snippet(args) => Ok(snippet(&args.gateway, &widgets.by_name(&args.name).await?)),
        WidgetCommand::Token(args) => {
            let widget = widgets.by_name(&args.name).await?;
            let Some(secret) = widget.secret.as_ref() else {
                return Err(CliError::NoTokenSecret(args.name));
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs());
            let token =
                crate::admission::mint_token(widget.public_id.as_str(), secret.expose(), now + args.ttl);
            Ok(format!("{token}\n"))
        }
        WidgetCommand::Secret(args) => {
            let widget = widgets.by_name(&args.name).await?;
            let Some(secret) = widget.secret.as_ref() else {
                return Err(CliError::NoTokenSecret(args.name));
            };
            // The audit trail of who took the key that opens the widget; the secret itself is never logged.
            tracing::warn!(
                widget = %widget.name,
                public_id = %widget.public_id,
                user = %std::env::var("USER").unwrap_or_else(|_| "-".to_owned()),
                "widget secret exported"
            );
            Ok(format!("{}\n", secret.expose()))
        }
    }
}

fn describe(widget: &Widget) -> String {
    let origins: Vec<&str> = widget.origins.iter().map(Origin::as_str).collect();
    fields(&[
        ("name", widget.name.to_string()),
        ("public id", widget.public_id.to_string()),
        ("trunk", or_dash(widget.trunk.as_ref().map(|trunk| &trunk.name))),
        ("destination", widget.destination.to_string()),
        ("origins", origins.join(" ")),
        ("caller id", or_dash(widget.caller_id.as_ref())),
        ("max concurrent", widget.max_concurrent.to_string()),
        ("max per minute", widget.max_per_minute.to_string()),
        ("require token", yes_no(widget.secret.is_some())),
        ("enabled", yes_no(widget.enabled)),
        ("created", widget.created_at.to_string()),
        ("updated", widget.updated_at.to_string()),
    ])
}

/// A widget as `--json` prints it. The keys are an interface: add keys, never rename them. The secret is
/// never included; `require_token` says whether there is one.
#[derive(Serialize)]
struct WidgetView {
    name: String,
    public_id: String,
    trunk: Option<String>,
    destination: String,
    origins: Vec<String>,
    caller_id: Option<String>,
    max_concurrent: u32,
    max_per_minute: u32,
    require_token: bool,
    enabled: bool,
    created_at: String,
    updated_at: String,
}

impl From<&Widget> for WidgetView {
    fn from(widget: &Widget) -> Self {
        Self {
            name: widget.name.to_string(),
            public_id: widget.public_id.to_string(),
            trunk: widget.trunk.as_ref().map(|trunk| trunk.name.to_string()),
            destination: widget.destination.to_string(),
            origins: widget.origins.iter().map(ToString::to_string).collect(),
            caller_id: widget.caller_id.as_ref().map(ToString::to_string),
            max_concurrent: widget.max_concurrent,
            max_per_minute: widget.max_per_minute,
            require_token: widget.secret.is_some(),
            enabled: widget.enabled,
            created_at: widget.created_at.to_string(),
            updated_at: widget.updated_at.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_are_checked_and_lose_the_trailing_slash() {
        let parse = |text: &str| text.parse::<GatewayUrl>().map(|url| url.to_string());
        assert_eq!(parse("https://gw.example/"), Ok("https://gw.example".to_owned()));
        assert_eq!(
            parse("http://127.0.0.1:8080"),
            Ok("http://127.0.0.1:8080".to_owned())
        );
        assert_eq!(
            parse("https://example.com/call-gw"),
            Ok("https://example.com/call-gw".to_owned())
        );
        for bad in [
            "gw.example",
            "ftp://gw.example",
            "https://gw example",
            "https://gw.example/\"><script>",
            "https://",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
