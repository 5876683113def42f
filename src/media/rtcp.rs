//! RTCP (RFC 3550 §6) for the RTP leg: sender and receiver reports, SDES CNAME and BYE, read from a
//! compound packet as borrowed views and written into a caller buffer; the receiver statistics behind a
//! report block (Appendix A.1, A.3, A.8); round-trip time from LSR/DLSR; NTP timestamps.
//!
//! No allocation: parsing yields views over the datagram, writing goes through [`RtcpWriter`] into a
//! buffer the caller owns, and report blocks are plain `Copy` values passed as slices.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::rtp_packet::RTP_VERSION;

/// Sender report.
pub const PACKET_TYPE_SR: u8 = 200;
/// Receiver report.
pub const PACKET_TYPE_RR: u8 = 201;
/// Source description.
pub const PACKET_TYPE_SDES: u8 = 202;
/// Goodbye.
pub const PACKET_TYPE_BYE: u8 = 203;

/// SDES item type of the canonical name.
const SDES_CNAME: u8 = 1;
/// The report count field has 5 bits.
pub const MAX_REPORT_BLOCKS: usize = 31;

/// Why bytes are not usable RTCP, or why a packet could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    /// Fewer bytes than the packet header or the fixed part of the packet type.
    #[error("RTCP packet truncated")]
    Truncated,
    /// The version field is not 2.
    #[error("RTCP version {0}, expected 2")]
    BadVersion(u8),
    /// The header's length field points past the end of the datagram.
    #[error("RTCP length field of {words} words overruns the {available} bytes left")]
    LengthOverrun {
        /// The length field (32-bit words minus one).
        words: u16,
        /// Bytes left in the datagram.
        available: usize,
    },
    /// The report count or SDES/BYE source count does not fit in the packet.
    #[error("RTCP count of {count} does not fit in the packet")]
    BadCount {
        /// The 5-bit count field.
        count: u8,
    },
    /// A compound packet must start with SR or RR (RFC 3550 §6.1).
    #[error("compound RTCP starts with packet type {0}, not SR or RR")]
    NotReportFirst(u8),
    /// More report blocks than the 5-bit count can carry.
    #[error("{0} report blocks, at most 31 fit")]
    TooManyReportBlocks(usize),
    /// An SDES item or BYE reason longer than 255 bytes.
    #[error("text of {0} bytes, at most 255 fit")]
    TextTooLong(usize),
    /// The output buffer cannot hold the packet.
    #[error("RTCP packet needs {needed} bytes, buffer has {available}")]
    BufferTooSmall {
        /// Bytes the compound needs so far.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}

/// A 64-bit NTP timestamp: seconds since 1900 in the high half, fraction in the low half.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NtpTimestamp(pub u64);

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

impl NtpTimestamp {
    /// The NTP time of a wall-clock reading (times before 1970 map to 1970).
    pub fn from_system_time(time: SystemTime) -> Self {
        let since_unix = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let seconds = (since_unix.as_secs() + NTP_UNIX_OFFSET_SECS) & 0xffff_ffff;
        let fraction = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
        NtpTimestamp((seconds << 32) | fraction)
    }

    /// The middle 32 bits, the "compact" form used by LSR and in RTT arithmetic (units of 1/65536 s).
    pub fn middle32(self) -> u32 {
        // Truncation keeps bits 16..48, which is the point.
        (self.0 >> 16) as u32
    }
}

/// A duration in the 1/65536 s units of DLSR, saturating.
pub fn to_compact(duration: Duration) -> u32 {
    let units = duration.as_nanos().saturating_mul(65_536) / 1_000_000_000;
    u32::try_from(units).unwrap_or(u32::MAX)
}

/// The round-trip time from a report block about our stream (RFC 3550 §6.4.1): arrival − LSR − DLSR,
/// all in compact NTP units. `None` when no SR of ours was seen by the peer (LSR 0) or the result is
/// negative (clock steps, bogus reports).
pub fn round_trip_time(arrival: NtpTimestamp, last_sr: u32, delay_since_last_sr: u32) -> Option<Duration> {
    if last_sr == 0 {
        return None;
    }
    let rtt = arrival
        .middle32()
        .wrapping_sub(last_sr)
        .wrapping_sub(delay_since_last_sr);
    if rtt > u32::MAX / 2 {
        return None;
    }
    Some(Duration::from_nanos(u64::from(rtt) * 1_000_000_000 / 65_536))
}

/// One report block: what a receiver says about one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source this block is about.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed on the wire; duplicates can make it negative).
    pub cumulative_lost: i32,
    /// Cycles (high 16 bits) and highest sequence number received (low 16 bits).
    pub extended_highest_sequence: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last SR received from the source (0 if none).
    pub last_sr: u32,
    /// Delay since that SR in 1/65536 s (0 if none).
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    /// Size on the wire.
    pub const LEN: usize = 24;

    fn read(b: &[u8; Self::LEN]) -> Self {
        // Sign-extend the 24-bit cumulative loss through the top byte.
        let cumulative_lost = i32::from_be_bytes([b[5], b[6], b[7], 0]) >> 8;
        ReportBlock {
            ssrc: be32(&b[0..4]),
            fraction_lost: b[4],
            cumulative_lost,
            extended_highest_sequence: be32(&b[8..12]),
            jitter: be32(&b[12..16]),
            last_sr: be32(&b[16..20]),
            delay_since_last_sr: be32(&b[20..24]),
        }
    }

    fn write(&self, out: &mut [u8]) {
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff).to_be_bytes();
        out[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        out[4] = self.fraction_lost;
        out[5..8].copy_from_slice(&lost[1..4]);
        out[8..12].copy_from_slice(&self.extended_highest_sequence.to_be_bytes());
        out[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        out[16..20].copy_from_slice(&self.last_sr.to_be_bytes());
        out[20..24].copy_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }
}

/// The sender information of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    /// Wall-clock time of the report.
    pub ntp: NtpTimestamp,
    /// The RTP timestamp corresponding to `ntp`.
    pub rtp_timestamp: u32,
    /// Packets sent since the start.
    pub packet_count: u32,
    /// Payload octets sent since the start.
    pub octet_count: u32,
}

