//! DTMF: RFC 4733 telephone-events (payload, sender, receiver, clock-rate mapping) and the SIP INFO bodies
//! browsers use (`application/dtmf-relay`, `application/dtmf`).
//!
//! A digit crosses the gateway as events, never as audio: the pipeline sends the sender's packets in
//! place of audio packets while a digit lasts. The WebRTC leg runs telephone-event at 48000 Hz and the
//! PBX leg at 8000 Hz; [`TelephoneEvent::rescaled`] maps durations between them, and the RTP legs map
//! timestamps as they do for audio.
//!
//! Nothing here allocates: the sender and receiver keep fixed-size queues.

use std::time::{Duration, Instant};

/// The default volume of generated events: -10 dBm0, a normal DTMF level.
pub const DEFAULT_VOLUME: u8 = 10;
/// The duration of a SIP INFO digit that does not say (JsSIP's default).
pub const DEFAULT_INFO_DURATION: Duration = Duration::from_millis(100);
/// The shortest digit generated: receivers may miss shorter tones (ITU-T Q.24 asks for 40 ms).
pub const MIN_DIGIT_DURATION: Duration = Duration::from_millis(40);
/// The longest digit generated from a SIP INFO request.
pub const MAX_DIGIT_DURATION: Duration = Duration::from_secs(8);
/// The pause kept between two generated digits.
pub const INTER_DIGIT_GAP: Duration = Duration::from_millis(40);
/// How long the receiver waits for the next packet of an event before taking it as ended.
pub const RECEIVER_END_TIMEOUT: Duration = Duration::from_millis(250);
/// Digits the sender holds while one is being sent.
const SENDER_QUEUE: usize = 32;
/// End packets per event: the final packet and its two retransmissions (RFC 4733 2.5.1.4).
const END_PACKETS: u8 = 3;
/// Outputs the receiver can hold between drains; one packet produces at most three.
const RECEIVER_QUEUE: usize = 4;

/// Errors of DTMF parsing and generation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    /// A telephone-event payload is shorter than its 4 bytes.
    #[error("telephone-event payload of {0} bytes, 4 needed")]
    PayloadTooShort(usize),
    /// A character or event code that is not one of 0-9, *, #, A-D.
    #[error("not a DTMF digit: {0:?}")]
    InvalidDigit(String),
    /// A SIP INFO body without a usable digit.
    #[error("invalid DTMF body: {0}")]
    InvalidBody(&'static str),
    /// A SIP INFO content type that carries no DTMF.
    #[error("content type {0:?} carries no DTMF")]
    UnsupportedContentType(String),
    /// The sender already holds as many digits as it can.
    #[error("DTMF sender queue is full")]
    QueueFull,
    /// A clock rate of 0 or a packet time that is not a whole number of ticks.
    #[error("invalid DTMF timing: {0}")]
    InvalidTiming(&'static str),
}

/// A DTMF digit: 0-9, *, #, A-D (RFC 4733 events 0 to 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DtmfDigit(u8);

impl DtmfDigit {
    const CHARS: [char; 16] = [
        '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
    ];

    /// The digit for a keypad character (A-D in either case).
    pub fn from_char(character: char) -> Option<Self> {
        let upper = character.to_ascii_uppercase();
        Self::CHARS
            .iter()
            .position(|&known| known == upper)
            .map(|code| DtmfDigit(code as u8))
    }

    /// The digit for an RFC 4733 event code; codes above 15 are not DTMF digits.
    pub fn from_event(code: u8) -> Option<Self> {
        (code < 16).then_some(DtmfDigit(code))
    }

    /// The keypad character.
    pub fn as_char(self) -> char {
        Self::CHARS[usize::from(self.0)]
    }

    /// The RFC 4733 event code.
    pub fn event(self) -> u8 {
        self.0
    }
}

impl std::fmt::Display for DtmfDigit {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", self.as_char())
    }
}

