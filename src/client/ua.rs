//! The SIP side of one browser call, sans-IO: the INVITE a JsSIP page sends, its responses, CANCEL,
//! digest challenges, the dialog and every request in it, in either direction.
//!
//! WebSocket is reliable, so nothing is retransmitted; what is left of the RFC 3261 timers is a deadline
//! on the INVITE (no final response in time: CANCEL, or give up when nothing at all came back) and on
//! every other request. Messages are written the way JsSIP writes them: a `.invalid` Via host and Contact,
//! `Supported: outbound`, an Allow list and a User-Agent.
//!
//! Run loop: call a command ([`CallUa::invite`] first), or feed [`CallUa::handle_message`] /
//! [`CallUa::handle_timeout`], then drain [`CallUa::poll_output`] and sleep until
//! [`CallUa::next_timeout`]. SDP is opaque here: the caller gets offers and answers as strings in
//! [`UaEvent`]s and hands its own in through [`CallUa::invite`], [`CallUa::reinvite`] and
//! [`CallUa::answer_offer`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rsip::{Method, Request, Response, SipMessage, Version};

use crate::sip::message::{
    self, CSeq, DEFAULT_MAX_FORWARDS, HeaderParam, MessageError, MessageHeaders, NameAddr, Via,
};
use crate::sip::{Credentials, Dialog, DigestClient, Transport};

/// What JsSIP puts in Allow.
pub const ALLOW: &str = "INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY";
/// What JsSIP puts in Supported on an INVITE.
const SUPPORTED: &str = "ice,replaces,outbound";
/// Content type of SDP bodies.
const SDP: &str = "application/sdp";
/// RFC 3261 Timer F over a reliable transport: 64 × T1.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(32);

/// Why a [`CallUa`] command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UaError {
    /// The command does not fit the call's state (e.g. hold before the answer, INVITE twice).
    #[error("cannot {action} while the call is {phase:?}")]
    WrongPhase {
        /// What was asked.
        action: &'static str,
        /// Where the call is.
        phase: Phase,
    },
    /// The target or a configured header could not be written into a request.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The dialog refused to build the request.
    #[error(transparent)]
    Dialog(#[from] crate::sip::DialogError),
    /// [`CallUa::answer_offer`] or [`CallUa::reject_offer`] without an offer waiting.
    #[error("no offer is waiting for an answer")]
    NoOfferWaiting,
}

/// Where the call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing sent yet.
    Idle,
    /// INVITE sent, no response yet.
    Calling,
    /// A provisional response came.
    Proceeding,
    /// Answered and acknowledged.
    Confirmed,
    /// Our BYE is out.
    Terminating,
    /// Over.
    Ended,
}

/// Who ended the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// We did: BYE, CANCEL, or our INVITE timeout.
    Local,
    /// The gateway did: BYE, or a failure response to the INVITE.
    Remote,
    /// The WebSocket connection closed under the call.
    Transport,
}

/// Settings of one call.
#[derive(Debug, Clone)]
pub struct UaConfig {
    /// The Request-URI and To, e.g. `sip:<widget public id>@gateway.example`.
    pub target: String,
    /// `Ws` or `Wss`, for the Via transport token.
    pub transport: Transport,
    /// The From value without tag; JsSIP's anonymous caller by default.
    pub from: String,
    /// Headers added to the INVITE (e.g. `X-Callgate-Token`).
    pub extra_headers: Vec<(String, String)>,
    /// Answers 401/407 challenges when set.
    pub credentials: Option<Credentials>,
    /// The User-Agent header.
    pub user_agent: String,
    /// How long the INVITE may wait for a final response. Without any response the call ends with a
    /// local 408; after a provisional response a CANCEL is sent.
    pub invite_timeout: Duration,
    /// How long any other request may wait for its final response before it counts as 408.
    pub request_timeout: Duration,
    /// Asks for RFC 4028 session timers with this interval (JsSIP's default is 90); `None` leaves them out.
    pub session_expires: Option<u32>,
}

impl UaConfig {
    /// Defaults for a call to `target`: anonymous From, no extra headers, 32 s timeouts.
    pub fn new(target: impl Into<String>, transport: Transport) -> Self {
        UaConfig {
            target: target.into(),
            transport,
            from: "\"Anonymous\" <sip:anonymous@anonymous.invalid>".to_owned(),
            extra_headers: Vec::new(),
            credentials: None,
            user_agent: "JsSIP 3.10.1 (callgate test client)".to_owned(),
            invite_timeout: DEFAULT_REQUEST_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            session_expires: None,
        }
    }
}

/// Something that happened in the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UaEvent {
    /// A provisional response to the INVITE (100 included).
    Provisional {
        /// Its status code.
        status: u16,
        /// Its SDP, for early media.
        sdp: Option<String>,
    },
    /// The INVITE was challenged and sent again with credentials.
    Challenged {
        /// 401 or 407.
        status: u16,
    },
    /// The INVITE was answered 2xx; the ACK is already out.
    Answered {
        /// Its status code.
        status: u16,
        /// The answer SDP.
        sdp: Option<String>,
    },
    /// The INVITE's final failure response (3xx–6xx) as received, for its headers (Retry-After,
    /// Warning, Reason); [`UaEvent::Ended`] follows.
    Rejected(Box<Response>),
    /// The gateway sent an offer (re-INVITE or UPDATE with SDP); answer with [`CallUa::answer_offer`].
    OfferReceived {
        /// INVITE or UPDATE.
        method: Method,
        /// The offer.
        sdp: String,
    },
    /// A request in the call was received and answered 200 (INFO, OPTIONS, UPDATE without SDP, ACK).
    RequestReceived {
        /// Its method.
        method: Method,
        /// Its Content-Type.
        content_type: Option<String>,
        /// Its body.
        body: Vec<u8>,
    },
    /// The final response to a request we sent after the INVITE (BYE, CANCEL, re-INVITE, INFO, UPDATE…),
    /// or a local 408 when none came in time.
    Response {
        /// The request's method.
        method: Method,
        /// The request's CSeq number, as returned when it was sent.
        cseq: u32,
        /// The final status.
        status: u16,
        /// The SDP of a 2xx to a re-INVITE or UPDATE.
        sdp: Option<String>,
    },
    /// The call is over.
    Ended {
        /// Who ended it.
        by: EndedBy,
        /// The INVITE's final status for a call that was never answered (a local 408 for our timeout),
        /// the response to the BYE for a hangup (ours: what the gateway answered; the gateway's: our
        /// 200), `None` when the connection closed.
        status: Option<u16>,
    },
    /// A message that belongs to nothing in this call, e.g. the 400 to something sent with
    /// `send_raw`.
    Stray(Box<SipMessage>),
    /// Bytes that did not parse as SIP; answered with an error response when possible.
    Unparsable(String),
}

