//! SIP toward PBX trunks over UDP and TCP, and the stream machinery TLS ([`super::sip_tls`]) shares.
//!
//! UDP is one socket for every trunk. TCP connections are opened on demand toward a trunk, reused for every
//! message to the same address, and accepted from PBXs that open their own (in-dialog requests to our
//! Contact). Messages on a stream are framed by `Content-Length` (RFC 3261 §18.3,
//! [`crate::sip::message::next_stream_chunk`]).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};

use super::ConnectionId;
use crate::sip::message::{StreamChunk, next_stream_chunk};

/// Messages queued toward one stream peer before it counts as stuck.
const STREAM_QUEUE: usize = 256;
/// How long a TCP connect (and, for TLS, the handshake after it) may take before the transaction sees a
/// transport error.
pub(super) const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// One SIP message framed from a TCP or TLS stream.
    StreamMessage {
        /// TCP or TLS.
        transport: StreamTransport,
        /// The connection it came on.
        connection: ConnectionId,
        /// The remote end.
        peer: SocketAddr,
        /// The message.
        bytes: Bytes,
    },
    /// Sending to a stream peer failed (connect refused or timed out, TLS handshake or certificate
    /// refused, connection reset, queue full).
    TransportError {
        /// TCP or TLS.
        transport: StreamTransport,
        /// The remote end.
        peer: SocketAddr,
        /// What went wrong, for the log.
        reason: String,
    },
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

/// The stream transports toward trunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamTransport {
    /// SIP over TCP.
    Tcp,
    /// SIP over TLS over TCP.
    Tls,
}

/// Stream connection ids share no space with WebSocket ids, and TCP and TLS share one counter: start high.
static NEXT_STREAM_CONNECTION: AtomicU64 = AtomicU64::new(1 << 48);

/// The open connections of one stream transport, keyed by remote address, and the task that runs each.
pub(super) struct StreamConnections {
    transport: StreamTransport,
    events: mpsc::Sender<SipNetEvent>,
    max_message_bytes: usize,
    /// Shared between the signaling task (sending) and connection tasks (registering/removing);
    /// held only for map lookups, never across an await.
    connections: Mutex<HashMap<SocketAddr, (ConnectionId, mpsc::Sender<Bytes>)>>,
    pub(super) shutdown: watch::Receiver<bool>,
}

impl StreamConnections {
    pub(super) fn new(
        transport: StreamTransport,
        events: mpsc::Sender<SipNetEvent>,
        max_message_bytes: usize,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        Arc::new(StreamConnections {
            transport,
            events,
            max_message_bytes,
            connections: Mutex::new(HashMap::new()),
            shutdown,
        })
    }

    /// Queues `bytes` toward `peer` on its connection, open or still being opened. When there is none, one is
    /// registered with `bytes` queued, and the caller must connect and [`StreamConnections::run`] it (or
    /// [`StreamConnections::abandon`] it): messages sent meanwhile wait for that connection instead of opening
    /// another.
    pub(super) fn send_or_register(&self, peer: SocketAddr, bytes: Bytes) -> Option<Registered> {
        let mut connections = self.lock_connections();
        if let Some((_, sender)) = connections.get(&peer) {
            if sender.try_send(bytes).is_err() {
                drop(connections);
                self.report_error(peer, "connection queue full or closed".to_owned());
            }
            return None;
        }
        let (queue, registered) = Self::register_in(&mut connections, peer);
        // A new channel has room for its first message.
        let _ = queue.try_send(bytes);
        Some(registered)
    }

    /// Registers a connection under `peer` (replacing any other), for a stream that is already connected.
    pub(super) fn register(&self, peer: SocketAddr) -> Registered {
        Self::register_in(&mut self.lock_connections(), peer).1
    }

    fn register_in(
        connections: &mut HashMap<SocketAddr, (ConnectionId, mpsc::Sender<Bytes>)>,
        peer: SocketAddr,
    ) -> (mpsc::Sender<Bytes>, Registered) {
        let connection = ConnectionId(NEXT_STREAM_CONNECTION.fetch_add(1, Ordering::Relaxed));
        let (queue, outbound) = mpsc::channel::<Bytes>(STREAM_QUEUE);
        connections.insert(peer, (connection, queue.clone()));
        let registered = Registered {
            peer,
            connection,
            outbound,
        };
        (queue, registered)
    }

    /// The connection could not be opened: forgets it (dropping what was queued) and reports `reason`.
    pub(super) fn abandon(&self, registered: Registered, reason: String) {
        self.forget(registered.peer, registered.connection);
        self.report_error(registered.peer, reason);
    }

    fn forget(&self, peer: SocketAddr, connection: ConnectionId) {
        let mut connections = self.lock_connections();
        if connections.get(&peer).is_some_and(|(id, _)| *id == connection) {
            connections.remove(&peer);
        }
    }

