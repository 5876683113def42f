//! One call's media, sans-IO: the WebRTC leg toward the browser, the RTP leg toward the PBX, and the
//! pipeline between them (passthrough, or jitter buffers, codecs and concealment), DTMF both ways,
//! hold and unhold, the media timeout and the call's statistics.
//!
//! ## Driving it
//!
//! Like the legs it owns, a [`MediaSession`] never reads the clock or touches a socket. The driver
//! (a media worker, or a test on a simulated clock) feeds it datagrams with
//! [`MediaSession::handle_webrtc_receive`] (the worker's shared WebRTC socket) and
//! [`MediaSession::handle_rtp_receive`] (this call's RTP and RTCP sockets), calls
//! [`MediaSession::handle_timeout`] when [`MediaSession::poll_timeout`] says, and after every input
//! drains [`MediaSession::poll_output`] until it returns `None`: transmits (which socket, to, from,
//! bytes lent by the session) and [`MediaEvent`]s.
//!
//! ## Setup
//!
//! Signaling calls [`MediaSession::prepare`] with the browser's offer and gets the offer for the PBX,
//! then [`MediaSession::apply_pbx_answer`] with the PBX's answer (183 early media, then 200) and gets
//! the WebRTC answer for the browser. When passthrough is possible (`transcode = "when_needed"` and the
//! browser offered a G.711 law the trunk takes) the browser's codec depends on the PBX's choice, so the
//! WebRTC leg is only built, and the browser answered, once the PBX has answered; the offer is still
//! checked at once so that a bad one is refused before the PBX is called.
//!
//! ## The pipeline
//!
//! - **Passthrough** (same G.711 law on both legs, `when_needed`): each packet is relayed as it
//!   arrives, without a jitter buffer or codec; each leg writes its own SSRC, sequence numbers and
//!   timestamps, so both streams stay continuous whatever the other side does.
//! - **Transcoding**: each inbound side has an adaptive [`JitterBuffer`] polled at its own packet
//!   time, a decoder to 8 kHz (Opus with in-band FEC from the next packet on a single loss and PLC
//!   otherwise; G.711 with [`G711Concealer`]) and a small sample FIFO; a 20 ms tick takes one frame
//!   from each FIFO and encodes it toward the other leg. Packets of 30 ms (or any whole 2.5 ms) from
//!   either side are reframed to 20 ms this way. A side that has sent nothing for 200 ms stops being
//!   encoded (hold, silence suppression) until its packets come back.
//!
//! ## DTMF
//!
//! A digit crosses as RFC 4733 events only: from the browser (SIP INFO through
//! [`MediaSession::send_dtmf`], or RFC 4733 at 48000 or 8000 Hz) it is regenerated toward the PBX at
//! 8000 Hz; from the PBX it is regenerated toward the browser at the browser's telephone-event rate.
//! The legs report each digit exactly once (when it ends), and the regenerated events take the place
//! of the audio frames while they play; audio from the PBX is muted while one of its digits sounds.
//!
//! ## Hold
//!
//! [`MediaSession::reoffer`] takes a re-offer from either leg: a change of direction is forwarded to
//! the other leg (browser `sendonly` becomes a `sendonly` re-INVITE toward the PBX, a PBX `sendonly`
//! becomes a WebRTC offer toward the browser) and completed with [`MediaSession::reanswer`]; anything
//! else (a session refresh, a moved address, ICE restart) is answered locally. Offers toward the PBX
//! after the first answer list only the codec in use, so a refresh or hold never switches codecs.
//!
//! ## Ending
//!
//! [`MediaEvent::ConsentLost`] (the browser stopped ICE consent checks), [`MediaEvent::Timeout`] (no
//! RTP from the PBX, or from the browser, for `rtp_timeout` once answered, suspended while either side
//! holds) and [`MediaEvent::Disconnected`] end the call; [`MediaSession::close`] sends the RTCP BYE and
//! DTLS close_notify, and [`MediaSession::stats`] gives the figures for the call record.
//!
//! Nothing in the session allocates per packet: payloads go into preallocated jitter slots, sample
//! FIFOs and RTP buffers. str0m allocates internally for each WebRTC packet (its API takes and gives
//! owned buffers), which is the one exception.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use str0m::config::DtlsCert;
use str0m::media::Direction as WebrtcDirection;

use crate::b2bua::Leg;
use crate::config::{MediaConfig, TranscodeMode};
use crate::sdp::{Codec, Direction, PbxAnswer, PbxOffer, PbxSdp, SdpError};

use super::dtmf::{DtmfDigit, DtmfError, DtmfReceived, DtmfReceiver, DtmfSender};
use super::g711::Law;
use super::jitter::{
    EmptyReason, JitterBuffer, JitterConfig, JitterError, JitterOutput, MAX_PAYLOAD_LIMIT, PacketHeader,
};
use super::opus_codec::{
    ExpectedLoss, FRAME_SAMPLES, MAX_PACKET_BYTES, MAX_PACKET_SAMPLES, OpusCodecError, OpusDecoder8k,
    OpusEncoder8k, OpusEncoderConfig,
};
use super::plc::G711Concealer;
use super::rtp_leg::{self, Received, RtpLeg, RtpLegConfig, RtpLegStats};
use super::rtp_packet::TelephoneEvent;
use super::webrtc_leg::{
    self, AudioCodec, CodecPrefs, DtmfReport, G711, LegStats, WebrtcLeg, WebrtcLegConfig, WebrtcLegError,
};

/// The pipeline's frame: what one tick encodes toward each leg.
pub const FRAME: Duration = Duration::from_millis(20);
/// The sample rate of the pipeline (G.711's; Opus decodes to it and encodes from it).
const SAMPLE_RATE: u32 = 8000;
/// A side quiet (silence, underrun) for this many samples stops being encoded: 200 ms.
const IDLE_SAMPLES: usize = 1600;
/// Consecutive concealed frames before concealment gives way to silence (codec PLC fades out by
/// then; calling it longer only costs CPU).
const MAX_CONCEALED_FRAMES: u32 = 5;
/// Samples one inbound FIFO holds: a 120 ms packet plus two frames.
const FIFO_CAPACITY: usize = MAX_PACKET_SAMPLES + 2 * FRAME_SAMPLES;
/// Opus payload bytes a jitter slot keeps per 8 kHz sample of packet time: 2, i.e. 128 kb/s, four
/// times what browsers send by default. Slots are sized per stream because they are most of a
/// jitter buffer's memory.
const OPUS_BYTES_PER_SAMPLE: usize = 2;
/// The least an Opus jitter slot keeps, for packets of 2.5 or 5 ms.
const OPUS_MIN_PAYLOAD: usize = 64;
/// RTP packets (and RTCP reports) toward the PBX waiting for the driver. An input produces at
/// most three; the driver drains after every input.
const RTP_QUEUE: usize = 8;
/// One RTP buffer: room for a 12-byte header and 120 ms of G.711 (the largest packet the pipeline
/// writes or relays: a browser's G.711 is relayed as it came), or any RTCP report of the RTP leg.
const RTP_BUFFER_LEN: usize = 1024;
const _: () = assert!(12 + MAX_PACKET_SAMPLES <= RTP_BUFFER_LEN);
/// A pause in sending longer than this (beyond the last packet) moves the browser-side timestamp
/// to the clock instead of continuing from the packet count (as the RTP leg does).
const TIMESTAMP_GAP: Duration = Duration::from_millis(80);
/// Deadlines further behind than this are skipped rather than caught up one by one.
const MAX_LAG: Duration = Duration::from_millis(100);
/// Steps one [`MediaSession::handle_timeout`] call runs at most before returning to the driver.
const MAX_STEPS: usize = 32;
/// How often a passed RTP-leg media deadline is looked at again (see [`MediaSession::poll_timeout`]).
const TIMEOUT_RECHECK: Duration = Duration::from_secs(1);
/// What [`MediaSession::poll_timeout`] says when nothing is scheduled.
const NOTHING_SCHEDULED: Duration = Duration::from_secs(24 * 3600);

