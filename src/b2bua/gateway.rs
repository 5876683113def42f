//! The signaling core of the gateway, sans-IO: every SIP message from browsers and trunks goes in, and
//! what to send, what to look up, what the media layer must do and what to record comes out.
//!
//! It owns the transaction layer, the dialogs of both legs of every call, the admission state and one
//! [`Call`] state machine per call, and translates between them: SIP messages become [`CallInput`]s, and
//! [`CallAction`]s become SIP messages or [`GatewayOutput`]s. Work that needs I/O leaves as an output and
//! comes back through [`Gateway::handle_route`] or [`Gateway::handle_media`].

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rsip::{Method, Request, Response};

use crate::admission::{self, Admission, GatewayLimits, Permit, Refusal, WidgetLimits};
use crate::b2bua::call::{
    Call, CallAction, CallInput, EndCause, Leg, Offer, Route, SessionTimer, TrunkChoice,
};
use crate::b2bua::trunks::{
    Health, MonitorOutput, MonitorSettings, MonitoredTrunk, RequestFailure, TrunkMonitor,
};
use crate::sdp::Codec;
use crate::sip::dialog::{self, Dialog};
use crate::sip::digest::{Credentials, DigestClient};
use crate::sip::message::{self, MessageHeaders, NameAddr, Via};
use crate::sip::transaction::{
    Output, Role, TransactionConfig, TransactionEvent, TransactionKey, Transactions,
};
use crate::sip::{Flow, Transport};

/// A call's handle, unique for the life of the process.
pub type CallRef = u64;

/// How long a finished call is remembered, so that retransmitted BYEs and late 2xx are answered properly.
const LINGER: Duration = Duration::from_secs(32);
/// How long the PBX may ring before the call is given up with 480 (RFC 3261 leaves Timer C to proxies).
const RING_TIMEOUT: Duration = Duration::from_secs(120);
/// Methods we accept, for Allow headers.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE";

/// What the gateway is told at start-up.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// `User-Agent` and `Server` header value.
    pub user_agent: String,
    /// Our SIP UDP address as the PBX must reach it (Via, Contact), if UDP is on.
    pub sip_udp: Option<SocketAddr>,
    /// Our SIP TCP address as the PBX must reach it, if TCP is on.
    pub sip_tcp: Option<SocketAddr>,
    /// Session-Expires we ask the PBX for (RFC 4028).
    pub session_expires: Duration,
    /// The smallest Session-Expires we accept.
    pub min_se: Duration,
    /// Gateway-wide and per-source call limits.
    pub limits: GatewayLimits,
    /// Transaction timers.
    pub transactions: TransactionConfig,
    /// How often trunks get an OPTIONS keepalive (zero: never).
    pub options_interval: Duration,
    /// How long a keepalive may go unanswered before it counts as failed.
    pub options_timeout: Duration,
}

impl GatewaySettings {
    /// The transport toward a trunk and our address on it, `None` when no listener serves it. TLS is a
    /// client transport: it advertises our TCP (else UDP) address, and the PBX answers and sends its
    /// in-dialog requests on the connection we opened.
    pub fn local_for(&self, transport: TrunkTransport) -> Option<(Transport, SocketAddr)> {
        match transport {
            TrunkTransport::Udp => Some((Transport::Udp, self.sip_udp?)),
            TrunkTransport::Tcp => Some((Transport::Tcp, self.sip_tcp?)),
            TrunkTransport::Tls => Some((Transport::Tls, self.sip_tcp.or(self.sip_udp)?)),
        }
    }

    /// A Via with a new branch for a request we send on `flow`.
    fn via_for(&self, flow: &Flow) -> Via {
        match flow.transport {
            Transport::Ws | Transport::Wss => Via::outgoing(flow.transport, BROWSER_SIDE_HOST, None),
            Transport::Tcp | Transport::Tls => {
                let local = self.sip_tcp.or(self.sip_udp);
                Via::outgoing(
                    flow.transport,
                    &local.map_or_else(String::new, |a| a.ip().to_string()),
                    local.map(|a| a.port()),
                )
            }
            Transport::Udp => {
                let local = self.sip_udp.or(self.sip_tcp);
                Via::outgoing(
                    flow.transport,
                    &local.map_or_else(String::new, |a| a.ip().to_string()),
                    local.map(|a| a.port()),
                )
            }
        }
    }
}

/// What the browser's WebSocket handshake told us.
#[derive(Debug, Clone)]
pub struct BrowserConnection {
    /// The browser's address.
    pub peer: SocketAddr,
    /// Whether it came over TLS.
    pub secure: bool,
    /// The page that opened the socket.
    pub origin: Option<String>,
    /// For the CDR.
    pub user_agent: Option<String>,
}

/// Transports toward a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrunkTransport {
    /// SIP over UDP.
    Udp,
    /// SIP over TCP.
    Tcp,
    /// SIP over TLS.
    Tls,
}

/// The URI parameter naming a trunk's transport in Request-URIs and our Contact (none for UDP).
pub fn transport_param(transport: TrunkTransport) -> &'static str {
    match transport {
        TrunkTransport::Udp => "",
        TrunkTransport::Tcp => ";transport=tcp",
        TrunkTransport::Tls => ";transport=tls",
    }
}

/// A trunk as the call needs it, with its address already resolved.
#[derive(Debug, Clone)]
pub struct TrunkTarget {
    /// Database id.
    pub id: i64,
    /// Name, for logs and the CDR.
    pub name: String,
    /// The host as configured, used in the Request-URI and To.
    pub host: String,
    /// The configured port.
    pub port: u16,
    /// Where to send: the outbound proxy if any, else the trunk.
    pub address: SocketAddr,
    /// The outbound proxy as a URI for the Route header, if any.
    pub outbound_proxy: Option<String>,
    /// Transport.
    pub transport: TrunkTransport,
    /// Digest credentials for 401/407 challenges.
    pub credentials: Option<Credentials>,
    /// Codec preference toward this trunk.
    pub codecs: Vec<Codec>,
    /// False when OPTIONS keepalives say the trunk is down.
    pub up: bool,
}

/// A widget and its trunks, looked up by the server for a browser's INVITE.
#[derive(Debug, Clone)]
pub struct WidgetRoute {
    /// Database id.
    pub widget_id: i64,
    /// Name.
    pub name: String,
    /// The public id the browser dialled.
    pub public_id: String,
    /// Whether calls are taken.
    pub enabled: bool,
    /// Allowed `Origin`s.
    pub origins: Vec<String>,
    /// The HMAC secret when tokens are required.
    pub token_secret: Option<String>,
    /// Per-widget limits.
    pub limits: WidgetLimits,
    /// What is dialled.
    pub destination: String,
    /// The caller id presented to the PBX.
    pub caller_id: Option<String>,
    /// The widget's trunk first, then failover trunks by priority.
    pub trunks: Vec<TrunkTarget>,
}

/// The answer to [`GatewayOutput::LookupWidget`].
#[derive(Debug, Clone)]
pub enum RouteLookup {
    /// The widget exists.
    Found(Box<WidgetRoute>),
    /// No widget has that public id.
    NotFound,
    /// The database failed; the call gets 503.
    Failed,
}

/// Which side ends a re-offer exchange and how the media layer answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReofferOutcome {
    /// Send this offer to the other leg.
    Forward(String),
    /// Answer the offering leg with this SDP.
    Answer(String),
}

/// Work for the media layer of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaCommand {
    /// Create the session from the browser's offer; reply [`MediaReply::Prepared`].
    Prepare {
        /// The browser's WebRTC offer.
        browser_offer: String,
        /// Codec preference toward the PBX.
        codecs: Vec<Codec>,
    },
    /// Apply the PBX's answer; reply [`MediaReply::Answered`].
    ApplyPbxAnswer {
        /// The PBX's SDP.
        sdp: String,
        /// From a 183 (the dialog is early).
        early: bool,
    },
    /// A re-offer from one leg; reply [`MediaReply::Reoffered`].
    Reoffer {
        /// The leg it came from.
        from: Leg,
        /// The SDP.
        sdp: String,
    },
    /// The other leg's answer to a forwarded re-offer; reply [`MediaReply::Reanswered`].
    Reanswer {
        /// The leg that answered.
        from: Leg,
        /// The SDP.
        sdp: String,
    },
    /// Send a DTMF digit toward the PBX as RFC 4733.
    Dtmf {
        /// The digit.
        digit: char,
        /// Its duration.
        duration_ms: u32,
    },
    /// Tear the session down; no reply.
    Close,
}

/// The media layer's answers and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaReply {
    /// To [`MediaCommand::Prepare`]: the offer for the PBX, or `None` when the browser's offer is unusable.
    Prepared(Option<String>),
    /// To [`MediaCommand::ApplyPbxAnswer`]: the WebRTC answer, or `None` when the PBX's SDP is unusable.
    Answered(Option<String>),
    /// To [`MediaCommand::Reoffer`].
    Reoffered(Option<ReofferOutcome>),
    /// To [`MediaCommand::Reanswer`]: the answer for the leg that started the exchange.
    Reanswered(Option<String>),
    /// The media layer ended the call (consent lost, RTP timeout).
    Ended(EndCause),
}

/// What the call record needs at each step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CdrEvent {
    /// A browser's INVITE arrived: once the widget lookup answered, or at once when the INVITE is refused
    /// before any lookup (every attempt gets a record).
    Started {
        /// The widget's id and name; `None` when no widget has the dialled public id.
        widget: Option<(i64, String)>,
        /// The public id in the Request-URI, if it carried one.
        dialled: Option<String>,
        /// The first trunk tried.
        trunk: Option<(i64, String)>,
        /// The browser's address.
        source: IpAddr,
        /// The browser's user agent.
        user_agent: Option<String>,
        /// What is called; `None` without a widget.
        destination: Option<String>,
    },
    /// The PBX answered.
    Answered,
    /// The call is over.
    Ended {
        /// Why.
        cause: EndCause,
        /// For a refused call, which check refused it ([`Refusal::reason`]): the record's end cause then.
        refusal: Option<&'static str>,
        /// The trunk that carried the call last.
        trunk: Option<(i64, String)>,
        /// Final status toward the browser.
        browser_status: Option<u16>,
        /// Final status from the PBX.
        pbx_status: Option<u16>,
    },
}

/// One step of work for the driver of the gateway.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayOutput {
    /// Send a SIP message.
    Transmit {
        /// Where.
        flow: Flow,
        /// The message.
        bytes: Vec<u8>,
    },
    /// Look the widget up (and resolve its trunks); answer with [`Gateway::handle_route`].
    LookupWidget {
        /// The call.
        call: CallRef,
        /// The public id the browser dialled.
        public_id: String,
    },
    /// Media work for a call; replies come back through [`Gateway::handle_media`].
    Media {
        /// The call.
        call: CallRef,
        /// What to do.
        command: MediaCommand,
    },
    /// Record a step of a call.
    Cdr {
        /// The call.
        call: CallRef,
        /// What happened.
        event: CdrEvent,
    },
    /// A call was refused before routing (metrics and logs).
    Refused {
        /// The call.
        call: CallRef,
        /// Why.
        refusal: Refusal,
    },
    /// The browser got its 2xx: `setup` is the time since its INVITE.
    Answered {
        /// The call.
        call: CallRef,
        /// INVITE → 200 OK.
        setup: Duration,
    },
    /// Call [`Gateway::handle_timeout`] at this instant.
    /// A trunk's keepalives say it went up or down.
    TrunkStatus {
        /// The trunk's database id.
        trunk_id: i64,
        /// Its name.
        name: String,
        /// Whether it answers.
        up: bool,
    },
    /// Call [`Gateway::handle_timeout`] at this instant.
    Timeout(Instant),
}

