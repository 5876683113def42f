//! The built-in demo echo endpoint: a small SIP user agent on loopback that answers every call with PCMU and
//! sends each RTP packet back where it came from, so that a newcomer hears themself through the whole chain
//! (WebRTC → transcoding → SIP/RTP → back) without a PBX.
//!
//! It stands where a PBX would: the gateway reaches it through the `demo` trunk created on first run
//! ([`ensure_demo_records`]), like any other trunk.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rsip::{Method, Request, SipMessage};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, watch};

use crate::db::{self, Database, DbError, InvalidValue};
use crate::sdp::{Codec, PbxOffer, PbxSdp};
use crate::sip::MessageHeaders;
use crate::sip::message::{self, parse, response_bytes, response_to};

/// Name of the trunk and widget created for the demo.
pub const DEMO_NAME: &str = "demo";
/// The extension the demo widget dials (any would do: the echo answers everything).
const DEMO_DESTINATION: &str = "echo";
/// RFC 3261 T1 and T2: the 2xx retransmission schedule over UDP (§13.3.1.4).
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// An echo call with no RTP for this long is forgotten (its BYE was lost).
const IDLE_CALL: Duration = Duration::from_secs(120);

/// Why the demo records could not be created.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The database refused.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A configured address does not make a valid trunk host or widget origin.
    #[error("demo records: {0}")]
    Invalid(#[from] InvalidValue),
}

/// Starts the echo endpoint on `sip_listen` (UDP), with RTP sockets on `media_ip`. Returns the bound address.
pub async fn start(
    sip_listen: SocketAddr,
    media_ip: IpAddr,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let socket = Arc::new(UdpSocket::bind(sip_listen).await?);
    let bound = socket.local_addr()?;
    tokio::spawn(async move {
        let mut endpoint = EchoEndpoint {
            socket,
            media_ip,
            bound,
            calls: HashMap::new(),
        };
        let mut buffer = vec![0u8; 65_536];
        loop {
            let received = tokio::select! {
                received = endpoint.socket.recv_from(&mut buffer) => received,
                _ = shutdown.changed() => return,
            };
            let Ok((len, from)) = received else { continue };
            endpoint.handle(&buffer[..len], from).await;
        }
    });
    Ok(bound)
}

struct EchoCall {
    /// Tells the echo and retransmission tasks to stop.
    hangup: Arc<Notify>,
    /// Tells the 2xx retransmission to stop.
    acked: Arc<Notify>,
    /// The 2xx, resent when the INVITE is retransmitted.
    ok: Vec<u8>,
}

struct EchoEndpoint {
    socket: Arc<UdpSocket>,
    media_ip: IpAddr,
    bound: SocketAddr,
    calls: HashMap<String, EchoCall>,
}

impl EchoEndpoint {
    async fn handle(&mut self, bytes: &[u8], from: SocketAddr) {
        let request = match parse(bytes) {
            Ok(SipMessage::Request(request)) => request,
            Ok(SipMessage::Response(_)) => return,
            Err(error) => {
                if let Some(answer) = error.error_response() {
                    let _ = self.socket.send_to(&answer, from).await;
                }
                return;
            }
        };
        let call_id = request.call_id().unwrap_or_default().to_owned();
        let reply = match request.method {
            Method::Invite => self.invite(&request, call_id, from).await,
            Method::Ack => {
                if let Some(call) = self.calls.get(&call_id) {
                    call.acked.notify_one();
                }
                None
            }
            Method::Bye => Some(match self.calls.remove(&call_id) {
                Some(call) => {
                    call.hangup.notify_waiters();
                    call.acked.notify_one();
                    response_to(&request, 200, None)
                }
                None => response_to(&request, 481, None),
            }),
            // Every INVITE is answered at once, so there is never a pending one to cancel.
            Method::Cancel => Some(response_to(&request, 481, None)),
            Method::Options | Method::Update | Method::Info => Some(response_to(&request, 200, None)),
            _ => Some(response_to(&request, 405, None)),
        };
        if let Some(response) = reply {
            let _ = self.socket.send_to(&response_bytes(&response), from).await;
        }
    }

