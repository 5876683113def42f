//! What the browser stand-in sends and how it judges what comes back, sans-IO.
//!
//! Sending is cheap on purpose (a load test runs hundreds of these next to the gateway): one second of a
//! tone is encoded once per process and codec ([`ToneLoop::shared`]) and its frames are sent in a loop.
//! Each second starts with a few silent frames; the moment the tone starts again (the onset) is the
//! marker that round-trip delay through an echo is measured with.
//!
//! Receiving always counts packets, loss and RFC 3550 interarrival jitter. Decoding (for the dominant
//! frequency and the round trip) only happens when asked for, since it costs an Opus decode per packet.
//!
//! Round trip: the send time of every onset is recorded; a received frame whose audio rises above
//! [`ONSET_LEVEL`] after at least [`QUIET_FRAMES_BEFORE_ONSET`] quiet frames is an onset coming back,
//! at sample `k` of a frame that arrived at `t`. The round trip is `t + k / 8000 s − sent`, with the
//! latest onset sent before `t`. It includes everything on the path: both directions of the network,
//! the gateway's jitter buffer and codecs (Opus lookahead, G.711), and the echo itself; it is only
//! unambiguous while it stays below one second (the loop length).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::media::g711::Law;
use crate::media::opus_codec::{
    FRAME_SAMPLES, MAX_PACKET_BYTES, MAX_PACKET_SAMPLES, OpusCodecError, OpusDecoder8k, OpusEncoder8k,
    OpusEncoderConfig, SAMPLE_RATE,
};
use crate::media::rtcp::ReceiveStatistics;

/// Frames in one loop: one second of 20 ms frames.
pub const LOOP_FRAMES: usize = 50;
/// A decoded sample above this magnitude after quiet frames marks a returning onset.
pub const ONSET_LEVEL: i16 = 2000;
/// A frame whose samples all stay below this magnitude is quiet.
const QUIET_LEVEL: i16 = 400;
/// Quiet frames that must come before an onset for it to count.
pub const QUIET_FRAMES_BEFORE_ONSET: usize = 2;
/// Decoded audio kept for the frequency measurement: one second at 8 kHz.
const WINDOW_SAMPLES: usize = SAMPLE_RATE as usize;
/// Onset send times kept for matching: a few loops.
const ONSETS_KEPT: usize = 8;

/// The codec audio is sent with, chosen by the negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendCodec {
    /// Opus (RTP clock 48 kHz, encoded here from 8 kHz, narrowband).
    Opus,
    /// G.711 with this law (RTP clock 8 kHz).
    G711(Law),
}

impl SendCodec {
    /// The codec of a negotiated `(payload type, clock rate)`: 0 is PCMU, 8 PCMA, anything else Opus.
    pub fn from_format(pt: u8, clock_rate: u32) -> Self {
        match (pt, clock_rate) {
            (0, 8000) => SendCodec::G711(Law::Ulaw),
            (8, 8000) => SendCodec::G711(Law::Alaw),
            _ => SendCodec::Opus,
        }
    }

    /// RTP timestamp units per 20 ms frame.
    pub fn ticks_per_frame(self) -> u64 {
        match self {
            SendCodec::Opus => 960,
            SendCodec::G711(_) => FRAME_SAMPLES as u64,
        }
    }

    /// The RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            SendCodec::Opus => 48_000,
            SendCodec::G711(_) => SAMPLE_RATE,
        }
    }
}

/// The signal sent: a sine tone with a silent gap at the start of every second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ToneSpec {
    /// Frequency in whole hertz (so that one second holds whole periods and loops without a click),
    /// up to 3900 Hz (narrowband).
    pub frequency_hz: u32,
    /// Peak amplitude (16-bit scale).
    pub amplitude: i16,
    /// Silent 20 ms frames at the start of each second; the tone's return is the round-trip marker.
    /// 0 sends a continuous tone and measures no round trip.
    pub silent_frames: usize,
    /// libopus complexity for the pre-encoded frames (0 to 10).
    pub opus_complexity: u8,
}

