//! The result of a load run: what is printed as a table for people and as one JSON line for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::procfs::UdpDrops;
use super::scrape::{LegTable, ProcessingDelay};

/// A distribution of values (milliseconds unless said otherwise), by nearest rank.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Distribution {
    /// How many values.
    pub count: usize,
    /// Their mean.
    pub mean: f64,
    /// 50th percentile.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// The largest.
    pub max: f64,
}

impl Distribution {
    /// The distribution of `values` (all zero when empty; non-finite values are left out).
    pub fn of(values: &[f64]) -> Self {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return Distribution::default();
        }
        sorted.sort_by(f64::total_cmp);
        let rank = |percent: f64| {
            let index = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
            sorted[index.clamp(1, sorted.len()) - 1]
        };
        Distribution {
            count: sorted.len(),
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
            max: sorted[sorted.len() - 1],
        }
    }
}

/// What was asked for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunDescription {
    /// The gateway's WebSocket URL.
    pub url: String,
    /// The dialled URI.
    pub target: String,
    /// Concurrent calls asked for.
    pub calls: u32,
    /// Calls started per second.
    pub rate_cps: f64,
    /// Seconds all calls stay up together after the last one was set up.
    pub hold_secs: f64,
    /// Seconds at the start of the hold left out of the steady-phase figures.
    pub settle_secs: f64,
    /// `chrome` (Opus first) or `pcmu`.
    pub offer: String,
    /// Complexity the sent Opus frames were encoded with.
    pub opus_complexity: u8,
    /// Calls whose returning audio was decoded (round trips are measured on them).
    pub analysed_calls: u32,
}

/// How the calls went.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct CallCounts {
    /// Calls started.
    pub attempted: u32,
    /// Calls answered 2xx.
    pub answered: u32,
    /// Calls whose media (ICE + DTLS) came up: these were held.
    pub connected: u32,
    /// Calls that never got answered with media up in time.
    pub failed: u32,
    /// Connected calls that ended before the generator hung up.
    pub dropped: u32,
    /// Hang ups (BYE) that got no 2xx.
    pub hangup_failed: u32,
    /// Failures and drops by reason.
    pub reasons: BTreeMap<String, u32>,
}

impl CallCounts {
    /// Failed setups plus drops, in percent of the attempts.
    pub fn failed_percent(&self) -> f64 {
        if self.attempted == 0 {
            return 0.0;
        }
        100.0 * f64::from(self.failed + self.dropped) / f64::from(self.attempted)
    }
}

/// Audio figures of the steady phase, from the browsers' side.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct MediaFigures {
    /// Length of the steady phase, in seconds.
    pub window_secs: f64,
    /// Audio frames sent by all calls in the window.
    pub frames_sent: u64,
    /// Audio packets received by all calls in the window.
    pub packets_received: u64,
    /// Packets missing from the received sequence numbers.
    pub packets_lost: i64,
    /// Lost over expected, in percent.
    pub loss_percent: f64,
    /// Frames sent that did not come back, lost or never sent by the gateway (which keeps its own
    /// sequence numbers, so what it did not send is no gap), in percent; a few packets per call may be
    /// in flight at either edge of the window.
    pub short_percent: f64,
    /// RFC 3550 interarrival jitter per call at the end of the window.
    pub jitter_ms: Distribution,
    /// Round trips through the echo, from the analysed calls.
    pub round_trip_ms: Distribution,
}

/// CPU and memory of a group of processes during the steady phase.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ProcessCost {
    /// The process ids.
    pub pids: Vec<u32>,
    /// CPU seconds used in the window.
    pub cpu_seconds: f64,
    /// CPU used, in percent of one core.
    pub cpu_percent: f64,
    /// `cpu_percent` divided by the connected calls.
    pub cpu_percent_per_call: f64,
    /// RSS before the first call, in KiB.
    pub rss_baseline_kb: u64,
    /// RSS at the end of the window, in KiB.
    pub rss_steady_kb: u64,
    /// Largest RSS seen during the run, in KiB.
    pub rss_peak_kb: u64,
    /// (`rss_steady_kb` − `rss_baseline_kb`) divided by the connected calls.
    pub kb_per_call: f64,
}

