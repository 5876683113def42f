//! Packet loss concealment for G.711 (and any 8 kHz linear audio without a codec PLC of its own), after
//! ITU-T G.711 Appendix I.
//!
//! When a frame is lost, the last pitch period of what was played is repeated: the period is found by
//! normalized cross-correlation of the most recent 20 ms against the signal 5–15 ms (40–120 samples)
//! earlier, and the end of the repeated period is cross-faded with the period before it so that the
//! repetition wraps without a click. The first 10 ms play at full level, then the level falls linearly
//! to silence at 60 ms: a longer gap is better heard as a gap than as a buzz. On the first good frame
//! after a loss the synthetic signal is cross-faded into the real one over 4 ms, plus 4 ms per further
//! 10 ms of loss, at most 10 ms.
//!
//! Unlike Appendix I this adds no algorithmic delay (Appendix I holds back 3.75 ms so it can rewrite the
//! last real samples); a period estimate that matches well already joins the real signal smoothly.
//! Everything is in fixed arrays: no allocation after construction.

/// Samples per millisecond at the G.711 rate.
const SAMPLES_PER_MS: usize = 8;
/// Shortest pitch period searched: 5 ms (200 Hz).
const PITCH_MIN: usize = 5 * SAMPLES_PER_MS;
/// Longest pitch period searched: 15 ms (66 Hz).
const PITCH_MAX: usize = 15 * SAMPLES_PER_MS;
/// The window compared with the signal one period earlier: the last 20 ms.
const CORRELATION_WINDOW: usize = 20 * SAMPLES_PER_MS;
/// What is kept of the played signal: the correlation window plus the longest period.
const HISTORY_LEN: usize = CORRELATION_WINDOW + PITCH_MAX;
/// How long a loss is concealed at full level.
const FULL_LEVEL_SAMPLES: usize = 10 * SAMPLES_PER_MS;
/// How long the level then takes to fall to silence.
const FADE_SAMPLES: usize = 50 * SAMPLES_PER_MS;

/// Conceals lost 8 kHz frames by pitch repetition; feed it every frame, good or lost, in play order.
#[derive(Debug, Clone)]
pub struct G711Concealer {
    /// The last `HISTORY_LEN` samples played, oldest first.
    history: [i16; HISTORY_LEN],
    /// One pitch period, its end blended toward the period before it so that it repeats smoothly.
    pitch_buffer: [f32; PITCH_MAX],
    /// The pitch period of the current loss, in samples.
    pitch: usize,
    /// Where in `pitch_buffer` the next synthetic sample comes from.
    position: usize,
    /// Samples concealed in the current loss; 0 when the last frame was received.
    concealed: usize,
}

impl Default for G711Concealer {
    fn default() -> Self {
        Self::new()
    }
}

impl G711Concealer {
    /// A concealer with a silent history.
    pub fn new() -> Self {
        G711Concealer {
            history: [0; HISTORY_LEN],
            pitch_buffer: [0.0; PITCH_MAX],
            pitch: PITCH_MIN,
            position: 0,
            concealed: 0,
        }
    }

    /// Forgets the history, as at the start of a new stream.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Whether the last frame handled was concealed.
    pub fn is_concealing(&self) -> bool {
        self.concealed > 0
    }

    /// Takes a frame that was received and decoded. After a loss, its start is cross-faded in place from
    /// the synthetic signal so that playback does not click.
    pub fn received(&mut self, frame: &mut [i16]) {
        if self.concealed > 0 {
            let extra_tens_of_ms = (self.concealed - 1) / FULL_LEVEL_SAMPLES;
            let overlap = (4 * SAMPLES_PER_MS * (1 + extra_tens_of_ms))
                .min(10 * SAMPLES_PER_MS)
                .min(frame.len());
            for (index, sample) in frame[..overlap].iter_mut().enumerate() {
                let synthetic = self.next_synthetic();
                let weight = (index + 1) as f32 / (overlap + 1) as f32;
                *sample = saturate(synthetic * (1.0 - weight) + f32::from(*sample) * weight);
            }
            self.concealed = 0;
        }
        self.remember(frame);
    }

