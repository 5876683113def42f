//! The media engine: worker threads that run the calls' [`MediaSession`]s on real sockets.
//!
//! Each of the `media.workers` OS threads owns, with nothing shared across threads:
//! - one UDP socket `bind_ip:webrtc_port + i` carrying the WebRTC media of all its calls (advertised as
//!   `public_ip:webrtc_port + i`), and a [`Demux`] that routes its datagrams to calls in O(1);
//! - the RTP and RTCP sockets of its calls, on port pairs from its own slice of the RTP range (the
//!   range is partitioned per worker, so allocating a port takes no lock);
//! - its sessions, and a timer heap that wakes each session at its [`MediaSession::poll_timeout`]
//!   (the 20 ms ticks of transcoding calls, jitter-buffer polls, RTCP, ICE/DTLS timers).
//!
//! A worker is a plain thread around one `mio::Poll`: every socket is registered with it, so one
//! `epoll_wait` covers the whole worker, and a datagram costs one `recv_from` into a reused buffer, a
//! hash lookup, the session's work and `send_to` for what it produced. Nothing in that path
//! allocates in our code or takes a lock.
//!
//! ## One wake-up per frame
//!
//! Each worker has a 20 ms grid (`grid + k * FRAME`, from when it started). Its sessions put their
//! ticks on it ([`SessionSettings::tick_grid`]) and run their jitter-buffer polls at the tick, and the
//! worker schedules a connected call's other deadlines at the grid instant at or after them, so its
//! ICE, RTCP and DTMF timers in between wait for the next slot too (at most 20 ms, which none of
//! them minds; a call still setting up keeps exact timers). One
//! wake-up then serves every call due in that slot instead of one or more per call.
//!
//! Datagrams are read with `recvmmsg`, up to [`BATCH`] per system call, with the kernel's receive
//! timestamp (`SO_TIMESTAMPNS`) as their arrival time. That makes reading them late harmless for a
//! transcoding call, whose audio only moves at its ticks: its RTP socket is not watched at all but
//! read at every grid slot, and while every call of the worker transcodes and is connected the
//! WebRTC socket is read the same way, so the worker sleeps from slot to slot instead of waking for
//! each datagram. A passthrough call, or one still setting up (ICE, DTLS), makes the worker watch the
//! WebRTC socket again, since its datagrams must be relayed or answered at once. Commands always wake
//! the worker at once.
//!
//! Signaling talks to the workers through a [`MediaEngine`] handle (`Clone + Send`): each async method
//! sends a command over a `tokio::sync::mpsc` channel, wakes the worker through its `mio::Waker`, and
//! awaits the reply on a oneshot. New calls go to the least-loaded worker that is keeping up.
//! Events ([`MediaEvent`]: connected, consent lost, media timeout) come back on the channel given to
//! [`MediaEngine::start`].
//!
//! ## Overload
//!
//! A worker measures how late it runs its sessions' deadlines (the 20 ms ticks among them): the 99th
//! percentile over each second is published. When every worker is later than
//! [`OVERLOAD_LATENESS`], or has more than [`OVERLOAD_QUEUE`] commands waiting,
//! [`MediaEngine::is_overloaded`] says so and signaling refuses new calls with 503 before the calls in
//! progress start losing audio.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::{mpsc, oneshot};

use crate::b2bua::Leg;
use crate::config::MediaConfig;
use crate::media::demux::Demux;
use crate::media::session::{
    CallMediaStats, FRAME, LegMediaStats, MediaError, MediaEvent, MediaSession, Output, Reoffer,
    SessionSettings, SocketKind, grid_ceil,
};
use crate::media::webrtc_leg::generate_dtls_cert;
use crate::metrics::{HistogramBatch, LegCounters, Metrics};
use crate::sdp::Codec;

/// Identifies a call's media to the engine; chosen by the caller, unique among live calls.
pub type CallMediaId = u64;

/// A worker whose deadlines run this late (99th percentile over a second) is falling behind.
pub const OVERLOAD_LATENESS: Duration = Duration::from_millis(5);
/// A worker with this many commands waiting is falling behind.
pub const OVERLOAD_QUEUE: usize = 64;
/// Commands a worker's channel holds.
const COMMAND_QUEUE: usize = 1024;
/// How often a worker publishes its lateness and flushes call counters into the metrics.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// The largest datagram read; WebRTC and RTP datagrams stay under the path MTU.
const RECEIVE_BUFFER: usize = 2048;
/// Datagrams one `recvmmsg` takes at most.
const BATCH: usize = 32;
/// Kernel receive buffer asked for on each worker's WebRTC socket (all its calls' browser media:
/// ~5000 datagrams/s at 200 calls): ~1 s of traffic, so that a stall of the worker becomes jitter
/// rather than loss. The kernel may cap it (`net.core.rmem_max`) unless we may force it.
const WEBRTC_SOCKET_BUFFER: usize = 4 << 20;
/// After its sockets dropped datagrams, a worker counts as falling behind for this many
/// housekeeping rounds.
const DROP_HOLD: u32 = 5;
/// Lateness histogram: 250 µs buckets up to 50 ms, and one for anything later.
const LATENESS_BUCKET: Duration = Duration::from_micros(250);
const LATENESS_BUCKETS: usize = 201;
const WEBRTC_TOKEN: Token = Token(0);
const WAKER_TOKEN: Token = Token(1);
/// Tokens of a call's sockets: `FIRST_CALL_TOKEN + 2 * slot` (RTP) and the next one (RTCP).
const FIRST_CALL_TOKEN: usize = 2;

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The session refused (unacceptable SDP, wrong state...): see [`MediaError`].
    #[error(transparent)]
    Media(#[from] MediaError),
    /// No call with this id (never prepared, or closed).
    #[error("no media for call {0}")]
    UnknownCall(CallMediaId),
    /// A call with this id already has media.
    #[error("call {0} already has media")]
    CallExists(CallMediaId),
    /// The worker's slice of the RTP port range is used up (or every free port is taken by others).
    #[error("no free RTP port pair")]
    NoPorts,
    /// The engine was shut down.
    #[error("the media engine has stopped")]
    Stopped,
}

/// What a worker publishes about itself, read by the handle without locks.
#[derive(Debug, Default)]
struct WorkerLoad {
    calls: AtomicUsize,
    lateness_p99_micros: AtomicU64,
    /// The kernel dropped datagrams on this worker's sockets recently (full receive buffers).
    dropping: AtomicBool,
}

