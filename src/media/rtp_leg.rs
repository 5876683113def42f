//! One call's RTP leg toward the PBX, sans-IO: plain RTP/AVP G.711 plus RFC 4733 events, symmetric RTP,
//! RTCP reports, statistics for the CDR and media-timeout detection.
//!
//! The leg never touches a socket or the clock. The driver feeds it:
//! - [`RtpLeg::handle_receive`] with each datagram that arrived on the leg's RTP or RTCP port,
//! - [`RtpLeg::write_audio`] / [`RtpLeg::write_event`] with what the pipeline wants to send,
//! - [`RtpLeg::handle_timeout`] when [`RtpLeg::poll_timeout`] says so (RTCP, media timeout),
//! - [`RtpLeg::set_remote`] / [`RtpLeg::set_direction`] after each offer/answer.
//!
//! Output is written into a buffer the caller owns, and described by a [`Transmit`] (destination,
//! source port, length): nothing is allocated per packet, and the driver sends `&out[..len]` from the
//! socket bound to `from`.
//!
//! **Continuity across hold and re-INVITEs.** The SSRC never changes for the call; sequence numbers go up
//! by one per packet sent, whatever happens in between; timestamps follow elapsed time at 8 kHz even while
//! nothing is sent (hold, or a pause in the pipeline), so the first packet after unhold carries a
//! timestamp that is as far from the last one as the wall clock says, with the marker bit set. Receivers
//! that see a new SSRC or a timestamp going backwards after hold is the classic cause of one-way audio
//! after unhold.
//!
//! **Symmetric RTP.** Until the PBX's first packet, RTP goes to the address in its SDP; after, to the
//! address its packets come from (NAT). RTP and RTCP latch separately. Once latched, packets from other
//! addresses are refused, except from the SDP address itself, which always re-latches: that is where a
//! re-INVITE (direct media) moves the stream, and stragglers from the old source must not hold the latch.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use crate::sdp::{Codec, Direction, G711_CLOCK_RATE, PbxMedia};

use super::rtcp::{
    NtpTimestamp, ReceiveStatistics, ReportBlock, RtcpError, RtcpPacket, RtcpPackets, RtcpWriter, SenderInfo,
    round_trip_time, to_compact,
};
use super::rtp_packet::{RtpHeader, RtpPacket, RtpPacketError, TelephoneEvent, is_rtcp};

/// How long without RTP from the PBX ends the call (while we expect to receive).
pub const DEFAULT_RTP_TIMEOUT: Duration = Duration::from_secs(30);

/// RFC 3550 §6.2 minimum report interval; with two participants and G.711 the computed interval is
/// below it, so this is the interval.
pub const DEFAULT_RTCP_INTERVAL: Duration = Duration::from_secs(5);

/// Static payload type of comfort noise (RFC 3389).
const COMFORT_NOISE_PAYLOAD_TYPE: u8 = 13;

/// A pause in sending longer than this (beyond the last packet's duration) moves the timestamp to the
/// clock instead of continuing from the packet count. Larger than any scheduling hiccup of a 20 ms
/// pipeline, smaller than any hold.
const TIMESTAMP_GAP: Duration = Duration::from_millis(80);

/// How a leg is set up; built once per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpLegConfig {
    /// Our RTP socket address (even port).
    pub local_rtp: SocketAddr,
    /// Our RTCP socket address (RTP port + 1); ignored for sending once rtcp-mux is negotiated.
    pub local_rtcp: SocketAddr,
    /// Our SSRC for the whole call (random, chosen by the caller).
    pub ssrc: u32,
    /// The first sequence number (random per RFC 3550 §5.1).
    pub initial_sequence: u16,
    /// The timestamp at the instant passed to [`RtpLeg::new`] (random per RFC 3550 §5.1).
    pub initial_timestamp: u32,
    /// The SDES CNAME sent with every report.
    pub cname: String,
    /// The wall-clock time at the instant passed to [`RtpLeg::new`]; NTP times in sender reports are this
    /// plus the monotonic time elapsed since, so they never step.
    pub wallclock: SystemTime,
    /// No RTP for this long, while we expect some, is a media timeout.
    pub rtp_timeout: Duration,
    /// The mean RTCP report interval (randomised ±50 % per RFC 3550 §6.3.1).
    pub rtcp_interval: Duration,
}

impl RtpLegConfig {
    /// A config with the default timeout and report interval and a CNAME derived from the SSRC.
    pub fn new(
        local_rtp: SocketAddr,
        local_rtcp: SocketAddr,
        ssrc: u32,
        initial_sequence: u16,
        initial_timestamp: u32,
        wallclock: SystemTime,
    ) -> Self {
        RtpLegConfig {
            local_rtp,
            local_rtcp,
            ssrc,
            initial_sequence,
            initial_timestamp,
            cname: format!("{ssrc:08x}@callgate"),
            wallclock,
            rtp_timeout: DEFAULT_RTP_TIMEOUT,
            rtcp_interval: DEFAULT_RTCP_INTERVAL,
        }
    }
}

/// A datagram written into the caller's buffer: send `&out[..len]` from the socket bound to `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// Our socket to send from (RTP or RTCP port).
    pub from: SocketAddr,
    /// Bytes written at the start of the buffer.
    pub len: usize,
}

/// An RTP packet from the PBX, borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedRtp<'a> {
    /// Payload type.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence_number: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Marker bit.
    pub marker: bool,
    /// The PBX's SSRC; a change means a new stream (the jitter buffer should resynchronise).
    pub ssrc: u32,
    /// The payload.
    pub payload: &'a [u8],
}

/// What an accepted datagram was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received<'a> {
    /// G.711 audio for the pipeline, in one of the negotiated codecs.
    Audio {
        /// The codec of this packet (the PBX may switch among the negotiated ones).
        codec: Codec,
        /// The packet.
        rtp: ReceivedRtp<'a>,
    },
    /// An RFC 4733 telephone-event packet.
    Event {
        /// The event block.
        event: TelephoneEvent,
        /// The packet (its timestamp is the event's start).
        rtp: ReceivedRtp<'a>,
    },
    /// RFC 3389 comfort noise: the PBX is in a silence period.
    ComfortNoise(ReceivedRtp<'a>),
    /// RTCP, consumed by the leg (statistics and round-trip time).
    Rtcp,
}

/// Why a datagram was dropped. None of these ends the call; the driver may log them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpLegError {
    /// Not a well-formed RTP packet.
    #[error("malformed RTP: {0}")]
    MalformedRtp(#[from] RtpPacketError),
    /// Not a well-formed RTCP compound packet.
    #[error("malformed RTCP: {0}")]
    MalformedRtcp(#[from] RtcpError),
    /// RTP with a payload type that was not negotiated.
    #[error("payload type {0} was not negotiated")]
    UnknownPayloadType(u8),
    /// From an address other than the one the leg latched to.
    #[error("packet from {0}, which is not the PBX's media address")]
    UnexpectedSource(SocketAddr),
    /// Arrived on a port that is neither of the leg's.
    #[error("packet arrived on {0}, not one of this leg's ports")]
    UnknownLocalPort(SocketAddr),
    /// RTP before the PBX's SDP was known.
    #[error("RTP before the PBX's SDP")]
    NoRemote,
    /// A sequence number far from the stream's (RFC 3550 A.1); a second one continuing it resynchronises.
    #[error("sequence number {0} jumps away from the stream")]
    SequenceJump(u16),
}

/// Per-leg counters for the call record.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RtpLegStats {
    /// RTP packets sent (audio and events).
    pub packets_sent: u64,
    /// RTP payload octets sent.
    pub bytes_sent: u64,
    /// RTP packets accepted from the PBX.
    pub packets_received: u64,
    /// RTP payload octets accepted from the PBX.
    pub bytes_received: u64,
    /// Packets from the PBX that never arrived (RFC 3550 cumulative loss, over the whole call).
    pub packets_lost: i64,
    /// Interarrival jitter of the PBX's stream, in milliseconds.
    pub jitter_ms: f64,
    /// The latest round-trip time from the PBX's reports about our stream.
    pub rtt_ms: Option<f64>,
    /// What the PBX last reported about our stream: cumulative loss.
    pub remote_packets_lost: Option<i32>,
    /// What the PBX last reported about our stream: jitter in milliseconds.
    pub remote_jitter_ms: Option<f64>,
}

