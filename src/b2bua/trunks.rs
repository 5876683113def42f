//! Trunk health and registration, sans-IO: an OPTIONS keepalive per trunk that marks it up or down, and a
//! registration (RFC 3261 §10) for each trunk with `register` set, refreshed before it expires.
//!
//! [`TrunkMonitor`] does not own a transaction layer. Each request it wants sent leaves as
//! [`MonitorOutput::Send`]; the host (the gateway) starts a client transaction for it, remembers that the
//! transaction belongs to the monitor, and reports how it ended: [`TrunkMonitor::handle_response`] for its
//! responses (provisional ones are ignored) or [`TrunkMonitor::handle_failure`] when Timer F fired, the
//! transport failed, or the transaction could not be started at all. Every request must get one of the two:
//! a probe left without an outcome stops that trunk's keepalive.
//!
//! Trunk status comes from the keepalive alone: any response, even 404 or 405, proves that the host speaks
//! SIP; a timeout or transport error is a failure. A trunk starts Unknown and its first outcome decides;
//! afterwards [`MonitorSettings::failures_before_down`] failures in a row mark it down and one response
//! marks it up again. While a trunk is failing it is probed every
//! [`MonitorSettings::down_probe_interval`] so that recovery is noticed quickly.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rsip::{Method, Request, Response};

use crate::b2bua::gateway::{TrunkTransport, transport_param};
use crate::sip::digest::{Credentials, DigestClient, DigestError};
use crate::sip::message::{self, MessageError, MessageHeaders, NameAddr, Via};
use crate::sip::{Flow, Transport};

/// The default time between two OPTIONS probes of a trunk that answers.
pub const DEFAULT_OPTIONS_INTERVAL: Duration = Duration::from_secs(30);
/// The default time between probes of a trunk that is down or failing.
pub const DEFAULT_DOWN_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// The default number of failed probes in a row that mark a trunk down.
pub const DEFAULT_FAILURES_BEFORE_DOWN: u32 = 2;
/// The default time an OPTIONS probe may go unanswered before it counts as failed. Much shorter than the
/// transaction's own Timer F (64·T1, 32 s): a PBX that answers OPTIONS at all answers within milliseconds,
/// and waiting for Timer F twice would leave a dead trunk in use for over a minute.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The first wait before a failed registration is tried again; it doubles with each failure.
const REGISTER_RETRY_FIRST: Duration = Duration::from_secs(30);
/// The longest wait between registration attempts.
const REGISTER_RETRY_MAX: Duration = Duration::from_secs(300);
/// A refresh is sent at least this long before the binding expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// Refreshes are never sent more often than this, whatever expiry the registrar grants.
const REFRESH_MIN: Duration = Duration::from_secs(10);
/// The longest lifetime a 423 can make us ask for (the longest `register_expiry` a trunk may have).
const MAX_REGISTER_EXPIRY: Duration = Duration::from_secs(86_400);
/// The user part of From, Contact and the address of record when a trunk has no credentials.
const DEFAULT_USER: &str = "callgate";

/// What the monitor is told at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorSettings {
    /// `User-Agent` header value.
    pub user_agent: String,
    /// Our SIP UDP address as trunks must reach it (Via, Contact), if UDP is on.
    pub sip_udp: Option<SocketAddr>,
    /// Our SIP TCP address as trunks must reach it, if TCP is on.
    pub sip_tcp: Option<SocketAddr>,
    /// Time between OPTIONS probes of a trunk that answers; zero disables the keepalive (trunks then stay
    /// [`Health::Unknown`]).
    pub options_interval: Duration,
    /// Time between probes of a trunk that is down or has just failed a probe.
    pub down_probe_interval: Duration,
    /// Failed probes in a row that mark an up trunk down (at least 1).
    pub failures_before_down: u32,
    /// How long a probe may go unanswered before it counts as failed (a later answer is ignored).
    pub probe_timeout: Duration,
}

impl MonitorSettings {
    /// Settings with the default down-probe interval and failure count.
    pub fn new(
        user_agent: impl Into<String>,
        sip_udp: Option<SocketAddr>,
        sip_tcp: Option<SocketAddr>,
        options_interval: Duration,
    ) -> Self {
        MonitorSettings {
            user_agent: user_agent.into(),
            sip_udp,
            sip_tcp,
            options_interval,
            down_probe_interval: DEFAULT_DOWN_PROBE_INTERVAL,
            failures_before_down: DEFAULT_FAILURES_BEFORE_DOWN,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
        }
    }

    fn keepalive_enabled(&self) -> bool {
        !self.options_interval.is_zero()
    }
}

/// A trunk to watch, with its address already resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitoredTrunk {
    /// Database id.
    pub id: i64,
    /// Name, for status outputs and logs.
    pub name: String,
    /// The host as configured: the registrar domain and the Request-URI host.
    pub host: String,
    /// The configured port.
    pub port: u16,
    /// Where to send: the outbound proxy if any, else the trunk.
    pub address: SocketAddr,
    /// The outbound proxy as a URI for the Route header, if any.
    pub outbound_proxy: Option<String>,
    /// Transport.
    pub transport: TrunkTransport,
    /// Digest credentials; their user name is the registration's user.
    pub credentials: Option<Credentials>,
    /// Whether we register with the trunk.
    pub register: bool,
    /// The registration lifetime we ask for.
    pub register_expiry: Duration,
}

/// How a request the monitor asked for ended without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFailure {
    /// No final response before Timer F.
    Timeout,
    /// The transport failed, or the transaction could not be started.
    TransportError,
}

impl RequestFailure {
    /// The status code a failure stands for in logs: 408 or 503.
    pub fn status(self) -> u16 {
        match self {
            RequestFailure::Timeout => 408,
            RequestFailure::TransportError => 503,
        }
    }
}

/// What the keepalive knows about a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No probe has ended yet, or the keepalive is disabled.
    Unknown,
    /// The trunk answers.
    Up,
    /// The trunk stopped answering.
    Down,
}

/// One step of work for the host of the monitor.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "outputs are drained right after they are queued; boxing would add an allocation per request"
)]
pub enum MonitorOutput {
    /// Start a client transaction for `request` on `flow`, and report its outcome for `trunk_id` with
    /// [`TrunkMonitor::handle_response`] or [`TrunkMonitor::handle_failure`].
    Send {
        /// The trunk the request is for.
        trunk_id: i64,
        /// Where to send it.
        flow: Flow,
        /// The OPTIONS or REGISTER.
        request: Request,
    },
    /// The keepalive changed its verdict on a trunk: route calls to it or not.
    TrunkStatus {
        /// The trunk.
        trunk_id: i64,
        /// Its name.
        name: String,
        /// True when it answers.
        up: bool,
    },
    /// The registrar accepted our registration.
    Registered {
        /// The trunk.
        trunk_id: i64,
        /// The lifetime it granted.
        expires: Duration,
    },
    /// A registration attempt failed; it is retried later.
    RegistrationFailed {
        /// The trunk.
        trunk_id: i64,
        /// The final status, or 408 / 503 for a timeout / transport error.
        status: u16,
    },
}

/// Keeps every configured trunk probed and, where asked, registered: see the module docs.
#[derive(Debug)]
pub struct TrunkMonitor {
    settings: MonitorSettings,
    /// By id, so that timers fire in a stable order.
    trunks: BTreeMap<i64, TrunkEntry>,
    /// Registrations of removed or changed trunks that are being taken back.
    leaving: Vec<(i64, Registration)>,
    outputs: VecDeque<MonitorOutput>,
}

impl TrunkMonitor {
    /// A monitor with no trunks.
    pub fn new(settings: MonitorSettings) -> Self {
        TrunkMonitor {
            settings,
            trunks: BTreeMap::new(),
            leaving: Vec::new(),
            outputs: VecDeque::new(),
        }
    }

    /// Sets the trunks to watch, at start-up and whenever they are reloaded. Unchanged trunks keep their
    /// state; new ones are probed and registered at once; removed ones stop, and a registration they hold
    /// is taken back with Expires: 0. A trunk whose address changed is probed afresh, and one whose
    /// registration settings changed registers again at once.
    pub fn set_trunks(&mut self, now: Instant, trunks: Vec<MonitoredTrunk>) {
        let mut old = std::mem::take(&mut self.trunks);
        for trunk in trunks {
            if self.trunks.contains_key(&trunk.id) {
                tracing::warn!(trunk = %trunk.name, id = trunk.id, "trunk listed twice; the first is kept");
                continue;
            }
            let entry = match old.remove(&trunk.id) {
                Some(entry) => self.update(now, entry, trunk),
                None => self.start(now, trunk),
            };
            self.trunks.insert(entry.trunk.id, entry);
        }
        for (id, entry) in old {
            if let Some(registration) = entry.registration {
                self.retire(now, id, registration);
            }
        }
    }