/// What [`CallUa::poll_output`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UaOutput {
    /// Send one SIP message (one WebSocket frame).
    Send(Vec<u8>),
    /// Something happened.
    Event(UaEvent),
}

/// Whether a CANCEL was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelState {
    NotAsked,
    /// Asked before any response: RFC 3261 §9.1 sends it once a provisional response came.
    WaitingForProvisional,
    Sent,
}

/// A request we sent after the INVITE, waiting for its final response.
#[derive(Debug, Clone)]
struct Outstanding {
    request: Request,
    deadline: Instant,
    /// The CSeq number the caller got back; a challenged request is resent with a new one but is
    /// reported under this one.
    reported_cseq: u32,
}

/// One browser call's SIP state. See the module docs.
#[derive(Debug)]
pub struct CallUa {
    config: UaConfig,
    via_host: String,
    contact: NameAddr,
    call_id: String,
    local_tag: String,
    phase: Phase,
    /// The latest INVITE that started the call (a challenge replaces it).
    invite: Option<Request>,
    invite_deadline: Option<Instant>,
    cancel: CancelState,
    digest: Option<DigestClient>,
    dialog: Option<Dialog>,
    outstanding: Vec<Outstanding>,
    /// A re-INVITE or UPDATE with an offer, waiting for `answer_offer`.
    offer_waiting: Option<Request>,
    /// Our last SDP, offered again when the gateway sends a re-INVITE without one.
    local_sdp: Option<String>,
    /// The ACK for the 2xx, sent again if the 2xx is.
    last_ack: Option<Vec<u8>>,
    /// When we refresh the session (RFC 4028, `refresher=uac`).
    refresh_at: Option<Instant>,
    session_interval: Option<Duration>,
    outputs: VecDeque<UaOutput>,
}

impl CallUa {
    /// A call with fresh random Call-ID, tag, Via host and Contact, nothing sent yet.
    pub fn new(config: UaConfig) -> Self {
        let via_host = format!("{}.invalid", message::new_tag().to_lowercase());
        let contact_user = message::new_tag().to_lowercase();
        let transport = "ws";
        let contact = NameAddr::new(format!("sip:{contact_user}@{via_host};transport={transport};ob"));
        let digest = config.credentials.clone().map(DigestClient::new);
        CallUa {
            config,
            via_host,
            contact,
            call_id: message::new_call_id(),
            local_tag: message::new_tag(),
            phase: Phase::Idle,
            invite: None,
            invite_deadline: None,
            cancel: CancelState::NotAsked,
            digest,
            dialog: None,
            outstanding: Vec::new(),
            offer_waiting: None,
            local_sdp: None,
            last_ack: None,
            refresh_at: None,
            session_interval: None,
            outputs: VecDeque::new(),
        }
    }

    /// Where the call is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The Call-ID.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The dialog, once a response with a To tag created it.
    pub fn dialog(&self) -> Option<&Dialog> {
        self.dialog.as_ref()
    }

    /// The INVITE as last sent (after a challenge, the authorized one).
    pub fn invite_request(&self) -> Option<&Request> {
        self.invite.as_ref()
    }

    /// Sends the INVITE with `offer_sdp`.
    pub fn invite(&mut self, now: Instant, offer_sdp: &str) -> Result<(), UaError> {
        self.expect_phase("invite", &[Phase::Idle])?;
        self.local_sdp = Some(offer_sdp.to_owned());
        let invite = self.build_invite(1, offer_sdp)?;
        self.send_invite(now, invite);
        Ok(())
    }

    /// Cancels the INVITE (sent at once after a provisional response, otherwise when one comes).
    pub fn cancel(&mut self, now: Instant) -> Result<(), UaError> {
        self.expect_phase("cancel", &[Phase::Calling, Phase::Proceeding])?;
        if self.cancel != CancelState::NotAsked {
            return Ok(());
        }
        if self.phase == Phase::Proceeding {
            self.send_cancel(now);
        } else {
            self.cancel = CancelState::WaitingForProvisional;
        }
        Ok(())
    }

    /// Sends BYE; returns its CSeq number. The call ends when its response comes.
    pub fn bye(&mut self, now: Instant) -> Result<u32, UaError> {
        self.expect_phase("hang up", &[Phase::Confirmed])?;
        let cseq = self.send_in_dialog(now, Method::Bye, None)?;
        self.phase = Phase::Terminating;
        Ok(cseq)
    }

    /// Sends a re-INVITE with `sdp` (hold, unhold); returns its CSeq number.
    pub fn reinvite(&mut self, now: Instant, sdp: &str) -> Result<u32, UaError> {
        self.expect_phase("re-INVITE", &[Phase::Confirmed])?;
        self.local_sdp = Some(sdp.to_owned());
        self.send_in_dialog(now, Method::Invite, Some((SDP, sdp.as_bytes().to_vec())))
    }

