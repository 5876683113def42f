//! The SIPp scenarios of `tests/sipp/` checked on their own, before the gateway runs in front of them: a
//! plain SIP UAC over UDP built from `callgate::sip` (transactions with their retransmissions, dialogs,
//! digest) plays what the gateway will play toward the PBX, and each scenario must finish with every
//! call successful (SIPp's exit status 0). Where a scenario checks something (digest credentials), a
//! wrong input must make it fail. Also proves the gateway harness: the real binary starts with a trunk
//! pointing at SIPp and a widget, and takes a browser's WebSocket with subprotocol `sip`.

#[allow(dead_code, reason = "each test crate uses a part of the shared helpers")]
mod common;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use callgate::client::{SipWebSocket, WsOptions};
use callgate::media::dtmf::{DtmfDigit, DtmfSender};
use callgate::media::rtp_packet::RtpHeader;
use callgate::sip::message::{self, MessageHeaders, StreamChunk, Via};
use callgate::sip::{
    Credentials, Dialog, DigestClient, Flow, TransactionConfig, TransactionEvent, TransactionKey,
    Transactions, Transport,
};
use common::gateway::{Gateway, GatewayOptions, ORIGIN, TrunkSpec, WidgetSpec};
use common::rtp::RtpRecorder;
use common::sipp::{Sipp, SippOptions, SippTransport};
use rsip::{Method, Request, Response, SipMessage};

const WAIT: Duration = Duration::from_secs(10);
const SIPP_DONE: Duration = Duration::from_secs(15);

/// What the gateway is toward the PBX, reduced to a test tool: one UDP socket and the transaction layer.
struct PlainUac {
    socket: UdpSocket,
    local: SocketAddr,
    flow: Flow,
    layer: Transactions,
    wakeup: Option<Instant>,
    events: VecDeque<TransactionEvent>,
}

impl PlainUac {
    fn new(pbx: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = socket.local_addr().unwrap();
        PlainUac {
            socket,
            local,
            flow: Flow {
                transport: Transport::Udp,
                remote: pbx,
                connection: None,
            },
            layer: Transactions::new(TransactionConfig::default()),
            wakeup: None,
            events: VecDeque::new(),
        }
    }

    fn via(&self) -> Via {
        Via::outgoing(Transport::Udp, "127.0.0.1", Some(self.local.port()))
    }

    fn contact(&self) -> String {
        format!("<sip:callgate@{}>", self.local)
    }

    /// An INVITE as the gateway sends it to a trunk, with a Record-Route of its own so that the scenario's
    /// copying of Record-Route and its routing of in-dialog requests show.
    fn invite(&self, sdp: &str) -> Request {
        let pbx = self.flow.remote;
        let text = format!(
            "INVITE sip:100@{pbx} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
             From: <sip:+4930123456@127.0.0.1>;tag={tag}\r\nTo: <sip:100@{pbx}>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\nContact: {contact}\r\nRecord-Route: <sip:{local};lr;rr-test>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {length}\r\n\r\n{sdp}",
            via = self.via(),
            tag = message::new_tag(),
            call_id = message::new_call_id(),
            contact = self.contact(),
            local = self.local,
            length = sdp.len(),
        );
        match message::parse(text.as_bytes()) {
            Ok(SipMessage::Request(request)) => request,
            other => panic!("{other:?}"),
        }
    }

    fn send(&mut self, request: Request) -> TransactionKey {
        let key = self
            .layer
            .handle_outgoing_request(Instant::now(), self.flow.clone(), request)
            .unwrap();
        self.flush();
        key
    }

    fn send_stateless(&mut self, request: Request) {
        self.layer.send_stateless(self.flow.clone(), request);
        self.flush();
    }

    fn respond(&mut self, key: &TransactionKey, response: Response) {
        self.layer.send_response(Instant::now(), key, response).unwrap();
        self.flush();
    }

    fn flush(&mut self) {
        while let Some(output) = self.layer.poll_output() {
            match output {
                callgate::sip::Output::Transmit { flow, bytes } => {
                    self.socket.send_to(&bytes, flow.remote).unwrap();
                }
                callgate::sip::Output::Event(event) => self.events.push_back(event),
                callgate::sip::Output::Timeout(at) => {
                    self.wakeup = Some(at);
                    return;
                }
            }
        }
        self.wakeup = None;
    }

