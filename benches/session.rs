//! One call's media through `media::session::MediaSession`, everything included: SRTP through str0m
//! on the browser side, the RTP leg, both jitter buffers, the codecs, the 20 ms pipeline tick and
//! RTCP. A `WebrtcClient` plays the browser (connected by a real ICE and DTLS handshake) and sends the
//! browser's Opus packets; prepared µ-law RTP plays the PBX. Time is simulated.
//!
//! An iteration is one 20 ms tick of one call: the browser's packet in, the PBX's packet in, the
//! session's timeout, and every output drained. Only the session's work is timed (the client's
//! encryption and decryption run between the timed parts), so the figure is the gateway's CPU per call
//! per 20 ms. `passthrough` is a PCMU-only browser with `transcode = "when_needed"`: packets are relayed
//! without jitter buffers or codecs.
//!
//! `cargo bench --bench session`; docs/benchmarks.md holds the measured table.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use call_audio::CallAudio;
use callgate::config::{MediaConfig, TranscodeMode};
use callgate::media::opus_codec::FRAME_SAMPLES;
use callgate::media::rtp_packet::{RTP_HEADER_LEN, RtpHeader};
use callgate::media::session::{MediaSession, Output, SessionSettings, SocketKind};
use callgate::media::webrtc_client::{ClientConfig, ClientOutput, WebrtcClient};
use callgate::sdp::Codec;
use criterion::{criterion_group, criterion_main};
use settings::CpuCriterion;

#[path = "support/call_audio.rs"]
mod call_audio;
#[path = "support/settings.rs"]
mod settings;
#[path = "support/speech.rs"]
mod speech;

const TICK: Duration = Duration::from_millis(20);
const ASTERISK_ANSWER: &str = include_str!("../tests/fixtures/sdp/pbx/asterisk20-answer.sdp");
/// Where Asterisk's RTP comes from: the address and port of its answer.
const PBX_RTP: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 20)), 17062);
const PBX_SSRC: u32 = 0xa5a5_0002;
const BIND_IP: [u8; 4] = [10, 0, 0, 5];
const PUBLIC_IP: [u8; 4] = [203, 0, 113, 10];
const WEBRTC_PORT: u16 = 50_000;
const RTP_PORT: u16 = 20_000;

fn client_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40_000))
}

fn bound(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::from(BIND_IP), port)
}

fn advertised_webrtc() -> SocketAddr {
    SocketAddr::new(IpAddr::from(PUBLIC_IP), WEBRTC_PORT)
}

fn ulaw_payloads(audio: &CallAudio) -> Vec<Vec<u8>> {
    audio.ulaw.iter().map(|codes| codes.to_vec()).collect()
}

/// Which call.
#[derive(Clone, Copy)]
enum Kind {
    /// A Chrome offer (Opus first), the PBX answering PCMU: Opus ⇄ PCMU.
    Transcoding,
    /// A PCMU-only browser, `transcode = "when_needed"`: PCMU relayed both ways.
    Passthrough,
}

/// The browser, the session, what is in flight between them, and the clock.
struct Call {
    now: Instant,
    client: WebrtcClient,
    client_wakeup: Instant,
    session: MediaSession,
    /// Datagrams from the browser not yet given to the session.
    to_session: Vec<Vec<u8>>,
    /// Datagrams from the session not yet given to the browser.
    to_client: Vec<Vec<u8>>,
    /// RTP packets the session sent toward the PBX since the last look.
    rtp_sent: u64,
    browser_payloads: Vec<Vec<u8>>,
    /// RTP clock ticks per 20 ms on the browser side.
    browser_step: u64,
    pbx_payloads: Vec<Vec<u8>>,
    pbx_datagram: Vec<u8>,
    tick: u64,
}

impl Call {
    /// Offer, PBX answer, browser answer, then the ICE and DTLS handshake until both are connected.
    fn connect(kind: Kind, audio: &CallAudio) -> Call {
        let start = Instant::now();
        let (client_config, transcode, browser_payloads, browser_step) = match kind {
            Kind::Transcoding => (
                ClientConfig::chrome(client_addr()),
                TranscodeMode::Always,
                audio.browser_packets.clone(),
                call_audio::BROWSER_FRAME as u64,
            ),
            Kind::Passthrough => (
                ClientConfig::pcmu_only(client_addr()),
                TranscodeMode::WhenNeeded,
                ulaw_payloads(audio),
                FRAME_SAMPLES as u64,
            ),
        };
        // The setup is fixed and valid (the media session tests run the same); a failure here is a
        // broken build, not a measurement.
        let mut client = WebrtcClient::new(start, &client_config).expect("client");
        let offer = client.create_offer().expect("browser offer");
        let config = MediaConfig {
            public_ip: IpAddr::from(PUBLIC_IP),
            bind_ip: IpAddr::from(BIND_IP),
            transcode,
            ..MediaConfig::default()
        };
        let settings = SessionSettings::new(&config, WEBRTC_PORT, RTP_PORT, SystemTime::now());
        let (mut session, _pbx_offer) =
            MediaSession::prepare(start, &offer, &[Codec::Pcmu, Codec::Pcma], &settings).expect("prepare");
        let answer = session
            .apply_pbx_answer(start, ASTERISK_ANSWER, false)
            .expect("PBX answer");
        client.accept_answer(&answer).expect("browser accepts the answer");
        let mut call = Call {
            now: start,
            client,
            client_wakeup: start,
            session,
            to_session: Vec::new(),
            to_client: Vec::new(),
            rtp_sent: 0,
            browser_payloads,
            browser_step,
            pbx_payloads: ulaw_payloads(audio),
            pbx_datagram: vec![0; RTP_HEADER_LEN + FRAME_SAMPLES],
            tick: 0,
        };
        for _ in 0..5000 {
            if call.session.is_connected() && call.client.is_connected() {
                break;
            }
            call.drain_client();
            call.deliver_to_session();
            call.session_timeouts();
            call.deliver_to_client();
            call.now += Duration::from_millis(1);
        }
        assert!(
            call.session.is_connected() && call.client.is_connected(),
            "handshake"
        );
        assert_eq!(
            call.session.is_transcoding(),
            matches!(kind, Kind::Transcoding),
            "the session took the expected path"
        );
        call
    }

