//! The browser-facing leg of one call: str0m in ICE-lite mode with a single host candidate on the
//! worker's advertised address, rtcp-mux, BUNDLE and DTLS-SRTP (str0m does those four).
//!
//! Sans-IO like str0m itself: datagrams come in through [`WebrtcLeg::handle_receive`], time through
//! [`WebrtcLeg::handle_timeout`], and [`WebrtcLeg::poll_output`] is drained until it returns
//! [`Output::Timeout`] after every call that takes `now`.
//!
//! ## RTP mode rather than frame mode
//!
//! str0m runs in RTP mode (`RtcConfig::set_rtp_mode(true)`), for three reasons:
//! - frame mode holds audio back in a reordering buffer when a packet is missing (up to 15 packets or
//!   1 s by default) and hides the sequence number our own jitter buffer needs; RTP mode hands each
//!   packet over as it arrives, with its extended sequence number and marker bit;
//! - a received packet costs one allocation in RTP mode (the `Arc<[u8]>` payload, passed on to
//!   [`Event::Audio`] without a copy) against two or more in frame mode (depacketizer buffer, frame);
//! - telephone-event packets arrive one by one, so this leg sees every RFC 4733 report and can
//!   emit each digit exactly once.
//!
//! The price is that outgoing sequence numbers are ours: the leg keeps one counter for the life of
//! the call, so they stay continuous across hold, unhold and re-INVITEs; the SSRC is str0m's send
//! stream for the audio mid, which renegotiation keeps.
//!
//! ## Consent freshness (RFC 7675)
//!
//! In ICE-lite mode str0m sends no checks of its own; it drops a candidate pair 15 s after the last
//! binding request and reports `IceConnectionState::Disconnected`, but that state can flap back when
//! checks resume. The leg therefore keeps its own timer: every binding success response str0m sends
//! proves an authenticated consent check arrived; when none has for
//! [`WebrtcLegConfig::consent_timeout`] (30 s by default, RFC 7675 §5.1) the leg emits
//! [`Event::ConsentLost`] and stops. The timer starts at the first check, since the browser sends
//! none while the answer is held back during ringing.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::format::{Codec, CodecConfig, FormatParams, PayloadParams};
use str0m::media::{Direction, Frequency, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, ExtensionMap, RtpPacket, RtpWrite};
use str0m::stats::{MediaEgressStats, MediaIngressStats};
use str0m::{Candidate, Input, Rtc, RtcConfig};

use super::demux::{DatagramKind, StunHeader};

/// RFC 7675 §5.1: consent expires 30 s after the last successful check.
pub const DEFAULT_CONSENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often str0m reports RTCP-derived statistics (loss, jitter, RTT) for the CDR.
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(5);
/// A telephone event whose end report never arrives is closed this long after its last report.
const DTMF_END_TIMEOUT: Duration = Duration::from_millis(500);
/// What [`Output::Timeout`] says when nothing is scheduled (the leg has ended).
const NOTHING_SCHEDULED: Duration = Duration::from_secs(24 * 3600);
/// Dynamic payload types the leg configures for telephone-event before negotiation. Negotiation
/// replaces them with the browser's numbers.
const TELEPHONE_EVENT_48K_PT: u8 = 110;
const TELEPHONE_EVENT_8K_PT: u8 = 126;
/// Our id for the `sdes:mid` header extension; an answer takes the browser's id.
const MID_EXTENSION_ID: u8 = 4;
/// Written packets str0m holds until its next timeout; the leg drains after every write, so one
/// is always enough and the rest is margin. Audio is never resent, so nothing else uses it.
const AUDIO_SEND_BUFFER: usize = 4;

/// Error from a [`WebrtcLeg`] operation. Every error from an offer or answer means the SDP was not
/// acceptable (the B2BUA answers 488).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebrtcLegError {
    /// The SDP did not parse.
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    /// The offer has no enabled audio m-line.
    #[error("the offer has no audio")]
    NoAudio,
    /// The offer has no `a=fingerprint`, so DTLS-SRTP cannot be authenticated.
    #[error("the offer has no DTLS fingerprint")]
    MissingFingerprint,
    /// The browser offered none of Opus, PCMU and PCMA.
    #[error("no common audio codec")]
    NoCommonCodec,
    /// str0m refused the SDP (ICE credentials, setup role, BUNDLE, ...).
    #[error("SDP rejected: {0}")]
    Rejected(String),
    /// The advertised address cannot be an ICE host candidate (unspecified, multicast, ...).
    #[error("unusable advertised address: {0}")]
    BadCandidate(String),
    /// Media cannot be sent now: not connected yet, or the direction does not send (hold).
    #[error("not sending")]
    NotSending,
    /// The payload type is neither the negotiated audio codec nor telephone-event.
    #[error("payload type {0} was not negotiated")]
    UnknownPayloadType(u8),
    /// No telephone-event payload type was negotiated.
    #[error("telephone-event was not negotiated")]
    NoDtmf,
    /// An answer arrived with no offer of ours outstanding.
    #[error("no offer is pending")]
    NoOfferPending,
    /// Renegotiation was asked for a direction the media already has; str0m makes no offer then.
    #[error("nothing to offer: the media already has that direction")]
    NothingToOffer,
    /// The leg has ended (consent lost, closed, failed); drop it.
    #[error("the leg has ended")]
    Ended,
}

/// The G.711 law the PBX leg uses, for passthrough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum G711 {
    /// µ-law, static payload type 0.
    Pcmu,
    /// A-law, static payload type 8.
    Pcma,
}

/// The audio codec negotiated with the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    /// Opus 48000/2.
    Opus,
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
}

impl AudioCodec {
    /// The RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            AudioCodec::Opus => 48_000,
            AudioCodec::Pcmu | AudioCodec::Pcma => 8_000,
        }
    }

    fn str0m_codec(self) -> Codec {
        match self {
            AudioCodec::Opus => Codec::Opus,
            AudioCodec::Pcmu => Codec::PCMU,
            AudioCodec::Pcma => Codec::PCMA,
        }
    }

    fn from_str0m(codec: Codec) -> Option<AudioCodec> {
        match codec {
            Codec::Opus => Some(AudioCodec::Opus),
            Codec::PCMU => Some(AudioCodec::Pcmu),
            Codec::PCMA => Some(AudioCodec::Pcma),
            _ => None,
        }
    }
}

