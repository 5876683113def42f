//! The load generator behind `callgate-load`: many browser stand-ins ([`crate::client::Call`]) in one
//! tokio runtime calling through any RFC 7118 (SIP over WebSocket) gateway, and what that costs the
//! gateway.
//!
//! ## A run
//!
//! 1. **Baseline**: the gateway's RSS and CPU time (`--pid`) are read before the first call.
//! 2. **Setup**: calls start at `rate` per second. Each opens its own WebSocket, sends an INVITE with a
//!    WebRTC offer, answers digest challenges, and waits for the 2xx and for ICE + DTLS. A call that is
//!    not up within `setup_timeout` fails (and is cancelled or hung up).
//! 3. **Hold**: once every call is up or failed, all stay up for `hold`. The first `settle` seconds of
//!    it are left out (jitter buffers settle, the allocator reaches its steady size); the rest is the
//!    **steady window**: every figure about CPU, memory, loss and round trips comes from it.
//! 4. **Hang up**: every call sends BYE; the report is built.
//!
//! ## What a call sends and measures
//!
//! Audio is one second of a 440 Hz tone (five silent frames, then tone) encoded once per process and
//! looped, sent every 20 ms: a call costs a task, a UDP socket and a WebSocket, and no encoder. What
//! comes back is counted by every call (packets, sequence gaps, RFC 3550 jitter); only one call in
//! `analyse_every` decodes it, to measure the round trip through the echo: the returning tone's
//! onset after its silent gap is matched with the moment the onset was sent (see
//! [`crate::client::audio`]). After Opus → G.711 → echo → G.711 → Opus the waveform is no longer the
//! one sent, but its onset still stands out of the silence to within a sample, so the figure covers
//! both network directions, the gateway's jitter buffers and codecs both ways and the echo.
//!
//! ## Cost
//!
//! CPU is utime + stime of the `--pid` processes over the steady window, as a percentage of one core,
//! divided by the calls up: "% of a core per call". Memory is the RSS at the end of the window minus
//! the baseline, divided by the calls up: "KB per call". The generator's own CPU and the machine's busy
//! time are reported beside them, since on a small machine the generator competes with the gateway.
//!
//! ## Layout
//!
//! - [`procfs`]: process CPU and RSS, machine busy time (`/proc`).
//! - [`scrape`]: the gateway's per-leg packet counters from a Prometheus endpoint (optional).
//! - [`summary`]: the report, its table and its JSON.

pub mod procfs;
pub mod scrape;
pub mod summary;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{Call, CallEvent, CallOptions, ClientError, OfferKind, SendCodec, ToneLoop, ToneSpec};
use crate::media::opus_codec::OpusCodecError;
use crate::sip::Credentials;

use procfs::{MachineSample, ProcError, Process, ProcessSample, UdpDrops};
use scrape::{GatewayMetrics, ScrapeError};
use summary::{CallCounts, Distribution, LoadReport, MachineLoad, MediaFigures, ProcessCost, RunDescription};

/// How often the processes are sampled (for the peak RSS) and progress may be printed.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long a hang up may take before it counts as failed.
const HANGUP_LIMIT: Duration = Duration::from_secs(5);
/// Longest failure reason kept (they are counted by their text).
const REASON_CHARS: usize = 80;

