//! One 20 ms packet through the transcoding path, each way, with the parts that exist today:
//!
//! - PBX to browser: RTP datagram into the RTP leg (parse, source latch, receive statistics), jitter
//!   buffer push and poll, G.711 µ-law decode, Opus encode from 8 kHz at the default settings.
//! - Browser to PBX: the browser's Opus packet through its jitter buffer (48 kHz clock), Opus decode
//!   straight to 8 kHz, µ-law encode, RTP packet written by the RTP leg.
//!
//! SRTP and the str0m WebRTC leg are not in this path. Time is simulated: an iteration is one 20 ms
//! tick of one call. `cargo bench --bench pipeline`; docs/benchmarks.md holds the measured table.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use callgate::media::g711;
use callgate::media::jitter::{JitterBuffer, JitterConfig, JitterOutput, PacketHeader};
use callgate::media::opus_codec::{
    FRAME_SAMPLES, MAX_PACKET_BYTES, MAX_PACKET_SAMPLES, OpusDecoder8k, OpusEncoder8k, OpusEncoderConfig,
};
use callgate::media::rtp_leg::{Received, RtpLeg, RtpLegConfig};
use callgate::media::rtp_packet::{RTP_HEADER_LEN, RtpHeader};
use callgate::sdp::{Codec, PbxSdp};
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
const PBX_RTP: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 20)),
    17062,
);
const PBX_SSRC: u32 = 0xa5a5_0002;
const BROWSER_SSRC: u32 = 0x0b0b_0003;

fn local_rtp() -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 10], 20000))
}

/// A call's media state, past setup: the PBX leg answered with PCMU, both jitter buffers, both codecs.
struct Call {
    now: Instant,
    tick: u64,
    leg: RtpLeg,
    pbx_jitter: JitterBuffer,
    browser_jitter: JitterBuffer,
    encoder: OpusEncoder8k,
    decoder: OpusDecoder8k,
    /// The PBX's RTP datagrams (µ-law speech), one per tick, round and round.
    pbx_datagrams: Vec<Vec<u8>>,
    /// The browser's Opus packets, one per tick, round and round.
    browser_packets: Vec<Vec<u8>>,
    samples: [i16; MAX_PACKET_SAMPLES],
    opus_out: [u8; MAX_PACKET_BYTES],
    g711_out: [u8; FRAME_SAMPLES],
    rtp_out: [u8; 1500],
}

/// The audio both sides send, prepared once: the PBX's µ-law RTP datagrams and the browser's Opus packets.
struct Material {
    pbx_datagrams: Vec<Vec<u8>>,
    browser_packets: Vec<Vec<u8>>,
}

fn material() -> Material {
    let audio = call_audio::call_audio("pipeline");
    let pbx_datagrams = audio
        .ulaw
        .iter()
        .enumerate()
        .map(|(index, codes)| {
            let header = RtpHeader {
                marker: index == 0,
                payload_type: Codec::Pcmu.static_payload_type(),
                sequence_number: index as u16,
                timestamp: (index * FRAME_SAMPLES) as u32,
                ssrc: PBX_SSRC,
            };
            let mut datagram = vec![0u8; RTP_HEADER_LEN + FRAME_SAMPLES];
            // The buffer is sized for the header and one frame.
            header
                .write(codes, &mut datagram)
                .expect("buffer fits one packet");
            datagram
        })
        .collect();
    Material {
        pbx_datagrams,
        browser_packets: audio.browser_packets,
    }
}

