//! A `WebrtcClient` (the browser) ⇄ `MediaSession` ⇄ an in-test PBX, on a simulated clock, with no
//! sockets: every datagram one side sends is handed to the other after a 1 ms one-way delay, and
//! time jumps to whichever deadline comes first, so a 30-second media timeout runs in milliseconds.
//!
//! The PBX stands where `sipp -rtp_echo` would: it reflects each RTP packet back to where it came
//! from, or re-packetizes what it gets into 30 ms packets, or only listens (for DTMF). The gateway
//! sits behind a simulated 1:1 NAT: it advertises 203.0.113.10 and its sockets are bound to 10.0.0.5.
//!
//! Audio is checked by its content: the browser sends a 440 Hz tone as Opus, and what comes back is
//! decoded and its frequency measured with the Goertzel algorithm.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use callgate::b2bua::Leg;
use callgate::config::{MediaConfig, TranscodeMode};
use callgate::media::opus_codec::{OpusDecoder8k, OpusEncoder8k, OpusEncoderConfig};
use callgate::media::session::{
    FRAME, MediaEvent, MediaSession, Output, Reoffer, SessionSettings, SocketKind,
};
use callgate::media::webrtc_client::{ClientConfig, ClientEvent, ClientOutput, WebrtcClient};
use callgate::media::webrtc_leg::AudioCodec;
use callgate::sdp::Codec;
use str0m::media::Direction as WebrtcDirection;

#[path = "common/tone.rs"]
mod tone;

use tone::{assert_clean_tone, assert_tone, tone_frame};

const ONE_WAY_DELAY: Duration = Duration::from_millis(1);
const PUBLIC_IP: [u8; 4] = [203, 0, 113, 10];
const BIND_IP: [u8; 4] = [10, 0, 0, 5];
const WEBRTC_PORT: u16 = 50_000;
const RTP_PORT: u16 = 20_000;
const TELEPHONE_EVENT_PT: u8 = 101;

fn client_addr() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}
fn pbx_addr() -> SocketAddr {
    "192.0.2.20:30000".parse().unwrap()
}
fn advertised_webrtc() -> SocketAddr {
    SocketAddr::new(IpAddr::from(PUBLIC_IP), WEBRTC_PORT)
}
fn bound_webrtc() -> SocketAddr {
    SocketAddr::new(IpAddr::from(BIND_IP), WEBRTC_PORT)
}
fn public_rtp() -> SocketAddr {
    SocketAddr::new(IpAddr::from(PUBLIC_IP), RTP_PORT)
}
fn bound_rtp() -> SocketAddr {
    SocketAddr::new(IpAddr::from(BIND_IP), RTP_PORT)
}

/// An SDP as Asterisk writes it, for the PBX's answers and re-INVITEs.
fn pbx_sdp(version: u64, codec: Codec, direction: &str, ptime: u32) -> String {
    let pt = codec.static_payload_type();
    let name = codec.encoding_name();
    [
        "v=0".to_owned(),
        format!("o=- 1000 {version} IN IP4 192.0.2.20"),
        "s=Asterisk".to_owned(),
        "c=IN IP4 192.0.2.20".to_owned(),
        "t=0 0".to_owned(),
        format!("m=audio 30000 RTP/AVP {pt} {TELEPHONE_EVENT_PT}"),
        format!("a=rtpmap:{pt} {name}/8000"),
        format!("a=rtpmap:{TELEPHONE_EVENT_PT} telephone-event/8000"),
        format!("a=fmtp:{TELEPHONE_EVENT_PT} 0-16"),
        format!("a=ptime:{ptime}"),
        format!("a={direction}"),
        String::new(),
    ]
    .join("\r\n")
}

/// An RTP packet as the PBX saw it.
#[derive(Debug, Clone)]
struct Rtp {
    at: Instant,
    pt: u8,
    marker: bool,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    payload: Vec<u8>,
}

impl Rtp {
    fn parse(at: Instant, bytes: &[u8]) -> Option<Rtp> {
        if bytes.len() < 12 || bytes[0] >> 6 != 2 || (200..=204).contains(&bytes[1]) {
            return None;
        }
        let csrcs = usize::from(bytes[0] & 0x0f);
        let start = 12 + 4 * csrcs;
        Some(Rtp {
            at,
            pt: bytes[1] & 0x7f,
            marker: bytes[1] & 0x80 != 0,
            seq: u16::from_be_bytes([bytes[2], bytes[3]]),
            timestamp: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            ssrc: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            payload: bytes.get(start..)?.to_vec(),
        })
    }
}

fn rtp_bytes(pt: u8, marker: bool, seq: u16, timestamp: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x80, pt | if marker { 0x80 } else { 0 }];
    bytes.extend_from_slice(&seq.to_be_bytes());
    bytes.extend_from_slice(&timestamp.to_be_bytes());
    bytes.extend_from_slice(&ssrc.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// What the in-test PBX does with the RTP it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PbxMode {
    /// Reflect every packet unchanged to where it came from (`sipp -rtp_echo`).
    Echo,
    /// Send the audio payload bytes back in 30 ms packets of its own stream.
    Reframe30,
    /// Only listen.
    Listen,
}

/// The in-test PBX.
struct Pbx {
    mode: PbxMode,
    /// Whether it sends at all (it answered or offered a direction in which it sends).
    sending: bool,
    received: Vec<Rtp>,
    /// Reframe30: audio bytes waiting, and its own stream.
    pending: Vec<u8>,
    next_send: Option<Instant>,
    seq: u16,
    timestamp: u32,
    audio_pt: u8,
}