/// What a transaction is for, so its events reach the right place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// The browser's initial INVITE (server).
    BrowserInvite,
    /// A re-INVITE or UPDATE from the browser (server).
    BrowserOffer,
    /// Our re-INVITE toward the browser (client).
    BrowserReinvite,
    /// Our BYE toward the browser (client).
    BrowserBye,
    /// Our INVITE toward the PBX (client).
    PbxInvite,
    /// Our CANCEL toward the PBX (client).
    PbxCancel,
    /// Our re-INVITE toward the PBX carrying a forwarded offer (client).
    PbxReinvite,
    /// Our session-refresh re-INVITE toward the PBX (client).
    PbxRefresh,
    /// Our BYE toward the PBX (client).
    PbxBye,
    /// A re-INVITE or UPDATE from the PBX (server).
    PbxOffer,
    /// Any other in-dialog request from the PBX (server).
    PbxOther,
}

struct BrowserLeg {
    connection: u64,
    flow: Flow,
    invite: Request,
    invite_key: TransactionKey,
    local_tag: String,
    contact: NameAddr,
    dialog: Option<Dialog>,
    /// A re-INVITE or UPDATE from the browser waiting for our answer.
    pending_offer: Option<(TransactionKey, Request)>,
}

struct PbxLeg {
    trunk: Option<TrunkTarget>,
    flow: Option<Flow>,
    /// The INVITE last sent (for CANCEL, ACK, and a retry with credentials).
    invite: Option<Request>,
    invite_key: Option<TransactionKey>,
    digest: Option<DigestClient>,
    dialog: Option<Dialog>,
    answered: bool,
    provisional_seen: bool,
    /// A re-INVITE or UPDATE from the PBX waiting for our answer.
    pending_offer: Option<(TransactionKey, Request)>,
    /// The SDP we last offered the PBX: session refreshes resend it unchanged.
    last_offer: Option<String>,
    ring_deadline: Option<Instant>,
}

struct CallEntry {
    machine: Call,
    browser: BrowserLeg,
    pbx: PbxLeg,
    route: Option<WidgetRoute>,
    permit: Option<Permit>,
    source: BrowserConnection,
    token: Option<String>,
    public_id: String,
    started: Instant,
    /// Why the call was refused, for its record.
    refusal: Option<&'static str>,
    /// Set when the call finished: it is forgotten [`LINGER`] later.
    forget_at: Option<Instant>,
}

/// The signaling core: see the module docs.
pub struct Gateway {
    settings: GatewaySettings,
    transactions: Transactions,
    transactions_timeout: Option<Instant>,
    admission: Admission,
    connections: HashMap<u64, BrowserConnection>,
    calls: HashMap<CallRef, CallEntry>,
    browser_calls: HashMap<(u64, String), CallRef>,
    pbx_calls: HashMap<String, CallRef>,
    owners: HashMap<TransactionKey, (CallRef, Purpose)>,
    /// Calls whose state machine has actions waiting.
    dirty: VecDeque<CallRef>,
    outputs: VecDeque<GatewayOutput>,
    next_call: CallRef,
    drain_deadline: Option<Instant>,
    last_sweep: Option<Instant>,
    monitor: TrunkMonitor,
    /// The monitor's requests in flight, by their client transaction.
    monitor_requests: HashMap<TransactionKey, (i64, Request)>,
}

impl Gateway {
    /// A gateway with no connections and no calls.
    pub fn new(settings: GatewaySettings) -> Self {
        Gateway {
            monitor: TrunkMonitor::new(MonitorSettings {
                probe_timeout: settings.options_timeout,
                ..MonitorSettings::new(
                    settings.user_agent.clone(),
                    settings.sip_udp,
                    settings.sip_tcp,
                    settings.options_interval,
                )
            }),
            monitor_requests: HashMap::new(),
            transactions: Transactions::new(settings.transactions),
            admission: Admission::new(settings.limits),
            settings,
            transactions_timeout: None,
            connections: HashMap::new(),
            calls: HashMap::new(),
            browser_calls: HashMap::new(),
            pbx_calls: HashMap::new(),
            owners: HashMap::new(),
            dirty: VecDeque::new(),
            outputs: VecDeque::new(),
            next_call: 1,
            drain_deadline: None,
            last_sweep: None,
        }
    }

    /// Calls not yet finished.
    pub fn active_calls(&self) -> usize {
        self.calls
            .values()
            .filter(|entry| !entry.machine.is_ended())
            .count()
    }

    /// The next output. [`GatewayOutput::Timeout`] comes last, once per drain.
    pub fn poll_output(&mut self) -> Option<GatewayOutput> {
        if let Some(output) = self.outputs.pop_front() {
            return Some(output);
        }
        None
    }

    /// When [`Gateway::handle_timeout`] must run next.
    pub fn next_timeout(&self) -> Option<Instant> {
        let calls = self.calls.values().flat_map(|entry| {
            [
                entry.machine.next_timeout(),
                entry.pbx.ring_deadline,
                entry.forget_at,
            ]
            .into_iter()
            .flatten()
        });
        calls
            .chain(self.transactions_timeout)
            .chain(self.monitor.next_timeout())
            .min()
    }

    /// The flow of a browser's WebSocket, while it is open.
    pub fn browser_flow(&self, connection: u64) -> Option<Flow> {
        let info = self.connections.get(&connection)?;
        let transport = if info.secure {
            Transport::Wss
        } else {
            Transport::Ws
        };
        Some(Flow {
            transport,
            remote: info.peer,
            connection: Some(connection),
        })
    }

    /// The trunks to keep alive and register (at start-up and whenever the server reloads them).
    pub fn set_trunks(&mut self, now: Instant, trunks: Vec<MonitoredTrunk>) {
        self.monitor.set_trunks(now, trunks);
        self.pump(now);
    }

    /// A browser's WebSocket is open.
    pub fn handle_ws_opened(&mut self, connection: u64, info: BrowserConnection) {
        self.connections.insert(connection, info);
    }

    /// A browser's WebSocket closed: its calls end (BYE to the PBX).
    pub fn handle_ws_closed(&mut self, now: Instant, connection: u64) {
        self.connections.remove(&connection);
        let calls: Vec<CallRef> = self
            .calls
            .iter()
            .filter(|(_, entry)| entry.browser.connection == connection && !entry.machine.is_ended())
            .map(|(&call, _)| call)
            .collect();
        for call in calls {
            self.feed(now, call, CallInput::BrowserGone);
        }
        let flows: Vec<Flow> = self
            .calls
            .values()
            .filter(|entry| entry.browser.connection == connection)
            .map(|entry| entry.browser.flow.clone())
            .collect();
        for flow in flows {
            self.transactions.handle_transport_error(&flow);
        }
        self.pump(now);
    }

    /// Bytes received on a flow (browser WebSocket frames, PBX UDP datagrams or TCP messages).
    pub fn handle_receive(&mut self, now: Instant, flow: Flow, bytes: &[u8]) {
        // RFC 5626 keepalive: a double CRLF is answered with a single one, on the same flow.
        if bytes.iter().all(|&byte| byte == b'\r' || byte == b'\n') {
            if bytes.len() >= 4 {
                self.outputs.push_back(GatewayOutput::Transmit {
                    flow,
                    bytes: b"\r\n".to_vec(),
                });
            }
            return;
        }
        self.transactions.handle_receive(now, flow, bytes);
        self.pump(now);
    }

    /// Sending on a flow failed (TCP connect refused, connection reset).
    pub fn handle_transport_error(&mut self, now: Instant, flow: &Flow) {
        self.transactions.handle_transport_error(flow);
        self.pump(now);
    }

    /// The answer to [`GatewayOutput::LookupWidget`]; `unix_now` checks token expiry.
    pub fn handle_route(&mut self, now: Instant, unix_now: u64, call: CallRef, lookup: RouteLookup) {
        let Some(entry) = self.calls.get_mut(&call) else {
            return;
        };
        let route = match lookup {
            RouteLookup::Found(mut route) => {
                // Keepalives know better than the database whether a trunk answers; Unknown counts as up.
                for trunk in &mut route.trunks {
                    trunk.up &= self.monitor.health(trunk.id) != Some(Health::Down);
                }
                *route
            }
            RouteLookup::NotFound => return self.refuse_unrouted(now, call, Refusal::UnknownWidget),
            RouteLookup::Failed => {
                let refusal = Refusal::GatewayFull {
                    retry_after: Duration::from_secs(5),
                };
                return self.refuse_unrouted(now, call, refusal);
            }
        };
        let first_trunk = route
            .trunks
            .iter()
            .find(|trunk| trunk.up)
            .map(|trunk| (trunk.id, trunk.name.clone()));
        self.outputs.push_back(GatewayOutput::Cdr {
            call,
            event: CdrEvent::Started {
                widget: Some((route.widget_id, route.name.clone())),
                dialled: Some(route.public_id.clone()),
                trunk: first_trunk,
                source: entry.source.peer.ip(),
                user_agent: entry.source.user_agent.clone(),
                destination: Some(route.destination.clone()),
            },
        });
        if !route.enabled {
            return self.refuse(now, call, Refusal::WidgetDisabled);
        }
        if !admission::origin_allowed(entry.source.origin.as_deref(), &route.origins) {
            let origin = entry.source.origin.clone();
            return self.refuse(now, call, Refusal::OriginNotAllowed { origin });
        }
        if let Some(secret) = &route.token_secret
            && let Err(error) =
                admission::verify_token(entry.token.as_deref(), &route.public_id, secret, unix_now)
        {
            return self.refuse(now, call, Refusal::Token(error));
        }
        let source = entry.source.peer.ip();
        let permit = match self.admission.admit(now, &route.public_id, route.limits, source) {
            Ok(permit) => permit,
            Err(refusal) => return self.refuse(now, call, refusal),
        };
        // Trunks that keepalives found down are skipped; if that leaves none the call fails at once.
        let trunks: Vec<TrunkChoice> = route
            .trunks
            .iter()
            .enumerate()
            .filter(|(_, trunk)| trunk.up)
            .map(|(index, trunk)| TrunkChoice {
                trunk_id: index as i64,
                name: trunk.name.clone(),
            })
            .collect();
        let machine_route = Route {
            widget_id: route.widget_id,
            trunks,
            destination: route.destination.clone(),
            caller_id: route.caller_id.clone(),
        };
        entry.permit = Some(permit);
        entry.route = Some(route);
        self.feed(now, call, CallInput::Routed(machine_route));
        self.pump(now);
    }