/// Why a run could not be carried out (failed calls are not errors: they are in the report).
#[derive(Debug, Error)]
pub enum LoadError {
    /// The settings cannot work (no calls, a hold no longer than the settle time…).
    #[error("{0}")]
    Config(String),
    /// A process to sample cannot be read.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// The gateway's metrics could not be read.
    #[error(transparent)]
    Scrape(#[from] ScrapeError),
    /// The tone could not be encoded.
    #[error(transparent)]
    Codec(#[from] OpusCodecError),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The gateway's WebSocket URL (`ws://…` or `wss://…`).
    pub url: String,
    /// The URI dialled (`sip:<widget id>@host`).
    pub target: String,
    /// The `Origin` of every WebSocket.
    pub origin: Option<String>,
    /// Headers added to every INVITE.
    pub headers: Vec<(String, String)>,
    /// Answers 401/407 challenges when set.
    pub credentials: Option<Credentials>,
    /// Concurrent calls.
    pub calls: u32,
    /// Calls started per second.
    pub rate: f64,
    /// How long all calls stay up together.
    pub hold: Duration,
    /// The start of the hold left out of the figures.
    pub settle: Duration,
    /// Longest INVITE → media up.
    pub setup_timeout: Duration,
    /// Complexity of the pre-encoded Opus frames.
    pub opus_complexity: u8,
    /// What the INVITE offers.
    pub offer: OfferKind,
    /// One call in this many decodes what comes back (round trips); 0 decodes none.
    pub analyse_every: u32,
    /// Gateway processes to sample.
    pub gateway_pids: Vec<u32>,
    /// Other processes to sample (e.g. the PBX).
    pub other_pids: Vec<u32>,
    /// The gateway's Prometheus endpoint, for its per-leg packet counters.
    pub metrics_url: Option<String>,
    /// The address the calls' media sockets bind.
    pub media_ip: IpAddr,
    /// TLS settings for wss://.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Print progress lines on stderr.
    pub progress: bool,
}

impl LoadConfig {
    fn check(&self) -> Result<(), LoadError> {
        if self.calls == 0 {
            return Err(LoadError::Config("--calls must be at least 1".to_owned()));
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(LoadError::Config("--rate must be above 0".to_owned()));
        }
        if self.hold <= self.settle {
            return Err(LoadError::Config(format!(
                "--hold ({:?}) must be longer than --settle ({:?}): the steady window is what is left",
                self.hold, self.settle
            )));
        }
        if self.opus_complexity > 10 {
            return Err(LoadError::Config("--opus-complexity is 0 to 10".to_owned()));
        }
        Ok(())
    }

    fn tone(&self) -> ToneSpec {
        ToneSpec {
            opus_complexity: self.opus_complexity,
            ..ToneSpec::default()
        }
    }

    fn is_analysed(&self, index: u32) -> bool {
        self.analyse_every > 0 && index.is_multiple_of(self.analyse_every)
    }
}

/// Runs the load and reports. Failed calls are counted in the report; only a run that cannot be
/// carried out (a `--pid` gone, metrics unreachable) is an error.
pub async fn run(config: LoadConfig) -> Result<LoadReport, LoadError> {
    config.check()?;
    // Encode the tone before the first call, so that no call's setup pays for it.
    let codec = match config.offer {
        OfferKind::Chrome => SendCodec::Opus,
        OfferKind::PcmuOnly => SendCodec::G711(crate::media::g711::Law::Ulaw),
    };
    ToneLoop::shared(codec, &config.tone())?;
    let config = Arc::new(config);
    let probes = Probes {
        gateway: config.gateway_pids.clone(),
        others: config.other_pids.clone(),
    };
    let baseline = probes.read()?;
    let mut peaks = Peaks::from(&baseline);
    let live = Arc::new(LiveCounters::default());
    let (stage_tx, stage_rx) = watch::channel(Stage::Setup);
    let run_start = Instant::now();
    let mut progress = Progress::new(config.clone(), run_start, &baseline);

    let launcher = tokio::spawn(launch(config.clone(), stage_rx, live.clone()));
    // Setup: until every call is up or failed. Each call settles within two setup timeouts (dial, then
    // answer and media) of its start; the bound only matters if a call task panicked.
    let launch_time = Duration::from_secs_f64(f64::from(config.calls) / config.rate);
    let setup_bound = run_start + launch_time + 2 * config.setup_timeout + SAMPLE_EVERY;
    let mut ticker = tokio::time::interval(SAMPLE_EVERY / 10);
    let mut last_sample = Instant::now();
    while live.settled() < config.calls && Instant::now() < setup_bound {
        ticker.tick().await;
        if last_sample.elapsed() >= SAMPLE_EVERY {
            last_sample = Instant::now();
            let readings = probes.read()?;
            peaks.update(&readings);
            progress.print("setup", &live, &readings);
        }
    }
    let setup_end = Instant::now();
    let window_start_at = setup_end + config.settle;
    let window_end_at = setup_end + config.hold;
    wait_sampling(
        window_start_at,
        &probes,
        &mut peaks,
        &mut progress,
        "settle",
        &live,
    )
    .await?;

    let legs_start = match &config.metrics_url {
        Some(url) => Some(scrape::scrape(url).await?),
        None => None,
    };
    let start = probes.read()?;
    let _ = stage_tx.send(Stage::Steady);
    wait_sampling(window_end_at, &probes, &mut peaks, &mut progress, "steady", &live).await?;
    let end = probes.read()?;
    peaks.update(&end);
    let legs_end = match &config.metrics_url {
        Some(url) => Some(scrape::scrape(url).await?),
        None => None,
    };
    let _ = stage_tx.send(Stage::Stop);
    progress.say("hanging up");

    let handles = launcher
        .await
        .map_err(|error| LoadError::Config(format!("the call launcher failed: {error}")))?;
    let mut outcomes = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok(outcome) => outcomes.push(outcome),
            Err(error) => outcomes.push(CallOutcome::failed(false, format!("call task: {error}"))),
        }
    }
    let legs = match (legs_start, legs_end) {
        (Some(before), Some(after)) => Some(scrape::metrics_growth(&before, &after)),
        _ => None,
    };
    let myself_total = ProcessSample::read(Process::Myself)?.cpu_seconds - baseline.myself.cpu_seconds;
    Ok(build_report(
        &config,
        &outcomes,
        Window {
            baseline: &baseline,
            start: &start,
            end: &end,
            peaks: &peaks,
        },
        legs,
        myself_total,
    ))
}

