//! SIP messages: reading them from bytes, printing them to bytes, and the header helpers the transaction,
//! dialog and B2BUA layers need.
//!
//! Messages are [`rsip`] types. Framing and tokenising are done here rather than by rsip's own tokenizer,
//! because that tokenizer refuses or mangles legitimate messages: LF-only line endings, folded header lines,
//! IPv6 hosts (`sip:[2001:db8::1]`), unknown methods, a space before a Via parameter (the parameters are
//! silently dropped), and quoted Contact parameters such as `+sip.instance="<urn:uuid:…>"`. [`parse`] frames
//! the message itself (size limit, line endings, folding, compact header names, Content-Length), builds the
//! rsip values directly, and checks the headers every transaction needs. Header values stay untyped rsip
//! headers (a string each); the readers here ([`Via`], [`NameAddr`], [`CSeq`], [`parse_uri`]) parse them on
//! demand with their own tolerant parsers instead of rsip's typed headers.
//!
//! Printing goes through [`request_bytes`], [`response_bytes`] or [`message_bytes`], which write the body
//! as raw bytes, the standard reason phrases, and a Content-Length that always matches the body (rsip's
//! `Display` prints `486 BusyHere` and passes the body through a lossy UTF-8 conversion).

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use rand::Rng;
use rand::distr::Alphanumeric;
use rsip::common::uri::param::{OtherParam, OtherParamValue};
use rsip::headers::UntypedHeader;
use rsip::message::HasHeaders;
use rsip::{Auth, Header, Headers, Host, HostWithPort, Method, Param, Request, Response, Scheme, SipMessage};
use rsip::{StatusCode, Uri, Version};

/// The largest message [`parse`] accepts, in bytes; larger requests are answered 513 Message Too Large.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The RFC 3261 branch prefix that marks a branch as globally unique (§8.1.1.7).
pub const BRANCH_MAGIC_COOKIE: &str = "z9hG4bK";

/// The Max-Forwards value for requests we originate (RFC 3261 §8.1.1.6).
pub const DEFAULT_MAX_FORWARDS: u32 = 70;

/// Everything that can be wrong with a message or a header value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The message is larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {size} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge {
        /// The size of the refused message.
        size: usize,
    },
    /// No bytes, or only blank lines (a keepalive).
    #[error("empty message")]
    Empty,
    /// The header section does not end with an empty line.
    #[error("header section not terminated by an empty line")]
    UnterminatedHeaders,
    /// A line of the start line or header section is not UTF-8.
    #[error("line {line} is not UTF-8")]
    NotUtf8 {
        /// The 1-based line number.
        line: usize,
    },
    /// The first line is neither a request line nor a status line.
    #[error("malformed start line")]
    BadStartLine,
    /// The version is not SIP/2.0.
    #[error("unsupported SIP version {0:?}")]
    UnsupportedVersion(String),
    /// The request method is not one rsip knows.
    #[error("unknown method {0:?}")]
    UnknownMethod(String),
    /// A URI whose scheme is neither sip nor sips.
    #[error("unsupported URI scheme in {0:?}")]
    UnsupportedUriScheme(String),
    /// A sip or sips URI that cannot be read.
    #[error("malformed URI {uri:?}: {reason}")]
    BadUri {
        /// The URI (at most 100 characters of it).
        uri: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A header line without a name and a colon, or a continuation line with nothing to continue.
    #[error("malformed header line {line}")]
    BadHeaderLine {
        /// The 1-based line number.
        line: usize,
    },
    /// A header that must be present is missing.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A header value that cannot be read.
    #[error("malformed {name} header: {reason}")]
    BadHeader {
        /// The header name.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Content-Length announces more body bytes than the message carries.
    #[error("Content-Length {declared} but only {actual} body bytes")]
    BodyTruncated {
        /// The Content-Length value.
        declared: usize,
        /// The body bytes present.
        actual: usize,
    },
    /// The CSeq method differs from the request method.
    #[error("CSeq method {cseq} does not match request method {request}")]
    CSeqMethodMismatch {
        /// The method of the request line.
        request: Method,
        /// The method in CSeq.
        cseq: Method,
    },
    /// Max-Forwards is zero: the request must be answered 483 Too Many Hops.
    #[error("Max-Forwards exhausted")]
    TooManyHops,
}

/// A message [`parse`] refused, with what is needed to answer it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct ParseError {
    /// What was wrong.
    pub error: MessageError,
    /// The request's readable parts, kept to build an error response.
    echo: Option<Box<Echo>>,
}

impl ParseError {
    /// The status code a refused request is answered with: 513 when too large, 501 for an unknown method,
    /// 505 for another SIP version, 416 for another URI scheme, 400 otherwise.
    pub fn status_code(&self) -> u16 {
        match self.error {
            MessageError::TooLarge { .. } => 513,
            MessageError::UnknownMethod(_) => 501,
            MessageError::UnsupportedVersion(_) => 505,
            MessageError::UnsupportedUriScheme(_) => 416,
            _ => 400,
        }
    }

    /// The bytes of the response to send back, when the message was a request (not an ACK) with at least one
    /// readable Via. The response is always well formed, whatever the request held: it copies only the Vias,
    /// From, To, Call-ID and CSeq that parse (RFC 3261 §8.2.6.2), and a Warning header says what was wrong.
    ///
    /// A header that does not parse is not echoed, since a strict client could not read the response then.
    /// What replaces it does not affect transaction matching (branch and CSeq method, §17.1.3): an unreadable
    /// CSeq becomes the readable sequence number (else 0) and the request line's method; an unreadable From
    /// or To the anonymous URI of RFC 3323; a missing Call-ID a new one. A request whose Vias are all
    /// unreadable is not answered: no client could match the response to its request.
    pub fn error_response(&self) -> Option<Vec<u8>> {
        let echo = self.echo.as_deref()?;
        let mut headers = Headers::default();
        let vias: Vec<&String> = echo.vias.iter().filter(|via| Via::parse(via).is_ok()).collect();
        if vias.is_empty() {
            return None;
        }
        for via in vias {
            headers.push(header_from_parts("Via", via.clone()));
        }
        let readable = |value: &Option<String>| {
            value
                .as_ref()
                .filter(|value| NameAddr::parse(value).is_ok())
                .cloned()
        };
        let from = readable(&echo.from).unwrap_or_else(|| format!("<{ANONYMOUS_URI}>;tag={}", new_tag()));
        headers.push(header_from_parts("From", from));
        let to = match readable(&echo.to) {
            Some(to) if NameAddr::parse(&to).is_ok_and(|to| to.tag().is_some()) => to,
            Some(to) => format!("{to};tag={}", new_tag()),
            None => format!("<{ANONYMOUS_URI}>;tag={}", new_tag()),
        };
        headers.push(header_from_parts("To", to));
        let call_id = echo
            .call_id
            .clone()
            .filter(|call_id| is_call_id(call_id))
            .unwrap_or_else(new_call_id);
        headers.push(header_from_parts("Call-ID", call_id));
        headers.push(header_from_parts("CSeq", echo.cseq()));
        let detail: String = self
            .error
            .to_string()
            .chars()
            .map(|c| {
                if c == '"' || c == '\\' || c.is_control() {
                    '\''
                } else {
                    c
                }
            })
            .take(200)
            .collect();
        headers.push(header_from_parts("Warning", format!("399 callgate \"{detail}\"")));
        let response = Response {
            status_code: StatusCode::from(self.status_code()),
            version: Version::V2,
            headers,
            body: Vec::new(),
        };
        Some(response_bytes(&response))
    }
}

/// The anonymous URI (RFC 3323 §4.1.1.3), for an error response's From or To when the request's is unreadable.
const ANONYMOUS_URI: &str = "sip:anonymous@anonymous.invalid";

/// Whether a Call-ID is `word ["@" word]` (RFC 3261 §25.1): no whitespace, and nothing a parser could
/// take for the end of the value.
fn is_call_id(value: &str) -> bool {
    let word_byte = |b: u8| b.is_ascii_alphanumeric() || b"-.!%*_+`'~()<>:\\\"/[]?{}".contains(&b);
    let mut words = value.split('@');
    let first = words.next().unwrap_or_default();
    let second = words.next();
    words.next().is_none()
        && !first.is_empty()
        && first.bytes().all(word_byte)
        && second.is_none_or(|word| !word.is_empty() && word.bytes().all(word_byte))
}

impl From<MessageError> for ParseError {
    /// A refusal without the parts needed to answer it.
    fn from(error: MessageError) -> Self {
        ParseError { error, echo: None }
    }
}

/// The raw values of a refused request that an error response copies, each as received (checked when the
/// response is built).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Echo {
    /// The request line's method, a token but perhaps not one rsip knows.
    method: String,
    vias: Vec<String>,
    from: Option<String>,
    to: Option<String>,
    call_id: Option<String>,
    cseq: Option<String>,
}

impl Echo {
    /// The CSeq as received when it reads as `<number> <method>`, else the readable number (or 0) and the
    /// request line's method. That method may be one rsip does not know (a 501 answers those, and a broken
    /// request may carry one): it is still a token, all the grammar asks, and what the client matches on.
    fn cseq(&self) -> String {
        let received = self.cseq.as_deref().unwrap_or_default();
        if let Ok(cseq) = CSeq::parse(received) {
            return cseq.to_string();
        }
        let number = received
            .split_whitespace()
            .next()
            .and_then(|number| number.parse::<u32>().ok());
        format!("{} {}", number.unwrap_or(0), self.method)
    }
}

/// Reads one SIP message from a datagram, a WebSocket frame or a framed stream chunk.
///
/// Accepts CRLF or LF line endings and folded header lines, expands compact header names, discards bytes
/// beyond Content-Length (RFC 3261 §18.3), and requires Via, From, To, Call-ID and a CSeq whose method
/// matches the request. The Content-Length header is consumed: the body's length is authoritative and the
/// printers write the header again.
pub fn parse(bytes: &[u8]) -> Result<SipMessage, ParseError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        let echo = RawMessage::read(&bytes[..MAX_MESSAGE_BYTES])
            .ok()
            .and_then(|raw| raw.echo());
        return Err(ParseError {
            error: MessageError::TooLarge { size: bytes.len() },
            echo,
        });
    }
    let raw = RawMessage::read(bytes).map_err(|error| ParseError { error, echo: None })?;
    let echo = raw.echo();
    raw.into_message().map_err(|error| ParseError { error, echo })
}

