//! `callgate trunk …`

use clap::{Args, Subcommand};
use serde::Serialize;

use super::output::{Table, fields, json, or_dash, yes_no};
use super::{CliError, ListArgs, ShowArgs};
use crate::db::trunks::DEFAULT_REGISTER_EXPIRY;
use crate::db::{
    CodecList, Credential, Database, Host, HostPort, Name, NewTrunk, Password, Transport, Trunk, TrunkAuth,
    TrunkChanges,
};

#[derive(Debug, Subcommand)]
pub(super) enum TrunkCommand {
    /// Add a trunk.
    Add(AddArgs),
    /// List trunks in failover order (priority, then name).
    List(ListArgs),
    /// Show one trunk.
    Show(ShowArgs),
    /// Change a trunk; only the options given change.
    Update(UpdateArgs),
    /// Remove a trunk. Refused while widgets use it, naming them; with --force those widgets are disabled
    /// and left without a trunk (give them another with `widget update NAME --trunk T --enable`).
    Remove(RemoveArgs),
}

#[derive(Debug, Args)]
pub(super) struct RemoveArgs {
    /// The trunk's name.
    name: Name,
    /// Remove it even if widgets use it; they are disabled and left without a trunk.
    #[arg(long)]
    force: bool,
}

/// Digest credentials, given together.
#[derive(Debug, Args)]
struct AuthArgs {
    /// Username for digest authentication (needs --password).
    #[arg(long, requires = "password")]
    username: Option<Credential>,
    /// Password for digest authentication (needs --username). Stored for the digest; never printed.
    #[arg(long, requires = "username")]
    password: Option<Password>,
    /// Realm to answer (needs --username); any realm the trunk challenges with when absent.
    #[arg(long, requires = "username")]
    realm: Option<Credential>,
}