/// How busy the machine was, to judge the figures by.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct MachineLoad {
    /// The load generator's CPU in the window, in percent of one core.
    pub self_cpu_percent: f64,
    /// Its CPU over the whole run, in seconds.
    pub self_cpu_seconds_total: f64,
    /// The whole machine's busy time in the window, in percent of all cores.
    pub machine_busy_percent: f64,
    /// The share of all cores the measured processes (gateway, others, callgate-load) used in the
    /// window, in percent: near 100 the run saturated the machine by itself.
    pub measured_busy_percent: f64,
    /// Cores available.
    pub cores: usize,
    /// 1-minute load average at the end of the window.
    pub load_average: Option<f64>,
    /// UDP datagrams dropped in this network namespace in the window because a socket buffer was full.
    pub udp_drops: UdpDrops,
}

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// What was asked for.
    pub run: RunDescription,
    /// How the calls went.
    pub calls: CallCounts,
    /// INVITE sent → 2xx received, per answered call.
    pub setup_ms: Distribution,
    /// INVITE sent → DTLS connected, per connected call.
    pub connect_ms: Distribution,
    /// Audio in the steady phase.
    pub media: MediaFigures,
    /// The gateway processes (`--pid`), when given.
    pub gateway: Option<ProcessCost>,
    /// Other processes sharing the machine (`--other-pid`, e.g. the PBX), when given.
    pub others: Option<ProcessCost>,
    /// Growth of the gateway's own per-leg packet counters in the window (`--metrics`).
    pub gateway_legs: Option<LegTable>,
    /// The gateway's processing delay in the window per path, from its histogram (`--metrics`).
    pub gateway_processing: Option<BTreeMap<String, ProcessingDelay>>,
    /// How loaded the machine was.
    pub load: MachineLoad,
}

/// Column headings of [`LoadReport::row`].
pub const ROW_HEADER: &str = "calls offer    fail  setup p50  setup p99   dtls p99   loss %  gw loss %  short %  udp drops  jitter p99  rtt p50  gw %core/call  gw KB/call  gw %core  other %core  gen %core  ours %  busy %  gw proc p50/p99";

impl LoadReport {
    /// The largest loss seen: by the browsers, or by the gateway on any leg (`--metrics`), in percent.
    pub fn worst_loss_percent(&self) -> f64 {
        self.gateway_legs
            .iter()
            .flat_map(|legs| legs.values())
            .map(|counters| counters.loss_percent())
            .fold(self.media.loss_percent, f64::max)
    }

    /// One line under [`ROW_HEADER`], for a table of several runs (times in ms, `-` when not measured).
    pub fn row(&self) -> String {
        let gateway_loss = self.gateway_legs.as_ref().map_or("-".to_owned(), |legs| {
            let worst = legs.values().map(|c| c.loss_percent()).fold(0.0, f64::max);
            format!("{worst:.3}")
        });
        // The path that carried the most traffic: the row's own (transcoding or passthrough).
        let processing = self
            .gateway_processing
            .as_ref()
            .and_then(|paths| paths.values().max_by(|a, b| a.count.total_cmp(&b.count)))
            .map_or("-".to_owned(), |d| format!("{:.3}/{:.3}", d.p50_ms, d.p99_ms));
        let cost = |cost: &Option<ProcessCost>, pick: fn(&ProcessCost) -> f64, decimals: usize| {
            cost.as_ref()
                .map_or("-".to_owned(), |cost| format!("{:.*}", decimals, pick(cost)))
        };
        format!(
            "{:>5} {:<6} {:>6} {:>10.2} {:>10.2} {:>10.2} {:>8.3} {:>10} {:>8.2} {:>10} {:>11.2} {:>8.1} {:>14} {:>11} {:>9} {:>11} {:>10.1} {:>6.0} {:>7.0}  {:>15}",
            self.run.calls,
            self.run.offer,
            self.calls.failed + self.calls.dropped,
            self.setup_ms.p50,
            self.setup_ms.p99,
            self.connect_ms.p99,
            self.media.loss_percent,
            gateway_loss,
            self.media.short_percent,
            self.load.udp_drops.receive_buffer_errors + self.load.udp_drops.send_buffer_errors,
            self.media.jitter_ms.p99,
            self.media.round_trip_ms.p50,
            cost(&self.gateway, |c| c.cpu_percent_per_call, 3),
            cost(&self.gateway, |c| c.kb_per_call, 0),
            cost(&self.gateway, |c| c.cpu_percent, 1),
            cost(&self.others, |c| c.cpu_percent, 1),
            self.load.self_cpu_percent,
            self.load.measured_busy_percent,
            self.load.machine_busy_percent,
            processing,
        )
    }