/// A command for a worker, with the oneshot for its reply.
enum Command {
    Prepare {
        id: CallMediaId,
        offer: String,
        trunk_codecs: Vec<Codec>,
        reply: oneshot::Sender<Result<String, EngineError>>,
    },
    ApplyPbxAnswer {
        id: CallMediaId,
        sdp: String,
        early: bool,
        reply: oneshot::Sender<Result<String, EngineError>>,
    },
    Reoffer {
        id: CallMediaId,
        from: Leg,
        sdp: String,
        reply: oneshot::Sender<Result<Reoffer, EngineError>>,
    },
    Reanswer {
        id: CallMediaId,
        from: Leg,
        sdp: String,
        reply: oneshot::Sender<Result<String, EngineError>>,
    },
    RefreshSdp {
        id: CallMediaId,
        reply: oneshot::Sender<Result<String, EngineError>>,
    },
    SendDtmf {
        id: CallMediaId,
        digit: char,
        duration_ms: u32,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    Close {
        id: CallMediaId,
        reply: oneshot::Sender<Option<CallMediaStats>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// The signaling side's view of one worker.
struct WorkerHandle {
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    load: Arc<WorkerLoad>,
    webrtc_addr: SocketAddr,
}

struct EngineInner {
    workers: Vec<WorkerHandle>,
    /// Which worker serves which call. Only signaling touches it (once per command), never a worker.
    calls: Mutex<HashMap<CallMediaId, usize>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        // The channels close with us; wake the workers so that they notice and stop.
        for worker in &self.workers {
            let _ = worker.waker.wake();
        }
    }
}

/// The handle signaling holds; cloning it is cheap. See the module docs.
#[derive(Clone)]
pub struct MediaEngine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for MediaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaEngine")
            .field("workers", &self.inner.workers.len())
            .finish_non_exhaustive()
    }
}

