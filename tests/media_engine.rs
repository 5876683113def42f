//! The media engine on real 127.0.0.1 sockets: a `WebrtcClient` on its own UDP socket plays the
//! browser, a small UDP echo (like `sipp -rtp_echo`) plays the PBX, and the engine's worker threads
//! sit between them. Real time, so the calls are short.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use callgate::config::{MediaConfig, TranscodeMode};
use callgate::media::opus_codec::{OpusDecoder8k, OpusEncoder8k, OpusEncoderConfig};
use callgate::media::session::MediaEvent;
use callgate::media::webrtc_client::{ClientConfig, ClientEvent, ClientOutput, WebrtcClient};
use callgate::metrics::Metrics;
use callgate::sdp::Codec;
use callgate::server::media::{CallMediaId, EngineError, MediaEngine};
use tokio::sync::mpsc;

#[path = "common/tone.rs"]
mod tone;

use tone::{assert_tone, tone_frame};

/// A slice of the RTP range no other test binary uses at the same time, from the process id.
fn rtp_range() -> (u16, u16) {
    let base = 40_000 + (std::process::id() % 400) as u16 * 50;
    (base, base + 49)
}

fn config(workers: u32) -> MediaConfig {
    let (rtp_port_min, rtp_port_max) = rtp_range();
    MediaConfig {
        webrtc_port: 0,
        workers,
        rtp_port_min,
        rtp_port_max,
        transcode: TranscodeMode::Always,
        ..MediaConfig::default()
    }
}

/// The PBX: echoes every datagram back to its sender until dropped.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Echo {
    fn start() -> Echo {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            let mut echoed = 0;
            while !stopped.load(Ordering::Relaxed) {
                if let Ok((len, from)) = socket.recv_from(&mut buffer) {
                    socket.send_to(&buffer[..len], from).unwrap();
                    echoed += 1;
                }
            }
            echoed
        });
        Echo {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns how many datagrams it echoed.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }

    /// Its SDP answer: PCMU and telephone-event, sendrecv.
    fn answer(&self) -> String {
        let port = self.addr.port();
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=echo\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
        )
    }
}

/// The browser on a real socket.
struct Browser {
    client: WebrtcClient,
    socket: UdpSocket,
    addr: SocketAddr,
}

impl Browser {
    fn new() -> Browser {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        let client = WebrtcClient::new(Instant::now(), &ClientConfig::chrome(addr)).unwrap();
        Browser { client, socket, addr }
    }

