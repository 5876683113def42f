//! SIP toward PBX trunks over UDP and TCP.
//!
//! UDP is one socket for every trunk. TCP connections are opened on demand toward a trunk, reused for every
//! message to the same address, and accepted from PBXs that open their own (in-dialog requests to our
//! Contact). Messages on a stream are framed by `Content-Length` (RFC 3261 §18.3).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};

use super::ConnectionId;

/// Messages queued toward one TCP peer before it counts as stuck.
const STREAM_QUEUE: usize = 256;
/// How long a TCP connect may take before the transaction sees a transport error.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Events of the PBX-facing SIP transports.
#[derive(Debug)]
pub enum SipNetEvent {
    /// One UDP datagram.
    Datagram {
        /// Sender.
        from: SocketAddr,
        /// The datagram.
        bytes: Bytes,
    },
    /// One SIP message framed from a TCP stream.
    StreamMessage {
        /// The connection it came on.
        connection: ConnectionId,
        /// The remote end.
        peer: SocketAddr,
        /// The message.
        bytes: Bytes,
    },
    /// Sending to a TCP peer failed (connect refused or timed out, connection reset, queue full).
    TransportError {
        /// The remote end.
        peer: SocketAddr,
        /// What went wrong, for the log.
        reason: String,
    },
}

/// Why a byte stream cannot be split into SIP messages.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    /// The header section ended without a usable Content-Length.
    #[error("missing or invalid Content-Length on a stream transport")]
    BadContentLength,
    /// A message would exceed the size limit.
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
}

/// Finds the first complete SIP message in `buffer`.
///
/// Returns `(skip, len)`: `skip` bytes of keep-alive CRLFs precede a message of `len` bytes, or `Ok(None)`
/// when more bytes are needed (after skipping, if `skip` > 0, the caller may drop those bytes).
pub fn frame_stream_message(buffer: &[u8], max: usize) -> Result<Option<(usize, usize)>, FramingError> {
    let skip = buffer
        .iter()
        .take_while(|&&byte| byte == b'\r' || byte == b'\n')
        .count();
    let rest = &buffer[skip..];
    let Some(head_end) = rest.windows(4).position(|window| window == b"\r\n\r\n") else {
        if rest.len() > max {
            return Err(FramingError::TooLarge(max));
        }
        return Ok(None);
    };
    let head = &rest[..head_end];
    let mut content_length = None;
    for line in head.split(|&byte| byte == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&byte| byte == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = std::str::from_utf8(line[colon + 1..].trim_ascii())
                .ok()
                .and_then(|text| text.parse::<usize>().ok())
                .ok_or(FramingError::BadContentLength)?;
            content_length = Some(value);
        }
    }
    let body = content_length.ok_or(FramingError::BadContentLength)?;
    let total = head_end + 4 + body;
    if total > max {
        return Err(FramingError::TooLarge(max));
    }
    Ok((rest.len() >= total).then_some((skip, total)))
}

/// The UDP socket toward trunks.
pub struct SipUdp {
    socket: Arc<UdpSocket>,
}

impl SipUdp {
    /// Binds `address` and forwards every datagram to `events` until `shutdown`.
    pub async fn bind(
        address: SocketAddr,
        events: mpsc::Sender<SipNetEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) -> io::Result<SipUdp> {
        let socket = Arc::new(UdpSocket::bind(address).await?);
        let reader = socket.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 65_536];
            loop {
                let received = tokio::select! {
                    received = reader.recv_from(&mut buffer) => received,
                    _ = shutdown.changed() => return,
                };
                match received {
                    Ok((len, from)) => {
                        let bytes = Bytes::copy_from_slice(&buffer[..len]);
                        if events.send(SipNetEvent::Datagram { from, bytes }).await.is_err() {
                            return;
                        }
                    }
                    // ICMP port unreachable from an earlier send shows up here on Linux; not fatal.
                    Err(error) => tracing::debug!(%error, "sip udp receive failed"),
                }
            }
        });
        Ok(SipUdp { socket })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends one datagram; errors are logged, since UDP loss is the transaction layer's business.
    pub fn send(&self, to: SocketAddr, bytes: &[u8]) {
        if let Err(error) = self.socket.try_send_to(bytes, to) {
            tracing::debug!(%to, %error, "sip udp send failed");
        }
    }
}