impl Pbx {
    fn new(mode: PbxMode, audio_pt: u8) -> Self {
        Pbx {
            mode,
            sending: true,
            received: Vec::new(),
            pending: Vec::new(),
            next_send: None,
            seq: 7000,
            timestamp: 123_456,
            audio_pt,
        }
    }

    fn audio(&self) -> impl Iterator<Item = &Rtp> {
        self.received.iter().filter(|p| p.pt != TELEPHONE_EVENT_PT)
    }

    fn events(&self) -> impl Iterator<Item = &Rtp> {
        self.received.iter().filter(|p| p.pt == TELEPHONE_EVENT_PT)
    }

    /// Takes a datagram; returns what to send back right away.
    fn receive(&mut self, now: Instant, bytes: &[u8]) -> Option<Vec<u8>> {
        let packet = Rtp::parse(now, bytes)?;
        let reply = match self.mode {
            PbxMode::Echo if self.sending => Some(bytes.to_vec()),
            PbxMode::Reframe30 if packet.pt == self.audio_pt => {
                self.pending.extend_from_slice(&packet.payload);
                self.next_send.get_or_insert(now);
                None
            }
            _ => None,
        };
        self.received.push(packet);
        reply
    }

    /// Reframe30: the next 30 ms packet, when due.
    fn poll(&mut self, now: Instant) -> Option<Vec<u8>> {
        let due = self.next_send.filter(|at| *at <= now)?;
        self.next_send = Some(due + Duration::from_millis(30));
        if self.pending.len() < 240 || !self.sending {
            return None;
        }
        let payload: Vec<u8> = self.pending.drain(..240).collect();
        let bytes = rtp_bytes(
            self.audio_pt,
            false,
            self.seq,
            self.timestamp,
            0x0bad_cafe,
            &payload,
        );
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(240);
        Some(bytes)
    }
}

/// Drops, delays and duplicates media packets on one wire.
#[derive(Debug, Clone, Copy, Default)]
struct Impairment {
    /// Drop every n-th media packet.
    drop_every: Option<u64>,
    /// Hold every n-th media packet back 30 ms, so that the next ones overtake it.
    delay_every: Option<u64>,
    /// Send every n-th media packet twice.
    duplicate_every: Option<u64>,
    count: u64,
}

impl Impairment {
    /// The arrival times of one datagram sent at `now` (none when dropped).
    fn arrivals(&mut self, now: Instant, bytes: &[u8]) -> Vec<Instant> {
        let normal = now + ONE_WAY_DELAY;
        let is_media = bytes.first().is_some_and(|b| (128..=191).contains(b));
        if !is_media {
            return vec![normal];
        }
        self.count += 1;
        let hits = |every: Option<u64>, offset: u64| every.is_some_and(|n| self.count % n == offset);
        if hits(self.drop_every, 0) {
            return Vec::new();
        }
        let at = if hits(self.delay_every, 1) {
            normal + Duration::from_millis(30)
        } else {
            normal
        };
        if hits(self.duplicate_every, 2) {
            vec![at, at + Duration::from_millis(3)]
        } else {
            vec![at]
        }
    }
}

/// A datagram on a simulated wire.
struct InFlight {
    arrives: Instant,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// The browser's microphone: a 440 Hz tone, Opus-encoded at 8 kHz, 20 ms per frame.
struct ToneSource {
    encoder: OpusEncoder8k,
    sample: u64,
    rtp_time: u64,
    next_at: Instant,
    /// G.711 instead of Opus (a PCMU-only browser): the payloads sent, for comparison.
    pcmu: bool,
    sent: Vec<Vec<u8>>,
}

impl ToneSource {
    fn new(start: Instant, pcmu: bool) -> Self {
        ToneSource {
            encoder: OpusEncoder8k::new(&OpusEncoderConfig::default()).unwrap(),
            sample: 0,
            rtp_time: 0,
            next_at: start,
            pcmu,
            sent: Vec::new(),
        }
    }

