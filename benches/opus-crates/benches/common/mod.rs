//! The measurement both benchmark binaries run, each with its own crate behind [`Binding`]: Opus decoded
//! straight to 8 kHz from a browser's packets, Opus encoded from 8 kHz with callgate's encoder settings
//! (VoIP, narrowband, voice, 24 kb/s, in-band FEC for 5 % loss, no DTX), and the two together, which is
//! the codec cost of one transcoded call per 20 ms.

use std::hint::black_box;

use criterion::BenchmarkId;
use settings::CpuCriterion;

#[path = "../../../support/settings.rs"]
pub(crate) mod settings;
#[path = "../../../support/speech.rs"]
mod speech;

/// The complexities compared: the cheapest, callgate's default and the most expensive.
const COMPLEXITIES: [u8; 3] = [0, 5, 10];
/// Samples in 20 ms at 8 kHz.
const FRAME_8K: usize = 160;
/// Samples in 20 ms at 48 kHz.
pub(crate) const FRAME_48K: usize = 960;
/// The largest Opus packet.
pub(crate) const MAX_PACKET: usize = 1275;

/// One Rust binding of libopus.
pub(crate) trait Binding {
    /// An Opus decoder.
    type Decoder;
    /// An Opus encoder.
    type Encoder;
    /// The crate's name, which names the benchmarks.
    const NAME: &'static str;
    /// What `opus_get_version_string` says: the libopus this binary really runs.
    fn libopus_version() -> String;
    /// Browser-like packets: 48 kHz mono, 32 kb/s, VoIP, in-band FEC for 5 % loss, complexity 9.
    fn browser_packets(speech_48k: &[i16]) -> Vec<Vec<u8>>;
    /// A decoder producing 8 kHz mono.
    fn decoder_8k() -> Self::Decoder;
    /// An encoder taking 8 kHz mono, set up as callgate's.
    fn encoder_8k(complexity: u8) -> Self::Encoder;
    /// Decodes one packet; returns the samples written.
    fn decode(decoder: &mut Self::Decoder, packet: &[u8], out: &mut [i16]) -> usize;
    /// Encodes one frame; returns the packet length.
    fn encode(encoder: &mut Self::Encoder, pcm: &[i16], out: &mut [u8]) -> usize;
}

/// Runs every benchmark of this comparison with `B`.
pub(crate) fn compare<B: Binding>(c: &mut CpuCriterion) {
    let narrowband = speech::speech(8000);
    let wideband = speech::speech(48_000);
    eprintln!(
        "{}: {}; input is {}",
        B::NAME,
        B::libopus_version(),
        narrowband.source
    );
    let frames: Vec<&[i16]> = narrowband.samples.chunks_exact(FRAME_8K).collect();
    let packets = B::browser_packets(&wideband.samples);
    let mut decoded = [0i16; 6 * FRAME_8K];
    let mut packet_out = [0u8; MAX_PACKET];

    let mut decoder = B::decoder_8k();
    let mut next = 0;
    let mut group = c.benchmark_group("opus_crates_decode_to_8k");
    speech::whole_speech_samples(&mut group);
    group.bench_function(B::NAME, |b| {
        b.iter(|| {
            next = (next + 1) % packets.len();
            B::decode(&mut decoder, black_box(&packets[next]), &mut decoded)
        })
    });
    group.finish();

    let mut group = c.benchmark_group("opus_crates_encode_from_8k");
    speech::whole_speech_samples(&mut group);
    for complexity in COMPLEXITIES {
        let mut encoder = B::encoder_8k(complexity);
        let mut next = 0;
        group.bench_function(BenchmarkId::new(B::NAME, complexity), |b| {
            b.iter(|| {
                next = (next + 1) % frames.len();
                B::encode(&mut encoder, black_box(frames[next]), &mut packet_out)
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("opus_crates_cycle");
    speech::whole_speech_samples(&mut group);
    for complexity in COMPLEXITIES {
        let mut encoder = B::encoder_8k(complexity);
        let mut decoder = B::decoder_8k();
        let (mut next_packet, mut next_frame) = (0, 0);
        group.bench_function(BenchmarkId::new(B::NAME, complexity), |b| {
            b.iter(|| {
                next_packet = (next_packet + 1) % packets.len();
                next_frame = (next_frame + 1) % frames.len();
                let samples = B::decode(&mut decoder, black_box(&packets[next_packet]), &mut decoded);
                let bytes = B::encode(&mut encoder, black_box(frames[next_frame]), &mut packet_out);
                (samples, bytes)
            })
        });
    }
    group.finish();
}