impl Default for ToneSpec {
    /// 440 Hz at about −12 dBFS, 100 ms of silence per second, complexity 5.
    fn default() -> Self {
        ToneSpec {
            frequency_hz: 440,
            amplitude: 8000,
            silent_frames: 5,
            opus_complexity: 5,
        }
    }
}

/// One second of pre-encoded frames, sent in a loop.
#[derive(Debug)]
pub struct ToneLoop {
    codec: SendCodec,
    silent_frames: usize,
    frames: Vec<Vec<u8>>,
}

type ToneCache = Mutex<HashMap<(SendCodec, ToneSpec), Arc<ToneLoop>>>;

impl ToneLoop {
    /// Encodes one second of `spec` with `codec`.
    pub fn new(codec: SendCodec, spec: &ToneSpec) -> Result<Self, OpusCodecError> {
        if spec.frequency_hz == 0 || spec.frequency_hz > 3900 || spec.silent_frames >= LOOP_FRAMES {
            return Err(OpusCodecError::InvalidConfig(
                "tone frequency must be 1 to 3900 Hz with fewer than 50 silent frames",
            ));
        }
        let second = tone_second(spec);
        let frames = match codec {
            SendCodec::G711(law) => second
                .chunks_exact(FRAME_SAMPLES)
                .map(|pcm| {
                    let mut codes = vec![0; FRAME_SAMPLES];
                    law.encode(pcm, &mut codes);
                    codes
                })
                .collect(),
            SendCodec::Opus => {
                let mut encoder = OpusEncoder8k::new(&OpusEncoderConfig {
                    complexity: spec.opus_complexity,
                    ..OpusEncoderConfig::default()
                })?;
                let mut out = [0_u8; MAX_PACKET_BYTES];
                let mut frames = Vec::with_capacity(LOOP_FRAMES);
                // The first second only warms the encoder up, so that the kept second starts from the
                // state the end of the loop leaves behind: the loop has no seam.
                for (index, pcm) in second
                    .chunks_exact(FRAME_SAMPLES)
                    .cycle()
                    .take(2 * LOOP_FRAMES)
                    .enumerate()
                {
                    let length = encoder.encode(pcm, &mut out)?;
                    if index >= LOOP_FRAMES {
                        frames.push(out[..length].to_vec());
                    }
                }
                frames
            }
        };
        Ok(ToneLoop {
            codec,
            silent_frames: spec.silent_frames,
            frames,
        })
    }

    /// The process-wide loop for `(codec, spec)`, encoded on first use: many calls share one.
    pub fn shared(codec: SendCodec, spec: &ToneSpec) -> Result<Arc<Self>, OpusCodecError> {
        static CACHE: OnceLock<ToneCache> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let key = (codec, *spec);
        if let Some(found) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(found);
        }
        let built = Arc::new(ToneLoop::new(codec, spec)?);
        if let Ok(mut cache) = cache.lock() {
            cache.entry(key).or_insert_with(|| built.clone());
        }
        Ok(built)
    }

    /// The codec the frames are in.
    pub fn codec(&self) -> SendCodec {
        self.codec
    }

    /// The payload of the `index`-th frame since the start of sending.
    pub fn frame(&self, index: u64) -> &[u8] {
        // LOOP_FRAMES frames were built, so the modulo is always in range.
        &self.frames[(index % LOOP_FRAMES as u64) as usize]
    }

    /// True when the `index`-th frame is where the tone starts after the silent gap.
    pub fn is_onset(&self, index: u64) -> bool {
        self.silent_frames > 0 && index % LOOP_FRAMES as u64 == self.silent_frames as u64
    }
}