    fn next_frame(&mut self) -> Vec<u8> {
        let pcm = tone_frame(self.sample);
        self.sample += 160;
        let payload = if self.pcmu {
            let mut codes = vec![0u8; 160];
            callgate::media::g711::ulaw_encode(&pcm, &mut codes);
            codes
        } else {
            let mut packet = vec![0u8; 1275];
            let len = self.encoder.encode(&pcm, &mut packet).unwrap();
            packet.truncate(len);
            packet
        };
        self.sent.push(payload.clone());
        payload
    }
}

/// The browser, the session, the PBX, the wires and the clock.
struct Harness {
    now: Instant,
    /// The origin of the session's tick grid, when it has one.
    grid: Option<Instant>,
    client: WebrtcClient,
    session: MediaSession,
    pbx: Pbx,
    client_wakeup: Instant,
    to_session_webrtc: Vec<InFlight>,
    to_client: Vec<InFlight>,
    to_session_rtp: Vec<InFlight>,
    to_pbx: Vec<InFlight>,
    browser_impairment: Impairment,
    pbx_impairment: Impairment,
    source: Option<ToneSource>,
    client_events: Vec<(Instant, ClientEvent)>,
    session_events: Vec<(Instant, MediaEvent)>,
    /// PBX re-INVITE versions.
    pbx_version: u64,
    codec: Codec,
    ptime: u32,
    /// The payload type the browser's audio uses (111 Opus, 0 PCMU).
    browser_pt: u8,
}

struct Setup {
    client: ClientConfig,
    transcode: TranscodeMode,
    pbx_mode: PbxMode,
    codec: Codec,
    ptime: u32,
    rtp_timeout: Duration,
    /// Put the session's ticks on a 20 ms grid starting this long after the start (as a media worker
    /// does); `None`: no grid.
    grid_phase: Option<Duration>,
}

impl Setup {
    fn chrome() -> Self {
        Setup {
            client: ClientConfig::chrome(client_addr()),
            transcode: TranscodeMode::Always,
            pbx_mode: PbxMode::Echo,
            codec: Codec::Pcmu,
            ptime: 20,
            rtp_timeout: Duration::from_secs(30),
            grid_phase: None,
        }
    }
}

impl Harness {
    /// Offer, PBX answer, browser answer, then run until ICE and DTLS are up.
    fn connect(setup: Setup) -> Harness {
        let start = Instant::now();
        let mut client = WebrtcClient::new(start, &setup.client).unwrap();
        let offer = client.create_offer().unwrap();
        let config = MediaConfig {
            public_ip: IpAddr::from(PUBLIC_IP),
            bind_ip: IpAddr::from(BIND_IP),
            transcode: setup.transcode,
            rtp_timeout: setup.rtp_timeout,
            ..MediaConfig::default()
        };
        let mut settings = SessionSettings::new(&config, WEBRTC_PORT, RTP_PORT, SystemTime::now());
        settings.tick_grid = setup.grid_phase.map(|phase| start + phase);
        let (mut session, pbx_offer) =
            MediaSession::prepare(start, &offer, &[Codec::Pcmu, Codec::Pcma], &settings).unwrap();
        assert!(pbx_offer.contains("m=audio 20000 RTP/AVP"), "{pbx_offer}");
        assert!(pbx_offer.contains("c=IN IP4 203.0.113.10"), "{pbx_offer}");
        let answer = pbx_sdp(1, setup.codec, "sendrecv", setup.ptime);
        let browser_answer = session.apply_pbx_answer(start, &answer, false).unwrap();
        client.accept_answer(&browser_answer).unwrap();
        let mut harness = Harness {
            now: start,
            grid: settings.tick_grid,
            client,
            session,
            pbx: Pbx::new(setup.pbx_mode, setup.codec.static_payload_type()),
            client_wakeup: start,
            to_session_webrtc: Vec::new(),
            to_client: Vec::new(),
            to_session_rtp: Vec::new(),
            to_pbx: Vec::new(),
            browser_impairment: Impairment::default(),
            pbx_impairment: Impairment::default(),
            source: None,
            client_events: Vec::new(),
            session_events: Vec::new(),
            pbx_version: 1,
            codec: setup.codec,
            ptime: setup.ptime,
            browser_pt: 0,
        };
        harness.drain();
        harness.run_until(Duration::from_secs(5), |h| {
            h.session.is_connected() && h.client.is_connected()
        });
        assert!(harness.has_session_event(|e| *e == MediaEvent::Connected));
        harness.browser_pt = harness.client.audio_format().unwrap().0;
        harness
    }

    fn start_tone(&mut self) {
        let pcmu = self.browser_pt == 0;
        let mut source = ToneSource::new(self.now, pcmu);
        if let Some(old) = self.source.take() {
            source.rtp_time = old.rtp_time;
            source.sample = old.sample;
        }
        self.source = Some(source);
    }

    fn stop_tone(&mut self) -> Option<ToneSource> {
        self.source.take()
    }

    fn drain(&mut self) {
        loop {
            match self.client.poll_output() {
                ClientOutput::Timeout(at) => {
                    self.client_wakeup = at;
                    break;
                }
                ClientOutput::Transmit(t) => {
                    assert_eq!(t.from, client_addr());
                    for arrives in self.browser_impairment.arrivals(self.now, &t.bytes) {
                        self.to_session_webrtc.push(InFlight {
                            arrives,
                            from: t.from,
                            to: t.to,
                            bytes: t.bytes.clone(),
                        });
                    }
                }
                ClientOutput::Event(e) => self.client_events.push((self.now, e)),
            }
        }
        while let Some(output) = self.session.poll_output() {
            match output {
                Output::Event(e) => self.session_events.push((self.now, e)),
                Output::Transmit(t) => match t.socket {
                    SocketKind::Webrtc => {
                        assert_eq!(t.from, bound_webrtc(), "WebRTC leaves from the worker socket");
                        self.to_client.push(InFlight {
                            arrives: self.now + ONE_WAY_DELAY,
                            from: advertised_webrtc(),
                            to: t.to,
                            bytes: t.bytes.to_vec(),
                        });
                    }
                    SocketKind::Rtp | SocketKind::Rtcp => {
                        assert_eq!(t.from.ip(), IpAddr::from(BIND_IP));
                        let expected_port = if t.socket == SocketKind::Rtp {
                            RTP_PORT
                        } else {
                            RTP_PORT + 1
                        };
                        assert_eq!(t.from.port(), expected_port);
                        self.to_pbx.push(InFlight {
                            arrives: self.now + ONE_WAY_DELAY,
                            from: SocketAddr::new(IpAddr::from(PUBLIC_IP), t.from.port()),
                            to: t.to,
                            bytes: t.bytes.to_vec(),
                        });
                    }
                },
            }
        }
    }

    fn next_arrival(wire: &[InFlight]) -> Option<(usize, Instant)> {
        wire.iter()
            .enumerate()
            .min_by_key(|(i, p)| (p.arrives, *i))
            .map(|(i, p)| (i, p.arrives))
    }

    /// The first datagram on `wire` that has arrived by `now`.
    fn take_due(wire: &mut Vec<InFlight>, now: Instant) -> Option<InFlight> {
        let (index, at) = Self::next_arrival(wire)?;
        (at <= now).then(|| wire.remove(index))
    }