impl MediaEngine {
    /// Binds every worker's WebRTC socket and starts the workers. A `webrtc_port` of 0 gives each
    /// worker a port of the system's choosing (for tests); see [`MediaEngine::webrtc_addrs`].
    pub fn start(
        config: &MediaConfig,
        metrics: Arc<Metrics>,
        events: mpsc::Sender<(CallMediaId, MediaEvent)>,
    ) -> io::Result<MediaEngine> {
        let count = config.worker_count().max(1);
        let dtls_cert = generate_dtls_cert();
        let mut workers = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        let started = Instant::now();
        for index in 0..count {
            let port = if config.webrtc_port == 0 {
                0
            } else {
                config
                    .webrtc_port
                    .checked_add(index as u16)
                    .ok_or_else(|| io::Error::other("webrtc_port + workers is past 65535"))?
            };
            let socket = std::net::UdpSocket::bind(SocketAddr::new(config.bind_ip, port))?;
            socket.set_nonblocking(true)?;
            set_int_option(socket.as_raw_fd(), SO_TIMESTAMPNS, 1)?;
            match set_receive_buffer(&socket, WEBRTC_SOCKET_BUFFER) {
                Ok(bytes) => tracing::debug!(bytes, "WebRTC socket receive buffer"),
                Err(error) => tracing::warn!(%error, "WebRTC socket receive buffer left at the default"),
            }
            let mut socket = UdpSocket::from_std(socket);
            let local = socket.local_addr()?;
            let poll = Poll::new()?;
            poll.registry()
                .register(&mut socket, WEBRTC_TOKEN, Interest::READABLE)?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER_TOKEN)?);
            let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
            let load = Arc::new(WorkerLoad::default());
            let worker = Worker {
                config: config.clone(),
                dtls_cert: dtls_cert.clone(),
                poll,
                webrtc_socket: socket,
                webrtc_local: local,
                webrtc_advertised: SocketAddr::new(config.public_ip, local.port()),
                commands: commands_rx,
                calls: Vec::new(),
                free_slots: Vec::new(),
                by_id: HashMap::new(),
                demux: Demux::new(),
                ports: worker_ports(config, index, count),
                timers: BinaryHeap::new(),
                due: Vec::new(),
                next_generation: 0,
                events: events.clone(),
                pending_events: VecDeque::new(),
                histograms: WorkerHistograms::of(&metrics),
                metrics: metrics.clone(),
                load: load.clone(),
                lateness: LatenessWindow::new(),
                // Workers' slots are spread over the frame so that their bursts do not coincide.
                grid: started + FRAME * index as u32 / count as u32,
                webrtc_drops: 0,
                drop_hold: 0,
                batch: Some(Box::new(ReceiveBatch::new())),
                webrtc_deferred: false,
                stopping: None,
            };
            workers.push(WorkerHandle {
                commands: commands_tx,
                waker,
                load,
                webrtc_addr: local,
            });
            let thread = std::thread::Builder::new()
                .name(format!("media-{index}"))
                .spawn(move || worker.run())?;
            threads.push(thread);
        }
        Ok(MediaEngine {
            inner: Arc::new(EngineInner {
                workers,
                calls: Mutex::new(HashMap::new()),
                threads: Mutex::new(threads),
            }),
        })
    }

    /// The bound address of each worker's WebRTC socket.
    pub fn webrtc_addrs(&self) -> Vec<SocketAddr> {
        self.inner.workers.iter().map(|w| w.webrtc_addr).collect()
    }

    /// Whether new calls should be refused: every worker is falling behind (its deadlines run late,
    /// or commands pile up).
    pub fn is_overloaded(&self) -> bool {
        self.inner.workers.iter().all(WorkerHandle::is_behind)
    }

    /// Calls in progress on each worker.
    pub fn worker_loads(&self) -> Vec<usize> {
        self.inner
            .workers
            .iter()
            .map(|w| w.load.calls.load(Ordering::Relaxed))
            .collect()
    }

    /// Creates the call's media from the browser's offer on the least-loaded worker; returns the offer
    /// for the PBX.
    pub async fn prepare(
        &self,
        id: CallMediaId,
        browser_offer: &str,
        trunk_codecs: &[Codec],
    ) -> Result<String, EngineError> {
        let worker = {
            let mut calls = self.calls();
            if calls.contains_key(&id) {
                return Err(EngineError::CallExists(id));
            }
            let worker = self.least_loaded();
            calls.insert(id, worker);
            worker
        };
        let (reply, response) = oneshot::channel();
        let command = Command::Prepare {
            id,
            offer: browser_offer.to_owned(),
            trunk_codecs: trunk_codecs.to_vec(),
            reply,
        };
        let result = self.send(worker, command, response).await.and_then(|r| r);
        if result.is_err() {
            self.calls().remove(&id);
        }
        result
    }

    /// Applies the PBX's answer (183 `early`, or the 200); returns the WebRTC answer for the browser.
    pub async fn apply_pbx_answer(
        &self,
        id: CallMediaId,
        sdp: &str,
        early: bool,
    ) -> Result<String, EngineError> {
        let sdp = sdp.to_owned();
        self.call(id, |reply| Command::ApplyPbxAnswer {
            id,
            sdp,
            early,
            reply,
        })
        .await
    }

    /// A re-offer from `from`: forward it, or answer it (see [`MediaSession::reoffer`]).
    pub async fn reoffer(&self, id: CallMediaId, from: Leg, sdp: &str) -> Result<Reoffer, EngineError> {
        let sdp = sdp.to_owned();
        self.call(id, |reply| Command::Reoffer { id, from, sdp, reply })
            .await
    }

    /// The other leg's answer to a forwarded re-offer; returns the answer for the leg that re-offered.
    pub async fn reanswer(&self, id: CallMediaId, from: Leg, sdp: &str) -> Result<String, EngineError> {
        let sdp = sdp.to_owned();
        self.call(id, |reply| Command::Reanswer { id, from, sdp, reply })
            .await
    }

    /// Our current offer toward the PBX, for a session-timer refresh.
    pub async fn pbx_refresh_sdp(&self, id: CallMediaId) -> Result<String, EngineError> {
        self.call(id, |reply| Command::RefreshSdp { id, reply }).await
    }

    /// Sends a digit (from SIP INFO) toward the PBX as RFC 4733.
    pub async fn send_dtmf(&self, id: CallMediaId, digit: char, duration_ms: u32) -> Result<(), EngineError> {
        self.call(id, |reply| Command::SendDtmf {
            id,
            digit,
            duration_ms,
            reply,
        })
        .await
    }

    /// Ends the call's media (RTCP BYE, DTLS close_notify) and returns its figures; `None` when the call
    /// had no media.
    pub async fn close(&self, id: CallMediaId) -> Option<CallMediaStats> {
        let worker = self.calls().remove(&id)?;
        let (reply, response) = oneshot::channel();
        self.send(worker, Command::Close { id, reply }, response)
            .await
            .ok()
            .flatten()
    }

    /// Stops every worker: calls still open are closed (their BYEs sent), the threads exit.
    pub async fn shutdown(&self) {
        let mut acks = Vec::with_capacity(self.inner.workers.len());
        for index in 0..self.inner.workers.len() {
            let (reply, response) = oneshot::channel();
            if self
                .send(index, Command::Shutdown { reply }, response)
                .await
                .is_ok()
            {
                acks.push(index);
            }
        }
        let threads = std::mem::take(
            &mut *self
                .inner
                .threads
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        let _ = joined.await;
        self.calls().clear();
        tracing::debug!(workers = acks.len(), "media engine stopped");
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<CallMediaId, usize>> {
        self.inner
            .calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The worker with the fewest calls among those keeping up (among all when none is).
    fn least_loaded(&self) -> usize {
        let workers = &self.inner.workers;
        let load = |index: &usize| {
            let worker = &workers[*index];
            (worker.is_behind(), worker.load.calls.load(Ordering::Relaxed))
        };
        (0..workers.len()).min_by_key(load).unwrap_or(0)
    }

    async fn call<T>(
        &self,
        id: CallMediaId,
        command: impl FnOnce(oneshot::Sender<Result<T, EngineError>>) -> Command,
    ) -> Result<T, EngineError> {
        let worker = *self.calls().get(&id).ok_or(EngineError::UnknownCall(id))?;
        let (reply, response) = oneshot::channel();
        self.send(worker, command(reply), response).await?
    }

    async fn send<T>(
        &self,
        worker: usize,
        command: Command,
        response: oneshot::Receiver<T>,
    ) -> Result<T, EngineError> {
        let handle = self.inner.workers.get(worker).ok_or(EngineError::Stopped)?;
        handle
            .commands
            .send(command)
            .await
            .map_err(|_| EngineError::Stopped)?;
        handle.waker.wake().map_err(|_| EngineError::Stopped)?;
        response.await.map_err(|_| EngineError::Stopped)
    }
}

impl WorkerHandle {
    fn is_behind(&self) -> bool {
        let lateness = Duration::from_micros(self.load.lateness_p99_micros.load(Ordering::Relaxed));
        let queued = COMMAND_QUEUE - self.commands.capacity();
        lateness > OVERLOAD_LATENESS || queued > OVERLOAD_QUEUE || self.load.dropping.load(Ordering::Relaxed)
    }
}

/// The RTP ports (even, RTCP on the next) of worker `index` of `count`: its share of the range.
fn worker_ports(config: &MediaConfig, index: usize, count: usize) -> VecDeque<u16> {
    let first = config.rtp_port_min & !1;
    let pairs = usize::from(config.rtp_port_max.saturating_sub(first)).div_ceil(2);
    let start = pairs * index / count;
    let end = pairs * (index + 1) / count;
    (start..end)
        .filter_map(|pair| u16::try_from(usize::from(first) + 2 * pair).ok())
        .filter(|port| *port < u16::MAX)
        .collect()
}

/// One call on a worker.
struct CallSlot {
    id: CallMediaId,
    session: MediaSession,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    rtp_local: SocketAddr,
    rtcp_local: SocketAddr,
    rtp_port: u16,
    /// The deadline this call's timer entry stands for; other entries of it are stale.
    scheduled: Option<Instant>,
    generation: u64,
    /// What was already added to the shared metrics.
    flushed: CallMediaStats,
    /// The RTP socket's kernel drop count at the last housekeeping.
    rtp_drops: u32,
    /// The RTP socket is read at the grid slots instead of being watched (a transcoding call).
    rtp_deferred: bool,
    /// The latest instant handed to the session: a datagram read late carries an earlier arrival,
    /// which is raised to this so that the session never sees time go back.
    last_input: Instant,
}

/// A timer entry: when, which slot, which call (a reused slot gets a new generation).
type TimerEntry = Reverse<(Instant, usize, u64)>;

struct Worker {
    config: MediaConfig,
    dtls_cert: Option<str0m::config::DtlsCert>,
    poll: Poll,
    webrtc_socket: UdpSocket,
    webrtc_local: SocketAddr,
    webrtc_advertised: SocketAddr,
    commands: mpsc::Receiver<Command>,
    calls: Vec<Option<CallSlot>>,
    free_slots: Vec<usize>,
    by_id: HashMap<CallMediaId, usize>,
    demux: Demux<usize>,
    ports: VecDeque<u16>,
    timers: BinaryHeap<TimerEntry>,
    /// Reused list of the timers due in one turn of the loop.
    due: Vec<(Instant, usize, u64)>,
    next_generation: u64,
    events: mpsc::Sender<(CallMediaId, MediaEvent)>,
    /// Events the channel had no room for yet.
    pending_events: VecDeque<(CallMediaId, MediaEvent)>,
    metrics: Arc<Metrics>,
    /// This worker's share of the media histograms, added to `metrics` at each housekeeping.
    histograms: WorkerHistograms,
    load: Arc<WorkerLoad>,
    lateness: LatenessWindow,
    /// The origin of this worker's 20 ms grid (see the module docs).
    grid: Instant,
    /// The WebRTC socket's kernel drop count at the last housekeeping.
    webrtc_drops: u32,
    /// Housekeeping rounds left during which this worker reports dropping.
    drop_hold: u32,
    /// Where datagrams are read into; taken while its datagrams are handed to sessions.
    batch: Option<Box<ReceiveBatch>>,
    /// The WebRTC socket is read at the grid slots instead of being watched (see the module docs).
    webrtc_deferred: bool,
    stopping: Option<oneshot::Sender<()>>,
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
        let mut next_slot = grid_ceil(self.grid, Instant::now());
        loop {
            let now = Instant::now();
            let mut wake_at = next_housekeeping;
            if !self.by_id.is_empty() {
                wake_at = wake_at.min(next_slot);
            }
            if let Some(Reverse((at, _, _))) = self.timers.peek() {
                wake_at = wake_at.min(*at);
            }
            if !self.pending_events.is_empty() {
                wake_at = wake_at.min(now + Duration::from_millis(10));
            }
            // mio rounds the timeout up to whole milliseconds; never ask for zero while something waits.
            let timeout = wake_at.saturating_duration_since(now);
            if let Err(error) = self.poll.poll(&mut events, Some(timeout))
                && error.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(%error, "media worker poll failed");
                return;
            }
            let now = Instant::now();
            if now >= next_slot {
                self.update_deferral();
                self.receive_deferred();
                next_slot = grid_ceil(self.grid, now + Duration::from_nanos(1));
            }
            for event in &events {
                match event.token() {
                    WEBRTC_TOKEN => self.receive_webrtc(),
                    WAKER_TOKEN => {}
                    Token(token) => self.receive_rtp(token),
                }
            }
            if !self.handle_commands(now) {
                break;
            }
            self.run_timers(now);
            self.send_events();
            if now >= next_housekeeping {
                self.housekeeping();
                next_housekeeping = now + HOUSEKEEPING;
            }
        }
        self.close_all();
        if let Some(ack) = self.stopping.take() {
            let _ = ack.send(());
        }
    }

    /// Reads the WebRTC socket until it is empty and hands each datagram to its call.
    fn receive_webrtc(&mut self) {
        let Some(mut batch) = self.batch.take() else {
            return;
        };
        loop {
            let count = match batch.receive(&self.webrtc_socket) {
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    tracing::debug!(%error, "WebRTC socket receive");
                    break;
                }
            };
            for datagram in 0..count {
                let (source, arrival, bytes) = batch.datagram(datagram);
                let Some(source) = source else {
                    continue;
                };
                let Some(index) = self.demux.route(source, bytes) else {
                    continue;
                };
                let Some(slot) = self.calls.get_mut(index).and_then(Option::as_mut) else {
                    continue;
                };
                let at = arrival.max(slot.last_input);
                slot.last_input = at;
                slot.session
                    .handle_webrtc_receive(at, source, self.webrtc_local, bytes);
                let sent = self.after_session(index);
                if sent.pbx > 0 && sent.passthrough {
                    self.histograms.processing_passthrough.observe(arrival.elapsed());
                }
            }
            // Fewer than asked for: the queue was empty a moment ago, and the next datagram raises
            // a new readiness edge.
            if count < BATCH {
                break;
            }
        }
        self.batch = Some(batch);
    }

    fn receive_rtp(&mut self, token: usize) {
        let Some(offset) = token.checked_sub(FIRST_CALL_TOKEN) else {
            return;
        };
        self.receive_call(offset / 2, offset % 2 == 1);
    }

    /// Reads one of a call's sockets (RTP, or RTCP) until it is empty and hands the datagrams to it.
    fn receive_call(&mut self, index: usize, is_rtcp: bool) {
        let Some(mut batch) = self.batch.take() else {
            return;
        };
        while let Some(slot) = self.calls.get_mut(index).and_then(Option::as_mut) {
            let (socket, local) = if is_rtcp {
                (&slot.rtcp, slot.rtcp_local)
            } else {
                (&slot.rtp, slot.rtp_local)
            };
            let count = match batch.receive(socket) {
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    tracing::debug!(%error, "RTP socket receive");
                    break;
                }
            };
            for datagram in 0..count {
                let (source, arrival, bytes) = batch.datagram(datagram);
                let Some(source) = source else {
                    continue;
                };
                let Some(slot) = self.calls.get_mut(index).and_then(Option::as_mut) else {
                    break;
                };
                let at = arrival.max(slot.last_input);
                slot.last_input = at;
                slot.session.handle_rtp_receive(at, source, local, bytes);
                let sent = self.after_session(index);
                if sent.webrtc > 0 && sent.passthrough {
                    self.histograms.processing_passthrough.observe(arrival.elapsed());
                }
            }
            if count < BATCH {
                break;
            }
        }
        self.batch = Some(batch);
    }

    /// Reads the sockets that are not watched: the RTP sockets of transcoding calls, and the WebRTC
    /// socket while every call transcodes (see the module docs). Runs at every grid slot, before
    /// the ticks.
    fn receive_deferred(&mut self) {
        if self.webrtc_deferred {
            self.receive_webrtc();
        }
        for index in 0..self.calls.len() {
            if self.calls[index].as_ref().is_some_and(|slot| slot.rtp_deferred) {
                self.receive_call(index, false);
            }
        }
    }

    /// Stops watching the sockets that can wait for the grid and watches again those that cannot.
    fn update_deferral(&mut self) {
        let registry = self.poll.registry();
        let mut all_steady = !self.by_id.is_empty();
        for (index, slot) in self.calls.iter_mut().enumerate() {
            let Some(slot) = slot.as_mut() else {
                continue;
            };
            let transcoding = slot.session.is_transcoding();
            all_steady &= transcoding && slot.session.is_connected();
            if transcoding != slot.rtp_deferred {
                let changed = if transcoding {
                    registry.deregister(&mut slot.rtp)
                } else {
                    let token = Token(FIRST_CALL_TOKEN + 2 * index);
                    registry.register(&mut slot.rtp, token, Interest::READABLE)
                };
                match changed {
                    Ok(()) => slot.rtp_deferred = transcoding,
                    Err(error) => tracing::warn!(%error, "RTP socket watch not changed"),
                }
            }
        }
        if all_steady != self.webrtc_deferred {
            let changed = if all_steady {
                registry.deregister(&mut self.webrtc_socket)
            } else {
                registry.register(&mut self.webrtc_socket, WEBRTC_TOKEN, Interest::READABLE)
            };
            match changed {
                Ok(()) => {
                    self.webrtc_deferred = all_steady;
                    if !all_steady {
                        // What came while it was not watched must not wait for the next datagram.
                        self.receive_webrtc();
                    }
                }
                Err(error) => tracing::warn!(%error, "WebRTC socket watch not changed"),
            }
        }
    }

    /// Runs the sessions whose deadline has come, each once per turn of the loop.
    fn run_timers(&mut self, now: Instant) {
        self.due.clear();
        while let Some(Reverse((at, index, generation))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.due.push((at, index, generation));
        }
        for position in 0..self.due.len() {
            let (at, index, generation) = self.due[position];
            let Some(slot) = self.calls.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            if slot.generation != generation || slot.scheduled != Some(at) {
                continue;
            }
            slot.scheduled = None;
            self.lateness.record(now.saturating_duration_since(at));
            let started = Instant::now();
            slot.last_input = started;
            let work = slot.session.handle_timeout(started);
            let sent = self.after_session(index);
            if work.codec_ops > 0 {
                // Two codec operations (a decode and an encode) make one transcoded frame.
                self.histograms
                    .transcode_frame_time
                    .observe(work.codec_time * 2 / work.codec_ops);
                if sent.webrtc + sent.pbx > 0 {
                    self.histograms.processing_transcoding.observe(started.elapsed());
                    self.histograms
                        .tick_wait
                        .observe(started.saturating_duration_since(at));
                }
            }
            // A slot of a hundred ticks takes milliseconds; a call being set up must not wait for all of
            // them at each of its steps, or the whole slot adds to its setup time. A stop request taken
            // here is seen again by the main loop's own `handle_commands`.
            if !self.commands.is_empty() {
                self.handle_commands(Instant::now());
            }
        }
    }

    /// Sends what the session produced, passes its events on, and schedules its next deadline.
    fn after_session(&mut self, index: usize) -> Sent {
        let Some(slot) = self.calls.get_mut(index).and_then(Option::as_mut) else {
            return Sent::default();
        };
        let mut sent = drain_session(slot, &self.webrtc_socket, &mut self.pending_events);
        sent.passthrough = !slot.session.is_transcoding();
        let due = slot.session.poll_timeout();
        // A call still setting up keeps its exact ICE and DTLS timers: setup time is worth a wake-up.
        let at = if slot.session.is_connected() {
            wake_slot(self.grid, due, slot.last_input)
        } else {
            due
        };
        if slot.scheduled.is_none_or(|scheduled| at < scheduled) {
            slot.scheduled = Some(at);
            self.timers.push(Reverse((at, index, slot.generation)));
        }
        sent
    }

    /// Takes every waiting command; false once the worker must stop.
    fn handle_commands(&mut self, now: Instant) -> bool {
        loop {
            let command = match self.commands.try_recv() {
                Ok(command) => command,
                Err(mpsc::error::TryRecvError::Empty) => return self.stopping.is_none(),
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            };
            match command {
                Command::Prepare {
                    id,
                    offer,
                    trunk_codecs,
                    reply,
                } => {
                    let _ = reply.send(self.prepare(now, id, &offer, &trunk_codecs));
                    // Its ICE and DTLS need the WebRTC socket watched.
                    self.update_deferral();
                }
                Command::ApplyPbxAnswer {
                    id,
                    sdp,
                    early,
                    reply,
                } => {
                    let result = self.with_session(now, id, |s| s.apply_pbx_answer(now, &sdp, early));
                    let _ = reply.send(result);
                }
                Command::Reoffer { id, from, sdp, reply } => {
                    let _ = reply.send(self.with_session(now, id, |s| s.reoffer(now, from, &sdp)));
                }
                Command::Reanswer { id, from, sdp, reply } => {
                    let _ = reply.send(self.with_session(now, id, |s| s.reanswer(now, from, &sdp)));
                }
                Command::RefreshSdp { id, reply } => {
                    let _ = reply.send(self.with_session(now, id, |s| Ok(s.pbx_refresh_sdp())));
                }
                Command::SendDtmf {
                    id,
                    digit,
                    duration_ms,
                    reply,
                } => {
                    let result = self.with_session(now, id, |s| s.send_dtmf(now, digit, duration_ms));
                    let _ = reply.send(result);
                }
                Command::Close { id, reply } => {
                    let _ = reply.send(self.close(now, id));
                }
                Command::Shutdown { reply } => self.stopping = Some(reply),
            }
        }
    }

    /// Routes the call's WebRTC datagrams to it once its leg exists; again after a re-offer, which
    /// may renew the ufrag (ICE restart). Only commands create or change a leg.
    fn register_ufrag(&mut self, index: usize) {
        let Some(slot) = self.calls.get(index).and_then(Option::as_ref) else {
            return;
        };
        if let Some(ufrag) = slot.session.webrtc_ufrag()
            && let Err(error) = self.demux.register(index, ufrag)
        {
            tracing::warn!(%error, call = slot.id, "WebRTC leg not routable");
        }
    }

    fn with_session<T>(
        &mut self,
        now: Instant,
        id: CallMediaId,
        operation: impl FnOnce(&mut MediaSession) -> Result<T, MediaError>,
    ) -> Result<T, EngineError> {
        let index = *self.by_id.get(&id).ok_or(EngineError::UnknownCall(id))?;
        let slot = self
            .calls
            .get_mut(index)
            .and_then(Option::as_mut)
            .ok_or(EngineError::UnknownCall(id))?;
        slot.last_input = slot.last_input.max(now);
        let result = operation(&mut slot.session);
        self.register_ufrag(index);
        self.after_session(index);
        Ok(result?)
    }

    fn prepare(
        &mut self,
        now: Instant,
        id: CallMediaId,
        offer: &str,
        trunk_codecs: &[Codec],
    ) -> Result<String, EngineError> {
        if self.by_id.contains_key(&id) {
            return Err(EngineError::CallExists(id));
        }
        let (rtp_port, mut rtp, mut rtcp) = self.bind_pair()?;
        let mut settings = SessionSettings::new(
            &self.config,
            self.webrtc_advertised.port(),
            rtp_port,
            SystemTime::now(),
        );
        settings.webrtc_advertised = self.webrtc_advertised;
        settings.webrtc_local = self.webrtc_local;
        settings.dtls_cert = self.dtls_cert.clone();
        settings.tick_grid = Some(self.grid);
        settings.codec_clock = Some(Instant::now);
        let (session, pbx_offer) = match MediaSession::prepare(now, offer, trunk_codecs, &settings) {
            Ok(prepared) => prepared,
            Err(error) => {
                self.ports.push_back(rtp_port);
                return Err(error.into());
            }
        };
        let index = self.free_slots.pop().unwrap_or_else(|| {
            self.calls.push(None);
            self.calls.len() - 1
        });
        let registry = self.poll.registry();
        let registered = registry
            .register(&mut rtp, Token(FIRST_CALL_TOKEN + 2 * index), Interest::READABLE)
            .and_then(|()| {
                registry.register(
                    &mut rtcp,
                    Token(FIRST_CALL_TOKEN + 2 * index + 1),
                    Interest::READABLE,
                )
            });
        if let Err(error) = registered {
            tracing::warn!(%error, "cannot watch RTP sockets");
            self.free_slots.push(index);
            self.ports.push_back(rtp_port);
            return Err(EngineError::NoPorts);
        }
        self.next_generation += 1;
        self.calls[index] = Some(CallSlot {
            id,
            session,
            rtp_local: SocketAddr::new(self.config.bind_ip, rtp_port),
            rtcp_local: SocketAddr::new(self.config.bind_ip, rtp_port + 1),
            rtp,
            rtcp,
            rtp_port,
            scheduled: None,
            generation: self.next_generation,
            flushed: CallMediaStats::default(),
            rtp_drops: 0,
            rtp_deferred: false,
            last_input: now,
        });
        self.by_id.insert(id, index);
        self.load.calls.fetch_add(1, Ordering::Relaxed);
        self.register_ufrag(index);
        self.after_session(index);
        Ok(pbx_offer)
    }

    /// The next free port pair of this worker's slice, bound. Ports another process holds are skipped
    /// and kept for later.
    fn bind_pair(&mut self) -> Result<(u16, UdpSocket, UdpSocket), EngineError> {
        for _ in 0..self.ports.len() {
            let Some(port) = self.ports.pop_front() else {
                break;
            };
            let pair = bind_udp(self.config.bind_ip, port)
                .and_then(|rtp| Ok((rtp, bind_udp(self.config.bind_ip, port + 1)?)));
            match pair {
                Ok((rtp, rtcp)) => return Ok((port, rtp, rtcp)),
                Err(error) => {
                    tracing::debug!(%error, port, "RTP port pair busy");
                    self.ports.push_back(port);
                }
            }
        }
        Err(EngineError::NoPorts)
    }

    fn close(&mut self, now: Instant, id: CallMediaId) -> Option<CallMediaStats> {
        let index = self.by_id.remove(&id)?;
        let mut slot = self.calls.get_mut(index)?.take()?;
        slot.session.close(now);
        drain_session(&mut slot, &self.webrtc_socket, &mut self.pending_events);
        let stats = slot.session.stats();
        flush_metrics(&self.metrics, &mut slot);
        self.demux.remove(index);
        let registry = self.poll.registry();
        if !slot.rtp_deferred {
            let _ = registry.deregister(&mut slot.rtp);
        }
        let _ = registry.deregister(&mut slot.rtcp);
        self.ports.push_back(slot.rtp_port);
        self.free_slots.push(index);
        self.load.calls.fetch_sub(1, Ordering::Relaxed);
        Some(stats)
    }

    fn close_all(&mut self) {
        let now = Instant::now();
        let ids: Vec<CallMediaId> = self.by_id.keys().copied().collect();
        for id in ids {
            self.close(now, id);
        }
        self.send_events();
        self.histograms.publish(&self.metrics);
    }

    fn send_events(&mut self) {
        while let Some(event) = self.pending_events.pop_front() {
            match self.events.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(event)) => {
                    self.pending_events.push_front(event);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.pending_events.clear();
                    return;
                }
            }
        }
    }

    fn housekeeping(&mut self) {
        self.histograms.publish(&self.metrics);
        let p99 = self.lateness.take_p99();
        self.load.lateness_p99_micros.store(
            u64::try_from(p99.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let mut drops = 0;
        if let Some(count) = socket_drops(&self.webrtc_socket) {
            drops += u64::from(count.wrapping_sub(self.webrtc_drops));
            self.webrtc_drops = count;
        }
        for slot in self.calls.iter_mut().flatten() {
            flush_metrics(&self.metrics, slot);
            if let Some(count) = socket_drops(&slot.rtp) {
                drops += u64::from(count.wrapping_sub(slot.rtp_drops));
                slot.rtp_drops = count;
            }
        }
        if drops > 0 {
            tracing::warn!(drops, "media sockets dropped datagrams: receive buffers full");
            self.metrics.socket_drops.fetch_add(drops, Ordering::Relaxed);
            self.drop_hold = DROP_HOLD;
        } else {
            self.drop_hold = self.drop_hold.saturating_sub(1);
        }
        self.load.dropping.store(self.drop_hold > 0, Ordering::Relaxed);
    }
}

/// Asks for a `bytes` receive buffer, forcing past `net.core.rmem_max` when allowed (CAP_NET_ADMIN)
/// and taking what the kernel grants otherwise; returns the size the kernel reports.
fn set_receive_buffer(socket: &impl AsRawFd, bytes: usize) -> io::Result<usize> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let fd = socket.as_raw_fd();
    let forced = set_int_option(fd, libc::SO_RCVBUFFORCE, value);
    if forced.is_err() {
        set_int_option(fd, libc::SO_RCVBUF, value)?;
    }
    let mut granted: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `granted` and `len` are valid for writes and `len` holds `granted`'s size.
    let result = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw mut granted).cast(),
            &raw mut len,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(granted).unwrap_or(0))
}