/// One second of the tone at 8 kHz, with the silent gap at its start.
fn tone_second(spec: &ToneSpec) -> Vec<i16> {
    let silent = spec.silent_frames * FRAME_SAMPLES;
    (0..WINDOW_SAMPLES)
        .map(|n| {
            if n < silent {
                return 0;
            }
            let phase =
                2.0 * std::f64::consts::PI * f64::from(spec.frequency_hz) * n as f64 / f64::from(SAMPLE_RATE);
            (f64::from(spec.amplitude) * phase.sin()) as i16
        })
        .collect()
}

/// What arrived so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReceivedAudio {
    /// Audio packets received.
    pub packets: u64,
    /// Packets missing from the sequence numbers seen (negative with duplicates).
    pub lost: i64,
    /// RFC 3550 interarrival jitter, in milliseconds.
    pub jitter_ms: f64,
    /// Round trips measured through an echo, oldest first.
    pub round_trips: Vec<Duration>,
    /// Packets that could not be decoded (only counted while analysing).
    pub undecodable: u64,
}

impl ReceivedAudio {
    /// Lost packets as a fraction of those expected.
    pub fn loss_ratio(&self) -> f64 {
        let expected = self.packets as i64 + self.lost;
        if expected <= 0 {
            return 0.0;
        }
        self.lost.max(0) as f64 / expected as f64
    }
}

/// A decoder for the analysed stream.
#[derive(Debug)]
enum Decoder {
    Opus(Box<OpusDecoder8k>),
    G711(Law),
}

/// Measures the audio coming back. See the module docs.
#[derive(Debug)]
pub struct AudioMeter {
    statistics: ReceiveStatistics,
    clock_rate: u32,
    packets: u64,
    first_seq: Option<u64>,
    highest_seq: u64,
    undecodable: u64,
    decoder: Option<Decoder>,
    window: VecDeque<i16>,
    quiet_frames: usize,
    onsets_sent: VecDeque<Instant>,
    round_trips: Vec<Duration>,
    decoded: Vec<i16>,
}

impl AudioMeter {
    /// A meter for a stream in `codec`; `analyse` decodes for frequency and round trip.
    pub fn new(epoch: Instant, codec: SendCodec, analyse: bool) -> Result<Self, OpusCodecError> {
        let decoder = match (analyse, codec) {
            (false, _) => None,
            (true, SendCodec::Opus) => Some(Decoder::Opus(Box::new(OpusDecoder8k::new()?))),
            (true, SendCodec::G711(law)) => Some(Decoder::G711(law)),
        };
        Ok(AudioMeter {
            statistics: ReceiveStatistics::new(epoch, codec.clock_rate()),
            clock_rate: codec.clock_rate(),
            packets: 0,
            first_seq: None,
            highest_seq: 0,
            undecodable: 0,
            decoder,
            window: VecDeque::with_capacity(WINDOW_SAMPLES),
            quiet_frames: 0,
            onsets_sent: VecDeque::with_capacity(ONSETS_KEPT),
            round_trips: Vec::new(),
            decoded: vec![0; MAX_PACKET_SAMPLES],
        })
    }

    /// The RTP clock rate of the measured stream.
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// An onset of our tone left at `at`.
    pub fn onset_sent(&mut self, at: Instant) {
        if self.onsets_sent.len() == ONSETS_KEPT {
            self.onsets_sent.pop_front();
        }
        self.onsets_sent.push_back(at);
    }

    /// One audio packet arrived at `now`; `seq` is the extended sequence number.
    pub fn on_audio(&mut self, now: Instant, seq: u64, rtp_time: u64, payload: &[u8]) {
        self.packets += 1;
        let first = *self.first_seq.get_or_insert(seq);
        if seq >= first {
            self.highest_seq = self.highest_seq.max(seq);
        }
        // The statistics work on the wire's 16-bit sequence and 32-bit timestamp, which wrap the same way.
        self.statistics.on_packet(now, seq as u16, rtp_time as u32, true);
        let samples = match &mut self.decoder {
            None => return,
            Some(Decoder::Opus(decoder)) => decoder.decode(payload, &mut self.decoded),
            Some(Decoder::G711(law)) => {
                let length = payload.len().min(self.decoded.len());
                Ok(law.decode(&payload[..length], &mut self.decoded))
            }
        };
        match samples {
            Ok(count) => self.analyse(now, count),
            Err(_) => self.undecodable += 1,
        }
    }

