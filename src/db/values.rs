//! Values stored in the database, as types that cannot hold an invalid value: each parses from the text an
//! operator types (and from the text stored in a column), and prints back to that same text.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use thiserror::Error;

/// Why a piece of text is not a valid value; printed after the offending value, so it never repeats it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidValue {
    /// A trunk or widget name breaks the naming rule.
    #[error("a name is 1 to 64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit")]
    Name,
    /// Not a hostname, IPv4 or IPv6 address.
    #[error("a host is a hostname or an IP address, without scheme, port, path or spaces")]
    Host,
    /// A `host[:port]` pair is malformed.
    #[error("expected HOST or HOST:PORT with a port from 1 to 65535 (IPv6 as [ADDR]:PORT)")]
    HostPort,
    /// An origin is not `https://host[:port]` (or plain http on localhost).
    #[error("{0}")]
    Origin(&'static str),
    /// A widget needs at least one allowed origin.
    #[error("at least one origin is required")]
    NoOrigins,
    /// A destination or caller id breaks the SIP user rule.
    #[error(
        "expected a number (digits, * and #, optionally starting with +) or a SIP user name \
         (A-Z a-z 0-9 . _ -), 1 to 64 characters"
    )]
    SipUser,
    /// Not one of udp, tcp, tls.
    #[error("a transport is one of: udp, tcp, tls")]
    Transport,
    /// Not one of pcmu, pcma.
    #[error("a codec is one of: pcmu, pcma")]
    Codec,
    /// A codec list is empty or names a codec twice.
    #[error("codecs are a comma-separated list of distinct codecs from: pcmu, pcma")]
    CodecList,
    /// A username, password or realm is empty, too long or contains control characters.
    #[error("must be 1 to 128 printable characters")]
    Credential,
    /// A widget public id is not 22 base64url characters.
    #[error("a widget public id is 22 characters of A-Z a-z 0-9 - _")]
    PublicId,
    /// A widget secret is not 43 base64url characters.
    #[error("a widget secret is 43 characters of A-Z a-z 0-9 - _")]
    Secret,
    /// Not one of browser, pbx, gateway.
    #[error("the side that ended a call is one of: browser, pbx, gateway")]
    EndedBy,
}

/// Implements `FromStr` for a string newtype: the text is kept as given when `$is_valid` accepts it.
macro_rules! parse_when {
    ($type:ident, $is_valid:expr, $error:expr) => {
        impl FromStr for $type {
            type Err = InvalidValue;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let is_valid: fn(&str) -> bool = $is_valid;
                if is_valid(text) {
                    Ok(Self(text.to_owned()))
                } else {
                    Err($error)
                }
            }
        }
    };
}

/// Declares the `Display`/`as_str` boilerplate of a validated string newtype.
macro_rules! text_value {
    ($type:ident) => {
        impl $type {
            /// The value as text, exactly as stored.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// The name of a trunk or widget: 1 to 64 characters of `[A-Za-z0-9._-]`, starting with a letter or digit
/// (so that it can never be mistaken for a command-line flag).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);
text_value!(Name);

parse_when!(Name, is_name, InvalidValue::Name);

fn is_name(text: &str) -> bool {
    let starts_well = text.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let valid_chars = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    starts_well && valid_chars && text.len() <= 64
}

/// A hostname (lower-cased, RFC 1123 labels) or an IP address. IPv6 addresses print in brackets, the form
/// they take in a SIP URI; they parse with or without them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name.
    Name(String),
    /// An IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 address.
    Ipv6(Ipv6Addr),
}

impl FromStr for Host {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(inner) = text.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
            return inner.parse().map(Self::Ipv6).map_err(|_| InvalidValue::Host);
        }
        if let Ok(v6) = text.parse() {
            return Ok(Self::Ipv6(v6));
        }
        if let Ok(v4) = text.parse() {
            return Ok(Self::Ipv4(v4));
        }
        if is_hostname(text) {
            Ok(Self::Name(text.to_ascii_lowercase()))
        } else {
            Err(InvalidValue::Host)
        }
    }
}

/// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, at most 253 characters;
/// the last label is not all digits, so a mistyped IPv4 address such as `10.0.0.300` is refused.
fn is_hostname(text: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let last_label_has_letter = text
        .rsplit('.')
        .next()
        .is_some_and(|last| last.chars().any(|c| !c.is_ascii_digit()));
    text.len() <= 253 && text.split('.').all(label_ok) && last_label_has_letter
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Ipv4(address) => write!(f, "{address}"),
            Self::Ipv6(address) => write!(f, "[{address}]"),
        }
    }
}

/// A host with an optional port, such as an outbound proxy: `proxy.example`, `10.0.0.1:5080`,
/// `[2001:db8::1]:5060`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Where to connect.
    pub host: Host,
    /// The port; the transport's default when absent.
    pub port: Option<u16>,
}

impl FromStr for HostPort {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // A bare IPv6 address has colons but no port; brackets are required to add one.
        if let Ok(host @ Host::Ipv6(_)) = text.parse::<Host>() {
            return Ok(Self { host, port: None });
        }
        let (host_text, port_text) = match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        };
        let host = host_text.parse().map_err(|_| InvalidValue::HostPort)?;
        let port = match port_text {
            Some(port) => Some(parse_port(port).ok_or(InvalidValue::HostPort)?),
            None => None,
        };
        Ok(Self { host, port })
    }
}

/// A port from 1 to 65535, written in plain digits.
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|port| *port != 0)
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

/// A web origin allowed to use a widget, exactly as a browser sends it in the `Origin` header:
/// `https://host[:port]`, lower case, no path, default port left out. Plain `http://` is accepted only for
/// `localhost` and `127.0.0.1`, for local development.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin(String);
text_value!(Origin);

impl FromStr for Origin {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.to_ascii_lowercase();
        let (scheme, rest, default_port) = if let Some(rest) = lower.strip_prefix("https://") {
            ("https", rest, 443)
        } else if let Some(rest) = lower.strip_prefix("http://") {
            ("http", rest, 80)
        } else {
            return Err(InvalidValue::Origin("an origin starts with https://"));
        };
        if rest.contains(['/', '?', '#']) {
            return Err(InvalidValue::Origin(
                "an origin is https://host[:port] with no path, not even '/'",
            ));
        }
        if rest.contains('@') {
            return Err(InvalidValue::Origin("an origin has no user name"));
        }
        let host_port: HostPort = rest.parse().map_err(|_| {
            InvalidValue::Origin("an origin is https://host[:port] with a valid host and port")
        })?;
        let local = match &host_port.host {
            Host::Name(name) => name == "localhost",
            Host::Ipv4(address) => *address == Ipv4Addr::LOCALHOST,
            Host::Ipv6(_) => false,
        };
        if scheme == "http" && !local {
            return Err(InvalidValue::Origin(
                "an origin must use https:// (http:// only for localhost and 127.0.0.1)",
            ));
        }
        let port = host_port.port.filter(|port| *port != default_port);
        let normalised = HostPort { port, ..host_port };
        Ok(Self(format!("{scheme}://{normalised}")))
    }
}

/// The non-empty, duplicate-free list of origins a widget accepts calls from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origins(Vec<Origin>);

impl Origins {
    /// Builds the list, dropping repeats; refuses an empty list.
    pub fn new(origins: impl IntoIterator<Item = Origin>) -> Result<Self, InvalidValue> {
        let mut unique: Vec<Origin> = Vec::new();
        for origin in origins {
            if !unique.contains(&origin) {
                unique.push(origin);
            }
        }
        if unique.is_empty() {
            Err(InvalidValue::NoOrigins)
        } else {
            Ok(Self(unique))
        }
    }

