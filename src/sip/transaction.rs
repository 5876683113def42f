//! SIP transactions (RFC 3261 §17, with the Accepted states of RFC 6026), sans-IO.
//!
//! [`Transactions`] holds every client and server transaction of an endpoint, keyed by the top Via branch
//! and the method (ACK is matched to its INVITE, CANCEL to the INVITE it cancels per §9.2). It never reads
//! the clock or touches a socket: every input carries `now`, and after each input the caller drains
//! [`Transactions::poll_output`] until it returns [`Output::Timeout`] (the next wake-up, always last) or
//! `None` (nothing pending at all), sending each [`Output::Transmit`] and handing each
//! [`Output::Event`] to the transaction user (the dialog layer / B2BUA).
//!
//! What the layer does on its own:
//! - retransmits requests (Timers A, E) and final responses (Timer G) over UDP only;
//! - answers a retransmitted request with the last response, absorbs the ACK of a 3xx–6xx (Timer I) and
//!   retransmitted responses (Timers D, K), and sends the ACK for a 3xx–6xx it receives (§17.1.1.3);
//! - sends 100 Trying for a new INVITE at once (unless [`TransactionConfig::send_trying`] is off);
//! - answers CANCEL itself: 200 when it matches an INVITE server transaction (and reports
//!   [`TransactionEvent::Cancelled`] if that INVITE has no final response yet), 481 otherwise;
//! - retransmits a 2xx to INVITE over UDP until its ACK arrives (the UAS core's job in §13.3.1.4, done here
//!   so that every user gets it right), matching the ACK by Call-ID, CSeq and From tag.
//!
//! What stays with the user: sending the ACK for a 2xx (it is a new request, see
//! [`Transactions::send_stateless`]), re-ACKing 2xx retransmissions (they arrive as
//! [`TransactionEvent::Response`] while the client transaction is Accepted, and afterwards as
//! [`TransactionEvent::StrayResponse`]), and turning timeouts into 408 or a BYE.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use rsip::{Method, Request, Response, SipMessage, StatusCode};

use crate::sip::flow::Flow;
use crate::sip::message::{self, BRANCH_MAGIC_COOKIE, MessageError, MessageHeaders, ParseError};

/// Timer D over UDP: how long a client INVITE transaction absorbs retransmitted 3xx–6xx responses
/// (RFC 3261 §17.1.1.2: at least 32 s, independent of T1).
pub const TIMER_D_UNRELIABLE: Duration = Duration::from_secs(32);

/// The RFC 3261 timer base values (§17.1.1.1, Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// The round-trip estimate: first retransmission interval; 64·T1 is the transaction timeout.
    pub t1: Duration,
    /// The longest retransmission interval for non-INVITE requests and INVITE responses.
    pub t2: Duration,
    /// How long the network may hold a message: Timers I and K over UDP.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// Timers B, F, H, J, L and M: 64·T1.
    fn transaction_timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// Settings of a [`Transactions`] layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionConfig {
    /// Timer base values.
    pub timers: TimerConfig,
    /// Send 100 Trying as soon as a new INVITE arrives (RFC 3261 §17.2.1 wants one within 200 ms, and a
    /// B2BUA waiting for a route lookup cannot promise that).
    pub send_trying: bool,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        TransactionConfig {
            timers: TimerConfig::default(),
            send_trying: true,
        }
    }
}

/// Which side of a transaction we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// We sent the request.
    Client,
    /// We received the request.
    Server,
}

/// Identifies a transaction: our role, the top Via branch and the method (INVITE for an ACK to a
/// non-2xx). For requests whose branch lacks the RFC 3261 magic cookie, the branch is a string built
/// from the branch, Call-ID, CSeq number, From tag and Via sent-by (RFC 2543 peers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionKey {
    /// Client or server.
    pub role: Role,
    /// The top Via branch.
    pub branch: String,
    /// The request method.
    pub method: Method,
}

impl Hash for TransactionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // rsip's Method does not implement Hash; its discriminant identifies it.
        self.role.hash(state);
        self.branch.hash(state);
        std::mem::discriminant(&self.method).hash(state);
    }
}

impl fmt::Display for TransactionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = match self.role {
            Role::Client => "client",
            Role::Server => "server",
        };
        write!(f, "{role} {} {}", self.method, self.branch)
    }
}

/// The state of a transaction (Terminated transactions are forgotten).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionState {
    /// Client INVITE sent, nothing received.
    Calling,
    /// Non-INVITE request sent or received, no response yet.
    Trying,
    /// A provisional response was received or sent.
    Proceeding,
    /// A 3xx–6xx (INVITE) or any final response (non-INVITE) was received or sent.
    Completed,
    /// Server INVITE: the ACK of the 3xx–6xx arrived.
    Confirmed,
    /// INVITE: a 2xx was received or sent (RFC 6026).
    Accepted,
}

/// What the transaction user learns.
#[derive(Debug, Clone, PartialEq)]
pub enum TransactionEvent {
    /// A new request (a new server transaction). Never an ACK or a CANCEL: those come as
    /// [`TransactionEvent::Ack`] and [`TransactionEvent::Cancelled`].
    Request {
        /// The new server transaction.
        key: TransactionKey,
        /// The request.
        request: Request,
        /// Where it came from; responses go back here.
        flow: Flow,
    },
    /// A response to one of our requests: provisional, final, and 2xx retransmissions while the client
    /// INVITE transaction is Accepted.
    Response {
        /// The client transaction.
        key: TransactionKey,
        /// The response.
        response: Response,
    },
    /// An ACK that no transaction absorbed: the ACK for a 2xx, which belongs to the dialog.
    Ack {
        /// The ACK.
        request: Request,
        /// Where it came from.
        flow: Flow,
        /// The Accepted INVITE server transaction it acknowledges, if still known; its 2xx
        /// retransmissions have been stopped.
        invite: Option<TransactionKey>,
    },
    /// A CANCEL matched an INVITE server transaction that has no final response yet. The CANCEL has been
    /// answered 200; the user should answer the INVITE 487 Request Terminated.
    Cancelled {
        /// The INVITE server transaction.
        invite: TransactionKey,
        /// The CANCEL (for its Reason header).
        request: Request,
    },
    /// A response that matches no client transaction (a 2xx retransmission after the transaction ended, or
    /// a 2xx from another fork).
    StrayResponse {
        /// The response.
        response: Response,
        /// Where it came from.
        flow: Flow,
    },
    /// Timer B or F (no final response: treat as 408), Timer H (no ACK for our 3xx–6xx), or Timer L without
    /// an ACK for our 2xx (the dialog should be ended with BYE).
    Timeout {
        /// The transaction that timed out; it is terminated.
        key: TransactionKey,
    },
    /// The transport reported that the transaction's flow failed; the transaction is terminated.
    TransportError {
        /// The transaction.
        key: TransactionKey,
    },
    /// The transaction ended and is forgotten (reported for every transaction, including the CANCEL
    /// transactions the layer answers itself).
    Terminated {
        /// The transaction.
        key: TransactionKey,
    },
    /// Bytes that are not a valid SIP message; the error response, if one could be built, is already queued.
    Malformed {
        /// Where the bytes came from.
        flow: Flow,
        /// What was wrong.
        error: ParseError,
    },
}