/// A message split into its start line, header (name, value) pairs and body, before any meaning is read.
struct RawMessage<'a> {
    start_line: &'a str,
    /// Names with compact forms expanded; comma lists of Via, Route, Record-Route and Contact split.
    headers: Vec<(String, String)>,
    body: &'a [u8],
    /// The first framing error, kept so that the readable headers can still be echoed.
    framing_error: Option<MessageError>,
}

impl<'a> RawMessage<'a> {
    fn read(bytes: &'a [u8]) -> Result<Self, MessageError> {
        let start = bytes
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .ok_or(MessageError::Empty)?;
        let bytes = &bytes[start..];
        let (head, body, terminated) = split_head(bytes);
        let mut framing_error = (!terminated).then_some(MessageError::UnterminatedHeaders);
        let mut lines = head
            .split(|&b| b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
        let start_line = lines.next().unwrap_or_default();
        let start_line = std::str::from_utf8(start_line).map_err(|_| MessageError::NotUtf8 { line: 1 })?;
        if has_control_characters(start_line) {
            return Err(MessageError::BadStartLine);
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut record = |error: MessageError| {
            framing_error.get_or_insert(error);
        };
        for (index, line) in lines.enumerate() {
            let line_number = index + 2;
            let Ok(line) = std::str::from_utf8(line) else {
                record(MessageError::NotUtf8 { line: line_number });
                continue;
            };
            if has_control_characters(line) {
                // A bare CR or NUL relayed to another peer could be read there as a line break.
                record(MessageError::BadHeaderLine { line: line_number });
                continue;
            }
            if line.starts_with([' ', '\t']) {
                match headers.last_mut() {
                    Some((_, value)) => {
                        if !value.is_empty() {
                            value.push(' ');
                        }
                        value.push_str(line.trim());
                    }
                    None => record(MessageError::BadHeaderLine { line: line_number }),
                }
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                record(MessageError::BadHeaderLine { line: line_number });
                continue;
            };
            let name = name.trim_end();
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                record(MessageError::BadHeaderLine { line: line_number });
                continue;
            }
            headers.push((expand_compact_name(name).to_string(), value.trim().to_string()));
        }
        let headers = headers
            .into_iter()
            .flat_map(|(name, value)| {
                if is_list_header(&name) && value != "*" {
                    split_list(&value)
                        .into_iter()
                        .map(|item| (name.clone(), item.to_string()))
                        .collect()
                } else {
                    vec![(name, value)]
                }
            })
            .collect();
        Ok(RawMessage {
            start_line,
            headers,
            body,
            framing_error,
        })
    }

    fn first(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The parts an error response copies; `None` for responses, ACKs and requests without a Via.
    fn echo(&self) -> Option<Box<Echo>> {
        let (method, _) = self.start_line.split_once(' ')?;
        if method.is_empty() || !method.bytes().all(is_token_byte) || method.eq_ignore_ascii_case("ACK") {
            return None;
        }
        let vias: Vec<String> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Via"))
            .map(|(_, v)| v.clone())
            .collect();
        if vias.is_empty() {
            return None;
        }
        let owned = |name| self.first(name).map(str::to_string);
        Some(Box::new(Echo {
            method: method.to_string(),
            vias,
            from: owned("From"),
            to: owned("To"),
            call_id: owned("Call-ID"),
            cseq: owned("CSeq"),
        }))
    }

    fn into_message(self) -> Result<SipMessage, MessageError> {
        if let Some(error) = self.framing_error {
            return Err(error);
        }
        let mut body = self.body;
        let mut content_length: Option<usize> = None;
        let mut headers = Headers::default();
        for (name, value) in self.headers {
            if name.eq_ignore_ascii_case("Content-Length") {
                let length = value
                    .parse::<usize>()
                    .map_err(|_| bad_header("Content-Length", "not a number"))?;
                if content_length.is_some_and(|previous| previous != length) {
                    return Err(bad_header("Content-Length", "repeated with different values"));
                }
                content_length = Some(length);
                continue;
            }
            headers.push(header_from_parts(&name, value));
        }
        if let Some(declared) = content_length {
            if declared > body.len() {
                return Err(MessageError::BodyTruncated {
                    declared,
                    actual: body.len(),
                });
            }
            body = &body[..declared];
        }
        let body = body.to_vec();
        let message = if starts_with_ignore_case(self.start_line, "SIP/") {
            let (version, rest) = self
                .start_line
                .split_once(' ')
                .ok_or(MessageError::BadStartLine)?;
            check_version(version)?;
            let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(MessageError::BadStartLine);
            }
            let code: u16 = code.parse().map_err(|_| MessageError::BadStartLine)?;
            if !(100..=699).contains(&code) {
                return Err(MessageError::BadStartLine);
            }
            let status_code = match StatusCode::from(code) {
                StatusCode::Other(code, _) => StatusCode::Other(code, reason.trim().to_string()),
                known => known,
            };
            SipMessage::Response(Response {
                status_code,
                version: Version::V2,
                headers,
                body,
            })
        } else {
            let (method, rest) = self
                .start_line
                .split_once(' ')
                .ok_or(MessageError::BadStartLine)?;
            let (uri, version) = rest.rsplit_once(' ').ok_or(MessageError::BadStartLine)?;
            check_version(version)?;
            if method.is_empty() || !method.bytes().all(is_token_byte) {
                return Err(MessageError::BadStartLine);
            }
            let method = Method::from_str(method).map_err(|_| MessageError::UnknownMethod(method.into()))?;
            let uri = parse_uri(uri.trim())?;
            SipMessage::Request(Request {
                method,
                uri,
                version: Version::V2,
                headers,
                body,
            })
        };
        check_mandatory_headers(&message)?;
        Ok(message)
    }
}

/// Control characters other than horizontal tab (which folding and LWS use).
fn has_control_characters(line: &str) -> bool {
    line.chars().any(|c| c.is_control() && c != '\t')
}

/// What the start of a stream transport's receive buffer holds (see [`next_stream_chunk`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamChunk {
    /// Not a whole message yet: read more.
    Incomplete,
    /// This many CR/LF bytes: a keepalive (RFC 5626 double-CRLF ping, answered with a single CRLF) or
    /// padding between messages; drop them.
    Keepalive(usize),
    /// The first message is this many bytes long: hand them to [`parse`].
    Message(usize),
}

/// Frames messages on a stream transport (TCP, TLS) by their Content-Length (RFC 3261 §18.3; a missing
/// Content-Length counts as 0). An error means the stream cannot be resynchronised and the connection
/// should be closed: a header section or message over [`MAX_MESSAGE_BYTES`], or an unreadable
/// Content-Length.
pub fn next_stream_chunk(buffer: &[u8]) -> Result<StreamChunk, MessageError> {
    let keepalive = buffer.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    if keepalive > 0 {
        return Ok(StreamChunk::Keepalive(keepalive));
    }
    let (head, body, terminated) = split_head(buffer);
    if !terminated {
        if buffer.len() > MAX_MESSAGE_BYTES {
            return Err(MessageError::TooLarge { size: buffer.len() });
        }
        return Ok(StreamChunk::Incomplete);
    }
    let mut body_length = 0;
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]);
        if expand_compact_name(name.trim()).eq_ignore_ascii_case("Content-Length") {
            let value = String::from_utf8_lossy(&line[colon + 1..]);
            body_length = value
                .trim()
                .parse::<usize>()
                .map_err(|_| bad_header("Content-Length", "not a number"))?;
        }
    }
    let head_length = buffer.len() - body.len();
    let size = head_length.saturating_add(body_length);
    if size > MAX_MESSAGE_BYTES {
        return Err(MessageError::TooLarge { size });
    }
    Ok(if buffer.len() >= size {
        StreamChunk::Message(size)
    } else {
        StreamChunk::Incomplete
    })
}

/// Splits at the first empty line; `false` when there is none (the whole input is then the head).
fn split_head(bytes: &[u8]) -> (&[u8], &[u8], bool) {
    let mut index = 0;
    while let Some(offset) = bytes[index..].iter().position(|&b| b == b'\n') {
        let newline = index + offset;
        let rest = &bytes[newline + 1..];
        if rest.starts_with(b"\n") {
            return (&bytes[..newline], &rest[1..], true);
        }
        if rest.starts_with(b"\r\n") {
            return (&bytes[..newline], &rest[2..], true);
        }
        index = newline + 1;
    }
    (bytes, &[], false)
}

fn check_version(version: &str) -> Result<(), MessageError> {
    if version.trim().eq_ignore_ascii_case("SIP/2.0") {
        Ok(())
    } else {
        Err(MessageError::UnsupportedVersion(
            version.chars().take(20).collect(),
        ))
    }
}

fn check_mandatory_headers(message: &SipMessage) -> Result<(), MessageError> {
    message.top_via()?;
    message.from_addr()?;
    message.to_addr()?;
    match message.call_id() {
        Some(call_id) if !call_id.is_empty() => {}
        Some(_) => return Err(bad_header("Call-ID", "empty")),
        None => return Err(MessageError::MissingHeader("Call-ID")),
    }
    let cseq = message.cseq()?;
    message.max_forwards()?;
    if let SipMessage::Request(request) = message
        && request.method != cseq.method
    {
        return Err(MessageError::CSeqMethodMismatch {
            request: request.method,
            cseq: cseq.method,
        });
    }
    Ok(())
}

fn bad_header(name: &'static str, reason: &'static str) -> MessageError {
    MessageError::BadHeader { name, reason }
}