/// Report blocks borrowed from an SR or RR (length already checked).
#[derive(Debug, Clone)]
pub struct ReportBlocks<'a>(core::slice::ChunksExact<'a, u8>);

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        let chunk = self.0.next()?;
        chunk.first_chunk::<{ ReportBlock::LEN }>().map(ReportBlock::read)
    }
}

/// SDES chunks borrowed from the packet: each source with its CNAME if it sent one.
#[derive(Debug, Clone)]
pub struct SdesChunks<'a> {
    rest: &'a [u8],
    remaining: u8,
}

/// One SDES chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    /// The source described.
    pub ssrc: u32,
    /// Its CNAME item, as bytes (SDES text is UTF-8 but a peer may send anything).
    pub cname: Option<&'a [u8]>,
}

impl<'a> Iterator for SdesChunks<'a> {
    type Item = SdesChunk<'a>;

    fn next(&mut self) -> Option<SdesChunk<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // The chunk was validated when the packet was parsed; a failure here just ends the iteration.
        let (chunk, rest) = split_sdes_chunk(self.rest).ok()?;
        self.rest = rest;
        Some(chunk)
    }
}

/// Walks one SDES chunk: SSRC, items until a zero type, padding to the next 32-bit boundary.
fn split_sdes_chunk(data: &[u8]) -> Result<(SdesChunk<'_>, &[u8]), RtcpError> {
    let (ssrc, mut at) = (data.first_chunk::<4>().ok_or(RtcpError::Truncated)?, 4);
    let mut cname = None;
    loop {
        let item_type = *data.get(at).ok_or(RtcpError::Truncated)?;
        if item_type == 0 {
            at += 1;
            break;
        }
        let len = usize::from(*data.get(at + 1).ok_or(RtcpError::Truncated)?);
        let text = data.get(at + 2..at + 2 + len).ok_or(RtcpError::Truncated)?;
        if item_type == SDES_CNAME {
            cname = Some(text);
        }
        at += 2 + len;
    }
    let end = at.next_multiple_of(4);
    let rest = data.get(end..).ok_or(RtcpError::Truncated)?;
    Ok((
        SdesChunk {
            ssrc: u32::from_be_bytes(*ssrc),
            cname,
        },
        rest,
    ))
}

/// Sources leaving, borrowed from a BYE.
#[derive(Debug, Clone)]
pub struct SsrcList<'a>(core::slice::ChunksExact<'a, u8>);

impl Iterator for SsrcList<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        self.0.next().map(be32)
    }
}

/// One packet of a compound RTCP datagram.
#[derive(Debug, Clone)]
pub enum RtcpPacket<'a> {
    /// SR: a source that sent media reports its counters and what it received.
    SenderReport {
        /// The sender.
        ssrc: u32,
        /// Its counters and timestamps.
        sender: SenderInfo,
        /// What it received from others.
        reports: ReportBlocks<'a>,
    },
    /// RR: a source that did not send media reports what it received.
    ReceiverReport {
        /// The reporter.
        ssrc: u32,
        /// What it received.
        reports: ReportBlocks<'a>,
    },
    /// SDES.
    SourceDescription(SdesChunks<'a>),
    /// BYE.
    Bye {
        /// The sources leaving.
        ssrcs: SsrcList<'a>,
        /// The optional reason text.
        reason: Option<&'a [u8]>,
    },
    /// APP, feedback, XR or anything else: skipped.
    Other {
        /// The packet type.
        packet_type: u8,
    },
}