    /// The next transaction event, running the socket and the timers meanwhile.
    fn next_event(&mut self, limit: Duration) -> Option<TransactionEvent> {
        let deadline = Instant::now() + limit;
        let mut buffer = [0_u8; 65_536];
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let until = self.wakeup.map_or(deadline, |at| at.min(deadline));
            let wait = until.saturating_duration_since(now).max(Duration::from_millis(1));
            self.socket.set_read_timeout(Some(wait)).unwrap();
            match self.socket.recv_from(&mut buffer) {
                Ok((length, source)) => {
                    let flow = Flow {
                        remote: source,
                        ..self.flow.clone()
                    };
                    self.layer.handle_receive(Instant::now(), flow, &buffer[..length]);
                }
                Err(_) => self.layer.handle_timeout(Instant::now()),
            }
            self.flush();
        }
    }

    /// Responses to `key` until the final one: (provisional ones, final one).
    fn final_response(&mut self, key: &TransactionKey) -> (Vec<Response>, Response) {
        let mut provisional = Vec::new();
        loop {
            match self.next_event(WAIT) {
                Some(TransactionEvent::Response { key: k, response }) if &k == key => {
                    if response.status_code.code() < 200 {
                        provisional.push(response);
                    } else {
                        return (provisional, response);
                    }
                }
                Some(TransactionEvent::Timeout { key: k }) if &k == key => panic!("no final response"),
                Some(_) => {}
                None => panic!("no final response within {WAIT:?}"),
            }
        }
    }

    /// The next new request from the PBX.
    fn expect_request(&mut self, method: Method) -> (TransactionKey, Request) {
        loop {
            match self.next_event(WAIT) {
                Some(TransactionEvent::Request { key, request, .. }) => {
                    assert_eq!(request.method, method, "{request}");
                    return (key, request);
                }
                Some(_) => {}
                None => panic!("no {method} from the PBX within {WAIT:?}"),
            }
        }
    }

    /// The ACK for a 2xx we sent.
    fn expect_ack(&mut self) -> Request {
        loop {
            match self.next_event(WAIT) {
                Some(TransactionEvent::Ack { request, .. }) => return request,
                Some(_) => {}
                None => panic!("no ACK from the PBX within {WAIT:?}"),
            }
        }
    }

    /// INVITE with a PCMU offer; returns the INVITE, its provisional responses and its final response.
    fn call(&mut self, rtp_port: u16) -> (Request, Vec<Response>, Response) {
        let invite = self.invite(&offer(rtp_port, "sendrecv"));
        let key = self.send(invite.clone());
        let (provisional, response) = self.final_response(&key);
        (invite, provisional, response)
    }

    /// ACKs a 2xx and returns the dialog.
    fn confirm(&mut self, invite: &Request, ok: &Response) -> Dialog {
        let dialog = Dialog::uac(invite, ok).unwrap();
        let ack = dialog.build_ack(invite.cseq().unwrap().seq, self.via()).unwrap();
        self.send_stateless(ack);
        dialog
    }

    /// Sends an in-dialog request and returns its final response.
    fn in_dialog(&mut self, dialog: &mut Dialog, method: Method, sdp: Option<&str>) -> Response {
        let mut request = dialog.build_request(method, self.via()).unwrap();
        if let Some(sdp) = sdp {
            request.push_header("Content-Type", "application/sdp");
            request.body = sdp.as_bytes().to_vec();
        }
        let key = self.send(request);
        let (_, response) = self.final_response(&key);
        dialog.handle_response(&response).unwrap();
        response
    }

    fn hang_up(&mut self, dialog: &mut Dialog) {
        let response = self.in_dialog(dialog, Method::Bye, None);
        assert_eq!(response.status_code.code(), 200);
    }

    /// Answers an in-dialog request from the PBX.
    fn answer(&mut self, dialog: &mut Dialog, key: &TransactionKey, request: &Request, sdp: Option<&str>) {
        dialog.handle_request(request).unwrap();
        let mut response = message::response_to(request, 200, None);
        response.push_header("Contact", self.contact());
        if let Some(sdp) = sdp {
            response.push_header("Content-Type", "application/sdp");
            response.body = sdp.as_bytes().to_vec();
        }
        self.respond(key, response);
    }
}

