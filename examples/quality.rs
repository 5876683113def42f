//! The speech-quality benchmark's driver. `tests/quality/run.sh` runs it and scores what it records
//! with ITU-T P.862 (docs/quality.md has the results and the command).
//!
//! - `call` plays the browser: one call through a SIP-over-WebSocket gateway, sending a 48 kHz mono
//!   WAV encoded as desktop Chrome encodes a microphone (Opus at 48 kHz, complexity 9, 32 kb/s, FEC
//!   on, 20 ms frames) and recording what comes back, decoded to 8 kHz in sequence order, a missing
//!   packet concealed as a receiver would. The call itself is the library's sans-IO pieces
//!   ([`CallUa`], [`WebrtcClient`]) on a socket pair; `callgate::client::Call` only sends a tone.
//! - `chain` runs the same WAV through codecs alone, with no network and no timing, to put the call's
//!   score in context (Opus at the browser alone; then G.711; then the gateway's Opus encoder toward
//!   the browser at a given complexity), and times the gateway's codec work per 20 ms frame.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use opus::{Application, Bitrate, Channels};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;

use callgate::client::{CallUa, ClientError, Phase, SipWebSocket, UaConfig, UaEvent, UaOutput, WsOptions};
use callgate::config::MediaConfig;
use callgate::media::g711::Law;
use callgate::media::opus_codec::{
    FRAME_SAMPLES, MAX_PACKET_BYTES, MAX_PACKET_SAMPLES, OpusCodecError, OpusDecoder8k, OpusEncoder8k,
    OpusEncoderConfig,
};
use callgate::media::session::SessionSettings;
use callgate::media::webrtc_client::{ClientConfig, ClientEvent, ClientOutput, WebrtcClient};

/// The browser's capture rate.
const BROWSER_RATE: u32 = 48_000;
/// Samples in one 20 ms frame at the browser's rate.
const BROWSER_FRAME: usize = 960;
/// The G.711 side's rate, which the recording and the P.862 narrowband score use.
const NARROWBAND_RATE: u32 = 8_000;
/// libwebrtc's Opus complexity on desktop (5 on Android and iOS).
const BROWSER_COMPLEXITY: i32 = 9;
/// libwebrtc's Opus bitrate for mono.
const BROWSER_BITRATE: i32 = 32_000;
/// One audio frame.
const FRAME: Duration = Duration::from_millis(20);
/// Concealed frames at most for one gap in the sequence numbers.
const MAX_CONCEALED_RUN: u64 = 50;
/// Seed of the loss pattern of `chain --loss`.
const LOSS_SEED: u64 = 862;
/// Timing passes over the input in `chain` (see [`mean_us`]).
const TIMING_PASSES: usize = 5;