/// Iterates over the packets of a compound RTCP datagram. Stops after the first error.
#[derive(Debug, Clone)]
pub struct RtcpPackets<'a> {
    rest: &'a [u8],
    first: bool,
}

impl<'a> RtcpPackets<'a> {
    /// Starts reading `datagram`; nothing is checked until the iterator is advanced.
    pub fn new(datagram: &'a [u8]) -> Self {
        RtcpPackets {
            rest: datagram,
            first: true,
        }
    }
}

impl<'a> Iterator for RtcpPackets<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let result = parse_one(self.rest, self.first);
        self.first = false;
        match result {
            Ok((packet, rest)) => {
                self.rest = rest;
                Some(Ok(packet))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

fn parse_one<'a>(data: &'a [u8], first: bool) -> Result<(RtcpPacket<'a>, &'a [u8]), RtcpError> {
    let header = data.first_chunk::<4>().ok_or(RtcpError::Truncated)?;
    let version = header[0] >> 6;
    if version != RTP_VERSION {
        return Err(RtcpError::BadVersion(version));
    }
    let has_padding = header[0] & 0x20 != 0;
    let count = header[0] & 0x1f;
    let packet_type = header[1];
    let words = u16::from_be_bytes([header[2], header[3]]);
    let total = (usize::from(words) + 1) * 4;
    let (packet, rest) = data.split_at_checked(total).ok_or(RtcpError::LengthOverrun {
        words,
        available: data.len(),
    })?;
    if first && packet_type != PACKET_TYPE_SR && packet_type != PACKET_TYPE_RR {
        return Err(RtcpError::NotReportFirst(packet_type));
    }
    let mut body = &packet[4..];
    if has_padding {
        let padding = usize::from(body.last().copied().unwrap_or(0));
        body = body
            .get(..body.len().wrapping_sub(padding))
            .filter(|_| padding > 0)
            .ok_or(RtcpError::Truncated)?;
    }
    let blocks = |data: &'a [u8]| -> Result<ReportBlocks<'a>, RtcpError> {
        let blocks = data
            .get(..usize::from(count) * ReportBlock::LEN)
            .ok_or(RtcpError::BadCount { count })?;
        Ok(ReportBlocks(blocks.chunks_exact(ReportBlock::LEN)))
    };
    let parsed = match packet_type {
        PACKET_TYPE_SR => {
            let fixed = body.first_chunk::<24>().ok_or(RtcpError::Truncated)?;
            let sender = SenderInfo {
                ntp: NtpTimestamp((u64::from(be32(&fixed[4..8])) << 32) | u64::from(be32(&fixed[8..12]))),
                rtp_timestamp: be32(&fixed[12..16]),
                packet_count: be32(&fixed[16..20]),
                octet_count: be32(&fixed[20..24]),
            };
            RtcpPacket::SenderReport {
                ssrc: be32(&fixed[0..4]),
                sender,
                reports: blocks(&body[24..])?,
            }
        }
        PACKET_TYPE_RR => {
            let ssrc = body.first_chunk::<4>().ok_or(RtcpError::Truncated)?;
            RtcpPacket::ReceiverReport {
                ssrc: u32::from_be_bytes(*ssrc),
                reports: blocks(&body[4..])?,
            }
        }
        PACKET_TYPE_SDES => {
            let mut at = body;
            for _ in 0..count {
                at = split_sdes_chunk(at).map_err(|_| RtcpError::BadCount { count })?.1;
            }
            RtcpPacket::SourceDescription(SdesChunks {
                rest: body,
                remaining: count,
            })
        }
        PACKET_TYPE_BYE => {
            let list_len = usize::from(count) * 4;
            let ssrcs = body.get(..list_len).ok_or(RtcpError::BadCount { count })?;
            let reason = match body.get(list_len..) {
                Some([len, text @ ..]) => text.get(..usize::from(*len)),
                _ => None,
            };
            RtcpPacket::Bye {
                ssrcs: SsrcList(ssrcs.chunks_exact(4)),
                reason,
            }
        }
        other => RtcpPacket::Other { packet_type: other },
    };
    Ok((parsed, rest))
}

/// Writes a compound RTCP packet into a caller buffer, one packet after the other.
///
/// RFC 3550 §6.1: a compound starts with SR or RR and carries an SDES CNAME; the leg writes SR/RR, then
/// SDES, then BYE when leaving.
#[derive(Debug)]
pub struct RtcpWriter<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl<'a> RtcpWriter<'a> {
    /// Starts an empty compound at the beginning of `out`.
    pub fn new(out: &'a mut [u8]) -> Self {
        RtcpWriter { out, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends an SR.
    pub fn sender_report(
        &mut self,
        ssrc: u32,
        sender: &SenderInfo,
        reports: &[ReportBlock],
    ) -> Result<(), RtcpError> {
        let body = self.reserve(
            PACKET_TYPE_SR,
            report_count(reports)?,
            24 + reports.len() * ReportBlock::LEN,
        )?;
        body[0..4].copy_from_slice(&ssrc.to_be_bytes());
        body[4..12].copy_from_slice(&sender.ntp.0.to_be_bytes());
        body[12..16].copy_from_slice(&sender.rtp_timestamp.to_be_bytes());
        body[16..20].copy_from_slice(&sender.packet_count.to_be_bytes());
        body[20..24].copy_from_slice(&sender.octet_count.to_be_bytes());
        write_blocks(&mut body[24..], reports);
        Ok(())
    }

    /// Appends an RR.
    pub fn receiver_report(&mut self, ssrc: u32, reports: &[ReportBlock]) -> Result<(), RtcpError> {
        let body = self.reserve(
            PACKET_TYPE_RR,
            report_count(reports)?,
            4 + reports.len() * ReportBlock::LEN,
        )?;
        body[0..4].copy_from_slice(&ssrc.to_be_bytes());
        write_blocks(&mut body[4..], reports);
        Ok(())
    }

    /// Appends an SDES with one chunk holding our CNAME.
    pub fn sdes_cname(&mut self, ssrc: u32, cname: &str) -> Result<(), RtcpError> {
        let text = cname.as_bytes();
        let text_len = u8::try_from(text.len()).map_err(|_| RtcpError::TextTooLong(text.len()))?;
        // SSRC, type, length, text, then at least one zero byte ending the item list, padded to 4.
        let chunk_len = (4 + 2 + text.len() + 1).next_multiple_of(4);
        let body = self.reserve(PACKET_TYPE_SDES, 1, chunk_len)?;
        body[0..4].copy_from_slice(&ssrc.to_be_bytes());
        body[4] = SDES_CNAME;
        body[5] = text_len;
        body[6..6 + text.len()].copy_from_slice(text);
        body[6 + text.len()..].fill(0);
        Ok(())
    }

    /// Appends a BYE for our source, with an optional reason.
    pub fn bye(&mut self, ssrc: u32, reason: Option<&str>) -> Result<(), RtcpError> {
        let reason = reason.map(str::as_bytes).unwrap_or_default();
        let reason_len = u8::try_from(reason.len()).map_err(|_| RtcpError::TextTooLong(reason.len()))?;
        let reason_field = if reason.is_empty() {
            0
        } else {
            (1 + reason.len()).next_multiple_of(4)
        };
        let body = self.reserve(PACKET_TYPE_BYE, 1, 4 + reason_field)?;
        body[0..4].copy_from_slice(&ssrc.to_be_bytes());
        if !reason.is_empty() {
            body[4] = reason_len;
            body[5..5 + reason.len()].copy_from_slice(reason);
            body[5 + reason.len()..].fill(0);
        }
        Ok(())
    }

    /// Writes a packet header and returns the body to fill (`body_len` is a multiple of 4).
    fn reserve(&mut self, packet_type: u8, count: u8, body_len: usize) -> Result<&mut [u8], RtcpError> {
        let start = self.len;
        let needed = start + 4 + body_len;
        let available = self.out.len();
        let packet = self
            .out
            .get_mut(start..needed)
            .ok_or(RtcpError::BufferTooSmall { needed, available })?;
        // body_len is bounded by 24 + 31 * 24 or 4 + 256, far below the 16-bit word count.
        let words = u16::try_from(body_len / 4).unwrap_or(u16::MAX);
        packet[0] = (RTP_VERSION << 6) | count;
        packet[1] = packet_type;
        packet[2..4].copy_from_slice(&words.to_be_bytes());
        self.len = needed;
        Ok(&mut packet[4..])
    }
}

fn report_count(reports: &[ReportBlock]) -> Result<u8, RtcpError> {
    u8::try_from(reports.len())
        .ok()
        .filter(|n| usize::from(*n) <= MAX_REPORT_BLOCKS)
        .ok_or(RtcpError::TooManyReportBlocks(reports.len()))
}

fn write_blocks(out: &mut [u8], reports: &[ReportBlock]) {
    for (block, chunk) in reports.iter().zip(out.chunks_exact_mut(ReportBlock::LEN)) {
        block.write(chunk);
    }
}

fn be32(b: &[u8]) -> u32 {
    match b.first_chunk::<4>() {
        Some(bytes) => u32::from_be_bytes(*bytes),
        None => 0,
    }
}

/// RFC 3550 A.1: a gap this large is a jump, not loss.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: a step back this small is reordering, not a restart.
const MAX_MISORDER: u16 = 100;

/// What the receiver knows about one incoming source: sequence accounting (RFC 3550 A.1), loss for
/// report blocks (A.3) and interarrival jitter (A.8).
///
/// Unlike A.1 there is no probation: a PBX stream is a single source we negotiated, and its first packet
/// is as trustworthy as any. A sequence jump of more than 3000 followed by a packet continuing from it
/// is taken as a restart (A.1's resync), and the loss counted so far is kept in [`ReceiveStatistics::total_lost`].
#[derive(Debug, Clone)]
pub struct ReceiveStatistics {
    epoch: Instant,
    clock_rate: u32,
    sequence: Option<SequenceState>,
    jitter_q4: u32,
    last_transit: Option<u32>,
    retired_lost: i64,
}

#[derive(Debug, Clone, Copy)]
struct SequenceState {
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    bad_seq: Option<u16>,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
}

impl SequenceState {
    fn start(seq: u16) -> Self {
        SequenceState {
            base_seq: u32::from(seq),
            max_seq: seq,
            cycles: 0,
            bad_seq: None,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
        }
    }

    fn extended_max(&self) -> u64 {
        u64::from(self.cycles) + u64::from(self.max_seq)
    }

    fn expected(&self) -> u64 {
        (self.extended_max() + 1).saturating_sub(u64::from(self.base_seq))
    }

    fn lost(&self) -> i64 {
        // Both are below 2^48 for any real call, so the signed difference cannot overflow.
        self.expected() as i64 - self.received as i64
    }
}

impl ReceiveStatistics {
    /// Statistics for a source whose media clock runs at `clock_rate`; `epoch` is any fixed instant
    /// (arrival times are measured from it).
    pub fn new(epoch: Instant, clock_rate: u32) -> Self {
        ReceiveStatistics {
            epoch,
            clock_rate,
            sequence: None,
            jitter_q4: 0,
            last_transit: None,
            retired_lost: 0,
        }
    }

    /// Accounts one packet. `timing` says whether its timestamp follows the media clock and may feed the
    /// jitter estimate (audio yes; telephone-event packets repeat their event's timestamp, so no).
    /// Returns `false` for a packet taken as a stray after a large jump (A.1's "bad sequence").
    pub fn on_packet(&mut self, now: Instant, seq: u16, timestamp: u32, timing: bool) -> bool {
        let state = self.sequence.get_or_insert_with(|| SequenceState::start(seq));
        let delta = seq.wrapping_sub(state.max_seq);
        if delta < MAX_DROPOUT {
            if seq < state.max_seq {
                state.cycles = state.cycles.wrapping_add(1 << 16);
            }
            state.max_seq = seq;
        } else if delta <= u16::MAX - MAX_MISORDER {
            if state.bad_seq == Some(seq) {
                // Two packets in a row from the new place: the sender restarted its numbering.
                self.retired_lost += state.lost();
                *state = SequenceState::start(seq);
                self.last_transit = None;
            } else {
                state.bad_seq = Some(seq.wrapping_add(1));
                return false;
            }
        }
        state.received += 1;
        if timing {
            self.update_jitter(now, timestamp);
        }
        true
    }

    /// Forgets the current source (its SSRC changed) while keeping its losses in the total and the
    /// jitter estimate.
    pub fn restart(&mut self) {
        if let Some(state) = self.sequence.take() {
            self.retired_lost += state.lost();
        }
        self.last_transit = None;
    }

    fn update_jitter(&mut self, now: Instant, timestamp: u32) {
        let elapsed = now.saturating_duration_since(self.epoch);
        // Wrapping to 32 bits is what the RTP timestamp does too; only differences matter.
        let arrival = (elapsed.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000) as u32;
        let transit = arrival.wrapping_sub(timestamp);
        if let Some(last) = self.last_transit {
            let d = (transit.wrapping_sub(last) as i32).unsigned_abs();
            // J += (|D| - J) / 16, kept scaled by 16 as in A.8.
            self.jitter_q4 = self
                .jitter_q4
                .wrapping_add(d)
                .wrapping_sub((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// Extended highest sequence number received (cycles in the high 16 bits).
    pub fn extended_highest_sequence(&self) -> u32 {
        // The report field is 32 bits; cycles beyond that wrap as on the wire.
        self.sequence.map_or(0, |s| s.extended_max() as u32)
    }

    /// Packets received from the current source (duplicates included, as A.3 counts them).
    pub fn received(&self) -> u64 {
        self.sequence.map_or(0, |s| s.received)
    }

    /// Cumulative packets lost from the current source (negative with duplicates).
    pub fn cumulative_lost(&self) -> i64 {
        self.sequence.map_or(0, |s| s.lost())
    }

    /// Packets lost over the whole call, across restarts and SSRC changes.
    pub fn total_lost(&self) -> i64 {
        self.retired_lost + self.cumulative_lost()
    }

    /// Interarrival jitter in timestamp units.
    pub fn jitter(&self) -> u32 {
        self.jitter_q4 >> 4
    }

    /// Interarrival jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        f64::from(self.jitter_q4) / 16.0 * 1000.0 / f64::from(self.clock_rate.max(1))
    }

    /// Whether any packet was accounted since the start or the last [`ReceiveStatistics::restart`].
    pub fn has_source(&self) -> bool {
        self.sequence.is_some()
    }

    /// The report block about source `ssrc`, and the start of a new interval for "fraction lost" (A.3).
    pub fn report_block(&mut self, ssrc: u32, last_sr: u32, delay_since_last_sr: u32) -> ReportBlock {
        let extended_highest_sequence = self.extended_highest_sequence();
        let jitter = self.jitter();
        let Some(state) = self.sequence.as_mut() else {
            return ReportBlock {
                ssrc,
                jitter,
                last_sr,
                delay_since_last_sr,
                ..ReportBlock::default()
            };
        };
        let expected = state.expected();
        let expected_interval = expected.saturating_sub(state.expected_prior);
        let received_interval = state.received.saturating_sub(state.received_prior);
        state.expected_prior = expected;
        state.received_prior = state.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            // lost_interval <= expected_interval, so the quotient is at most 256; 256 only if all were lost
            // and nothing received, which the clamp turns into 255.
            u8::try_from(((lost_interval as u64) << 8) / expected_interval).unwrap_or(u8::MAX)
        };
        ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: i32::try_from(state.lost().clamp(-0x80_0000, 0x7f_ffff)).unwrap_or(0),
            extended_highest_sequence,
            jitter,
            last_sr,
            delay_since_last_sr,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// An SR with one report block, an SDES CNAME "abc" and an APP packet, assembled by hand.
    fn compound() -> Vec<u8> {
        let mut d = vec![
            0x81, 200, 0x00, 0x0c, // SR, RC=1, 12 words follow
            0x11, 0x22, 0x33, 0x44, // sender SSRC
            0xe9, 0x00, 0x00, 0x01, 0x80, 0x00, 0x00, 0x00, // NTP: 0xE9000001.5
            0x00, 0x00, 0x01, 0x40, // RTP timestamp 320
            0x00, 0x00, 0x00, 0x02, // packets 2
            0x00, 0x00, 0x01, 0x40, // octets 320
            0xaa, 0xbb, 0xcc, 0xdd, // report about 0xAABBCCDD
            0x40, 0xff, 0xff, 0xfe, // fraction 64/256, cumulative -2
            0x00, 0x01, 0x00, 0x05, // one cycle, highest 5
            0x00, 0x00, 0x00, 0x10, // jitter 16
            0x12, 0x34, 0x56, 0x78, // LSR
            0x00, 0x01, 0x00, 0x00, // DLSR 1 s
        ];
        d.extend_from_slice(&[
            0x81, 202, 0x00, 0x03, 0x11, 0x22, 0x33, 0x44, 1, 3, b'a', b'b', b'c', 0, 0, 0,
        ]);
        d.extend_from_slice(&[
            0x80, 204, 0x00, 0x02, 0x11, 0x22, 0x33, 0x44, b'n', b'a', b'm', b'e',
        ]);
        d
    }

    #[test]
    fn parses_a_hand_built_compound() {
        let data = compound();
        let packets: Vec<_> = RtcpPackets::new(&data).collect::<Result<_, _>>().unwrap();
        assert_eq!(packets.len(), 3);
        let RtcpPacket::SenderReport {
            ssrc,
            sender,
            reports,
        } = packets[0].clone()
        else {
            panic!()
        };
        assert_eq!(ssrc, 0x1122_3344);
        assert_eq!(sender.ntp, NtpTimestamp(0xe900_0001_8000_0000));
        assert_eq!(
            (sender.rtp_timestamp, sender.packet_count, sender.octet_count),
            (320, 2, 320)
        );
        let blocks: Vec<_> = reports.collect();
        assert_eq!(
            blocks,
            vec![ReportBlock {
                ssrc: 0xaabb_ccdd,
                fraction_lost: 64,
                cumulative_lost: -2,
                extended_highest_sequence: 0x0001_0005,
                jitter: 16,
                last_sr: 0x1234_5678,
                delay_since_last_sr: 65536,
            }]
        );
        let RtcpPacket::SourceDescription(chunks) = packets[1].clone() else {
            panic!()
        };
        assert_eq!(
            chunks.collect::<Vec<_>>(),
            vec![SdesChunk {
                ssrc: 0x1122_3344,
                cname: Some(b"abc")
            }]
        );
        assert!(matches!(packets[2], RtcpPacket::Other { packet_type: 204 }));
    }

    #[test]
    fn writes_and_reads_back_a_compound() {
        let block = ReportBlock {
            ssrc: 7,
            fraction_lost: 3,
            cumulative_lost: -0x80_0000,
            extended_highest_sequence: 99,
            jitter: 5,
            last_sr: 6,
            delay_since_last_sr: 7,
        };
        let sender = SenderInfo {
            ntp: NtpTimestamp(1 << 40),
            rtp_timestamp: 8,
            packet_count: 9,
            octet_count: 10,
        };
        let mut buf = [0u8; 256];
        let mut writer = RtcpWriter::new(&mut buf);
        writer.sender_report(1, &sender, &[block, block]).unwrap();
        writer.receiver_report(1, &[]).unwrap();
        writer.sdes_cname(1, "callgate").unwrap();
        writer.bye(1, Some("hangup")).unwrap();
        writer.bye(2, None).unwrap();
        let len = writer.len();
        assert_eq!(len % 4, 0);
        let packets: Vec<_> = RtcpPackets::new(&buf[..len]).collect::<Result<_, _>>().unwrap();
        let RtcpPacket::SenderReport {
            sender: read,
            reports,
            ..
        } = packets[0].clone()
        else {
            panic!()
        };
        assert_eq!(read, sender);
        assert_eq!(reports.collect::<Vec<_>>(), vec![block, block]);
        let RtcpPacket::ReceiverReport { ssrc: 1, reports } = packets[1].clone() else {
            panic!()
        };
        assert_eq!(reports.count(), 0);
        let RtcpPacket::SourceDescription(mut chunks) = packets[2].clone() else {
            panic!()
        };
        assert_eq!(chunks.next().and_then(|c| c.cname), Some(&b"callgate"[..]));
        let RtcpPacket::Bye { ssrcs, reason } = packets[3].clone() else {
            panic!()
        };
        assert_eq!(
            (ssrcs.collect::<Vec<_>>(), reason),
            (vec![1], Some(&b"hangup"[..]))
        );
        let RtcpPacket::Bye { ssrcs, reason } = packets[4].clone() else {
            panic!()
        };
        assert_eq!((ssrcs.collect::<Vec<_>>(), reason), (vec![2], None));
    }

    #[test]
    fn writer_refuses_what_does_not_fit() {
        let mut small = [0u8; 40];
        let mut writer = RtcpWriter::new(&mut small);
        writer.receiver_report(1, &[ReportBlock::default()]).unwrap();
        assert_eq!(
            writer.sdes_cname(1, "a-long-cname@callgate"),
            Err(RtcpError::BufferTooSmall {
                needed: 64,
                available: 40
            })
        );
        assert_eq!(writer.len(), 32);
        let mut buf = [0u8; 1024];
        let mut writer = RtcpWriter::new(&mut buf);
        assert_eq!(
            writer.receiver_report(1, &[ReportBlock::default(); 32]),
            Err(RtcpError::TooManyReportBlocks(32))
        );
        assert_eq!(
            writer.sdes_cname(1, &"x".repeat(256)),
            Err(RtcpError::TextTooLong(256))
        );
        assert!(writer.is_empty());
    }

    #[test]
    fn rejects_malformed_compounds() {
        let data = compound();
        let first_error = |bytes: &[u8]| RtcpPackets::new(bytes).find_map(Result::err);
        assert_eq!(first_error(&data[..3]), Some(RtcpError::Truncated));
        assert_eq!(
            first_error(&data[..40]),
            Some(RtcpError::LengthOverrun {
                words: 12,
                available: 40
            })
        );
        let mut bad_version = data.clone();
        bad_version[0] = 0x41;
        assert_eq!(first_error(&bad_version), Some(RtcpError::BadVersion(1)));
        // SDES first is not a valid compound.
        assert_eq!(first_error(&data[52..]), Some(RtcpError::NotReportFirst(202)));
        // RC=2 but room for one block only.
        let mut bad_count = data.clone();
        bad_count[0] = 0x82;
        assert_eq!(first_error(&bad_count), Some(RtcpError::BadCount { count: 2 }));
        // An SDES item whose length runs past its packet.
        let mut bad_item = data;
        bad_item[61] = 40;
        assert_eq!(first_error(&bad_item), Some(RtcpError::BadCount { count: 1 }));
    }

    #[test]
    fn random_and_truncated_bytes_never_panic() {
        let data = compound();
        for end in 0..data.len() {
            RtcpPackets::new(&data[..end]).for_each(drop);
        }
        let mut rng = StdRng::seed_from_u64(3);
        let mut buf = [0u8; 128];
        for _ in 0..50_000 {
            let len = rng.random_range(0..buf.len());
            if rng.random() {
                // Mutate a valid compound so the deeper paths run.
                let take = len.min(data.len());
                buf[..take].copy_from_slice(&data[..take]);
                for _ in 0..3 {
                    let at = rng.random_range(0..buf.len());
                    buf[at] = rng.random();
                }
            } else {
                rng.fill(&mut buf[..len]);
            }
            for packet in RtcpPackets::new(&buf[..len]).flatten() {
                match packet {
                    RtcpPacket::SenderReport { reports, .. } | RtcpPacket::ReceiverReport { reports, .. } => {
                        reports.for_each(drop)
                    }
                    RtcpPacket::SourceDescription(chunks) => chunks.for_each(drop),
                    RtcpPacket::Bye { ssrcs, .. } => ssrcs.for_each(drop),
                    RtcpPacket::Other { .. } => {}
                }
            }
        }
    }

    #[test]
    fn ntp_timestamps_and_round_trip_time() {
        // 2024-01-01T00:00:00.5Z: 1_704_067_200 s after 1970.
        let time = UNIX_EPOCH + Duration::from_millis(1_704_067_200_500);
        let ntp = NtpTimestamp::from_system_time(time);
        assert_eq!(ntp.0 >> 32, 1_704_067_200 + NTP_UNIX_OFFSET_SECS);
        assert_eq!(ntp.0 & 0xffff_ffff, 0x8000_0000);
        assert_eq!(to_compact(Duration::from_millis(500)), 0x8000);
        // RFC 3550 §6.4.1 example: A = 0xB710:8000 (46864.5 s), LSR = 0xB705:2000 (46853.125 s),
        // DLSR = 0x0005:4000 (5.25 s) → RTT 6.125 s.
        let arrival = NtpTimestamp(0x0000_b710_8000_0000);
        let rtt = round_trip_time(arrival, 0xb705_2000, 0x0005_4000).unwrap();
        assert_eq!(rtt, Duration::from_millis(6125));
        assert_eq!(round_trip_time(arrival, 0, 0), None);
        assert_eq!(round_trip_time(arrival, 0xb710_8000, 0x0001_0000), None);
    }

    #[test]
    fn loss_and_fraction_lost_by_hand() {
        let t0 = Instant::now();
        let mut stats = ReceiveStatistics::new(t0, 8000);
        // Sequence 65530..=65535, then 0..=3 with 65533 and 1 missing: 10 expected, 8 received.
        for seq in [65530u16, 65531, 65532, 65534, 65535, 0, 2, 3] {
            assert!(stats.on_packet(t0, seq, 0, false));
        }
        assert_eq!(stats.extended_highest_sequence(), 0x0001_0003);
        assert_eq!(stats.cumulative_lost(), 2);
        let block = stats.report_block(9, 0, 0);
        // 2 of 10 lost: 2 * 256 / 10 = 51.
        assert_eq!((block.fraction_lost, block.cumulative_lost), (51, 2));
        // Next interval: 4..=7 received plus a duplicate of 7, nothing lost (negative interval → 0).
        for seq in [4u16, 5, 6, 7, 7] {
            stats.on_packet(t0, seq, 0, false);
        }
        let block = stats.report_block(9, 0, 0);
        assert_eq!((block.fraction_lost, block.cumulative_lost), (0, 1));
        // A late packet from before (reordered, within MAX_MISORDER) does not move the highest sequence.
        stats.on_packet(t0, 65533, 0, false);
        assert_eq!(stats.extended_highest_sequence(), 0x0001_0007);
        assert_eq!(stats.cumulative_lost(), 0);
    }

    #[test]
    fn sequence_restart_needs_two_packets() {
        let t0 = Instant::now();
        let mut stats = ReceiveStatistics::new(t0, 8000);
        for seq in 100u16..110 {
            stats.on_packet(t0, seq, 0, false);
        }
        stats.on_packet(t0, 111, 0, false); // 110 lost
        assert!(!stats.on_packet(t0, 40_000, 0, false));
        assert_eq!(stats.extended_highest_sequence(), 111);
        assert!(stats.on_packet(t0, 40_001, 0, false));
        assert_eq!((stats.extended_highest_sequence(), stats.received()), (40_001, 1));
        assert_eq!((stats.cumulative_lost(), stats.total_lost()), (0, 1));
        stats.restart();
        assert!(!stats.has_source());
        assert_eq!(stats.total_lost(), 1);
    }

    #[test]
    fn jitter_by_hand() {
        let t0 = Instant::now();
        let mut stats = ReceiveStatistics::new(t0, 8000);
        let ms = Duration::from_millis;
        // 20 ms packets (160 ticks) arriving at 0, 20, 50 and 60 ms: transit times 0, 0, +80, 0 ticks
        // relative to the first.
        stats.on_packet(t0, 1, 1000, true);
        stats.on_packet(t0 + ms(20), 2, 1160, true);
        assert_eq!(stats.jitter(), 0);
        stats.on_packet(t0 + ms(50), 3, 1320, true);
        // |D| = 80 ticks: J = 0 + 80/16 = 5.
        assert_eq!(stats.jitter(), 5);
        stats.on_packet(t0 + ms(60), 4, 1480, true);
        // Transit back from +80 to 0: |D| = 80 again; scaled by 16: J16 = 80 + 80 - round(80 / 16).
        assert_eq!(stats.jitter_q4, 80 + 80 - ((80 + 8) >> 4));
        assert_eq!(stats.jitter(), 9);
        assert!((stats.jitter_ms() - 9.6875 / 8.0).abs() < 1e-9);
        // Telephone-event packets (timing = false) do not move the estimate.
        stats.on_packet(t0 + ms(500), 5, 1480, false);
        assert_eq!(stats.jitter(), 9);
    }
}
