//! Counters, gauges and histograms for `/metrics`, in the Prometheus text exposition format.
//!
//! Everything is a relaxed atomic: the hot media path only ever adds to its own worker's counters, and a
//! scrape sums them. Nothing here takes a lock a call could wait on, except the trunk status map, which only
//! the signaling task writes and only a scrape reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::admission::Refusal;
use crate::b2bua::EndCause;

/// Every end cause, in the order of [`Metrics::calls_by_result`].
const END_CAUSES: [EndCause; 13] = [
    EndCause::Refused,
    EndCause::BrowserHangup,
    EndCause::PbxHangup,
    EndCause::Cancelled,
    EndCause::PbxRejected,
    EndCause::NoTrunkAvailable,
    EndCause::WebSocketClosed,
    EndCause::ConsentLost,
    EndCause::MediaTimeout,
    EndCause::MediaFailed,
    EndCause::SessionExpired,
    EndCause::Shutdown,
    EndCause::LegFailed,
];

/// Every refusal reason label, in the order of [`Metrics::refusals`].
const REFUSAL_REASONS: [&str; 9] = [
    "unknown_widget",
    "widget_disabled",
    "origin_not_allowed",
    "bad_token",
    "widget_busy",
    "widget_rate",
    "source_busy",
    "source_rate",
    "gateway_full",
];

/// Upper bounds (seconds) of the call setup histogram.
const SETUP_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds (seconds) of the per-frame transcoding histogram.
const FRAME_BUCKETS: [f64; 10] = [
    5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 10e-3,
];

/// Upper bounds (seconds) of the media processing and tick wait histograms: fine around the 1 ms target.
const PROCESSING_BUCKETS: [f64; 16] = [
    10e-6, 25e-6, 50e-6, 75e-6, 100e-6, 150e-6, 250e-6, 500e-6, 750e-6, 1e-3, 2e-3, 3e-3, 5e-3, 10e-3, 20e-3,
    50e-3,
];

/// A cumulative histogram with fixed buckets.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: Duration) {
        if let Some(index) = bucket_of(self.bounds, value) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(nanos(value), Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// An empty batch with this histogram's buckets, for one thread to fill.
    pub fn batch(&self) -> HistogramBatch {
        HistogramBatch {
            bounds: self.bounds,
            buckets: vec![0; self.bounds.len()],
            sum_nanos: 0,
            count: 0,
        }
    }

    /// Adds a batch's observations and empties it.
    pub fn absorb(&self, batch: &mut HistogramBatch) {
        for (shared, local) in self.buckets.iter().zip(&mut batch.buckets) {
            if *local > 0 {
                shared.fetch_add(std::mem::take(local), Ordering::Relaxed);
            }
        }
        self.sum_nanos
            .fetch_add(std::mem::take(&mut batch.sum_nanos), Ordering::Relaxed);
        self.count
            .fetch_add(std::mem::take(&mut batch.count), Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        self.render_series(out, name, "");
    }

    /// The series of this histogram; `labels` is empty or `key="value",` put before `le`.
    fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let plain = labels.trim_end_matches(',');
        let (open, close) = if plain.is_empty() { ("", "") } else { ("{", "}") };
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}le=\"+Inf\"}} {count}\n\
             {name}_sum{open}{plain}{close} {sum}\n{name}_count{open}{plain}{close} {count}"
        );
    }
}

/// Observations one thread gathers for a [`Histogram`] and hands over with [`Histogram::absorb`] now and
/// then: a media worker records per packet and per tick, and atomics on cache lines that every worker
/// writes would make the workers contend on each one.
pub struct HistogramBatch {
    bounds: &'static [f64],
    buckets: Vec<u64>,
    sum_nanos: u64,
    count: u64,
}

impl HistogramBatch {
    /// Records one observation.
    pub fn observe(&mut self, value: Duration) {
        if let Some(index) = bucket_of(self.bounds, value) {
            self.buckets[index] += 1;
        }
        self.sum_nanos = self.sum_nanos.saturating_add(nanos(value));
        self.count += 1;
    }
}

/// The first bucket whose upper bound holds `value`; `None` above the last (only `+Inf` counts it).
fn bucket_of(bounds: &[f64], value: Duration) -> Option<usize> {
    let seconds = value.as_secs_f64();
    bounds.iter().position(|&bound| seconds <= bound)
}

fn nanos(value: Duration) -> u64 {
    u64::try_from(value.as_nanos()).unwrap_or(u64::MAX)
}