    /// A response to a request from [`MonitorOutput::Send`]; `request` is the request as sent.
    pub fn handle_response(&mut self, now: Instant, trunk_id: i64, request: &Request, response: &Response) {
        if response.status_code.code() < 200 {
            return;
        }
        self.handle_outcome(now, trunk_id, request, Outcome::Response(response));
    }

    /// A request from [`MonitorOutput::Send`] ended without a final response.
    pub fn handle_failure(
        &mut self,
        now: Instant,
        trunk_id: i64,
        request: &Request,
        failure: RequestFailure,
    ) {
        self.handle_outcome(now, trunk_id, request, Outcome::Failure(failure));
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let TrunkMonitor {
            settings,
            trunks,
            outputs,
            ..
        } = self;
        for entry in trunks.values_mut() {
            if entry
                .keepalive
                .pending
                .as_ref()
                .is_some_and(|probe| after(probe.sent_at, settings.probe_timeout) <= now)
            {
                tracing::debug!(trunk = %entry.trunk.name, "OPTIONS unanswered");
                entry.probe_ended(now, false, settings, outputs);
            }
            if entry.keepalive.next_probe.is_some_and(|at| at <= now) {
                entry.probe(now, settings, outputs);
            }
            if let Some(registration) = entry.registration.as_mut()
                && registration.next_attempt.is_some_and(|at| at <= now)
            {
                registration.send(now, entry.trunk.id, false, settings, outputs);
            }
        }
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<MonitorOutput> {
        self.outputs.pop_front()
    }

    /// When [`TrunkMonitor::handle_timeout`] must run next.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.trunks
            .values()
            .flat_map(|entry| {
                let registration = entry
                    .registration
                    .as_ref()
                    .and_then(|registration| registration.next_attempt);
                let probe_deadline = entry
                    .keepalive
                    .pending
                    .as_ref()
                    .map(|probe| after(probe.sent_at, self.settings.probe_timeout));
                [entry.keepalive.next_probe, registration, probe_deadline]
            })
            .flatten()
            .min()
    }

    /// The keepalive's verdict on a trunk; `None` for a trunk not watched.
    pub fn health(&self, trunk_id: i64) -> Option<Health> {
        self.trunks.get(&trunk_id).map(|entry| entry.keepalive.health)
    }

    /// When the binding granted by the trunk's last 2xx to REGISTER ends (or ended); `None` before any.
    pub fn registered_until(&self, trunk_id: i64) -> Option<Instant> {
        self.trunks
            .get(&trunk_id)?
            .registration
            .as_ref()?
            .registered_until
    }

    fn start(&mut self, now: Instant, trunk: MonitoredTrunk) -> TrunkEntry {
        let target = Target::of(&trunk, &self.settings);
        let mut entry = TrunkEntry {
            keepalive: Keepalive::new(),
            registration: trunk.register.then(|| Registration::new(&trunk, target.clone())),
            target,
            trunk,
        };
        if self.settings.keepalive_enabled() {
            entry.probe(now, &self.settings, &mut self.outputs);
        }
        if let Some(registration) = entry.registration.as_mut() {
            registration.send(now, entry.trunk.id, false, &self.settings, &mut self.outputs);
        }
        entry
    }

    fn update(&mut self, now: Instant, mut entry: TrunkEntry, trunk: MonitoredTrunk) -> TrunkEntry {
        let target = Target::of(&trunk, &self.settings);
        let probe_again = target.path_changed(&entry.target);
        let mut register_now = false;
        entry.registration = match (entry.registration.take(), trunk.register) {
            (None, false) => None,
            (None, true) => {
                register_now = true;
                Some(Registration::new(&trunk, target.clone()))
            }
            (Some(old), false) => {
                self.retire(now, trunk.id, old);
                None
            }
            (Some(mut old), true) => {
                let new = Registration::new(&trunk, target.clone());
                if !old.same_binding(&new) {
                    self.retire(now, trunk.id, old);
                    register_now = true;
                    Some(new)
                } else {
                    if old.settings_differ(&new) {
                        // The same Call-ID and a higher CSeq replace the binding in place; a response to a
                        // request still in flight no longer matches and is ignored.
                        old.reconfigure(new);
                        register_now = true;
                    }
                    Some(old)
                }
            }
        };
        entry.target = target;
        entry.trunk = trunk;
        if probe_again {
            // Another host or transport: what the old probes said no longer applies.
            entry.keepalive.restart();
            if self.settings.keepalive_enabled() {
                entry.probe(now, &self.settings, &mut self.outputs);
            }
        }
        if register_now && let Some(registration) = entry.registration.as_mut() {
            registration.send(now, entry.trunk.id, false, &self.settings, &mut self.outputs);
        }
        entry
    }

    /// Takes a registration back: at once if it is idle and bound, after its pending request otherwise.
    fn retire(&mut self, now: Instant, trunk_id: i64, mut registration: Registration) {
        registration.leaving = true;
        registration.next_attempt = None;
        if registration.pending.is_none() {
            if !registration.is_bound(now) {
                return;
            }
            registration.send(now, trunk_id, false, &self.settings, &mut self.outputs);
            if registration.pending.is_none() {
                return;
            }
        }
        self.leaving.push((trunk_id, registration));
    }

    fn handle_outcome(&mut self, now: Instant, trunk_id: i64, request: &Request, outcome: Outcome<'_>) {
        let Some(call_id) = request.call_id() else {
            return;
        };
        let Ok(cseq) = request.cseq() else { return };
        let TrunkMonitor {
            settings,
            trunks,
            leaving,
            outputs,
        } = self;
        match request.method {
            Method::Options => {
                if let Some(entry) = trunks.get_mut(&trunk_id)
                    && entry
                        .keepalive
                        .pending
                        .as_ref()
                        .is_some_and(|probe| probe.call_id == call_id)
                {
                    entry.probe_ended(now, outcome.is_response(), settings, outputs);
                }
            }
            Method::Register => {
                let current = trunks
                    .get_mut(&trunk_id)
                    .and_then(|entry| entry.registration.as_mut())
                    .filter(|registration| registration.awaits(call_id, cseq.seq));
                if let Some(registration) = current {
                    registration.handle_outcome(now, trunk_id, outcome, settings, outputs);
                    return;
                }
                let Some(index) = leaving
                    .iter()
                    .position(|(id, registration)| *id == trunk_id && registration.awaits(call_id, cseq.seq))
                else {
                    return;
                };
                let (_, registration) = &mut leaving[index];
                registration.handle_outcome(now, trunk_id, outcome, settings, outputs);
                if registration.pending.is_none() {
                    leaving.swap_remove(index);
                }
            }
            _ => {}
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy)]
enum Outcome<'a> {
    /// A final response.
    Response(&'a Response),
    /// No final response.
    Failure(RequestFailure),
}

impl Outcome<'_> {
    fn is_response(&self) -> bool {
        matches!(self, Outcome::Response(_))
    }
}

/// Where a trunk's requests go and how they are addressed, worked out once per configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// The trunk's transport.
    transport: TrunkTransport,
    /// The flow and our own address on it; `None` when we have no listener for the trunk's transport.
    path: Option<(Flow, SocketAddr)>,
    /// `sip:host:port`, with `;transport=tcp` for TCP.
    request_uri: String,
    /// The host part of the address of record.
    domain: String,
    /// `;transport=tcp` or nothing, for the Contact.
    transport_param: &'static str,
    /// The Route header value toward an outbound proxy.
    route: Option<String>,
}

impl Target {
    fn of(trunk: &MonitoredTrunk, settings: &MonitorSettings) -> Self {
        let (transport, local) = match trunk.transport {
            TrunkTransport::Udp => (Transport::Udp, settings.sip_udp),
            TrunkTransport::Tcp => (Transport::Tcp, settings.sip_tcp),
            // TLS is a client transport: requests and their answers share the connection we open, and
            // the Via and Contact carry our TCP (else UDP) address, as for calls.
            TrunkTransport::Tls => (Transport::Tls, settings.sip_tcp.or(settings.sip_udp)),
        };
        let transport_param = transport_param(trunk.transport);
        let path = local.map(|local| {
            let flow = Flow {
                transport,
                remote: trunk.address,
                connection: None,
            };
            (flow, local)
        });
        let domain = bracketed(&trunk.host);
        Target {
            transport: trunk.transport,
            path,
            request_uri: format!("sip:{domain}:{}{transport_param}", trunk.port),
            domain,
            transport_param,
            route: trunk.outbound_proxy.as_ref().map(|proxy| format!("<{proxy};lr>")),
        }
    }

