//! An adaptive jitter buffer for one inbound RTP stream, sans-IO.
//!
//! The caller [`push`](JitterBuffer::push)es every packet as it arrives and [`poll`](JitterBuffer::poll)s
//! once per frame of its own clock (every 20 ms for 20 ms packets; [`next_poll`](JitterBuffer::next_poll)
//! says when). Each poll yields exactly one [`JitterOutput`]: the packet to play, a lost packet to conceal
//! (with the following packet when it is already here, for Opus in-band FEC), or an empty frame (filling,
//! stretching, underrun or sender silence) for which the caller plays concealment or silence.
//!
//! ## How the delay adapts
//!
//! For each packet the *transit* is its arrival time minus its RTP timestamp in our clock; it contains an
//! unknown constant, so only differences matter. The playout *offset* is the poll time minus the RTP
//! timestamp being played. A packet is in time when offset ≥ its transit. The buffer keeps the minimum
//! and maximum transit over the last ~8 s and:
//!
//! - grows by one frame (an empty `Stretch` frame, the due packet waits) when the offset falls below the
//!   largest recent transit, or when the due packet has not arrived and nothing after it has either (it
//!   is late, not lost); growth stops at `max_delay` above the smallest recent transit;
//! - shrinks by one frame (drops a packet, or a frame of silence) when the offset exceeds the target by
//!   more than a frame, at most once per second, so a burst of jitter is remembered for ~8 s;
//! - starts at `initial_delay` for the first second, and never targets less than `min_delay`.
//!
//! Clock drift between sender and receiver shows as a transit that slowly rises or falls, which these
//! rules follow with a stretch or a skip every ~20 s at 0.1 % drift.
//!
//! ## Resets
//!
//! A new SSRC, a sequence jump beyond RFC 3550's limits (confirmed by a second consecutive packet), a
//! timestamp jump that moves the transit by more than a second, or a packet too far ahead to fit the ring
//! restarts the timeline at that packet. After an underrun (the sender paused, e.g. silence suppression),
//! the next packet re-anchors the timeline so the delay does not stay at its maximum; a packet with the
//! marker bit that ends a timestamp gap may be played early when that keeps the target delay.
//!
//! Packets are copied into a ring of fixed-size slots allocated at construction: nothing allocates per
//! packet. The buffer assumes one frame per packet (the negotiated ptime); a different packet time only
//! costs audio quality, never correctness of the stream state.

use std::time::{Duration, Instant};

/// RFC 3550 A.1: a sequence number this far ahead of the highest is a restart, not a loss.
const MAX_DROPOUT: i64 = 3000;
/// RFC 3550 A.1: a sequence number this far behind the highest is a restart, not a reordering.
const MAX_MISORDER: i64 = 100;
/// The transit window is kept in buckets of one second...
const BUCKET_US: i64 = 1_000_000;
/// ...this many of them, so a jitter spike is remembered for 7–8 s.
const WINDOW_BUCKETS: usize = 8;
/// Packets seen before `min_delay` replaces `initial_delay` as the floor (one second of 20 ms packets).
const WARMUP_PACKETS: u64 = 50;
/// Headroom above the largest recent transit that the target keeps, for the caller's timer jitter.
const SAFETY_US: i64 = 5_000;
/// How close to the largest recent transit the offset may get before the buffer grows.
const GROW_MARGIN_US: i64 = 2_000;
/// The shortest time between two shrinks.
const SHRINK_INTERVAL_US: i64 = 1_000_000;
/// A transit this far outside the recent window is a timeline jump, not jitter.
const JUMP_US: i64 = 1_000_000;
/// The largest payload slot: an Ethernet MTU's worth, more than any RTP audio packet carries.
pub const MAX_PAYLOAD_LIMIT: usize = 1500;
/// Slots beyond the maximum delay, for packets that arrive early or out of order.
const REORDER_SLOTS: usize = 16;

/// Errors building a jitter buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JitterError {
    /// The configuration cannot describe a working buffer.
    #[error("invalid jitter buffer configuration: {0}")]
    InvalidConfig(&'static str),
}

/// How a jitter buffer is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// The RTP clock rate of the stream (8000 for G.711, 48000 for Opus).
    pub clock_rate: u32,
    /// The media time in one packet and between two polls (the negotiated ptime).
    pub frame_duration: Duration,
    /// The least delay the buffer targets, above the fastest recent packet.
    pub min_delay: Duration,
    /// The delay the buffer starts with, for its first second.
    pub initial_delay: Duration,
    /// The most delay the buffer adds, above the fastest recent packet.
    pub max_delay: Duration,
    /// The largest payload kept (at most 1500 bytes); larger packets are dropped and counted as discarded.
    /// Each slot reserves this much, so it sets the buffer's memory: slots × `max_payload`.
    pub max_payload: usize,
}

impl JitterConfig {
    /// 20 ms packets at `clock_rate`, delay between 10 and 200 ms starting at 40 ms, payloads up to 512
    /// bytes (G.711 up to 64 ms per packet, Opus up to ~200 kb/s).
    pub fn new(clock_rate: u32) -> Self {
        JitterConfig {
            clock_rate,
            frame_duration: Duration::from_millis(20),
            min_delay: Duration::from_millis(10),
            initial_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(200),
            max_payload: 512,
        }
    }
}

/// The RTP header fields the buffer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketHeader {
    /// Synchronization source; a change restarts the stream.
    pub ssrc: u32,
    /// RTP sequence number.
    pub sequence: u16,
    /// RTP timestamp, in `clock_rate` ticks.
    pub timestamp: u32,
    /// RTP marker bit (start of a talkspurt for audio).
    pub marker: bool,
}

/// What happened to a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushOutcome {
    /// Stored for playout.
    Stored,
    /// Stored as the first packet of a new timeline (first packet, new SSRC, or a jump).
    Restarted,
    /// Already buffered or played; dropped.
    Duplicate,
    /// Arrived after its playout time; dropped.
    Late,
    /// Larger than `max_payload`; dropped.
    TooLarge,
    /// A sequence jump beyond RFC 3550's limits; dropped unless the next packet confirms the jump.
    Probation,
}

/// A packet handed out for playout; the payload borrows the buffer until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterFrame<'a> {
    /// RTP sequence number.
    pub sequence: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP marker bit.
    pub marker: bool,
    /// The payload as received.
    pub payload: &'a [u8],
}

