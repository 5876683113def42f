//! The browser side of a call, as a library: callgate's integration tests and the `callgate-load`
//! generator (many browsers in one process) use it to stand in for Chrome.
//!
//! A full ICE agent (controlling) with one host candidate, offering what Chrome offers for an
//! audio-only call (Opus 111 with `minptime=10;useinbandfec=1`, PCMU 0, PCMA 8, telephone-event
//! 110/48000 and 126/8000), or any subset of it. Sans-IO with the same shape as
//! [`WebrtcLeg`](super::webrtc_leg::WebrtcLeg): `handle_receive`, `handle_timeout`, `poll_output`.
//!
//! Unlike the gateway leg this uses str0m's frame mode: it is what lets str0m packetize audio and
//! pace RFC 4733 events (update every 20 ms, end report three times) the way libwebrtc does, so the
//! gateway is tested against an independent sender rather than against its own code.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::{Codec, CodecExtra, FormatParams, PayloadParams};
use str0m::media::{Direction, Frequency, MediaData, MediaKind, MediaTime, Mid, Pt, TelephoneEvent};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, IceConnectionState, Input, Rtc};

use super::webrtc_leg::Transmit;

/// Chrome's payload type for Opus.
pub const CHROME_OPUS_PT: u8 = 111;
/// Chrome's payload type for telephone-event/48000.
pub const CHROME_TELEPHONE_EVENT_48K_PT: u8 = 110;
/// Chrome's payload type for telephone-event/8000.
pub const CHROME_TELEPHONE_EVENT_8K_PT: u8 = 126;
/// What [`ClientOutput::Timeout`] says when nothing is scheduled.
const NOTHING_SCHEDULED: Duration = Duration::from_secs(24 * 3600);

/// Error from a [`WebrtcClient`] operation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    /// The local address cannot be an ICE host candidate.
    #[error("unusable local address: {0}")]
    BadCandidate(String),
    /// The configuration offers no audio codec.
    #[error("no audio codec configured")]
    NoCodec,
    /// The SDP did not parse.
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    /// str0m refused the SDP.
    #[error("SDP rejected: {0}")]
    Rejected(String),
    /// An answer arrived with no offer outstanding, or media was used before negotiation.
    #[error("not negotiated")]
    NotNegotiated,
    /// The direction is already the one asked for; str0m makes no offer then.
    #[error("nothing to offer")]
    NothingToOffer,
    /// str0m refused to send (not connected, direction does not send, bad timing of a digit).
    #[error("cannot send: {0}")]
    Send(String),
    /// Not a DTMF digit (`0-9 * # A-D`).
    #[error("{0:?} is not a DTMF digit")]
    NotADigit(char),
}

/// One payload format the client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferedCodec {
    /// Opus 48000/2, `minptime=10;useinbandfec=1`, with this payload type.
    Opus(u8),
    /// PCMU, payload type 0.
    Pcmu,
    /// PCMA, payload type 8.
    Pcma,
    /// telephone-event at a clock rate, with this payload type.
    TelephoneEvent {
        /// Payload type.
        pt: u8,
        /// RTP clock rate: 48000 or 8000.
        clock_rate: u32,
    },
}

/// What the client offers and where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The host candidate, e.g. `127.0.0.1:<port>`.
    pub local_addr: SocketAddr,
    /// Offered formats, in offer order.
    pub codecs: Vec<OfferedCodec>,
}

impl ClientConfig {
    /// What Chrome offers for an audio-only call (its RED and CN formats left out).
    pub fn chrome(local_addr: SocketAddr) -> Self {
        ClientConfig {
            local_addr,
            codecs: vec![
                OfferedCodec::Opus(CHROME_OPUS_PT),
                OfferedCodec::Pcmu,
                OfferedCodec::Pcma,
                OfferedCodec::TelephoneEvent {
                    pt: CHROME_TELEPHONE_EVENT_48K_PT,
                    clock_rate: 48_000,
                },
                OfferedCodec::TelephoneEvent {
                    pt: CHROME_TELEPHONE_EVENT_8K_PT,
                    clock_rate: 8_000,
                },
            ],
        }
    }