    /// A media reply or event for `call`.
    pub fn handle_media(&mut self, now: Instant, call: CallRef, reply: MediaReply) {
        let input = match reply {
            MediaReply::Prepared(Some(pbx_offer)) => CallInput::MediaPrepared { pbx_offer },
            MediaReply::Answered(Some(browser_answer)) => CallInput::MediaAnswered { browser_answer },
            MediaReply::Reoffered(Some(ReofferOutcome::Forward(sdp))) => CallInput::MediaReoffer { sdp },
            MediaReply::Reoffered(Some(ReofferOutcome::Answer(sdp))) | MediaReply::Reanswered(Some(sdp)) => {
                CallInput::MediaReanswered { sdp }
            }
            MediaReply::Prepared(None)
            | MediaReply::Answered(None)
            | MediaReply::Reoffered(None)
            | MediaReply::Reanswered(None) => CallInput::MediaRejected,
            MediaReply::Ended(cause) => CallInput::MediaEnded(cause),
        };
        self.feed(now, call, input);
        self.pump(now);
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.transactions_timeout.is_some_and(|at| at <= now) {
            self.transactions.handle_timeout(now);
        }
        if self.monitor.next_timeout().is_some_and(|at| at <= now) {
            self.monitor.handle_timeout(now);
        }
        let mut due = Vec::new();
        let mut ring_expired = Vec::new();
        let mut forget = Vec::new();
        for (&call, entry) in &self.calls {
            if entry.forget_at.is_some_and(|at| at <= now) {
                forget.push(call);
            } else if entry.machine.next_timeout().is_some_and(|at| at <= now) {
                due.push(call);
            }
            if entry.pbx.ring_deadline.is_some_and(|at| at <= now) {
                ring_expired.push(call);
            }
        }
        for call in forget {
            self.forget(call);
        }
        for call in due {
            if let Some(entry) = self.calls.get_mut(&call) {
                entry.machine.handle_timeout(now);
                self.dirty.push_back(call);
            }
        }
        for call in ring_expired {
            self.ring_timeout(now, call);
        }
        if self
            .last_sweep
            .is_none_or(|last| now.saturating_duration_since(last) >= Duration::from_secs(60))
        {
            self.admission.sweep(now);
            self.last_sweep = Some(now);
        }
        self.pump(now);
    }

    /// Graceful shutdown: new calls get 503, established calls end at `deadline`.
    pub fn drain(&mut self, now: Instant, deadline: Instant) {
        self.drain_deadline = Some(deadline);
        self.admission.start_draining();
        let calls: Vec<CallRef> = self.calls.keys().copied().collect();
        for call in calls {
            self.feed(now, call, CallInput::Drain { deadline });
        }
        self.pump(now);
    }

    fn feed(&mut self, now: Instant, call: CallRef, input: CallInput) {
        if let Some(entry) = self.calls.get_mut(&call) {
            entry.machine.handle_input(now, input);
            self.dirty.push_back(call);
        }
    }

    /// Moves work between the transaction layer and the calls until neither has anything left.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(output) = self.transactions.poll_output() {
                match output {
                    Output::Transmit { flow, bytes } => {
                        self.outputs.push_back(GatewayOutput::Transmit { flow, bytes })
                    }
                    Output::Event(event) => self.on_transaction_event(now, event),
                    Output::Timeout(at) => {
                        self.transactions_timeout = Some(at);
                        break;
                    }
                }
                progressed = true;
            }
            if !progressed && self.transactions.is_empty() {
                self.transactions_timeout = None;
            }
            while let Some(call) = self.dirty.pop_front() {
                progressed = true;
                self.run_actions(now, call);
            }
            while let Some(output) = self.monitor.poll_output() {
                progressed = true;
                self.on_monitor_output(now, output);
            }
            if !progressed {
                break;
            }
        }
        if let Some(at) = self.next_timeout() {
            self.outputs.push_back(GatewayOutput::Timeout(at));
        }
    }

    /// Refuses a call whose widget is unknown (or could not be looked up), recording the attempt without one.
    fn refuse_unrouted(&mut self, now: Instant, call: CallRef, refusal: Refusal) {
        let Some(entry) = self.calls.get(&call) else {
            return;
        };
        let event = attempt_started(&entry.source, Some(entry.public_id.clone()));
        self.outputs.push_back(GatewayOutput::Cdr { call, event });
        self.refuse(now, call, refusal);
    }

    /// Answers a browser's INVITE refused before it became a call (no plausible widget id, no offer, a
    /// draining gateway) and records the attempt: a record that starts and ends at once.
    #[allow(
        clippy::too_many_arguments,
        reason = "each argument is a distinct part of the attempt's record"
    )]
    fn refuse_attempt(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        request: &Request,
        source: &BrowserConnection,
        status: u16,
        cause: EndCause,
        refusal: Option<Refusal>,
    ) {
        self.respond(key, request, status, now);
        let call = self.next_call;
        self.next_call += 1;
        let dialled = request
            .uri
            .user()
            .filter(|user| !user.is_empty())
            .map(str::to_owned);
        let started = attempt_started(source, dialled);
        self.outputs
            .push_back(GatewayOutput::Cdr { call, event: started });
        self.outputs.push_back(GatewayOutput::Cdr {
            call,
            event: CdrEvent::Ended {
                cause,
                refusal: refusal.as_ref().map(Refusal::reason),
                trunk: None,
                browser_status: Some(status),
                pbx_status: None,
            },
        });
        if let Some(refusal) = refusal {
            self.outputs.push_back(GatewayOutput::Refused { call, refusal });
        }
    }

    fn refuse(&mut self, now: Instant, call: CallRef, refusal: Refusal) {
        let Some(entry) = self.calls.get_mut(&call) else {
            return;
        };
        entry.refusal = Some(refusal.reason());
        tracing::info!(
            call,
            peer = %entry.source.peer,
            origin = entry.source.origin.as_deref().unwrap_or("-"),
            widget = %entry.public_id,
            reason = refusal.reason(),
            detail = %refusal,
            "call refused"
        );
        let input = CallInput::Refused {
            status: refusal.status_code(),
            retry_after: refusal.retry_after_secs(),
        };
        self.outputs.push_back(GatewayOutput::Refused { call, refusal });
        self.feed(now, call, input);
        self.pump(now);
    }

    fn forget(&mut self, call: CallRef) {
        if let Some(entry) = self.calls.remove(&call) {
            let call_id = entry.browser.invite.call_id().unwrap_or_default().to_owned();
            self.browser_calls.remove(&(entry.browser.connection, call_id));
        }
        self.pbx_calls.retain(|_, owner| *owner != call);
        self.owners.retain(|_, (owner, _)| *owner != call);
    }
}

impl Gateway {
    fn on_transaction_event(&mut self, now: Instant, event: TransactionEvent) {
        let monitor_key = match &event {
            TransactionEvent::Response { key, .. }
            | TransactionEvent::Timeout { key }
            | TransactionEvent::TransportError { key }
            | TransactionEvent::Terminated { key } => {
                self.monitor_requests.contains_key(key).then(|| key.clone())
            }
            _ => None,
        };
        if let Some(key) = monitor_key {
            return self.on_monitor_event(now, key, event);
        }
        match event {
            TransactionEvent::Request { key, request, flow } => self.on_request(now, key, request, flow),
            TransactionEvent::Response { key, response } => self.on_response(now, key, response),
            TransactionEvent::Ack { request, flow, .. } => {
                if is_browser(&flow)
                    && let Some(call) = self.browser_call(&flow, &request)
                    && let Some(entry) = self.calls.get_mut(&call)
                {
                    if let Some(dialog) = entry.browser.dialog.as_mut() {
                        dialog.confirm();
                    }
                    self.feed(now, call, CallInput::BrowserAck);
                }
            }
            TransactionEvent::Cancelled { invite, .. } => {
                if let Some(&(call, Purpose::BrowserInvite)) = self.owners.get(&invite) {
                    self.feed(now, call, CallInput::BrowserCancel);
                }
            }
            TransactionEvent::StrayResponse { response, flow } => self.on_stray_response(now, response, flow),
            TransactionEvent::Timeout { key } => self.on_failure(now, &key, 408),
            TransactionEvent::TransportError { key } => self.on_failure(now, &key, 503),
            TransactionEvent::Terminated { key } => {
                self.owners.remove(&key);
            }
            TransactionEvent::Malformed { flow, error } => {
                tracing::info!(remote = %flow.remote, transport = %flow.transport, %error, "malformed SIP message");
            }
        }
    }

    fn on_monitor_output(&mut self, now: Instant, output: MonitorOutput) {
        match output {
            MonitorOutput::Send {
                trunk_id,
                flow,
                request,
            } => {
                match self
                    .transactions
                    .handle_outgoing_request(now, flow, request.clone())
                {
                    Ok(key) => {
                        self.monitor_requests.insert(key, (trunk_id, request));
                    }
                    Err(error) => {
                        tracing::debug!(trunk_id, %error, "keepalive not sent");
                        self.monitor
                            .handle_failure(now, trunk_id, &request, RequestFailure::TransportError);
                    }
                }
            }
            MonitorOutput::TrunkStatus { trunk_id, name, up } => {
                if up {
                    tracing::info!(trunk = %name, "trunk up");
                } else {
                    tracing::warn!(trunk = %name, "trunk down: no answer to OPTIONS");
                }
                self.outputs
                    .push_back(GatewayOutput::TrunkStatus { trunk_id, name, up });
            }
            MonitorOutput::Registered { trunk_id, expires } => {
                tracing::info!(trunk_id, ?expires, "registered with the trunk");
            }
            MonitorOutput::RegistrationFailed { trunk_id, status } => {
                tracing::warn!(trunk_id, status, "registration with the trunk failed");
            }
        }
    }

    fn on_monitor_event(&mut self, now: Instant, key: TransactionKey, event: TransactionEvent) {
        match event {
            TransactionEvent::Response { response, .. } => {
                if let Some((trunk_id, request)) = self.monitor_requests.get(&key) {
                    self.monitor.handle_response(now, *trunk_id, request, &response);
                }
            }
            TransactionEvent::Timeout { .. } | TransactionEvent::TransportError { .. } => {
                let failure = if matches!(event, TransactionEvent::Timeout { .. }) {
                    RequestFailure::Timeout
                } else {
                    RequestFailure::TransportError
                };
                if let Some((trunk_id, request)) = self.monitor_requests.remove(&key) {
                    self.monitor.handle_failure(now, trunk_id, &request, failure);
                }
            }
            TransactionEvent::Terminated { .. } => {
                self.monitor_requests.remove(&key);
            }
            _ => {}
        }
    }

    fn browser_call(&self, flow: &Flow, request: &Request) -> Option<CallRef> {
        let connection = flow.connection?;
        let call_id = request.call_id()?;
        self.browser_calls.get(&(connection, call_id.to_owned())).copied()
    }

    fn respond(&mut self, key: &TransactionKey, request: &Request, status: u16, now: Instant) {
        let mut response = message::response_to(request, status, Some(&message::new_tag()));
        response.set_header("Server", self.settings.user_agent.clone());
        if status == 405 || (request.method == Method::Options && status == 200) {
            response.set_header("Allow", ALLOW);
        }
        if let Err(error) = self.transactions.send_response(now, key, response) {
            tracing::debug!(%error, "response not sent");
        }
    }