/// Why a poll has no packet and no loss to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmptyReason {
    /// Nothing played yet on this timeline: the buffer is filling. Play silence.
    Buffering,
    /// The buffer is growing its delay by one frame (jitter rose, or the due packet is late). Conceal.
    Stretch,
    /// The due packet has not arrived and the delay is at its maximum; the timeline moves on. Conceal.
    Underrun,
    /// The sender sent nothing for this frame (a timestamp gap: silence suppression, DTX). Play silence
    /// or comfort noise.
    Silence,
}

/// One frame of playout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JitterOutput<'a> {
    /// Play this packet.
    Frame(JitterFrame<'a>),
    /// The packet due now was lost (a later one has arrived): conceal it. `next` is the packet right after
    /// it when already buffered; its Opus in-band FEC can rebuild the lost frame.
    Lost {
        /// Sequence number of the lost packet.
        sequence: u16,
        /// The timestamp the lost packet would have had.
        timestamp: u32,
        /// The following packet (sequence + 1), if here; it stays buffered and plays on the next poll.
        next: Option<JitterFrame<'a>>,
    },
    /// No packet this frame.
    Empty(EmptyReason),
}

/// Counters and measurements of one buffer (cumulative over restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JitterStats {
    /// Distinct packets received, including late ones.
    pub received: u64,
    /// Packets that never arrived (expected by sequence number minus received).
    pub lost: u64,
    /// Packets that arrived after their playout time.
    pub late: u64,
    /// Copies of packets already received.
    pub duplicate: u64,
    /// Packets the buffer dropped itself: too large, skipped to shrink, flushed at a restart, probation.
    pub discarded: u64,
    /// Packets played.
    pub played: u64,
    /// `Lost` frames handed out.
    pub concealed: u64,
    /// `Stretch` frames handed out.
    pub stretches: u64,
    /// `Underrun` frames handed out.
    pub underruns: u64,
    /// Frames dropped to shrink the delay.
    pub skips: u64,
    /// Timeline restarts (new SSRC, jumps), not counting the first packet.
    pub restarts: u64,
    /// Delay the buffer currently adds above the fastest recent packet, as of the last poll.
    pub current_delay: Duration,
    /// The delay the buffer is steering toward.
    pub target_delay: Duration,
    /// RFC 3550 interarrival jitter, in RTP timestamp units (for RTCP reports).
    pub jitter_ticks: u32,
    /// RFC 3550 interarrival jitter as a duration.
    pub jitter: Duration,
    /// RFC 3550 extended highest sequence number received.
    pub extended_highest_sequence: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Empty,
    Pending,
    Played,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    sequence: i64,
    timestamp: i64,
    marker: bool,
    length: usize,
    state: SlotState,
}

const EMPTY_SLOT: Slot = Slot {
    sequence: -1,
    timestamp: 0,
    marker: false,
    length: 0,
    state: SlotState::Empty,
};

/// Minimum and maximum transit over the last `WINDOW_BUCKETS` seconds.
#[derive(Debug, Clone)]
struct TransitWindow {
    /// (second, min, max); `second` is `i64::MIN` for an unused bucket.
    buckets: [(i64, i64, i64); WINDOW_BUCKETS],
}

impl TransitWindow {
    fn new() -> Self {
        TransitWindow {
            buckets: [(i64::MIN, 0, 0); WINDOW_BUCKETS],
        }
    }

    fn record(&mut self, now_us: i64, transit_us: i64) {
        let second = now_us.div_euclid(BUCKET_US);
        // `rem_euclid` of a positive modulus is in 0..WINDOW_BUCKETS.
        let bucket = &mut self.buckets[second.rem_euclid(WINDOW_BUCKETS as i64) as usize];
        if bucket.0 == second {
            bucket.1 = bucket.1.min(transit_us);
            bucket.2 = bucket.2.max(transit_us);
        } else {
            *bucket = (second, transit_us, transit_us);
        }
    }

    fn range(&self, now_us: i64) -> Option<(i64, i64)> {
        let oldest = now_us.div_euclid(BUCKET_US) - (WINDOW_BUCKETS as i64 - 1);
        self.buckets.iter().filter(|bucket| bucket.0 >= oldest).fold(
            None,
            |range, &(_, min, max)| match range {
                None => Some((min, max)),
                Some((low, high)) => Some((min.min(low), max.max(high))),
            },
        )
    }
}

/// The state of the current timeline (one SSRC, continuous sequence numbers and timestamps).
#[derive(Debug, Clone)]
struct Timeline {
    ssrc: u32,
    /// Extended sequence number of the first packet of this timeline.
    base_sequence: i64,
    /// Highest extended sequence number received, and its raw value for unwrapping.
    highest_sequence: i64,
    /// Extended timestamp of the packet with the highest sequence number, and its raw value.
    reference_timestamp: i64,
    reference_timestamp_raw: u32,
    /// The next sequence number to play.
    next_sequence: i64,
    /// The extended timestamp due at the next poll.
    playout_timestamp: i64,
    /// Distinct packets received on this timeline.
    received: u64,
    /// Packets seen on this timeline, for the warm-up floor.
    packets_seen: u64,
    /// Packets stored and not yet played or dropped.
    pending: usize,
    played_any: bool,
    /// Whether the last poll gave up waiting (underrun); the next packet re-anchors the timeline.
    starved: bool,
    last_shrink_us: i64,
    transit: TransitWindow,
    /// The transit range seen last, used when the window has emptied during a long pause.
    last_range: (i64, i64),
    /// A sequence number that jumped too far, waiting for its successor to confirm a restart.
    probation: Option<u16>,
}

/// An adaptive jitter buffer for one RTP stream; see the module documentation.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    config: JitterConfig,
    frame_ticks: i64,
    frame_us: i64,
    slots: Vec<Slot>,
    payloads: Vec<u8>,
    /// The instant all microsecond times are measured from (the first packet's arrival).
    epoch: Option<Instant>,
    timeline: Option<Timeline>,
    last_poll: Option<Instant>,
    arrival_jitter: ArrivalJitter,
    /// Expected and received counts of finished timelines, for the loss count.
    earlier_expected: u64,
    earlier_received: u64,
    stats: JitterStats,
    /// Offset minus smallest transit and target minus smallest transit at the last poll, in µs.
    current_delay_us: i64,
    target_delay_us: i64,
}