/// The 4-byte RFC 4733 telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TelephoneEvent {
    /// Event code (0-15 are DTMF digits, 16 is flash; others are tones).
    pub event: u8,
    /// The E bit: this packet ends the event.
    pub end: bool,
    /// Volume as -dBm0, 0 to 63.
    pub volume: u8,
    /// Duration so far, in RTP timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses a payload; bytes after the first four (redundancy) are ignored.
    pub fn parse(payload: &[u8]) -> Result<Self, DtmfError> {
        let [event, flags, high, low, ..] = *payload else {
            return Err(DtmfError::PayloadTooShort(payload.len()));
        };
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([high, low]),
        })
    }

    /// The payload bytes (the reserved bit is 0, the volume is cut to 6 bits).
    pub fn to_bytes(self) -> [u8; 4] {
        let [high, low] = self.duration.to_be_bytes();
        [
            self.event,
            if self.end { 0x80 } else { 0 } | (self.volume & 0x3F),
            high,
            low,
        ]
    }

    /// The DTMF digit of this event, if it is one.
    pub fn digit(self) -> Option<DtmfDigit> {
        DtmfDigit::from_event(self.event)
    }

    /// The same event with its duration converted from `from_rate` to `to_rate` Hz (48000 ⇄ 8000),
    /// rounded to the nearest tick and capped at the 16-bit maximum.
    pub fn rescaled(self, from_rate: u32, to_rate: u32) -> Self {
        TelephoneEvent {
            duration: rescale_ticks(u64::from(self.duration), from_rate, to_rate),
            ..self
        }
    }
}

/// `ticks` at `from_rate` Hz as ticks at `to_rate` Hz, rounded, capped at `u16::MAX`; 0 if `from_rate` is 0.
pub fn rescale_ticks(ticks: u64, from_rate: u32, to_rate: u32) -> u16 {
    if from_rate == 0 {
        return 0;
    }
    let scaled = (ticks * u64::from(to_rate) + u64::from(from_rate) / 2) / u64::from(from_rate);
    u16::try_from(scaled).unwrap_or(u16::MAX)
}

/// One telephone-event packet to send; the RTP leg adds the header (sequence number and SSRC continuous
/// with the audio, the telephone-event payload type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfPacket {
    /// RTP marker bit: set on the first packet of an event.
    pub marker: bool,
    /// RTP timestamp: the start of the event (of its segment, for events longer than 16 bits of ticks).
    pub timestamp: u32,
    /// The event as sent.
    pub event: TelephoneEvent,
}

#[derive(Debug, Clone, Copy)]
struct Sending {
    digit: DtmfDigit,
    /// Timestamp of the current segment.
    timestamp: u32,
    /// Ticks since the event began, and at which the current segment began.
    elapsed: u64,
    segment_start: u64,
    total: u64,
    first: bool,
    /// End packets sent so far.
    ends_sent: u8,
}

/// Generates RFC 4733 events for queued digits, one packet per packet time.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    packet_ticks: u64,
    clock_rate: u32,
    volume: u8,
    queue: [(DtmfDigit, u64); SENDER_QUEUE],
    queue_start: usize,
    queue_len: usize,
    sending: Option<Sending>,
    /// Packet slots left to stay quiet before the next digit.
    gap_left: u64,
}

impl DtmfSender {
    /// A sender for a leg whose telephone-event clock is `clock_rate` Hz, sending one packet every
    /// `packet_time` (the audio ptime).
    pub fn new(clock_rate: u32, packet_time: Duration) -> Result<Self, DtmfError> {
        let packet_us = packet_time.as_micros();
        if clock_rate == 0 || packet_us == 0 || packet_us > 1_000_000 {
            return Err(DtmfError::InvalidTiming(
                "clock rate above 0 and a packet time of up to 1 s needed",
            ));
        }
        let product = u128::from(clock_rate) * packet_us;
        if !product.is_multiple_of(1_000_000) {
            return Err(DtmfError::InvalidTiming(
                "packet time must be a whole number of ticks",
            ));
        }
        let packet_ticks = (product / 1_000_000) as u64;
        Ok(DtmfSender {
            packet_ticks,
            clock_rate,
            volume: DEFAULT_VOLUME,
            queue: [(DtmfDigit(0), 0); SENDER_QUEUE],
            queue_start: 0,
            queue_len: 0,
            sending: None,
            gap_left: 0,
        })
    }

    /// Sets the volume of the events generated from now on (0 to 63, as -dBm0).
    pub fn set_volume(&mut self, volume: u8) {
        self.volume = volume.min(63);
    }