/// TCP connections toward and from trunks.
#[derive(Clone)]
pub struct SipTcp {
    inner: Arc<SipTcpInner>,
}

struct SipTcpInner {
    events: mpsc::Sender<SipNetEvent>,
    max_message_bytes: usize,
    /// Shared between the signaling task (sending) and connection tasks (registering/removing);
    /// held only for map lookups, never across an await.
    connections: Mutex<HashMap<SocketAddr, (ConnectionId, mpsc::Sender<Bytes>)>>,
    next_connection: std::sync::atomic::AtomicU64,
    shutdown: watch::Receiver<bool>,
}

impl SipTcp {
    /// Listens on `address` (when given) for PBX-initiated connections.
    pub async fn start(
        address: Option<SocketAddr>,
        events: mpsc::Sender<SipNetEvent>,
        max_message_bytes: usize,
        shutdown: watch::Receiver<bool>,
    ) -> io::Result<(SipTcp, Option<SocketAddr>)> {
        let tcp = SipTcp {
            inner: Arc::new(SipTcpInner {
                events,
                max_message_bytes,
                connections: Mutex::new(HashMap::new()),
                // Stream connection ids share no space with WebSocket ids: start high.
                next_connection: std::sync::atomic::AtomicU64::new(1 << 48),
                shutdown,
            }),
        };
        let Some(address) = address else {
            return Ok((tcp, None));
        };
        let listener = TcpListener::bind(address).await?;
        let bound = listener.local_addr()?;
        let acceptor = tcp.clone();
        tokio::spawn(async move {
            let mut shutdown = acceptor.inner.shutdown.clone();
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = shutdown.changed() => return,
                };
                match accepted {
                    Ok((stream, peer)) => acceptor.adopt(stream, peer, Vec::new()),
                    Err(error) => {
                        tracing::warn!(%error, "sip tcp accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Ok((tcp, Some(bound)))
    }

    /// Sends one message to `peer`, connecting first when no connection to it is open. Failures come back
    /// as [`SipNetEvent::TransportError`].
    pub fn send(&self, peer: SocketAddr, bytes: Bytes) {
        let existing = self
            .lock_connections()
            .get(&peer)
            .map(|(_, sender)| sender.clone());
        if let Some(sender) = existing {
            if sender.try_send(bytes).is_err() {
                self.report_error(peer, "connection queue full or closed".to_owned());
            }
            return;
        }
        let tcp = self.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer)).await {
                Ok(Ok(stream)) => tcp.adopt(stream, peer, vec![bytes]),
                Ok(Err(error)) => tcp.report_error(peer, format!("connect failed: {error}")),
                Err(_) => tcp.report_error(peer, "connect timed out".to_owned()),
            }
        });
    }

