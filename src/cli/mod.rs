//! The `callgate` command line: `serve`, admin commands for trunks, widgets and call records, `migrate` and
//! `check-config`.
//!
//! Output: `list` prints an aligned table, `--json` an array of objects whose snake_case keys are stable;
//! `show` prints one record as `key: value` lines or one JSON object. Passwords and secrets never appear,
//! except through `widget secret`, the explicit (and logged) export of a widget's token-signing secret.
//! A failure is one line on stderr starting with `error: ` and leaves the database unchanged.

mod calls;
mod output;
mod trunk;
mod widget;

use std::io::{self, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};
use thiserror::Error;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, ConfigError, LogConfig, LogFormat};
use crate::db::{Database, DbError, InvalidValue, Name};
use crate::server::{self, ServerError};

const EXIT_CODES: &str = "\
Exit status: 0 on success; 1 when the command could not be carried out (database unreachable, I/O error);
2 when it was refused because of what was asked (bad syntax, invalid value, unknown or duplicate name,
trunk still in use). A refused command prints one line starting with 'error: ' and changes nothing.";

/// Admin and server commands of the callgate SIP-over-WebSocket gateway.
#[derive(Debug, Parser)]
#[command(name = "callgate", version, after_help = EXIT_CODES)]
struct Cli {
    /// Database: sqlite://PATH (created and migrated on first use) or postgres://USER:PASSWORD@HOST/DB.
    /// Overrides the config file's [database] url.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "CALLGATE_DATABASE_URL",
        hide_env_values = true
    )]
    database: Option<String>,
    /// Config file (TOML); the built-in defaults when absent. CALLGATE_* variables override its keys.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway: apply pending migrations, open the listeners from the config, and serve until
    /// SIGTERM or SIGINT (then drain calls for limits.drain_secs).
    Serve,
    /// Manage SIP trunks: the PBXs or carriers calls are sent to.
    #[command(subcommand)]
    Trunk(trunk::TrunkCommand),
    /// Manage widgets: click-to-call buttons on websites, each calling one destination through one trunk.
    #[command(subcommand)]
    Widget(widget::WidgetCommand),
    /// Read call detail records.
    #[command(subcommand)]
    Calls(calls::CallsCommand),
    /// Apply the database migrations this version has not applied yet (also done by `serve`).
    Migrate,
    /// Validate the configuration and print the effective settings (the database password masked).
    CheckConfig,
}

/// `--json` of the list commands.
#[derive(Debug, Args)]
struct ListArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

/// The arguments of the show commands.
#[derive(Debug, Args)]
struct ShowArgs {
    /// The name.
    name: Name,
    /// Print a JSON object.
    #[arg(long)]
    json: bool,
}

/// Why a command failed.
#[derive(Debug, Error)]
enum CliError {
    /// The configuration does not load.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The database refused or failed.
    #[error("{0}")]
    Db(#[from] DbError),
    /// A value the parser could not check on its own.
    #[error("{0}")]
    Invalid(#[from] InvalidValue),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(io::Error),
    /// The gateway could not start or stopped on an error.
    #[error("{0}")]
    Server(#[from] ServerError),
    /// The log subscriber could not be installed.
    #[error("cannot set up logging: {0}")]
    Logging(String),
    /// Standard output could not be written.
    #[error("cannot write output: {0}")]
    Output(io::Error),
    /// A token was asked for a widget created without --require-token.
    #[error(
        "widget '{0}' does not require tokens: enable them with `callgate widget update {0} --require-token`"
    )]
    NoTokenSecret(Name),
}

impl CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::Config(_) | Self::Invalid(_) | Self::NoTokenSecret(_) => ExitCode::from(2),
            Self::Db(error) if error.is_refusal() => ExitCode::from(2),
            Self::Db(_) | Self::Server(_) | Self::Logging(_) | Self::Runtime(_) | Self::Output(_) => {
                ExitCode::FAILURE
            }
        }
    }
}

/// Entry point of the `callgate` binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return report_usage_error(&error),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}

/// Help and version go out as clap renders them; any other parse error is folded into one `error: ` line
/// (clap spreads it over several, with the usage) and exits with 2.
fn report_usage_error(error: &clap::Error) -> ExitCode {
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        // Nothing sensible is left to do if the terminal is gone.
        let _ = error.print();
        return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
    }
    eprintln!("{}", one_line(&error.render().to_string()));
    ExitCode::from(2)
}

