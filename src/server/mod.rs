//! The running gateway: binds the listeners, starts the tasks, owns the clock, and shuts down gracefully.
//!
//! Protocol decisions live in the sans-IO cores; this module only moves their inputs and outputs between
//! sockets, channels, timers and the database.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::admission::GatewayLimits;
use crate::b2bua::gateway::{Gateway, GatewaySettings};
use crate::config::Config;
use crate::db::Database;
use crate::sip::transaction::{TimerConfig, TransactionConfig};
pub mod signaling;

use crate::demo;
use crate::metrics::Metrics;
use crate::transport::http::{self, HttpContext, Readiness, StaticResponse};
use crate::transport::sip_net::{SipTcp, SipUdp};
use crate::transport::sip_tls::SipTls;
use crate::widget;

pub mod media;

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not bind its address.
    #[error("cannot listen on {address} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The configured address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("tls: {0}")]
    Tls(String),
    /// The demo echo endpoint or its trunk and widget could not be set up.
    #[error("demo endpoint: {0}")]
    Demo(String),
    /// Installing a signal handler failed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// State shared by the listeners that `/readyz` reports on.
struct Health {
    draining: AtomicBool,
    database_reachable: AtomicBool,
}

/// How often the database is pinged for `/readyz`.
const DATABASE_PING_INTERVAL: Duration = Duration::from_secs(5);