fn set_int_option(fd: RawFd, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` lives across the call and the length passed is its size.
    let result = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The number of datagrams the kernel dropped on `socket` since it was opened (full receive buffer),
/// from `SO_MEMINFO`; `None` where the kernel does not say.
fn socket_drops(socket: &impl AsRawFd) -> Option<u32> {
    let mut info = [0u32; SK_MEMINFO_VARS];
    let mut len = size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes and `len` holds `info`'s size; the kernel writes
    // at most `len` bytes and updates `len`.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    let drops_end = (SK_MEMINFO_DROPS + 1) * size_of::<u32>();
    (result == 0 && len as usize >= drops_end).then_some(info[SK_MEMINFO_DROPS])
}

/// `SO_TIMESTAMPNS_OLD` (linux/asm-generic/socket.h): receive timestamps as a native `timespec`; also
/// the control message type that carries them.
const SO_TIMESTAMPNS: libc::c_int = 35;
/// `SO_MEMINFO` (linux/asm-generic/socket.h) and its layout (linux/sock_diag.h).
const SO_MEMINFO: libc::c_int = 55;
const SK_MEMINFO_VARS: usize = 9;
const SK_MEMINFO_DROPS: usize = 8;

/// A worker's own batches of the media histograms (see [`HistogramBatch`]).
struct WorkerHistograms {
    transcode_frame_time: HistogramBatch,
    processing_passthrough: HistogramBatch,
    processing_transcoding: HistogramBatch,
    tick_wait: HistogramBatch,
}

impl WorkerHistograms {
    fn of(metrics: &Metrics) -> Self {
        WorkerHistograms {
            transcode_frame_time: metrics.transcode_frame_time.batch(),
            processing_passthrough: metrics.processing_passthrough.batch(),
            processing_transcoding: metrics.processing_transcoding.batch(),
            tick_wait: metrics.tick_wait.batch(),
        }
    }

    fn publish(&mut self, metrics: &Metrics) {
        metrics
            .transcode_frame_time
            .absorb(&mut self.transcode_frame_time);
        metrics
            .processing_passthrough
            .absorb(&mut self.processing_passthrough);
        metrics
            .processing_transcoding
            .absorb(&mut self.processing_transcoding);
        metrics.tick_wait.absorb(&mut self.tick_wait);
    }
}

/// Datagrams one drain of a session handed to each leg's sockets.
#[derive(Debug, Default, Clone, Copy)]
struct Sent {
    webrtc: u32,
    pbx: u32,
    /// The session relays packets as they come (no transcoding).
    passthrough: bool,
}

fn bind_udp(ip: IpAddr, port: u16) -> io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, port))?;
    socket.set_nonblocking(true)?;
    set_int_option(socket.as_raw_fd(), SO_TIMESTAMPNS, 1)?;
    Ok(UdpSocket::from_std(socket))
}

/// When the worker wakes for a deadline `at`: at once when it is due, else at its grid slot.
fn wake_slot(grid: Instant, at: Instant, now: Instant) -> Instant {
    if at <= now { at } else { grid_ceil(grid, at) }
}

/// Room for one datagram's control messages: a `SCM_TIMESTAMPNS` timespec and its header, with
/// margin; `u64` for the alignment `cmsghdr` needs.
const CONTROL_WORDS: usize = 8;

/// Buffers for one `recvmmsg` of up to [`BATCH`] datagrams, and what it read.
struct ReceiveBatch {
    buffers: Box<[[u8; RECEIVE_BUFFER]; BATCH]>,
    addresses: [libc::sockaddr_storage; BATCH],
    controls: [[u64; CONTROL_WORDS]; BATCH],
    lens: [usize; BATCH],
    arrivals: [Instant; BATCH],
}

impl ReceiveBatch {
    fn new() -> Self {
        ReceiveBatch {
            buffers: Box::new([[0; RECEIVE_BUFFER]; BATCH]),
            // SAFETY: sockaddr_storage is plain data for which all zeroes is a valid value.
            addresses: unsafe { std::mem::zeroed() },
            controls: [[0; CONTROL_WORDS]; BATCH],
            lens: [0; BATCH],
            arrivals: [Instant::now(); BATCH],
        }
    }

    /// Reads what `socket` has waiting, up to [`BATCH`] datagrams, without blocking; returns how many
    /// (`WouldBlock` when none).
    fn receive(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        // The pointer tables live on the stack for this call only, so the batch holds no pointers
        // into itself (and the worker stays `Send`).
        // SAFETY: iovec and mmsghdr are plain C structs for which all zeroes (null pointers, zero
        // lengths) is valid; every pointer is set below before the kernel sees it.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (index, (iovec, header)) in iovecs.iter_mut().zip(headers.iter_mut()).enumerate() {
            iovec.iov_base = self.buffers[index].as_mut_ptr().cast();
            iovec.iov_len = RECEIVE_BUFFER;
            let message = &mut header.msg_hdr;
            message.msg_name = (&raw mut self.addresses[index]).cast();
            message.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            message.msg_iov = iovec;
            message.msg_iovlen = 1;
            message.msg_control = self.controls[index].as_mut_ptr().cast();
            message.msg_controllen = size_of::<[u64; CONTROL_WORDS]>() as _;
        }
        // SAFETY: `headers` describes BATCH messages whose names, buffers and control areas are
        // owned by `self` and `iovecs`, all alive and unaliased for the duration of the call.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let Ok(count) = usize::try_from(received) else {
            return Err(io::Error::last_os_error());
        };
        // Kernel timestamps are wall-clock time; map them onto the monotonic clock through one
        // reading of both (a clock step between the two readings is not worth guarding against).
        let monotonic = Instant::now();
        let wall = SystemTime::now();
        for (index, header) in headers.iter().enumerate().take(count) {
            self.lens[index] = (header.msg_len as usize).min(RECEIVE_BUFFER);
            self.arrivals[index] = kernel_timestamp(&header.msg_hdr)
                .and_then(|stamp| wall.duration_since(stamp).ok())
                .and_then(|age| monotonic.checked_sub(age))
                .unwrap_or(monotonic);
        }
        Ok(count)
    }

    /// Datagram `index` of the last [`ReceiveBatch::receive`]: its source (`None` when not IP), its
    /// arrival and its bytes.
    fn datagram(&self, index: usize) -> (Option<SocketAddr>, Instant, &[u8]) {
        (
            socket_addr(&self.addresses[index]),
            self.arrivals[index],
            &self.buffers[index][..self.lens[index]],
        )
    }
}

/// The `SCM_TIMESTAMPNS` control message of a received message, as wall-clock time.
fn kernel_timestamp(message: &libc::msghdr) -> Option<SystemTime> {
    // SAFETY: `message` was filled by recvmmsg: its control pointer and length describe the control
    // messages the kernel wrote into our buffer, which the CMSG macros walk within bounds.
    unsafe {
        let mut control = libc::CMSG_FIRSTHDR(message);
        while !control.is_null() {
            let header = &*control;
            if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == SO_TIMESTAMPNS {
                let stamp: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(control).cast());
                let seconds = u64::try_from(stamp.tv_sec).ok()?;
                let nanos = u32::try_from(stamp.tv_nsec).ok()?;
                return SystemTime::UNIX_EPOCH.checked_add(Duration::new(seconds, nanos));
            }
            control = libc::CMSG_NXTHDR(message, control);
        }
    }
    None
}

/// The address the kernel wrote into a `sockaddr_storage`.
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large enough for.
            let address: &libc::sockaddr_in = unsafe { &*(&raw const *storage).cast() };
            let ip = Ipv4Addr::from(u32::from_be(address.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(address.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which it is large enough for.
            let address: &libc::sockaddr_in6 = unsafe { &*(&raw const *storage).cast() };
            let ip = Ipv6Addr::from(address.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(address.sin6_port),
                address.sin6_flowinfo,
                address.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Sends a session's datagrams from the right socket and keeps its events for the channel. A socket
/// that cannot take a datagram now drops it: media is not worth waiting for.
fn drain_session(
    slot: &mut CallSlot,
    webrtc: &UdpSocket,
    events: &mut VecDeque<(CallMediaId, MediaEvent)>,
) -> Sent {
    let mut sent = Sent::default();
    while let Some(output) = slot.session.poll_output() {
        match output {
            Output::Transmit(transmit) => {
                let (socket, count) = match transmit.socket {
                    SocketKind::Webrtc => (webrtc, &mut sent.webrtc),
                    SocketKind::Rtp => (&slot.rtp, &mut sent.pbx),
                    SocketKind::Rtcp => (&slot.rtcp, &mut sent.pbx),
                };
                match socket.send_to(transmit.bytes, transmit.to) {
                    Ok(_) => *count += 1,
                    Err(error) => tracing::trace!(%error, to = %transmit.to, "media datagram not sent"),
                }
            }
            Output::Event(event) => events.push_back((slot.id, event)),
        }
    }
    sent
}

/// Adds what a call counted since the last flush to the shared leg counters.
fn flush_metrics(metrics: &Metrics, slot: &mut CallSlot) {
    let stats = slot.session.stats();
    add_leg(&metrics.browser_leg, &stats.browser, &slot.flushed.browser);
    add_leg(&metrics.pbx_leg, &stats.pbx, &slot.flushed.pbx);
    slot.flushed = stats;
}

fn add_leg(counters: &LegCounters, now: &LegMediaStats, before: &LegMediaStats) {
    let delta = |now: u64, before: u64| now.saturating_sub(before);
    counters.packets_received.fetch_add(
        delta(now.packets_received, before.packets_received),
        Ordering::Relaxed,
    );
    counters
        .packets_sent
        .fetch_add(delta(now.packets_sent, before.packets_sent), Ordering::Relaxed);
    counters
        .packets_lost
        .fetch_add(delta(now.packets_lost, before.packets_lost), Ordering::Relaxed);
    if let Some(jitter) = now.jitter_ms {
        counters
            .jitter_micros
            .store((jitter * 1000.0) as u64, Ordering::Relaxed);
    }
}

/// How late a worker ran its deadlines over the current second.
struct LatenessWindow {
    buckets: [u32; LATENESS_BUCKETS],
    count: u32,
}

impl LatenessWindow {
    fn new() -> Self {
        LatenessWindow {
            buckets: [0; LATENESS_BUCKETS],
            count: 0,
        }
    }

    fn record(&mut self, lateness: Duration) {
        let bucket = (lateness.as_micros() / LATENESS_BUCKET.as_micros()) as usize;
        self.buckets[bucket.min(LATENESS_BUCKETS - 1)] += 1;
        self.count += 1;
    }

    /// The 99th percentile (upper bound of its bucket) since the last call, and a fresh window.
    fn take_p99(&mut self) -> Duration {
        let threshold = self.count - self.count / 100;
        let mut seen = 0;
        let mut p99 = Duration::ZERO;
        if self.count > 0 {
            for (index, count) in self.buckets.iter().enumerate() {
                seen += count;
                if seen >= threshold {
                    p99 = LATENESS_BUCKET * (index as u32 + 1);
                    break;
                }
            }
        }
        self.buckets = [0; LATENESS_BUCKETS];
        self.count = 0;
        p99
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_split_the_rtp_range_into_disjoint_even_pairs() {
        let config = MediaConfig {
            rtp_port_min: 20_000,
            rtp_port_max: 20_019,
            ..MediaConfig::default()
        };
        let slices: Vec<Vec<u16>> = (0..3).map(|i| worker_ports(&config, i, 3).into()).collect();
        assert_eq!(slices[0], [20_000, 20_002, 20_004]);
        assert_eq!(slices[1], [20_006, 20_008, 20_010]);
        assert_eq!(slices[2], [20_012, 20_014, 20_016, 20_018]);
        let top = MediaConfig {
            rtp_port_min: 65_530,
            rtp_port_max: 65_535,
            ..MediaConfig::default()
        };
        assert_eq!(Vec::from(worker_ports(&top, 0, 1)), [65_530, 65_532, 65_534]);
    }

    #[test]
    fn deadlines_wait_for_their_grid_slot_unless_due() {
        let grid = Instant::now();
        let ms = Duration::from_millis;
        let now = grid + ms(45);
        assert_eq!(wake_slot(grid, grid + ms(44), now), grid + ms(44), "due: at once");
        assert_eq!(wake_slot(grid, grid + ms(47), now), grid + ms(60));
        assert_eq!(
            wake_slot(grid, grid + ms(60), now),
            grid + ms(60),
            "a tick is on the grid"
        );
        assert_eq!(wake_slot(grid, grid + ms(61), now), grid + ms(80));
    }

    #[test]
    fn a_batch_reads_every_waiting_datagram_with_its_kernel_arrival() {
        let receiver = bind_udp(IpAddr::from([127, 0, 0, 1]), 0).unwrap();
        let to = receiver.local_addr().unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = sender.local_addr().unwrap();
        let mut batch = ReceiveBatch::new();
        assert_eq!(
            batch.receive(&receiver).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        // The first socket asking for timestamps turns them on for the stack, not synchronously.
        std::thread::sleep(Duration::from_millis(50));
        let before = Instant::now();
        for index in 0..(BATCH + 3) {
            sender.send_to(&[index as u8; 5], to).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        let read_at = Instant::now();
        assert_eq!(batch.receive(&receiver).unwrap(), BATCH);
        for index in 0..BATCH {
            let (source, arrival, bytes) = batch.datagram(index);
            assert_eq!(source, Some(from));
            assert_eq!(bytes, [index as u8; 5]);
            // The kernel's timestamp, not the time of the read (a clock granularity of slack).
            assert!(
                arrival + Duration::from_millis(1) >= before,
                "{arrival:?} {before:?}"
            );
            assert!(arrival + Duration::from_millis(10) < read_at);
        }
        assert_eq!(batch.receive(&receiver).unwrap(), 3);
        assert_eq!(batch.datagram(2).2, [BATCH as u8 + 2; 5]);
    }

    #[test]
    fn lateness_p99_ignores_the_last_percent() {
        let mut window = LatenessWindow::new();
        for _ in 0..990 {
            window.record(Duration::from_micros(100));
        }
        for _ in 0..10 {
            window.record(Duration::from_millis(40));
        }
        assert_eq!(window.take_p99(), LATENESS_BUCKET);
        for _ in 0..90 {
            window.record(Duration::from_micros(100));
        }
        for _ in 0..10 {
            window.record(Duration::from_secs(3));
        }
        assert_eq!(window.take_p99(), LATENESS_BUCKET * LATENESS_BUCKETS as u32);
        assert_eq!(window.take_p99(), Duration::ZERO, "a fresh window");
    }
}