impl AuthArgs {
    fn into_auth(self) -> Option<TrunkAuth> {
        match (self.username, self.password) {
            (Some(username), Some(password)) => Some(TrunkAuth {
                username,
                password,
                realm: self.realm,
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct AddArgs {
    /// Unique name: 1 to 64 of A-Z a-z 0-9 . _ - starting with a letter or digit.
    name: Name,
    /// The PBX or carrier: hostname or IP address.
    #[arg(long)]
    host: Host,
    /// Its SIP port [default: 5060, or 5061 with --transport tls].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// SIP transport: udp, tcp or tls.
    #[arg(long, default_value = "udp")]
    transport: Transport,
    /// Send requests through this proxy instead of HOST:PORT.
    #[arg(long, value_name = "HOST[:PORT]")]
    outbound_proxy: Option<HostPort>,
    #[command(flatten)]
    auth: AuthArgs,
    /// Register with the trunk.
    #[arg(long)]
    register: bool,
    /// Registration lifetime in seconds (60 to 86400).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_REGISTER_EXPIRY, value_parser = register_expiry)]
    register_expiry: u32,
    /// Failover order, 0 to 65535: lower is tried first.
    #[arg(long, default_value_t = 0)]
    priority: u16,
    /// Codecs to offer, most preferred first: pcmu, pcma.
    #[arg(long, default_value = "pcmu,pcma")]
    codecs: CodecList,
    /// Add it disabled: no calls use it until `trunk update NAME --enable`.
    #[arg(long)]
    disabled: bool,
}

#[derive(Debug, Args)]
pub(super) struct UpdateArgs {
    /// The trunk's name.
    name: Name,
    /// New host: hostname or IP address.
    #[arg(long)]
    host: Option<Host>,
    /// New SIP port (not changed by --transport).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// New transport: udp, tcp or tls.
    #[arg(long)]
    transport: Option<Transport>,
    /// New outbound proxy.
    #[arg(long, value_name = "HOST[:PORT]")]
    outbound_proxy: Option<HostPort>,
    /// Send requests straight to HOST:PORT again.
    #[arg(long, conflicts_with = "outbound_proxy")]
    no_outbound_proxy: bool,
    /// New credentials: --username and --password together (and optionally --realm) replace the old ones.
    #[command(flatten)]
    auth: AuthArgs,
    /// Forget the credentials.
    #[arg(long, conflicts_with_all = ["username", "password", "realm"])]
    no_auth: bool,
    /// Register with the trunk.
    #[arg(long)]
    register: bool,
    /// Stop registering.
    #[arg(long, conflicts_with = "register")]
    no_register: bool,
    /// New registration lifetime in seconds (60 to 86400).
    #[arg(long, value_name = "SECONDS", value_parser = register_expiry)]
    register_expiry: Option<u32>,
    /// New failover priority, 0 to 65535: lower is tried first.
    #[arg(long)]
    priority: Option<u16>,
    /// New codec preference: pcmu, pcma, most preferred first.
    #[arg(long)]
    codecs: Option<CodecList>,
    /// Let calls use the trunk.
    #[arg(long)]
    enable: bool,
    /// Stop calls from using the trunk.
    #[arg(long, conflicts_with = "enable")]
    disable: bool,
}

fn register_expiry(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(seconds) if (60..=86_400).contains(&seconds) => Ok(seconds),
        _ => Err("the registration lifetime is 60 to 86400 seconds".to_owned()),
    }
}

/// `Some(true)` for `--yes`, `Some(false)` for `--no`, `None` for neither (clap refuses both).
pub(super) fn switch(on: bool, off: bool) -> Option<bool> {
    match (on, off) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

pub(super) async fn run(command: TrunkCommand, database: &Database) -> Result<String, CliError> {
    let trunks = database.trunks();
    match command {
        TrunkCommand::Add(args) => {
            let new = NewTrunk {
                name: args.name,
                host: args.host,
                port: args.port.unwrap_or(args.transport.default_port()),
                transport: args.transport,
                outbound_proxy: args.outbound_proxy,
                auth: args.auth.into_auth(),
                register: args.register,
                register_expiry: args.register_expiry,
                codecs: args.codecs,
                priority: args.priority,
                enabled: !args.disabled,
            };
            let trunk = trunks.add(new).await?;
            Ok(format!("added trunk {}\n", trunk.name))
        }
        TrunkCommand::List(args) => {
            let list = trunks.list().await?;
            if args.json {
                return Ok(json(&list.iter().map(TrunkView::from).collect::<Vec<_>>()));
            }
            let mut table = Table::new(&[
                "NAME",
                "HOST",
                "PORT",
                "TRANSPORT",
                "PRIORITY",
                "CODECS",
                "USERNAME",
                "REGISTER",
                "ENABLED",
            ]);
            for trunk in &list {
                table.row(vec![
                    trunk.name.to_string(),
                    trunk.host.to_string(),
                    trunk.port.to_string(),
                    trunk.transport.to_string(),
                    trunk.priority.to_string(),
                    trunk.codecs.to_string(),
                    or_dash(trunk.auth.as_ref().map(|auth| &auth.username)),
                    yes_no(trunk.register),
                    yes_no(trunk.enabled),
                ]);
            }
            Ok(table.render())
        }
        TrunkCommand::Show(args) => {
            let trunk = trunks.by_name(&args.name).await?;
            Ok(if args.json {
                json(&TrunkView::from(&trunk))
            } else {
                describe(&trunk)
            })
        }
        TrunkCommand::Update(args) => {
            let auth = if args.no_auth {
                Some(None)
            } else {
                args.auth.into_auth().map(Some)
            };
            let changes = TrunkChanges {
                host: args.host,
                port: args.port,
                transport: args.transport,
                outbound_proxy: if args.no_outbound_proxy {
                    Some(None)
                } else {
                    args.outbound_proxy.map(Some)
                },
                auth,
                register: switch(args.register, args.no_register),
                register_expiry: args.register_expiry,
                codecs: args.codecs,
                priority: args.priority,
                enabled: switch(args.enable, args.disable),
            };
            let trunk = trunks.update(&args.name, changes).await?;
            Ok(format!("updated trunk {}\n", trunk.name))
        }
        TrunkCommand::Remove(args) => {
            let removed = trunks.remove(&args.name, args.force).await?;
            let mut text = format!("removed trunk {}\n", args.name);
            if !removed.disabled_widgets.is_empty() {
                let names: Vec<&str> = removed.disabled_widgets.iter().map(Name::as_str).collect();
                text.push_str(&format!(
                    "disabled widgets now without a trunk: {} (re-enable with `callgate widget update NAME \
                     --trunk TRUNK --enable`)\n",
                    names.join(", ")
                ));
            }
            Ok(text)
        }
    }
}

fn describe(trunk: &Trunk) -> String {
    let auth = trunk.auth.as_ref();
    fields(&[
        ("name", trunk.name.to_string()),
        ("host", trunk.host.to_string()),
        ("port", trunk.port.to_string()),
        ("transport", trunk.transport.to_string()),
        ("outbound proxy", or_dash(trunk.outbound_proxy.as_ref())),
        ("username", or_dash(auth.map(|auth| &auth.username))),
        ("password", or_dash(auth.map(|_| "***"))),
        ("realm", or_dash(auth.and_then(|auth| auth.realm.as_ref()))),
        ("register", yes_no(trunk.register)),
        ("register expiry", format!("{} s", trunk.register_expiry)),
        ("codecs", trunk.codecs.to_string()),
        ("priority", trunk.priority.to_string()),
        ("enabled", yes_no(trunk.enabled)),
        ("created", trunk.created_at.to_string()),
        ("updated", trunk.updated_at.to_string()),
    ])
}

/// A trunk as `--json` prints it. The keys are an interface: add keys, never rename them.
#[derive(Serialize)]
struct TrunkView {
    name: String,
    host: String,
    port: u16,
    transport: &'static str,
    outbound_proxy: Option<String>,
    username: Option<String>,
    /// `"***"` when a password is set, `null` when not.
    password: Option<&'static str>,
    realm: Option<String>,
    register: bool,
    register_expiry: u32,
    codecs: Vec<&'static str>,
    priority: u16,
    enabled: bool,
    created_at: String,
    updated_at: String,
}

impl From<&Trunk> for TrunkView {
    fn from(trunk: &Trunk) -> Self {
        let auth = trunk.auth.as_ref();
        Self {
            name: trunk.name.to_string(),
            host: trunk.host.to_string(),
            port: trunk.port,
            transport: trunk.transport.as_str(),
            outbound_proxy: trunk.outbound_proxy.as_ref().map(ToString::to_string),
            username: auth.map(|auth| auth.username.to_string()),
            password: auth.map(|_| "***"),
            realm: auth.and_then(|auth| auth.realm.as_ref().map(ToString::to_string)),
            register: trunk.register,
            register_expiry: trunk.register_expiry,
            codecs: trunk
                .codecs
                .as_slice()
                .iter()
                .map(|codec| codec.as_str())
                .collect(),
            priority: trunk.priority,
            enabled: trunk.enabled,
            created_at: trunk.created_at.to_string(),
            updated_at: trunk.updated_at.to_string(),
        }
    }
}