    /// A PCMU-only offer with telephone-event/8000, for passthrough tests.
    pub fn pcmu_only(local_addr: SocketAddr) -> Self {
        ClientConfig {
            local_addr,
            codecs: vec![
                OfferedCodec::Pcmu,
                OfferedCodec::TelephoneEvent {
                    pt: CHROME_TELEPHONE_EVENT_8K_PT,
                    clock_rate: 8_000,
                },
            ],
        }
    }
}

/// Something that happened on the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// ICE and DTLS are up.
    Connected,
    /// An audio frame from the gateway.
    Audio {
        /// Payload type.
        pt: u8,
        /// RTP timestamp (extended) in the codec clock.
        rtp_time: u64,
        /// Extended sequence number of the packet that carried it.
        seq: u64,
        /// SSRC of the gateway's stream is not exposed by frame mode; the payload is.
        payload: Arc<[u8]>,
    },
    /// A digit from the gateway, once per event (at its first end report).
    Dtmf {
        /// Event code.
        event: u8,
        /// Its total duration.
        duration: Duration,
    },
    /// The audio direction changed through renegotiation.
    DirectionChanged(Direction),
    /// ICE gave up or the gateway closed the connection.
    Disconnected,
}

/// What [`WebrtcClient::poll_output`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOutput {
    /// Send a datagram.
    Transmit(Transmit),
    /// Something happened.
    Event(ClientEvent),
    /// Nothing more until this time (or a new input).
    Timeout(Instant),
}

/// A browser stand-in. See the module docs.
pub struct WebrtcClient {
    rtc: Rtc,
    mid: Option<Mid>,
    pending_offer: Option<SdpPendingOffer>,
    pending: VecDeque<ClientOutput>,
    last_now: Instant,
    rtc_timeout: Instant,
    alive: bool,
    direction: Direction,
    /// Start time of the last telephone event reported, so repeated end reports are not.
    last_dtmf: Option<MediaTime>,
}

impl std::fmt::Debug for WebrtcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebrtcClient")
            .field("mid", &self.mid)
            .field("direction", &self.direction)
            .finish_non_exhaustive()
    }
}