/// RFC 3261 `token` characters (header names, methods, parameter names).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len() && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Expands a compact header name (RFC 3261 §7.3.3 and the IANA SIP header registry) to its full form.
fn expand_compact_name(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'a' => "Accept-Contact",
        b'b' => "Referred-By",
        b'c' => "Content-Type",
        b'd' => "Request-Disposition",
        b'e' => "Content-Encoding",
        b'f' => "From",
        b'i' => "Call-ID",
        b'j' => "Reject-Contact",
        b'k' => "Supported",
        b'l' => "Content-Length",
        b'm' => "Contact",
        b'n' => "Identity-Info",
        b'o' => "Event",
        b'r' => "Refer-To",
        b's' => "Subject",
        b't' => "To",
        b'u' => "Allow-Events",
        b'v' => "Via",
        b'x' => "Session-Expires",
        b'y' => "Identity",
        _ => name,
    }
}

/// Headers whose comma-separated values are split into one header each, so that "the first Via" and "the
/// route set" are plain list positions.
fn is_list_header(name: &str) -> bool {
    ["Via", "Route", "Record-Route", "Contact"]
        .iter()
        .any(|list| name.eq_ignore_ascii_case(list))
}

/// Splits a header value at commas outside quoted strings and angle brackets.
fn split_list(value: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut in_quotes, mut escaped, mut in_angle) = (false, false, false);
    let mut start = 0;
    for (index, c) in value.char_indices() {
        if in_quotes {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_quotes = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '<' => in_angle = true,
            '>' => in_angle = false,
            ',' if !in_angle => {
                items.push(value[start..index].trim());
                start = index + 1;
            }
            _ => {}
        }
    }
    items.push(value[start..].trim());
    items.retain(|item| !item.is_empty());
    items
}

macro_rules! header_table {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// Builds the rsip header variant for a name (any case), `Header::Other` for names rsip lacks.
        fn header_from_parts(name: &str, value: String) -> Header {
            $(
                if name.eq_ignore_ascii_case($name) {
                    return Header::$variant(rsip::headers::$variant::new(value));
                }
            )*
            Header::Other(name.to_string(), value)
        }

        /// The canonical name and the value of a header.
        fn header_parts(header: &Header) -> (&str, &str) {
            match header {
                $( Header::$variant(inner) => ($name, inner.value()), )*
                Header::Other(name, value) => (name.as_str(), value.as_str()),
            }
        }
    };
}

header_table! {
    Accept => "Accept", AcceptEncoding => "Accept-Encoding", AcceptLanguage => "Accept-Language",
    AlertInfo => "Alert-Info", Allow => "Allow", AuthenticationInfo => "Authentication-Info",
    Authorization => "Authorization", CSeq => "CSeq", CallId => "Call-ID", CallInfo => "Call-Info",
    Contact => "Contact", ContentDisposition => "Content-Disposition", ContentEncoding => "Content-Encoding",
    ContentLanguage => "Content-Language", ContentLength => "Content-Length", ContentType => "Content-Type",
    Date => "Date", ErrorInfo => "Error-Info", Event => "Event", Expires => "Expires", From => "From",
    InReplyTo => "In-Reply-To", MaxForwards => "Max-Forwards", MimeVersion => "MIME-Version",
    MinExpires => "Min-Expires", Organization => "Organization", Priority => "Priority",
    ProxyAuthenticate => "Proxy-Authenticate", ProxyAuthorization => "Proxy-Authorization",
    ProxyRequire => "Proxy-Require", RecordRoute => "Record-Route", ReplyTo => "Reply-To",
    Require => "Require", RetryAfter => "Retry-After", Route => "Route", Server => "Server",
    Subject => "Subject", SubscriptionState => "Subscription-State", Supported => "Supported",
    Timestamp => "Timestamp", To => "To", Unsupported => "Unsupported", UserAgent => "User-Agent",
    Via => "Via", Warning => "Warning", WwwAuthenticate => "WWW-Authenticate",
}

/// Builds a header from a name and a value; CR and LF in the value become spaces so that a value can never
/// start another header.
pub fn header(name: &str, value: impl Into<String>) -> Header {
    let mut value: String = value.into();
    if value.contains(['\r', '\n']) {
        value = value.replace(['\r', '\n'], " ");
    }
    header_from_parts(name, value)
}

/// Reading and changing the headers of any rsip message ([`Request`], [`Response`], [`SipMessage`]).
///
/// Names are compared ignoring case. Readers that parse return `Err` for a malformed value and, where the
/// header is optional, `Ok(None)` when it is absent.
pub trait MessageHeaders: HasHeaders {
    /// Every value of the header `name`, in message order.
    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers()
            .iter()
            .map(header_parts)
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of the header `name`.
    fn header_value(&self, name: &str) -> Option<&str> {
        self.headers()
            .iter()
            .map(header_parts)
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Replaces every occurrence of `name` by one header with `value`, at the place of the first occurrence
    /// (or at the end).
    fn set_header(&mut self, name: &str, value: impl Into<String>) {
        let new = header(name, value);
        let headers = std::mem::take(self.headers_mut());
        let mut replaced = false;
        let mut kept = Vec::new();
        for existing in headers {
            if header_parts(&existing).0.eq_ignore_ascii_case(name) {
                if !replaced {
                    kept.push(new.clone());
                    replaced = true;
                }
            } else {
                kept.push(existing);
            }
        }
        if !replaced {
            kept.push(new);
        }
        *self.headers_mut() = kept.into();
    }

    /// Appends a header.
    fn push_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers_mut().push(header(name, value));
    }

    /// Removes every header called `name`.
    fn remove_header(&mut self, name: &str) {
        self.headers_mut()
            .retain(|existing| !header_parts(existing).0.eq_ignore_ascii_case(name));
    }

    /// The topmost Via.
    fn top_via(&self) -> Result<Via, MessageError> {
        Via::parse(
            self.header_value("Via")
                .ok_or(MessageError::MissingHeader("Via"))?,
        )
    }

    /// The branch of the topmost Via.
    fn branch(&self) -> Option<String> {
        self.top_via().ok()?.branch().map(str::to_string)
    }

    /// The Call-ID.
    fn call_id(&self) -> Option<&str> {
        self.header_value("Call-ID")
    }

    /// The From header.
    #[allow(
        clippy::wrong_self_convention,
        reason = "From is the SIP header's name, not a conversion"
    )]
    fn from_addr(&self) -> Result<NameAddr, MessageError> {
        NameAddr::parse(
            self.header_value("From")
                .ok_or(MessageError::MissingHeader("From"))?,
        )
        .map_err(|reason| bad_header("From", reason))
    }

    /// The To header.
    fn to_addr(&self) -> Result<NameAddr, MessageError> {
        NameAddr::parse(self.header_value("To").ok_or(MessageError::MissingHeader("To"))?)
            .map_err(|reason| bad_header("To", reason))
    }

    /// The tag of the From header.
    #[allow(
        clippy::wrong_self_convention,
        reason = "From is the SIP header's name, not a conversion"
    )]
    fn from_tag(&self) -> Option<String> {
        self.from_addr().ok()?.tag().map(str::to_string)
    }

    /// The tag of the To header.
    fn to_tag(&self) -> Option<String> {
        self.to_addr().ok()?.tag().map(str::to_string)
    }

    /// The CSeq number and method.
    fn cseq(&self) -> Result<CSeq, MessageError> {
        CSeq::parse(
            self.header_value("CSeq")
                .ok_or(MessageError::MissingHeader("CSeq"))?,
        )
    }

    /// Max-Forwards, `None` when absent.
    fn max_forwards(&self) -> Result<Option<u32>, MessageError> {
        self.header_value("Max-Forwards")
            .map(|value| {
                value
                    .parse::<u32>()
                    .map_err(|_| bad_header("Max-Forwards", "not a number"))
            })
            .transpose()
    }

    /// The first Contact, `None` when absent.
    fn contact(&self) -> Result<Option<NameAddr>, MessageError> {
        self.header_value("Contact")
            .map(|value| NameAddr::parse(value).map_err(|reason| bad_header("Contact", reason)))
            .transpose()
    }

    /// The URI of the first Contact, `None` when there is no Contact.
    fn contact_uri(&self) -> Result<Option<Uri>, MessageError> {
        self.contact()?.map(|contact| contact.sip_uri()).transpose()
    }

    /// The Record-Route entries, in message order.
    fn record_route(&self) -> Result<Vec<NameAddr>, MessageError> {
        name_addr_list(self, "Record-Route", "Record-Route")
    }

    /// The Route entries, in message order.
    fn route(&self) -> Result<Vec<NameAddr>, MessageError> {
        name_addr_list(self, "Route", "Route")
    }

    /// The Content-Type value.
    fn content_type(&self) -> Option<&str> {
        self.header_value("Content-Type")
    }
}

impl<T: HasHeaders + ?Sized> MessageHeaders for T {}

fn name_addr_list<M: MessageHeaders + ?Sized>(
    message: &M,
    name: &str,
    static_name: &'static str,
) -> Result<Vec<NameAddr>, MessageError> {
    message
        .header_values(name)
        .map(|value| NameAddr::parse(value).map_err(|reason| bad_header(static_name, reason)))
        .collect()
}

/// One `;name[=value]` parameter of a header; the value is kept as written (quotes included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderParam {
    /// The parameter name.
    pub name: String,
    /// The value, `None` for a flag parameter such as `lr` or `rport`.
    pub value: Option<String>,
}

impl fmt::Display for HeaderParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, ";{}={}", self.name, value),
            None => write!(f, ";{}", self.name),
        }
    }
}

fn find_param<'a>(params: &'a [HeaderParam], name: &str) -> Option<&'a HeaderParam> {
    params.iter().find(|param| param.name.eq_ignore_ascii_case(name))
}

