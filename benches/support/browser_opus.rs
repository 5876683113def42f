//! Opus packets as a desktop browser sends them, for the decoding benchmarks.
//!
//! A browser encodes its microphone at 48 kHz, mono, about 32 kb/s with in-band FEC (`useinbandfec=1` in
//! the offer), so the packets callgate decodes are wideband or fullband; decoding them straight to
//! 8 kHz is what the browser-to-PBX direction costs. They are encoded here once, before measuring.

use opus::{Application, Bitrate, Channels, Encoder};

/// The browser's sample rate.
pub(crate) const BROWSER_RATE: u32 = 48_000;
/// Samples in 20 ms at 48 kHz.
pub(crate) const BROWSER_FRAME: usize = 960;

/// One 20 ms packet per whole frame of `speech` (48 kHz mono).
pub(crate) fn browser_packets(speech: &[i16]) -> Vec<Vec<u8>> {
    // Fixed settings on a fresh encoder; a failure here is a broken libopus build, not a measurement.
    let mut encoder = Encoder::new(BROWSER_RATE, Channels::Mono, Application::Voip).expect("opus encoder");
    encoder.set_bitrate(Bitrate::Bits(32_000)).expect("bitrate");
    encoder.set_inband_fec(true).expect("inband fec");
    encoder.set_packet_loss_perc(5).expect("loss percentage");
    encoder.set_complexity(9).expect("complexity");
    speech
        .chunks_exact(BROWSER_FRAME)
        .map(|frame| encoder.encode_vec(frame, 1275).expect("20 ms frame encodes"))
        .collect()
}
