//! Typed configuration for the gateway.
//!
//! Settings come from three layers, each overriding the one before: built-in defaults
//! ([`Config::default`], which `config/callgate.toml` spells out), the TOML file given to
//! [`Config::load`], and `CALLGATE_<SECTION>_<KEY>` environment variables (`CALLGATE_HTTP_LISTEN`,
//! `CALLGATE_MEDIA_RTP_PORT_MIN`, …). Every table refuses unknown keys, and [`Config::load`] only returns a
//! configuration that passed [`Config::validate`]; a [`ConfigError`] is one line naming where the bad value
//! came from and which key it is.
//!
//! Durations are integers with the unit in the key name (`invite_timeout_secs`, `jitter_max_ms`) and are
//! [`Duration`]s in Rust. An empty string disables an optional listener (`https.listen`, `sip.udp_listen`).

mod fields;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZero;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Every environment variable that can override a key starts with this.
pub const ENV_PREFIX: &str = "CALLGATE_";

/// The whole gateway configuration, one field per `[section]` of the TOML file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[http]`: the plain HTTP listener.
    pub http: HttpConfig,
    /// `[https]`: the optional TLS listener.
    pub https: HttpsConfig,
    /// `[sip]`: the SIP side toward the PBX.
    pub sip: SipConfig,
    /// `[media]`: WebRTC and RTP media.
    pub media: MediaConfig,
    /// `[database]`: where trunks, widgets and call records live.
    pub database: DatabaseConfig,
    /// `[log]`: what is logged and how.
    pub log: LogConfig,
    /// `[limits]`: protection against overload and abuse.
    pub limits: LimitsConfig,
    /// `[demo]`: the built-in echo endpoint.
    pub demo: DemoConfig,
}

/// `[http]`: plain HTTP and WebSocket (`/ws`, `/widget.js`, `/demo`, `/metrics`, `/healthz`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the plain HTTP listener binds.
    #[serde(with = "fields::socket_addr")]
    pub listen: SocketAddr,
}

/// `[https]`: the same service as `[http]` over TLS, which browsers require for WSS from an HTTPS page.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpsConfig {
    /// Address the TLS listener binds; `None` (an empty string in TOML) disables it.
    #[serde(with = "fields::optional_socket_addr")]
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain; required and must exist when `listen` is set. Relative to the working directory.
    #[serde(with = "fields::optional_path")]
    pub cert: Option<PathBuf>,
    /// PEM private key; required and must exist when `listen` is set. Relative to the working directory.
    #[serde(with = "fields::optional_path")]
    pub key: Option<PathBuf>,
}

/// `[sip]`: SIP transports and timers toward the PBX.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// SIP over UDP; `None` (empty string) disables it. At least one of the two transports must be on.
    #[serde(with = "fields::optional_socket_addr")]
    pub udp_listen: Option<SocketAddr>,
    /// SIP over TCP; `None` (empty string) disables it.
    #[serde(with = "fields::optional_socket_addr")]
    pub tcp_listen: Option<SocketAddr>,
    /// `User-Agent` and `Server` header value.
    pub user_agent: String,
    /// How long an INVITE or other transaction may wait for a final response (RFC 3261 Timer B/F).
    #[serde(rename = "invite_timeout_secs", with = "fields::secs")]
    pub invite_timeout: Duration,
    /// Session-Expires offered for session timers (RFC 4028).
    #[serde(rename = "session_expires_secs", with = "fields::secs")]
    pub session_expires: Duration,
    /// Smallest session interval accepted (RFC 4028 Min-SE, at least 90 s).
    #[serde(rename = "min_se_secs", with = "fields::secs")]
    pub min_se: Duration,
    /// Interval between OPTIONS keepalives to each trunk; zero disables them.
    #[serde(rename = "options_ping_interval_secs", with = "fields::secs")]
    pub options_ping_interval: Duration,
    /// How long an OPTIONS keepalive may go unanswered before it counts as failed (two failures in a
    /// row mark the trunk down).
    #[serde(rename = "options_timeout_secs", with = "fields::secs")]
    pub options_timeout: Duration,
    /// Expiry requested when registering to a trunk that needs registration.
    #[serde(rename = "register_expires_secs", with = "fields::secs")]
    pub register_expires: Duration,
    /// PEM file of extra certificate authorities trusted for TLS trunks, on top of the system roots: a
    /// private CA, or a self-signed PBX's own certificate. Must exist when set. `None` (empty string): the
    /// system roots only.
    #[serde(with = "fields::optional_path")]
    pub tls_ca_file: Option<PathBuf>,
}

/// `[media]`: addresses, ports and codec settings for both media legs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Address advertised in SDP and ICE candidates (the public side of a 1:1 NAT).
    #[serde(with = "fields::ip_addr")]
    pub public_ip: IpAddr,
    /// Address the media sockets bind.
    #[serde(with = "fields::ip_addr")]
    pub bind_ip: IpAddr,
    /// First UDP port of the WebRTC media workers; worker `i` uses `webrtc_port + i`.
    #[serde(with = "fields::port")]
    pub webrtc_port: u16,
    /// Number of media worker threads; zero means one per CPU core (see [`MediaConfig::worker_count`]).
    pub workers: u32,
    /// Lowest RTP port toward the PBX (even: RTP takes the even port of a pair, RTCP the odd one).
    #[serde(with = "fields::port")]
    pub rtp_port_min: u16,
    /// Highest RTP port toward the PBX (odd, so the range holds whole pairs).
    #[serde(with = "fields::port")]
    pub rtp_port_max: u16,
    /// When to decode and re-encode audio.
    pub transcode: TranscodeMode,
    /// Opus encoder complexity toward the browser, 0..=10 (higher costs more CPU for slightly better
    /// quality; docs/quality.md has the measurements the default comes from).
    pub opus_complexity: u8,
    /// Opus encoder bitrate in bit/s, 6000..=510000.
    pub opus_bitrate: u32,
    /// Whether the Opus encoder adds in-band forward error correction.
    pub opus_fec: bool,
    /// A call ends when no media arrived from either side for this long.
    #[serde(rename = "rtp_timeout_secs", with = "fields::secs")]
    pub rtp_timeout: Duration,
    /// Most audio the jitter buffer holds before dropping the oldest packets.
    #[serde(rename = "jitter_max_ms", with = "fields::millis")]
    pub jitter_max: Duration,
}

