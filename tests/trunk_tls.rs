//! SIP over TLS toward trunks, end to end: the real `callgate serve` calls a trunk added with
//! `--transport tls`, whose PBX is SIPp behind a TLS front (`common::tls`: Debian's SIPp has no TLS) with a
//! certificate made by `openssl` for this test and trusted through `sip.tls_ca_file`.
//!
//! Covered: a call with the tone echoed and BYE from the browser, BYE from the PBX on the gateway's own
//! connection, OPTIONS keepalives over one reused connection to a trunk named by host name (checked against
//! the certificate, sent as SNI), and a PBX whose certificate does not verify: failover to the next trunk,
//! 503 when it is the only one.

#[allow(dead_code, reason = "each test crate uses a part of the shared helpers")]
mod common;

use std::time::Duration;

use callgate::client::{Call, EndedBy};
use common::gateway::{Gateway, GatewayOptions, TrunkSpec, WidgetSpec};
use common::sipp::{Sipp, SippOptions, SippTransport};
use common::tls::{PbxCertificate, TlsFront};

const WAIT: Duration = Duration::from_secs(10);
const SIPP_DONE: Duration = Duration::from_secs(20);

/// A TLS trunk `name` to `address`.
fn tls_trunk(name: &str, address: std::net::SocketAddr, priority: u32) -> TrunkSpec {
    let mut trunk = TrunkSpec::udp(name, address);
    trunk.transport = "tls";
    trunk.priority = priority;
    trunk
}

/// SIPp over TCP, where the TLS front relays to.
fn sipp_over_tcp(scenario: &str, options: SippOptions) -> Sipp {
    Sipp::uas(
        scenario,
        SippOptions {
            transport: SippTransport::Tcp,
            ..options
        },
    )
}

/// The gateway with `trunks`, widget `shop` on the first, trusting `trusted` through `sip.tls_ca_file`.
fn gateway_with(
    trusted: &PbxCertificate,
    trunks: Vec<TrunkSpec>,
    mut config: Vec<(&'static str, &'static str, toml::Value)>,
) -> Gateway {
    let widget = WidgetSpec::new("shop", &trunks[0].name);
    config.push((
        "sip",
        "tls_ca_file",
        trusted.cert_path().display().to_string().into(),
    ));
    tokio::task::block_in_place(|| {
        Gateway::start(GatewayOptions {
            trunks,
            widgets: vec![widget],
            config,
            ..GatewayOptions::default()
        })
    })
}

/// SIPp running `scenario` over TCP behind a TLS front with a new certificate, and the gateway trusting
/// that certificate with one TLS trunk `pbx` to the front. The certificate's files live as long as the
/// front.
async fn one_tls_pbx(
    scenario: &str,
    options: SippOptions,
    config: Vec<(&'static str, &'static str, toml::Value)>,
) -> (Sipp, TlsFront, Gateway) {
    let certificate = PbxCertificate::generate("pbx.test");
    let sipp = sipp_over_tcp(scenario, options);
    let front = TlsFront::start(certificate, sipp.address()).await;
    let gateway = gateway_with(
        front.certificate(),
        vec![tls_trunk("pbx", front.address(), 0)],
        config,
    );
    (sipp, front, gateway)
}

async fn dial(gateway: &Gateway) -> Call {
    Call::dial(&gateway.ws_url(), &gateway.widget_uri("shop"), gateway.browser())
        .await
        .unwrap_or_else(|error| panic!("dial: {error}\n{}", gateway.log_text()))
}