/// What the coordinator tells the calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Calls are being set up.
    Setup,
    /// The steady window started: take the first snapshot.
    Steady,
    /// The window ended: take the last snapshot and hang up.
    Stop,
}

/// Counters the progress lines and the setup wait read while calls run.
#[derive(Debug, Default)]
struct LiveCounters {
    connected: AtomicU32,
    failed: AtomicU32,
    dropped: AtomicU32,
}

impl LiveCounters {
    fn settled(&self) -> u32 {
        self.connected.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

/// Starts `config.calls` calls at `config.rate` per second.
async fn launch(
    config: Arc<LoadConfig>,
    stage: watch::Receiver<Stage>,
    live: Arc<LiveCounters>,
) -> Vec<JoinHandle<CallOutcome>> {
    let start = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(1.0 / config.rate);
    let mut handles = Vec::with_capacity(config.calls as usize);
    for index in 0..config.calls {
        tokio::time::sleep_until(start + interval * index).await;
        handles.push(tokio::spawn(one_call(
            index,
            config.clone(),
            stage.clone(),
            live.clone(),
        )));
    }
    handles
}

/// What one call's report said at an instant.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    frames_sent: u64,
    packets: u64,
    lost: i64,
    round_trips: usize,
}

impl Snapshot {
    fn of(call: &Call) -> (Self, crate::client::CallReport) {
        let report = call.report();
        let snapshot = Snapshot {
            frames_sent: report.frames_sent,
            packets: report.received.packets,
            lost: report.received.lost,
            round_trips: report.received.round_trips.len(),
        };
        (snapshot, report)
    }
}

/// How one call went.
#[derive(Debug, Default)]
struct CallOutcome {
    analysed: bool,
    answered: bool,
    connected: bool,
    /// Why the setup failed.
    failure: Option<String>,
    /// Why a connected call ended before the hang up.
    dropped: Option<String>,
    hangup_failed: bool,
    setup: Option<Duration>,
    connect: Option<Duration>,
    /// The steady window's first and last snapshots.
    window: Option<(Snapshot, Snapshot)>,
    jitter_ms: Option<f64>,
    round_trips: Vec<Duration>,
}

impl CallOutcome {
    fn failed(analysed: bool, reason: String) -> Self {
        CallOutcome {
            analysed,
            failure: Some(reason),
            ..CallOutcome::default()
        }
    }
}

async fn one_call(
    index: u32,
    config: Arc<LoadConfig>,
    mut stage: watch::Receiver<Stage>,
    live: Arc<LiveCounters>,
) -> CallOutcome {
    let analysed = config.is_analysed(index);
    let options = CallOptions {
        origin: config.origin.clone(),
        headers: config.headers.clone(),
        credentials: config.credentials.clone(),
        offer: config.offer,
        invite_timeout: config.setup_timeout,
        tls: config.tls.clone(),
        media_ip: config.media_ip,
        tone: config.tone(),
        analyse_audio: analysed,
        ..CallOptions::default()
    };
    let dialled = tokio::time::timeout(
        config.setup_timeout,
        Call::dial(&config.url, &config.target, options),
    )
    .await;
    let mut call = match dialled {
        Ok(Ok(call)) => call,
        Ok(Err(error)) => {
            live.failed.fetch_add(1, Ordering::Relaxed);
            return CallOutcome::failed(analysed, shorten(&format!("dial: {error}")));
        }
        Err(_) => {
            live.failed.fetch_add(1, Ordering::Relaxed);
            return CallOutcome::failed(analysed, "timeout connecting the WebSocket".to_owned());
        }
    };
    let setup = tokio::time::timeout(config.setup_timeout, async {
        call.wait_answered(config.setup_timeout).await?;
        call.wait_media(config.setup_timeout).await
    })
    .await;
    let report = call.report();
    let mut outcome = CallOutcome {
        analysed,
        answered: report.answered.is_some(),
        connected: report.media_connected.is_some(),
        setup: report.setup_time(),
        connect: report.connect_time(),
        ..CallOutcome::default()
    };
    let failure = match setup {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(failure_reason(&call, &error)),
        Err(_) => Some("timeout waiting for the answer and media".to_owned()),
    };
    if let Some(reason) = failure {
        live.failed.fetch_add(1, Ordering::Relaxed);
        outcome.connected = false;
        outcome.failure = Some(reason);
        // Dropping the call cancels or hangs it up in the background.
        return outcome;
    }
    live.connected.fetch_add(1, Ordering::Relaxed);

    let mut first = None;
    loop {
        let current = *stage.borrow_and_update();
        match current {
            Stage::Setup => {}
            Stage::Steady => {
                if first.is_none() {
                    first = Some(Snapshot::of(&call).0);
                }
            }
            Stage::Stop => {
                // A call that came up after the window started has no first snapshot and no window.
                if let Some(first) = first {
                    let (last, report) = Snapshot::of(&call);
                    outcome.jitter_ms = Some(report.received.jitter_ms);
                    outcome.round_trips = report
                        .received
                        .round_trips
                        .get(first.round_trips..)
                        .unwrap_or_default()
                        .to_vec();
                    outcome.window = Some((first, last));
                }
                break;
            }
        }
        tokio::select! {
            changed = stage.changed() => {
                if changed.is_err() {
                    outcome.dropped = Some("the run stopped".to_owned());
                    break;
                }
            }
            event = call.next_event(Duration::from_secs(86_400)) => match event {
                Some(CallEvent::Ended { by, status }) => {
                    let status = status.map_or(String::new(), |s| format!(" with {s}"));
                    outcome.dropped = Some(format!("ended by {by:?}{status} during the hold"));
                    break;
                }
                Some(_) => {}
                None => {
                    outcome.dropped = Some("the call task ended during the hold".to_owned());
                    break;
                }
            }
        }
    }
    if outcome.dropped.is_some() {
        live.dropped.fetch_add(1, Ordering::Relaxed);
        return outcome;
    }
    outcome.hangup_failed = !matches!(
        tokio::time::timeout(HANGUP_LIMIT, call.hang_up()).await,
        Ok(Ok(Some(200..=299)))
    );
    outcome
}

/// A short, countable reason for a failed setup.
fn failure_reason(call: &Call, error: &ClientError) -> String {
    let rejected = call.history().iter().rev().find_map(|event| match event {
        CallEvent::Rejected(response) => Some(response.status_code.code()),
        _ => None,
    });
    if let Some(status) = rejected {
        return format!("rejected {status}");
    }
    let text = match error {
        // The timeout's text lists every event so far; its first clause is what was waited for.
        ClientError::Timeout(what) => format!("timeout waiting for {}", what.split(';').next().unwrap_or("")),
        other => other.to_string(),
    };
    shorten(&text)
}

fn shorten(text: &str) -> String {
    text.chars().take(REASON_CHARS).collect()
}

/// The processes sampled.
struct Probes {
    gateway: Vec<u32>,
    others: Vec<u32>,
}

/// One reading of everything sampled.
#[derive(Debug, Clone, Copy)]
struct Readings {
    at: Instant,
    gateway: ProcessSample,
    others: ProcessSample,
    myself: ProcessSample,
    machine: MachineSample,
    udp: UdpDrops,
}

impl Probes {
    fn read(&self) -> Result<Readings, ProcError> {
        let sum = |pids: &[u32]| -> Result<ProcessSample, ProcError> {
            let samples = pids
                .iter()
                .map(|pid| ProcessSample::read(Process::Pid(*pid)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ProcessSample::sum(&samples))
        };
        Ok(Readings {
            at: Instant::now(),
            gateway: sum(&self.gateway)?,
            others: sum(&self.others)?,
            myself: ProcessSample::read(Process::Myself)?,
            machine: MachineSample::read()?,
            udp: UdpDrops::read(),
        })
    }
}

/// The largest RSS seen, per group.
#[derive(Debug, Clone, Copy)]
struct Peaks {
    gateway_kb: u64,
    others_kb: u64,
}

impl Peaks {
    fn from(readings: &Readings) -> Self {
        Peaks {
            gateway_kb: readings.gateway.rss_kb,
            others_kb: readings.others.rss_kb,
        }
    }

