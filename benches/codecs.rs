//! The codec floor of a transcoded call: G.711 µ-law and A-law on one 20 ms frame, its packet loss
//! concealment, and Opus decoded straight to 8 kHz and encoded from 8 kHz through callgate's own
//! wrappers, at the complexities worth choosing between. All on speech (see `support/speech.rs`).
//!
//! `cargo bench --bench codecs`; docs/benchmarks.md holds the measured table.

use std::hint::black_box;

use call_audio::CallAudio;
use callgate::media::g711;
use callgate::media::opus_codec::{
    FRAME_SAMPLES, MAX_PACKET_BYTES, MAX_PACKET_SAMPLES, OpusDecoder8k, OpusEncoder8k, OpusEncoderConfig,
};
use callgate::media::plc::G711Concealer;
use criterion::{BatchSize, BenchmarkId, criterion_group, criterion_main};
use settings::CpuCriterion;

#[path = "support/call_audio.rs"]
mod call_audio;
#[path = "support/settings.rs"]
mod settings;
#[path = "support/speech.rs"]
mod speech;

/// The encoder complexities compared (issue 4 lists these).
const COMPLEXITIES: [u8; 6] = [0, 1, 2, 3, 5, 10];

/// An index that walks round a collection of `len` items, one step per call.
struct Round {
    next: usize,
    len: usize,
}

impl Round {
    fn new(len: usize) -> Self {
        Round { next: 0, len }
    }

    fn step(&mut self) -> usize {
        let index = self.next;
        self.next = (index + 1) % self.len;
        index
    }
}

fn g711_frame(c: &mut CpuCriterion, material: &CallAudio) {
    let mut group = c.benchmark_group("g711_160_samples");
    let codes = &material.ulaw;
    for law in [g711::Law::Ulaw, g711::Law::Alaw] {
        let name = match law {
            g711::Law::Ulaw => "ulaw",
            g711::Law::Alaw => "alaw",
        };
        let mut round = Round::new(material.frames.len());
        let mut out = [0u8; FRAME_SAMPLES];
        group.bench_function(format!("{name}_encode"), |b| {
            b.iter(|| law.encode(black_box(&material.frames[round.step()]), &mut out))
        });
        let mut round = Round::new(codes.len());
        let mut samples = [0i16; FRAME_SAMPLES];
        group.bench_function(format!("{name}_decode"), |b| {
            b.iter(|| law.decode(black_box(&codes[round.step()]), &mut samples))
        });
    }
    group.finish();
}

/// A concealer that has just played the four frames of speech before `end`.
fn primed_concealer(frames: &[[i16; FRAME_SAMPLES]], end: usize) -> G711Concealer {
    let mut concealer = G711Concealer::new();
    for frame in &frames[end.saturating_sub(4)..end] {
        let mut played = *frame;
        concealer.received(&mut played);
    }
    concealer
}