    /// Fills `out` with a concealment of a lost frame.
    pub fn conceal(&mut self, out: &mut [i16]) {
        if self.concealed == 0 {
            self.start_loss();
        }
        for sample in out.iter_mut() {
            *sample = saturate(self.next_synthetic());
        }
        self.remember(out);
    }

    /// Finds the pitch period in the history and builds the buffer that will be repeated.
    fn start_loss(&mut self) {
        let pitch = self.find_pitch();
        let overlap = pitch / 4;
        let period_start = HISTORY_LEN - pitch;
        for (index, slot) in self.pitch_buffer[..pitch].iter_mut().enumerate() {
            *slot = f32::from(self.history[period_start + index]);
        }
        // Blend the last quarter of the period toward the same stretch one period earlier, which is what
        // originally led into the period's first sample.
        for index in 0..overlap {
            let weight = (index + 1) as f32 / (overlap + 1) as f32;
            let at = pitch - overlap + index;
            let earlier = f32::from(self.history[period_start - pitch + at]);
            self.pitch_buffer[at] = self.pitch_buffer[at] * (1.0 - weight) + earlier * weight;
        }
        self.pitch = pitch;
        self.position = 0;
    }

    /// The lag in `PITCH_MIN..=PITCH_MAX` whose normalized cross-correlation with the most recent
    /// `CORRELATION_WINDOW` samples is highest.
    fn find_pitch(&self) -> usize {
        let recent = &self.history[HISTORY_LEN - CORRELATION_WINDOW..];
        let mut best = (PITCH_MIN, 0.0_f64);
        for lag in PITCH_MIN..=PITCH_MAX {
            let earlier = &self.history[HISTORY_LEN - CORRELATION_WINDOW - lag..HISTORY_LEN - lag];
            let (mut correlation, mut energy) = (0.0_f64, 0.0_f64);
            for (&a, &b) in recent.iter().zip(earlier) {
                correlation += f64::from(a) * f64::from(b);
                energy += f64::from(b) * f64::from(b);
            }
            if correlation > 0.0 && energy > 0.0 {
                let score = correlation / energy.sqrt();
                if score > best.1 {
                    best = (lag, score);
                }
            }
        }
        best.0
    }

    /// The next sample of the repeated period at the level for how long the loss has lasted.
    fn next_synthetic(&mut self) -> f32 {
        let level = match self.concealed.checked_sub(FULL_LEVEL_SAMPLES) {
            None => 1.0,
            Some(fading) if fading < FADE_SAMPLES => 1.0 - fading as f32 / FADE_SAMPLES as f32,
            Some(_) => 0.0,
        };
        let sample = self.pitch_buffer[self.position] * level;
        self.position = (self.position + 1) % self.pitch;
        self.concealed += 1;
        sample
    }

    /// Appends played samples to the history.
    fn remember(&mut self, played: &[i16]) {
        let keep = played.len().min(HISTORY_LEN);
        self.history.copy_within(keep.., 0);
        self.history[HISTORY_LEN - keep..].copy_from_slice(&played[played.len() - keep..]);
    }
}