    /// Sends any other request in the dialog (INFO, UPDATE, OPTIONS, MESSAGE) with an optional
    /// `(content type, body)`; returns its CSeq number.
    pub fn request(
        &mut self,
        now: Instant,
        method: Method,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<u32, UaError> {
        self.expect_phase("send a request", &[Phase::Confirmed])?;
        self.send_in_dialog(now, method, body)
    }

    /// Answers the waiting offer 200 with `sdp`.
    pub fn answer_offer(&mut self, sdp: &str) -> Result<(), UaError> {
        let request = self.offer_waiting.take().ok_or(UaError::NoOfferWaiting)?;
        self.local_sdp = Some(sdp.to_owned());
        let mut response = self.response(&request, 200);
        response.push_header("Contact", self.contact.to_string());
        response.push_header("Allow", ALLOW);
        response.push_header("Content-Type", SDP);
        response.body = sdp.as_bytes().to_vec();
        self.send(message::response_bytes(&response));
        Ok(())
    }

    /// Refuses the waiting offer (488 Not Acceptable Here, typically).
    pub fn reject_offer(&mut self, status: u16) -> Result<(), UaError> {
        let request = self.offer_waiting.take().ok_or(UaError::NoOfferWaiting)?;
        let response = self.response(&request, status);
        self.send(message::response_bytes(&response));
        Ok(())
    }

    /// The WebSocket closed: the call is over unless it already was.
    pub fn connection_lost(&mut self) {
        self.end(EndedBy::Transport, None);
    }

    /// The next output, `None` when drained.
    pub fn poll_output(&mut self) -> Option<UaOutput> {
        self.outputs.pop_front()
    }

    /// When [`CallUa::handle_timeout`] should next be called.
    pub fn next_timeout(&self) -> Option<Instant> {
        [self.invite_deadline, self.refresh_at]
            .into_iter()
            .chain(self.outstanding.iter().map(|o| Some(o.deadline)))
            .flatten()
            .min()
    }

    /// Time passed: INVITE and request deadlines, session refresh.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.invite_deadline.is_some_and(|at| at <= now) {
            self.invite_deadline = None;
            match (self.phase, self.cancel) {
                (Phase::Proceeding, CancelState::NotAsked) => {
                    self.send_cancel(now);
                    self.invite_deadline = Some(now + self.config.request_timeout);
                }
                (Phase::Calling | Phase::Proceeding, _) => self.end(EndedBy::Local, Some(408)),
                _ => {}
            }
        }
        let (expired, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.outstanding)
            .into_iter()
            .partition(|o| o.deadline <= now);
        self.outstanding = waiting;
        for timed_out in expired {
            self.finish_request(&timed_out, 408, None);
        }
        if self.refresh_at.is_some_and(|at| at <= now) {
            self.refresh_at = None;
            if self.phase == Phase::Confirmed {
                // JsSIP refreshes with an UPDATE without SDP when the peer supports it.
                if let Err(error) = self.send_in_dialog(now, Method::Update, None) {
                    tracing::debug!(%error, "session refresh not sent");
                }
            }
        }
    }

    /// One message from the WebSocket.
    pub fn handle_message(&mut self, now: Instant, bytes: &[u8]) {
        match message::parse(bytes) {
            Ok(SipMessage::Request(request)) => self.handle_request(now, request),
            Ok(SipMessage::Response(response)) => self.handle_response(now, response),
            Err(error) => {
                if let Some(answer) = error.error_response() {
                    self.send(answer);
                }
                self.event(UaEvent::Unparsable(error.to_string()));
            }
        }
    }

    fn handle_response(&mut self, now: Instant, response: Response) {
        let Ok(cseq) = response.cseq() else {
            return self.stray(SipMessage::Response(response));
        };
        if response.call_id() != Some(self.call_id.as_str())
            || response.from_tag().as_deref() != Some(self.local_tag.as_str())
        {
            return self.stray(SipMessage::Response(response));
        }
        let invite_seq = self.invite.as_ref().and_then(|i| i.cseq().ok()).map(|c| c.seq);
        if cseq.method == Method::Cancel {
            // The CANCEL's own 200 (or 481 when it lost the race); the INVITE's response tells the rest.
            return;
        }
        if cseq.method == Method::Invite && Some(cseq.seq) == invite_seq {
            return self.handle_invite_response(now, response);
        }
        let code = response.status_code.code();
        let Some(index) = self
            .outstanding
            .iter()
            .position(|o| matches!(o.request.cseq(), Ok(c) if c == cseq))
        else {
            return self.stray(SipMessage::Response(response));
        };
        if code < 200 {
            return;
        }
        let outstanding = self.outstanding.remove(index);
        if cseq.method == Method::Invite {
            self.ack_reinvite(&outstanding.request, &response);
        }
        if let Some(dialog) = &mut self.dialog
            && (200..300).contains(&code)
        {
            let _ = dialog.handle_response(&response);
        }
        if matches!(code, 401 | 407) && self.resend_authorized(now, &outstanding, &response) {
            return;
        }
        if (200..300).contains(&code) {
            self.schedule_refresh(now, &response);
        }
        self.finish_request(&outstanding, code, sdp_of(&response));
    }

    fn handle_invite_response(&mut self, now: Instant, response: Response) {
        let code = response.status_code.code();
        let sdp = sdp_of(&response);
        match code {
            100..=199 => {
                if !matches!(self.phase, Phase::Calling | Phase::Proceeding) {
                    return;
                }
                self.phase = Phase::Proceeding;
                if code > 100 && response.to_tag().is_some() {
                    self.follow_early_dialog(&response);
                }
                self.event(UaEvent::Provisional { status: code, sdp });
                if self.cancel == CancelState::WaitingForProvisional {
                    self.send_cancel(now);
                }
            }
            200..=299 => {
                if !matches!(self.phase, Phase::Calling | Phase::Proceeding) {
                    // A retransmitted 2xx: our ACK was lost on the way (not over WebSocket, but cheap).
                    if let Some(ack) = self.last_ack.clone() {
                        self.send(ack);
                    }
                    return;
                }
                if let Err(error) = self.confirm_dialog(&response) {
                    tracing::debug!(%error, "2xx without a usable dialog");
                    return self.end(EndedBy::Remote, Some(code));
                }
                self.invite_deadline = None;
                self.phase = Phase::Confirmed;
                self.send_ack(&response);
                self.schedule_refresh(now, &response);
                self.event(UaEvent::Answered { status: code, sdp });
                if self.cancel != CancelState::NotAsked {
                    // The CANCEL lost the race with the 200 (RFC 3261 §9.1): hang up instead.
                    if let Err(error) = self.bye(now) {
                        tracing::debug!(%error, "BYE after a lost CANCEL race not sent");
                    }
                }
            }
            _ => {
                if !matches!(self.phase, Phase::Calling | Phase::Proceeding) {
                    return;
                }
                if let Some(invite) = &self.invite
                    && let Ok(ack) = message::build_failure_ack(invite, &response)
                {
                    self.send(message::request_bytes(&ack));
                }
                if matches!(code, 401 | 407)
                    && self.cancel == CancelState::NotAsked
                    && self.resend_invite_authorized(now, &response)
                {
                    return self.event(UaEvent::Challenged { status: code });
                }
                let by = if self.cancel == CancelState::NotAsked {
                    EndedBy::Remote
                } else {
                    EndedBy::Local
                };
                self.event(UaEvent::Rejected(Box::new(response)));
                self.end(by, Some(code));
            }
        }
    }

    fn handle_request(&mut self, now: Instant, request: Request) {
        let in_dialog = self.dialog.as_ref().is_some_and(|d| d.matches(&request));
        match request.method {
            Method::Ack => {
                if in_dialog {
                    self.event(UaEvent::RequestReceived {
                        method: Method::Ack,
                        content_type: request.content_type().map(str::to_owned),
                        body: request.body.clone(),
                    });
                }
            }
            Method::Options if !in_dialog => {
                // JsSIP answers out-of-dialog OPTIONS (keepalives) too.
                let mut response = message::response_to(&request, 200, Some(&message::new_tag()));
                response.push_header("Allow", ALLOW);
                response.push_header("Accept", SDP);
                self.send(message::response_bytes(&response));
                self.received(&request);
            }
            _ if !in_dialog => {
                let response = message::response_to(&request, 481, Some(&message::new_tag()));
                self.send(message::response_bytes(&response));
            }
            _ => self.handle_dialog_request(now, request),
        }
    }

    fn handle_dialog_request(&mut self, now: Instant, request: Request) {
        if let Some(dialog) = &mut self.dialog
            && let Err(error) = dialog.handle_request(&request)
        {
            tracing::debug!(%error, "in-dialog request refused");
            let response = self.response(&request, 500);
            return self.send(message::response_bytes(&response));
        }
        match request.method {
            Method::Bye => {
                let response = self.response(&request, 200);
                self.send(message::response_bytes(&response));
                self.end(EndedBy::Remote, Some(200));
            }
            Method::Invite | Method::Update => self.handle_offer(now, request),
            Method::Options | Method::Info | Method::Message | Method::Notify => {
                let mut response = self.response(&request, 200);
                if request.method == Method::Options {
                    response.push_header("Allow", ALLOW);
                    response.push_header("Accept", SDP);
                }
                self.send(message::response_bytes(&response));
                self.received(&request);
            }
            _ => {
                let mut response = self.response(&request, 405);
                response.push_header("Allow", ALLOW);
                self.send(message::response_bytes(&response));
            }
        }
    }

    /// A re-INVITE or UPDATE from the gateway: an offer to answer, or a refresh without SDP.
    fn handle_offer(&mut self, now: Instant, request: Request) {
        let offering_ourselves = self
            .outstanding
            .iter()
            .any(|o| matches!(o.request.method, Method::Invite | Method::Update));
        if offering_ourselves || self.offer_waiting.is_some() {
            // RFC 3261 §14.2: an offer while ours is pending is glare.
            let response = self.response(&request, 491);
            return self.send(message::response_bytes(&response));
        }
        self.schedule_refresh_from_request(now, &request);
        match sdp_of_request(&request) {
            Some(sdp) => {
                let method = request.method;
                self.offer_waiting = Some(request);
                self.event(UaEvent::OfferReceived { method, sdp });
            }
            None if request.method == Method::Invite && self.local_sdp.is_some() => {
                // An offerless re-INVITE (a session refresh): offer what we have, the answer comes in
                // the ACK, which changes nothing here.
                let sdp = self.local_sdp.clone().unwrap_or_default();
                self.offer_waiting = Some(request.clone());
                if let Err(error) = self.answer_offer(&sdp) {
                    tracing::debug!(%error, "offerless re-INVITE not answered");
                }
                self.received(&request);
            }
            None => {
                let mut response = self.response(&request, 200);
                response.push_header("Contact", self.contact.to_string());
                self.send(message::response_bytes(&response));
                self.received(&request);
            }
        }
    }

    fn received(&mut self, request: &Request) {
        self.event(UaEvent::RequestReceived {
            method: request.method,
            content_type: request.content_type().map(str::to_owned),
            body: request.body.clone(),
        });
    }

    fn build_invite(&self, seq: u32, sdp: &str) -> Result<Request, UaError> {
        let uri = message::parse_uri(&self.config.target)?;
        let mut from = NameAddr::parse(&self.config.from)
            .map_err(|reason| MessageError::BadHeader { name: "From", reason })?;
        from.set_tag(&self.local_tag);
        let mut invite = Request {
            method: Method::Invite,
            uri,
            version: Version::V2,
            headers: Default::default(),
            body: sdp.as_bytes().to_vec(),
        };
        invite.push_header("Via", self.via().to_string());
        invite.push_header("Max-Forwards", (DEFAULT_MAX_FORWARDS - 1).to_string());
        invite.push_header("To", NameAddr::new(self.config.target.clone()).to_string());
        invite.push_header("From", from.to_string());
        invite.push_header("Call-ID", self.call_id.as_str());
        invite.push_header(
            "CSeq",
            CSeq {
                seq,
                method: Method::Invite,
            }
            .to_string(),
        );
        for (name, value) in &self.config.extra_headers {
            invite.push_header(name, value.as_str());
        }
        invite.push_header("Contact", self.contact.to_string());
        invite.push_header("Content-Type", SDP);
        if let Some(expires) = self.config.session_expires {
            invite.push_header("Session-Expires", expires.to_string());
            invite.push_header("Supported", format!("timer,{SUPPORTED}"));
        } else {
            invite.push_header("Supported", SUPPORTED);
        }
        invite.push_header("Allow", ALLOW);
        invite.push_header("User-Agent", self.config.user_agent.as_str());
        Ok(invite)
    }

    fn send_invite(&mut self, now: Instant, invite: Request) {
        self.send(message::request_bytes(&invite));
        self.invite = Some(invite);
        self.phase = Phase::Calling;
        self.invite_deadline = Some(now + self.config.invite_timeout);
    }

    /// Sends the INVITE again, one CSeq higher and with credentials, after a 401/407. False when there
    /// are no credentials or they were refused.
    fn resend_invite_authorized(&mut self, now: Instant, response: &Response) -> bool {
        let via = self.via();
        let (Some(digest), Some(previous)) = (&mut self.digest, &self.invite) else {
            return false;
        };
        if let Err(error) = digest.handle_challenge(response) {
            tracing::debug!(%error, "challenge not answered");
            return false;
        }
        let mut invite = previous.clone();
        let seq = previous.cseq().map_or(1, |c| c.seq.wrapping_add(1));
        invite.set_header(
            "CSeq",
            CSeq {
                seq,
                method: Method::Invite,
            }
            .to_string(),
        );
        invite.set_header("Via", via.to_string());
        if digest.authorize(&mut invite).is_err() {
            return false;
        }
        self.dialog = None;
        self.send_invite(now, invite);
        true
    }

    /// Sends a challenged in-dialog request again with credentials; true when it went out.
    fn resend_authorized(&mut self, now: Instant, original: &Outstanding, response: &Response) -> bool {
        let Some(digest) = &mut self.digest else {
            return false;
        };
        if digest.handle_challenge(response).is_err() {
            return false;
        }
        let body = original
            .request
            .content_type()
            .map(|content_type| (content_type.to_owned(), original.request.body.clone()));
        let Ok(mut request) = self.build_in_dialog(original.request.method, body) else {
            return false;
        };
        let Some(digest) = &mut self.digest else {
            return false;
        };
        if digest.authorize(&mut request).is_err() {
            return false;
        }
        self.send(message::request_bytes(&request));
        self.outstanding.push(Outstanding {
            request,
            deadline: now + self.config.request_timeout,
            reported_cseq: original.reported_cseq,
        });
        true
    }

    fn send_cancel(&mut self, now: Instant) {
        let Some(invite) = &self.invite else { return };
        match message::build_cancel(invite) {
            Ok(cancel) => {
                self.send(message::request_bytes(&cancel));
                self.cancel = CancelState::Sent;
                self.invite_deadline = Some(now + self.config.request_timeout);
            }
            Err(error) => tracing::debug!(%error, "CANCEL not built"),
        }
    }

    fn follow_early_dialog(&mut self, response: &Response) {
        let same = self.dialog.as_ref().is_some_and(|d| d.matches_response(response));
        if same {
            if let Some(dialog) = &mut self.dialog {
                let _ = dialog.handle_response(response);
            }
        } else if let Some(invite) = &self.invite
            && let Ok(dialog) = Dialog::uac(invite, response)
        {
            self.dialog = Some(dialog);
        }
    }

    fn confirm_dialog(&mut self, response: &Response) -> Result<(), UaError> {
        if let Some(dialog) = &mut self.dialog
            && dialog.matches_response(response)
        {
            dialog.handle_response(response)?;
            return Ok(());
        }
        let invite = self.invite.as_ref().ok_or(UaError::WrongPhase {
            action: "take a 2xx",
            phase: self.phase,
        })?;
        self.dialog = Some(Dialog::uac(invite, response)?);
        Ok(())
    }

    fn send_ack(&mut self, response: &Response) {
        let seq = response.cseq().map_or(1, |c| c.seq);
        let via = self.via();
        let Some(dialog) = &self.dialog else { return };
        match dialog.build_ack(seq, via) {
            Ok(mut ack) => {
                ack.push_header("User-Agent", self.config.user_agent.as_str());
                let bytes = message::request_bytes(&ack);
                self.last_ack = Some(bytes.clone());
                self.send(bytes);
            }
            Err(error) => tracing::debug!(%error, "ACK not built"),
        }
    }

    /// ACK for the final response to our re-INVITE: in the dialog for a 2xx, like a failure ACK otherwise.
    fn ack_reinvite(&mut self, reinvite: &Request, response: &Response) {
        let code = response.status_code.code();
        if (200..300).contains(&code) {
            return self.send_ack(response);
        }
        if let Ok(ack) = message::build_failure_ack(reinvite, response) {
            self.send(message::request_bytes(&ack));
        }
    }

    fn send_in_dialog(
        &mut self,
        now: Instant,
        method: Method,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<u32, UaError> {
        let body = body.map(|(content_type, bytes)| (content_type.to_owned(), bytes));
        let mut request = self.build_in_dialog(method, body)?;
        if let Some(digest) = &mut self.digest
            && digest.is_challenged()
        {
            // Once challenged, JsSIP-like clients send credentials pre-emptively.
            let _ = digest.authorize(&mut request);
        }
        let cseq = request.cseq()?.seq;
        self.send(message::request_bytes(&request));
        self.outstanding.push(Outstanding {
            request,
            deadline: now + self.config.request_timeout,
            reported_cseq: cseq,
        });
        Ok(cseq)
    }

    fn build_in_dialog(
        &mut self,
        method: Method,
        body: Option<(String, Vec<u8>)>,
    ) -> Result<Request, UaError> {
        let via = self.via();
        let phase = self.phase;
        let dialog = self.dialog.as_mut().ok_or(UaError::WrongPhase {
            action: "send an in-dialog request",
            phase,
        })?;
        let mut request = dialog.build_request(method, via)?;
        if matches!(method, Method::Invite | Method::Update) {
            request.push_header("Allow", ALLOW);
            if let Some(interval) = self.session_interval {
                request.push_header("Session-Expires", format!("{};refresher=uac", interval.as_secs()));
                request.push_header("Supported", "timer");
            }
        }
        request.push_header("User-Agent", self.config.user_agent.as_str());
        if let Some((content_type, bytes)) = body {
            request.push_header("Content-Type", content_type);
            request.body = bytes;
        }
        Ok(request)
    }

    fn finish_request(&mut self, outstanding: &Outstanding, status: u16, sdp: Option<String>) {
        let method = outstanding.request.method;
        self.event(UaEvent::Response {
            method,
            cseq: outstanding.reported_cseq,
            status,
            sdp,
        });
        if method == Method::Bye {
            self.end(EndedBy::Local, Some(status));
        }
    }

    /// RFC 4028: when the answer makes us the refresher, refresh at half the interval.
    fn schedule_refresh(&mut self, now: Instant, response: &Response) {
        if self.config.session_expires.is_none() {
            return;
        }
        let Some((interval, refresher)) = response.header_value("Session-Expires").and_then(session_expires)
        else {
            return;
        };
        self.session_interval = Some(interval);
        self.refresh_at = (refresher.as_deref() != Some("uas")).then(|| now + interval / 2);
    }

    /// A refresh from the gateway moves our own refresh (if we are the refresher) further out.
    fn schedule_refresh_from_request(&mut self, now: Instant, request: &Request) {
        let Some((interval, refresher)) = request.header_value("Session-Expires").and_then(session_expires)
        else {
            return;
        };
        self.session_interval = Some(interval);
        // In a request, refresher=uac means the gateway (the sender) refreshes.
        self.refresh_at = (refresher.as_deref() == Some("uas")).then(|| now + interval / 2);
    }

    fn end(&mut self, by: EndedBy, status: Option<u16>) {
        if self.phase == Phase::Ended {
            return;
        }
        self.phase = Phase::Ended;
        self.invite_deadline = None;
        self.refresh_at = None;
        self.outstanding.clear();
        self.event(UaEvent::Ended { by, status });
    }

    fn expect_phase(&self, action: &'static str, allowed: &[Phase]) -> Result<(), UaError> {
        if allowed.contains(&self.phase) {
            Ok(())
        } else {
            Err(UaError::WrongPhase {
                action,
                phase: self.phase,
            })
        }
    }

    /// A Via like JsSIP's: the random `.invalid` host, a branch, no rport.
    fn via(&self) -> Via {
        Via {
            transport: self.config.transport.via_name().to_owned(),
            host: self.via_host.clone(),
            port: None,
            params: vec![HeaderParam {
                name: "branch".to_owned(),
                value: Some(message::new_branch()),
            }],
        }
    }

    /// A response to an in-dialog request, with our User-Agent.
    fn response(&self, request: &Request, status: u16) -> Response {
        let mut response = message::response_to(request, status, Some(&self.local_tag));
        response.push_header("User-Agent", self.config.user_agent.as_str());
        response
    }

    fn stray(&mut self, message: SipMessage) {
        self.event(UaEvent::Stray(Box::new(message)));
    }

    fn send(&mut self, bytes: Vec<u8>) {
        self.outputs.push_back(UaOutput::Send(bytes));
    }

    fn event(&mut self, event: UaEvent) {
        self.outputs.push_back(UaOutput::Event(event));
    }
}