/// When audio is transcoded rather than passed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TranscodeMode {
    /// Only when the two legs share no codec: G.711 passes through untouched when the browser offers
    /// the PBX's law (cheapest; the browser leg then has no Opus FEC or PLC).
    WhenNeeded,
    /// Always decode and re-encode, so the browser gets Opus whenever it offers it (the default: better
    /// audio over lossy Internet paths, for one Opus decode and encode per 20 ms).
    Always,
}

/// `[database]`: the sqlx connection.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite:…` (a single node) or `postgres://…` / `postgresql://…` (several nodes).
    pub url: String,
}

/// `[log]`: tracing output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive such as `info` or `callgate::sip=debug,info`.
    pub level: String,
    /// Line format.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[limits]`: caps that keep one client or a flood from taking the gateway down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Calls in progress across the whole gateway.
    pub max_calls: u32,
    /// New calls one client IP may start per minute.
    pub per_ip_calls_per_minute: u32,
    /// Calls one client IP may have in progress at once.
    pub per_ip_concurrent_calls: u32,
    /// On shutdown, how long calls in progress may continue before they are ended.
    #[serde(rename = "drain_secs", with = "fields::secs")]
    pub drain: Duration,
    /// Open WebSocket connections across the gateway.
    pub max_ws_connections: u32,
    /// Largest SIP message or WebSocket frame accepted, in bytes.
    pub max_message_bytes: u32,
}

/// `[demo]`: a built-in SIP endpoint that answers and echoes audio, so `/demo` works without a PBX.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Whether the echo endpoint and the `/demo` page run.
    pub enabled: bool,
    /// SIP UDP address of the echo endpoint.
    #[serde(with = "fields::socket_addr")]
    pub sip_listen: SocketAddr,
}

/// Why a configuration could not be loaded; `Display` is one line naming the source and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("{}: {}{message}", path.display(), line.map(|line| format!("line {line}: ")).unwrap_or_default())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error, when the parser could place it.
        line: Option<usize>,
        /// What the parser expected.
        message: String,
    },
    /// A top-level name that is not one of the sections.
    #[error("{origin}: unknown section [{section}]")]
    UnknownSection {
        /// Where it was written.
        origin: ConfigSource,
        /// The name.
        section: String,
    },
    /// A key that its section does not have.
    #[error("{origin}: unknown key {key:?} in [{section}]")]
    UnknownKey {
        /// Where it was written.
        origin: ConfigSource,
        /// The section it was written in.
        section: String,
        /// The key.
        key: String,
    },
    /// A value with the wrong type, out of range, or in conflict with another key.
    #[error("{}", describe_invalid(origin, key, message))]
    InvalidValue {
        /// Where the value came from.
        origin: ConfigSource,
        /// `section.key`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// An environment variable already names its key, so the key is only repeated for other sources.
fn describe_invalid(origin: &ConfigSource, key: &str, message: &str) -> String {
    match origin {
        ConfigSource::Environment(_) => format!("{origin}: {message}"),
        _ => format!("{origin}: {key}: {message}"),
    }
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A built-in default or a value set by the program itself.
    Builtin,
    /// The config file.
    File(PathBuf),
    /// An environment variable, by name.
    Environment(String),
}

impl ConfigSource {
    /// Later layers override earlier ones, so they are the ones to blame when keys conflict.
    fn precedence(&self) -> u8 {
        match self {
            ConfigSource::Builtin => 0,
            ConfigSource::File(_) => 1,
            ConfigSource::Environment(_) => 2,
        }
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Builtin => f.write_str("built-in config"),
            ConfigSource::File(path) => write!(f, "{}", path.display()),
            ConfigSource::Environment(name) => write!(f, "environment {name}"),
        }
    }
}

