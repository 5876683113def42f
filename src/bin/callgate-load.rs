//! `callgate-load`: many browsers calling through a SIP-over-WebSocket gateway at once, with real
//! WebRTC media, and what it costs the gateway. See `callgate::loadgen` and docs/performance.md.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use callgate::client::OfferKind;
use callgate::loadgen::{self, LoadConfig};
use callgate::sip::Credentials;
use clap::{Parser, ValueEnum};

const EXIT_CODES: &str = "\
Exit status: 0 when the run met the thresholds; 1 when it could not run (bad option, a --pid gone,
metrics unreachable); 2 when more than --max-failed-percent of the calls failed to set up or dropped;
3 when the steady-phase loss (seen by the browsers, or by the gateway on any leg with --metrics)
exceeded --max-loss-percent.";

/// Many browsers calling through a SIP-over-WebSocket (RFC 7118) gateway at once: a WebSocket, an
/// INVITE with a WebRTC offer, ICE + DTLS-SRTP and Opus both ways at 20 ms per call, all in one
/// process. Prints setup times, loss, jitter, round trips through the far end's echo and, with
/// --pid, the gateway's CPU and memory per call in the steady phase.
#[derive(Debug, Parser)]
#[command(name = "callgate-load", version, after_help = EXIT_CODES)]
struct Args {
    /// The gateway's WebSocket URL, e.g. ws://127.0.0.1:8080/ws.
    #[arg(long, required_unless_present = "row_header", default_value = "")]
    url: String,
    /// The URI dialled, e.g. sip:WIDGET_ID@127.0.0.1.
    #[arg(long, required_unless_present = "row_header", default_value = "")]
    target: String,
    /// The Origin header of every WebSocket (the page the widget is on).
    #[arg(long)]
    origin: Option<String>,
    /// A header added to every INVITE, NAME:VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Digest user name for 401/407 challenges.
    #[arg(long, requires = "password")]
    username: Option<String>,
    /// Digest password for 401/407 challenges.
    #[arg(long, requires = "username")]
    password: Option<String>,
    /// Concurrent calls.
    #[arg(long, default_value_t = 50)]
    calls: u32,
    /// Calls started per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seconds all calls stay up together once every call is set up.
    #[arg(long, default_value_t = 30.0)]
    hold: f64,
    /// Seconds at the start of the hold left out of the steady-phase figures.
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
    /// Seconds a call may take from dialling to media up.
    #[arg(long, default_value_t = 10.0)]
    setup_timeout: f64,
    /// libopus complexity of the (pre-encoded) Opus frames sent, 0 to 10.
    #[arg(long, default_value_t = 5)]
    opus_complexity: u8,
    /// What the INVITE offers: chrome (Opus, PCMU, PCMA, telephone-event) or pcmu (PCMU only).
    #[arg(long, value_enum, default_value_t = Offer::Chrome)]
    offer: Offer,
    /// One call in this many decodes the returning audio to measure the round trip; 0 for none.
    #[arg(long, default_value_t = 10)]
    analyse_every: u32,
    /// A gateway process whose CPU and RSS are sampled (repeatable; summed).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Another process sharing the machine, reported separately (repeatable; summed), e.g. the PBX.
    #[arg(long = "other-pid")]
    other_pids: Vec<u32>,
    /// The gateway's Prometheus endpoint (http://HOST:PORT/metrics), for its per-leg packet counters.
    #[arg(long)]
    metrics: Option<String>,
    /// Address the calls' media sockets bind (their ICE host candidate).
    #[arg(long, default_value = "127.0.0.1")]
    media_ip: IpAddr,
    /// PEM file of CA certificates trusted for wss:// (e.g. a self-signed test certificate).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Runtime worker threads; 0 means one per core.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Exit 2 when more than this share of the calls failed to set up or dropped, in percent.
    #[arg(long, default_value_t = 1.0)]
    max_failed_percent: f64,
    /// Exit 3 when the steady-phase loss exceeds this, in percent.
    #[arg(long)]
    max_loss_percent: Option<f64>,
    /// Also print the report as one JSON line (after the table).
    #[arg(long)]
    json: bool,
    /// Print one table row (under the heading --row-header prints) instead of the full table, for a
    /// table of several runs.
    #[arg(long)]
    row: bool,
    /// Print the heading of --row and exit.
    #[arg(long, exclusive = true)]
    row_header: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Offer {
    Chrome,
    Pcmu,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not NAME:VALUE"))?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

fn seconds(value: f64, name: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|_| format!("--{name} must be a number of seconds ≥ 0"))
}

fn tls_roots(path: &PathBuf) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))? {
        let certificate = certificate.map_err(|e| format!("{}: {e}", path.display()))?;
        roots
            .add(certificate)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

fn config(args: &Args) -> Result<LoadConfig, String> {
    let tls = args.ca.as_ref().map(tls_roots).transpose()?;
    Ok(LoadConfig {
        url: args.url.clone(),
        target: args.target.clone(),
        origin: args.origin.clone(),
        headers: args.headers.clone(),
        credentials: match (&args.username, &args.password) {
            (Some(username), Some(password)) => Some(Credentials {
                username: username.clone(),
                password: password.clone(),
            }),
            _ => None,
        },
        calls: args.calls,
        rate: args.rate,
        hold: seconds(args.hold, "hold")?,
        settle: seconds(args.settle, "settle")?,
        setup_timeout: seconds(args.setup_timeout, "setup-timeout")?,
        opus_complexity: args.opus_complexity,
        offer: match args.offer {
            Offer::Chrome => OfferKind::Chrome,
            Offer::Pcmu => OfferKind::PcmuOnly,
        },
        analyse_every: args.analyse_every,
        gateway_pids: args.pids.clone(),
        other_pids: args.other_pids.clone(),
        metrics_url: args.metrics.clone(),
        media_ip: args.media_ip,
        tls,
        progress: !args.quiet,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.row_header {
        println!("{}", loadgen::summary::ROW_HEADER);
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let config = match config(&args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(1);
        }
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        runtime.worker_threads(args.threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let report = match runtime.block_on(loadgen::run(config)) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(1);
        }
    };
    if args.row {
        println!("{}", report.row());
    } else {
        print!("{}", report.table());
    }
    if args.json {
        match serde_json::to_string(&report) {
            Ok(line) => println!("{line}"),
            Err(error) => eprintln!("error: cannot print JSON: {error}"),
        }
    }
    // Calls still hanging up in the background must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if report.calls.failed_percent() > args.max_failed_percent {
        eprintln!(
            "callgate-load: {:.2} % of the calls failed or dropped (threshold {} %)",
            report.calls.failed_percent(),
            args.max_failed_percent
        );
        return ExitCode::from(2);
    }
    if let Some(limit) = args.max_loss_percent
        && report.worst_loss_percent() > limit
    {
        eprintln!(
            "callgate-load: {:.3} % loss (threshold {limit} %)",
            report.worst_loss_percent()
        );
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}
