//! One call's state machine: the browser leg, the PBX leg, and what may cross between them.
//!
//! Sans-IO and message-free: the SIP layer turns messages into [`CallInput`]s and [`CallAction`]s back into
//! messages, so this file holds only decisions — when to ring the browser, which trunk to try next, when to
//! cancel, when the call is over and why. Time comes in as `now`; [`Call::next_timeout`] says when to call
//! [`Call::handle_timeout`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One trunk the call may go out through, in failover order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkChoice {
    /// The trunk's database id.
    pub trunk_id: i64,
    /// The trunk's name, for logs and the CDR.
    pub name: String,
}

/// Where a browser's call goes, decided by the widget it dialled: the browser can change none of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The widget's database id.
    pub widget_id: i64,
    /// Trunks to try in order (the widget's trunk first, then same-site fallbacks by priority).
    pub trunks: Vec<TrunkChoice>,
    /// The number or extension dialled at the PBX.
    pub destination: String,
    /// The caller id presented to the PBX.
    pub caller_id: Option<String>,
}

/// Why a call ended, as recorded in the CDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// Refused before any trunk was tried (unknown widget, origin, token, limits, draining).
    Refused,
    /// The browser hung up (BYE).
    BrowserHangup,
    /// The PBX hung up (BYE).
    PbxHangup,
    /// The browser cancelled before the answer.
    Cancelled,
    /// The PBX answered the INVITE with a failure.
    PbxRejected,
    /// No trunk answered in time, or all were unreachable.
    NoTrunkAvailable,
    /// The browser's WebSocket closed during the call.
    WebSocketClosed,
    /// ICE consent from the browser was lost.
    ConsentLost,
    /// No RTP from either side for the configured time.
    MediaTimeout,
    /// The SDP could not be negotiated (no common codec, malformed).
    MediaFailed,
    /// The PBX did not refresh the session in time (RFC 4028).
    SessionExpired,
    /// The gateway shut down after its drain period.
    Shutdown,
    /// A request on an established leg timed out or failed at the transport.
    LegFailed,
}

impl EndCause {
    /// The stable name stored in the CDR and used in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            EndCause::Refused => "refused",
            EndCause::BrowserHangup => "browser_hangup",
            EndCause::PbxHangup => "pbx_hangup",
            EndCause::Cancelled => "cancelled",
            EndCause::PbxRejected => "pbx_rejected",
            EndCause::NoTrunkAvailable => "no_trunk_available",
            EndCause::WebSocketClosed => "websocket_closed",
            EndCause::ConsentLost => "consent_lost",
            EndCause::MediaTimeout => "media_timeout",
            EndCause::MediaFailed => "media_failed",
            EndCause::SessionExpired => "session_expired",
            EndCause::Shutdown => "shutdown",
            EndCause::LegFailed => "leg_failed",
        }
    }

    /// Which side ended the call: `"browser"`, `"pbx"` or `"gateway"`.
    pub fn side(self) -> &'static str {
        match self {
            EndCause::BrowserHangup
            | EndCause::Cancelled
            | EndCause::WebSocketClosed
            | EndCause::ConsentLost => "browser",
            EndCause::PbxHangup | EndCause::PbxRejected => "pbx",
            _ => "gateway",
        }
    }
}

/// An SDP offer carried by a re-INVITE or UPDATE (hold, unhold, codec change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The SDP body.
    pub sdp: String,
}

/// What happens to a call, from either leg, the media layer, or the route lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallInput {
    /// The widget lookup and admission checks passed.
    Routed(Route),
    /// The call is refused before trying any trunk (status code and optional Retry-After seconds).
    Refused {
        /// The SIP status for the browser (403, 404, 486, 503).
        status: u16,
        /// Seconds for Retry-After.
        retry_after: Option<u64>,
    },
    /// The media session exists; here is the SDP offer for the PBX.
    MediaPrepared {
        /// RTP/AVP offer toward the PBX.
        pbx_offer: String,
    },
    /// The media layer could not build a session from the browser's offer or the PBX's answer.
    MediaRejected,
    /// The media layer accepted the PBX's SDP; here is the WebRTC answer for the browser.
    MediaAnswered {
        /// The WebRTC answer.
        browser_answer: String,
    },
    /// A provisional response from the PBX (180, 183…), with SDP for early media.
    PbxProvisional {
        /// Status code.
        status: u16,
        /// The SDP answer of a 183 (early media).
        sdp: Option<String>,
    },
    /// The PBX answered (2xx) with its SDP answer.
    PbxAnswered {
        /// The SDP answer.
        sdp: String,
        /// Session-Expires interval the PBX chose, and whether we (the UAC) must refresh.
        session_timer: Option<SessionTimer>,
    },
    /// The PBX answered the INVITE with a final failure.
    PbxFailed {
        /// Status code (3xx–6xx).
        status: u16,
    },
    /// The PBX challenged the INVITE (401/407) — the SIP layer retries with credentials unless this
    /// trunk was already tried with them.
    PbxChallenged,
    /// The INVITE toward the PBX timed out (Timer B) or no final response came in time.
    PbxTimeout,
    /// Sending to the PBX failed at the transport (connection refused, ICMP unreachable).
    PbxTransportError,
    /// The browser sent CANCEL for its INVITE.
    BrowserCancel,
    /// The browser ACKed our 2xx.
    BrowserAck,
    /// The browser sent BYE.
    BrowserBye,
    /// The PBX sent BYE.
    PbxBye,
    /// The browser sent a re-INVITE or UPDATE with a new offer (hold/unhold).
    BrowserReoffer(Offer),
    /// The PBX sent a re-INVITE or UPDATE with a new offer (hold/unhold, session refresh with SDP).
    PbxReoffer(Offer),
    /// The PBX refreshed the session (re-INVITE/UPDATE without SDP change, or our refresh succeeded).
    SessionRefreshed,
    /// The media layer turned a re-offer into the offer for the other leg.
    MediaReoffer {
        /// SDP to send as a re-INVITE to the other leg.
        sdp: String,
    },
    /// The other leg answered our re-INVITE.
    ReofferAnswered {
        /// Its SDP answer.
        sdp: String,
    },
    /// The other leg refused our re-INVITE.
    ReofferFailed {
        /// Status code.
        status: u16,
    },
    /// The media layer produced the answer to the re-offer that started this exchange.
    MediaReanswered {
        /// SDP answering the leg that sent the re-offer.
        sdp: String,
    },
    /// A DTMF digit came by SIP INFO from the browser.
    BrowserDtmf {
        /// `0`–`9`, `*`, `#`, `A`–`D`.
        digit: char,
        /// Duration in milliseconds.
        duration_ms: u32,
    },
    /// The browser's WebSocket closed.
    BrowserGone,
    /// The media layer ended the call (consent lost, RTP timeout).
    MediaEnded(EndCause),
    /// A request on an established leg (BYE, re-INVITE) timed out or failed at the transport.
    LegFailed,
    /// The gateway is shutting down: new work refused; established calls end at `deadline`.
    Drain {
        /// When the drain period ends.
        deadline: Instant,
    },
}