/// One call's RTP leg toward the PBX. See the module docs.
#[derive(Debug)]
pub struct RtpLeg {
    config: RtpLegConfig,
    started: Instant,
    remote: Option<PbxMedia>,
    local_direction: Direction,
    closed: bool,

    next_sequence: u16,
    /// The timestamp timeline: `at` carried `timestamp`, and the packet sent then lasted `samples`.
    anchor: TimelineAnchor,
    event_timestamp: Option<u32>,
    packets_sent: u64,
    octets_sent: u64,
    sent_this_interval: bool,
    sent_last_interval: bool,

    latched_rtp: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    /// The last RTP and RTCP addresses the PBX's SDP named (a `c=0.0.0.0` hold names none and keeps these).
    sdp_rtp: Option<SocketAddr>,
    sdp_rtcp: Option<SocketAddr>,
    remote_ssrc: Option<u32>,
    receive_stats: ReceiveStatistics,
    packets_received: u64,
    octets_received: u64,
    last_received: Option<Instant>,
    expecting_since: Instant,
    /// Middle 32 bits of the PBX's last SR and when it arrived (for LSR/DLSR).
    last_sr: Option<(u32, Instant)>,
    rtt: Option<Duration>,
    remote_report: Option<ReportBlock>,

    next_report: Instant,
    rng: u64,
}

#[derive(Debug, Clone, Copy)]
struct TimelineAnchor {
    at: Instant,
    timestamp: u32,
    samples: u32,
}

impl RtpLeg {
    /// A leg with no remote yet (before the PBX's answer): it sends nothing and expects nothing.
    pub fn new(config: RtpLegConfig, now: Instant) -> Self {
        let mut rng = u64::from(config.ssrc) << 16 | u64::from(config.initial_sequence) | 1;
        let first_report = later(now, randomized(config.rtcp_interval / 2, &mut rng));
        RtpLeg {
            started: now,
            remote: None,
            local_direction: Direction::SendRecv,
            closed: false,
            next_sequence: config.initial_sequence,
            anchor: TimelineAnchor {
                at: now,
                timestamp: config.initial_timestamp,
                samples: 0,
            },
            event_timestamp: None,
            packets_sent: 0,
            octets_sent: 0,
            sent_this_interval: false,
            sent_last_interval: false,
            latched_rtp: None,
            latched_rtcp: None,
            sdp_rtp: None,
            sdp_rtcp: None,
            remote_ssrc: None,
            receive_stats: ReceiveStatistics::new(now, G711_CLOCK_RATE),
            packets_received: 0,
            octets_received: 0,
            last_received: None,
            expecting_since: now,
            last_sr: None,
            rtt: None,
            remote_report: None,
            next_report: first_report,
            rng,
            config,
        }
    }

    /// Applies the PBX's negotiated stream (its answer, or what we agreed to in answer to its re-INVITE).
    ///
    /// Sequence numbers, timestamps and the SSRC carry on unchanged. A new address drops that latch (an
    /// SDP without address, the `c=0.0.0.0` hold, keeps it for the unhold), and a stream that starts being
    /// expected (unhold) restarts the media-timeout clock.
    pub fn set_remote(&mut self, now: Instant, media: PbxMedia) {
        let was_expecting = self.expects_media();
        let moved = media
            .rtp_addr()
            .is_some_and(|rtp| self.sdp_rtp.replace(rtp) != Some(rtp));
        if moved {
            self.latched_rtp = None;
        }
        if media
            .rtcp_addr()
            .is_some_and(|rtcp| self.sdp_rtcp.replace(rtcp) != Some(rtcp))
        {
            self.latched_rtcp = None;
        }
        self.remote = Some(media);
        if self.expects_media() && (!was_expecting || moved) {
            self.expecting_since = now;
        }
    }

    /// Sets our own direction (what we offered or answered): [`Direction::SendOnly`] while we hold the
    /// PBX, [`Direction::SendRecv`] otherwise.
    pub fn set_direction(&mut self, now: Instant, direction: Direction) {
        let was_expecting = self.expects_media();
        self.local_direction = direction;
        if self.expects_media() && !was_expecting {
            self.expecting_since = now;
        }
    }

    /// The codec to encode outgoing audio with, once the PBX's SDP is known.
    pub fn codec(&self) -> Option<Codec> {
        self.remote.as_ref().map(|m| m.codec.codec)
    }

    /// Whether audio written now would be sent (a remote is set, neither side holds the other).
    pub fn is_sending(&self) -> bool {
        self.remote.as_ref().is_some_and(|m| {
            !self.closed && !m.is_rejected() && m.direction.receives() && self.local_direction.sends()
        })
    }

    /// Whether silence from the PBX counts toward the media timeout: only while the stream is sendrecv on
    /// both sides. Any hold suspends it, including the PBX's own `sendonly` hold, because a holding PBX
    /// may send music or nothing at all (Asterisk keeps a separate `rtp_timeout_hold` for that reason).
    pub fn expects_media(&self) -> bool {
        self.remote.as_ref().is_some_and(|m| {
            !self.closed
                && !m.is_rejected()
                && m.direction == Direction::SendRecv
                && self.local_direction == Direction::SendRecv
        })
    }

    /// When the last RTP packet from the PBX was accepted.
    pub fn last_received(&self) -> Option<Instant> {
        self.last_received
    }

    /// Whether the configured RTP timeout has passed without media while we expect some. Hold suspends it,
    /// and taking the hold off starts a fresh period.
    pub fn media_timed_out(&self, now: Instant) -> bool {
        self.timeout_deadline().is_some_and(|deadline| now >= deadline)
    }

    fn timeout_deadline(&self) -> Option<Instant> {
        if !self.expects_media() {
            return None;
        }
        let since = self
            .last_received
            .map_or(self.expecting_since, |last| last.max(self.expecting_since));
        // A timeout too large to represent never fires.
        since.checked_add(self.config.rtp_timeout)
    }