/// Why a media operation failed. Errors from [`MediaSession::prepare`], [`MediaSession::apply_pbx_answer`],
/// [`MediaSession::reoffer`] and [`MediaSession::reanswer`] mean the SDP is not acceptable (488).
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The browser's SDP was refused by the WebRTC leg.
    #[error("browser SDP: {0}")]
    Browser(#[from] WebrtcLegError),
    /// The PBX's SDP could not be used, or our offer could not be built.
    #[error("PBX SDP: {0}")]
    Pbx(#[from] SdpError),
    /// The PBX refused the audio stream (port 0).
    #[error("the PBX refused the audio stream")]
    PbxRejectedAudio,
    /// libopus could not be set up with the configured values.
    #[error("Opus: {0}")]
    Opus(#[from] OpusCodecError),
    /// A jitter buffer could not be built from the configuration.
    #[error("jitter buffer: {0}")]
    Jitter(#[from] JitterError),
    /// A digit could not be queued (not a DTMF digit, or too many waiting).
    #[error("DTMF: {0}")]
    Dtmf(#[from] DtmfError),
    /// The operation needs the PBX's answer first (re-offers, DTMF).
    #[error("the call is not answered yet")]
    NotAnswered,
    /// A re-answer arrived with no forwarded re-offer from the other leg outstanding.
    #[error("no re-offer is waiting for this answer")]
    NoPendingReoffer,
    /// The session was closed.
    #[error("the media session is closed")]
    Closed,
}

/// Something the signaling layer must know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// ICE and DTLS are up with the browser: media can flow (for setup-time statistics).
    Connected,
    /// The browser stopped answering ICE consent checks (RFC 7675): end the call.
    ConsentLost,
    /// No RTP from the PBX or the browser for the configured time, outside hold: end the call.
    Timeout,
    /// The browser closed the DTLS connection, or the WebRTC leg failed: end the call.
    Disconnected,
}

/// Which of the driver's sockets a datagram leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// The media worker's shared WebRTC socket.
    Webrtc,
    /// This call's RTP socket toward the PBX.
    Rtp,
    /// This call's RTCP socket (RTP port + 1).
    Rtcp,
}

/// A datagram to send; the bytes are lent until the next call into the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// The socket to send from.
    pub socket: SocketKind,
    /// Destination.
    pub to: SocketAddr,
    /// The local address of that socket.
    pub from: SocketAddr,
    /// The datagram.
    pub bytes: &'a [u8],
}

/// What [`MediaSession::poll_output`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output<'a> {
    /// Send a datagram.
    Transmit(Transmit<'a>),
    /// Tell signaling.
    Event(MediaEvent),
}

/// The codec work one [`MediaSession::handle_timeout`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeoutWork {
    /// Codec operations: a frame decoded (or concealed by the codec) or encoded. A transcoded 20 ms
    /// frame is two: a decode and an encode.
    pub codec_ops: u32,
    /// Time spent in those operations, by [`SessionSettings::codec_clock`] (zero without it).
    pub codec_time: Duration,
}

impl TimeoutWork {
    fn add(&mut self, started: Option<Instant>, clock: Option<fn() -> Instant>) {
        self.codec_ops += 1;
        if let (Some(started), Some(clock)) = (started, clock) {
            self.codec_time += clock().saturating_duration_since(started);
        }
    }
}

/// What to do with a re-offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reoffer {
    /// Send this offer to the other leg (a re-INVITE) and pass its answer to [`MediaSession::reanswer`].
    Forward(String),
    /// Answer the leg that sent the re-offer with this SDP; nothing crosses to the other leg.
    Answer(String),
}

/// What one call's session needs to know, built by the media worker for each call.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// The address in our SDP toward the PBX (the public side of a 1:1 NAT).
    pub public_ip: IpAddr,
    /// The address the call's RTP and RTCP sockets are bound to.
    pub bind_ip: IpAddr,
    /// The call's RTP port (even); RTCP is on the next one.
    pub rtp_port: u16,
    /// The WebRTC host candidate: `public_ip:webrtc_port + worker`.
    pub webrtc_advertised: SocketAddr,
    /// The address the worker's WebRTC socket is bound to.
    pub webrtc_local: SocketAddr,
    /// When audio is decoded and re-encoded.
    pub transcode: TranscodeMode,
    /// The Opus encoder toward the browser.
    pub opus: OpusEncoderConfig,
    /// No RTP from a side for this long, while expected, ends the call.
    pub rtp_timeout: Duration,
    /// The most delay a jitter buffer adds.
    pub jitter_max: Duration,
    /// No ICE consent check from the browser for this long ends the call.
    pub consent_timeout: Duration,
    /// A DTLS certificate shared by the worker's calls (one key generation per process).
    pub dtls_cert: Option<DtlsCert>,
    /// The wall-clock time at the `now` passed to [`MediaSession::prepare`], for RTCP sender reports.
    pub wallclock: SystemTime,
    /// The origin of the driver's 20 ms grid: ticks fall on `tick_grid + k * FRAME`, so that a driver
    /// serving many calls wakes once per frame for all of them. `None`: the first tick is at the input
    /// that needs it, and the grid follows from there.
    pub tick_grid: Option<Instant>,
    /// The driver's clock, read around each decode and encode so that
    /// [`TimeoutWork::codec_time`] covers the codec alone; `None` (tests) leaves it at zero.
    pub codec_clock: Option<fn() -> Instant>,
}

impl SessionSettings {
    /// Settings from the `[media]` configuration for a call on `rtp_port` served by the worker whose
    /// WebRTC socket is on `webrtc_port`.
    pub fn new(config: &MediaConfig, webrtc_port: u16, rtp_port: u16, wallclock: SystemTime) -> Self {
        SessionSettings {
            public_ip: config.public_ip,
            bind_ip: config.bind_ip,
            rtp_port,
            webrtc_advertised: SocketAddr::new(config.public_ip, webrtc_port),
            webrtc_local: SocketAddr::new(config.bind_ip, webrtc_port),
            transcode: config.transcode,
            opus: OpusEncoderConfig {
                complexity: config.opus_complexity,
                bitrate_bps: config.opus_bitrate,
                inband_fec: config.opus_fec,
                ..OpusEncoderConfig::default()
            },
            rtp_timeout: config.rtp_timeout,
            jitter_max: config.jitter_max,
            consent_timeout: webrtc_leg::DEFAULT_CONSENT_TIMEOUT,
            dtls_cert: None,
            wallclock,
            tick_grid: None,
            codec_clock: None,
        }
    }
}

/// One leg's figures for the call record.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LegMediaStats {
    /// The codec used on the leg (`opus`, `pcmu`, `pcma`), once negotiated.
    pub codec: Option<&'static str>,
    /// RTP packets sent to this side.
    pub packets_sent: u64,
    /// RTP payload bytes sent to this side.
    pub bytes_sent: u64,
    /// RTP packets received from this side.
    pub packets_received: u64,
    /// RTP payload bytes received from this side.
    pub bytes_received: u64,
    /// Packets from this side that never arrived.
    pub packets_lost: u64,
    /// Interarrival jitter of this side's stream, in milliseconds.
    pub jitter_ms: Option<f64>,
    /// Round-trip time to this side from RTCP, in milliseconds.
    pub rtt_ms: Option<f64>,
}

/// The figures of a whole call.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallMediaStats {
    /// The WebRTC leg toward the browser.
    pub browser: LegMediaStats,
    /// The RTP leg toward the PBX.
    pub pbx: LegMediaStats,
    /// Whether audio was decoded and re-encoded at the end of the call (false: passthrough).
    pub transcoded: bool,
}

/// A re-offer forwarded to the other leg, waiting for that leg's answer.
#[derive(Debug)]
enum PendingReoffer {
    /// The browser's re-offer went to the PBX; this answers the browser once the PBX has answered.
    FromBrowser { browser_answer: String },
    /// The PBX's re-offer went to the browser; this answers the PBX once the browser has answered.
    FromPbx { pbx_answer: PbxAnswer },
}

/// One call's media. See the module docs.
pub struct MediaSession {
    transcode: TranscodeMode,
    opus: OpusEncoderConfig,
    jitter_max: Duration,
    rtp_timeout: Duration,
    webrtc_config: WebrtcLegConfig,
    /// The browser's offer, kept until the WebRTC leg is built (when passthrough waits for the PBX).
    browser_offer: Option<String>,
    webrtc: Option<WebrtcLeg>,
    browser_answer: Option<String>,
    webrtc_timeout: Option<Instant>,
    rtp: RtpLeg,
    local_rtcp: SocketAddr,
    /// Our side toward the PBX with every trunk codec: what answers to PBX offers choose from.
    pbx_local: PbxOffer,
    pbx_sdp: PbxSdp,
    public_ip: IpAddr,
    rtp_port: u16,
    /// The PBX's direction as it last offered it (its hold), not as it answered ours.
    pbx_wish: Direction,
    pending: Option<PendingReoffer>,
    transcoder: Option<Box<Transcoder>>,
    dtmf_to_pbx: DtmfSender,
    dtmf_to_browser: Option<(DtmfSender, u32)>,
    dtmf_from_pbx: DtmfReceiver,
    /// A PBX digit has begun and not ended: its audio is muted toward the browser.
    pbx_digit_sounding: bool,
    browser_timeline: OutTimeline,
    next_tick: Option<Instant>,
    tick_grid: Option<Instant>,
    codec_clock: Option<fn() -> Instant>,
    rtp_out: RtpQueue,
    webrtc_out: VecDeque<webrtc_leg::Transmit>,
    /// The WebRTC datagram lent by the last [`MediaSession::poll_output`].
    lent: Vec<u8>,
    events: VecDeque<MediaEvent>,
    answered_at: Option<Instant>,
    browser_last_rx: Option<Instant>,
    /// Since when both sides are expected to send (answered, nobody holding).
    expecting_since: Option<Instant>,
    timed_out: bool,
    closed: bool,
    last_now: Instant,
    /// Codec work since the start of the last [`MediaSession::handle_timeout`].
    codec_work: TimeoutWork,
}