fn g711_plc(c: &mut CpuCriterion, material: &CallAudio) {
    let frames = &material.frames;
    // A frame in the middle of a phrase, so the pitch search has voice to find.
    let voiced = frames.len() / 3;
    let mut group = c.benchmark_group("g711_plc_20ms");
    let mut concealer = G711Concealer::new();
    let mut round = Round::new(frames.len());
    group.bench_function("received", |b| {
        b.iter(|| concealer.received(&mut black_box(frames[round.step()])))
    });
    let primed = primed_concealer(frames, voiced);
    let mut out = [0i16; FRAME_SAMPLES];
    group.bench_function("conceal_first_frame", |b| {
        b.iter_batched_ref(
            || primed.clone(),
            |concealer| concealer.conceal(&mut out),
            BatchSize::SmallInput,
        )
    });
    let mut concealing = primed.clone();
    concealing.conceal(&mut out);
    group.bench_function("conceal_next_frame", |b| {
        b.iter_batched_ref(
            || concealing.clone(),
            |concealer| concealer.conceal(&mut out),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn opus_decode(c: &mut CpuCriterion, material: &CallAudio) {
    let packets = &material.browser_packets;
    let mut group = c.benchmark_group("opus_decode_to_8k");
    speech::whole_speech_samples(&mut group);
    // Fresh decoders are cheap to make and not what is measured; a failure is a broken libopus build.
    let mut decoder = OpusDecoder8k::new().expect("opus decoder");
    let mut out = [0i16; MAX_PACKET_SAMPLES];
    let mut round = Round::new(packets.len());
    group.bench_function("browser_packet", |b| {
        b.iter(|| decoder.decode(black_box(&packets[round.step()]), &mut out))
    });
    // The loss paths start from a decoder that has just decoded speech.
    let voiced = packets.len() / 3;
    let primed = || {
        let mut decoder = OpusDecoder8k::new().expect("opus decoder");
        let mut scratch = [0i16; MAX_PACKET_SAMPLES];
        for packet in &packets[voiced - 4..voiced] {
            decoder
                .decode(packet, &mut scratch)
                .expect("browser packets decode");
        }
        decoder
    };
    let mut lost = [0i16; FRAME_SAMPLES];
    group.bench_function("fec_recover_lost_frame", |b| {
        b.iter_batched_ref(
            primed,
            |decoder| decoder.decode_fec(&packets[voiced + 1], &mut lost),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("conceal_lost_frame", |b| {
        b.iter_batched_ref(
            primed,
            |decoder| decoder.conceal(&mut lost),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn encoder(complexity: u8) -> OpusEncoder8k {
    let config = OpusEncoderConfig {
        complexity,
        ..OpusEncoderConfig::default()
    };
    // Complexities 0–10 and the default settings are valid; a failure is a broken libopus build.
    OpusEncoder8k::new(&config).expect("opus encoder")
}

fn opus_encode(c: &mut CpuCriterion, material: &CallAudio) {
    let frames = &material.frames;
    let mut group = c.benchmark_group("opus_encode_from_8k");
    speech::whole_speech_samples(&mut group);
    for complexity in COMPLEXITIES {
        let mut encoder = encoder(complexity);
        let mut packet = [0u8; MAX_PACKET_BYTES];
        let mut round = Round::new(frames.len());
        group.bench_with_input(BenchmarkId::new("complexity", complexity), &complexity, |b, _| {
            b.iter(|| encoder.encode(black_box(&frames[round.step()]), &mut packet))
        });
    }
    group.finish();
}

/// What one call costs in codecs per 20 ms: the browser's packet decoded to 8 kHz for the PBX, and the
/// PBX's frame encoded for the browser.
fn opus_cycle(c: &mut CpuCriterion, material: &CallAudio) {
    let (frames, packets) = (&material.frames, &material.browser_packets);
    let mut group = c.benchmark_group("opus_cycle_decode_plus_encode");
    speech::whole_speech_samples(&mut group);
    for complexity in COMPLEXITIES {
        let mut encoder = encoder(complexity);
        let mut decoder = OpusDecoder8k::new().expect("opus decoder");
        let mut decoded = [0i16; MAX_PACKET_SAMPLES];
        let mut packet = [0u8; MAX_PACKET_BYTES];
        let mut packet_round = Round::new(packets.len());
        let mut frame_round = Round::new(frames.len());
        group.bench_with_input(BenchmarkId::new("complexity", complexity), &complexity, |b, _| {
            b.iter(|| {
                let samples = decoder.decode(black_box(&packets[packet_round.step()]), &mut decoded);
                let bytes = encoder.encode(black_box(&frames[frame_round.step()]), &mut packet);
                (samples, bytes)
            })
        });
    }
    group.finish();
}

fn codecs(c: &mut CpuCriterion) {
    let material = call_audio::call_audio("codecs");
    g711_frame(c, &material);
    g711_plc(c, &material);
    opus_decode(c, &material);
    opus_encode(c, &material);
    opus_cycle(c, &material);
}

criterion_group! {
    name = benches;
    config = settings::short_runs();
    targets = codecs
}
criterion_main!(benches);
