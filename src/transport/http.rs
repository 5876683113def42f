//! The HTTP(S) listener: SIP over WebSocket (RFC 7118) on `/ws`, health endpoints, and the static assets
//! other modules register.
//!
//! Each WebSocket connection gets a [`ConnectionId`]; its frames leave as [`WsEvent`]s on one channel toward
//! the signaling task, and what the signaling task sends back goes through the per-connection sender handed
//! over in [`WsEvent::Opened`]. Nothing here interprets SIP.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Message, Role, WebSocketConfig};

use super::{ConnectionId, WsConnectionInfo, WsEvent};

/// Read buffer of each WebSocket connection: room for a typical SIP message.
const WS_READ_BUFFER_BYTES: usize = 8 * 1024;

/// The subprotocol RFC 7118 registers for SIP over WebSocket.
const SIP_SUBPROTOCOL: &str = "sip";

/// Frames queued toward one browser before the connection counts as stuck and is closed.
const OUTBOUND_QUEUE: usize = 64;

/// What the HTTP listener needs besides its socket.
pub struct HttpContext {
    /// Where WebSocket events go (the signaling task).
    pub ws_events: mpsc::Sender<WsEvent>,
    /// Largest SIP message accepted in one WebSocket frame.
    pub max_message_bytes: usize,
    /// Most WebSocket connections open at once; more are refused with 503.
    pub max_ws_connections: usize,
    /// Answers `/readyz`.
    pub readiness: Arc<dyn Fn() -> Readiness + Send + Sync>,
    /// Extra GET routes (exact path → response), e.g. `/widget.js` or `/metrics`.
    pub routes: Vec<(String, Arc<dyn Fn() -> StaticResponse + Send + Sync>)>,
    next_connection: AtomicU64,
    open_connections: AtomicUsize,
}

/// The answer of one registered route.
pub struct StaticResponse {
    /// `Content-Type` header value.
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
}

/// Whether the gateway takes new calls, for `/readyz`.
pub enum Readiness {
    /// Ready.
    Ready,
    /// Not ready, with the reason shown to the prober.
    NotReady(String),
}

impl HttpContext {
    /// A context with no extra routes.
    pub fn new(
        ws_events: mpsc::Sender<WsEvent>,
        max_message_bytes: usize,
        max_ws_connections: usize,
        readiness: Arc<dyn Fn() -> Readiness + Send + Sync>,
    ) -> Self {
        HttpContext {
            ws_events,
            max_message_bytes,
            max_ws_connections,
            readiness,
            routes: Vec::new(),
            next_connection: AtomicU64::new(1),
            open_connections: AtomicUsize::new(0),
        }
    }

    /// WebSocket connections open right now.
    pub fn open_ws_connections(&self) -> usize {
        self.open_connections.load(Ordering::Relaxed)
    }
}

/// Accepts connections on `listener` until `shutdown` turns true. `tls` wraps each connection when set.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    context: Arc<HttpContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Usually EMFILE: back off instead of spinning on the error.
                    tracing::warn!(%error, "http accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let context = context.clone();
        match tls.clone() {
            None => {
                tokio::spawn(serve_connection(stream, peer, false, context));
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    match acceptor.accept(stream).await {
                        Ok(tls_stream) => serve_connection(tls_stream, peer, true, context).await,
                        Err(error) => tracing::debug!(%peer, %error, "tls handshake failed"),
                    }
                });
            }
        }
    }
}

async fn serve_connection<S>(stream: S, peer: SocketAddr, secure: bool, context: Arc<HttpContext>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let context = context.clone();
        async move { Ok::<_, Infallible>(route(request, peer, secure, context)) }
    });
    if let Err(error) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await
    {
        tracing::debug!(%peer, %error, "http connection ended with an error");
    }
}

fn route(
    request: Request<Incoming>,
    peer: SocketAddr,
    secure: bool,
    context: Arc<HttpContext>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match request.uri().path() {
        "/ws" => upgrade_websocket(request, peer, secure, context),
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/readyz" => match (context.readiness)() {
            Readiness::Ready => plain(StatusCode::OK, "ready\n"),
            Readiness::NotReady(reason) => plain(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
        },
        path => match context.routes.iter().find(|(route, _)| route == path) {
            Some((_, handler)) => {
                let answer = handler();
                let mut response = Response::new(Full::new(answer.body));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(answer.content_type),
                );
                response
            }
            None => plain(StatusCode::NOT_FOUND, "not found\n"),
        },
    }
}

