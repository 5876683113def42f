//! A 440 Hz test tone and the checks that find it again: Goertzel power, the peak frequency, and how
//! much of the signal's energy the tone holds (purity). Shared by the media integration tests.

#![allow(dead_code)]

use std::f64::consts::PI;

/// The tone's frequency.
pub(crate) const TONE_HZ: f64 = 440.0;

/// 20 ms of the tone at 8 kHz, starting at sample `first`, at a speech-like level.
pub(crate) fn tone_frame(first: u64) -> [i16; 160] {
    std::array::from_fn(|i| {
        let n = (first + i as u64) as f64;
        (8000.0 * (2.0 * PI * TONE_HZ * n / 8000.0).sin()) as i16
    })
}

/// Goertzel power of `frequency` in 8 kHz `samples`.
pub(crate) fn power(samples: &[f64], frequency: f64) -> f64 {
    let coefficient = 2.0 * (2.0 * PI * frequency / 8000.0).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s0 = x + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coefficient * s1 * s2
}

/// The strongest frequency between 100 Hz and 3.5 kHz, to 0.5 Hz.
pub(crate) fn peak_frequency(samples: &[f64]) -> f64 {
    let strongest = |frequencies: &mut dyn Iterator<Item = f64>| {
        frequencies
            .map(|f| (f, power(samples, f)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap()
            .0
    };
    let coarse = strongest(&mut (10..350).map(|f| f64::from(f) * 10.0));
    strongest(&mut (-20..=20).map(|d| coarse + f64::from(d) * 0.5))
}

/// The share of the signal's energy at its strongest frequency: about 1 for a clean tone, far less
/// when the tone is chopped (samples dropped or repeated) or buried in noise.
pub(crate) fn purity(samples: &[f64]) -> f64 {
    let peak = peak_frequency(samples);
    let n = samples.len() as f64;
    let energy: f64 = samples.iter().map(|s| s * s).sum();
    // A sinusoid of amplitude A: Goertzel power (A n / 2)^2, energy n A^2 / 2.
    power(samples, peak) / (n * energy / 2.0)
}

/// Asserts that `samples` is a tone at 440 ± 5 Hz that clearly dominates.
pub(crate) fn assert_tone(samples: &[f64]) {
    assert!(samples.len() >= 4000, "only {} samples", samples.len());
    let peak = peak_frequency(samples);
    assert!((peak - TONE_HZ).abs() <= 5.0, "peak at {peak} Hz");
    let energy: f64 = samples.iter().map(|s| s * s).sum::<f64>() / samples.len() as f64;
    assert!(energy.sqrt() > 1000.0, "RMS {} is too quiet", energy.sqrt());
    // A wrong expectation must fail: 1 kHz is nowhere near.
    assert!(power(samples, TONE_HZ) > 100.0 * power(samples, 1000.0));
}

/// Asserts a tone as [`assert_tone`] does, and that it arrived whole: no samples dropped, repeated or
/// concealed (each of those spreads the tone's energy; a 30 ms stream played as 20 ms frames scores
/// 0.1). Measure after the jitter buffers have settled: each shrinks its start-up delay once or
/// twice in the first two seconds by dropping a frame.
pub(crate) fn assert_clean_tone(samples: &[f64]) {
    assert_tone(samples);
    let purity = purity(samples);
    assert!(purity > 0.9, "purity {purity}");
}
