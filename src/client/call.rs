//! One browser call, running: a tokio task that drives the SIP user agent ([`CallUa`]) over a
//! [`SipWebSocket`] and the WebRTC side ([`WebrtcClient`]) over one UDP socket, sends the tone and
//! measures what comes back. [`Call`] is the handle: commands in, [`CallEvent`]s out, a
//! [`CallReport`] readable at any time (also after the call ended).
//!
//! A call costs one task, one UDP socket and one WebSocket; no thread. Audio leaves on a 20 ms
//! schedule from pre-encoded frames ([`ToneLoop::shared`]); a late wakeup sends the frames it
//! missed, up to [`MAX_CATCH_UP`], then skips ahead rather than bursting.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsip::{Method, SipMessage};
use str0m::media::Direction;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::ClientError;
use super::audio::{AudioMeter, ReceivedAudio, SendCodec, ToneLoop, ToneSpec};
use super::ua::{CallUa, EndedBy, Phase, UaConfig, UaEvent, UaOutput};
use super::ws::{SipWebSocket, WsOptions};
use crate::media::webrtc_client::{ClientConfig, ClientEvent, ClientOutput, WebrtcClient};
use crate::sip::Credentials;

/// One 20 ms audio frame.
const FRAME: Duration = Duration::from_millis(20);
/// Frames sent at most in one go after a late wakeup.
pub const MAX_CATCH_UP: u64 = 5;
/// Largest datagram read.
const DATAGRAM: usize = 2048;

/// What the INVITE offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OfferKind {
    /// What Chrome offers: Opus, PCMU, PCMA, telephone-event at 48 and 8 kHz.
    #[default]
    Chrome,
    /// PCMU and telephone-event/8000 only.
    PcmuOnly,
}

/// How to place a call.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// The WebSocket's `Origin` (the page). `None` sends none, which no browser does.
    pub origin: Option<String>,
    /// Headers added to the INVITE, e.g. `("X-Callgate-Token", token)`.
    pub headers: Vec<(String, String)>,
    /// Answers 401/407 challenges when set.
    pub credentials: Option<Credentials>,
    /// The codecs offered.
    pub offer: OfferKind,
    /// How long the INVITE waits for a final response (see [`UaConfig::invite_timeout`]).
    pub invite_timeout: Duration,
    /// RFC 4028 session interval to ask for; `None` leaves session timers out.
    pub session_expires: Option<u32>,
    /// The From value (without tag); JsSIP's anonymous caller when `None`.
    pub from: Option<String>,
    /// The User-Agent of the handshake and the SIP messages.
    pub user_agent: String,
    /// TLS settings for wss:// (trusted roots).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The address the media socket binds (the ICE host candidate).
    pub media_ip: IpAddr,
    /// Send the tone once media is up.
    pub send_audio: bool,
    /// The tone.
    pub tone: ToneSpec,
    /// Decode what comes back, for [`Call::dominant_frequency`] and round trips.
    pub analyse_audio: bool,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            origin: None,
            headers: Vec::new(),
            credentials: None,
            offer: OfferKind::Chrome,
            invite_timeout: Duration::from_secs(32),
            session_expires: None,
            from: None,
            user_agent: "JsSIP 3.10.1 (callgate test client)".to_owned(),
            tls: None,
            media_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            send_audio: true,
            tone: ToneSpec::default(),
            analyse_audio: false,
        }
    }
}