/// Media counters of one leg kind, summed over calls.
#[derive(Default)]
pub struct LegCounters {
    /// RTP packets received.
    pub packets_received: AtomicU64,
    /// RTP packets sent.
    pub packets_sent: AtomicU64,
    /// Packets the jitter buffer found missing.
    pub packets_lost: AtomicU64,
    /// Last interarrival jitter seen on any call of this leg, in microseconds.
    pub jitter_micros: AtomicU64,
}

/// The gateway's metrics.
pub struct Metrics {
    /// Calls between admission and their end.
    pub active_calls: AtomicI64,
    calls_by_result: [AtomicU64; END_CAUSES.len()],
    refusals: [AtomicU64; REFUSAL_REASONS.len()],
    /// INVITE from the browser to 200 OK toward it.
    pub setup_time: Histogram,
    /// Decode plus encode time of one 20 ms frame (the codec calls alone).
    pub transcode_frame_time: Histogram,
    /// Passthrough processing delay: a datagram received → its relay handed to the other leg's socket.
    pub processing_passthrough: Histogram,
    /// Transcoding processing delay: a call's tick starts (its frames leave the jitter buffers) → the
    /// last packet it encoded handed to the socket.
    pub processing_transcoding: Histogram,
    /// How long a call's due tick waited for the worker: its grid instant → its processing starts
    /// (wake-up lateness plus the calls served before it in the same slot).
    pub tick_wait: Histogram,
    /// Datagrams the kernel dropped on the media sockets because their receive buffer was full.
    pub socket_drops: AtomicU64,
    /// WebRTC (browser) leg counters.
    pub browser_leg: LegCounters,
    /// RTP (PBX) leg counters.
    pub pbx_leg: LegCounters,
    /// WebSocket connections open.
    pub websocket_connections: AtomicI64,
    trunks: Mutex<BTreeMap<String, bool>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            active_calls: AtomicI64::new(0),
            calls_by_result: std::array::from_fn(|_| AtomicU64::new(0)),
            refusals: std::array::from_fn(|_| AtomicU64::new(0)),
            setup_time: Histogram::new(&SETUP_BUCKETS),
            transcode_frame_time: Histogram::new(&FRAME_BUCKETS),
            processing_passthrough: Histogram::new(&PROCESSING_BUCKETS),
            processing_transcoding: Histogram::new(&PROCESSING_BUCKETS),
            tick_wait: Histogram::new(&PROCESSING_BUCKETS),
            socket_drops: AtomicU64::new(0),
            browser_leg: LegCounters::default(),
            pbx_leg: LegCounters::default(),
            websocket_connections: AtomicI64::new(0),
            trunks: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Metrics {
    /// Counts a finished call by its end cause.
    pub fn call_ended(&self, cause: EndCause) {
        if let Some(index) = END_CAUSES.iter().position(|&known| known == cause) {
            self.calls_by_result[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Calls that ended with `cause` so far.
    pub fn calls_with_result(&self, cause: EndCause) -> u64 {
        END_CAUSES
            .iter()
            .position(|&known| known == cause)
            .map_or(0, |index| self.calls_by_result[index].load(Ordering::Relaxed))
    }

    /// Counts a refused call by reason.
    pub fn refused(&self, refusal: &Refusal) {
        if let Some(index) = REFUSAL_REASONS
            .iter()
            .position(|&reason| reason == refusal.reason())
        {
            self.refusals[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records whether a trunk answers its keepalives.
    pub fn set_trunk_up(&self, trunk: &str, up: bool) {
        let mut trunks = self
            .trunks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        trunks.insert(trunk.to_owned(), up);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        gauge(
            &mut out,
            "callgate_active_calls",
            "Calls in progress.",
            self.active_calls.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "callgate_websocket_connections",
            "Open SIP-over-WebSocket connections.",
            self.websocket_connections.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP callgate_calls_total Finished calls by end cause.\n# TYPE callgate_calls_total counter"
        );
        for (cause, count) in END_CAUSES.iter().zip(&self.calls_by_result) {
            let _ = writeln!(
                out,
                "callgate_calls_total{{result=\"{}\"}} {}",
                cause.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP callgate_refusals_total Calls refused before any trunk was tried, by reason.\n\
             # TYPE callgate_refusals_total counter"
        );
        for (reason, count) in REFUSAL_REASONS.iter().zip(&self.refusals) {
            let _ = writeln!(
                out,
                "callgate_refusals_total{{reason=\"{reason}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        self.setup_time.render(
            &mut out,
            "callgate_call_setup_seconds",
            "Time from the browser's INVITE to the 200 OK sent to it.",
        );
        self.transcode_frame_time.render(
            &mut out,
            "callgate_transcode_frame_seconds",
            "Decode plus encode time of one 20 ms audio frame.",
        );
        let name = "callgate_media_processing_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time a packet spends in the gateway, jitter-buffer wait excluded: passthrough, \
             datagram received to relay sent; transcoding, tick start to encoded packet sent.\n\
             # TYPE {name} histogram"
        );
        self.processing_passthrough
            .render_series(&mut out, name, "path=\"passthrough\",");
        self.processing_transcoding
            .render_series(&mut out, name, "path=\"transcoding\",");
        self.tick_wait.render(
            &mut out,
            "callgate_media_tick_wait_seconds",
            "Time from a call's 20 ms tick on the worker's grid to the start of its processing.",
        );
        let _ = writeln!(
            out,
            "# HELP callgate_media_socket_drops_total Datagrams dropped by the kernel on full media \
             socket receive buffers.\n# TYPE callgate_media_socket_drops_total counter\n\
             callgate_media_socket_drops_total {}",
            self.socket_drops.load(Ordering::Relaxed)
        );
        for (name, help) in [
            ("packets_received", "RTP packets received"),
            ("packets_sent", "RTP packets sent"),
            ("packets_lost", "RTP packets lost on arrival"),
        ] {
            let metric = format!("callgate_rtp_{name}_total");
            let _ = writeln!(out, "# HELP {metric} {help}, by leg.\n# TYPE {metric} counter");
            for (leg, counters) in [("browser", &self.browser_leg), ("pbx", &self.pbx_leg)] {
                let value = match name {
                    "packets_received" => &counters.packets_received,
                    "packets_sent" => &counters.packets_sent,
                    _ => &counters.packets_lost,
                };
                let _ = writeln!(out, "{metric}{{leg=\"{leg}\"}} {}", value.load(Ordering::Relaxed));
            }
        }
        let _ = writeln!(
            out,
            "# HELP callgate_rtp_jitter_seconds Latest interarrival jitter, by leg.\n\
             # TYPE callgate_rtp_jitter_seconds gauge"
        );
        for (leg, counters) in [("browser", &self.browser_leg), ("pbx", &self.pbx_leg)] {
            let jitter = counters.jitter_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "callgate_rtp_jitter_seconds{{leg=\"{leg}\"}} {jitter}");
        }
        let _ = writeln!(
            out,
            "# HELP callgate_trunk_up Whether the trunk answers OPTIONS keepalives.\n# TYPE callgate_trunk_up gauge"
        );
        let trunks = self
            .trunks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (trunk, up) in trunks.iter() {
            let _ = writeln!(
                out,
                "callgate_trunk_up{{trunk=\"{}\"}} {}",
                escape_label(trunk),
                u8::from(*up)
            );
        }
        out
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

/// Label values escape backslash, quote and newline (exposition format).
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix}"))
    }

    #[test]
    fn renders_counters_and_labels() {
        let metrics = Metrics::default();
        metrics.active_calls.fetch_add(2, Ordering::Relaxed);
        metrics.call_ended(EndCause::BrowserHangup);
        metrics.call_ended(EndCause::BrowserHangup);
        metrics.refused(&Refusal::OriginNotAllowed { origin: None });
        metrics.set_trunk_up("pbx \"a\"", true);
        metrics.pbx_leg.packets_received.fetch_add(50, Ordering::Relaxed);
        let text = metrics.render();
        assert_eq!(line(&text, "callgate_active_calls "), "callgate_active_calls 2");
        assert_eq!(
            line(&text, "callgate_calls_total{result=\"browser_hangup\"}"),
            "callgate_calls_total{result=\"browser_hangup\"} 2"
        );
        assert_eq!(
            line(&text, "callgate_refusals_total{reason=\"origin_not_allowed\"}"),
            "callgate_refusals_total{reason=\"origin_not_allowed\"} 1"
        );
        assert_eq!(
            line(&text, "callgate_trunk_up"),
            "callgate_trunk_up{trunk=\"pbx \\\"a\\\"\"} 1"
        );
        assert_eq!(
            line(&text, "callgate_rtp_packets_received_total{leg=\"pbx\"}"),
            "callgate_rtp_packets_received_total{leg=\"pbx\"} 50"
        );
        assert_eq!(metrics.calls_with_result(EndCause::BrowserHangup), 2);
    }

    #[test]
    fn every_refusal_and_end_cause_has_a_slot() {
        let metrics = Metrics::default();
        for cause in END_CAUSES {
            metrics.call_ended(cause);
            assert_eq!(metrics.calls_with_result(cause), 1);
        }
        let refusals = [
            Refusal::UnknownWidget,
            Refusal::WidgetDisabled,
            Refusal::OriginNotAllowed { origin: None },
            Refusal::Token(crate::admission::TokenError::Missing),
            Refusal::WidgetBusy { limit: 1 },
            Refusal::WidgetRate {
                limit: 1,
                retry_after: Duration::ZERO,
            },
            Refusal::SourceBusy { limit: 1 },
            Refusal::SourceRate {
                limit: 1,
                retry_after: Duration::ZERO,
            },
            Refusal::GatewayFull {
                retry_after: Duration::ZERO,
            },
        ];
        for refusal in &refusals {
            assert!(
                REFUSAL_REASONS.contains(&refusal.reason()),
                "{} has no slot",
                refusal.reason()
            );
        }
    }

    #[test]
    fn processing_histogram_has_a_series_per_path() {
        let metrics = Metrics::default();
        metrics.processing_passthrough.observe(Duration::from_micros(40));
        metrics.processing_transcoding.observe(Duration::from_micros(80));
        metrics.processing_transcoding.observe(Duration::from_micros(900));
        metrics.processing_transcoding.observe(Duration::from_millis(80));
        let text = metrics.render();
        let name = "callgate_media_processing_seconds";
        assert_eq!(
            line(
                &text,
                &format!("{name}_bucket{{path=\"passthrough\",le=\"0.00005\"}}")
            ),
            format!("{name}_bucket{{path=\"passthrough\",le=\"0.00005\"}} 1")
        );
        assert_eq!(
            line(
                &text,
                &format!("{name}_bucket{{path=\"transcoding\",le=\"0.00005\"}}")
            ),
            format!("{name}_bucket{{path=\"transcoding\",le=\"0.00005\"}} 0")
        );
        assert_eq!(
            line(
                &text,
                &format!("{name}_bucket{{path=\"transcoding\",le=\"0.001\"}}")
            ),
            format!("{name}_bucket{{path=\"transcoding\",le=\"0.001\"}} 2")
        );
        assert_eq!(
            line(
                &text,
                &format!("{name}_bucket{{path=\"transcoding\",le=\"+Inf\"}}")
            ),
            format!("{name}_bucket{{path=\"transcoding\",le=\"+Inf\"}} 3")
        );
        assert_eq!(
            line(&text, &format!("{name}_count{{path=\"transcoding\"}}")),
            format!("{name}_count{{path=\"transcoding\"}} 3")
        );
        let header = format!("# TYPE {name} histogram");
        assert_eq!(text.matches(&header).count(), 1, "one header for both paths");
    }

    #[test]
    fn a_batch_adds_up_to_the_same_histogram_and_empties() {
        let direct = Histogram::new(&PROCESSING_BUCKETS);
        let batched = Histogram::new(&PROCESSING_BUCKETS);
        let mut batch = batched.batch();
        for micros in [40, 80, 900, 2_000_000] {
            direct.observe(Duration::from_micros(micros));
            batch.observe(Duration::from_micros(micros));
        }
        assert_eq!(
            batched.count(),
            0,
            "nothing is shared before the batch is absorbed"
        );
        batched.absorb(&mut batch);
        batched.absorb(&mut batch);
        let text = |histogram: &Histogram| {
            let mut out = String::new();
            histogram.render(&mut out, "h", "help");
            out
        };
        assert_eq!(text(&batched), text(&direct));
        assert_eq!(batched.count(), 4);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::default();
        metrics.setup_time.observe(Duration::from_millis(3));
        metrics.setup_time.observe(Duration::from_millis(40));
        metrics.setup_time.observe(Duration::from_secs(60));
        let text = metrics.render();
        assert_eq!(
            line(&text, "callgate_call_setup_seconds_bucket{le=\"0.005\"}"),
            "callgate_call_setup_seconds_bucket{le=\"0.005\"} 1"
        );
        assert_eq!(
            line(&text, "callgate_call_setup_seconds_bucket{le=\"0.05\"}"),
            "callgate_call_setup_seconds_bucket{le=\"0.05\"} 2"
        );
        assert_eq!(
            line(&text, "callgate_call_setup_seconds_bucket{le=\"+Inf\"}"),
            "callgate_call_setup_seconds_bucket{le=\"+Inf\"} 3"
        );
        assert_eq!(
            line(&text, "callgate_call_setup_seconds_count"),
            "callgate_call_setup_seconds_count 3"
        );
    }
}
