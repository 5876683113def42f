//! RTP packets (RFC 3550 §5.1) read as borrowed views and written into caller buffers, the RFC 4733
//! telephone-event payload, and the RTP/RTCP demultiplexing rule of RFC 5761.
//!
//! Why not the `rtp` crate (a dependency anyway): its `Packet::unmarshal` copies every payload into a
//! `Bytes` and collects CSRCs and header extensions into `Vec`s, i.e. at least one heap allocation per
//! packet in each direction. The media path runs 50 packets per second per direction per call and must
//! not allocate (see the Media issue), and what we need from a header is twelve bytes of fixed layout.
//! So this is a small zero-copy codec: [`RtpPacket::parse`] borrows the datagram, [`RtpHeader::write`]
//! fills a buffer the caller owns. Both reject malformed input with an [`RtpPacketError`]; nothing here
//! panics on any input.

/// The only RTP version in use (RFC 3550).
pub const RTP_VERSION: u8 = 2;

/// Length of the fixed RTP header, without CSRCs or extension.
pub const RTP_HEADER_LEN: usize = 12;

/// Why bytes are not a usable RTP packet, or why a packet could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpPacketError {
    /// Shorter than the fixed header (or, for telephone-event, than its 4-byte payload).
    #[error("{len} bytes is too short")]
    TooShort {
        /// Length of the input.
        len: usize,
    },
    /// The version field is not 2 (STUN, DTLS or garbage on the port).
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    /// The CSRC list or the header extension runs past the end of the datagram.
    #[error("RTP header runs past the end of the packet")]
    HeaderOverrun,
    /// The padding count is zero or larger than what follows the header.
    #[error("RTP padding of {padding} bytes does not fit in {available} bytes")]
    BadPadding {
        /// The padding count from the last byte.
        padding: u8,
        /// Bytes between the header and the end of the datagram.
        available: usize,
    },
    /// A payload type to write does not fit in 7 bits.
    #[error("payload type {0} is not in 0..=127")]
    BadPayloadType(u8),
    /// The output buffer cannot hold the packet.
    #[error("packet needs {needed} bytes, buffer has {available}")]
    BufferTooSmall {
        /// Bytes the packet needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}

/// A header extension (RFC 3550 §5.3.1), borrowed from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpExtension<'a> {
    /// The profile-defined 16-bit identifier (0xBEDE for RFC 8285 one-byte headers).
    pub profile: u16,
    /// The extension data (a multiple of 4 bytes).
    pub data: &'a [u8],
}

/// A parsed RTP packet borrowing the datagram it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// The marker bit (first packet of a talkspurt or of a telephone event).
    pub marker: bool,
    /// The 7-bit payload type.
    pub payload_type: u8,
    /// The 16-bit sequence number.
    pub sequence_number: u16,
    /// The media timestamp.
    pub timestamp: u32,
    /// The synchronisation source.
    pub ssrc: u32,
    /// The header extension, if the X bit is set.
    pub extension: Option<RtpExtension<'a>>,
    /// The payload, without padding.
    pub payload: &'a [u8],
    /// How many padding bytes followed the payload (0 when the P bit is clear).
    pub padding: u8,
    csrc: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses a datagram. Accepts CSRCs, a header extension and padding; checks every length.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, RtpPacketError> {
        let Some((fixed, rest)) = datagram.split_first_chunk::<RTP_HEADER_LEN>() else {
            return Err(RtpPacketError::TooShort { len: datagram.len() });
        };
        let version = fixed[0] >> 6;
        if version != RTP_VERSION {
            return Err(RtpPacketError::BadVersion(version));
        }
        let has_padding = fixed[0] & 0x20 != 0;
        let has_extension = fixed[0] & 0x10 != 0;
        let csrc_len = usize::from(fixed[0] & 0x0f) * 4;
        let (csrc, mut rest) = rest
            .split_at_checked(csrc_len)
            .ok_or(RtpPacketError::HeaderOverrun)?;

        let extension = if has_extension {
            let (ext_header, after) = rest
                .split_first_chunk::<4>()
                .ok_or(RtpPacketError::HeaderOverrun)?;
            let ext_len = usize::from(u16::from_be_bytes([ext_header[2], ext_header[3]])) * 4;
            let (data, after) = after
                .split_at_checked(ext_len)
                .ok_or(RtpPacketError::HeaderOverrun)?;
            rest = after;
            Some(RtpExtension {
                profile: u16::from_be_bytes([ext_header[0], ext_header[1]]),
                data,
            })
        } else {
            None
        };

        let padding = if has_padding {
            let count = rest.last().copied().unwrap_or(0);
            if count == 0 || usize::from(count) > rest.len() {
                return Err(RtpPacketError::BadPadding {
                    padding: count,
                    available: rest.len(),
                });
            }
            count
        } else {
            0
        };
        let payload = &rest[..rest.len() - usize::from(padding)];

        Ok(RtpPacket {
            marker: fixed[1] & 0x80 != 0,
            payload_type: fixed[1] & 0x7f,
            sequence_number: u16::from_be_bytes([fixed[2], fixed[3]]),
            timestamp: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
            ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
            extension,
            payload,
            padding,
            csrc,
        })
    }

    /// The contributing sources (a mixer's inputs), usually none.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        self.csrc
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }
}