/// Reads `;name[=value]` parameters, tolerating whitespace around `;` and `=`.
fn parse_params(mut text: &str) -> Result<Vec<HeaderParam>, &'static str> {
    let mut params = Vec::new();
    loop {
        text = text.trim_start();
        if text.is_empty() {
            return Ok(params);
        }
        text = text
            .strip_prefix(';')
            .ok_or("text after the value is not a parameter")?
            .trim_start();
        let name_end = text.bytes().position(|b| !is_token_byte(b)).unwrap_or(text.len());
        if name_end == 0 {
            return Err("empty parameter name");
        }
        let name = text[..name_end].to_string();
        text = text[name_end..].trim_start();
        let value = match text.strip_prefix('=') {
            Some(rest) => {
                let rest = rest.trim_start();
                let end = if rest.starts_with('"') {
                    quoted_string_end(rest).ok_or("unterminated quoted parameter value")?
                } else {
                    rest.find(|c: char| c == ';' || c.is_whitespace())
                        .unwrap_or(rest.len())
                };
                text = &rest[end..];
                Some(rest[..end].to_string())
            }
            None => None,
        };
        params.push(HeaderParam { name, value });
    }
}

/// The byte index just past the closing quote of the quoted string `text` starts with.
fn quoted_string_end(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (index, c) in text.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(index + 1),
            _ => {}
        }
    }
    None
}

/// A Via header value: `SIP/2.0/<transport> <host>[:<port>];params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The transport token, upper case (`UDP`, `WSS`, …).
    pub transport: String,
    /// The sent-by host; IPv6 addresses keep their brackets.
    pub host: String,
    /// The sent-by port.
    pub port: Option<u16>,
    /// The parameters (branch, received, rport, …).
    pub params: Vec<HeaderParam>,
}

impl Via {
    /// A Via for a request we send: the transport, our address, a fresh branch and `rport` (RFC 3581) so
    /// that responses come back to the address the request left from.
    pub fn outgoing(transport: crate::sip::Transport, host: &str, port: Option<u16>) -> Self {
        Via {
            transport: transport.via_name().to_string(),
            host: host.to_string(),
            port,
            params: vec![
                HeaderParam {
                    name: "branch".into(),
                    value: Some(new_branch()),
                },
                HeaderParam {
                    name: "rport".into(),
                    value: None,
                },
            ],
        }
    }

    /// Reads a single Via value (not a comma list).
    pub fn parse(value: &str) -> Result<Self, MessageError> {
        Self::parse_inner(value).map_err(|reason| bad_header("Via", reason))
    }

    fn parse_inner(value: &str) -> Result<Self, &'static str> {
        let (protocol, rest) = value.split_once('/').ok_or("no sent-protocol")?;
        let (version, rest) = rest.split_once('/').ok_or("no sent-protocol")?;
        if !protocol.trim().eq_ignore_ascii_case("SIP") || version.trim() != "2.0" {
            return Err("sent-protocol is not SIP/2.0");
        }
        let rest = rest.trim_start();
        let transport_end = rest.bytes().position(|b| !is_token_byte(b)).unwrap_or(rest.len());
        if transport_end == 0 {
            return Err("no transport");
        }
        let transport = rest[..transport_end].to_ascii_uppercase();
        let rest = &rest[transport_end..];
        if !rest.starts_with(char::is_whitespace) {
            return Err("no sent-by");
        }
        let (host, rest) = split_host(rest.trim_start())?;
        let rest = rest.trim_start();
        let (port, rest) = match rest.strip_prefix(':') {
            Some(after) => {
                let after = after.trim_start();
                let end = after
                    .bytes()
                    .position(|b| !b.is_ascii_digit())
                    .unwrap_or(after.len());
                (
                    Some(after[..end].parse::<u16>().map_err(|_| "bad port")?),
                    &after[end..],
                )
            }
            None => (None, rest),
        };
        let params = parse_params(rest)?;
        Ok(Via {
            transport,
            host: host.to_string(),
            port,
            params,
        })
    }

    /// The transport, when it is one callgate speaks.
    pub fn transport(&self) -> Option<crate::sip::Transport> {
        crate::sip::Transport::from_name(&self.transport)
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&str> {
        self.param("branch")
    }

    /// The received parameter.
    pub fn received(&self) -> Option<&str> {
        self.param("received")
    }

    /// A parameter's value (`None` when absent or a flag).
    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name)?.value.as_deref()
    }

    /// True when the parameter is present, with or without a value.
    pub fn has_param(&self, name: &str) -> bool {
        find_param(&self.params, name).is_some()
    }

    /// The sent-by as `host[:port]`.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{}", self.host, port),
            None => self.host.clone(),
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.sent_by())?;
        self.params.iter().try_for_each(|param| write!(f, "{param}"))
    }
}

/// Splits a host (a name, an IPv4 address or a bracketed IPv6 address) from the front of `text`.
fn split_host(text: &str) -> Result<(&str, &str), &'static str> {
    if text.starts_with('[') {
        let end = text.find(']').ok_or("unterminated IPv6 reference")?;
        Ipv6Addr::from_str(&text[1..end]).map_err(|_| "bad IPv6 address")?;
        return Ok(text.split_at(end + 1));
    }
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'))
        .unwrap_or(text.len());
    if end == 0 {
        return Err("no host");
    }
    Ok(text.split_at(end))
}

/// A From, To, Contact, Route or Record-Route value: an optional display name, a URI and header parameters.
///
/// The URI is kept as written so that any scheme (`tel:` in a From) passes through; [`NameAddr::sip_uri`]
/// reads it as a sip/sips URI when needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name without quotes or escapes.
    pub display_name: Option<String>,
    /// The URI as written.
    pub uri: String,
    /// The header parameters (after the `>`).
    pub params: Vec<HeaderParam>,
}

impl NameAddr {
    /// A name-addr for a URI, without display name or parameters.
    pub fn new(uri: impl Into<String>) -> Self {
        NameAddr {
            display_name: None,
            uri: uri.into(),
            params: Vec::new(),
        }
    }

    /// Reads a name-addr (`"Name" <uri>;params`) or addr-spec (`uri;params`) value.
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        let value = value.trim();
        let (display_name, rest) = if value.starts_with('"') {
            let end = quoted_string_end(value).ok_or("unterminated display name")?;
            (Some(unquote(&value[..end])), value[end..].trim_start())
        } else if let Some(open) = value.find('<') {
            let name = value[..open].trim();
            ((!name.is_empty()).then(|| name.to_string()), &value[open..])
        } else {
            (None, value)
        };
        let (uri, params) = if let Some(inner) = rest.strip_prefix('<') {
            let close = inner.find('>').ok_or("no closing '>'")?;
            (inner[..close].trim(), &inner[close + 1..])
        } else if display_name.is_some() {
            return Err("display name without <uri>");
        } else {
            let end = rest.find(';').unwrap_or(rest.len());
            (rest[..end].trim(), &rest[end..])
        };
        if uri.is_empty() || !uri.contains(':') || uri.contains(char::is_whitespace) {
            return Err("bad URI");
        }
        Ok(NameAddr {
            display_name,
            uri: uri.to_string(),
            params: parse_params(params)?,
        })
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.param("tag")
    }

    /// Sets (or replaces) the `tag` parameter.
    pub fn set_tag(&mut self, tag: &str) {
        self.params
            .retain(|param| !param.name.eq_ignore_ascii_case("tag"));
        self.params.push(HeaderParam {
            name: "tag".into(),
            value: Some(tag.to_string()),
        });
    }

    /// A parameter's value (`None` when absent or a flag).
    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name)?.value.as_deref()
    }

    /// The URI as an rsip sip/sips URI.
    pub fn sip_uri(&self) -> Result<Uri, MessageError> {
        parse_uri(&self.uri)
    }

    /// True when the URI carries the loose-routing `lr` parameter.
    pub fn is_loose_route(&self) -> bool {
        let params = self
            .uri
            .split_once('?')
            .map_or(self.uri.as_str(), |(before, _)| before);
        params.split(';').skip(1).any(|param| {
            let name = param.split('=').next().unwrap_or_default();
            name.trim().eq_ignore_ascii_case("lr")
        })
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.display_name {
            write!(f, "\"{}\" ", name.replace('\\', "\\\\").replace('"', "\\\""))?;
        }
        write!(f, "<{}>", self.uri)?;
        self.params.iter().try_for_each(|param| write!(f, "{param}"))
    }
}

fn unquote(quoted: &str) -> String {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(quoted);
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

/// A CSeq value: sequence number and method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// The sequence number.
    pub seq: u32,
    /// The method.
    pub method: Method,
}

impl CSeq {
    /// Reads `<number> <method>`, tolerating extra whitespace.
    pub fn parse(value: &str) -> Result<Self, MessageError> {
        let mut parts = value.split_whitespace();
        let (Some(seq), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad_header("CSeq", "not <number> <method>"));
        };
        let seq = seq
            .parse::<u32>()
            .map_err(|_| bad_header("CSeq", "bad sequence number"))?;
        let method = Method::from_str(method).map_err(|_| bad_header("CSeq", "unknown method"))?;
        Ok(CSeq { seq, method })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// Reads a sip or sips URI into an rsip [`Uri`].
///
/// rsip's own URI parser fails on IPv6 references and prints IPv6 addresses without brackets; here an IPv6
/// host becomes a [`Host::Domain`] holding the bracketed text, which prints correctly. URI headers (`?…`)
/// are refused: rsip cannot hold them and a Request-URI must not carry them.
pub fn parse_uri(text: &str) -> Result<Uri, MessageError> {
    let bad = |reason| MessageError::BadUri {
        uri: text.chars().take(100).collect(),
        reason,
    };
    let (scheme, rest) = text.split_once(':').ok_or_else(|| bad("no scheme"))?;
    let scheme = if scheme.eq_ignore_ascii_case("sip") {
        Scheme::Sip
    } else if scheme.eq_ignore_ascii_case("sips") {
        Scheme::Sips
    } else {
        return Err(MessageError::UnsupportedUriScheme(
            text.chars().take(100).collect(),
        ));
    };
    if rest.contains('?') {
        return Err(bad("URI headers are not supported"));
    }
    if rest.contains(|c: char| c.is_whitespace() || c.is_control() || "<>\"".contains(c)) {
        return Err(bad("forbidden character"));
    }
    let (auth, host_part) = match rest.split_once('@') {
        Some((userinfo, host_part)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password.to_string())),
                None => (userinfo, None),
            };
            if user.is_empty() {
                return Err(bad("empty user"));
            }
            (
                Some(Auth {
                    user: user.to_string(),
                    password,
                }),
                host_part,
            )
        }
        None => (None, rest),
    };
    let (host, rest) = split_host(host_part).map_err(bad)?;
    let host = if host.starts_with('[') {
        Host::Domain(host.into())
    } else {
        Host::from(host)
    };
    let (port, rest) = match rest.strip_prefix(':') {
        Some(after) => {
            let end = after.find(';').unwrap_or(after.len());
            let port = after[..end].parse::<u16>().map_err(|_| bad("bad port"))?;
            (Some(port.into()), &after[end..])
        }
        None => (None, rest),
    };
    let mut params = Vec::new();
    if !rest.is_empty() {
        let rest = rest
            .strip_prefix(';')
            .ok_or_else(|| bad("unexpected text after host"))?;
        for param in rest.split(';') {
            let (name, value) = match param.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (param, None),
            };
            if name.is_empty() {
                return Err(bad("empty parameter"));
            }
            params.push(
                Param::try_from((name, value)).unwrap_or_else(|_| {
                    Param::Other(OtherParam::from(name), value.map(OtherParamValue::from))
                }),
            );
        }
    }
    Ok(Uri {
        scheme: Some(scheme),
        auth,
        host_with_port: HostWithPort { host, port },
        params,
        headers: Vec::new(),
    })
}

