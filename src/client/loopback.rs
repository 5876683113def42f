//! [`Call`] end to end over real sockets, against a small gateway built from callgate's own parts: the
//! HTTP/WebSocket listener of `transport::http`, the SIP message and dialog code, and a
//! [`WebrtcLeg`] that echoes the client's audio back. It proves the client's side of every exchange
//! the gateway integration tests rely on (WebSocket handshake, INVITE to ACK, ICE/DTLS, audio and
//! its measurement, hold, DTMF both ways, CANCEL, digest, BYE either way, raw frames) before the
//! real gateway's signaling exists.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsip::{Method, Request, SipMessage};
use str0m::media::Direction;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};

use super::audio::SendCodec;
use super::call::{Call, CallEvent, CallOptions, OfferKind};
use super::ua::EndedBy;
use crate::media::webrtc_leg::{CodecPrefs, Event, Output, WebrtcLeg, WebrtcLegConfig};
use crate::sip::dialog::uas_response;
use crate::sip::message::{self, MessageHeaders, NameAddr, Via};
use crate::sip::{Dialog, Transport};
use crate::transport::WsEvent;
use crate::transport::http::{self, HttpContext, Readiness};

const WAIT: Duration = Duration::from_secs(10);
const PASSWORD: &str = "s3cret";

/// How the test gateway answers an INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// 100, 180, 200.
    Answer,
    /// 100, 183 with SDP, then 200 after 300 ms.
    EarlyMedia,
    /// 100, 180, and nothing more until CANCEL.
    RingOnly,
    /// 401 with a digest challenge, then as `Answer` when the credentials verify.
    Challenge,
    /// 486 Busy Here.
    Busy,
}

/// What the test gateway saw.
#[derive(Debug)]
enum Seen {
    Opened { origin: Option<String> },
    Request(Box<Request>),
    Dtmf(char),
    AudioPackets(u64),
    Closed,
}

enum Order {
    Bye,
    Reinvite(Direction),
}

struct TestGateway {
    url: String,
    seen: mpsc::UnboundedReceiver<Seen>,
    orders: mpsc::UnboundedSender<Order>,
    _shutdown: watch::Sender<bool>,
}

impl TestGateway {
    async fn start(behaviour: Behaviour) -> TestGateway {
        TestGateway::start_with(behaviour, None).await
    }

    /// With `tls`, the listener speaks WSS.
    async fn start_with(behaviour: Behaviour, tls: Option<tokio_rustls::TlsAcceptor>) -> TestGateway {
        let (ws_tx, ws_rx) = mpsc::channel(64);
        let context = Arc::new(HttpContext::new(ws_tx, 65_536, 16, Arc::new(|| Readiness::Ready)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        let url = format!("{scheme}://{}/ws", listener.local_addr().unwrap());
        let (shutdown_tx, shutdown) = watch::channel(false);
        tokio::spawn(http::serve(listener, tls, context, shutdown));
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let (orders, order_rx) = mpsc::unbounded_channel();
        let state = GatewayState {
            behaviour,
            local: udp.local_addr().unwrap(),
            udp,
            seen: seen_tx,
            outbound: None,
            invite: None,
            dialog: None,
            leg: None,
            leg_deadline: None,
            audio_packets: 0,
            pending_reinvite: None,
            delayed_answer: None,
        };
        tokio::spawn(state.run(ws_rx, order_rx));
        TestGateway {
            url,
            seen,
            orders,
            _shutdown: shutdown_tx,
        }
    }

    /// The next thing seen that `wanted` accepts.
    async fn expect(&mut self, what: &str, mut wanted: impl FnMut(&Seen) -> bool) -> Seen {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(seen)) if wanted(&seen) => return seen,
                Ok(Some(_)) => {}
                _ => panic!("the test gateway never saw {what}"),
            }
        }
    }

    async fn expect_request(&mut self, method: Method) -> Request {
        match self
            .expect(
                &method.to_string(),
                |s| matches!(s, Seen::Request(r) if r.method == method),
            )
            .await
        {
            Seen::Request(request) => *request,
            _ => unreachable!("expect returned what the filter accepted"),
        }
    }
}