    fn on_request(&mut self, now: Instant, key: TransactionKey, mut request: Request, flow: Flow) {
        if let Err(error) = message::decrement_max_forwards(&mut request) {
            let status = if matches!(error, message::MessageError::TooManyHops) {
                483
            } else {
                400
            };
            return self.respond(&key, &request, status, now);
        }
        if is_browser(&flow) {
            self.on_browser_request(now, key, request, flow);
        } else {
            self.on_pbx_request(now, key, request);
        }
    }

    fn on_browser_request(&mut self, now: Instant, key: TransactionKey, request: Request, flow: Flow) {
        let existing = self.browser_call(&flow, &request);
        let in_dialog = request.to_tag().is_some();
        match (request.method, existing, in_dialog) {
            (Method::Invite, None, false) => self.new_browser_call(now, key, request, flow),
            (Method::Options, None, _) => self.respond(&key, &request, 200, now),
            (_, None, _) => self.respond(&key, &request, 481, now),
            (Method::Invite, Some(_), false) => {
                // The same INVITE with a new branch (a client bug): one call per Call-ID.
                self.respond(&key, &request, 482, now)
            }
            (method, Some(call), _) => {
                let accepted = self
                    .calls
                    .get_mut(&call)
                    .and_then(|entry| entry.browser.dialog.as_mut())
                    .map(|dialog| dialog.handle_request(&request));
                if let Some(Err(error)) = accepted {
                    tracing::info!(call, %error, "browser in-dialog request refused");
                    return self.respond(&key, &request, 500, now);
                }
                match method {
                    Method::Bye => {
                        self.respond(&key, &request, 200, now);
                        self.feed(now, call, CallInput::BrowserBye);
                    }
                    Method::Invite | Method::Update if !request.body.is_empty() => {
                        self.owners.insert(key.clone(), (call, Purpose::BrowserOffer));
                        let sdp = String::from_utf8_lossy(&request.body).into_owned();
                        if let Some(entry) = self.calls.get_mut(&call) {
                            entry.browser.pending_offer = Some((key, request));
                        }
                        self.feed(now, call, CallInput::BrowserReoffer(Offer { sdp }));
                    }
                    // A refresh without SDP (JsSIP's session timer UPDATE) changes nothing on our side.
                    Method::Invite | Method::Update | Method::Options => {
                        self.respond(&key, &request, 200, now)
                    }
                    Method::Info => {
                        let content_type = request.content_type().unwrap_or_default().to_owned();
                        match crate::media::dtmf::parse_sip_info(&content_type, &request.body) {
                            Ok(digit) => {
                                self.respond(&key, &request, 200, now);
                                let duration_ms =
                                    u32::try_from(digit.duration.as_millis()).unwrap_or(u32::MAX);
                                self.feed(
                                    now,
                                    call,
                                    CallInput::BrowserDtmf {
                                        digit: digit.digit.as_char(),
                                        duration_ms,
                                    },
                                );
                            }
                            Err(_) => self.respond(&key, &request, 415, now),
                        }
                    }
                    _ => self.respond(&key, &request, 405, now),
                }
            }
        }
    }

    fn new_browser_call(&mut self, now: Instant, key: TransactionKey, request: Request, flow: Flow) {
        let Some(connection) = flow.connection else {
            return self.respond(&key, &request, 400, now);
        };
        let Some(source) = self.connections.get(&connection).cloned() else {
            return self.respond(&key, &request, 503, now);
        };
        let public_id = request.uri.user().map(str::to_owned).unwrap_or_default();
        let plausible_id = !public_id.is_empty()
            && public_id.len() <= 64
            && public_id
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
        if !plausible_id {
            tracing::info!(peer = %source.peer, reason = "unknown_widget", "call refused: malformed widget id");
            let refusal = Some(Refusal::UnknownWidget);
            return self.refuse_attempt(now, &key, &request, &source, 404, EndCause::Refused, refusal);
        }
        let is_sdp = request
            .content_type()
            .is_some_and(|value| value.to_ascii_lowercase().starts_with("application/sdp"));
        if request.body.is_empty() || !is_sdp {
            // An INVITE without an offer would need the offer in our 2xx; browsers always send one.
            tracing::info!(peer = %source.peer, "call refused: INVITE without an SDP offer");
            return self.refuse_attempt(now, &key, &request, &source, 488, EndCause::MediaFailed, None);
        }
        if self.drain_deadline.is_some() {
            tracing::info!(peer = %source.peer, reason = "gateway_full", "call refused: draining");
            let refusal = Some(Refusal::GatewayFull {
                retry_after: Duration::ZERO,
            });
            return self.refuse_attempt(now, &key, &request, &source, 503, EndCause::Refused, refusal);
        }
        let call = self.next_call;
        self.next_call += 1;
        let call_id = request.call_id().unwrap_or_default().to_owned();
        let token = request.header_value(admission::TOKEN_HEADER).map(str::to_owned);
        let contact = NameAddr::new(format!("sip:callgate@{BROWSER_SIDE_HOST};transport=ws"));
        let entry = CallEntry {
            machine: Call::new(),
            browser: BrowserLeg {
                connection,
                flow,
                invite: request,
                invite_key: key.clone(),
                local_tag: message::new_tag(),
                contact,
                dialog: None,
                pending_offer: None,
            },
            pbx: PbxLeg {
                trunk: None,
                flow: None,
                invite: None,
                invite_key: None,
                digest: None,
                dialog: None,
                answered: false,
                provisional_seen: false,
                pending_offer: None,
                last_offer: None,
                ring_deadline: None,
            },
            route: None,
            permit: None,
            source,
            token,
            public_id,
            started: now,
            refusal: None,
            forget_at: None,
        };
        self.calls.insert(call, entry);
        self.browser_calls.insert((connection, call_id), call);
        self.owners.insert(key, (call, Purpose::BrowserInvite));
        self.dirty.push_back(call);
    }

    fn on_pbx_request(&mut self, now: Instant, key: TransactionKey, request: Request) {
        let call = request
            .call_id()
            .and_then(|call_id| self.pbx_calls.get(call_id).copied());
        let Some(call) = call else {
            // Out of dialog: answer keepalives, refuse calls (this gateway only places calls toward PBXs).
            let status = match request.method {
                Method::Options => 200,
                Method::Invite => 403,
                _ => 481,
            };
            return self.respond(&key, &request, status, now);
        };
        let accepted = self
            .calls
            .get_mut(&call)
            .and_then(|entry| entry.pbx.dialog.as_mut())
            .map(|dialog| dialog.handle_request(&request));
        match accepted {
            None => return self.respond(&key, &request, 481, now),
            Some(Err(error)) => {
                tracing::info!(call, %error, "pbx in-dialog request refused");
                return self.respond(&key, &request, 500, now);
            }
            Some(Ok(())) => {}
        }
        match request.method {
            Method::Bye => {
                self.respond(&key, &request, 200, now);
                self.feed(now, call, CallInput::PbxBye);
            }
            Method::Invite | Method::Update if !request.body.is_empty() => {
                self.owners.insert(key.clone(), (call, Purpose::PbxOffer));
                let sdp = String::from_utf8_lossy(&request.body).into_owned();
                if let Some(entry) = self.calls.get_mut(&call) {
                    entry.pbx.pending_offer = Some((key, request));
                }
                self.feed(now, call, CallInput::PbxReoffer(Offer { sdp }));
            }
            Method::Invite | Method::Update => {
                // A session refresh without SDP (RFC 4028 allows UPDATE without a body).
                self.respond_with_timer(now, call, &key, &request, None);
                self.feed(now, call, CallInput::SessionRefreshed);
            }
            Method::Options | Method::Info | Method::Notify => {
                self.owners.insert(key.clone(), (call, Purpose::PbxOther));
                self.respond(&key, &request, 200, now);
            }
            _ => self.respond(&key, &request, 405, now),
        }
    }

    /// Answers a PBX refresh or re-offer, echoing its session timer so that it keeps refreshing.
    fn respond_with_timer(
        &mut self,
        now: Instant,
        call: CallRef,
        key: &TransactionKey,
        request: &Request,
        sdp: Option<String>,
    ) {
        let Some(entry) = self.calls.get(&call) else {
            return;
        };
        let mut response = message::response_to(request, 200, None);
        response.set_header("Server", self.settings.user_agent.clone());
        if let Some(contact) = entry.pbx.dialog.as_ref().and_then(Dialog::local_contact) {
            response.set_header("Contact", contact.to_string());
        }
        if let Some(expires) = request.header_value("Session-Expires") {
            let interval = expires.split(';').next().unwrap_or_default().trim().to_owned();
            response.set_header("Session-Expires", format!("{interval};refresher=uac"));
            response.set_header("Require", "timer");
        }
        if let Some(sdp) = sdp {
            response.set_header("Content-Type", "application/sdp");
            response.body = sdp.into_bytes();
        }
        if let Err(error) = self.transactions.send_response(now, key, response) {
            tracing::debug!(%error, "response not sent");
        }
    }

    fn on_response(&mut self, now: Instant, key: TransactionKey, response: Response) {
        let Some(&(call, purpose)) = self.owners.get(&key) else {
            return;
        };
        let status = response.status_code.code();
        match purpose {
            Purpose::PbxInvite => self.on_pbx_invite_response(now, call, key, response),
            Purpose::PbxReinvite | Purpose::PbxRefresh | Purpose::BrowserReinvite => {
                if status < 200 {
                    return;
                }
                let leg_is_pbx = purpose != Purpose::BrowserReinvite;
                if (200..300).contains(&status) {
                    self.ack_in_dialog(call, leg_is_pbx, &response);
                }
                let input = match (purpose, status) {
                    (Purpose::PbxRefresh, 200..=299) => CallInput::SessionRefreshed,
                    // A refresh the PBX refuses with anything but 491 ends the session (RFC 4028 §10).
                    (Purpose::PbxRefresh, 491) => return,
                    (Purpose::PbxRefresh, _) => CallInput::LegFailed,
                    (_, 200..=299) => CallInput::ReofferAnswered {
                        sdp: String::from_utf8_lossy(&response.body).into_owned(),
                    },
                    _ => CallInput::ReofferFailed { status },
                };
                self.feed(now, call, input);
            }
            Purpose::PbxBye | Purpose::BrowserBye | Purpose::PbxCancel => {}
            _ => {}
        }
    }

    fn ack_in_dialog(&mut self, call: CallRef, leg_is_pbx: bool, response: &Response) {
        let Some(entry) = self.calls.get_mut(&call) else {
            return;
        };
        let Ok(cseq) = response.cseq() else { return };
        let (dialog, flow) = if leg_is_pbx {
            (entry.pbx.dialog.as_ref(), entry.pbx.flow.clone())
        } else {
            (entry.browser.dialog.as_ref(), Some(entry.browser.flow.clone()))
        };
        let (Some(dialog), Some(flow)) = (dialog, flow) else {
            return;
        };
        let via = self.settings.via_for(&flow);
        if let Ok(ack) = dialog.build_ack(cseq.seq, via) {
            self.transactions.send_stateless(flow, ack);
        }
    }