impl std::fmt::Debug for MediaSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSession")
            .field("webrtc", &self.webrtc)
            .field("pbx_codec", &self.rtp.codec())
            .field("transcoding", &self.transcoder.is_some())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl MediaSession {
    /// Builds the session from the browser's offer and returns it with our offer for the PBX.
    ///
    /// `trunk_codecs` is the trunk's G.711 preference. When passthrough is possible, the codecs the
    /// browser also offered move to the front, so that the PBX's choice is one both legs share.
    pub fn prepare(
        now: Instant,
        browser_offer: &str,
        trunk_codecs: &[Codec],
        settings: &SessionSettings,
    ) -> Result<(MediaSession, String), MediaError> {
        let mut webrtc_config = WebrtcLegConfig::new(settings.webrtc_advertised, settings.webrtc_local);
        webrtc_config.consent_timeout = settings.consent_timeout;
        webrtc_config.dtls_cert = settings.dtls_cert.clone();

        let offered = WebrtcLeg::offered_codecs(browser_offer)?;
        let shared: Vec<Codec> = trunk_codecs
            .iter()
            .copied()
            .filter(|codec| offered.contains(&AudioCodec::from(g711_of(*codec))))
            .collect();
        let passthrough_possible = settings.transcode == TranscodeMode::WhenNeeded && !shared.is_empty();
        let mut pbx_codecs = if passthrough_possible { shared } else { Vec::new() };
        for codec in trunk_codecs {
            if !pbx_codecs.contains(codec) {
                pbx_codecs.push(*codec);
            }
        }
        let pbx_local = PbxOffer::new(
            settings.public_ip,
            settings.rtp_port,
            settings.rtp_port.wrapping_add(1),
            &pbx_codecs,
        )?;
        let session_id = rand::random::<u64>() >> 2;
        let mut pbx_sdp = PbxSdp::new(session_id, session_id);
        let pbx_offer = pbx_sdp.offer(&pbx_local);

        let mut rtp_config = RtpLegConfig::new(
            SocketAddr::new(settings.bind_ip, settings.rtp_port),
            SocketAddr::new(settings.bind_ip, settings.rtp_port.wrapping_add(1)),
            rand::random(),
            rand::random(),
            rand::random(),
            settings.wallclock,
        );
        rtp_config.rtp_timeout = settings.rtp_timeout;

        let mut session = MediaSession {
            transcode: settings.transcode,
            opus: settings.opus,
            jitter_max: settings.jitter_max,
            rtp_timeout: settings.rtp_timeout,
            webrtc_config,
            browser_offer: Some(browser_offer.to_owned()),
            webrtc: None,
            browser_answer: None,
            webrtc_timeout: None,
            local_rtcp: rtp_config.local_rtcp,
            rtp: RtpLeg::new(rtp_config, now),
            pbx_local,
            pbx_sdp,
            public_ip: settings.public_ip,
            rtp_port: settings.rtp_port,
            pbx_wish: Direction::SendRecv,
            pending: None,
            transcoder: None,
            // 8000 Hz and 20 ms are valid by construction.
            dtmf_to_pbx: DtmfSender::new(SAMPLE_RATE, FRAME)?,
            dtmf_to_browser: None,
            dtmf_from_pbx: DtmfReceiver::new(SAMPLE_RATE)?,
            pbx_digit_sounding: false,
            browser_timeline: OutTimeline::new(rand::random()),
            next_tick: None,
            tick_grid: settings.tick_grid,
            codec_clock: settings.codec_clock,
            rtp_out: RtpQueue::new(),
            webrtc_out: VecDeque::with_capacity(16),
            lent: Vec::new(),
            events: VecDeque::with_capacity(4),
            answered_at: None,
            browser_last_rx: None,
            expecting_since: None,
            timed_out: false,
            closed: false,
            last_now: now,
            codec_work: TimeoutWork::default(),
        };
        if !passthrough_possible {
            // The browser's codec does not depend on the PBX: answer now, which checks the offer fully.
            session.build_webrtc_leg(now, CodecPrefs::default())?;
        }
        Ok((session, pbx_offer))
    }

    /// Applies the PBX's answer (a 183 with `early`, or the 200) and returns the WebRTC answer for the
    /// browser. A later answer with a different SDP updates the RTP leg; the browser answer stays.
    pub fn apply_pbx_answer(&mut self, now: Instant, sdp: &str, early: bool) -> Result<String, MediaError> {
        self.ensure_open()?;
        self.advance(now);
        let media = self.pbx_local.accept_answer(PbxSdp::parse(sdp)?)?;
        if media.is_rejected() {
            return Err(MediaError::PbxRejectedAudio);
        }
        let codec = media.codec.codec;
        self.rtp.set_remote(now, media);
        self.rtp.set_direction(now, self.pbx_local.direction());
        if self.webrtc.is_none() {
            let prefs = CodecPrefs {
                passthrough: Some(g711_of(codec)),
            };
            self.build_webrtc_leg(now, prefs)?;
        }
        if !early && self.answered_at.is_none() {
            self.answered_at = Some(now);
        }
        self.refresh_pipeline()?;
        self.after_input(now);
        self.browser_answer.clone().ok_or(MediaError::NotAnswered)
    }

    /// Takes a re-offer (re-INVITE or UPDATE) from `from`: forwards a change of direction (hold,
    /// unhold) to the other leg, answers anything else itself.
    pub fn reoffer(&mut self, now: Instant, from: Leg, sdp: &str) -> Result<Reoffer, MediaError> {
        self.ensure_open()?;
        self.advance(now);
        if self.answered_at.is_none() && self.rtp.codec().is_none() {
            return Err(MediaError::NotAnswered);
        }
        self.pending = None;
        let result = match from {
            Leg::Browser => self.browser_reoffer(now, sdp),
            Leg::Pbx => self.pbx_reoffer(now, sdp),
        };
        self.after_input(now);
        result
    }

    /// Takes the other leg's answer to a re-offer [`MediaSession::reoffer`] forwarded, and returns the
    /// answer for the leg that made the re-offer. `from` is the leg that answered.
    pub fn reanswer(&mut self, now: Instant, from: Leg, sdp: &str) -> Result<String, MediaError> {
        self.ensure_open()?;
        self.advance(now);
        let result = match (from, self.pending.take()) {
            (Leg::Pbx, Some(PendingReoffer::FromBrowser { browser_answer })) => {
                let media = self.pbx_local.accept_answer(PbxSdp::parse(sdp)?)?;
                self.rtp.set_remote(now, media);
                self.rtp.set_direction(now, self.pbx_local.direction());
                self.refresh_pipeline()?;
                Ok(browser_answer)
            }
            (Leg::Browser, Some(PendingReoffer::FromPbx { pbx_answer })) => {
                let leg = self.webrtc.as_mut().ok_or(MediaError::NotAnswered)?;
                leg.accept_answer(now, sdp)?;
                self.apply_pbx_offer(now, &pbx_answer)?;
                Ok(pbx_answer.sdp)
            }
            (_, pending) => {
                self.pending = pending;
                Err(MediaError::NoPendingReoffer)
            }
        };
        self.after_input(now);
        result
    }

    /// Our current offer toward the PBX, for a session-timer refresh: the same SDP (and version) as
    /// last time when nothing changed. Once answered it lists only the codec in use.
    pub fn pbx_refresh_sdp(&mut self) -> String {
        let offer = self.current_pbx_offer();
        self.pbx_sdp.offer(&offer)
    }

    /// Sends a digit from the browser's SIP INFO toward the PBX as RFC 4733 events.
    pub fn send_dtmf(&mut self, now: Instant, digit: char, duration_ms: u32) -> Result<(), MediaError> {
        self.ensure_open()?;
        self.advance(now);
        let digit = DtmfDigit::from_char(digit).ok_or_else(|| DtmfError::InvalidDigit(digit.to_string()))?;
        self.dtmf_to_pbx
            .queue(digit, Duration::from_millis(u64::from(duration_ms)))?;
        self.after_input(now);
        Ok(())
    }

    /// A datagram from `source` arrived on the worker's WebRTC socket, bound to `destination`, and the
    /// demultiplexer routed it to this call.
    pub fn handle_webrtc_receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        datagram: &[u8],
    ) {
        self.advance(now);
        if let Some(leg) = self.webrtc.as_mut() {
            leg.handle_receive(now, source, destination, datagram);
        }
        self.after_input(now);
    }

    /// A datagram from `source` arrived on this call's RTP or RTCP socket, bound to `local`.
    pub fn handle_rtp_receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        local: SocketAddr,
        datagram: &[u8],
    ) {
        self.advance(now);
        match self.rtp.handle_receive(now, source, local, datagram) {
            Ok(Received::Audio { codec, rtp }) => {
                let header = PacketHeader {
                    ssrc: rtp.ssrc,
                    sequence: rtp.sequence_number,
                    timestamp: rtp.timestamp,
                    marker: rtp.marker,
                };
                self.pbx_audio(now, codec, header, rtp.payload);
            }
            Ok(Received::Event { rtp, .. }) => {
                if let Err(error) = self.dtmf_from_pbx.handle_packet(now, rtp.timestamp, rtp.payload) {
                    tracing::debug!(%error, "telephone-event from the PBX dropped");
                }
                self.drain_pbx_dtmf();
            }
            Ok(Received::ComfortNoise(_) | Received::Rtcp) => {}
            Err(error) => tracing::trace!(%error, %source, "datagram from the PBX side dropped"),
        }
        self.after_input(now);
    }

    /// Time passed: call when [`MediaSession::poll_timeout`] says (earlier is harmless). Returns the
    /// codec work it did, for the driver's metrics.
    pub fn handle_timeout(&mut self, now: Instant) -> TimeoutWork {
        self.advance(now);
        self.codec_work = TimeoutWork::default();
        if let Some(leg) = self.webrtc.as_mut()
            && self.webrtc_timeout.is_none_or(|at| at <= now)
        {
            leg.handle_timeout(now);
        }
        if let Some(transmit) = self.rtp.handle_timeout(now, self.rtp_out.slot()) {
            self.rtp_out.commit(transmit, self.local_rtcp);
        }
        self.dtmf_from_pbx.handle_timeout(now);
        self.drain_pbx_dtmf();
        self.run_pipeline(now);
        self.check_media_timeout(now);
        self.after_input(now);
        self.codec_work
    }

    /// When [`MediaSession::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Instant {
        if self.closed {
            return self.last_now + NOTHING_SCHEDULED;
        }
        // A jitter poll only fills the sample FIFO that the next tick reads, so while a tick is
        // scheduled the polls due before it run at the tick (in time order, with their own instants):
        // the frames are the same and the session wakes once per frame instead of up to three times.
        let transcoder_polls = self
            .transcoder
            .as_ref()
            .filter(|_| self.next_tick.is_none())
            .map(|t| [t.from_browser.next_poll(), t.from_pbx.next_poll()])
            .unwrap_or_default();
        // The RTP leg keeps a passed media-timeout deadline due; once handled (or while it does not
        // count yet, during early media) look again later instead of spinning.
        let rtp = self.rtp.poll_timeout().map(|at| {
            if at <= self.last_now && self.rtp.media_timed_out(self.last_now) {
                self.last_now + TIMEOUT_RECHECK
            } else {
                at
            }
        });
        [
            self.webrtc_timeout,
            rtp,
            self.next_tick,
            self.dtmf_from_pbx.next_timeout(),
            self.browser_deadline().filter(|_| !self.timed_out),
        ]
        .into_iter()
        .chain(transcoder_polls)
        .flatten()
        .min()
        .unwrap_or(self.last_now + NOTHING_SCHEDULED)
    }

    /// The next datagram or event; drain until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output<'_>> {
        if let Some(event) = self.events.pop_front() {
            return Some(Output::Event(event));
        }
        if let Some(index) = self.rtp_out.pop() {
            let meta = self.rtp_out.meta[index];
            return Some(Output::Transmit(Transmit {
                socket: meta.socket,
                to: meta.to,
                from: meta.from,
                bytes: &self.rtp_out.buffers[index][..meta.len],
            }));
        }
        let transmit = self.webrtc_out.pop_front()?;
        self.lent = transmit.bytes;
        Some(Output::Transmit(Transmit {
            socket: SocketKind::Webrtc,
            to: transmit.to,
            from: transmit.from,
            bytes: &self.lent,
        }))
    }

    /// Ends the call's media: RTCP BYE toward the PBX, RTCP BYE and DTLS close_notify toward the
    /// browser. Drain [`MediaSession::poll_output`] to send them; nothing is sent after.
    pub fn close(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.advance(now);
        if let Some(leg) = self.webrtc.as_mut() {
            leg.close(now);
        }
        if let Some(transmit) = self.rtp.close(now, self.rtp_out.slot()) {
            self.rtp_out.commit(transmit, self.local_rtcp);
        }
        self.drain_webrtc();
        self.closed = true;
        self.next_tick = None;
    }

    /// Whether [`MediaSession::close`] ran.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The local ICE ufrag of the WebRTC leg, once it exists: the worker registers it with its
    /// demultiplexer (again after a re-offer: an ICE restart renews it).
    pub fn webrtc_ufrag(&self) -> Option<&str> {
        self.webrtc.as_ref().map(WebrtcLeg::local_ufrag)
    }

    /// Whether the WebRTC leg is connected (ICE and DTLS up).
    pub fn is_connected(&self) -> bool {
        self.webrtc.as_ref().is_some_and(WebrtcLeg::is_connected)
    }

    /// Whether audio is decoded and re-encoded (false: passthrough, or not answered yet).
    pub fn is_transcoding(&self) -> bool {
        self.transcoder.is_some()
    }

    /// The codec toward the browser, once answered.
    pub fn browser_codec(&self) -> Option<AudioCodec> {
        self.webrtc.as_ref().map(|leg| leg.audio().codec)
    }

    /// The codec toward the PBX, once answered.
    pub fn pbx_codec(&self) -> Option<Codec> {
        self.rtp.codec()
    }

    /// The figures for the call record.
    pub fn stats(&self) -> CallMediaStats {
        let browser = self.webrtc.as_ref().map_or_else(LegMediaStats::default, |leg| {
            browser_stats(&leg.stats(), leg.audio().codec)
        });
        CallMediaStats {
            browser,
            pbx: pbx_stats(&self.rtp.stats(), self.rtp.codec()),
            transcoded: self.transcoder.is_some(),
        }
    }

    fn browser_reoffer(&mut self, now: Instant, sdp: &str) -> Result<Reoffer, MediaError> {
        let leg = self.webrtc.as_mut().ok_or(MediaError::NotAnswered)?;
        let answer = leg.accept_reoffer(now, sdp)?;
        let ours = leg.direction();
        // What the browser sends we send on; what we send it, we want from the PBX.
        let toward_pbx = Direction::from_flags(ours.is_receiving(), ours.is_sending());
        self.drain_webrtc();
        if toward_pbx == self.pbx_local.direction() {
            return Ok(Reoffer::Answer(answer));
        }
        self.pbx_local = self.pbx_local.clone().with_direction(toward_pbx);
        let offer = self.current_pbx_offer();
        let sdp = self.pbx_sdp.offer(&offer);
        self.pending = Some(PendingReoffer::FromBrowser {
            browser_answer: answer,
        });
        Ok(Reoffer::Forward(sdp))
    }

    fn pbx_reoffer(&mut self, now: Instant, sdp: &str) -> Result<Reoffer, MediaError> {
        let media = PbxSdp::parse(sdp)?;
        let answer = self.pbx_sdp.answer(&self.pbx_local, &media, self.rtp.codec())?;
        let wish = media.direction;
        if wish != self.pbx_wish
            && let Some(leg) = self.webrtc.as_mut()
        {
            // The browser gets what the PBX sends, and is asked for what the PBX wants.
            let toward_browser = webrtc_direction(wish.sends(), wish.receives());
            match leg.create_offer(now, toward_browser) {
                Ok(offer) => {
                    self.drain_webrtc();
                    self.pending = Some(PendingReoffer::FromPbx { pbx_answer: answer });
                    return Ok(Reoffer::Forward(offer));
                }
                Err(WebrtcLegError::NothingToOffer) => {}
                Err(error) => return Err(error.into()),
            }
        }
        self.apply_pbx_offer(now, &answer)?;
        Ok(Reoffer::Answer(answer.sdp))
    }

    /// Applies our answer to a PBX offer to the RTP leg.
    fn apply_pbx_offer(&mut self, now: Instant, answer: &PbxAnswer) -> Result<(), MediaError> {
        self.pbx_wish = answer.remote.direction;
        self.rtp.set_remote(now, answer.remote.clone());
        self.rtp.set_direction(now, answer.direction);
        self.refresh_pipeline()
    }

    /// Our offer toward the PBX: every trunk codec until answered, then only the one in use.
    fn current_pbx_offer(&self) -> PbxOffer {
        match self.rtp.codec() {
            Some(codec) => PbxOffer::new(
                self.public_ip,
                self.rtp_port,
                self.rtp_port.wrapping_add(1),
                &[codec],
            )
            .map(|offer| offer.with_direction(self.pbx_local.direction()))
            .unwrap_or_else(|_| self.pbx_local.clone()),
            None => self.pbx_local.clone(),
        }
    }

    fn build_webrtc_leg(&mut self, now: Instant, prefs: CodecPrefs) -> Result<(), MediaError> {
        let offer = self.browser_offer.take().ok_or(MediaError::NotAnswered)?;
        let (leg, answer) = match WebrtcLeg::accept_offer(now, &offer, prefs, &self.webrtc_config) {
            Ok(built) => built,
            Err(error) => {
                self.browser_offer = Some(offer);
                return Err(error.into());
            }
        };
        let audio = leg.audio();
        self.dtmf_to_browser = match audio.dtmf {
            Some(format) => Some((DtmfSender::new(format.clock_rate, FRAME)?, format.clock_rate)),
            None => None,
        };
        self.browser_timeline.clock_rate = audio.codec.clock_rate();
        self.webrtc = Some(leg);
        self.browser_answer = Some(answer);
        self.drain_webrtc();
        Ok(())
    }

    /// Passthrough when both legs use the same G.711 law and the policy allows it, else transcoding.
    fn refresh_pipeline(&mut self) -> Result<(), MediaError> {
        let (Some(leg), Some(pbx_codec)) = (self.webrtc.as_ref(), self.rtp.codec()) else {
            return Ok(());
        };
        let browser_codec = leg.audio().codec;
        let passthrough = self.transcode == TranscodeMode::WhenNeeded
            && browser_codec == AudioCodec::from(g711_of(pbx_codec));
        if passthrough {
            self.transcoder = None;
            return Ok(());
        }
        match self.transcoder.as_mut() {
            Some(transcoder) => transcoder.from_pbx.set_law(law_of(pbx_codec)),
            None => {
                // Each inbound side adopts the packet time of the first packet it receives.
                let transcoder = Transcoder::new(browser_codec, pbx_codec, &self.opus, self.jitter_max)?;
                self.transcoder = Some(Box::new(transcoder));
            }
        }
        Ok(())
    }

    /// Audio from the PBX: relayed (passthrough) or buffered for decoding.
    fn pbx_audio(&mut self, now: Instant, codec: Codec, header: PacketHeader, payload: &[u8]) {
        if let Some(transcoder) = self.transcoder.as_mut() {
            transcoder.from_pbx.set_law(law_of(codec));
            transcoder.from_pbx.push(now, header, payload);
            return;
        }
        let Some(leg) = self.webrtc.as_mut() else {
            return;
        };
        let replaced = self.pbx_digit_sounding
            || self
                .dtmf_to_browser
                .as_ref()
                .is_some_and(|(sender, _)| sender.is_sending());
        if replaced || !leg.is_connected() || !leg.direction().is_sending() {
            return;
        }
        let samples = payload.len() as u32;
        let (timestamp, _) = self.browser_timeline.peek(now);
        let pt = leg.audio().pt;
        match leg.write_audio(now, pt, timestamp, payload) {
            Ok(()) => self.browser_timeline.commit(now, timestamp, samples),
            Err(error) => tracing::trace!(%error, "passthrough packet toward the browser dropped"),
        }
    }

    /// Everything the WebRTC leg produced since the last drain.
    fn drain_webrtc(&mut self) {
        loop {
            let Some(leg) = self.webrtc.as_mut() else {
                return;
            };
            match leg.poll_output() {
                webrtc_leg::Output::Transmit(transmit) => self.webrtc_out.push_back(transmit),
                webrtc_leg::Output::Event(event) => self.webrtc_event(event),
                webrtc_leg::Output::Timeout(at) => {
                    self.webrtc_timeout = Some(at);
                    return;
                }
            }
        }
    }

    fn webrtc_event(&mut self, event: webrtc_leg::Event) {
        let now = self.last_now;
        match event {
            webrtc_leg::Event::Connected => self.events.push_back(MediaEvent::Connected),
            webrtc_leg::Event::Audio {
                rtp_time,
                seq,
                ssrc,
                marker,
                payload,
                ..
            } => {
                self.browser_last_rx = Some(now);
                let header = PacketHeader {
                    ssrc,
                    // The jitter buffer extends 16-bit sequence numbers itself.
                    sequence: seq as u16,
                    timestamp: rtp_time,
                    marker,
                };
                self.browser_audio(now, header, &payload[..]);
            }
            webrtc_leg::Event::Dtmf(dtmf) => {
                self.browser_last_rx = Some(now);
                let Some(digit) = DtmfDigit::from_event(dtmf.event) else {
                    return;
                };
                let micros = u64::from(dtmf.duration) * 1_000_000 / u64::from(dtmf.clock_rate.max(1));
                if let Err(error) = self.dtmf_to_pbx.queue(digit, Duration::from_micros(micros)) {
                    tracing::debug!(%error, "digit from the browser dropped");
                }
            }
            webrtc_leg::Event::DirectionChanged(_) => {}
            webrtc_leg::Event::LossReport { expected, lost } => {
                if let Some(transcoder) = self.transcoder.as_mut() {
                    transcoder.loss_reported(now, expected, lost);
                }
            }
            webrtc_leg::Event::ConsentLost => self.events.push_back(MediaEvent::ConsentLost),
            webrtc_leg::Event::Disconnected(reason) => {
                tracing::debug!(?reason, "WebRTC leg disconnected");
                self.events.push_back(MediaEvent::Disconnected);
            }
        }
    }

    /// Audio from the browser: relayed (passthrough) or buffered for decoding.
    fn browser_audio(&mut self, now: Instant, header: PacketHeader, payload: &[u8]) {
        if let Some(transcoder) = self.transcoder.as_mut() {
            transcoder.from_browser.push(now, header, payload);
            return;
        }
        if self.dtmf_to_pbx.is_sending() {
            return;
        }
        let samples = payload.len() as u32;
        if let Some(transmit) =
            self.rtp
                .write_audio(now, payload, samples, header.marker, self.rtp_out.slot())
        {
            self.rtp_out.commit(transmit, self.local_rtcp);
        }
    }

    fn drain_pbx_dtmf(&mut self) {
        while let Some(received) = self.dtmf_from_pbx.poll_output() {
            match received {
                DtmfReceived::Began { .. } => self.pbx_digit_sounding = true,
                DtmfReceived::Ended { digit, duration, .. } => {
                    self.pbx_digit_sounding = false;
                    match self.dtmf_to_browser.as_mut() {
                        Some((sender, _)) => {
                            if let Err(error) = sender.queue(digit, duration) {
                                tracing::debug!(%error, "digit toward the browser dropped");
                            }
                        }
                        None => tracing::debug!(%digit, "the browser negotiated no telephone-event"),
                    }
                }
            }
        }
    }

    /// Runs the jitter polls and 20 ms ticks that are due, in time order (a poll before a tick at the
    /// same instant, so that the frame it decodes is there for the tick).
    fn run_pipeline(&mut self, now: Instant) {
        for _ in 0..MAX_STEPS {
            let polls = self
                .transcoder
                .as_ref()
                .map(|t| (t.from_browser.next_poll(), t.from_pbx.next_poll()))
                .unwrap_or_default();
            let due = [(polls.0, 0u8), (polls.1, 1), (self.next_tick, 2)]
                .into_iter()
                .filter_map(|(at, which)| at.filter(|at| *at <= now).map(|at| (at, which)))
                .min();
            let Some((at, which)) = due else {
                return;
            };
            // Far behind (a stalled worker): resume from now rather than replaying every frame.
            let at = if now.duration_since(at) > MAX_LAG {
                self.grid_floor(now)
            } else {
                at
            };
            match which {
                0 | 1 => {
                    if let Some(transcoder) = self.transcoder.as_mut() {
                        let inbound = if which == 0 {
                            &mut transcoder.from_browser
                        } else {
                            &mut transcoder.from_pbx
                        };
                        let started = self.codec_clock.map(|clock| clock());
                        if inbound.poll(at) {
                            self.codec_work.add(started, self.codec_clock);
                        }
                    }
                }
                _ => {
                    self.tick(at);
                    self.next_tick = self.needs_tick().then_some(at + FRAME);
                }
            }
        }
    }

    fn needs_tick(&self) -> bool {
        !self.closed
            && (self.transcoder.is_some()
                || self.dtmf_to_pbx.is_busy()
                || self
                    .dtmf_to_browser
                    .as_ref()
                    .is_some_and(|(sender, _)| sender.is_busy()))
    }

    /// One 20 ms frame each way: DTMF events in place of audio while a digit plays, else the next
    /// frame of the other side's audio, encoded.
    fn tick(&mut self, at: Instant) {
        self.tick_toward_pbx(at);
        self.tick_toward_browser(at);
    }

    fn tick_toward_pbx(&mut self, at: Instant) {
        let mut audio = match self.transcoder.as_mut() {
            Some(transcoder) => transcoder.from_browser.take_frame(&mut transcoder.pcm),
            None => false,
        };
        if self.dtmf_to_pbx.is_busy()
            && let Some(packet) = self.dtmf_to_pbx.poll_packet(0)
        {
            audio = false;
            let event = TelephoneEvent {
                event: packet.event.event,
                end: packet.event.end,
                volume: packet.event.volume,
                duration: packet.event.duration,
            };
            if let Some(transmit) = self
                .rtp
                .write_event(at, event, packet.marker, self.rtp_out.slot())
            {
                self.rtp_out.commit(transmit, self.local_rtcp);
            }
        }
        let (Some(transcoder), Some(codec)) = (self.transcoder.as_mut(), self.rtp.codec()) else {
            return;
        };
        if !audio || !self.rtp.is_sending() {
            return;
        }
        let started = self.codec_clock.map(|clock| clock());
        law_of(codec).encode(&transcoder.pcm, &mut transcoder.g711);
        self.codec_work.add(started, self.codec_clock);
        if let Some(transmit) = self.rtp.write_audio(
            at,
            &transcoder.g711,
            FRAME_SAMPLES as u32,
            false,
            self.rtp_out.slot(),
        ) {
            self.rtp_out.commit(transmit, self.local_rtcp);
        }
    }

    fn tick_toward_browser(&mut self, at: Instant) {
        let Some(leg) = self.webrtc.as_mut() else {
            return;
        };
        let mut audio = match self.transcoder.as_mut() {
            Some(transcoder) => transcoder.from_pbx.take_frame(&mut transcoder.pcm),
            None => false,
        };
        if self.pbx_digit_sounding {
            audio = false;
        }
        let clock_rate = self.browser_timeline.clock_rate;
        let frame_ticks = clock_rate / 50;
        let (timestamp, _) = self.browser_timeline.peek(at);
        if let Some((sender, event_rate)) = self.dtmf_to_browser.as_mut()
            && sender.is_busy()
        {
            let event_timestamp = rescale_timestamp(timestamp, clock_rate, *event_rate);
            if let Some(packet) = sender.poll_packet(event_timestamp) {
                audio = false;
                let report = DtmfReport {
                    event: packet.event.event,
                    end: packet.event.end,
                    volume: packet.event.volume,
                    duration: packet.event.duration,
                };
                match leg.write_dtmf(at, packet.timestamp, report, packet.marker) {
                    Ok(()) => self.browser_timeline.commit(at, timestamp, frame_ticks),
                    Err(error) => tracing::trace!(%error, "event toward the browser dropped"),
                }
            }
        }
        let Some(transcoder) = self.transcoder.as_mut() else {
            return;
        };
        if !audio || !leg.is_connected() || !leg.direction().is_sending() {
            return;
        }
        let started = self.codec_clock.map(|clock| clock());
        let encoded = match &mut transcoder.to_browser {
            Encoder::Opus(encoder) => match encoder.encode(&transcoder.pcm, &mut transcoder.encoded) {
                Ok(len) => len,
                Err(error) => {
                    tracing::debug!(%error, "Opus encode failed");
                    return;
                }
            },
            Encoder::G711(law) => law.encode(&transcoder.pcm, &mut transcoder.encoded),
        };
        self.codec_work.add(started, self.codec_clock);
        let pt = leg.audio().pt;
        match leg.write_audio(at, pt, timestamp, &transcoder.encoded[..encoded]) {
            Ok(()) => self.browser_timeline.commit(at, timestamp, frame_ticks),
            Err(error) => tracing::trace!(%error, "frame toward the browser dropped"),
        }
    }

    fn check_media_timeout(&mut self, now: Instant) {
        let Some(answered_at) = self.answered_at else {
            return;
        };
        if self.timed_out || self.closed {
            return;
        }
        // The RTP leg counts from the 183 when there was one; a long early-media ring must not count.
        let pbx_silent = self.rtp.media_timed_out(now)
            && answered_at
                .checked_add(self.rtp_timeout)
                .is_some_and(|deadline| now >= deadline);
        let browser_silent = self.browser_deadline().is_some_and(|deadline| now >= deadline);
        if pbx_silent || browser_silent {
            tracing::info!(pbx_silent, browser_silent, "media timeout");
            self.timed_out = true;
            self.events.push_back(MediaEvent::Timeout);
        }
    }

    /// When the browser's silence becomes a media timeout, while it is expected to send.
    fn browser_deadline(&self) -> Option<Instant> {
        let since = self.expecting_since?;
        let last = self.browser_last_rx.map_or(since, |last| last.max(since));
        last.checked_add(self.rtp_timeout)
    }

    /// Whether both sides should be sending now: answered and nobody holding.
    fn media_expected(&self) -> bool {
        self.answered_at.is_some()
            && !self.closed
            && self.rtp.expects_media()
            && self
                .webrtc
                .as_ref()
                .is_some_and(|leg| leg.direction() == WebrtcDirection::SendRecv)
    }

    /// Bookkeeping after every input: drain the WebRTC leg, restart the silence clock when media
    /// becomes expected, schedule the tick.
    fn after_input(&mut self, now: Instant) {
        self.drain_webrtc();
        match (self.media_expected(), self.expecting_since) {
            (true, None) => self.expecting_since = Some(now),
            (false, Some(_)) => self.expecting_since = None,
            _ => {}
        }
        if self.next_tick.is_none() && self.needs_tick() {
            self.next_tick = Some(self.grid_ceil(now));
        }
    }

    /// The first instant of the tick grid at or after `now` (`now` itself without a grid).
    fn grid_ceil(&self, now: Instant) -> Instant {
        match self.tick_grid {
            Some(origin) => grid_ceil(origin, now),
            None => now,
        }
    }

    /// The last instant of the tick grid at or before `now` (`now` itself without a grid).
    fn grid_floor(&self, now: Instant) -> Instant {
        let ceil = self.grid_ceil(now);
        if ceil > now { ceil - FRAME } else { ceil }
    }

    fn ensure_open(&self) -> Result<(), MediaError> {
        if self.closed {
            Err(MediaError::Closed)
        } else {
            Ok(())
        }
    }

    fn advance(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
    }
}