/// What the poll decided, as indices, before borrowing payloads for the output.
enum Decision {
    Play(usize),
    Lost {
        sequence: i64,
        timestamp: i64,
        next: Option<usize>,
    },
    Empty(EmptyReason),
}

impl JitterBuffer {
    /// A buffer for `config`; all memory is allocated here.
    pub fn new(config: JitterConfig) -> Result<Self, JitterError> {
        let frame_us = i64::try_from(config.frame_duration.as_micros()).unwrap_or(i64::MAX);
        if config.clock_rate == 0 {
            return Err(JitterError::InvalidConfig("clock rate must be above 0"));
        }
        let frame_ticks = i64::from(config.clock_rate) * frame_us / 1_000_000;
        if frame_ticks == 0 || frame_ticks * 1_000_000 != i64::from(config.clock_rate) * frame_us {
            return Err(JitterError::InvalidConfig(
                "frame duration must be a whole number of clock ticks",
            ));
        }
        if config.max_delay > Duration::from_secs(5) {
            return Err(JitterError::InvalidConfig("max delay must be at most 5 s"));
        }
        if config.frame_duration < Duration::from_micros(2_500)
            || config.frame_duration > Duration::from_millis(200)
        {
            return Err(JitterError::InvalidConfig("frames must be 2.5 to 200 ms"));
        }
        if config.min_delay > config.max_delay || config.initial_delay > config.max_delay {
            return Err(JitterError::InvalidConfig(
                "min and initial delay must not exceed max delay",
            ));
        }
        if config.max_payload == 0 || config.max_payload > MAX_PAYLOAD_LIMIT {
            return Err(JitterError::InvalidConfig("max payload must be 1 to 1500 bytes"));
        }
        let max_delay_us = i64::try_from(config.max_delay.as_micros()).unwrap_or(i64::MAX);
        // The checks above bound this to 2017 slots (5 s of 2.5 ms frames); 27 with the defaults.
        let capacity = (max_delay_us / frame_us) as usize + 1 + REORDER_SLOTS;
        Ok(JitterBuffer {
            config,
            frame_ticks,
            frame_us,
            slots: vec![EMPTY_SLOT; capacity],
            payloads: vec![0; capacity * config.max_payload],
            epoch: None,
            timeline: None,
            last_poll: None,
            arrival_jitter: ArrivalJitter {
                clock_rate: config.clock_rate,
                ticks: 0.0,
                last_transit: None,
            },
            earlier_expected: 0,
            earlier_received: 0,
            stats: JitterStats::default(),
            current_delay_us: 0,
            target_delay_us: 0,
        })
    }

    /// The configuration this buffer was built with.
    pub fn config(&self) -> &JitterConfig {
        &self.config
    }

    /// Forgets the stream and its timeline (the counters stay), as for a new call leg.
    pub fn reset(&mut self) {
        self.finish_timeline();
        self.slots.fill(EMPTY_SLOT);
        self.timeline = None;
        self.arrival_jitter.last_transit = None;
    }

    /// When the caller should poll next: one frame after the last poll, or now if it never polled and a
    /// packet has arrived; `None` before the first packet.
    pub fn next_poll(&self) -> Option<Instant> {
        match self.last_poll {
            Some(last) => Some(last + self.config.frame_duration),
            None => self.epoch,
        }
    }

    /// The counters and measurements so far.
    pub fn stats(&self) -> JitterStats {
        let mut stats = self.stats;
        let (expected, received) = match &self.timeline {
            Some(timeline) => (
                self.earlier_expected + (timeline.highest_sequence - timeline.base_sequence + 1) as u64,
                self.earlier_received + timeline.received,
            ),
            None => (self.earlier_expected, self.earlier_received),
        };
        stats.lost = expected.saturating_sub(received);
        stats.current_delay = micros_to_duration(self.current_delay_us);
        stats.target_delay = micros_to_duration(self.target_delay_us);
        let jitter_ticks = self.arrival_jitter.ticks;
        stats.jitter_ticks = jitter_ticks as u32;
        stats.jitter = micros_to_duration((jitter_ticks * 1e6 / f64::from(self.config.clock_rate)) as i64);
        stats.extended_highest_sequence = self
            .timeline
            .as_ref()
            .map_or(0, |timeline| timeline.highest_sequence as u32);
        stats
    }