    /// The next instant [`RtpLeg::handle_timeout`] has work: a report, or the media-timeout deadline.
    /// A passed deadline stays due (the driver ends the call on [`RtpLeg::media_timed_out`]).
    /// `None` once the leg is closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        Some(
            self.timeout_deadline()
                .map_or(self.next_report, |deadline| deadline.min(self.next_report)),
        )
    }

    /// Sends the periodic RTCP report when it is due (SR if we sent RTP in the last two intervals, else
    /// RR; always with SDES CNAME). Check [`RtpLeg::media_timed_out`] at the same time.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        if self.closed || now < self.next_report {
            return None;
        }
        self.next_report = later(now, randomized(self.config.rtcp_interval, &mut self.rng));
        self.write_report(now, out, false)
    }

    /// Ends the leg: a last report with BYE (RFC 3550 §6.6), then nothing more is sent or expected.
    pub fn close(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        if self.closed {
            return None;
        }
        let transmit = self.write_report(now, out, true);
        self.closed = true;
        transmit
    }

    /// Writes one audio packet of `samples` 8 kHz samples, already encoded with [`RtpLeg::codec`].
    /// `None` when nothing is to be sent (no remote yet, on hold, closed) or `out` is too small; the
    /// timeline keeps running either way.
    pub fn write_audio(
        &mut self,
        now: Instant,
        payload: &[u8],
        samples: u32,
        marker: bool,
        out: &mut [u8],
    ) -> Option<Transmit> {
        let to = self.rtp_destination()?;
        let payload_type = self.remote.as_ref()?.codec.payload_type;
        let (timestamp, after_gap) = self.next_timestamp(now);
        let header = self.header(marker || after_gap, payload_type, timestamp);
        let len = self.write_packet(header, payload, out)?;
        self.anchor = TimelineAnchor {
            at: now,
            timestamp,
            samples,
        };
        self.event_timestamp = None;
        Some(Transmit {
            to,
            from: self.config.local_rtp,
            len,
        })
    }

    /// Writes one RFC 4733 packet. `start` marks the first packet of an event: it takes the current media
    /// timestamp (kept for every later packet of the event, end retransmissions included) and the marker
    /// bit. `None` when not sending or when the PBX did not negotiate telephone-event.
    pub fn write_event(
        &mut self,
        now: Instant,
        event: TelephoneEvent,
        start: bool,
        out: &mut [u8],
    ) -> Option<Transmit> {
        let to = self.rtp_destination()?;
        let payload_type = self.remote.as_ref()?.telephone_event?.payload_type;
        let event_timestamp = match self.event_timestamp {
            Some(timestamp) if !start => timestamp,
            _ => self.next_timestamp(now).0,
        };
        let header = self.header(start, payload_type, event_timestamp);
        let len = self.write_packet(header, &event.to_bytes(), out)?;
        self.event_timestamp = Some(event_timestamp);
        // Audio after the event continues from the event's end, not from the audio before it.
        self.anchor = TimelineAnchor {
            at: now,
            timestamp: event_timestamp.wrapping_add(u32::from(event.duration)),
            samples: 0,
        };
        Some(Transmit {
            to,
            from: self.config.local_rtp,
            len,
        })
    }

    /// Takes one datagram that arrived on `local` (one of the leg's ports) from `from`.
    ///
    /// On the RTCP port, or on the RTP port when it looks like RTCP (RFC 5761), it is RTCP and updates the
    /// statistics; otherwise it is RTP, checked against the negotiated payload types and the latched source.
    pub fn handle_receive<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        local: SocketAddr,
        datagram: &'a [u8],
    ) -> Result<Received<'a>, RtpLegError> {
        let on_rtp_port = local.port() == self.config.local_rtp.port();
        let on_rtcp_port = !on_rtp_port && local.port() == self.config.local_rtcp.port();
        if !on_rtp_port && !on_rtcp_port {
            return Err(RtpLegError::UnknownLocalPort(local));
        }
        if on_rtcp_port || is_rtcp(datagram) {
            self.receive_rtcp(now, from, datagram)
        } else {
            self.receive_rtp(now, from, datagram)
        }
    }

    /// Counters for the call record.
    pub fn stats(&self) -> RtpLegStats {
        let remote = self.remote_report;
        RtpLegStats {
            packets_sent: self.packets_sent,
            bytes_sent: self.octets_sent,
            packets_received: self.packets_received,
            bytes_received: self.octets_received,
            packets_lost: self.receive_stats.total_lost(),
            jitter_ms: self.receive_stats.jitter_ms(),
            rtt_ms: self.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
            remote_packets_lost: remote.map(|r| r.cumulative_lost),
            remote_jitter_ms: remote.map(|r| f64::from(r.jitter) * 1000.0 / f64::from(G711_CLOCK_RATE)),
        }
    }

    fn receive_rtp<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a [u8],
    ) -> Result<Received<'a>, RtpLegError> {
        let packet = RtpPacket::parse(datagram)?;
        let remote = self.remote.as_ref().ok_or(RtpLegError::NoRemote)?;
        let rtp = ReceivedRtp {
            payload_type: packet.payload_type,
            sequence_number: packet.sequence_number,
            timestamp: packet.timestamp,
            marker: packet.marker,
            ssrc: packet.ssrc,
            payload: packet.payload,
        };
        let received = if let Some(codec) = remote.codec_for(packet.payload_type) {
            Received::Audio { codec, rtp }
        } else if remote
            .telephone_event
            .is_some_and(|te| te.payload_type == packet.payload_type)
        {
            Received::Event {
                event: TelephoneEvent::parse(packet.payload)?,
                rtp,
            }
        } else if packet.payload_type == COMFORT_NOISE_PAYLOAD_TYPE {
            Received::ComfortNoise(rtp)
        } else {
            return Err(RtpLegError::UnknownPayloadType(packet.payload_type));
        };
        self.latched_rtp = Some(latch(self.latched_rtp, from, remote.rtp_addr())?);

        if self.remote_ssrc != Some(packet.ssrc) {
            if self.remote_ssrc.is_some() {
                self.receive_stats.restart();
                self.last_sr = None;
            }
            self.remote_ssrc = Some(packet.ssrc);
        }
        self.last_received = Some(now);
        let timing = matches!(received, Received::Audio { .. });
        if !self
            .receive_stats
            .on_packet(now, packet.sequence_number, packet.timestamp, timing)
        {
            return Err(RtpLegError::SequenceJump(packet.sequence_number));
        }
        self.packets_received += 1;
        self.octets_received += packet.payload.len() as u64;
        Ok(received)
    }

    fn receive_rtcp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<Received<'static>, RtpLegError> {
        // Check the whole compound before it can move the latch or the statistics.
        if datagram.is_empty() {
            return Err(RtcpError::Truncated.into());
        }
        if let Some(error) = RtcpPackets::new(datagram).find_map(Result::err) {
            return Err(error.into());
        }
        let sdp_rtcp = self.remote.as_ref().and_then(PbxMedia::rtcp_addr);
        self.latched_rtcp = Some(latch(self.latched_rtcp, from, sdp_rtcp)?);
        let arrival = self.ntp(now);
        for packet in RtcpPackets::new(datagram).flatten() {
            let reports = match packet {
                RtcpPacket::SenderReport {
                    ssrc,
                    sender,
                    reports,
                } => {
                    if self.remote_ssrc.is_none_or(|remote| remote == ssrc) {
                        self.last_sr = Some((sender.ntp.middle32(), now));
                    }
                    reports
                }
                RtcpPacket::ReceiverReport { reports, .. } => reports,
                _ => continue,
            };
            for block in reports.filter(|b| b.ssrc == self.config.ssrc) {
                self.remote_report = Some(block);
                if let Some(rtt) = round_trip_time(arrival, block.last_sr, block.delay_since_last_sr) {
                    self.rtt = Some(rtt);
                }
            }
        }
        Ok(Received::Rtcp)
    }

    fn rtp_destination(&self) -> Option<SocketAddr> {
        if !self.is_sending() {
            return None;
        }
        self.latched_rtp.or(self.remote.as_ref()?.rtp_addr())
    }

    /// Where RTCP goes and from which of our sockets. Nothing when the PBX gave no usable address
    /// (rejected stream, `c=0.0.0.0`); hold still gets reports (RFC 3264 §5.1).
    fn rtcp_route(&self) -> Option<(SocketAddr, SocketAddr)> {
        let remote = self.remote.as_ref()?;
        let sdp_rtcp = remote.rtcp_addr()?;
        if remote.rtcp_mux {
            let to = self.latched_rtcp.or(self.latched_rtp).unwrap_or(sdp_rtcp);
            Some((to, self.config.local_rtp))
        } else {
            Some((self.latched_rtcp.unwrap_or(sdp_rtcp), self.config.local_rtcp))
        }
    }

    /// The timestamp for a packet sent now, and whether it follows a pause (then it comes from the clock).
    fn next_timestamp(&self, now: Instant) -> (u32, bool) {
        let by_clock = self.timestamp_at(now);
        if self.packets_sent == 0 {
            return (by_clock, false);
        }
        let continuing = self.anchor.timestamp.wrapping_add(self.anchor.samples);
        let ahead = by_clock.wrapping_sub(continuing) as i32;
        if ahead > ticks(TIMESTAMP_GAP) as i32 {
            (by_clock, true)
        } else {
            (continuing, false)
        }
    }

    /// The timestamp the media clock reads at `now`, extrapolated from the last packet sent.
    fn timestamp_at(&self, now: Instant) -> u32 {
        self.anchor
            .timestamp
            .wrapping_add(ticks(now.saturating_duration_since(self.anchor.at)))
    }

    fn header(&self, marker: bool, payload_type: u8, timestamp: u32) -> RtpHeader {
        RtpHeader {
            marker,
            payload_type,
            sequence_number: self.next_sequence,
            timestamp,
            ssrc: self.config.ssrc,
        }
    }

    fn write_packet(&mut self, header: RtpHeader, payload: &[u8], out: &mut [u8]) -> Option<usize> {
        match header.write(payload, out) {
            Ok(len) => {
                self.next_sequence = self.next_sequence.wrapping_add(1);
                self.packets_sent += 1;
                self.octets_sent += payload.len() as u64;
                self.sent_this_interval = true;
                Some(len)
            }
            Err(error) => {
                tracing::warn!(%error, "RTP packet not written");
                None
            }
        }
    }

    fn write_report(&mut self, now: Instant, out: &mut [u8], bye: bool) -> Option<Transmit> {
        let (to, from) = self.rtcp_route()?;
        let mut blocks = [ReportBlock::default(); 1];
        let mut count = 0;
        if let Some(remote_ssrc) = self.remote_ssrc.filter(|_| self.receive_stats.has_source()) {
            let (lsr, dlsr) = self.last_sr.map_or((0, 0), |(lsr, at)| {
                (lsr, to_compact(now.saturating_duration_since(at)))
            });
            blocks[0] = self.receive_stats.report_block(remote_ssrc, lsr, dlsr);
            count = 1;
        }
        let is_sender = self.sent_this_interval || self.sent_last_interval;
        self.sent_last_interval = self.sent_this_interval;
        self.sent_this_interval = false;

        let ssrc = self.config.ssrc;
        let mut writer = RtcpWriter::new(out);
        let written = if is_sender {
            let sender = SenderInfo {
                ntp: self.ntp(now),
                rtp_timestamp: self.timestamp_at(now),
                // The SR counters are 32 bits and wrap (RFC 3550 §6.4.1).
                packet_count: self.packets_sent as u32,
                octet_count: self.octets_sent as u32,
            };
            writer.sender_report(ssrc, &sender, &blocks[..count])
        } else {
            writer.receiver_report(ssrc, &blocks[..count])
        }
        .and_then(|()| writer.sdes_cname(ssrc, &self.config.cname))
        .and_then(|()| if bye { writer.bye(ssrc, None) } else { Ok(()) });
        match written {
            Ok(()) => Some(Transmit {
                to,
                from,
                len: writer.len(),
            }),
            Err(error) => {
                tracing::warn!(%error, "RTCP report not written");
                None
            }
        }
    }

    fn ntp(&self, now: Instant) -> NtpTimestamp {
        NtpTimestamp::from_system_time(self.config.wallclock + now.saturating_duration_since(self.started))
    }
}

