//! SIP per message: parsing and printing a JsSIP INVITE with its WebRTC offer and an Asterisk 200 OK with
//! SDP, and the transaction layer taking each (a new server transaction with its 100 Trying; a final
//! response matched to a client INVITE transaction).
//!
//! `cargo bench --bench sip`; docs/benchmarks.md holds the measured table.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use callgate::sip::message::{request_bytes, response_bytes};
use callgate::sip::{Flow, Output, TransactionConfig, Transactions, Transport, parse};
use criterion::{BatchSize, criterion_group, criterion_main};
use rsip::SipMessage;
use settings::CpuCriterion;

#[path = "support/settings.rs"]
mod settings;

// The unit tests' captured messages, shared rather than copied; the file depends on nothing else in
// the crate. Only two of them are measured here.
#[allow(dead_code)]
#[path = "../src/sip/fixtures.rs"]
mod fixtures;

/// The INVITE callgate sent to Asterisk that `fixtures::ASTERISK_200` answers (same branch, Call-ID,
/// From tag and CSeq), so the response matches its client transaction.
const INVITE_TO_ASTERISK: &str = "\
INVITE sip:2001@192.0.2.20 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bKPj8c1d2e3f
Max-Forwards: 70
From: <sip:+4930123456@192.0.2.10>;tag=as5d1e2f3a
To: <sip:2001@192.0.2.20>
Call-ID: 3848276298220188511@192.0.2.10
CSeq: 102 INVITE
Contact: <sip:callgate@192.0.2.10:5060>
Content-Length: {len}

";

fn pbx_flow() -> Flow {
    Flow {
        transport: Transport::Udp,
        remote: SocketAddr::from(([192, 0, 2, 20], 5060)),
        connection: None,
    }
}

fn browser_flow() -> Flow {
    Flow {
        transport: Transport::Wss,
        remote: SocketAddr::from(([198, 51, 100, 7], 51234)),
        connection: Some(1),
    }
}

/// Drains a layer's outputs up to its next timeout; returns how many there were.
fn drain(layer: &mut Transactions) -> usize {
    let mut count = 0;
    while let Some(output) = layer.poll_output() {
        count += 1;
        if matches!(output, Output::Timeout(_)) {
            break;
        }
        black_box(output);
    }
    count
}

fn sip(c: &mut CpuCriterion) {
    let invite = fixtures::wire(fixtures::JSSIP_INVITE);
    let ok = fixtures::wire(fixtures::ASTERISK_200);
    eprintln!(
        "sip: JsSIP INVITE {} bytes, Asterisk 200 OK {} bytes",
        invite.len(),
        ok.len()
    );
    // The fixtures are valid messages (the unit tests parse them); a failure here is a broken fixture.
    let Ok(SipMessage::Request(invite_request)) = parse(&invite) else {
        panic!("the JsSIP INVITE fixture parses as a request");
    };
    let Ok(SipMessage::Response(ok_response)) = parse(&ok) else {
        panic!("the Asterisk 200 OK fixture parses as a response");
    };

    let mut group = c.benchmark_group("sip_message");
    group.bench_function("parse_jssip_invite", |b| b.iter(|| parse(black_box(&invite))));
    group.bench_function("parse_asterisk_200_ok", |b| b.iter(|| parse(black_box(&ok))));
    group.bench_function("print_jssip_invite", |b| {
        b.iter(|| request_bytes(black_box(&invite_request)))
    });
    group.bench_function("print_asterisk_200_ok", |b| {
        b.iter(|| response_bytes(black_box(&ok_response)))
    });
    group.finish();

    let now = Instant::now();
    let Ok(SipMessage::Request(outgoing)) = parse(&fixtures::wire(INVITE_TO_ASTERISK)) else {
        panic!("the INVITE to Asterisk parses as a request");
    };
    let mut group = c.benchmark_group("sip_transactions");
    group.bench_function("receive_invite_new_server_transaction", |b| {
        b.iter_batched(
            || Transactions::new(TransactionConfig::default()),
            |mut layer| {
                layer.handle_receive(now, browser_flow(), black_box(&invite));
                let outputs = drain(&mut layer);
                (layer, outputs)
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("receive_200_ok_client_transaction", |b| {
        b.iter_batched(
            || {
                let mut layer = Transactions::new(TransactionConfig::default());
                // A fresh layer has no transaction with this branch, and the request has its Via.
                layer
                    .handle_outgoing_request(now, pbx_flow(), outgoing.clone())
                    .expect("new client transaction");
                drain(&mut layer);
                layer
            },
            |mut layer| {
                layer.handle_receive(now, pbx_flow(), black_box(&ok));
                let outputs = drain(&mut layer);
                (layer, outputs)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = settings::short_runs();
    targets = sip
}
criterion_main!(benches);
