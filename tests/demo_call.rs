//! Out of the box: the real `callgate serve` with its built-in echo endpoint, no PBX. A browser stand-in
//! calls the `demo` widget created on first run, hears its own 440 Hz tone come back through the whole chain
//! (WebRTC → Opus ⇄ PCMU → SIP/RTP → echo → back), and the call leaves a complete call record and moves the
//! `/metrics` counters.

#[allow(dead_code, reason = "each test crate uses a part of the shared helpers")]
mod common;

use std::time::Duration;

use callgate::client::{Call, CallOptions};
use common::gateway::{Gateway, GatewayOptions};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_widget_echoes_the_caller_and_records_the_call() {
    let gateway = tokio::task::block_in_place(|| {
        Gateway::start(GatewayOptions {
            demo: true,
            ..GatewayOptions::default()
        })
    });
    let shown: Value =
        serde_json::from_str(&gateway.cli().run(&["widget", "show", "demo", "--json"]).success()).unwrap();
    let public_id = shown["public_id"]
        .as_str()
        .expect("the demo widget exists")
        .to_owned();
    let (status, page) = tokio::task::block_in_place(|| gateway.http_get("/demo"));
    assert_eq!(status, 200);
    assert!(page.contains(&public_id) && page.contains("/widget.js"), "{page}");

    let options = CallOptions {
        origin: Some(format!("http://127.0.0.1:{}", gateway.http_address().port())),
        analyse_audio: true,
        ..CallOptions::default()
    };
    let target = format!("sip:{public_id}@127.0.0.1");
    let mut call = Call::dial(&gateway.ws_url(), &target, options)
        .await
        .unwrap_or_else(|error| panic!("dial: {error}\n{}", gateway.log_text()));
    assert_eq!(
        call.wait_answered(WAIT).await.unwrap(),
        200,
        "{}",
        gateway.log_text()
    );
    call.wait_media(WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let frequency = call.dominant_frequency().expect("decoded audio came back");
    assert!((frequency - 440.0).abs() <= 5.0, "{frequency} Hz");
    // The check can fail: a wrong expectation is far outside the tolerance.
    assert!((frequency - 1000.0).abs() > 5.0);
    let report = call.report();
    assert!(report.received.packets >= 50, "{report:?}");
    assert!(report.received.loss_ratio() < 0.01, "{report:?}");

    let (_, during) = tokio::task::block_in_place(|| gateway.http_get("/metrics"));
    assert_eq!(metric(&during, "callgate_active_calls"), 1.0);
    assert_eq!(metric(&during, "callgate_websocket_connections"), 1.0);
    assert!(
        metric(&during, "callgate_rtp_packets_received_total{leg=\"pbx\"}") > 0.0,
        "{during}"
    );
    assert!(
        metric(&during, "callgate_transcode_frame_seconds_count") > 0.0,
        "{during}"
    );

    assert_eq!(call.hang_up().await.unwrap(), Some(200));
    // The call record is completed asynchronously, once the media engine reports its statistics.
    let record = tokio::task::block_in_place(|| {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let calls: Value =
                serde_json::from_str(&gateway.cli().run(&["calls", "list", "--json"]).success()).unwrap();
            let record = calls[0].clone();
            if record["end_cause"].is_string() || std::time::Instant::now() > deadline {
                return record;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    assert_eq!(record["widget"], "demo", "{record:#}");
    assert_eq!(record["end_cause"], "browser_hangup", "{record:#}");
    assert_eq!(record["ended_by"], "browser", "{record:#}");
    let text = record.to_string();
    assert!(
        text.contains("\"opus\"") && text.contains("\"pcmu\""),
        "codecs of both legs: {record:#}"
    );
    assert!(
        text.contains("\"answered_at\":\"") || record["answered_at"].is_string(),
        "{record:#}"
    );

    let (_, after) = tokio::task::block_in_place(|| gateway.http_get("/metrics"));
    assert_eq!(metric(&after, "callgate_active_calls"), 0.0);
    assert_eq!(
        metric(&after, "callgate_calls_total{result=\"browser_hangup\"}"),
        1.0
    );
    assert_eq!(metric(&after, "callgate_call_setup_seconds_count"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_origin_is_refused_and_counted() {
    let gateway = tokio::task::block_in_place(|| {
        Gateway::start(GatewayOptions {
            demo: true,
            ..GatewayOptions::default()
        })
    });
    let shown: Value =
        serde_json::from_str(&gateway.cli().run(&["widget", "show", "demo", "--json"]).success()).unwrap();
    let public_id = shown["public_id"].as_str().unwrap().to_owned();
    let options = CallOptions {
        origin: Some("https://evil.example".to_owned()),
        ..CallOptions::default()
    };
    let mut call = Call::dial(&gateway.ws_url(), &format!("sip:{public_id}@127.0.0.1"), options)
        .await
        .unwrap();
    let (_, status) = call.wait_ended(WAIT).await.unwrap();
    assert_eq!(status, Some(403));
    let (_, metrics) = tokio::task::block_in_place(|| gateway.http_get("/metrics"));
    assert_eq!(
        metric(&metrics, "callgate_refusals_total{reason=\"origin_not_allowed\"}"),
        1.0
    );
}