impl From<G711> for AudioCodec {
    fn from(law: G711) -> Self {
        match law {
            G711::Pcmu => AudioCodec::Pcmu,
            G711::Pcma => AudioCodec::Pcma,
        }
    }
}

/// What the leg should answer with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodecPrefs {
    /// Answer with this G.711 law instead of Opus when the browser offered it, so audio passes
    /// through untranscoded. `None`: Opus whenever offered.
    pub passthrough: Option<G711>,
}

/// Addresses and timers of a leg.
#[derive(Debug, Clone)]
pub struct WebrtcLegConfig {
    /// The address in the host candidate: `public_ip:worker_port`.
    pub advertised_addr: SocketAddr,
    /// The address the worker socket is bound to; differs from `advertised_addr` behind a 1:1 NAT.
    pub local_addr: SocketAddr,
    /// How long without a consent check before [`Event::ConsentLost`].
    pub consent_timeout: Duration,
    /// How often RTCP-derived statistics are refreshed.
    pub stats_interval: Duration,
    /// A DTLS certificate to share between legs (saves a key generation per call); `None` makes one.
    pub dtls_cert: Option<DtlsCert>,
}

/// Generates a DTLS certificate to share between legs through [`WebrtcLegConfig::dtls_cert`]:
/// one key generation per process instead of one per call.
pub fn generate_dtls_cert() -> Option<DtlsCert> {
    str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
}

impl WebrtcLegConfig {
    /// A config with the default timers and a certificate of the leg's own.
    pub fn new(advertised_addr: SocketAddr, local_addr: SocketAddr) -> Self {
        WebrtcLegConfig {
            advertised_addr,
            local_addr,
            consent_timeout: DEFAULT_CONSENT_TIMEOUT,
            stats_interval: DEFAULT_STATS_INTERVAL,
            dtls_cert: None,
        }
    }
}

/// The negotiated telephone-event format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfFormat {
    /// Its payload type.
    pub pt: u8,
    /// Its RTP clock rate: the audio codec's when the browser offered that, else 8000 (Firefox
    /// offers only telephone-event/8000 next to Opus).
    pub clock_rate: u32,
}

/// The negotiated audio format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiatedAudio {
    /// The codec.
    pub codec: AudioCodec,
    /// Its payload type (the browser's number).
    pub pt: u8,
    /// telephone-event, when negotiated.
    pub dtmf: Option<DtmfFormat>,
}

/// One RFC 4733 event report: the 4-byte payload of a telephone-event packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfReport {
    /// Event code: 0-9 digits, 10 `*`, 11 `#`, 12-15 `A`-`D`.
    pub event: u8,
    /// The E bit: the last report of the event.
    pub end: bool,
    /// Tone power in -dBm0 (0-63).
    pub volume: u8,
    /// Duration so far, in units of the telephone-event clock.
    pub duration: u16,
}

impl DtmfReport {
    /// Parses the first report of a telephone-event payload.
    pub fn parse(payload: &[u8]) -> Option<DtmfReport> {
        let [event, flags, d0, d1, ..] = *payload else {
            return None;
        };
        Some(DtmfReport {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The 4-byte payload.
    pub fn to_bytes(self) -> [u8; 4] {
        let [d0, d1] = self.duration.to_be_bytes();
        let flags = if self.end { 0x80 } else { 0 } | (self.volume & 0x3f);
        [self.event, flags, d0, d1]
    }
}

/// A digit the browser sent, reported once when its event ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dtmf {
    /// Event code: 0-9 digits, 10 `*`, 11 `#`, 12-15 `A`-`D`.
    pub event: u8,
    /// RTP timestamp of the event's start.
    pub rtp_time: u32,
    /// Total duration in units of `clock_rate`.
    pub duration: u32,
    /// Tone power in -dBm0.
    pub volume: u8,
    /// The telephone-event clock rate.
    pub clock_rate: u32,
}

impl Dtmf {
    /// The digit as a character, for events 0-15.
    pub fn digit(&self) -> Option<char> {
        b"0123456789*#ABCD"
            .get(usize::from(self.event))
            .map(|b| char::from(*b))
    }
}

/// Why the leg stopped, other than consent loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The browser closed the connection (DTLS close_notify).
    Closed,
    /// str0m failed (e.g. the DTLS certificate did not match the fingerprint).
    Failed(String),
}

/// Something that happened on the leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// ICE and DTLS are up; media can flow.
    Connected,
    /// An audio packet from the browser, in arrival order.
    Audio {
        /// Payload type (the negotiated audio codec's).
        pt: u8,
        /// RTP timestamp.
        rtp_time: u32,
        /// Extended (64-bit, never wrapping) sequence number, for the jitter buffer.
        seq: u64,
        /// The browser's SSRC; a change means a new stream (reset the jitter buffer).
        ssrc: u32,
        /// The marker bit (start of a talkspurt).
        marker: bool,
        /// The codec payload.
        payload: Arc<[u8]>,
    },
    /// A digit, once per RFC 4733 event however many packets carried it.
    Dtmf(Dtmf),
    /// The audio direction changed through renegotiation (hold/unhold).
    DirectionChanged(Direction),
    /// The browser reported on our audio (RTCP receiver reports, seen at each statistics
    /// interval): of `expected` packets sent since the last such event, `lost` never arrived.
    LossReport {
        /// Packets the browser's highest sequence number advanced by.
        expected: u64,
        /// Of those, the packets its cumulative loss count grew by.
        lost: u64,
    },
    /// No consent check for the consent timeout: the browser is gone; end the call.
    ConsentLost,
    /// The connection ended otherwise; end the call.
    Disconnected(DisconnectReason),
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The browser's address.
    pub to: SocketAddr,
    /// The local socket address to send from (the worker socket's bound address).
    pub from: SocketAddr,
    /// The datagram.
    pub bytes: Vec<u8>,
}

/// What [`WebrtcLeg::poll_output`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a datagram.
    Transmit(Transmit),
    /// Something happened.
    Event(Event),
    /// Nothing more until this time (or a new input): call `handle_timeout` then.
    Timeout(Instant),
}