/// Something that happened in the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// A provisional response to the INVITE.
    Provisional {
        /// Its status.
        status: u16,
        /// Whether it carried SDP (early media; the first SDP answer is applied).
        has_sdp: bool,
    },
    /// The INVITE was challenged and sent again with credentials.
    Challenged {
        /// 401 or 407.
        status: u16,
    },
    /// The INVITE was answered 2xx and acknowledged.
    Answered {
        /// Its status.
        status: u16,
    },
    /// The INVITE's failure response as received (for Retry-After, Warning…); `Ended` follows.
    Rejected(Box<rsip::Response>),
    /// ICE and DTLS are up.
    MediaConnected,
    /// ICE or DTLS went down.
    MediaDisconnected,
    /// The audio direction changed through a renegotiation (hold/unhold from either side).
    DirectionChanged(Direction),
    /// The gateway sent an offer (re-INVITE or UPDATE); it was answered (or refused with 488).
    OfferAnswered {
        /// INVITE or UPDATE.
        method: Method,
        /// 200, or 488 when the offer could not be accepted.
        status: u16,
    },
    /// A request from the gateway was answered 200 (INFO, OPTIONS, UPDATE without SDP, ACK).
    RequestReceived {
        /// Its method.
        method: Method,
        /// Its body.
        body: Vec<u8>,
    },
    /// The final response to a request we sent after the INVITE (or a local 408).
    Response {
        /// The request's method.
        method: Method,
        /// Its CSeq number.
        cseq: u32,
        /// The final status.
        status: u16,
    },
    /// An RFC 4733 digit arrived (once per event).
    DtmfReceived {
        /// The digit (`0-9 * # A-D`).
        digit: char,
        /// Its duration as the end report gave it.
        duration: Duration,
    },
    /// The call is over (see [`UaEvent::Ended`] for what `status` holds).
    Ended {
        /// Who ended it.
        by: EndedBy,
        /// The final status.
        status: Option<u16>,
    },
    /// A message that belongs to nothing in the call (e.g. the answer to [`Call::send_raw`]).
    Stray(Box<SipMessage>),
    /// Bytes from the gateway that did not parse as SIP.
    Unparsable(String),
    /// Something on our side failed (an SDP str0m refused, a socket error).
    Error(String),
}

/// Timings and media figures of a call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallReport {
    /// When the INVITE left.
    pub invite_sent: Option<Instant>,
    /// When the first response came.
    pub first_response: Option<Instant>,
    /// When the 2xx came.
    pub answered: Option<Instant>,
    /// When ICE and DTLS were up.
    pub media_connected: Option<Instant>,
    /// When the call ended.
    pub ended: Option<Instant>,
    /// The codec audio is sent with.
    pub codec: Option<SendCodec>,
    /// Audio frames handed to the WebRTC stack.
    pub frames_sent: u64,
    /// Frames the WebRTC stack refused (e.g. while the gateway holds us).
    pub frames_refused: u64,
    /// What came back.
    pub received: ReceivedAudio,
    /// RFC 4733 digits received.
    pub dtmf_received: Vec<(char, Duration)>,
}

impl CallReport {
    /// INVITE sent → 2xx received.
    pub fn setup_time(&self) -> Option<Duration> {
        Some(self.answered?.saturating_duration_since(self.invite_sent?))
    }

    /// INVITE sent → DTLS connected.
    pub fn connect_time(&self) -> Option<Duration> {
        Some(self.media_connected?.saturating_duration_since(self.invite_sent?))
    }
}

/// What the task and the handle share.
#[derive(Debug, Default)]
struct Shared {
    report: CallReport,
    meter: Option<AudioMeter>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock leaves plain data behind; reading it is still fine.
    shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

enum Command {
    HangUp(oneshot::Sender<Result<Option<u16>, ClientError>>),
    Cancel(oneshot::Sender<Result<(), ClientError>>),
    Direction(Direction, oneshot::Sender<Result<u16, ClientError>>),
    Request {
        method: Method,
        body: Option<(String, Vec<u8>)>,
        reply: oneshot::Sender<Result<u16, ClientError>>,
    },
    Rfc4733 {
        digit: char,
        duration: Duration,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    SendRaw(Bytes, oneshot::Sender<Result<(), ClientError>>),
    CloseWebSocket,
}

/// A placed call. Dropping it hangs up (BYE or CANCEL) in the background.
#[derive(Debug)]
pub struct Call {
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<CallEvent>,
    history: Vec<CallEvent>,
    shared: Arc<Mutex<Shared>>,
    local_media: SocketAddr,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::HangUp(_) => "HangUp",
            Command::Cancel(_) => "Cancel",
            Command::Direction(..) => "Direction",
            Command::Request { .. } => "Request",
            Command::Rfc4733 { .. } => "Rfc4733",
            Command::SendRaw(..) => "SendRaw",
            Command::CloseWebSocket => "CloseWebSocket",
        })
    }
}