struct GatewayState {
    behaviour: Behaviour,
    udp: UdpSocket,
    local: SocketAddr,
    seen: mpsc::UnboundedSender<Seen>,
    outbound: Option<mpsc::Sender<Bytes>>,
    invite: Option<Request>,
    dialog: Option<Dialog>,
    leg: Option<WebrtcLeg>,
    leg_deadline: Option<Instant>,
    audio_packets: u64,
    pending_reinvite: Option<u32>,
    /// The 200 of an early-media call, sent at this time.
    delayed_answer: Option<(Instant, String)>,
}

impl GatewayState {
    async fn run(mut self, mut ws: mpsc::Receiver<WsEvent>, mut orders: mpsc::UnboundedReceiver<Order>) {
        let mut buffer = vec![0_u8; 2048];
        loop {
            self.drain_leg().await;
            let deadline = [self.leg_deadline, self.delayed_answer.as_ref().map(|(at, _)| *at)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
            tokio::select! {
                event = ws.recv() => match event {
                    Some(WsEvent::Opened { info, outbound, .. }) => {
                        self.outbound = Some(outbound);
                        let _ = self.seen.send(Seen::Opened { origin: info.origin });
                    }
                    Some(WsEvent::Message { bytes, .. }) => self.handle_sip(&bytes).await,
                    Some(WsEvent::Closed { .. }) => {
                        let _ = self.seen.send(Seen::Closed);
                    }
                    None => return,
                },
                received = self.udp.recv_from(&mut buffer) => {
                    if let (Ok((length, source)), Some(leg)) = (received, &mut self.leg) {
                        leg.handle_receive(Instant::now(), source, self.local, &buffer[..length]);
                    }
                }
                order = orders.recv() => match order {
                    Some(order) => self.handle_order(order).await,
                    None => return,
                },
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                    let now = Instant::now();
                    if let Some(leg) = &mut self.leg {
                        leg.handle_timeout(now);
                    }
                    if self.delayed_answer.as_ref().is_some_and(|(at, _)| *at <= now)
                        && let (Some((_, answer)), Some(invite)) = (self.delayed_answer.take(), self.invite.clone())
                    {
                        self.send_ok_with_sdp(&invite, &answer).await;
                    }
                }
            }
        }
    }

    async fn drain_leg(&mut self) {
        let Some(leg) = &mut self.leg else {
            self.leg_deadline = None;
            return;
        };
        loop {
            match leg.poll_output() {
                Output::Timeout(at) => {
                    self.leg_deadline = Some(at);
                    return;
                }
                Output::Transmit(transmit) => {
                    let _ = self.udp.send_to(&transmit.bytes, transmit.to).await;
                }
                Output::Event(Event::Audio {
                    pt,
                    rtp_time,
                    payload,
                    ..
                }) => {
                    // The echo: what the browser said goes straight back.
                    let _ = leg.write_audio(Instant::now(), pt, rtp_time, payload);
                    self.audio_packets += 1;
                    if self.audio_packets.is_multiple_of(50) {
                        let _ = self.seen.send(Seen::AudioPackets(self.audio_packets));
                    }
                }
                Output::Event(Event::Dtmf(dtmf)) => {
                    let _ = self.seen.send(Seen::Dtmf(dtmf.digit().unwrap_or('?')));
                }
                Output::Event(_) => {}
            }
        }
    }

    async fn send(&self, message: SipMessage) {
        if let Some(outbound) = &self.outbound {
            let _ = outbound.send(Bytes::from(message::message_bytes(&message))).await;
        }
    }

    fn contact() -> NameAddr {
        NameAddr::new("sip:gateway@127.0.0.1;transport=ws")
    }

    fn via() -> Via {
        Via::outgoing(Transport::Ws, "127.0.0.1", None)
    }