    /// Queues `digit` to sound for `duration` (kept within 40 ms to 8 s, rounded up to whole packets).
    pub fn queue(&mut self, digit: DtmfDigit, duration: Duration) -> Result<(), DtmfError> {
        if self.queue_len == SENDER_QUEUE {
            return Err(DtmfError::QueueFull);
        }
        let duration = duration.clamp(MIN_DIGIT_DURATION, MAX_DIGIT_DURATION);
        let ticks = (duration.as_micros() * u128::from(self.clock_rate)).div_ceil(1_000_000) as u64;
        let ticks = ticks.div_ceil(self.packet_ticks) * self.packet_ticks;
        self.queue[(self.queue_start + self.queue_len) % SENDER_QUEUE] = (digit, ticks);
        self.queue_len += 1;
        Ok(())
    }

    /// Whether a digit is being sent or waits; while this holds, the caller polls every packet time.
    pub fn is_busy(&self) -> bool {
        self.sending.is_some() || self.queue_len > 0 || self.gap_left > 0
    }

    /// Whether the packet slot polled now belongs to a digit (the caller sends no audio in it).
    pub fn is_sending(&self) -> bool {
        self.sending.is_some() || (self.queue_len > 0 && self.gap_left == 0)
    }

    /// The packet for this packet slot, if a digit is sounding; `timestamp` is the RTP timestamp the
    /// slot has on the leg's media clock (a new event starts there).
    pub fn poll_packet(&mut self, timestamp: u32) -> Option<DtmfPacket> {
        if self.sending.is_none() {
            if self.gap_left > 0 {
                self.gap_left -= 1;
                return None;
            }
            if self.queue_len == 0 {
                return None;
            }
            let (digit, total) = self.queue[self.queue_start];
            self.queue_start = (self.queue_start + 1) % SENDER_QUEUE;
            self.queue_len -= 1;
            self.sending = Some(Sending {
                digit,
                timestamp,
                elapsed: 0,
                segment_start: 0,
                total,
                first: true,
                ends_sent: 0,
            });
        }
        let volume = self.volume;
        let packet_ticks = self.packet_ticks;
        // Set just above when it was `None`.
        let sending = self.sending.as_mut()?;
        if sending.ends_sent == 0 {
            sending.elapsed = (sending.elapsed + packet_ticks).min(sending.total);
            if sending.elapsed - sending.segment_start > u64::from(u16::MAX) {
                // RFC 4733 2.5.1.3: a long event continues as a new segment starting where the last
                // full segment ended.
                sending.segment_start += u64::from(u16::MAX);
                sending.timestamp = sending.timestamp.wrapping_add(u32::from(u16::MAX));
            }
        }
        let end = sending.elapsed >= sending.total;
        if end {
            sending.ends_sent += 1;
        }
        let packet = DtmfPacket {
            marker: sending.first,
            timestamp: sending.timestamp,
            event: TelephoneEvent {
                event: sending.digit.event(),
                end,
                volume,
                // At most `u16::MAX` after the segment split above.
                duration: (sending.elapsed - sending.segment_start).min(u64::from(u16::MAX)) as u16,
            },
        };
        sending.first = false;
        if sending.ends_sent == END_PACKETS {
            self.sending = None;
            let gap_ticks = INTER_DIGIT_GAP.as_micros() as u64 * u64::from(self.clock_rate) / 1_000_000;
            self.gap_left = gap_ticks.div_ceil(packet_ticks);
        }
        Some(packet)
    }
}