    /// Advances to the earliest pending thing no later than `limit` and handles everything due then.
    fn step(&mut self, limit: Instant) {
        let next = [
            Some(self.client_wakeup),
            Some(self.session.poll_timeout()),
            Self::next_arrival(&self.to_session_webrtc).map(|a| a.1),
            Self::next_arrival(&self.to_client).map(|a| a.1),
            Self::next_arrival(&self.to_session_rtp).map(|a| a.1),
            Self::next_arrival(&self.to_pbx).map(|a| a.1),
            self.source.as_ref().map(|s| s.next_at),
            self.pbx.next_send,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap()
        .min(limit)
        .max(self.now);
        self.now = next;
        let now = self.now;

        while let Some(p) = Self::take_due(&mut self.to_session_webrtc, now) {
            assert_eq!(p.to, advertised_webrtc());
            self.session
                .handle_webrtc_receive(now, p.from, bound_webrtc(), &p.bytes);
            self.drain();
        }
        while let Some(p) = Self::take_due(&mut self.to_client, now) {
            assert_eq!(p.to, client_addr());
            self.client.handle_receive(now, p.from, client_addr(), &p.bytes);
            self.drain();
        }
        while let Some(p) = Self::take_due(&mut self.to_session_rtp, now) {
            assert_eq!(p.to, public_rtp(), "the PBX sends where our SDP says");
            self.session
                .handle_rtp_receive(now, p.from, bound_rtp(), &p.bytes);
            self.drain();
        }
        while let Some(p) = Self::take_due(&mut self.to_pbx, now) {
            if p.to != pbx_addr() {
                continue; // RTCP to port 30001
            }
            if let Some(reply) = self.pbx.receive(now, &p.bytes) {
                self.pbx_send(reply);
            }
        }
        if let Some(bytes) = self.pbx.poll(now) {
            self.pbx_send(bytes);
        }
        if let Some(source) = self.source.as_mut()
            && source.next_at <= now
        {
            let payload = source.next_frame();
            let rtp_time = source.rtp_time;
            source.rtp_time += if source.pcmu { 160 } else { 960 };
            source.next_at += FRAME;
            if self.client.direction().is_sending() {
                self.client.write_audio(now, rtp_time, &payload).unwrap();
            }
            self.drain();
        }
        if self.client_wakeup <= now {
            self.client.handle_timeout(now);
            self.drain();
        }
        if self.session.poll_timeout() <= now {
            self.session.handle_timeout(now);
            self.drain();
        }
    }

    fn pbx_send(&mut self, bytes: Vec<u8>) {
        for arrives in self.pbx_impairment.arrivals(self.now, &bytes) {
            self.to_session_rtp.push(InFlight {
                arrives,
                from: pbx_addr(),
                to: public_rtp(),
                bytes: bytes.clone(),
            });
        }
    }

    fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        while self.now < until {
            self.step(until);
        }
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Harness) -> bool) {
        let until = self.now + limit;
        while !done(self) {
            assert!(self.now < until, "condition not reached within {limit:?}");
            self.step(until);
        }
    }

    /// How many media timeouts the session reported.
    fn timeouts(&self) -> usize {
        self.session_events
            .iter()
            .filter(|(_, e)| *e == MediaEvent::Timeout)
            .count()
    }

    /// A connected call with a short media timeout, the browser's tone playing for a second.
    fn talking_with_timeout(timeout: Duration) -> Harness {
        let mut h = Harness::connect(Setup {
            rtp_timeout: timeout,
            ..Setup::chrome()
        });
        h.start_tone();
        h.run_for(Duration::from_secs(1));
        h
    }

    fn has_session_event(&self, f: impl Fn(&MediaEvent) -> bool) -> bool {
        self.session_events.iter().any(|(_, e)| f(e))
    }

    /// Audio frames the browser received since `since`: (arrival, seq, payload).
    fn client_audio(&self, since: Instant) -> Vec<(Instant, u64, Vec<u8>)> {
        self.client_events
            .iter()
            .filter(|(at, _)| *at >= since)
            .filter_map(|(at, e)| match e {
                ClientEvent::Audio { seq, payload, .. } => Some((*at, *seq, payload.to_vec())),
                _ => None,
            })
            .collect()
    }

    /// The browser's received audio since `since`, decoded to 8 kHz.
    fn client_pcm(&self, since: Instant) -> Vec<f64> {
        let pt = self.browser_pt;
        let mut decoder = OpusDecoder8k::new().unwrap();
        let mut pcm = Vec::new();
        for (_, _, payload) in self.client_audio(since) {
            let mut out = [0i16; 960];
            let len = if pt == 0 {
                callgate::media::g711::ulaw_decode(&payload, &mut out)
            } else {
                decoder.decode(&payload, &mut out).unwrap()
            };
            pcm.extend(out[..len].iter().map(|&s| f64::from(s)));
        }
        pcm
    }

    /// The browser re-offers `direction`; the session must forward it to the PBX, which answers with
    /// `pbx_direction`, and the session's answer completes the browser's re-offer. Returns the offer the
    /// PBX got.
    fn browser_reinvite_forwarded(&mut self, direction: WebrtcDirection, pbx_direction: &str) -> String {
        let offer = self.client.create_reoffer(direction).unwrap();
        let Reoffer::Forward(pbx_offer) = self.session.reoffer(self.now, Leg::Browser, &offer).unwrap()
        else {
            panic!("a browser {direction:?} re-offer goes to the PBX");
        };
        self.pbx_version += 1;
        let pbx_answer = pbx_sdp(self.pbx_version, self.codec, pbx_direction, self.ptime);
        let answer = self.session.reanswer(self.now, Leg::Pbx, &pbx_answer).unwrap();
        self.client.accept_answer(&answer).unwrap();
        self.drain();
        pbx_offer
    }