    fn on_pbx_invite_response(
        &mut self,
        now: Instant,
        call: CallRef,
        key: TransactionKey,
        response: Response,
    ) {
        let status = response.status_code.code();
        let Some(entry) = self.calls.get_mut(&call) else {
            return;
        };
        if entry.pbx.invite_key.as_ref() != Some(&key) {
            // A response to an INVITE we already gave up on (retried with credentials, or failed over).
            return;
        }
        match status {
            100 => {}
            101..=199 => {
                entry.pbx.provisional_seen = true;
                let sdp =
                    (!response.body.is_empty()).then(|| String::from_utf8_lossy(&response.body).into_owned());
                if response.to_tag().is_some()
                    && entry.pbx.dialog.is_none()
                    && let Some(invite) = &entry.pbx.invite
                    && let Ok(dialog) = Dialog::uac(invite, &response)
                {
                    entry.pbx.dialog = Some(dialog);
                }
                self.feed(now, call, CallInput::PbxProvisional { status, sdp });
            }
            200..=299 => {
                entry.pbx.ring_deadline = None;
                let Some(invite) = entry.pbx.invite.clone() else {
                    return;
                };
                if entry.pbx.answered {
                    // A retransmitted 2xx: the ACK was lost, send it again.
                    self.ack_in_dialog(call, true, &response);
                    return;
                }
                entry.pbx.answered = true;
                match Dialog::uac(&invite, &response) {
                    Ok(mut dialog) => {
                        let _ = dialog.handle_response(&response);
                        dialog.confirm();
                        entry.pbx.dialog = Some(dialog);
                    }
                    Err(error) => {
                        tracing::warn!(call, %error, "unusable 2xx from the PBX");
                        self.feed(now, call, CallInput::PbxFailed { status: 502 });
                        return;
                    }
                }
                let session_timer = session_timer_of(&response);
                let sdp = String::from_utf8_lossy(&response.body).into_owned();
                self.feed(now, call, CallInput::PbxAnswered { sdp, session_timer });
            }
            401 | 407 => {
                let retried = self.retry_with_credentials(now, call, &response);
                if !retried {
                    self.feed(now, call, CallInput::PbxChallenged);
                }
            }
            _ => {
                entry.pbx.ring_deadline = None;
                self.feed(now, call, CallInput::PbxFailed { status });
            }
        }
    }

    /// Sends the INVITE again with digest credentials; false when the trunk has none or they were refused.
    fn retry_with_credentials(&mut self, now: Instant, call: CallRef, challenge: &Response) -> bool {
        let Some(entry) = self.calls.get_mut(&call) else {
            return false;
        };
        let Some(trunk) = entry.pbx.trunk.as_ref() else {
            return false;
        };
        let Some(credentials) = trunk.credentials.clone() else {
            return false;
        };
        let digest = entry
            .pbx
            .digest
            .get_or_insert_with(|| DigestClient::new(credentials));
        if digest.handle_challenge(challenge).is_err() {
            return false;
        }
        let (Some(mut invite), Some(flow)) = (entry.pbx.invite.clone(), entry.pbx.flow.clone()) else {
            return false;
        };
        let Ok(cseq) = invite.cseq() else { return false };
        invite.set_header("CSeq", format!("{} INVITE", cseq.seq + 1));
        let via = self.settings.via_for(&flow);
        invite.set_header("Via", via.to_string());
        let Some(entry) = self.calls.get_mut(&call) else {
            return false;
        };
        let Some(digest) = entry.pbx.digest.as_mut() else {
            return false;
        };
        if digest.authorize(&mut invite).is_err() {
            return false;
        }
        match self
            .transactions
            .handle_outgoing_request(now, flow, invite.clone())
        {
            Ok(key) => {
                entry.pbx.invite = Some(invite);
                entry.pbx.invite_key = Some(key.clone());
                self.owners.insert(key, (call, Purpose::PbxInvite));
                true
            }
            Err(_) => false,
        }
    }

    fn on_stray_response(&mut self, now: Instant, response: Response, flow: Flow) {
        let is_invite_2xx = (200..300).contains(&response.status_code.code())
            && response.cseq().is_ok_and(|cseq| cseq.method == Method::Invite);
        if !is_invite_2xx {
            return;
        }
        let call = response
            .call_id()
            .and_then(|call_id| self.pbx_calls.get(call_id).copied());
        match call.and_then(|call| {
            self.calls
                .get(&call)
                .map(|entry| (call, entry.pbx.dialog.is_some()))
        }) {
            Some((call, true)) => self.ack_in_dialog(call, true, &response),
            _ => {
                // A 2xx nobody waits for (a fork, or a call already forgotten): confirm and end that dialog.
                let via = self.settings.via_for(&flow);
                if let Some((ack, bye)) = ack_and_bye_for_orphan(&response, via, self.settings.via_for(&flow))
                {
                    self.transactions.send_stateless(flow.clone(), ack);
                    let _ = self.transactions.handle_outgoing_request(now, flow, bye);
                }
            }
        }
    }

    /// A client transaction timed out (408) or its transport failed (503).
    fn on_failure(&mut self, now: Instant, key: &TransactionKey, status: u16) {
        let Some(&(call, purpose)) = self.owners.get(key) else {
            return;
        };
        match purpose {
            Purpose::PbxInvite => {
                let current = self
                    .calls
                    .get(&call)
                    .is_some_and(|entry| entry.pbx.invite_key.as_ref() == Some(key));
                if current {
                    let input = if status == 408 {
                        CallInput::PbxTimeout
                    } else {
                        CallInput::PbxTransportError
                    };
                    self.feed(now, call, input);
                }
            }
            Purpose::PbxReinvite | Purpose::BrowserReinvite => {
                self.feed(now, call, CallInput::ReofferFailed { status })
            }
            Purpose::PbxRefresh => self.feed(now, call, CallInput::LegFailed),
            Purpose::BrowserInvite if key.role == Role::Server => {
                // Timer L/H: the browser never ACKed our final response.
                self.feed(now, call, CallInput::LegFailed);
            }
            _ => {}
        }
    }

    fn ring_timeout(&mut self, now: Instant, call: CallRef) {
        let Some(entry) = self.calls.get_mut(&call) else {
            return;
        };
        entry.pbx.ring_deadline = None;
        if entry.machine.is_ended() || entry.pbx.answered {
            return;
        }
        tracing::info!(call, "no answer from the PBX: cancelling");
        if entry.pbx.provisional_seen {
            self.send_cancel(now, call);
        }
        self.feed(now, call, CallInput::PbxFailed { status: 480 });
    }
}

fn is_browser(flow: &Flow) -> bool {
    matches!(flow.transport, Transport::Ws | Transport::Wss)
}

/// The host of our Via and Contact toward browsers: they never route by it (RFC 7118 §5: requests go back
/// over the WebSocket the dialog came in on), so an `.invalid` name is honest.
const BROWSER_SIDE_HOST: &str = "callgate.invalid";

/// The record of a browser's attempt before (or without) a widget.
fn attempt_started(source: &BrowserConnection, dialled: Option<String>) -> CdrEvent {
    CdrEvent::Started {
        widget: None,
        dialled,
        trunk: None,
        source: source.peer.ip(),
        user_agent: source.user_agent.clone(),
        destination: None,
    }
}

/// The session timer the PBX's 2xx set (RFC 4028 §7.2): who refreshes, and how often.
fn session_timer_of(response: &Response) -> Option<SessionTimer> {
    let Some(value) = response.header_value("Session-Expires") else {
        // The PBX does not do session timers: nothing to refresh toward it.
        return None;
    };
    let mut parts = value.split(';');
    let seconds: u64 = parts.next()?.trim().parse().ok()?;
    let refresher_is_uas = parts.any(|param| param.trim().eq_ignore_ascii_case("refresher=uas"));
    Some(SessionTimer {
        interval: Duration::from_secs(seconds.max(90)),
        we_refresh: !refresher_is_uas,
    })
}

/// The ACK and BYE that close the dialog of an unexpected 2xx to one of our INVITEs.
fn ack_and_bye_for_orphan(response: &Response, ack_via: Via, bye_via: Via) -> Option<(Request, Request)> {
    let cseq = response.cseq().ok()?;
    let target = response.contact_uri().ok()??;
    let base = |method: Method, seq: u32, via: Via| -> Request {
        let mut request = Request {
            method,
            uri: target.clone(),
            version: rsip::Version::V2,
            headers: Default::default(),
            body: Vec::new(),
        };
        request.push_header("Via", via.to_string());
        request.push_header("Max-Forwards", "70");
        for name in ["From", "To", "Call-ID"] {
            if let Some(value) = response.header_value(name) {
                request.push_header(name, value.to_owned());
            }
        }
        request.push_header("CSeq", format!("{seq} {method}"));
        for route in response.record_route().unwrap_or_default().iter().rev() {
            request.push_header("Route", route.to_string());
        }
        request
    };
    Some((
        base(Method::Ack, cseq.seq, ack_via),
        base(Method::Bye, cseq.seq + 1, bye_via),
    ))
}

impl Gateway {
    fn run_actions(&mut self, now: Instant, call: CallRef) {
        loop {
            let Some(action) = self
                .calls
                .get_mut(&call)
                .and_then(|entry| entry.machine.poll_action())
            else {
                return;
            };
            self.run_action(now, call, action);
        }
    }