impl Config {
    /// Reads `path` if given (no path means the defaults), applies `CALLGATE_*` variables from the process
    /// environment, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        // `std::env::vars` panics on a variable that is not Unicode; such a value is passed on lossily and
        // then refused by validation like any other bad value.
        let env = std::env::vars_os().filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            name.starts_with(ENV_PREFIX)
                .then(|| (name, value.to_string_lossy().into_owned()))
        });
        Self::load_with_env(path, env)
    }

    /// [`Config::load`] with the environment given explicitly. Only names starting with `CALLGATE_` are
    /// looked at, and those that match no key (such as `CALLGATE_TEST_POSTGRES_URL`) are ignored.
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut layers = Layers::new();
        if let Some(path) = path {
            layers.add_file(path)?;
        }
        for (name, value) in env {
            layers.add_env(name, value)?;
        }
        layers.build()
    }

    /// Checks every rule a loaded config obeys; for configs built in code (a loaded one already passed).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|violation| ConfigError::InvalidValue {
            origin: ConfigSource::Builtin,
            // Invariant: every `Violation::new` call passes a non-empty literal list of keys.
            key: violation.keys[0].to_owned(),
            message: violation.message,
        })
    }

    /// The effective configuration as TOML, with the database password replaced by `***`.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database.url = shown.database.redacted_url();
        // Invariant: every field serializes to a string, boolean or i64-sized integer inside its section's
        // table (the adapters in `fields` clamp durations), which TOML can always represent.
        toml::to_string(&shown).expect("config serializes to TOML")
    }

    /// The rules that types alone do not enforce; the first broken one is returned.
    fn check(&self) -> Result<(), Violation> {
        self.check_listeners()?;
        self.check_sip()?;
        self.check_media()?;
        self.check_rest()
    }

    fn check_listeners(&self) -> Result<(), Violation> {
        let listeners = [
            ("http.listen", Some(self.http.listen)),
            ("https.listen", self.https.listen),
            ("sip.udp_listen", self.sip.udp_listen),
            ("sip.tcp_listen", self.sip.tcp_listen),
            ("demo.sip_listen", Some(self.demo.sip_listen)),
        ];
        for (key, addr) in listeners {
            if let Some(addr) = addr
                && addr.port() == 0
            {
                return Err(Violation::new(&[key], fields::port_out_of_range(0)));
            }
        }
        if self.https.listen == Some(self.http.listen) {
            return Err(Violation::new(
                &["https.listen", "http.listen"],
                format!("http.listen and https.listen are both {}", self.http.listen),
            ));
        }
        if let Some(listen) = self.https.listen {
            for (key, path) in [("https.cert", &self.https.cert), ("https.key", &self.https.key)] {
                let Some(path) = path else {
                    return Err(Violation::new(
                        &[key, "https.listen"],
                        format!("https.listen is {listen}, so {key} (a PEM file) is required"),
                    ));
                };
                if !path.is_file() {
                    return Err(Violation::new(
                        &[key],
                        format!("file not found: {}", path.display()),
                    ));
                }
            }
        }
        if self.demo.enabled && self.sip.udp_listen == Some(self.demo.sip_listen) {
            return Err(Violation::new(
                &["demo.sip_listen", "sip.udp_listen", "demo.enabled"],
                format!(
                    "demo.sip_listen and sip.udp_listen are both {}",
                    self.demo.sip_listen
                ),
            ));
        }
        Ok(())
    }

    fn check_sip(&self) -> Result<(), Violation> {
        let sip = &self.sip;
        if sip.udp_listen.is_none() && sip.tcp_listen.is_none() {
            return Err(Violation::new(
                &["sip.udp_listen", "sip.tcp_listen"],
                "sip.udp_listen and sip.tcp_listen are both empty: no SIP transport toward the PBX".into(),
            ));
        }
        if let Some(path) = &sip.tls_ca_file
            && !path.is_file()
        {
            return Err(Violation::new(
                &["sip.tls_ca_file"],
                format!("file not found: {}", path.display()),
            ));
        }
        if sip.user_agent.trim().is_empty() || sip.user_agent.chars().any(char::is_control) {
            return Err(Violation::new(
                &["sip.user_agent"],
                format!(
                    "{:?} is not a valid header value (empty or control characters)",
                    sip.user_agent
                ),
            ));
        }
        at_least(
            &["sip.invite_timeout_secs"],
            sip.invite_timeout,
            Duration::from_secs(1),
            "1 s",
        )?;
        at_least(
            &["sip.min_se_secs"],
            sip.min_se,
            Duration::from_secs(90),
            "90 s (RFC 4028)",
        )?;
        if sip.session_expires < sip.min_se {
            return Err(Violation::new(
                &["sip.session_expires_secs", "sip.min_se_secs"],
                format!(
                    "sip.session_expires_secs ({}) is below sip.min_se_secs ({})",
                    sip.session_expires.as_secs(),
                    sip.min_se.as_secs()
                ),
            ));
        }
        at_least(
            &["sip.options_timeout_secs"],
            sip.options_timeout,
            Duration::from_secs(1),
            "1 s",
        )?;
        at_least(
            &["sip.register_expires_secs"],
            sip.register_expires,
            Duration::from_secs(1),
            "1 s",
        )
    }

    fn check_media(&self) -> Result<(), Violation> {
        let media = &self.media;
        if media.public_ip.is_unspecified() {
            return Err(Violation::new(
                &["media.public_ip"],
                format!(
                    "{} cannot be advertised to peers; give the address they reach",
                    media.public_ip
                ),
            ));
        }
        for (key, port) in [
            ("media.webrtc_port", media.webrtc_port),
            ("media.rtp_port_min", media.rtp_port_min),
            ("media.rtp_port_max", media.rtp_port_max),
        ] {
            if port == 0 {
                return Err(Violation::new(&[key], fields::port_out_of_range(0)));
            }
        }
        let (min, max) = (media.rtp_port_min, media.rtp_port_max);
        if min >= max {
            return Err(Violation::new(
                &["media.rtp_port_min", "media.rtp_port_max"],
                format!("media.rtp_port_min ({min}) must be below media.rtp_port_max ({max})"),
            ));
        }
        if min % 2 != 0 {
            return Err(Violation::new(
                &["media.rtp_port_min"],
                format!("{min} is odd; RTP ports are even"),
            ));
        }
        if max % 2 == 0 {
            return Err(Violation::new(
                &["media.rtp_port_max"],
                format!("{max} is even; the range must end on the RTCP port of a pair"),
            ));
        }
        if media.workers > 1024 {
            return Err(Violation::new(
                &["media.workers"],
                format!("{} is above 1024", media.workers),
            ));
        }
        // With workers = 0 the count is only known on the machine that runs the gateway, so check the one
        // port that is certain; an explicit count is checked in full.
        let webrtc_first = u32::from(media.webrtc_port);
        let webrtc_last = webrtc_first + media.workers.max(1) - 1;
        if webrtc_last > u32::from(u16::MAX) {
            return Err(Violation::new(
                &["media.webrtc_port", "media.workers"],
                format!("media.webrtc_port + media.workers - 1 = {webrtc_last} is past port 65535"),
            ));
        }
        if webrtc_first <= u32::from(max) && webrtc_last >= u32::from(min) {
            return Err(Violation::new(
                &["media.webrtc_port", "media.rtp_port_min", "media.rtp_port_max"],
                format!("WebRTC ports {webrtc_first}..={webrtc_last} overlap the RTP range {min}..={max}"),
            ));
        }
        in_range(&["media.opus_complexity"], media.opus_complexity.into(), 0, 10)?;
        in_range(&["media.opus_bitrate"], media.opus_bitrate.into(), 6_000, 510_000)?;
        at_least(
            &["media.rtp_timeout_secs"],
            media.rtp_timeout,
            Duration::from_secs(1),
            "1 s",
        )?;
        let jitter_ms = u64::try_from(media.jitter_max.as_millis()).unwrap_or(u64::MAX);
        in_range(&["media.jitter_max_ms"], jitter_ms, 20, 5_000)
    }

    fn check_rest(&self) -> Result<(), Violation> {
        let url = &self.database.url;
        if !["sqlite:", "postgres:", "postgresql:"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            return Err(Violation::new(
                &["database.url"],
                format!(
                    "{:?} must start with sqlite:, postgres: or postgresql:",
                    self.database.redacted_url()
                ),
            ));
        }
        if self.log.level.trim().is_empty() {
            return Err(Violation::new(
                &["log.level"],
                "is empty; use e.g. \"info\"".into(),
            ));
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(Violation::new(
                &["log.level"],
                format!("invalid filter {:?}: {error}", self.log.level),
            ));
        }
        let limits = &self.limits;
        for (key, value) in [
            ("limits.max_calls", limits.max_calls),
            ("limits.per_ip_calls_per_minute", limits.per_ip_calls_per_minute),
            ("limits.per_ip_concurrent_calls", limits.per_ip_concurrent_calls),
            ("limits.max_ws_connections", limits.max_ws_connections),
        ] {
            in_range(&[key], value.into(), 1, u32::MAX.into())?;
        }
        // A SIP INVITE with a full WebRTC offer is a few kilobytes; below that no call could start.
        in_range(
            &["limits.max_message_bytes"],
            limits.max_message_bytes.into(),
            4_096,
            16 << 20,
        )
    }
}

