//! Interop with a real, independent SIP/RTP stack as the PBX: baresip auto-answers the gateway's call
//! with the law it is configured for and plays a 1000 Hz sine while the browser stand-in plays 440 Hz.
//! Each side must hear the other's tone through Opus ⇄ G.711 transcoding, and a BYE from either side
//! must end both legs and leave the right call record.

#[allow(dead_code, reason = "each test crate uses a part of the shared helpers")]
mod common;
#[path = "common/tone.rs"]
mod tone;

use std::time::Duration;

use callgate::client::{Call, EndedBy};
use common::baresip::{BARESIP_TONE_HZ, Baresip};
use common::gateway::{Gateway, GatewayOptions, TrunkSpec, WidgetSpec};
use tone::{TONE_HZ, peak_frequency};

const WAIT: Duration = Duration::from_secs(10);

fn gateway_for(baresip: &Baresip) -> Gateway {
    tokio::task::block_in_place(|| {
        Gateway::start(GatewayOptions {
            trunks: vec![TrunkSpec::udp("pbx", baresip.address())],
            widgets: vec![WidgetSpec::new("shop", "pbx")],
            ..GatewayOptions::default()
        })
    })
}

async fn answered_call(gateway: &Gateway, baresip: &Baresip) -> Call {
    let mut call = Call::dial(&gateway.ws_url(), &gateway.widget_uri("shop"), gateway.browser())
        .await
        .unwrap_or_else(|error| panic!("dial: {error}\n{}", gateway.log_text()));
    let status = call.wait_answered(WAIT).await.unwrap();
    assert_eq!(status, 200, "{}\n{}", gateway.log_text(), baresip.log_text());
    call.wait_media(WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let heard = call.dominant_frequency().expect("decoded audio came back");
    assert!(
        (heard - f64::from(BARESIP_TONE_HZ)).abs() <= 5.0,
        "the browser heard {heard} Hz, not baresip's {BARESIP_TONE_HZ} Hz"
    );
    let report = call.report();
    assert!(report.received.packets >= 100, "{report:?}");
    assert!(report.received.loss_ratio() < 0.01, "{report:?}");
    call
}

/// baresip hears the browser's 440 Hz in what it decoded (the last 2 s of its dump, past the start).
fn assert_baresip_heard_the_browser(baresip: &Baresip) {
    let samples = baresip.decoded_audio();
    assert!(
        samples.len() >= 8000 * 2,
        "baresip decoded only {} samples",
        samples.len()
    );
    let tail = &samples[samples.len() - 8000 * 2..];
    let heard = peak_frequency(tail);
    assert!(
        (heard - TONE_HZ).abs() <= 5.0,
        "baresip heard {heard} Hz, not the browser's 440 Hz ({})",
        baresip.directory().display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_answers_with_pcmu_and_hangs_up() {
    let baresip = tokio::task::block_in_place(|| Baresip::start("PCMU"));
    let gateway = gateway_for(&baresip);
    let mut call = answered_call(&gateway, &baresip).await;

    let reply = tokio::task::block_in_place(|| baresip.command("hangup"));
    assert!(reply.contains(r#""ok":true"#), "{reply}");
    assert_eq!(call.wait_ended(WAIT).await.unwrap().0, EndedBy::Remote);
    tokio::task::block_in_place(|| baresip.wait_for_log("terminated", WAIT));
    assert_baresip_heard_the_browser(&baresip);

    let calls = gateway.call_records();
    assert_eq!(calls[0]["end_cause"], "pbx_hangup", "{calls:#}");
    assert_eq!(calls[0]["ended_by"], "pbx", "{calls:#}");
    assert_eq!(calls[0]["pbx"]["codec"], "pcmu", "{calls:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_answers_with_pcma_and_the_browser_hangs_up() {
    let baresip = tokio::task::block_in_place(|| Baresip::start("PCMA"));
    let gateway = gateway_for(&baresip);
    let call = answered_call(&gateway, &baresip).await;

    assert_eq!(call.hang_up().await.unwrap(), Some(200));
    tokio::task::block_in_place(|| baresip.wait_for_log("terminated", WAIT));
    assert_baresip_heard_the_browser(&baresip);

    let calls = gateway.call_records();
    assert_eq!(calls[0]["end_cause"], "browser_hangup", "{calls:#}");
    assert_eq!(calls[0]["pbx"]["codec"], "pcma", "{calls:#}");
}
