//! An RTP sink for tests: a UDP socket on 127.0.0.1 that keeps every packet it receives, so a test can
//! count what the gateway sent toward the PBX (SIPp cannot report RTP). Point a PBX scenario's media
//! at it with `record_dtmf.xml` and `-key rtp_port <port>`.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callgate::media::dtmf::TelephoneEvent;
use callgate::media::rtp_packet::RtpPacket;

/// One packet as it arrived.
#[derive(Debug, Clone)]
pub(crate) struct RecordedPacket {
    /// When it arrived.
    pub(crate) at: Instant,
    /// Where it came from.
    pub(crate) source: SocketAddr,
    /// Its payload type.
    pub(crate) payload_type: u8,
    /// Its sequence number.
    pub(crate) sequence_number: u16,
    /// Its timestamp.
    pub(crate) timestamp: u32,
    /// Its marker bit.
    pub(crate) marker: bool,
    /// Its payload.
    pub(crate) payload: Vec<u8>,
}

/// One RFC 4733 event, however many packets carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordedEvent {
    /// The digit.
    pub(crate) digit: char,
    /// The RTP timestamp of its start (what identifies the event).
    pub(crate) timestamp: u32,
    /// Its final duration in timestamp units (from the end report).
    pub(crate) duration: u16,
    /// How many end reports carried it (RFC 4733 §2.5.1.4 says three).
    pub(crate) end_reports: usize,
}

/// The sink; stops when dropped.
pub(crate) struct RtpRecorder {
    address: SocketAddr,
    packets: Arc<Mutex<Vec<RecordedPacket>>>,
    stop: Arc<AtomicBool>,
}

impl RtpRecorder {
    /// Binds a free port on 127.0.0.1 and starts recording.
    pub(crate) fn start() -> RtpRecorder {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("test setup: bind the RTP sink");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("test setup: a read timeout");
        let address = socket.local_addr().expect("test setup: the sink's address");
        let packets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (kept, stopping) = (packets.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buffer = [0_u8; 2048];
            while !stopping.load(Ordering::Relaxed) {
                let Ok((length, source)) = socket.recv_from(&mut buffer) else {
                    continue;
                };
                let Ok(packet) = RtpPacket::parse(&buffer[..length]) else {
                    continue;
                };
                let recorded = RecordedPacket {
                    at: Instant::now(),
                    source,
                    payload_type: packet.payload_type,
                    sequence_number: packet.sequence_number,
                    timestamp: packet.timestamp,
                    marker: packet.marker,
                    payload: packet.payload.to_vec(),
                };
                if let Ok(mut packets) = kept.lock() {
                    packets.push(recorded);
                }
            }
        });
        RtpRecorder {
            address,
            packets,
            stop,
        }
    }

    /// Where to send.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Every packet so far.
    pub(crate) fn packets(&self) -> Vec<RecordedPacket> {
        self.packets.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Packets of payload type `payload_type` so far.
    pub(crate) fn count(&self, payload_type: u8) -> usize {
        self.packets()
            .iter()
            .filter(|p| p.payload_type == payload_type)
            .count()
    }

    /// The telephone events (payload type `payload_type`), one per event in order of their start: packets
    /// with the same timestamp are one event, whatever retransmitted end reports say.
    pub(crate) fn dtmf_events(&self, payload_type: u8) -> Vec<RecordedEvent> {
        let mut events: Vec<RecordedEvent> = Vec::new();
        for packet in self.packets().iter().filter(|p| p.payload_type == payload_type) {
            let Ok(event) = TelephoneEvent::parse(&packet.payload) else {
                continue;
            };
            let digit = event.digit().map_or('?', |d| d.as_char());
            let index = match events.iter().position(|e| e.timestamp == packet.timestamp) {
                Some(index) => index,
                None => {
                    events.push(RecordedEvent {
                        digit,
                        timestamp: packet.timestamp,
                        duration: 0,
                        end_reports: 0,
                    });
                    events.len() - 1
                }
            };
            let recorded = &mut events[index];
            recorded.duration = recorded.duration.max(event.duration);
            if event.end {
                recorded.end_reports += 1;
            }
        }
        events
    }

    /// Waits until `done` holds for the packets so far, at most `limit`; returns whether it did.
    pub(crate) fn wait_until(&self, limit: Duration, mut done: impl FnMut(&RtpRecorder) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if done(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        done(self)
    }
}

impl Drop for RtpRecorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
