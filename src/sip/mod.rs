//! SIP core, sans-IO: what both legs of a call speak, with no sockets and no clock.
//!
//! ## Layout
//!
//! - [`message`]: reading messages from bytes ([`parse`]: 64 KiB limit, LF-only lines, folding, compact
//!   header names, Content-Length, IPv6 hosts) and printing them ([`message::message_bytes`]); refused
//!   requests are answered 400/501/505/513 ([`ParseError::error_response`]); header readers
//!   ([`MessageHeaders`], [`Via`], [`NameAddr`], [`CSeq`]) and builders (responses, CANCEL, failure ACK,
//!   Max-Forwards, tags, branches, Call-IDs); stream framing for TCP/TLS ([`next_stream_chunk`]).
//!   Messages are [`rsip`] types.
//! - [`digest`]: Digest authentication (RFC 7616/8760: MD5, SHA-256, SHA-512-256 and -sess; qop `auth`,
//!   `auth-int` or none) for answering a trunk's 401/407, plus a verifier.
//! - [`transaction`]: RFC 3261 §17 client and server transactions with timers A–M on an external clock.
//! - [`dialog`]: RFC 3261 §12 dialogs: tags, CSeq, route set, remote target, in-dialog requests.
//! - [`flow`]: [`Flow`] and [`Transport`], the transport layer's handle for a path to a peer.
//!
//! ## Run loop
//!
//! The transport layer feeds received bytes to [`Transactions::handle_receive`] with the [`Flow`] they came
//! on and `now`; the user (the B2BUA) sends with [`Transactions::handle_outgoing_request`],
//! [`Transactions::send_response`] and [`Transactions::send_stateless`]. After every call, drain
//! [`Transactions::poll_output`] until it returns [`transaction::Output::Timeout`] (call
//! [`Transactions::handle_timeout`] then) or `None`. Dialogs are plain values the user keeps next to its
//! call state and consults for in-dialog requests.
//!
//! Not here: sockets and connection handling (`transport`), SDP meaning (`sdp`, `media`), call policy
//! (`b2bua`).

pub mod dialog;
pub mod digest;
pub mod flow;
pub mod message;
pub mod transaction;

#[cfg(test)]
mod fixtures;

pub use dialog::{Dialog, DialogError, DialogId, DialogSide, DialogState};
pub use digest::{Challenge, Credentials, DigestClient, DigestError};
pub use flow::{Flow, Transport};
pub use message::{
    CSeq, MAX_MESSAGE_BYTES, MessageError, MessageHeaders, NameAddr, ParseError, StreamChunk, Via,
    next_stream_chunk, parse,
};
pub use transaction::{
    Output, TransactionConfig, TransactionError, TransactionEvent, TransactionKey, Transactions,
};

#[cfg(test)]
mod tests {
    //! The pieces together: a UAC layer (callgate toward a PBX) and a UAS layer (the PBX) exchanging
    //! datagrams on a simulated clock, with the first INVITE lost.

    use std::time::{Duration, Instant};

    use rsip::{Method, Request, SipMessage};

    use super::*;

    struct Peer {
        layer: Transactions,
        /// The flow on which this peer receives what the other one sends.
        from_other: Flow,
        events: Vec<TransactionEvent>,
        sent: Vec<(Duration, SipMessage)>,
    }

    impl Peer {
        fn new(remote: &str) -> Self {
            Peer {
                layer: Transactions::new(TransactionConfig::default()),
                from_other: Flow {
                    transport: Transport::Udp,
                    remote: remote.parse().unwrap(),
                    connection: None,
                },
                events: Vec::new(),
                sent: Vec::new(),
            }
        }

        fn take_events(&mut self) -> Vec<TransactionEvent> {
            std::mem::take(&mut self.events)
        }
    }

    struct Network {
        callgate: Peer,
        pbx: Peer,
        start: Instant,
        now: Instant,
        drop_next_invite: bool,
    }

    impl Network {
        /// Moves every queued datagram to the other peer (zero latency) until both are quiet; returns the
        /// earliest deadline.
        fn pump(&mut self) -> Option<Instant> {
            loop {
                let mut moved = false;
                let mut deadline: Option<Instant> = None;
                for from_callgate in [true, false] {
                    let (sender, receiver) = if from_callgate {
                        (&mut self.callgate, &mut self.pbx)
                    } else {
                        (&mut self.pbx, &mut self.callgate)
                    };
                    while let Some(output) = sender.layer.poll_output() {
                        match output {
                            Output::Transmit { bytes, .. } => {
                                let message = parse(&bytes).unwrap();
                                sender.sent.push((self.now - self.start, message.clone()));
                                let lost = matches!(&message, SipMessage::Request(r) if r.method == Method::Invite)
                                    && std::mem::take(&mut self.drop_next_invite);
                                if !lost {
                                    receiver.layer.handle_receive(
                                        self.now,
                                        receiver.from_other.clone(),
                                        &bytes,
                                    );
                                    moved = true;
                                }
                            }
                            Output::Event(event) => sender.events.push(event),
                            Output::Timeout(at) => {
                                deadline = Some(deadline.map_or(at, |d| d.min(at)));
                                break;
                            }
                        }
                    }
                }
                if !moved {
                    return deadline;
                }
            }
        }