    /// Takes a packet that arrived at `now`; the payload is copied.
    pub fn push(&mut self, now: Instant, header: PacketHeader, payload: &[u8]) -> PushOutcome {
        if payload.len() > self.config.max_payload {
            self.stats.discarded += 1;
            return PushOutcome::TooLarge;
        }
        let epoch = *self.epoch.get_or_insert(now);
        let now_us = micros_since(epoch, now);
        let Some(timeline) = self.timeline.as_mut() else {
            self.restart(now_us, header, payload, false);
            return PushOutcome::Restarted;
        };
        if timeline.ssrc != header.ssrc {
            self.restart(now_us, header, payload, true);
            return PushOutcome::Restarted;
        }
        let sequence = unwrap_sequence(timeline.highest_sequence, header.sequence);
        let ahead = sequence - timeline.highest_sequence;
        if ahead >= MAX_DROPOUT || ahead <= -MAX_MISORDER {
            if timeline.probation == Some(header.sequence.wrapping_sub(1)) {
                self.restart(now_us, header, payload, true);
                return PushOutcome::Restarted;
            }
            timeline.probation = Some(header.sequence);
            self.stats.discarded += 1;
            return PushOutcome::Probation;
        }
        timeline.probation = None;
        let timestamp = timeline.reference_timestamp
            + i64::from(header.timestamp.wrapping_sub(timeline.reference_timestamp_raw) as i32);
        let transit_us = now_us - ticks_to_micros(timestamp, self.config.clock_rate);
        if let Some((low, high)) = timeline.transit.range(now_us)
            && (transit_us > high + JUMP_US || transit_us < low - JUMP_US)
        {
            self.restart(now_us, header, payload, true);
            return PushOutcome::Restarted;
        }

        // Classify before the statistics, so that duplicates do not count as arrivals.
        let capacity = self.slots.len() as i64;
        let index = slot_index(sequence, self.slots.len());
        let slot = self.slots[index];
        if slot.sequence == sequence && slot.state != SlotState::Empty {
            self.stats.duplicate += 1;
            return PushOutcome::Duplicate;
        }
        timeline.received += 1;
        timeline.packets_seen += 1;
        self.stats.received += 1;
        timeline.transit.record(now_us, transit_us);
        self.arrival_jitter.update(now_us, timestamp);
        if sequence > timeline.highest_sequence {
            timeline.highest_sequence = sequence;
            timeline.reference_timestamp = timestamp;
            timeline.reference_timestamp_raw = header.timestamp;
        }
        if sequence < timeline.next_sequence {
            if timeline.played_any || timeline.highest_sequence - sequence >= capacity {
                self.stats.late += 1;
                return PushOutcome::Late;
            }
            // Overtaken before playout began: start the timeline from this earlier packet instead.
            timeline.next_sequence = sequence;
            timeline.playout_timestamp = timestamp;
            timeline.base_sequence = timeline.base_sequence.min(sequence);
        }
        if sequence >= timeline.next_sequence + capacity || (timeline.starved && timeline.pending == 0) {
            // Too far ahead to fit, or the first packet after the timeline ran dry: anchor playout here.
            if timeline.pending > 0 {
                self.stats.discarded += timeline.pending as u64;
                for slot in &mut self.slots {
                    if slot.state == SlotState::Pending {
                        slot.state = SlotState::Empty;
                    }
                }
                timeline.pending = 0;
            }
            timeline.next_sequence = sequence;
            timeline.playout_timestamp = timestamp;
            timeline.starved = false;
        }
        // Pending packets all lie within one ring's length, so a pending slot is never overwritten; if it
        // were, the count must still match the slots.
        if self.slots[index].state == SlotState::Pending {
            self.stats.discarded += 1;
        } else {
            timeline.pending += 1;
        }
        self.store(index, sequence, timestamp, header.marker, payload);
        PushOutcome::Stored
    }

    /// Hands out the frame to play at `now`; call once per frame duration of the caller's clock.
    pub fn poll(&mut self, now: Instant) -> JitterOutput<'_> {
        self.last_poll = Some(now);
        let decision = match self.epoch {
            Some(epoch) => self.decide(micros_since(epoch, now)),
            None => Decision::Empty(EmptyReason::Buffering),
        };
        match decision {
            Decision::Play(index) => JitterOutput::Frame(self.frame(index)),
            Decision::Lost {
                sequence,
                timestamp,
                next,
            } => JitterOutput::Lost {
                sequence: sequence as u16,
                timestamp: timestamp_raw(self.timeline.as_ref(), timestamp),
                next: next.map(|index| self.frame(index)),
            },
            Decision::Empty(reason) => JitterOutput::Empty(reason),
        }
    }

    fn decide(&mut self, now_us: i64) -> Decision {
        let clock_rate = self.config.clock_rate;
        let frame_us = self.frame_us;
        let frame_ticks = self.frame_ticks;
        let max_delay_us = duration_micros(self.config.max_delay);
        let Some(timeline) = self.timeline.as_mut() else {
            return Decision::Empty(EmptyReason::Buffering);
        };
        let floor_us = duration_micros(if timeline.packets_seen < WARMUP_PACKETS {
            self.config.initial_delay
        } else {
            self.config.min_delay
        });
        let (min_transit, max_transit) = timeline.transit.range(now_us).unwrap_or(timeline.last_range);
        timeline.last_range = (min_transit, max_transit);
        let ceiling = min_transit + max_delay_us;
        let target = (max_transit + SAFETY_US).max(min_transit + floor_us).min(ceiling);
        let grow_below = (max_transit + GROW_MARGIN_US)
            .max(min_transit + floor_us)
            .min(ceiling);
        let offset = now_us - ticks_to_micros(timeline.playout_timestamp, clock_rate);
        self.current_delay_us = offset - min_transit;
        self.target_delay_us = target - min_transit;
        let may_grow = offset + frame_us <= ceiling;
        let stretch = if timeline.played_any {
            EmptyReason::Stretch
        } else {
            EmptyReason::Buffering
        };
        if offset < grow_below && may_grow {
            self.stats.stretches += u64::from(stretch == EmptyReason::Stretch);
            return Decision::Empty(stretch);
        }
        let shrink_due = (offset - frame_us >= target
            && now_us - timeline.last_shrink_us >= SHRINK_INTERVAL_US)
            || offset > ceiling;

        let capacity = self.slots.len();
        let index = slot_index(timeline.next_sequence, capacity);
        let slot = self.slots[index];
        if slot.state == SlotState::Pending && slot.sequence == timeline.next_sequence {
            if slot.timestamp > timeline.playout_timestamp + frame_ticks / 2 {
                // A timestamp gap: the sender was silent. A talkspurt start may end the gap early when
                // that still leaves the target delay; otherwise play silence (two frames of it to shrink).
                let early_offset = now_us - ticks_to_micros(slot.timestamp, clock_rate);
                if !(slot.marker && early_offset >= target) {
                    timeline.playout_timestamp += frame_ticks;
                    if shrink_due && timeline.playout_timestamp + frame_ticks <= slot.timestamp {
                        timeline.playout_timestamp += frame_ticks;
                        timeline.last_shrink_us = now_us;
                        self.stats.skips += 1;
                    }
                    return Decision::Empty(EmptyReason::Silence);
                }
            }
            let mut index = index;
            let following = slot_index(timeline.next_sequence + 1, capacity);
            let next = self.slots[following];
            if shrink_due
                && next.state == SlotState::Pending
                && next.sequence == timeline.next_sequence + 1
                && next.timestamp == slot.timestamp + frame_ticks
            {
                self.slots[index].state = SlotState::Played;
                timeline.pending = timeline.pending.saturating_sub(1);
                timeline.next_sequence += 1;
                timeline.last_shrink_us = now_us;
                self.stats.skips += 1;
                self.stats.discarded += 1;
                index = following;
            }
            let slot = &mut self.slots[index];
            slot.state = SlotState::Played;
            timeline.pending = timeline.pending.saturating_sub(1);
            timeline.next_sequence += 1;
            timeline.playout_timestamp = slot.timestamp + frame_ticks;
            timeline.played_any = true;
            timeline.starved = false;
            self.stats.played += 1;
            return Decision::Play(index);
        }
        if timeline.pending > 0 {
            let sequence = timeline.next_sequence;
            let timestamp = timeline.playout_timestamp;
            let following = slot_index(sequence + 1, capacity);
            let next = self.slots[following];
            let next =
                (next.state == SlotState::Pending && next.sequence == sequence + 1).then_some(following);
            timeline.next_sequence += 1;
            timeline.playout_timestamp += frame_ticks;
            self.stats.concealed += 1;
            return Decision::Lost {
                sequence,
                timestamp,
                next,
            };
        }
        if may_grow {
            self.stats.stretches += u64::from(stretch == EmptyReason::Stretch);
            return Decision::Empty(stretch);
        }
        timeline.playout_timestamp += frame_ticks;
        timeline.starved = true;
        self.stats.underruns += 1;
        Decision::Empty(EmptyReason::Underrun)
    }

    fn frame(&self, index: usize) -> JitterFrame<'_> {
        let slot = &self.slots[index];
        let start = index * self.config.max_payload;
        JitterFrame {
            sequence: slot.sequence as u16,
            timestamp: timestamp_raw(self.timeline.as_ref(), slot.timestamp),
            marker: slot.marker,
            payload: &self.payloads[start..start + slot.length],
        }
    }

    fn store(&mut self, index: usize, sequence: i64, timestamp: i64, marker: bool, payload: &[u8]) {
        let start = index * self.config.max_payload;
        self.payloads[start..start + payload.len()].copy_from_slice(payload);
        self.slots[index] = Slot {
            sequence,
            timestamp,
            marker,
            length: payload.len(),
            state: SlotState::Pending,
        };
    }

    /// Starts a new timeline whose first packet is `header`.
    fn restart(&mut self, now_us: i64, header: PacketHeader, payload: &[u8], counted: bool) {
        if counted {
            self.stats.restarts += 1;
            self.stats.discarded += self
                .timeline
                .as_ref()
                .map_or(0, |timeline| timeline.pending as u64);
        }
        self.reset();
        let sequence = i64::from(header.sequence);
        let mut timeline = Timeline {
            ssrc: header.ssrc,
            base_sequence: sequence,
            highest_sequence: sequence,
            reference_timestamp: 0,
            reference_timestamp_raw: header.timestamp,
            next_sequence: sequence,
            playout_timestamp: 0,
            received: 1,
            packets_seen: 1,
            pending: 1,
            played_any: false,
            starved: false,
            last_shrink_us: now_us,
            transit: TransitWindow::new(),
            last_range: (now_us, now_us),
            probation: None,
        };
        timeline.transit.record(now_us, now_us);
        self.timeline = Some(timeline);
        self.stats.received += 1;
        self.arrival_jitter.update(now_us, 0);
        self.store(
            slot_index(sequence, self.slots.len()),
            sequence,
            0,
            header.marker,
            payload,
        );
    }

    /// Adds the finished timeline's counts to the totals.
    fn finish_timeline(&mut self) {
        if let Some(timeline) = &self.timeline {
            self.earlier_expected += (timeline.highest_sequence - timeline.base_sequence + 1) as u64;
            self.earlier_received += timeline.received;
        }
    }
}

