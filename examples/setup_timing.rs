//! Where a call's setup time goes before the INVITE leaves for the PBX: the media session's preparation
//! (str0m `Rtc` with DTLS, the Chrome offer accepted, the RTP leg's offer), the widget and trunk queries
//! on SQLite, and a tokio task round trip, each timed over many rounds.
//!
//! `cargo run --release --example setup_timing` (`ROUNDS=3000` for more prepare rounds, e.g. under
//! `perf record`). Setup unwraps: a failure is a broken build, not a measurement.
use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use callgate::config::{MediaConfig, TranscodeMode};
use callgate::db::{Database, NewTrunk, NewWidget};
use callgate::media::session::{MediaSession, SessionSettings};
use callgate::sdp::Codec;

const OFFER: &str = include_str!("../tests/fixtures/sdp/browser/chrome_offer.sdp");

/// Prints the 50th, 90th and 99th percentile of `samples` (µs).
fn stats(name: &str, mut samples: Vec<f64>) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{name:40} p50 {:8.1} µs  p90 {:8.1} µs  p99 {:8.1} µs",
        p(0.5),
        p(0.9),
        p(0.99)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let config = MediaConfig {
        public_ip: IpAddr::from([203, 0, 113, 10]),
        bind_ip: IpAddr::from([10, 0, 0, 5]),
        transcode: TranscodeMode::Always,
        ..MediaConfig::default()
    };
    let mut settings = SessionSettings::new(&config, 50_000, 20_000, SystemTime::now());
    settings.dtls_cert = callgate::media::webrtc_leg::generate_dtls_cert();
    let mut prepare = Vec::new();
    let mut sessions = Vec::new();
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(300);
    for _ in 0..rounds {
        let start = Instant::now();
        let (session, _offer) =
            MediaSession::prepare(start, OFFER, &[Codec::Pcmu, Codec::Pcma], &settings).expect("prepare");
        prepare.push(start.elapsed().as_secs_f64() * 1e6);
        sessions.push(session);
    }
    stats("MediaSession::prepare (chrome offer)", prepare);

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let db = Database::connect_ready(&url).await.unwrap();
    db.trunks()
        .add(NewTrunk::new(
            "main".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
        ))
        .await
        .unwrap();
    let w = db
        .widgets()
        .add(NewWidget::new(
            "shop".parse().unwrap(),
            "main".parse().unwrap(),
            "100".parse().unwrap(),
            "https://shop.example".parse().unwrap(),
        ))
        .await
        .unwrap();
    let mut widget = Vec::new();
    let mut trunks = Vec::new();
    for _ in 0..300 {
        let start = Instant::now();
        db.widgets().by_public_id(&w.public_id).await.unwrap();
        widget.push(start.elapsed().as_secs_f64() * 1e6);
        let start = Instant::now();
        db.trunks().list().await.unwrap();
        trunks.push(start.elapsed().as_secs_f64() * 1e6);
    }
    stats("sqlite widgets().by_public_id", widget);
    stats("sqlite trunks().list", trunks);
    let mut spawn = Vec::new();
    for _ in 0..300 {
        let start = Instant::now();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = tx.send(());
        });
        rx.await.unwrap();
        spawn.push(start.elapsed().as_secs_f64() * 1e6);
    }
    stats("tokio spawn + oneshot round trip", spawn);
}
