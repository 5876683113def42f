//! Opus at the G.711 rate: decoding any Opus stream straight to 8 kHz mono and encoding 8 kHz mono, through
//! libopus (the `opus` crate, which bundles it).
//!
//! Opus carries no sample rate on the wire: a browser's 48 kHz stream (RTP clock 48000, 960 ticks per
//! 20 ms) decodes natively at 8 kHz, and packets encoded from 8 kHz input are narrowband Opus that any
//! decoder plays at its own rate. So no resampler sits between Opus and G.711. The RTP timestamp of
//! encoded packets still advances at 48000 Hz; that is the RTP leg's business, not this module's.
//!
//! Both types decode and encode into caller buffers and never allocate after construction.
//!
//! ## Expected loss
//!
//! In-band FEC is paid for with bits of the primary encoding: at a fixed 5 % expected loss it costs
//! 0.1 PESQ on a clean path (docs/quality.md), and without it a lossy path loses much more. So the
//! encoder is told the loss the browser actually reports for our stream (RTCP receiver reports),
//! through [`ExpectedLoss`]: nothing at first and on a clean path, so libopus spends no FEC bits;
//! the loss seen as soon as a report shows one, so FEC starts at once; and back down slowly when
//! reports come back clean, since loss tends to come in episodes.

use std::time::{Duration, Instant};

use opus::{Application, Bandwidth, Bitrate, Channels, Decoder, Encoder, Signal};

/// The sample rate on the G.711 side of the pipeline.
pub const SAMPLE_RATE: u32 = 8000;
/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// The most samples one Opus packet can decode to at 8 kHz (120 ms).
pub const MAX_PACKET_SAMPLES: usize = 960;
/// A comfortable size for an encoded packet buffer: libopus never needs more than 1275 bytes per frame.
pub const MAX_PACKET_BYTES: usize = 1275;

/// Errors from the Opus wrappers.
#[derive(Debug, thiserror::Error)]
pub enum OpusCodecError {
    /// libopus could not create the encoder or decoder state.
    #[error("cannot create the Opus {what}: {source}")]
    Create {
        /// "encoder" or "decoder".
        what: &'static str,
        /// What libopus said.
        source: opus::Error,
    },
    /// libopus refused an encoder setting (the value is out of its range).
    #[error("Opus encoder refused {setting}: {source}")]
    Setting {
        /// Which setting.
        setting: &'static str,
        /// What libopus said.
        source: opus::Error,
    },
    /// The configuration holds a value outside what Opus accepts.
    #[error("invalid Opus configuration: {0}")]
    InvalidConfig(&'static str),
    /// An empty packet was given to decode; use `conceal` for a lost packet.
    #[error("empty Opus packet")]
    EmptyPacket,
    /// The packet is not valid Opus, or the output buffer is too small for it.
    #[error("cannot decode Opus packet: {0}")]
    Decode(opus::Error),
    /// The input is not a whole Opus frame (2.5, 5, 10, 20, 40 or 60 ms) or the output buffer is too small.
    #[error("cannot encode Opus frame: {0}")]
    Encode(opus::Error),
}

/// Decodes Opus packets to 8 kHz mono 16-bit samples.
#[derive(Debug)]
pub struct OpusDecoder8k {
    decoder: Decoder,
}

impl OpusDecoder8k {
    /// A decoder producing 8 kHz mono.
    pub fn new() -> Result<Self, OpusCodecError> {
        let decoder = Decoder::new(SAMPLE_RATE, Channels::Mono).map_err(|source| OpusCodecError::Create {
            what: "decoder",
            source,
        })?;
        Ok(OpusDecoder8k { decoder })
    }

    /// Decodes one packet into `out`; returns the number of samples written. `out` should hold
    /// [`MAX_PACKET_SAMPLES`] to take any packet; a smaller buffer that cannot hold this packet is an error.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, OpusCodecError> {
        if packet.is_empty() {
            return Err(OpusCodecError::EmptyPacket);
        }
        self.decoder
            .decode(packet, out, false)
            .map_err(OpusCodecError::Decode)
    }

    /// Recovers the frame lost just before `next_packet` from the in-band FEC data that packet carries,
    /// then decode `next_packet` itself with [`decode`](Self::decode). `out` must be exactly as long as
    /// the lost audio (e.g. [`FRAME_SAMPLES`] for 20 ms). When `next_packet` carries no FEC data, libopus
    /// conceals instead, as [`conceal`](Self::conceal) would.
    pub fn decode_fec(&mut self, next_packet: &[u8], out: &mut [i16]) -> Result<usize, OpusCodecError> {
        if next_packet.is_empty() {
            return Err(OpusCodecError::EmptyPacket);
        }
        self.decoder
            .decode(next_packet, out, true)
            .map_err(OpusCodecError::Decode)
    }