/// Per-leg media statistics for the CDR.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LegStats {
    /// RTP packets received from the browser (audio and telephone-event).
    pub packets_received: u64,
    /// RTP payload bytes received.
    pub bytes_received: u64,
    /// Packets the browser sent that never arrived, from the sequence numbers.
    pub packets_lost: u64,
    /// RTP packets written toward the browser.
    pub packets_sent: u64,
    /// RTP payload bytes written toward the browser.
    pub bytes_sent: u64,
    /// Our packets the browser reports lost (RTCP receiver reports), cumulative.
    pub remote_packets_lost: Option<u64>,
    /// Interarrival jitter of the browser's stream as we measure it.
    pub jitter: Option<Duration>,
    /// Interarrival jitter of our stream as the browser reports it.
    pub remote_jitter: Option<Duration>,
    /// Round-trip time from RTCP (receiver report LSR/DLSR).
    pub rtt: Option<Duration>,
    /// Datagrams refused: unclassifiable, from an address ICE has not validated, or STUN that
    /// failed its integrity check.
    pub datagrams_rejected: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegState {
    Alive,
    /// We called [`WebrtcLeg::close`]; str0m is draining its BYE and close_notify.
    Closing,
    Ended,
}

/// The telephone event being received.
#[derive(Debug, Clone, Copy)]
struct DtmfInProgress {
    rtp_time: u32,
    report: DtmfReport,
    last_report_at: Instant,
    reported: bool,
}

/// The browser-facing leg of one call. See the module docs.
pub struct WebrtcLeg {
    rtc: Rtc,
    advertised_addr: SocketAddr,
    local_addr: SocketAddr,
    consent_timeout: Duration,
    mid: Mid,
    audio: NegotiatedAudio,
    direction: Direction,
    local_ufrag: String,
    state: LegState,
    connected: bool,
    /// Outputs str0m produced while the leg drained it between two of its own mutations.
    pending: VecDeque<Output>,
    rtc_timeout: Instant,
    last_now: Instant,
    /// When str0m last answered an authenticated binding request.
    last_consent: Option<Instant>,
    next_seq: u64,
    /// The browser's highest sequence number and cumulative loss at the last [`Event::LossReport`],
    /// or one before our first packet and 0 before any.
    loss_reported: (u64, i64),
    first_rx_seq: Option<u64>,
    max_rx_seq: u64,
    dtmf_rx: Option<DtmfInProgress>,
    pending_offer: Option<SdpPendingOffer>,
    stats: LegStats,
}