    fn update(&mut self, readings: &Readings) {
        self.gateway_kb = self.gateway_kb.max(readings.gateway.rss_kb);
        self.others_kb = self.others_kb.max(readings.others.rss_kb);
    }
}

/// Progress lines on stderr.
struct Progress {
    config: Arc<LoadConfig>,
    run_start: Instant,
    last_printed: Instant,
    last: Readings,
}

impl Progress {
    fn new(config: Arc<LoadConfig>, run_start: Instant, baseline: &Readings) -> Self {
        Progress {
            config,
            run_start,
            last_printed: run_start,
            last: *baseline,
        }
    }

    fn print(&mut self, stage: &str, live: &LiveCounters, readings: &Readings) {
        if readings.at.duration_since(self.last_printed) < PROGRESS_EVERY {
            return;
        }
        let seconds = readings.at.duration_since(self.last.at).as_secs_f64().max(1e-3);
        let gateway_cpu = 100.0 * (readings.gateway.cpu_seconds - self.last.gateway.cpu_seconds) / seconds;
        let own_cpu = 100.0 * (readings.myself.cpu_seconds - self.last.myself.cpu_seconds) / seconds;
        self.say(&format!(
            "{stage}: {}/{} up, {} failed, {} dropped | gateway {gateway_cpu:.0} % cpu, {} KB | self {own_cpu:.0} % cpu | machine {:.0} % busy",
            live.connected.load(Ordering::Relaxed),
            self.config.calls,
            live.failed.load(Ordering::Relaxed),
            live.dropped.load(Ordering::Relaxed),
            readings.gateway.rss_kb,
            100.0 * readings.machine.busy_since(&self.last.machine),
        ));
        self.last_printed = readings.at;
        self.last = *readings;
    }