    /// True when requests now go elsewhere or another way.
    fn path_changed(&self, previous: &Target) -> bool {
        self.path != previous.path || self.request_uri != previous.request_uri || self.route != previous.route
    }

    /// A request with the headers every out-of-dialog request of ours carries.
    fn request(
        &self,
        method: Method,
        from: &str,
        to: &str,
        call_id: &str,
        seq: u32,
        settings: &MonitorSettings,
    ) -> Result<(Flow, Request), MonitorError> {
        let Some((flow, local)) = &self.path else {
            return Err(MonitorError::NoListener(self.transport));
        };
        let mut request = Request {
            method,
            uri: message::parse_uri(&self.request_uri)?,
            version: rsip::Version::V2,
            headers: Default::default(),
            body: Vec::new(),
        };
        let via = Via::outgoing(flow.transport, &ip_text(local.ip()), Some(local.port()));
        request.push_header("Via", via.to_string());
        request.push_header("Max-Forwards", message::DEFAULT_MAX_FORWARDS.to_string());
        if let Some(route) = &self.route {
            request.push_header("Route", route.clone());
        }
        request.push_header("From", format!("<{from}>;tag={}", message::new_tag()));
        request.push_header("To", format!("<{to}>"));
        request.push_header("Call-ID", call_id);
        request.push_header("CSeq", format!("{seq} {method}"));
        request.push_header("User-Agent", settings.user_agent.clone());
        Ok((flow.clone(), request))
    }

    /// Our own address on this trunk's flow, as a host for From and Contact.
    fn local(&self) -> Option<SocketAddr> {
        self.path.as_ref().map(|(_, local)| *local)
    }
}

#[derive(Debug)]
struct TrunkEntry {
    trunk: MonitoredTrunk,
    target: Target,
    keepalive: Keepalive,
    registration: Option<Registration>,
}

impl TrunkEntry {
    fn probe(&mut self, now: Instant, settings: &MonitorSettings, outputs: &mut VecDeque<MonitorOutput>) {
        self.keepalive.next_probe = None;
        self.keepalive.seq = self.keepalive.seq.wrapping_add(1);
        let call_id = message::new_call_id();
        let from = match self.target.local() {
            Some(local) => format!("sip:{DEFAULT_USER}@{}", ip_text(local.ip())),
            None => format!("sip:{DEFAULT_USER}@invalid"),
        };
        let built = self.target.request(
            Method::Options,
            &from,
            &self.target.request_uri,
            &call_id,
            self.keepalive.seq,
            settings,
        );
        self.keepalive.pending = Some(Probe {
            call_id,
            sent_at: now,
        });
        match built {
            Ok((flow, mut request)) => {
                request.push_header("Accept", "application/sdp");
                outputs.push_back(MonitorOutput::Send {
                    trunk_id: self.trunk.id,
                    flow,
                    request,
                });
            }
            Err(error) => {
                tracing::debug!(trunk = %self.trunk.name, %error, "OPTIONS not sent");
                self.probe_ended(now, false, settings, outputs);
            }
        }
    }

    fn probe_ended(
        &mut self,
        now: Instant,
        answered: bool,
        settings: &MonitorSettings,
        outputs: &mut VecDeque<MonitorOutput>,
    ) {
        let Some(probe) = self.keepalive.pending.take() else {
            return;
        };
        let keepalive = &mut self.keepalive;
        if answered {
            keepalive.failures = 0;
            keepalive.health = Health::Up;
            keepalive.next_probe = Some(after(probe.sent_at, settings.options_interval).max(now));
        } else {
            keepalive.failures = keepalive.failures.saturating_add(1);
            if keepalive.health == Health::Unknown
                || keepalive.failures >= settings.failures_before_down.max(1)
            {
                keepalive.health = Health::Down;
            }
            keepalive.next_probe = Some(after(now, settings.down_probe_interval));
        }
        let up = match keepalive.health {
            Health::Up => true,
            Health::Down => false,
            Health::Unknown => return,
        };
        if keepalive.reported != Some(up) {
            keepalive.reported = Some(up);
            tracing::debug!(trunk = %self.trunk.name, up, "trunk status changed");
            outputs.push_back(MonitorOutput::TrunkStatus {
                trunk_id: self.trunk.id,
                name: self.trunk.name.clone(),
                up,
            });
        }
    }
}

/// The OPTIONS keepalive of one trunk.
#[derive(Debug)]
struct Keepalive {
    health: Health,
    /// What the host was last told, so that a restarted keepalive reports only real changes.
    reported: Option<bool>,
    /// Failed probes in a row.
    failures: u32,
    /// `None` while a probe is out or when the keepalive is disabled.
    next_probe: Option<Instant>,
    pending: Option<Probe>,
    seq: u32,
}

impl Keepalive {
    fn new() -> Self {
        Keepalive {
            health: Health::Unknown,
            reported: None,
            failures: 0,
            next_probe: None,
            pending: None,
            seq: 0,
        }
    }

    fn restart(&mut self) {
        self.health = Health::Unknown;
        self.failures = 0;
        self.pending = None;
        self.next_probe = None;
    }
}

/// An OPTIONS waiting for its outcome.
#[derive(Debug)]
struct Probe {
    call_id: String,
    sent_at: Instant,
}

/// The registration of one trunk (RFC 3261 §10.2): one Call-ID for its whole life, CSeq rising with each
/// REGISTER.
#[derive(Debug)]
struct Registration {
    target: Target,
    credentials: Option<Credentials>,
    /// `sip:user@domain`.
    address_of_record: String,
    /// Our Contact URI.
    contact: String,
    /// The lifetime we ask for; raised by a 423's Min-Expires.
    requested: Duration,
    call_id: String,
    seq: u32,
    digest: Option<DigestClient>,
    pending: Option<PendingRegister>,
    /// When to send the next REGISTER (refresh or retry); `None` while one is out.
    next_attempt: Option<Instant>,
    registered_until: Option<Instant>,
    /// Failed attempts in a row, for the backoff.
    failures: u32,
    /// A 423 was already answered in this attempt: a second one is a failure, not a loop.
    interval_raised: bool,
    /// The trunk is gone or changed: take the binding back, then forget the registration.
    leaving: bool,
}

/// A REGISTER waiting for its outcome.
#[derive(Debug)]
struct PendingRegister {
    seq: u32,
    /// Expires: 0, taking the binding back.
    unregister: bool,
    /// Its credentials answer a challenge received in this attempt: another challenge means they were
    /// refused.
    answers_challenge: bool,
}

impl Registration {
    fn new(trunk: &MonitoredTrunk, target: Target) -> Self {
        let user = trunk
            .credentials
            .as_ref()
            .map_or(DEFAULT_USER, |credentials| credentials.username.as_str());
        let contact = match target.local() {
            Some(local) => format!("sip:{user}@{}{}", socket_text(local), target.transport_param),
            None => format!("sip:{user}@invalid"),
        };
        Registration {
            address_of_record: format!("sip:{user}@{}", target.domain),
            contact,
            target,
            credentials: trunk.credentials.clone(),
            requested: trunk.register_expiry,
            call_id: message::new_call_id(),
            seq: 0,
            digest: None,
            pending: None,
            next_attempt: None,
            registered_until: None,
            failures: 0,
            interval_raised: false,
            leaving: false,
        }
    }

    /// True when a REGISTER from `other` would update the same binding at the same registrar.
    fn same_binding(&self, other: &Registration) -> bool {
        self.address_of_record == other.address_of_record
            && self.contact == other.contact
            && self.target.request_uri == other.target.request_uri
    }

    fn settings_differ(&self, other: &Registration) -> bool {
        self.target != other.target
            || self.credentials != other.credentials
            || self.requested != other.requested
    }

    /// Takes the settings of `new` for the same binding, keeping Call-ID and CSeq.
    fn reconfigure(&mut self, new: Registration) {
        if self.credentials != new.credentials {
            self.digest = None;
        }
        self.target = new.target;
        self.credentials = new.credentials;
        self.requested = new.requested;
        self.failures = 0;
    }