/// One step of work for the caller of [`Transactions::poll_output`].
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "outputs are drained right after they are queued; boxing would add an allocation per event"
)]
pub enum Output {
    /// Send these bytes on this flow.
    Transmit {
        /// Where to send.
        flow: Flow,
        /// One complete SIP message.
        bytes: Vec<u8>,
    },
    /// Something for the transaction user.
    Event(TransactionEvent),
    /// Call [`Transactions::handle_timeout`] at this instant; always the last output of a drain.
    Timeout(Instant),
}

/// Misuse of the transaction layer by its user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    /// The request has no top Via with a branch.
    #[error("request has no Via branch")]
    MissingBranch,
    /// ACK is not sent through a client transaction: use `send_stateless`.
    #[error("ACK has no transaction; send it statelessly")]
    AckWithoutTransaction,
    /// A transaction with this key already exists.
    #[error("transaction {0} already exists")]
    Duplicate(TransactionKey),
    /// No transaction with this key (never created, or already terminated).
    #[error("no transaction {0}")]
    Unknown(TransactionKey),
    /// A response for a client transaction, or a response the state forbids (a second final response).
    #[error("cannot send {status} in transaction {key} ({state:?})")]
    InvalidState {
        /// The transaction.
        key: TransactionKey,
        /// Its state.
        state: Option<TransactionState>,
        /// The status that was to be sent.
        status: u16,
    },
    /// The message lacks a header a transaction needs.
    #[error(transparent)]
    Message(#[from] MessageError),
}

/// The four transaction state machines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    InviteClient,
    NonInviteClient,
    InviteServer,
    NonInviteServer,
}

struct Transaction {
    /// Unique per layer, orders timers with equal deadlines.
    id: u64,
    kind: Kind,
    state: TransactionState,
    flow: Flow,
    request: Request,
    /// Client: the request bytes to retransmit. Server: the last response sent, to retransmit.
    retransmit_bytes: Option<Vec<u8>>,
    /// Client INVITE, Completed: the ACK to repeat on each retransmitted 3xx–6xx.
    ack_bytes: Option<Vec<u8>>,
    /// Server INVITE: the To tag of our last response, reused in the 200 to a CANCEL.
    local_tag: Option<String>,
    /// Server INVITE, Accepted: the key under which its 2xx ACK is expected.
    ack_match: Option<AckMatch>,
    ack_received: bool,
    /// Timers A, E, G and the 2xx retransmission.
    retransmit_at: Option<Instant>,
    retransmit_interval: Duration,
    /// Timers B, F, H and L.
    timeout_at: Option<Instant>,
    /// Timers D, I, J, K and M: the end of the absorption period.
    end_at: Option<Instant>,
    /// The deadline under which the transaction is filed in `Transactions::timers`.
    scheduled: Option<Instant>,
}

impl Transaction {
    fn next_deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.timeout_at, self.end_at]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Matches the ACK of a 2xx, which has a branch of its own (§13.2.2.4), to its INVITE.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct AckMatch {
    call_id: String,
    seq: u32,
    from_tag: String,
}

impl AckMatch {
    fn of(request: &Request) -> Option<Self> {
        Some(AckMatch {
            call_id: request.call_id()?.to_string(),
            seq: request.cseq().ok()?.seq,
            from_tag: request.from_tag()?,
        })
    }
}

/// All transactions of one SIP endpoint.
pub struct Transactions {
    config: TransactionConfig,
    transactions: HashMap<TransactionKey, Transaction>,
    /// Every transaction with a deadline, by (deadline, id).
    timers: BTreeMap<(Instant, u64), TransactionKey>,
    accepted_invites: HashMap<AckMatch, TransactionKey>,
    outputs: VecDeque<Output>,
    next_id: u64,
}

impl Transactions {
    /// An empty layer.
    pub fn new(config: TransactionConfig) -> Self {
        Transactions {
            config,
            transactions: HashMap::new(),
            timers: BTreeMap::new(),
            accepted_invites: HashMap::new(),
            outputs: VecDeque::new(),
            next_id: 0,
        }
    }

    /// Starts a client transaction: sends `request` on `flow` and retransmits it as needed. The request
    /// must carry its top Via with a fresh branch. ACK is refused (see [`Transactions::send_stateless`]).
    pub fn handle_outgoing_request(
        &mut self,
        now: Instant,
        flow: Flow,
        request: Request,
    ) -> Result<TransactionKey, TransactionError> {
        if request.method == Method::Ack {
            return Err(TransactionError::AckWithoutTransaction);
        }
        let branch = request.branch().ok_or(TransactionError::MissingBranch)?;
        let key = TransactionKey {
            role: Role::Client,
            branch,
            method: request.method,
        };
        if self.transactions.contains_key(&key) {
            return Err(TransactionError::Duplicate(key));
        }
        let timers = self.config.timers;
        let bytes = message::request_bytes(&request);
        self.transmit(&flow, bytes.clone());
        let (kind, state) = if request.method == Method::Invite {
            (Kind::InviteClient, TransactionState::Calling)
        } else {
            (Kind::NonInviteClient, TransactionState::Trying)
        };
        let unreliable = !flow.is_reliable();
        let mut transaction = self.new_transaction(kind, state, flow, request);
        transaction.retransmit_bytes = Some(bytes);
        transaction.retransmit_at = unreliable.then(|| now + timers.t1);
        transaction.retransmit_interval = timers.t1;
        transaction.timeout_at = Some(now + timers.transaction_timeout());
        self.insert(key.clone(), transaction);
        Ok(key)
    }

    /// Sends a response in a server transaction. A 2xx to INVITE moves it to Accepted (retransmitted over
    /// UDP until the ACK arrives); 3xx–6xx to INVITE to Completed (Timers G, H); a final response to a
    /// non-INVITE to Completed (Timer J).
    pub fn send_response(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        response: Response,
    ) -> Result<(), TransactionError> {
        let timers = self.config.timers;
        let code = response.status_code.code();
        let Some(transaction) = self.transactions.get_mut(key) else {
            return Err(TransactionError::Unknown(key.clone()));
        };
        let invalid = || TransactionError::InvalidState {
            key: key.clone(),
            state: Some(transaction.state),
            status: code,
        };
        use TransactionState::*;
        let next_state = match (transaction.kind, transaction.state, code) {
            (Kind::InviteServer, Proceeding, 100..=199) => Proceeding,
            (Kind::InviteServer, Proceeding | Accepted, 200..=299) => Accepted,
            (Kind::InviteServer, Proceeding, 300..=699) => Completed,
            (Kind::NonInviteServer, Trying | Proceeding, 100..=199) => Proceeding,
            (Kind::NonInviteServer, Trying | Proceeding, 200..=699) => Completed,
            _ => return Err(invalid()),
        };
        let bytes = message::response_bytes(&response);
        let flow = transaction.flow.clone();
        let unreliable = !flow.is_reliable();
        if let Some(tag) = response.to_tag() {
            transaction.local_tag = Some(tag);
        }
        transaction.retransmit_bytes = Some(bytes.clone());
        let entering = transaction.state != next_state;
        transaction.state = next_state;
        let mut terminate = false;
        match (transaction.kind, next_state) {
            (Kind::InviteServer, Accepted) if entering => {
                transaction.retransmit_at = unreliable.then(|| now + timers.t1);
                transaction.retransmit_interval = timers.t1;
                transaction.timeout_at = Some(now + timers.transaction_timeout());
                if let Some(ack_match) = AckMatch::of(&transaction.request) {
                    self.accepted_invites.insert(ack_match.clone(), key.clone());
                    transaction.ack_match = Some(ack_match);
                }
            }
            (Kind::InviteServer, Completed) => {
                transaction.retransmit_at = unreliable.then(|| now + timers.t1);
                transaction.retransmit_interval = timers.t1;
                transaction.timeout_at = Some(now + timers.transaction_timeout());
            }
            (Kind::NonInviteServer, Completed) if unreliable => {
                transaction.end_at = Some(now + timers.transaction_timeout());
            }
            (Kind::NonInviteServer, Completed) => terminate = true,
            _ => {}
        }
        self.transmit(&flow, bytes);
        if terminate {
            self.terminate(key);
        } else {
            self.reschedule(key);
        }
        Ok(())
    }