impl std::fmt::Debug for WebrtcLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebrtcLeg")
            .field("local_ufrag", &self.local_ufrag)
            .field("audio", &self.audio)
            .field("direction", &self.direction)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl WebrtcLeg {
    /// Builds a leg from the browser's offer and returns it with the SDP answer.
    ///
    /// Opus is preferred; `prefs.passthrough` picks that G.711 law instead when the browser
    /// offered it; an offer of only G.711 is answered with G.711. telephone-event is kept at the
    /// chosen codec's clock rate when offered (else 8000), never twice.
    pub fn accept_offer(
        now: Instant,
        offer_sdp: &str,
        prefs: CodecPrefs,
        config: &WebrtcLegConfig,
    ) -> Result<(WebrtcLeg, String), WebrtcLegError> {
        let (offer, offered) = checked_offer(offer_sdp)?;
        let mid = offered.mid;
        let offered_codec = choose_codec(&offered.codecs, prefs).ok_or(WebrtcLegError::NoCommonCodec)?;
        let codec = offered_codec.codec;

        let mut rtc = rtc_config(offered_codec, offered.event_rate(codec), config).build(now);
        let candidate = Candidate::host(config.advertised_addr, "udp")
            .map_err(|e| WebrtcLegError::BadCandidate(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| WebrtcLegError::Rejected(e.to_string()))?;
        let audio = negotiated_audio(&rtc, mid, codec).ok_or(WebrtcLegError::NoCommonCodec)?;
        let direction = rtc
            .media(mid)
            .map(|m| m.direction())
            .unwrap_or(Direction::Inactive);
        let local_ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let next_seq = first_sequence_number();

        let mut leg = WebrtcLeg {
            rtc,
            advertised_addr: config.advertised_addr,
            local_addr: config.local_addr,
            consent_timeout: config.consent_timeout,
            mid,
            audio,
            direction,
            local_ufrag,
            state: LegState::Alive,
            connected: false,
            pending: VecDeque::new(),
            rtc_timeout: now,
            last_now: now,
            last_consent: None,
            next_seq,
            loss_reported: (next_seq.wrapping_sub(1), 0),
            first_rx_seq: None,
            max_rx_seq: 0,
            dtmf_rx: None,
            pending_offer: None,
            stats: LegStats::default(),
        };
        leg.drain_rtc();
        Ok((leg, answer.to_sdp_string()))
    }

    /// The audio codecs a browser offer lists, in its order, after the checks [`WebrtcLeg::accept_offer`]
    /// makes first (it parses, carries a DTLS fingerprint, has audio). Lets the caller hold the answer
    /// back until it knows which codec to answer with, and still refuse a bad offer at once.
    pub fn offered_codecs(offer_sdp: &str) -> Result<Vec<AudioCodec>, WebrtcLegError> {
        let (_, offered) = checked_offer(offer_sdp)?;
        let codecs: Vec<AudioCodec> = offered.codecs.iter().map(|o| o.codec).collect();
        if codecs.is_empty() {
            return Err(WebrtcLegError::NoCommonCodec);
        }
        Ok(codecs)
    }

    /// The local ICE ufrag: register it with the worker's [`Demux`](super::demux::Demux), and
    /// again after [`WebrtcLeg::accept_reoffer`] when it changed (an ICE restart renews it).
    pub fn local_ufrag(&self) -> &str {
        &self.local_ufrag
    }

    /// The negotiated audio format.
    pub fn audio(&self) -> NegotiatedAudio {
        self.audio
    }

    /// The current audio direction, from our side (`SendRecv`, `SendOnly` while the browser holds...).
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Whether ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.connected && self.state == LegState::Alive
    }

    /// Whether the leg has ended; it produces nothing more and can be dropped.
    pub fn is_ended(&self) -> bool {
        self.state == LegState::Ended || !self.rtc.is_alive()
    }

    /// The SSRC of our audio toward the browser.
    pub fn ssrc(&mut self) -> Option<u32> {
        let mid = self.mid;
        self.rtc
            .direct_api()
            .stream_tx_by_mid(mid, None)
            .map(|stream| *stream.ssrc())
    }

    /// Media statistics so far.
    pub fn stats(&self) -> LegStats {
        let mut stats = self.stats;
        if let Some(first) = self.first_rx_seq {
            let expected = self.max_rx_seq - first + 1;
            stats.packets_lost = expected.saturating_sub(stats.packets_received);
        }
        stats
    }

    /// A datagram from `source` arrived on the worker socket bound to `destination`.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        datagram: &[u8],
    ) {
        self.advance(now);
        if self.state == LegState::Ended {
            return;
        }
        // str0m only knows the advertised address (its candidate); the socket sees its own.
        let destination = if destination == self.local_addr {
            self.advertised_addr
        } else {
            destination
        };
        let Ok(receive) = Receive::new(Protocol::Udp, source, destination, datagram) else {
            self.stats.datagrams_rejected += 1;
            return;
        };
        let input = Input::Receive(now, receive);
        // Only ICE-validated addresses may feed DTLS and SRTP, and only authenticated checks
        // count: the demultiplexer routes on a ufrag alone.
        if !self.rtc.accepts(&input) {
            self.stats.datagrams_rejected += 1;
            return;
        }
        if let Err(error) = self.rtc.handle_input(input) {
            self.fail(error.to_string());
        }
    }

    /// Time passed: call at the [`Output::Timeout`] instant (earlier is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        if self.state == LegState::Ended {
            return;
        }
        if self.state == LegState::Alive
            && let Some(deadline) = self.consent_deadline()
            && now >= deadline
        {
            tracing::info!(ufrag = %self.local_ufrag, "ICE consent lost");
            self.end(Event::ConsentLost);
            return;
        }
        if let Some(dtmf) = self.dtmf_rx
            && !dtmf.reported
            && now >= dtmf.last_report_at + DTMF_END_TIMEOUT
        {
            self.report_dtmf();
        }
        if let Err(error) = self.rtc.handle_input(Input::Timeout(now)) {
            self.fail(error.to_string());
        }
    }

    /// The next output. Drain until [`Output::Timeout`] after every input or write.
    pub fn poll_output(&mut self) -> Output {
        if let Some(output) = self.pending.pop_front() {
            return output;
        }
        if self.state != LegState::Ended
            && let Some(output) = self.poll_rtc()
        {
            return output;
        }
        if let Some(output) = self.pending.pop_front() {
            return output;
        }
        Output::Timeout(self.next_timeout())
    }

    /// Sends one audio packet toward the browser. `rtp_time` is in the codec's clock; the caller
    /// keeps it continuous (20 ms = 960 units of Opus, 160 of G.711).
    pub fn write_audio(
        &mut self,
        now: Instant,
        pt: u8,
        rtp_time: u32,
        payload: impl Into<Arc<[u8]>>,
    ) -> Result<(), WebrtcLegError> {
        if pt != self.audio.pt {
            return Err(WebrtcLegError::UnknownPayloadType(pt));
        }
        self.write_rtp(now, pt, rtp_time, false, payload.into())
    }

    /// Sends one RFC 4733 report toward the browser. The caller paces the reports (one per 20 ms
    /// and the end report three times, RFC 4733 §2.5.1) and sets `marker` on the first; `rtp_time`
    /// is the event's start in the telephone-event clock ([`DtmfFormat::clock_rate`]).
    pub fn write_dtmf(
        &mut self,
        now: Instant,
        rtp_time: u32,
        report: DtmfReport,
        marker: bool,
    ) -> Result<(), WebrtcLegError> {
        let dtmf = self.audio.dtmf.ok_or(WebrtcLegError::NoDtmf)?;
        self.write_rtp(now, dtmf.pt, rtp_time, marker, Arc::from(report.to_bytes()))
    }

    /// Accepts a new offer from the browser (a re-INVITE: hold, unhold, ICE restart) and returns
    /// the answer. The codec stays the one chosen at the start.
    pub fn accept_reoffer(&mut self, now: Instant, offer_sdp: &str) -> Result<String, WebrtcLegError> {
        self.ensure_alive()?;
        self.advance(now);
        let offer =
            SdpOffer::from_sdp_string(offer_sdp).map_err(|e| WebrtcLegError::InvalidSdp(e.to_string()))?;
        if OfferedAudio::of(&offer).is_none() {
            return Err(WebrtcLegError::NoAudio);
        }
        self.pending_offer = None;
        let result = self.rtc.sdp_api().accept_offer(offer);
        self.drain_rtc();
        let answer = result.map_err(|e| WebrtcLegError::Rejected(e.to_string()))?;
        self.after_negotiation()?;
        Ok(answer.to_sdp_string())
    }

    /// Makes an offer to the browser changing our audio direction (our re-INVITE when the PBX holds:
    /// `SendOnly`; unhold: `SendRecv`). Complete it with [`WebrtcLeg::accept_answer`].
    pub fn create_offer(&mut self, now: Instant, direction: Direction) -> Result<String, WebrtcLegError> {
        self.ensure_alive()?;
        self.advance(now);
        let mut change = self.rtc.sdp_api();
        change.set_direction(self.mid, direction);
        let applied = change.apply();
        self.drain_rtc();
        let (offer, pending) = applied.ok_or(WebrtcLegError::NothingToOffer)?;
        self.pending_offer = Some(pending);
        Ok(offer.to_sdp_string())
    }

    /// Applies the browser's answer to our last [`WebrtcLeg::create_offer`].
    pub fn accept_answer(&mut self, now: Instant, answer_sdp: &str) -> Result<(), WebrtcLegError> {
        self.ensure_alive()?;
        self.advance(now);
        let pending = self.pending_offer.take().ok_or(WebrtcLegError::NoOfferPending)?;
        let answer =
            SdpAnswer::from_sdp_string(answer_sdp).map_err(|e| WebrtcLegError::InvalidSdp(e.to_string()))?;
        let result = self.rtc.sdp_api().accept_answer(pending, answer);
        self.drain_rtc();
        result.map_err(|e| WebrtcLegError::Rejected(e.to_string()))?;
        self.after_negotiation()
    }

    /// Ends the leg from our side: str0m queues RTCP BYE and a DTLS close_notify; drain
    /// [`WebrtcLeg::poll_output`] to send them.
    pub fn close(&mut self, now: Instant) {
        self.advance(now);
        if self.state != LegState::Alive {
            return;
        }
        self.state = LegState::Closing;
        if let Err(error) = self.rtc.close() {
            tracing::debug!(%error, "closing the WebRTC leg");
        }
    }

    fn ensure_alive(&self) -> Result<(), WebrtcLegError> {
        match self.state {
            LegState::Alive => Ok(()),
            LegState::Closing | LegState::Ended => Err(WebrtcLegError::Ended),
        }
    }

    fn advance(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
    }

    fn write_rtp(
        &mut self,
        now: Instant,
        pt: u8,
        rtp_time: u32,
        marker: bool,
        payload: Arc<[u8]>,
    ) -> Result<(), WebrtcLegError> {
        self.ensure_alive()?;
        if !self.connected || !self.direction.is_sending() {
            return Err(WebrtcLegError::NotSending);
        }
        self.advance(now);
        let mid = self.mid;
        let len = payload.len() as u64;
        let seq = self.next_seq;
        let mut direct = self.rtc.direct_api();
        let Some(stream) = direct.stream_tx_by_mid(mid, None) else {
            return Err(WebrtcLegError::NotSending);
        };
        stream.write_rtp(RtpWrite::new(Pt::from(pt), seq.into(), rtp_time, now, payload).marker(marker));
        self.next_seq += 1;
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += len;
        // str0m releases a written packet on the next timeout; honour its rule of draining
        // between two mutations, then let the timeout send it in the caller's drain.
        self.drain_rtc();
        if let Err(error) = self.rtc.handle_input(Input::Timeout(self.last_now)) {
            self.fail(error.to_string());
        }
        Ok(())
    }

    /// Drains str0m until its timeout, keeping what it produced for [`WebrtcLeg::poll_output`].
    fn drain_rtc(&mut self) {
        while self.state != LegState::Ended {
            match self.poll_rtc() {
                Some(output) => self.pending.push_back(output),
                None => break,
            }
        }
    }

    /// The next output of str0m worth passing on, or `None` once str0m reports its timeout.
    fn poll_rtc(&mut self) -> Option<Output> {
        loop {
            let output = match self.rtc.poll_output() {
                Ok(output) => output,
                Err(error) => {
                    self.fail(error.to_string());
                    return self.pending.pop_front();
                }
            };
            match output {
                str0m::Output::Timeout(at) => {
                    self.rtc_timeout = at;
                    if self.state == LegState::Closing && !self.rtc.is_alive() {
                        self.state = LegState::Ended;
                    }
                    return None;
                }
                str0m::Output::Transmit(transmit) => return Some(self.transmit(transmit)),
                str0m::Output::Event(event) => {
                    if let Some(event) = self.translate(event) {
                        return Some(Output::Event(event));
                    }
                }
            }
        }
    }

    fn transmit(&mut self, transmit: str0m::net::Transmit) -> Output {
        // In ICE-lite mode str0m sends no requests, only answers to authenticated checks: each
        // success response is a consent check the browser made.
        if DatagramKind::of(&transmit.contents) == DatagramKind::Stun
            && StunHeader::parse(&transmit.contents).is_some_and(|h| h.is_binding_success())
        {
            self.last_consent = Some(self.last_now);
        }
        let from = if transmit.source == self.advertised_addr {
            self.local_addr
        } else {
            transmit.source
        };
        Output::Transmit(Transmit {
            to: transmit.destination,
            from,
            bytes: transmit.contents.into(),
        })
    }

    fn translate(&mut self, event: str0m::Event) -> Option<Event> {
        match event {
            str0m::Event::Connected => {
                self.connected = true;
                Some(Event::Connected)
            }
            str0m::Event::RtpPacket(packet) => self.receive_rtp(packet),
            str0m::Event::MediaChanged(change) if change.mid == self.mid => {
                if change.direction == self.direction {
                    return None;
                }
                self.direction = change.direction;
                Some(Event::DirectionChanged(change.direction))
            }
            str0m::Event::MediaIngressStats(stats) => {
                self.ingress_stats(&stats);
                None
            }
            str0m::Event::MediaEgressStats(stats) => self.egress_stats(&stats),
            str0m::Event::Closed => {
                self.state = LegState::Ended;
                self.rtc.disconnect();
                Some(Event::Disconnected(DisconnectReason::Closed))
            }
            str0m::Event::IceConnectionStateChange(state) => {
                tracing::debug!(ufrag = %self.local_ufrag, ?state, "ICE state");
                None
            }
            _ => None,
        }
    }

    fn receive_rtp(&mut self, packet: RtpPacket) -> Option<Event> {
        let seq = *packet.seq_no;
        self.stats.packets_received += 1;
        self.stats.bytes_received += packet.payload.len() as u64;
        match self.first_rx_seq {
            None => {
                self.first_rx_seq = Some(seq);
                self.max_rx_seq = seq;
            }
            Some(first) if seq < first => self.first_rx_seq = Some(seq),
            Some(_) => self.max_rx_seq = self.max_rx_seq.max(seq),
        }
        let pt = *packet.header.payload_type;
        if pt == self.audio.pt {
            return Some(Event::Audio {
                pt,
                rtp_time: packet.header.timestamp,
                seq,
                ssrc: *packet.header.ssrc,
                marker: packet.header.marker,
                payload: packet.payload,
            });
        }
        if self.audio.dtmf.is_some_and(|d| d.pt == pt) {
            let report = DtmfReport::parse(&packet.payload)?;
            return self.receive_dtmf(packet.header.timestamp, report);
        }
        None
    }

    /// Every report of one event carries the event's start timestamp; the end report is sent three
    /// times. The digit is reported once: at the first end report, or when the event's end is lost
    /// (a later event starts, or no report for [`DTMF_END_TIMEOUT`]).
    fn receive_dtmf(&mut self, rtp_time: u32, report: DtmfReport) -> Option<Event> {
        let mut earlier = None;
        if let Some(current) = &mut self.dtmf_rx {
            if current.rtp_time == rtp_time {
                if current.reported {
                    return None;
                }
                current.report = report;
                current.last_report_at = self.last_now;
                return report.end.then(|| self.report_dtmf()).flatten();
            }
            // A straggler of an earlier event (reordering) must not start a new one.
            if (rtp_time.wrapping_sub(current.rtp_time) as i32) < 0 {
                return None;
            }
            if !current.reported {
                earlier = self.report_dtmf();
            }
        }
        self.dtmf_rx = Some(DtmfInProgress {
            rtp_time,
            report,
            last_report_at: self.last_now,
            reported: false,
        });
        let now_ended = if report.end { self.report_dtmf() } else { None };
        match (earlier, now_ended) {
            (Some(first), Some(second)) => {
                self.pending.push_back(Output::Event(second));
                Some(first)
            }
            (first, second) => first.or(second),
        }
    }

    fn report_dtmf(&mut self) -> Option<Event> {
        let dtmf = self.audio.dtmf?;
        let current = self.dtmf_rx.as_mut()?;
        current.reported = true;
        let event = Event::Dtmf(Dtmf {
            event: current.report.event,
            rtp_time: current.rtp_time,
            duration: u32::from(current.report.duration),
            volume: current.report.volume,
            clock_rate: dtmf.clock_rate,
        });
        Some(event)
    }

    fn ingress_stats(&mut self, stats: &MediaIngressStats) {
        if stats.mid != self.mid {
            return;
        }
        self.stats.jitter = Some(rtp_units(stats.jitter, self.audio.codec.clock_rate()));
        if stats.rtt.is_some() {
            self.stats.rtt = stats.rtt;
        }
    }

    fn egress_stats(&mut self, stats: &MediaEgressStats) -> Option<Event> {
        if stats.mid != self.mid {
            return None;
        }
        if stats.rtt.is_some() {
            self.stats.rtt = stats.rtt;
        }
        let remote = stats.remote.as_ref()?;
        let cumulative_lost = signed_24(remote.packets_lost);
        self.stats.remote_packets_lost = Some(u64::try_from(cumulative_lost).unwrap_or(0));
        self.stats.remote_jitter = Some(rtp_units(remote.jitter, self.audio.codec.clock_rate()));
        // Nothing the browser reports goes beyond what we sent.
        let highest = (*remote.maximum_sequence_number).min(self.next_seq.wrapping_sub(1));
        let (reported_highest, reported_lost) = self.loss_reported;
        // No new report since the last event, or one about packets already counted.
        if highest <= reported_highest {
            return None;
        }
        let expected = highest - reported_highest;
        // Duplicates make the cumulative count fall: no loss then.
        let lost = u64::try_from(cumulative_lost - reported_lost)
            .unwrap_or(0)
            .min(expected);
        self.loss_reported = (highest, cumulative_lost);
        Some(Event::LossReport { expected, lost })
    }

    fn after_negotiation(&mut self) -> Result<(), WebrtcLegError> {
        self.audio =
            negotiated_audio(&self.rtc, self.mid, self.audio.codec).ok_or(WebrtcLegError::NoCommonCodec)?;
        if let Some(media) = self.rtc.media(self.mid) {
            let direction = media.direction();
            if direction != self.direction {
                self.direction = direction;
                self.pending
                    .push_back(Output::Event(Event::DirectionChanged(direction)));
            }
        }
        self.local_ufrag = self.rtc.direct_api().local_ice_credentials().ufrag;
        Ok(())
    }

    fn consent_deadline(&self) -> Option<Instant> {
        self.last_consent.map(|at| at + self.consent_timeout)
    }

    fn next_timeout(&self) -> Instant {
        if self.state == LegState::Ended {
            return self.last_now + NOTHING_SCHEDULED;
        }
        let mut at = self.rtc_timeout;
        if self.state == LegState::Alive
            && let Some(deadline) = self.consent_deadline()
        {
            at = at.min(deadline);
        }
        if let Some(dtmf) = self.dtmf_rx
            && !dtmf.reported
        {
            at = at.min(dtmf.last_report_at + DTMF_END_TIMEOUT);
        }
        at.max(self.last_now)
    }

    fn end(&mut self, event: Event) {
        self.state = LegState::Ended;
        self.rtc.disconnect();
        self.pending.push_back(Output::Event(event));
    }

    fn fail(&mut self, reason: String) {
        if self.state == LegState::Ended {
            return;
        }
        tracing::info!(ufrag = %self.local_ufrag, %reason, "WebRTC leg failed");
        self.end(Event::Disconnected(DisconnectReason::Failed(reason)));
    }
}