    fn lock_connections(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, (ConnectionId, mpsc::Sender<Bytes>)>> {
        // A poisoned map only means a connection task panicked mid-insert; the map itself is still usable.
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tells the gateway that messages toward `peer` cannot be delivered.
    pub(super) fn report_error(&self, peer: SocketAddr, reason: String) {
        let events = self.events.clone();
        let transport = self.transport;
        tokio::spawn(async move {
            let _ = events
                .send(SipNetEvent::TransportError {
                    transport,
                    peer,
                    reason,
                })
                .await;
        });
    }

    /// Runs a registered connection over `stream` until it closes: queued messages are written, framed
    /// messages reported.
    pub(super) fn run<S>(self: &Arc<Self>, stream: S, registered: Registered)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let Registered {
            peer,
            connection,
            mut outbound,
        } = registered;
        let streams = self.clone();
        tokio::spawn(async move {
            let (mut reader, mut writer) = tokio::io::split(stream);
            let mut shutdown = streams.shutdown.clone();
            let mut buffer = BytesMut::with_capacity(8192);
            let outcome: Result<(), String> = loop {
                tokio::select! {
                    read = reader.read_buf(&mut buffer) => match read {
                        // Transactions still waiting on this connection can get no answer now: an error,
                        // so that they fail over at once instead of at Timer B.
                        Ok(0) => break Err("closed by the peer".to_owned()),
                        Ok(_) => {
                            if let Err(error) = streams.drain_messages(&mut buffer, connection, peer).await {
                                break Err(error);
                            }
                        }
                        Err(error) => break Err(format!("read failed: {error}")),
                    },
                    message = outbound.recv() => {
                        let Some(bytes) = message else { break Ok(()) };
                        // TLS buffers records: without the flush a message can sit in the writer.
                        let written = match writer.write_all(&bytes).await {
                            Ok(()) => writer.flush().await,
                            Err(error) => Err(error),
                        };
                        if let Err(error) = written {
                            break Err(format!("write failed: {error}"));
                        }
                    }
                    _ = shutdown.changed() => break Ok(()),
                }
            };
            streams.forget(peer, connection);
            if let Err(reason) = outcome {
                tracing::info!(%peer, transport = ?streams.transport, %reason, "sip stream connection closed");
                let _ = streams
                    .events
                    .send(SipNetEvent::TransportError {
                        transport: streams.transport,
                        peer,
                        reason,
                    })
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
            // A stream that lost its framing cannot be resynchronised: RFC 3261 §18.3 says close it.
            match next_stream_chunk(buffer).map_err(|error| error.to_string())? {
                // The first message alone outgrows the limit: waiting for the rest would only buffer more.
                StreamChunk::Incomplete if buffer.len() > self.max_message_bytes => {
                    return Err(format!("message larger than {} bytes", self.max_message_bytes));
                }
                StreamChunk::Incomplete => return Ok(()),
                StreamChunk::Keepalive(len) => {
                    let _ = buffer.split_to(len);
                }
                StreamChunk::Message(len) if len > self.max_message_bytes => {
                    return Err(format!("message larger than {} bytes", self.max_message_bytes));
                }
                StreamChunk::Message(len) => {
                    let event = SipNetEvent::StreamMessage {
                        transport: self.transport,
                        connection,
                        peer,
                        bytes: buffer.split_to(len).freeze(),
                    };
                    if self.events.send(event).await.is_err() {
                        return Err("gateway shutting down".to_owned());
                    }
                }
            }
        }
    }
}

/// A connection in the map whose stream is not running yet.
pub(super) struct Registered {
    peer: SocketAddr,
    connection: ConnectionId,
    outbound: mpsc::Receiver<Bytes>,
}

/// TCP connections toward and from trunks.
#[derive(Clone)]
pub struct SipTcp {
    streams: Arc<StreamConnections>,
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
            streams: StreamConnections::new(StreamTransport::Tcp, events, max_message_bytes, shutdown),
        };
        let Some(address) = address else {
            return Ok((tcp, None));
        };
        let listener = TcpListener::bind(address).await?;
        let bound = listener.local_addr()?;
        let streams = tcp.streams.clone();
        tokio::spawn(async move {
            let mut shutdown = streams.shutdown.clone();
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = shutdown.changed() => return,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        streams.run(stream, streams.register(peer));
                    }
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
        let Some(registered) = self.streams.send_or_register(peer, bytes) else {
            return;
        };
        let streams = self.streams.clone();
        tokio::spawn(async move {
            match connect(peer).await {
                Ok(stream) => streams.run(stream, registered),
                Err(reason) => streams.abandon(registered, reason),
            }
        });
    }
}

/// Opens a TCP connection to `peer` within [`CONNECT_TIMEOUT`]; the error is a reason for the log.
pub(super) async fn connect(peer: SocketAddr) -> Result<TcpStream, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(error)) => Err(format!("connect failed: {error}")),
        Err(_) => Err("connect timed out".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut connections = Vec::new();
        for _ in 0..2 {
            match b_rx.recv().await.unwrap() {
                SipNetEvent::StreamMessage {
                    transport,
                    connection,
                    bytes,
                    ..
                } => {
                    assert_eq!(transport, StreamTransport::Tcp);
                    assert_eq!(bytes, message);
                    connections.push(connection);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // The second message was sent while the first connect was under way: it waited for it.
        assert_eq!(connections[0], connections[1]);
    }

    #[tokio::test]
    async fn keepalives_are_skipped_and_an_oversize_message_closes_the_stream() {
        let (_stop_tx, stop) = watch::channel(false);
        let (events, mut rx) = mpsc::channel(8);
        let (_tcp, bound) = SipTcp::start(Some("127.0.0.1:0".parse().unwrap()), events, 4_096, stop)
            .await
            .unwrap();
        let mut pbx = TcpStream::connect(bound.unwrap()).await.unwrap();
        let message = b"BYE sip:a@b SIP/2.0\r\nl: 4\r\n\r\nbody";
        pbx.write_all(b"\r\n\r\n").await.unwrap();
        pbx.write_all(message).await.unwrap();
        match rx.recv().await.unwrap() {
            SipNetEvent::StreamMessage { bytes, .. } => assert_eq!(&bytes[..], &message[..]),
            other => panic!("unexpected {other:?}"),
        }
        pbx.write_all(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n")
            .await
            .unwrap();
        pbx.write_all(&[b'v'; 5000]).await.unwrap();
        assert!(matches!(
            rx.recv().await,
            Some(SipNetEvent::TransportError {
                transport: StreamTransport::Tcp,
                ..
            })
        ));
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
