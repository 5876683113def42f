//! Interop with a real SIP proxy on the PBX side: Kamailio, as the trunk's outbound proxy, challenges the
//! gateway's INVITE with 407, record-routes the dialog and relays to SIPp. The gateway must answer the
//! challenge with the trunk's credentials, keep Kamailio's Record-Route as the dialog's route set so that
//! in-dialog requests in both directions pass through the proxy, and carry audio both ways.

#[allow(dead_code, reason = "each test crate uses a part of the shared helpers")]
mod common;

use std::time::Duration;

use callgate::client::{Call, EndedBy};
use common::gateway::{Gateway, GatewayOptions, TrunkSpec, WidgetSpec};
use common::kamailio::Kamailio;
use common::sipp::{Sipp, SippOptions};

const WAIT: Duration = Duration::from_secs(10);
const PASSWORD: &str = "proxy-secret";

/// SIPp answering as the PBX behind the proxy, echoing audio; `pause` before `pbx_hangup` hangs up.
fn pbx(scenario: &str, pause: Duration) -> Sipp {
    Sipp::uas(
        scenario,
        SippOptions {
            rtp_echo: true,
            pause,
            ..SippOptions::default()
        },
    )
}

fn gateway_behind(kamailio: &Kamailio, sipp: &Sipp, password: &str) -> Gateway {
    let mut trunk = TrunkSpec::udp("pbx", sipp.address());
    trunk.outbound_proxy = Some(kamailio.address());
    trunk.credentials = Some(("shop".to_owned(), password.to_owned()));
    tokio::task::block_in_place(|| {
        Gateway::start(GatewayOptions {
            trunks: vec![trunk],
            widgets: vec![WidgetSpec::new("shop", "pbx")],
            ..GatewayOptions::default()
        })
    })
}

async fn dial(gateway: &Gateway) -> Call {
    Call::dial(&gateway.ws_url(), &gateway.widget_uri("shop"), gateway.browser())
        .await
        .unwrap_or_else(|error| panic!("dial: {error}\n{}", gateway.log_text()))
}

async fn answered(gateway: &Gateway, kamailio: &Kamailio) -> Call {
    let mut call = dial(gateway).await;
    assert_eq!(
        call.wait_answered(WAIT).await.unwrap(),
        200,
        "{}",
        kamailio.log_text()
    );
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_kamailio_answers_its_challenge_and_routes_bye_through_it() {
    let kamailio = tokio::task::block_in_place(|| Kamailio::start(PASSWORD));
    let mut sipp = pbx("answer", Duration::from_millis(500));
    let gateway = gateway_behind(&kamailio, &sipp, PASSWORD);
    let mut call = answered(&gateway, &kamailio).await;
    call.wait_media(WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let heard = call.dominant_frequency().expect("decoded audio came back");
    assert!((heard - 440.0).abs() <= 5.0, "{heard} Hz");

    assert_eq!(call.hang_up().await.unwrap(), Some(200));
    tokio::task::block_in_place(|| sipp.expect_success(Duration::from_secs(20)));
    let log = kamailio.log_text();
    assert!(log.contains("challenging INVITE"), "{log}");
    assert!(log.contains("authenticated INVITE"), "{log}");
    assert!(
        log.contains("in-dialog BYE routed"),
        "the BYE bypassed the proxy:\n{log}"
    );
    let calls = gateway.call_records();
    assert_eq!(calls[0]["end_cause"], "browser_hangup", "{calls:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pbx_hangs_up_through_kamailio() {
    let kamailio = tokio::task::block_in_place(|| Kamailio::start(PASSWORD));
    let mut sipp = pbx("pbx_hangup", Duration::from_secs(2));
    let gateway = gateway_behind(&kamailio, &sipp, PASSWORD);
    let mut call = answered(&gateway, &kamailio).await;
    assert_eq!(call.wait_ended(WAIT).await.unwrap().0, EndedBy::Remote);
    tokio::task::block_in_place(|| sipp.expect_success(Duration::from_secs(20)));
    let log = kamailio.log_text();
    assert!(
        log.contains("in-dialog BYE routed"),
        "the BYE bypassed the proxy:\n{log}"
    );
    let calls = gateway.call_records();
    assert_eq!(calls[0]["end_cause"], "pbx_hangup", "{calls:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_ends_the_call_with_the_proxys_refusal() {
    let kamailio = tokio::task::block_in_place(|| Kamailio::start(PASSWORD));
    let sipp = pbx("answer", Duration::from_millis(500));
    let gateway = gateway_behind(&kamailio, &sipp, "wrong-password");
    let mut call = dial(&gateway).await;
    let (by, status) = call.wait_ended(WAIT).await.unwrap();
    assert_eq!(by, EndedBy::Remote, "{}", gateway.log_text());
    // A trunk whose credentials the proxy keeps refusing is the operator's fault, not the caller's: the
    // browser gets 503, the record keeps what the proxy said.
    assert_eq!(
        status,
        Some(503),
        "{}\n{}",
        gateway.log_text(),
        kamailio.log_text()
    );
    let calls = gateway.call_records();
    assert!(calls[0]["answered_at"].is_null(), "{calls:#}");
    assert_eq!(calls[0]["end_cause"], "pbx_rejected", "{calls:#}");
}