    async fn invite(
        &mut self,
        request: &Request,
        call_id: String,
        from: SocketAddr,
    ) -> Option<rsip::Response> {
        if let Some(call) = self.calls.get(&call_id) {
            // A retransmitted INVITE or a re-INVITE: the answer does not change (hold is echoed as is).
            let _ = self.socket.send_to(&call.ok, from).await;
            return None;
        }
        let Some(Ok(offer)) = std::str::from_utf8(&request.body).ok().map(PbxSdp::parse) else {
            return Some(response_to(request, 488, None));
        };
        let Ok(rtp) = UdpSocket::bind(SocketAddr::new(self.media_ip, 0)).await else {
            return Some(response_to(request, 503, None));
        };
        let Ok(rtp_addr) = rtp.local_addr() else {
            return Some(response_to(request, 503, None));
        };
        let local = match PbxOffer::new(self.media_ip, rtp_addr.port(), rtp_addr.port(), &[Codec::Pcmu]) {
            Ok(local) => local.with_telephone_event(Some(101)),
            Err(_) => return Some(response_to(request, 500, None)),
        };
        let mut session = PbxSdp::new(rand::random::<u32>().into(), 1);
        let Ok(answer) = session.answer(&local, &offer, None) else {
            return Some(response_to(request, 488, None));
        };
        let mut ok = response_to(request, 200, Some(&message::new_tag()));
        ok.set_header("Contact", format!("<sip:{DEMO_DESTINATION}@{}>", self.bound));
        ok.set_header("Content-Type", "application/sdp");
        ok.body = answer.sdp.into_bytes();
        let ok = response_bytes(&ok);

        let hangup = Arc::new(Notify::new());
        let acked = Arc::new(Notify::new());
        tokio::spawn(echo(rtp, hangup.clone()));
        tokio::spawn(retransmit(self.socket.clone(), ok.clone(), from, acked.clone()));
        self.calls.insert(call_id, EchoCall { hangup, acked, ok });
        None
    }
}

/// Sends every RTP packet back to its sender until hung up or idle.
async fn echo(rtp: UdpSocket, hangup: Arc<Notify>) {
    let mut buffer = [0u8; 2048];
    loop {
        tokio::select! {
            received = tokio::time::timeout(IDLE_CALL, rtp.recv_from(&mut buffer)) => match received {
                Ok(Ok((len, from))) => { let _ = rtp.send_to(&buffer[..len], from).await; }
                Ok(Err(_)) => continue,
                Err(_) => return,
            },
            _ = hangup.notified() => return,
        }
    }
}

/// Sends the 2xx at once, then again at T1, 2·T1, … capped at T2, until the ACK comes or 64·T1 pass.
async fn retransmit(socket: Arc<UdpSocket>, ok: Vec<u8>, to: SocketAddr, acked: Arc<Notify>) {
    let mut interval = T1;
    let mut waited = Duration::ZERO;
    loop {
        let _ = socket.send_to(&ok, to).await;
        if waited >= T1 * 64 {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = acked.notified() => return,
        }
        waited += interval;
        interval = (interval * 2).min(T2);
    }
}