    /// Whether a browser's `Origin` header value is on the list (compared in the normalised form).
    pub fn allows(&self, origin_header: &str) -> bool {
        origin_header
            .parse::<Origin>()
            .is_ok_and(|origin| self.0.contains(&origin))
    }

    /// The origins in the order they were given.
    pub fn iter(&self) -> impl Iterator<Item = &Origin> {
        self.0.iter()
    }
}

/// Stored as the origins separated by single spaces (an origin never contains one).
impl FromStr for Origins {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::new(
            text.split_whitespace()
                .map(str::parse)
                .collect::<Result<Vec<_>, _>>()?,
        )
    }
}

impl fmt::Display for Origins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<&str> = self.0.iter().map(Origin::as_str).collect();
        f.write_str(&texts.join(" "))
    }
}

/// Whether `text` is a SIP user part callgate accepts: a number (digits, `*`, `#`, optionally a leading `+`)
/// or a user name of `[A-Za-z0-9._-]`, 1 to 64 characters.
fn is_sip_user(text: &str) -> bool {
    let number = text.strip_prefix('+').unwrap_or(text);
    let is_number = !number.is_empty()
        && number
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#'));
    let is_user_name = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    text.len() <= 64 && (is_number || is_user_name)
}

/// The number or extension a widget calls; set by the operator, never by the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination(String);
text_value!(Destination);

parse_when!(Destination, is_sip_user, InvalidValue::SipUser);

/// The caller id a widget presents to the PBX (the user part of the outgoing From).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerId(String);
text_value!(CallerId);

parse_when!(CallerId, is_sip_user, InvalidValue::SipUser);

/// The SIP transport toward a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// SIP over UDP.
    Udp,
    /// SIP over TCP.
    Tcp,
    /// SIP over TLS.
    Tls,
}

impl Transport {
    /// The lower-case name, as stored and typed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }

    /// The port a SIP server listens on for this transport (RFC 3261 §19.1.2).
    pub fn default_port(self) -> u16 {
        match self {
            Self::Udp | Self::Tcp => 5060,
            Self::Tls => 5061,
        }
    }
}

impl FromStr for Transport {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "udp" => Ok(Self::Udp),
            "tcp" => Ok(Self::Tcp),
            "tls" => Ok(Self::Tls),
            _ => Err(InvalidValue::Transport),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A codec callgate offers toward a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// G.711 µ-law (payload type 0).
    Pcmu,
    /// G.711 A-law (payload type 8).
    Pcma,
}

impl Codec {
    /// The lower-case name, as stored and typed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pcmu => "pcmu",
            Self::Pcma => "pcma",
        }
    }
}

impl FromStr for Codec {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "pcmu" => Ok(Self::Pcmu),
            "pcma" => Ok(Self::Pcma),
            _ => Err(InvalidValue::Codec),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A trunk's codecs in order of preference: non-empty, no repeats. Typed and stored as `pcmu,pcma`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecList(Vec<Codec>);

impl CodecList {
    /// Builds the list; refuses an empty list or a repeated codec.
    pub fn new(codecs: Vec<Codec>) -> Result<Self, InvalidValue> {
        let repeated = codecs
            .iter()
            .enumerate()
            .any(|(index, codec)| codecs[..index].contains(codec));
        if codecs.is_empty() || repeated {
            Err(InvalidValue::CodecList)
        } else {
            Ok(Self(codecs))
        }
    }

    /// The codecs, most preferred first.
    pub fn as_slice(&self) -> &[Codec] {
        &self.0
    }
}

impl Default for CodecList {
    /// µ-law first: it is what North American PBXs expect and every PBX supports it.
    fn default() -> Self {
        Self(vec![Codec::Pcmu, Codec::Pcma])
    }
}

impl FromStr for CodecList {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let codecs = text.split(',').map(str::parse).collect::<Result<Vec<Codec>, _>>();
        Self::new(codecs.map_err(|_| InvalidValue::CodecList)?)
    }
}