/// The transcoding half of a session: built when the legs do not share a codec (or always).
struct Transcoder {
    from_browser: Inbound,
    from_pbx: Inbound,
    to_browser: Encoder,
    /// What the Opus encoder toward the browser is told to expect, from the browser's reports.
    expected_loss: ExpectedLoss,
    pcm: [i16; FRAME_SAMPLES],
    g711: [u8; FRAME_SAMPLES],
    encoded: [u8; MAX_PACKET_BYTES],
}

impl Transcoder {
    fn new(
        browser_codec: AudioCodec,
        pbx_codec: Codec,
        opus: &OpusEncoderConfig,
        jitter_max: Duration,
    ) -> Result<Self, MediaError> {
        let (decoder, to_browser) = match browser_codec {
            AudioCodec::Opus => (
                Decoder::Opus(OpusDecoder8k::new()?),
                Encoder::Opus(OpusEncoder8k::new(opus)?),
            ),
            AudioCodec::Pcmu => (Decoder::G711(Law::Ulaw), Encoder::G711(Law::Ulaw)),
            AudioCodec::Pcma => (Decoder::G711(Law::Alaw), Encoder::G711(Law::Alaw)),
        };
        Ok(Transcoder {
            from_browser: Inbound::new(decoder, browser_codec.clock_rate(), FRAME_SAMPLES, jitter_max)?,
            from_pbx: Inbound::new(
                Decoder::G711(law_of(pbx_codec)),
                SAMPLE_RATE,
                FRAME_SAMPLES,
                jitter_max,
            )?,
            to_browser,
            expected_loss: ExpectedLoss::new(opus.expected_loss_percent),
            pcm: [0; FRAME_SAMPLES],
            g711: [0; FRAME_SAMPLES],
            encoded: [0; MAX_PACKET_BYTES],
        })
    }

