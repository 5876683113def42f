//! ITU-T G.711 µ-law (PCMU) and A-law (PCMA): 16-bit linear PCM to 8-bit codes and back.
//!
//! Decoding is one lookup in a 256-entry table per law, built at compile time from the G.711 segment
//! layout. Encoding computes the segment from the position of the highest set bit (`leading_zeros`), which
//! needs no table and so leaves the cache to the codecs around it.
//!
//! G.711 defines its decision levels on 14-bit (µ-law) and 13-bit (A-law) linear values; how a 16-bit
//! sample reaches that range is left to the implementation. This module rounds to the nearest step, the
//! way SoX does, so every one of the 65536 inputs encodes to the same byte as
//! `sox -e u-law|a-law -D` (tests/g711_sox.rs checks all of them). The ITU-T G.191 reference code
//! truncates instead; the two differ by one code step on 508 (µ-law) and 1016 (A-law) inputs that sit
//! exactly on a decision boundary, and rounding is the one that picks the nearer reconstruction level.
//!
//! All functions work on caller buffers and never allocate. The slice functions convert
//! `min(input.len(), output.len())` samples and return that count.

/// Which G.711 companding law a stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// µ-law, RTP payload type 0 (PCMU), used in North America and Japan.
    Ulaw,
    /// A-law, RTP payload type 8 (PCMA), used in most of the rest of the world.
    Alaw,
}

impl Law {
    /// The static RTP payload type of this law (RFC 3551).
    pub const fn payload_type(self) -> u8 {
        match self {
            Law::Ulaw => 0,
            Law::Alaw => 8,
        }
    }

    /// The code a silent (zero) sample encodes to, used to fill comfort silence.
    pub const fn silence(self) -> u8 {
        match self {
            Law::Ulaw => 0xFF,
            Law::Alaw => 0xD5,
        }
    }

    /// Encodes linear samples into `codes`; returns how many were converted.
    #[inline]
    pub fn encode(self, samples: &[i16], codes: &mut [u8]) -> usize {
        match self {
            Law::Ulaw => ulaw_encode(samples, codes),
            Law::Alaw => alaw_encode(samples, codes),
        }
    }

    /// Decodes `codes` into linear samples; returns how many were converted.
    #[inline]
    pub fn decode(self, codes: &[u8], samples: &mut [i16]) -> usize {
        match self {
            Law::Ulaw => ulaw_decode(codes, samples),
            Law::Alaw => alaw_decode(codes, samples),
        }
    }
}

/// Encodes 16-bit linear samples to µ-law; returns `min(samples.len(), codes.len())`.
#[inline]
pub fn ulaw_encode(samples: &[i16], codes: &mut [u8]) -> usize {
    map_into(samples, codes, ulaw_encode_sample)
}

/// Decodes µ-law codes to 16-bit linear samples; returns `min(codes.len(), samples.len())`.
#[inline]
pub fn ulaw_decode(codes: &[u8], samples: &mut [i16]) -> usize {
    map_into(codes, samples, ulaw_decode_sample)
}

/// Encodes 16-bit linear samples to A-law; returns `min(samples.len(), codes.len())`.
#[inline]
pub fn alaw_encode(samples: &[i16], codes: &mut [u8]) -> usize {
    map_into(samples, codes, alaw_encode_sample)
}

/// Decodes A-law codes to 16-bit linear samples; returns `min(codes.len(), samples.len())`.
#[inline]
pub fn alaw_decode(codes: &[u8], samples: &mut [i16]) -> usize {
    map_into(codes, samples, alaw_decode_sample)
}

/// Writes `convert(input[i])` to `output[i]` for the common length and returns that length.
#[inline(always)]
fn map_into<In: Copy, Out>(input: &[In], output: &mut [Out], convert: impl Fn(In) -> Out) -> usize {
    for (out, &value) in output.iter_mut().zip(input) {
        *out = convert(value);
    }
    input.len().min(output.len())
}

/// Encodes one 16-bit linear sample to µ-law.
#[inline]
pub fn ulaw_encode_sample(sample: i16) -> u8 {
    // Round to the 14-bit range µ-law is defined on (-8192..=8192 after rounding).
    let linear = (i32::from(sample) + 2) >> 2;
    let (magnitude, mask) = if linear < 0 {
        (-linear, 0x7F)
    } else {
        (linear, 0xFF)
    };
    // The bias of 33 puts the segment boundaries on powers of two; 0x1FFF is the top of segment 7,
    // where the largest magnitudes clip.
    let biased = (magnitude + 33).min(0x1FFF) as u32;
    // `biased` is in 33..=0x1FFF, so its highest set bit is bit 5..=12 and `segment` is 0..=7.
    let segment = 26 - biased.leading_zeros();
    let step = (biased >> (segment + 1)) & 0x0F;
    (((segment << 4) | step) as u8) ^ mask
}