    fn analyse(&mut self, now: Instant, count: usize) {
        let frame = &self.decoded[..count];
        for &sample in frame {
            if self.window.len() == WINDOW_SAMPLES {
                self.window.pop_front();
            }
            self.window.push_back(sample);
        }
        let onset = frame
            .iter()
            .position(|s| s.unsigned_abs() > ONSET_LEVEL.unsigned_abs());
        match onset {
            Some(offset) if self.quiet_frames >= QUIET_FRAMES_BEFORE_ONSET => {
                let heard = now + Duration::from_secs_f64(offset as f64 / f64::from(SAMPLE_RATE));
                if let Some(sent) = self.onsets_sent.iter().rev().find(|sent| **sent <= now) {
                    self.round_trips.push(heard.saturating_duration_since(*sent));
                }
                self.quiet_frames = 0;
            }
            _ if frame
                .iter()
                .all(|s| s.unsigned_abs() < QUIET_LEVEL.unsigned_abs()) =>
            {
                self.quiet_frames += 1
            }
            _ => self.quiet_frames = 0,
        }
    }

    /// What arrived so far.
    pub fn received(&self) -> ReceivedAudio {
        let expected = self
            .first_seq
            .map_or(0, |first| self.highest_seq.saturating_sub(first) + 1);
        ReceivedAudio {
            packets: self.packets,
            lost: expected as i64 - self.packets as i64,
            jitter_ms: self.statistics.jitter_ms(),
            round_trips: self.round_trips.clone(),
            undecodable: self.undecodable,
        }
    }

    /// The strongest frequency in the last second of decoded audio, to 1 Hz; `None` when not analysing
    /// or when less than 100 ms was decoded.
    pub fn dominant_frequency(&self) -> Option<f64> {
        if self.window.len() < WINDOW_SAMPLES / 10 {
            return None;
        }
        let samples: Vec<f64> = self.window.iter().map(|s| f64::from(*s)).collect();
        dominant_frequency(&samples, f64::from(SAMPLE_RATE))
    }
}

/// The frequency with the most energy in `samples`: a 10 Hz scan of 50 Hz–3950 Hz over 100 ms blocks
/// (whose bins are 10 Hz wide, so a tone between two scan points still shows), then a 1 Hz scan around
/// the best one over all of `samples`. `None` for silence.
pub fn dominant_frequency(samples: &[f64], sample_rate: f64) -> Option<f64> {
    let block = (sample_rate / 10.0) as usize;
    let best = |candidates: &mut dyn Iterator<Item = (u32, f64)>| {
        candidates.fold(
            (0, 0.0_f64),
            |best, candidate| if candidate.1 > best.1 { candidate } else { best },
        )
    };
    let (coarse, power) = best(&mut (50..=3950).step_by(10).map(|f| {
        let power = samples
            .chunks_exact(block.max(1))
            .map(|chunk| goertzel_power(chunk, f64::from(f), sample_rate))
            .sum::<f64>();
        (f, power)
    }));
    if power <= 1e-6 {
        return None;
    }
    let (fine, _) = best(
        &mut (coarse.saturating_sub(10)..=coarse + 10)
            .map(|f| (f, goertzel_power(samples, f64::from(f), sample_rate))),
    );
    Some(f64::from(fine))
}