        fn run_to(&mut self, seconds: f64) {
            let end = self.start + Duration::from_secs_f64(seconds);
            while let Some(deadline) = self.pump().filter(|deadline| *deadline <= end) {
                self.now = deadline;
                self.callgate.layer.handle_timeout(deadline);
                self.pbx.layer.handle_timeout(deadline);
            }
            self.now = end;
        }
    }

    fn invite() -> Request {
        let text = "INVITE sip:2001@192.0.2.20 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bKcallgate1\r\nMax-Forwards: 69\r\n\
            From: <sip:+4930123456@192.0.2.10>;tag=cg1\r\nTo: <sip:2001@192.0.2.20>\r\n\
            Call-ID: flow-test-1\r\nCSeq: 1 INVITE\r\nContact: <sip:callgate@192.0.2.10:5060>\r\n\r\n";
        match parse(text.as_bytes()) {
            Ok(SipMessage::Request(request)) => request,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn call_setup_and_teardown_over_lossy_udp() {
        let start = Instant::now();
        let mut net = Network {
            callgate: Peer::new("192.0.2.20:5060"),
            pbx: Peer::new("192.0.2.10:5060"),
            start,
            now: start,
            drop_next_invite: true,
        };
        let to_pbx = net.callgate.from_other.clone();
        let invite = invite();
        net.callgate
            .layer
            .handle_outgoing_request(net.now, to_pbx.clone(), invite.clone())
            .unwrap();
        net.run_to(0.6);

        // The PBX saw the retransmitted INVITE (Timer A at 0.5 s) and already sent 100 Trying.
        let Some(TransactionEvent::Request {
            key: pbx_invite,
            request: received,
            ..
        }) = net.pbx.take_events().into_iter().next()
        else {
            panic!("the PBX should have received the INVITE")
        };
        let pbx_contact = NameAddr::new("sip:2001@192.0.2.20:5060");
        let ringing = dialog::uas_response(&received, 180, "pbx1", &pbx_contact);
        net.pbx
            .layer
            .send_response(net.now, &pbx_invite, ringing)
            .unwrap();
        net.run_to(1.0);
        let ok = dialog::uas_response(&received, 200, "pbx1", &pbx_contact);
        let mut pbx_dialog = Dialog::uas(&received, &ok).unwrap();
        net.pbx.layer.send_response(net.now, &pbx_invite, ok).unwrap();
        net.pump();

        // callgate: 100 and 180 then 200 → dialog, ACK sent statelessly with a new branch.
        let responses: Vec<_> = net
            .callgate
            .take_events()
            .into_iter()
            .filter_map(|event| match event {
                TransactionEvent::Response { response, .. } => Some(response),
                _ => None,
            })
            .collect();
        let codes: Vec<u16> = responses
            .iter()
            .map(|response| response.status_code.code())
            .collect();
        assert_eq!(codes, [100, 180, 200]);
        let mut callgate_dialog = Dialog::uac(&invite, &responses[2]).unwrap();
        let ack = callgate_dialog
            .build_ack(1, Via::outgoing(Transport::Udp, "192.0.2.10", Some(5060)))
            .unwrap();
        net.callgate.layer.send_stateless(to_pbx.clone(), ack);
        net.pump();
        let acked = net.pbx.take_events().into_iter().any(
            |event| matches!(event, TransactionEvent::Ack { invite: Some(key), .. } if key == pbx_invite),
        );
        assert!(acked, "the PBX matched the ACK to its INVITE transaction");

        // BYE from callgate at 2 s through the dialog.
        net.run_to(2.0);
        let bye = callgate_dialog
            .build_request(
                Method::Bye,
                Via::outgoing(Transport::Udp, "192.0.2.10", Some(5060)),
            )
            .unwrap();
        let bye_key = net
            .callgate
            .layer
            .handle_outgoing_request(net.now, to_pbx, bye)
            .unwrap();
        net.pump();
        let Some(TransactionEvent::Request {
            key: pbx_bye,
            request: bye,
            ..
        }) = net
            .pbx
            .take_events()
            .into_iter()
            .find(|event| matches!(event, TransactionEvent::Request { .. }))
        else {
            panic!("the PBX should have received the BYE")
        };
        pbx_dialog.handle_request(&bye).unwrap();
        net.pbx
            .layer
            .send_response(net.now, &pbx_bye, message::response_to(&bye, 200, None))
            .unwrap();
        net.pump();
        let bye_answered = net.callgate.take_events().into_iter().any(|event| {
            matches!(event, TransactionEvent::Response { key, response } if key == bye_key && response.status_code.code() == 200)
        });
        assert!(bye_answered);

        net.run_to(60.0);
        assert!(net.callgate.layer.is_empty() && net.pbx.layer.is_empty());
        let invites: Vec<f64> = net
            .callgate
            .sent
            .iter()
            .filter(|(_, m)| matches!(m, SipMessage::Request(r) if r.method == Method::Invite))
            .map(|(at, _)| at.as_secs_f64())
            .collect();
        assert_eq!(
            invites,
            [0.0, 0.5],
            "one retransmission recovered the lost INVITE"
        );
        let pbx_oks = net
            .pbx
            .sent
            .iter()
            .filter(|(_, m)| matches!(m, SipMessage::Response(r) if r.status_code.code() == 200))
            .count();
        assert_eq!(
            pbx_oks, 2,
            "one 200 for the INVITE (ACKed at once) and one for the BYE"
        );
    }
}