/// The fields of an RTP header we write: version 2, no padding, no extension, no CSRCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// The marker bit.
    pub marker: bool,
    /// The payload type (0..=127).
    pub payload_type: u8,
    /// The sequence number.
    pub sequence_number: u16,
    /// The media timestamp.
    pub timestamp: u32,
    /// The synchronisation source.
    pub ssrc: u32,
}

impl RtpHeader {
    /// Writes this header followed by `payload` at the start of `out`; returns the packet length.
    pub fn write(&self, payload: &[u8], out: &mut [u8]) -> Result<usize, RtpPacketError> {
        if self.payload_type > 0x7f {
            return Err(RtpPacketError::BadPayloadType(self.payload_type));
        }
        let needed = RTP_HEADER_LEN + payload.len();
        let Some(packet) = out.get_mut(..needed) else {
            return Err(RtpPacketError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        };
        let (header, body) = packet.split_at_mut(RTP_HEADER_LEN);
        header[0] = RTP_VERSION << 6;
        header[1] = (u8::from(self.marker) << 7) | self.payload_type;
        header[2..4].copy_from_slice(&self.sequence_number.to_be_bytes());
        header[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        header[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        body.copy_from_slice(payload);
        Ok(needed)
    }
}

/// Whether a datagram on a multiplexed RTP/RTCP port is RTCP (RFC 5761 §4).
///
/// The second octet of RTCP is the packet type, 192..=223 in practice (SR 200, RR 201, SDES 202, BYE 203,
/// APP 204, feedback 205/206, XR 207). In RTP that octet is marker + payload type, and RFC 5761 forbids the
/// payload types 64..=95 that would collide (they read 192..=223 with the marker set), so the range
/// decides. The version is checked too, so STUN or garbage is not mistaken for RTCP.
pub fn is_rtcp(datagram: &[u8]) -> bool {
    matches!(datagram, [first, 192..=223, ..] if first >> 6 == RTP_VERSION)
}

/// The payload of an RFC 4733 telephone-event packet (one event, no redundancy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// The event code: 0–9 digits, 10 `*`, 11 `#`, 12–15 A–D, 16 flash.
    pub event: u8,
    /// The E bit: this packet ends the event (sent three times).
    pub end: bool,
    /// Power level in -dBm0, 0..=63 (6 bits).
    pub volume: u8,
    /// Duration so far in timestamp units, counted from the event's timestamp.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Size of one event block on the wire.
    pub const LEN: usize = 4;

    /// Reads the first event block of a payload (further blocks only appear with RFC 2198 redundancy).
    pub fn parse(payload: &[u8]) -> Result<Self, RtpPacketError> {
        let Some(block) = payload.first_chunk::<{ Self::LEN }>() else {
            return Err(RtpPacketError::TooShort { len: payload.len() });
        };
        Ok(TelephoneEvent {
            event: block[0],
            end: block[1] & 0x80 != 0,
            volume: block[1] & 0x3f,
            duration: u16::from_be_bytes([block[2], block[3]]),
        })
    }

    /// The wire form (the R bit is written as zero; the volume is cut to 6 bits).
    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let duration = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3f),
            duration[0],
            duration[1],
        ]
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// A hand-assembled packet: V=2, P, X, CC=1, M, PT=8, seq 0x1234, ts 0xDEADBEEF, SSRC 0x01020304,
    /// one CSRC, a one-word extension, 3 payload bytes and 2 bytes of padding.
    const FULL: [u8; 31] = [
        0xb1, 0x88, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04, // fixed header
        0xca, 0xfe, 0xba, 0xbe, // CSRC
        0xbe, 0xde, 0x00, 0x01, 0x10, 0xaa, 0x00, 0x00, // extension: profile, 1 word, data
        0x55, 0x66, 0x77, // payload
        0x00, 0x02, // padding: one zero byte and the count 2 (covers both); the packet ends here
        0x00, 0x00, // only in the over-long variant, whose last byte is then a zero padding count
    ];

    #[test]
    fn parses_every_header_field() {
        let packet = RtpPacket::parse(&FULL[..29]).unwrap();
        assert!(packet.marker);
        assert_eq!(packet.payload_type, 8);
        assert_eq!(packet.sequence_number, 0x1234);
        assert_eq!(packet.timestamp, 0xdead_beef);
        assert_eq!(packet.ssrc, 0x0102_0304);
        assert_eq!(packet.csrcs().collect::<Vec<_>>(), vec![0xcafe_babe]);
        assert_eq!(
            packet.extension,
            Some(RtpExtension {
                profile: 0xbede,
                data: &[0x10, 0xaa, 0, 0]
            })
        );
        assert_eq!(packet.payload, &[0x55, 0x66, 0x77]);
        assert_eq!(packet.padding, 2);
    }