    fn say(&self, text: &str) {
        if self.config.progress {
            eprintln!("[{:>6.1} s] {text}", self.run_start.elapsed().as_secs_f64());
        }
    }
}

/// Sleeps until `deadline`, sampling every second for the peak RSS and the progress lines.
async fn wait_sampling(
    deadline: Instant,
    probes: &Probes,
    peaks: &mut Peaks,
    progress: &mut Progress,
    stage: &str,
    live: &LiveCounters,
) -> Result<(), ProcError> {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        tokio::time::sleep(SAMPLE_EVERY.min(deadline - now)).await;
        let readings = probes.read()?;
        peaks.update(&readings);
        progress.print(stage, live, &readings);
    }
}

/// The readings that bound the steady window.
struct Window<'a> {
    baseline: &'a Readings,
    start: &'a Readings,
    end: &'a Readings,
    peaks: &'a Peaks,
}

fn build_report(
    config: &LoadConfig,
    outcomes: &[CallOutcome],
    window: Window<'_>,
    gateway_metrics: Option<GatewayMetrics>,
    myself_total_cpu: f64,
) -> LoadReport {
    let mut calls = CallCounts {
        attempted: outcomes.len() as u32,
        ..CallCounts::default()
    };
    let mut reasons: BTreeMap<String, u32> = BTreeMap::new();
    let mut media = MediaFigures::default();
    let mut jitters = Vec::new();
    let mut round_trips = Vec::new();
    for outcome in outcomes {
        calls.answered += u32::from(outcome.answered);
        calls.connected += u32::from(outcome.connected);
        calls.failed += u32::from(outcome.failure.is_some());
        calls.dropped += u32::from(outcome.dropped.is_some());
        calls.hangup_failed += u32::from(outcome.hangup_failed);
        for reason in [&outcome.failure, &outcome.dropped].into_iter().flatten() {
            *reasons.entry(reason.clone()).or_default() += 1;
        }
        if let Some((first, last)) = outcome.window {
            media.frames_sent += last.frames_sent.saturating_sub(first.frames_sent);
            media.packets_received += last.packets.saturating_sub(first.packets);
            media.packets_lost += last.lost - first.lost;
        }
        jitters.extend(outcome.jitter_ms);
        round_trips.extend(outcome.round_trips.iter().map(|rtt| rtt.as_secs_f64() * 1000.0));
    }
    calls.reasons = reasons;
    let expected = media.packets_received as i64 + media.packets_lost;
    media.loss_percent = if expected > 0 {
        100.0 * media.packets_lost.max(0) as f64 / expected as f64
    } else {
        0.0
    };
    if media.frames_sent > 0 {
        media.short_percent =
            100.0 * (media.frames_sent as f64 - media.packets_received as f64) / media.frames_sent as f64;
    }
    let seconds = window.end.at.duration_since(window.start.at).as_secs_f64();
    media.window_secs = seconds;
    media.jitter_ms = Distribution::of(&jitters);
    media.round_trip_ms = Distribution::of(&round_trips);

    let millis = |values: Vec<Option<Duration>>| -> Distribution {
        let values: Vec<f64> = values
            .into_iter()
            .flatten()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        Distribution::of(&values)
    };
    let setup_ms = millis(outcomes.iter().map(|o| o.setup).collect());
    let connect_ms = millis(outcomes.iter().map(|o| o.connect).collect());

    let up = calls.connected.saturating_sub(calls.dropped).max(1);
    let cost = |pids: &[u32], pick: fn(&Readings) -> ProcessSample, peak: u64| -> Option<ProcessCost> {
        if pids.is_empty() {
            return None;
        }
        let cpu_seconds = pick(window.end).cpu_seconds - pick(window.start).cpu_seconds;
        let cpu_percent = 100.0 * cpu_seconds / seconds.max(1e-9);
        let baseline_kb = pick(window.baseline).rss_kb;
        let steady_kb = pick(window.end).rss_kb;
        Some(ProcessCost {
            pids: pids.to_vec(),
            cpu_seconds,
            cpu_percent,
            cpu_percent_per_call: cpu_percent / f64::from(up),
            rss_baseline_kb: baseline_kb,
            rss_steady_kb: steady_kb,
            rss_peak_kb: peak,
            kb_per_call: (steady_kb as f64 - baseline_kb as f64) / f64::from(up),
        })
    };
    let gateway = cost(&config.gateway_pids, |r| r.gateway, window.peaks.gateway_kb);
    let others = cost(&config.other_pids, |r| r.others, window.peaks.others_kb);
    let self_cpu_percent =
        100.0 * (window.end.myself.cpu_seconds - window.start.myself.cpu_seconds) / seconds.max(1e-9);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let measured = [&gateway, &others]
        .into_iter()
        .flatten()
        .map(|cost| cost.cpu_percent)
        .sum::<f64>()
        + self_cpu_percent;
    let load = MachineLoad {
        self_cpu_percent,
        self_cpu_seconds_total: myself_total_cpu,
        machine_busy_percent: 100.0 * window.end.machine.busy_since(&window.start.machine),
        measured_busy_percent: measured / cores as f64,
        cores,
        load_average: procfs::load_average(),
        udp_drops: window.end.udp.since(&window.start.udp),
    };
    LoadReport {
        run: RunDescription {
            url: config.url.clone(),
            target: config.target.clone(),
            calls: config.calls,
            rate_cps: config.rate,
            hold_secs: config.hold.as_secs_f64(),
            settle_secs: config.settle.as_secs_f64(),
            offer: match config.offer {
                OfferKind::Chrome => "chrome".to_owned(),
                OfferKind::PcmuOnly => "pcmu".to_owned(),
            },
            opus_complexity: config.opus_complexity,
            analysed_calls: outcomes.iter().filter(|o| o.analysed).count() as u32,
        },
        calls,
        setup_ms,
        connect_ms,
        media,
        gateway,
        others,
        gateway_processing: gateway_metrics
            .as_ref()
            .map(|metrics| scrape::processing_delays(&metrics.processing)),
        gateway_legs: gateway_metrics.map(|metrics| metrics.legs),
        load,
    }
}
