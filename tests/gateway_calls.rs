//! The Signaling issue's "Done when", end to end: the real `callgate serve` between the browser stand-in
//! (`callgate::client::Call`: SIP over WebSocket as JsSIP writes it, real WebRTC media with a tone) and
//! SIPp as the PBX (`tests/sipp/`). Each test gets its own gateway, database and SIPp on free ports; a
//! failing test prints the gateway's log and SIPp's traces.
//!
//! Covered: a call and BYE from each side (with the tone heard back through SIPp's echo and the call
//! record checked), CANCEL before the answer and racing the 200, 486, 401 and 407, failover to the
//! second trunk and 503 when all are down, hold and resume from each side, 183 early media, OPTIONS
//! keepalives marking a trunk down and up, a session-timer refresh, the WebSocket closed mid-call,
//! refusals (unknown widget, wrong Origin, missing, forged and expired tokens, over the concurrency and
//! per-minute limits), malformed SIP, and DTMF (INFO and RFC 4733) reaching the PBX once per digit.

#[allow(dead_code, reason = "each test crate uses a part of the shared helpers")]
mod common;

use std::time::Duration;

use callgate::client::{Call, CallEvent, CallOptions, EndedBy, SipWebSocket, WsOptions};
use callgate::sip::message::{self, MessageHeaders};
use common::gateway::{Gateway, GatewayOptions, ORIGIN, TrunkSpec, WidgetSpec};
use common::rtp::RtpRecorder;
use common::sipp::{Sipp, SippOptions};
use rsip::SipMessage;
use str0m::media::Direction;

const WAIT: Duration = Duration::from_secs(10);
const SIPP_DONE: Duration = Duration::from_secs(20);

/// The gateway with one UDP trunk `pbx` to `sipp` and one widget `shop` on it.
fn gateway_for(sipp: &Sipp, widget: impl FnOnce(&mut WidgetSpec)) -> Gateway {
    let mut spec = WidgetSpec::new("shop", "pbx");
    widget(&mut spec);
    tokio::task::block_in_place(|| {
        Gateway::start(GatewayOptions {
            trunks: vec![TrunkSpec::udp("pbx", sipp.address())],
            widgets: vec![spec],
            ..GatewayOptions::default()
        })
    })
}

async fn dial(gateway: &Gateway, options: CallOptions) -> Call {
    Call::dial(&gateway.ws_url(), &gateway.widget_uri("shop"), options)
        .await
        .unwrap_or_else(|error| panic!("dial: {error}\n{}", gateway.log_text()))
}

fn sipp_done(sipp: &mut Sipp) {
    tokio::task::block_in_place(|| sipp.expect_success(SIPP_DONE));
}

fn echo() -> SippOptions {
    SippOptions {
        rtp_echo: true,
        ..SippOptions::default()
    }
}