    async fn handle_sip(&mut self, bytes: &[u8]) {
        let parsed = message::parse(bytes);
        let request = match parsed {
            Ok(SipMessage::Request(request)) => request,
            Ok(SipMessage::Response(response)) => return self.handle_response(response).await,
            Err(error) => {
                if let Some(answer) = error.error_response()
                    && let Some(outbound) = &self.outbound
                {
                    let _ = outbound.send(Bytes::from(answer)).await;
                }
                return;
            }
        };
        let _ = self.seen.send(Seen::Request(Box::new(request.clone())));
        let now = Instant::now();
        match request.method {
            Method::Invite if request.to_tag().is_none() => self.handle_invite(now, request).await,
            Method::Invite => {
                let offer = String::from_utf8_lossy(&request.body).into_owned();
                let answer = self.leg.as_mut().map(|leg| leg.accept_reoffer(now, &offer));
                match answer {
                    Some(Ok(answer)) => self.send_ok_with_sdp(&request, &answer).await,
                    _ => {
                        let refused = message::response_to(&request, 488, None);
                        self.send(SipMessage::Response(refused)).await;
                    }
                }
            }
            Method::Cancel => {
                let ok = message::response_to(&request, 200, Some("gw"));
                self.send(SipMessage::Response(ok)).await;
                if let Some(invite) = &self.invite {
                    let terminated = uas_response(invite, 487, "gw", &Self::contact());
                    self.send(SipMessage::Response(terminated)).await;
                }
            }
            Method::Ack => {}
            Method::Bye => {
                let ok = message::response_to(&request, 200, None);
                self.send(SipMessage::Response(ok)).await;
                self.leg = None;
            }
            _ => {
                let ok = message::response_to(&request, 200, Some("gw"));
                self.send(SipMessage::Response(ok)).await;
            }
        }
    }

    async fn handle_invite(&mut self, now: Instant, invite: Request) {
        self.invite = Some(invite.clone());
        if self.behaviour == Behaviour::Challenge {
            let Some(authorization) = invite.header_value("Authorization") else {
                let mut challenge = message::response_to(&invite, 401, Some("gw"));
                challenge.push_header(
                    "WWW-Authenticate",
                    "Digest realm=\"loopback\", nonce=\"n0nce\", qop=\"auth\", algorithm=MD5",
                );
                return self.send(SipMessage::Response(challenge)).await;
            };
            let uri = invite.uri.to_string();
            let valid = crate::sip::digest::verify("INVITE", &uri, authorization, PASSWORD, &invite.body);
            if valid != Ok(true) {
                let refused = message::response_to(&invite, 403, Some("gw"));
                return self.send(SipMessage::Response(refused)).await;
            }
        }
        self.send(SipMessage::Response(message::response_to(&invite, 100, None)))
            .await;
        if self.behaviour == Behaviour::Busy {
            let busy = uas_response(&invite, 486, "gw", &Self::contact());
            return self.send(SipMessage::Response(busy)).await;
        }
        let offer = String::from_utf8_lossy(&invite.body).into_owned();
        let config = WebrtcLegConfig::new(self.local, self.local);
        let (leg, answer) = match WebrtcLeg::accept_offer(now, &offer, CodecPrefs::default(), &config) {
            Ok(accepted) => accepted,
            Err(error) => panic!("the test gateway could not accept the client's offer: {error}"),
        };
        self.leg = Some(leg);
        if self.behaviour == Behaviour::EarlyMedia {
            let mut early = uas_response(&invite, 183, "gw", &Self::contact());
            early.push_header("Content-Type", "application/sdp");
            early.body = answer.clone().into_bytes();
            self.send(SipMessage::Response(early)).await;
            // Late enough for ICE and DTLS to come up on the early answer first.
            self.delayed_answer = Some((now + Duration::from_secs(1), answer));
            return;
        } else {
            let ringing = uas_response(&invite, 180, "gw", &Self::contact());
            self.send(SipMessage::Response(ringing)).await;
        }
        if self.behaviour == Behaviour::RingOnly {
            return;
        }
        self.send_ok_with_sdp(&invite, &answer).await;
    }