/// Runs the gateway until SIGTERM or SIGINT, then drains: new calls are refused, active calls get
/// `limits.drain` to finish, then everything stops.
pub async fn run(config: Config, db: Database) -> Result<(), ServerError> {
    // Installed before any listener answers, so that a SIGTERM right after start-up drains instead of
    // killing the process.
    let signals = Signals::install()?;
    let (shutdown_tx, shutdown) = watch::channel(false);
    let health = Arc::new(Health {
        draining: AtomicBool::new(false),
        database_reachable: AtomicBool::new(true),
    });
    tokio::spawn(watch_database(db.clone(), health.clone(), shutdown.clone()));

    let (ws_events_tx, ws_events) = mpsc::channel(1024);
    let readiness = {
        let health = health.clone();
        Arc::new(move || {
            if health.draining.load(Ordering::Relaxed) {
                Readiness::NotReady("draining".to_owned())
            } else if !health.database_reachable.load(Ordering::Relaxed) {
                Readiness::NotReady("database unreachable".to_owned())
            } else {
                Readiness::Ready
            }
        })
    };
    let metrics = Arc::new(Metrics::default());
    let mut context = HttpContext::new(
        ws_events_tx,
        config.limits.max_message_bytes as usize,
        config.limits.max_ws_connections as usize,
        readiness,
    );
    let scraped = metrics.clone();
    context.routes.push((
        "/metrics".to_owned(),
        Arc::new(move || StaticResponse {
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: scraped.render().into(),
        }),
    ));
    context.routes.push((
        "/widget.js".to_owned(),
        Arc::new(|| StaticResponse {
            content_type: "text/javascript; charset=utf-8",
            body: widget::WIDGET_JS.into(),
        }),
    ));
    if config.demo.enabled {
        let public_id = start_demo(&config, &db, shutdown.clone()).await?;
        let page = bytes::Bytes::from(widget::demo_page(&public_id));
        context.routes.push((
            "/demo".to_owned(),
            Arc::new(move || StaticResponse {
                content_type: "text/html; charset=utf-8",
                body: page.clone(),
            }),
        ));
    }
    let context = Arc::new(context);

    // Read before any listener opens: a bad sip.tls_ca_file stops start-up instead of a ready gateway.
    let tls_client = SipTls::client_config(config.sip.tls_ca_file.as_deref())
        .map_err(|error| ServerError::Tls(format!("sip client: {error}")))?;
    let http_listener = bind_tcp("http", config.http.listen).await?;
    tracing::info!(address = %config.http.listen, "http and websocket listening");
    tokio::spawn(http::serve(
        http_listener,
        None,
        context.clone(),
        shutdown.clone(),
    ));
    if let Some(address) = config.https.listen {
        let acceptor = tls_acceptor(&config)?;
        let listener = bind_tcp("https", address).await?;
        tracing::info!(%address, "https and secure websocket listening");
        tokio::spawn(http::serve(
            listener,
            Some(acceptor),
            context.clone(),
            shutdown.clone(),
        ));
    }

    let (sip_events_tx, sip_events) = mpsc::channel(4096);
    let sip_udp = match config.sip.udp_listen {
        Some(address) => {
            let udp = SipUdp::bind(address, sip_events_tx.clone(), shutdown.clone())
                .await
                .map_err(|source| ServerError::Bind {
                    what: "sip udp",
                    address,
                    source,
                })?;
            tracing::info!(%address, "sip udp listening");
            Some(udp)
        }
        None => None,
    };
    let sip_tls = SipTls::new(
        tls_client,
        sip_events_tx.clone(),
        config.limits.max_message_bytes as usize,
        shutdown.clone(),
    );
    let (sip_tcp, tcp_bound) = SipTcp::start(
        config.sip.tcp_listen,
        sip_events_tx,
        config.limits.max_message_bytes as usize,
        shutdown.clone(),
    )
    .await
    .map_err(|source| ServerError::Bind {
        what: "sip tcp",
        // start() only fails when a listen address was configured.
        address: config.sip.tcp_listen.unwrap_or(config.http.listen),
        source,
    })?;
    if let Some(address) = tcp_bound {
        tracing::info!(%address, "sip tcp listening");
    }
    let (completion_sender, completions) = mpsc::unbounded_channel();
    let (media_requests, media_inbox) = mpsc::unbounded_channel();
    let (media_events_tx, media_events) = mpsc::channel(1024);
    let media =
        media::MediaEngine::start(&config.media, metrics.clone(), media_events_tx).map_err(|source| {
            ServerError::Bind {
                what: "media workers",
                address: SocketAddr::new(config.media.bind_ip, config.media.webrtc_port),
                source,
            }
        })?;
    tracing::info!(addresses = ?media.webrtc_addrs(), "media workers started");
    tokio::spawn(signaling::serve_media(
        media.clone(),
        media_inbox,
        media_events,
        completion_sender.clone(),
    ));
    let gateway = Gateway::new(gateway_settings(
        &config,
        sip_udp
            .as_ref()
            .map(|udp| udp.local_addr())
            .transpose()
            .ok()
            .flatten(),
        tcp_bound,
    ));
    let signaling = tokio::spawn(signaling::run(
        gateway,
        signaling::SignalingIo {
            ws_events,
            sip_events,
            completions,
            completion_sender: completion_sender.clone(),
            media: media_requests,
            sip_udp,
            sip_tcp,
            sip_tls,
            db: db.clone(),
            metrics,
            shutdown: shutdown.clone(),
        },
    ));

    signals.wait().await;
    let deadline = Instant::now() + config.limits.drain;
    tracing::info!(drain = ?config.limits.drain, "shutting down: refusing new calls, draining");
    health.draining.store(true, Ordering::Relaxed);
    let _ = completion_sender.send(signaling::Completion::Drain { deadline });
    // The signaling task returns once no call is left; calls still up at the deadline get BYE on both legs.
    if tokio::time::timeout_at((deadline + Duration::from_secs(2)).into(), signaling)
        .await
        .is_err()
    {
        tracing::warn!("drain period over with calls still ending");
    }
    let _ = shutdown_tx.send(true);
    media.shutdown().await;
    // Give in-flight responses a moment to leave before the runtime drops the sockets.
    tokio::time::sleep(Duration::from_millis(100)).await;
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Starts the echo endpoint, makes sure the `demo` trunk and widget exist, and returns the widget's public id.
async fn start_demo(
    config: &Config,
    db: &Database,
    shutdown: watch::Receiver<bool>,
) -> Result<String, ServerError> {
    let address = config.demo.sip_listen;
    let bound = demo::start(address, config.media.bind_ip, shutdown)
        .await
        .map_err(|source| ServerError::Bind {
            what: "demo echo endpoint",
            address,
            source,
        })?;
    tracing::info!(address = %bound, "demo echo endpoint listening");
    let port = config.http.listen.port();
    let mut origins = vec![
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
    ];
    if let Some(https) = config.https.listen {
        origins.push(format!("https://{}:{}", config.media.public_ip, https.port()));
    }
    demo::ensure_demo_records(db, bound, &origins)
        .await
        .map_err(|error| ServerError::Demo(error.to_string()))?;
    let name = demo::DEMO_NAME
        .parse()
        .map_err(|error: crate::db::InvalidValue| ServerError::Demo(error.to_string()))?;
    let widget = db
        .widgets()
        .by_name(&name)
        .await
        .map_err(|error| ServerError::Demo(error.to_string()))?;
    Ok(widget.public_id.to_string())
}

/// The signaling core's settings: the SIP addresses we bound (advertised toward trunks as the public IP when
/// bound to a wildcard address), timers and limits.
fn gateway_settings(config: &Config, udp: Option<SocketAddr>, tcp: Option<SocketAddr>) -> GatewaySettings {
    let advertise = |address: SocketAddr| {
        if address.ip().is_unspecified() {
            SocketAddr::new(config.media.public_ip, address.port())
        } else {
            address
        }
    };
    GatewaySettings {
        user_agent: config.sip.user_agent.clone(),
        sip_udp: udp.map(advertise),
        sip_tcp: tcp.map(advertise),
        session_expires: config.sip.session_expires,
        min_se: config.sip.min_se,
        limits: GatewayLimits {
            max_calls: config.limits.max_calls,
            per_ip_concurrent_calls: config.limits.per_ip_concurrent_calls,
            per_ip_calls_per_minute: config.limits.per_ip_calls_per_minute,
        },
        options_interval: config.sip.options_ping_interval,
        options_timeout: config.sip.options_timeout,
        transactions: TransactionConfig {
            // sip.invite_timeout is Timer B (64·T1); T2 and T4 keep their RFC 3261 values.
            timers: TimerConfig {
                t1: config.sip.invite_timeout / 64,
                ..TimerConfig::default()
            },
            send_trying: true,
        },
    }
}

async fn watch_database(db: Database, health: Arc<Health>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let reachable = db.ping().await.is_ok();
        if reachable != health.database_reachable.swap(reachable, Ordering::Relaxed) {
            if reachable {
                tracing::info!("database reachable again");
            } else {
                tracing::warn!("database unreachable");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(DATABASE_PING_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn bind_tcp(what: &'static str, address: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Bind {
            what,
            address,
            source,
        })
}

fn tls_acceptor(config: &Config) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let (Some(cert_path), Some(key_path)) = (&config.https.cert, &config.https.key) else {
        return Err(ServerError::Tls(
            "https.listen is set without https.cert and https.key".to_owned(),
        ));
    };
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| ServerError::Tls(format!("{}: {error}", cert_path.display())))?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|error| ServerError::Tls(format!("{}: {error}", key_path.display())))?;
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| ServerError::Tls(error.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, ServerError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            terminate: signal(SignalKind::terminate()).map_err(ServerError::Signals)?,
            interrupt: signal(SignalKind::interrupt()).map_err(ServerError::Signals)?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM received"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT received"),
        }
    }
}
