//! Every socket of the gateway's signaling: the HTTP(S) listener carrying SIP over WebSocket toward browsers,
//! and SIP over UDP, TCP and TLS toward PBX trunks. This layer moves whole SIP messages as bytes; it makes no
//! protocol decisions. Media sockets live with the media workers.

pub mod http;
pub mod sip_net;
pub mod sip_tls;

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::sync::mpsc;

/// One stream connection (WebSocket, TCP or TLS), unique for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// What the HTTP handshake of a WebSocket told us about the browser.
#[derive(Debug, Clone)]
pub struct WsConnectionInfo {
    /// Source address of the TCP connection.
    pub peer: SocketAddr,
    /// Whether the connection came over TLS (WSS).
    pub secure: bool,
    /// The `Origin` header the browser sent: the page that opened the socket.
    pub origin: Option<String>,
    /// The `User-Agent` header, for call records.
    pub user_agent: Option<String>,
}

/// Events of the browser-facing WebSocket connections.
#[derive(Debug)]
pub enum WsEvent {
    /// A connection completed its handshake; frames for it go through `outbound`.
    Opened {
        /// The connection.
        connection: ConnectionId,
        /// What the handshake said.
        info: WsConnectionInfo,
        /// Sends one SIP message per frame to the browser; dropping it closes the connection.
        outbound: mpsc::Sender<Bytes>,
    },
    /// One frame: one SIP message (RFC 7118 §5.1).
    Message {
        /// The connection.
        connection: ConnectionId,
        /// The frame's payload.
        bytes: Bytes,
    },
    /// The connection is gone.
    Closed {
        /// The connection.
        connection: ConnectionId,
    },
}