/// What the receiver learned from the packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfReceived {
    /// A new digit began (reported once; missing if all its early packets were lost).
    Began {
        /// The digit.
        digit: DtmfDigit,
        /// RTP timestamp of the event.
        timestamp: u32,
    },
    /// A digit ended: reported exactly once per digit.
    Ended {
        /// The digit.
        digit: DtmfDigit,
        /// RTP timestamp of the event (of its first segment).
        timestamp: u32,
        /// Total duration in RTP timestamp units, across segments.
        duration_ticks: u64,
        /// Total duration.
        duration: Duration,
        /// Whether an end packet was seen (false when the end was inferred from silence or a new event).
        end_seen: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct Receiving {
    digit: DtmfDigit,
    /// Timestamp of the first segment, and of the current one.
    first_timestamp: u32,
    timestamp: u32,
    /// Duration of the segments before the current one, and the longest seen in the current one.
    earlier_segments: u64,
    duration: u16,
    ended: bool,
    last_packet: Instant,
}

/// Turns RFC 4733 packets into one report per digit, despite retransmitted, reordered or lost packets.
#[derive(Debug, Clone)]
pub struct DtmfReceiver {
    clock_rate: u32,
    current: Option<Receiving>,
    outputs: [Option<DtmfReceived>; RECEIVER_QUEUE],
    output_start: usize,
    output_len: usize,
}

impl DtmfReceiver {
    /// A receiver for a leg whose telephone-event clock is `clock_rate` Hz.
    pub fn new(clock_rate: u32) -> Result<Self, DtmfError> {
        if clock_rate == 0 {
            return Err(DtmfError::InvalidTiming("clock rate must be above 0"));
        }
        Ok(DtmfReceiver {
            clock_rate,
            current: None,
            outputs: [None; RECEIVER_QUEUE],
            output_start: 0,
            output_len: 0,
        })
    }

    /// Takes a telephone-event packet received at `now`; then drain [`poll_output`](Self::poll_output).
    /// Events that are not DTMF digits (flash, tones) are ignored.
    pub fn handle_packet(&mut self, now: Instant, timestamp: u32, payload: &[u8]) -> Result<(), DtmfError> {
        let event = TelephoneEvent::parse(payload)?;
        let Some(digit) = event.digit() else {
            return Ok(());
        };
        if let Some(current) = self.current.as_mut() {
            let age = timestamp.wrapping_sub(current.timestamp) as i32;
            if age == 0 && current.digit == digit {
                current.last_packet = now;
                current.duration = current.duration.max(event.duration);
                if event.end && !current.ended {
                    current.ended = true;
                    let ended = self.ended(true);
                    self.emit(ended);
                }
                return Ok(());
            }
            if age < 0 || (age == 0 && current.digit != digit) {
                // A retransmission of an earlier event, or a contradiction: nothing new.
                return Ok(());
            }
            // RFC 4733 2.5.1.3: the next segment of a long event starts 0xFFFF ticks after the last.
            let continues = !current.ended && current.digit == digit && age == i32::from(u16::MAX);
            if continues {
                current.earlier_segments += u64::from(u16::MAX);
                current.timestamp = timestamp;
                current.duration = event.duration;
                current.last_packet = now;
                if event.end {
                    current.ended = true;
                    let ended = self.ended(true);
                    self.emit(ended);
                }
                return Ok(());
            }
            if !current.ended {
                let ended = self.ended(false);
                self.emit(ended);
            }
        }
        self.current = Some(Receiving {
            digit,
            first_timestamp: timestamp,
            timestamp,
            earlier_segments: 0,
            duration: event.duration,
            ended: event.end,
            last_packet: now,
        });
        self.emit(Some(DtmfReceived::Began { digit, timestamp }));
        if event.end {
            let ended = self.ended(true);
            self.emit(ended);
        }
        Ok(())
    }

    /// Ends a digit whose packets stopped without an end packet.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(current) = self.current.as_mut()
            && !current.ended
            && now >= current.last_packet + RECEIVER_END_TIMEOUT
        {
            current.ended = true;
            let ended = self.ended(false);
            self.emit(ended);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should run, while a digit is sounding.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.current
            .filter(|current| !current.ended)
            .map(|current| current.last_packet + RECEIVER_END_TIMEOUT)
    }

    /// The next report, oldest first.
    pub fn poll_output(&mut self) -> Option<DtmfReceived> {
        if self.output_len == 0 {
            return None;
        }
        let output = self.outputs[self.output_start].take();
        self.output_start = (self.output_start + 1) % RECEIVER_QUEUE;
        self.output_len -= 1;
        output
    }

    /// The `Ended` report of the current digit.
    fn ended(&self, end_seen: bool) -> Option<DtmfReceived> {
        self.current.map(|current| {
            let duration_ticks = current.earlier_segments + u64::from(current.duration);
            DtmfReceived::Ended {
                digit: current.digit,
                timestamp: current.first_timestamp,
                duration_ticks,
                duration: Duration::from_micros(duration_ticks * 1_000_000 / u64::from(self.clock_rate)),
                end_seen,
            }
        })
    }

    fn emit(&mut self, output: Option<DtmfReceived>) {
        let Some(output) = output else { return };
        if self.output_len == RECEIVER_QUEUE {
            // The caller did not drain; keep the newest reports.
            self.output_start = (self.output_start + 1) % RECEIVER_QUEUE;
            self.output_len -= 1;
        }
        self.outputs[(self.output_start + self.output_len) % RECEIVER_QUEUE] = Some(output);
        self.output_len += 1;
    }
}

/// A digit from a SIP INFO request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoDigit {
    /// The digit.
    pub digit: DtmfDigit,
    /// How long it should sound: the body's duration, or [`DEFAULT_INFO_DURATION`], kept within
    /// [`MIN_DIGIT_DURATION`] and [`MAX_DIGIT_DURATION`].
    pub duration: Duration,
}

