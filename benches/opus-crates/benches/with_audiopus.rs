//! The comparison (see `common`) with `audiopus` 0.2, which links audiopus_sys's bundled libopus.

use std::ffi::CStr;

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Bandwidth, Bitrate, Channels, SampleRate, Signal};
use criterion::{criterion_group, criterion_main};

mod common;

/// libopus's `OPUS_SET_DTX_REQUEST`, which audiopus 0.2 has no setter for.
const OPUS_SET_DTX_REQUEST: i32 = 4016;

struct Audiopus;

// Fixed, valid settings on fresh coders: an error is a broken libopus build, not a measurement.
impl common::Binding for Audiopus {
    type Decoder = Decoder;
    type Encoder = Encoder;
    const NAME: &'static str = "audiopus";

    /// The version string, and the shared library it came from: audiopus_sys links libopus
    /// dynamically on Linux, and only cargo's library path puts its bundled build before the system's.
    fn libopus_version() -> String {
        // SAFETY: libopus returns a pointer to a static NUL-terminated string.
        let version = unsafe { CStr::from_ptr(audiopus::ffi::opus_get_version_string()) };
        let library = std::fs::read_to_string("/proc/self/maps")
            .ok()
            .and_then(|maps| {
                maps.lines()
                    .find(|line| line.contains("libopus"))
                    .and_then(|line| line.split_whitespace().last().map(str::to_string))
            })
            .unwrap_or_else(|| "a static libopus".to_string());
        format!("{} from {library}", version.to_string_lossy())
    }

    fn browser_packets(speech_48k: &[i16]) -> Vec<Vec<u8>> {
        let mut encoder =
            Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip).expect("encoder");
        encoder
            .set_bitrate(Bitrate::BitsPerSecond(32_000))
            .expect("bitrate");
        encoder.set_inband_fec(true).expect("fec");
        encoder.set_packet_loss_perc(5).expect("loss");
        encoder.set_complexity(9).expect("complexity");
        speech_48k
            .chunks_exact(common::FRAME_48K)
            .map(|frame| {
                let mut packet = [0u8; common::MAX_PACKET];
                let len = encoder.encode(frame, &mut packet).expect("encode");
                packet[..len].to_vec()
            })
            .collect()
    }

    fn decoder_8k() -> Decoder {
        Decoder::new(SampleRate::Hz8000, Channels::Mono).expect("decoder")
    }

    fn encoder_8k(complexity: u8) -> Encoder {
        let mut encoder =
            Encoder::new(SampleRate::Hz8000, Channels::Mono, Application::Voip).expect("encoder");
        encoder
            .set_max_bandwidth(Bandwidth::Narrowband)
            .expect("bandwidth");
        encoder.set_signal(Signal::Voice).expect("signal");
        encoder.set_complexity(complexity).expect("complexity");
        encoder
            .set_bitrate(Bitrate::BitsPerSecond(24_000))
            .expect("bitrate");
        encoder.set_inband_fec(true).expect("fec");
        encoder.set_packet_loss_perc(5).expect("loss");
        encoder
            .set_encoder_ctl_request(OPUS_SET_DTX_REQUEST, 0)
            .expect("dtx");
        encoder
    }

    fn decode(decoder: &mut Decoder, packet: &[u8], out: &mut [i16]) -> usize {
        decoder.decode(Some(packet), out, false).expect("decode")
    }

    fn encode(encoder: &mut Encoder, pcm: &[i16], out: &mut [u8]) -> usize {
        encoder.encode(pcm, out).expect("encode")
    }
}

criterion_group! {
    name = benches;
    config = common::settings::short_runs();
    targets = common::compare::<Audiopus>
}
criterion_main!(benches);