fn sipp_done(sipp: &mut Sipp) {
    tokio::task::block_in_place(|| sipp.expect_success(SIPP_DONE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_tls_with_the_echo_and_bye_from_the_browser() {
    let echo = SippOptions {
        rtp_echo: true,
        ..SippOptions::default()
    };
    let (mut sipp, front, gateway) = one_tls_pbx("answer", echo, Vec::new()).await;
    let mut call = dial(&gateway).await;
    assert_eq!(call.wait_answered(WAIT).await.unwrap(), 200);
    call.wait_media(WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let frequency = call.dominant_frequency().expect("decoded audio came back");
    assert!((frequency - 440.0).abs() <= 5.0, "{frequency} Hz");
    assert_eq!(call.hang_up().await.unwrap(), Some(200));
    sipp_done(&mut sipp);

    // INVITE, ACK and BYE all went through one verified TLS connection, addressed as TLS.
    assert_eq!(front.handshakes(), 1);
    let traces = sipp.traces();
    let tls_port = front.address().port();
    // URI parameter values are case-insensitive (RFC 3261 §19.1.4); rsip prints this one in capitals.
    assert!(
        traces.to_ascii_lowercase().contains(&format!(
            "invite sip:100@127.0.0.1:{tls_port};transport=tls sip/2.0"
        )),
        "{traces}"
    );
    assert!(traces.contains("Via: SIP/2.0/TLS 127.0.0.1:"), "{traces}");
    assert!(traces.contains(";transport=tls>"), "no TLS Contact: {traces}");
    assert_eq!(sipp.received_requests("BYE"), 1);
    let calls = gateway.call_records();
    assert_eq!(calls[0]["trunk"], "pbx", "{calls:#}");
    assert_eq!(calls[0]["end_cause"], "browser_hangup", "{calls:#}");
    assert_eq!(calls[0]["pbx"]["final_status"], 200, "{calls:#}");
}

/// The PBX's BYE comes back on the connection the gateway opened (there is no TLS listener to open one to).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pbx_hangs_up_over_tls() {
    let short_call = SippOptions {
        pause: Duration::from_secs(1),
        ..SippOptions::default()
    };
    let (mut sipp, front, gateway) = one_tls_pbx("pbx_hangup", short_call, Vec::new()).await;
    let mut call = dial(&gateway).await;
    call.wait_answered(WAIT).await.unwrap();
    assert_eq!(call.wait_ended(WAIT).await.unwrap().0, EndedBy::Remote);
    sipp_done(&mut sipp);
    assert_eq!(front.handshakes(), 1);
    let calls = gateway.call_records();
    assert_eq!(calls[0]["ended_by"], "pbx", "{calls:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_keepalives_go_over_one_tls_connection() {
    let responder = SippOptions {
        calls: 1000,
        ..SippOptions::default()
    };
    let sipp = sipp_over_tcp("options_responder", responder);
    let front = TlsFront::start(PbxCertificate::generate("pbx.test"), sipp.address()).await;
    // Named by host name this time: the certificate is checked for it, and it is sent as SNI.
    let mut trunk = tls_trunk("pbx", front.address(), 0);
    trunk.host = Some("localhost".to_owned());
    let keepalive = vec![("sip", "options_ping_interval_secs", 1.into())];
    let gateway = gateway_with(front.certificate(), vec![trunk], keepalive);
    let trunk_up = |gateway: &Gateway| {
        let (_, metrics) = gateway.http_get("/metrics");
        metrics
            .lines()
            .find(|line| line.starts_with("callgate_trunk_up{trunk=\"pbx\"}"))
            .is_some_and(|line| line.ends_with(" 1"))
    };
    tokio::task::block_in_place(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline
            && !(trunk_up(&gateway) && sipp.received_requests("OPTIONS") >= 3)
        {
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    assert!(
        trunk_up(&gateway),
        "the TLS trunk never went up\n{}",
        gateway.log_text()
    );
    assert!(sipp.received_requests("OPTIONS") >= 3);
    assert_eq!(front.handshakes(), 1, "keepalives must reuse the connection");
    assert_eq!(front.server_names(), vec!["localhost".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_certificate_fails_over_to_the_next_trunk() {
    let mut sipp = sipp_over_tcp("answer", SippOptions::default());
    let good = TlsFront::start(PbxCertificate::generate("pbx.test"), sipp.address()).await;
    let untrusted = PbxCertificate::generate("impostor.test");
    let impostor = TlsFront::start(untrusted, sipp.address()).await;
    let gateway = gateway_with(
        good.certificate(),
        vec![
            tls_trunk("impostor", impostor.address(), 0),
            tls_trunk("pbx", good.address(), 1),
        ],
        Vec::new(),
    );
    let mut call = dial(&gateway).await;
    assert_eq!(call.wait_answered(WAIT).await.unwrap(), 200);
    assert_eq!(call.hang_up().await.unwrap(), Some(200));
    sipp_done(&mut sipp);
    assert_eq!(impostor.handshakes(), 0);
    assert!(
        gateway.log_text().contains("tls handshake failed"),
        "{}",
        gateway.log_text()
    );
    let calls = gateway.call_records();
    assert_eq!(calls[0]["trunk"], "pbx", "{calls:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_certificate_on_the_only_trunk_is_503() {
    let trusted = PbxCertificate::generate("pbx.test");
    let untrusted = PbxCertificate::generate("impostor.test");
    let sipp = sipp_over_tcp("answer", SippOptions::default());
    let impostor = TlsFront::start(untrusted, sipp.address()).await;
    let gateway = gateway_with(
        &trusted,
        vec![tls_trunk("impostor", impostor.address(), 0)],
        Vec::new(),
    );
    let started = std::time::Instant::now();
    let mut call = dial(&gateway).await;
    let (_, status) = call.wait_ended(WAIT).await.unwrap();
    assert_eq!(status, Some(503));
    // A refused certificate is a transport error at once, not a Timer B timeout.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(impostor.handshakes(), 0);
    assert_eq!(sipp.received_requests("INVITE"), 0);
}