    fn run_action(&mut self, now: Instant, call: CallRef, action: CallAction) {
        let Some(entry) = self.calls.get_mut(&call) else {
            return;
        };
        match action {
            CallAction::ResolveRoute => {
                let public_id = entry.public_id.clone();
                self.outputs
                    .push_back(GatewayOutput::LookupWidget { call, public_id });
            }
            CallAction::PrepareMedia => {
                let browser_offer = String::from_utf8_lossy(&entry.browser.invite.body).into_owned();
                let codecs = entry
                    .route
                    .as_ref()
                    .and_then(|route| route.trunks.iter().find(|trunk| trunk.up))
                    .map(|trunk| trunk.codecs.clone())
                    .unwrap_or_else(|| vec![Codec::Pcmu, Codec::Pcma]);
                self.outputs.push_back(GatewayOutput::Media {
                    call,
                    command: MediaCommand::Prepare {
                        browser_offer,
                        codecs,
                    },
                });
            }
            CallAction::InvitePbx { trunk_index, sdp } => self.invite_pbx(now, call, trunk_index, sdp),
            CallAction::ApplyPbxAnswer { sdp } => {
                let early = !entry.pbx.answered;
                self.outputs.push_back(GatewayOutput::Media {
                    call,
                    command: MediaCommand::ApplyPbxAnswer { sdp, early },
                });
            }
            CallAction::RespondBrowser {
                status,
                sdp,
                retry_after,
            } => {
                self.respond_browser(now, call, status, sdp, retry_after);
            }
            CallAction::CancelPbx => self.send_cancel(now, call),
            CallAction::AckPbx => {
                let Some(invite) = entry.pbx.invite.as_ref() else {
                    return;
                };
                let Ok(cseq) = invite.cseq() else { return };
                let (Some(dialog), Some(flow)) = (entry.pbx.dialog.as_ref(), entry.pbx.flow.clone()) else {
                    return;
                };
                let via = self.settings.via_for(&flow);
                if let Ok(ack) = dialog.build_ack(cseq.seq, via) {
                    self.transactions.send_stateless(flow, ack);
                }
            }
            CallAction::ByePbx => self.send_in_dialog(now, call, true, Method::Bye, None, Purpose::PbxBye),
            CallAction::ByeBrowser => {
                self.send_in_dialog(now, call, false, Method::Bye, None, Purpose::BrowserBye)
            }
            CallAction::ApplyReoffer { from, sdp } => {
                self.outputs.push_back(GatewayOutput::Media {
                    call,
                    command: MediaCommand::Reoffer { from, sdp },
                });
            }
            CallAction::Reinvite { to, sdp } => {
                let (to_pbx, purpose) = match to {
                    Leg::Pbx => (true, Purpose::PbxReinvite),
                    Leg::Browser => (false, Purpose::BrowserReinvite),
                };
                if to_pbx {
                    entry.pbx.last_offer = Some(sdp.clone());
                }
                self.send_in_dialog(now, call, to_pbx, Method::Invite, Some(sdp), purpose);
            }
            CallAction::ApplyReanswer { from, sdp } => {
                self.outputs.push_back(GatewayOutput::Media {
                    call,
                    command: MediaCommand::Reanswer { from, sdp },
                });
            }
            CallAction::RespondReoffer { to, status, sdp } => {
                let pending = match to {
                    Leg::Browser => entry.browser.pending_offer.take(),
                    Leg::Pbx => entry.pbx.pending_offer.take(),
                };
                let Some((key, request)) = pending else { return };
                if to == Leg::Pbx && status == 200 {
                    self.respond_with_timer(now, call, &key, &request, sdp);
                } else {
                    let mut response = message::response_to(&request, status, None);
                    if let Some(contact) = self.calls.get(&call).and_then(|entry| match to {
                        Leg::Browser => entry
                            .browser
                            .dialog
                            .as_ref()
                            .and_then(Dialog::local_contact)
                            .cloned(),
                        Leg::Pbx => entry.pbx.dialog.as_ref().and_then(Dialog::local_contact).cloned(),
                    }) {
                        response.set_header("Contact", contact.to_string());
                    }
                    if let Some(sdp) = sdp {
                        response.set_header("Content-Type", "application/sdp");
                        response.body = sdp.into_bytes();
                    }
                    let _ = self.transactions.send_response(now, &key, response);
                }
            }
            CallAction::RefreshPbxSession => {
                let sdp = entry.pbx.last_offer.clone();
                self.send_in_dialog(now, call, true, Method::Invite, sdp, Purpose::PbxRefresh);
            }
            CallAction::SendDtmf { digit, duration_ms } => {
                self.outputs.push_back(GatewayOutput::Media {
                    call,
                    command: MediaCommand::Dtmf { digit, duration_ms },
                });
            }
            CallAction::RecordAnswer => {
                let setup = now.saturating_duration_since(entry.started);
                self.outputs.push_back(GatewayOutput::Answered { call, setup });
                self.outputs.push_back(GatewayOutput::Cdr {
                    call,
                    event: CdrEvent::Answered,
                });
            }
            CallAction::Finish {
                cause,
                browser_status,
                pbx_status,
            } => {
                entry.forget_at = Some(now + LINGER);
                entry.pbx.ring_deadline = None;
                let trunk = entry
                    .pbx
                    .trunk
                    .as_ref()
                    .map(|trunk| (trunk.id, trunk.name.clone()));
                if let Some(permit) = entry.permit.take() {
                    self.admission.release(now, permit);
                }
                tracing::info!(
                    call,
                    cause = cause.as_str(),
                    ?browser_status,
                    ?pbx_status,
                    "call ended"
                );
                if entry.route.is_some() {
                    self.outputs.push_back(GatewayOutput::Media {
                        call,
                        command: MediaCommand::Close,
                    });
                }
                self.outputs.push_back(GatewayOutput::Cdr {
                    call,
                    event: CdrEvent::Ended {
                        cause,
                        refusal: entry.refusal,
                        trunk,
                        browser_status,
                        pbx_status,
                    },
                });
            }
        }
    }

    fn invite_pbx(&mut self, now: Instant, call: CallRef, trunk_index: usize, sdp: String) {
        let Some(entry) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(route) = entry.route.as_ref() else { return };
        // The machine's trunk list holds only the trunks that were up, by their index in the route.
        let Some(choice) = entry
            .machine
            .route()
            .and_then(|route| route.trunks.get(trunk_index))
            .cloned()
        else {
            return;
        };
        let Some(trunk) = usize::try_from(choice.trunk_id)
            .ok()
            .and_then(|index| route.trunks.get(index))
            .cloned()
        else {
            return;
        };
        let Some((transport, local)) = self.settings.local_for(trunk.transport) else {
            tracing::warn!(call, trunk = %trunk.name, transport = ?trunk.transport, "no listener for the trunk's transport");
            self.feed(now, call, CallInput::PbxTransportError);
            return;
        };
        let flow = Flow {
            transport,
            remote: trunk.address,
            connection: None,
        };
        let transport_param = transport_param(trunk.transport);
        let destination = route.destination.clone();
        let caller = route.caller_id.clone().unwrap_or_else(|| "anonymous".to_owned());
        let host_port = if trunk.port == 5060 && transport == Transport::Udp {
            trunk.host.clone()
        } else {
            format!("{}:{}", trunk.host, trunk.port)
        };
        let uri = format!("sip:{destination}@{host_port}{transport_param}");
        let Ok(request_uri) = message::parse_uri(&uri) else {
            tracing::warn!(call, %uri, "cannot build the Request-URI");
            self.feed(now, call, CallInput::PbxFailed { status: 500 });
            return;
        };
        let call_id = message::new_call_id();
        let mut invite = Request {
            method: Method::Invite,
            uri: request_uri,
            version: rsip::Version::V2,
            headers: Default::default(),
            body: sdp.clone().into_bytes(),
        };
        invite.push_header("Via", self.settings.via_for(&flow).to_string());
        invite.push_header("Max-Forwards", "70");
        if let Some(proxy) = &trunk.outbound_proxy {
            invite.push_header("Route", format!("<{proxy};lr>"));
        }
        invite.push_header(
            "From",
            format!("<sip:{caller}@{}>;tag={}", local.ip(), message::new_tag()),
        );
        invite.push_header("To", format!("<sip:{destination}@{host_port}>"));
        invite.push_header("Call-ID", call_id.clone());
        invite.push_header("CSeq", "1 INVITE");
        invite.push_header("Contact", format!("<sip:callgate@{local}{transport_param}>"));
        invite.push_header("Allow", ALLOW);
        invite.push_header("Supported", "timer");
        invite.push_header(
            "Session-Expires",
            self.settings.session_expires.as_secs().to_string(),
        );
        invite.push_header("Min-SE", self.settings.min_se.as_secs().to_string());
        invite.push_header("User-Agent", self.settings.user_agent.clone());
        invite.push_header("Content-Type", "application/sdp");
        let Some(entry) = self.calls.get_mut(&call) else {
            return;
        };
        match self
            .transactions
            .handle_outgoing_request(now, flow.clone(), invite.clone())
        {
            Ok(key) => {
                tracing::info!(call, trunk = %trunk.name, %uri, "calling the PBX");
                entry.pbx.trunk = Some(trunk);
                entry.pbx.flow = Some(flow);
                entry.pbx.invite = Some(invite);
                entry.pbx.invite_key = Some(key.clone());
                entry.pbx.digest = None;
                entry.pbx.dialog = None;
                entry.pbx.answered = false;
                entry.pbx.provisional_seen = false;
                entry.pbx.last_offer = Some(sdp);
                entry.pbx.ring_deadline = Some(now + RING_TIMEOUT);
                self.pbx_calls.insert(call_id, call);
                self.owners.insert(key, (call, Purpose::PbxInvite));
            }
            Err(error) => {
                tracing::warn!(call, %error, "INVITE toward the PBX not sent");
                self.feed(now, call, CallInput::PbxTransportError);
            }
        }
    }

    fn send_cancel(&mut self, now: Instant, call: CallRef) {
        let Some(entry) = self.calls.get(&call) else {
            return;
        };
        let (Some(invite), Some(flow)) = (entry.pbx.invite.as_ref(), entry.pbx.flow.clone()) else {
            return;
        };
        if let Ok(cancel) = message::build_cancel(invite)
            && let Ok(key) = self.transactions.handle_outgoing_request(now, flow, cancel)
        {
            self.owners.insert(key, (call, Purpose::PbxCancel));
        }
    }

    fn send_in_dialog(
        &mut self,
        now: Instant,
        call: CallRef,
        to_pbx: bool,
        method: Method,
        sdp: Option<String>,
        purpose: Purpose,
    ) {
        let Some(entry) = self.calls.get(&call) else {
            return;
        };
        let flow = if to_pbx {
            entry.pbx.flow.clone()
        } else {
            Some(entry.browser.flow.clone())
        };
        let Some(flow) = flow else { return };
        let via = self.settings.via_for(&flow);
        let user_agent = self.settings.user_agent.clone();
        let session_expires = self.settings.session_expires.as_secs();
        let Some(entry) = self.calls.get_mut(&call) else {
            return;
        };
        let dialog = if to_pbx {
            entry.pbx.dialog.as_mut()
        } else {
            entry.browser.dialog.as_mut()
        };
        let Some(dialog) = dialog else { return };
        let Ok(mut request) = dialog.build_request(method, via) else {
            return;
        };
        request.push_header("User-Agent", user_agent);
        if method == Method::Invite && to_pbx {
            request.push_header("Supported", "timer");
            request.push_header("Session-Expires", format!("{session_expires};refresher=uac"));
        }
        if let Some(sdp) = sdp {
            request.push_header("Content-Type", "application/sdp");
            request.body = sdp.into_bytes();
        }
        match self.transactions.handle_outgoing_request(now, flow, request) {
            Ok(key) => {
                self.owners.insert(key, (call, purpose));
            }
            Err(error) => tracing::debug!(call, %error, "in-dialog request not sent"),
        }
    }