impl WebrtcClient {
    /// A client with one host candidate on `config.local_addr`.
    pub fn new(now: Instant, config: &ClientConfig) -> Result<WebrtcClient, ClientError> {
        if !config
            .codecs
            .iter()
            .any(|c| !matches!(c, OfferedCodec::TelephoneEvent { .. }))
        {
            return Err(ClientError::NoCodec);
        }
        let mut builder = Rtc::builder().clear_codecs();
        let codecs = builder.codec_config();
        for codec in &config.codecs {
            let (pt, codec, clock_rate, channels, format) = match *codec {
                OfferedCodec::Opus(pt) => (
                    pt,
                    Codec::Opus,
                    Frequency::FORTY_EIGHT_KHZ,
                    Some(2),
                    FormatParams {
                        min_p_time: Some(10),
                        use_inband_fec: Some(true),
                        ..FormatParams::default()
                    },
                ),
                // Chrome writes `PCMU/8000`, without a channel count.
                OfferedCodec::Pcmu => (
                    0,
                    Codec::PCMU,
                    Frequency::EIGHT_KHZ,
                    None,
                    FormatParams::default(),
                ),
                OfferedCodec::Pcma => (
                    8,
                    Codec::PCMA,
                    Frequency::EIGHT_KHZ,
                    None,
                    FormatParams::default(),
                ),
                OfferedCodec::TelephoneEvent { pt, clock_rate } => {
                    let rate = if clock_rate == 48_000 {
                        Frequency::FORTY_EIGHT_KHZ
                    } else {
                        Frequency::EIGHT_KHZ
                    };
                    (pt, Codec::Tele, rate, None, FormatParams::default())
                }
            };
            codecs.add_config(Pt::from(pt), None, codec, clock_rate, channels, format);
        }
        let mut rtc = builder.build(now);
        let candidate = Candidate::host(config.local_addr, "udp")
            .map_err(|e| ClientError::BadCandidate(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let mut client = WebrtcClient {
            rtc,
            mid: None,
            pending_offer: None,
            pending: VecDeque::new(),
            last_now: now,
            rtc_timeout: now,
            alive: true,
            direction: Direction::SendRecv,
            last_dtmf: None,
        };
        client.drain_rtc();
        Ok(client)
    }

    /// The initial offer: one sendrecv audio m-line.
    pub fn create_offer(&mut self) -> Result<String, ClientError> {
        let mut change = self.rtc.sdp_api();
        let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let applied = change.apply();
        self.drain_rtc();
        let (offer, pending) = applied.ok_or(ClientError::NothingToOffer)?;
        self.mid = Some(mid);
        self.pending_offer = Some(pending);
        Ok(offer.to_sdp_string())
    }

    /// A re-offer changing the audio direction (what a browser sends to hold: `SendOnly`).
    pub fn create_reoffer(&mut self, direction: Direction) -> Result<String, ClientError> {
        let mid = self.mid.ok_or(ClientError::NotNegotiated)?;
        let mut change = self.rtc.sdp_api();
        change.set_direction(mid, direction);
        let applied = change.apply();
        self.drain_rtc();
        let (offer, pending) = applied.ok_or(ClientError::NothingToOffer)?;
        self.pending_offer = Some(pending);
        Ok(offer.to_sdp_string())
    }

    /// Applies the gateway's answer to our last offer.
    pub fn accept_answer(&mut self, answer_sdp: &str) -> Result<(), ClientError> {
        let pending = self.pending_offer.take().ok_or(ClientError::NotNegotiated)?;
        let answer =
            SdpAnswer::from_sdp_string(answer_sdp).map_err(|e| ClientError::InvalidSdp(e.to_string()))?;
        let result = self.rtc.sdp_api().accept_answer(pending, answer);
        self.drain_rtc();
        result.map_err(|e| ClientError::Rejected(e.to_string()))?;
        self.refresh_direction();
        Ok(())
    }

    /// Answers an offer from the gateway (its re-INVITE when the PBX holds).
    pub fn accept_offer(&mut self, offer_sdp: &str) -> Result<String, ClientError> {
        let offer =
            SdpOffer::from_sdp_string(offer_sdp).map_err(|e| ClientError::InvalidSdp(e.to_string()))?;
        self.pending_offer = None;
        let result = self.rtc.sdp_api().accept_offer(offer);
        self.drain_rtc();
        let answer = result.map_err(|e| ClientError::Rejected(e.to_string()))?;
        self.refresh_direction();
        Ok(answer.to_sdp_string())
    }

    /// The negotiated audio codec's payload type and clock rate.
    pub fn audio_format(&mut self) -> Option<(u8, u32)> {
        self.audio_params().map(|p| (*p.pt(), p.spec().clock_rate.get()))
    }

    /// Our audio direction.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The SSRC of our audio stream.
    pub fn ssrc(&mut self) -> Option<u32> {
        let mid = self.mid?;
        self.rtc
            .direct_api()
            .stream_tx_by_mid(mid, None)
            .map(|s| *s.ssrc())
    }

    /// Whether ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.rtc.is_connected()
    }

    /// A datagram from `source` arrived at our socket `destination`.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        datagram: &[u8],
    ) {
        self.last_now = self.last_now.max(now);
        if !self.alive {
            return;
        }
        let Ok(receive) = Receive::new(Protocol::Udp, source, destination, datagram) else {
            return;
        };
        if let Err(error) = self.rtc.handle_input(Input::Receive(now, receive)) {
            self.fail(&error.to_string());
        }
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        if !self.alive {
            return;
        }
        if let Err(error) = self.rtc.handle_input(Input::Timeout(now)) {
            self.fail(&error.to_string());
        }
    }