impl Call {
    /// Opens a WebSocket to `ws_url`, binds the media socket, and sends the INVITE to `target` (e.g.
    /// `sip:<widget id>@gateway`) with a WebRTC offer. Returns once the INVITE is out.
    pub async fn dial(ws_url: &str, target: &str, options: CallOptions) -> Result<Call, ClientError> {
        let ws = SipWebSocket::connect(
            ws_url,
            &WsOptions {
                origin: options.origin.clone(),
                user_agent: Some(options.user_agent.clone()),
                tls: options.tls.clone(),
            },
        )
        .await?;
        let udp = UdpSocket::bind((options.media_ip, 0)).await?;
        let local_media = udp.local_addr()?;
        let now = Instant::now();
        let rtc_config = match options.offer {
            OfferKind::Chrome => ClientConfig::chrome(local_media),
            OfferKind::PcmuOnly => ClientConfig::pcmu_only(local_media),
        };
        let mut rtc = WebrtcClient::new(now, &rtc_config)?;
        let offer = rtc.create_offer()?;
        let mut config = UaConfig::new(target, ws.transport());
        config.extra_headers = options.headers.clone();
        config.credentials = options.credentials.clone();
        config.user_agent = options.user_agent.clone();
        config.invite_timeout = options.invite_timeout;
        config.session_expires = options.session_expires;
        if let Some(from) = &options.from {
            config.from = from.clone();
        }
        let mut ua = CallUa::new(config);
        ua.invite(now, &offer)?;

        let shared = Arc::new(Mutex::new(Shared::default()));
        lock(&shared).report.invite_sent = Some(now);
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::unbounded_channel();
        let driver = Driver {
            ws: Some(ws),
            udp,
            local_media,
            ua,
            rtc,
            options,
            shared: shared.clone(),
            events: event_tx,
            answer_applied: false,
            rtc_deadline: now,
            audio: None,
            waiters: HashMap::new(),
            hangup_waiters: Vec::new(),
            dropped: false,
        };
        tokio::spawn(driver.run(command_rx));
        Ok(Call {
            commands,
            events,
            history: Vec::new(),
            shared,
            local_media,
        })
    }

    /// The media socket's address (the ICE host candidate).
    pub fn local_media(&self) -> SocketAddr {
        self.local_media
    }

    /// The next event, waiting at most `limit`; `None` on timeout or once the call task is gone.
    pub async fn next_event(&mut self, limit: Duration) -> Option<CallEvent> {
        let event = tokio::time::timeout(limit, self.events.recv()).await.ok()??;
        self.history.push(event.clone());
        Some(event)
    }