    fn respond_browser(
        &mut self,
        now: Instant,
        call: CallRef,
        status: u16,
        sdp: Option<String>,
        retry_after: Option<u64>,
    ) {
        let Some(entry) = self.calls.get_mut(&call) else {
            return;
        };
        let invite = &entry.browser.invite;
        let mut response = if status > 100 && status < 300 {
            dialog::uas_response(invite, status, &entry.browser.local_tag, &entry.browser.contact)
        } else {
            message::response_to(invite, status, Some(&entry.browser.local_tag))
        };
        response.set_header("Server", self.settings.user_agent.clone());
        if let Some(seconds) = retry_after {
            response.set_header("Retry-After", seconds.to_string());
        }
        if let Some(sdp) = sdp {
            response.set_header("Content-Type", "application/sdp");
            response.body = sdp.into_bytes();
        }
        if (200..300).contains(&status) {
            response.set_header("Allow", ALLOW);
            match Dialog::uas(invite, &response) {
                Ok(mut dialog) => {
                    dialog.set_local_contact(entry.browser.contact.clone());
                    entry.browser.dialog = Some(dialog);
                }
                Err(error) => tracing::warn!(call, %error, "browser dialog not created"),
            }
        }
        let key = entry.browser.invite_key.clone();
        if let Err(error) = self.transactions.send_response(now, &key, response) {
            tracing::debug!(call, %error, "response to the browser not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsip::SipMessage;

    const BROWSER: u64 = 7;
    const OFFER: &str =
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";

    fn settings() -> GatewaySettings {
        GatewaySettings {
            user_agent: "callgate-test".to_owned(),
            sip_udp: Some("127.0.0.1:5070".parse().unwrap()),
            sip_tcp: Some("127.0.0.1:5070".parse().unwrap()),
            session_expires: Duration::from_secs(1800),
            min_se: Duration::from_secs(90),
            limits: GatewayLimits {
                max_calls: 10,
                per_ip_concurrent_calls: 5,
                per_ip_calls_per_minute: 50,
            },
            transactions: TransactionConfig::default(),
            options_interval: Duration::ZERO,
            options_timeout: Duration::from_secs(5),
        }
    }

    fn browser_flow() -> Flow {
        Flow {
            transport: Transport::Ws,
            remote: "127.0.0.1:40000".parse().unwrap(),
            connection: Some(BROWSER),
        }
    }

    fn pbx_flow(port: u16) -> Flow {
        Flow {
            transport: Transport::Udp,
            remote: SocketAddr::from(([127, 0, 0, 1], port)),
            connection: None,
        }
    }

    fn trunk(id: i64, port: u16) -> TrunkTarget {
        TrunkTarget {
            id,
            name: format!("pbx{id}"),
            host: "127.0.0.1".to_owned(),
            port,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            outbound_proxy: None,
            transport: TrunkTransport::Udp,
            credentials: Some(Credentials {
                username: "gw".to_owned(),
                password: "secret".to_owned(),
            }),
            codecs: vec![Codec::Pcmu],
            up: true,
        }
    }

    fn route(trunks: Vec<TrunkTarget>) -> RouteLookup {
        RouteLookup::Found(Box::new(WidgetRoute {
            widget_id: 3,
            name: "sales".to_owned(),
            public_id: "WIDGET_id-1".to_owned(),
            enabled: true,
            origins: vec!["https://shop.example".to_owned()],
            token_secret: None,
            limits: WidgetLimits {
                max_concurrent: 2,
                max_per_minute: 10,
            },
            destination: "1000".to_owned(),
            caller_id: Some("web".to_owned()),
            trunks,
        }))
    }

    fn invite(call_id: &str, target: &str) -> Vec<u8> {
        format!(
            "INVITE sip:{target}@gateway.example SIP/2.0\r\n\
             Via: SIP/2.0/WSS abc.invalid;branch=z9hG4bK{call_id}\r\nMax-Forwards: 69\r\n\
             To: <sip:{target}@gateway.example>\r\nFrom: <sip:anonymous@anonymous.invalid>;tag=browsertag\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:x@abc.invalid;transport=ws>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{OFFER}",
            OFFER.len()
        )
        .into_bytes()
    }

    struct Harness {
        gateway: Gateway,
        now: Instant,
        outputs: Vec<GatewayOutput>,
    }

    impl Harness {
        fn new() -> Self {
            let mut gateway = Gateway::new(settings());
            gateway.handle_ws_opened(
                BROWSER,
                BrowserConnection {
                    peer: "127.0.0.1:40000".parse().unwrap(),
                    secure: true,
                    origin: Some("https://shop.example".to_owned()),
                    user_agent: Some("JsSIP 3.10".to_owned()),
                },
            );
            Harness {
                gateway,
                now: Instant::now(),
                outputs: Vec::new(),
            }
        }

        fn drain(&mut self) {
            while let Some(output) = self.gateway.poll_output() {
                if !matches!(output, GatewayOutput::Timeout(_)) {
                    self.outputs.push(output);
                }
            }
        }

        /// Removes and returns the SIP messages sent on flows matching `browser`.
        fn sent(&mut self, browser: bool) -> Vec<SipMessage> {
            self.drain();
            let mut sent = Vec::new();
            self.outputs.retain(|output| match output {
                GatewayOutput::Transmit { flow, bytes } if is_browser(flow) == browser => {
                    // Only what parses: a bare CRLF keepalive answer is not a message.
                    sent.extend(message::parse(bytes).ok());
                    false
                }
                _ => true,
            });
            sent
        }

        fn take(&mut self, mut wanted: impl FnMut(&GatewayOutput) -> bool) -> GatewayOutput {
            self.drain();
            let index = self
                .outputs
                .iter()
                .position(&mut wanted)
                .unwrap_or_else(|| panic!("not in {:?}", self.outputs));
            self.outputs.remove(index)
        }

        fn receive_from_browser(&mut self, bytes: &[u8]) {
            self.gateway.handle_receive(self.now, browser_flow(), bytes);
        }

        fn receive_from_pbx(&mut self, port: u16, bytes: &[u8]) {
            self.gateway.handle_receive(self.now, pbx_flow(port), bytes);
        }

        /// Browser INVITE → routed → media prepared: returns the INVITE the PBX got.
        fn call_to_pbx(&mut self, trunks: Vec<TrunkTarget>) -> Request {
            self.receive_from_browser(&invite("call-1", "WIDGET_id-1"));
            let trying = self.sent(true);
            assert!(matches!(&trying[0], SipMessage::Response(r) if r.status_code.code() == 100));
            let GatewayOutput::LookupWidget { call, public_id } =
                self.take(|o| matches!(o, GatewayOutput::LookupWidget { .. }))
            else {
                unreachable!()
            };
            assert_eq!(public_id, "WIDGET_id-1");
            self.gateway.handle_route(self.now, 0, call, route(trunks));
            self.take(|o| {
                matches!(
                    o,
                    GatewayOutput::Cdr {
                        event: CdrEvent::Started { .. },
                        ..
                    }
                )
            });
            self.take(|o| {
                matches!(
                    o,
                    GatewayOutput::Media {
                        command: MediaCommand::Prepare { .. },
                        ..
                    }
                )
            });
            self.gateway
                .handle_media(self.now, call, MediaReply::Prepared(Some("pbx-offer".to_owned())));
            self.pbx_invite()
        }

        fn pbx_invite(&mut self) -> Request {
            match self.sent(false).pop() {
                Some(SipMessage::Request(request)) if request.method == Method::Invite => request,
                other => panic!("expected an INVITE toward the PBX, got {other:?}"),
            }
        }
    }

    fn pbx_response(invite: &Request, status: u16, body: &str) -> Vec<u8> {
        let mut response = message::response_to(invite, status, Some("pbxtag"));
        response.set_header("Contact", "<sip:1000@127.0.0.1:5060>");
        if !body.is_empty() {
            response.set_header("Content-Type", "application/sdp");
            response.body = body.as_bytes().to_vec();
        }
        if status == 401 {
            response.set_header(
                "WWW-Authenticate",
                "Digest realm=\"pbx\", nonce=\"n1\", algorithm=MD5, qop=\"auth\"",
            );
        }
        message::response_bytes(&response)
    }

    fn browser_request(method: &str, cseq: u32, to_tag: &str, body: &str, content_type: &str) -> Vec<u8> {
        format!(
            "{method} sip:callgate@callgate.invalid;transport=ws SIP/2.0\r\n\
             Via: SIP/2.0/WSS abc.invalid;branch=z9hG4bK{method}{cseq}\r\nMax-Forwards: 69\r\n\
             To: <sip:WIDGET_id-1@gateway.example>;tag={to_tag}\r\nFrom: <sip:anonymous@anonymous.invalid>;tag=browsertag\r\n\
             Call-ID: call-1\r\nCSeq: {cseq} {method}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn status_of(message: &SipMessage) -> u16 {
        match message {
            SipMessage::Response(response) => response.status_code.code(),
            SipMessage::Request(request) => panic!("expected a response, got {}", request.method),
        }
    }

    #[test]
    fn a_whole_call_from_invite_to_bye() {
        let mut h = Harness::new();
        let invite = h.call_to_pbx(vec![trunk(1, 5060)]);
        assert_eq!(invite.uri.to_string(), "sip:1000@127.0.0.1");
        assert_eq!(invite.from_addr().unwrap().sip_uri().unwrap().user(), Some("web"));
        assert_eq!(invite.body, b"pbx-offer");
        assert!(invite.header_value("Session-Expires").is_some());

        h.receive_from_pbx(5060, &pbx_response(&invite, 180, ""));
        assert_eq!(h.sent(true).iter().map(status_of).collect::<Vec<_>>(), vec![180]);
        h.receive_from_pbx(5060, &pbx_response(&invite, 200, "pbx-answer"));
        let to_pbx = h.sent(false);
        assert!(matches!(&to_pbx[0], SipMessage::Request(r) if r.method == Method::Ack));
        let GatewayOutput::Media { call, command } = h.take(|o| {
            matches!(
                o,
                GatewayOutput::Media {
                    command: MediaCommand::ApplyPbxAnswer { .. },
                    ..
                }
            )
        }) else {
            unreachable!()
        };
        assert_eq!(
            command,
            MediaCommand::ApplyPbxAnswer {
                sdp: "pbx-answer".to_owned(),
                early: false
            }
        );
        h.gateway.handle_media(
            h.now,
            call,
            MediaReply::Answered(Some("webrtc-answer".to_owned())),
        );
        let to_browser = h.sent(true);
        let SipMessage::Response(ok) = &to_browser[0] else {
            panic!()
        };
        assert_eq!(ok.status_code.code(), 200);
        assert_eq!(ok.body, b"webrtc-answer");
        let tag = ok.to_tag().unwrap();
        h.take(|o| matches!(o, GatewayOutput::Answered { .. }));

        h.receive_from_browser(&browser_request("ACK", 1, &tag, "", "application/sdp"));
        h.receive_from_browser(&browser_request(
            "INFO",
            2,
            &tag,
            "Signal=5\r\nDuration=160\r\n",
            "application/dtmf-relay",
        ));
        assert_eq!(h.sent(true).iter().map(status_of).collect::<Vec<_>>(), vec![200]);
        h.take(|o| {
            matches!(
                o,
                GatewayOutput::Media {
                    command: MediaCommand::Dtmf {
                        digit: '5',
                        duration_ms: 160
                    },
                    ..
                }
            )
        });

        h.receive_from_browser(&browser_request("BYE", 3, &tag, "", "application/sdp"));
        assert_eq!(h.sent(true).iter().map(status_of).collect::<Vec<_>>(), vec![200]);
        let to_pbx = h.sent(false);
        let SipMessage::Request(bye) = &to_pbx[0] else {
            panic!()
        };
        assert_eq!(bye.method, Method::Bye);
        assert_eq!(bye.to_tag().as_deref(), Some("pbxtag"));
        h.take(|o| {
            matches!(
                o,
                GatewayOutput::Media {
                    command: MediaCommand::Close,
                    ..
                }
            )
        });
        let ended = h.take(|o| {
            matches!(
                o,
                GatewayOutput::Cdr {
                    event: CdrEvent::Ended { .. },
                    ..
                }
            )
        });
        assert!(matches!(
            ended,
            GatewayOutput::Cdr {
                event: CdrEvent::Ended {
                    cause: EndCause::BrowserHangup,
                    ..
                },
                ..
            }
        ));
        assert_eq!(h.gateway.active_calls(), 0);
    }

    #[test]
    fn digest_challenge_is_answered_once_then_failover_on_timeout() {
        let mut h = Harness::new();
        let invite = h.call_to_pbx(vec![trunk(1, 5060), trunk(2, 5062)]);
        h.receive_from_pbx(5060, &pbx_response(&invite, 401, ""));
        let retried = h.pbx_invite();
        assert!(
            retried
                .header_value("Authorization")
                .is_some_and(|value| value.contains("nc=00000001"))
        );
        assert_eq!(retried.cseq().unwrap().seq, 2);
        // The same nonce again: refused credentials, so the next trunk is tried.
        h.receive_from_pbx(5060, &pbx_response(&retried, 401, ""));
        let next = h.pbx_invite();
        assert_eq!(next.uri.to_string(), "sip:1000@127.0.0.1:5062");
        // No answer at all from the second trunk: Timer B, then 503 to the browser.
        h.now += Duration::from_secs(33);
        let now = h.now;
        h.gateway.handle_timeout(now);
        let statuses: Vec<u16> = h.sent(true).iter().map(status_of).collect();
        assert_eq!(statuses, vec![503]);
    }

    #[test]
    fn a_tls_trunk_gets_a_tls_invite_and_a_tls_transport_error_fails_over() {
        let mut h = Harness::new();
        let mut tls = trunk(1, 5061);
        tls.transport = TrunkTransport::Tls;
        let invite = h.call_to_pbx(vec![tls, trunk(2, 5062)]);
        // rsip prints the transport parameter in capitals; URI parameters are case-insensitive.
        assert_eq!(invite.uri.to_string(), "sip:1000@127.0.0.1:5061;transport=TLS");
        let via = invite.header_value("Via").unwrap_or_default().to_owned();
        assert!(via.starts_with("SIP/2.0/TLS 127.0.0.1:5070;"), "{via}");
        assert_eq!(
            invite.header_value("Contact"),
            Some("<sip:callgate@127.0.0.1:5070;transport=tls>")
        );
        // A handshake refused (certificate not verified) fails that flow only: the next trunk is called.
        let tls_flow = Flow {
            transport: Transport::Tls,
            remote: SocketAddr::from(([127, 0, 0, 1], 5061)),
            connection: None,
        };
        let now = h.now;
        h.gateway.handle_transport_error(now, &tls_flow);
        let next = h.pbx_invite();
        assert_eq!(next.uri.to_string(), "sip:1000@127.0.0.1:5062");
    }

    #[test]
    fn cancel_before_the_answer_cancels_the_pbx() {
        let mut h = Harness::new();
        let invite = h.call_to_pbx(vec![trunk(1, 5060)]);
        h.receive_from_pbx(5060, &pbx_response(&invite, 180, ""));
        h.sent(true);
        let cancel = "CANCEL sip:WIDGET_id-1@gateway.example SIP/2.0\r\nVia: SIP/2.0/WSS abc.invalid;branch=z9hG4bKcall-1\r\n\
             Max-Forwards: 69\r\nTo: <sip:WIDGET_id-1@gateway.example>\r\n\
             From: <sip:anonymous@anonymous.invalid>;tag=browsertag\r\nCall-ID: call-1\r\nCSeq: 1 CANCEL\r\n\
             Content-Length: 0\r\n\r\n";
        h.receive_from_browser(cancel.as_bytes());
        let mut statuses: Vec<u16> = h.sent(true).iter().map(status_of).collect();
        statuses.sort_unstable();
        assert_eq!(statuses, vec![200, 487]);
        let to_pbx = h.sent(false);
        assert!(matches!(&to_pbx[0], SipMessage::Request(r) if r.method == Method::Cancel));
        // The CANCEL/200 race: the PBX answers anyway; it gets ACK and BYE.
        h.receive_from_pbx(5060, &pbx_response(&invite, 200, "late"));
        let methods: Vec<Method> = h
            .sent(false)
            .into_iter()
            .filter_map(|m| match m {
                SipMessage::Request(r) => Some(r.method),
                SipMessage::Response(_) => None,
            })
            .collect();
        assert_eq!(methods, vec![Method::Ack, Method::Bye]);
    }

    #[test]
    fn refusals_answer_with_their_codes() {
        let mut h = Harness::new();
        h.receive_from_browser(&invite("call-1", "WIDGET_id-1"));
        let GatewayOutput::LookupWidget { call, .. } =
            h.take(|o| matches!(o, GatewayOutput::LookupWidget { .. }))
        else {
            unreachable!()
        };
        h.gateway.handle_route(h.now, 0, call, RouteLookup::NotFound);
        assert_eq!(
            h.sent(true).iter().map(status_of).collect::<Vec<_>>(),
            vec![100, 404]
        );

        let mut h = Harness::new();
        h.gateway.handle_ws_opened(
            BROWSER,
            BrowserConnection {
                peer: "127.0.0.1:40000".parse().unwrap(),
                secure: true,
                origin: Some("https://evil.example".to_owned()),
                user_agent: None,
            },
        );
        h.receive_from_browser(&invite("call-1", "WIDGET_id-1"));
        let GatewayOutput::LookupWidget { call, .. } =
            h.take(|o| matches!(o, GatewayOutput::LookupWidget { .. }))
        else {
            unreachable!()
        };
        h.gateway
            .handle_route(h.now, 0, call, route(vec![trunk(1, 5060)]));
        assert_eq!(
            h.sent(true).iter().map(status_of).collect::<Vec<_>>(),
            vec![100, 403]
        );
        h.take(|o| {
            matches!(
                o,
                GatewayOutput::Refused {
                    refusal: Refusal::OriginNotAllowed { .. },
                    ..
                }
            )
        });

        let mut h = Harness::new();
        h.receive_from_browser(&invite("call-1", "not.a.widget"));
        h.receive_from_browser(b"INVITE sip:x SIP/2.0\r\nVia: garbage\r\n\r\n");
        h.receive_from_browser(b"\r\n\r\n");
        let statuses: Vec<u16> = h
            .sent(true)
            .iter()
            .filter_map(|m| match m {
                SipMessage::Response(r) => Some(r.status_code.code()),
                SipMessage::Request(_) => None,
            })
            .collect();
        assert_eq!(
            statuses,
            vec![100, 404],
            "the malformed INVITE's 400 echoes bad headers and is skipped"
        );
        assert_eq!(h.gateway.active_calls(), 0);
    }

    #[test]
    fn websocket_close_mid_call_sends_bye_to_the_pbx() {
        let mut h = Harness::new();
        let invite = h.call_to_pbx(vec![trunk(1, 5060)]);
        h.receive_from_pbx(5060, &pbx_response(&invite, 200, "pbx-answer"));
        let GatewayOutput::Media { call, .. } = h.take(|o| {
            matches!(
                o,
                GatewayOutput::Media {
                    command: MediaCommand::ApplyPbxAnswer { .. },
                    ..
                }
            )
        }) else {
            unreachable!()
        };
        h.gateway.handle_media(
            h.now,
            call,
            MediaReply::Answered(Some("webrtc-answer".to_owned())),
        );
        h.sent(true);
        h.sent(false);
        let now = h.now;
        h.gateway.handle_ws_closed(now, BROWSER);
        let methods: Vec<Method> = h
            .sent(false)
            .into_iter()
            .filter_map(|m| match m {
                SipMessage::Request(r) => Some(r.method),
                SipMessage::Response(_) => None,
            })
            .collect();
        assert_eq!(methods, vec![Method::Bye]);
    }

    /// The record events of `call`, in order.
    fn records(h: &mut Harness) -> Vec<CdrEvent> {
        h.drain();
        h.outputs
            .iter()
            .filter_map(|output| match output {
                GatewayOutput::Cdr { event, .. } => Some(event.clone()),
                _ => None,
            })
            .collect()
    }

    fn status_sent(h: &mut Harness) -> Vec<u16> {
        h.sent(true)
            .iter()
            .filter_map(|message| match message {
                SipMessage::Response(response) => Some(response.status_code.code()),
                SipMessage::Request(_) => None,
            })
            .collect()
    }

    #[test]
    fn an_unknown_widget_leaves_a_record_with_its_cause() {
        let mut h = Harness::new();
        h.receive_from_browser(&invite("call-1", "no-such-widget"));
        let GatewayOutput::LookupWidget { call, .. } =
            h.take(|o| matches!(o, GatewayOutput::LookupWidget { .. }))
        else {
            unreachable!()
        };
        h.gateway.handle_route(h.now, 0, call, RouteLookup::NotFound);
        assert_eq!(status_sent(&mut h), [100, 404]);
        let source: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            records(&mut h),
            [
                CdrEvent::Started {
                    widget: None,
                    dialled: Some("no-such-widget".to_owned()),
                    trunk: None,
                    source,
                    user_agent: Some("JsSIP 3.10".to_owned()),
                    destination: None,
                },
                CdrEvent::Ended {
                    cause: EndCause::Refused,
                    refusal: Some("unknown_widget"),
                    trunk: None,
                    browser_status: Some(404),
                    pbx_status: None,
                },
            ]
        );
    }

    #[test]
    fn attempts_refused_before_any_lookup_are_recorded() {
        let mut h = Harness::new();
        h.receive_from_browser(&invite("call-1", "bad%20id"));
        assert_eq!(status_sent(&mut h), [100, 404]);
        let started = |dialled: &str| CdrEvent::Started {
            widget: None,
            dialled: Some(dialled.to_owned()),
            trunk: None,
            source: "127.0.0.1".parse().unwrap(),
            user_agent: Some("JsSIP 3.10".to_owned()),
            destination: None,
        };
        let ended = |cause, refusal, status| CdrEvent::Ended {
            cause,
            refusal,
            trunk: None,
            browser_status: Some(status),
            pbx_status: None,
        };
        assert_eq!(
            records(&mut h),
            [
                started("bad%20id"),
                ended(EndCause::Refused, Some("unknown_widget"), 404)
            ]
        );
        assert!(h.outputs.iter().any(|o| matches!(
            o,
            GatewayOutput::Refused {
                refusal: Refusal::UnknownWidget,
                ..
            }
        )));
        h.outputs.clear();

        let no_offer = String::from_utf8(invite("call-2", "WIDGET_id-1"))
            .unwrap()
            .replace("Content-Type: application/sdp\r\n", "");
        h.receive_from_browser(no_offer.as_bytes());
        assert_eq!(status_sent(&mut h), [100, 488]);
        assert_eq!(
            records(&mut h),
            [started("WIDGET_id-1"), ended(EndCause::MediaFailed, None, 488)]
        );
        h.outputs.clear();

        let later = h.now + Duration::from_secs(30);
        h.gateway.drain(h.now, later);
        h.receive_from_browser(&invite("call-3", "WIDGET_id-1"));
        assert_eq!(status_sent(&mut h), [100, 503]);
        assert_eq!(
            records(&mut h),
            [
                started("WIDGET_id-1"),
                ended(EndCause::Refused, Some("gateway_full"), 503)
            ]
        );
        let mut calls: Vec<CallRef> = Vec::new();
        for output in &h.outputs {
            if let GatewayOutput::Cdr { call, .. } = output {
                calls.push(*call);
            }
        }
        assert_eq!(calls[0], calls[1], "one record per attempt");
        assert_eq!(h.gateway.active_calls(), 0);
    }
}