/// Parses the body of a SIP INFO request by its Content-Type (`application/dtmf-relay` or
/// `application/dtmf`, parameters and case ignored).
pub fn parse_sip_info(content_type: &str, body: &[u8]) -> Result<InfoDigit, DtmfError> {
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case("application/dtmf-relay") {
        parse_dtmf_relay(body)
    } else if media_type.eq_ignore_ascii_case("application/dtmf") {
        parse_dtmf_body(body)
    } else {
        Err(DtmfError::UnsupportedContentType(content_type.to_owned()))
    }
}

/// Parses an `application/dtmf-relay` body: `Signal=<digit>` and an optional `Duration=<ms>` line.
pub fn parse_dtmf_relay(body: &[u8]) -> Result<InfoDigit, DtmfError> {
    let text = std::str::from_utf8(body).map_err(|_| DtmfError::InvalidBody("not UTF-8"))?;
    let mut digit = None;
    let mut duration = None;
    for line in text.lines() {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match name.trim() {
            name if name.eq_ignore_ascii_case("signal") => digit = Some(parse_signal(value)?),
            name if name.eq_ignore_ascii_case("duration") => {
                let millis: u64 = value
                    .parse()
                    .map_err(|_| DtmfError::InvalidBody("Duration is not a number"))?;
                duration = Some(Duration::from_millis(millis));
            }
            _ => {}
        }
    }
    let digit = digit.ok_or(DtmfError::InvalidBody("no Signal line"))?;
    Ok(info_digit(digit, duration))
}

/// Parses an `application/dtmf` body: the digit alone.
pub fn parse_dtmf_body(body: &[u8]) -> Result<InfoDigit, DtmfError> {
    let text = std::str::from_utf8(body).map_err(|_| DtmfError::InvalidBody("not UTF-8"))?;
    Ok(info_digit(parse_signal(text.trim())?, None))
}

/// A digit as a keypad character, or as its event code 0-15 (some phones send `Signal=11` for #).
fn parse_signal(value: &str) -> Result<DtmfDigit, DtmfError> {
    let mut characters = value.chars();
    if let (Some(character), None) = (characters.next(), characters.next())
        && let Some(digit) = DtmfDigit::from_char(character)
    {
        return Ok(digit);
    }
    value
        .parse::<u8>()
        .ok()
        .and_then(DtmfDigit::from_event)
        .ok_or_else(|| DtmfError::InvalidDigit(value.chars().take(16).collect()))
}