    /// The browser reported on our audio: the Opus encoder expects that loss from now on (more FEC
    /// on a lossy path, none on a clean one).
    fn loss_reported(&mut self, now: Instant, expected: u64, lost: u64) {
        let Encoder::Opus(encoder) = &mut self.to_browser else {
            return;
        };
        if let Some(percent) = self.expected_loss.handle_report(now, expected, lost) {
            tracing::debug!(percent, expected, lost, "expected loss toward the browser");
            if let Err(error) = encoder.set_expected_loss(percent) {
                tracing::debug!(%error, "Opus expected loss not set");
            }
        }
    }
}

enum Decoder {
    Opus(OpusDecoder8k),
    G711(Law),
}

enum Encoder {
    Opus(OpusEncoder8k),
    G711(Law),
}

/// One inbound side of the transcoding pipeline: jitter buffer, decoder to 8 kHz with concealment, and
/// a FIFO that turns packets of any whole 2.5 ms into 20 ms frames.
struct Inbound {
    jitter: JitterBuffer,
    jitter_config: JitterConfig,
    decoder: Decoder,
    concealer: G711Concealer,
    fifo: SampleFifo,
    /// Samples (8 kHz) per packet: the jitter buffer's frame.
    packet_samples: usize,
    /// The last packet had another size; a second one in a row reconfigures.
    size_changed: bool,
    primed: bool,
    concealed_run: u32,
    quiet_samples: usize,
    decoded: [i16; MAX_PACKET_SAMPLES],
}