    /// Waits for the first event (from now on) that `wanted` accepts, at most `limit`; the events
    /// passed over stay in [`Call::history`]. An `Ended` event that is not wanted is an error.
    pub async fn wait_for(
        &mut self,
        limit: Duration,
        what: &str,
        mut wanted: impl FnMut(&CallEvent) -> bool,
    ) -> Result<CallEvent, ClientError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(event) = self.next_event(left).await else {
                return Err(ClientError::Timeout(format!(
                    "{what}; events so far: {:?}",
                    self.history
                )));
            };
            if wanted(&event) {
                return Ok(event);
            }
            if let CallEvent::Ended { by, status } = event {
                return Err(ClientError::Ended(format!(
                    "while waiting for {what}: ended by {by:?} with {status:?}"
                )));
            }
        }
    }

    /// Waits for the 2xx.
    pub async fn wait_answered(&mut self, limit: Duration) -> Result<u16, ClientError> {
        match self
            .wait_for(limit, "the answer", |e| matches!(e, CallEvent::Answered { .. }))
            .await?
        {
            CallEvent::Answered { status } => Ok(status),
            _ => Err(ClientError::Timeout("the answer".to_owned())),
        }
    }

    /// Waits for ICE and DTLS.
    pub async fn wait_media(&mut self, limit: Duration) -> Result<(), ClientError> {
        self.wait_for(limit, "media", |e| matches!(e, CallEvent::MediaConnected))
            .await
            .map(|_| ())
    }

    /// Waits for the end of the call; returns who ended it and the status.
    pub async fn wait_ended(&mut self, limit: Duration) -> Result<(EndedBy, Option<u16>), ClientError> {
        if let Some(CallEvent::Ended { by, status }) =
            self.history.iter().find(|e| matches!(e, CallEvent::Ended { .. }))
        {
            return Ok((*by, *status));
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(CallEvent::Ended { by, status }) => return Ok((by, status)),
                Some(_) => {}
                None => {
                    return Err(ClientError::Timeout(format!(
                        "the end; events: {:?}",
                        self.history
                    )));
                }
            }
        }
    }

    /// Every event received through [`Call::next_event`] and the waits, in order.
    pub fn history(&self) -> &[CallEvent] {
        &self.history
    }

    /// Hangs up: BYE once answered (returns the status of its response), CANCEL before (returns the
    /// INVITE's final status, 487 normally, or the BYE's when the 200 won the race).
    pub async fn hang_up(&self) -> Result<Option<u16>, ClientError> {
        self.ask(Command::HangUp).await?
    }

    /// Sends CANCEL (at once, or when the first provisional response comes) and returns.
    pub async fn cancel(&self) -> Result<(), ClientError> {
        self.ask(Command::Cancel).await?
    }

    /// Holds the call like a browser: a re-INVITE with `a=sendonly`. Returns its final status; on 2xx
    /// the answer is applied.
    pub async fn hold(&self) -> Result<u16, ClientError> {
        self.ask(|reply| Command::Direction(Direction::SendOnly, reply))
            .await?
    }

    /// Takes the call off hold: a re-INVITE with `a=sendrecv`.
    pub async fn unhold(&self) -> Result<u16, ClientError> {
        self.ask(|reply| Command::Direction(Direction::SendRecv, reply))
            .await?
    }

    /// Sends a digit as JsSIP does with `sendDTMF(…, {transportType: 'INFO'})`: INFO with
    /// `application/dtmf-relay`. Returns the INFO's final status.
    pub async fn send_info_dtmf(&self, digit: char, duration: Duration) -> Result<u16, ClientError> {
        let body = format!("Signal={digit}\r\nDuration={}\r\n", duration.as_millis());
        self.request(
            Method::Info,
            Some(("application/dtmf-relay".to_owned(), body.into_bytes())),
        )
        .await
    }

    /// Sends any request in the dialog (OPTIONS, UPDATE, MESSAGE…); returns its final status.
    pub async fn request(&self, method: Method, body: Option<(String, Vec<u8>)>) -> Result<u16, ClientError> {
        self.ask(|reply| Command::Request { method, body, reply }).await?
    }

    /// Sends a digit as RFC 4733 events in the media (the browser's default), paced by str0m.
    pub async fn send_rfc4733(&self, digit: char, duration: Duration) -> Result<(), ClientError> {
        self.ask(|reply| Command::Rfc4733 {
            digit,
            duration,
            reply,
        })
        .await?
    }

    /// Sends raw bytes as one WebSocket frame on the call's connection; answers to them arrive as
    /// [`CallEvent::Stray`].
    pub async fn send_raw(&self, bytes: impl Into<Bytes>) -> Result<(), ClientError> {
        let bytes = bytes.into();
        self.ask(|reply| Command::SendRaw(bytes, reply)).await?
    }

    /// Closes the WebSocket under the call, as a closed browser tab does; the call ends with
    /// [`EndedBy::Transport`].
    pub fn close_websocket(&self) {
        let _ = self.commands.send(Command::CloseWebSocket);
    }

    /// Timings and media figures so far.
    pub fn report(&self) -> CallReport {
        let shared = lock(&self.shared);
        let mut report = shared.report.clone();
        if let Some(meter) = &shared.meter {
            report.received = meter.received();
        }
        report
    }

    /// The strongest frequency in the last second of received audio (needs
    /// [`CallOptions::analyse_audio`]).
    pub fn dominant_frequency(&self) -> Option<f64> {
        lock(&self.shared).meter.as_ref()?.dominant_frequency()
    }

    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .map_err(|_| ClientError::Ended("the call is over".to_owned()))?;
        answer
            .await
            .map_err(|_| ClientError::Ended("the call ended before answering".to_owned()))
    }
}

/// What a request we sent waits for.
enum Waiter {
    Status(oneshot::Sender<Result<u16, ClientError>>),
    /// A hold/unhold re-INVITE: its answer goes to str0m.
    Reoffer(oneshot::Sender<Result<u16, ClientError>>),
}

/// The audio being sent.
struct Sending {
    tone: Arc<ToneLoop>,
    started: Instant,
    rtp_base: u64,
    next_frame: u64,
}

impl Sending {
    fn next_at(&self) -> Instant {
        self.started + FRAME * u32::try_from(self.next_frame).unwrap_or(u32::MAX)
    }

    fn rtp_time(&self, frame: u64) -> u64 {
        self.rtp_base + frame * self.tone.codec().ticks_per_frame()
    }
}