/// Creates the `demo` trunk (toward the echo endpoint at `echo_address`) and the `demo` widget (allowed
/// from the gateway's own pages at `gateway_origins`) when they do not exist yet. Existing records are left
/// alone, so an operator's changes survive restarts.
pub async fn ensure_demo_records(
    db: &Database,
    echo_address: SocketAddr,
    gateway_origins: &[String],
) -> Result<(), DemoError> {
    let name: db::Name = DEMO_NAME.parse()?;
    match db.trunks().by_name(&name).await {
        Ok(_) => {}
        Err(DbError::TrunkNotFound(_)) => {
            let trunk = db::NewTrunk {
                name: name.clone(),
                host: echo_address.ip().to_string().parse()?,
                port: echo_address.port(),
                transport: db::Transport::Udp,
                outbound_proxy: None,
                auth: None,
                register: false,
                register_expiry: db::trunks::DEFAULT_REGISTER_EXPIRY,
                codecs: "pcmu".parse()?,
                priority: 1000,
                enabled: true,
            };
            db.trunks().add(trunk).await?;
            tracing::info!(%echo_address, "created the demo trunk");
        }
        Err(error) => return Err(error.into()),
    }
    match db.widgets().by_name(&name).await {
        Ok(_) => Ok(()),
        Err(DbError::WidgetNotFound(_)) => {
            let origins = gateway_origins
                .iter()
                .map(|origin| origin.parse())
                .collect::<Result<Vec<db::Origin>, _>>()
                .and_then(db::Origins::new)?;
            let destination = DEMO_DESTINATION.parse()?;
            let widget = db
                .widgets()
                .add(db::NewWidget::new(name.clone(), name, destination, origins))
                .await?;
            tracing::info!(public_id = %widget.public_id, "created the demo widget");
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
        m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

    fn request(method: &str, call_id: &str, cseq: u32, body: &str) -> Vec<u8> {
        format!(
            "{method} sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{call_id}{cseq}\r\n\
             From: <sip:web@callgate>;tag=abc\r\nTo: <sip:echo@127.0.0.1>\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    async fn next_response(socket: &UdpSocket) -> rsip::Response {
        let mut buffer = vec![0u8; 65_536];
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buffer))
            .await
            .expect("the echo endpoint answers")
            .unwrap();
        match parse(&buffer[..len]).unwrap() {
            SipMessage::Response(response) => response,
            SipMessage::Request(request) => panic!("unexpected request {}", request.method),
        }
    }

    #[tokio::test]
    async fn answers_pcmu_echoes_rtp_and_hangs_up() {
        let (_stop, shutdown) = watch::channel(false);
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let echo = start(SocketAddr::new(loopback, 0), loopback, shutdown)
            .await
            .unwrap();
        let uac = UdpSocket::bind("127.0.0.1:0").await.unwrap();

        uac.send_to(&request("INVITE", "c1", 1, OFFER), echo)
            .await
            .unwrap();
        let ok = next_response(&uac).await;
        assert_eq!(ok.status_code.code(), 200);
        assert!(ok.to_tag().is_some());
        let answer = PbxSdp::parse(std::str::from_utf8(&ok.body).unwrap()).unwrap();
        assert_eq!(answer.codec.codec, Codec::Pcmu);
        uac.send_to(&request("ACK", "c1", 1, ""), echo).await.unwrap();

        let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let packet = [0x80, 0x00, 0x00, 0x01, 0, 0, 0, 160, 1, 2, 3, 4, 0xff, 0x7f];
        rtp.send_to(&packet, answer.rtp_addr().unwrap()).await.unwrap();
        let mut buffer = [0u8; 64];
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), rtp.recv_from(&mut buffer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buffer[..len], &packet);

        uac.send_to(&request("BYE", "c1", 2, ""), echo).await.unwrap();
        assert_eq!(next_response(&uac).await.status_code.code(), 200);
        uac.send_to(&request("BYE", "c1", 3, ""), echo).await.unwrap();
        assert_eq!(next_response(&uac).await.status_code.code(), 481);
    }

    #[tokio::test]
    async fn refuses_an_offer_without_g711_and_garbage() {
        let (_stop, shutdown) = watch::channel(false);
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let echo = start(SocketAddr::new(loopback, 0), loopback, shutdown)
            .await
            .unwrap();
        let uac = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let opus_only = OFFER
            .replace("RTP/AVP 0 8 101", "RTP/AVP 111")
            .replace("telephone-event", "opus");
        uac.send_to(&request("INVITE", "c2", 1, &opus_only), echo)
            .await
            .unwrap();
        assert_eq!(next_response(&uac).await.status_code.code(), 488);
        uac.send_to(b"INVITE garbage\r\n\r\n", echo).await.unwrap();
        uac.send_to(&request("OPTIONS", "c3", 1, ""), echo).await.unwrap();
        // The garbage got no answer it could route, and the endpoint still serves.
        let mut response = next_response(&uac).await;
        if response.status_code.code() == 400 {
            response = next_response(&uac).await;
        }
        assert_eq!(response.status_code.code(), 200);
    }
}