impl Inbound {
    fn new(
        decoder: Decoder,
        clock_rate: u32,
        packet_samples: usize,
        max_delay: Duration,
    ) -> Result<Self, MediaError> {
        let mut jitter_config = JitterConfig::new(clock_rate);
        jitter_config.max_delay = max_delay;
        jitter_config.initial_delay = jitter_config.initial_delay.min(max_delay);
        jitter_config.min_delay = jitter_config.min_delay.min(max_delay);
        jitter_config.frame_duration = samples_duration(packet_samples);
        jitter_config.max_payload = payload_limit(&decoder, packet_samples);
        Ok(Inbound {
            jitter: JitterBuffer::new(jitter_config)?,
            jitter_config,
            decoder,
            concealer: G711Concealer::new(),
            fifo: SampleFifo::new(),
            packet_samples,
            size_changed: false,
            primed: false,
            concealed_run: 0,
            quiet_samples: IDLE_SAMPLES,
            decoded: [0; MAX_PACKET_SAMPLES],
        })
    }

    fn set_law(&mut self, law: Law) {
        if let Decoder::G711(current) = &mut self.decoder {
            *current = law;
        }
    }

    fn push(&mut self, now: Instant, header: PacketHeader, payload: &[u8]) {
        let samples = match &self.decoder {
            Decoder::Opus(_) => OpusDecoder8k::packet_samples(payload).ok(),
            Decoder::G711(_) => Some(payload.len()),
        };
        let Some(samples) = samples.filter(|s| *s > 0 && *s <= MAX_PACKET_SAMPLES && s % 20 == 0) else {
            return;
        };
        if samples != self.packet_samples {
            let started = self.jitter.stats().received > 0;
            if !started || self.size_changed {
                self.reconfigure(samples);
            } else {
                self.size_changed = true;
            }
        } else {
            self.size_changed = false;
        }
        self.jitter.push(now, header, payload);
    }