    /// Sends a message outside any transaction: the ACK for a 2xx, or a re-ACK of a 2xx retransmission.
    pub fn send_stateless(&mut self, flow: Flow, message: impl Into<SipMessage>) {
        let bytes = message::message_bytes(&message.into());
        self.transmit(&flow, bytes);
    }

    /// Takes bytes received on `flow`: parses them (a malformed request is answered 400/501/505/513 on the
    /// same flow and reported as [`TransactionEvent::Malformed`]) and handles the message.
    pub fn handle_receive(&mut self, now: Instant, flow: Flow, bytes: &[u8]) {
        match message::parse(bytes) {
            Ok(message) => {
                if let Err(error) = self.handle_incoming(now, flow.clone(), message) {
                    // parse() guarantees what handle_incoming needs; report rather than panic if not.
                    let error = ParseError::from(error);
                    self.emit(TransactionEvent::Malformed { flow, error });
                }
            }
            Err(error) => {
                if let Some(answer) = error.error_response() {
                    self.transmit(&flow, answer);
                }
                self.emit(TransactionEvent::Malformed { flow, error });
            }
        }
    }

    /// Handles a parsed message received on `flow`: matches responses to client transactions and requests
    /// to server transactions, absorbing retransmissions, or starts a server transaction.
    pub fn handle_incoming(
        &mut self,
        now: Instant,
        flow: Flow,
        message: SipMessage,
    ) -> Result<(), MessageError> {
        match message {
            SipMessage::Request(request) => self.handle_incoming_request(now, flow, request),
            SipMessage::Response(response) => self.handle_incoming_response(now, flow, response),
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((&(deadline, _), key)) = self.timers.first_key_value() {
            if deadline > now {
                break;
            }
            let key = key.clone();
            self.fire_timers(now, &key);
        }
    }

    /// Terminates every transaction on `flow` with [`TransactionEvent::TransportError`] (a connection
    /// closed, a TCP connect failed, ICMP unreachable).
    pub fn handle_transport_error(&mut self, flow: &Flow) {
        let failed: Vec<TransactionKey> = self
            .transactions
            .iter()
            .filter(|(_, transaction)| &transaction.flow == flow)
            .map(|(key, _)| key.clone())
            .collect();
        for key in failed {
            self.emit(TransactionEvent::TransportError { key: key.clone() });
            self.terminate(&key);
        }
    }

    /// The next output: transmissions and events in order, then [`Output::Timeout`] with the next deadline
    /// (returned again on every further call until something changes), or `None` when no transaction has
    /// a deadline and nothing is queued.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front().or_else(|| {
            self.timers
                .first_key_value()
                .map(|(&(deadline, _), _)| Output::Timeout(deadline))
        })
    }

    /// The state of a transaction, `None` once terminated.
    pub fn state(&self, key: &TransactionKey) -> Option<TransactionState> {
        self.transactions.get(key).map(|transaction| transaction.state)
    }

    /// The request that started a transaction.
    pub fn request(&self, key: &TransactionKey) -> Option<&Request> {
        self.transactions.get(key).map(|transaction| &transaction.request)
    }

    /// The flow of a transaction.
    pub fn flow(&self, key: &TransactionKey) -> Option<&Flow> {
        self.transactions.get(key).map(|transaction| &transaction.flow)
    }

    /// How many transactions are alive.
    pub fn len(&self) -> usize {
        self.transactions.len()
    }

    /// True when no transaction is alive.
    pub fn is_empty(&self) -> bool {
        self.transactions.is_empty()
    }

    fn handle_incoming_request(
        &mut self,
        now: Instant,
        flow: Flow,
        request: Request,
    ) -> Result<(), MessageError> {
        let branch = server_branch(&request)?;
        let method = if request.method == Method::Ack {
            Method::Invite
        } else {
            request.method
        };
        let key = TransactionKey {
            role: Role::Server,
            branch,
            method,
        };
        if request.method == Method::Ack {
            self.handle_ack(now, flow, key, request);
            return Ok(());
        }
        if let Some(transaction) = self.transactions.get(&key) {
            // A retransmission: repeat the last response, if any (§17.2.1, §17.2.2).
            let repeat = match transaction.state {
                TransactionState::Proceeding | TransactionState::Completed => {
                    transaction.retransmit_bytes.clone()
                }
                _ => None,
            };
            if let Some(bytes) = repeat {
                let flow = transaction.flow.clone();
                self.transmit(&flow, bytes);
            }
            return Ok(());
        }
        let kind = if request.method == Method::Invite {
            Kind::InviteServer
        } else {
            Kind::NonInviteServer
        };
        let state = if kind == Kind::InviteServer {
            TransactionState::Proceeding
        } else {
            TransactionState::Trying
        };
        let transaction = self.new_transaction(kind, state, flow.clone(), request.clone());
        self.insert(key.clone(), transaction);
        if request.method == Method::Cancel {
            self.answer_cancel(now, &key, request);
            return Ok(());
        }
        if kind == Kind::InviteServer && self.config.send_trying {
            let trying = message::response_to(&request, StatusCode::Trying, None);
            // The transaction was inserted just above and a 100 is valid in Proceeding.
            let _ = self.send_response(now, &key, trying);
        }
        self.emit(TransactionEvent::Request { key, request, flow });
        Ok(())
    }

    /// §9.2: 200 when the CANCEL matches an INVITE server transaction, 481 otherwise.
    fn answer_cancel(&mut self, now: Instant, cancel_key: &TransactionKey, cancel: Request) {
        let invite_key = TransactionKey {
            method: Method::Invite,
            ..cancel_key.clone()
        };
        let invite = self
            .transactions
            .get(&invite_key)
            .map(|invite| (invite.state, invite.local_tag.clone()));
        let answer = match &invite {
            Some((_, tag)) => {
                let tag = tag.clone().unwrap_or_else(message::new_tag);
                message::response_to(&cancel, StatusCode::OK, Some(&tag))
            }
            None => message::response_to(
                &cancel,
                StatusCode::CallTransactionDoesNotExist,
                Some(&message::new_tag()),
            ),
        };
        // The CANCEL transaction was just created in Trying, where a final response is valid.
        let _ = self.send_response(now, cancel_key, answer);
        if let Some((TransactionState::Proceeding, _)) = invite {
            self.emit(TransactionEvent::Cancelled {
                invite: invite_key,
                request: cancel,
            });
        }
    }

    fn handle_ack(&mut self, now: Instant, flow: Flow, key: TransactionKey, request: Request) {
        let timers = self.config.timers;
        let state = self.transactions.get(&key).map(|transaction| transaction.state);
        match state {
            Some(TransactionState::Completed) => {
                // §17.2.1: the ACK of our 3xx–6xx; absorb retransmissions of it for Timer I.
                let Some(transaction) = self.transactions.get_mut(&key) else {
                    return;
                };
                transaction.state = TransactionState::Confirmed;
                transaction.retransmit_at = None;
                transaction.timeout_at = None;
                if transaction.flow.is_reliable() {
                    self.terminate(&key);
                } else {
                    transaction.end_at = Some(now + timers.t4);
                    self.reschedule(&key);
                }
            }
            Some(TransactionState::Confirmed) => {}
            Some(TransactionState::Accepted) => self.acknowledge_2xx(key, flow, request),
            _ => match AckMatch::of(&request).and_then(|ack_match| self.accepted_invites.get(&ack_match)) {
                Some(invite_key) => {
                    let invite_key = invite_key.clone();
                    self.acknowledge_2xx(invite_key, flow, request);
                }
                None => self.emit(TransactionEvent::Ack {
                    request,
                    flow,
                    invite: None,
                }),
            },
        }
    }

    /// The ACK of our 2xx arrived: stop retransmitting it, keep absorbing INVITE retransmissions until
    /// Timer L, and hand the ACK to the dialog.
    fn acknowledge_2xx(&mut self, invite_key: TransactionKey, flow: Flow, request: Request) {
        if let Some(transaction) = self.transactions.get_mut(&invite_key) {
            transaction.ack_received = true;
            transaction.retransmit_at = None;
            self.reschedule(&invite_key);
        }
        self.emit(TransactionEvent::Ack {
            request,
            flow,
            invite: Some(invite_key),
        });
    }

    fn handle_incoming_response(
        &mut self,
        now: Instant,
        flow: Flow,
        response: Response,
    ) -> Result<(), MessageError> {
        let branch = response
            .top_via()?
            .branch()
            .map(str::to_string)
            .ok_or(MessageError::BadHeader {
                name: "Via",
                reason: "no branch",
            })?;
        let method = response.cseq()?.method;
        let key = TransactionKey {
            role: Role::Client,
            branch,
            method,
        };
        let timers = self.config.timers;
        let code = response.status_code.code();
        let Some(transaction) = self.transactions.get_mut(&key) else {
            self.emit(TransactionEvent::StrayResponse { response, flow });
            return Ok(());
        };
        use TransactionState::*;
        let reliable = transaction.flow.is_reliable();
        match (transaction.kind, transaction.state, code) {
            (Kind::InviteClient, Calling | Proceeding, 100..=199) => {
                // §17.1.1.2: no more retransmissions, and Timer B only runs in Calling.
                transaction.state = Proceeding;
                transaction.retransmit_at = None;
                transaction.timeout_at = None;
            }
            (Kind::InviteClient, Calling | Proceeding, 200..=299) => {
                transaction.state = Accepted;
                transaction.retransmit_at = None;
                transaction.timeout_at = None;
                transaction.end_at = Some(now + timers.transaction_timeout());
            }
            (Kind::InviteClient, Accepted, 200..=299) => {}
            (Kind::InviteClient, Calling | Proceeding, 300..=699) => {
                let ack = message::build_failure_ack(&transaction.request, &response)?;
                let ack_bytes = message::request_bytes(&ack);
                transaction.state = Completed;
                transaction.retransmit_at = None;
                transaction.timeout_at = None;
                transaction.ack_bytes = Some(ack_bytes.clone());
                transaction.end_at = Some(if reliable { now } else { now + TIMER_D_UNRELIABLE });
                let flow = transaction.flow.clone();
                self.transmit(&flow, ack_bytes);
            }
            (Kind::InviteClient, Completed, 300..=699) => {
                if let Some(ack) = transaction.ack_bytes.clone() {
                    let flow = transaction.flow.clone();
                    self.transmit(&flow, ack);
                }
                return Ok(());
            }
            (Kind::NonInviteClient, Trying | Proceeding, 100..=199) => transaction.state = Proceeding,
            (Kind::NonInviteClient, Trying | Proceeding, 200..=699) => {
                transaction.state = Completed;
                transaction.retransmit_at = None;
                transaction.timeout_at = None;
                transaction.end_at = Some(if reliable { now } else { now + timers.t4 });
            }
            // Late provisional responses and retransmitted finals are absorbed.
            _ => return Ok(()),
        }
        self.emit(TransactionEvent::Response {
            key: key.clone(),
            response,
        });
        self.handle_due(now, &key);
        Ok(())
    }

    /// Runs the timers of one transaction that are due, earliest first, then files its next deadline.
    fn fire_timers(&mut self, now: Instant, key: &TransactionKey) {
        let timers = self.config.timers;
        loop {
            let Some(transaction) = self.transactions.get_mut(key) else {
                return;
            };
            let Some(deadline) = transaction.next_deadline().filter(|deadline| *deadline <= now) else {
                break;
            };
            if transaction.end_at == Some(deadline) {
                self.terminate(key);
                return;
            }
            if transaction.timeout_at == Some(deadline) {
                let report = match transaction.state {
                    // Timer L after an ACK only ends the absorption of INVITE retransmissions.
                    TransactionState::Accepted => {
                        transaction.kind == Kind::InviteServer && !transaction.ack_received
                    }
                    _ => true,
                };
                if report {
                    self.emit(TransactionEvent::Timeout { key: key.clone() });
                }
                self.terminate(key);
                return;
            }
            // Timers A, E and G, and the 2xx retransmission; the next interval counts from the deadline so
            // the schedule does not drift when the caller is late.
            let interval = match (transaction.kind, transaction.state) {
                (Kind::InviteClient, _) => transaction.retransmit_interval * 2,
                (Kind::NonInviteClient, TransactionState::Proceeding) => timers.t2,
                _ => (transaction.retransmit_interval * 2).min(timers.t2),
            };
            transaction.retransmit_interval = interval;
            transaction.retransmit_at = Some(deadline + interval);
            if let Some(bytes) = transaction.retransmit_bytes.clone() {
                let flow = transaction.flow.clone();
                self.transmit(&flow, bytes);
            }
        }
        self.reschedule(key);
    }

    /// Terminates a transaction whose absorption period is zero (reliable transports) right away.
    fn handle_due(&mut self, now: Instant, key: &TransactionKey) {
        match self.transactions.get(key) {
            Some(transaction) if transaction.end_at.is_some_and(|end| end <= now) => self.terminate(key),
            Some(_) => self.reschedule(key),
            None => {}
        }
    }

    fn new_transaction(
        &mut self,
        kind: Kind,
        state: TransactionState,
        flow: Flow,
        request: Request,
    ) -> Transaction {
        self.next_id += 1;
        Transaction {
            id: self.next_id,
            kind,
            state,
            flow,
            request,
            retransmit_bytes: None,
            ack_bytes: None,
            local_tag: None,
            ack_match: None,
            ack_received: false,
            retransmit_at: None,
            retransmit_interval: self.config.timers.t1,
            timeout_at: None,
            end_at: None,
            scheduled: None,
        }
    }

    fn insert(&mut self, key: TransactionKey, transaction: Transaction) {
        self.transactions.insert(key.clone(), transaction);
        self.reschedule(&key);
    }

    /// Files the transaction under its current earliest deadline.
    fn reschedule(&mut self, key: &TransactionKey) {
        let Some(transaction) = self.transactions.get_mut(key) else {
            return;
        };
        if let Some(old) = transaction.scheduled.take() {
            self.timers.remove(&(old, transaction.id));
        }
        if let Some(deadline) = transaction.next_deadline() {
            transaction.scheduled = Some(deadline);
            self.timers.insert((deadline, transaction.id), key.clone());
        }
    }

    fn terminate(&mut self, key: &TransactionKey) {
        let Some(transaction) = self.transactions.remove(key) else {
            return;
        };
        if let Some(scheduled) = transaction.scheduled {
            self.timers.remove(&(scheduled, transaction.id));
        }
        if let Some(ack_match) = transaction.ack_match {
            self.accepted_invites.remove(&ack_match);
        }
        self.emit(TransactionEvent::Terminated { key: key.clone() });
    }

    fn transmit(&mut self, flow: &Flow, bytes: Vec<u8>) {
        self.outputs.push_back(Output::Transmit {
            flow: flow.clone(),
            bytes,
        });
    }

    fn emit(&mut self, event: TransactionEvent) {
        self.outputs.push_back(Output::Event(event));
    }
}

