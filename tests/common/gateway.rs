//! The real gateway for integration tests: a temporary config on free ports, a throwaway database with
//! trunks and widgets added through the real `callgate` binary, and `callgate serve` running until the
//! test drops it (SIGTERM, then SIGKILL). Its log is kept in a file and printed when a test fails.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::sipp::{SippTransport, free_port};
use super::{Callgate, TestDatabase};

/// The origin the test widgets allow, and the one [`Gateway::browser`] options send.
pub(crate) const ORIGIN: &str = "https://shop.example";

/// A trunk to add with `callgate trunk add`.
#[derive(Debug, Clone)]
pub(crate) struct TrunkSpec {
    /// Its name.
    pub(crate) name: String,
    /// Where the PBX listens.
    pub(crate) address: SocketAddr,
    /// The `--host` given instead of `address`'s IP (a name that resolves to it).
    pub(crate) host: Option<String>,
    /// `udp`, `tcp` or `tls`.
    pub(crate) transport: &'static str,
    /// Digest credentials `(username, password)`.
    pub(crate) credentials: Option<(String, String)>,
    /// Failover order: lower first.
    pub(crate) priority: u32,
    /// `--outbound-proxy`: where requests go instead of `address`.
    pub(crate) outbound_proxy: Option<SocketAddr>,
}

impl TrunkSpec {
    /// A UDP trunk to `address` without credentials, priority 0.
    pub(crate) fn udp(name: &str, address: SocketAddr) -> Self {
        TrunkSpec {
            name: name.to_owned(),
            address,
            host: None,
            transport: "udp",
            credentials: None,
            priority: 0,
            outbound_proxy: None,
        }
    }
}

/// A widget to add with `callgate widget add`.
#[derive(Debug, Clone)]
pub(crate) struct WidgetSpec {
    /// Its name.
    pub(crate) name: String,
    /// The trunk it calls through.
    pub(crate) trunk: String,
    /// The number called.
    pub(crate) destination: String,
    /// Allowed origins.
    pub(crate) origins: Vec<String>,
    /// `--require-token`.
    pub(crate) require_token: bool,
    /// `--max-concurrent`.
    pub(crate) max_concurrent: Option<u32>,
    /// `--max-per-minute`.
    pub(crate) max_per_minute: Option<u32>,
    /// `--disabled`.
    pub(crate) disabled: bool,
}

impl WidgetSpec {
    /// A widget calling 100 through `trunk`, allowing [`ORIGIN`].
    pub(crate) fn new(name: &str, trunk: &str) -> Self {
        WidgetSpec {
            name: name.to_owned(),
            trunk: trunk.to_owned(),
            destination: "100".to_owned(),
            origins: vec![ORIGIN.to_owned()],
            require_token: false,
            max_concurrent: None,
            max_per_minute: None,
            disabled: false,
        }
    }
}

/// What the gateway is started with.
#[derive(Debug, Clone, Default)]
pub(crate) struct GatewayOptions {
    /// Trunks, added in order.
    pub(crate) trunks: Vec<TrunkSpec>,
    /// Widgets, added after the trunks.
    pub(crate) widgets: Vec<WidgetSpec>,
    /// Use the test PostgreSQL (`CALLGATE_TEST_POSTGRES_URL`) instead of a temporary SQLite file.
    pub(crate) postgres: bool,
    /// Keep the built-in demo endpoint on.
    pub(crate) demo: bool,
    /// Config keys beyond the ones the harness sets: `(section, key, value)`, e.g.
    /// `("sip", "options_ping_interval_secs", 1.into())`. They replace the harness's own values.
    pub(crate) config: Vec<(&'static str, &'static str, toml::Value)>,
}

/// A running `callgate serve`.
pub(crate) struct Gateway {
    child: Option<Child>,
    callgate: Callgate,
    directory: tempfile::TempDir,
    http: SocketAddr,
    sip: SocketAddr,
    widget_ids: BTreeMap<String, String>,
    log: PathBuf,
}