    fn is_bound(&self, now: Instant) -> bool {
        self.registered_until.is_some_and(|until| until > now)
    }

    fn awaits(&self, call_id: &str, seq: u32) -> bool {
        self.call_id == call_id && self.pending.as_ref().is_some_and(|pending| pending.seq == seq)
    }

    /// Sends a REGISTER (Expires: 0 when leaving), with credentials once a challenge is known.
    fn send(
        &mut self,
        now: Instant,
        trunk_id: i64,
        answers_challenge: bool,
        settings: &MonitorSettings,
        outputs: &mut VecDeque<MonitorOutput>,
    ) {
        if !answers_challenge {
            self.interval_raised = false;
        }
        self.next_attempt = None;
        self.seq = self.seq.wrapping_add(1);
        let expires = if self.leaving {
            Duration::ZERO
        } else {
            self.requested
        };
        self.pending = Some(PendingRegister {
            seq: self.seq,
            unregister: self.leaving,
            answers_challenge,
        });
        match self.register_request(expires, settings) {
            Ok((flow, request)) => outputs.push_back(MonitorOutput::Send {
                trunk_id,
                flow,
                request,
            }),
            Err(error) => {
                tracing::debug!(trunk_id, %error, "REGISTER not sent");
                self.handle_outcome(
                    now,
                    trunk_id,
                    Outcome::Failure(RequestFailure::TransportError),
                    settings,
                    outputs,
                );
            }
        }
    }

    fn register_request(
        &mut self,
        expires: Duration,
        settings: &MonitorSettings,
    ) -> Result<(Flow, Request), MonitorError> {
        let (flow, mut request) = self.target.request(
            Method::Register,
            &self.address_of_record,
            &self.address_of_record,
            &self.call_id,
            self.seq,
            settings,
        )?;
        request.push_header("Contact", format!("<{}>", self.contact));
        request.push_header("Expires", expires.as_secs().to_string());
        if let Some(digest) = self.digest.as_mut()
            && digest.is_challenged()
        {
            digest.authorize(&mut request)?;
        }
        Ok((flow, request))
    }

    fn handle_outcome(
        &mut self,
        now: Instant,
        trunk_id: i64,
        outcome: Outcome<'_>,
        settings: &MonitorSettings,
        outputs: &mut VecDeque<MonitorOutput>,
    ) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let response = match outcome {
            Outcome::Response(response) => response,
            Outcome::Failure(failure) => {
                return self.failed(now, trunk_id, &pending, failure.status(), settings, outputs);
            }
        };
        let status = response.status_code.code();
        match status {
            200..=299 if pending.unregister => {
                self.registered_until = None;
                tracing::debug!(trunk_id, "registration taken back");
            }
            200..=299 => {
                // A registrar may shorten the lifetime, not lengthen it (RFC 3261 §10.3 step 7): capping
                // also keeps a hostile value from overflowing the clock.
                let granted = granted_expiry(response, &self.contact)
                    .unwrap_or(self.requested)
                    .min(self.requested);
                self.registered_until = Some(now + granted);
                self.failures = 0;
                outputs.push_back(MonitorOutput::Registered {
                    trunk_id,
                    expires: granted,
                });
                if self.leaving {
                    self.send(now, trunk_id, false, settings, outputs);
                } else {
                    self.next_attempt = Some(now + refresh_delay(granted));
                }
            }
            401 | 407 => {
                // Taken even when it is not answered now: the next attempt starts from the newest nonce.
                let answerable = self.take_challenge(response);
                if answerable && !pending.answers_challenge {
                    self.send(now, trunk_id, true, settings, outputs);
                } else {
                    self.failed(now, trunk_id, &pending, status, settings, outputs);
                }
            }
            423 if !pending.unregister && !self.interval_raised => {
                let raised = min_expires(response)
                    .filter(|&minimum| minimum > self.requested && minimum <= MAX_REGISTER_EXPIRY);
                match raised {
                    Some(minimum) => {
                        self.requested = minimum;
                        self.interval_raised = true;
                        self.send(now, trunk_id, true, settings, outputs);
                    }
                    None => self.failed(now, trunk_id, &pending, status, settings, outputs),
                }
            }
            _ => self.failed(now, trunk_id, &pending, status, settings, outputs),
        }
    }

    /// Takes a 401/407 challenge; false when there are no credentials or the challenge cannot be answered.
    fn take_challenge(&mut self, response: &Response) -> bool {
        let Some(credentials) = self.credentials.clone() else {
            return false;
        };
        self.digest
            .get_or_insert_with(|| DigestClient::new(credentials))
            .handle_challenge(response)
            .is_ok()
    }

    fn failed(
        &mut self,
        now: Instant,
        trunk_id: i64,
        pending: &PendingRegister,
        status: u16,
        settings: &MonitorSettings,
        outputs: &mut VecDeque<MonitorOutput>,
    ) {
        if pending.unregister {
            tracing::debug!(
                trunk_id,
                status,
                "registration not taken back; it lapses on its own"
            );
            return;
        }
        outputs.push_back(MonitorOutput::RegistrationFailed { trunk_id, status });
        if self.leaving {
            // A refresh that failed on the way out: a binding from before may still hold.
            if self.is_bound(now) {
                self.send(now, trunk_id, false, settings, outputs);
            }
            return;
        }
        self.failures = self.failures.saturating_add(1);
        self.next_attempt = Some(now + retry_delay(self.failures));
    }
}

/// Why a request for a trunk could not be built; it then counts as a transport error.
#[derive(Debug, thiserror::Error)]
enum MonitorError {
    /// We have no listener for the trunk's transport, so no Via or Contact to give.
    #[error("no listener for {0:?}")]
    NoListener(TrunkTransport),
    /// The configured host makes no valid URI.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The digest answer could not be computed.
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// `delay` after `instant`, or a year after it when a configured delay is absurdly long.
fn after(instant: Instant, delay: Duration) -> Instant {
    instant
        .checked_add(delay)
        .unwrap_or_else(|| instant + Duration::from_secs(365 * 86_400))
}

/// When to refresh a binding granted for `expires`: at half of it, or 30 s before it ends if that is
/// sooner, but not within 10 s.
fn refresh_delay(expires: Duration) -> Duration {
    (expires / 2)
        .min(expires.saturating_sub(REFRESH_MARGIN))
        .max(REFRESH_MIN)
}

/// The wait after the `failures`-th failed registration attempt in a row: 30 s doubling up to 5 min.
fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    REGISTER_RETRY_FIRST
        .saturating_mul(1 << doublings)
        .min(REGISTER_RETRY_MAX)
}

/// The lifetime a 2xx to REGISTER grants our contact (RFC 3261 §10.2.4): the `expires` parameter of our
/// binding among the Contacts, else the Expires header.
fn granted_expiry(response: &Response, contact: &str) -> Option<Duration> {
    let ours = message::parse_uri(contact).ok()?;
    let from_contact = response
        .header_values("Contact")
        .filter_map(|value| NameAddr::parse(value).ok())
        .find(|binding| {
            binding.sip_uri().is_ok_and(|uri| {
                uri.user() == ours.user()
                    && uri
                        .host_with_port
                        .to_string()
                        .eq_ignore_ascii_case(&ours.host_with_port.to_string())
            })
        })
        .and_then(|binding| {
            binding
                .param("expires")
                .and_then(|value| value.trim().parse().ok())
        });
    let seconds = from_contact.or_else(|| response.header_value("Expires")?.trim().parse().ok())?;
    Some(Duration::from_secs(seconds))
}