/// A plain RTP/AVP offer like the gateway's toward a trunk.
fn offer(rtp_port: u16, direction: &str) -> String {
    format!(
        "v=0\r\no=callgate 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {rtp_port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na={direction}\r\n"
    )
}

fn body(message: &Response) -> String {
    String::from_utf8_lossy(&message.body).into_owned()
}

fn request_body(message: &Request) -> String {
    String::from_utf8_lossy(&message.body).into_owned()
}

/// The port of the SDP's audio m-line.
fn audio_port(sdp: &str) -> u16 {
    sdp.lines()
        .find_map(|line| line.strip_prefix("m=audio "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no audio port in {sdp}"))
}

fn codes(responses: &[Response]) -> Vec<u16> {
    responses.iter().map(|r| r.status_code.code()).collect()
}

/// Sends 20 PCMU packets from `rtp` to `to` and counts those that come back.
fn echoed_packets(rtp: &UdpSocket, to: SocketAddr) -> usize {
    rtp.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut packet = [0xFF_u8; 172];
    packet[0] = 0x80;
    for seq in 0..20_u16 {
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        rtp.send_to(&packet, to).unwrap();
    }
    let mut buffer = [0_u8; 2048];
    let mut echoed = 0;
    while let Ok((length, _)) = rtp.recv_from(&mut buffer) {
        if length == packet.len() {
            echoed += 1;
        }
    }
    echoed
}

/// answer.xml: 100/180/200 with Record-Route copied, PCMU + telephone-event, RTP echoed, BYE answered.
#[test]
fn answer_scenario_answers_echoes_and_takes_the_bye() {
    let mut sipp = Sipp::uas(
        "answer",
        SippOptions {
            rtp_echo: true,
            ..SippOptions::default()
        },
    );
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut uac = PlainUac::new(sipp.address());
    let (invite, provisional, ok) = uac.call(rtp.local_addr().unwrap().port());
    assert_eq!(codes(&provisional), [100, 180]);
    let ringing = &provisional[1];
    assert_eq!(ringing.record_route().unwrap(), invite.record_route().unwrap());
    assert_eq!(ok.status_code.code(), 200);
    assert_eq!(ok.record_route().unwrap(), invite.record_route().unwrap());
    let sdp = body(&ok);
    assert!(
        sdp.contains("m=audio ") && sdp.contains(" RTP/AVP 0 101"),
        "{sdp}"
    );
    assert!(sdp.contains("a=rtpmap:101 telephone-event/8000"), "{sdp}");
    assert_eq!(audio_port(&sdp), sipp.media_port());
    let mut dialog = uac.confirm(&invite, &ok);
    assert_eq!(
        echoed_packets(&rtp, SocketAddr::from(([127, 0, 0, 1], sipp.media_port()))),
        20
    );
    uac.hang_up(&mut dialog);
    sipp.expect_success(SIPP_DONE);
}

/// pbx_hangup.xml: after the pause the PBX sends BYE to our Contact, through our recorded route.
#[test]
fn pbx_hangup_scenario_sends_a_routed_bye() {
    let mut sipp = Sipp::uas("pbx_hangup", SippOptions::default());
    let mut uac = PlainUac::new(sipp.address());
    let (invite, _, ok) = uac.call(40_000);
    let mut dialog = uac.confirm(&invite, &ok);
    let (key, bye) = uac.expect_request(Method::Bye);
    assert_eq!(bye.uri.to_string(), format!("sip:callgate@{}", uac.local));
    assert_eq!(bye.route().unwrap(), invite.record_route().unwrap());
    assert!(dialog.matches(&bye), "the BYE belongs to the dialog: {bye}");
    uac.answer(&mut dialog, &key, &bye, None);
    sipp.expect_success(SIPP_DONE);
}

/// busy_486.xml: 486, ACKed by the transaction layer.
#[test]
fn busy_scenario_refuses_with_486() {
    let mut sipp = Sipp::uas("busy_486", SippOptions::default());
    let mut uac = PlainUac::new(sipp.address());
    let (_, provisional, busy) = uac.call(40_000);
    assert_eq!(codes(&provisional), [100]);
    assert_eq!(busy.status_code.code(), 486);
    sipp.expect_success(SIPP_DONE);
}

/// The INVITE sent again after `challenge`, one CSeq higher, with credentials for user `callgate`.
fn authorized(uac: &PlainUac, invite: &Request, challenge: &Response, password: &str) -> Request {
    let mut digest = DigestClient::new(Credentials {
        username: "callgate".to_owned(),
        password: password.to_owned(),
    });
    digest.handle_challenge(challenge).unwrap();
    let mut again = invite.clone();
    again.set_header("CSeq", "2 INVITE");
    again.set_header("Via", uac.via().to_string());
    digest.authorize(&mut again).unwrap();
    again
}

/// auth_401.xml and auth_407.xml with the right credentials: challenged, answered, called, hung up.
#[test]
fn auth_scenarios_accept_the_right_credentials() {
    for (scenario, code, header) in [
        ("auth_401", 401, "Authorization"),
        ("auth_407", 407, "Proxy-Authorization"),
    ] {
        let mut sipp = Sipp::uas(scenario, SippOptions::default());
        let mut uac = PlainUac::new(sipp.address());
        let (invite, _, challenge) = uac.call(40_000);
        assert_eq!(challenge.status_code.code(), code, "{scenario}");
        let again = authorized(&uac, &invite, &challenge, "trunk-secret");
        assert!(again.header_value(header).is_some());
        let key = uac.send(again.clone());
        let (_, ok) = uac.final_response(&key);
        assert_eq!(ok.status_code.code(), 200, "{scenario}");
        let mut dialog = uac.confirm(&again, &ok);
        uac.hang_up(&mut dialog);
        sipp.expect_success(SIPP_DONE);
    }
}

/// auth_401.xml with a wrong password: 403, and SIPp counts the call as failed.
#[test]
fn auth_scenario_refuses_wrong_credentials() {
    let mut sipp = Sipp::uas(
        "auth_401",
        SippOptions {
            recv_timeout: Duration::from_secs(2),
            ..SippOptions::default()
        },
    );
    let mut uac = PlainUac::new(sipp.address());
    let (invite, _, challenge) = uac.call(40_000);
    let key = uac.send(authorized(&uac, &invite, &challenge, "wrong"));
    let (_, refused) = uac.final_response(&key);
    assert_eq!(refused.status_code.code(), 403);
    let status = sipp.wait(SIPP_DONE);
    assert_eq!(status.code(), Some(1), "the call must count as failed");
}

/// early_media_183.xml: 183 with SDP, then 200 with the same media address.
#[test]
fn early_media_scenario_sends_183_with_sdp_then_200() {
    let mut sipp = Sipp::uas("early_media_183", SippOptions::default());
    let mut uac = PlainUac::new(sipp.address());
    let (invite, provisional, ok) = uac.call(40_000);
    assert_eq!(codes(&provisional), [100, 183]);
    let early = body(&provisional[1]);
    assert_eq!(audio_port(&early), sipp.media_port());
    assert_eq!(
        provisional[1].record_route().unwrap(),
        invite.record_route().unwrap()
    );
    assert_eq!(body(&ok), early, "the 200 repeats the early answer");
    let mut dialog = uac.confirm(&invite, &ok);
    uac.hang_up(&mut dialog);
    sipp.expect_success(SIPP_DONE);
}

/// ring_then_cancel.xml: CANCEL answered 200, INVITE 487 (and ACKed).
#[test]
fn ring_then_cancel_scenario_terminates_the_invite() {
    let mut sipp = Sipp::uas("ring_then_cancel", SippOptions::default());
    let mut uac = PlainUac::new(sipp.address());
    let invite = uac.invite(&offer(40_000, "sendrecv"));
    let key = uac.send(invite.clone());
    wait_for_ringing(&mut uac, &key);
    let cancel_key = uac.send(message::build_cancel(&invite).unwrap());
    let (_, cancel_ok) = uac.final_response(&cancel_key);
    assert_eq!(cancel_ok.status_code.code(), 200);
    let (_, terminated) = uac.final_response(&key);
    assert_eq!(terminated.status_code.code(), 487);
    sipp.expect_success(SIPP_DONE);
}

/// cancel_race.xml: the 200 to the INVITE crosses the CANCEL; ACK and BYE end the call cleanly.
#[test]
fn cancel_race_scenario_answers_the_invite_anyway() {
    let mut sipp = Sipp::uas("cancel_race", SippOptions::default());
    let mut uac = PlainUac::new(sipp.address());
    let invite = uac.invite(&offer(40_000, "sendrecv"));
    let key = uac.send(invite.clone());
    wait_for_ringing(&mut uac, &key);
    let cancel_key = uac.send(message::build_cancel(&invite).unwrap());
    // Both final responses, in whichever order they come.
    let (mut ok, mut cancel_ok) = (None, None);
    while ok.is_none() || cancel_ok.is_none() {
        match uac.next_event(WAIT) {
            Some(TransactionEvent::Response { key: k, response }) if response.status_code.code() >= 200 => {
                if k == key {
                    ok = Some(response);
                } else if k == cancel_key {
                    cancel_ok = Some(response);
                }
            }
            Some(_) => {}
            None => panic!("missing a final response: INVITE {ok:?}, CANCEL {cancel_ok:?}"),
        }
    }
    let (ok, cancel_ok) = (ok.unwrap(), cancel_ok.unwrap());
    assert_eq!(ok.status_code.code(), 200);
    assert_eq!(cancel_ok.status_code.code(), 200);
    let mut dialog = uac.confirm(&invite, &ok);
    uac.hang_up(&mut dialog);
    sipp.expect_success(SIPP_DONE);
}

fn wait_for_ringing(uac: &mut PlainUac, key: &TransactionKey) {
    loop {
        match uac.next_event(WAIT) {
            Some(TransactionEvent::Response { key: k, response }) if &k == key => {
                if response.status_code.code() == 180 {
                    return;
                }
                assert!(response.status_code.code() < 200, "{response}");
            }
            Some(_) => {}
            None => panic!("no 180"),
        }
    }
}

/// hold_by_pbx.xml: re-INVITE sendonly, re-INVITE sendrecv, BYE, all routed like requests in the dialog.
#[test]
fn hold_by_pbx_scenario_holds_resumes_and_hangs_up() {
    let mut sipp = Sipp::uas(
        "hold_by_pbx",
        SippOptions {
            pause: Duration::from_millis(200),
            ..SippOptions::default()
        },
    );
    let mut uac = PlainUac::new(sipp.address());
    let (invite, _, ok) = uac.call(40_000);
    let mut dialog = uac.confirm(&invite, &ok);
    for (offered, answered) in [("a=sendonly", "recvonly"), ("a=sendrecv", "sendrecv")] {
        let (key, reinvite) = uac.expect_request(Method::Invite);
        assert!(request_body(&reinvite).contains(offered), "{reinvite}");
        assert_eq!(reinvite.route().unwrap(), invite.record_route().unwrap());
        uac.answer(&mut dialog, &key, &reinvite, Some(&offer(40_000, answered)));
        let ack = uac.expect_ack();
        assert!(dialog.matches(&ack));
    }
    let (key, bye) = uac.expect_request(Method::Bye);
    uac.answer(&mut dialog, &key, &bye, None);
    sipp.expect_success(SIPP_DONE);
}

/// expect_reinvite.xml: session timers in the 200, then hold, refresh UPDATE, UPDATE with SDP, unhold.
#[test]
fn expect_reinvite_scenario_answers_our_reinvites_and_updates() {
    let mut sipp = Sipp::uas("expect_reinvite", SippOptions::default());
    let mut uac = PlainUac::new(sipp.address());
    let (invite, _, ok) = uac.call(40_000);
    assert_eq!(ok.header_value("Session-Expires"), Some("90;refresher=uac"));
    assert_eq!(ok.header_value("Require"), Some("timer"));
    let mut dialog = uac.confirm(&invite, &ok);

    let held = uac.in_dialog(&mut dialog, Method::Invite, Some(&offer(40_000, "sendonly")));
    assert!(body(&held).contains("a=recvonly"), "{held}");
    uac.send_stateless(dialog.build_ack(dialog.local_seq().unwrap(), uac.via()).unwrap());
    let refreshed = uac.in_dialog(&mut dialog, Method::Update, None);
    assert_eq!(refreshed.status_code.code(), 200);
    assert!(refreshed.body.is_empty());
    assert_eq!(
        refreshed.header_value("Session-Expires"),
        Some("90;refresher=uac")
    );
    let updated = uac.in_dialog(&mut dialog, Method::Update, Some(&offer(40_000, "sendrecv")));
    assert!(body(&updated).contains("a=sendrecv"), "{updated}");
    let resumed = uac.in_dialog(&mut dialog, Method::Invite, Some(&offer(40_000, "sendrecv")));
    assert!(body(&resumed).contains("a=sendrecv"), "{resumed}");
    uac.send_stateless(dialog.build_ack(dialog.local_seq().unwrap(), uac.via()).unwrap());
    uac.hang_up(&mut dialog);
    sipp.expect_success(SIPP_DONE);
}

/// options_responder.xml: OPTIONS answered; a frozen SIPp answers nothing until thawed (a trunk down
/// and up again).
#[test]
fn options_responder_answers_and_can_be_taken_down() {
    let mut sipp = Sipp::uas(
        "options_responder",
        SippOptions {
            calls: 2,
            ..SippOptions::default()
        },
    );
    let mut uac = PlainUac::new(sipp.address());
    let options = |uac: &PlainUac| {
        let pbx = uac.flow.remote;
        let text = format!(
            "OPTIONS sip:{pbx} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <sip:callgate@127.0.0.1>;tag={}\r\n\
             To: <sip:{pbx}>\r\nCall-ID: {}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            uac.via(),
            message::new_tag(),
            message::new_call_id()
        );
        match message::parse(text.as_bytes()) {
            Ok(SipMessage::Request(request)) => request,
            other => panic!("{other:?}"),
        }
    };
    let key = uac.send(options(&uac));
    assert_eq!(uac.final_response(&key).1.status_code.code(), 200);

    sipp.freeze();
    let key = uac.send(options(&uac));
    let answered_while_down = std::iter::from_fn(|| uac.next_event(Duration::from_millis(600)))
        .any(|event| matches!(event, TransactionEvent::Response { .. }));
    assert!(!answered_while_down, "a frozen SIPp must not answer");
    sipp.thaw();
    assert_eq!(uac.final_response(&key).1.status_code.code(), 200);
    sipp.expect_success(SIPP_DONE);
}

/// A scenario over TCP (`-t t1`), for trunks with `--transport tcp`: OPTIONS on one connection, framed
/// by Content-Length.
#[test]
fn scenarios_run_over_tcp_too() {
    let mut sipp = Sipp::uas(
        "options_responder",
        SippOptions {
            transport: SippTransport::Tcp,
            ..SippOptions::default()
        },
    );
    let mut stream = TcpStream::connect(sipp.address()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let local = stream.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:{pbx} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch={branch}\r\nMax-Forwards: 70\r\n\
         From: <sip:callgate@{local}>;tag=t1\r\nTo: <sip:{pbx}>\r\nCall-ID: tcp-1\r\nCSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        pbx = sipp.address(),
        branch = message::new_branch(),
    );
    stream.write_all(options.as_bytes()).unwrap();
    let mut buffer = Vec::new();
    let response = loop {
        let mut chunk = [0_u8; 4096];
        let read = stream.read(&mut chunk).unwrap();
        assert!(read > 0, "SIPp closed the connection");
        buffer.extend_from_slice(&chunk[..read]);
        match message::next_stream_chunk(&buffer).unwrap() {
            StreamChunk::Message(length) => break message::parse(&buffer[..length]).unwrap(),
            StreamChunk::Keepalive(length) => {
                buffer.drain(..length);
            }
            StreamChunk::Incomplete => {}
        }
    };
    match response {
        SipMessage::Response(ok) => {
            assert_eq!(ok.status_code.code(), 200);
            assert_eq!(ok.call_id(), Some("tcp-1"));
        }
        other => panic!("{other}"),
    }
    sipp.expect_success(SIPP_DONE);
}

/// record_dtmf.xml: the answer points media at the test's recorder; INFO is answered. The recorder counts
/// each RFC 4733 event once, however many end reports carry it (here from callgate's own sender: three).
#[test]
fn record_dtmf_scenario_points_media_at_the_recorder() {
    let recorder = RtpRecorder::start();
    let mut sipp = Sipp::uas(
        "record_dtmf",
        SippOptions {
            keys: vec![("rtp_port".to_owned(), recorder.address().port().to_string())],
            ..SippOptions::default()
        },
    );
    let mut uac = PlainUac::new(sipp.address());
    let (invite, _, ok) = uac.call(40_000);
    let media = SocketAddr::from(([127, 0, 0, 1], audio_port(&body(&ok))));
    assert_eq!(media, recorder.address());
    let mut dialog = uac.confirm(&invite, &ok);
    let mut info = dialog.build_request(Method::Info, uac.via()).unwrap();
    info.push_header("Content-Type", "application/dtmf-relay");
    info.body = b"Signal=5\r\nDuration=160\r\n".to_vec();
    let key = uac.send(info);
    assert_eq!(uac.final_response(&key).1.status_code.code(), 200);

    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sender = DtmfSender::new(8000, Duration::from_millis(20)).unwrap();
    for digit in "19#".chars() {
        sender
            .queue(DtmfDigit::from_char(digit).unwrap(), Duration::from_millis(100))
            .unwrap();
    }
    let mut buffer = [0_u8; 64];
    for slot in 0..60_u16 {
        let timestamp = 1000 + u32::from(slot) * 160;
        if let Some(packet) = sender.poll_packet(timestamp) {
            let header = RtpHeader {
                marker: packet.marker,
                payload_type: 101,
                sequence_number: slot,
                timestamp: packet.timestamp,
                ssrc: 0x1234,
            };
            let length = header.write(&packet.event.to_bytes(), &mut buffer).unwrap();
            rtp.send_to(&buffer[..length], media).unwrap();
        }
    }
    assert!(recorder.wait_until(WAIT, |r| r.dtmf_events(101).len() == 3
        && r.dtmf_events(101)[2].end_reports == 3));
    let events = recorder.dtmf_events(101);
    let digits: String = events.iter().map(|e| e.digit).collect();
    assert_eq!(digits, "19#");
    assert!(
        events.iter().all(|e| e.duration == 800 && e.end_reports == 3),
        "{events:?}"
    );
    uac.hang_up(&mut dialog);
    sipp.expect_success(SIPP_DONE);
}

/// The harness: the real binary with a trunk to SIPp and a widget; /readyz, the WebSocket handshake with
/// the `sip` subprotocol and the page's Origin, and a clean stop on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn gateway_harness_starts_the_real_binary() {
    let sipp = Sipp::uas("answer", SippOptions::default());
    let mut gateway = tokio::task::block_in_place(|| {
        Gateway::start(GatewayOptions {
            trunks: vec![TrunkSpec::udp("pbx", sipp.address())],
            widgets: vec![WidgetSpec::new("shop", "pbx")],
            ..GatewayOptions::default()
        })
    });
    assert_eq!(gateway.http_get("/readyz").0, 200);
    let uri = gateway.widget_uri("shop");
    assert!(uri.starts_with("sip:") && uri.ends_with("@127.0.0.1"), "{uri}");
    let options = WsOptions {
        origin: Some(ORIGIN.to_owned()),
        ..WsOptions::default()
    };
    let socket = SipWebSocket::connect(&gateway.ws_url(), &options).await.unwrap();
    assert_eq!(socket.transport(), Transport::Ws);
    socket.close().await;
    let status = tokio::task::block_in_place(|| gateway.stop(Duration::from_secs(10)));
    assert!(status.success(), "{status}\n{}", gateway.log_text());
}