/// The standard reason phrase of a status code ("Unknown" for codes without one).
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        199 => "Early Dialog Terminated",
        200 => "OK",
        202 => "Accepted",
        204 => "No Notification",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        412 => "Conditional Request Failed",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        417 => "Unknown Resource-Priority",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        428 => "Use Identity Header",
        429 => "Provide Referrer Identity",
        433 => "Anonymity Disallowed",
        436 => "Bad Identity-Info",
        437 => "Unsupported Certificate",
        438 => "Invalid Identity Header",
        439 => "First Hop Lacks Outbound Support",
        440 => "Max-Breadth Exceeded",
        469 => "Bad Info Package",
        470 => "Consent Needed",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        493 => "Undecipherable",
        494 => "Security Agreement Required",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        580 => "Precondition Failure",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        607 => "Unwanted",
        _ => "Unknown",
    }
}

/// Prints a request; see [`message_bytes`].
pub fn request_bytes(request: &Request) -> Vec<u8> {
    let start_line = format!("{} {} SIP/2.0\r\n", request.method, request.uri);
    write_message(start_line, &request.headers, &request.body)
}

/// Prints a response; see [`message_bytes`].
pub fn response_bytes(response: &Response) -> Vec<u8> {
    let code = response.status_code.code();
    let reason = match &response.status_code {
        StatusCode::Other(_, reason) if !reason.is_empty() && reason != "Other" => {
            reason.replace(['\r', '\n'], " ")
        }
        _ => reason_phrase(code).to_string(),
    };
    let start_line = format!("SIP/2.0 {code} {reason}\r\n");
    write_message(start_line, &response.headers, &response.body)
}

/// Prints a message: the start line, the headers in order (any Content-Length left out), a Content-Length
/// equal to the body length, an empty line, then the body bytes unchanged.
pub fn message_bytes(message: &SipMessage) -> Vec<u8> {
    match message {
        SipMessage::Request(request) => request_bytes(request),
        SipMessage::Response(response) => response_bytes(response),
    }
}