    /// Conceals a lost frame (libopus PLC); `out` must be exactly as long as the lost audio, a multiple
    /// of 2.5 ms (20 samples).
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, OpusCodecError> {
        self.decoder
            .decode(&[], out, false)
            .map_err(OpusCodecError::Decode)
    }

    /// Forgets the stream, as after an SSRC change.
    pub fn reset(&mut self) -> Result<(), OpusCodecError> {
        self.decoder.reset_state().map_err(OpusCodecError::Decode)
    }

    /// How many samples `packet` decodes to at 8 kHz, without decoding it.
    pub fn packet_samples(packet: &[u8]) -> Result<usize, OpusCodecError> {
        opus::packet::get_nb_samples(packet, SAMPLE_RATE).map_err(OpusCodecError::Decode)
    }
}

/// How the encoder toward the browser is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusEncoderConfig {
    /// libopus computational complexity, 0 (cheapest) to 10.
    pub complexity: u8,
    /// Target bitrate in bits per second (500 to 512000).
    pub bitrate_bps: u32,
    /// Whether to add in-band forward error correction (a low-bitrate copy of the previous frame).
    pub inband_fec: bool,
    /// The packet loss the encoder expects until the receiver reports any ([`ExpectedLoss`]), 0 to
    /// 100 %; FEC is only spent when this is above 0.
    pub expected_loss_percent: u8,
    /// Whether to send almost nothing during silence (discontinuous transmission).
    pub dtx: bool,
}

impl Default for OpusEncoderConfig {
    /// Complexity 5, 24 kb/s, FEC on, no loss expected until reported, no DTX. 24 kb/s is more than
    /// narrowband speech needs for transparency and leaves room for the FEC copy.
    fn default() -> Self {
        OpusEncoderConfig {
            complexity: 5,
            bitrate_bps: 24_000,
            inband_fec: true,
            expected_loss_percent: 0,
            dtx: false,
        }
    }
}

/// Encodes 8 kHz mono 16-bit samples to Opus (VoIP application, narrowband).
#[derive(Debug)]
pub struct OpusEncoder8k {
    encoder: Encoder,
}

impl OpusEncoder8k {
    /// An encoder set up from `config`.
    pub fn new(config: &OpusEncoderConfig) -> Result<Self, OpusCodecError> {
        let encoder = Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip).map_err(|source| {
            OpusCodecError::Create {
                what: "encoder",
                source,
            }
        })?;
        let mut this = OpusEncoder8k { encoder };
        // The input holds nothing above 4 kHz; saying so keeps libopus from spending bits on empty bands.
        setting(
            "max bandwidth",
            this.encoder.set_max_bandwidth(Bandwidth::Narrowband),
        )?;
        setting("signal", this.encoder.set_signal(Signal::Voice))?;
        this.set_complexity(config.complexity)?;
        this.set_bitrate(config.bitrate_bps)?;
        this.set_inband_fec(config.inband_fec)?;
        this.set_expected_loss(config.expected_loss_percent)?;
        setting("dtx", this.encoder.set_dtx(config.dtx))?;
        Ok(this)
    }

    /// Encodes one frame of `pcm` (20, 40, 80, 160, 320 or 480 samples: 2.5 to 60 ms) into `out`;
    /// returns the packet length. [`MAX_PACKET_BYTES`] is always enough for `out`. With DTX on, a
    /// packet of 1 or 2 bytes need not be sent.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, OpusCodecError> {
        self.encoder.encode(pcm, out).map_err(OpusCodecError::Encode)
    }

    /// Changes the complexity (0 to 10).
    pub fn set_complexity(&mut self, complexity: u8) -> Result<(), OpusCodecError> {
        if complexity > 10 {
            return Err(OpusCodecError::InvalidConfig("complexity must be 0 to 10"));
        }
        setting("complexity", self.encoder.set_complexity(i32::from(complexity)))
    }

    /// Changes the target bitrate (500 to 512000 b/s).
    pub fn set_bitrate(&mut self, bitrate_bps: u32) -> Result<(), OpusCodecError> {
        let bits = i32::try_from(bitrate_bps)
            .ok()
            .filter(|bits| (500..=512_000).contains(bits))
            .ok_or(OpusCodecError::InvalidConfig("bitrate must be 500 to 512000 b/s"))?;
        setting("bitrate", self.encoder.set_bitrate(Bitrate::Bits(bits)))
    }

    /// Turns in-band FEC on or off.
    pub fn set_inband_fec(&mut self, enabled: bool) -> Result<(), OpusCodecError> {
        setting("inband fec", self.encoder.set_inband_fec(enabled))
    }

    /// Tells the encoder how much loss to expect (0 to 100 %), e.g. from the receiver's RTCP reports.
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), OpusCodecError> {
        if percent > 100 {
            return Err(OpusCodecError::InvalidConfig("expected loss must be 0 to 100 %"));
        }
        setting(
            "packet loss percentage",
            self.encoder.set_packet_loss_perc(i32::from(percent)),
        )
    }

    /// The packet loss the encoder expects now, in percent.
    pub fn expected_loss(&mut self) -> Result<u8, OpusCodecError> {
        let percent = setting("packet loss percentage", self.encoder.get_packet_loss_perc())?;
        Ok(u8::try_from(percent).unwrap_or(0))
    }

    /// The encoder's lookahead in samples at 8 kHz: how much later the decoded audio comes out.
    pub fn lookahead(&mut self) -> Result<usize, OpusCodecError> {
        let samples = setting("lookahead", self.encoder.get_lookahead())?;
        Ok(usize::try_from(samples).unwrap_or(0))
    }
}