/// Why a benchmark step failed.
#[derive(Debug, thiserror::Error)]
enum QualityError {
    /// A WAV file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A WAV file is not 16-bit PCM mono at the rate needed.
    #[error("{path}: {reason}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// libopus refused something on the browser side.
    #[error("browser opus: {0}")]
    BrowserOpus(#[from] opus::Error),
    /// The gateway-side codec wrappers refused something.
    #[error(transparent)]
    Codec(#[from] OpusCodecError),
    /// The client side of the call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The call did not go as a benchmark call must (rejected, ended early, no media).
    #[error("call: {0}")]
    Call(String),
}

/// The speech-quality benchmark's driver.
#[derive(Debug, Parser)]
#[command(name = "quality")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Call through a gateway sending a 48 kHz WAV as browser Opus; record the 8 kHz audio that comes
    /// back. Prints one JSON line of call figures.
    Call(CallArgs),
    /// Run a WAV through codecs with no network; prints one JSON line of codec timings.
    Chain(ChainArgs),
}

#[derive(Debug, Args)]
struct CallArgs {
    /// The gateway's SIP-over-WebSocket URL.
    #[arg(long)]
    ws: String,
    /// The URI dialled, e.g. sip:<widget public id>@127.0.0.1.
    #[arg(long)]
    target: String,
    /// The page's Origin (the widget must allow it).
    #[arg(long, default_value = "https://shop.example")]
    origin: String,
    /// The microphone: 16-bit mono WAV at 48 kHz.
    #[arg(long)]
    input: PathBuf,
    /// Where the received audio goes: 16-bit mono WAV at 8 kHz.
    #[arg(long)]
    output: PathBuf,
    /// Silence sent after the input, so that its end comes back through the echo before the hangup.
    #[arg(long, default_value_t = 1000)]
    tail_ms: u64,
    /// Longest wait for the answer and for media.
    #[arg(long, default_value_t = 15)]
    timeout_secs: u64,
}

#[derive(Debug, Args)]
struct ChainArgs {
    /// 16-bit mono WAV: 48 kHz when the first stage is browser-opus, else 8 kHz.
    #[arg(long)]
    input: PathBuf,
    /// The result: 16-bit mono WAV at 8 kHz.
    #[arg(long)]
    output: PathBuf,
    /// The codecs, in order.
    #[arg(long, value_delimiter = ',', required = true)]
    stages: Vec<Stage>,
    /// The gateway's Opus encoder complexity (gateway-opus stage).
    #[arg(long, default_value_t = 5)]
    complexity: u8,
    /// The gateway's Opus bitrate in bit/s (gateway-opus stage); `[media] opus_bitrate`'s default when
    /// absent.
    #[arg(long)]
    bitrate: Option<u32>,
    /// The gateway's Opus in-band FEC (gateway-opus stage); `[media] opus_fec`'s default when absent.
    #[arg(long)]
    fec: Option<bool>,
    /// The packet loss the gateway's Opus encoder is told to expect, in % (gateway-opus stage; FEC
    /// spends bits in proportion); when absent, the gateway's starting value (0 %: the live gateway then
    /// follows the browser's RTCP loss reports).
    #[arg(long)]
    expected_loss: Option<u8>,
    /// Packets of the gateway's Opus stream lost on the way to the browser, in % (random, the same
    /// pattern every run); the browser recovers a lost packet from the next one's FEC when that
    /// arrived, else conceals it.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
}

/// One codec pass of `chain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Stage {
    /// The browser's Opus encoder at 48 kHz, decoded to 8 kHz as the gateway does.
    BrowserOpus,
    /// G.711 µ-law encode and decode (the gateway's tables).
    Ulaw,
    /// The gateway's Opus encoder toward the browser (8 kHz input, the default `[media]` settings at
    /// `--complexity`), decoded at 8 kHz.
    GatewayOpus,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Call(args) => call(&args),
        Command::Chain(args) => chain(&args),
    };
    match result {
        Ok(json) => {
            println!("{json}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("quality: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn call(args: &CallArgs) -> Result<serde_json::Value, QualityError> {
    let microphone = read_wav(&args.input, BROWSER_RATE)?;
    let tail = (u64::from(BROWSER_RATE) * args.tail_ms / 1000) as usize;
    let mut samples = microphone;
    samples.resize(samples.len() + tail, 0);
    let frames = browser_encode(&samples)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| QualityError::File {
            path: PathBuf::from("(tokio runtime)"),
            source,
        })?;
    let outcome = runtime.block_on(run_call(args, frames))?;
    write_wav(&args.output, NARROWBAND_RATE, &outcome.recorder.samples)?;
    Ok(serde_json::json!({
        "setup_ms": outcome.setup.as_secs_f64() * 1e3,
        "frames_sent": outcome.frames_sent,
        "max_send_lateness_ms": outcome.max_send_lateness.as_secs_f64() * 1e3,
        "packets_received": outcome.recorder.packets,
        "concealed": outcome.recorder.concealed,
        "late": outcome.recorder.late,
        "max_arrival_gap_ms": outcome.recorder.max_arrival_gap.as_secs_f64() * 1e3,
        "recorded_secs": outcome.recorder.samples.len() as f64 / f64::from(NARROWBAND_RATE),
    }))
}

fn chain(args: &ChainArgs) -> Result<serde_json::Value, QualityError> {
    let first_rate = if args.stages.first() == Some(&Stage::BrowserOpus) {
        BROWSER_RATE
    } else {
        NARROWBAND_RATE
    };
    let mut signal = read_wav(&args.input, first_rate)?;
    let mut rate = first_rate;
    let mut timings = serde_json::Map::new();
    for stage in &args.stages {
        let needed = if *stage == Stage::BrowserOpus {
            BROWSER_RATE
        } else {
            NARROWBAND_RATE
        };
        if rate != needed {
            return Err(QualityError::Wav {
                path: args.input.clone(),
                reason: format!("stage {stage:?} needs {needed} Hz audio, the chain has {rate} Hz there"),
            });
        }
        signal = match stage {
            Stage::BrowserOpus => {
                let packets = browser_encode(&signal)?;
                let (decoded, decode_us) = timed_decode(&packets)?;
                timings.insert("gateway_decode_us".to_owned(), decode_us.into());
                decoded
            }
            Stage::Ulaw => {
                let mut codes = vec![0; signal.len()];
                Law::Ulaw.encode(&signal, &mut codes);
                let mut decoded = vec![0; signal.len()];
                Law::Ulaw.decode(&codes, &mut decoded);
                decoded
            }
            Stage::GatewayOpus => {
                let defaults = MediaConfig::default();
                let mut config = gateway_opus_config(&MediaConfig {
                    opus_complexity: args.complexity,
                    opus_bitrate: args.bitrate.unwrap_or(defaults.opus_bitrate),
                    opus_fec: args.fec.unwrap_or(defaults.opus_fec),
                    ..defaults
                });
                if let Some(percent) = args.expected_loss {
                    config.expected_loss_percent = percent;
                }
                let (packets, encode_us) = timed_encode(&signal, &config)?;
                timings.insert("gateway_encode_us".to_owned(), encode_us.into());
                decode_with_loss(&packets, args.loss)?
            }
        };
        rate = NARROWBAND_RATE;
    }
    write_wav(&args.output, rate, &signal)?;
    Ok(serde_json::Value::Object(timings))
}

/// The gateway's encoder toward the browser as `callgate serve` sets it up from `media`.
fn gateway_opus_config(media: &MediaConfig) -> OpusEncoderConfig {
    SessionSettings::new(media, 0, 0, SystemTime::UNIX_EPOCH).opus
}

/// Encodes 48 kHz audio as libwebrtc does on desktop, one packet per 20 ms (the last frame padded).
fn browser_encode(samples: &[i16]) -> Result<Vec<Vec<u8>>, QualityError> {
    let mut encoder = opus::Encoder::new(BROWSER_RATE, Channels::Mono, Application::Voip)?;
    encoder.set_complexity(BROWSER_COMPLEXITY)?;
    encoder.set_bitrate(Bitrate::Bits(BROWSER_BITRATE))?;
    encoder.set_inband_fec(true)?;
    encoder.set_dtx(false)?;
    let mut frame = [0_i16; BROWSER_FRAME];
    let mut out = [0_u8; MAX_PACKET_BYTES];
    let mut packets = Vec::with_capacity(samples.len() / BROWSER_FRAME + 1);
    for chunk in samples.chunks(BROWSER_FRAME) {
        frame[..chunk.len()].copy_from_slice(chunk);
        frame[chunk.len()..].fill(0);
        let length = encoder.encode(&frame, &mut out)?;
        packets.push(out[..length].to_vec());
    }
    Ok(packets)
}

/// Decodes every packet to 8 kHz; also returns the mean decode time per packet in µs.
fn timed_decode(packets: &[Vec<u8>]) -> Result<(Vec<i16>, f64), QualityError> {
    let mut decoded = Vec::new();
    let mut fastest = vec![Duration::MAX; packets.len()];
    for _ in 0..TIMING_PASSES {
        let mut decoder = OpusDecoder8k::new()?;
        let mut out = [0_i16; MAX_PACKET_SAMPLES];
        decoded.clear();
        for (packet, fastest) in packets.iter().zip(&mut fastest) {
            let started = Instant::now();
            let count = decoder.decode(packet, &mut out)?;
            *fastest = (*fastest).min(started.elapsed());
            decoded.extend_from_slice(&out[..count]);
        }
    }
    Ok((decoded, mean_us(&fastest)))
}

/// Encodes 8 kHz audio in 20 ms frames with `config`; also returns the mean encode time per frame in
/// µs.
fn timed_encode(samples: &[i16], config: &OpusEncoderConfig) -> Result<(Vec<Vec<u8>>, f64), QualityError> {
    let frames = samples.len().div_ceil(FRAME_SAMPLES);
    let mut packets = Vec::with_capacity(frames);
    let mut fastest = vec![Duration::MAX; frames];
    for _ in 0..TIMING_PASSES {
        let mut encoder = OpusEncoder8k::new(config)?;
        let mut frame = [0_i16; FRAME_SAMPLES];
        let mut out = [0_u8; MAX_PACKET_BYTES];
        packets.clear();
        for (chunk, fastest) in samples.chunks(FRAME_SAMPLES).zip(&mut fastest) {
            frame[..chunk.len()].copy_from_slice(chunk);
            frame[chunk.len()..].fill(0);
            let started = Instant::now();
            let length = encoder.encode(&frame, &mut out)?;
            *fastest = (*fastest).min(started.elapsed());
            packets.push(out[..length].to_vec());
        }
    }
    Ok((packets, mean_us(&fastest)))
}

/// The mean of per-frame times in µs. Each frame's time is its fastest over the passes: the codec does
/// the same work on each pass, so anything slower was the machine (preemption, a cold cache).
fn mean_us(times: &[Duration]) -> f64 {
    let total: Duration = times.iter().sum();
    total.as_secs_f64() * 1e6 / times.len().max(1) as f64
}

/// Decodes `packets` to 8 kHz as a browser would when `loss_percent` of them never arrive: a lost
/// packet is rebuilt from the next packet's FEC when that one arrived, else concealed.
fn decode_with_loss(packets: &[Vec<u8>], loss_percent: f64) -> Result<Vec<i16>, QualityError> {
    let mut pattern = StdRng::seed_from_u64(LOSS_SEED);
    let probability = (loss_percent / 100.0).clamp(0.0, 1.0);
    let lost: Vec<bool> = packets.iter().map(|_| pattern.random_bool(probability)).collect();
    let mut decoder = OpusDecoder8k::new()?;
    let mut out = [0_i16; MAX_PACKET_SAMPLES];
    let mut decoded = Vec::with_capacity(packets.len() * FRAME_SAMPLES);
    for (index, packet) in packets.iter().enumerate() {
        let count = match (lost[index], lost.get(index + 1)) {
            (false, _) => decoder.decode(packet, &mut out)?,
            (true, Some(false)) => decoder.decode_fec(&packets[index + 1], &mut out[..FRAME_SAMPLES])?,
            (true, _) => decoder.conceal(&mut out[..FRAME_SAMPLES])?,
        };
        decoded.extend_from_slice(&out[..count]);
    }
    Ok(decoded)
}

/// The received stream, decoded in sequence order.
#[derive(Debug)]
struct Recorder {
    decoder: OpusDecoder8k,
    buffer: [i16; MAX_PACKET_SAMPLES],
    next_seq: Option<u64>,
    last_arrival: Option<Instant>,
    samples: Vec<i16>,
    packets: u64,
    concealed: u64,
    late: u64,
    max_arrival_gap: Duration,
}

impl Recorder {
    fn new() -> Result<Self, QualityError> {
        Ok(Recorder {
            decoder: OpusDecoder8k::new()?,
            buffer: [0; MAX_PACKET_SAMPLES],
            next_seq: None,
            last_arrival: None,
            samples: Vec::new(),
            packets: 0,
            concealed: 0,
            late: 0,
            max_arrival_gap: Duration::ZERO,
        })
    }

    /// Packet `seq` arrived at `now`. A packet older than one already played is dropped, as a jitter
    /// buffer drops it; a gap before this one is concealed first.
    fn push(&mut self, now: Instant, seq: u64, payload: &[u8]) -> Result<(), QualityError> {
        self.packets += 1;
        if let Some(last) = self.last_arrival {
            self.max_arrival_gap = self.max_arrival_gap.max(now.saturating_duration_since(last));
        }
        self.last_arrival = Some(now);
        if let Some(next) = self.next_seq {
            if seq < next {
                self.late += 1;
                return Ok(());
            }
            for _ in 0..(seq - next).min(MAX_CONCEALED_RUN) {
                let count = self.decoder.conceal(&mut self.buffer)?;
                self.samples.extend_from_slice(&self.buffer[..count]);
                self.concealed += 1;
            }
        }
        self.next_seq = Some(seq + 1);
        let count = self.decoder.decode(payload, &mut self.buffer)?;
        self.samples.extend_from_slice(&self.buffer[..count]);
        Ok(())
    }
}

/// What one call produced.
#[derive(Debug)]
struct CallOutcome {
    setup: Duration,
    frames_sent: u64,
    max_send_lateness: Duration,
    recorder: Recorder,
}

/// The microphone being sent: 20 ms frames on schedule from when media came up.
#[derive(Debug)]
struct Sending {
    started: Instant,
    next_frame: usize,
    rtp_base: u64,
}

impl Sending {
    fn next_at(&self) -> Instant {
        // A benchmark file holds far fewer than u32::MAX frames.
        self.started + FRAME * u32::try_from(self.next_frame).unwrap_or(u32::MAX)
    }
}

/// One call's state, driven by [`run_call`].
struct CallDriver {
    ws: SipWebSocket,
    udp: UdpSocket,
    local: SocketAddr,
    ua: CallUa,
    rtc: WebrtcClient,
    frames: Vec<Vec<u8>>,
    invite_sent: Instant,
    answered: Option<Instant>,
    rtc_deadline: Instant,
    sending: Option<Sending>,
    hang_up_at: Option<Instant>,
    /// The BYE is out: the gateway may now close the media before it answers.
    hung_up: bool,
    /// The call fails when media has not come up by then.
    give_up_at: Option<Instant>,
    frames_sent: u64,
    max_send_lateness: Duration,
    recorder: Recorder,
    failure: Option<String>,
}

async fn run_call(args: &CallArgs, frames: Vec<Vec<u8>>) -> Result<CallOutcome, QualityError> {
    let ws = SipWebSocket::connect(
        &args.ws,
        &WsOptions {
            origin: Some(args.origin.clone()),
            user_agent: Some("callgate quality benchmark".to_owned()),
            tls: None,
        },
    )
    .await?;
    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(ClientError::from)?;
    let local = udp.local_addr().map_err(ClientError::from)?;
    let now = Instant::now();
    let mut rtc = WebrtcClient::new(now, &ClientConfig::chrome(local)).map_err(ClientError::from)?;
    let offer = rtc.create_offer().map_err(ClientError::from)?;
    let mut ua = CallUa::new(UaConfig::new(args.target.clone(), ws.transport()));
    ua.invite(now, &offer).map_err(ClientError::from)?;
    let driver = CallDriver {
        ws,
        udp,
        local,
        ua,
        rtc,
        frames,
        invite_sent: now,
        answered: None,
        rtc_deadline: now,
        sending: None,
        hang_up_at: None,
        hung_up: false,
        give_up_at: Some(now + Duration::from_secs(args.timeout_secs)),
        frames_sent: 0,
        max_send_lateness: Duration::ZERO,
        recorder: Recorder::new()?,
        failure: None,
    };
    driver.run().await
}

impl CallDriver {
    async fn run(mut self) -> Result<CallOutcome, QualityError> {
        let mut datagram = vec![0_u8; 2048];
        loop {
            self.drain_ua().await?;
            self.drain_rtc()?;
            if let Some(failure) = self.failure.take() {
                return Err(QualityError::Call(failure));
            }
            if self.ua.phase() == Phase::Ended {
                break;
            }
            let deadline = [
                Some(self.rtc_deadline),
                self.ua.next_timeout(),
                self.sending.as_ref().map(Sending::next_at),
                self.hang_up_at,
                self.give_up_at,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.rtc_deadline);
            tokio::select! {
                frame = self.ws.recv() => match frame {
                    Some(bytes) => self.ua.handle_message(Instant::now(), &bytes),
                    None => self.ua.connection_lost(),
                },
                received = self.udp.recv_from(&mut datagram) => {
                    let (length, source) = received.map_err(ClientError::from)?;
                    self.rtc.handle_receive(Instant::now(), source, self.local, &datagram[..length]);
                }
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => self.on_timeout()?,
            }
        }
        let Some(answered) = self.answered else {
            return Err(QualityError::Call("ended without an answer".to_owned()));
        };
        if self.frames_sent < self.frames.len() as u64 {
            return Err(QualityError::Call(format!(
                "ended by the gateway after {} of {} frames",
                self.frames_sent,
                self.frames.len()
            )));
        }
        Ok(CallOutcome {
            setup: answered.saturating_duration_since(self.invite_sent),
            frames_sent: self.frames_sent,
            max_send_lateness: self.max_send_lateness,
            recorder: self.recorder,
        })
    }

    fn on_timeout(&mut self) -> Result<(), QualityError> {
        let now = Instant::now();
        self.ua.handle_timeout(now);
        self.rtc.handle_timeout(now);
        if self.give_up_at.is_some_and(|at| at <= now) {
            return Err(QualityError::Call("no answer or no media in time".to_owned()));
        }
        self.send_due(now);
        if self.hang_up_at.is_some_and(|at| at <= now) {
            self.hang_up_at = None;
            self.hung_up = true;
            self.ua.bye(now).map_err(ClientError::from)?;
        }
        Ok(())
    }

    /// Sends every frame that is due, late ones included: skipping would shift the rest of the speech
    /// against the reference.
    fn send_due(&mut self, now: Instant) {
        let Some(sending) = &mut self.sending else { return };
        while sending.next_frame < self.frames.len() && sending.next_at() <= now {
            self.max_send_lateness = self.max_send_lateness.max(now - sending.next_at());
            let index = sending.next_frame;
            let rtp_time = sending.rtp_base + index as u64 * BROWSER_FRAME as u64;
            if self.rtc.write_audio(now, rtp_time, &self.frames[index]).is_ok() {
                self.frames_sent += 1;
            }
            sending.next_frame += 1;
        }
        if sending.next_frame == self.frames.len() {
            self.sending = None;
            // The last frames still travel through the gateway and the echo and back.
            self.hang_up_at = Some(now + Duration::from_millis(500));
        }
    }

    async fn drain_ua(&mut self) -> Result<(), QualityError> {
        while let Some(output) = self.ua.poll_output() {
            match output {
                UaOutput::Send(bytes) => self.ws.send(Bytes::from(bytes)).await?,
                UaOutput::Event(event) => self.on_ua_event(event),
            }
        }
        Ok(())
    }

    fn on_ua_event(&mut self, event: UaEvent) {
        match event {
            UaEvent::Answered { sdp, .. } => {
                self.answered = Some(Instant::now());
                match sdp.map(|sdp| self.rtc.accept_answer(&sdp)) {
                    Some(Ok(())) => {}
                    Some(Err(error)) => self.failure = Some(format!("answer refused: {error}")),
                    None => self.failure = Some("the 200 OK carried no SDP".to_owned()),
                }
            }
            UaEvent::Rejected(response) => {
                self.failure = Some(format!("rejected: {}", response.status_code));
            }
            UaEvent::OfferReceived { .. } => {
                self.failure = Some("the gateway renegotiated mid-benchmark".to_owned());
            }
            UaEvent::Ended { by, status } if self.answered.is_none() => {
                self.failure = Some(format!("ended by {by:?} with {status:?} before the answer"));
            }
            _ => {}
        }
    }

    fn drain_rtc(&mut self) -> Result<(), QualityError> {
        loop {
            match self.rtc.poll_output() {
                ClientOutput::Timeout(at) => {
                    self.rtc_deadline = at;
                    return Ok(());
                }
                ClientOutput::Transmit(transmit) => {
                    // A full socket buffer drops the datagram, as a congested network would.
                    let _ = self.udp.try_send_to(&transmit.bytes, transmit.to);
                }
                ClientOutput::Event(ClientEvent::Connected) if self.give_up_at.is_some() => {
                    self.give_up_at = None;
                    self.sending = Some(Sending {
                        started: Instant::now(),
                        next_frame: 0,
                        rtp_base: u64::from(rand::random::<u32>()),
                    });
                }
                ClientOutput::Event(ClientEvent::Audio { seq, payload, .. }) => {
                    self.recorder.push(Instant::now(), seq, &payload)?;
                }
                ClientOutput::Event(ClientEvent::Disconnected) if !self.hung_up => {
                    self.failure = Some("media disconnected".to_owned());
                }
                ClientOutput::Event(_) => {}
            }
        }
    }
}

/// Reads a 16-bit PCM mono WAV at `rate`.
fn read_wav(path: &Path, rate: u32) -> Result<Vec<i16>, QualityError> {
    let bytes = std::fs::read(path).map_err(|source| QualityError::File {
        path: path.to_owned(),
        source,
    })?;
    let bad = |reason: String| QualityError::Wav {
        path: path.to_owned(),
        reason,
    };
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(bad("not a RIFF WAVE file".to_owned()));
    }
    let mut format = None;
    let mut offset = 12;
    while offset + 8 <= bytes.len() {
        let id = &bytes[offset..offset + 4];
        let size = u32::from_le_bytes([
            bytes[offset + 4],
            bytes[offset + 5],
            bytes[offset + 6],
            bytes[offset + 7],
        ]) as usize;
        let body = &bytes[offset + 8..(offset + 8).saturating_add(size).min(bytes.len())];
        match id {
            b"fmt " if body.len() >= 16 => {
                let field = |at: usize| u16::from_le_bytes([body[at], body[at + 1]]);
                let sample_rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
                format = Some((field(0), field(2), sample_rate, field(14)));
            }
            b"data" => {
                // 1 is PCM, 0xFFFE the extensible header sox writes in some cases.
                let Some((1 | 0xFFFE, 1, found_rate, 16)) = format else {
                    return Err(bad(format!(
                        "need 16-bit PCM mono (format, channels, rate, bits = {format:?})"
                    )));
                };
                if found_rate != rate {
                    return Err(bad(format!("need {rate} Hz, found {found_rate} Hz")));
                }
                return Ok(body
                    .chunks_exact(2)
                    .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
                    .collect());
            }
            _ => {}
        }
        offset += 8 + size + size % 2;
    }
    Err(bad("no data chunk".to_owned()))
}

/// Writes 16-bit PCM mono.
fn write_wav(path: &Path, rate: u32, samples: &[i16]) -> Result<(), QualityError> {
    let data_bytes = u32::try_from(samples.len() * 2).map_err(|_| QualityError::Wav {
        path: path.to_owned(),
        reason: "too long for a WAV file".to_owned(),
    })?;
    let mut bytes = Vec::with_capacity(44 + samples.len() * 2);
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + data_bytes).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16_u32.to_le_bytes());
    bytes.extend_from_slice(&1_u16.to_le_bytes());
    bytes.extend_from_slice(&1_u16.to_le_bytes());
    bytes.extend_from_slice(&rate.to_le_bytes());
    bytes.extend_from_slice(&(rate * 2).to_le_bytes());
    bytes.extend_from_slice(&2_u16.to_le_bytes());
    bytes.extend_from_slice(&16_u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&data_bytes.to_le_bytes());
    for sample in samples {
        bytes.extend_from_slice(&sample.to_le_bytes());
    }
    std::fs::write(path, bytes).map_err(|source| QualityError::File {
        path: path.to_owned(),
        source,
    })
}