impl Gateway {
    /// Writes the config, adds the trunks and widgets with the CLI, starts `serve` and waits for
    /// `/readyz` (failing the test with the log after 30 s).
    pub(crate) fn start(options: GatewayOptions) -> Gateway {
        let database = if options.postgres {
            TestDatabase::postgres()
        } else {
            TestDatabase::sqlite()
        };
        let callgate = Callgate::migrated(database);
        for trunk in &options.trunks {
            add_trunk(&callgate, trunk);
        }
        let mut widget_ids = BTreeMap::new();
        for widget in &options.widgets {
            widget_ids.insert(widget.name.clone(), add_widget(&callgate, widget));
        }

        let directory = tempfile::tempdir().expect("test setup: a directory for the gateway");
        let log = directory.path().join("callgate.log");
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut gateway = Gateway {
            child: None,
            callgate,
            directory,
            http: unbound,
            sip: unbound,
            widget_ids,
            log,
        };
        // Ports are picked free and bound by the child a moment later, so a test running in parallel can
        // take one in between: then the gateway exits at start, and it is started again on fresh ports.
        for attempt in 1.. {
            gateway.launch(&options);
            match gateway.wait_ready(Duration::from_secs(30)) {
                Ok(()) => break,
                Err(log) if attempt < 3 && log.contains("in use") => {
                    eprintln!("callgate serve lost a port to another test; starting it again");
                }
                Err(log) => panic!(
                    "callgate serve exited before it was ready\nconfig:\n{}\nlog:\n{log}",
                    std::fs::read_to_string(gateway.directory.path().join("callgate.toml"))
                        .unwrap_or_default(),
                ),
            }
        }
        gateway
    }

    /// Picks free ports, writes the config and spawns `callgate serve`.
    fn launch(&mut self, options: &GatewayOptions) {
        self.http = SocketAddr::from(([127, 0, 0, 1], free_port(SippTransport::Tcp)));
        self.sip = SocketAddr::from(([127, 0, 0, 1], free_udp_and_tcp_port()));
        let webrtc_port = free_port(SippTransport::Udp);
        let (rtp_min, rtp_max) = free_udp_range(40);
        let demo_port = free_port(SippTransport::Udp);
        let config = config_text(&ConfigValues {
            http: self.http,
            sip: self.sip,
            webrtc_port,
            rtp_min,
            rtp_max,
            demo_port,
            demo: options.demo,
            database_url: self.callgate.database_url().to_owned(),
            overrides: &options.config,
        });
        let config_path = self.directory.path().join("callgate.toml");
        std::fs::write(&config_path, config).expect("test setup: write the gateway config");
        let config_arg = config_path.to_string_lossy().into_owned();
        let mut child = self.callgate.spawn(&["serve", "--config", &config_arg]);
        copy_to_file(child.stderr.take(), self.log.clone());
        self.child = Some(child);
    }

    /// What a browser on [`ORIGIN`] calls with: its Origin, audio analysed.
    pub(crate) fn browser(&self) -> callgate::client::CallOptions {
        callgate::client::CallOptions {
            origin: Some(ORIGIN.to_owned()),
            analyse_audio: true,
            ..callgate::client::CallOptions::default()
        }
    }