/// How fast the expected loss falls back once reports come back clean: the time constant of its
/// exponential decay. 20 s takes a 10 % episode back to no FEC in about a minute.
const LOSS_DECAY: Duration = Duration::from_secs(20);
/// Reports on fewer packets than this (half a second of 20 ms packets, e.g. right after unhold) are
/// added to the next one rather than judged alone.
const MIN_REPORTED_PACKETS: u64 = 25;
/// Below this loss the encoder expects none and spends nothing on FEC.
const NO_LOSS_BELOW: f64 = 0.005;
/// The most loss the encoder is told: libopus's use of it (FEC bitrate thresholds, LBRR gain) stops
/// changing at 25 %.
const MAX_EXPECTED_LOSS_PERCENT: u8 = 25;

/// The packet loss the encoder should expect, from the receiver's reports on our stream: each
/// report's loss raises the estimate at once, and between reports it decays with [`LOSS_DECAY`]
/// (a peak that fades). Sans-IO: time comes with each report.
#[derive(Debug, Clone)]
pub struct ExpectedLoss {
    /// The estimate as a fraction, at `estimated_at`.
    fraction: f64,
    estimated_at: Option<Instant>,
    /// Packets and losses of reports too small to judge alone, carried into the next.
    carried_expected: u64,
    carried_lost: u64,
    percent: u8,
}

impl ExpectedLoss {
    /// An estimate that starts at `initial_percent`, until the first report.
    pub fn new(initial_percent: u8) -> Self {
        let percent = initial_percent.min(100);
        ExpectedLoss {
            fraction: f64::from(percent) / 100.0,
            estimated_at: None,
            carried_expected: 0,
            carried_lost: 0,
            percent,
        }
    }

    /// The receiver reported that of `expected` packets since its previous report, `lost` never
    /// arrived. Returns the new expected loss in percent when it changed.
    pub fn handle_report(&mut self, now: Instant, expected: u64, lost: u64) -> Option<u8> {
        let expected = self.carried_expected.saturating_add(expected);
        let lost = self.carried_lost.saturating_add(lost).min(expected);
        if expected < MIN_REPORTED_PACKETS {
            self.carried_expected = expected;
            self.carried_lost = lost;
            return None;
        }
        self.carried_expected = 0;
        self.carried_lost = 0;
        // Beyond what the encoder is ever told, loss would only make the fade back longer.
        let reported = (lost as f64 / expected as f64).min(f64::from(MAX_EXPECTED_LOSS_PERCENT) / 100.0);
        let faded = match self.estimated_at {
            Some(at) => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                self.fraction * (-elapsed / LOSS_DECAY.as_secs_f64()).exp()
            }
            // The initial value is a guess, not a measurement: the first report replaces it.
            None => 0.0,
        };
        self.fraction = faded.max(reported);
        self.estimated_at = Some(now);
        let percent = loss_percent(self.fraction);
        if percent == self.percent {
            return None;
        }
        self.percent = percent;
        Some(percent)
    }

    /// The loss the encoder should expect now, in percent.
    pub fn percent(&self) -> u8 {
        self.percent
    }
}