fn saturate(value: f32) -> i16 {
    // `as` saturates at the i16 range.
    value.round() as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: usize = 160;

    fn sine(frequency: f64, amplitude: f64, start: usize, out: &mut [i16]) {
        for (offset, sample) in out.iter_mut().enumerate() {
            let t = (start + offset) as f64 / 8000.0;
            *sample = (amplitude * (2.0 * std::f64::consts::PI * frequency * t).sin()).round() as i16;
        }
    }

    /// Plays `frames` frames of a sine, returns the concealer and the next sample index.
    fn primed(frequency: f64, frames: usize) -> (G711Concealer, usize) {
        let mut concealer = G711Concealer::new();
        let mut frame = [0i16; FRAME];
        for index in 0..frames {
            sine(frequency, 10000.0, index * FRAME, &mut frame);
            concealer.received(&mut frame);
        }
        (concealer, frames * FRAME)
    }

    fn error_ratio(actual: &[i16], expected: &[i16]) -> f64 {
        let error: f64 = actual
            .iter()
            .zip(expected)
            .map(|(&a, &e)| (f64::from(a) - f64::from(e)).powi(2))
            .sum();
        let energy: f64 = expected.iter().map(|&e| f64::from(e).powi(2)).sum();
        error / energy
    }

    #[test]
    fn a_lost_frame_continues_a_sine() {
        for frequency in [200.0, 440.0, 1000.0] {
            let (mut concealer, next) = primed(frequency, 5);
            let mut concealed = [0i16; FRAME];
            concealer.conceal(&mut concealed);
            let mut expected = [0i16; FRAME];
            sine(frequency, 10000.0, next, &mut expected);
            // The first 10 ms are at full level and should be the sine itself.
            let ratio = error_ratio(&concealed[..FULL_LEVEL_SAMPLES], &expected[..FULL_LEVEL_SAMPLES]);
            assert!(ratio < 0.01, "{frequency} Hz: error/energy {ratio}");
        }
    }

    #[test]
    fn the_level_fades_to_silence_after_60_ms() {
        let (mut concealer, _) = primed(300.0, 5);
        let mut peaks = Vec::new();
        let mut frame = [0i16; FRAME];
        for _ in 0..5 {
            concealer.conceal(&mut frame);
            peaks.push(frame.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0));
        }
        assert!(peaks[0] > 9000, "{peaks:?}");
        assert!(peaks.windows(2).all(|pair| pair[1] <= pair[0]), "{peaks:?}");
        // 40–60 ms is the tail of the fade; from 60 ms on, silence.
        assert!(peaks[2] <= 4000, "{peaks:?}");
        assert_eq!(&peaks[3..], &[0, 0], "{peaks:?}");
    }

    #[test]
    fn recovery_cross_fades_without_a_jump() {
        let (mut concealer, next) = primed(440.0, 5);
        let mut frame = [0i16; FRAME];
        concealer.conceal(&mut frame);
        let last_concealed = frame[FRAME - 1];
        assert!(concealer.is_concealing());
        // The real signal resumes one frame later, with a phase the concealment did not predict exactly.
        sine(440.0, 10000.0, next + FRAME, &mut frame);
        let untouched_end = frame[FRAME - 40..].to_vec();
        concealer.received(&mut frame);
        assert!(!concealer.is_concealing());
        let step = (i32::from(frame[0]) - i32::from(last_concealed)).abs();
        // A 440 Hz sine of amplitude 10000 moves at most ~3500 per sample.
        assert!(step < 4000, "jump of {step} at the seam");
        assert_eq!(&frame[FRAME - 40..], &untouched_end[..]);
    }

    #[test]
    fn a_loss_at_the_start_of_a_stream_is_silent() {
        let mut concealer = G711Concealer::new();
        let mut frame = [1i16; FRAME];
        concealer.conceal(&mut frame);
        assert_eq!(frame, [0; FRAME]);
    }

    #[test]
    fn frames_of_any_length_are_handled() {
        let mut concealer = G711Concealer::new();
        let mut long = vec![0i16; 3 * HISTORY_LEN];
        sine(250.0, 8000.0, 0, &mut long);
        concealer.received(&mut long);
        let mut short = [0i16; 7];
        concealer.conceal(&mut short);
        concealer.conceal(&mut []);
        let mut expected = [0i16; 7];
        sine(250.0, 8000.0, long.len(), &mut expected);
        assert!(error_ratio(&short, &expected) < 0.01);
        concealer.received(&mut short);
        concealer.reset();
        assert!(!concealer.is_concealing());
    }
}