    /// The client's transmits go on the wire toward the session; its next wake-up is noted.
    fn drain_client(&mut self) {
        loop {
            match self.client.poll_output() {
                ClientOutput::Timeout(at) => {
                    self.client_wakeup = at;
                    break;
                }
                ClientOutput::Transmit(transmit) => self.to_session.push(transmit.bytes.to_vec()),
                ClientOutput::Event(_) => {}
            }
        }
    }

    /// The session's transmits: WebRTC toward the browser, RTP and RTCP counted (the PBX is played by
    /// prepared packets).
    fn drain_session(&mut self) {
        while let Some(output) = self.session.poll_output() {
            if let Output::Transmit(transmit) = output {
                match transmit.socket {
                    SocketKind::Webrtc => self.to_client.push(transmit.bytes.to_vec()),
                    SocketKind::Rtp => self.rtp_sent += 1,
                    SocketKind::Rtcp => {}
                }
            }
        }
    }

    fn deliver_to_session(&mut self) {
        for datagram in std::mem::take(&mut self.to_session) {
            self.session
                .handle_webrtc_receive(self.now, client_addr(), bound(WEBRTC_PORT), &datagram);
            self.drain_session();
        }
    }

    fn session_timeouts(&mut self) {
        // A handful is plenty: the session catches up on its own deadlines inside one call.
        for _ in 0..4 {
            if self.session.poll_timeout() > self.now {
                break;
            }
            self.session.handle_timeout(self.now);
            self.drain_session();
        }
    }

    fn deliver_to_client(&mut self) {
        for datagram in std::mem::take(&mut self.to_client) {
            self.client
                .handle_receive(self.now, advertised_webrtc(), client_addr(), &datagram);
        }
        if self.client_wakeup <= self.now {
            self.client.handle_timeout(self.now);
        }
        self.drain_client();
    }

    /// The browser's and the PBX's packets for this tick, ready to be received (not timed).
    fn prepare_tick(&mut self) {
        let index = self.tick as usize;
        let payload = &self.browser_payloads[index % self.browser_payloads.len()];
        // The client is connected and sending; a refusal would only mean one packet less.
        let _ = self
            .client
            .write_audio(self.now, self.tick * self.browser_step, payload);
        self.drain_client();
        let header = RtpHeader {
            marker: self.tick == 0,
            payload_type: Codec::Pcmu.static_payload_type(),
            sequence_number: self.tick as u16,
            timestamp: (self.tick * FRAME_SAMPLES as u64) as u32,
            ssrc: PBX_SSRC,
        };
        let payload = &self.pbx_payloads[index % self.pbx_payloads.len()];
        // The buffer is sized for the header and one 20 ms frame.
        header
            .write(payload, &mut self.pbx_datagram)
            .expect("buffer fits one packet");
    }

    /// The gateway's share of the tick: everything the media worker would do for this call.
    fn session_tick(&mut self) {
        self.deliver_to_session();
        self.session
            .handle_rtp_receive(self.now, PBX_RTP, bound(RTP_PORT), &self.pbx_datagram);
        self.drain_session();
        self.session_timeouts();
    }

    /// After the tick: the browser takes what the session sent, and time moves on (not timed).
    fn finish_tick(&mut self) {
        self.deliver_to_client();
        self.tick += 1;
        self.now += TICK;
    }
}

fn session(c: &mut CpuCriterion) {
    let audio = call_audio::call_audio("session");
    let mut group = c.benchmark_group("media_session_20ms_tick");
    speech::whole_speech_samples(&mut group);
    for (name, kind) in [
        ("transcoding_opus_pcmu", Kind::Transcoding),
        ("passthrough_pcmu", Kind::Passthrough),
    ] {
        let mut call = Call::connect(kind, &audio);
        // Measure a call that carries audio: after the jitter buffers fill, packets leave both ways.
        for _ in 0..50 {
            call.prepare_tick();
            call.session_tick();
            call.finish_tick();
        }
        let (rtp_before, webrtc_before) = (call.rtp_sent, call.to_client.len());
        call.prepare_tick();
        call.session_tick();
        assert!(call.rtp_sent > rtp_before, "{name}: no RTP toward the PBX");
        assert!(
            call.to_client.len() > webrtc_before,
            "{name}: nothing toward the browser"
        );
        call.finish_tick();

        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let mut spent = 0;
                for _ in 0..iterations {
                    call.prepare_tick();
                    let start = settings::thread_cpu_nanos();
                    call.session_tick();
                    spent += settings::thread_cpu_nanos() - start;
                    call.finish_tick();
                }
                spent
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = settings::short_runs();
    targets = session
}
criterion_main!(benches);