    /// The PBX re-offers `direction`; the session must forward it to the browser, whose answer
    /// completes it. Returns the session's answer to the PBX.
    fn pbx_reinvite_forwarded(&mut self, direction: &str) -> String {
        let Reoffer::Forward(browser_offer) = self.pbx_reinvite(direction) else {
            panic!("a PBX {direction} re-offer goes to the browser");
        };
        let browser_answer = self.client.accept_offer(&browser_offer).unwrap();
        let pbx_answer = self
            .session
            .reanswer(self.now, Leg::Browser, &browser_answer)
            .unwrap();
        self.drain();
        pbx_answer
    }

    /// The PBX re-INVITEs with `direction`; the session forwards or answers.
    fn pbx_reinvite(&mut self, direction: &str) -> Reoffer {
        self.pbx_version += 1;
        let sdp = pbx_sdp(self.pbx_version, self.codec, direction, self.ptime);
        self.session.reoffer(self.now, Leg::Pbx, &sdp).unwrap()
    }
}

/// Inter-arrival gaps of a stream of arrival times.
fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

fn assert_seq_continuous(seqs: &[u16]) {
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0].wrapping_add(1), "sequence numbers {seqs:?}");
    }
}

#[test]
fn tone_round_trip_through_opus_and_pcmu() {
    let mut h = Harness::connect(Setup::chrome());
    assert_eq!(h.session.browser_codec(), Some(AudioCodec::Opus));
    assert_eq!(h.session.pbx_codec(), Some(Codec::Pcmu));
    assert!(h.session.is_transcoding());
    h.start_tone();
    h.run_for(Duration::from_secs(2));
    let settled = h.now;
    h.run_for(Duration::from_secs(2));
    let pcm = h.client_pcm(settled);
    assert_clean_tone(&pcm);

    // No loss anywhere: every frame the browser sent reached the PBX, came back, and reached the
    // browser, at one frame every 20 ms.
    let stats = h.session.stats();
    assert_eq!(stats.browser.packets_lost, 0, "{stats:?}");
    assert_eq!(stats.pbx.packets_lost, 0, "{stats:?}");
    assert_eq!(stats.browser.codec, Some("opus"));
    assert_eq!(stats.pbx.codec, Some("pcmu"));
    assert!(stats.transcoded);
    let sent = h.source.as_ref().unwrap().sent.len() as u64;
    assert!(stats.browser.packets_received + 2 >= sent, "{stats:?} of {sent}");
    let at_pbx: Vec<Instant> = h.pbx.audio().filter(|p| p.at >= settled).map(|p| p.at).collect();
    assert!(gaps(&at_pbx).iter().all(|g| *g == FRAME), "{:?}", gaps(&at_pbx));
    let at_client: Vec<Instant> = h.client_audio(settled).iter().map(|a| a.0).collect();
    assert!(at_client.len() >= 99, "{}", at_client.len());
    assert!(
        gaps(&at_client).iter().all(|g| *g == FRAME),
        "{:?}",
        gaps(&at_client)
    );
    let seqs: Vec<u16> = h.pbx.audio().map(|p| p.seq).collect();
    assert_seq_continuous(&seqs);
    assert!(h.pbx.audio().all(|p| p.payload.len() == 160 && p.pt == 0));
}

#[test]
fn ticks_fall_on_the_worker_grid() {
    let mut h = Harness::connect(Setup {
        grid_phase: Some(Duration::from_micros(7_300)),
        ..Setup::chrome()
    });
    let origin = h.grid.unwrap();
    h.start_tone();
    h.run_for(Duration::from_secs(2));
    let settled = h.now;
    h.run_for(Duration::from_secs(2));
    assert_clean_tone(&h.client_pcm(settled));
    let off_grid = |at: Instant| at.duration_since(origin).as_nanos() % FRAME.as_nanos();
    let to_pbx: Vec<Instant> = h.pbx.audio().map(|p| p.at - ONE_WAY_DELAY).collect();
    assert!(to_pbx.len() >= 150, "{}", to_pbx.len());
    let stray: Vec<u128> = to_pbx
        .iter()
        .map(|at| off_grid(*at))
        .filter(|n| *n != 0)
        .collect();
    assert!(stray.is_empty(), "sent off the grid by (ns) {stray:?}");
    assert!(h.client_audio(settled).len() >= 99);
    let stats = h.session.stats();
    assert_eq!(stats.browser.packets_lost, 0, "{stats:?}");
    assert_eq!(stats.pbx.packets_lost, 0, "{stats:?}");
}

#[test]
fn pbx_sending_30_ms_packets_is_reframed_to_20_ms() {
    let mut h = Harness::connect(Setup {
        pbx_mode: PbxMode::Reframe30,
        ptime: 30,
        ..Setup::chrome()
    });
    h.start_tone();
    h.run_for(Duration::from_secs(2));
    let settled = h.now;
    h.run_for(Duration::from_secs(2));
    assert_clean_tone(&h.client_pcm(settled));
    let at_client: Vec<Instant> = h.client_audio(settled).iter().map(|a| a.0).collect();
    assert!(at_client.len() >= 99, "{}", at_client.len());
    assert!(
        gaps(&at_client).iter().all(|g| *g == FRAME),
        "{:?}",
        gaps(&at_client)
    );
    // Our own stream toward the PBX stays at 20 ms whatever the PBX sends.
    assert!(h.pbx.audio().all(|p| p.payload.len() == 160));
}