/// The percentage the encoder is told for an estimated loss fraction: none below
/// [`NO_LOSS_BELOW`], else at least 1 % (FEC on), at most [`MAX_EXPECTED_LOSS_PERCENT`].
fn loss_percent(fraction: f64) -> u8 {
    if fraction < NO_LOSS_BELOW {
        return 0;
    }
    let percent = (fraction * 100.0)
        .round()
        .clamp(1.0, f64::from(MAX_EXPECTED_LOSS_PERCENT));
    // The clamp bounds it to 1..=25.
    percent as u8
}

/// A libopus setting's result, or the value of a query, with the error naming it.
fn setting<T>(name: &'static str, result: Result<T, opus::Error>) -> Result<T, OpusCodecError> {
    result.map_err(|source| OpusCodecError::Setting {
        setting: name,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(frequency: f64, amplitude: f64, samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|n| (amplitude * (2.0 * std::f64::consts::PI * frequency * n as f64 / 8000.0).sin()) as i16)
            .collect()
    }

    /// A signal that changes from frame to frame, so that concealment cannot simply continue it:
    /// a tone whose pitch and level glide, with harmonics.
    fn changing_signal(samples: usize) -> Vec<i16> {
        let mut phase = 0.0_f64;
        (0..samples)
            .map(|n| {
                let t = n as f64 / 8000.0;
                let pitch = 150.0 + 100.0 * (t * 7.0).sin();
                phase += 2.0 * std::f64::consts::PI * pitch / 8000.0;
                let level = 6000.0 * (1.2 + (t * 11.0).sin());
                (level * (phase.sin() + 0.5 * (2.0 * phase).sin() + 0.3 * (3.0 * phase).sin())) as i16
            })
            .collect()
    }

    fn encode_all(config: &OpusEncoderConfig, pcm: &[i16]) -> Vec<Vec<u8>> {
        let mut encoder = OpusEncoder8k::new(config).expect("valid config");
        let mut packet = [0u8; MAX_PACKET_BYTES];
        pcm.chunks_exact(FRAME_SAMPLES)
            .map(|frame| {
                let length = encoder.encode(frame, &mut packet).expect("a 20 ms frame encodes");
                packet[..length].to_vec()
            })
            .collect()
    }

    fn decode_all(packets: &[Vec<u8>]) -> Vec<i16> {
        let mut decoder = OpusDecoder8k::new().expect("decoder");
        let mut out = vec![0i16; packets.len() * FRAME_SAMPLES];
        for (packet, frame) in packets.iter().zip(out.chunks_exact_mut(FRAME_SAMPLES)) {
            assert_eq!(
                decoder.decode(packet, frame).expect("our own packet decodes"),
                FRAME_SAMPLES
            );
        }
        out
    }

    fn energy(samples: impl Iterator<Item = f64>) -> f64 {
        samples.map(|s| s * s).sum()
    }

    /// Frequency from rising zero crossings.
    fn frequency(samples: &[i16]) -> f64 {
        let rising = samples
            .windows(2)
            .filter(|pair| pair[0] < 0 && pair[1] >= 0)
            .count();
        rising as f64 * 8000.0 / samples.len() as f64
    }

    /// The delay in `delays` at which `decoded` best matches `original`, and the SNR there in dB.
    fn best_alignment(
        original: &[i16],
        decoded: &[i16],
        skip: usize,
        delays: std::ops::Range<usize>,
    ) -> (usize, f64) {
        delays
            .map(|delay| {
                let pairs = || {
                    original[skip..original.len() - 400]
                        .iter()
                        .zip(&decoded[skip + delay..])
                };
                let signal = energy(pairs().map(|(&o, _)| f64::from(o)));
                let noise = energy(pairs().map(|(&o, &d)| f64::from(d) - f64::from(o)));
                (delay, 10.0 * (signal / noise.max(1.0)).log10())
            })
            .fold(
                (0, f64::MIN),
                |best, candidate| if candidate.1 > best.1 { candidate } else { best },
            )
    }

    #[test]
    fn a_440_hz_tone_survives_the_round_trip() {
        let original = tone(440.0, 8000.0, 8000);
        let packets = encode_all(&OpusEncoderConfig::default(), &original);
        assert!(
            packets
                .iter()
                .all(|packet| packet.len() > 10 && packet.len() < 120)
        );
        let decoded = decode_all(&packets);
        let settled = &decoded[1600..];
        let measured = frequency(settled);
        assert!((measured - 440.0).abs() <= 5.0, "decoded frequency {measured} Hz");
        let (delay, snr) = best_alignment(&original, &decoded, 1600, 0..400);
        // Measured 32.5 dB at complexity 5, 24 kb/s. A pure tone cannot tell delays one period apart, so the
        // best alignment over several periods is used.
        assert!(snr > 20.0, "SNR {snr:.1} dB at delay {delay}");
    }

    #[test]
    fn packets_are_narrowband_and_decode_at_48_khz_too() {
        let packets = encode_all(&OpusEncoderConfig::default(), &tone(440.0, 8000.0, 1600));
        let mut browser = Decoder::new(48_000, Channels::Mono).expect("48 kHz decoder");
        let mut out = [0i16; 960];
        for packet in &packets {
            assert_eq!(
                opus::packet::get_bandwidth(packet).expect("valid TOC"),
                Bandwidth::Narrowband
            );
            assert_eq!(
                browser
                    .decode(packet, &mut out, false)
                    .expect("a browser decodes it"),
                960
            );
            assert_eq!(
                OpusDecoder8k::packet_samples(packet).expect("valid packet"),
                FRAME_SAMPLES
            );
        }
    }

    #[test]
    fn fec_recovers_a_lost_frame_better_than_concealment() {
        let original = changing_signal(8000);
        let config = OpusEncoderConfig {
            expected_loss_percent: 20,
            ..OpusEncoderConfig::default()
        };
        let packets = encode_all(&config, &original);
        let reference = decode_all(&packets);
        let mut fec_error = 0.0;
        let mut plc_error = 0.0;
        // Lose each of several frames in turn; compare the recovered frame with the loss-free decode.
        for lost in (10..45).step_by(5) {
            let mut with_fec = OpusDecoder8k::new().expect("decoder");
            let mut with_plc = OpusDecoder8k::new().expect("decoder");
            let mut frame = [0i16; FRAME_SAMPLES];
            for packet in &packets[..lost] {
                with_fec.decode(packet, &mut frame).expect("decodes");
                with_plc.decode(packet, &mut frame).expect("decodes");
            }
            let expected = &reference[lost * FRAME_SAMPLES..(lost + 1) * FRAME_SAMPLES];
            let error = |frame: &[i16]| {
                energy(
                    frame
                        .iter()
                        .zip(expected)
                        .map(|(&a, &e)| f64::from(a) - f64::from(e)),
                )
            };
            assert_eq!(
                with_fec
                    .decode_fec(&packets[lost + 1], &mut frame)
                    .expect("FEC decodes"),
                FRAME_SAMPLES
            );
            fec_error += error(&frame);
            assert_eq!(with_plc.conceal(&mut frame).expect("PLC"), FRAME_SAMPLES);
            plc_error += error(&frame);
        }
        assert!(
            fec_error * 4.0 < plc_error,
            "FEC error {fec_error:.3e} vs PLC error {plc_error:.3e}"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut decoder = OpusDecoder8k::new().expect("decoder");
        let mut out = [0i16; MAX_PACKET_SAMPLES];
        assert!(matches!(
            decoder.decode(&[], &mut out),
            Err(OpusCodecError::EmptyPacket)
        ));
        assert!(matches!(
            decoder.decode_fec(&[], &mut out),
            Err(OpusCodecError::EmptyPacket)
        ));
        // Code 3 (several frames) with a frame count of 0, and code 1 (two equal frames) with an odd length.
        assert!(matches!(
            decoder.decode(&[0x03, 0x00], &mut out),
            Err(OpusCodecError::Decode(_))
        ));
        assert!(matches!(
            decoder.decode(&[0x01, 0x00], &mut out),
            Err(OpusCodecError::Decode(_))
        ));
        // A 20 ms packet does not fit in 10 ms of output.
        let packet = &encode_all(&OpusEncoderConfig::default(), &tone(440.0, 8000.0, 160))[0];
        assert!(matches!(
            decoder.decode(packet, &mut out[..80]),
            Err(OpusCodecError::Decode(_))
        ));
        // Random bytes: some happen to be valid Opus; none may panic or overrun.
        let mut state = 0x9E37_79B9_u32;
        for length in 1..400 {
            let garbage: Vec<u8> = (0..length)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            if let Ok(samples) = decoder.decode(&garbage, &mut out) {
                assert!(samples <= MAX_PACKET_SAMPLES);
            }
            // Whatever FEC makes of garbage, it must return.
            let _ = decoder.decode_fec(&garbage, &mut out[..FRAME_SAMPLES]);
        }
        decoder.reset().expect("reset");
        assert_eq!(
            decoder
                .conceal(&mut out[..FRAME_SAMPLES])
                .expect("PLC after reset"),
            FRAME_SAMPLES
        );
    }

    #[test]
    fn invalid_settings_and_frames_are_errors() {
        let bad = |config: OpusEncoderConfig| {
            matches!(OpusEncoder8k::new(&config), Err(OpusCodecError::InvalidConfig(_)))
        };
        assert!(bad(OpusEncoderConfig {
            complexity: 11,
            ..OpusEncoderConfig::default()
        }));
        assert!(bad(OpusEncoderConfig {
            bitrate_bps: 100,
            ..OpusEncoderConfig::default()
        }));
        assert!(bad(OpusEncoderConfig {
            bitrate_bps: u32::MAX,
            ..OpusEncoderConfig::default()
        }));
        assert!(bad(OpusEncoderConfig {
            expected_loss_percent: 101,
            ..OpusEncoderConfig::default()
        }));
        let mut encoder = OpusEncoder8k::new(&OpusEncoderConfig::default()).expect("valid config");
        let mut out = [0u8; MAX_PACKET_BYTES];
        assert!(matches!(
            encoder.encode(&[0; 100], &mut out),
            Err(OpusCodecError::Encode(_))
        ));
        for samples in [20, 40, 80, 160, 320, 480] {
            assert!(
                encoder.encode(&vec![0; samples], &mut out).is_ok(),
                "{samples} samples"
            );
        }
    }

    #[test]
    fn loss_fractions_map_to_whole_percentages_with_fec_from_half_a_percent() {
        assert_eq!(loss_percent(0.0), 0);
        assert_eq!(loss_percent(0.0049), 0);
        assert_eq!(loss_percent(0.005), 1);
        assert_eq!(loss_percent(0.012), 1);
        assert_eq!(loss_percent(0.034), 3);
        assert_eq!(loss_percent(0.25), 25);
        assert_eq!(loss_percent(1.0), 25);
    }

    #[test]
    fn expected_loss_rises_with_a_report_and_fades_on_a_simulated_clock() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        // 250 packets: one report interval of 20 ms packets.
        let mut loss = ExpectedLoss::new(5);
        assert_eq!(loss.percent(), 5);
        // The first report replaces the initial guess; a stray lost packet is no reason for FEC.
        assert_eq!(loss.handle_report(at(5), 250, 0), Some(0));
        assert_eq!(loss.handle_report(at(10), 250, 1), None);
        assert_eq!(loss.percent(), 0);
        // Loss shows: expected at once.
        assert_eq!(loss.handle_report(at(15), 250, 15), Some(6));
        // Then clean reports: 6 % fades with a 20 s time constant (4.7 % after 5 s)...
        assert_eq!(loss.handle_report(at(20), 250, 0), Some(5));
        // ...a smaller loss than the faded estimate does not pull it down faster...
        assert_eq!(loss.handle_report(at(25), 250, 5), Some(4));
        // ...and it reaches none once below half a percent: 6 % × e^(-50/20) = 0.49 % at 65 s.
        let mut zero_at = None;
        for secs in (30..=120).step_by(5) {
            if loss.handle_report(at(secs), 250, 0) == Some(0) {
                zero_at = Some(secs);
                break;
            }
        }
        assert_eq!(zero_at, Some(65));
        // A new episode starts FEC again at once.
        assert_eq!(loss.handle_report(at(70), 250, 50), Some(20));
    }

    #[test]
    fn small_reports_add_up_and_nonsense_is_bounded() {
        let start = Instant::now();
        let mut loss = ExpectedLoss::new(0);
        // Ten packets (a report right after unhold) are too few to judge alone...
        assert_eq!(loss.handle_report(start, 10, 2), None);
        assert_eq!(loss.percent(), 0);
        // ...together with the next report: 2 of 30.
        assert_eq!(loss.handle_report(start + Duration::from_secs(5), 20, 0), Some(7));
        // More lost than expected counts as all lost, which is capped.
        let mut loss = ExpectedLoss::new(0);
        assert_eq!(
            loss.handle_report(start, 100, 500),
            Some(MAX_EXPECTED_LOSS_PERCENT)
        );
        // A clock that goes backwards does not make the estimate grow.
        assert_eq!(loss.handle_report(start - Duration::from_secs(1), 100, 0), None);
        assert_eq!(loss.percent(), MAX_EXPECTED_LOSS_PERCENT);
    }
}