/// The PBX's session timer after the 2xx (RFC 4028).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    /// The negotiated Session-Expires.
    pub interval: Duration,
    /// Whether the gateway is the refresher.
    pub we_refresh: bool,
}

/// Which leg a re-offer exchange started on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// The browser (WebRTC) leg.
    Browser,
    /// The PBX (SIP/RTP) leg.
    Pbx,
}

/// What the SIP, media and database layers must do for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallAction {
    /// Look the widget up and run the admission checks; answer with `Routed` or `Refused`.
    ResolveRoute,
    /// Create the media session from the browser's offer; answer with `MediaPrepared` or `MediaRejected`.
    PrepareMedia,
    /// Send INVITE with `sdp` to the trunk at `trunk_index` of the route.
    InvitePbx {
        /// Index into [`Route::trunks`].
        trunk_index: usize,
        /// Offer for the PBX.
        sdp: String,
    },
    /// Give the PBX's SDP answer (early or final) to the media layer; answer with `MediaAnswered`.
    ApplyPbxAnswer {
        /// The PBX's SDP.
        sdp: String,
    },
    /// Answer the browser's INVITE (1xx with optional SDP, 2xx with SDP, or a failure).
    RespondBrowser {
        /// Status code.
        status: u16,
        /// SDP body, if any.
        sdp: Option<String>,
        /// Retry-After seconds, if any.
        retry_after: Option<u64>,
    },
    /// CANCEL the INVITE toward the PBX.
    CancelPbx,
    /// ACK the PBX's 2xx.
    AckPbx,
    /// Send BYE on the PBX leg.
    ByePbx,
    /// Send BYE on the browser leg.
    ByeBrowser,
    /// Give a re-offer from `from` to the media layer; answer with `MediaReoffer` (to forward) or
    /// `MediaReanswered` (answered locally).
    ApplyReoffer {
        /// The leg the offer came from.
        from: Leg,
        /// Its SDP.
        sdp: String,
    },
    /// Send a re-INVITE with `sdp` on `to`.
    Reinvite {
        /// The leg to send it on.
        to: Leg,
        /// The offer.
        sdp: String,
    },
    /// Give the other leg's answer to our forwarded re-offer to the media layer; answer with
    /// `MediaReanswered`.
    ApplyReanswer {
        /// The leg that answered.
        from: Leg,
        /// Its SDP.
        sdp: String,
    },
    /// Answer the pending re-INVITE/UPDATE of `to` (2xx with SDP, or a failure status).
    RespondReoffer {
        /// The leg whose request is answered.
        to: Leg,
        /// Status code.
        status: u16,
        /// SDP body on success.
        sdp: Option<String>,
    },
    /// Refresh the session toward the PBX (re-INVITE or UPDATE with the current SDP).
    RefreshPbxSession,
    /// Send a DTMF digit toward the PBX as RFC 4733.
    SendDtmf {
        /// The digit.
        digit: char,
        /// Duration in milliseconds.
        duration_ms: u32,
    },
    /// Record the answer time in the CDR.
    RecordAnswer,
    /// Tear the media session down and write the CDR; the call is over.
    Finish {
        /// Why.
        cause: EndCause,
        /// Final SIP status toward the browser.
        browser_status: Option<u16>,
        /// Final SIP status from the PBX.
        pbx_status: Option<u16>,
    },
}

/// Where the call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the widget lookup.
    Routing,
    /// Waiting for the media session.
    PreparingMedia,
    /// INVITE sent to the PBX, no provisional with a tag yet.
    Calling,
    /// The PBX sent a provisional response (CANCEL is allowed now).
    Ringing,
    /// The PBX answered; waiting for the media layer's WebRTC answer.
    Answering,
    /// 2xx sent to the browser, waiting for its ACK.
    WaitingAck,
    /// Both legs up.
    Established,
    /// The call is over; only stragglers arrive.
    Ended,
}

/// A re-INVITE exchange in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reoffer {
    /// The media layer is turning `from`'s offer into one for the other leg.
    Preparing { from: Leg },
    /// The other leg has our forwarded offer.
    Forwarded { from: Leg },
    /// The media layer is turning the other leg's answer into the answer for `from`.
    Answering { from: Leg },
}

/// How long the browser has to ACK our 2xx before the call is torn down (RFC 3261 §13.3.1.4: 64*T1).
const ACK_TIMEOUT: Duration = Duration::from_secs(32);
/// RFC 4028 §10: the refresher's peer waits Session-Expires minus this (or a third) before giving up.
const SESSION_EXPIRY_MARGIN: Duration = Duration::from_secs(32);

/// One call through the gateway.
#[derive(Debug)]
pub struct Call {
    phase: Phase,
    route: Option<Route>,
    trunk_index: usize,
    pbx_offer: Option<String>,
    browser_answer: Option<String>,
    /// The browser cancelled while the INVITE toward the PBX had no provisional yet: CANCEL is sent as soon
    /// as one arrives (RFC 3261 §9.1).
    cancel_pending: bool,
    /// The PBX leg has been CANCELled and its 2xx, if one races in, must be ACKed and BYEd.
    pbx_cancelled: bool,
    /// Set when the browser abandoned the call before the answer (CANCEL or WebSocket closed): the PBX leg is
    /// being wound down and the call ends with this cause once it is.
    cancel_cause: Option<EndCause>,
    /// RFC 3261 §9.1: a CANCELled INVITE without a final answer after 64*T1 is given up on.
    cancel_deadline: Option<Instant>,
    reoffer: Option<Reoffer>,
    last_pbx_status: Option<u16>,
    ack_deadline: Option<Instant>,
    refresh_at: Option<Instant>,
    expires_at: Option<Instant>,
    drain_deadline: Option<Instant>,
    session_timer: Option<SessionTimer>,
    actions: VecDeque<CallAction>,
}