impl fmt::Display for CodecList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|codec| codec.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

/// Whether `text` is 1 to 128 characters with no control characters.
fn is_credential(text: &str) -> bool {
    (1..=128).contains(&text.chars().count()) && !text.chars().any(char::is_control)
}

/// A digest-authentication username or realm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential(String);
text_value!(Credential);

parse_when!(Credential, is_credential, InvalidValue::Credential);

/// A trunk's digest-authentication password. Its `Debug` is masked and it has no `Display`, so it cannot
/// end up in a log line or a table by accident; [`Password::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// The password itself, for computing a digest response or storing it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

parse_when!(Password, is_credential, InvalidValue::Credential);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Fills `N` bytes from the thread-local CSPRNG (ChaCha seeded from the OS) and encodes them base64url
/// without padding.
fn random_base64url<const N: usize>() -> String {
    let mut bytes = [0_u8; N];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `text` is exactly `len` characters of the base64url alphabet.
fn is_base64url(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

/// A widget's public id: 16 random bytes in base64url (22 characters). It appears in the website's HTML,
/// so it identifies the widget but grants nothing by itself; being random, ids cannot be enumerated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PublicId(String);
text_value!(PublicId);

impl PublicId {
    /// A fresh random id.
    pub fn generate() -> Self {
        Self(random_base64url::<16>())
    }
}

parse_when!(PublicId, |text| is_base64url(text, 22), InvalidValue::PublicId);

/// A widget's token-signing secret: 32 random bytes in base64url (43 characters). Masked in `Debug`, no
/// `Display`; [`WidgetSecret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct WidgetSecret(String);

impl WidgetSecret {
    /// A fresh random secret.
    pub fn generate() -> Self {
        Self(random_base64url::<32>())
    }

    /// The secret as stored (base64url text), to key an HMAC with.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

parse_when!(WidgetSecret, |text| is_base64url(text, 43), InvalidValue::Secret);

impl fmt::Debug for WidgetSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WidgetSecret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_look_like_identifiers() {
        for good in ["pbx", "pbx-1", "Main.Office_2", "9"] {
            assert!(good.parse::<Name>().is_ok(), "{good}");
        }
        for bad in ["", "-pbx", ".pbx", "pbx one", "pbx/1", "é", &"a".repeat(65)] {
            assert_eq!(bad.parse::<Name>(), Err(InvalidValue::Name), "{bad}");
        }
    }

    #[test]
    fn hosts_are_names_or_addresses_and_print_canonically() {
        assert_eq!(
            "PBX.Example.com".parse::<Host>().unwrap().to_string(),
            "pbx.example.com"
        );
        assert_eq!(
            "192.0.2.7".parse::<Host>().unwrap(),
            Host::Ipv4(Ipv4Addr::new(192, 0, 2, 7))
        );
        assert_eq!(
            "2001:db8::1".parse::<Host>().unwrap().to_string(),
            "[2001:db8::1]"
        );
        assert_eq!(
            "[2001:db8::1]".parse::<Host>().unwrap().to_string(),
            "[2001:db8::1]"
        );
        for bad in [
            "",
            "pbx example",
            "sip://pbx",
            "pbx:5060",
            "pbx/x",
            "-pbx",
            "pbx-",
            "a..b",
            "10.0.0.300",
            "[pbx]",
            &"a".repeat(64),
        ] {
            assert_eq!(bad.parse::<Host>(), Err(InvalidValue::Host), "{bad}");
        }
    }

    #[test]
    fn host_ports_round_trip() {
        for text in [
            "proxy.example",
            "proxy.example:5080",
            "10.0.0.1:5060",
            "[2001:db8::1]:5060",
        ] {
            assert_eq!(text.parse::<HostPort>().unwrap().to_string(), text);
        }
        assert_eq!(
            "2001:db8::1".parse::<HostPort>().unwrap().to_string(),
            "[2001:db8::1]"
        );
        for bad in [
            "proxy:0",
            "proxy:70000",
            "proxy:",
            "proxy:+5",
            ":5060",
            "a b:5060",
        ] {
            assert_eq!(bad.parse::<HostPort>(), Err(InvalidValue::HostPort), "{bad}");
        }
    }

    #[test]
    fn origins_are_normalised_like_browsers_send_them() {
        let parse = |text: &str| text.parse::<Origin>().map(|origin| origin.to_string());
        assert_eq!(
            parse("https://Shop.Example"),
            Ok("https://shop.example".to_owned())
        );
        assert_eq!(
            parse("https://shop.example:443"),
            Ok("https://shop.example".to_owned())
        );
        assert_eq!(
            parse("https://shop.example:8443"),
            Ok("https://shop.example:8443".to_owned())
        );
        assert_eq!(
            parse("http://localhost:3000"),
            Ok("http://localhost:3000".to_owned())
        );
        assert_eq!(parse("http://127.0.0.1"), Ok("http://127.0.0.1".to_owned()));
        for bad in [
            "shop.example",
            "ftp://shop.example",
            "http://shop.example",
            "https://shop.example/",
            "https://shop.example/path",
            "https://user@shop.example",
            "https://shop example",
            "https://shop.example:99999",
            "https://",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn origin_lists_refuse_empty_and_match_headers() {
        assert_eq!(Origins::new([]), Err(InvalidValue::NoOrigins));
        let origins: Origins = "https://a.example https://b.example:8443 https://a.example"
            .parse()
            .unwrap();
        assert_eq!(origins.to_string(), "https://a.example https://b.example:8443");
        assert!(origins.allows("https://A.example:443"));
        assert!(origins.allows("https://b.example:8443"));
        assert!(!origins.allows("https://b.example"));
        assert!(!origins.allows("https://evil.example"));
        assert!(!origins.allows("null"));
    }

    #[test]
    fn destinations_are_numbers_or_user_names() {
        for good in ["100", "+4930123456", "*97", "#1", "sales", "front.desk_2-a"] {
            assert!(good.parse::<Destination>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "+",
            "1 00",
            "sip:100@pbx",
            "100@pbx",
            "+sales",
            "a;b",
            &"1".repeat(65),
        ] {
            assert_eq!(bad.parse::<Destination>(), Err(InvalidValue::SipUser), "{bad}");
        }
    }

    #[test]
    fn codec_lists_keep_order_and_refuse_repeats() {
        assert_eq!(
            "pcma,pcmu".parse::<CodecList>().unwrap().as_slice(),
            [Codec::Pcma, Codec::Pcmu]
        );
        assert_eq!("PCMU".parse::<CodecList>().unwrap().to_string(), "pcmu");
        for bad in ["", "pcmu,pcmu", "opus", "pcmu,,pcma"] {
            assert_eq!(bad.parse::<CodecList>(), Err(InvalidValue::CodecList), "{bad}");
        }
    }

    #[test]
    fn secrets_are_random_and_masked() {
        let first = WidgetSecret::generate();
        assert_eq!(first.expose().len(), 43);
        assert_ne!(first, WidgetSecret::generate());
        assert_eq!(format!("{first:?}"), "WidgetSecret(***)");
        assert!(first.expose().parse::<WidgetSecret>().is_ok());
        let id = PublicId::generate();
        assert_eq!(id.as_str().len(), 22);
        assert_eq!(id.as_str().parse::<PublicId>(), Ok(id));
        assert_eq!("too-short".parse::<PublicId>(), Err(InvalidValue::PublicId));
        let password: Password = "hunter2".parse().unwrap();
        assert_eq!(format!("{password:?}"), "Password(***)");
        assert_eq!("tab\there".parse::<Password>(), Err(InvalidValue::Credential));
    }
}
