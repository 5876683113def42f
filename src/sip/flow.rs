//! Where a message came from or goes to: the transport and the remote address, plus the connection for
//! connection-oriented transports.
//!
//! The SIP core never opens sockets; a [`Flow`] is the handle the transport layer gives it, and responses and
//! in-dialog requests are sent back on the flow a request arrived on (browsers put unreachable `.invalid`
//! hosts in Via and Contact, so the flow is the only way back to them).

use std::fmt;
use std::net::SocketAddr;

/// A SIP transport protocol as it appears in a Via header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Datagrams; the only unreliable transport, so the only one with retransmissions.
    Udp,
    /// A TCP stream.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// SIP over WebSocket (RFC 7118).
    Ws,
    /// SIP over secure WebSocket (RFC 7118).
    Wss,
}

impl Transport {
    /// True when the transport delivers in order and without loss, so that no retransmission is needed.
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// True when the transport is encrypted (TLS or WSS).
    pub fn is_secure(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    /// The transport token used in a Via header (`UDP`, `TCP`, `TLS`, `WS`, `WSS`).
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// Reads a Via transport token or a `transport=` URI parameter value, ignoring case.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Transport::Udp,
            Transport::Tcp,
            Transport::Tls,
            Transport::Ws,
            Transport::Wss,
        ]
        .into_iter()
        .find(|transport| transport.via_name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via_name())
    }
}

/// One path to a peer: the transport, the peer's address and, for connection-oriented transports, the
/// transport layer's id of the connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// The transport protocol of this flow.
    pub transport: Transport,
    /// The peer's address (the source address of what it sent, which is what `rport` asks for).
    pub remote: SocketAddr,
    /// The transport layer's id for the connection (TCP, TLS, WebSocket); `None` for UDP.
    pub connection: Option<u64>,
}

impl Flow {
    /// True when the flow's transport is reliable (everything except UDP).
    pub fn is_reliable(&self) -> bool {
        self.transport.is_reliable()
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.connection {
            Some(connection) => write!(f, "{} {} #{}", self.transport, self.remote, connection),
            None => write!(f, "{} {}", self.transport, self.remote),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_udp_is_unreliable() {
        for transport in [Transport::Tcp, Transport::Tls, Transport::Ws, Transport::Wss] {
            assert!(transport.is_reliable(), "{transport}");
        }
        assert!(!Transport::Udp.is_reliable());
    }

    #[test]
    fn transport_names_round_trip_ignoring_case() {
        for transport in [
            Transport::Udp,
            Transport::Tcp,
            Transport::Tls,
            Transport::Ws,
            Transport::Wss,
        ] {
            assert_eq!(Transport::from_name(transport.via_name()), Some(transport));
            assert_eq!(
                Transport::from_name(&transport.via_name().to_lowercase()),
                Some(transport)
            );
        }
        assert_eq!(Transport::from_name("SCTP"), None);
    }
}