/// The Min-Expires of a 423 Interval Too Brief.
fn min_expires(response: &Response) -> Option<Duration> {
    let seconds: u64 = response.header_value("Min-Expires")?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

/// A configured host as a URI host: IPv6 literals get their brackets.
fn bracketed(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

fn socket_text(address: SocketAddr) -> String {
    format!("{}:{}", ip_text(address.ip()), address.port())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::sip::digest;
    use crate::sip::transaction::{
        Output, TransactionConfig, TransactionEvent, TransactionKey, Transactions,
    };

    const SECOND: Duration = Duration::from_secs(1);
    const MILLISECOND: Duration = Duration::from_millis(1);

    fn settings(options_interval: Duration) -> MonitorSettings {
        MonitorSettings::new(
            "callgate-test",
            Some("127.0.0.1:5070".parse().unwrap()),
            Some("127.0.0.1:5071".parse().unwrap()),
            options_interval,
        )
    }

    fn trunk(id: i64, register: bool) -> MonitoredTrunk {
        MonitoredTrunk {
            id,
            name: format!("pbx{id}"),
            host: "pbx.example".to_owned(),
            port: 5060,
            address: SocketAddr::from(([127, 0, 0, 1], 5060 + id as u16)),
            outbound_proxy: None,
            transport: TrunkTransport::Udp,
            credentials: Some(Credentials {
                username: "gw".to_owned(),
                password: "secret".to_owned(),
            }),
            register,
            register_expiry: Duration::from_secs(3600),
        }
    }

    /// The monitor on a simulated clock, with what it sent and reported collected.
    struct Harness {
        monitor: TrunkMonitor,
        start: Instant,
        now: Instant,
        sent: Vec<(i64, Flow, Request)>,
        events: Vec<MonitorOutput>,
    }

    impl Harness {
        fn new(options_interval: Duration, trunks: Vec<MonitoredTrunk>) -> Self {
            let start = Instant::now();
            let mut harness = Harness {
                monitor: TrunkMonitor::new(settings(options_interval)),
                start,
                now: start,
                sent: Vec::new(),
                events: Vec::new(),
            };
            harness.set_trunks(trunks);
            harness
        }

        fn set_trunks(&mut self, trunks: Vec<MonitoredTrunk>) {
            self.monitor.set_trunks(self.now, trunks);
            self.drain();
        }

        fn drain(&mut self) {
            while let Some(output) = self.monitor.poll_output() {
                match output {
                    MonitorOutput::Send {
                        trunk_id,
                        flow,
                        request,
                    } => self.sent.push((trunk_id, flow, request)),
                    event => self.events.push(event),
                }
            }
        }

        fn elapsed(&self) -> Duration {
            self.now - self.start
        }

        /// Moves the clock to `start + at`, running every timer due on the way.
        fn run_until(&mut self, at: Duration) {
            let end = self.start + at;
            while let Some(due) = self.monitor.next_timeout().filter(|&due| due <= end) {
                self.now = self.now.max(due);
                self.monitor.handle_timeout(self.now);
                self.drain();
            }
            self.now = end;
        }

        /// The only request sent since the last call, with the time it left.
        fn one_sent(&mut self) -> (i64, Flow, Request) {
            assert_eq!(self.sent.len(), 1, "expected one request, got {:?}", self.sent);
            self.sent.remove(0)
        }

        /// Runs the clock until the next request leaves; returns it and when it left.
        fn next_sent(&mut self) -> (Duration, Request) {
            if self.sent.is_empty() {
                let due = self.monitor.next_timeout().expect("a timer is armed");
                self.run_until(due - self.start);
            }
            let (_, _, request) = self.one_sent();
            (self.elapsed(), request)
        }

        fn events(&mut self) -> Vec<MonitorOutput> {
            std::mem::take(&mut self.events)
        }

        fn respond(
            &mut self,
            trunk_id: i64,
            request: &Request,
            status: u16,
            edit: impl FnOnce(&mut Response),
        ) {
            let mut response = message::response_to(request, status, Some("pbxtag"));
            edit(&mut response);
            self.monitor
                .handle_response(self.now, trunk_id, request, &response);
            self.drain();
        }

        fn fail(&mut self, trunk_id: i64, request: &Request, failure: RequestFailure) {
            self.monitor.handle_failure(self.now, trunk_id, request, failure);
            self.drain();
        }
    }

    fn status_event(trunk_id: i64, up: bool) -> MonitorOutput {
        MonitorOutput::TrunkStatus {
            trunk_id,
            name: format!("pbx{trunk_id}"),
            up,
        }
    }

    fn challenge(nonce: &str) -> impl FnOnce(&mut Response) {
        let value = format!("Digest realm=\"pbx\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\"");
        move |response: &mut Response| response.set_header("WWW-Authenticate", value)
    }

    fn header<'a>(request: &'a Request, name: &str) -> &'a str {
        request
            .header_value(name)
            .unwrap_or_else(|| panic!("no {name} in {request}"))
    }

    fn seq(request: &Request) -> u32 {
        request.cseq().unwrap().seq
    }

    /// Checks the request's digest answer with the trunk's password, as a registrar would.
    fn authorized(request: &Request, nc: &str) -> bool {
        let Some(value) = request.header_value("Authorization") else {
            return false;
        };
        value.contains(&format!("nc={nc}"))
            && digest::verify("REGISTER", &request.uri.to_string(), value, "secret", &[]).unwrap()
    }

    #[test]
    fn options_probes_every_interval_and_any_response_means_up() {
        let mut h = Harness::new(30 * SECOND, vec![trunk(1, false)]);
        let (trunk_id, flow, options) = h.one_sent();
        assert_eq!(trunk_id, 1);
        assert_eq!(flow.remote, "127.0.0.1:5061".parse().unwrap());
        assert_eq!(flow.transport, Transport::Udp);
        assert_eq!(options.method, Method::Options);
        assert_eq!(options.uri.to_string(), "sip:pbx.example:5060");
        let via = options.top_via().unwrap();
        assert_eq!(via.sent_by(), "127.0.0.1:5070");
        assert!(via.branch().is_some_and(|branch| branch.starts_with("z9hG4bK")));
        assert_eq!(header(&options, "Max-Forwards"), "70");
        assert!(options.from_tag().is_some());
        assert_eq!(options.to_addr().unwrap().uri, "sip:pbx.example:5060");
        assert_eq!(options.cseq().unwrap().method, Method::Options);
        assert_eq!(header(&options, "User-Agent"), "callgate-test");
        assert!(
            String::from_utf8(message::request_bytes(&options))
                .unwrap()
                .contains("Content-Length: 0\r\n")
        );
        assert_eq!(h.monitor.health(1), Some(Health::Unknown));

        // A provisional response decides nothing.
        h.respond(1, &options, 100, |_| {});
        assert!(h.events().is_empty());
        h.respond(1, &options, 200, |_| {});
        assert_eq!(h.events(), vec![status_event(1, true)]);
        assert_eq!(h.monitor.health(1), Some(Health::Up));

        let mut call_ids = vec![options.call_id().unwrap().to_owned()];
        let mut seqs = vec![seq(&options)];
        for (round, status) in [(1u32, 404), (2, 405), (3, 200)] {
            let (at, options) = h.next_sent();
            assert_eq!(at, 30 * SECOND * round);
            h.now += Duration::from_millis(40);
            h.respond(1, &options, status, |_| {});
            assert!(h.events().is_empty(), "still up after {status}");
            call_ids.push(options.call_id().unwrap().to_owned());
            seqs.push(seq(&options));
        }
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        call_ids.dedup();
        assert_eq!(call_ids.len(), 4, "each probe is a new call");
    }

    #[test]
    fn two_failures_mark_down_faster_probes_follow_and_one_answer_marks_up() {
        // Failures reported by the transaction (Timer F, transport errors) before the probe's own timeout.
        let mut h = Harness::new(30 * SECOND, Vec::new());
        h.monitor = TrunkMonitor::new(MonitorSettings {
            probe_timeout: 60 * SECOND,
            ..settings(30 * SECOND)
        });
        h.set_trunks(vec![trunk(1, false)]);
        let (_, _, options) = h.one_sent();
        h.respond(1, &options, 200, |_| {});
        assert_eq!(h.events(), vec![status_event(1, true)]);

        let (at, options) = h.next_sent();
        assert_eq!(at, 30 * SECOND);
        h.run_until(62 * SECOND);
        h.fail(1, &options, RequestFailure::Timeout);
        assert!(h.events().is_empty(), "one failure is not enough");
        assert_eq!(h.monitor.health(1), Some(Health::Up));

        let (at, options) = h.next_sent();
        assert_eq!(at, 67 * SECOND, "retried after the down-probe interval");
        h.run_until(99 * SECOND);
        h.fail(1, &options, RequestFailure::Timeout);
        assert_eq!(h.events(), vec![status_event(1, false)]);
        assert_eq!(h.monitor.health(1), Some(Health::Down));

        // While down: every 5 s, without repeating the status.
        let (at, options) = h.next_sent();
        assert_eq!(at, 104 * SECOND);
        h.fail(1, &options, RequestFailure::TransportError);
        assert!(h.events().is_empty());
        let (at, options) = h.next_sent();
        assert_eq!(at, 109 * SECOND);
        h.respond(1, &options, 503, |_| {});
        assert_eq!(h.events(), vec![status_event(1, true)]);
        let (at, _) = h.next_sent();
        assert_eq!(at, 139 * SECOND, "back to the normal interval");
    }

    #[test]
    fn unanswered_probes_fail_after_the_probe_timeout_and_late_answers_are_ignored() {
        let mut h = Harness::new(30 * SECOND, vec![trunk(1, false)]);
        let (_, _, options) = h.one_sent();
        h.respond(1, &options, 200, |_| {});
        assert_eq!(h.events(), vec![status_event(1, true)]);

        let (at, _) = h.next_sent();
        assert_eq!(at, 30 * SECOND);
        h.run_until(34 * SECOND);
        assert!(h.sent.is_empty() && h.events().is_empty());
        h.run_until(35 * SECOND);
        assert!(h.events().is_empty(), "one unanswered probe is not enough");
        assert_eq!(h.monitor.health(1), Some(Health::Up));

        let (at, options) = h.next_sent();
        assert_eq!(at, 40 * SECOND, "retried after the down-probe interval");
        h.run_until(45 * SECOND);
        assert_eq!(
            h.events(),
            vec![status_event(1, false)],
            "down 15 s after the last answer was due"
        );
        h.respond(1, &options, 200, |_| {});
        assert!(
            h.events().is_empty(),
            "an answer after the timeout changes nothing"
        );
        assert_eq!(h.monitor.health(1), Some(Health::Down));

        let (at, options) = h.next_sent();
        assert_eq!(at, 50 * SECOND);
        h.respond(1, &options, 200, |_| {});
        assert_eq!(h.events(), vec![status_event(1, true)]);
        // A transaction outcome for a probe already decided is ignored.
        h.fail(1, &options, RequestFailure::Timeout);
        assert!(h.events().is_empty());
        assert_eq!(h.monitor.health(1), Some(Health::Up));
    }

    #[test]
    fn the_first_outcome_decides_an_unknown_trunk() {
        let mut h = Harness::new(30 * SECOND, vec![trunk(1, false), trunk(2, false)]);
        let sent = std::mem::take(&mut h.sent);
        assert_eq!(sent.len(), 2);
        h.fail(1, &sent[0].2, RequestFailure::Timeout);
        h.respond(2, &sent[1].2, 200, |_| {});
        assert_eq!(h.events(), vec![status_event(1, false), status_event(2, true)]);
        // A late answer to a probe that already failed changes nothing.
        h.respond(1, &sent[0].2, 200, |_| {});
        assert!(h.events().is_empty());
        assert_eq!(h.monitor.health(1), Some(Health::Down));
    }

    #[test]
    fn a_zero_interval_disables_the_keepalive() {
        let mut h = Harness::new(Duration::ZERO, vec![trunk(1, false)]);
        assert!(h.sent.is_empty());
        assert_eq!(h.monitor.next_timeout(), None);
        h.run_until(3600 * SECOND);
        assert!(h.sent.is_empty());
        assert_eq!(h.monitor.health(1), Some(Health::Unknown));
    }

    #[test]
    fn a_trunk_without_a_listener_for_its_transport_is_down() {
        let mut tcp = trunk(1, true);
        tcp.transport = TrunkTransport::Tcp;
        let mut h = Harness::new(30 * SECOND, Vec::new());
        h.monitor = TrunkMonitor::new(MonitorSettings {
            sip_tcp: None,
            ..settings(30 * SECOND)
        });
        h.set_trunks(vec![tcp]);
        assert!(h.sent.is_empty());
        assert_eq!(
            h.events(),
            vec![
                status_event(1, false),
                MonitorOutput::RegistrationFailed {
                    trunk_id: 1,
                    status: 503
                }
            ]
        );
    }

    #[test]
    fn a_tls_trunk_is_probed_and_registered_over_tls_from_the_tcp_address() {
        let mut tls = trunk(1, true);
        tls.transport = TrunkTransport::Tls;
        tls.port = 5061;
        let mut h = Harness::new(30 * SECOND, vec![tls]);
        let register = h
            .sent
            .iter()
            .find(|(_, _, request)| request.method == Method::Register)
            .expect("a REGISTER");
        assert_eq!(register.1.transport, Transport::Tls);
        // rsip prints the transport parameter in capitals; URI parameters are case-insensitive.
        assert_eq!(register.2.uri.to_string(), "sip:pbx.example:5061;transport=TLS");
        assert!(header(&register.2, "Via").starts_with("SIP/2.0/TLS 127.0.0.1:5071;"));
        assert_eq!(
            header(&register.2, "Contact"),
            "<sip:gw@127.0.0.1:5071;transport=tls>"
        );
        h.run_until(31 * SECOND);
        let (_, flow, options) = h
            .sent
            .iter()
            .find(|(_, _, request)| request.method == Method::Options)
            .expect("an OPTIONS probe");
        assert_eq!(flow.transport, Transport::Tls);
        assert!(header(options, "Via").starts_with("SIP/2.0/TLS "));
    }

    /// Registers trunk 1 through a 401 challenge; returns the accepted REGISTER.
    fn register_through_challenge(h: &mut Harness, granted: u64) -> Request {
        let (_, flow, register) = h.one_sent();
        assert_eq!(flow.remote, "127.0.0.1:5061".parse().unwrap());
        assert_eq!(register.method, Method::Register);
        assert_eq!(register.uri.to_string(), "sip:pbx.example:5060");
        assert_eq!(register.from_addr().unwrap().uri, "sip:gw@pbx.example");
        assert!(register.from_tag().is_some());
        assert_eq!(register.to_addr().unwrap().uri, "sip:gw@pbx.example");
        assert_eq!(header(&register, "Contact"), "<sip:gw@127.0.0.1:5070>");
        assert_eq!(header(&register, "Expires"), "3600");
        assert_eq!(seq(&register), 1);
        assert!(register.header_value("Authorization").is_none());
        h.respond(1, &register, 401, challenge("n1"));

        let (_, _, retried) = h.one_sent();
        assert_eq!(seq(&retried), 2);
        assert_eq!(retried.call_id(), register.call_id());
        assert_ne!(retried.branch(), register.branch());
        assert!(authorized(&retried, "00000001"));
        h.respond(1, &retried, 200, |response| {
            // As the parser delivers a Contact list: one header per binding.
            response.push_header("Contact", "<sip:other@10.0.0.9>;expires=99");
            response.push_header("Contact", format!("<sip:gw@127.0.0.1:5070>;expires={granted}"));
        });
        assert_eq!(
            h.events(),
            vec![MonitorOutput::Registered {
                trunk_id: 1,
                expires: Duration::from_secs(granted)
            }]
        );
        retried
    }

    #[test]
    fn register_answers_a_challenge_and_refreshes_at_half_the_granted_expiry() {
        let mut h = Harness::new(Duration::ZERO, vec![trunk(1, true)]);
        let first = register_through_challenge(&mut h, 1800);
        assert_eq!(h.monitor.registered_until(1), Some(h.now + 1800 * SECOND));

        let (at, refresh) = h.next_sent();
        assert_eq!(at, 900 * SECOND);
        assert_eq!(refresh.call_id(), first.call_id());
        assert_eq!(seq(&refresh), 3);
        assert!(
            authorized(&refresh, "00000002"),
            "the known nonce is reused with the next nc"
        );
        // The Expires header when the registrar lists no expires parameter for us.
        h.respond(1, &refresh, 200, |response| response.set_header("Expires", "120"));
        assert_eq!(
            h.events(),
            vec![MonitorOutput::Registered {
                trunk_id: 1,
                expires: 120 * SECOND
            }]
        );

        let (at, refresh) = h.next_sent();
        assert_eq!(at, 960 * SECOND, "half of 120 s");
        assert_eq!(seq(&refresh), 4);
        h.respond(1, &refresh, 200, |response| {
            response.set_header("Contact", "<sip:gw@127.0.0.1:5070>;expires=50")
        });
        let (at, refresh) = h.next_sent();
        assert_eq!(at, 980 * SECOND, "30 s before the end of 50 s");
        h.respond(1, &refresh, 200, |response| {
            response.set_header("Contact", "<sip:gw@127.0.0.1:5070>;expires=12")
        });
        let (at, refresh) = h.next_sent();
        assert_eq!(at, 990 * SECOND, "never sooner than 10 s");
        assert_eq!(seq(&refresh), 6);
        assert_eq!(refresh.call_id(), first.call_id());
    }

    #[test]
    fn a_stale_nonce_on_refresh_is_answered_again() {
        let mut h = Harness::new(Duration::ZERO, vec![trunk(1, true)]);
        register_through_challenge(&mut h, 600);
        let (_, refresh) = h.next_sent();
        assert!(authorized(&refresh, "00000002"));
        h.respond(1, &refresh, 401, challenge("n2"));
        let (_, _, retried) = h.one_sent();
        assert!(authorized(&retried, "00000001"), "a new nonce restarts the count");
        h.respond(1, &retried, 200, |_| {});
        assert_eq!(
            h.events(),
            vec![MonitorOutput::Registered {
                trunk_id: 1,
                expires: 3600 * SECOND
            }],
            "without Contact expires or Expires, the requested lifetime"
        );
    }

    #[test]
    fn refused_credentials_fail_and_retry_later() {
        let mut h = Harness::new(Duration::ZERO, vec![trunk(1, true)]);
        let (_, _, register) = h.one_sent();
        h.respond(1, &register, 401, challenge("n1"));
        let (_, _, retried) = h.one_sent();
        h.respond(1, &retried, 401, challenge("n3"));
        assert!(
            h.sent.is_empty(),
            "one answer per challenge round, even to a new nonce"
        );
        assert_eq!(
            h.events(),
            vec![MonitorOutput::RegistrationFailed {
                trunk_id: 1,
                status: 401
            }]
        );
        let (at, again) = h.next_sent();
        assert_eq!(at, 30 * SECOND);
        assert!(authorized(&again, "00000001"), "the latest nonce, pre-emptively");
    }

    #[test]
    fn interval_too_brief_is_retried_with_min_expires_once() {
        let mut h = Harness::new(Duration::ZERO, vec![trunk(1, true)]);
        let (_, _, register) = h.one_sent();
        h.respond(1, &register, 423, |response| {
            response.set_header("Min-Expires", "7200")
        });
        let (_, _, retried) = h.one_sent();
        assert_eq!(header(&retried, "Expires"), "7200");
        assert_eq!(seq(&retried), 2);
        h.respond(1, &retried, 423, |response| {
            response.set_header("Min-Expires", "9000")
        });
        assert!(h.sent.is_empty());
        assert_eq!(
            h.events(),
            vec![MonitorOutput::RegistrationFailed {
                trunk_id: 1,
                status: 423
            }]
        );
        // The next attempt starts a new round, with the raised lifetime kept.
        let (at, again) = h.next_sent();
        assert_eq!(at, 30 * SECOND);
        assert_eq!(header(&again, "Expires"), "7200");
        h.respond(1, &again, 423, |response| {
            response.set_header("Min-Expires", "9000")
        });
        let (_, _, raised) = h.one_sent();
        assert_eq!(header(&raised, "Expires"), "9000");
    }

    #[test]
    fn hostile_lifetimes_are_capped() {
        let mut h = Harness::new(Duration::ZERO, vec![trunk(1, true)]);
        let (_, _, register) = h.one_sent();
        h.respond(1, &register, 423, |response| {
            response.set_header("Min-Expires", "18446744073709551615")
        });
        assert!(
            h.sent.is_empty(),
            "an absurd Min-Expires is a failure, not a retry"
        );
        let (_, again) = h.next_sent();
        h.respond(1, &again, 200, |response| {
            response.push_header("Contact", "<sip:gw@127.0.0.1:5070>;expires=18446744073709551615")
        });
        assert_eq!(
            h.events().last(),
            Some(&MonitorOutput::Registered {
                trunk_id: 1,
                expires: 3600 * SECOND
            }),
            "never longer than asked for"
        );
        let (at, _) = h.next_sent();
        assert_eq!(at, (30 + 1800) * SECOND);
    }

    #[test]
    fn failed_registrations_back_off_up_to_five_minutes() {
        let mut h = Harness::new(Duration::ZERO, vec![trunk(1, true)]);
        let mut attempts = Vec::new();
        let mut last_seq = 0;
        for _ in 0..7 {
            let (at, register) = h.next_sent();
            attempts.push(at.as_secs());
            assert!(seq(&register) > last_seq);
            last_seq = seq(&register);
            h.fail(1, &register, RequestFailure::Timeout);
        }
        assert_eq!(attempts, vec![0, 30, 90, 210, 450, 750, 1050]);
        let failures = h.events();
        assert_eq!(failures.len(), 7);
        assert!(failures.iter().all(|event| *event
            == MonitorOutput::RegistrationFailed {
                trunk_id: 1,
                status: 408
            }));
        // Success resets the backoff.
        let (at, register) = h.next_sent();
        assert_eq!(at.as_secs(), 1350);
        h.respond(1, &register, 403, |_| {});
        let (at, register) = h.next_sent();
        assert_eq!(at.as_secs(), 1650);
        h.respond(1, &register, 200, |_| {});
        let (at, register) = h.next_sent();
        assert_eq!(at.as_secs(), 1650 + 1800);
        h.fail(1, &register, RequestFailure::TransportError);
        let (at, _) = h.next_sent();
        assert_eq!(at.as_secs(), 1650 + 1800 + 30);
    }

    #[test]
    fn a_removed_trunk_takes_its_registration_back() {
        let mut h = Harness::new(Duration::ZERO, vec![trunk(1, true)]);
        let accepted = register_through_challenge(&mut h, 600);
        h.run_until(100 * SECOND);
        h.set_trunks(Vec::new());
        let (trunk_id, _, unregister) = h.one_sent();
        assert_eq!(trunk_id, 1);
        assert_eq!(unregister.method, Method::Register);
        assert_eq!(header(&unregister, "Expires"), "0");
        assert_eq!(header(&unregister, "Contact"), "<sip:gw@127.0.0.1:5070>");
        assert_eq!(unregister.call_id(), accepted.call_id());
        assert_eq!(seq(&unregister), 3);
        assert!(authorized(&unregister, "00000002"));
        // A new nonce: answered once.
        h.respond(1, &unregister, 401, challenge("n9"));
        let (_, _, retried) = h.one_sent();
        assert_eq!(header(&retried, "Expires"), "0");
        assert!(authorized(&retried, "00000001"));
        h.respond(1, &retried, 200, |_| {});
        assert!(h.sent.is_empty());
        assert!(h.events().is_empty());
        assert_eq!(h.monitor.next_timeout(), None);
        assert_eq!(h.monitor.health(1), None);
        h.run_until(10_000 * SECOND);
        assert!(h.sent.is_empty());
    }

    #[test]
    fn a_trunk_removed_while_registering_unregisters_only_if_it_got_bound() {
        let mut h = Harness::new(Duration::ZERO, vec![trunk(1, true), trunk(2, true)]);
        let sent = std::mem::take(&mut h.sent);
        h.set_trunks(Vec::new());
        assert!(h.sent.is_empty(), "nothing to take back yet");
        h.respond(1, &sent[0].2, 200, |_| {});
        let (trunk_id, _, unregister) = h.one_sent();
        assert_eq!(trunk_id, 1);
        assert_eq!(header(&unregister, "Expires"), "0");
        h.respond(1, &unregister, 200, |_| {});
        h.respond(2, &sent[1].2, 404, |_| {});
        assert!(h.sent.is_empty(), "trunk 2 never got a binding");
        h.run_until(10_000 * SECOND);
        assert!(h.sent.is_empty());
    }

    #[test]
    fn a_reload_keeps_unchanged_trunks_and_restarts_changed_ones() {
        let mut h = Harness::new(30 * SECOND, vec![trunk(1, true), trunk(2, false)]);
        let sent = std::mem::take(&mut h.sent);
        let (options1, register1, options2) = (&sent[0].2, &sent[1].2, &sent[2].2);
        assert_eq!(
            [options1.method, register1.method, options2.method],
            [Method::Options, Method::Register, Method::Options]
        );
        h.respond(1, options1, 200, |_| {});
        h.respond(1, register1, 200, |_| {});
        h.respond(2, options2, 200, |_| {});
        h.events();
        h.run_until(10 * SECOND);

        // The same trunks again (a rename is not a change of path): nothing is sent, timers stay.
        let mut renamed = trunk(1, true);
        renamed.name = "renamed".to_owned();
        h.set_trunks(vec![renamed.clone(), trunk(2, false)]);
        assert!(h.sent.is_empty());
        assert_eq!(h.monitor.health(1), Some(Health::Up));
        assert_eq!(h.monitor.next_timeout(), Some(h.start + 30 * SECOND));

        // Trunk 1 asks for another lifetime, trunk 2 moves, trunk 3 is new.
        let mut longer = renamed;
        longer.register_expiry = 7200 * SECOND;
        let mut moved = trunk(2, false);
        moved.address = "127.0.0.1:6000".parse().unwrap();
        h.set_trunks(vec![longer.clone(), moved, trunk(3, false)]);
        let sent = std::mem::take(&mut h.sent);
        let summary: Vec<(i64, Method)> = sent.iter().map(|(id, _, r)| (*id, r.method)).collect();
        assert_eq!(
            summary,
            vec![(1, Method::Register), (2, Method::Options), (3, Method::Options)]
        );
        let reregister = &sent[0].2;
        assert_eq!(reregister.call_id(), register1.call_id());
        assert_eq!(seq(reregister), 2);
        assert_eq!(header(reregister, "Expires"), "7200");
        assert_eq!(sent[1].1.remote, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(h.monitor.health(2), Some(Health::Unknown));
        // Trunk 2 was reported up; the new path failing is a change worth reporting.
        h.fail(2, &sent[1].2, RequestFailure::Timeout);
        h.respond(3, &sent[2].2, 200, |_| {});
        assert_eq!(h.events(), vec![status_event(2, false), status_event(3, true)]);

        // Another user: the old binding is taken back and a new registration starts with its own Call-ID.
        let mut other_user = longer;
        other_user.credentials = Some(Credentials {
            username: "gw2".to_owned(),
            password: "secret".to_owned(),
        });
        h.set_trunks(vec![other_user, trunk(3, false)]);
        let (_, _, fresh) = h.one_sent();
        assert_eq!(fresh.from_addr().unwrap().uri, "sip:gw2@pbx.example");
        assert_ne!(fresh.call_id(), register1.call_id());
        assert_eq!(seq(&fresh), 1);
        // The old binding waits for its REGISTER in flight; that one times out, but the binding from the
        // first 200 still holds, so it is taken back.
        h.fail(1, reregister, RequestFailure::Timeout);
        let (_, _, unregister) = h.one_sent();
        assert_eq!(unregister.call_id(), register1.call_id());
        assert_eq!(header(&unregister, "Expires"), "0");
        assert_eq!(unregister.from_addr().unwrap().uri, "sip:gw@pbx.example");
        // The new registration is not disturbed by what the old one hears.
        h.respond(1, &unregister, 200, |_| {});
        h.respond(1, &fresh, 200, |_| {});
        assert_eq!(h.monitor.registered_until(1), Some(h.now + 7200 * SECOND));
        assert_eq!(h.monitor.health(2), None);
    }

    /// The monitor plugged into a real transaction layer the way the gateway hosts it, toward a PBX whose
    /// transaction layer answers every request 200 while it is reachable; UDP, default timers.
    struct Wired {
        monitor: TrunkMonitor,
        transactions: Transactions,
        /// Which monitor request each client transaction carries.
        owners: HashMap<TransactionKey, (i64, Request)>,
        pbx: Transactions,
        pbx_reachable: bool,
        start: Instant,
        now: Instant,
        transactions_due: Option<Instant>,
        pbx_due: Option<Instant>,
        events: Vec<(Duration, MonitorOutput)>,
    }

    impl Wired {
        fn pump(&mut self) {
            let ours = Flow {
                transport: Transport::Udp,
                remote: "127.0.0.1:5070".parse().unwrap(),
                connection: None,
            };
            loop {
                let mut progressed = false;
                while let Some(output) = self.monitor.poll_output() {
                    progressed = true;
                    match output {
                        MonitorOutput::Send {
                            trunk_id,
                            flow,
                            request,
                        } => match self
                            .transactions
                            .handle_outgoing_request(self.now, flow, request.clone())
                        {
                            Ok(key) => {
                                self.owners.insert(key, (trunk_id, request));
                            }
                            Err(_) => self.monitor.handle_failure(
                                self.now,
                                trunk_id,
                                &request,
                                RequestFailure::TransportError,
                            ),
                        },
                        event => self.events.push((self.now - self.start, event)),
                    }
                }
                self.transactions_due = None;
                while let Some(output) = self.transactions.poll_output() {
                    match output {
                        Output::Transmit { bytes, .. } => {
                            progressed = true;
                            if self.pbx_reachable {
                                self.pbx.handle_receive(self.now, ours.clone(), &bytes);
                            }
                        }
                        Output::Event(event) => {
                            progressed = true;
                            let (key, outcome) = match event {
                                TransactionEvent::Response { key, response } => (key, Ok(response)),
                                TransactionEvent::Timeout { key } => (key, Err(RequestFailure::Timeout)),
                                TransactionEvent::TransportError { key } => {
                                    (key, Err(RequestFailure::TransportError))
                                }
                                TransactionEvent::Terminated { key } => {
                                    self.owners.remove(&key);
                                    continue;
                                }
                                other => panic!("unexpected {other:?}"),
                            };
                            let Some((trunk_id, request)) = self.owners.get(&key) else {
                                continue;
                            };
                            match outcome {
                                Ok(response) => self
                                    .monitor
                                    .handle_response(self.now, *trunk_id, request, &response),
                                Err(failure) => {
                                    self.monitor.handle_failure(self.now, *trunk_id, request, failure)
                                }
                            }
                        }
                        // Repeated until something changes: the end of this drain.
                        Output::Timeout(at) => {
                            self.transactions_due = Some(at);
                            break;
                        }
                    }
                }
                self.pbx_due = None;
                while let Some(output) = self.pbx.poll_output() {
                    match output {
                        Output::Transmit { bytes, .. } => {
                            progressed = true;
                            self.transactions.handle_receive(self.now, trunk_flow(), &bytes);
                        }
                        Output::Event(TransactionEvent::Request { key, request, .. }) => {
                            progressed = true;
                            let response = message::response_to(&request, 200, Some("pbxtag"));
                            self.pbx.send_response(self.now, &key, response).unwrap();
                        }
                        Output::Event(_) => {}
                        Output::Timeout(at) => {
                            self.pbx_due = Some(at);
                            break;
                        }
                    }
                }
                if !progressed {
                    break;
                }
            }
        }

        /// Advances to each deadline in turn until `start + until`.
        fn run_until(&mut self, until: Duration) {
            let end = self.start + until;
            loop {
                self.pump();
                let due = [self.monitor.next_timeout(), self.transactions_due, self.pbx_due]
                    .into_iter()
                    .flatten()
                    .min();
                let Some(due) = due.filter(|&due| due <= end) else {
                    break;
                };
                self.now = self.now.max(due);
                self.transactions.handle_timeout(self.now);
                self.pbx.handle_timeout(self.now);
                self.monitor.handle_timeout(self.now);
            }
            self.now = end;
        }
    }

    fn trunk_flow() -> Flow {
        Flow {
            transport: Transport::Udp,
            remote: "127.0.0.1:5061".parse().unwrap(),
            connection: None,
        }
    }

    #[test]
    fn through_a_real_transaction_layer_unanswered_probes_mark_the_trunk_down_and_an_answer_up() {
        let start = Instant::now();
        let mut wired = Wired {
            monitor: TrunkMonitor::new(settings(30 * SECOND)),
            transactions: Transactions::new(TransactionConfig::default()),
            owners: HashMap::new(),
            pbx: Transactions::new(TransactionConfig::default()),
            pbx_reachable: true,
            start,
            now: start,
            transactions_due: None,
            pbx_due: None,
            events: Vec::new(),
        };
        wired.monitor.set_trunks(start, vec![trunk(1, true)]);
        wired.run_until(10 * SECOND);
        wired.pbx_reachable = false;
        wired.run_until(100 * SECOND);
        wired.pbx_reachable = true;
        wired.run_until(120 * SECOND);
        assert_eq!(
            wired.events,
            vec![
                (Duration::ZERO, status_event(1, true)),
                (
                    Duration::ZERO,
                    MonitorOutput::Registered {
                        trunk_id: 1,
                        expires: 3600 * SECOND
                    }
                ),
                // Probe at 30 s unanswered by 35 s; probe at 40 s unanswered by 45 s (the
                // transaction's Timer F would only fire at 62 and 72 s).
                (45 * SECOND, status_event(1, false)),
                // Down probes every 10 s (5 s unanswered + 5 s apart); the one sent at 100 s, while
                // the PBX was still unreachable, is answered when UDP retransmits it 500 ms later.
                (100 * SECOND + 500 * MILLISECOND, status_event(1, true)),
            ]
        );
        assert!(wired.owners.len() <= 1, "finished transactions are forgotten");
    }
}