fn plain(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn header_text(request: &Request<Incoming>, name: header::HeaderName) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

fn upgrade_websocket(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    secure: bool,
    context: Arc<HttpContext>,
) -> Response<Full<Bytes>> {
    let is_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return plain(StatusCode::BAD_REQUEST, "websocket upgrade required\n");
    };
    if !is_upgrade {
        return plain(StatusCode::BAD_REQUEST, "websocket upgrade required\n");
    }
    let offers_sip = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim().eq_ignore_ascii_case(SIP_SUBPROTOCOL));
    if !offers_sip {
        tracing::info!(%peer, reason = "no sip subprotocol", "websocket refused");
        return plain(
            StatusCode::BAD_REQUEST,
            "the sip subprotocol (RFC 7118) is required\n",
        );
    }
    // Counted before the upgrade completes so a burst of handshakes cannot overshoot the limit.
    let open = context.open_connections.fetch_add(1, Ordering::Relaxed);
    if open >= context.max_ws_connections {
        context.open_connections.fetch_sub(1, Ordering::Relaxed);
        tracing::warn!(%peer, open, reason = "too many websocket connections", "websocket refused");
        return plain(StatusCode::SERVICE_UNAVAILABLE, "too many connections\n");
    }

    let info = WsConnectionInfo {
        peer,
        secure,
        origin: header_text(&request, header::ORIGIN),
        user_agent: header_text(&request, header::USER_AGENT),
    };
    let connection = ConnectionId(context.next_connection.fetch_add(1, Ordering::Relaxed));
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                // tungstenite zero-fills its whole read buffer before every read, so the default 128 KiB
                // made each connection ~130 KB of resident memory; SIP messages are a few KiB and a
                // larger frame grows the buffer as it arrives (docs/performance.md).
                let config = WebSocketConfig::default()
                    .read_buffer_size(WS_READ_BUFFER_BYTES)
                    .max_message_size(Some(context.max_message_bytes))
                    .max_frame_size(Some(context.max_message_bytes));
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                        .await;
                run_websocket(socket, connection, info, &context).await;
            }
            Err(error) => tracing::debug!(%peer, %error, "websocket upgrade failed"),
        }
        context.open_connections.fetch_sub(1, Ordering::Relaxed);
    });

    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SIP_SUBPROTOCOL),
    );
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

async fn run_websocket<S>(
    socket: WebSocketStream<S>,
    connection: ConnectionId,
    info: WsConnectionInfo,
    context: &HttpContext,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let peer = info.peer;
    let (outbound_tx, mut outbound_rx) = mpsc::channel::<Bytes>(OUTBOUND_QUEUE);
    let opened = WsEvent::Opened {
        connection,
        info,
        outbound: outbound_tx,
    };
    if context.ws_events.send(opened).await.is_err() {
        return;
    }
    tracing::debug!(%peer, connection = connection.0, "websocket opened");
    let (mut sink, mut stream) = socket.split();
    loop {
        tokio::select! {
            incoming = stream.next() => {
                let bytes = match incoming {
                    Some(Ok(Message::Text(text))) => Bytes::from(text),
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(error)) => {
                        tracing::info!(%peer, connection = connection.0, %error, "websocket read failed");
                        break;
                    }
                };
                if context.ws_events.send(WsEvent::Message { connection, bytes }).await.is_err() {
                    break;
                }
            }
            outgoing = outbound_rx.recv() => {
                let Some(bytes) = outgoing else { break };
                // SIP is text; a frame that is not UTF-8 goes out as binary rather than being dropped.
                let message = match String::from_utf8(bytes.to_vec()) {
                    Ok(text) => Message::text(text),
                    Err(_) => Message::Binary(bytes),
                };
                if let Err(error) = sink.send(message).await {
                    tracing::info!(%peer, connection = connection.0, %error, "websocket write failed");
                    break;
                }
            }
        }
    }
    let _ = sink.close().await;
    let _ = context.ws_events.send(WsEvent::Closed { connection }).await;
    tracing::debug!(%peer, connection = connection.0, "websocket closed");
}
