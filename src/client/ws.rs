//! One SIP-over-WebSocket connection (RFC 7118) as a browser opens it: subprotocol `sip`, the page's
//! `Origin`, ws:// or wss://, one SIP message per frame.
//!
//! [`SipWebSocket`] is also the raw escape hatch for tests: send any bytes, read what comes back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::{Message, WebSocketConfig};

use super::ClientError;
use crate::sip::Transport;

/// The WebSocket read buffer: room for a typical SIP message.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// How to open the connection.
#[derive(Debug, Clone, Default)]
pub struct WsOptions {
    /// The `Origin` header: the page the widget runs on. Browsers always send one.
    pub origin: Option<String>,
    /// The `User-Agent` header of the handshake.
    pub user_agent: Option<String>,
    /// TLS settings for wss:// URLs (trusted roots, e.g. a test CA); required for wss.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Anything a WebSocket can run over: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open SIP-over-WebSocket connection.
pub struct SipWebSocket {
    socket: WebSocketStream<Box<dyn Io>>,
    transport: Transport,
    peer: SocketAddr,
}

impl std::fmt::Debug for SipWebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipWebSocket")
            .field("transport", &self.transport)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl SipWebSocket {
    /// Opens `url` (`ws://host:port/ws` or `wss://…`) asking for the `sip` subprotocol; fails when the
    /// server does not agree to it.
    pub async fn connect(url: &str, options: &WsOptions) -> Result<Self, ClientError> {
        let mut request = url
            .into_client_request()
            .map_err(|error| ClientError::Url(format!("{url}: {error}")))?;
        let headers = request.headers_mut();
        headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
        for (name, value) in [("Origin", &options.origin), ("User-Agent", &options.user_agent)] {
            if let Some(value) = value {
                let value = HeaderValue::from_str(value)
                    .map_err(|_| ClientError::Url(format!("{name} {value:?} is not a header value")))?;
                headers.insert(name, value);
            }
        }
        let uri = request.uri();
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(ClientError::Url(format!("{url}: not ws:// or wss://"))),
        };
        let host = uri
            .host()
            .ok_or_else(|| ClientError::Url(format!("{url}: no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|error| ClientError::Connect(format!("{url}: {error}")))?;
        let peer = tcp.peer_addr()?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Io> = if secure {
            let config = options
                .tls
                .clone()
                .ok_or_else(|| ClientError::Tls("wss:// needs WsOptions::tls".to_owned()))?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|error| ClientError::Tls(format!("{host}: {error}")))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|error| ClientError::Tls(error.to_string()))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        // tungstenite zero-fills its whole read buffer (128 KiB by default) before every read attempt,
        // which a load generator polling hundreds of connections pays dearly for; SIP messages are a
        // few KiB, and a larger frame still grows the buffer as it arrives.
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
        let (socket, _response) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|error| ClientError::Connect(format!("{url}: {error}")))?;
        Ok(SipWebSocket {
            socket,
            transport: if secure { Transport::Wss } else { Transport::Ws },
            peer,
        })
    }

    /// `Ws` or `Wss`.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The server's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Sends one frame: text when the bytes are UTF-8 (as JsSIP sends SIP), binary otherwise.
    pub async fn send(&mut self, bytes: impl Into<Bytes>) -> Result<(), ClientError> {
        let bytes = bytes.into();
        let message = match std::str::from_utf8(&bytes) {
            Ok(text) => Message::text(text),
            Err(_) => Message::Binary(bytes),
        };
        self.socket
            .send(message)
            .await
            .map_err(|error| ClientError::WebSocket(error.to_string()))
    }

    /// The next frame's payload; `None` once the connection is closed (by either side or an error).
    /// Cancel-safe: usable in `select!`.
    pub async fn recv(&mut self) -> Option<Bytes> {
        loop {
            match self.socket.next().await? {
                Ok(Message::Text(text)) => return Some(Bytes::from(text)),
                Ok(Message::Binary(bytes)) => return Some(bytes),
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Close(_)) | Err(_) => return None,
            }
        }
    }

    /// [`SipWebSocket::recv`] with a time limit; `Ok(None)` when the connection closed.
    pub async fn recv_timeout(&mut self, limit: Duration) -> Result<Option<Bytes>, ClientError> {
        tokio::time::timeout(limit, self.recv())
            .await
            .map_err(|_| ClientError::Timeout("a WebSocket frame".to_owned()))
    }

    /// Closes with a close frame, as a browser does when the page goes away.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
