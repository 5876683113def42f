//! Speech for the codec and pipeline benchmarks.
//!
//! What a codec costs depends on the signal (silence and steady tones are cheaper than speech), so the
//! benchmarks feed speech: synthesized by espeak-ng and resampled by sox when both are installed
//! (`apt-get install espeak-ng sox`), else a synthetic voice (a glottal pulse train through three moving
//! formants, in syllables and phrases). Each benchmark prints which one it used, and measures over
//! the whole recording (see [`whole_speech_samples`]).

use std::f64::consts::TAU;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::measurement::Measurement;
use criterion::{BenchmarkGroup, SamplingMode};

/// About ten seconds of ordinary call talk, with the pauses between sentences a real call has.
const TEXT: &str = "Hello, thank you for calling. I would like to check the status of my order, please. \
    It was placed last Tuesday, and the number is four seven one two nine. \
    Could you also tell me when the delivery is expected? Thanks, that is all I needed.";

/// Mono 16-bit speech at the asked rate and where it came from.
pub(crate) struct Speech {
    /// The samples.
    pub(crate) samples: Vec<i16>,
    /// What produced them, for the benchmark's output.
    pub(crate) source: &'static str,
}

/// Speech at `rate` Hz, at least one second long.
pub(crate) fn speech(rate: u32) -> Speech {
    match synthesized(rate) {
        Some(samples) => Speech {
            samples,
            source: "espeak-ng en-us speech, resampled by sox",
        },
        None => Speech {
            samples: formant_voice(rate, 10.0),
            source: "synthetic formant voice (espeak-ng or sox is missing)",
        },
    }
}

/// For work whose cost follows the speech (a codec spends less on a pause than on a vowel): ten
/// samples of equal length, each long enough to go round the whole recording several times, so that
/// every sample sees the same mix and the fastest sample is a fair figure on a busy machine.
pub(crate) fn whole_speech_samples<M: Measurement>(group: &mut BenchmarkGroup<'_, M>) {
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
}

fn synthesized(rate: u32) -> Option<Vec<i16>> {
    let dir = std::env::temp_dir().join(format!("callgate-bench-speech-{}-{rate}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let samples = synthesize_into(&dir, rate);
    // A leftover temp directory is harmless; the samples are what matter.
    let _ = std::fs::remove_dir_all(&dir);
    samples
}

fn synthesize_into(dir: &Path, rate: u32) -> Option<Vec<i16>> {
    let wav = dir.join("speech.wav");
    let raw = dir.join("speech.raw");
    let spoken = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&wav)
        .arg(TEXT)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    if !spoken.success() {
        return None;
    }
    // -D: no dither, so every run encodes the same samples.
    let converted = Command::new("sox")
        .arg("-D")
        .arg(&wav)
        .args([
            "-r",
            &rate.to_string(),
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-L",
            "-t",
            "raw",
        ])
        .arg(&raw)
        .args(["norm", "-3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    if !converted.success() {
        return None;
    }
    let bytes = std::fs::read(&raw).ok()?;
    let samples: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
        .collect();
    (samples.len() >= rate as usize).then_some(samples)
}

/// A voiced signal with speech's structure: pitch 90–160 Hz, three formants gliding between vowels,
/// four syllables a second, a pause every three seconds, a little breath noise; peak at -3 dBFS.
fn formant_voice(rate: u32, seconds: f64) -> Vec<i16> {
    let fs = f64::from(rate);
    let len = (seconds * fs) as usize;
    let mut formants = [Resonator::default(); 3];
    let mut phase = 0.0_f64;
    let mut noise_state = 0x1234_5678_u32;
    let raw: Vec<f64> = (0..len)
        .map(|n| {
            let t = n as f64 / fs;
            let pitch = 125.0 + 25.0 * (TAU * 0.7 * t).sin() + 10.0 * (TAU * 2.3 * t).sin();
            phase += pitch / fs;
            let pulse = if phase >= 1.0 {
                phase -= 1.0;
                1.0
            } else {
                0.0
            };
            noise_state = noise_state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let breath = (f64::from(noise_state >> 16) / 32768.0 - 1.0) * 0.05;
            let vowel_a = 0.5 + 0.5 * (TAU * 0.9 * t).sin();
            let vowel_b = 0.5 + 0.5 * (TAU * 1.3 * t).cos();
            let targets = [
                (300.0 + 500.0 * vowel_a, 80.0),
                (900.0 + 1400.0 * vowel_b, 100.0),
                (2400.0 + 400.0 * vowel_a, 150.0),
            ];
            let voice: f64 = formants
                .iter_mut()
                .zip(targets)
                .map(|(resonator, (frequency, bandwidth))| {
                    resonator.step(pulse + breath, frequency.min(0.45 * fs), bandwidth, fs)
                })
                .sum();
            let syllable = (TAU * 2.0 * t).sin().abs();
            let phrase = if t % 3.0 < 2.4 { 1.0 } else { 0.0 };
            voice * syllable * phrase
        })
        .collect();
    let peak = raw.iter().fold(0.0_f64, |peak, sample| peak.max(sample.abs()));
    let scale = if peak > 0.0 { 0.7 * 32767.0 / peak } else { 0.0 };
    raw.iter().map(|sample| (sample * scale) as i16).collect()
}

/// A two-pole resonator whose centre frequency may change every sample.
#[derive(Debug, Clone, Copy, Default)]
struct Resonator {
    previous: f64,
    before_previous: f64,
}

impl Resonator {
    fn step(&mut self, input: f64, frequency: f64, bandwidth: f64, fs: f64) -> f64 {
        let radius = (-std::f64::consts::PI * bandwidth / fs).exp();
        let a1 = 2.0 * radius * (TAU * frequency / fs).cos();
        let a2 = -radius * radius;
        let output = (1.0 - radius) * input + a1 * self.previous + a2 * self.before_previous;
        self.before_previous = self.previous;
        self.previous = output;
        output
    }
}