    async fn send_ok_with_sdp(&mut self, request: &Request, sdp: &str) {
        let mut ok = uas_response(request, 200, "gw", &Self::contact());
        ok.push_header("Content-Type", "application/sdp");
        ok.body = sdp.as_bytes().to_vec();
        if self.dialog.is_none() {
            self.dialog = Dialog::uas(request, &ok).ok();
        }
        self.send(SipMessage::Response(ok)).await;
    }

    async fn handle_response(&mut self, response: rsip::Response) {
        let Ok(cseq) = response.cseq() else { return };
        if cseq.method != Method::Invite || self.pending_reinvite != Some(cseq.seq) {
            return;
        }
        self.pending_reinvite = None;
        let now = Instant::now();
        if let Some(leg) = &mut self.leg {
            let answer = String::from_utf8_lossy(&response.body).into_owned();
            leg.accept_answer(now, &answer).unwrap();
        }
        let ack = self
            .dialog
            .as_ref()
            .map(|dialog| dialog.build_ack(cseq.seq, Self::via()));
        if let Some(Ok(ack)) = ack {
            self.send(SipMessage::Request(ack)).await;
        }
    }

    async fn handle_order(&mut self, order: Order) {
        let Some(dialog) = &mut self.dialog else { return };
        match order {
            Order::Bye => {
                let bye = dialog.build_request(Method::Bye, Self::via()).unwrap();
                self.leg = None;
                self.send(SipMessage::Request(bye)).await;
            }
            Order::Reinvite(direction) => {
                let Some(leg) = &mut self.leg else { return };
                let offer = leg.create_offer(Instant::now(), direction).unwrap();
                let mut reinvite = dialog.build_request(Method::Invite, Self::via()).unwrap();
                reinvite.push_header("Content-Type", "application/sdp");
                reinvite.body = offer.into_bytes();
                self.pending_reinvite = reinvite.cseq().ok().map(|c| c.seq);
                self.send(SipMessage::Request(reinvite)).await;
            }
        }
    }
}

fn browser() -> CallOptions {
    CallOptions {
        origin: Some("https://shop.example".to_owned()),
        analyse_audio: true,
        ..CallOptions::default()
    }
}

const TARGET: &str = "sip:w1dg3t@127.0.0.1";