/// The str0m configuration of a leg answering with `codec`, and telephone-event at `event_rate`.
///
/// Audio only, at a bitrate the encoder sets: nothing here estimates bandwidth. str0m's defaults are
/// for video calls, so the leg turns off what costs memory per call without use for it:
/// - transport-wide congestion control: no transport-cc header extension and no `rtcp-fb
///   transport-cc`, so neither side numbers packets or reports their arrival times (str0m keeps
///   ~90 KB of TWCC registers per call otherwise; bandwidth estimation, off by default, needs them);
/// - the header extensions for bandwidth estimation (abs-send-time), audio levels and video; only
///   the BUNDLE `sdes:mid` stays;
/// - the send buffer: it backs RTX resends, which audio does not use.
fn rtc_config(codec: OfferedCodec, event_rate: Option<u32>, config: &WebrtcLegConfig) -> RtcConfig {
    let mut extensions = ExtensionMap::empty();
    extensions.set(MID_EXTENSION_ID, Extension::RtpMid);
    let mut rtc = Rtc::builder()
        .set_crypto_provider(crate::media::dtls_provider::crypto_provider())
        .set_ice_lite(true)
        .set_rtp_mode(true)
        .set_stats_interval(Some(config.stats_interval))
        .set_extension_map(extensions)
        .set_send_buffer_audio(AUDIO_SEND_BUFFER)
        .clear_codecs();
    if let Some(cert) = &config.dtls_cert {
        rtc = rtc.set_dtls_cert(cert.clone());
    }
    let codecs = rtc.codec_config();
    match codec.codec {
        AudioCodec::Opus => codecs.enable_opus(true, false),
        AudioCodec::Pcmu | AudioCodec::Pcma => {
            let (pt, law) = if codec.codec == AudioCodec::Pcmu {
                (0, Codec::PCMU)
            } else {
                (8, Codec::PCMA)
            };
            let format = FormatParams::default();
            codecs.add_config(
                Pt::from(pt),
                None,
                law,
                Frequency::EIGHT_KHZ,
                codec.channels,
                format,
            );
        }
    }
    let event = match event_rate {
        Some(48_000) => Some((TELEPHONE_EVENT_48K_PT, Frequency::FORTY_EIGHT_KHZ)),
        Some(8_000) => Some((TELEPHONE_EVENT_8K_PT, Frequency::EIGHT_KHZ)),
        _ => None,
    };
    if let Some((pt, rate)) = event {
        codecs.add_config(
            Pt::from(pt),
            None,
            Codec::Tele,
            rate,
            None,
            FormatParams::default(),
        );
    }
    // str0m asks for transport-cc feedback on every payload type it adds.
    let params = codecs
        .params()
        .iter()
        .cloned()
        .map(|mut params| {
            params.set_fb_transport_cc(false);
            params
        })
        .collect();
    *codecs = CodecConfig::new_from_payload_params(params);
    rtc
}