/// RFC 3550 6.4.1 interarrival jitter, in RTP timestamp units.
#[derive(Debug, Clone)]
struct ArrivalJitter {
    clock_rate: u32,
    ticks: f64,
    /// The previous packet's transit in ticks; `None` at the start of a timeline.
    last_transit: Option<f64>,
}

impl ArrivalJitter {
    /// J += (|D| - J) / 16, with D the change in transit between consecutive arrivals.
    fn update(&mut self, now_us: i64, timestamp: i64) {
        let transit = now_us as f64 * f64::from(self.clock_rate) / 1e6 - timestamp as f64;
        if let Some(previous) = self.last_transit {
            self.ticks += ((transit - previous).abs() - self.ticks) / 16.0;
        }
        self.last_transit = Some(transit);
    }
}

fn slot_index(sequence: i64, capacity: usize) -> usize {
    // `rem_euclid` of a positive modulus is in 0..capacity.
    sequence.rem_euclid(capacity as i64) as usize
}

/// The extended sequence number closest to `highest` whose low 16 bits are `sequence`.
fn unwrap_sequence(highest: i64, sequence: u16) -> i64 {
    highest + i64::from(sequence.wrapping_sub(highest as u16) as i16)
}

/// The raw RTP timestamp of an extended timestamp of `timeline`.
fn timestamp_raw(timeline: Option<&Timeline>, timestamp: i64) -> u32 {
    timeline.map_or(timestamp as u32, |timeline| {
        timeline
            .reference_timestamp_raw
            .wrapping_add((timestamp - timeline.reference_timestamp) as u32)
    })
}

fn ticks_to_micros(ticks: i64, clock_rate: u32) -> i64 {
    ticks * 1_000_000 / i64::from(clock_rate)
}

fn micros_since(epoch: Instant, now: Instant) -> i64 {
    i64::try_from(now.saturating_duration_since(epoch).as_micros()).unwrap_or(i64::MAX)
}

fn duration_micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