#[tokio::test]
async fn call_with_echo_hold_dtmf_and_local_hangup() {
    let mut gateway = TestGateway::start(Behaviour::Answer).await;
    let mut call = Call::dial(&gateway.url, TARGET, browser()).await.unwrap();
    match gateway
        .expect("the handshake", |s| matches!(s, Seen::Opened { .. }))
        .await
    {
        Seen::Opened { origin } => assert_eq!(origin.as_deref(), Some("https://shop.example")),
        _ => unreachable!("expect returned what the filter accepted"),
    }
    let invite = gateway.expect_request(Method::Invite).await;
    assert!(invite.top_via().unwrap().host.ends_with(".invalid"));
    assert_eq!(call.wait_answered(WAIT).await.unwrap(), 200);
    assert!(call.history().contains(&CallEvent::Provisional {
        status: 180,
        has_sdp: false
    }));
    call.wait_media(WAIT).await.unwrap();
    gateway
        .expect(
            "echoed audio",
            |s| matches!(s, Seen::AudioPackets(n) if *n >= 100),
        )
        .await;

    let report = call.report();
    assert_eq!(report.codec, Some(SendCodec::Opus));
    let setup = report.setup_time().unwrap();
    assert!(setup < report.connect_time().unwrap(), "{report:?}");
    let frequency = call.dominant_frequency().unwrap();
    assert!((frequency - 440.0).abs() <= 3.0, "{frequency}");
    assert!(report.received.packets >= 80, "{report:?}");
    assert_eq!(report.received.lost, 0, "{report:?}");
    let rtt = report
        .received
        .round_trips
        .first()
        .copied()
        .expect("a round trip through the echo");
    assert!(rtt < Duration::from_millis(200), "{rtt:?}");

    assert_eq!(call.hold().await.unwrap(), 200);
    let hold = gateway.expect_request(Method::Invite).await;
    assert!(String::from_utf8_lossy(&hold.body).contains("a=sendonly"));
    assert_eq!(call.unhold().await.unwrap(), 200);
    let unhold = gateway.expect_request(Method::Invite).await;
    assert!(String::from_utf8_lossy(&unhold.body).contains("a=sendrecv"));

    assert_eq!(
        call.send_info_dtmf('5', Duration::from_millis(160))
            .await
            .unwrap(),
        200
    );
    let info = gateway.expect_request(Method::Info).await;
    assert_eq!(info.content_type(), Some("application/dtmf-relay"));
    assert_eq!(info.body, b"Signal=5\r\nDuration=160\r\n");
    call.send_rfc4733('#', Duration::from_millis(100)).await.unwrap();
    match gateway
        .expect("an RFC 4733 digit", |s| matches!(s, Seen::Dtmf(_)))
        .await
    {
        Seen::Dtmf(digit) => assert_eq!(digit, '#'),
        _ => unreachable!("expect returned what the filter accepted"),
    }

    // A raw out-of-dialog request: its answer comes back as a stray message.
    let options_request = "OPTIONS sip:w1dg3t@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS raw.invalid;branch=z9hG4bKraw1\r\n\
        From: <sip:raw@raw.invalid>;tag=r1\r\nTo: <sip:w1dg3t@127.0.0.1>\r\nCall-ID: raw-1\r\n\
        CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    call.send_raw(options_request).await.unwrap();
    let stray = call
        .wait_for(WAIT, "the OPTIONS answer", |e| matches!(e, CallEvent::Stray(_)))
        .await
        .unwrap();
    let CallEvent::Stray(message) = stray else {
        unreachable!("wait_for returned what the filter accepted")
    };
    assert!(matches!(*message, SipMessage::Response(ref r) if r.call_id() == Some("raw-1")));

    assert_eq!(call.hang_up().await.unwrap(), Some(200));
    gateway.expect_request(Method::Bye).await;
    assert_eq!(call.wait_ended(WAIT).await.unwrap(), (EndedBy::Local, Some(200)));
    gateway
        .expect("the WebSocket closing", |s| matches!(s, Seen::Closed))
        .await;
    assert!(call.report().ended.is_some());
}

#[tokio::test]
async fn gateway_holds_and_hangs_up() {
    let gateway = TestGateway::start(Behaviour::Answer).await;
    let mut call = Call::dial(&gateway.url, TARGET, browser()).await.unwrap();
    call.wait_answered(WAIT).await.unwrap();
    call.wait_media(WAIT).await.unwrap();
    gateway.orders.send(Order::Reinvite(Direction::SendOnly)).unwrap();
    call.wait_for(WAIT, "the gateway's hold", |e| {
        matches!(e, CallEvent::DirectionChanged(Direction::RecvOnly))
    })
    .await
    .unwrap();
    assert!(call.history().contains(&CallEvent::OfferAnswered {
        method: Method::Invite,
        status: 200
    }));
    gateway.orders.send(Order::Bye).unwrap();
    assert_eq!(call.wait_ended(WAIT).await.unwrap(), (EndedBy::Remote, Some(200)));
}

#[tokio::test]
async fn cancel_while_ringing() {
    let mut gateway = TestGateway::start(Behaviour::RingOnly).await;
    let mut call = Call::dial(&gateway.url, TARGET, browser()).await.unwrap();
    call.wait_for(WAIT, "ringing", |e| {
        matches!(e, CallEvent::Provisional { status: 180, .. })
    })
    .await
    .unwrap();
    assert_eq!(call.hang_up().await.unwrap(), Some(487));
    gateway.expect_request(Method::Cancel).await;
    assert_eq!(call.wait_ended(WAIT).await.unwrap(), (EndedBy::Local, Some(487)));
    assert_eq!(call.report().answered, None);
}