/// The SDP body of a response, when it has one.
fn sdp_of(response: &Response) -> Option<String> {
    body_if_sdp(response.content_type(), &response.body)
}

fn sdp_of_request(request: &Request) -> Option<String> {
    body_if_sdp(request.content_type(), &request.body)
}

fn body_if_sdp(content_type: Option<&str>, body: &[u8]) -> Option<String> {
    let is_sdp = content_type.is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(SDP))
    });
    (is_sdp && !body.is_empty()).then(|| String::from_utf8_lossy(body).into_owned())
}

/// Reads `Session-Expires: 90;refresher=uac` into the interval and the refresher.
fn session_expires(value: &str) -> Option<(Duration, Option<String>)> {
    let mut parts = value.split(';');
    let seconds: u64 = parts.next()?.trim().parse().ok()?;
    let refresher = parts.find_map(|part| {
        let (name, value) = part.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("refresher")
            .then(|| value.trim().to_ascii_lowercase())
    });
    (seconds > 0).then(|| (Duration::from_secs(seconds), refresher))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: &str = "sip:w1dg3t@gateway.test";

    /// A UA and the requests it sent, parsed; time is simulated.
    struct Harness {
        ua: CallUa,
        now: Instant,
        sent: Vec<SipMessage>,
        events: Vec<UaEvent>,
    }

    impl Harness {
        fn new(config: UaConfig) -> Self {
            Harness {
                ua: CallUa::new(config),
                now: Instant::now(),
                sent: Vec::new(),
                events: Vec::new(),
            }
        }

        fn dialing() -> Self {
            let mut harness = Harness::new(UaConfig::new(TARGET, Transport::Ws));
            harness.ua.invite(harness.now, "v=0\r\n").unwrap();
            harness.drain();
            harness
        }

        fn drain(&mut self) {
            while let Some(output) = self.ua.poll_output() {
                match output {
                    UaOutput::Send(bytes) => self.sent.push(message::parse(&bytes).unwrap()),
                    UaOutput::Event(event) => self.events.push(event),
                }
            }
        }

        fn last_request(&self) -> Request {
            match self
                .sent
                .iter()
                .rev()
                .find(|m| matches!(m, SipMessage::Request(_)))
            {
                Some(SipMessage::Request(request)) => request.clone(),
                _ => panic!("nothing sent"),
            }
        }

        fn last_response(&self) -> Response {
            match self.sent.last() {
                Some(SipMessage::Response(response)) => response.clone(),
                other => panic!("{other:?}"),
            }
        }

        fn invite(&self) -> Request {
            self.ua.invite_request().unwrap().clone()
        }

        /// Feeds the gateway's `status` response to `request`, with To tag `gw` and a Record-Route.
        fn respond(&mut self, request: &Request, status: u16, sdp: Option<&str>) {
            let mut response = message::response_to(request, status, Some("gw"));
            if (101..300).contains(&status) {
                response.push_header("Contact", "<sip:gw@127.0.0.1:8080;transport=ws>");
                response.push_header("Record-Route", "<sip:127.0.0.1:8080;transport=ws;lr>");
            }
            if let Some(sdp) = sdp {
                response.push_header("Content-Type", SDP);
                response.body = sdp.as_bytes().to_vec();
            }
            self.ua
                .handle_message(self.now, &message::response_bytes(&response));
            self.drain();
        }

        fn answered() -> Self {
            let mut harness = Harness::dialing();
            let invite = harness.invite();
            harness.respond(&invite, 180, None);
            harness.respond(&invite, 200, Some("answer"));
            harness
        }

        /// A request from the gateway in the dialog.
        fn gateway_request(&mut self, method: Method, cseq: u32, body: Option<(&str, &str)>) {
            let invite = self.invite();
            let from_tag = invite.from_tag().unwrap();
            let contact = self.ua.contact.uri.clone();
            let mut text = format!(
                "{method} {contact} SIP/2.0\r\nVia: SIP/2.0/WS 127.0.0.1:8080;branch=z9hG4bKgw{cseq}\r\n\
                 From: <{TARGET}>;tag=gw\r\nTo: <sip:anonymous@anonymous.invalid>;tag={from_tag}\r\n\
                 Call-ID: {}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n\
                 Contact: <sip:gw@127.0.0.1:8080;transport=ws>\r\n",
                self.ua.call_id()
            );
            match body {
                Some((content_type, body)) => {
                    text.push_str(&format!(
                        "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    ));
                }
                None => text.push_str("Content-Length: 0\r\n\r\n"),
            }
            self.ua.handle_message(self.now, text.as_bytes());
            self.drain();
        }
    }

    #[test]
    fn invite_looks_like_jssip() {
        let mut config = UaConfig::new(TARGET, Transport::Wss);
        config
            .extra_headers
            .push(("X-Callgate-Token".to_owned(), "abc".to_owned()));
        let mut harness = Harness::new(config);
        harness.ua.invite(harness.now, "v=0\r\n").unwrap();
        harness.drain();
        let invite = harness.last_request();
        assert_eq!(invite.method, Method::Invite);
        assert_eq!(invite.uri.to_string(), TARGET);
        let via = invite.top_via().unwrap();
        assert_eq!(via.transport, "WSS");
        assert!(via.host.ends_with(".invalid"), "{via}");
        assert!(via.branch().unwrap().starts_with("z9hG4bK"));
        assert!(!via.has_param("rport"));
        let contact = invite.contact().unwrap().unwrap();
        assert!(
            contact.uri.contains(&format!("@{};transport=ws", via.host)),
            "{contact}"
        );
        let from = invite.from_addr().unwrap();
        assert_eq!(from.uri, "sip:anonymous@anonymous.invalid");
        assert!(from.tag().is_some());
        assert_eq!(invite.to_tag(), None);
        assert_eq!(invite.header_value("X-Callgate-Token"), Some("abc"));
        assert!(invite.header_value("Supported").unwrap().contains("outbound"));
        assert!(invite.header_value("Allow").unwrap().contains("INFO"));
        assert!(invite.header_value("User-Agent").is_some());
        assert_eq!(invite.content_type(), Some(SDP));
        assert_eq!(invite.body, b"v=0\r\n");
        assert_eq!(harness.ua.phase(), Phase::Calling);
    }

    #[test]
    fn answer_is_acknowledged_through_the_route_set() {
        let mut harness = Harness::dialing();
        let invite = harness.invite();
        harness.respond(&invite, 100, None);
        harness.respond(&invite, 183, Some("early"));
        harness.respond(&invite, 200, Some("answer"));
        assert_eq!(
            harness.events,
            [
                UaEvent::Provisional {
                    status: 100,
                    sdp: None
                },
                UaEvent::Provisional {
                    status: 183,
                    sdp: Some("early".to_owned())
                },
                UaEvent::Answered {
                    status: 200,
                    sdp: Some("answer".to_owned())
                },
            ]
        );
        let ack = harness.last_request();
        assert_eq!(ack.method, Method::Ack);
        assert!(
            ack.uri
                .to_string()
                .eq_ignore_ascii_case("sip:gw@127.0.0.1:8080;transport=ws"),
            "{}",
            ack.uri
        );
        assert_eq!(ack.route().unwrap().len(), 1);
        assert_eq!(ack.cseq().unwrap().seq, 1);
        assert_ne!(ack.branch(), invite.branch(), "a 2xx ACK is a new transaction");
        assert_eq!(harness.ua.phase(), Phase::Confirmed);
    }

    #[test]
    fn failure_is_acknowledged_and_ends_the_call() {
        let mut harness = Harness::dialing();
        let invite = harness.invite();
        harness.respond(&invite, 486, None);
        let ack = harness.last_request();
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(
            ack.branch(),
            invite.branch(),
            "a failure ACK shares the INVITE's branch"
        );
        assert_eq!(
            harness.events.last(),
            Some(&UaEvent::Ended {
                by: EndedBy::Remote,
                status: Some(486)
            })
        );
    }

    #[test]
    fn challenge_is_answered_once_with_a_new_cseq() {
        let mut config = UaConfig::new(TARGET, Transport::Ws);
        config.credentials = Some(Credentials {
            username: "alice".to_owned(),
            password: "secret".to_owned(),
        });
        let mut harness = Harness::new(config);
        harness.ua.invite(harness.now, "v=0\r\n").unwrap();
        harness.drain();
        let first = harness.invite();
        let mut challenge = message::response_to(&first, 407, Some("gw"));
        challenge.push_header(
            "Proxy-Authenticate",
            "Digest realm=\"gw\", nonce=\"n1\", qop=\"auth\", algorithm=MD5",
        );
        harness
            .ua
            .handle_message(harness.now, &message::response_bytes(&challenge));
        harness.drain();
        let second = harness.invite();
        assert_eq!(second.cseq().unwrap().seq, 2);
        assert_eq!(second.call_id(), first.call_id());
        assert_eq!(second.from_tag(), first.from_tag());
        assert_ne!(second.branch(), first.branch());
        let authorization = second.header_value("Proxy-Authorization").unwrap();
        assert!(
            crate::sip::digest::verify("INVITE", TARGET, authorization, "secret", b"v=0\r\n").unwrap(),
            "{authorization}"
        );
        assert!(harness.events.contains(&UaEvent::Challenged { status: 407 }));
        // The same nonce again: the credentials were refused, the call ends with the 407.
        harness.ua.handle_message(
            harness.now,
            &message::response_bytes(&{
                let mut again = message::response_to(&second, 407, Some("gw"));
                again.push_header(
                    "Proxy-Authenticate",
                    "Digest realm=\"gw\", nonce=\"n1\", qop=\"auth\", algorithm=MD5",
                );
                again
            }),
        );
        harness.drain();
        assert_eq!(
            harness.events.last(),
            Some(&UaEvent::Ended {
                by: EndedBy::Remote,
                status: Some(407)
            })
        );
    }

    #[test]
    fn cancel_waits_for_a_provisional_response() {
        let mut harness = Harness::dialing();
        harness.ua.cancel(harness.now).unwrap();
        harness.drain();
        assert_eq!(harness.sent.len(), 1, "no CANCEL before any response");
        let invite = harness.invite();
        harness.respond(&invite, 180, None);
        let cancel = harness.last_request();
        assert_eq!(cancel.method, Method::Cancel);
        assert_eq!(cancel.branch(), invite.branch());
        harness.respond(&invite, 487, None);
        assert_eq!(harness.last_request().method, Method::Ack);
        assert_eq!(
            harness.events.last(),
            Some(&UaEvent::Ended {
                by: EndedBy::Local,
                status: Some(487)
            })
        );
    }

    #[test]
    fn a_200_racing_the_cancel_is_acknowledged_then_hung_up() {
        let mut harness = Harness::dialing();
        let invite = harness.invite();
        harness.respond(&invite, 180, None);
        harness.ua.cancel(harness.now).unwrap();
        harness.drain();
        harness.respond(&invite, 200, Some("answer"));
        let methods: Vec<Method> = harness
            .sent
            .iter()
            .filter_map(|m| match m {
                SipMessage::Request(r) => Some(r.method),
                SipMessage::Response(_) => None,
            })
            .collect();
        assert_eq!(
            methods,
            [Method::Invite, Method::Cancel, Method::Ack, Method::Bye]
        );
        let bye = harness.last_request();
        harness.respond(&bye, 200, None);
        assert_eq!(
            harness.events.last(),
            Some(&UaEvent::Ended {
                by: EndedBy::Local,
                status: Some(200)
            })
        );
    }

    #[test]
    fn invite_timeout_without_any_response_is_a_local_408() {
        let mut harness = Harness::dialing();
        let deadline = harness.ua.next_timeout().unwrap();
        assert_eq!(deadline - harness.now, Duration::from_secs(32));
        harness.ua.handle_timeout(deadline);
        harness.drain();
        assert_eq!(
            harness.events.last(),
            Some(&UaEvent::Ended {
                by: EndedBy::Local,
                status: Some(408)
            })
        );
    }

    #[test]
    fn invite_timeout_after_ringing_cancels() {
        let mut config = UaConfig::new(TARGET, Transport::Ws);
        config.invite_timeout = Duration::from_secs(5);
        let mut harness = Harness::new(config);
        harness.ua.invite(harness.now, "v=0\r\n").unwrap();
        harness.drain();
        let invite = harness.invite();
        harness.respond(&invite, 180, None);
        harness.ua.handle_timeout(harness.now + Duration::from_secs(5));
        harness.drain();
        assert_eq!(harness.last_request().method, Method::Cancel);
        assert_eq!(harness.ua.phase(), Phase::Proceeding);
    }

    #[test]
    fn gateway_bye_is_answered_and_ends_the_call() {
        let mut harness = Harness::answered();
        harness.gateway_request(Method::Bye, 5, None);
        assert_eq!(harness.last_response().status_code.code(), 200);
        assert_eq!(
            harness.events.last(),
            Some(&UaEvent::Ended {
                by: EndedBy::Remote,
                status: Some(200)
            })
        );
    }

    #[test]
    fn gateway_reinvite_waits_for_our_answer() {
        let mut harness = Harness::answered();
        harness.gateway_request(Method::Invite, 5, Some((SDP, "offer")));
        assert_eq!(
            harness.events.last(),
            Some(&UaEvent::OfferReceived {
                method: Method::Invite,
                sdp: "offer".to_owned()
            })
        );
        harness.ua.answer_offer("our answer").unwrap();
        harness.drain();
        let ok = harness.last_response();
        assert_eq!(ok.status_code.code(), 200);
        assert_eq!(ok.body, b"our answer");
        assert!(ok.contact().unwrap().is_some());
        assert_eq!(harness.ua.answer_offer("again"), Err(UaError::NoOfferWaiting));
        // An older CSeq is refused.
        harness.gateway_request(Method::Info, 4, None);
        assert_eq!(harness.last_response().status_code.code(), 500);
    }

    #[test]
    fn options_are_answered_in_and_out_of_the_dialog() {
        let mut harness = Harness::answered();
        harness.gateway_request(Method::Options, 5, None);
        assert_eq!(harness.last_response().status_code.code(), 200);
        let keepalive = "OPTIONS sip:x@y.invalid SIP/2.0\r\nVia: SIP/2.0/WS 127.0.0.1;branch=z9hG4bKk\r\n\
            From: <sip:gw@127.0.0.1>;tag=k\r\nTo: <sip:x@y.invalid>\r\nCall-ID: other\r\nCSeq: 1 OPTIONS\r\n\
            Content-Length: 0\r\n\r\n";
        harness.ua.handle_message(harness.now, keepalive.as_bytes());
        harness.drain();
        let ok = harness.last_response();
        assert_eq!(ok.status_code.code(), 200);
        assert_eq!(ok.call_id(), Some("other"));
    }

    #[test]
    fn hold_reinvite_and_info_are_reported_by_cseq() {
        let mut harness = Harness::answered();
        let hold = harness.ua.reinvite(harness.now, "sendonly").unwrap();
        harness.drain();
        let reinvite = harness.last_request();
        assert_eq!(reinvite.cseq().unwrap().seq, hold);
        assert_eq!(reinvite.body, b"sendonly");
        harness.respond(&reinvite, 200, Some("recvonly"));
        assert_eq!(harness.last_request().method, Method::Ack);
        assert_eq!(
            harness.events.last(),
            Some(&UaEvent::Response {
                method: Method::Invite,
                cseq: hold,
                status: 200,
                sdp: Some("recvonly".to_owned())
            })
        );
        let info = harness
            .ua
            .request(
                harness.now,
                Method::Info,
                Some(("application/dtmf-relay", b"Signal=5\r\nDuration=100\r\n".to_vec())),
            )
            .unwrap();
        harness.drain();
        assert_eq!(info, hold + 1);
        // No answer within the request timeout: a local 408.
        harness.ua.handle_timeout(harness.now + Duration::from_secs(32));
        harness.drain();
        assert_eq!(
            harness.events.last(),
            Some(&UaEvent::Response {
                method: Method::Info,
                cseq: info,
                status: 408,
                sdp: None
            })
        );
    }

    #[test]
    fn garbage_is_answered_400_when_possible_and_reported() {
        let mut harness = Harness::answered();
        let garbage = "MESSAGE sip:x@y SIP/2.0\r\nVia: SIP/2.0/WS h.invalid;branch=z9hG4bKq\r\n\
            From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: q\r\nCSeq: 1 MESSAGE\r\n\
            Content-Length: 50\r\n\r\nshort";
        harness.ua.handle_message(harness.now, garbage.as_bytes());
        harness.drain();
        assert!(matches!(harness.events.last(), Some(UaEvent::Unparsable(_))));
        let answer = harness.last_response();
        assert_eq!(answer.status_code.code(), 400);
        assert_eq!(answer.call_id(), Some("q"));
        assert_eq!(harness.ua.phase(), Phase::Confirmed);
    }

    #[test]
    fn session_refresh_when_we_are_the_refresher() {
        let mut config = UaConfig::new(TARGET, Transport::Ws);
        config.session_expires = Some(90);
        let mut harness = Harness::new(config);
        harness.ua.invite(harness.now, "v=0\r\n").unwrap();
        harness.drain();
        let invite = harness.invite();
        assert_eq!(invite.header_value("Session-Expires"), Some("90"));
        let mut ok = message::response_to(&invite, 200, Some("gw"));
        ok.push_header("Contact", "<sip:gw@127.0.0.1:8080;transport=ws>");
        ok.push_header("Session-Expires", "90;refresher=uac");
        harness
            .ua
            .handle_message(harness.now, &message::response_bytes(&ok));
        harness.drain();
        assert_eq!(
            harness.ua.next_timeout(),
            Some(harness.now + Duration::from_secs(45))
        );
        harness.ua.handle_timeout(harness.now + Duration::from_secs(45));
        harness.drain();
        let update = harness.last_request();
        assert_eq!(update.method, Method::Update);
        assert_eq!(update.header_value("Session-Expires"), Some("90;refresher=uac"));
    }

    #[test]
    fn session_expires_values() {
        assert_eq!(
            session_expires("90;refresher=uac"),
            Some((Duration::from_secs(90), Some("uac".to_owned())))
        );
        assert_eq!(session_expires("1800"), Some((Duration::from_secs(1800), None)));
        assert_eq!(session_expires("x"), None);
        assert_eq!(session_expires("0"), None);
    }
}