    /// A new packet time: a new jitter buffer with that frame (rare: at the first packet, or when the
    /// sender changes its ptime).
    fn reconfigure(&mut self, samples: usize) {
        let mut config = self.jitter_config;
        config.frame_duration = samples_duration(samples);
        config.max_payload = payload_limit(&self.decoder, samples);
        match JitterBuffer::new(config) {
            Ok(jitter) => {
                self.jitter = jitter;
                self.jitter_config = config;
                self.packet_samples = samples;
                self.size_changed = false;
                self.primed = false;
            }
            Err(error) => tracing::debug!(%error, samples, "packet time not supported"),
        }
    }

    fn next_poll(&self) -> Option<Instant> {
        self.jitter.next_poll()
    }

    /// Plays the jitter buffer's frame due at `at` into the FIFO; returns whether a codec ran.
    fn poll(&mut self, at: Instant) -> bool {
        let samples = self.packet_samples;
        let (audio, codec_ran) = match self.jitter.poll(at) {
            JitterOutput::Frame(frame) => {
                // The whole buffer: a packet of another size than expected still decodes.
                let decoded = match &mut self.decoder {
                    Decoder::Opus(decoder) => decoder.decode(frame.payload, &mut self.decoded).ok(),
                    Decoder::G711(law) => {
                        let len = law.decode(frame.payload, &mut self.decoded);
                        self.concealer.received(&mut self.decoded[..len]);
                        Some(len)
                    }
                };
                if let Some(len) = decoded {
                    self.concealed_run = 0;
                    self.quiet_samples = 0;
                    self.fifo.push(&self.decoded[..len]);
                    return true;
                }
                conceal(
                    &mut self.decoder,
                    &mut self.concealer,
                    None,
                    &mut self.decoded[..samples],
                    &mut self.concealed_run,
                )
            }
            JitterOutput::Lost { next, .. } => conceal(
                &mut self.decoder,
                &mut self.concealer,
                next.map(|frame| frame.payload),
                &mut self.decoded[..samples],
                &mut self.concealed_run,
            ),
            JitterOutput::Empty(EmptyReason::Stretch | EmptyReason::Underrun) => conceal(
                &mut self.decoder,
                &mut self.concealer,
                None,
                &mut self.decoded[..samples],
                &mut self.concealed_run,
            ),
            // Playout has not begun: nothing enters the FIFO, so it primes on real audio.
            JitterOutput::Empty(EmptyReason::Buffering) => return false,
            JitterOutput::Empty(EmptyReason::Silence) => {
                let out = &mut self.decoded[..samples];
                out.fill(0);
                if matches!(self.decoder, Decoder::G711(_)) {
                    self.concealer.received(out);
                }
                (false, false)
            }
        };
        if audio {
            self.quiet_samples = 0;
        } else {
            self.quiet_samples = self.quiet_samples.saturating_add(samples);
        }
        self.fifo.push(&self.decoded[..samples]);
        codec_ran
    }

    /// The next 20 ms for the tick; false when there is nothing worth sending (not primed, or quiet).
    fn take_frame(&mut self, pcm: &mut [i16; FRAME_SAMPLES]) -> bool {
        if !self.primed {
            let threshold = if self.packet_samples.is_multiple_of(FRAME_SAMPLES) {
                self.packet_samples
            } else {
                self.packet_samples + FRAME_SAMPLES
            };
            if self.fifo.len() < threshold {
                return false;
            }
            self.primed = true;
        }
        if self.fifo.len() < FRAME_SAMPLES {
            // The polls fell behind the ticks: start over from a fresh margin.
            self.fifo.clear();
            self.primed = false;
            return false;
        }
        self.fifo.pop(pcm);
        self.quiet_samples < IDLE_SAMPLES
    }
}

/// The largest payload a jitter slot keeps for packets of `samples` (8 kHz): G.711's exact size, or
/// [`OPUS_BYTES_PER_SAMPLE`] for Opus. A larger packet is dropped and concealed.
fn payload_limit(decoder: &Decoder, samples: usize) -> usize {
    let limit = match decoder {
        Decoder::G711(_) => samples,
        Decoder::Opus(_) => (samples * OPUS_BYTES_PER_SAMPLE).max(OPUS_MIN_PAYLOAD),
    };
    limit.clamp(1, MAX_PAYLOAD_LIMIT)
}

/// Fills `out` for a lost or late frame: Opus FEC from the next packet when it is here, codec PLC for a
/// few frames, then silence. Returns (whether it counts as audio, whether a codec ran).
fn conceal(
    decoder: &mut Decoder,
    concealer: &mut G711Concealer,
    next: Option<&[u8]>,
    out: &mut [i16],
    concealed_run: &mut u32,
) -> (bool, bool) {
    *concealed_run += 1;
    if *concealed_run > MAX_CONCEALED_FRAMES {
        out.fill(0);
        return (false, false);
    }
    let done = match decoder {
        Decoder::Opus(opus) => match next {
            Some(next) => opus.decode_fec(next, out),
            None => opus.conceal(out),
        }
        .is_ok(),
        Decoder::G711(_) => {
            concealer.conceal(out);
            true
        }
    };
    if !done {
        out.fill(0);
    }
    (done, matches!(decoder, Decoder::Opus(_)) && done)
}

/// A ring of 8 kHz samples between a jitter buffer's packets and the 20 ms ticks.
struct SampleFifo {
    samples: [i16; FIFO_CAPACITY],
    head: usize,
    len: usize,
}

impl SampleFifo {
    fn new() -> Self {
        SampleFifo {
            samples: [0; FIFO_CAPACITY],
            head: 0,
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `input`; when it does not fit, the oldest samples make room (a stalled consumer).
    fn push(&mut self, input: &[i16]) {
        let input = &input[input.len().saturating_sub(FIFO_CAPACITY)..];
        let overflow = (self.len + input.len()).saturating_sub(FIFO_CAPACITY);
        self.head = (self.head + overflow) % FIFO_CAPACITY;
        self.len -= overflow;
        let mut tail = (self.head + self.len) % FIFO_CAPACITY;
        for &sample in input {
            self.samples[tail] = sample;
            tail = (tail + 1) % FIFO_CAPACITY;
        }
        self.len += input.len();
    }

    /// Fills `out` from the front; the caller checked that enough samples are there.
    fn pop(&mut self, out: &mut [i16]) {
        let count = out.len().min(self.len);
        for sample in &mut out[..count] {
            *sample = self.samples[self.head];
            self.head = (self.head + 1) % FIFO_CAPACITY;
        }
        out[count..].fill(0);
        self.len -= count;
    }
}

/// The timestamps of our stream toward the browser: continuous by sample count while packets follow
/// each other, moved to the clock after a pause (hold, silence), as the RTP leg does toward the PBX.
#[derive(Debug, Clone, Copy)]
struct OutTimeline {
    clock_rate: u32,
    /// The last packet: when, its timestamp, its length in clock ticks.
    last: Option<(Instant, u32, u32)>,
    initial: u32,
}

impl OutTimeline {
    fn new(initial: u32) -> Self {
        OutTimeline {
            clock_rate: 48_000,
            last: None,
            initial,
        }
    }

    /// The timestamp a packet sent at `now` gets, and whether it follows a pause.
    fn peek(&self, now: Instant) -> (u32, bool) {
        let Some((at, timestamp, length)) = self.last else {
            return (self.initial, false);
        };
        let elapsed = now.saturating_duration_since(at);
        let length_time = Duration::from_micros(u64::from(length) * 1_000_000 / u64::from(self.clock_rate));
        if elapsed > length_time + TIMESTAMP_GAP {
            let ticks = (elapsed.as_micros() * u128::from(self.clock_rate) / 1_000_000) as u32;
            (timestamp.wrapping_add(ticks), true)
        } else {
            (timestamp.wrapping_add(length), false)
        }
    }

    fn commit(&mut self, now: Instant, timestamp: u32, ticks: u32) {
        self.last = Some((now, timestamp, ticks));
    }
}

/// Where an RTP-leg datagram goes, kept next to its bytes.
#[derive(Debug, Clone, Copy)]
struct QueuedMeta {
    socket: SocketKind,
    to: SocketAddr,
    from: SocketAddr,
    len: usize,
}

/// Preallocated buffers for what the RTP leg writes, until the driver takes it.
struct RtpQueue {
    buffers: Box<[[u8; RTP_BUFFER_LEN]; RTP_QUEUE]>,
    meta: [QueuedMeta; RTP_QUEUE],
    head: usize,
    len: usize,
}

impl RtpQueue {
    fn new() -> Self {
        let unspecified = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0);
        RtpQueue {
            buffers: Box::new([[0; RTP_BUFFER_LEN]; RTP_QUEUE]),
            meta: [QueuedMeta {
                socket: SocketKind::Rtp,
                to: unspecified,
                from: unspecified,
                len: 0,
            }; RTP_QUEUE],
            head: 0,
            len: 0,
        }
    }

    /// The buffer the next datagram is written into. When the queue is full (the driver did not
    /// drain) it is the oldest entry's, which [`RtpQueue::commit`] then drops.
    fn slot(&mut self) -> &mut [u8] {
        &mut self.buffers[(self.head + self.len) % RTP_QUEUE]
    }

    /// Keeps what the leg just wrote into [`RtpQueue::slot`]; `local_rtcp` tells RTCP from RTP.
    fn commit(&mut self, transmit: rtp_leg::Transmit, local_rtcp: SocketAddr) {
        let socket = if transmit.from == local_rtcp {
            SocketKind::Rtcp
        } else {
            SocketKind::Rtp
        };
        if self.len == RTP_QUEUE {
            // The slot written was the oldest entry's buffer: that entry is gone.
            self.head = (self.head + 1) % RTP_QUEUE;
            self.len -= 1;
        }
        let index = (self.head + self.len) % RTP_QUEUE;
        self.meta[index] = QueuedMeta {
            socket,
            to: transmit.to,
            from: transmit.from,
            len: transmit.len,
        };
        self.len += 1;
    }

    fn pop(&mut self) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let index = self.head;
        self.head = (self.head + 1) % RTP_QUEUE;
        self.len -= 1;
        Some(index)
    }
}

