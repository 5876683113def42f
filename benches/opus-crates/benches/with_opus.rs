//! The comparison (see `common`) with the `opus` crate, which links opusic-sys's bundled libopus.

use criterion::{criterion_group, criterion_main};
use opus::{Application, Bandwidth, Bitrate, Channels, Decoder, Encoder, Signal};

mod common;

struct OpusCrate;

// Fixed, valid settings on fresh coders: an error is a broken libopus build, not a measurement.
impl common::Binding for OpusCrate {
    type Decoder = Decoder;
    type Encoder = Encoder;
    const NAME: &'static str = "opus";

    fn libopus_version() -> String {
        opus::version().to_string()
    }

    fn browser_packets(speech_48k: &[i16]) -> Vec<Vec<u8>> {
        let mut encoder = Encoder::new(48_000, Channels::Mono, Application::Voip).expect("encoder");
        encoder.set_bitrate(Bitrate::Bits(32_000)).expect("bitrate");
        encoder.set_inband_fec(true).expect("fec");
        encoder.set_packet_loss_perc(5).expect("loss");
        encoder.set_complexity(9).expect("complexity");
        speech_48k
            .chunks_exact(common::FRAME_48K)
            .map(|frame| encoder.encode_vec(frame, common::MAX_PACKET).expect("encode"))
            .collect()
    }

    fn decoder_8k() -> Decoder {
        Decoder::new(8000, Channels::Mono).expect("decoder")
    }

    fn encoder_8k(complexity: u8) -> Encoder {
        let mut encoder = Encoder::new(8000, Channels::Mono, Application::Voip).expect("encoder");
        encoder
            .set_max_bandwidth(Bandwidth::Narrowband)
            .expect("bandwidth");
        encoder.set_signal(Signal::Voice).expect("signal");
        encoder.set_complexity(i32::from(complexity)).expect("complexity");
        encoder.set_bitrate(Bitrate::Bits(24_000)).expect("bitrate");
        encoder.set_inband_fec(true).expect("fec");
        encoder.set_packet_loss_perc(5).expect("loss");
        encoder.set_dtx(false).expect("dtx");
        encoder
    }

    fn decode(decoder: &mut Decoder, packet: &[u8], out: &mut [i16]) -> usize {
        decoder.decode(packet, out, false).expect("decode")
    }

    fn encode(encoder: &mut Encoder, pcm: &[i16], out: &mut [u8]) -> usize {
        encoder.encode(pcm, out).expect("encode")
    }
}

criterion_group! {
    name = benches;
    config = common::settings::short_runs();
    targets = common::compare::<OpusCrate>
}
criterion_main!(benches);