    /// Runs the browser for `duration` in real time, sending the tone from the moment it is connected;
    /// returns the audio it received, decoded, and how many frames it sent.
    fn talk(mut self, duration: Duration) -> (Vec<f64>, u32) {
        let mut encoder = OpusEncoder8k::new(&OpusEncoderConfig::default()).unwrap();
        let mut decoder = OpusDecoder8k::new().unwrap();
        let mut buffer = [0u8; 2048];
        let mut pcm = Vec::new();
        let mut sent = 0u32;
        let mut next_frame = None;
        let end = Instant::now() + duration;
        while Instant::now() < end {
            let now = Instant::now();
            while let Ok((len, source)) = self.socket.recv_from(&mut buffer) {
                self.client.handle_receive(now, source, self.addr, &buffer[..len]);
            }
            self.client.handle_timeout(now);
            if self.client.is_connected() {
                let due = *next_frame.get_or_insert(now);
                if now >= due {
                    let mut packet = [0u8; 1275];
                    let len = encoder
                        .encode(&tone_frame(u64::from(sent) * 160), &mut packet)
                        .unwrap();
                    self.client
                        .write_audio(now, u64::from(sent) * 960, &packet[..len])
                        .unwrap();
                    sent += 1;
                    next_frame = Some(due + Duration::from_millis(20));
                }
            }
            loop {
                match self.client.poll_output() {
                    ClientOutput::Transmit(t) => {
                        let _ = self.socket.send_to(&t.bytes, t.to);
                    }
                    ClientOutput::Event(ClientEvent::Audio { payload, .. }) => {
                        let mut out = [0i16; 960];
                        let len = decoder.decode(&payload, &mut out).unwrap();
                        pcm.extend(out[..len].iter().map(|&s| f64::from(s)));
                    }
                    ClientOutput::Event(_) => {}
                    ClientOutput::Timeout(_) => break,
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        (pcm, sent)
    }
}

async fn next_event(
    events: &mut mpsc::Receiver<(CallMediaId, MediaEvent)>,
) -> Option<(CallMediaId, MediaEvent)> {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_the_engine_carries_the_tone_there_and_back() {
    let metrics = Arc::new(Metrics::default());
    let (events_tx, mut events) = mpsc::channel(64);
    let engine = MediaEngine::start(&config(2), metrics.clone(), events_tx).unwrap();
    assert_eq!(engine.webrtc_addrs().len(), 2);
    assert!(!engine.is_overloaded());
    let echo = Echo::start();
    let mut browser = Browser::new();

    let offer = browser.client.create_offer().unwrap();
    let pbx_offer = engine.prepare(7, &offer, &[Codec::Pcmu]).await.unwrap();
    let (min, max) = rtp_range();
    let m_line = pbx_offer.lines().find(|l| l.starts_with("m=audio")).unwrap();
    let port: u16 = m_line.split(' ').nth(1).unwrap().parse().unwrap();
    assert!((min..=max).contains(&port) && port.is_multiple_of(2), "{m_line}");
    assert!(matches!(
        engine.prepare(7, &offer, &[Codec::Pcmu]).await,
        Err(EngineError::CallExists(7))
    ));

    let answer = engine.apply_pbx_answer(7, &echo.answer(), false).await.unwrap();
    assert!(answer.contains("a=ice-lite"), "{answer}");
    let candidate_port = engine.webrtc_addrs().iter().map(|a| a.port()).find(|p| {
        answer
            .lines()
            .any(|l| l.starts_with("a=candidate:") && l.contains(&format!(" 127.0.0.1 {p} typ host")))
    });
    assert!(candidate_port.is_some(), "a worker's WebRTC socket in {answer}");
    browser.client.accept_answer(&answer).unwrap();
    assert_eq!(engine.worker_loads().iter().sum::<usize>(), 1);

    let (pcm, sent) = tokio::task::spawn_blocking(move || browser.talk(Duration::from_secs(3)))
        .await
        .unwrap();
    assert_eq!(next_event(&mut events).await, Some((7, MediaEvent::Connected)));
    // Skip the first second (connection, jitter buffers settling).
    assert_tone(&pcm[pcm.len().saturating_sub(12_000)..]);

    let stats = engine.close(7).await.expect("the call had media");
    assert!(stats.transcoded);
    assert_eq!(stats.browser.codec, Some("opus"));
    assert_eq!(stats.pbx.codec, Some("pcmu"));
    assert!(
        stats.browser.packets_received + 5 >= u64::from(sent),
        "{stats:?} of {sent}"
    );
    assert!(stats.pbx.packets_sent >= 100, "{stats:?}");
    assert!(stats.pbx.packets_received >= 100, "{stats:?}");
    assert!(stats.browser.packets_sent >= 100, "{stats:?}");
    assert!(echo.stop() >= 100);
    assert_eq!(engine.worker_loads().iter().sum::<usize>(), 0);
    assert!(engine.close(7).await.is_none(), "closed once");
    assert!(matches!(
        engine.apply_pbx_answer(7, "v=0", false).await,
        Err(EngineError::UnknownCall(7))
    ));
    // Counters reached the shared metrics, and the codec was timed.
    assert!(metrics.browser_leg.packets_received.load(Ordering::Relaxed) >= 100);
    assert!(metrics.transcode_frame_time.count() >= 100);
    engine.shutdown().await;
    assert!(matches!(
        engine.prepare(8, &offer, &[Codec::Pcmu]).await,
        Err(EngineError::Stopped)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_spread_over_workers_and_bad_offers_free_their_ports() {
    let (events_tx, _events) = mpsc::channel(64);
    let engine = MediaEngine::start(&config(2), Arc::new(Metrics::default()), events_tx).unwrap();
    let mut browser = Browser::new();
    let offer = browser.client.create_offer().unwrap();
    engine.prepare(1, &offer, &[Codec::Pcmu]).await.unwrap();
    engine.prepare(2, &offer, &[Codec::Pcmu]).await.unwrap();
    assert_eq!(
        engine.worker_loads(),
        [1, 1],
        "the least-loaded worker takes the call"
    );
    // A refused offer leaves nothing behind, however often it comes.
    for id in 10..40 {
        let refused = engine.prepare(id, "not sdp", &[Codec::Pcmu]).await;
        assert!(matches!(refused, Err(EngineError::Media(_))), "{refused:?}");
    }
    assert_eq!(engine.worker_loads(), [1, 1]);
    assert!(engine.close(1).await.is_some());
    assert!(engine.close(2).await.is_some());
    // 25 pairs per worker: a full cycle of calls reuses them.
    for id in 100..160 {
        engine.prepare(id, &offer, &[Codec::Pcmu]).await.unwrap();
        assert!(engine.close(id).await.is_some());
    }
    engine.shutdown().await;
}