fn micros_to_duration(micros: i64) -> Duration {
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME_MS: u64 = 20;

    /// What a poll produced, without borrowed payloads.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Event {
        Frame(u16),
        Lost { sequence: u16, fec_from: Option<u16> },
        Empty(EmptyReason),
    }

    impl From<JitterOutput<'_>> for Event {
        fn from(output: JitterOutput<'_>) -> Self {
            match output {
                JitterOutput::Frame(frame) => {
                    // Every test payload is the sequence number, so a wrong slot is caught.
                    assert_eq!(
                        frame.payload,
                        frame.sequence.to_be_bytes(),
                        "payload of {}",
                        frame.sequence
                    );
                    Event::Frame(frame.sequence)
                }
                JitterOutput::Lost { sequence, next, .. } => Event::Lost {
                    sequence,
                    fec_from: next.map(|frame| frame.sequence),
                },
                JitterOutput::Empty(reason) => Event::Empty(reason),
            }
        }
    }

    /// A sender of 20 ms G.711 packets and a receiver polling every 20 ms, on a simulated clock in µs.
    struct Simulation {
        start: Instant,
        buffer: JitterBuffer,
        /// Packets in flight: (arrival µs, header).
        in_flight: Vec<(u64, PacketHeader)>,
        /// Receiver polls at `poll_phase + k * 20 ms`.
        poll_phase: u64,
        events: Vec<Event>,
    }

    impl Simulation {
        fn new(config: JitterConfig) -> Self {
            Simulation {
                start: Instant::now(),
                buffer: JitterBuffer::new(config).expect("valid config"),
                in_flight: Vec::new(),
                poll_phase: 7_000,
                events: Vec::new(),
            }
        }

        fn g711() -> Self {
            Self::new(JitterConfig::new(8000))
        }

        fn at(&self, micros: u64) -> Instant {
            self.start + Duration::from_micros(micros)
        }

        /// Sends packet `index` (seq `first_seq + index`, ts `first_ts + 160 * index`), sent at
        /// `index * send_interval_us`, arriving `delay_us` later.
        fn send(&mut self, first_seq: u16, first_ts: u32, index: u64, send_us: u64, delay_us: u64) {
            let header = PacketHeader {
                ssrc: 0x1234,
                sequence: first_seq.wrapping_add(index as u16),
                timestamp: first_ts.wrapping_add(160 * index as u32),
                marker: index == 0,
            };
            self.in_flight.push((send_us + delay_us, header));
        }

        /// Runs until `end_us`, delivering packets in arrival order and polling every 20 ms.
        fn run_until(&mut self, end_us: u64) {
            self.in_flight
                .sort_by_key(|(arrival, header)| (*arrival, header.sequence));
            let mut next_poll = self.poll_phase;
            let mut pending = std::mem::take(&mut self.in_flight).into_iter().peekable();
            while next_poll <= end_us {
                while let Some((arrival, header)) = pending.next_if(|(arrival, _)| *arrival <= next_poll) {
                    let now = self.at(arrival);
                    self.buffer.push(now, header, &header.sequence.to_be_bytes());
                }
                let now = self.at(next_poll);
                let event = Event::from(self.buffer.poll(now));
                self.events.push(event);
                next_poll += FRAME_MS * 1000;
            }
            self.in_flight = pending.collect();
            self.poll_phase = next_poll;
        }

        fn frames(&self) -> Vec<u16> {
            self.events
                .iter()
                .filter_map(|event| match event {
                    Event::Frame(sequence) => Some(*sequence),
                    _ => None,
                })
                .collect()
        }

        /// Asserts that every packet of `expected` was played in order, except those skipped to shrink.
        fn assert_played(&self, expected: impl IntoIterator<Item = u16>) {
            let expected: Vec<u16> = expected.into_iter().collect();
            let frames = self.frames();
            let mut remaining = expected.iter();
            for frame in &frames {
                assert!(
                    remaining.any(|sequence| sequence == frame),
                    "{frame} out of order in {frames:?}"
                );
            }
            let skips = self.buffer.stats().skips as usize;
            assert_eq!(frames.len() + skips, expected.len(), "played {frames:?}");
        }

        /// How many events up to the last frame played match `wanted` (after the stream ends the buffer
        /// stretches and underruns, as it should).
        fn count(&self, wanted: impl Fn(&Event) -> bool) -> usize {
            let end = self
                .events
                .iter()
                .rposition(|event| matches!(event, Event::Frame(_)))
                .map_or(0, |last| last + 1);
            self.events[..end].iter().filter(|event| wanted(event)).count()
        }

        fn stretches(&self) -> usize {
            self.count(|event| *event == Event::Empty(EmptyReason::Stretch))
        }

        fn underruns(&self) -> usize {
            self.count(|event| *event == Event::Empty(EmptyReason::Underrun))
        }
    }

    #[test]
    fn in_order_packets_play_in_order_after_the_initial_delay() {
        let mut sim = Simulation::g711();
        for index in 0..100 {
            sim.send(0, 0, index, index * 20_000, 30_000);
        }
        sim.run_until(2_200_000);
        sim.assert_played(0..100);
        // The first packet arrives at 30 ms; waiting 40 ms puts it at the poll at 67 or 87 ms.
        let buffering = sim.count(|event| *event == Event::Empty(EmptyReason::Buffering));
        assert!(
            (3..=5).contains(&buffering),
            "{buffering} buffering frames: {:?}",
            &sim.events[..8]
        );
        let stats = sim.buffer.stats();
        assert_eq!(
            (stats.lost, stats.late, stats.duplicate, stats.concealed),
            (0, 0, 0, 0)
        );
        assert_eq!((sim.stretches(), sim.underruns()), (0, 0));
        assert!(stats.skips <= 2, "{stats:?}");
        assert_eq!(stats.received, 100);
        assert_eq!(stats.jitter_ticks, 0);
    }

    #[test]
    fn reordered_packets_play_in_sequence() {
        let mut sim = Simulation::g711();
        for index in 0..100 {
            // Odd packets overtake even ones by 5 ms.
            let delay = if index % 2 == 0 { 35_000 } else { 10_000 };
            sim.send(100, 5000, index, index * 20_000, delay);
        }
        sim.run_until(2_300_000);
        sim.assert_played(100..200);
        let stats = sim.buffer.stats();
        assert_eq!((stats.lost, stats.late, stats.concealed), (0, 0, 0));
        assert!(stats.jitter_ticks > 100, "jitter {} ticks", stats.jitter_ticks);
    }

    #[test]
    fn lost_packets_are_reported_once_with_the_next_packet_for_fec() {
        let mut sim = Simulation::g711();
        for index in (0..100).filter(|index| ![10, 20, 21, 22].contains(index)) {
            sim.send(0, 0, index, index * 20_000, 30_000);
        }
        sim.run_until(2_300_000);
        let lost: Vec<Event> = sim
            .events
            .iter()
            .copied()
            .filter(|event| matches!(event, Event::Lost { .. }))
            .collect();
        assert_eq!(
            lost,
            [
                Event::Lost {
                    sequence: 10,
                    fec_from: Some(11)
                },
                Event::Lost {
                    sequence: 20,
                    fec_from: None
                },
                Event::Lost {
                    sequence: 21,
                    fec_from: None
                },
                Event::Lost {
                    sequence: 22,
                    fec_from: Some(23)
                },
            ]
        );
        sim.assert_played((0..100).filter(|index| ![10, 20, 21, 22].contains(index)));
        let stats = sim.buffer.stats();
        assert_eq!((stats.lost, stats.concealed, stats.late), (4, 4, 0));
    }

    #[test]
    fn a_late_burst_is_waited_for_then_the_delay_shrinks_back() {
        let mut sim = Simulation::g711();
        for index in 0..1500 {
            // Packets 100..105 are held up and all arrive together, 100 ms after packet 100 was sent.
            let delay = if (100..105).contains(&index) {
                30_000 + (104 - index) * 20_000 + 20_000
            } else {
                30_000
            };
            sim.send(0, 0, index, index * 20_000, delay);
        }
        sim.run_until(2_500_000);
        let delay_after_burst = sim.buffer.stats().current_delay;
        sim.run_until(29_900_000);
        let delay_later = sim.buffer.stats().current_delay;
        sim.run_until(30_500_000);
        sim.assert_played(0..1500);
        let stats = sim.buffer.stats();
        assert_eq!((stats.late, stats.concealed, sim.underruns()), (0, 0, 0));
        assert!(sim.stretches() >= 4, "the buffer waited for the burst: {stats:?}");
        assert!(
            delay_after_burst >= Duration::from_millis(90),
            "delay after the burst {delay_after_burst:?}"
        );
        assert!(
            delay_later <= Duration::from_millis(40),
            "delay 27 s later {delay_later:?}"
        );
        assert!(stats.skips >= 4, "{stats:?}");
    }

    #[test]
    fn duplicates_are_dropped_and_counted() {
        let mut sim = Simulation::g711();
        for index in 0..50 {
            sim.send(0, 0, index, index * 20_000, 30_000);
            // An immediate copy, and a copy long after the packet was played.
            sim.send(0, 0, index, index * 20_000, 31_000);
            sim.send(0, 0, index, index * 20_000, 300_000);
        }
        sim.run_until(1_500_000);
        sim.assert_played(0..50);
        let stats = sim.buffer.stats();
        assert_eq!(
            (stats.duplicate, stats.received, stats.lost, stats.late),
            (100, 50, 0, 0)
        );
    }

    #[test]
    fn a_late_packet_is_reported_lost_then_dropped_as_late() {
        let mut sim = Simulation::g711();
        for index in 0..50 {
            let delay = if index == 20 { 200_000 } else { 30_000 };
            sim.send(0, 0, index, index * 20_000, delay);
        }
        sim.run_until(1_500_000);
        assert!(sim.events.contains(&Event::Lost {
            sequence: 20,
            fec_from: Some(21)
        }));
        let stats = sim.buffer.stats();
        assert_eq!((stats.late, stats.lost, stats.concealed), (1, 0, 1));
        // The late packet raised the target so that such a packet would now be in time.
        assert!(stats.target_delay >= Duration::from_millis(150), "{stats:?}");
    }

    #[test]
    fn sequence_numbers_and_timestamps_wrap() {
        let mut sim = Simulation::g711();
        for index in 0..200 {
            sim.send(65_500, u32::MAX - 8_000, index, index * 20_000, 30_000);
        }
        sim.run_until(4_300_000);
        sim.assert_played((0..200).map(|index| 65_500u16.wrapping_add(index)));
        let stats = sim.buffer.stats();
        assert_eq!(
            (stats.lost, stats.late, stats.concealed, stats.restarts),
            (0, 0, 0, 0)
        );
        assert_eq!(stats.extended_highest_sequence, 65_500 + 199);
    }

    /// Ten minutes with the sender's clock `ppm` parts per million off ours and 0–15 ms of random
    /// network jitter.
    fn drift(ppm: i64) -> Simulation {
        let mut sim = Simulation::g711();
        let mut state = 0x2545_F491_u32;
        let packets = 30_000;
        for index in 0..packets {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let jitter = u64::from(state % 15_000);
            let sent = (index as i64 * 20_000 * (1_000_000 - ppm) / 1_000_000) as u64;
            sim.send(0, 0, index, sent, 20_000 + jitter);
        }
        let mut max_delay = Duration::ZERO;
        for minute in 1..=10 {
            for second in 0..60 {
                sim.run_until((minute - 1) * 60_000_000 + second * 1_000_000);
                max_delay = max_delay.max(sim.buffer.stats().current_delay);
            }
        }
        assert!(
            max_delay <= Duration::from_millis(80),
            "ppm {ppm}: delay reached {max_delay:?}"
        );
        sim
    }

    #[test]
    fn a_fast_sender_is_followed_by_skips_without_underruns() {
        let sim = drift(1000);
        let stats = sim.buffer.stats();
        // 0.1 % of 10 minutes is 600 ms: about 30 frames too many to drop.
        assert!((20..=60).contains(&stats.skips), "{stats:?}");
        assert!(
            sim.underruns() + sim.stretches() + stats.concealed as usize <= 20,
            "{stats:?}"
        );
        assert!(stats.late <= 10, "{stats:?}");
    }

    #[test]
    fn a_slow_sender_is_followed_by_stretches_without_constant_underruns() {
        let sim = drift(-1000);
        let stats = sim.buffer.stats();
        // 600 ms missing over 10 minutes: about 30 frames to stretch.
        assert!((20..=60).contains(&sim.stretches()), "{stats:?}");
        assert!(sim.underruns() + stats.concealed as usize <= 20, "{stats:?}");
        assert!(stats.late <= 10, "{stats:?}");
    }

    #[test]
    fn a_pause_in_sending_re_anchors_the_delay() {
        let mut sim = Simulation::g711();
        // 2 s of speech, 3 s of silence suppression (timestamps advance, nothing is sent), then speech
        // again with the marker bit and continuous sequence numbers.
        for index in 0..100 {
            sim.send(0, 0, index, index * 20_000, 30_000);
        }
        for index in 250..400 {
            let header = PacketHeader {
                ssrc: 0x1234,
                sequence: (index - 150) as u16,
                timestamp: 160 * index as u32,
                marker: index == 250,
            };
            sim.in_flight.push((index * 20_000 + 30_000, header));
        }
        sim.run_until(7_900_000);
        let stats = sim.buffer.stats();
        assert!(stats.current_delay <= Duration::from_millis(60), "{stats:?}");
        sim.run_until(8_500_000);
        sim.assert_played(0..250);
        let stats = sim.buffer.stats();
        assert_eq!(
            (stats.lost, stats.late, stats.concealed, stats.restarts),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn a_timestamp_gap_with_contiguous_sequence_numbers_plays_silence() {
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000)).expect("valid config");
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let header = |sequence: u16, timestamp: u32| PacketHeader {
            ssrc: 1,
            sequence,
            timestamp,
            marker: false,
        };
        // Both packets arrive at once; the second one's timestamp is 60 ms after the first's.
        buffer.push(at(0), header(1, 0), &1u16.to_be_bytes());
        buffer.push(at(0), header(2, 480), &2u16.to_be_bytes());
        let mut events = Vec::new();
        for poll in 0..8 {
            events.push(Event::from(buffer.poll(at(poll * 20))));
        }
        let silences = events
            .iter()
            .filter(|event| **event == Event::Empty(EmptyReason::Silence))
            .count();
        assert_eq!(silences, 2, "{events:?}");
        assert_eq!(buffer.stats().lost, 0);
    }

    #[test]
    fn a_new_ssrc_or_a_confirmed_jump_restarts_the_timeline() {
        let mut buffer = JitterBuffer::new(JitterConfig::new(8000)).expect("valid config");
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let header = |ssrc: u32, sequence: u16, timestamp: u32| PacketHeader {
            ssrc,
            sequence,
            timestamp,
            marker: false,
        };
        assert_eq!(buffer.push(at(0), header(1, 10, 0), &[]), PushOutcome::Restarted);
        assert_eq!(buffer.push(at(20), header(1, 11, 160), &[]), PushOutcome::Stored);
        assert_eq!(
            buffer.push(at(40), header(2, 500, 99), &[]),
            PushOutcome::Restarted
        );
        // A sequence jump of 10000: dropped until the next packet confirms it.
        assert_eq!(
            buffer.push(at(60), header(2, 10_500, 259), &[]),
            PushOutcome::Probation
        );
        assert_eq!(
            buffer.push(at(80), header(2, 10_501, 419), &[]),
            PushOutcome::Restarted
        );
        // A timestamp jump of an hour with continuous sequence numbers.
        assert_eq!(
            buffer.push(at(100), header(2, 10_502, 419 + 8000 * 3600), &[]),
            PushOutcome::Restarted
        );
        assert_eq!(
            buffer.push(at(120), header(2, 10_503, 579 + 8000 * 3600), &[]),
            PushOutcome::Stored
        );
        let stats = buffer.stats();
        assert_eq!(stats.restarts, 3);
        assert_eq!(stats.lost, 0);
        let JitterOutput::Empty(EmptyReason::Buffering) = buffer.poll(at(120)) else {
            panic!("a restarted timeline fills first");
        };
        assert_eq!(
            buffer.poll(at(160)),
            buffer_frame_for_test(10_502, 419 + 8000 * 3600)
        );
    }

    fn buffer_frame_for_test(sequence: u16, timestamp: u32) -> JitterOutput<'static> {
        JitterOutput::Frame(JitterFrame {
            sequence,
            timestamp,
            marker: false,
            payload: &[],
        })
    }

    #[test]
    fn oversized_payloads_and_bad_configs_are_refused() {
        let mut buffer = JitterBuffer::new(JitterConfig {
            max_payload: 4,
            ..JitterConfig::new(8000)
        })
        .expect("valid");
        let header = PacketHeader {
            ssrc: 1,
            sequence: 1,
            timestamp: 0,
            marker: false,
        };
        assert_eq!(
            buffer.push(Instant::now(), header, &[0; 5]),
            PushOutcome::TooLarge
        );
        assert_eq!(buffer.stats().discarded, 1);
        assert_eq!(buffer.next_poll(), None);
        let bad = |config: JitterConfig| JitterBuffer::new(config).is_err();
        assert!(bad(JitterConfig {
            clock_rate: 0,
            ..JitterConfig::new(8000)
        }));
        assert!(bad(JitterConfig {
            frame_duration: Duration::from_micros(20_001),
            ..JitterConfig::new(8000)
        }));
        assert!(bad(JitterConfig {
            frame_duration: Duration::ZERO,
            ..JitterConfig::new(8000)
        }));
        assert!(bad(JitterConfig {
            min_delay: Duration::from_secs(1),
            ..JitterConfig::new(8000)
        }));
        assert!(bad(JitterConfig {
            max_delay: Duration::from_secs(60),
            ..JitterConfig::new(8000)
        }));
        assert!(bad(JitterConfig {
            max_payload: 0,
            ..JitterConfig::new(8000)
        }));
        assert!(bad(JitterConfig {
            max_payload: 1501,
            ..JitterConfig::new(8000)
        }));
        assert!(bad(JitterConfig {
            frame_duration: Duration::from_millis(1),
            ..JitterConfig::new(8000)
        }));
        assert!(!bad(JitterConfig::new(48_000)));
    }

    #[test]
    fn next_poll_follows_the_last_poll() {
        let mut buffer = JitterBuffer::new(JitterConfig::new(48_000)).expect("valid config");
        let start = Instant::now();
        buffer.push(
            start,
            PacketHeader {
                ssrc: 9,
                sequence: 0,
                timestamp: 0,
                marker: true,
            },
            &[7],
        );
        assert_eq!(buffer.next_poll(), Some(start));
        let later = start + Duration::from_millis(5);
        let _ = buffer.poll(later);
        assert_eq!(buffer.next_poll(), Some(later + Duration::from_millis(20)));
    }

    #[test]
    fn rfc3550_jitter_measures_alternating_delay() {
        let mut sim = Simulation::g711();
        for index in 0..500 {
            sim.send(
                0,
                0,
                index,
                index * 20_000,
                if index % 2 == 0 { 20_000 } else { 30_000 },
            );
        }
        sim.run_until(10_500_000);
        let stats = sim.buffer.stats();
        // |D| is 10 ms (80 ticks) for every packet, so J converges to 80.
        assert!((78..=80).contains(&stats.jitter_ticks), "{stats:?}");
        assert_eq!(stats.jitter.as_millis(), 9);
        assert_eq!((stats.lost, stats.late), (0, 0));
    }
}