impl MediaConfig {
    /// The number of media workers to start: `workers`, or one per CPU core when it is zero.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, NonZero::get),
            workers => workers as usize,
        }
    }
}

impl DatabaseConfig {
    /// The URL with any password (in the user info or a `password=` query parameter) replaced by `***`,
    /// for logs and `check-config`.
    pub fn redacted_url(&self) -> String {
        redact_url_password(&self.url)
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.redacted_url())
            .finish()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::new(LOCALHOST, 8080),
        }
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            udp_listen: Some(SocketAddr::new(LOCALHOST, 5070)),
            tcp_listen: Some(SocketAddr::new(LOCALHOST, 5070)),
            user_agent: "callgate".into(),
            invite_timeout: Duration::from_secs(32),
            session_expires: Duration::from_secs(1800),
            min_se: Duration::from_secs(90),
            options_ping_interval: Duration::from_secs(30),
            options_timeout: Duration::from_secs(5),
            register_expires: Duration::from_secs(3600),
            tls_ca_file: None,
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            public_ip: LOCALHOST,
            bind_ip: LOCALHOST,
            webrtc_port: 10000,
            workers: 0,
            rtp_port_min: 20000,
            rtp_port_max: 29999,
            transcode: TranscodeMode::Always,
            // The speech-quality benchmark: half the codec CPU of 5 for 0.04 less PESQ (docs/quality.md).
            opus_complexity: 1,
            opus_bitrate: 32000,
            opus_fec: true,
            rtp_timeout: Duration::from_secs(30),
            jitter_max: Duration::from_millis(200),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://callgate.db".into(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_calls: 1000,
            per_ip_calls_per_minute: 10,
            per_ip_concurrent_calls: 2,
            drain: Duration::from_secs(30),
            max_ws_connections: 10000,
            max_message_bytes: 65536,
        }
    }
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            enabled: true,
            sip_listen: SocketAddr::new(LOCALHOST, 5090),
        }
    }
}

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A broken validation rule: the keys involved (the first is named unless another was set in a later
/// layer, which is then the one to fix) and what is wrong.
#[derive(Debug)]
struct Violation {
    keys: Vec<&'static str>,
    message: String,
}

impl Violation {
    fn new(keys: &[&'static str], message: String) -> Self {
        Violation {
            keys: keys.to_vec(),
            message,
        }
    }
}

fn in_range(keys: &[&'static str], value: u64, min: u64, max: u64) -> Result<(), Violation> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(Violation::new(
            keys,
            format!("{value} out of range {min}..={max}"),
        ))
    }
}

fn at_least(
    keys: &'static [&'static str],
    value: Duration,
    min: Duration,
    shown: &str,
) -> Result<(), Violation> {
    if value >= min {
        Ok(())
    } else {
        Err(Violation::new(
            keys,
            format!("{value:?} is below the minimum of {shown}"),
        ))
    }
}

/// The values set by the file and the environment on top of the defaults, each remembering its source.
struct Layers {
    /// `Config::default()` as TOML: the sections, their keys and each key's TOML type.
    schema: toml::Table,
    /// Where keys that no layer sets are blamed (the file, when there is one).
    fallback_origin: ConfigSource,
    /// `(section, key)` → value and where it came from; a later layer replaces an earlier entry.
    values: BTreeMap<(String, String), (toml::Value, ConfigSource)>,
}

impl Layers {
    fn new() -> Self {
        // Invariant: see `Config::to_toml`; the defaults serialize like any other config.
        let schema = toml::Table::try_from(Config::default()).expect("default config serializes to TOML");
        Layers {
            schema,
            fallback_origin: ConfigSource::Builtin,
            values: BTreeMap::new(),
        }
    }

    fn schema_section(&self, section: &str) -> Option<&toml::Table> {
        self.schema.get(section).and_then(toml::Value::as_table)
    }