/// The first instant of the grid `origin + k * FRAME` (k ≥ 0) at or after `now`.
pub fn grid_ceil(origin: Instant, now: Instant) -> Instant {
    let Some(elapsed) = now.checked_duration_since(origin) else {
        return origin;
    };
    let frame = FRAME.as_nanos();
    let frames = elapsed.as_nanos().div_ceil(frame);
    u64::try_from(frames * frame)
        .ok()
        .and_then(|nanos| origin.checked_add(Duration::from_nanos(nanos)))
        .unwrap_or(now)
}

fn g711_of(codec: Codec) -> G711 {
    match codec {
        Codec::Pcmu => G711::Pcmu,
        Codec::Pcma => G711::Pcma,
    }
}

fn law_of(codec: Codec) -> Law {
    match codec {
        Codec::Pcmu => Law::Ulaw,
        Codec::Pcma => Law::Alaw,
    }
}

fn webrtc_direction(sends: bool, receives: bool) -> WebrtcDirection {
    match (sends, receives) {
        (true, true) => WebrtcDirection::SendRecv,
        (true, false) => WebrtcDirection::SendOnly,
        (false, true) => WebrtcDirection::RecvOnly,
        (false, false) => WebrtcDirection::Inactive,
    }
}

/// The duration of `samples` at 8 kHz.
fn samples_duration(samples: usize) -> Duration {
    Duration::from_micros(samples as u64 * 1_000_000 / u64::from(SAMPLE_RATE))
}

/// A timestamp of the audio clock in the telephone-event clock, when the browser negotiated them at
/// different rates (Firefox: Opus at 48000, telephone-event at 8000).
fn rescale_timestamp(timestamp: u32, from_rate: u32, to_rate: u32) -> u32 {
    if from_rate == to_rate || from_rate == 0 {
        return timestamp;
    }
    (u64::from(timestamp) * u64::from(to_rate) / u64::from(from_rate)) as u32
}

fn codec_name(codec: AudioCodec) -> &'static str {
    match codec {
        AudioCodec::Opus => "opus",
        AudioCodec::Pcmu => "pcmu",
        AudioCodec::Pcma => "pcma",
    }
}

fn browser_stats(stats: &LegStats, codec: AudioCodec) -> LegMediaStats {
    LegMediaStats {
        codec: Some(codec_name(codec)),
        packets_sent: stats.packets_sent,
        bytes_sent: stats.bytes_sent,
        packets_received: stats.packets_received,
        bytes_received: stats.bytes_received,
        packets_lost: stats.packets_lost,
        jitter_ms: stats.jitter.map(|j| j.as_secs_f64() * 1000.0),
        rtt_ms: stats.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
    }
}

fn pbx_stats(stats: &RtpLegStats, codec: Option<Codec>) -> LegMediaStats {
    LegMediaStats {
        codec: codec.map(|codec| codec_name(g711_of(codec).into())),
        packets_sent: stats.packets_sent,
        bytes_sent: stats.bytes_sent,
        packets_received: stats.packets_received,
        bytes_received: stats.bytes_received,
        packets_lost: u64::try_from(stats.packets_lost).unwrap_or(0),
        jitter_ms: (stats.packets_received > 1).then_some(stats.jitter_ms),
        rtt_ms: stats.rtt_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_ceil_rounds_up_to_the_next_frame_boundary() {
        let origin = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(grid_ceil(origin, origin), origin);
        assert_eq!(grid_ceil(origin, origin + ms(1)), origin + FRAME);
        assert_eq!(grid_ceil(origin, origin + FRAME), origin + FRAME);
        assert_eq!(
            grid_ceil(origin, origin + FRAME * 1000 + Duration::from_nanos(1)),
            origin + FRAME * 1001
        );
        assert_eq!(
            grid_ceil(origin + ms(5), origin),
            origin + ms(5),
            "before the grid starts"
        );
    }

    #[test]
    fn fifo_keeps_order_across_the_wrap_and_drops_the_oldest_when_full() {
        let mut fifo = SampleFifo::new();
        let block: Vec<i16> = (0..240).collect();
        let mut out = [0i16; FRAME_SAMPLES];
        let mut expected = 0i16;
        for _ in 0..40 {
            fifo.push(&block);
            while fifo.len() >= FRAME_SAMPLES {
                fifo.pop(&mut out);
                for &sample in &out {
                    assert_eq!(sample, expected);
                    expected = (expected + 1) % 240;
                }
            }
        }
        let mut full = SampleFifo::new();
        for _ in 0..10 {
            full.push(&block);
        }
        assert_eq!(full.len(), FIFO_CAPACITY);
        full.pop(&mut out);
        // 2400 pushed, all but the last FIFO_CAPACITY pushed out.
        assert_eq!(out[0], (2400 - FIFO_CAPACITY as i16) % 240);
    }

    #[test]
    fn jitter_slots_fit_the_stream() {
        let opus = Decoder::Opus(OpusDecoder8k::new().unwrap());
        let ulaw = Decoder::G711(Law::Ulaw);
        // G.711: one byte per sample, exactly.
        assert_eq!(payload_limit(&ulaw, FRAME_SAMPLES), 160);
        assert_eq!(payload_limit(&ulaw, 240), 240);
        // Opus: 128 kb/s, at least 64 bytes, at most what a jitter buffer accepts.
        assert_eq!(payload_limit(&opus, FRAME_SAMPLES), 320);
        assert_eq!(payload_limit(&opus, 20), 64);
        assert_eq!(payload_limit(&opus, MAX_PACKET_SAMPLES), MAX_PAYLOAD_LIMIT);
    }

    #[test]
    fn the_browser_s_loss_reports_set_the_opus_encoder_s_expected_loss() {
        let now = Instant::now();
        let config = OpusEncoderConfig::default();
        let jitter_max = Duration::from_millis(200);
        let mut transcoder = Transcoder::new(AudioCodec::Opus, Codec::Pcmu, &config, jitter_max).unwrap();
        let expected_loss = |transcoder: &mut Transcoder| match &mut transcoder.to_browser {
            Encoder::Opus(encoder) => encoder.expected_loss().unwrap(),
            Encoder::G711(_) => unreachable!("an Opus leg encodes Opus"),
        };
        assert_eq!(expected_loss(&mut transcoder), 0);
        transcoder.loss_reported(now, 250, 25);
        assert_eq!(expected_loss(&mut transcoder), 10);
        transcoder.loss_reported(now + Duration::from_secs(120), 250, 0);
        assert_eq!(expected_loss(&mut transcoder), 0);
        // G.711 toward the browser has nothing to adapt.
        let mut g711 = Transcoder::new(AudioCodec::Pcmu, Codec::Pcmu, &config, jitter_max).unwrap();
        g711.loss_reported(now, 250, 25);
        assert_eq!(g711.expected_loss.percent(), 0);
    }

    #[test]
    fn timeline_continues_by_count_and_jumps_after_a_pause() {
        let start = Instant::now();
        let mut timeline = OutTimeline::new(1000);
        assert_eq!(timeline.peek(start), (1000, false));
        timeline.commit(start, 1000, 960);
        // A late tick still continues the count.
        let late = start + Duration::from_millis(45);
        assert_eq!(timeline.peek(late), (1960, false));
        timeline.commit(late, 1960, 960);
        // After a hold of one second the timestamp follows the clock.
        let after_hold = late + Duration::from_secs(1);
        assert_eq!(timeline.peek(after_hold), (1960 + 48_000, true));
    }

    #[test]
    fn event_timestamps_follow_the_event_clock() {
        assert_eq!(rescale_timestamp(96_000, 48_000, 8000), 16_000);
        assert_eq!(rescale_timestamp(1234, 8000, 8000), 1234);
    }

    #[test]
    fn rtp_queue_hands_out_in_order_and_survives_overflow() {
        let mut queue = RtpQueue::new();
        let rtp: SocketAddr = "10.0.0.1:20000".parse().unwrap();
        let rtcp: SocketAddr = "10.0.0.1:20001".parse().unwrap();
        let to: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        for i in 0..RTP_QUEUE + 3 {
            queue.slot()[0] = i as u8;
            let from = if i % 2 == 0 { rtp } else { rtcp };
            queue.commit(rtp_leg::Transmit { to, from, len: 1 }, rtcp);
        }
        let mut seen = Vec::new();
        while let Some(index) = queue.pop() {
            let kind = queue.meta[index].socket;
            let first = queue.buffers[index][0];
            assert_eq!(kind == SocketKind::Rtcp, first % 2 == 1);
            seen.push(first);
        }
        let expected: Vec<u8> = (3..RTP_QUEUE as u8 + 3).collect();
        assert_eq!(seen, expected, "the oldest three were dropped");
    }
}