fn write_message(start_line: String, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let mut out = start_line.into_bytes();
    for header in headers.iter() {
        let (name, value) = header_parts(header);
        if name.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

/// A response to `request` (RFC 3261 §8.2.6.2): Via (all, in order), From, To, Call-ID and CSeq copied;
/// `to_tag` is added to To unless To already has a tag; Record-Route is copied into 101–299 responses,
/// which are the ones that can create a dialog (§12.1.1). No body.
pub fn response_to(request: &Request, status: impl Into<StatusCode>, to_tag: Option<&str>) -> Response {
    let status_code = status.into();
    let code = status_code.code();
    let mut headers = Headers::default();
    for existing in request.headers.iter() {
        let (name, value) = header_parts(existing);
        let copy = ["Via", "From", "Call-ID", "CSeq"]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
            || ((101..300).contains(&code) && name.eq_ignore_ascii_case("Record-Route"));
        if copy {
            headers.push(existing.clone());
        } else if name.eq_ignore_ascii_case("To") {
            let has_tag = NameAddr::parse(value).is_ok_and(|to| to.tag().is_some());
            match to_tag {
                Some(tag) if !has_tag => headers.push(header("To", format!("{value};tag={tag}"))),
                _ => headers.push(existing.clone()),
            }
        }
    }
    Response {
        status_code,
        version: Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// The CANCEL for an INVITE we sent (RFC 3261 §9.1): same Request-URI, Call-ID, From, To and CSeq number,
/// only the INVITE's top Via (so it shares the branch), and the INVITE's Route headers.
pub fn build_cancel(invite: &Request) -> Result<Request, MessageError> {
    let cseq = invite.cseq()?;
    let to = invite
        .header_value("To")
        .ok_or(MessageError::MissingHeader("To"))?
        .to_string();
    request_like(invite, Method::Cancel, to, cseq.seq)
}

/// The ACK for a 300–699 response to an INVITE we sent (RFC 3261 §17.1.1.3): the INVITE's Request-URI,
/// Call-ID, From, top Via and Route headers, the To of the response (with its tag), CSeq number of the
/// INVITE with method ACK.
pub fn build_failure_ack(invite: &Request, response: &Response) -> Result<Request, MessageError> {
    let cseq = invite.cseq()?;
    let to = response
        .header_value("To")
        .ok_or(MessageError::MissingHeader("To"))?
        .to_string();
    request_like(invite, Method::Ack, to, cseq.seq)
}

fn request_like(original: &Request, method: Method, to: String, seq: u32) -> Result<Request, MessageError> {
    let mut headers = Headers::default();
    headers.push(header(
        "Via",
        original
            .header_value("Via")
            .ok_or(MessageError::MissingHeader("Via"))?,
    ));
    headers.push(header("Max-Forwards", DEFAULT_MAX_FORWARDS.to_string()));
    headers.push(header(
        "From",
        original
            .header_value("From")
            .ok_or(MessageError::MissingHeader("From"))?,
    ));
    headers.push(header("To", to));
    let call_id = original.call_id().ok_or(MessageError::MissingHeader("Call-ID"))?;
    headers.push(header("Call-ID", call_id));
    headers.push(header("CSeq", CSeq { seq, method }.to_string()));
    for route in original.header_values("Route") {
        headers.push(header("Route", route));
    }
    Ok(Request {
        method,
        uri: original.uri.clone(),
        version: Version::V2,
        headers,
        body: Vec::new(),
    })
}

/// Decrements Max-Forwards before a request is passed on (70 assumed when absent) and returns the new
/// value; [`MessageError::TooManyHops`] when it is already 0, which the caller answers 483.
pub fn decrement_max_forwards(request: &mut Request) -> Result<u32, MessageError> {
    let current = request.max_forwards()?.unwrap_or(DEFAULT_MAX_FORWARDS);
    let next = current.checked_sub(1).ok_or(MessageError::TooManyHops)?;
    request.set_header("Max-Forwards", next.to_string());
    Ok(next)
}

fn random_token(length: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(length)
        .map(char::from)
        .collect()
}

/// A fresh From/To tag (10 random alphanumerics, about 59 bits).
pub fn new_tag() -> String {
    random_token(10)
}

/// A fresh Via branch: the RFC 3261 magic cookie followed by 22 random alphanumerics (about 130 bits).
pub fn new_branch() -> String {
    format!("{BRANCH_MAGIC_COOKIE}{}", random_token(22))
}

/// A fresh Call-ID (24 random alphanumerics, about 142 bits).
pub fn new_call_id() -> String {
    random_token(24)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::fixtures::{self, wire};
    use rand::rngs::StdRng;
    use rand::{RngCore, SeedableRng};

    fn parse_ok(bytes: &[u8]) -> SipMessage {
        match parse(bytes) {
            Ok(message) => message,
            Err(error) => panic!("{error}: {}", String::from_utf8_lossy(bytes)),
        }
    }

    fn request(bytes: &[u8]) -> Request {
        match parse_ok(bytes) {
            SipMessage::Request(request) => request,
            SipMessage::Response(_) => panic!("expected a request"),
        }
    }

    fn response(bytes: &[u8]) -> Response {
        match parse_ok(bytes) {
            SipMessage::Response(response) => response,
            SipMessage::Request(_) => panic!("expected a response"),
        }
    }

    const MINIMAL_OPTIONS: &str = "OPTIONS sip:gw.example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKabc\r\n\
        From: <sip:probe@192.0.2.7>;tag=1\r\n\
        To: <sip:gw.example.com>\r\n\
        Call-ID: opt-1\r\n\
        CSeq: 1 OPTIONS\r\n\r\n";

    #[test]
    fn jssip_invite_over_websocket_parses_with_invalid_hosts_and_ws_transport() {
        let bytes = wire(fixtures::JSSIP_INVITE);
        let invite = request(&bytes);
        assert_eq!(invite.method, Method::Invite);
        assert_eq!(invite.uri.to_string(), "sip:w_3f9a2c7b@gw.example.com");
        let via = invite.top_via().unwrap();
        assert_eq!(via.transport(), Some(crate::sip::Transport::Wss));
        assert_eq!(via.host, "8sf2hg3lpc2l.invalid");
        assert_eq!(via.branch(), Some("z9hG4bK2461718"));
        let contact = invite.contact_uri().unwrap().unwrap();
        assert_eq!(contact.host_with_port.host.to_string(), "8sf2hg3lpc2l.invalid");
        assert!(contact.params.contains(&Param::Transport(rsip::Transport::Ws)));
        assert_eq!(
            invite.from_addr().unwrap().display_name.as_deref(),
            Some("Website visitor")
        );
        assert_eq!(invite.from_tag().as_deref(), Some("j5vp0l1bd1"));
        assert_eq!(invite.to_tag(), None);
        assert_eq!(
            invite.cseq().unwrap(),
            CSeq {
                seq: 8046,
                method: Method::Invite
            }
        );
        assert_eq!(invite.max_forwards().unwrap(), Some(69));
        assert_eq!(invite.content_type(), Some("application/sdp"));
        assert!(
            invite
                .header_value("x-callgate-token")
                .unwrap()
                .starts_with("dzNm")
        );
        assert!(invite.body.starts_with(b"v=0\r\no=- 4611731400430051336"));
        assert!(invite.body.ends_with(b"9e1d2c3b-4a5f-4e6d-8c7b-1a2f3e4d5c6b\r\n"));
        assert!(invite.body.len() > 1500);
    }

    #[test]
    fn sipjs_invite_parses_with_quoted_instance_contact_parameter() {
        let invite = request(&wire(fixtures::SIPJS_INVITE));
        let contact = invite.contact().unwrap().unwrap();
        assert_eq!(contact.uri, "sip:ah3hn5n0@q1b4ovd3cqe1.invalid;transport=ws");
        assert_eq!(
            contact.param("+sip.instance"),
            Some("\"<urn:uuid:8f1fa16a-1165-4a96-8341-785b1ef24f12>\"")
        );
        // rsip's typed Contact refuses this value: the reason the readers here exist.
        let untyped = rsip::headers::Contact::new(invite.header_value("Contact").unwrap());
        assert!(rsip::headers::ToTypedHeader::typed(&untyped).is_err());
        assert_eq!(invite.top_via().unwrap().branch(), Some("z9hG4bK4513640"));
        assert!(
            invite
                .body
                .ends_with(b"cname:{6a7b8c9d-0e1f-4a2b-b3c4-d5e6f7a8b9c0}\r\n")
        );
    }

    #[test]
    fn compact_names_are_expanded_and_record_route_lists_are_split() {
        let ok = response(&wire(fixtures::ASTERISK_200));
        assert_eq!(ok.status_code, StatusCode::OK);
        assert_eq!(ok.call_id(), Some("3848276298220188511@192.0.2.10"));
        assert_eq!(
            ok.to_tag().as_deref(),
            Some("9f0e1d2c-3b4a-5968-7a6b-5c4d3e2f1a0b")
        );
        assert_eq!(ok.top_via().unwrap().branch(), Some("z9hG4bKPj8c1d2e3f"));
        assert_eq!(ok.content_type(), Some("application/sdp"));
        assert_eq!(
            ok.header_value("Supported"),
            Some("100rel, timer, replaces, norefersub")
        );
        let routes = ok.record_route().unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].uri, "sip:192.0.2.1;lr;ftag=as5d1e2f3a");
        assert!(routes[1].is_loose_route());
        assert!(ok.headers.iter().any(|h| matches!(h, Header::Contact(_))));
    }

    #[test]
    fn every_compact_form_maps_to_its_full_name() {
        let pairs = [
            ("a", "Accept-Contact"),
            ("b", "Referred-By"),
            ("c", "Content-Type"),
            ("d", "Request-Disposition"),
            ("e", "Content-Encoding"),
            ("f", "From"),
            ("i", "Call-ID"),
            ("j", "Reject-Contact"),
            ("k", "Supported"),
            ("l", "Content-Length"),
            ("m", "Contact"),
            ("n", "Identity-Info"),
            ("o", "Event"),
            ("r", "Refer-To"),
            ("s", "Subject"),
            ("t", "To"),
            ("u", "Allow-Events"),
            ("v", "Via"),
            ("x", "Session-Expires"),
            ("y", "Identity"),
        ];
        for (compact, full) in pairs {
            assert_eq!(expand_compact_name(compact), full);
            assert_eq!(expand_compact_name(&compact.to_uppercase()), full);
        }
        assert_eq!(expand_compact_name("z"), "z");
        let text = "NOTIFY sip:a@192.0.2.1 SIP/2.0\r\nv: SIP/2.0/TCP 192.0.2.2;branch=z9hG4bK1\r\n\
            f: <sip:b@192.0.2.2>;tag=1\r\nt: <sip:a@192.0.2.1>;tag=2\r\ni: n1\r\nCSeq: 2 NOTIFY\r\n\
            o: refer\r\nu: refer\r\nr: <sip:c@192.0.2.3>\r\nb: <sip:b@192.0.2.2>\r\ns: hello\r\n\
            e: identity\r\nk: timer\r\nx: 1800\r\nm: <sip:b@192.0.2.2>\r\nc: message/sipfrag\r\nl: 0\r\n\r\n";
        let notify = request(text.as_bytes());
        for name in [
            "Event",
            "Allow-Events",
            "Refer-To",
            "Referred-By",
            "Subject",
            "Content-Encoding",
        ] {
            assert!(notify.header_value(name).is_some(), "{name}");
        }
        assert_eq!(notify.header_value("Session-Expires"), Some("1800"));
        assert_eq!(notify.content_type(), Some("message/sipfrag"));
        let printed = String::from_utf8(request_bytes(&notify)).unwrap();
        assert!(
            printed.contains("\r\nEvent: refer\r\n") && printed.contains("\r\nCall-ID: n1\r\n"),
            "{printed}"
        );
    }

    #[test]
    fn lf_only_line_endings_and_folded_headers_are_accepted() {
        let text = "OPTIONS sip:gw.example.com SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.7:5060\n ;branch=z9hG4bKfold\n\
            From: <sip:probe@192.0.2.7>;tag=1\nTo: <sip:gw.example.com>\nCall-ID: lf-1\nSubject: first\n\tsecond\n\
            CSeq: 1 OPTIONS\nContent-Length: 3\n\nabc";
        let options = request(text.as_bytes());
        assert_eq!(options.top_via().unwrap().branch(), Some("z9hG4bKfold"));
        assert_eq!(options.header_value("Subject"), Some("first second"));
        assert_eq!(options.body, b"abc");
        // rsip's own tokenizer refuses LF-only messages.
        assert!(SipMessage::try_from(text).is_err());
    }

    #[test]
    fn ipv6_hosts_parse_and_print_with_brackets() {
        let text = "OPTIONS sip:alice@[2001:db8::1]:5070;transport=tcp SIP/2.0\r\n\
            Via: SIP/2.0/TCP [2001:db8::2]:5060 ;branch=z9hG4bKv6;rport\r\n\
            From: <sip:bob@[2001:db8::2]>;tag=1\r\nTo: <sip:alice@[2001:db8::1]>\r\nCall-ID: v6\r\n\
            CSeq: 1 OPTIONS\r\n\r\n";
        // rsip's tokenizer refuses the IPv6 Request-URI outright.
        assert!(SipMessage::try_from(text).is_err());
        let options = request(text.as_bytes());
        assert_eq!(
            options.uri.to_string(),
            "sip:alice@[2001:db8::1]:5070;transport=TCP"
        );
        let via = options.top_via().unwrap();
        assert_eq!((via.host.as_str(), via.port), ("[2001:db8::2]", Some(5060)));
        assert_eq!(via.branch(), Some("z9hG4bKv6"));
        assert!(via.has_param("rport"));
        let again = request(&request_bytes(&options));
        assert_eq!(again, options);
    }

    #[test]
    fn uri_parser_agrees_with_rsip_on_ordinary_uris() {
        for text in [
            "sip:w_3f9a2c7b@gw.example.com",
            "sip:k9qf2ohc@8sf2hg3lpc2l.invalid;transport=ws;ob",
            "sips:bob@biloxi.example.com:5061",
            "sip:192.0.2.1;lr;ftag=as5d1e2f3a",
            "sip:user:secret@192.0.2.10:5080;transport=udp",
        ] {
            assert_eq!(parse_uri(text).unwrap(), Uri::try_from(text).unwrap(), "{text}");
            assert_eq!(
                parse_uri(text).unwrap().to_string().to_lowercase(),
                text.to_lowercase()
            );
        }
        // rsip reads the user part up to the first ';' and takes the number for the host.
        let local_number =
            parse_uri("sip:+4930123456;phone-context=example.com@192.0.2.10;user=phone").unwrap();
        assert_eq!(
            local_number.auth.unwrap().user,
            "+4930123456;phone-context=example.com"
        );
        assert_eq!(local_number.host_with_port.to_string(), "192.0.2.10");
        assert!(matches!(
            parse_uri("tel:+4930123"),
            Err(MessageError::UnsupportedUriScheme(_))
        ));
        for bad in [
            "sip:",
            "sip:@host",
            "sip:host:99999",
            "sip:a@b?subject=x",
            "sip:[::1",
            "sip:a b@c",
            "nocolon",
        ] {
            assert!(parse_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_addr_reads_display_names_addr_specs_and_quoted_params() {
        let quoted = NameAddr::parse(r#""A \"quoted\" name" <sip:a@b.example>;tag=x1;foo"#).unwrap();
        assert_eq!(quoted.display_name.as_deref(), Some("A \"quoted\" name"));
        assert_eq!(quoted.tag(), Some("x1"));
        assert_eq!(NameAddr::parse(&quoted.to_string()).unwrap(), quoted);
        let token_name = NameAddr::parse("Anonymous <sip:anonymous@anonymous.invalid>;tag=8uq").unwrap();
        assert_eq!(token_name.display_name.as_deref(), Some("Anonymous"));
        let spec = NameAddr::parse("sip:a@b;tag=7 ").unwrap();
        assert_eq!((spec.uri.as_str(), spec.tag()), ("sip:a@b", Some("7")));
        let tel = NameAddr::parse("<tel:+4930123>;tag=1").unwrap();
        assert_eq!(tel.uri, "tel:+4930123");
        assert!(tel.sip_uri().is_err());
        for bad in [
            "",
            "<sip:a@b",
            "\"unterminated <sip:a@b>",
            "Name sip:a@b",
            "<>",
            "<sip:a@b>;=x",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn via_parser_tolerates_spacing_and_refuses_garbage() {
        let via =
            Via::parse("SIP / 2.0 / udp host.example:5060 ; branch = z9hG4bKx ; received=192.0.2.1").unwrap();
        assert_eq!(via.transport, "UDP");
        assert_eq!(via.branch(), Some("z9hG4bKx"));
        assert_eq!(via.received(), Some("192.0.2.1"));
        assert_eq!(
            via.to_string(),
            "SIP/2.0/UDP host.example:5060;branch=z9hG4bKx;received=192.0.2.1"
        );
        for bad in [
            "SIP/2.0/UDP",
            "SIP/3.0/UDP h",
            "HTTP/2.0/UDP h",
            "SIP/2.0/UDP h:x",
            "SIP/2.0/UDP h garbage",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad}");
        }
        let outgoing = Via::outgoing(crate::sip::Transport::Tcp, "192.0.2.10", Some(5060));
        assert!(outgoing.branch().unwrap().starts_with(BRANCH_MAGIC_COOKIE));
        assert_eq!(Via::parse(&outgoing.to_string()).unwrap(), outgoing);
    }

    #[test]
    fn content_length_truncates_extra_bytes_and_refuses_missing_ones() {
        let text = MINIMAL_OPTIONS.replace("\r\n\r\n", "\r\nContent-Length: 2\r\n\r\nabcdef");
        assert_eq!(request(text.as_bytes()).body, b"ab");
        let short = MINIMAL_OPTIONS.replace("\r\n\r\n", "\r\nContent-Length: 20\r\n\r\nabc");
        let error = parse(short.as_bytes()).unwrap_err();
        assert_eq!(
            error.error,
            MessageError::BodyTruncated {
                declared: 20,
                actual: 3
            }
        );
        let answer = response(&error.error_response().unwrap());
        assert_eq!(answer.status_code, StatusCode::BadRequest);
        assert_eq!(answer.call_id(), Some("opt-1"));
        assert!(answer.to_tag().is_some());
        assert!(
            answer
                .header_value("Warning")
                .unwrap()
                .contains("Content-Length 20")
        );
        let garbage = MINIMAL_OPTIONS.replace("\r\n\r\n", "\r\nContent-Length: x\r\n\r\n");
        assert!(matches!(
            parse(garbage.as_bytes()).unwrap_err().error,
            MessageError::BadHeader { .. }
        ));
    }

    #[test]
    fn missing_mandatory_header_is_answered_400_with_a_warning() {
        let text = MINIMAL_OPTIONS.replace("CSeq: 1 OPTIONS\r\n", "CSeq: one OPTIONS\r\n");
        let error = parse(text.as_bytes()).unwrap_err();
        let answer = String::from_utf8(error.error_response().unwrap()).unwrap();
        assert!(answer.starts_with("SIP/2.0 400 Bad Request\r\n"), "{answer}");
        assert!(answer.contains("\r\nVia: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKabc\r\n"));
        // The unreadable CSeq is not echoed: the request line's method keeps the transaction matchable.
        assert!(answer.contains("\r\nCSeq: 0 OPTIONS\r\n"), "{answer}");
        assert!(
            answer.contains("\r\nWarning: 399 callgate \"malformed CSeq header: bad sequence number\"\r\n")
        );
        assert!(answer.ends_with("\r\nContent-Length: 0\r\n\r\n"));

        let mismatch = MINIMAL_OPTIONS.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
        let error = parse(mismatch.as_bytes()).unwrap_err();
        assert!(matches!(error.error, MessageError::CSeqMethodMismatch { .. }));
        let answer = response(&error.error_response().unwrap());
        assert_eq!(
            answer.cseq().unwrap().method,
            Method::Invite,
            "a readable CSeq is copied"
        );
    }

    /// The 400 for each malformed request parses with our own (strict about mandatory headers) parser, copies
    /// what was readable and names the problem.
    #[test]
    fn error_responses_always_parse_again() {
        let cases: [(&str, String, &str); 7] = [
            (
                "bad CSeq",
                MINIMAL_OPTIONS.replace("CSeq: 1 OPTIONS", "CSeq: x OPTIONS"),
                "malformed CSeq header",
            ),
            (
                "CSeq without a method",
                MINIMAL_OPTIONS.replace("CSeq: 1 OPTIONS", "CSeq: 7"),
                "malformed CSeq header",
            ),
            (
                "bad Content-Length",
                MINIMAL_OPTIONS.replace("\r\n\r\n", "\r\nContent-Length: ten\r\n\r\n"),
                "malformed Content-Length header",
            ),
            (
                "missing Call-ID",
                MINIMAL_OPTIONS.replace("Call-ID: opt-1\r\n", ""),
                "missing Call-ID header",
            ),
            (
                "garbage Via above a good one",
                MINIMAL_OPTIONS.replace("Via: ", "Via: garbage here\r\nVia: "),
                "malformed Via header",
            ),
            (
                "garbage From",
                MINIMAL_OPTIONS.replace("From: <sip:probe@192.0.2.7>;tag=1", "From: <<<"),
                "malformed From header",
            ),
            (
                "missing To",
                MINIMAL_OPTIONS.replace("To: <sip:gw.example.com>\r\n", ""),
                "missing To header",
            ),
        ];
        for (what, text, warning) in cases {
            let error = parse(text.as_bytes()).unwrap_err();
            let bytes = error
                .error_response()
                .unwrap_or_else(|| panic!("{what}: not answered"));
            let answer = match parse(&bytes) {
                Ok(SipMessage::Response(answer)) => answer,
                other => panic!("{what}: {other:?}\n{}", String::from_utf8_lossy(&bytes)),
            };
            assert_eq!(answer.status_code, StatusCode::BadRequest, "{what}");
            let via = answer.top_via().unwrap();
            assert_eq!(via.branch(), Some("z9hG4bKabc"), "{what}");
            assert_eq!(answer.cseq().unwrap().method, Method::Options, "{what}");
            assert!(answer.to_tag().is_some(), "{what}");
            let found = answer.header_value("Warning").unwrap_or_default();
            assert!(found.starts_with("399 callgate \""), "{what}: {found}");
            assert!(found.contains(warning), "{what}: {found}");
            if !what.contains("Call-ID") {
                assert_eq!(answer.call_id(), Some("opt-1"), "{what}");
            }
            if !what.contains("From") {
                assert_eq!(answer.from_tag().as_deref(), Some("1"), "{what}");
            }
        }

        // Without any readable Via there is nobody to answer.
        let no_via = MINIMAL_OPTIONS.replace(
            "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKabc",
            "Via: garbage here",
        );
        let error = parse(no_via.as_bytes()).unwrap_err();
        assert_eq!(error.error_response(), None);
    }

    #[test]
    fn unknown_method_is_answered_501_and_other_versions_505() {
        let text = MINIMAL_OPTIONS.replace("OPTIONS", "FROBNICATE");
        let error = parse(text.as_bytes()).unwrap_err();
        assert_eq!(error.error, MessageError::UnknownMethod("FROBNICATE".into()));
        let answer = String::from_utf8(error.error_response().unwrap()).unwrap();
        assert!(answer.starts_with("SIP/2.0 501 Not Implemented\r\n"), "{answer}");
        assert!(answer.contains("\r\nCSeq: 1 FROBNICATE\r\n"));
        let text = MINIMAL_OPTIONS.replace("SIP/2.0\r\nVia", "SIP/3.0\r\nVia");
        let error = parse(text.as_bytes()).unwrap_err();
        assert_eq!(response(&error.error_response().unwrap()).status_code.code(), 505);
    }

    #[test]
    fn oversized_message_is_refused_and_answered_513() {
        let mut text = MINIMAL_OPTIONS.replace(
            "\r\n\r\n",
            &format!("\r\nContent-Length: {MAX_MESSAGE_BYTES}\r\n\r\n"),
        );
        text.push_str(&"x".repeat(MAX_MESSAGE_BYTES));
        let error = parse(text.as_bytes()).unwrap_err();
        assert!(matches!(error.error, MessageError::TooLarge { .. }));
        assert_eq!(
            response(&error.error_response().unwrap()).status_code,
            StatusCode::MessageTooLarge
        );
        let exactly = vec![b'x'; MAX_MESSAGE_BYTES];
        assert!(!matches!(
            parse(&exactly).unwrap_err().error,
            MessageError::TooLarge { .. }
        ));
    }

    #[test]
    fn responses_acks_and_keepalives_are_never_answered() {
        let ack = MINIMAL_OPTIONS
            .replace("OPTIONS", "ACK")
            .replace("Call-ID: opt-1\r\n", "");
        assert_eq!(parse(ack.as_bytes()).unwrap_err().error_response(), None);
        let reply = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n";
        assert_eq!(parse(reply.as_bytes()).unwrap_err().error_response(), None);
        assert_eq!(parse(b"\r\n\r\n").unwrap_err().error, MessageError::Empty);
        assert_eq!(parse(b"").unwrap_err().error, MessageError::Empty);
    }

    #[test]
    fn leading_blank_lines_are_skipped_and_unterminated_heads_refused() {
        let text = format!("\r\n\r\n{MINIMAL_OPTIONS}");
        assert_eq!(request(text.as_bytes()).call_id(), Some("opt-1"));
        let cut = &MINIMAL_OPTIONS[..MINIMAL_OPTIONS.len() - 2];
        let error = parse(cut.as_bytes()).unwrap_err();
        assert_eq!(error.error, MessageError::UnterminatedHeaders);
        assert!(error.error_response().is_some());
    }

    #[test]
    fn printing_uses_real_reason_phrases_and_raw_body_bytes() {
        let mut busy = response_to(
            &request(MINIMAL_OPTIONS.as_bytes()),
            StatusCode::BusyHere,
            Some("t1"),
        );
        busy.body = vec![0xff, 0x00, b'a'];
        let bytes = response_bytes(&busy);
        assert!(bytes.starts_with(b"SIP/2.0 486 Busy Here\r\n"));
        assert!(bytes.ends_with(b"Content-Length: 3\r\n\r\n\xff\x00a"));
        let odd = Response {
            status_code: StatusCode::from(499),
            ..busy.clone()
        };
        assert!(response_bytes(&odd).starts_with(b"SIP/2.0 499 Unknown\r\n"));
        let custom = Response {
            status_code: StatusCode::Other(499, "Odd Thing".into()),
            ..busy
        };
        assert!(response_bytes(&custom).starts_with(b"SIP/2.0 499 Odd Thing\r\n"));
        assert!(response(b"SIP/2.0 499 Odd Thing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n").status_code == StatusCode::Other(499, "Odd Thing".into()));
    }

    #[test]
    fn fixtures_round_trip_through_print_and_parse() {
        for fixture in fixtures::ALL {
            let first = parse_ok(&wire(fixture));
            let printed = message_bytes(&first);
            assert_eq!(parse_ok(&printed), first);
            assert_eq!(message_bytes(&parse_ok(&printed)), printed);
        }
    }

    #[test]
    fn response_to_copies_the_transaction_headers_and_adds_the_to_tag() {
        let mut invite = request(&wire(fixtures::JSSIP_INVITE));
        invite.push_header("Record-Route", "<sip:proxy.example;lr>");
        let ringing = response_to(&invite, StatusCode::Ringing, Some("gwtag"));
        assert_eq!(ringing.to_tag().as_deref(), Some("gwtag"));
        assert_eq!(ringing.header_value("Via"), invite.header_value("Via"));
        assert_eq!(ringing.from_tag(), invite.from_tag());
        assert_eq!(ringing.cseq().unwrap(), invite.cseq().unwrap());
        assert_eq!(ringing.call_id(), invite.call_id());
        assert_eq!(ringing.record_route().unwrap().len(), 1);
        assert_eq!(ringing.content_type(), None);
        let trying = response_to(&invite, StatusCode::Trying, None);
        assert_eq!(trying.to_tag(), None);
        assert!(trying.record_route().unwrap().is_empty());
        let with_tag = response_to(
            &request(&wire(fixtures::FREESWITCH_BYE)),
            StatusCode::OK,
            Some("other"),
        );
        assert_eq!(
            with_tag.to_tag().as_deref(),
            Some("k2h8d7s6a5"),
            "an existing To tag is kept"
        );
    }

    #[test]
    fn set_remove_and_push_header_keep_order() {
        let mut options = request(MINIMAL_OPTIONS.as_bytes());
        options.push_header("X-A", "1");
        options.push_header("x-a", "2");
        options.set_header("X-A", "3");
        assert_eq!(options.header_values("X-A").collect::<Vec<_>>(), ["3"]);
        options.set_header("Call-ID", "new\r\nInjected: yes");
        assert_eq!(options.call_id(), Some("new  Injected: yes"));
        assert_eq!(header_parts(options.headers.iter().nth(3).unwrap()).0, "Call-ID");
        options.remove_header("x-a");
        assert_eq!(options.header_value("X-A"), None);
    }

    #[test]
    fn max_forwards_is_decremented_and_zero_means_too_many_hops() {
        let mut invite = request(&wire(fixtures::JSSIP_INVITE));
        assert_eq!(decrement_max_forwards(&mut invite), Ok(68));
        assert_eq!(invite.max_forwards(), Ok(Some(68)));
        let mut missing = request(MINIMAL_OPTIONS.as_bytes());
        assert_eq!(decrement_max_forwards(&mut missing), Ok(69));
        missing.set_header("Max-Forwards", "0");
        assert_eq!(
            decrement_max_forwards(&mut missing),
            Err(MessageError::TooManyHops)
        );
    }

    #[test]
    fn cancel_and_failure_ack_follow_rfc_3261() {
        let mut invite = request(&wire(fixtures::JSSIP_INVITE));
        invite.push_header("Route", "<sip:edge.example;lr>");
        let cancel = build_cancel(&invite).unwrap();
        assert_eq!(cancel.method, Method::Cancel);
        assert_eq!(cancel.uri, invite.uri);
        assert_eq!(cancel.header_value("Via"), invite.header_value("Via"));
        assert_eq!(
            cancel.cseq().unwrap(),
            CSeq {
                seq: 8046,
                method: Method::Cancel
            }
        );
        assert_eq!(cancel.route().unwrap(), invite.route().unwrap());
        let busy = response_to(&invite, StatusCode::BusyHere, Some("pbx1"));
        let ack = build_failure_ack(&invite, &busy).unwrap();
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(ack.to_tag().as_deref(), Some("pbx1"));
        assert_eq!(
            ack.cseq().unwrap(),
            CSeq {
                seq: 8046,
                method: Method::Ack
            }
        );
        assert_eq!(ack.branch(), invite.branch());
        assert_eq!(parse_ok(&request_bytes(&ack)), SipMessage::Request(ack));
    }

    #[test]
    fn stream_framing_splits_by_content_length_and_reports_keepalives() {
        let first = wire(fixtures::JSSIP_INVITE);
        let second = wire(fixtures::FREESWITCH_BYE);
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(&first);
        stream.extend_from_slice(&second);
        assert_eq!(next_stream_chunk(&stream), Ok(StreamChunk::Keepalive(4)));
        let stream = &stream[4..];
        for cut in [0, 10, first.len() - 1] {
            assert_eq!(
                next_stream_chunk(&stream[..cut]),
                Ok(StreamChunk::Incomplete),
                "{cut}"
            );
        }
        assert_eq!(next_stream_chunk(stream), Ok(StreamChunk::Message(first.len())));
        assert_eq!(parse(&stream[..first.len()]).unwrap(), parse(&first).unwrap());
        assert_eq!(
            next_stream_chunk(&stream[first.len()..]),
            Ok(StreamChunk::Message(second.len()))
        );
        let compact = b"OPTIONS sip:a@b SIP/2.0\r\nl: 5\r\n\r\nabcde";
        assert_eq!(
            next_stream_chunk(compact),
            Ok(StreamChunk::Message(compact.len()))
        );
        let huge = format!("OPTIONS sip:a@b SIP/2.0\r\nContent-Length: {MAX_MESSAGE_BYTES}\r\n\r\n");
        assert!(matches!(
            next_stream_chunk(huge.as_bytes()),
            Err(MessageError::TooLarge { .. })
        ));
        let endless_head = vec![b'a'; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            next_stream_chunk(&endless_head),
            Err(MessageError::TooLarge { .. })
        ));
        let garbage = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n";
        assert!(matches!(
            next_stream_chunk(garbage),
            Err(MessageError::BadHeader { .. })
        ));
    }

    #[test]
    fn control_characters_in_headers_are_refused() {
        let bare_cr = MINIMAL_OPTIONS.replace("Call-ID: opt-1", "Call-ID: opt-1\rInjected: 1");
        let error = parse(bare_cr.as_bytes()).unwrap_err();
        assert_eq!(error.error, MessageError::BadHeaderLine { line: 5 });
        let tab = MINIMAL_OPTIONS.replace("Call-ID: opt-1", "Call-ID:\topt-1");
        assert_eq!(request(tab.as_bytes()).call_id(), Some("opt-1"));
    }

    #[test]
    fn generated_identifiers_are_fresh() {
        let branch = new_branch();
        assert!(branch.starts_with(BRANCH_MAGIC_COOKIE) && branch.len() == 29);
        assert_ne!(new_branch(), branch);
        assert_ne!(new_tag(), new_tag());
        assert_ne!(new_call_id(), new_call_id());
    }

    /// Truncations, byte flips, insertions and deletions of real messages: nothing panics, every refusal
    /// can be turned into bytes, and every accepted message prints to something that parses to itself.
    #[test]
    fn mutated_real_messages_never_panic_and_round_trip() {
        let mut rng = StdRng::seed_from_u64(0x5eed_ca11);
        let seeds: Vec<Vec<u8>> = fixtures::ALL.iter().map(|fixture| wire(fixture)).collect();
        let mut accepted = 0;
        for round in 0..4000 {
            let mut bytes = seeds[round % seeds.len()].clone();
            for _ in 0..=(rng.next_u32() % 4) {
                let at = rng.next_u32() as usize % (bytes.len() + 1);
                match rng.next_u32() % 6 {
                    0 => bytes.truncate(at),
                    1 if at < bytes.len() => bytes[at] = rng.next_u32() as u8,
                    2 => {
                        let specials = b"\r\n:;,<>\" \t@[]=";
                        bytes.insert(at, specials[rng.next_u32() as usize % specials.len()]);
                    }
                    3 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    4 if at < bytes.len() => bytes[at] = b'\n',
                    _ => {}
                }
            }
            match parse(&bytes) {
                Ok(message) => {
                    accepted += 1;
                    let printed = message_bytes(&message);
                    assert_eq!(parse_ok(&printed), message, "{}", String::from_utf8_lossy(&bytes));
                }
                Err(error) => {
                    if let Some(answer) = error.error_response() {
                        // Every answer parses again; a 501 may carry a method only the peer knows in CSeq.
                        match parse(&answer) {
                            Ok(SipMessage::Response(_)) => {}
                            Err(ParseError {
                                error:
                                    MessageError::BadHeader {
                                        name: "CSeq",
                                        reason: "unknown method",
                                    },
                                ..
                            }) => {
                                // A method rsip does not know, taken from the request line: valid SIP.
                                let request = String::from_utf8_lossy(&bytes);
                                let method = request
                                    .trim_start_matches(['\r', '\n'])
                                    .split(' ')
                                    .next()
                                    .unwrap_or_default();
                                let text = String::from_utf8_lossy(&answer);
                                assert!(text.contains(&format!(" {method}\r\nWarning: ")), "{text}");
                            }
                            other => panic!("{other:?}\n{}", String::from_utf8_lossy(&answer)),
                        }
                    }
                }
            }
        }
        assert!(
            accepted > 100,
            "the mutations should leave many messages valid, got {accepted}"
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = StdRng::seed_from_u64(7);
        for length in 0..2000 {
            let mut bytes = vec![0u8; length % 300];
            rng.fill_bytes(&mut bytes);
            let _ = parse(&bytes).map_err(|error| error.error_response());
        }
    }
}