    fn add_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let table: toml::Table = text
            .parse()
            .map_err(|error: toml::de::Error| ConfigError::Syntax {
                path: path.to_owned(),
                line: error.span().map(|span| line_of(&text, span.start)),
                message: one_line(error.message()),
            })?;
        let origin = ConfigSource::File(path.to_owned());
        for (section, keys) in table {
            let Some(schema_section) = self.schema_section(&section) else {
                return Err(ConfigError::UnknownSection { origin, section });
            };
            let toml::Value::Table(keys) = keys else {
                return Err(ConfigError::InvalidValue {
                    origin,
                    message: format!("expected a table [{section}]"),
                    key: section,
                });
            };
            if let Some(key) = keys.keys().find(|key| !schema_section.contains_key(*key)) {
                return Err(ConfigError::UnknownKey {
                    origin,
                    section,
                    key: key.clone(),
                });
            }
            for (key, value) in keys {
                self.values
                    .insert((section.clone(), key), (value, origin.clone()));
            }
        }
        self.fallback_origin = origin;
        Ok(())
    }

    fn add_env(&mut self, name: String, text: String) -> Result<(), ConfigError> {
        let Some(wanted) = name.strip_prefix(ENV_PREFIX) else {
            return Ok(());
        };
        let found = self.schema.iter().find_map(|(section, keys)| {
            let keys = keys.as_table()?;
            keys.iter()
                .find(|(key, _)| format!("{section}_{key}").to_ascii_uppercase() == wanted)
                .map(|(key, default)| (section.clone(), key.clone(), default))
        });
        let Some((section, key, default)) = found else {
            return Ok(());
        };
        // The variable is text; the default's TOML type says how to read it.
        let value = match default {
            toml::Value::Integer(_) => text
                .trim()
                .parse()
                .map(toml::Value::Integer)
                .map_err(|_| format!("expected an integer, got {text:?}")),
            toml::Value::Boolean(_) => match text.trim() {
                "true" => Ok(toml::Value::Boolean(true)),
                "false" => Ok(toml::Value::Boolean(false)),
                _ => Err(format!("expected true or false, got {text:?}")),
            },
            _ => Ok(toml::Value::String(text)),
        };
        let origin = ConfigSource::Environment(name);
        match value {
            Ok(value) => {
                self.values.insert((section, key), (value, origin));
                Ok(())
            }
            Err(message) => Err(ConfigError::InvalidValue {
                origin,
                key: format!("{section}.{key}"),
                message,
            }),
        }
    }

    fn build(self) -> Result<Config, ConfigError> {
        let mut sections: BTreeMap<String, toml::Table> = BTreeMap::new();
        for ((section, key), (value, origin)) in &self.values {
            // Deserializing each key on its own is what lets a serde error name the key it is about.
            let alone = toml::Table::from_iter([(key.clone(), value.clone())]);
            let probe = toml::Table::from_iter([(section.clone(), toml::Value::Table(alone))]);
            if let Err(error) = toml::Value::Table(probe).try_into::<Config>() {
                return Err(ConfigError::InvalidValue {
                    origin: origin.clone(),
                    key: format!("{section}.{key}"),
                    message: one_line(error.message()),
                });
            }
            sections
                .entry(section.clone())
                .or_default()
                .insert(key.clone(), value.clone());
        }
        let merged = sections
            .into_iter()
            .map(|(section, keys)| (section, toml::Value::Table(keys)));
        let config: Config =
            toml::Value::Table(merged.collect())
                .try_into()
                .map_err(|error| ConfigError::InvalidValue {
                    origin: self.fallback_origin.clone(),
                    key: "config".into(),
                    message: one_line(error.message()),
                })?;
        config.check().map_err(|violation| self.blame(violation))?;
        Ok(config)
    }

    /// Names the involved key that was set in the latest layer (the first listed on a tie); a key no layer
    /// set ranks below all of them but is reported against the file, if there is one.
    fn blame(&self, violation: Violation) -> ConfigError {
        let origin_of = |key: &str| {
            key.split_once('.')
                .and_then(|(section, key)| self.values.get(&(section.to_owned(), key.to_owned())))
                .map(|(_, origin)| origin)
        };
        let precedence = |key: &str| origin_of(key).map_or(0, |origin| 1 + origin.precedence());
        // Invariant: every `Violation::new` call passes a non-empty literal list of keys.
        let mut blamed = violation.keys[0];
        for &key in &violation.keys {
            if precedence(key) > precedence(blamed) {
                blamed = key;
            }
        }
        ConfigError::InvalidValue {
            origin: origin_of(blamed).unwrap_or(&self.fallback_origin).clone(),
            key: blamed.to_owned(),
            message: violation.message,
        }
    }
}

fn line_of(text: &str, byte_offset: usize) -> usize {
    let end = byte_offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|byte| **byte == b'\n')
        .count()
        + 1
}

fn one_line(message: &str) -> String {
    message.trim().replace('\n', "; ")
}