    /// `ws://127.0.0.1:PORT/ws`.
    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http)
    }

    /// The `callgate serve` process id (for `callgate-load --pid`).
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The HTTP listener's address.
    pub(crate) fn http_address(&self) -> SocketAddr {
        self.http
    }

    /// The SIP UDP (and TCP) address the PBX sees the gateway at.
    pub(crate) fn sip_address(&self) -> SocketAddr {
        self.sip
    }

    /// The public id of a widget added at start.
    pub(crate) fn widget_id(&self, name: &str) -> &str {
        self.widget_ids
            .get(name)
            .unwrap_or_else(|| panic!("no widget {name} was added"))
    }

    /// What a browser dials for a widget: `sip:<public id>@127.0.0.1`.
    pub(crate) fn widget_uri(&self, name: &str) -> String {
        format!("sip:{}@127.0.0.1", self.widget_id(name))
    }

    /// A token for a `--require-token` widget, valid for `ttl_secs` from now (negative: already
    /// expired), minted with the widget's secret read from the database.
    pub(crate) fn token(&self, name: &str, ttl_secs: i64) -> String {
        let secret = widget_secret(self.callgate.database_url(), name);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs();
        let expires = now.saturating_add_signed(ttl_secs);
        callgate::admission::mint_token(self.widget_id(name), &secret, expires)
    }

    /// The call records, newest first (`callgate calls list --json`).
    pub(crate) fn call_records(&self) -> serde_json::Value {
        let calls = self.callgate.run(&["calls", "list", "--json"]).success();
        serde_json::from_str(&calls).unwrap_or_else(|error| panic!("calls list --json: {error}: {calls}"))
    }

    /// The CLI on the gateway's database (e.g. `calls list --json`).
    pub(crate) fn cli(&self) -> &Callgate {
        &self.callgate
    }

    /// GET `path` on the HTTP listener; returns the status code and body.
    pub(crate) fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path).unwrap_or_else(|error| panic!("GET {path}: {error}\n{}", self.log_text()))
    }

    /// The gateway's log so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM (the drain starts) without waiting.
    pub(crate) fn terminate(&self) {
        if let Some(child) = &self.child {
            signal(child, "-TERM");
        }
    }

    /// SIGTERM, then waits up to `limit` for the exit (SIGKILL after) and returns the status.
    pub(crate) fn stop(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("the gateway is running");
        signal(&child, "-TERM");
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the gateway did not stop within {limit:?} of SIGTERM\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `/readyz`; `Err` with the log when the gateway exited first. Fails the test after
    /// `limit`.
    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok((200, _)) = http_get(self.http, "/readyz") {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                // The log is copied by a thread that may still be writing its last lines: the error
                // that made the gateway exit is the last of them.
                let copied = Instant::now() + Duration::from_secs(3);
                while !self.log_text().contains("error") && Instant::now() < copied {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return Err(format!("(exit {status})\n{}", self.log_text()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "callgate serve was not ready within {limit:?}\n{}",
            self.log_text()
        );
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "-TERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- callgate log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

fn add_trunk(callgate: &Callgate, trunk: &TrunkSpec) {
    let host = trunk
        .host
        .clone()
        .unwrap_or_else(|| trunk.address.ip().to_string());
    let port = trunk.address.port().to_string();
    let priority = trunk.priority.to_string();
    let mut args = vec![
        "trunk",
        "add",
        trunk.name.as_str(),
        "--host",
        host.as_str(),
        "--port",
        port.as_str(),
        "--transport",
        trunk.transport,
        "--priority",
        priority.as_str(),
    ];
    if let Some((username, password)) = &trunk.credentials {
        args.extend(["--username", username.as_str(), "--password", password.as_str()]);
    }
    let proxy = trunk.outbound_proxy.map(|proxy| proxy.to_string());
    if let Some(proxy) = &proxy {
        args.extend(["--outbound-proxy", proxy.as_str()]);
    }
    callgate.run(&args).success();
}

/// Adds the widget and returns its public id (from `widget show --json`).
fn add_widget(callgate: &Callgate, widget: &WidgetSpec) -> String {
    let max_concurrent = widget.max_concurrent.map(|n| n.to_string());
    let max_per_minute = widget.max_per_minute.map(|n| n.to_string());
    let mut args = vec![
        "widget",
        "add",
        widget.name.as_str(),
        "--trunk",
        widget.trunk.as_str(),
        "--destination",
        widget.destination.as_str(),
    ];
    for origin in &widget.origins {
        args.extend(["--origin", origin.as_str()]);
    }
    if let Some(n) = &max_concurrent {
        args.extend(["--max-concurrent", n.as_str()]);
    }
    if let Some(n) = &max_per_minute {
        args.extend(["--max-per-minute", n.as_str()]);
    }
    if widget.require_token {
        args.push("--require-token");
    }
    if widget.disabled {
        args.push("--disabled");
    }
    callgate.run(&args).success();
    let shown = callgate
        .run(&["widget", "show", widget.name.as_str(), "--json"])
        .success();
    let json: serde_json::Value =
        serde_json::from_str(&shown).unwrap_or_else(|error| panic!("widget show --json: {error}: {shown}"));
    json["public_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no public_id in {shown}"))
        .to_owned()
}

/// The ports and paths of one config.
struct ConfigValues<'a> {
    http: SocketAddr,
    sip: SocketAddr,
    webrtc_port: u16,
    rtp_min: u16,
    rtp_max: u16,
    demo_port: u16,
    demo: bool,
    database_url: String,
    overrides: &'a [(&'static str, &'static str, toml::Value)],
}

/// The config file: loopback everywhere, one media worker, OPTIONS keepalives off (SIPp scenarios
/// expect only calls), debug logs, then the test's overrides.
fn config_text(values: &ConfigValues<'_>) -> String {
    let mut sections: BTreeMap<&str, toml::Table> = BTreeMap::new();
    let mut set = |section: &'static str, key: &str, value: toml::Value| {
        sections.entry(section).or_default().insert(key.to_owned(), value);
    };
    set("http", "listen", values.http.to_string().into());
    set("https", "listen", "".into());
    set("sip", "udp_listen", values.sip.to_string().into());
    set("sip", "tcp_listen", values.sip.to_string().into());
    set("sip", "options_ping_interval_secs", 0.into());
    set("media", "public_ip", "127.0.0.1".into());
    set("media", "bind_ip", "127.0.0.1".into());
    set("media", "webrtc_port", i64::from(values.webrtc_port).into());
    set("media", "workers", 1.into());
    set("media", "rtp_port_min", i64::from(values.rtp_min).into());
    set("media", "rtp_port_max", i64::from(values.rtp_max).into());
    set("database", "url", values.database_url.clone().into());
    set("log", "level", "info,callgate=debug".into());
    set("log", "format", "text".into());
    set("demo", "enabled", values.demo.into());
    set(
        "demo",
        "sip_listen",
        SocketAddr::from(([127, 0, 0, 1], values.demo_port))
            .to_string()
            .into(),
    );
    for (section, key, value) in values.overrides {
        set(section, key, value.clone());
    }
    let table: toml::Table = sections
        .into_iter()
        .map(|(name, table)| (name.to_owned(), toml::Value::Table(table)))
        .collect();
    toml::to_string(&table).expect("a TOML table prints")
}

/// A port free for both UDP and TCP, for the SIP listeners that share it.
fn free_udp_and_tcp_port() -> u16 {
    for _ in 0..100 {
        let port = free_port(SippTransport::Udp);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("test setup: no port free for both UDP and TCP");
}

/// `count` free UDP ports in a row starting at an even one (RTP/RTCP pairs): `(min, max)` with max odd.
fn free_udp_range(count: u16) -> (u16, u16) {
    for _ in 0..100 {
        let start = free_port(SippTransport::Udp) & !1;
        let Some(end) = start.checked_add(count - 1) else {
            continue;
        };
        if start < 1024 {
            continue;
        }
        if (start..=end).all(|port| UdpSocket::bind(("127.0.0.1", port)).is_ok()) {
            return (start, end | 1);
        }
    }
    panic!("test setup: no {count} free UDP ports in a row");
}

/// A plain HTTP/1.1 GET with `Connection: close`.
pub(crate) fn http_get(address: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {response:?}")))?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((status, body.to_owned()))
}

/// Copies a child's stderr into `path` on a thread of its own, so the pipe never fills up.
fn copy_to_file(stderr: Option<std::process::ChildStderr>, path: PathBuf) {
    let Some(mut stderr) = stderr else { return };
    std::thread::spawn(move || {
        if let Ok(mut file) = std::fs::File::create(&path) {
            let _ = std::io::copy(&mut stderr, &mut file);
        }
    });
}

fn signal(child: &Child, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
}

/// A widget's token secret, read through the library (the CLI never prints it).
fn widget_secret(database_url: &str, widget: &str) -> String {
    let url = database_url.to_owned();
    let name = widget.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test setup: a tokio runtime");
        runtime.block_on(async move {
            let database = callgate::db::Database::connect(&url)
                .await
                .expect("test setup: connect to the gateway's database");
            let name = name.parse().expect("a valid widget name");
            let widget = database
                .widgets()
                .by_name(&name)
                .await
                .expect("the widget exists");
            widget
                .secret
                .expect("the widget was added with --require-token")
                .expose()
                .to_owned()
        })
    })
    .join()
    .expect("test setup: the secret reader panicked")
}