/// A codec as the browser offered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OfferedCodec {
    codec: AudioCodec,
    /// The channel count of its rtpmap. str0m matches it exactly, and browsers differ: Chrome
    /// writes `PCMU/8000`, other endpoints `PCMU/8000/1`.
    channels: Option<u8>,
}

/// A browser offer parsed and checked the way every leg needs it: it parses, carries a DTLS fingerprint
/// and has audio.
fn checked_offer(offer_sdp: &str) -> Result<(SdpOffer, OfferedAudio), WebrtcLegError> {
    let offer =
        SdpOffer::from_sdp_string(offer_sdp).map_err(|e| WebrtcLegError::InvalidSdp(e.to_string()))?;
    if !has_fingerprint(offer_sdp) {
        return Err(WebrtcLegError::MissingFingerprint);
    }
    let offered = OfferedAudio::of(&offer).ok_or(WebrtcLegError::NoAudio)?;
    Ok((offer, offered))
}

/// The audio of an offer: the first enabled audio m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OfferedAudio {
    mid: Mid,
    codecs: Vec<OfferedCodec>,
    /// Clock rates of the telephone-event formats offered.
    event_rates: Vec<u32>,
}

impl OfferedAudio {
    fn of(offer: &SdpOffer) -> Option<OfferedAudio> {
        let line = offer
            .media_lines
            .iter()
            .find(|line| !line.disabled && line.typ.to_string() == "audio")?;
        // rtp_params() also lists rtpmap lines whose payload type the m-line does not carry.
        let params: Vec<PayloadParams> = line
            .rtp_params()
            .into_iter()
            .filter(|p| line.pts.contains(&p.pt()))
            .collect();
        let codecs = params
            .iter()
            .filter_map(|p| {
                let codec = AudioCodec::from_str0m(p.spec().codec)?;
                Some(OfferedCodec {
                    codec,
                    channels: p.spec().channels,
                })
            })
            .collect();
        let event_rates = params
            .iter()
            .filter(|p| p.spec().codec.is_tele())
            .map(|p| p.spec().clock_rate.get())
            .collect();
        Some(OfferedAudio {
            // str0m's parser rejects an m-line without exactly one a=mid.
            mid: line.mid(),
            codecs,
            event_rates,
        })
    }