/// Replaces the password in `scheme://user:password@host/…` and in a `password=` query parameter.
fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    // The user info ends at the last '@' before the path, so an unescaped '@' in a password is still hidden.
    let path_start = before_query.rfind('@').map_or(0, |at| at + 1);
    let path_start = before_query[path_start..]
        .find('/')
        .map_or(before_query.len(), |slash| slash + path_start);
    let (authority, path) = before_query.split_at(path_start);
    let mut redacted = format!("{scheme}://");
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => redacted.push_str(&format!("{user}:***@{host}")),
            None => redacted.push_str(authority),
        },
        None => redacted.push_str(authority),
    }
    redacted.push_str(path);
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                _ => param.to_owned(),
            })
            .collect();
        redacted.push('?');
        redacted.push_str(&params.join("&"));
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs;

    /// Loads `text` from a file named `x.toml` with `env`, returning the error line with the temporary
    /// directory stripped so tests compare the exact message.
    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("x.toml");
        fs::write(&path, text).expect("write config");
        let env = env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()));
        Config::load_with_env(Some(&path), env).map_err(|error| {
            let dir_prefix = format!("{}{}", dir.path().display(), std::path::MAIN_SEPARATOR);
            error.to_string().replace(&dir_prefix, "")
        })
    }

    fn load_error(text: &str) -> String {
        load_text(text, &[]).expect_err("config must be refused")
    }

    fn env_error(env: &[(&str, &str)]) -> String {
        load_text("", env).expect_err("environment must be refused")
    }

    #[test]
    fn no_file_and_no_environment_gives_the_defaults() {
        let config = Config::load_with_env(None, []).expect("defaults load");
        assert_eq!(config, Config::default());
        assert_eq!(config.http.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.https.listen, None);
        assert_eq!(config.sip.invite_timeout, Duration::from_secs(32));
        assert_eq!(config.media.transcode, TranscodeMode::Always);
        assert_eq!(config.media.jitter_max, Duration::from_millis(200));
        assert_eq!(config.log.format, LogFormat::Text);
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        assert_eq!(load_text("", &[]), Ok(Config::default()));
    }

    #[test]
    fn file_values_replace_defaults_and_keep_the_rest() {
        let config = load_text(
            "[sip]\nudp_listen = \"\"\ninvite_timeout_secs = 10\n[media]\ntranscode = \"when_needed\"\n",
            &[],
        )
        .expect("valid config");
        assert_eq!(config.sip.udp_listen, None);
        assert_eq!(config.sip.tcp_listen, Some("127.0.0.1:5070".parse().unwrap()));
        assert_eq!(config.sip.invite_timeout, Duration::from_secs(10));
        assert_eq!(config.media.transcode, TranscodeMode::WhenNeeded);
        assert_eq!(config.media.rtp_port_min, 20000);
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let error = Config::load_with_env(Some(Path::new("/nonexistent/callgate.toml")), [])
            .expect_err("missing file");
        assert!(
            error
                .to_string()
                .starts_with("/nonexistent/callgate.toml: cannot read: "),
            "{error}"
        );
    }

    #[test]
    fn bad_toml_syntax_names_the_line() {
        assert_eq!(
            load_error("[http]\n\nlisten = \n"),
            "x.toml: line 3: string values must be quoted, expected literal string"
        );
    }

    #[test]
    fn integer_port_beyond_u16_names_the_key() {
        assert_eq!(
            load_error("[media]\nwebrtc_port = 70000\n"),
            "x.toml: media.webrtc_port: port 70000 out of range 1..=65535"
        );
        assert_eq!(
            load_error("[media]\nrtp_port_min = 0\n"),
            "x.toml: media.rtp_port_min: port 0 out of range 1..=65535"
        );
    }

    #[test]
    fn socket_address_port_beyond_u16_names_the_key() {
        assert_eq!(
            load_error("[sip]\nudp_listen = \"127.0.0.1:70000\"\n"),
            "x.toml: sip.udp_listen: port 70000 out of range 1..=65535"
        );
        assert_eq!(
            load_error("[http]\nlisten = \"[::1]:0\"\n"),
            "x.toml: http.listen: port 0 out of range 1..=65535"
        );
    }

    #[test]
    fn nonsense_address_is_refused() {
        assert_eq!(
            load_error("[http]\nlisten = \"nonsense\"\n"),
            "x.toml: http.listen: invalid socket address \"nonsense\""
        );
        assert_eq!(
            load_error("[media]\npublic_ip = \"1.2.3\"\n"),
            "x.toml: media.public_ip: invalid IP address \"1.2.3\""
        );
        assert_eq!(
            load_error("[http]\nlisten = 8080\n"),
            "x.toml: http.listen: invalid type: integer `8080`, expected a string"
        );
    }

    #[test]
    fn unknown_key_and_unknown_section_are_refused() {
        assert_eq!(
            load_error("[http]\nfoo = 1\n"),
            "x.toml: unknown key \"foo\" in [http]"
        );
        assert_eq!(
            load_error("[nonsense]\nlisten = 1\n"),
            "x.toml: unknown section [nonsense]"
        );
        assert_eq!(load_error("listen = \"x\"\n"), "x.toml: unknown section [listen]");
        assert_eq!(load_error("http = 1\n"), "x.toml: http: expected a table [http]");
        assert_eq!(
            load_error("[http.tls]\n"),
            "x.toml: unknown key \"tls\" in [http]"
        );
    }

    #[test]
    fn deny_unknown_fields_holds_without_the_loader() {
        let error = toml::from_str::<Config>("[http]\nfoo = 1\n").expect_err("unknown field");
        assert!(error.message().contains("unknown field `foo`"), "{error}");
    }

    #[test]
    fn bad_enum_value_lists_the_choices() {
        assert_eq!(
            load_error("[media]\ntranscode = \"sometimes\"\n"),
            "x.toml: media.transcode: unknown variant `sometimes`, expected `when_needed` or `always`"
        );
        assert_eq!(
            load_error("[log]\nformat = \"xml\"\n"),
            "x.toml: log.format: unknown variant `xml`, expected `text` or `json`"
        );
    }

    #[test]
    fn rtp_range_rules() {
        assert_eq!(
            load_error("[media]\nrtp_port_min = 30000\n"),
            "x.toml: media.rtp_port_min: media.rtp_port_min (30000) must be below media.rtp_port_max (29999)"
        );
        assert_eq!(
            load_error("[media]\nrtp_port_min = 20001\n"),
            "x.toml: media.rtp_port_min: 20001 is odd; RTP ports are even"
        );
        assert_eq!(
            load_error("[media]\nrtp_port_max = 29998\n"),
            "x.toml: media.rtp_port_max: 29998 is even; the range must end on the RTCP port of a pair"
        );
        assert_eq!(
            load_error("[media]\nwebrtc_port = 25000\n"),
            "x.toml: media.webrtc_port: WebRTC ports 25000..=25000 overlap the RTP range 20000..=29999"
        );
        assert_eq!(
            load_error("[media]\nworkers = 10\nwebrtc_port = 19995\n"),
            "x.toml: media.webrtc_port: WebRTC ports 19995..=20004 overlap the RTP range 20000..=29999"
        );
        assert_eq!(
            load_error("[media]\nworkers = 10\nwebrtc_port = 65530\n"),
            "x.toml: media.webrtc_port: media.webrtc_port + media.workers - 1 = 65539 is past port 65535"
        );
    }

    #[test]
    fn codec_and_timer_ranges() {
        assert_eq!(
            load_error("[media]\nopus_complexity = 11\n"),
            "x.toml: media.opus_complexity: 11 out of range 0..=10"
        );
        assert_eq!(
            load_error("[media]\nopus_bitrate = 5999\n"),
            "x.toml: media.opus_bitrate: 5999 out of range 6000..=510000"
        );
        assert_eq!(
            load_error("[media]\njitter_max_ms = -5\n"),
            "x.toml: media.jitter_max_ms: -5 is negative"
        );
        assert_eq!(
            load_error("[sip]\noptions_timeout_secs = 0\n"),
            "x.toml: sip.options_timeout_secs: 0ns is below the minimum of 1 s"
        );
        assert_eq!(
            load_error("[sip]\nmin_se_secs = 60\n"),
            "x.toml: sip.min_se_secs: 60s is below the minimum of 90 s (RFC 4028)"
        );
        assert_eq!(
            load_error("[sip]\nsession_expires_secs = 100\nmin_se_secs = 120\n"),
            "x.toml: sip.session_expires_secs: sip.session_expires_secs (100) is below sip.min_se_secs (120)"
        );
        assert_eq!(
            load_error("[limits]\nmax_calls = 0\n"),
            "x.toml: limits.max_calls: 0 out of range 1..=4294967295"
        );
    }

    #[test]
    fn listener_conflicts_and_missing_transports() {
        assert_eq!(
            load_error("[sip]\nudp_listen = \"\"\ntcp_listen = \"\"\n"),
            "x.toml: sip.udp_listen: sip.udp_listen and sip.tcp_listen are both empty: no SIP transport toward the PBX"
        );
        assert_eq!(
            load_error("[demo]\nsip_listen = \"127.0.0.1:5070\"\n"),
            "x.toml: demo.sip_listen: demo.sip_listen and sip.udp_listen are both 127.0.0.1:5070"
        );
        let demo_off = "[demo]\nenabled = false\nsip_listen = \"127.0.0.1:5070\"\n";
        assert!(load_text(demo_off, &[]).is_ok());
        assert_eq!(
            load_error("[media]\npublic_ip = \"0.0.0.0\"\n"),
            "x.toml: media.public_ip: 0.0.0.0 cannot be advertised to peers; give the address they reach"
        );
        assert_eq!(
            load_error("[sip]\nuser_agent = \"a\\r\\nX-Injected: 1\"\n"),
            "x.toml: sip.user_agent: \"a\\r\\nX-Injected: 1\" is not a valid header value (empty or control characters)"
        );
    }

    #[test]
    fn https_needs_existing_cert_and_key() {
        assert_eq!(
            load_error("[https]\nlisten = \"127.0.0.1:8443\"\n"),
            "x.toml: https.listen: https.listen is 127.0.0.1:8443, so https.cert (a PEM file) is required"
        );
        assert_eq!(
            load_error(
                "[https]\nlisten = \"127.0.0.1:8443\"\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n"
            ),
            "x.toml: https.cert: file not found: /nonexistent/cert.pem"
        );
        assert_eq!(
            load_error("[https]\nlisten = \"127.0.0.1:8080\"\n"),
            "x.toml: https.listen: http.listen and https.listen are both 127.0.0.1:8080"
        );

        let dir = tempfile::tempdir().expect("temporary directory");
        let cert = dir.path().join("cert.pem");
        fs::write(&cert, "not checked here").expect("write cert");
        let with_cert = format!(
            "[https]\nlisten = \"127.0.0.1:8443\"\ncert = {:?}\n",
            cert.display().to_string()
        );
        assert_eq!(
            load_error(&with_cert),
            "x.toml: https.listen: https.listen is 127.0.0.1:8443, so https.key (a PEM file) is required"
        );
        let complete = format!("{with_cert}key = {:?}\n", cert.display().to_string());
        let config = load_text(&complete, &[]).expect("https with existing files");
        assert_eq!(config.https.listen, Some("127.0.0.1:8443".parse().unwrap()));
        assert_eq!(config.https.key.as_deref(), Some(cert.as_path()));
    }

    #[test]
    fn database_url_and_log_level_are_checked() {
        assert_eq!(
            load_error("[database]\nurl = \"mysql://u:secret@h/db\"\n"),
            "x.toml: database.url: \"mysql://u:***@h/db\" must start with sqlite:, postgres: or postgresql:"
        );
        assert_eq!(
            load_error("[log]\nlevel = \"callgate=loud\"\n"),
            "x.toml: log.level: invalid filter \"callgate=loud\": error parsing level filter: expected one of \"off\", \
             \"error\", \"warn\", \"info\", \"debug\", \"trace\", or a number 0-5"
        );
        let config = load_text("[log]\nlevel = \"callgate::sip=debug,info\"\n", &[]).expect("valid filter");
        assert_eq!(config.log.level, "callgate::sip=debug,info");
    }

    #[test]
    fn tls_ca_file_must_exist_and_has_an_environment_override() {
        assert_eq!(
            load_error("[sip]\ntls_ca_file = \"/nonexistent/pbx.pem\"\n"),
            "x.toml: sip.tls_ca_file: file not found: /nonexistent/pbx.pem"
        );
        assert_eq!(load_text("", &[]).expect("defaults").sip.tls_ca_file, None);
        let dir = tempfile::tempdir().expect("temporary directory");
        let ca = dir.path().join("pbx.pem");
        fs::write(&ca, "read when the server starts").expect("write ca");
        let config = load_text(
            "[sip]\ntls_ca_file = \"\"\n",
            &[("CALLGATE_SIP_TLS_CA_FILE", &ca.display().to_string())],
        )
        .expect("existing file");
        assert_eq!(config.sip.tls_ca_file.as_deref(), Some(ca.as_path()));
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = load_text(
            "[http]\nlisten = \"127.0.0.1:9000\"\n[media]\nrtp_port_min = 30000\nrtp_port_max = 30099\n",
            &[
                ("CALLGATE_HTTP_LISTEN", "0.0.0.0:8080"),
                ("CALLGATE_DATABASE_URL", "postgres://callgate:pw@db/callgate"),
                ("CALLGATE_MEDIA_RTP_PORT_MIN", "30010"),
                ("CALLGATE_MEDIA_OPUS_FEC", "false"),
                ("CALLGATE_HTTPS_LISTEN", ""),
                ("CALLGATE_LIMITS_DRAIN_SECS", " 5 "),
                ("CALLGATE_TEST_POSTGRES_URL", "postgres://ignored"),
                ("CALLGATE_NOT_A_KEY", "whatever"),
                ("PATH", "/usr/bin"),
            ],
        )
        .expect("valid overrides");
        assert_eq!(config.http.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(config.database.url, "postgres://callgate:pw@db/callgate");
        assert_eq!(config.media.rtp_port_min, 30010);
        assert_eq!(config.media.rtp_port_max, 30099);
        assert!(!config.media.opus_fec);
        assert_eq!(config.limits.drain, Duration::from_secs(5));
    }

    #[test]
    fn invalid_environment_values_name_the_variable() {
        assert_eq!(
            env_error(&[("CALLGATE_HTTP_LISTEN", "x")]),
            "environment CALLGATE_HTTP_LISTEN: invalid socket address \"x\""
        );
        assert_eq!(
            env_error(&[("CALLGATE_MEDIA_RTP_PORT_MIN", "low")]),
            "environment CALLGATE_MEDIA_RTP_PORT_MIN: expected an integer, got \"low\""
        );
        assert_eq!(
            env_error(&[("CALLGATE_MEDIA_RTP_PORT_MAX", "70001")]),
            "environment CALLGATE_MEDIA_RTP_PORT_MAX: port 70001 out of range 1..=65535"
        );
        assert_eq!(
            env_error(&[("CALLGATE_DEMO_ENABLED", "yes")]),
            "environment CALLGATE_DEMO_ENABLED: expected true or false, got \"yes\""
        );
        // A cross-key rule blames the key set by the environment, not the file's key it conflicts with.
        assert_eq!(
            load_text(
                "[media]\nrtp_port_min = 20000\n",
                &[("CALLGATE_MEDIA_RTP_PORT_MAX", "19999")]
            )
            .expect_err("inverted range"),
            "environment CALLGATE_MEDIA_RTP_PORT_MAX: media.rtp_port_min (20000) must be below media.rtp_port_max (19999)"
        );
    }

    #[test]
    fn environment_alone_without_a_file() {
        let env = [("CALLGATE_SIP_USER_AGENT".to_string(), "edge-1".to_string())];
        let config = Config::load_with_env(None, env).expect("valid override");
        assert_eq!(config.sip.user_agent, "edge-1");
        let env = [("CALLGATE_MEDIA_OPUS_COMPLEXITY".to_string(), "11".to_string())];
        let error = Config::load_with_env(None, env).expect_err("out of range");
        assert_eq!(
            error.to_string(),
            "environment CALLGATE_MEDIA_OPUS_COMPLEXITY: 11 out of range 0..=10"
        );
    }

    #[test]
    fn to_toml_round_trips() {
        let mut config = Config::default();
        config.sip.udp_listen = None;
        config.media.transcode = TranscodeMode::WhenNeeded;
        config.media.workers = 4;
        config.media.jitter_max = Duration::from_millis(120);
        config.log.format = LogFormat::Json;
        config.demo.enabled = false;
        config.https.cert = Some(PathBuf::from("/etc/callgate/cert.pem"));
        for config in [Config::default(), config] {
            let text = config.to_toml();
            let back = load_text(&text, &[]).expect("to_toml output loads");
            assert_eq!(back, config, "{text}");
        }
        let text = Config::default().to_toml();
        assert!(
            text.contains("[https]\nlisten = \"\"\ncert = \"\"\nkey = \"\"\n"),
            "{text}"
        );
        assert!(text.contains("invite_timeout_secs = 32\n"), "{text}");
    }

    #[test]
    fn database_password_is_masked() {
        let mut config = Config::default();
        config.database.url = "postgres://callgate:s3cr%40t@db.example:5432/callgate?sslmode=require".into();
        let text = config.to_toml();
        assert!(!text.contains("s3cr"), "{text}");
        assert!(
            text.contains("url = \"postgres://callgate:***@db.example:5432/callgate?sslmode=require\""),
            "{text}"
        );
        assert!(!format!("{config:?}").contains("s3cr"));

        let cases = [
            ("sqlite://callgate.db", "sqlite://callgate.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            (
                "postgres://callgate@db/callgate",
                "postgres://callgate@db/callgate",
            ),
            ("postgres://u:p@ss@db/x", "postgres://u:***@db/x"),
            ("postgres://u:a/b@db/x", "postgres://u:***@db/x"),
            (
                "postgresql://db/x?user=u&password=pw&sslmode=disable",
                "postgresql://db/x?user=u&password=***&sslmode=disable",
            ),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url_password(url), shown, "{url}");
        }
    }

    #[test]
    fn worker_count_resolves_zero_to_the_cores() {
        let mut media = MediaConfig::default();
        assert!(media.worker_count() >= 1);
        media.workers = 3;
        assert_eq!(media.worker_count(), 3);
    }
}