    fn lock_connections(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, (ConnectionId, mpsc::Sender<Bytes>)>> {
        // A poisoned map only means a connection task panicked mid-insert; the map itself is still usable.
        self.inner
            .connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn report_error(&self, peer: SocketAddr, reason: String) {
        let events = self.inner.events.clone();
        tokio::spawn(async move {
            let _ = events.send(SipNetEvent::TransportError { peer, reason }).await;
        });
    }

    fn adopt(&self, stream: TcpStream, peer: SocketAddr, first: Vec<Bytes>) {
        let _ = stream.set_nodelay(true);
        let connection = ConnectionId(
            self.inner
                .next_connection
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        let (sender, mut outbound) = mpsc::channel::<Bytes>(STREAM_QUEUE);
        for bytes in first {
            let _ = sender.try_send(bytes);
        }
        self.lock_connections().insert(peer, (connection, sender));
        let tcp = self.clone();
        tokio::spawn(async move {
            let (mut reader, mut writer) = stream.into_split();
            let mut shutdown = tcp.inner.shutdown.clone();
            let mut buffer = BytesMut::with_capacity(8192);
            let outcome: Result<(), String> = loop {
                tokio::select! {
                    read = reader.read_buf(&mut buffer) => match read {
                        Ok(0) => break Ok(()),
                        Ok(_) => {
                            if let Err(error) = tcp.drain_messages(&mut buffer, connection, peer).await {
                                break Err(error);
                            }
                        }
                        Err(error) => break Err(format!("read failed: {error}")),
                    },
                    message = outbound.recv() => {
                        let Some(bytes) = message else { break Ok(()) };
                        if let Err(error) = writer.write_all(&bytes).await {
                            break Err(format!("write failed: {error}"));
                        }
                    }
                    _ = shutdown.changed() => break Ok(()),
                }
            };
            {
                let mut connections = tcp.lock_connections();
                if connections.get(&peer).is_some_and(|(id, _)| *id == connection) {
                    connections.remove(&peer);
                }
            }
            if let Err(reason) = outcome {
                tracing::info!(%peer, %reason, "sip tcp connection closed");
                let _ = tcp
                    .inner
                    .events
                    .send(SipNetEvent::TransportError { peer, reason })
                    .await;
            }
        });
    }

    async fn drain_messages(
        &self,
        buffer: &mut BytesMut,
        connection: ConnectionId,
        peer: SocketAddr,
    ) -> Result<(), String> {
        loop {
            match frame_stream_message(buffer, self.inner.max_message_bytes) {
                Ok(Some((skip, len))) => {
                    let _ = buffer.split_to(skip);
                    let bytes = buffer.split_to(len).freeze();
                    let event = SipNetEvent::StreamMessage {
                        connection,
                        peer,
                        bytes,
                    };
                    if self.inner.events.send(event).await.is_err() {
                        return Err("gateway shutting down".to_owned());
                    }
                }
                Ok(None) => return Ok(()),
                // A stream that lost its framing cannot be resynchronised: RFC 3261 §18.3 says close it.
                Err(error) => return Err(error.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_a_message_with_body_and_keepalives() {
        let message = b"\r\n\r\nBYE sip:a@b SIP/2.0\r\nContent-Length: 4\r\n\r\nbodyNEXT";
        let (skip, len) = frame_stream_message(message, 65_536).unwrap().unwrap();
        assert_eq!(skip, 4);
        assert_eq!(
            &message[skip..skip + len],
            b"BYE sip:a@b SIP/2.0\r\nContent-Length: 4\r\n\r\nbody"
        );
    }

    #[test]
    fn waits_for_the_rest_of_a_body() {
        let message = b"INVITE sip:a@b SIP/2.0\r\nl: 10\r\n\r\nshort";
        assert_eq!(frame_stream_message(message, 65_536), Ok(None));
    }

    #[test]
    fn refuses_missing_length_and_oversize() {
        assert_eq!(
            frame_stream_message(b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n", 65_536),
            Err(FramingError::BadContentLength)
        );
        assert_eq!(
            frame_stream_message(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 99999\r\n\r\n", 65_536),
            Err(FramingError::TooLarge(65_536))
        );
        assert_eq!(
            frame_stream_message(&[b'a'; 70_000], 65_536),
            Err(FramingError::TooLarge(65_536))
        );
    }

    #[tokio::test]
    async fn tcp_round_trip_between_two_endpoints() {
        let (_stop_tx, stop) = watch::channel(false);
        let (a_events, _a_rx) = mpsc::channel(8);
        let (b_events, mut b_rx) = mpsc::channel(8);
        let (a, _) = SipTcp::start(None, a_events, 65_536, stop.clone()).await.unwrap();
        let (_b, b_addr) = SipTcp::start(Some("127.0.0.1:0".parse().unwrap()), b_events, 65_536, stop)
            .await
            .unwrap();
        let message = Bytes::from_static(b"OPTIONS sip:b SIP/2.0\r\nContent-Length: 0\r\n\r\n");
        a.send(b_addr.unwrap(), message.clone());
        a.send(b_addr.unwrap(), message.clone());
        for _ in 0..2 {
            match b_rx.recv().await.unwrap() {
                SipNetEvent::StreamMessage { bytes, .. } => assert_eq!(bytes, message),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn tcp_connect_refused_is_reported() {
        let (_stop_tx, stop) = watch::channel(false);
        let (events, mut rx) = mpsc::channel(8);
        let (tcp, _) = SipTcp::start(None, events, 65_536, stop).await.unwrap();
        // Bind then drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        tcp.send(port, Bytes::from_static(b"x"));
        assert!(matches!(
            rx.recv().await,
            Some(SipNetEvent::TransportError { .. })
        ));
    }
}