impl Call {
    /// A new call from a browser INVITE: asks for the route first.
    pub fn new() -> Self {
        let mut call = Call {
            phase: Phase::Routing,
            route: None,
            trunk_index: 0,
            pbx_offer: None,
            browser_answer: None,
            cancel_pending: false,
            pbx_cancelled: false,
            cancel_cause: None,
            cancel_deadline: None,
            reoffer: None,
            last_pbx_status: None,
            ack_deadline: None,
            refresh_at: None,
            expires_at: None,
            drain_deadline: None,
            session_timer: None,
            actions: VecDeque::new(),
        };
        call.actions.push_back(CallAction::ResolveRoute);
        call
    }

    /// The route, once resolved.
    pub fn route(&self) -> Option<&Route> {
        self.route.as_ref()
    }

    /// The trunk currently tried or in use.
    pub fn trunk(&self) -> Option<&TrunkChoice> {
        self.route
            .as_ref()
            .and_then(|route| route.trunks.get(self.trunk_index))
    }

    /// Whether the call is over.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Whether both legs are up.
    pub fn is_established(&self) -> bool {
        self.phase == Phase::Established
    }

    /// The next action to carry out, if any.
    pub fn poll_action(&mut self) -> Option<CallAction> {
        self.actions.pop_front()
    }

