//! G.711 against the real SoX binary: every code decoded, every 16-bit sample encoded, and a speech-like
//! signal encoded, compared byte for byte. SoX is installed by tests/run.sh; without it these tests fail.

use std::process::Command;

use callgate::media::g711::{Law, alaw_decode, alaw_encode, ulaw_decode, ulaw_encode};

/// Converts raw mono 8 kHz audio with the `sox` binary: `input` in the encoding `from` (`-e`, `-b`), returns
/// the output in the encoding `to`, without dither. Fails the test with a clear message when sox is missing.
fn sox_convert(input: &[u8], from: (&str, &str), to: (&str, &str)) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input_path = dir.path().join("in.raw");
    let output_path = dir.path().join("out.raw");
    std::fs::write(&input_path, input).expect("write to the test's temporary directory");
    #[rustfmt::skip]
    let args = [
        "-t", "raw", "-r", "8000", "-c", "1", "-e", from.0, "-b", from.1,
        input_path.to_str().expect("utf-8 temp path"),
        "-t", "raw", "-e", to.0, "-b", to.1, "-D",
        output_path.to_str().expect("utf-8 temp path"),
    ];
    let output = match Command::new("sox").args(args).output() {
        Ok(output) => output,
        Err(error) => panic!("cannot run sox ({error}): install it by running tests/run.sh"),
    };
    assert!(
        output.status.success(),
        "sox {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(output_path).expect("sox wrote its output file")
}

fn sox_encoding(law: Law) -> (&'static str, &'static str) {
    match law {
        Law::Ulaw => ("u-law", "8"),
        Law::Alaw => ("a-law", "8"),
    }
}

const PCM16: (&str, &str) = ("signed", "16");

/// What SoX makes of 16-bit samples encoded with `law`.
fn sox_encode(law: Law, samples: &[i16]) -> Vec<u8> {
    let bytes: Vec<u8> = samples.iter().flat_map(|sample| sample.to_le_bytes()).collect();
    sox_convert(&bytes, PCM16, sox_encoding(law))
}

/// What SoX decodes `codes` of `law` to, as 16-bit samples.
fn sox_decode(law: Law, codes: &[u8]) -> Vec<i16> {
    let bytes = sox_convert(codes, sox_encoding(law), PCM16);
    bytes
        .chunks_exact(2)
        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
        .collect()
}

fn first_mismatch<T: PartialEq + Copy>(ours: &[T], theirs: &[T]) -> Option<(usize, T, T)> {
    ours.iter()
        .zip(theirs)
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .map(|(index, (&a, &b))| (index, a, b))
}

/// A deterministic speech-like test signal: a voiced harmonic series with a gliding pitch and moving
/// formant-like emphasis, syllable envelopes, unvoiced noise bursts and pauses, peaking near full scale.
fn speech_like(seconds: usize) -> Vec<i16> {
    let rate = 8000.0_f64;
    let mut noise_state: u32 = 0x1234_5678;
    let mut phase = 0.0_f64;
    (0..seconds * 8000)
        .map(|n| {
            let t = n as f64 / rate;
            // Syllables of 250 ms: voiced for 180 ms, then a 40 ms fricative, then a short pause.
            let in_syllable = t % 0.25;
            let syllable = (t / 0.25) as u32;
            noise_state = noise_state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = f64::from((noise_state >> 8) as i32 - (1 << 23)) / f64::from(1 << 23);
            let loudness = [0.95, 0.3, 0.6, 0.05, 1.1, 0.8][(syllable % 6) as usize];
            let value = if in_syllable < 0.18 {
                let pitch = 110.0 + 60.0 * (t * 1.3).sin() + 20.0 * f64::from(syllable % 3);
                phase += 2.0 * std::f64::consts::PI * pitch / rate;
                let formant = 1.0 + 0.8 * (t * 2.1).sin();
                let voiced: f64 = (1..=30)
                    .map(|k| {
                        let k = f64::from(k);
                        let emphasis = 1.0 / (1.0 + ((k * pitch - 700.0 * formant) / 300.0).powi(2));
                        (0.3 / k + emphasis) * (k * phase).sin()
                    })
                    .sum();
                let envelope = (std::f64::consts::PI * in_syllable / 0.18).sin();
                voiced * envelope * 0.45 + noise * 0.01
            } else if in_syllable < 0.22 {
                noise * 0.25
            } else {
                noise * 0.002
            };
            (value * loudness * 32767.0).clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

#[test]
fn decoders_match_sox_for_all_codes() {
    let codes: Vec<u8> = (0..=255).collect();
    for law in [Law::Ulaw, Law::Alaw] {
        let theirs = sox_decode(law, &codes);
        let mut ours = vec![0i16; 256];
        let converted = match law {
            Law::Ulaw => ulaw_decode(&codes, &mut ours),
            Law::Alaw => alaw_decode(&codes, &mut ours),
        };
        assert_eq!(converted, 256);
        assert_eq!(theirs.len(), 256);
        assert_eq!(first_mismatch(&ours, &theirs), None, "{law:?}: (code, ours, sox)");
    }
}

#[test]
fn encoders_match_sox_for_every_16_bit_sample() {
    let samples: Vec<i16> = (i16::MIN..=i16::MAX).collect();
    for law in [Law::Ulaw, Law::Alaw] {
        let theirs = sox_encode(law, &samples);
        let mut ours = vec![0u8; samples.len()];
        assert_eq!(law.encode(&samples, &mut ours), samples.len());
        assert_eq!(theirs.len(), samples.len());
        let mismatch = first_mismatch(&ours, &theirs).map(|(index, a, b)| (samples[index], a, b));
        assert_eq!(mismatch, None, "{law:?}: (sample, ours, sox)");
    }
}

#[test]
fn encoders_match_sox_on_a_speech_like_signal() {
    let samples = speech_like(3);
    let peak = samples.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    assert!(
        peak > 30000,
        "the signal should reach the top segment, peak {peak}"
    );
    let mut ours = vec![0u8; samples.len()];
    for law in [Law::Ulaw, Law::Alaw] {
        match law {
            Law::Ulaw => ulaw_encode(&samples, &mut ours),
            Law::Alaw => alaw_encode(&samples, &mut ours),
        };
        let theirs = sox_encode(law, &samples);
        assert_eq!(theirs.len(), samples.len());
        let mismatch = first_mismatch(&ours, &theirs).map(|(index, a, b)| (index, samples[index], a, b));
        assert_eq!(mismatch, None, "{law:?}: (index, sample, ours, sox)");
    }
}
