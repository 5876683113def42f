//! The audio of a call, prepared once before measuring: the speech in 20 ms frames at 8 kHz (what the
//! PBX side carries) and the same speech as a desktop browser's Opus packets.
//!
//! A browser encodes its microphone at 48 kHz, mono, about 32 kb/s with in-band FEC (`useinbandfec=1`
//! in the offer), so the packets callgate decodes are wideband or fullband; decoding them straight to
//! 8 kHz is what the browser-to-PBX direction costs.

use callgate::media::g711;
use callgate::media::opus_codec::FRAME_SAMPLES;
use opus::{Application, Bitrate, Channels, Encoder};

use crate::speech;

/// The browser's sample rate.
pub(crate) const BROWSER_RATE: u32 = 48_000;
/// Samples in 20 ms at 48 kHz: the browser's RTP timestamp step.
pub(crate) const BROWSER_FRAME: usize = 960;

/// Both sides' speech.
pub(crate) struct CallAudio {
    /// 20 ms frames at 8 kHz.
    #[allow(dead_code, reason = "the benchmarks that start from RTP use only the µ-law")]
    pub(crate) frames: Vec<[i16; FRAME_SAMPLES]>,
    /// The frames in µ-law: the PBX's payloads (and a PCMU-only browser's).
    pub(crate) ulaw: Vec<[u8; FRAME_SAMPLES]>,
    /// One browser Opus packet per 20 ms.
    pub(crate) browser_packets: Vec<Vec<u8>>,
}

/// Synthesizes the speech (see `speech.rs`) and says on stderr which kind `benchmark` measures with.
pub(crate) fn call_audio(benchmark: &str) -> CallAudio {
    let narrowband = speech::speech(8000);
    let wideband = speech::speech(BROWSER_RATE);
    eprintln!("{benchmark}: input is {}", narrowband.source);
    let frames: Vec<[i16; FRAME_SAMPLES]> = narrowband
        .samples
        .chunks_exact(FRAME_SAMPLES)
        .map(|chunk| {
            let mut frame = [0; FRAME_SAMPLES];
            frame.copy_from_slice(chunk);
            frame
        })
        .collect();
    let ulaw = frames
        .iter()
        .map(|frame| {
            let mut codes = [0; FRAME_SAMPLES];
            g711::ulaw_encode(frame, &mut codes);
            codes
        })
        .collect();
    CallAudio {
        frames,
        ulaw,
        browser_packets: browser_packets(&wideband.samples),
    }
}

/// One 20 ms packet per whole frame of `speech` (48 kHz mono).
fn browser_packets(speech: &[i16]) -> Vec<Vec<u8>> {
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