    /// The one telephone-event clock rate to answer with: the codec's own when offered (Chrome
    /// offers 48000 and 8000), else 8000 (Firefox offers only that, even next to Opus). str0m
    /// itself would keep every rate matching any offered codec, two events for one m-line.
    fn event_rate(&self, codec: AudioCodec) -> Option<u32> {
        [codec.clock_rate(), 8_000, 48_000]
            .into_iter()
            .find(|rate| self.event_rates.contains(rate))
    }
}

fn choose_codec(offered: &[OfferedCodec], prefs: CodecPrefs) -> Option<OfferedCodec> {
    let passthrough = prefs.passthrough.map(AudioCodec::from);
    [
        passthrough,
        Some(AudioCodec::Opus),
        Some(AudioCodec::Pcmu),
        Some(AudioCodec::Pcma),
    ]
    .into_iter()
    .flatten()
    .find_map(|codec| offered.iter().find(|o| o.codec == codec).copied())
}

/// Whether the SDP carries a DTLS fingerprint at session or media level. str0m would also refuse
/// an offer without one, but only with a message string; this keeps the error typed.
fn has_fingerprint(sdp: &str) -> bool {
    sdp.lines()
        .any(|line| line.trim_start().starts_with("a=fingerprint:"))
}

/// The codec and telephone-event payload types str0m settled on for `mid`.
fn negotiated_audio(rtc: &Rtc, mid: Mid, codec: AudioCodec) -> Option<NegotiatedAudio> {
    let media = rtc.media(mid)?;
    let remote_pts = media.remote_pts();
    let negotiated = |p: &&PayloadParams| remote_pts.contains(&p.pt());
    let params = rtc.codec_config().params();
    let audio = params
        .iter()
        .filter(negotiated)
        .find(|p| p.spec().codec == codec.str0m_codec())?;
    let dtmf = params
        .iter()
        .filter(negotiated)
        .find(|p| p.spec().codec.is_tele())
        .map(|p| DtmfFormat {
            pt: *p.pt(),
            clock_rate: p.spec().clock_rate.get(),
        });
    Some(NegotiatedAudio {
        codec,
        pt: *audio.pt(),
        dtmf,
    })
}

/// A random first sequence number below 2^15, so the SRTP rollover counter starts at 0 and the
/// first wrap is far away (RFC 3550 §5.1 wants a random start).
fn first_sequence_number() -> u64 {
    u64::from(rand::random::<u16>() & 0x7fff)
}

/// The RTCP cumulative number of packets lost: a signed 24-bit field, which str0m hands over as is.
fn signed_24(field: u64) -> i64 {
    let field = (field & 0x00ff_ffff) as i64;
    if field >= 0x0080_0000 {
        field - 0x0100_0000
    } else {
        field
    }
}