impl Call {
    fn new(material: &Material) -> Self {
        let now = Instant::now();
        let config = RtpLegConfig::new(
            local_rtp(),
            SocketAddr::from(([203, 0, 113, 10], 20001)),
            0x5eed_0001,
            1000,
            5000,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        let mut leg = RtpLeg::new(config, now);
        // The fixture is a real Asterisk answer the unit tests parse; a failure is a broken fixture.
        leg.set_remote(
            now,
            PbxSdp::parse(ASTERISK_ANSWER).expect("Asterisk answer parses"),
        );
        assert_eq!(leg.codec(), Some(Codec::Pcmu));
        // Valid fixed configurations; a failure is a broken libopus build.
        let new_jitter = |rate| JitterBuffer::new(JitterConfig::new(rate)).expect("default jitter config");
        Call {
            now,
            tick: 0,
            leg,
            pbx_jitter: new_jitter(8000),
            browser_jitter: new_jitter(call_audio::BROWSER_RATE),
            encoder: OpusEncoder8k::new(&OpusEncoderConfig::default()).expect("opus encoder"),
            decoder: OpusDecoder8k::new().expect("opus decoder"),
            pbx_datagrams: material.pbx_datagrams.clone(),
            browser_packets: material.browser_packets.clone(),
            samples: [0; MAX_PACKET_SAMPLES],
            opus_out: [0; MAX_PACKET_BYTES],
            g711_out: [0; FRAME_SAMPLES],
            rtp_out: [0; 1500],
        }
    }

    fn advance(&mut self) {
        self.tick += 1;
        self.now += TICK;
    }

    /// One PBX packet in, one Opus packet for the browser out; returns its length (0 while buffering).
    fn pbx_to_browser(&mut self) -> usize {
        // The datagrams repeat, but their sequence numbers and timestamps must keep counting.
        let index = self.tick as usize % self.pbx_datagrams.len();
        let datagram = &mut self.pbx_datagrams[index];
        datagram[2..4].copy_from_slice(&(self.tick as u16).to_be_bytes());
        datagram[4..8].copy_from_slice(&((self.tick * FRAME_SAMPLES as u64) as u32).to_be_bytes());
        if let Ok(Received::Audio { rtp, .. }) =
            self.leg.handle_receive(self.now, PBX_RTP, local_rtp(), datagram)
        {
            let header = PacketHeader {
                ssrc: rtp.ssrc,
                sequence: rtp.sequence_number,
                timestamp: rtp.timestamp,
                marker: rtp.marker,
            };
            self.pbx_jitter.push(self.now, header, rtp.payload);
        }
        let JitterOutput::Frame(frame) = self.pbx_jitter.poll(self.now) else {
            return 0;
        };
        let samples = g711::ulaw_decode(frame.payload, &mut self.samples);
        self.encoder
            .encode(&self.samples[..samples], &mut self.opus_out)
            .unwrap_or(0)
    }

    /// One browser packet in, one RTP datagram for the PBX out; returns its length (0 while buffering).
    fn browser_to_pbx(&mut self) -> usize {
        let packet = &self.browser_packets[self.tick as usize % self.browser_packets.len()];
        let header = PacketHeader {
            ssrc: BROWSER_SSRC,
            sequence: self.tick as u16,
            timestamp: (self.tick * call_audio::BROWSER_FRAME as u64) as u32,
            marker: self.tick == 0,
        };
        self.browser_jitter.push(self.now, header, packet);
        let JitterOutput::Frame(frame) = self.browser_jitter.poll(self.now) else {
            return 0;
        };
        let Ok(samples) = self.decoder.decode(frame.payload, &mut self.samples) else {
            return 0;
        };
        let codes = g711::ulaw_encode(&self.samples[..samples], &mut self.g711_out);
        self.leg
            .write_audio(
                self.now,
                &self.g711_out[..codes],
                samples as u32,
                false,
                &mut self.rtp_out,
            )
            .map_or(0, |transmit| transmit.len)
    }
}

fn pipeline(c: &mut CpuCriterion) {
    let material = material();
    // Measure the path that carries audio, not an early return: after the jitter buffer's initial
    // delay, every tick must put a packet out both ways.
    let mut check = Call::new(&material);
    for _ in 0..10 {
        check.pbx_to_browser();
        check.browser_to_pbx();
        check.advance();
    }
    assert!(check.pbx_to_browser() > 0, "no Opus packet toward the browser");
    assert!(check.browser_to_pbx() > 0, "no RTP packet toward the PBX");

    let mut group = c.benchmark_group("pipeline_20ms_packet");
    speech::whole_speech_samples(&mut group);
    let mut call = Call::new(&material);
    group.bench_function("pbx_to_browser", |b| {
        b.iter(|| {
            let len = call.pbx_to_browser();
            call.advance();
            black_box(len)
        })
    });
    let mut call = Call::new(&material);
    group.bench_function("browser_to_pbx", |b| {
        b.iter(|| {
            let len = call.browser_to_pbx();
            call.advance();
            black_box(len)
        })
    });
    let mut call = Call::new(&material);
    group.bench_function("both_ways", |b| {
        b.iter(|| {
            let lens = (call.pbx_to_browser(), call.browser_to_pbx());
            call.advance();
            black_box(lens)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = settings::short_runs();
    targets = pipeline
}
criterion_main!(benches);