    /// The aligned table printed for people.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let run = &self.run;
        let calls = &self.calls;
        let media = &self.media;
        let _ = writeln!(
            out,
            "callgate-load: {} calls ({} offer) to {} via {}, {} cps, steady window {:.1} s",
            run.calls, run.offer, run.target, run.url, run.rate_cps, media.window_secs
        );
        let _ = writeln!(
            out,
            "calls: {} attempted, {} answered, {} connected, {} failed, {} dropped, {} hang-ups not 2xx",
            calls.attempted,
            calls.answered,
            calls.connected,
            calls.failed,
            calls.dropped,
            calls.hangup_failed
        );
        for (reason, count) in &calls.reasons {
            let _ = writeln!(out, "  {count:>5} × {reason}");
        }
        let _ = writeln!(
            out,
            "\n{:<24} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "n", "mean", "p50", "p95", "p99", "max"
        );
        for (name, d) in [
            ("setup INVITE→200 ms", &self.setup_ms),
            ("setup INVITE→DTLS ms", &self.connect_ms),
            ("round trip ms", &media.round_trip_ms),
            ("jitter ms", &media.jitter_ms),
        ] {
            let _ = writeln!(
                out,
                "{name:<24} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                d.count, d.mean, d.p50, d.p95, d.p99, d.max
            );
        }
        let _ = writeln!(
            out,
            "\nmedia: {} frames sent, {} packets back ({:.2} % short), {} lost ({:.3} % loss)",
            media.frames_sent,
            media.packets_received,
            media.short_percent,
            media.packets_lost,
            media.loss_percent
        );
        let drops = &self.load.udp_drops;
        let _ = writeln!(
            out,
            "udp drops (full socket buffers, this network namespace): {} on receive, {} on send",
            drops.receive_buffer_errors, drops.send_buffer_errors
        );
        if let Some(legs) = &self.gateway_legs {
            for (leg, counters) in legs {
                let _ = writeln!(
                    out,
                    "gateway leg {leg}: {} received, {} lost ({:.3} %)",
                    counters.received,
                    counters.lost,
                    counters.loss_percent()
                );
            }
        }
        for (path, delay) in self.gateway_processing.iter().flatten() {
            let _ = writeln!(
                out,
                "gateway processing delay, {path}: p50 {:.3} ms, p99 {:.3} ms over {:.0} packets",
                delay.p50_ms, delay.p99_ms, delay.count
            );
        }
        let _ = writeln!(
            out,
            "\n{:<10} {:>12} {:>10} {:>10} {:>12} {:>12} {:>10}",
            "process", "%core/call", "%core", "cpu s", "rss base KB", "rss now KB", "KB/call"
        );
        for (name, cost) in [("gateway", &self.gateway), ("others", &self.others)] {
            if let Some(cost) = cost {
                let _ = writeln!(
                    out,
                    "{name:<10} {:>12.3} {:>10.1} {:>10.2} {:>12} {:>12} {:>10.0}",
                    cost.cpu_percent_per_call,
                    cost.cpu_percent,
                    cost.cpu_seconds,
                    cost.rss_baseline_kb,
                    cost.rss_steady_kb,
                    cost.kb_per_call
                );
            }
        }
        let load = &self.load;
        let _ = writeln!(
            out,
            "\nmachine: {:.0} % busy of {} cores ({:.0} % by the measured processes); callgate-load itself {:.1} % of a core; load average {}",
            load.machine_busy_percent,
            load.cores,
            load.measured_busy_percent,
            load.self_cpu_percent,
            load.load_average.map_or("?".to_owned(), |l| format!("{l:.2}"))
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let d = Distribution::of(&values);
        assert_eq!(
            (d.count, d.p50, d.p95, d.p99, d.max),
            (100, 50.0, 95.0, 99.0, 100.0)
        );
        assert!((d.mean - 50.5).abs() < 1e-9);
        let one = Distribution::of(&[7.0, f64::NAN]);
        assert_eq!((one.count, one.p50, one.p99, one.max), (1, 7.0, 7.0, 7.0));
        assert_eq!(Distribution::of(&[]), Distribution::default());
    }

    #[test]
    fn failed_percent_counts_drops() {
        let counts = CallCounts {
            attempted: 200,
            failed: 1,
            dropped: 1,
            ..CallCounts::default()
        };
        assert!((counts.failed_percent() - 1.0).abs() < 1e-9);
        assert_eq!(CallCounts::default().failed_percent(), 0.0);
    }
}