fn rtp_units(units: u32, clock_rate: u32) -> Duration {
    Duration::from_micros(u64::from(units) * 1_000_000 / u64::from(clock_rate.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtmf_report_round_trips() {
        let report = DtmfReport {
            event: 11,
            end: true,
            volume: 10,
            duration: 1280,
        };
        assert_eq!(report.to_bytes(), [11, 0x8a, 0x05, 0x00]);
        assert_eq!(DtmfReport::parse(&report.to_bytes()), Some(report));
        assert_eq!(DtmfReport::parse(&[1, 2, 3]), None);
    }

    #[test]
    fn digits_map_rfc4733_events() {
        let dtmf = |event| Dtmf {
            event,
            rtp_time: 0,
            duration: 0,
            volume: 0,
            clock_rate: 8000,
        };
        assert_eq!(dtmf(0).digit(), Some('0'));
        assert_eq!(dtmf(10).digit(), Some('*'));
        assert_eq!(dtmf(11).digit(), Some('#'));
        assert_eq!(dtmf(15).digit(), Some('D'));
        assert_eq!(dtmf(16).digit(), None);
    }

    #[test]
    fn codec_choice_prefers_passthrough_then_opus() {
        use AudioCodec::*;
        let offered = |codecs: &[AudioCodec]| -> Vec<OfferedCodec> {
            codecs
                .iter()
                .map(|&codec| OfferedCodec {
                    codec,
                    channels: None,
                })
                .collect()
        };
        let choose = |codecs: &[AudioCodec], prefs| choose_codec(&offered(codecs), prefs).map(|o| o.codec);
        let all = [Opus, Pcmu, Pcma];
        let none = CodecPrefs::default();
        let pcma = CodecPrefs {
            passthrough: Some(G711::Pcma),
        };
        assert_eq!(choose(&all, none), Some(Opus));
        assert_eq!(choose(&all, pcma), Some(Pcma));
        assert_eq!(choose(&[Opus], pcma), Some(Opus));
        assert_eq!(choose(&[Pcma, Pcmu], none), Some(Pcmu));
        assert_eq!(choose(&[], pcma), None);
    }

    #[test]
    fn fingerprint_is_found_at_either_level() {
        assert!(has_fingerprint("v=0\r\na=fingerprint:sha-256 AB:CD\r\n"));
        assert!(has_fingerprint(
            "v=0\nm=audio 9 UDP/TLS/RTP/SAVPF 111\na=fingerprint:sha-256 AB\n"
        ));
        assert!(!has_fingerprint("v=0\r\na=setup:actpass\r\n"));
    }

    #[test]
    fn answer_leaves_congestion_control_out() {
        use crate::media::webrtc_client::{ClientConfig, WebrtcClient};
        let now = Instant::now();
        let client_addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut client = WebrtcClient::new(now, &ClientConfig::chrome(client_addr)).unwrap();
        let offer = client.create_offer().unwrap();
        // The offer asks for them, as Chrome's does, so the answer leaving them out is the leg's doing.
        assert!(offer.contains("transport-wide-cc"), "{offer}");
        assert!(offer.contains("a=rtcp-fb:111 transport-cc"), "{offer}");
        let leg_addr: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let config = WebrtcLegConfig::new(leg_addr, leg_addr);
        let (_, answer) = WebrtcLeg::accept_offer(now, &offer, CodecPrefs::default(), &config).unwrap();
        assert!(!answer.contains("transport-cc"), "{answer}");
        let extensions: Vec<&str> = answer.lines().filter(|l| l.starts_with("a=extmap:")).collect();
        assert_eq!(extensions.len(), 1, "{answer}");
        assert!(
            extensions[0].ends_with(" urn:ietf:params:rtp-hdrext:sdes:mid"),
            "{answer}"
        );
    }

    #[test]
    fn receiver_reports_of_a_lossy_path_become_loss_reports() {
        use crate::media::webrtc_client::{ClientConfig, ClientOutput, WebrtcClient};
        let start = Instant::now();
        let client_addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let leg_addr: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let mut client = WebrtcClient::new(start, &ClientConfig::chrome(client_addr)).unwrap();
        let offer = client.create_offer().unwrap();
        let mut config = WebrtcLegConfig::new(leg_addr, leg_addr);
        config.stats_interval = Duration::from_secs(1);
        let (mut leg, answer) =
            WebrtcLeg::accept_offer(start, &offer, CodecPrefs::default(), &config).unwrap();
        client.accept_answer(&answer).unwrap();

        // Every tenth of our RTP packets is lost on the way to the browser, which reports it.
        let (mut now, mut next_frame, mut rtp_time) = (start, start, 0u32);
        let (mut rtp_sent, mut reports) = (0u64, Vec::new());
        while now < start + Duration::from_secs(40) {
            let client_wakeup = loop {
                match client.poll_output() {
                    ClientOutput::Transmit(t) => leg.handle_receive(now, t.from, t.to, &t.bytes),
                    ClientOutput::Event(_) => {}
                    ClientOutput::Timeout(at) => break at,
                }
            };
            let leg_wakeup = loop {
                match leg.poll_output() {
                    Output::Transmit(t) => {
                        // SRTP leaves the RTP header readable; RTCP has payload types 64-95.
                        let is_rtp = DatagramKind::of(&t.bytes) == DatagramKind::Rtp
                            && !(192..=223).contains(&t.bytes[1]);
                        if is_rtp {
                            rtp_sent += 1;
                            if rtp_sent % 10 == 0 {
                                continue;
                            }
                        }
                        client.handle_receive(now, t.from, t.to, &t.bytes);
                    }
                    Output::Event(Event::LossReport { expected, lost }) => reports.push((expected, lost)),
                    Output::Event(_) => {}
                    Output::Timeout(at) => break at,
                }
            };
            if leg.is_connected() && now >= next_frame {
                let pt = leg.audio().pt;
                leg.write_audio(now, pt, rtp_time, vec![0xfc_u8, 0xff, 0xfe])
                    .unwrap();
                rtp_time = rtp_time.wrapping_add(960);
                next_frame += Duration::from_millis(20);
                continue;
            }
            now = client_wakeup.min(leg_wakeup).min(next_frame).max(now);
            client.handle_timeout(now);
            leg.handle_timeout(now);
        }

        assert!(reports.len() >= 3, "{reports:?}");
        let expected: u64 = reports.iter().map(|r| r.0).sum();
        let lost: u64 = reports.iter().map(|r| r.1).sum();
        // Each report covers what the previous did not, up to the last packet the browser saw.
        assert!(
            expected <= rtp_sent && expected + 300 >= rtp_sent,
            "{expected} of {rtp_sent}"
        );
        assert!(
            lost * 10 >= expected - 10 && lost * 10 <= expected + 10,
            "{lost} of {expected}"
        );
        assert_eq!(leg.stats().remote_packets_lost, Some(lost));
    }

    #[test]
    fn signed_24_bit_loss_counts() {
        assert_eq!(signed_24(5), 5);
        assert_eq!(signed_24(0x7f_ffff), 0x7f_ffff);
        assert_eq!(signed_24(0xff_ffff), -1);
        assert_eq!(signed_24(0x80_0000), -0x80_0000);
    }

    #[test]
    fn jitter_units_convert_by_clock_rate() {
        assert_eq!(rtp_units(480, 48_000), Duration::from_millis(10));
        assert_eq!(rtp_units(80, 8_000), Duration::from_millis(10));
    }
}