/// Encodes one 16-bit linear sample to A-law.
#[inline]
pub fn alaw_encode_sample(sample: i16) -> u8 {
    // Round to the 13-bit range A-law is defined on (-4096..=4096 after rounding).
    let linear = (i32::from(sample) + 4) >> 3;
    let (magnitude, mask) = if linear >= 0 {
        (linear, 0xD5)
    } else {
        (-linear - 1, 0x55)
    };
    let magnitude = magnitude.min(0x0FFF) as u32;
    // Segments 0 and 1 share a step size; from segment 2 on, each segment doubles it. `magnitude` is at
    // most 0x0FFF (highest bit 11), so `segment` is 0..=7.
    let segment = if magnitude < 0x20 {
        0
    } else {
        27 - magnitude.leading_zeros()
    };
    let step = (magnitude >> segment.max(1)) & 0x0F;
    (((segment << 4) | step) as u8) ^ mask
}

/// Decodes one µ-law code.
#[inline]
pub fn ulaw_decode_sample(code: u8) -> i16 {
    ULAW_DECODE[usize::from(code)]
}

/// Decodes one A-law code.
#[inline]
pub fn alaw_decode_sample(code: u8) -> i16 {
    ALAW_DECODE[usize::from(code)]
}

/// µ-law code to 16-bit linear sample.
static ULAW_DECODE: [i16; 256] = build_ulaw_decode();

/// A-law code to 16-bit linear sample.
static ALAW_DECODE: [i16; 256] = build_alaw_decode();

const fn build_ulaw_decode() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        // µ-law codes are transmitted inverted.
        let inverted = !(code as u8);
        let segment = (inverted >> 4) & 0x07;
        let step = (inverted & 0x0F) as i32;
        let magnitude = (((step << 3) + 0x84) << segment) - 0x84;
        table[code] = if inverted & 0x80 != 0 {
            -magnitude
        } else {
            magnitude
        } as i16;
        code += 1;
    }
    table
}

const fn build_alaw_decode() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        // A-law inverts every other bit on the wire.
        let toggled = (code as u8) ^ 0x55;
        let segment = (toggled >> 4) & 0x07;
        let step = (toggled & 0x0F) as i32;
        let magnitude = if segment == 0 {
            (step << 4) + 8
        } else {
            ((step << 4) + 0x108) << (segment - 1)
        };
        table[code] = if toggled & 0x80 != 0 {
            magnitude
        } else {
            -magnitude
        } as i16;
        code += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_decode_to_the_g711_levels() {
        assert_eq!(ulaw_decode_sample(0x00), -32124);
        assert_eq!(ulaw_decode_sample(0x80), 32124);
        assert_eq!(ulaw_decode_sample(0xFF), 0);
        assert_eq!(ulaw_decode_sample(0x7F), 0);
        assert_eq!(alaw_decode_sample(0xD5), 8);
        assert_eq!(alaw_decode_sample(0x55), -8);
        assert_eq!(alaw_decode_sample(0xAA), 32256);
        assert_eq!(alaw_decode_sample(0x2A), -32256);
    }

    #[test]
    fn silence_codes_decode_to_the_smallest_level() {
        assert_eq!(ulaw_encode_sample(0), Law::Ulaw.silence());
        assert_eq!(alaw_encode_sample(0), Law::Alaw.silence());
        assert!(ulaw_decode_sample(Law::Ulaw.silence()).abs() <= 8);
        assert!(alaw_decode_sample(Law::Alaw.silence()).abs() <= 8);
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for code in 0..=255u8 {
            // µ-law has two codes for zero (0x7F and 0xFF); the encoder picks the positive one.
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(
                ulaw_encode_sample(ulaw_decode_sample(code)),
                expected,
                "µ-law code {code:#04x}"
            );
            assert_eq!(
                alaw_encode_sample(alaw_decode_sample(code)),
                code,
                "A-law code {code:#04x}"
            );
        }
    }

    #[test]
    fn encoding_is_monotonic_and_within_half_a_step() {
        for law in [Law::Ulaw, Law::Alaw] {
            let mut previous = i16::MIN;
            for sample in i16::MIN..=i16::MAX {
                let mut code = [0u8];
                let mut decoded = [0i16];
                law.encode(&[sample], &mut code);
                law.decode(&code, &mut decoded);
                assert!(decoded[0] >= previous, "{law:?} not monotonic at {sample}");
                previous = decoded[0];
                // The largest step is 1024 (µ-law) or 1024 (A-law segment 7); clipping adds the distance
                // from full scale to the top level.
                let error = (i32::from(decoded[0]) - i32::from(sample)).abs();
                let clipped = i32::from(sample).abs() > 32124;
                assert!(error <= 516 || clipped, "{law:?} error {error} at {sample}");
            }
        }
    }

    #[test]
    fn slices_convert_the_shorter_length() {
        let samples = [0i16, 1000, -1000, 32767, -32768];
        let mut codes = [0u8; 3];
        assert_eq!(ulaw_encode(&samples, &mut codes), 3);
        let mut decoded = [0i16; 8];
        assert_eq!(Law::Ulaw.decode(&codes, &mut decoded), 3);
        assert_eq!(decoded[3..], [0; 5]);
        assert_eq!(alaw_encode(&samples[..2], &mut codes), 2);
        assert_eq!(Law::Alaw.payload_type(), 8);
        assert_eq!(Law::Ulaw.payload_type(), 0);
    }
}