    #[test]
    fn writes_what_it_parses() {
        let header = RtpHeader {
            marker: true,
            payload_type: 101,
            sequence_number: 65535,
            timestamp: 160,
            ssrc: 0xfeed_f00d,
        };
        let mut out = [0u8; 64];
        let len = header.write(&[1, 2, 3, 4], &mut out).unwrap();
        assert_eq!(len, 16);
        assert_eq!(&out[..2], &[0x80, 0xe5]);
        let packet = RtpPacket::parse(&out[..len]).unwrap();
        assert_eq!(
            (
                packet.marker,
                packet.payload_type,
                packet.sequence_number,
                packet.timestamp,
                packet.ssrc
            ),
            (true, 101, 65535, 160, 0xfeed_f00d)
        );
        assert_eq!(
            (packet.payload, packet.padding, packet.extension),
            (&[1u8, 2, 3, 4][..], 0, None)
        );
        assert_eq!(packet.csrcs().count(), 0);
    }

    #[test]
    fn write_refuses_small_buffers_and_wide_payload_types() {
        let header = RtpHeader {
            marker: false,
            payload_type: 0,
            sequence_number: 1,
            timestamp: 2,
            ssrc: 3,
        };
        let mut out = [0u8; 171];
        assert_eq!(
            header.write(&[0; 160], &mut out),
            Err(RtpPacketError::BufferTooSmall {
                needed: 172,
                available: 171
            })
        );
        let wide = RtpHeader {
            payload_type: 128,
            ..header
        };
        assert_eq!(
            wide.write(&[], &mut out),
            Err(RtpPacketError::BadPayloadType(128))
        );
    }

    #[test]
    fn rejects_malformed_headers() {
        assert_eq!(
            RtpPacket::parse(&FULL[..11]),
            Err(RtpPacketError::TooShort { len: 11 })
        );
        let mut v1 = FULL;
        v1[0] = 0x40;
        assert_eq!(RtpPacket::parse(&v1), Err(RtpPacketError::BadVersion(1)));
        // CC=15 promises 60 bytes of CSRCs.
        let mut many_csrc = FULL;
        many_csrc[0] = 0x8f;
        assert_eq!(
            RtpPacket::parse(&many_csrc[..20]),
            Err(RtpPacketError::HeaderOverrun)
        );
        // Extension length of 0xffff words.
        let mut long_ext = FULL;
        long_ext[18..20].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(RtpPacket::parse(&long_ext), Err(RtpPacketError::HeaderOverrun));
        // Padding count larger than what follows the header, and a zero count.
        let mut big_pad = FULL;
        big_pad[28] = 0x40;
        assert_eq!(
            RtpPacket::parse(&big_pad[..29]),
            Err(RtpPacketError::BadPadding {
                padding: 0x40,
                available: 5
            })
        );
        assert!(matches!(
            RtpPacket::parse(&FULL),
            Err(RtpPacketError::BadPadding { padding: 0, .. })
        ));
    }

    #[test]
    fn random_and_truncated_bytes_never_panic() {
        let mut rng = StdRng::seed_from_u64(1);
        for end in 0..FULL.len() {
            let _ = RtpPacket::parse(&FULL[..end]);
        }
        let mut buf = [0u8; 80];
        for _ in 0..50_000 {
            let len = rng.random_range(0..buf.len());
            rng.fill(&mut buf[..len]);
            // Bias half of the inputs toward version 2 so the deeper checks run.
            if len > 0 && rng.random() {
                buf[0] = (buf[0] & 0x3f) | 0x80;
            }
            if let Ok(packet) = RtpPacket::parse(&buf[..len]) {
                let consumed = RTP_HEADER_LEN
                    + packet.csrcs().count() * 4
                    + packet.extension.map_or(0, |e| e.data.len() + 4)
                    + packet.payload.len()
                    + usize::from(packet.padding);
                assert_eq!(consumed, len);
            }
            let _ = is_rtcp(&buf[..len]);
            let _ = TelephoneEvent::parse(&buf[..len]);
        }
    }

    #[test]
    fn rtcp_demultiplexing() {
        let rtp = [0x80, 0x00, 0, 1];
        let rtp_with_marker = [0x80, 0x80 | 101, 0, 1];
        for packet_type in [200u8, 201, 202, 203, 204, 205, 206, 207] {
            assert!(is_rtcp(&[0x81, packet_type, 0, 7]), "{packet_type}");
        }
        assert!(!is_rtcp(&rtp) && !is_rtcp(&rtp_with_marker));
        // A STUN binding request starts with 0x00 0x01: not version 2.
        assert!(!is_rtcp(&[0x00, 0xc8, 0, 0]));
        assert!(!is_rtcp(&[0x80]) && !is_rtcp(&[]));
    }

    #[test]
    fn telephone_event_round_trip() {
        // RFC 4733 §2.3 layout: event 11 (#), end, volume 10, duration 1280.
        let event = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 1280,
        };
        assert_eq!(event.to_bytes(), [11, 0x8a, 0x05, 0x00]);
        assert_eq!(TelephoneEvent::parse(&event.to_bytes()), Ok(event));
        // The reserved bit is ignored when reading.
        assert_eq!(TelephoneEvent::parse(&[1, 0x4a, 0, 160]).unwrap().volume, 10);
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(RtpPacketError::TooShort { len: 3 })
        );
    }
}