#[test]
fn pcmu_only_browser_is_passed_through_untouched() {
    let mut h = Harness::connect(Setup {
        client: ClientConfig::pcmu_only(client_addr()),
        transcode: TranscodeMode::WhenNeeded,
        ..Setup::chrome()
    });
    assert_eq!(h.session.browser_codec(), Some(AudioCodec::Pcmu));
    assert!(!h.session.is_transcoding());
    h.start_tone();
    h.run_for(Duration::from_secs(2));
    let sent = h.stop_tone().unwrap().sent;
    h.run_for(Duration::from_millis(100));
    // The PBX gets the browser's exact payloads, in order, and echoes them back unchanged.
    let at_pbx: Vec<Vec<u8>> = h.pbx.audio().map(|p| p.payload.clone()).collect();
    assert_eq!(at_pbx, sent);
    let at_client: Vec<Vec<u8>> = h
        .client_audio(h.client_events[0].0)
        .into_iter()
        .map(|a| a.2)
        .collect();
    assert_eq!(at_client, sent);
    let stats = h.session.stats();
    assert!(!stats.transcoded);
    assert_eq!(stats.browser.codec, Some("pcmu"));
    assert_eq!(stats.pbx.codec, Some("pcmu"));
}

#[test]
fn transcode_policy_decides_what_chrome_gets() {
    let start = Instant::now();
    let cases = [
        (TranscodeMode::Always, Codec::Pcmu, AudioCodec::Opus, true),
        (TranscodeMode::WhenNeeded, Codec::Pcmu, AudioCodec::Pcmu, false),
        (TranscodeMode::WhenNeeded, Codec::Pcma, AudioCodec::Pcma, false),
    ];
    for (transcode, pbx_codec, browser_codec, transcoding) in cases {
        let mut client = WebrtcClient::new(start, &ClientConfig::chrome(client_addr())).unwrap();
        let offer = client.create_offer().unwrap();
        let config = MediaConfig {
            transcode,
            ..MediaConfig::default()
        };
        let settings = SessionSettings::new(&config, WEBRTC_PORT, RTP_PORT, SystemTime::now());
        let (mut session, pbx_offer) =
            MediaSession::prepare(start, &offer, &[Codec::Pcma, Codec::Pcmu], &settings).unwrap();
        assert!(pbx_offer.contains("m=audio 20000 RTP/AVP 8 0 101"), "{pbx_offer}");
        // 183 with early media first.
        let answer = session
            .apply_pbx_answer(start, &pbx_sdp(1, pbx_codec, "sendrecv", 20), true)
            .unwrap();
        assert_eq!(session.browser_codec(), Some(browser_codec), "{transcode:?}");
        assert_eq!(session.is_transcoding(), transcoding, "{transcode:?}");
        let m_line = answer.lines().find(|l| l.starts_with("m=audio")).unwrap();
        let expected_pt = match browser_codec {
            AudioCodec::Opus => "111",
            AudioCodec::Pcmu => "0",
            AudioCodec::Pcma => "8",
        };
        assert_eq!(m_line.split(' ').nth(3), Some(expected_pt), "{m_line}");
        // The 200 moves the media elsewhere: the RTP leg follows, the browser's answer stays.
        let moved = pbx_sdp(2, pbx_codec, "sendrecv", 20).replace("m=audio 30000", "m=audio 31000");
        let again = session.apply_pbx_answer(start, &moved, false).unwrap();
        assert_eq!(again, answer);
        let before = session.stats().pbx.packets_sent;
        session.send_dtmf(start, '7', 100).unwrap();
        session.handle_timeout(start);
        let mut destinations = Vec::new();
        while let Some(output) = session.poll_output() {
            if let Output::Transmit(t) = output
                && t.socket == SocketKind::Rtp
            {
                destinations.push(t.to);
            }
        }
        assert_eq!(session.stats().pbx.packets_sent, before + 1);
        assert_eq!(destinations, ["192.0.2.20:31000".parse::<SocketAddr>().unwrap()]);
    }
}