    /// The next output; drain until [`ClientOutput::Timeout`].
    pub fn poll_output(&mut self) -> ClientOutput {
        if let Some(output) = self.pending.pop_front() {
            return output;
        }
        if let Some(output) = self.poll_rtc() {
            return output;
        }
        if let Some(output) = self.pending.pop_front() {
            return output;
        }
        if !self.alive {
            return ClientOutput::Timeout(self.last_now + NOTHING_SCHEDULED);
        }
        ClientOutput::Timeout(self.rtc_timeout.max(self.last_now))
    }

    /// Sends one audio frame (20 ms of Opus: `rtp_time` advances by 960 per frame).
    pub fn write_audio(&mut self, now: Instant, rtp_time: u64, payload: &[u8]) -> Result<(), ClientError> {
        self.write(now, rtp_time, payload, None)
    }

    /// Sends a digit as an RFC 4733 event starting at `rtp_time` (audio clock), lasting `duration`.
    /// str0m paces the reports; keep calling `handle_timeout` for at least `duration`.
    pub fn send_dtmf(
        &mut self,
        now: Instant,
        rtp_time: u64,
        digit: char,
        duration: Duration,
    ) -> Result<(), ClientError> {
        let event = dtmf_event(digit).ok_or(ClientError::NotADigit(digit))?;
        let tele = TelephoneEvent {
            event,
            end: true,
            volume: 10,
            duration,
        };
        self.write(now, rtp_time, &[], Some(tele))
    }

    fn write(
        &mut self,
        now: Instant,
        rtp_time: u64,
        payload: &[u8],
        tele: Option<TelephoneEvent>,
    ) -> Result<(), ClientError> {
        self.last_now = self.last_now.max(now);
        let mid = self.mid.ok_or(ClientError::NotNegotiated)?;
        let params = self.audio_params().ok_or(ClientError::NotNegotiated)?;
        let time = MediaTime::new(rtp_time, params.spec().clock_rate);
        let mut writer = self.rtc.writer(mid).ok_or(ClientError::NotNegotiated)?;
        if let Some(tele) = tele {
            writer = writer.telephone_event(tele);
        }
        let result = writer.write(params.pt(), now, time, payload.to_vec());
        self.drain_rtc();
        result.map_err(|e| ClientError::Send(e.to_string()))?;
        if let Err(error) = self.rtc.handle_input(Input::Timeout(self.last_now)) {
            self.fail(&error.to_string());
        }
        Ok(())
    }

    fn audio_params(&mut self) -> Option<PayloadParams> {
        let mid = self.mid?;
        let writer = self.rtc.writer(mid)?;
        writer
            .payload_params()
            .find(|p| p.spec().codec.is_audio())
            .copied()
    }

    fn refresh_direction(&mut self) {
        let Some(direction) = self
            .mid
            .and_then(|mid| self.rtc.media(mid))
            .map(|m| m.direction())
        else {
            return;
        };
        if direction != self.direction {
            self.direction = direction;
            self.pending
                .push_back(ClientOutput::Event(ClientEvent::DirectionChanged(direction)));
        }
    }

    fn drain_rtc(&mut self) {
        while let Some(output) = self.poll_rtc() {
            self.pending.push_back(output);
        }
    }

    fn poll_rtc(&mut self) -> Option<ClientOutput> {
        while self.alive {
            let output = match self.rtc.poll_output() {
                Ok(output) => output,
                Err(error) => {
                    self.fail(&error.to_string());
                    return self.pending.pop_front();
                }
            };
            match output {
                str0m::Output::Timeout(at) => {
                    self.rtc_timeout = at;
                    return None;
                }
                str0m::Output::Transmit(t) => {
                    return Some(ClientOutput::Transmit(Transmit {
                        to: t.destination,
                        from: t.source,
                        bytes: t.contents.into(),
                    }));
                }
                str0m::Output::Event(event) => {
                    if let Some(event) = self.translate(event) {
                        return Some(ClientOutput::Event(event));
                    }
                }
            }
        }
        None
    }