    /// When [`Call::handle_timeout`] must run next.
    pub fn next_timeout(&self) -> Option<Instant> {
        [
            self.ack_deadline,
            self.refresh_at,
            self.expires_at,
            self.drain_deadline,
            self.cancel_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Ended {
            return;
        }
        if self.drain_deadline.is_some_and(|deadline| now >= deadline) {
            self.drain_deadline = None;
            self.hang_up_both(EndCause::Shutdown);
            return;
        }
        if self.cancel_deadline.is_some_and(|deadline| now >= deadline) {
            self.cancel_deadline = None;
            self.finish_cancelled(self.last_pbx_status);
            return;
        }
        if self.ack_deadline.is_some_and(|deadline| now >= deadline) {
            self.ack_deadline = None;
            // The browser never confirmed: both legs are torn down (RFC 3261 §13.3.1.4).
            self.hang_up_both(EndCause::LegFailed);
            return;
        }
        if self.expires_at.is_some_and(|deadline| now >= deadline) {
            self.expires_at = None;
            self.hang_up_both(EndCause::SessionExpired);
            return;
        }
        if self.refresh_at.is_some_and(|deadline| now >= deadline) {
            self.refresh_at = None;
            if self.reoffer.is_none() {
                self.actions.push_back(CallAction::RefreshPbxSession);
            } else if let Some(timer) = self.session_timer {
                // A re-INVITE in progress refreshes the session by itself (RFC 4028 §7.4); look again soon.
                self.refresh_at = Some(now + timer.interval / 8);
            }
        }
    }

    /// Feeds one input at `now`.
    pub fn handle_input(&mut self, now: Instant, input: CallInput) {
        if self.phase == Phase::Ended {
            return;
        }
        match input {
            CallInput::Routed(route) => self.on_routed(route),
            CallInput::Refused { status, retry_after } => {
                if self.phase == Phase::Routing {
                    self.finish_with_browser_status(status, retry_after, EndCause::Refused, None);
                }
            }
            CallInput::MediaPrepared { pbx_offer } => {
                if self.phase == Phase::PreparingMedia {
                    self.pbx_offer = Some(pbx_offer);
                    self.invite_current_trunk();
                }
            }
            CallInput::MediaRejected => self.on_media_rejected(),
            CallInput::MediaAnswered { browser_answer } => self.on_media_answered(now, browser_answer),
            CallInput::PbxProvisional { status, sdp } => self.on_pbx_provisional(now, status, sdp),
            CallInput::PbxAnswered { sdp, session_timer } => self.on_pbx_answered(now, sdp, session_timer),
            CallInput::PbxFailed { status } => self.on_pbx_failed(status),
            CallInput::PbxChallenged => self.on_pbx_failed(401),
            CallInput::PbxTimeout => self.on_pbx_unreachable(408),
            CallInput::PbxTransportError => self.on_pbx_unreachable(503),
            CallInput::BrowserCancel => self.on_browser_cancel(now, EndCause::Cancelled),
            CallInput::BrowserAck => {
                if self.phase == Phase::WaitingAck {
                    self.ack_deadline = None;
                    self.phase = Phase::Established;
                }
            }
            CallInput::BrowserBye => self.on_bye_from(Leg::Browser),
            CallInput::PbxBye => self.on_bye_from(Leg::Pbx),
            CallInput::BrowserReoffer(offer) => self.on_reoffer(Leg::Browser, offer),
            CallInput::PbxReoffer(offer) => self.on_reoffer(Leg::Pbx, offer),
            CallInput::SessionRefreshed => self.arm_session_timer(now),
            CallInput::MediaReoffer { sdp } => {
                if let Some(Reoffer::Preparing { from }) = self.reoffer {
                    self.reoffer = Some(Reoffer::Forwarded { from });
                    self.actions
                        .push_back(CallAction::Reinvite { to: other(from), sdp });
                }
            }
            CallInput::ReofferAnswered { sdp } => {
                if let Some(Reoffer::Forwarded { from }) = self.reoffer {
                    self.reoffer = Some(Reoffer::Answering { from });
                    self.actions.push_back(CallAction::ApplyReanswer {
                        from: other(from),
                        sdp,
                    });
                    if from == Leg::Browser {
                        // A successful re-INVITE toward the PBX refreshes its session (RFC 4028 §7.4).
                        self.arm_session_timer(now);
                    }
                }
            }
            CallInput::ReofferFailed { status } => {
                if let Some(Reoffer::Forwarded { from }) = self.reoffer.take() {
                    // The old session stays in force on both legs; the offering leg hears the refusal.
                    let status = if status == 491 { 491 } else { 488 };
                    self.actions.push_back(CallAction::RespondReoffer {
                        to: from,
                        status,
                        sdp: None,
                    });
                }
            }
            CallInput::MediaReanswered { sdp } => {
                if let Some(Reoffer::Preparing { from } | Reoffer::Answering { from }) = self.reoffer.take() {
                    self.actions.push_back(CallAction::RespondReoffer {
                        to: from,
                        status: 200,
                        sdp: Some(sdp),
                    });
                    if from == Leg::Pbx {
                        self.arm_session_timer(now);
                    }
                }
            }
            CallInput::BrowserDtmf { digit, duration_ms } => {
                if matches!(self.phase, Phase::Established | Phase::WaitingAck) {
                    self.actions
                        .push_back(CallAction::SendDtmf { digit, duration_ms });
                }
            }
            CallInput::BrowserGone => self.on_browser_gone(now),
            CallInput::MediaEnded(cause) => self.hang_up_both(cause),
            CallInput::LegFailed => self.hang_up_both(EndCause::LegFailed),
            CallInput::Drain { deadline } => self.on_drain(deadline),
        }
    }

    fn on_routed(&mut self, route: Route) {
        if self.phase != Phase::Routing {
            return;
        }
        if route.trunks.is_empty() {
            self.finish_with_browser_status(503, None, EndCause::NoTrunkAvailable, None);
            return;
        }
        self.route = Some(route);
        self.phase = Phase::PreparingMedia;
        self.actions.push_back(CallAction::PrepareMedia);
    }

    fn invite_current_trunk(&mut self) {
        let Some(sdp) = self.pbx_offer.clone() else { return };
        self.phase = Phase::Calling;
        self.pbx_cancelled = false;
        self.actions.push_back(CallAction::InvitePbx {
            trunk_index: self.trunk_index,
            sdp,
        });
    }

    fn on_media_rejected(&mut self) {
        match self.phase {
            Phase::PreparingMedia => self.finish_with_browser_status(488, None, EndCause::MediaFailed, None),
            Phase::Answering => {
                // The PBX answered with SDP we cannot use: it already has a dialog, so ACK then BYE it.
                self.actions.push_back(CallAction::ByePbx);
                self.finish_with_browser_status(488, None, EndCause::MediaFailed, self.last_pbx_status);
            }
            Phase::Ringing => {
                // Unusable early media: keep ringing without it, the 2xx may carry a usable answer.
            }
            _ => {
                if let Some(reoffer) = self.reoffer.take() {
                    let from = match reoffer {
                        Reoffer::Preparing { from }
                        | Reoffer::Forwarded { from }
                        | Reoffer::Answering { from } => from,
                    };
                    self.actions.push_back(CallAction::RespondReoffer {
                        to: from,
                        status: 488,
                        sdp: None,
                    });
                }
            }
        }
    }

    fn on_media_answered(&mut self, now: Instant, browser_answer: String) {
        match self.phase {
            Phase::Ringing => {
                // Early media: the browser hears the PBX's ringback or announcements before the answer.
                self.browser_answer = Some(browser_answer.clone());
                self.actions.push_back(CallAction::RespondBrowser {
                    status: 183,
                    sdp: Some(browser_answer),
                    retry_after: None,
                });
            }
            Phase::Answering => {
                // One offer, one answer: the 2xx repeats the answer a 183 already gave.
                let answer = self.browser_answer.clone().unwrap_or(browser_answer);
                self.browser_answer = Some(answer.clone());
                self.actions.push_back(CallAction::RespondBrowser {
                    status: 200,
                    sdp: Some(answer),
                    retry_after: None,
                });
                self.actions.push_back(CallAction::RecordAnswer);
                self.phase = Phase::WaitingAck;
                self.ack_deadline = Some(now + ACK_TIMEOUT);
            }
            _ => {}
        }
    }

    fn on_pbx_provisional(&mut self, now: Instant, status: u16, sdp: Option<String>) {
        if !matches!(self.phase, Phase::Calling | Phase::Ringing) || status == 100 {
            return;
        }
        self.phase = Phase::Ringing;
        if self.cancel_pending {
            self.cancel_pending = false;
            self.cancel_pbx(now);
            return;
        }
        if self.pbx_cancelled {
            return;
        }
        match sdp {
            Some(sdp) => self.actions.push_back(CallAction::ApplyPbxAnswer { sdp }),
            // A 183 without SDP still means progress; the browser hears it as ringing.
            None if self.browser_answer.is_none() => self.actions.push_back(CallAction::RespondBrowser {
                status: if status == 181 || status == 182 {
                    status
                } else {
                    180
                },
                sdp: None,
                retry_after: None,
            }),
            None => {}
        }
    }

    fn on_pbx_answered(&mut self, now: Instant, sdp: String, session_timer: Option<SessionTimer>) {
        self.last_pbx_status = Some(200);
        match self.phase {
            Phase::Calling | Phase::Ringing if self.cancel_cause.is_some() => {
                // The CANCEL/200 race (RFC 3261 §9.1): the PBX answered anyway, so its dialog exists and must
                // be confirmed and closed; the browser already has its 487.
                self.actions.push_back(CallAction::AckPbx);
                self.actions.push_back(CallAction::ByePbx);
                self.finish_cancelled(Some(200));
            }
            Phase::Calling | Phase::Ringing => {
                self.actions.push_back(CallAction::AckPbx);
                self.phase = Phase::Answering;
                self.session_timer = session_timer;
                self.arm_session_timer(now);
                self.actions.push_back(CallAction::ApplyPbxAnswer { sdp });
            }
            // A 2xx retransmission or a forked second 2xx: the SIP layer re-ACKs; nothing changes here.
            _ => {}
        }
    }

    fn arm_session_timer(&mut self, now: Instant) {
        let Some(timer) = self.session_timer else { return };
        if timer.we_refresh {
            self.refresh_at = Some(now + timer.interval / 2);
            self.expires_at = None;
        } else {
            self.refresh_at = None;
            let margin = SESSION_EXPIRY_MARGIN.min(timer.interval / 3);
            self.expires_at = Some(now + timer.interval - margin);
        }
    }

    fn on_pbx_failed(&mut self, status: u16) {
        if !matches!(self.phase, Phase::Calling | Phase::Ringing) {
            return;
        }
        self.last_pbx_status = Some(status);
        if self.cancel_cause.is_some() {
            // The 487 for our CANCEL (or any final answer after it): the browser already heard 487.
            self.finish_cancelled(Some(status));
            return;
        }
        match status {
            408 | 503 => self.try_next_trunk(status),
            // Our credentials were refused (the SIP layer retries a challenge once): the trunk is misconfigured,
            // which the browser must not learn details of.
            401 | 407 => self.try_next_trunk(status),
            _ => self.finish_with_browser_status(status, None, EndCause::PbxRejected, Some(status)),
        }
    }

    fn on_pbx_unreachable(&mut self, status: u16) {
        match self.phase {
            Phase::Calling | Phase::Ringing => {
                self.last_pbx_status = Some(status);
                if self.cancel_cause.is_some() {
                    self.finish_cancelled(Some(status));
                } else {
                    self.try_next_trunk(status);
                }
            }
            Phase::Answering | Phase::WaitingAck | Phase::Established => {
                self.hang_up_both(EndCause::LegFailed)
            }
            _ => {}
        }
    }

    fn try_next_trunk(&mut self, status: u16) {
        let trunks = self.route.as_ref().map_or(0, |route| route.trunks.len());
        if self.trunk_index + 1 < trunks {
            self.trunk_index += 1;
            self.invite_current_trunk();
        } else {
            let cause = if matches!(status, 408 | 503) {
                EndCause::NoTrunkAvailable
            } else {
                EndCause::PbxRejected
            };
            self.finish_with_browser_status(503, None, cause, Some(status));
        }
    }

    /// The browser gave up before the answer: by CANCEL (`cause` Cancelled, it hears 487) or by closing its
    /// WebSocket (nobody to answer).
    fn on_browser_cancel(&mut self, now: Instant, cause: EndCause) {
        let tell_browser = cause == EndCause::Cancelled;
        match self.phase {
            Phase::Routing | Phase::PreparingMedia => {
                let status = tell_browser.then_some(487);
                if let Some(status) = status {
                    self.actions.push_back(CallAction::RespondBrowser {
                        status,
                        sdp: None,
                        retry_after: None,
                    });
                }
                self.finish(cause, status, None);
            }
            Phase::Calling | Phase::Ringing if self.cancel_cause.is_none() => {
                self.cancel_cause = Some(cause);
                if self.phase == Phase::Calling {
                    // No provisional yet: CANCEL may not be sent before one (RFC 3261 §9.1); it leaves when
                    // the PBX first answers, or Timer B ends the attempt.
                    self.cancel_pending = true;
                } else {
                    self.cancel_pbx(now);
                }
                if tell_browser {
                    self.actions.push_back(CallAction::RespondBrowser {
                        status: 487,
                        sdp: None,
                        retry_after: None,
                    });
                }
            }
            Phase::Answering => {
                // Too late to cancel the PBX: it answered. End both sides.
                self.actions.push_back(CallAction::ByePbx);
                if tell_browser {
                    self.actions.push_back(CallAction::RespondBrowser {
                        status: 487,
                        sdp: None,
                        retry_after: None,
                    });
                }
                self.finish(cause, tell_browser.then_some(487), self.last_pbx_status);
            }
            // After our 2xx a CANCEL has no effect (RFC 3261 §9.2); the browser must send BYE.
            _ => {}
        }
    }

    fn cancel_pbx(&mut self, now: Instant) {
        self.pbx_cancelled = true;
        self.cancel_deadline = Some(now + ACK_TIMEOUT);
        self.actions.push_back(CallAction::CancelPbx);
    }

    fn finish_cancelled(&mut self, pbx_status: Option<u16>) {
        let cause = self.cancel_cause.unwrap_or(EndCause::Cancelled);
        let browser_status = (cause == EndCause::Cancelled).then_some(487);
        self.finish(cause, browser_status, pbx_status);
    }

    fn on_bye_from(&mut self, leg: Leg) {
        match self.phase {
            Phase::WaitingAck | Phase::Established | Phase::Answering => {
                let (action, cause) = match leg {
                    Leg::Browser => (CallAction::ByePbx, EndCause::BrowserHangup),
                    Leg::Pbx => (CallAction::ByeBrowser, EndCause::PbxHangup),
                };
                if self.phase == Phase::Answering && leg == Leg::Pbx {
                    // The browser has no dialog yet: it gets a final failure instead of a BYE.
                    self.finish_with_browser_status(480, None, cause, self.last_pbx_status);
                    return;
                }
                self.actions.push_back(action);
                self.finish(cause, Some(200), self.last_pbx_status);
            }
            // A BYE from the PBX in an early dialog ends the early dialog (RFC 3261 §15): treat as a failure.
            Phase::Calling | Phase::Ringing if leg == Leg::Pbx => {
                self.finish_with_browser_status(480, None, EndCause::PbxHangup, self.last_pbx_status);
            }
            _ => {}
        }
    }

    fn on_reoffer(&mut self, from: Leg, offer: Offer) {
        if !matches!(self.phase, Phase::Established | Phase::WaitingAck) {
            self.actions.push_back(CallAction::RespondReoffer {
                to: from,
                status: 491,
                sdp: None,
            });
            return;
        }
        if self.reoffer.is_some() {
            // Glare: an exchange is in progress (RFC 3261 §14.2).
            self.actions.push_back(CallAction::RespondReoffer {
                to: from,
                status: 491,
                sdp: None,
            });
            return;
        }
        self.reoffer = Some(Reoffer::Preparing { from });
        self.actions
            .push_back(CallAction::ApplyReoffer { from, sdp: offer.sdp });
    }

    fn on_browser_gone(&mut self, now: Instant) {
        match self.phase {
            Phase::Answering | Phase::WaitingAck | Phase::Established => {
                self.actions.push_back(CallAction::ByePbx);
                self.finish(EndCause::WebSocketClosed, None, self.last_pbx_status);
            }
            _ => self.on_browser_cancel(now, EndCause::WebSocketClosed),
        }
    }

    fn on_drain(&mut self, deadline: Instant) {
        match self.phase {
            Phase::Routing | Phase::PreparingMedia => {
                self.finish_with_browser_status(503, Some(30), EndCause::Shutdown, None);
            }
            _ => self.drain_deadline = Some(deadline),
        }
    }

    /// Ends an answered or answering call from the gateway's side, with BYE on each leg that has a dialog.
    fn hang_up_both(&mut self, cause: EndCause) {
        match self.phase {
            Phase::Routing | Phase::PreparingMedia => self.finish_with_browser_status(503, None, cause, None),
            Phase::Calling | Phase::Ringing => {
                if self.phase == Phase::Ringing {
                    self.actions.push_back(CallAction::CancelPbx);
                }
                self.finish_with_browser_status(503, None, cause, self.last_pbx_status);
            }
            Phase::Answering => {
                self.actions.push_back(CallAction::ByePbx);
                self.finish_with_browser_status(503, None, cause, self.last_pbx_status);
            }
            Phase::WaitingAck | Phase::Established => {
                self.actions.push_back(CallAction::ByePbx);
                if cause != EndCause::WebSocketClosed && cause != EndCause::ConsentLost {
                    self.actions.push_back(CallAction::ByeBrowser);
                }
                self.finish(cause, Some(200), self.last_pbx_status);
            }
            Phase::Ended => {}
        }
    }

    fn finish_with_browser_status(
        &mut self,
        status: u16,
        retry_after: Option<u64>,
        cause: EndCause,
        pbx_status: Option<u16>,
    ) {
        self.actions.push_back(CallAction::RespondBrowser {
            status,
            sdp: None,
            retry_after,
        });
        self.finish(cause, Some(status), pbx_status);
    }

    fn finish(&mut self, cause: EndCause, browser_status: Option<u16>, pbx_status: Option<u16>) {
        self.phase = Phase::Ended;
        self.ack_deadline = None;
        self.refresh_at = None;
        self.expires_at = None;
        self.drain_deadline = None;
        self.cancel_deadline = None;
        self.actions.push_back(CallAction::Finish {
            cause,
            browser_status,
            pbx_status,
        });
    }
}

impl Default for Call {
    fn default() -> Self {
        Call::new()
    }
}

fn other(leg: Leg) -> Leg {
    match leg {
        Leg::Browser => Leg::Pbx,
        Leg::Pbx => Leg::Browser,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(trunks: usize) -> Route {
        Route {
            widget_id: 7,
            trunks: (0..trunks)
                .map(|index| TrunkChoice {
                    trunk_id: index as i64 + 1,
                    name: format!("trunk{index}"),
                })
                .collect(),
            destination: "1000".to_owned(),
            caller_id: Some("web".to_owned()),
        }
    }

    fn drain(call: &mut Call) -> Vec<CallAction> {
        std::iter::from_fn(|| call.poll_action()).collect()
    }

    /// Drives a call to the point where the INVITE toward the first trunk is out.
    fn calling(trunks: usize, now: Instant) -> Call {
        let mut call = Call::new();
        assert_eq!(drain(&mut call), vec![CallAction::ResolveRoute]);
        call.handle_input(now, CallInput::Routed(route(trunks)));
        assert_eq!(drain(&mut call), vec![CallAction::PrepareMedia]);
        call.handle_input(
            now,
            CallInput::MediaPrepared {
                pbx_offer: "pbx-offer".to_owned(),
            },
        );
        assert_eq!(
            drain(&mut call),
            vec![CallAction::InvitePbx {
                trunk_index: 0,
                sdp: "pbx-offer".to_owned()
            }]
        );
        call
    }

    fn established(now: Instant, timer: Option<SessionTimer>) -> Call {
        let mut call = calling(1, now);
        call.handle_input(
            now,
            CallInput::PbxProvisional {
                status: 180,
                sdp: None,
            },
        );
        call.handle_input(
            now,
            CallInput::PbxAnswered {
                sdp: "pbx-answer".to_owned(),
                session_timer: timer,
            },
        );
        call.handle_input(
            now,
            CallInput::MediaAnswered {
                browser_answer: "webrtc-answer".to_owned(),
            },
        );
        call.handle_input(now, CallInput::BrowserAck);
        drain(&mut call);
        assert!(call.is_established());
        call
    }

    fn finish_of(actions: &[CallAction]) -> Option<(EndCause, Option<u16>, Option<u16>)> {
        actions.iter().find_map(|action| match action {
            CallAction::Finish {
                cause,
                browser_status,
                pbx_status,
            } => Some((*cause, *browser_status, *pbx_status)),
            _ => None,
        })
    }

    #[test]
    fn answered_call_relays_ringing_then_answers_with_the_webrtc_sdp() {
        let now = Instant::now();
        let mut call = calling(1, now);
        call.handle_input(
            now,
            CallInput::PbxProvisional {
                status: 180,
                sdp: None,
            },
        );
        assert_eq!(
            drain(&mut call),
            vec![CallAction::RespondBrowser {
                status: 180,
                sdp: None,
                retry_after: None
            }]
        );
        call.handle_input(
            now,
            CallInput::PbxAnswered {
                sdp: "pbx-answer".to_owned(),
                session_timer: None,
            },
        );
        assert_eq!(
            drain(&mut call),
            vec![
                CallAction::AckPbx,
                CallAction::ApplyPbxAnswer {
                    sdp: "pbx-answer".to_owned()
                }
            ]
        );
        call.handle_input(
            now,
            CallInput::MediaAnswered {
                browser_answer: "webrtc-answer".to_owned(),
            },
        );
        assert_eq!(
            drain(&mut call),
            vec![
                CallAction::RespondBrowser {
                    status: 200,
                    sdp: Some("webrtc-answer".to_owned()),
                    retry_after: None
                },
                CallAction::RecordAnswer,
            ]
        );
        call.handle_input(now, CallInput::BrowserAck);
        assert!(call.is_established());
        call.handle_input(now, CallInput::BrowserBye);
        let actions = drain(&mut call);
        assert_eq!(actions[0], CallAction::ByePbx);
        assert_eq!(
            finish_of(&actions),
            Some((EndCause::BrowserHangup, Some(200), Some(200)))
        );
        assert!(call.is_ended());
    }

    #[test]
    fn bye_from_the_pbx_hangs_up_the_browser() {
        let now = Instant::now();
        let mut call = established(now, None);
        call.handle_input(now, CallInput::PbxBye);
        let actions = drain(&mut call);
        assert_eq!(actions[0], CallAction::ByeBrowser);
        assert_eq!(
            finish_of(&actions).map(|finish| finish.0),
            Some(EndCause::PbxHangup)
        );
    }

    #[test]
    fn early_media_answers_once_and_the_200_repeats_it() {
        let now = Instant::now();
        let mut call = calling(1, now);
        call.handle_input(
            now,
            CallInput::PbxProvisional {
                status: 183,
                sdp: Some("early".to_owned()),
            },
        );
        assert_eq!(
            drain(&mut call),
            vec![CallAction::ApplyPbxAnswer {
                sdp: "early".to_owned()
            }]
        );
        call.handle_input(
            now,
            CallInput::MediaAnswered {
                browser_answer: "answer-1".to_owned(),
            },
        );
        assert_eq!(
            drain(&mut call),
            vec![CallAction::RespondBrowser {
                status: 183,
                sdp: Some("answer-1".to_owned()),
                retry_after: None
            }]
        );
        call.handle_input(
            now,
            CallInput::PbxAnswered {
                sdp: "final".to_owned(),
                session_timer: None,
            },
        );
        drain(&mut call);
        call.handle_input(
            now,
            CallInput::MediaAnswered {
                browser_answer: "answer-2".to_owned(),
            },
        );
        let actions = drain(&mut call);
        assert_eq!(
            actions[0],
            CallAction::RespondBrowser {
                status: 200,
                sdp: Some("answer-1".to_owned()),
                retry_after: None
            }
        );
    }

    #[test]
    fn failures_are_relayed_with_their_code() {
        for status in [486, 603, 404, 480] {
            let now = Instant::now();
            let mut call = calling(2, now);
            call.handle_input(now, CallInput::PbxFailed { status });
            let actions = drain(&mut call);
            assert_eq!(
                actions[0],
                CallAction::RespondBrowser {
                    status,
                    sdp: None,
                    retry_after: None
                }
            );
            assert_eq!(
                finish_of(&actions),
                Some((EndCause::PbxRejected, Some(status), Some(status)))
            );
        }
    }

    #[test]
    fn failover_walks_the_trunks_then_answers_503() {
        let now = Instant::now();
        let mut call = calling(3, now);
        call.handle_input(now, CallInput::PbxTransportError);
        assert_eq!(
            drain(&mut call),
            vec![CallAction::InvitePbx {
                trunk_index: 1,
                sdp: "pbx-offer".to_owned()
            }]
        );
        assert_eq!(call.trunk().map(|trunk| trunk.name.as_str()), Some("trunk1"));
        call.handle_input(now, CallInput::PbxTimeout);
        assert_eq!(
            drain(&mut call),
            vec![CallAction::InvitePbx {
                trunk_index: 2,
                sdp: "pbx-offer".to_owned()
            }]
        );
        call.handle_input(now, CallInput::PbxFailed { status: 503 });
        let actions = drain(&mut call);
        assert_eq!(
            actions[0],
            CallAction::RespondBrowser {
                status: 503,
                sdp: None,
                retry_after: None
            }
        );
        assert_eq!(
            finish_of(&actions),
            Some((EndCause::NoTrunkAvailable, Some(503), Some(503)))
        );
    }

    #[test]
    fn cancel_before_any_provisional_waits_for_one() {
        let now = Instant::now();
        let mut call = calling(1, now);
        call.handle_input(now, CallInput::BrowserCancel);
        assert_eq!(
            drain(&mut call),
            vec![CallAction::RespondBrowser {
                status: 487,
                sdp: None,
                retry_after: None
            }]
        );
        call.handle_input(
            now,
            CallInput::PbxProvisional {
                status: 180,
                sdp: None,
            },
        );
        assert_eq!(drain(&mut call), vec![CallAction::CancelPbx]);
        call.handle_input(now, CallInput::PbxFailed { status: 487 });
        assert_eq!(
            finish_of(&drain(&mut call)),
            Some((EndCause::Cancelled, Some(487), Some(487)))
        );
    }

    #[test]
    fn cancel_racing_the_200_acks_and_byes_the_pbx() {
        let now = Instant::now();
        let mut call = calling(1, now);
        call.handle_input(
            now,
            CallInput::PbxProvisional {
                status: 180,
                sdp: None,
            },
        );
        drain(&mut call);
        call.handle_input(now, CallInput::BrowserCancel);
        assert_eq!(
            drain(&mut call),
            vec![
                CallAction::CancelPbx,
                CallAction::RespondBrowser {
                    status: 487,
                    sdp: None,
                    retry_after: None
                }
            ]
        );
        call.handle_input(
            now,
            CallInput::PbxAnswered {
                sdp: "late".to_owned(),
                session_timer: None,
            },
        );
        let actions = drain(&mut call);
        assert_eq!(&actions[..2], &[CallAction::AckPbx, CallAction::ByePbx]);
        assert_eq!(
            finish_of(&actions),
            Some((EndCause::Cancelled, Some(487), Some(200)))
        );
    }

    #[test]
    fn a_cancelled_pbx_that_never_answers_is_given_up_after_64_t1() {
        let now = Instant::now();
        let mut call = calling(1, now);
        call.handle_input(
            now,
            CallInput::PbxProvisional {
                status: 180,
                sdp: None,
            },
        );
        call.handle_input(now, CallInput::BrowserGone);
        let actions = drain(&mut call);
        assert_eq!(
            actions,
            vec![
                CallAction::RespondBrowser {
                    status: 180,
                    sdp: None,
                    retry_after: None
                },
                CallAction::CancelPbx
            ]
        );
        let deadline = call.next_timeout().unwrap();
        assert_eq!(deadline, now + Duration::from_secs(32));
        call.handle_timeout(deadline);
        assert_eq!(
            finish_of(&drain(&mut call)).map(|finish| finish.0),
            Some(EndCause::WebSocketClosed)
        );
    }

    #[test]
    fn websocket_closed_mid_call_sends_bye_to_the_pbx_only() {
        let now = Instant::now();
        let mut call = established(now, None);
        call.handle_input(now, CallInput::BrowserGone);
        let actions = drain(&mut call);
        assert_eq!(actions[0], CallAction::ByePbx);
        assert!(!actions.contains(&CallAction::ByeBrowser));
        assert_eq!(
            finish_of(&actions).map(|finish| finish.0),
            Some(EndCause::WebSocketClosed)
        );
    }

    #[test]
    fn refusal_answers_the_browser_and_records_the_cause() {
        let mut call = Call::new();
        drain(&mut call);
        call.handle_input(
            Instant::now(),
            CallInput::Refused {
                status: 503,
                retry_after: Some(12),
            },
        );
        let actions = drain(&mut call);
        assert_eq!(
            actions[0],
            CallAction::RespondBrowser {
                status: 503,
                sdp: None,
                retry_after: Some(12)
            }
        );
        assert_eq!(finish_of(&actions), Some((EndCause::Refused, Some(503), None)));
    }

    #[test]
    fn hold_from_the_browser_is_forwarded_and_answered() {
        let now = Instant::now();
        let mut call = established(now, None);
        call.handle_input(
            now,
            CallInput::BrowserReoffer(Offer {
                sdp: "sendonly".to_owned(),
            }),
        );
        assert_eq!(
            drain(&mut call),
            vec![CallAction::ApplyReoffer {
                from: Leg::Browser,
                sdp: "sendonly".to_owned()
            }]
        );
        // A second offer while the first is in progress is glare.
        call.handle_input(now, CallInput::PbxReoffer(Offer { sdp: "x".to_owned() }));
        assert_eq!(
            drain(&mut call),
            vec![CallAction::RespondReoffer {
                to: Leg::Pbx,
                status: 491,
                sdp: None
            }]
        );
        call.handle_input(
            now,
            CallInput::MediaReoffer {
                sdp: "pbx-sendonly".to_owned(),
            },
        );
        assert_eq!(
            drain(&mut call),
            vec![CallAction::Reinvite {
                to: Leg::Pbx,
                sdp: "pbx-sendonly".to_owned()
            }]
        );
        call.handle_input(
            now,
            CallInput::ReofferAnswered {
                sdp: "pbx-recvonly".to_owned(),
            },
        );
        assert_eq!(
            drain(&mut call),
            vec![CallAction::ApplyReanswer {
                from: Leg::Pbx,
                sdp: "pbx-recvonly".to_owned()
            }]
        );
        call.handle_input(
            now,
            CallInput::MediaReanswered {
                sdp: "webrtc-recvonly".to_owned(),
            },
        );
        assert_eq!(
            drain(&mut call),
            vec![CallAction::RespondReoffer {
                to: Leg::Browser,
                status: 200,
                sdp: Some("webrtc-recvonly".to_owned())
            }]
        );
        // The next exchange is allowed again.
        call.handle_input(
            now,
            CallInput::PbxReoffer(Offer {
                sdp: "unhold".to_owned(),
            }),
        );
        assert_eq!(
            drain(&mut call),
            vec![CallAction::ApplyReoffer {
                from: Leg::Pbx,
                sdp: "unhold".to_owned()
            }]
        );
    }

    #[test]
    fn refused_reoffer_keeps_the_call() {
        let now = Instant::now();
        let mut call = established(now, None);
        call.handle_input(
            now,
            CallInput::PbxReoffer(Offer {
                sdp: "hold".to_owned(),
            }),
        );
        call.handle_input(
            now,
            CallInput::MediaReoffer {
                sdp: "browser-hold".to_owned(),
            },
        );
        drain(&mut call);
        call.handle_input(now, CallInput::ReofferFailed { status: 500 });
        assert_eq!(
            drain(&mut call),
            vec![CallAction::RespondReoffer {
                to: Leg::Pbx,
                status: 488,
                sdp: None
            }]
        );
        assert!(call.is_established());
    }

    #[test]
    fn session_timer_refreshes_at_half_interval_when_we_refresh() {
        let now = Instant::now();
        let timer = SessionTimer {
            interval: Duration::from_secs(90),
            we_refresh: true,
        };
        let mut call = established(now, Some(timer));
        assert_eq!(call.next_timeout(), Some(now + Duration::from_secs(45)));
        call.handle_timeout(now + Duration::from_secs(45));
        assert_eq!(drain(&mut call), vec![CallAction::RefreshPbxSession]);
        call.handle_input(now + Duration::from_secs(46), CallInput::SessionRefreshed);
        assert_eq!(call.next_timeout(), Some(now + Duration::from_secs(91)));
    }

    #[test]
    fn session_expires_when_the_pbx_does_not_refresh() {
        let now = Instant::now();
        let timer = SessionTimer {
            interval: Duration::from_secs(90),
            we_refresh: false,
        };
        let mut call = established(now, Some(timer));
        // RFC 4028 §10: min(32 s, interval/3) before expiry.
        assert_eq!(call.next_timeout(), Some(now + Duration::from_secs(60)));
        call.handle_input(now + Duration::from_secs(50), CallInput::SessionRefreshed);
        call.handle_timeout(now + Duration::from_secs(60));
        assert!(drain(&mut call).is_empty());
        call.handle_timeout(now + Duration::from_secs(110));
        let actions = drain(&mut call);
        assert!(actions.contains(&CallAction::ByePbx) && actions.contains(&CallAction::ByeBrowser));
        assert_eq!(
            finish_of(&actions).map(|finish| finish.0),
            Some(EndCause::SessionExpired)
        );
    }

    #[test]
    fn missing_ack_tears_the_call_down() {
        let now = Instant::now();
        let mut call = calling(1, now);
        call.handle_input(
            now,
            CallInput::PbxAnswered {
                sdp: "a".to_owned(),
                session_timer: None,
            },
        );
        call.handle_input(
            now,
            CallInput::MediaAnswered {
                browser_answer: "b".to_owned(),
            },
        );
        drain(&mut call);
        call.handle_timeout(now + Duration::from_secs(32));
        let actions = drain(&mut call);
        assert!(actions.contains(&CallAction::ByePbx));
        assert_eq!(
            finish_of(&actions).map(|finish| finish.0),
            Some(EndCause::LegFailed)
        );
    }

    #[test]
    fn drain_refuses_new_calls_and_ends_established_ones_at_the_deadline() {
        let now = Instant::now();
        let mut fresh = Call::new();
        drain(&mut fresh);
        fresh.handle_input(
            now,
            CallInput::Drain {
                deadline: now + Duration::from_secs(30),
            },
        );
        assert_eq!(
            drain(&mut fresh)[0],
            CallAction::RespondBrowser {
                status: 503,
                sdp: None,
                retry_after: Some(30)
            }
        );
        let mut call = established(now, None);
        call.handle_input(
            now,
            CallInput::Drain {
                deadline: now + Duration::from_secs(30),
            },
        );
        assert!(drain(&mut call).is_empty());
        call.handle_timeout(now + Duration::from_secs(30));
        let actions = drain(&mut call);
        assert!(actions.contains(&CallAction::ByePbx) && actions.contains(&CallAction::ByeBrowser));
        assert_eq!(
            finish_of(&actions).map(|finish| finish.0),
            Some(EndCause::Shutdown)
        );
    }

    #[test]
    fn media_timeout_and_unusable_answer() {
        let now = Instant::now();
        let mut call = established(now, None);
        call.handle_input(now, CallInput::MediaEnded(EndCause::MediaTimeout));
        assert_eq!(
            finish_of(&drain(&mut call)).map(|finish| finish.0),
            Some(EndCause::MediaTimeout)
        );

        let mut call = calling(1, now);
        call.handle_input(
            now,
            CallInput::PbxAnswered {
                sdp: "bad".to_owned(),
                session_timer: None,
            },
        );
        drain(&mut call);
        call.handle_input(now, CallInput::MediaRejected);
        let actions = drain(&mut call);
        assert_eq!(actions[0], CallAction::ByePbx);
        assert_eq!(
            finish_of(&actions),
            Some((EndCause::MediaFailed, Some(488), Some(200)))
        );
    }

    #[test]
    fn dtmf_only_crosses_once_answered_and_stragglers_after_the_end_are_ignored() {
        let now = Instant::now();
        let mut call = calling(1, now);
        call.handle_input(
            now,
            CallInput::BrowserDtmf {
                digit: '5',
                duration_ms: 100,
            },
        );
        assert!(drain(&mut call).is_empty());
        let mut call = established(now, None);
        call.handle_input(
            now,
            CallInput::BrowserDtmf {
                digit: '#',
                duration_ms: 160,
            },
        );
        assert_eq!(
            drain(&mut call),
            vec![CallAction::SendDtmf {
                digit: '#',
                duration_ms: 160
            }]
        );
        call.handle_input(now, CallInput::BrowserBye);
        drain(&mut call);
        call.handle_input(now, CallInput::PbxBye);
        call.handle_input(
            now,
            CallInput::PbxAnswered {
                sdp: "x".to_owned(),
                session_timer: None,
            },
        );
        assert!(drain(&mut call).is_empty());
    }
}