/// The power of `samples` at `frequency` (Goertzel).
fn goertzel_power(samples: &[f64], frequency: f64, sample_rate: f64) -> f64 {
    let coefficient = 2.0 * (2.0 * std::f64::consts::PI * frequency / sample_rate).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s0 = x + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coefficient * s1 * s2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goertzel_finds_the_tone_and_not_a_neighbour() {
        let samples: Vec<f64> = (0..8000)
            .map(|n| (2.0 * std::f64::consts::PI * 1234.0 * f64::from(n) / 8000.0).sin())
            .collect();
        assert_eq!(dominant_frequency(&samples, 8000.0), Some(1234.0));
        assert_eq!(dominant_frequency(&[0.0; 800], 8000.0), None);
    }

    #[test]
    fn opus_loop_decodes_to_its_frequency() {
        let spec = ToneSpec::default();
        let tone = ToneLoop::new(SendCodec::Opus, &spec).unwrap();
        assert!(tone.is_onset(5) && tone.is_onset(55) && !tone.is_onset(4));
        let start = Instant::now();
        let mut meter = AudioMeter::new(start, SendCodec::Opus, true).unwrap();
        for index in 0..100_u64 {
            let at = start + Duration::from_millis(20 * index);
            if tone.is_onset(index) {
                meter.onset_sent(at);
            }
            // An echo 60 ms later.
            meter.on_audio(
                at + Duration::from_millis(60),
                index,
                index * 960,
                tone.frame(index),
            );
        }
        let frequency = meter.dominant_frequency().unwrap();
        assert!((frequency - 440.0).abs() <= 2.0, "{frequency}");
        let received = meter.received();
        assert_eq!(
            (received.packets, received.lost, received.undecodable),
            (100, 0, 0)
        );
        assert_eq!(received.round_trips.len(), 2, "{received:?}");
        for rtt in received.round_trips {
            // 60 ms of echo plus the codec's delay (lookahead and decoder) of a few ms.
            assert!(
                rtt >= Duration::from_millis(60) && rtt < Duration::from_millis(75),
                "{rtt:?}"
            );
        }
    }

    #[test]
    fn pcmu_loop_and_loss() {
        let spec = ToneSpec {
            frequency_hz: 1000,
            silent_frames: 0,
            ..ToneSpec::default()
        };
        let tone = ToneLoop::shared(SendCodec::G711(Law::Ulaw), &spec).unwrap();
        assert!(Arc::ptr_eq(
            &tone,
            &ToneLoop::shared(SendCodec::G711(Law::Ulaw), &spec).unwrap()
        ));
        assert_eq!(tone.frame(3).len(), 160);
        let start = Instant::now();
        let mut meter = AudioMeter::new(start, SendCodec::G711(Law::Ulaw), true).unwrap();
        for index in (0..60_u64).filter(|i| i % 10 != 9) {
            let at = start + Duration::from_millis(20 * index);
            meter.on_audio(at, 1000 + index, index * 160, tone.frame(index));
        }
        let received = meter.received();
        assert_eq!(received.packets, 54);
        assert_eq!(
            received.lost, 5,
            "index 59 is the highest; 9, 19, 29, 39, 49 are missing"
        );
        assert!((received.loss_ratio() - 5.0 / 59.0).abs() < 1e-9);
        assert!(received.round_trips.is_empty());
        assert_eq!(meter.dominant_frequency(), Some(1000.0));
    }

    #[test]
    fn without_analysis_nothing_is_decoded() {
        let start = Instant::now();
        let mut meter = AudioMeter::new(start, SendCodec::Opus, false).unwrap();
        meter.on_audio(start, 1, 0, b"not opus");
        assert_eq!(meter.received().undecodable, 0);
        assert_eq!(meter.dominant_frequency(), None);
    }

    #[test]
    fn refuses_tones_it_cannot_loop() {
        for spec in [
            ToneSpec {
                frequency_hz: 0,
                ..ToneSpec::default()
            },
            ToneSpec {
                silent_frames: 50,
                ..ToneSpec::default()
            },
        ] {
            assert!(ToneLoop::new(SendCodec::Opus, &spec).is_err());
        }
    }
}