    fn translate(&mut self, event: str0m::Event) -> Option<ClientEvent> {
        match event {
            str0m::Event::Connected => Some(ClientEvent::Connected),
            str0m::Event::MediaData(data) => self.media_data(data),
            str0m::Event::MediaChanged(change) if Some(change.mid) == self.mid => {
                if change.direction == self.direction {
                    return None;
                }
                self.direction = change.direction;
                Some(ClientEvent::DirectionChanged(change.direction))
            }
            str0m::Event::IceConnectionStateChange(IceConnectionState::Disconnected)
            | str0m::Event::Closed => {
                self.alive = false;
                self.rtc.disconnect();
                Some(ClientEvent::Disconnected)
            }
            _ => None,
        }
    }

    fn media_data(&mut self, data: MediaData) -> Option<ClientEvent> {
        if let CodecExtra::Tele(report) = data.codec_extra {
            if !report.end || self.last_dtmf == Some(data.time) {
                return None;
            }
            self.last_dtmf = Some(data.time);
            return Some(ClientEvent::Dtmf {
                event: report.event,
                duration: report.duration,
            });
        }
        Some(ClientEvent::Audio {
            pt: *data.pt,
            rtp_time: data.time.numer(),
            seq: **data.seq_range.start(),
            payload: data.data,
        })
    }

    fn fail(&mut self, reason: &str) {
        if !self.alive {
            return;
        }
        tracing::debug!(%reason, "WebRTC client failed");
        self.alive = false;
        self.rtc.disconnect();
        self.pending
            .push_back(ClientOutput::Event(ClientEvent::Disconnected));
    }
}

/// RFC 4733 §3.2 event code of a DTMF digit.
fn dtmf_event(digit: char) -> Option<u8> {
    let index = "0123456789*#ABCD".find(digit.to_ascii_uppercase())?;
    u8::try_from(index).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_map_to_events() {
        assert_eq!(dtmf_event('0'), Some(0));
        assert_eq!(dtmf_event('9'), Some(9));
        assert_eq!(dtmf_event('*'), Some(10));
        assert_eq!(dtmf_event('#'), Some(11));
        assert_eq!(dtmf_event('a'), Some(12));
        assert_eq!(dtmf_event('x'), None);
    }

    #[test]
    fn chrome_offer_lists_chrome_payload_types() {
        let now = Instant::now();
        let mut client =
            WebrtcClient::new(now, &ClientConfig::chrome("127.0.0.1:40000".parse().unwrap())).unwrap();
        let offer = client.create_offer().unwrap();
        let m_line = offer.lines().find(|l| l.starts_with("m=audio")).unwrap();
        assert!(m_line.ends_with("UDP/TLS/RTP/SAVPF 111 0 8 110 126"), "{m_line}");
        assert!(offer.contains("a=fmtp:111 minptime=10;useinbandfec=1"), "{offer}");
        assert!(offer.contains("a=rtpmap:110 telephone-event/48000"), "{offer}");
        assert!(offer.contains("a=rtpmap:126 telephone-event/8000"), "{offer}");
        assert!(offer.contains("a=setup:actpass"), "{offer}");
        assert!(offer.contains("127.0.0.1 40000 typ host"), "{offer}");
    }

    #[test]
    fn refuses_a_config_without_audio() {
        let config = ClientConfig {
            local_addr: "127.0.0.1:40000".parse().unwrap(),
            codecs: vec![OfferedCodec::TelephoneEvent {
                pt: 101,
                clock_rate: 8000,
            }],
        };
        assert_eq!(
            WebrtcClient::new(Instant::now(), &config).map(|_| ()),
            Err(ClientError::NoCodec)
        );
    }
}