#[tokio::test]
async fn digest_challenge_busy_and_early_media() {
    let mut gateway = TestGateway::start(Behaviour::Challenge).await;
    let with_credentials = CallOptions {
        credentials: Some(crate::sip::Credentials {
            username: "browser".to_owned(),
            password: PASSWORD.to_owned(),
        }),
        ..browser()
    };
    let mut call = Call::dial(&gateway.url, TARGET, with_credentials).await.unwrap();
    call.wait_answered(WAIT).await.unwrap();
    assert!(call.history().contains(&CallEvent::Challenged { status: 401 }));
    gateway.expect_request(Method::Invite).await;
    let second = gateway.expect_request(Method::Invite).await;
    assert!(second.header_value("Authorization").is_some());
    call.hang_up().await.unwrap();

    let gateway = TestGateway::start(Behaviour::Busy).await;
    let mut call = Call::dial(&gateway.url, TARGET, browser()).await.unwrap();
    assert_eq!(call.wait_ended(WAIT).await.unwrap(), (EndedBy::Remote, Some(486)));
    assert!(
        call.history()
            .iter()
            .any(|e| matches!(e, CallEvent::Rejected(response) if response.status_code.code() == 486))
    );

    let gateway = TestGateway::start(Behaviour::EarlyMedia).await;
    let pcmu = CallOptions {
        offer: OfferKind::PcmuOnly,
        ..browser()
    };
    let mut call = Call::dial(&gateway.url, TARGET, pcmu).await.unwrap();
    call.wait_media(WAIT).await.unwrap();
    assert!(call.history().contains(&CallEvent::Provisional {
        status: 183,
        has_sdp: true
    }));
    assert!(
        call.report().answered.is_none(),
        "media came up on the early answer"
    );
    call.wait_answered(WAIT).await.unwrap();
    assert_eq!(
        call.report().codec,
        Some(SendCodec::G711(crate::media::g711::Law::Ulaw))
    );
    call.close_websocket();
    assert_eq!(call.wait_ended(WAIT).await.unwrap(), (EndedBy::Transport, None));
}

/// A self-signed certificate for 127.0.0.1 made with the openssl command: the server's acceptor and a
/// client config trusting exactly that certificate.
fn self_signed_tls() -> (tokio_rustls::TlsAcceptor, Arc<rustls::ClientConfig>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let directory = tempfile::tempdir().unwrap();
    let (cert, key) = (
        directory.path().join("cert.pem"),
        directory.path().join("key.pem"),
    );
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=callgate test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        // An end-entity certificate, not the CA that `req -x509` makes by default (webpki refuses that).
        .args([
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("test setup: run openssl");
    assert!(status.success(), "openssl could not make a certificate");
    let certificate = CertificateDer::from_pem_file(&cert).unwrap();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certificate.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate).unwrap();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        Arc::new(client),
    )
}

#[tokio::test]
async fn secure_websocket_call() {
    let (acceptor, client_tls) = self_signed_tls();
    let mut gateway = TestGateway::start_with(Behaviour::Answer, Some(acceptor)).await;
    assert!(gateway.url.starts_with("wss://"));
    let options = CallOptions {
        tls: Some(client_tls),
        ..browser()
    };
    let mut call = Call::dial(&gateway.url, TARGET, options).await.unwrap();
    let invite = gateway.expect_request(Method::Invite).await;
    assert_eq!(invite.top_via().unwrap().transport, "WSS");
    call.wait_answered(WAIT).await.unwrap();
    call.wait_media(WAIT).await.unwrap();
    assert_eq!(call.hang_up().await.unwrap(), Some(200));

    // Without the certificate among its roots the client refuses the server.
    let untrusted = CallOptions {
        tls: Some(Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )),
        ..browser()
    };
    let refused = Call::dial(&gateway.url, TARGET, untrusted).await;
    assert!(matches!(refused, Err(super::ClientError::Tls(_))), "{refused:?}");
}
