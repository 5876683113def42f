//! The jitter buffer's cost per packet: one push and one poll per 20 ms tick of a G.711 stream, for
//! packets in order, reordered, lost and late. Time is simulated, so a benchmark iteration is one tick.
//!
//! `cargo bench --bench jitter`; docs/benchmarks.md holds the measured table.

use std::hint::black_box;
use std::time::{Duration, Instant};

use callgate::media::jitter::{JitterBuffer, JitterConfig, JitterOutput, PacketHeader};
use criterion::{criterion_group, criterion_main};
use settings::CpuCriterion;

#[path = "support/settings.rs"]
mod settings;

/// 20 ms of G.711.
const PAYLOAD: [u8; 160] = [0xd5; 160];
const TICK: Duration = Duration::from_millis(20);

/// An arrival pattern that repeats: for each tick of one period, which packets of the period (by index
/// within it) arrive during that tick.
struct Scenario {
    name: &'static str,
    arrivals: &'static [&'static [u32]],
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "in_order",
        arrivals: &[&[0]],
    },
    Scenario {
        name: "reordered_pairs",
        arrivals: &[&[1], &[0]],
    },
    Scenario {
        name: "loss_10_percent",
        arrivals: &[&[0], &[1], &[2], &[3], &[4], &[5], &[6], &[7], &[8], &[]],
    },
    Scenario {
        name: "one_in_four_late_by_20ms",
        arrivals: &[&[0], &[], &[1, 2], &[3]],
    },
];

/// One stream through one buffer.
struct Stream {
    buffer: JitterBuffer,
    now: Instant,
    tick: u64,
}

impl Stream {
    fn new() -> Self {
        // The default configuration for 8 kHz is valid by construction.
        let buffer = JitterBuffer::new(JitterConfig::new(8000)).expect("default jitter config");
        Stream {
            buffer,
            now: Instant::now(),
            tick: 0,
        }
    }

    /// One tick: the packets the scenario delivers now, then the frame to play. Returns whether a
    /// packet played, so the work cannot be optimised away.
    fn tick(&mut self, arrivals: &[&[u32]]) -> bool {
        let period = arrivals.len() as u64;
        let period_start = self.tick / period * period;
        for &offset in arrivals[(self.tick % period) as usize] {
            let index = period_start + u64::from(offset);
            let header = PacketHeader {
                ssrc: 0x1234_5678,
                sequence: index as u16,
                timestamp: (index * 160) as u32,
                marker: index == 0,
            };
            black_box(self.buffer.push(self.now, header, &PAYLOAD));
        }
        let played = matches!(self.buffer.poll(self.now), JitterOutput::Frame(_));
        self.tick += 1;
        self.now += TICK;
        played
    }
}

fn jitter(c: &mut CpuCriterion) {
    let mut group = c.benchmark_group("jitter_push_poll_per_packet");
    for scenario in &SCENARIOS {
        // Measure a buffer that plays: past its initial delay, most ticks hand out a packet.
        let mut check = Stream::new();
        let played = (0..100).filter(|_| check.tick(scenario.arrivals)).count();
        assert!(
            played >= 80,
            "{}: only {played} of 100 ticks played",
            scenario.name
        );
        let mut stream = Stream::new();
        group.bench_function(scenario.name, |b| b.iter(|| stream.tick(scenario.arrivals)));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = settings::short_runs();
    targets = jitter
}
criterion_main!(benches);
