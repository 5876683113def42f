//! The signaling task: one task owns the sans-IO [`Gateway`] and is its only driver. It feeds it WebSocket
//! frames, SIP datagrams and stream messages, database lookups, media replies and timer ticks, and carries
//! its outputs to sockets, the database, the media engine and the metrics.
//!
//! Database work (widget lookups, call records) runs in spawned tasks so that a slow query never delays
//! another call's signaling; results come back on the completion channel in the order they finish.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::admission::WidgetLimits;
use crate::b2bua::EndCause;
use crate::b2bua::gateway::{
    BrowserConnection, CallRef, CdrEvent, Gateway, GatewayOutput, MediaCommand, MediaReply, ReofferOutcome,
    RouteLookup, TrunkTarget, TrunkTransport, WidgetRoute,
};
use crate::b2bua::trunks::MonitoredTrunk;
use crate::db::{self, CallEnd, CallId, Database, EndedBy, LegSummary, NewCall, Timestamp};
use crate::media::session::{CallMediaStats, LegMediaStats, MediaEvent, Reoffer};
use crate::metrics::Metrics;
use crate::sdp::Codec;
use crate::server::media::MediaEngine;
use crate::sip::digest::Credentials;
use crate::sip::{Flow, Transport};
use crate::transport::WsEvent;
use crate::transport::sip_net::{SipNetEvent, SipTcp, SipUdp, StreamTransport};
use crate::transport::sip_tls::SipTls;

/// Work that finished outside the signaling task.
#[derive(Debug)]
pub enum Completion {
    /// A widget lookup finished.
    Route {
        /// The call.
        call: CallRef,
        /// What was found.
        lookup: RouteLookup,
    },
    /// The media engine answered or reported.
    Media {
        /// The call.
        call: CallRef,
        /// The reply or event.
        reply: MediaReply,
    },
    /// A call's media session closed with these statistics (for its call record).
    MediaClosed {
        /// The call.
        call: CallRef,
        /// Per-leg statistics, if the session existed.
        stats: Option<CallMediaStats>,
    },
    /// The trunks as stored now, for keepalives and registration.
    Trunks(Vec<MonitoredTrunk>),
    /// Start draining: refuse new calls, end the others at `deadline`.
    Drain {
        /// When established calls are hung up.
        deadline: Instant,
    },
}

/// A request for the media engine, answered with [`Completion::Media`].
pub type MediaRequest = (CallRef, MediaCommand);

/// Everything the signaling task talks to.
pub struct SignalingIo {
    /// Browser WebSocket events.
    pub ws_events: mpsc::Receiver<WsEvent>,
    /// PBX-side SIP events.
    pub sip_events: mpsc::Receiver<SipNetEvent>,
    /// Finished lookups, media replies, drain.
    pub completions: mpsc::UnboundedReceiver<Completion>,
    /// Where completions are sent (handed to spawned lookups).
    pub completion_sender: mpsc::UnboundedSender<Completion>,
    /// Media work.
    pub media: mpsc::UnboundedSender<MediaRequest>,
    /// The SIP UDP socket, if UDP is on.
    pub sip_udp: Option<SipUdp>,
    /// SIP TCP connections.
    pub sip_tcp: SipTcp,
    /// SIP TLS connections toward trunks.
    pub sip_tls: SipTls,
    /// The database.
    pub db: Database,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Stops the task.
    pub shutdown: watch::Receiver<bool>,
}