/// The call task's state.
struct Driver {
    ws: Option<SipWebSocket>,
    udp: UdpSocket,
    local_media: SocketAddr,
    ua: CallUa,
    rtc: WebrtcClient,
    options: CallOptions,
    shared: Arc<Mutex<Shared>>,
    events: mpsc::UnboundedSender<CallEvent>,
    /// The first SDP answer (183 or 2xx) was applied.
    answer_applied: bool,
    rtc_deadline: Instant,
    audio: Option<Sending>,
    waiters: HashMap<u32, Waiter>,
    hangup_waiters: Vec<oneshot::Sender<Result<Option<u16>, ClientError>>>,
    /// The handle is gone: hang up and finish.
    dropped: bool,
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut buffer = vec![0_u8; DATAGRAM];
        loop {
            // The user agent's events feed the WebRTC client (answers, offers), so it goes first.
            self.drain_ua().await;
            self.drain_rtc();
            if self.ua.phase() == Phase::Ended {
                break;
            }
            let deadline = [
                Some(self.rtc_deadline),
                self.ua.next_timeout(),
                self.audio.as_ref().map(Sending::next_at),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let ws = self.ws.as_mut();
            tokio::select! {
                frame = async { match ws { Some(ws) => ws.recv().await, None => std::future::pending().await } } => {
                    match frame {
                        Some(bytes) => self.ua.handle_message(Instant::now(), &bytes),
                        None => {
                            self.ws = None;
                            self.ua.connection_lost();
                        }
                    }
                }
                received = self.udp.recv_from(&mut buffer) => match received {
                    Ok((length, source)) => {
                        self.rtc.handle_receive(Instant::now(), source, self.local_media, &buffer[..length]);
                    }
                    Err(error) => tracing::debug!(%error, "media socket read failed"),
                },
                command = commands.recv(), if !self.dropped => match command {
                    Some(command) => self.handle_command(command).await,
                    None => {
                        self.dropped = true;
                        self.hang_up();
                    }
                },
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                    let now = Instant::now();
                    self.ua.handle_timeout(now);
                    self.rtc.handle_timeout(now);
                    self.send_audio(now);
                }
            }
        }
        lock(&self.shared).report.ended = Some(Instant::now());
        if let Some(ws) = self.ws.take() {
            ws.close().await;
        }
    }

    fn drain_rtc(&mut self) {
        loop {
            match self.rtc.poll_output() {
                ClientOutput::Timeout(at) => {
                    self.rtc_deadline = at;
                    return;
                }
                ClientOutput::Transmit(transmit) => {
                    // Non-blocking: a full socket buffer drops the datagram, as a congested network would.
                    let _ = self.udp.try_send_to(&transmit.bytes, transmit.to);
                }
                ClientOutput::Event(event) => self.on_rtc_event(event),
            }
        }
    }

    fn on_rtc_event(&mut self, event: ClientEvent) {
        let now = Instant::now();
        match event {
            ClientEvent::Connected => {
                lock(&self.shared).report.media_connected = Some(now);
                self.emit(CallEvent::MediaConnected);
                self.start_audio(now);
            }
            ClientEvent::Audio {
                seq,
                rtp_time,
                payload,
                ..
            } => {
                if let Some(meter) = &mut lock(&self.shared).meter {
                    meter.on_audio(now, seq, rtp_time, &payload);
                }
            }
            ClientEvent::Dtmf { event, duration } => {
                let digit = crate::media::dtmf::DtmfDigit::from_event(event).map_or('?', |d| d.as_char());
                lock(&self.shared).report.dtmf_received.push((digit, duration));
                self.emit(CallEvent::DtmfReceived { digit, duration });
            }
            ClientEvent::DirectionChanged(direction) => self.emit(CallEvent::DirectionChanged(direction)),
            ClientEvent::Disconnected => {
                self.audio = None;
                self.emit(CallEvent::MediaDisconnected);
            }
        }
    }

    /// Chooses the codec from the negotiation and starts the tone (when asked) and the meter.
    fn start_audio(&mut self, now: Instant) {
        let Some((pt, clock_rate)) = self.rtc.audio_format() else {
            return;
        };
        let codec = SendCodec::from_format(pt, clock_rate);
        {
            let mut shared = lock(&self.shared);
            shared.report.codec = Some(codec);
            if shared.meter.is_none() {
                match AudioMeter::new(now, codec, self.options.analyse_audio) {
                    Ok(meter) => shared.meter = Some(meter),
                    Err(error) => tracing::warn!(%error, "no audio meter"),
                }
            }
        }
        if !self.options.send_audio || self.audio.is_some() {
            return;
        }
        match ToneLoop::shared(codec, &self.options.tone) {
            Ok(tone) => {
                self.audio = Some(Sending {
                    tone,
                    started: now,
                    rtp_base: u64::from(rand::random::<u32>()),
                    next_frame: 0,
                });
            }
            Err(error) => self.emit(CallEvent::Error(format!("tone: {error}"))),
        }
    }

    fn send_audio(&mut self, now: Instant) {
        let Some(audio) = &mut self.audio else { return };
        let due = audio.next_at();
        if due > now {
            return;
        }
        let behind = (now - due).as_millis() / FRAME.as_millis();
        if behind as u64 > MAX_CATCH_UP {
            audio.next_frame += behind as u64 - MAX_CATCH_UP;
        }
        let mut sent = 0;
        let mut refused = 0;
        let mut onsets = Vec::new();
        while audio.next_at() <= now {
            let frame = audio.next_frame;
            audio.next_frame += 1;
            let payload = audio.tone.frame(frame);
            match self.rtc.write_audio(now, audio.rtp_time(frame), payload) {
                Ok(()) => {
                    sent += 1;
                    if audio.tone.is_onset(frame) {
                        onsets.push(now);
                    }
                }
                Err(_) => refused += 1,
            }
        }
        let mut shared = lock(&self.shared);
        shared.report.frames_sent += sent;
        shared.report.frames_refused += refused;
        if let Some(meter) = &mut shared.meter {
            for at in onsets {
                meter.onset_sent(at);
            }
        }
    }

    async fn drain_ua(&mut self) {
        while let Some(output) = self.ua.poll_output() {
            match output {
                UaOutput::Send(bytes) => self.send_ws(Bytes::from(bytes)).await,
                UaOutput::Event(event) => self.on_ua_event(event),
            }
        }
    }

    async fn send_ws(&mut self, bytes: Bytes) {
        let Some(ws) = &mut self.ws else { return };
        if let Err(error) = ws.send(bytes).await {
            tracing::debug!(%error, "websocket send failed");
            self.ws = None;
            self.ua.connection_lost();
        }
    }

    fn on_ua_event(&mut self, event: UaEvent) {
        let now = Instant::now();
        {
            let mut shared = lock(&self.shared);
            if matches!(event, UaEvent::Provisional { .. } | UaEvent::Answered { .. })
                && shared.report.first_response.is_none()
            {
                shared.report.first_response = Some(now);
            }
        }
        match event {
            UaEvent::Provisional { status, sdp } => {
                let has_sdp = sdp.is_some();
                if let Some(sdp) = sdp {
                    self.apply_answer(&sdp);
                }
                self.emit(CallEvent::Provisional { status, has_sdp });
            }
            UaEvent::Challenged { status } => self.emit(CallEvent::Challenged { status }),
            UaEvent::Answered { status, sdp } => {
                lock(&self.shared).report.answered = Some(now);
                if let Some(sdp) = sdp {
                    self.apply_answer(&sdp);
                }
                if !self.answer_applied {
                    self.emit(CallEvent::Error(
                        "the 2xx carried no usable SDP answer".to_owned(),
                    ));
                }
                self.emit(CallEvent::Answered { status });
            }
            UaEvent::OfferReceived { method, sdp } => {
                let status = match self.rtc.accept_offer(&sdp) {
                    Ok(answer) => self.ua.answer_offer(&answer).map(|()| 200),
                    Err(error) => {
                        self.emit(CallEvent::Error(format!("offer refused: {error}")));
                        self.ua.reject_offer(488).map(|()| 488)
                    }
                };
                if let Ok(status) = status {
                    self.emit(CallEvent::OfferAnswered { method, status });
                }
            }
            UaEvent::RequestReceived { method, body, .. } => {
                self.emit(CallEvent::RequestReceived { method, body });
            }
            UaEvent::Response {
                method,
                cseq,
                status,
                sdp,
            } => {
                match self.waiters.remove(&cseq) {
                    Some(Waiter::Status(reply)) => {
                        let _ = reply.send(Ok(status));
                    }
                    Some(Waiter::Reoffer(reply)) => {
                        let result = match sdp {
                            Some(sdp) if (200..300).contains(&status) => self
                                .rtc
                                .accept_answer(&sdp)
                                .map(|()| status)
                                .map_err(ClientError::from),
                            _ => Ok(status),
                        };
                        let _ = reply.send(result);
                    }
                    None => {}
                }
                self.emit(CallEvent::Response { method, cseq, status });
            }
            UaEvent::Ended { by, status } => {
                self.audio = None;
                lock(&self.shared).report.ended = Some(now);
                for reply in self.hangup_waiters.drain(..) {
                    let _ = reply.send(Ok(status));
                }
                for (_, waiter) in self.waiters.drain() {
                    let (Waiter::Status(reply) | Waiter::Reoffer(reply)) = waiter;
                    let _ = reply.send(Err(ClientError::Ended(format!("ended by {by:?}"))));
                }
                self.emit(CallEvent::Ended { by, status });
            }
            UaEvent::Rejected(response) => self.emit(CallEvent::Rejected(response)),
            UaEvent::Stray(message) => self.emit(CallEvent::Stray(message)),
            UaEvent::Unparsable(error) => self.emit(CallEvent::Unparsable(error)),
        }
    }

    /// Applies the first SDP answer, from a 183 (early media) or the 2xx; later copies are ignored as
    /// JsSIP ignores them.
    fn apply_answer(&mut self, sdp: &str) {
        if self.answer_applied {
            return;
        }
        match self.rtc.accept_answer(sdp) {
            Ok(()) => self.answer_applied = true,
            Err(error) => self.emit(CallEvent::Error(format!("answer refused: {error}"))),
        }
    }

    async fn handle_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::HangUp(reply) => {
                if self.ua.phase() == Phase::Ended {
                    let _ = reply.send(Err(ClientError::Ended("already over".to_owned())));
                    return;
                }
                self.hangup_waiters.push(reply);
                self.hang_up();
            }
            Command::Cancel(reply) => {
                let _ = reply.send(self.ua.cancel(now).map_err(ClientError::from));
            }
            Command::Direction(direction, reply) => {
                let sent = self
                    .rtc
                    .create_reoffer(direction)
                    .map_err(ClientError::from)
                    .and_then(|offer| self.ua.reinvite(now, &offer).map_err(ClientError::from));
                match sent {
                    Ok(cseq) => {
                        self.waiters.insert(cseq, Waiter::Reoffer(reply));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            Command::Request { method, body, reply } => {
                let body = body
                    .as_ref()
                    .map(|(content_type, bytes)| (content_type.as_str(), bytes.clone()));
                match self.ua.request(now, method, body) {
                    Ok(cseq) => {
                        self.waiters.insert(cseq, Waiter::Status(reply));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error.into()));
                    }
                }
            }
            Command::Rfc4733 {
                digit,
                duration,
                reply,
            } => {
                let rtp_time = self
                    .audio
                    .as_ref()
                    .map_or(0, |audio| audio.rtp_time(audio.next_frame));
                let result = self.rtc.send_dtmf(now, rtp_time, digit, duration);
                let _ = reply.send(result.map_err(ClientError::from));
            }
            Command::SendRaw(bytes, reply) => {
                let result = match &mut self.ws {
                    Some(ws) => ws.send(bytes).await,
                    None => Err(ClientError::Ended("the WebSocket is closed".to_owned())),
                };
                let _ = reply.send(result);
            }
            Command::CloseWebSocket => {
                if let Some(ws) = self.ws.take() {
                    ws.close().await;
                }
                self.ua.connection_lost();
            }
        }
    }

    /// BYE when answered, CANCEL before; nothing when it is already ending.
    fn hang_up(&mut self) {
        let now = Instant::now();
        let result = match self.ua.phase() {
            Phase::Calling | Phase::Proceeding => self.ua.cancel(now),
            Phase::Confirmed => self.ua.bye(now).map(|_| ()),
            Phase::Idle | Phase::Terminating | Phase::Ended => Ok(()),
        };
        if let Err(error) = result {
            tracing::debug!(%error, "hang up not sent");
        }
    }

    fn emit(&self, event: CallEvent) {
        let _ = self.events.send(event);
    }
}