/// The message part of a rendered clap error (everything before the usage) on one line.
fn one_line(rendered: &str) -> String {
    let message: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .filter(|line| !line.is_empty())
        .collect();
    let joined = message.join(" ");
    if joined.starts_with("error:") {
        joined
    } else {
        format!("error: {joined}")
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let output = runtime.block_on(execute(cli))?;
    write_stdout(&output)
}

/// Runs the command and returns what it prints.
async fn execute(cli: Cli) -> Result<String, CliError> {
    let database_url = || database_url(cli.database.as_deref(), cli.config.as_deref());
    match cli.command {
        Command::Serve => {
            let config = effective_config(cli.database, cli.config.as_deref())?;
            serve(config).await?;
            Ok(String::new())
        }
        Command::Trunk(command) => trunk::run(command, &open(&database_url()?).await?).await,
        Command::Widget(command) => {
            if command.exports_secret() {
                // The export is audited: its warn line goes wherever the gateway's log lines go.
                init_logging(&effective_config(cli.database.clone(), cli.config.as_deref())?.log)?;
            }
            widget::run(command, &open(&database_url()?).await?).await
        }
        Command::Calls(command) => calls::run(command, &open(&database_url()?).await?).await,
        Command::Migrate => {
            let database = Database::connect(&database_url()?).await?;
            database.migrate().await?;
            database.close().await;
            Ok(format!("migrated the {} database\n", database.backend()))
        }
        Command::CheckConfig => Ok(effective_config(cli.database, cli.config.as_deref())?.to_toml()),
    }
}

/// Precedence: `--database`, then `CALLGATE_DATABASE_URL` (both via clap), then the config file, then
/// the built-in default. The config is read when it decides, or when `--config` names a file (so that a
/// broken file is reported rather than ignored).
fn database_url(flag: Option<&str>, config: Option<&Path>) -> Result<String, CliError> {
    match (flag, config) {
        (Some(url), None) => Ok(url.to_owned()),
        (flag, config) => {
            let from_config = Config::load(config)?.database.url;
            Ok(flag.map_or(from_config, str::to_owned))
        }
    }
}

/// The configuration as `serve` would run it: the file and `CALLGATE_*` variables, then `--database`.
fn effective_config(database: Option<String>, path: Option<&Path>) -> Result<Config, CliError> {
    let mut config = Config::load(path)?;
    if let Some(url) = database {
        config.database.url = url;
        config.validate()?;
    }
    Ok(config)
}

/// `callgate serve`: logging from `[log]`, the database migrated, then the gateway until a signal.
async fn serve(config: Config) -> Result<(), CliError> {
    init_logging(&config.log)?;
    let database = Database::connect(&config.database.url).await?;
    database.migrate().await?;
    tracing::info!(backend = database.backend(), url = %config.database.redacted_url(), "database ready");
    server::run(config, database).await?;
    Ok(())
}

/// Log lines go to stderr, as text or one JSON object per line; the level is an `EnvFilter` directive
/// (already checked when the config loaded).
fn init_logging(log: &LogConfig) -> Result<(), CliError> {
    let filter = EnvFilter::try_new(&log.level).map_err(|error| CliError::Logging(error.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal());
    let installed = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|error| CliError::Logging(error.to_string()))
}

/// Opens the database for an admin command, migrating a SQLite file on first use.
async fn open(url: &str) -> Result<Database, CliError> {
    Ok(Database::connect_ready(url).await?)
}

/// Writes the whole output at once; a closed pipe (`callgate … | head`) is not an error.
fn write_stdout(output: &str) -> Result<(), CliError> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(output.as_bytes()).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() != io::ErrorKind::BrokenPipe => Err(CliError::Output(error)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn clap_errors_become_one_line() {
        let error = Cli::try_parse_from(["callgate", "trunk", "add", "main"]).unwrap_err();
        assert_eq!(
            one_line(&error.render().to_string()),
            "error: the following required arguments were not provided: --host <HOST>"
        );
        let error = Cli::try_parse_from(["callgate", "trunk", "add", "main", "--host", "a b"]).unwrap_err();
        let line = one_line(&error.render().to_string());
        assert!(
            line.starts_with("error: invalid value 'a b' for '--host <HOST>': a host is"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }
}