/// Waits until the tone has been echoed long enough to measure, and checks what came back.
async fn hear_the_tone(call: &Call) {
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let frequency = call.dominant_frequency().expect("decoded audio came back");
    assert!((frequency - 440.0).abs() <= 5.0, "{frequency} Hz");
    let report = call.report();
    assert!(report.received.packets >= 50, "{report:?}");
    assert!(report.received.loss_ratio() < 0.01, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_calls_hears_the_echo_and_hangs_up() {
    let mut sipp = Sipp::uas("answer", echo());
    let gateway = gateway_for(&sipp, |_| {});
    let mut call = dial(&gateway, gateway.browser()).await;
    assert_eq!(call.wait_answered(WAIT).await.unwrap(), 200);
    assert!(call.history().contains(&CallEvent::Provisional {
        status: 180,
        has_sdp: false
    }));
    call.wait_media(WAIT).await.unwrap();
    hear_the_tone(&call).await;
    assert!(!call.report().received.round_trips.is_empty());
    assert_eq!(call.hang_up().await.unwrap(), Some(200));
    sipp_done(&mut sipp);
    let calls = gateway.call_records();
    let record = &calls[0];
    assert_eq!(record["widget"], "shop", "{calls:#}");
    assert_eq!(record["trunk"], "pbx", "{calls:#}");
    assert_eq!(record["destination"], "100", "{calls:#}");
    assert_eq!(record["end_cause"], "browser_hangup", "{calls:#}");
    assert_eq!(record["ended_by"], "browser", "{calls:#}");
    assert_eq!(record["browser"]["final_status"], 200, "{calls:#}");
    assert_eq!(record["pbx"]["final_status"], 200, "{calls:#}");
    assert!(record["answered_at"].is_string(), "{calls:#}");
    for leg in ["browser", "pbx"] {
        assert!(record[leg]["bytes_sent"].as_u64() > Some(0), "{calls:#}");
        assert!(record[leg]["bytes_received"].as_u64() > Some(0), "{calls:#}");
    }
    // Our own RTP leg measures jitter from the first packets; the browser leg's comes from str0m's
    // periodic statistics, which a three-second call may end before.
    assert!(record["pbx"]["jitter_ms"].is_number(), "{calls:#}");
}

/// The same call with the gateway on PostgreSQL (several nodes share one database): widget lookup and the
/// call record work there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_postgresql() {
    let mut sipp = Sipp::uas("answer", echo());
    let gateway = tokio::task::block_in_place(|| {
        Gateway::start(GatewayOptions {
            trunks: vec![TrunkSpec::udp("pbx", sipp.address())],
            widgets: vec![WidgetSpec::new("shop", "pbx")],
            postgres: true,
            ..GatewayOptions::default()
        })
    });
    let mut call = dial(&gateway, gateway.browser()).await;
    call.wait_answered(WAIT).await.unwrap();
    call.wait_media(WAIT).await.unwrap();
    assert_eq!(call.hang_up().await.unwrap(), Some(200));
    sipp_done(&mut sipp);
    let calls = gateway.call_records();
    assert_eq!(calls[0]["end_cause"], "browser_hangup", "{calls:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_hangs_up() {
    let mut sipp = Sipp::uas(
        "pbx_hangup",
        SippOptions {
            pause: Duration::from_secs(2),
            ..echo()
        },
    );
    let gateway = gateway_for(&sipp, |_| {});
    let mut call = dial(&gateway, gateway.browser()).await;
    call.wait_answered(WAIT).await.unwrap();
    assert_eq!(call.wait_ended(WAIT).await.unwrap().0, EndedBy::Remote);
    sipp_done(&mut sipp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_the_answer() {
    let mut sipp = Sipp::uas("ring_then_cancel", SippOptions::default());
    let gateway = gateway_for(&sipp, |_| {});
    let mut call = dial(&gateway, gateway.browser()).await;
    call.wait_for(WAIT, "ringing", |e| {
        matches!(e, CallEvent::Provisional { status: 180, .. })
    })
    .await
    .unwrap();
    assert_eq!(call.hang_up().await.unwrap(), Some(487));
    sipp_done(&mut sipp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_racing_the_200() {
    let mut sipp = Sipp::uas("cancel_race", SippOptions::default());
    let gateway = gateway_for(&sipp, |_| {});
    let mut call = dial(&gateway, gateway.browser()).await;
    call.wait_for(WAIT, "ringing", |e| {
        matches!(e, CallEvent::Provisional { status: 180, .. })
    })
    .await
    .unwrap();
    call.cancel().await.unwrap();
    // Either the gateway ends the browser leg with 487 and hangs up the PBX's 200 itself, or it passes
    // the 200 on and our BYE follows: both end the call, and SIPp must see ACK and BYE.
    let (by, _) = call.wait_ended(WAIT).await.unwrap();
    assert_eq!(by, EndedBy::Local);
    sipp_done(&mut sipp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_is_relayed() {
    let mut sipp = Sipp::uas("busy_486", SippOptions::default());
    let gateway = gateway_for(&sipp, |_| {});
    let mut call = dial(&gateway, gateway.browser()).await;
    assert_eq!(call.wait_ended(WAIT).await.unwrap(), (EndedBy::Remote, Some(486)));
    sipp_done(&mut sipp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_credentials_answer_401_and_407() {
    for scenario in ["auth_401", "auth_407"] {
        let mut sipp = Sipp::uas(scenario, SippOptions::default());
        let mut trunk = TrunkSpec::udp("pbx", sipp.address());
        trunk.credentials = Some(("callgate".to_owned(), "trunk-secret".to_owned()));
        let gateway = tokio::task::block_in_place(|| {
            Gateway::start(GatewayOptions {
                trunks: vec![trunk],
                widgets: vec![WidgetSpec::new("shop", "pbx")],
                ..GatewayOptions::default()
            })
        });
        let mut call = dial(&gateway, gateway.browser()).await;
        assert_eq!(call.wait_answered(WAIT).await.unwrap(), 200, "{scenario}");
        call.hang_up().await.unwrap();
        sipp_done(&mut sipp);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_trunk_fails_over_then_503_when_all_are_down() {
    let mut sipp = Sipp::uas("answer", echo());
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_address = dead.local_addr().unwrap();
    drop(dead);
    let mut first = TrunkSpec::udp("dead", dead_address);
    first.priority = 0;
    let mut second = TrunkSpec::udp("pbx", sipp.address());
    second.priority = 1;
    let gateway = tokio::task::block_in_place(|| {
        Gateway::start(GatewayOptions {
            trunks: vec![first, second],
            widgets: vec![WidgetSpec::new("shop", "dead")],
            // A short Timer B so that the dead trunk is given up quickly.
            config: vec![("sip", "invite_timeout_secs", 2.into())],
            ..GatewayOptions::default()
        })
    });
    let mut call = dial(&gateway, gateway.browser()).await;
    assert_eq!(call.wait_answered(Duration::from_secs(15)).await.unwrap(), 200);
    call.hang_up().await.unwrap();
    sipp_done(&mut sipp);

    // SIPp is gone now too: every trunk is down.
    let mut call = dial(&gateway, gateway.browser()).await;
    let (_, status) = call.wait_ended(Duration::from_secs(20)).await.unwrap();
    assert_eq!(status, Some(503));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_holds_and_resumes() {
    let mut sipp = Sipp::uas("expect_reinvite", echo());
    let gateway = gateway_for(&sipp, |_| {});
    let mut call = dial(&gateway, gateway.browser()).await;
    call.wait_answered(WAIT).await.unwrap();
    call.wait_media(WAIT).await.unwrap();
    assert_eq!(call.hold().await.unwrap(), 200);
    call.wait_for(WAIT, "recvonly", |e| {
        matches!(e, CallEvent::DirectionChanged(Direction::SendOnly))
    })
    .await
    .unwrap();
    assert_eq!(call.unhold().await.unwrap(), 200);
    hear_the_tone(&call).await;
    // The hold and the resume both reached the PBX as re-INVITEs.
    assert_eq!(sipp.received_requests("INVITE"), 3);
    call.hang_up().await.unwrap();
    sipp_done(&mut sipp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_holds_and_resumes() {
    let mut sipp = Sipp::uas(
        "hold_by_pbx",
        SippOptions {
            pause: Duration::from_secs(1),
            ..echo()
        },
    );
    let gateway = gateway_for(&sipp, |_| {});
    let mut call = dial(&gateway, gateway.browser()).await;
    call.wait_answered(WAIT).await.unwrap();
    call.wait_for(WAIT, "the PBX's hold", |e| {
        matches!(e, CallEvent::DirectionChanged(Direction::RecvOnly))
    })
    .await
    .unwrap();
    call.wait_for(WAIT, "the PBX's resume", |e| {
        matches!(e, CallEvent::DirectionChanged(Direction::SendRecv))
    })
    .await
    .unwrap();
    assert_eq!(call.wait_ended(WAIT).await.unwrap().0, EndedBy::Remote);
    sipp_done(&mut sipp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_media_before_the_answer() {
    let mut sipp = Sipp::uas(
        "early_media_183",
        SippOptions {
            pause: Duration::from_secs(3),
            ..echo()
        },
    );
    let gateway = gateway_for(&sipp, |_| {});
    let mut call = dial(&gateway, gateway.browser()).await;
    call.wait_for(WAIT, "183 with SDP", |e| {
        matches!(
            e,
            CallEvent::Provisional {
                status: 183,
                has_sdp: true
            }
        )
    })
    .await
    .unwrap();
    call.wait_media(WAIT).await.unwrap();
    hear_the_tone(&call).await;
    assert!(
        call.report().answered.is_none(),
        "the tone came back before the 200"
    );
    call.wait_answered(WAIT).await.unwrap();
    call.hang_up().await.unwrap();
    sipp_done(&mut sipp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_keepalive_marks_the_trunk_down_and_up() {
    let sipp = Sipp::uas(
        "options_responder",
        SippOptions {
            calls: 1000,
            ..SippOptions::default()
        },
    );
    let gateway = tokio::task::block_in_place(|| {
        Gateway::start(GatewayOptions {
            trunks: vec![TrunkSpec::udp("pbx", sipp.address())],
            widgets: vec![WidgetSpec::new("shop", "pbx")],
            // An OPTIONS unanswered for 1 s fails, long before the transaction's Timer F (32 s here):
            // two failures mark the trunk down within seconds, which the 60 s wait below could not see
            // if the keepalive waited for Timer F twice.
            config: vec![
                ("sip", "options_ping_interval_secs", 1.into()),
                ("sip", "options_timeout_secs", 1.into()),
            ],
            ..GatewayOptions::default()
        })
    });
    let trunk_up = |gateway: &Gateway| {
        let (_, metrics) = gateway.http_get("/metrics");
        metrics
            .lines()
            .find(|line| line.starts_with("callgate_trunk_up{trunk=\"pbx\"}"))
            .map(|line| line.ends_with(" 1"))
    };
    let wait_for = |gateway: &Gateway, up: bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if trunk_up(gateway) == Some(up) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("trunk never went {}", if up { "up" } else { "down" });
    };
    tokio::task::block_in_place(|| {
        wait_for(&gateway, true);
        sipp.freeze();
        wait_for(&gateway, false);
        sipp.thaw();
        wait_for(&gateway, true);
    });
}

/// Takes about a minute: the PBX asks for 90 s session intervals (the smallest RFC 4028 allows) with the
/// gateway as refresher, so the refresh comes at 45 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_timer_refresh_toward_the_pbx() {
    let mut sipp = Sipp::uas(
        "expect_reinvite",
        SippOptions {
            recv_timeout: Duration::from_secs(70),
            ..echo()
        },
    );
    let gateway = gateway_for(&sipp, |_| {});
    let mut call = dial(&gateway, gateway.browser()).await;
    call.wait_answered(WAIT).await.unwrap();
    assert_eq!(
        sipp.received_requests("UPDATE") + sipp.received_requests("INVITE"),
        1
    );
    tokio::time::sleep(Duration::from_secs(50)).await;
    let refreshes = sipp.received_requests("UPDATE") + sipp.received_requests("INVITE") - 1;
    assert!(refreshes >= 1, "no refresh within 50 s of a 90 s session");
    assert_eq!(
        call.hang_up().await.unwrap(),
        Some(200),
        "the call outlived its refresh"
    );
    sipp_done(&mut sipp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_websocket_ends_the_call_toward_the_pbx() {
    let mut sipp = Sipp::uas("answer", echo());
    let gateway = gateway_for(&sipp, |_| {});
    let mut call = dial(&gateway, gateway.browser()).await;
    call.wait_answered(WAIT).await.unwrap();
    call.close_websocket();
    assert_eq!(call.wait_ended(WAIT).await.unwrap(), (EndedBy::Transport, None));
    // The BYE toward the PBX within 2 s: SIPp's call completes.
    tokio::task::block_in_place(|| sipp.expect_success(Duration::from_secs(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals() {
    let sipp = Sipp::uas("answer", SippOptions::default());
    let gateway = tokio::task::block_in_place(|| {
        let mut guarded = WidgetSpec::new("guarded", "pbx");
        guarded.require_token = true;
        let mut single = WidgetSpec::new("single", "pbx");
        single.max_per_minute = Some(1);
        Gateway::start(GatewayOptions {
            trunks: vec![TrunkSpec::udp("pbx", sipp.address())],
            widgets: vec![WidgetSpec::new("shop", "pbx"), guarded, single],
            ..GatewayOptions::default()
        })
    });
    let refused = |target: String, options: CallOptions| {
        let url = gateway.ws_url();
        async move {
            let mut call = Call::dial(&url, &target, options).await.unwrap();
            call.wait_ended(WAIT).await.unwrap().1
        }
    };
    let unknown = "sip:no-such-widget@127.0.0.1".to_owned();
    assert_eq!(refused(unknown, gateway.browser()).await, Some(404));
    // The attempt is on record, with its cause and source, although no widget took it.
    let record = wait_for_record(&gateway, "no-such-widget").await;
    assert_eq!(record["widget"], serde_json::Value::Null, "{record:#}");
    assert_eq!(record["destination"], serde_json::Value::Null, "{record:#}");
    assert_eq!(record["end_cause"], "unknown_widget", "{record:#}");
    assert_eq!(record["ended_by"], "gateway", "{record:#}");
    assert_eq!(record["source_ip"], "127.0.0.1", "{record:#}");
    assert_eq!(record["browser"]["final_status"], 404, "{record:#}");
    assert!(record["ended_at"].is_string(), "{record:#}");
    let wrong_origin = CallOptions {
        origin: Some("https://evil.example".to_owned()),
        ..gateway.browser()
    };
    assert_eq!(refused(gateway.widget_uri("shop"), wrong_origin).await, Some(403));
    let no_token = gateway.browser();
    assert_eq!(refused(gateway.widget_uri("guarded"), no_token).await, Some(403));
    let token = |value: String| CallOptions {
        headers: vec![("X-Callgate-Token".to_owned(), value)],
        ..gateway.browser()
    };
    let forged = token("1.deadbeef".to_owned());
    assert_eq!(refused(gateway.widget_uri("guarded"), forged).await, Some(403));
    let expired = token(gateway.token("guarded", -60));
    assert_eq!(refused(gateway.widget_uri("guarded"), expired).await, Some(403));

    // Over the per-minute limit: 503 with Retry-After.
    let mut first = Call::dial(
        &gateway.ws_url(),
        &gateway.widget_uri("single"),
        gateway.browser(),
    )
    .await
    .unwrap();
    first.wait_answered(WAIT).await.unwrap();
    let mut second = Call::dial(
        &gateway.ws_url(),
        &gateway.widget_uri("single"),
        gateway.browser(),
    )
    .await
    .unwrap();
    assert_eq!(second.wait_ended(WAIT).await.unwrap().1, Some(503));
    let retry_after = second.history().iter().find_map(|e| match e {
        CallEvent::Rejected(response) => response.header_value("Retry-After").map(str::to_owned),
        _ => None,
    });
    assert!(retry_after.is_some(), "{:?}", second.history());
    first.hang_up().await.unwrap();
    let log = gateway.log_text();
    for reason in ["unknown widget", "origin", "token", "per minute"] {
        assert!(log.contains(reason), "no refusal logged for {reason}:\n{log}");
    }
}

/// The finished call record of the attempt that dialled `public_id` (records are written in the background).
async fn wait_for_record(gateway: &Gateway, public_id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let listed =
            tokio::task::block_in_place(|| gateway.cli().run(&["calls", "list", "--json"]).success());
        let calls: serde_json::Value = serde_json::from_str(&listed).unwrap();
        let found = calls.as_array().and_then(|calls| {
            calls
                .iter()
                .find(|call| call["dialled"] == public_id && call["end_cause"].is_string())
                .cloned()
        });
        match found {
            Some(record) => return record,
            None if std::time::Instant::now() > deadline => {
                panic!("no record for {public_id}: {calls:#}\n{}", gateway.log_text())
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_is_accepted() {
    let mut sipp = Sipp::uas("answer", SippOptions::default());
    let gateway = gateway_for(&sipp, |widget| widget.require_token = true);
    let options = CallOptions {
        headers: vec![("X-Callgate-Token".to_owned(), gateway.token("shop", 300))],
        ..gateway.browser()
    };
    let mut call = dial(&gateway, options).await;
    call.wait_answered(WAIT).await.unwrap();
    call.hang_up().await.unwrap();
    sipp_done(&mut sipp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_concurrency_limit_is_486() {
    let sipp = Sipp::uas(
        "answer",
        SippOptions {
            calls: 2,
            ..SippOptions::default()
        },
    );
    let gateway = gateway_for(&sipp, |widget| widget.max_concurrent = Some(1));
    let mut first = dial(&gateway, gateway.browser()).await;
    first.wait_answered(WAIT).await.unwrap();
    let mut second = dial(&gateway, gateway.browser()).await;
    assert_eq!(second.wait_ended(WAIT).await.unwrap().1, Some(486));
    first.hang_up().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sip_gets_400_and_nothing_else_breaks() {
    let mut sipp = Sipp::uas("answer", echo());
    let gateway = gateway_for(&sipp, |_| {});
    let mut call = dial(&gateway, gateway.browser()).await;
    call.wait_answered(WAIT).await.unwrap();
    call.wait_media(WAIT).await.unwrap();

    // Another connection sends garbage with readable headers: 400, and the connection stays usable.
    let options = WsOptions {
        origin: Some(ORIGIN.to_owned()),
        ..WsOptions::default()
    };
    let mut raw = SipWebSocket::connect(&gateway.ws_url(), &options).await.unwrap();
    raw.send(
        "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS raw.invalid;branch=z9hG4bKbad1\r\n\
         From: <sip:a@raw.invalid>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: bad-1\r\nCSeq: x OPTIONS\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = raw.recv_timeout(WAIT).await.unwrap().expect("an answer");
    // The 400 leaves the unreadable CSeq out, so that a strict client parses it.
    match message::parse(&answer) {
        Ok(SipMessage::Response(response)) => {
            assert_eq!(response.status_code.code(), 400);
            assert_eq!(response.call_id(), Some("bad-1"));
            assert_eq!(response.cseq().map(|cseq| cseq.method), Ok(rsip::Method::Options));
            let warning = response.header_value("Warning").unwrap_or_default();
            assert!(warning.contains("CSeq"), "{warning}");
        }
        other => panic!("{other:?}: {}", String::from_utf8_lossy(&answer)),
    }
    raw.send(&b"\x00\x01 not SIP at all"[..]).await.unwrap();
    raw.send(
        "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS raw.invalid;branch=z9hG4bKok1\r\nMax-Forwards: 70\r\n\
         From: <sip:a@raw.invalid>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: ok-1\r\nCSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = raw
        .recv_timeout(WAIT)
        .await
        .unwrap()
        .expect("the connection survived");
    match message::parse(&answer) {
        Ok(SipMessage::Response(response)) => assert_eq!(response.call_id(), Some("ok-1")),
        other => panic!("{other:?}"),
    }

    // The call on its own connection is unaffected, even by garbage on that connection.
    call.send_raw("INVITE garbage\r\n\r\n").await.unwrap();
    hear_the_tone(&call).await;
    assert_eq!(call.hang_up().await.unwrap(), Some(200));
    sipp_done(&mut sipp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_dtmf_reaches_the_pbx_once_per_digit() {
    let recorder = RtpRecorder::start();
    let mut sipp = Sipp::uas(
        "record_dtmf",
        SippOptions {
            keys: vec![("rtp_port".to_owned(), recorder.address().port().to_string())],
            ..SippOptions::default()
        },
    );
    let gateway = gateway_for(&sipp, |_| {});
    let mut call = dial(&gateway, gateway.browser()).await;
    call.wait_answered(WAIT).await.unwrap();
    call.wait_media(WAIT).await.unwrap();
    for digit in ['1', '5', '#'] {
        assert_eq!(
            call.send_info_dtmf(digit, Duration::from_millis(120))
                .await
                .unwrap(),
            200
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    call.send_rfc4733('9', Duration::from_millis(120)).await.unwrap();
    let all_four =
        tokio::task::block_in_place(|| recorder.wait_until(WAIT, |r| r.dtmf_events(101).len() >= 4));
    assert!(all_four, "{:?}", recorder.dtmf_events(101));
    let digits: String = recorder.dtmf_events(101).iter().map(|e| e.digit).collect();
    assert_eq!(digits, "15#9", "each digit exactly once");
    call.hang_up().await.unwrap();
    sipp_done(&mut sipp);
}