/// Runs the gateway's signaling until shutdown; returns once no call is left after a drain.
pub async fn run(mut gateway: Gateway, mut io: SignalingIo) {
    let mut browsers: HashMap<u64, mpsc::Sender<Bytes>> = HashMap::new();
    let mut cdr = CdrWriter::start(io.db.clone());
    let mut wake: Option<Instant> = None;
    let mut draining = false;
    tokio::spawn(reload_trunks(
        io.db.clone(),
        io.sip_tls.clone(),
        io.completion_sender.clone(),
        io.shutdown.clone(),
    ));
    loop {
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = io.ws_events.recv() => {
                let Some(event) = event else { break };
                let now = Instant::now();
                match event {
                    WsEvent::Opened { connection, info, outbound } => {
                        io.metrics.websocket_connections.fetch_add(1, Ordering::Relaxed);
                        browsers.insert(connection.0, outbound);
                        gateway.handle_ws_opened(connection.0, BrowserConnection {
                            peer: info.peer,
                            secure: info.secure,
                            origin: info.origin,
                            user_agent: info.user_agent,
                        });
                    }
                    WsEvent::Message { connection, bytes } => {
                        let Some(flow) = gateway.browser_flow(connection.0) else { continue };
                        gateway.handle_receive(now, flow, &bytes);
                    }
                    WsEvent::Closed { connection } => {
                        io.metrics.websocket_connections.fetch_sub(1, Ordering::Relaxed);
                        browsers.remove(&connection.0);
                        gateway.handle_ws_closed(now, connection.0);
                    }
                }
            }
            event = io.sip_events.recv() => {
                let Some(event) = event else { break };
                let now = Instant::now();
                match event {
                    SipNetEvent::Datagram { from, bytes } => {
                        let flow = Flow { transport: Transport::Udp, remote: from, connection: None };
                        gateway.handle_receive(now, flow, &bytes);
                    }
                    SipNetEvent::StreamMessage { transport, connection, peer, bytes } => {
                        let transport = stream_transport(transport);
                        let flow = Flow { transport, remote: peer, connection: Some(connection.0) };
                        gateway.handle_receive(now, flow, &bytes);
                    }
                    SipNetEvent::TransportError { transport, peer, reason } => {
                        tracing::info!(%peer, %reason, "sip transport error");
                        // Transactions keyed on the flow without a connection id (outgoing) fail; so do
                        // those on the connection itself.
                        let transport = stream_transport(transport);
                        let flow = Flow { transport, remote: peer, connection: None };
                        gateway.handle_transport_error(now, &flow);
                    }
                }
            }
            completion = io.completions.recv() => {
                let Some(completion) = completion else { break };
                let now = Instant::now();
                match completion {
                    Completion::Route { call, lookup } => gateway.handle_route(now, unix_now(), call, lookup),
                    Completion::Media { call, reply } => gateway.handle_media(now, call, reply),
                    Completion::Trunks(trunks) => gateway.set_trunks(now, trunks),
                    Completion::MediaClosed { call, stats } => cdr.media_closed(call, stats),
                    Completion::Drain { deadline } => {
                        draining = true;
                        gateway.drain(now, deadline);
                    }
                }
            }
            () = sleep => gateway.handle_timeout(Instant::now()),
            _ = io.shutdown.changed() => break,
        }
        wake = None;
        while let Some(output) = gateway.poll_output() {
            match output {
                GatewayOutput::Transmit { flow, bytes } => transmit(&io, &browsers, flow, bytes),
                GatewayOutput::LookupWidget { call, public_id } => {
                    let db = io.db.clone();
                    let tls = io.sip_tls.clone();
                    let completions = io.completion_sender.clone();
                    tokio::spawn(async move {
                        let lookup = lookup_route(&db, &tls, &public_id).await;
                        let _ = completions.send(Completion::Route { call, lookup });
                    });
                }
                GatewayOutput::Media { call, command } => {
                    if command == MediaCommand::Close {
                        cdr.expect_media_stats(call);
                    }
                    let _ = io.media.send((call, command));
                }
                GatewayOutput::Cdr { call, event } => {
                    if let CdrEvent::Ended { cause, .. } = &event {
                        io.metrics.call_ended(*cause);
                        if cdr.has_started(call) {
                            io.metrics.active_calls.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    if matches!(event, CdrEvent::Started { .. }) {
                        io.metrics.active_calls.fetch_add(1, Ordering::Relaxed);
                    }
                    cdr.record(call, event);
                }
                GatewayOutput::Refused { refusal, .. } => io.metrics.refused(&refusal),
                GatewayOutput::Answered { setup, .. } => io.metrics.setup_time.observe(setup),
                GatewayOutput::TrunkStatus { name, up, .. } => io.metrics.set_trunk_up(&name, up),
                GatewayOutput::Timeout(at) => wake = Some(at),
            }
        }
        if draining && gateway.active_calls() == 0 {
            tracing::info!("drain complete: no calls left");
            break;
        }
    }
    cdr.finish().await;
}

fn transmit(io: &SignalingIo, browsers: &HashMap<u64, mpsc::Sender<Bytes>>, flow: Flow, bytes: Vec<u8>) {
    match flow.transport {
        Transport::Ws | Transport::Wss => {
            let sender = flow.connection.and_then(|connection| browsers.get(&connection));
            match sender {
                Some(sender) => {
                    if sender.try_send(Bytes::from(bytes)).is_err() {
                        tracing::info!(remote = %flow.remote, "browser connection stuck or closed: message dropped");
                    }
                }
                None => tracing::debug!(remote = %flow.remote, "no websocket for a message"),
            }
        }
        Transport::Udp => match &io.sip_udp {
            Some(udp) => udp.send(flow.remote, &bytes),
            None => tracing::warn!("sip udp is disabled: message dropped"),
        },
        Transport::Tcp => io.sip_tcp.send(flow.remote, Bytes::from(bytes)),
        Transport::Tls => io.sip_tls.send(flow.remote, Bytes::from(bytes)),
    }
}

fn stream_transport(transport: StreamTransport) -> Transport {
    match transport {
        StreamTransport::Tcp => Transport::Tcp,
        StreamTransport::Tls => Transport::Tls,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Looks a widget up by public id and builds its route: the widget's trunk first, then every other enabled
/// trunk by priority for failover, each with its address resolved.
async fn lookup_route(db: &Database, tls: &SipTls, public_id: &str) -> RouteLookup {
    let Ok(id) = public_id.parse::<db::PublicId>() else {
        return RouteLookup::NotFound;
    };
    // Both queries at once: the INVITE toward the PBX waits for them.
    let widgets = db.widgets();
    let all_trunks = db.trunks();
    let (widget, trunks) = tokio::join!(widgets.by_public_id(&id), all_trunks.list());
    let widget = match widget {
        Ok(widget) => widget,
        Err(db::DbError::PublicIdNotFound(_)) => return RouteLookup::NotFound,
        Err(error) => {
            tracing::warn!(%error, "widget lookup failed");
            return RouteLookup::Failed;
        }
    };
    let trunks = match trunks {
        Ok(trunks) => trunks,
        Err(error) => {
            tracing::warn!(%error, "trunk lookup failed");
            return RouteLookup::Failed;
        }
    };
    let own = widget.trunk.as_ref().map(|trunk| trunk.id);
    let mut ordered: Vec<&db::Trunk> = trunks
        .iter()
        .filter(|trunk| Some(trunk.id) == own && trunk.enabled)
        .collect();
    ordered.extend(
        trunks
            .iter()
            .filter(|trunk| Some(trunk.id) != own && trunk.enabled),
    );
    let mut targets = Vec::with_capacity(ordered.len());
    for trunk in ordered {
        match trunk_target(trunk, tls, Resolution::Cached).await {
            Some(target) => targets.push(target),
            None => tracing::warn!(trunk = %trunk.name, host = %trunk.host, "trunk address does not resolve"),
        }
    }
    RouteLookup::Found(Box::new(WidgetRoute {
        widget_id: widget.id.0,
        name: widget.name.to_string(),
        public_id: widget.public_id.to_string(),
        enabled: widget.enabled && widget.trunk.is_some(),
        origins: widget.origins.iter().map(ToString::to_string).collect(),
        token_secret: widget.secret.as_ref().map(|secret| secret.expose().to_owned()),
        limits: WidgetLimits {
            max_concurrent: widget.max_concurrent,
            max_per_minute: widget.max_per_minute,
        },
        destination: widget.destination.to_string(),
        caller_id: widget.caller_id.as_ref().map(ToString::to_string),
        trunks: targets,
    }))
}

/// How often the trunk list is read again, so that `callgate trunk …` changes reach keepalives and
/// registrations without a restart.
const TRUNK_RELOAD: Duration = Duration::from_secs(30);

async fn reload_trunks(
    db: Database,
    tls: SipTls,
    completions: mpsc::UnboundedSender<Completion>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match db.trunks().list().await {
            Ok(trunks) => {
                let mut monitored = Vec::with_capacity(trunks.len());
                for trunk in trunks.iter().filter(|trunk| trunk.enabled) {
                    if let Some(target) = trunk_target(trunk, &tls, Resolution::Fresh).await {
                        monitored.push(MonitoredTrunk {
                            id: target.id,
                            name: target.name,
                            host: target.host,
                            port: target.port,
                            address: target.address,
                            outbound_proxy: target.outbound_proxy,
                            transport: target.transport,
                            credentials: target.credentials,
                            register: trunk.register,
                            register_expiry: Duration::from_secs(u64::from(trunk.register_expiry)),
                        });
                    }
                }
                if completions.send(Completion::Trunks(monitored)).is_err() {
                    return;
                }
            }
            Err(error) => tracing::warn!(%error, "trunk reload failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(TRUNK_RELOAD) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The trunk as the gateway needs it; a TLS trunk's host is also recorded as the name its certificate must
/// carry.
async fn trunk_target(trunk: &db::Trunk, tls: &SipTls, resolution: Resolution) -> Option<TrunkTarget> {
    let transport = match trunk.transport {
        db::Transport::Udp => TrunkTransport::Udp,
        db::Transport::Tcp => TrunkTransport::Tcp,
        db::Transport::Tls => TrunkTransport::Tls,
    };
    let (connect_host, connect_port) = match &trunk.outbound_proxy {
        Some(proxy) => (&proxy.host, proxy.port.unwrap_or(trunk.transport.default_port())),
        None => (&trunk.host, trunk.port),
    };
    // Only a name is looked up: an IPv6 literal's text form is bracketed, which no resolver takes.
    let (address, server_name) = match connect_host {
        db::Host::Name(name) => (resolve(name, connect_port, resolution).await?, name.clone()),
        db::Host::Ipv4(ip) => (SocketAddr::new((*ip).into(), connect_port), ip.to_string()),
        db::Host::Ipv6(ip) => (SocketAddr::new((*ip).into(), connect_port), ip.to_string()),
    };
    if transport == TrunkTransport::Tls {
        tls.set_server_name(address, &server_name);
    }
    Some(TrunkTarget {
        id: trunk.id.0,
        name: trunk.name.to_string(),
        host: trunk.host.to_string(),
        port: trunk.port,
        address,
        outbound_proxy: trunk.outbound_proxy.as_ref().map(|proxy| format!("sip:{proxy}")),
        transport,
        credentials: trunk.auth.as_ref().map(|auth| Credentials {
            username: auth.username.to_string(),
            password: auth.password.expose().to_owned(),
        }),
        codecs: trunk
            .codecs
            .as_slice()
            .iter()
            .map(|codec| match codec {
                db::Codec::Pcmu => Codec::Pcmu,
                db::Codec::Pcma => Codec::Pcma,
            })
            .collect(),
        up: true,
    })
}

/// Whether a trunk's host name may be answered from the resolution cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolution {
    /// A call's route: the cached address, unless it is older than [`TRUNK_RELOAD`] twice over.
    Cached,
    /// The trunk reload: ask the resolver, and refresh the cache.
    Fresh,
}

/// Trunk host names as last resolved, so that a call's route does not wait for DNS (a `getaddrinfo` per
/// trunk per call, on the path of the INVITE toward the PBX): the trunk reload refreshes them every
/// [`TRUNK_RELOAD`].
static RESOLVED: std::sync::Mutex<Option<ResolvedTrunks>> = std::sync::Mutex::new(None);

/// `(host, port)` → the address it resolved to, and when.
type ResolvedTrunks = HashMap<(String, u16), (SocketAddr, Instant)>;

async fn resolve(host: &str, port: u16, resolution: Resolution) -> Option<SocketAddr> {
    if let Ok(ip) = host.parse() {
        return Some(SocketAddr::new(ip, port));
    }
    let key = (host.to_owned(), port);
    if resolution == Resolution::Cached {
        // A poisoned lock only means another task panicked holding it: the map is still usable.
        let cache = RESOLVED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let cached = cache.as_ref().and_then(|cache| cache.get(&key));
        if let Some(&(address, at)) = cached
            && at.elapsed() < 2 * TRUNK_RELOAD
        {
            return Some(address);
        }
    }
    let address = tokio::net::lookup_host((host, port)).await.ok()?.next()?;
    RESOLVED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(key, (address, Instant::now()));
    Some(address)
}

/// Writes call records in order per call, without holding up signaling.
struct CdrWriter {
    sender: mpsc::UnboundedSender<(CallRef, CdrEvent, Timestamp, Option<CallMediaStats>)>,
    started: std::collections::HashSet<CallRef>,
    /// Calls whose media is closing: their end is written once the statistics are in.
    awaiting_stats: HashMap<CallRef, Option<(CdrEvent, Timestamp)>>,
    task: tokio::task::JoinHandle<()>,
}

impl CdrWriter {
    fn start(db: Database) -> Self {
        let (sender, mut receiver) =
            mpsc::unbounded_channel::<(CallRef, CdrEvent, Timestamp, Option<CallMediaStats>)>();
        let task = tokio::spawn(async move {
            let mut rows: HashMap<CallRef, CallId> = HashMap::new();
            while let Some((call, event, at, stats)) = receiver.recv().await {
                if let Err(error) = write_cdr(&db, &mut rows, call, event, at, stats).await {
                    tracing::warn!(call, %error, "call record not written");
                }
            }
        });
        CdrWriter {
            sender,
            started: std::collections::HashSet::new(),
            awaiting_stats: HashMap::new(),
            task,
        }
    }

    fn has_started(&self, call: CallRef) -> bool {
        self.started.contains(&call)
    }

    fn record(&mut self, call: CallRef, event: CdrEvent) {
        match &event {
            CdrEvent::Started { .. } => {
                self.started.insert(call);
            }
            CdrEvent::Ended { .. } => {
                self.started.remove(&call);
            }
            CdrEvent::Answered => {}
        }
        let at = Timestamp::now();
        if matches!(event, CdrEvent::Ended { .. })
            && let Some(slot) = self.awaiting_stats.get_mut(&call)
        {
            *slot = Some((event, at));
            return;
        }
        let _ = self.sender.send((call, event, at, None));
    }

    /// The media of `call` is closing: hold its end record until [`CdrWriter::media_closed`].
    fn expect_media_stats(&mut self, call: CallRef) {
        self.awaiting_stats.insert(call, None);
    }

    fn media_closed(&mut self, call: CallRef, stats: Option<CallMediaStats>) {
        if let Some(Some((event, at))) = self.awaiting_stats.remove(&call) {
            let _ = self.sender.send((call, event, at, stats));
        }
    }

    async fn finish(self) {
        // Ends still waiting for statistics are written without them rather than lost.
        for (call, pending) in self.awaiting_stats {
            if let Some((event, at)) = pending {
                let _ = self.sender.send((call, event, at, None));
            }
        }
        drop(self.sender);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

async fn write_cdr(
    db: &Database,
    rows: &mut HashMap<CallRef, CallId>,
    call: CallRef,
    event: CdrEvent,
    at: Timestamp,
    stats: Option<CallMediaStats>,
) -> Result<(), String> {
    match event {
        CdrEvent::Started {
            widget,
            dialled,
            trunk,
            source,
            user_agent,
            destination,
        } => {
            let invalid = |error: db::InvalidValue| error.to_string();
            let new_call = NewCall {
                widget: widget
                    .map(|(id, name)| Ok::<_, String>((db::WidgetId(id), name.parse().map_err(invalid)?)))
                    .transpose()?,
                dialled,
                trunk: trunk.and_then(|(id, name)| Some((db::TrunkId(id), name.parse().ok()?))),
                source_ip: source,
                user_agent,
                destination: destination
                    .map(|destination| destination.parse().map_err(invalid))
                    .transpose()?,
                started_at: at,
            };
            let id = db
                .calls()
                .start(new_call)
                .await
                .map_err(|error| error.to_string())?;
            rows.insert(call, id);
        }
        CdrEvent::Answered => {
            if let Some(&id) = rows.get(&call) {
                db.calls()
                    .answered(id, at)
                    .await
                    .map_err(|error| error.to_string())?;
            }
        }
        CdrEvent::Ended {
            cause,
            refusal,
            trunk,
            browser_status,
            pbx_status,
        } => {
            let Some(id) = rows.remove(&call) else {
                return Ok(());
            };
            let ended_by = match cause.side() {
                "browser" => EndedBy::Browser,
                "pbx" => EndedBy::Pbx,
                _ => EndedBy::Gateway,
            };
            let end = CallEnd {
                ended_at: at,
                // A refusal names the check that refused: more use to an operator than `refused`.
                end_cause: refusal.unwrap_or(cause.as_str()).to_owned(),
                ended_by,
                trunk: trunk.and_then(|(id, name)| Some((db::TrunkId(id), name.parse().ok()?))),
                browser: leg_summary(browser_status, stats.as_ref().map(|stats| &stats.browser)),
                pbx: leg_summary(pbx_status, stats.as_ref().map(|stats| &stats.pbx)),
            };
            db.calls()
                .finish(id, end)
                .await
                .map_err(|error| error.to_string())?;
        }
    }
    Ok(())
}

/// Carries the gateway's media commands to the media engine, one task per command so that a slow worker
/// never delays another call, and the engine's replies and events back as completions.
pub async fn serve_media(
    engine: MediaEngine,
    mut requests: mpsc::UnboundedReceiver<MediaRequest>,
    mut events: mpsc::Receiver<(u64, MediaEvent)>,
    completions: mpsc::UnboundedSender<Completion>,
) {
    loop {
        tokio::select! {
            request = requests.recv() => {
                let Some((call, command)) = request else { return };
                let engine = engine.clone();
                let completions = completions.clone();
                tokio::spawn(async move {
                    let reply = match command {
                        MediaCommand::Prepare { browser_offer, codecs } => {
                            MediaReply::Prepared(logged(call, engine.prepare(call, &browser_offer, &codecs).await))
                        }
                        MediaCommand::ApplyPbxAnswer { sdp, early } => {
                            MediaReply::Answered(logged(call, engine.apply_pbx_answer(call, &sdp, early).await))
                        }
                        MediaCommand::Reoffer { from, sdp } => MediaReply::Reoffered(
                            logged(call, engine.reoffer(call, from, &sdp).await).map(|outcome| match outcome {
                                Reoffer::Forward(sdp) => ReofferOutcome::Forward(sdp),
                                Reoffer::Answer(sdp) => ReofferOutcome::Answer(sdp),
                            }),
                        ),
                        MediaCommand::Reanswer { from, sdp } => {
                            MediaReply::Reanswered(logged(call, engine.reanswer(call, from, &sdp).await))
                        }
                        MediaCommand::Dtmf { digit, duration_ms } => {
                            logged(call, engine.send_dtmf(call, digit, duration_ms).await);
                            return;
                        }
                        MediaCommand::Close => {
                            let stats = engine.close(call).await;
                            let _ = completions.send(Completion::MediaClosed { call, stats });
                            return;
                        }
                    };
                    let _ = completions.send(Completion::Media { call, reply });
                });
            }
            event = events.recv() => {
                let Some((call, event)) = event else { return };
                let cause = match event {
                    MediaEvent::ConsentLost => EndCause::ConsentLost,
                    MediaEvent::Timeout => EndCause::MediaTimeout,
                    _ => continue,
                };
                let _ = completions.send(Completion::Media { call, reply: MediaReply::Ended(cause) });
            }
        }
    }
}

fn logged<T, E: std::fmt::Display>(call: CallRef, result: Result<T, E>) -> Option<T> {
    result
        .map_err(|error| tracing::info!(call, %error, "media refused"))
        .ok()
}

fn leg_summary(final_status: Option<u16>, stats: Option<&LegMediaStats>) -> LegSummary {
    LegSummary {
        final_status,
        codec: stats.and_then(|stats| stats.codec).map(str::to_owned),
        packets_sent: stats.map_or(0, |stats| stats.packets_sent),
        packets_received: stats.map_or(0, |stats| stats.packets_received),
        packets_lost: stats.map_or(0, |stats| stats.packets_lost),
        bytes_sent: stats.map_or(0, |stats| stats.bytes_sent),
        bytes_received: stats.map_or(0, |stats| stats.bytes_received),
        jitter_us: stats.and_then(|stats| stats.jitter_ms).map(micros),
        rtt_us: stats.and_then(|stats| stats.rtt_ms).map(micros),
    }
}

/// Milliseconds (as the media statistics give them) in whole microseconds; negative or NaN is 0.
fn micros(millis: f64) -> u64 {
    (millis * 1000.0).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn routes_use_the_resolved_address_and_the_reload_asks_again() {
        let cached: SocketAddr = "192.0.2.44:5080".parse().unwrap();
        RESOLVED.lock().unwrap().get_or_insert_with(HashMap::new).insert(
            ("pbx.callgate-test.invalid".to_owned(), 5080),
            (cached, Instant::now()),
        );
        let route = resolve("pbx.callgate-test.invalid", 5080, Resolution::Cached).await;
        assert_eq!(route, Some(cached), "a call's route does not wait for DNS");
        // `.invalid` never resolves (RFC 6761), so the reload's answer comes from the resolver.
        assert_eq!(
            resolve("pbx.callgate-test.invalid", 5080, Resolution::Fresh).await,
            None
        );
        assert_eq!(
            resolve("192.0.2.9", 5060, Resolution::Cached).await,
            Some("192.0.2.9:5060".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn ip_literal_trunks_need_no_lookup_and_ipv6_ones_are_routable() {
        let (_stop_tx, stop) = watch::channel(false);
        let (events, _events_rx) = mpsc::channel(8);
        let roots = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let tls = SipTls::new(roots, events, 65_536, stop);
        let trunk = |host: &str, proxy: Option<&str>| db::Trunk {
            id: db::TrunkId(1),
            name: "pbx".parse().unwrap(),
            host: host.parse().unwrap(),
            port: 5080,
            transport: db::Transport::Udp,
            outbound_proxy: proxy.map(|proxy| proxy.parse().unwrap()),
            auth: None,
            register: false,
            register_expiry: 3600,
            codecs: db::CodecList::default(),
            priority: 0,
            enabled: true,
            created_at: Timestamp::from_unix_millis(0),
            updated_at: Timestamp::from_unix_millis(0),
        };
        let target = trunk_target(&trunk("2001:db8::7", None), &tls, Resolution::Fresh)
            .await
            .expect("an IPv6 trunk is routable");
        assert_eq!(target.address, "[2001:db8::7]:5080".parse().unwrap());
        let target = trunk_target(
            &trunk("pbx.example", Some("[2001:db8::8]")),
            &tls,
            Resolution::Fresh,
        )
        .await
        .expect("a trunk behind an IPv6 proxy is routable");
        assert_eq!(target.address, "[2001:db8::8]:5060".parse().unwrap());
        assert_eq!(target.outbound_proxy.as_deref(), Some("sip:[2001:db8::8]"));
        let target = trunk_target(&trunk("192.0.2.10", None), &tls, Resolution::Fresh)
            .await
            .expect("an IPv4 trunk is routable");
        assert_eq!(target.address, "192.0.2.10:5080".parse().unwrap());
    }
}