#[test]
fn hold_and_unhold_both_ways_keep_both_streams_continuous() {
    let mut h = Harness::connect(Setup::chrome());
    h.start_tone();
    h.run_for(Duration::from_secs(1));

    // The browser holds: sendonly toward the PBX, which answers recvonly and stops sending.
    h.pbx.sending = false;
    let pbx_offer = h.browser_reinvite_forwarded(WebrtcDirection::SendOnly, "recvonly");
    assert!(pbx_offer.contains("a=sendonly"), "{pbx_offer}");
    assert!(
        pbx_offer.contains("m=audio 20000 RTP/AVP 0 101"),
        "only the codec in use: {pbx_offer}"
    );
    h.run_for(Duration::from_secs(2));

    // The browser unholds.
    h.pbx.sending = true;
    let pbx_offer = h.browser_reinvite_forwarded(WebrtcDirection::SendRecv, "sendrecv");
    assert!(pbx_offer.contains("a=sendrecv"), "{pbx_offer}");
    h.run_for(Duration::from_secs(1));
    let after_browser_hold = h.now;
    h.run_for(Duration::from_secs(2));
    assert_clean_tone(&h.client_pcm(after_browser_hold));

    // The PBX holds: a WebRTC offer goes to the browser, the PBX gets recvonly; then it unholds.
    h.pbx.sending = false;
    let pbx_answer = h.pbx_reinvite_forwarded("sendonly");
    assert!(pbx_answer.contains("a=recvonly"), "{pbx_answer}");
    h.run_for(Duration::from_secs(2));
    h.pbx.sending = true;
    let pbx_answer = h.pbx_reinvite_forwarded("sendrecv");
    assert!(pbx_answer.contains("a=sendrecv"), "{pbx_answer}");

    // A session refresh (same direction, same codec) is answered without bothering the browser.
    let Reoffer::Answer(refresh_answer) = h.pbx_reinvite("sendrecv") else {
        panic!("a refresh is answered locally");
    };
    assert!(refresh_answer.contains("a=sendrecv"), "{refresh_answer}");
    let refresh = h.session.pbx_refresh_sdp();
    assert_eq!(
        refresh,
        h.session.pbx_refresh_sdp(),
        "an unchanged refresh keeps its version"
    );

    h.run_for(Duration::from_secs(1));
    let after_pbx_hold = h.now;
    h.run_for(Duration::from_secs(2));
    assert_clean_tone(&h.client_pcm(after_pbx_hold));
    assert!(!h.has_session_event(|e| *e == MediaEvent::Timeout));

    // Toward the PBX: one SSRC, sequence numbers without a gap, timestamps forward only.
    let audio: Vec<_> = h.pbx.audio().cloned().collect();
    assert!(audio.iter().all(|p| p.ssrc == audio[0].ssrc));
    assert_seq_continuous(&audio.iter().map(|p| p.seq).collect::<Vec<_>>());
    for w in audio.windows(2) {
        let step = w[1].timestamp.wrapping_sub(w[0].timestamp);
        assert!((160..8000 * 10).contains(&step), "timestamp step {step}");
        if step > 160 {
            assert!(w[1].marker, "the first packet after a pause carries the marker");
        }
    }
    // Toward the browser: one stream, sequence numbers without a gap across both holds.
    let seqs: Vec<u64> = h.client_audio(h.client_events[0].0).iter().map(|a| a.1).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

/// Telephone-events the PBX received, one entry per event (its timestamp): (event, end packets, first
/// and last sequence number).
fn events_at_pbx(pbx: &Pbx) -> Vec<(u8, usize, u16, u16, u16)> {
    let mut by_timestamp: BTreeMap<u32, (u8, usize, u16, u16, u16)> = BTreeMap::new();
    for p in pbx.events() {
        let entry = by_timestamp
            .entry(p.timestamp)
            .or_insert((p.payload[0], 0, p.seq, p.seq, 0));
        assert_eq!(entry.0, p.payload[0], "one event per timestamp");
        if p.payload[1] & 0x80 != 0 {
            entry.1 += 1;
            entry.4 = u16::from_be_bytes([p.payload[2], p.payload[3]]);
        }
        entry.3 = p.seq;
    }
    let mut events: Vec<_> = by_timestamp.into_values().collect();
    events.sort_by_key(|e| e.2);
    events
}

fn assert_digits_once(h: &Harness, expected: &[u8]) {
    let events = events_at_pbx(&h.pbx);
    let codes: Vec<u8> = events.iter().map(|e| e.0).collect();
    assert_eq!(codes, expected, "{events:?}");
    for &(_, ends, first, last, duration) in &events {
        assert_eq!(ends, 3, "the end report is sent three times");
        // 100 ms at 8000 Hz, whole 20 ms packets.
        assert_eq!(duration, 800);
        // Never also as audio: no audio packet inside the event.
        assert!(
            h.pbx.audio().all(
                |p| p.seq.wrapping_sub(first) as i16 > (last.wrapping_sub(first)) as i16
                    || (p.seq.wrapping_sub(first) as i16) < 0
            ),
            "audio inside the event {first}..={last}"
        );
    }
    assert!(h.pbx.events().all(|p| p.pt == TELEPHONE_EVENT_PT));
}

#[test]
fn dtmf_by_sip_info_reaches_the_pbx_once_per_digit() {
    let mut h = Harness::connect(Setup {
        pbx_mode: PbxMode::Listen,
        ..Setup::chrome()
    });
    h.start_tone();
    h.run_for(Duration::from_millis(500));
    for digit in "1234#".chars() {
        h.session.send_dtmf(h.now, digit, 100).unwrap();
        h.drain();
        h.run_for(Duration::from_millis(300));
    }
    h.run_for(Duration::from_secs(1));
    assert_digits_once(&h, &[1, 2, 3, 4, 11]);
    assert!(h.session.send_dtmf(h.now, 'x', 100).is_err());
}

#[test]
fn dtmf_by_rfc4733_from_the_browser_reaches_the_pbx_once_per_digit() {
    for transcode in [TranscodeMode::Always, TranscodeMode::WhenNeeded] {
        let mut h = Harness::connect(Setup {
            pbx_mode: PbxMode::Listen,
            transcode,
            ..Setup::chrome()
        });
        h.start_tone();
        h.run_for(Duration::from_millis(500));
        let source = h.stop_tone().unwrap();
        let (_, clock_rate) = h.client.audio_format().unwrap();
        let frame = u64::from(clock_rate / 50);
        for (i, digit) in "1234#".chars().enumerate() {
            let rtp_time = source.rtp_time + (i as u64 * 15 + 1) * frame;
            h.client
                .send_dtmf(h.now, rtp_time, digit, Duration::from_millis(100))
                .unwrap();
            h.drain();
            h.run_for(Duration::from_millis(300));
        }
        h.run_for(Duration::from_secs(1));
        assert_digits_once(&h, &[1, 2, 3, 4, 11]);
    }
}

#[test]
fn dtmf_from_the_pbx_reaches_the_browser_once() {
    for transcode in [TranscodeMode::Always, TranscodeMode::WhenNeeded] {
        let mut h = Harness::connect(Setup {
            pbx_mode: PbxMode::Listen,
            transcode,
            ..Setup::chrome()
        });
        h.run_for(Duration::from_millis(200));
        // 100 ms of '5' at 8000 Hz: an update every 20 ms, the end report three times.
        let timestamp = 80_000;
        for tick in 1..=5u16 {
            let end = tick == 5;
            let payload = [5, if end { 0x8a } else { 0x0a }, 0, 0];
            let mut payload = payload;
            payload[2..].copy_from_slice(&(tick * 160).to_be_bytes());
            for _ in 0..if end { 3 } else { 1 } {
                let bytes = rtp_bytes(
                    TELEPHONE_EVENT_PT,
                    tick == 1,
                    100 + tick,
                    timestamp,
                    0x5eed,
                    &payload,
                );
                h.pbx_send(bytes);
            }
            h.run_for(FRAME);
        }
        h.run_for(Duration::from_secs(1));
        let digits: Vec<_> = h
            .client_events
            .iter()
            .filter_map(|(_, e)| match e {
                ClientEvent::Dtmf { event, duration } => Some((*event, *duration)),
                _ => None,
            })
            .collect();
        assert_eq!(digits, [(5, Duration::from_millis(100))], "{transcode:?}");
    }
}

#[test]
fn media_timeout_fires_after_silence_but_not_during_hold() {
    let timeout = Duration::from_secs(10);
    let mut h = Harness::talking_with_timeout(timeout);

    // The PBX holds and goes quiet; the browser stops too. Three timeouts' worth of silence.
    h.pbx.sending = false;
    h.pbx_reinvite_forwarded("sendonly");
    h.stop_tone();
    h.run_for(timeout * 3);
    assert_eq!(h.timeouts(), 0, "no timeout on hold");

    // Unhold; both sides send again for a while, then the PBX goes silent.
    h.pbx.sending = true;
    h.pbx_reinvite_forwarded("sendrecv");
    h.start_tone();
    h.run_for(Duration::from_secs(2));
    assert_eq!(h.timeouts(), 0);
    h.pbx.sending = false;
    let silent_from = h.now;
    h.run_until(timeout * 2, |h| h.timeouts() > 0);
    // Counted from the PBX's last packet, which was on the wire when it stopped.
    let after = h.now - silent_from;
    let window = timeout - Duration::from_millis(25)..=timeout + Duration::from_millis(25);
    assert!(window.contains(&after), "{after:?}");
    assert_eq!(h.timeouts(), 1);
    h.run_for(timeout);
    assert_eq!(h.timeouts(), 1, "reported once");
}

#[test]
fn a_silent_browser_times_out_too() {
    let timeout = Duration::from_secs(10);
    let mut h = Harness::talking_with_timeout(timeout);
    h.stop_tone();
    let silent_from = h.now;
    // The PBX keeps talking (Reframe would need input; send a steady stream by hand).
    h.pbx.mode = PbxMode::Listen;
    let mut seq = 1u16;
    while h.timeouts() == 0 {
        assert!(h.now - silent_from < timeout * 2, "no timeout");
        let bytes = rtp_bytes(0, false, seq, u32::from(seq) * 160, 0x77, &[0xff; 160]);
        seq = seq.wrapping_add(1);
        h.pbx_send(bytes);
        h.run_for(FRAME);
    }
    let after = h.now - silent_from;
    let window = timeout - Duration::from_millis(25)..=timeout + Duration::from_millis(25);
    assert!(window.contains(&after), "{after:?}");
}

#[test]
fn loss_reorder_and_duplicates_on_both_sides_still_give_steady_output() {
    let mut h = Harness::connect(Setup::chrome());
    h.browser_impairment = Impairment {
        drop_every: Some(13),
        delay_every: Some(7),
        duplicate_every: Some(5),
        count: 0,
    };
    h.pbx_impairment = Impairment {
        drop_every: Some(11),
        delay_every: Some(9),
        duplicate_every: Some(6),
        count: 0,
    };
    h.start_tone();
    h.run_for(Duration::from_secs(2));
    let settled = h.now;
    h.run_for(Duration::from_secs(3));

    // Toward the PBX: a packet every 20 ms, no sequence gap, whatever the browser's wire did.
    let at_pbx: Vec<Rtp> = h.pbx.audio().filter(|p| p.at >= settled).cloned().collect();
    assert!(at_pbx.len() >= 149, "{}", at_pbx.len());
    let times: Vec<Instant> = at_pbx.iter().map(|p| p.at).collect();
    assert!(gaps(&times).iter().all(|g| *g == FRAME), "{:?}", gaps(&times));
    assert_seq_continuous(&at_pbx.iter().map(|p| p.seq).collect::<Vec<_>>());
    // Toward the browser likewise, and the tone survives concealment.
    let at_client: Vec<Instant> = h.client_audio(settled).iter().map(|a| a.0).collect();
    assert!(at_client.len() >= 149, "{}", at_client.len());
    assert!(
        gaps(&at_client).iter().all(|g| *g == FRAME),
        "{:?}",
        gaps(&at_client)
    );
    assert_tone(&h.client_pcm(settled));
    // RFC 3550 counts duplicates as received, so only the browser side (fewer duplicates than
    // losses) shows a net loss.
    let stats = h.session.stats();
    assert!(stats.browser.packets_lost > 0, "{stats:?}");
}

#[test]
fn close_sends_bye_and_reports_the_call() {
    let mut h = Harness::connect(Setup::chrome());
    h.start_tone();
    h.run_for(Duration::from_secs(1));
    h.stop_tone();
    let before = h.to_pbx.len();
    h.session.close(h.now);
    h.drain();
    assert!(h.session.is_closed());
    // An RTCP BYE toward the PBX's RTCP port.
    let bye = h.to_pbx[before..]
        .iter()
        .any(|p| p.to.port() == 30_001 && p.bytes.windows(2).any(|w| w[0] & 0xc0 == 0x80 && w[1] == 203));
    assert!(bye, "RTCP BYE sent");
    h.run_until(Duration::from_secs(2), |h| {
        h.client_events
            .iter()
            .any(|(_, e)| *e == ClientEvent::Disconnected)
    });
    let stats = h.session.stats();
    assert!(stats.browser.packets_received >= 45, "{stats:?}");
    assert!(stats.pbx.packets_sent >= 45, "{stats:?}");
    assert!(
        h.session
            .reoffer(h.now, Leg::Pbx, &pbx_sdp(9, Codec::Pcmu, "sendrecv", 20))
            .is_err()
    );
}