/// Symmetric-RTP latching: the first source latches; later, only the latched source or the SDP address
/// (which re-latches) is accepted.
fn latch(
    latched: Option<SocketAddr>,
    from: SocketAddr,
    sdp: Option<SocketAddr>,
) -> Result<SocketAddr, RtpLegError> {
    match latched {
        Some(current) if current != from && Some(from) != sdp => Err(RtpLegError::UnexpectedSource(from)),
        _ => Ok(from),
    }
}

/// Media clock ticks (8 kHz) in `duration`, wrapping like an RTP timestamp.
fn ticks(duration: Duration) -> u32 {
    (duration.as_nanos() * u128::from(G711_CLOCK_RATE) / 1_000_000_000) as u32
}

/// `interval` scaled by a factor uniform in [0.5, 1.5) (RFC 3550 §6.3.1), from a xorshift generator
/// seeded per leg, so reports of many calls do not synchronise and tests stay deterministic.
fn randomized(interval: Duration, state: &mut u64) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    let unit = (*state >> 11) as f64 / (1u64 << 53) as f64;
    Duration::try_from_secs_f64(interval.as_secs_f64() * (0.5 + unit)).unwrap_or(interval)
}

/// `now + delay`, or a day later if a configured delay is too large for an `Instant`.
fn later(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay)
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::media::rtp_packet::RTP_HEADER_LEN;
    use crate::sdp::{PbxOffer, PbxSdp};

    const ASTERISK_ANSWER: &str = include_str!("../../tests/fixtures/sdp/pbx/asterisk20-answer.sdp");
    const ASTERISK_HOLD: &str = include_str!("../../tests/fixtures/sdp/pbx/asterisk20-reinvite-hold.sdp");
    const ASTERISK_UNHOLD: &str = include_str!("../../tests/fixtures/sdp/pbx/asterisk20-reinvite-unhold.sdp");
    const ASTERISK_DIRECT_MEDIA: &str =
        include_str!("../../tests/fixtures/sdp/pbx/asterisk20-reinvite-direct-media.sdp");
    const ASTERISK_RTCP_MUX: &str =
        include_str!("../../tests/fixtures/sdp/pbx/asterisk20-answer-pcma-rtcp-mux.sdp");
    const SIPP_ANSWER: &str = include_str!("../../tests/fixtures/sdp/pbx/sipp-uas-rtp-echo-answer.sdp");

    const SSRC: u32 = 0x5eed_0001;
    const PBX_SSRC: u32 = 0xa5a5_0002;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn local_rtp() -> SocketAddr {
        addr("203.0.113.10:20000")
    }

    fn local_rtcp() -> SocketAddr {
        addr("203.0.113.10:20001")
    }

    fn wallclock() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn new_leg(t0: Instant) -> RtpLeg {
        RtpLeg::new(
            RtpLegConfig::new(local_rtp(), local_rtcp(), SSRC, 65534, 1000, wallclock()),
            t0,
        )
    }

    fn answered(t0: Instant, sdp: &str) -> RtpLeg {
        let mut leg = new_leg(t0);
        leg.set_remote(t0, PbxSdp::parse(sdp).unwrap());
        leg
    }

    fn pbx_packet(seq: u16, timestamp: u32, payload_type: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0; RTP_HEADER_LEN + payload.len()];
        let header = RtpHeader {
            marker: false,
            payload_type,
            sequence_number: seq,
            timestamp,
            ssrc: PBX_SSRC,
        };
        header.write(payload, &mut out).unwrap();
        out
    }

    /// Sends one 20 ms PCMU frame and returns where it went and the parsed header fields.
    fn send(leg: &mut RtpLeg, now: Instant) -> Option<(Transmit, u16, u32, bool, u8, u32)> {
        let mut out = [0u8; 256];
        let transmit = leg.write_audio(now, &[0xff; 160], 160, false, &mut out)?;
        let p = RtpPacket::parse(&out[..transmit.len]).unwrap();
        Some((
            transmit,
            p.sequence_number,
            p.timestamp,
            p.marker,
            p.payload_type,
            p.ssrc,
        ))
    }

    /// The report blocks and whether it was an SR, from a compound the leg wrote.
    fn read_report(bytes: &[u8]) -> (bool, Vec<ReportBlock>, Option<SenderInfo>, bool) {
        let (mut is_sr, mut blocks, mut sender, mut bye) = (false, Vec::new(), None, false);
        for packet in RtcpPackets::new(bytes) {
            match packet.unwrap() {
                RtcpPacket::SenderReport {
                    ssrc,
                    sender: info,
                    reports,
                } => {
                    assert_eq!(ssrc, SSRC);
                    (is_sr, sender) = (true, Some(info));
                    blocks.extend(reports);
                }
                RtcpPacket::ReceiverReport { ssrc, reports } => {
                    assert_eq!(ssrc, SSRC);
                    blocks.extend(reports);
                }
                RtcpPacket::SourceDescription(mut chunks) => {
                    assert_eq!(
                        chunks.next().and_then(|c| c.cname),
                        Some(&b"5eed0001@callgate"[..])
                    );
                }
                RtcpPacket::Bye { mut ssrcs, .. } => bye = ssrcs.next() == Some(SSRC),
                RtcpPacket::Other { .. } => panic!("unexpected packet"),
            }
        }
        (is_sr, blocks, sender, bye)
    }

    #[test]
    fn sends_to_the_sdp_address_with_continuous_numbering() {
        let t0 = Instant::now();
        let mut leg = new_leg(t0);
        // Nothing goes anywhere before the PBX's answer.
        assert_eq!(send(&mut leg, t0), None);
        leg.set_remote(t0, PbxSdp::parse(ASTERISK_ANSWER).unwrap());
        assert_eq!(leg.codec(), Some(Codec::Pcmu));
        for i in 0..5u16 {
            let (transmit, seq, ts, marker, pt, ssrc) = send(&mut leg, t0 + ms(20 * u64::from(i))).unwrap();
            assert_eq!(
                transmit,
                Transmit {
                    to: addr("192.0.2.20:17062"),
                    from: local_rtp(),
                    len: 172
                }
            );
            assert_eq!(
                (seq, ts, marker, pt, ssrc),
                (
                    65534u16.wrapping_add(i),
                    1000 + 160 * u32::from(i),
                    false,
                    0,
                    SSRC
                )
            );
        }
        let stats = leg.stats();
        assert_eq!((stats.packets_sent, stats.bytes_sent), (5, 800));
    }

    #[test]
    fn hold_and_unhold_keep_ssrc_sequence_and_timeline() {
        let t0 = Instant::now();
        let mut leg = answered(t0, ASTERISK_ANSWER);
        let offer = PbxOffer::new(
            "203.0.113.10".parse().unwrap(),
            20000,
            20001,
            &[Codec::Pcmu, Codec::Pcma],
        )
        .unwrap();
        let mut sdp = PbxSdp::new(1, 1);
        let mut last = None;
        for i in 0..50 {
            last = send(&mut leg, t0 + ms(20 * i));
        }
        let (_, last_seq, last_ts, ..) = last.unwrap();
        let last_at = t0 + ms(20 * 49);

        // The PBX puts us on hold; we answer recvonly and must stop sending (but the clock runs on).
        let hold = sdp
            .answer(&offer, &PbxSdp::parse(ASTERISK_HOLD).unwrap(), leg.codec())
            .unwrap();
        leg.set_remote(t0 + ms(1000), hold.remote);
        leg.set_direction(t0 + ms(1000), hold.direction);
        assert!(!leg.is_sending());
        for i in 0..300 {
            assert_eq!(send(&mut leg, t0 + ms(1000 + 20 * i)), None);
        }

        // Unhold 7.31 s after the last packet: same SSRC, next sequence number, timestamp moved by
        // exactly the elapsed time, marker set.
        let unhold_at = last_at + ms(7310);
        let unhold = sdp
            .answer(&offer, &PbxSdp::parse(ASTERISK_UNHOLD).unwrap(), leg.codec())
            .unwrap();
        leg.set_remote(unhold_at, unhold.remote);
        leg.set_direction(unhold_at, unhold.direction);
        let (transmit, seq, ts, marker, pt, ssrc) = send(&mut leg, unhold_at).unwrap();
        assert_eq!((seq, ssrc, pt, marker), (last_seq.wrapping_add(1), SSRC, 0, true));
        assert_eq!(ts, last_ts.wrapping_add(7310 * 8));
        assert_eq!(transmit.to, addr("192.0.2.20:17062"));
        let (_, seq2, ts2, marker2, ..) = send(&mut leg, unhold_at + ms(20)).unwrap();
        assert_eq!((seq2, ts2, marker2), (seq.wrapping_add(1), ts + 160, false));

        // Our own hold (sendonly toward the PBX) still sends; inactive does not.
        leg.set_direction(unhold_at, Direction::SendOnly);
        assert!(send(&mut leg, unhold_at + ms(40)).is_some());
        leg.set_direction(unhold_at, Direction::Inactive);
        assert_eq!(send(&mut leg, unhold_at + ms(60)), None);
        leg.set_direction(unhold_at, Direction::SendRecv);
        let (_, seq3, ts3, marker3, ..) = send(&mut leg, unhold_at + ms(80)).unwrap();
        // One packet skipped (inactive) costs its 20 ms of timeline but no sequence number.
        assert_eq!((seq3, ts3, marker3), (seq2.wrapping_add(2), ts2 + 320, false));
    }

    #[test]
    fn codec_and_address_change_by_reinvite_keeps_continuity() {
        let t0 = Instant::now();
        let mut leg = answered(t0, ASTERISK_ANSWER);
        let (_, seq, ts, ..) = send(&mut leg, t0).unwrap();
        // Direct media: new address, PCMA first.
        leg.set_remote(t0 + ms(20), PbxSdp::parse(ASTERISK_DIRECT_MEDIA).unwrap());
        assert_eq!(leg.codec(), Some(Codec::Pcma));
        let (transmit, seq2, ts2, _, pt, ssrc) = send(&mut leg, t0 + ms(20)).unwrap();
        assert_eq!(transmit.to, addr("198.51.100.7:4002"));
        assert_eq!((seq2, ts2, pt, ssrc), (seq.wrapping_add(1), ts + 160, 8, SSRC));
    }

    #[test]
    fn symmetric_rtp_latches_rtp_and_rtcp_separately() {
        let t0 = Instant::now();
        let mut leg = answered(t0, ASTERISK_ANSWER);
        leg.set_direction(t0, Direction::SendOnly); // keep the media timeout out of poll_timeout
        let mut out = [0u8; 512];
        let nat_rtp = addr("198.51.100.99:40000");
        let nat_rtcp = addr("198.51.100.99:40001");

        // Before any packet from the PBX: the SDP addresses.
        assert_eq!(send(&mut leg, t0).unwrap().0.to, addr("192.0.2.20:17062"));
        let report = leg.handle_timeout(leg.poll_timeout().unwrap(), &mut out).unwrap();
        assert_eq!((report.to, report.from), (addr("192.0.2.20:17063"), local_rtcp()));

        // RTP from behind a NAT latches RTP only.
        let packet = pbx_packet(1, 0, 0, &[0x7f; 160]);
        assert!(matches!(
            leg.handle_receive(t0, nat_rtp, local_rtp(), &packet),
            Ok(Received::Audio { .. })
        ));
        assert_eq!(send(&mut leg, t0 + ms(20)).unwrap().0.to, nat_rtp);
        let report = leg.handle_timeout(leg.poll_timeout().unwrap(), &mut out).unwrap();
        assert_eq!(report.to, addr("192.0.2.20:17063"));

        // RTCP from its own NAT mapping latches RTCP.
        let mut rr = [0u8; 64];
        let mut writer = RtcpWriter::new(&mut rr);
        writer.receiver_report(PBX_SSRC, &[]).unwrap();
        let len = writer.len();
        assert_eq!(
            leg.handle_receive(t0, nat_rtcp, local_rtcp(), &rr[..len]),
            Ok(Received::Rtcp)
        );
        let report = leg.handle_timeout(leg.poll_timeout().unwrap(), &mut out).unwrap();
        assert_eq!(report.to, nat_rtcp);

        // An RFC 2543 hold (c=0.0.0.0) and the unhold to the same address keep the NAT latch.
        let legacy_hold = ASTERISK_UNHOLD.replace("c=IN IP4 192.0.2.20", "c=IN IP4 0.0.0.0");
        leg.set_remote(t0, PbxSdp::parse(&legacy_hold).unwrap());
        assert_eq!(send(&mut leg, t0 + ms(20)), None);
        leg.set_remote(t0, PbxSdp::parse(ASTERISK_UNHOLD).unwrap());
        assert_eq!(send(&mut leg, t0 + ms(20)).unwrap().0.to, nat_rtp);

        // A third party is refused and changes nothing.
        let stranger = addr("203.0.113.66:5004");
        let injected = pbx_packet(2, 160, 0, &[0; 160]);
        assert_eq!(
            leg.handle_receive(t0, stranger, local_rtp(), &injected),
            Err(RtpLegError::UnexpectedSource(stranger))
        );
        assert_eq!(
            leg.handle_receive(t0, stranger, local_rtcp(), &rr[..len]),
            Err(RtpLegError::UnexpectedSource(stranger))
        );
        assert_eq!(send(&mut leg, t0 + ms(40)).unwrap().0.to, nat_rtp);
        assert_eq!(leg.stats().packets_received, 1);

        // The SDP address itself always re-latches.
        let sdp_addr = addr("192.0.2.20:17062");
        assert!(
            leg.handle_receive(t0, sdp_addr, local_rtp(), &pbx_packet(3, 320, 0, &[0; 160]))
                .is_ok()
        );
        assert_eq!(send(&mut leg, t0 + ms(60)).unwrap().0.to, sdp_addr);

        // A re-INVITE moving the media drops the latch: stragglers from the old place may latch, but the
        // new SDP address takes over as soon as it sends.
        leg.set_remote(t0 + ms(80), PbxSdp::parse(ASTERISK_DIRECT_MEDIA).unwrap());
        assert_eq!(
            send(&mut leg, t0 + ms(80)).unwrap().0.to,
            addr("198.51.100.7:4002")
        );
        let report = leg.handle_timeout(leg.poll_timeout().unwrap(), &mut out).unwrap();
        assert_eq!(report.to, addr("198.51.100.7:4003"));
        assert!(
            leg.handle_receive(t0, sdp_addr, local_rtp(), &pbx_packet(4, 480, 0, &[0; 160]))
                .is_ok()
        );
        assert_eq!(send(&mut leg, t0 + ms(100)).unwrap().0.to, sdp_addr);
        let new_media = addr("198.51.100.7:4002");
        assert!(
            leg.handle_receive(t0, new_media, local_rtp(), &pbx_packet(5, 640, 8, &[0; 160]))
                .is_ok()
        );
        assert_eq!(send(&mut leg, t0 + ms(120)).unwrap().0.to, new_media);
    }

    #[test]
    fn rtcp_reports_at_randomised_intervals_rr_then_sr() {
        let t0 = Instant::now();
        let mut leg = answered(t0, ASTERISK_ANSWER);
        leg.set_direction(t0, Direction::SendOnly); // no media timeout deadline in poll_timeout
        let mut out = [0u8; 512];
        let mut times = vec![t0];
        let mut kinds = Vec::new();
        let mut now = t0;
        while times.len() < 201 {
            now = leg.poll_timeout().unwrap();
            // Nothing before the deadline.
            assert_eq!(leg.handle_timeout(now - ms(1), &mut out), None);
            let transmit = leg.handle_timeout(now, &mut out).unwrap();
            times.push(now);
            kinds.push(read_report(&out[..transmit.len]).0);
            // Send audio only during reports 50..60.
            if (50..60).contains(&kinds.len()) {
                send(&mut leg, now + ms(10)).unwrap();
            }
        }
        let intervals: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        assert!(
            (1.25..3.75).contains(&intervals[0]),
            "first report after {}",
            intervals[0]
        );
        assert!(
            intervals[1..].iter().all(|i| (2.5..7.5).contains(i)),
            "{intervals:?}"
        );
        let mean = intervals[1..].iter().sum::<f64>() / (intervals.len() - 1) as f64;
        assert!((4.6..5.4).contains(&mean), "mean interval {mean}");
        // RR before sending; SR in the interval with sending and the one after; RR again.
        assert!(kinds[..50].iter().all(|sr| !sr));
        assert!(kinds[50..61].iter().all(|sr| *sr));
        assert!(kinds[61..].iter().all(|sr| !sr));
        let _ = now;
    }

    #[test]
    fn statistics_against_hand_computed_values() {
        let t0 = Instant::now();
        let mut leg = answered(t0, ASTERISK_ANSWER);
        let pbx = addr("192.0.2.20:17062");
        // Sequence 100..=109 without 103 and 106; 20 ms apart; 105 arrives 8 ms late.
        for seq in [100u16, 101, 102, 104, 105, 107, 108, 109] {
            let late = if seq == 105 { ms(8) } else { Duration::ZERO };
            let at = t0 + ms(20 * u64::from(seq - 100)) + late;
            let packet = pbx_packet(seq, u32::from(seq) * 160, 0, &[0x55; 160]);
            leg.handle_receive(at, pbx, local_rtp(), &packet).unwrap();
        }
        // Transit changes of 0,0,0,+64,-64,0,0 ticks: J16 = 0,0,0,64,124,116,109 (A.8), J = 6 ticks.
        let stats = leg.stats();
        assert_eq!(
            (stats.packets_received, stats.bytes_received, stats.packets_lost),
            (8, 1280, 2)
        );
        assert!(
            (stats.jitter_ms - 109.0 / 16.0 / 8.0).abs() < 1e-9,
            "{}",
            stats.jitter_ms
        );
        assert_eq!(leg.last_received(), Some(t0 + ms(180)));

        // The PBX's SR at 1 s; our next report carries LSR = its NTP middle bits and DLSR = time since.
        let pbx_ntp = NtpTimestamp(0x0000_1234_5678_0000_u64 << 8);
        let mut sr = [0u8; 64];
        let mut writer = RtcpWriter::new(&mut sr);
        let pbx_sender = SenderInfo {
            ntp: pbx_ntp,
            rtp_timestamp: 0,
            packet_count: 8,
            octet_count: 1280,
        };
        writer.sender_report(PBX_SSRC, &pbx_sender, &[]).unwrap();
        let len = writer.len();
        leg.handle_receive(t0 + ms(1000), addr("192.0.2.20:17063"), local_rtcp(), &sr[..len])
            .unwrap();

        let mut out = [0u8; 512];
        let due = leg.poll_timeout().unwrap().max(t0 + ms(1000));
        let report = leg.handle_timeout(due, &mut out).unwrap();
        let (is_sr, blocks, ..) = read_report(&out[..report.len]);
        assert!(!is_sr);
        assert_eq!(
            blocks,
            vec![ReportBlock {
                ssrc: PBX_SSRC,
                fraction_lost: 51, // 2 of 10: 2 * 256 / 10
                cumulative_lost: 2,
                extended_highest_sequence: 109,
                jitter: 6,
                last_sr: pbx_ntp.middle32(),
                delay_since_last_sr: to_compact(due - (t0 + ms(1000))),
            }]
        );
    }

    #[test]
    fn round_trip_time_from_the_pbx_receiver_report() {
        let t0 = Instant::now();
        let mut leg = answered(t0, ASTERISK_ANSWER);
        for i in 0..10 {
            send(&mut leg, t0 + ms(20 * i)).unwrap();
        }
        let mut out = [0u8; 512];
        let sr_at = leg.poll_timeout().unwrap();
        let report = leg.handle_timeout(sr_at, &mut out).unwrap();
        let (is_sr, _, sender, _) = read_report(&out[..report.len]);
        let sender = sender.unwrap();
        assert!(is_sr);
        assert_eq!((sender.packet_count, sender.octet_count), (10, 1600));
        let elapsed = sr_at - t0;
        assert_eq!(sender.ntp, NtpTimestamp::from_system_time(wallclock() + elapsed));
        assert_eq!(sender.rtp_timestamp, 1000u32.wrapping_add(ticks(elapsed)));

        // The PBX held our SR for 1 s, and its RR reaches us 1.25 s after we sent the SR: RTT 250 ms.
        let block = ReportBlock {
            ssrc: SSRC,
            fraction_lost: 0,
            cumulative_lost: 3,
            extended_highest_sequence: 9,
            jitter: 16,
            last_sr: sender.ntp.middle32(),
            delay_since_last_sr: 65536,
        };
        let mut rr = [0u8; 64];
        let mut writer = RtcpWriter::new(&mut rr);
        writer.receiver_report(PBX_SSRC, &[block]).unwrap();
        let len = writer.len();
        leg.handle_receive(
            sr_at + ms(1250),
            addr("192.0.2.20:17063"),
            local_rtcp(),
            &rr[..len],
        )
        .unwrap();
        let stats = leg.stats();
        assert!((stats.rtt_ms.unwrap() - 250.0).abs() < 0.05, "{:?}", stats.rtt_ms);
        assert_eq!(
            (stats.remote_packets_lost, stats.remote_jitter_ms),
            (Some(3), Some(2.0))
        );
    }

    #[test]
    fn media_timeout_is_suspended_by_hold() {
        let t0 = Instant::now();
        let mut leg = new_leg(t0);
        // Not answered yet: nothing expected, however long.
        assert!(!leg.media_timed_out(t0 + Duration::from_secs(3600)));
        leg.set_remote(t0, PbxSdp::parse(ASTERISK_ANSWER).unwrap());
        assert_eq!(
            leg.poll_timeout(),
            Some(leg.next_report.min(t0 + Duration::from_secs(30)))
        );
        assert!(!leg.media_timed_out(t0 + ms(29_999)));
        assert!(leg.media_timed_out(t0 + Duration::from_secs(30)));

        // A packet at 10 s moves the deadline to 40 s.
        let pbx = addr("192.0.2.20:17062");
        leg.handle_receive(t0 + ms(10_000), pbx, local_rtp(), &pbx_packet(1, 0, 0, &[0; 160]))
            .unwrap();
        assert!(!leg.media_timed_out(t0 + ms(39_999)));
        assert!(leg.media_timed_out(t0 + ms(40_000)));

        // The PBX holds us at 20 s and sends nothing for minutes: no timeout, no deadline.
        leg.set_remote(t0 + ms(20_000), PbxSdp::parse(ASTERISK_HOLD).unwrap());
        assert!(!leg.expects_media());
        assert!(!leg.media_timed_out(t0 + ms(300_000)));
        assert_eq!(leg.poll_timeout(), Some(leg.next_report));

        // Unhold at 300 s: a fresh 30 s, not the stale 40 s deadline.
        leg.set_remote(t0 + ms(300_000), PbxSdp::parse(ASTERISK_UNHOLD).unwrap());
        assert!(!leg.media_timed_out(t0 + ms(329_999)));
        assert!(leg.media_timed_out(t0 + ms(330_000)));

        // Our own hold suspends it too.
        leg.set_direction(t0 + ms(330_000), Direction::SendOnly);
        assert!(!leg.media_timed_out(t0 + ms(900_000)));
        leg.set_direction(t0 + ms(900_000), Direction::SendRecv);
        assert!(leg.media_timed_out(t0 + ms(930_000)));
    }

    #[test]
    fn telephone_events_share_the_stream_with_their_own_timestamp() {
        let t0 = Instant::now();
        let mut leg = answered(t0, ASTERISK_ANSWER);
        let mut last = None;
        for i in 0..3 {
            last = send(&mut leg, t0 + ms(20 * i));
        }
        let (_, audio_seq, audio_ts, ..) = last.unwrap();
        let event_ts = audio_ts + 160;
        let mut out = [0u8; 64];
        let steps = [
            (60, 160, false, true),
            (80, 320, false, false),
            (100, 480, false, false),
            (120, 640, true, false),
        ];
        let mut seq = audio_seq;
        for (at, duration, end, start) in steps.into_iter().chain([(120, 640, true, false); 2]) {
            let event = TelephoneEvent {
                event: 1,
                end,
                volume: 10,
                duration,
            };
            let transmit = leg.write_event(t0 + ms(at), event, start, &mut out).unwrap();
            let packet = RtpPacket::parse(&out[..transmit.len]).unwrap();
            seq = seq.wrapping_add(1);
            assert_eq!(
                (packet.payload_type, packet.sequence_number, packet.timestamp),
                (101, seq, event_ts)
            );
            assert_eq!((packet.marker, packet.ssrc), (start, SSRC));
            assert_eq!(TelephoneEvent::parse(packet.payload), Ok(event));
        }
        // Audio resumes where the event ended, in the same sequence.
        let (_, seq2, ts2, marker, ..) = send(&mut leg, t0 + ms(140)).unwrap();
        assert_eq!((seq2, ts2, marker), (seq.wrapping_add(1), event_ts + 640, false));
        // A second event starts at the media clock's current position.
        let event = TelephoneEvent {
            event: 11,
            end: false,
            volume: 10,
            duration: 160,
        };
        let transmit = leg.write_event(t0 + ms(160), event, true, &mut out).unwrap();
        assert_eq!(
            RtpPacket::parse(&out[..transmit.len]).unwrap().timestamp,
            ts2 + 160
        );

        // Events from the PBX come out parsed; a PBX that did not negotiate events gets none from us.
        let pbx = addr("192.0.2.20:17062");
        let incoming = pbx_packet(9, 4000, 101, &[5, 0x8a, 0x03, 0x20]);
        let Ok(Received::Event { event, rtp }) = leg.handle_receive(t0, pbx, local_rtp(), &incoming) else {
            panic!("not an event");
        };
        assert_eq!(
            (event.event, event.end, event.duration, rtp.timestamp),
            (5, true, 800, 4000)
        );
        let mut sipp = answered(t0, SIPP_ANSWER);
        assert_eq!(sipp.write_event(t0, event, true, &mut out), None);
    }

    #[test]
    fn rtcp_mux_sends_and_receives_reports_on_the_rtp_port() {
        let t0 = Instant::now();
        let mut leg = new_leg(t0);
        let offer = PbxOffer::new("203.0.113.10".parse().unwrap(), 20000, 20001, &[Codec::Pcma])
            .unwrap()
            .with_rtcp_mux(true);
        let answer = offer
            .accept_answer(PbxSdp::parse(ASTERISK_RTCP_MUX).unwrap())
            .unwrap();
        leg.set_remote(t0, answer);
        leg.set_direction(t0, Direction::SendOnly);
        let mut out = [0u8; 512];
        let report = leg.handle_timeout(leg.poll_timeout().unwrap(), &mut out).unwrap();
        assert_eq!((report.to, report.from), (addr("192.0.2.20:10734"), local_rtp()));
        let mut rr = [0u8; 64];
        let mut writer = RtcpWriter::new(&mut rr);
        writer.receiver_report(PBX_SSRC, &[]).unwrap();
        let len = writer.len();
        let pbx = addr("192.0.2.20:10734");
        assert_eq!(
            leg.handle_receive(t0, pbx, local_rtp(), &rr[..len]),
            Ok(Received::Rtcp)
        );
        let audio = pbx_packet(1, 0, 8, &[0xd5; 160]);
        let received = leg.handle_receive(t0, pbx, local_rtp(), &audio).unwrap();
        assert!(matches!(received, Received::Audio { codec: Codec::Pcma, rtp } if rtp.payload.len() == 160));
    }

    #[test]
    fn new_pbx_ssrc_restarts_the_receive_statistics() {
        let t0 = Instant::now();
        let mut leg = answered(t0, ASTERISK_ANSWER);
        let pbx = addr("192.0.2.20:17062");
        for seq in [1u16, 2, 4] {
            leg.handle_receive(t0, pbx, local_rtp(), &pbx_packet(seq, 0, 0, &[0; 160]))
                .unwrap();
        }
        let mut other = pbx_packet(5000, 0, 0, &[0; 160]);
        other[8..12].copy_from_slice(&0x0bad_cafe_u32.to_be_bytes());
        let Ok(Received::Audio { rtp, .. }) = leg.handle_receive(t0, pbx, local_rtp(), &other) else {
            panic!("new source refused");
        };
        assert_eq!(rtp.ssrc, 0x0bad_cafe);
        let stats = leg.stats();
        assert_eq!((stats.packets_received, stats.packets_lost), (4, 1));
    }

    #[test]
    fn malformed_and_unexpected_input_is_refused_without_panic() {
        let t0 = Instant::now();
        let pbx = addr("192.0.2.20:17062");
        let audio = pbx_packet(1, 0, 0, &[0; 160]);
        let mut leg = new_leg(t0);
        assert_eq!(
            leg.handle_receive(t0, pbx, local_rtp(), &audio),
            Err(RtpLegError::NoRemote)
        );
        leg.set_remote(t0, PbxSdp::parse(ASTERISK_ANSWER).unwrap());
        let elsewhere = addr("203.0.113.10:30000");
        assert_eq!(
            leg.handle_receive(t0, pbx, elsewhere, &audio),
            Err(RtpLegError::UnknownLocalPort(elsewhere))
        );
        let video = pbx_packet(1, 0, 96, &[0; 10]);
        assert_eq!(
            leg.handle_receive(t0, pbx, local_rtp(), &video),
            Err(RtpLegError::UnknownPayloadType(96))
        );
        let short_event = pbx_packet(1, 0, 101, &[1, 2]);
        assert_eq!(
            leg.handle_receive(t0, pbx, local_rtp(), &short_event),
            Err(RtpLegError::MalformedRtp(RtpPacketError::TooShort { len: 2 }))
        );
        assert!(matches!(
            leg.handle_receive(t0, pbx, local_rtcp(), &[]),
            Err(RtpLegError::MalformedRtcp(_))
        ));

        // Garbage from an attacker on both ports: refused, and it latches nothing.
        let attacker = addr("198.51.100.200:9999");
        let mut rng = StdRng::seed_from_u64(11);
        let mut buf = [0u8; 200];
        for i in 0..20_000 {
            let len = rng.random_range(0..buf.len());
            rng.fill(&mut buf[..len]);
            if len > 1 {
                // Keep version 2 and a payload type that is not negotiated, so parsing goes deep.
                buf[0] = (buf[0] & 0x3f) | 0x80;
                buf[1] = if i % 2 == 0 { 0xc8 } else { 0x60 };
            }
            let port = if i % 3 == 0 { local_rtcp() } else { local_rtp() };
            let result = leg.handle_receive(t0, attacker, port, &buf[..len]);
            assert!(
                result.is_err() || matches!(result, Ok(Received::Rtcp)),
                "{result:?}"
            );
            if result.is_ok() {
                leg.latched_rtcp = None; // a well-formed RTCP from anyone latches; reset for the next round
            }
        }
        assert_eq!(leg.latched_rtp, None);
        assert!(leg.handle_receive(t0, pbx, local_rtp(), &audio).is_ok());
        assert_eq!(leg.stats().packets_received, 1);
    }

    #[test]
    fn close_sends_bye_and_stops() {
        let t0 = Instant::now();
        let mut leg = answered(t0, ASTERISK_ANSWER);
        send(&mut leg, t0).unwrap();
        let mut out = [0u8; 512];
        let transmit = leg.close(t0 + ms(500), &mut out).unwrap();
        let (is_sr, _, _, bye) = read_report(&out[..transmit.len]);
        assert!(is_sr && bye);
        assert_eq!(leg.poll_timeout(), None);
        assert_eq!(send(&mut leg, t0 + ms(520)), None);
        assert_eq!(leg.close(t0 + ms(540), &mut out), None);
        assert!(!leg.media_timed_out(t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn absurd_configured_durations_do_not_panic() {
        let t0 = Instant::now();
        let mut config = RtpLegConfig::new(local_rtp(), local_rtcp(), SSRC, 1, 1, wallclock());
        config.rtp_timeout = Duration::MAX;
        config.rtcp_interval = Duration::MAX;
        let mut leg = RtpLeg::new(config, t0);
        leg.set_remote(t0, PbxSdp::parse(ASTERISK_ANSWER).unwrap());
        assert!(!leg.media_timed_out(t0 + Duration::from_secs(86_400 * 365)));
        let due = leg.poll_timeout().unwrap();
        assert!(due > t0);
        let mut out = [0u8; 256];
        assert!(leg.handle_timeout(due, &mut out).is_some());
    }

    #[test]
    fn small_buffers_send_nothing_and_lose_no_sequence_number() {
        let t0 = Instant::now();
        let mut leg = answered(t0, ASTERISK_ANSWER);
        let mut tiny = [0u8; 100];
        assert_eq!(leg.write_audio(t0, &[0; 160], 160, false, &mut tiny), None);
        let (_, seq, ..) = send(&mut leg, t0 + ms(20)).unwrap();
        assert_eq!(seq, 65534);
        leg.set_direction(t0, Direction::SendOnly);
        assert_eq!(
            leg.handle_timeout(leg.poll_timeout().unwrap(), &mut tiny[..20]),
            None
        );
    }
}
