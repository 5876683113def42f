//! `callgate-load`, the real binary, against the real `callgate serve` and SIPp echoing as the PBX: a
//! small run must set every call up, hear the echo, measure the gateway, and hang up cleanly; a run
//! whose calls are refused must say why and exit 2.

#[allow(dead_code, reason = "each test crate uses a part of the shared helpers")]
mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::gateway::{Gateway, GatewayOptions, ORIGIN, TrunkSpec, WidgetSpec};
use common::sipp::{Sipp, SippOptions};
use serde_json::Value;

const CALLS: u32 = 3;

/// A gateway whose per-IP limits let several calls from 127.0.0.1 through.
fn gateway(pbx: std::net::SocketAddr) -> Gateway {
    let mut widget = WidgetSpec::new("shop", "pbx");
    widget.max_concurrent = Some(100);
    widget.max_per_minute = Some(100);
    Gateway::start(GatewayOptions {
        trunks: vec![TrunkSpec::udp("pbx", pbx)],
        widgets: vec![widget],
        config: vec![
            ("limits", "per_ip_concurrent_calls", 100.into()),
            ("limits", "per_ip_calls_per_minute", 100.into()),
            ("log", "level", "warn".into()),
        ],
        ..GatewayOptions::default()
    })
}

fn callgate_load(gateway: &Gateway, origin: &str, extra: &[&str]) -> Output {
    let calls = CALLS.to_string();
    let pid = gateway.pid().to_string();
    let metrics = format!("http://{}/metrics", gateway.http_address());
    Command::new(env!("CARGO_BIN_EXE_callgate-load"))
        .args([
            "--url",
            &gateway.ws_url(),
            "--target",
            &gateway.widget_uri("shop"),
        ])
        .args(["--origin", origin, "--calls", &calls, "--rate", "10"])
        .args(["--hold", "4", "--settle", "1", "--analyse-every", "1"])
        .args(["--pid", &pid, "--metrics", &metrics, "--json", "--quiet"])
        .args(extra)
        .output()
        .expect("run callgate-load")
}

/// The JSON line (the last line of stdout).
fn report(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|error| {
        panic!(
            "no JSON line ({error}):\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[test]
fn calls_through_callgate_and_sipp_are_measured() {
    let mut sipp = Sipp::uas(
        "answer",
        SippOptions {
            calls: CALLS,
            rtp_echo: true,
            ..SippOptions::default()
        },
    );
    let gateway = gateway(sipp.address());
    let output = callgate_load(&gateway, ORIGIN, &[]);
    let json = report(&output);
    let context = format!("{json:#}\n{}", gateway.log_text());
    assert_eq!(output.status.code(), Some(0), "{context}");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("setup INVITE→200 ms"), "{table}");

    assert_eq!(json["calls"]["connected"], CALLS, "{context}");
    assert_eq!(json["calls"]["failed"], 0, "{context}");
    assert_eq!(json["calls"]["dropped"], 0, "{context}");
    assert_eq!(json["calls"]["hangup_failed"], 0, "{context}");
    assert_eq!(json["setup_ms"]["count"], CALLS, "{context}");
    assert!(json["connect_ms"]["p50"].as_f64().unwrap() >= json["setup_ms"]["p50"].as_f64().unwrap());

    let media = &json["media"];
    let window = media["window_secs"].as_f64().unwrap();
    assert!((2.5..4.0).contains(&window), "{context}");
    // Three calls, 50 frames a second each, over the window.
    let received = media["packets_received"].as_f64().unwrap();
    assert!(received > 0.8 * 150.0 * window, "{context}");
    assert!(media["loss_percent"].as_f64().unwrap() < 1.0, "{context}");
    // Every call is analysed: each hears its onset come back about once a second.
    let round_trips = &media["round_trip_ms"];
    assert!(
        round_trips["count"].as_u64().unwrap() >= u64::from(CALLS),
        "{context}"
    );
    let rtt = round_trips["p50"].as_f64().unwrap();
    assert!(rtt > 0.0 && rtt < 400.0, "{context}");

    let cost = &json["gateway"];
    assert_eq!(cost["pids"][0], gateway.pid(), "{context}");
    assert!(cost["cpu_seconds"].as_f64().unwrap() > 0.0, "{context}");
    assert!(cost["rss_baseline_kb"].as_u64().unwrap() > 1000, "{context}");
    // The gateway counted the same audio on both of its legs.
    let legs = &json["gateway_legs"];
    for leg in ["browser", "pbx"] {
        assert!(
            legs[leg]["received"].as_f64().unwrap() > 0.8 * 150.0 * window,
            "{context}"
        );
    }
    assert!(json["load"]["self_cpu_seconds_total"].as_f64().unwrap() > 0.0);

    // Every call was hung up with a BYE that SIPp answered.
    sipp.expect_success(Duration::from_secs(20));
}

#[test]
fn refused_calls_exit_2_with_the_reason() {
    // Nothing listens at the trunk: the calls are refused before it is tried.
    let gateway = gateway("127.0.0.1:9".parse().unwrap());
    let output = callgate_load(&gateway, "https://elsewhere.example", &["--setup-timeout", "5"]);
    let json = report(&output);
    assert_eq!(output.status.code(), Some(2), "{json:#}");
    assert_eq!(json["calls"]["failed"], CALLS, "{json:#}");
    assert_eq!(json["calls"]["connected"], 0, "{json:#}");
    let reasons = json["calls"]["reasons"].as_object().unwrap();
    assert_eq!(reasons.len(), 1, "{json:#}");
    let (reason, count) = reasons.iter().next().unwrap();
    assert!(reason.starts_with("rejected 403"), "{reason}");
    assert_eq!(count, CALLS);
}