/// The branch that identifies a server transaction: the top Via branch when it carries the magic cookie;
/// otherwise (RFC 2543 peers) a composite of what identifies the request (§17.2.3).
fn server_branch(request: &Request) -> Result<String, MessageError> {
    let via = request.top_via()?;
    match via.branch() {
        Some(branch) if branch.starts_with(BRANCH_MAGIC_COOKIE) => Ok(branch.to_string()),
        branch => Ok(format!(
            "rfc2543|{}|{}|{}|{}|{}",
            branch.unwrap_or_default(),
            request.call_id().unwrap_or_default(),
            request.cseq()?.seq,
            request.from_tag().unwrap_or_default(),
            via.sent_by()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::flow::Transport;
    use crate::sip::message::response_to;

    fn flow(transport: Transport) -> Flow {
        let connection = transport.is_reliable().then_some(7);
        Flow {
            transport,
            remote: "192.0.2.20:5060".parse().unwrap(),
            connection,
        }
    }

    fn request(method: &str, branch: &str) -> Request {
        let text = format!(
            "{method} sip:2001@192.0.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:gw@192.0.2.10>;tag=gwtag\r\nTo: <sip:2001@192.0.2.20>\r\n\
             Call-ID: call-1\r\nCSeq: 1 {method}\r\nContact: <sip:gw@192.0.2.10>\r\n\r\n"
        );
        match message::parse(text.as_bytes()) {
            Ok(SipMessage::Request(request)) => request,
            other => panic!("{other:?}"),
        }
    }

    fn bytes_of(message: impl Into<SipMessage>) -> Vec<u8> {
        message::message_bytes(&message.into())
    }

    fn parsed(bytes: &[u8]) -> SipMessage {
        message::parse(bytes).unwrap()
    }

    /// What happened at one instant of the simulated clock.
    #[derive(Debug)]
    enum Record {
        Sent(SipMessage),
        Event(TransactionEvent),
    }

    /// A layer on a simulated clock: `start` is an arbitrary instant and time only moves through `run_to`.
    struct Harness {
        layer: Transactions,
        start: Instant,
        now: Instant,
        next_timeout: Option<Instant>,
        log: Vec<(f64, Record)>,
    }

    impl Harness {
        fn new() -> Self {
            let start = Instant::now();
            Harness {
                layer: Transactions::new(TransactionConfig::default()),
                start,
                now: start,
                next_timeout: None,
                log: Vec::new(),
            }
        }

        fn at(&self, seconds: f64) -> Instant {
            self.start + Duration::from_secs_f64(seconds)
        }

        /// Drains outputs into the log; checks that Timeout comes last.
        fn drain(&mut self) {
            let elapsed = (self.now - self.start).as_secs_f64();
            self.next_timeout = None;
            while let Some(output) = self.layer.poll_output() {
                match output {
                    Output::Transmit { bytes, .. } => self.log.push((elapsed, Record::Sent(parsed(&bytes)))),
                    Output::Event(event) => self.log.push((elapsed, Record::Event(event))),
                    Output::Timeout(at) => {
                        assert!(at >= self.now, "a deadline in the past");
                        self.next_timeout = Some(at);
                        break;
                    }
                }
            }
        }

        /// Fires every deadline up to `seconds`, then sets the clock there.
        fn run_to(&mut self, seconds: f64) {
            let end = self.at(seconds);
            self.drain();
            while let Some(deadline) = self.next_timeout.filter(|deadline| *deadline <= end) {
                self.now = deadline;
                self.layer.handle_timeout(deadline);
                self.drain();
            }
            self.now = end;
        }

        fn receive(&mut self, seconds: f64, flow: &Flow, message: impl Into<SipMessage>) {
            self.run_to(seconds);
            self.layer
                .handle_receive(self.now, flow.clone(), &bytes_of(message));
            self.drain();
        }

        /// A request arrives at `seconds`: returns it and the key of its server transaction.
        fn incoming(
            &mut self,
            seconds: f64,
            flow: &Flow,
            method: &str,
            branch: &str,
        ) -> (Request, TransactionKey) {
            let request = request(method, branch);
            self.receive(seconds, flow, request.clone());
            let method = if request.method == Method::Ack {
                Method::Invite
            } else {
                request.method
            };
            (request, key(Role::Server, branch, method))
        }

        fn send_request(&mut self, flow: &Flow, request: Request) -> TransactionKey {
            let key = self
                .layer
                .handle_outgoing_request(self.now, flow.clone(), request)
                .unwrap();
            self.drain();
            key
        }

        fn respond(&mut self, seconds: f64, key: &TransactionKey, response: Response) {
            self.run_to(seconds);
            self.layer.send_response(self.now, key, response).unwrap();
            self.drain();
        }

        /// Times at which a message with this method (requests) or code (responses) was sent.
        fn sent_times(&self, what: &str) -> Vec<f64> {
            self.log
                .iter()
                .filter_map(|(at, record)| match record {
                    Record::Sent(SipMessage::Request(r)) if r.method.to_string() == what => Some(*at),
                    Record::Sent(SipMessage::Response(r)) if r.status_code.code().to_string() == what => {
                        Some(*at)
                    }
                    _ => None,
                })
                .collect()
        }

        fn events(&self) -> Vec<(f64, &TransactionEvent)> {
            self.log
                .iter()
                .filter_map(|(at, record)| match record {
                    Record::Event(event) => Some((*at, event)),
                    Record::Sent(_) => None,
                })
                .collect()
        }

        fn sent(&self, what: &str) -> Vec<&SipMessage> {
            self.log
                .iter()
                .filter_map(|(_, record)| match record {
                    Record::Sent(message @ SipMessage::Request(r)) if r.method.to_string() == what => {
                        Some(message)
                    }
                    Record::Sent(message @ SipMessage::Response(r))
                        if r.status_code.code().to_string() == what =>
                    {
                        Some(message)
                    }
                    _ => None,
                })
                .collect()
        }

        fn timeouts_and_terminations(&self) -> Vec<(f64, &'static str)> {
            self.events()
                .into_iter()
                .filter_map(|(at, event)| match event {
                    TransactionEvent::Timeout { .. } => Some((at, "timeout")),
                    TransactionEvent::Terminated { .. } => Some((at, "terminated")),
                    _ => None,
                })
                .collect()
        }
    }

    /// Timers B, F, H and L with the default T1: a timeout and the end at 64·T1 = 32 s.
    const TIMED_OUT_AT_32: [(f64, &str); 2] = [(32.0, "timeout"), (32.0, "terminated")];

    fn key(role: Role, branch: &str, method: Method) -> TransactionKey {
        TransactionKey {
            role,
            branch: branch.into(),
            method,
        }
    }

    #[test]
    fn invite_client_over_udp_retransmits_on_timer_a_and_times_out_on_timer_b() {
        let mut h = Harness::new();
        let udp = flow(Transport::Udp);
        h.send_request(&udp, request("INVITE", "z9hG4bKa"));
        h.run_to(40.0);
        assert_eq!(h.sent_times("INVITE"), [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]);
        assert_eq!(h.timeouts_and_terminations(), TIMED_OUT_AT_32);
        assert!(h.layer.is_empty());
        assert_eq!(h.layer.poll_output(), None);
    }

    #[test]
    fn non_invite_client_over_udp_caps_timer_e_at_t2_and_times_out_on_timer_f() {
        let mut h = Harness::new();
        h.send_request(&flow(Transport::Udp), request("OPTIONS", "z9hG4bKo"));
        h.run_to(40.0);
        let expected = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5];
        assert_eq!(h.sent_times("OPTIONS"), expected);
        assert_eq!(h.timeouts_and_terminations(), TIMED_OUT_AT_32);
    }

    #[test]
    fn non_invite_client_in_proceeding_retransmits_every_t2() {
        let mut h = Harness::new();
        let udp = flow(Transport::Udp);
        let bye = request("BYE", "z9hG4bKp");
        h.send_request(&udp, bye.clone());
        h.receive(1.0, &udp, response_to(&bye, 100, None));
        h.run_to(10.0);
        assert_eq!(h.sent_times("BYE"), [0.0, 0.5, 1.5, 5.5, 9.5]);
        h.receive(10.0, &udp, response_to(&bye, 200, Some("t")));
        h.run_to(20.0);
        assert_eq!(
            h.sent_times("BYE").len(),
            5,
            "no retransmission after the final response"
        );
        assert_eq!(
            h.timeouts_and_terminations(),
            [(15.0, "terminated")],
            "Timer K = T4"
        );
    }

    #[test]
    fn reliable_transports_never_retransmit_but_still_time_out() {
        for transport in [Transport::Tcp, Transport::Tls, Transport::Ws, Transport::Wss] {
            let mut h = Harness::new();
            h.send_request(&flow(transport), request("INVITE", "z9hG4bKi"));
            h.send_request(&flow(transport), request("OPTIONS", "z9hG4bKo"));
            h.run_to(40.0);
            assert_eq!(h.sent_times("INVITE"), [0.0], "{transport}");
            assert_eq!(h.sent_times("OPTIONS"), [0.0], "{transport}");
            let timeouts = h.timeouts_and_terminations();
            assert_eq!(
                timeouts
                    .iter()
                    .filter(|(at, what)| *at == 32.0 && *what == "timeout")
                    .count(),
                2
            );
        }
    }

    #[test]
    fn invite_client_acks_a_failure_and_absorbs_its_retransmissions_until_timer_d() {
        let mut h = Harness::new();
        let udp = flow(Transport::Udp);
        let invite = request("INVITE", "z9hG4bKf");
        let key = h.send_request(&udp, invite.clone());
        h.receive(0.2, &udp, response_to(&invite, 180, Some("pbx")));
        h.receive(2.0, &udp, response_to(&invite, 486, Some("pbx")));
        assert_eq!(h.layer.state(&key), Some(TransactionState::Completed));
        h.receive(2.5, &udp, response_to(&invite, 486, Some("pbx")));
        h.run_to(40.0);
        assert_eq!(
            h.sent_times("INVITE"),
            [0.0],
            "provisional response stops Timer A"
        );
        assert_eq!(h.sent_times("ACK"), [2.0, 2.5]);
        let SipMessage::Request(ack) = h.sent("ACK")[0] else {
            panic!("ACK is a request")
        };
        assert_eq!(ack.to_tag().as_deref(), Some("pbx"));
        assert_eq!(ack.branch(), invite.branch());
        assert_eq!(ack.cseq().unwrap().method, Method::Ack);
        assert_eq!(ack.uri, invite.uri);
        let responses: Vec<u16> = h
            .events()
            .iter()
            .filter_map(|(_, event)| match event {
                TransactionEvent::Response { response, .. } => Some(response.status_code.code()),
                _ => None,
            })
            .collect();
        assert_eq!(responses, [180, 486], "the retransmitted 486 is absorbed");
        assert_eq!(
            h.timeouts_and_terminations(),
            [(34.0, "terminated")],
            "Timer D = 32 s"
        );
    }

    #[test]
    fn invite_client_over_tcp_terminates_right_after_acking_a_failure() {
        let mut h = Harness::new();
        let tcp = flow(Transport::Tcp);
        let invite = request("INVITE", "z9hG4bKt");
        h.send_request(&tcp, invite.clone());
        h.receive(1.0, &tcp, response_to(&invite, 503, Some("pbx")));
        assert_eq!(h.sent_times("ACK"), [1.0]);
        assert_eq!(h.timeouts_and_terminations(), [(1.0, "terminated")]);
    }

    #[test]
    fn invite_client_passes_2xx_retransmissions_to_the_user_until_timer_m() {
        let mut h = Harness::new();
        let udp = flow(Transport::Udp);
        let invite = request("INVITE", "z9hG4bK2");
        let key = h.send_request(&udp, invite.clone());
        let ok = response_to(&invite, 200, Some("pbx"));
        h.receive(1.0, &udp, ok.clone());
        assert_eq!(h.layer.state(&key), Some(TransactionState::Accepted));
        h.receive(1.5, &udp, ok.clone());
        h.run_to(40.0);
        h.receive(40.0, &udp, ok);
        assert!(h.sent_times("ACK").is_empty(), "the 2xx ACK is the user's");
        let kinds: Vec<(f64, &str)> = h
            .events()
            .iter()
            .map(|(at, event)| match event {
                TransactionEvent::Response { .. } => (*at, "response"),
                TransactionEvent::Terminated { .. } => (*at, "terminated"),
                TransactionEvent::StrayResponse { .. } => (*at, "stray"),
                _ => (*at, "other"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                (1.0, "response"),
                (1.5, "response"),
                (33.0, "terminated"),
                (40.0, "stray")
            ]
        );
    }

    #[test]
    fn non_invite_client_over_tcp_terminates_on_the_final_response() {
        let mut h = Harness::new();
        let tcp = flow(Transport::Tcp);
        let options = request("OPTIONS", "z9hG4bKq");
        h.send_request(&tcp, options.clone());
        h.receive(0.1, &tcp, response_to(&options, 200, Some("x")));
        assert_eq!(h.timeouts_and_terminations(), [(0.1, "terminated")]);
        assert!(h.layer.is_empty());
    }

    #[test]
    fn invite_server_sends_trying_at_once_and_repeats_it_for_retransmissions() {
        let mut h = Harness::new();
        let udp = flow(Transport::Udp);
        let invite = request("INVITE", "z9hG4bKs");
        h.receive(0.0, &udp, invite.clone());
        assert_eq!(h.sent_times("100"), [0.0]);
        let SipMessage::Response(trying) = h.sent("100")[0] else {
            panic!("100 is a response")
        };
        assert_eq!(trying.to_tag(), None);
        assert_eq!(trying.call_id(), Some("call-1"));
        let requests = h
            .events()
            .iter()
            .filter(|(_, e)| matches!(e, TransactionEvent::Request { .. }))
            .count();
        assert_eq!(requests, 1);
        h.receive(0.5, &udp, invite.clone());
        assert_eq!(h.sent_times("100"), [0.0, 0.5]);
        let key = key(Role::Server, "z9hG4bKs", Method::Invite);
        h.respond(1.0, &key, response_to(&invite, 180, Some("gw")));
        h.receive(1.2, &udp, invite);
        assert_eq!(
            h.sent_times("180"),
            [1.0, 1.2],
            "the last provisional response is repeated"
        );
        let requests = h
            .events()
            .iter()
            .filter(|(_, e)| matches!(e, TransactionEvent::Request { .. }))
            .count();
        assert_eq!(requests, 1, "retransmissions are absorbed");
    }

    #[test]
    fn automatic_trying_can_be_turned_off() {
        let mut h = Harness::new();
        h.layer = Transactions::new(TransactionConfig {
            send_trying: false,
            ..TransactionConfig::default()
        });
        h.receive(0.0, &flow(Transport::Udp), request("INVITE", "z9hG4bKn"));
        assert!(h.sent_times("100").is_empty());
    }

    #[test]
    fn invite_server_retransmits_a_failure_on_timer_g_until_timer_h() {
        let mut h = Harness::new();
        let udp = flow(Transport::Udp);
        let (invite, key) = h.incoming(0.0, &udp, "INVITE", "z9hG4bKg");
        h.respond(0.0, &key, response_to(&invite, 486, Some("gw")));
        h.receive(1.0, &udp, invite);
        h.run_to(40.0);
        let expected = [0.0, 0.5, 1.0, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5];
        assert_eq!(
            h.sent_times("486"),
            expected,
            "G doubles to T2; a retransmitted INVITE gets it too"
        );
        assert_eq!(h.timeouts_and_terminations(), TIMED_OUT_AT_32);
    }

    #[test]
    fn invite_server_absorbs_the_failure_ack_and_ends_on_timer_i() {
        let mut h = Harness::new();
        let udp = flow(Transport::Udp);
        let (invite, key) = h.incoming(0.0, &udp, "INVITE", "z9hG4bKc");
        let busy = response_to(&invite, 486, Some("gw"));
        h.respond(0.0, &key, busy.clone());
        let ack = message::build_failure_ack(&invite, &busy).unwrap();
        h.receive(2.0, &udp, ack.clone());
        assert_eq!(h.layer.state(&key), Some(TransactionState::Confirmed));
        h.receive(2.1, &udp, ack);
        h.run_to(40.0);
        assert_eq!(h.sent_times("486"), [0.0, 0.5, 1.5]);
        assert!(
            !h.events()
                .iter()
                .any(|(_, e)| matches!(e, TransactionEvent::Ack { .. })),
            "ACKs absorbed"
        );
        assert_eq!(
            h.timeouts_and_terminations(),
            [(7.0, "terminated")],
            "Timer I = T4 after the ACK"
        );
    }

    #[test]
    fn invite_server_retransmits_2xx_until_its_ack_and_reports_a_missing_one() {
        let invite = request("INVITE", "z9hG4bK2s");
        let key = key(Role::Server, "z9hG4bK2s", Method::Invite);
        let udp = flow(Transport::Udp);
        let ok = response_to(&invite, 200, Some("gw"));
        let mut ack = request("ACK", "z9hG4bKack");
        ack.set_header("To", ok.header_value("To").unwrap());

        let mut acked = Harness::new();
        acked.receive(0.0, &udp, invite.clone());
        acked.respond(0.0, &key, ok.clone());
        acked.receive(2.0, &udp, ack);
        acked.receive(3.0, &udp, invite.clone());
        acked.run_to(40.0);
        assert_eq!(
            acked.sent_times("200"),
            [0.0, 0.5, 1.5],
            "stopped by the ACK; retransmitted INVITE absorbed"
        );
        let ack_events: Vec<_> = acked
            .events()
            .into_iter()
            .filter_map(|(at, event)| match event {
                TransactionEvent::Ack { invite, .. } => Some((at, invite.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(ack_events, [(2.0, Some(key.clone()))]);
        assert_eq!(
            acked.timeouts_and_terminations(),
            [(32.0, "terminated")],
            "Timer L, no timeout"
        );

        let mut unacked = Harness::new();
        unacked.receive(0.0, &udp, invite);
        unacked.respond(0.0, &key, ok);
        unacked.run_to(40.0);
        assert_eq!(unacked.sent_times("200").len(), 11);
        assert_eq!(unacked.timeouts_and_terminations(), TIMED_OUT_AT_32);
    }

    #[test]
    fn non_invite_server_repeats_its_final_response_until_timer_j() {
        let mut h = Harness::new();
        let udp = flow(Transport::Udp);
        let bye = request("BYE", "z9hG4bKb");
        h.receive(0.0, &udp, bye.clone());
        h.receive(0.1, &udp, bye.clone());
        assert!(h.sent_times("100").is_empty() && h.log.iter().all(|(_, r)| !matches!(r, Record::Sent(_))));
        let key = key(Role::Server, "z9hG4bKb", Method::Bye);
        h.respond(0.2, &key, response_to(&bye, 200, Some("gw")));
        h.receive(1.0, &udp, bye);
        h.run_to(40.0);
        assert_eq!(h.sent_times("200"), [0.2, 1.0]);
        assert_eq!(h.timeouts_and_terminations(), [(32.2, "terminated")]);
        assert_eq!(
            h.layer
                .send_response(h.now, &key, response_to(&request("BYE", "z9hG4bKb"), 200, None)),
            Err(TransactionError::Unknown(key))
        );
    }

    #[test]
    fn non_invite_server_over_websocket_terminates_after_the_final_response() {
        let mut h = Harness::new();
        let wss = flow(Transport::Wss);
        let bye = request("BYE", "z9hG4bKw");
        h.receive(0.0, &wss, bye.clone());
        h.respond(
            0.0,
            &key(Role::Server, "z9hG4bKw", Method::Bye),
            response_to(&bye, 200, Some("gw")),
        );
        assert_eq!(h.timeouts_and_terminations(), [(0.0, "terminated")]);
    }

    #[test]
    fn cancel_matching_a_pending_invite_is_answered_200_and_reported() {
        let mut h = Harness::new();
        let wss = flow(Transport::Wss);
        let invite = request("INVITE", "z9hG4bKx");
        let invite_key = key(Role::Server, "z9hG4bKx", Method::Invite);
        h.receive(0.0, &wss, invite.clone());
        h.respond(0.5, &invite_key, response_to(&invite, 180, Some("gwtag1")));
        let cancel = message::build_cancel(&invite).unwrap();
        h.receive(1.0, &wss, cancel.clone());
        let SipMessage::Response(cancel_ok) = h.sent("200")[0] else {
            panic!("a response")
        };
        assert_eq!(cancel_ok.cseq().unwrap().method, Method::Cancel);
        assert_eq!(
            cancel_ok.to_tag().as_deref(),
            Some("gwtag1"),
            "same To tag as the INVITE's responses"
        );
        let cancelled: Vec<_> = h
            .events()
            .into_iter()
            .filter_map(|(_, event)| match event {
                TransactionEvent::Cancelled { invite, .. } => Some(invite.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(cancelled, std::slice::from_ref(&invite_key));
        h.respond(1.0, &invite_key, response_to(&invite, 487, Some("gwtag1")));
        assert_eq!(h.sent_times("487"), [1.0]);
        h.receive(1.1, &wss, cancel);
        assert_eq!(
            h.sent_times("200"),
            [1.0, 1.1],
            "a late CANCEL still matches the INVITE"
        );
        let reports = h
            .events()
            .iter()
            .filter(|(_, e)| matches!(e, TransactionEvent::Cancelled { .. }))
            .count();
        assert_eq!(
            reports, 1,
            "the INVITE has its final response: nothing left to cancel"
        );
    }

    #[test]
    fn cancel_without_invite_gets_481_and_cancel_after_final_gets_200_only() {
        let mut h = Harness::new();
        let udp = flow(Transport::Udp);
        h.receive(
            0.0,
            &udp,
            message::build_cancel(&request("INVITE", "z9hG4bKnone")).unwrap(),
        );
        assert_eq!(h.sent_times("481"), [0.0]);
        let invite = request("INVITE", "z9hG4bKdone");
        h.receive(1.0, &udp, invite.clone());
        h.respond(
            1.0,
            &key(Role::Server, "z9hG4bKdone", Method::Invite),
            response_to(&invite, 603, Some("g")),
        );
        let cancel = message::build_cancel(&invite).unwrap();
        h.receive(2.0, &udp, cancel.clone());
        h.receive(2.2, &udp, cancel);
        assert_eq!(
            h.sent_times("200"),
            [2.0, 2.2],
            "the CANCEL transaction repeats its answer"
        );
        assert!(
            !h.events()
                .iter()
                .any(|(_, e)| matches!(e, TransactionEvent::Cancelled { .. }))
        );
    }

    #[test]
    fn malformed_request_is_answered_400_on_its_flow_and_reported() {
        let mut h = Harness::new();
        let wss = flow(Transport::Wss);
        let text = bytes_of(request("INVITE", "z9hG4bKm"));
        let broken = String::from_utf8(text)
            .unwrap()
            .replace("CSeq: 1 INVITE", "CSeq: x INVITE");
        h.layer.handle_receive(h.now, wss.clone(), broken.as_bytes());
        let mut outputs = Vec::new();
        while let Some(output) = h.layer.poll_output() {
            outputs.push(output);
        }
        assert!(
            matches!(&outputs[0], Output::Transmit { flow, bytes } if *flow == wss && bytes.starts_with(b"SIP/2.0 400"))
        );
        assert!(matches!(
            &outputs[1],
            Output::Event(TransactionEvent::Malformed { .. })
        ));
        assert_eq!(outputs.len(), 2);
        assert!(h.layer.is_empty());
    }

    #[test]
    fn transport_error_ends_the_transactions_of_that_flow_only() {
        let mut h = Harness::new();
        let tcp = flow(Transport::Tcp);
        let other = Flow {
            connection: Some(8),
            ..tcp.clone()
        };
        let failed = h.send_request(&tcp, request("INVITE", "z9hG4bKe1"));
        h.send_request(&other, request("INVITE", "z9hG4bKe2"));
        h.layer.handle_transport_error(&tcp);
        h.drain();
        let events: Vec<_> = h.events().into_iter().map(|(_, event)| event.clone()).collect();
        assert_eq!(
            events,
            [
                TransactionEvent::TransportError { key: failed.clone() },
                TransactionEvent::Terminated { key: failed }
            ]
        );
        assert_eq!(h.layer.len(), 1);
    }

    #[test]
    fn unmatched_ack_and_response_reach_the_user() {
        let mut h = Harness::new();
        let udp = flow(Transport::Udp);
        h.receive(0.0, &udp, request("ACK", "z9hG4bKlone"));
        h.receive(
            0.0,
            &udp,
            response_to(&request("INVITE", "z9hG4bKgone"), 200, Some("p")),
        );
        let events = h.events();
        assert!(matches!(events[0].1, TransactionEvent::Ack { invite: None, .. }));
        assert!(matches!(events[1].1, TransactionEvent::StrayResponse { .. }));
        assert!(h.layer.is_empty());
    }

    #[test]
    fn misuse_is_refused() {
        let mut layer = Transactions::new(TransactionConfig::default());
        let now = Instant::now();
        let udp = flow(Transport::Udp);
        let ack = request("ACK", "z9hG4bKa");
        assert_eq!(
            layer.handle_outgoing_request(now, udp.clone(), ack),
            Err(TransactionError::AckWithoutTransaction)
        );
        let mut no_branch = request("INVITE", "z9hG4bKa");
        no_branch.set_header("Via", "SIP/2.0/UDP 192.0.2.10");
        assert_eq!(
            layer.handle_outgoing_request(now, udp.clone(), no_branch),
            Err(TransactionError::MissingBranch)
        );
        let invite = request("INVITE", "z9hG4bKd");
        let key = layer
            .handle_outgoing_request(now, udp.clone(), invite.clone())
            .unwrap();
        assert!(matches!(
            layer.handle_outgoing_request(now, udp, invite.clone()),
            Err(TransactionError::Duplicate(_))
        ));
        assert!(matches!(
            layer.send_response(now, &key, response_to(&invite, 200, None)),
            Err(TransactionError::InvalidState { .. })
        ));
    }

    #[test]
    fn a_second_final_response_is_refused() {
        let mut h = Harness::new();
        let invite = request("INVITE", "z9hG4bKtwice");
        h.receive(0.0, &flow(Transport::Udp), invite.clone());
        let key = key(Role::Server, "z9hG4bKtwice", Method::Invite);
        h.respond(0.0, &key, response_to(&invite, 404, Some("g")));
        let again = h
            .layer
            .send_response(h.now, &key, response_to(&invite, 200, Some("g")));
        assert!(matches!(
            again,
            Err(TransactionError::InvalidState { status: 200, .. })
        ));
    }

    #[test]
    fn rfc2543_requests_without_magic_cookie_still_match_their_retransmissions() {
        let mut h = Harness::new();
        let udp = flow(Transport::Udp);
        let mut options = request("OPTIONS", "old1");
        h.receive(0.0, &udp, options.clone());
        options.set_header("Via", "SIP/2.0/UDP 192.0.2.10:5060");
        h.receive(0.0, &udp, options.clone());
        h.receive(0.1, &udp, options);
        let requests = h
            .events()
            .iter()
            .filter(|(_, e)| matches!(e, TransactionEvent::Request { .. }))
            .count();
        assert_eq!(
            requests, 2,
            "the branchless retransmission matched the branchless original"
        );
    }
}