fn info_digit(digit: DtmfDigit, duration: Option<Duration>) -> InfoDigit {
    InfoDigit {
        digit,
        duration: duration
            .unwrap_or(DEFAULT_INFO_DURATION)
            .clamp(MIN_DIGIT_DURATION, MAX_DIGIT_DURATION),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digit(character: char) -> DtmfDigit {
        DtmfDigit::from_char(character).expect("a keypad character")
    }

    /// Polls `sender` once per packet slot from `timestamp`, advancing 20 ms worth of ticks per slot,
    /// until it is idle; returns what it sent per slot.
    fn drain(sender: &mut DtmfSender, mut timestamp: u32, ticks_per_slot: u32) -> Vec<Option<DtmfPacket>> {
        let mut slots = Vec::new();
        while sender.is_busy() {
            slots.push(sender.poll_packet(timestamp));
            timestamp = timestamp.wrapping_add(ticks_per_slot);
        }
        slots
    }

    #[test]
    fn digits_and_event_codes_map_both_ways() {
        let all: String = (0..16)
            .filter_map(DtmfDigit::from_event)
            .map(DtmfDigit::as_char)
            .collect();
        assert_eq!(all, "0123456789*#ABCD");
        assert_eq!(digit('#').event(), 11);
        assert_eq!(digit('d').event(), 15);
        assert_eq!(DtmfDigit::from_event(16), None);
        assert_eq!(DtmfDigit::from_char('E'), None);
        assert_eq!(digit('*').to_string(), "*");
    }

    #[test]
    fn payloads_parse_and_build() {
        // Digit 1, end, volume 10, 800 ticks (100 ms at 8 kHz).
        let bytes = [0x01, 0x8A, 0x03, 0x20];
        let event = TelephoneEvent::parse(&bytes).expect("4 bytes");
        assert_eq!(
            event,
            TelephoneEvent {
                event: 1,
                end: true,
                volume: 10,
                duration: 800
            }
        );
        assert_eq!(event.to_bytes(), bytes);
        assert_eq!(event.digit(), Some(digit('1')));
        // The reserved bit is ignored; extra bytes are ignored.
        assert_eq!(
            TelephoneEvent::parse(&[11, 0x4A, 0, 160, 9, 9]).map(|e| (e.end, e.volume)),
            Ok((false, 10))
        );
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(DtmfError::PayloadTooShort(3))
        );
        assert_eq!(TelephoneEvent::parse(&[]), Err(DtmfError::PayloadTooShort(0)));
    }

    #[test]
    fn durations_scale_between_48000_and_8000() {
        let browser = TelephoneEvent {
            event: 5,
            end: false,
            volume: 10,
            duration: 4800,
        };
        assert_eq!(browser.rescaled(48_000, 8000).duration, 800);
        assert_eq!(browser.rescaled(48_000, 8000).rescaled(8000, 48_000), browser);
        // 8 kHz durations above 10922 ticks do not fit 16 bits at 48 kHz.
        assert_eq!(rescale_ticks(20_000, 8000, 48_000), u16::MAX);
        assert_eq!(rescale_ticks(7, 48_000, 8000), 1);
        assert_eq!(rescale_ticks(100, 0, 8000), 0);
    }

    #[test]
    fn the_sender_follows_rfc_4733() {
        let mut sender = DtmfSender::new(8000, Duration::from_millis(20)).expect("valid timing");
        sender
            .queue(digit('5'), Duration::from_millis(100))
            .expect("room");
        assert!(sender.is_sending());
        let slots = drain(&mut sender, 1000, 160);
        let packets: Vec<DtmfPacket> = slots.iter().flatten().copied().collect();
        let durations: Vec<u16> = packets.iter().map(|packet| packet.event.duration).collect();
        assert_eq!(durations, [160, 320, 480, 640, 800, 800, 800]);
        let ends: Vec<bool> = packets.iter().map(|packet| packet.event.end).collect();
        assert_eq!(ends, [false, false, false, false, true, true, true]);
        let markers: Vec<bool> = packets.iter().map(|packet| packet.marker).collect();
        assert_eq!(markers, [true, false, false, false, false, false, false]);
        assert!(
            packets
                .iter()
                .all(|packet| packet.timestamp == 1000 && packet.event.event == 5)
        );
        assert!(packets.iter().all(|packet| packet.event.volume == DEFAULT_VOLUME));
        // Then 40 ms of quiet before the sender is idle.
        assert_eq!(slots.len(), 9);
        assert_eq!(&slots[7..], &[None, None]);
    }

    #[test]
    fn queued_digits_follow_each_other_with_new_timestamps_at_48_khz() {
        let mut sender = DtmfSender::new(48_000, Duration::from_millis(20)).expect("valid timing");
        for character in "1234#".chars() {
            sender
                .queue(digit(character), Duration::from_millis(60))
                .expect("room");
        }
        let slots = drain(&mut sender, u32::MAX - 5000, 960);
        let starts: Vec<(char, u32)> = slots
            .iter()
            .flatten()
            .filter(|packet| packet.marker)
            .map(|packet| {
                (
                    DtmfDigit::from_event(packet.event.event).map_or('?', DtmfDigit::as_char),
                    packet.timestamp,
                )
            })
            .collect();
        assert_eq!(starts.iter().map(|(c, _)| *c).collect::<String>(), "1234#");
        // Each digit takes 3 slots of tone, 2 more end packets and 2 quiet slots: 7 slots of 960 ticks.
        for (index, (_, timestamp)) in starts.iter().enumerate() {
            assert_eq!(*timestamp, (u32::MAX - 5000).wrapping_add(index as u32 * 7 * 960));
        }
        let longest = slots.iter().flatten().map(|packet| packet.event.duration).max();
        assert_eq!(longest, Some(2880));
    }

    #[test]
    fn durations_are_kept_within_limits_and_whole_packets() {
        let mut sender = DtmfSender::new(8000, Duration::from_millis(20)).expect("valid timing");
        sender.queue(digit('0'), Duration::from_millis(1)).expect("room");
        sender.queue(digit('0'), Duration::from_millis(50)).expect("room");
        let ends: Vec<u16> = drain(&mut sender, 0, 160)
            .iter()
            .flatten()
            .filter(|p| p.event.end)
            .map(|p| p.event.duration)
            .collect();
        assert_eq!(ends, [320, 320, 320, 480, 480, 480]);
        for _ in 0..SENDER_QUEUE {
            sender
                .queue(digit('1'), Duration::from_millis(100))
                .expect("room");
        }
        assert_eq!(
            sender.queue(digit('1'), Duration::from_millis(100)),
            Err(DtmfError::QueueFull)
        );
        assert!(DtmfSender::new(0, Duration::from_millis(20)).is_err());
        assert!(DtmfSender::new(8000, Duration::from_micros(20_001)).is_err());
    }

    #[test]
    fn a_long_event_is_split_into_segments() {
        let mut sender = DtmfSender::new(48_000, Duration::from_millis(20)).expect("valid timing");
        sender.queue(digit('#'), Duration::from_secs(2)).expect("room");
        let packets: Vec<DtmfPacket> = drain(&mut sender, 0, 960).into_iter().flatten().collect();
        let timestamps: Vec<u32> = packets.iter().map(|packet| packet.timestamp).collect();
        assert_eq!(timestamps.first(), Some(&0));
        assert_eq!(timestamps.last(), Some(&65_535));
        assert!(
            packets
                .iter()
                .all(|packet| packet.timestamp == 0 || packet.timestamp == 65_535)
        );
        let last = packets.last().expect("packets");
        assert_eq!(u64::from(last.event.duration) + 65_535, 96_000);
        // The receiver puts the segments back together into one digit.
        let mut receiver = DtmfReceiver::new(48_000).expect("valid rate");
        let now = Instant::now();
        for packet in &packets {
            receiver
                .handle_packet(now, packet.timestamp, &packet.event.to_bytes())
                .expect("valid");
        }
        let outputs: Vec<DtmfReceived> = std::iter::from_fn(|| receiver.poll_output()).collect();
        assert_eq!(outputs.len(), 2, "{outputs:?}");
        assert!(matches!(
            outputs[1],
            DtmfReceived::Ended {
                duration_ticks: 96_000,
                end_seen: true,
                ..
            }
        ));
    }

    /// Feeds packets to a receiver and collects the digits reported as ended.
    fn received(receiver: &mut DtmfReceiver, packets: &[DtmfPacket], now: Instant) -> Vec<(char, u64, bool)> {
        let mut ended = Vec::new();
        for packet in packets {
            receiver
                .handle_packet(now, packet.timestamp, &packet.event.to_bytes())
                .expect("valid payload");
            while let Some(output) = receiver.poll_output() {
                if let DtmfReceived::Ended {
                    digit,
                    duration_ticks,
                    end_seen,
                    ..
                } = output
                {
                    ended.push((digit.as_char(), duration_ticks, end_seen));
                }
            }
        }
        ended
    }

    #[test]
    fn the_receiver_reports_each_digit_once_despite_retransmissions_and_reordering() {
        let mut sender = DtmfSender::new(8000, Duration::from_millis(20)).expect("valid timing");
        for character in "1234#".chars() {
            sender
                .queue(digit(character), Duration::from_millis(100))
                .expect("room");
        }
        let mut packets: Vec<DtmfPacket> = drain(&mut sender, 0, 160).into_iter().flatten().collect();
        // Every packet twice, and two neighbours swapped.
        packets = packets.iter().flat_map(|packet| [*packet, *packet]).collect();
        packets.swap(3, 6);
        // A retransmitted end of the first digit arrives after the second digit began.
        let stray_end = packets[12];
        packets.insert(20, stray_end);
        let mut receiver = DtmfReceiver::new(8000).expect("valid rate");
        let digits = received(&mut receiver, &packets, Instant::now());
        assert_eq!(
            digits,
            [
                ('1', 800, true),
                ('2', 800, true),
                ('3', 800, true),
                ('4', 800, true),
                ('#', 800, true)
            ]
        );
    }

    #[test]
    fn the_receiver_copes_with_lost_start_and_lost_end_packets() {
        let start = Instant::now();
        let mut sender = DtmfSender::new(8000, Duration::from_millis(20)).expect("valid timing");
        sender
            .queue(digit('7'), Duration::from_millis(100))
            .expect("room");
        sender
            .queue(digit('8'), Duration::from_millis(100))
            .expect("room");
        sender
            .queue(digit('9'), Duration::from_millis(100))
            .expect("room");
        let packets: Vec<DtmfPacket> = drain(&mut sender, 0, 160).into_iter().flatten().collect();
        let (seven, rest) = packets.split_at(7);
        let (eight, nine) = rest.split_at(7);
        let mut receiver = DtmfReceiver::new(8000).expect("valid rate");
        // 7: only the end packets arrive. 8: the end packets are lost; 9 begins and ends 8.
        let mut digits = received(&mut receiver, &seven[4..], start);
        digits.extend(received(&mut receiver, &eight[..3], start));
        digits.extend(received(&mut receiver, &nine[..3], start));
        assert_eq!(digits, [('7', 800, true), ('8', 480, false)]);
        // 9's end packets are lost too: the timeout ends it.
        assert_eq!(receiver.next_timeout(), Some(start + RECEIVER_END_TIMEOUT));
        receiver.handle_timeout(start + Duration::from_millis(100));
        assert_eq!(receiver.poll_output(), None);
        receiver.handle_timeout(start + RECEIVER_END_TIMEOUT);
        assert!(matches!(
            receiver.poll_output(),
            Some(DtmfReceived::Ended {
                end_seen: false,
                duration_ticks: 480,
                ..
            })
        ));
        assert_eq!(receiver.next_timeout(), None);
        // A late end packet of 9 after the timeout does not report it again.
        assert!(received(&mut receiver, &nine[4..], start).is_empty());
    }

    #[test]
    fn non_digit_events_and_short_payloads() {
        let mut receiver = DtmfReceiver::new(8000).expect("valid rate");
        let flash = TelephoneEvent {
            event: 16,
            end: true,
            volume: 10,
            duration: 800,
        };
        receiver
            .handle_packet(Instant::now(), 0, &flash.to_bytes())
            .expect("valid payload");
        assert_eq!(receiver.poll_output(), None);
        assert_eq!(
            receiver.handle_packet(Instant::now(), 0, &[1]),
            Err(DtmfError::PayloadTooShort(1))
        );
        assert!(DtmfReceiver::new(0).is_err());
    }

    #[test]
    fn sip_info_bodies_parse() {
        let relay = |body: &str| parse_sip_info("application/dtmf-relay", body.as_bytes());
        let expected = |character, millis| {
            Ok(InfoDigit {
                digit: digit(character),
                duration: Duration::from_millis(millis),
            })
        };
        assert_eq!(relay("Signal=1\r\nDuration=160\r\n"), expected('1', 160));
        assert_eq!(relay("signal= #\nduration= 250"), expected('#', 250));
        assert_eq!(relay("Signal=*"), expected('*', 100));
        assert_eq!(relay("Signal=11\r\nDuration=100"), expected('#', 100));
        assert_eq!(relay("Signal=d\r\nDuration=20"), expected('D', 40));
        assert_eq!(relay("Signal=5\r\nDuration=600000"), expected('5', 8000));
        assert_eq!(
            relay("Duration=160"),
            Err(DtmfError::InvalidBody("no Signal line"))
        );
        assert_eq!(relay("Signal=X"), Err(DtmfError::InvalidDigit("X".into())));
        assert_eq!(
            relay("Signal=1\r\nDuration=long"),
            Err(DtmfError::InvalidBody("Duration is not a number"))
        );
        assert!(parse_sip_info("application/dtmf-relay", &[0xFF, 0xFE]).is_err());
        assert_eq!(
            parse_sip_info("Application/DTMF; charset=utf-8", b" 9\r\n"),
            expected('9', 100)
        );
        assert_eq!(parse_sip_info("application/dtmf", b"12"), expected('A', 100));
        assert!(matches!(
            parse_sip_info("application/dtmf", b"17"),
            Err(DtmfError::InvalidDigit(_))
        ));
        assert!(matches!(
            parse_sip_info("text/plain", b"1"),
            Err(DtmfError::UnsupportedContentType(_))
        ));
    }
}
