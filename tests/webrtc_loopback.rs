//! A `WebrtcClient` (the browser) and a `WebrtcLeg` (the gateway) against each other in memory on a
//! simulated clock: every datagram one side transmits is handed to the other's `handle_receive`
//! after a 1 ms one-way delay, and time jumps to whichever deadline comes first (like str0m's
//! `tests/common.rs` `progress()`), so a 35-second consent timeout runs in milliseconds.
//!
//! The leg sits behind a simulated 1:1 NAT: it advertises 203.0.113.10:50000 while its socket is
//! bound to 10.0.0.5:50000, so the tests also prove the address mapping.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use callgate::media::demux::Demux;
use callgate::media::webrtc_client::{ClientConfig, ClientEvent, ClientOutput, WebrtcClient};
use callgate::media::webrtc_leg::{
    AudioCodec, CodecPrefs, DtmfReport, Event, G711, Output, Transmit, WebrtcLeg, WebrtcLegConfig,
    WebrtcLegError, generate_dtls_cert,
};
use str0m::media::Direction;

const ONE_WAY_DELAY: Duration = Duration::from_millis(1);
const FRAME: Duration = Duration::from_millis(20);

fn client_addr() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}
fn advertised_addr() -> SocketAddr {
    "203.0.113.10:50000".parse().unwrap()
}
fn bound_addr() -> SocketAddr {
    "10.0.0.5:50000".parse().unwrap()
}

fn leg_config() -> WebrtcLegConfig {
    WebrtcLegConfig::new(advertised_addr(), bound_addr())
}

/// A datagram on the simulated wire.
struct InFlight {
    arrives: Instant,
    transmit: Transmit,
}

/// The browser, the gateway leg, the wire between them and the clock.
struct Pair {
    now: Instant,
    start: Instant,
    client: WebrtcClient,
    leg: WebrtcLeg,
    client_wakeup: Instant,
    leg_wakeup: Instant,
    to_leg: VecDeque<InFlight>,
    to_client: VecDeque<InFlight>,
    /// Drop everything the client sends (the browser went away without a BYE).
    client_silent: bool,
    /// The worker socket's demultiplexer, with this leg as 1 and a stranger's leg as 2: every
    /// datagram the leg gets must have been routed to it.
    demux: Demux<u32>,
    client_events: Vec<(Instant, ClientEvent)>,
    leg_events: Vec<(Instant, Event)>,
}

impl Pair {
    /// Offer from a client with `config`, answer from a leg with `prefs`.
    fn negotiate(config: ClientConfig, prefs: CodecPrefs) -> (Pair, String, String) {
        let start = Instant::now();
        let mut client = WebrtcClient::new(start, &config).unwrap();
        let offer = client.create_offer().unwrap();
        let (leg, answer) = WebrtcLeg::accept_offer(start, &offer, prefs, &leg_config()).unwrap();
        client.accept_answer(&answer).unwrap();
        let mut demux = Demux::new();
        demux.register(1, leg.local_ufrag()).unwrap();
        demux.register(2, "someone-else").unwrap();
        let mut pair = Pair {
            now: start,
            start,
            client,
            leg,
            client_wakeup: start,
            leg_wakeup: start,
            to_leg: VecDeque::new(),
            to_client: VecDeque::new(),
            client_silent: false,
            demux,
            client_events: Vec::new(),
            leg_events: Vec::new(),
        };
        pair.drain();
        (pair, offer, answer)
    }

    fn connected(config: ClientConfig, prefs: CodecPrefs) -> Pair {
        let (mut pair, _, _) = Pair::negotiate(config, prefs);
        pair.run_until(Duration::from_secs(5), |p| {
            p.leg.is_connected() && p.client.is_connected()
        });
        assert!(pair.has_leg_event(|e| matches!(e, Event::Connected)));
        assert!(pair.has_client_event(|e| matches!(e, ClientEvent::Connected)));
        pair
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Drains both sides until each reports its next wakeup.
    fn drain(&mut self) {
        loop {
            match self.client.poll_output() {
                ClientOutput::Timeout(at) => {
                    self.client_wakeup = at;
                    break;
                }
                ClientOutput::Transmit(t) => {
                    assert_eq!(t.from, client_addr());
                    if !self.client_silent {
                        self.to_leg.push_back(InFlight {
                            arrives: self.now + ONE_WAY_DELAY,
                            transmit: t,
                        });
                    }
                }
                ClientOutput::Event(e) => self.client_events.push((self.now, e)),
            }
        }
        loop {
            match self.leg.poll_output() {
                Output::Timeout(at) => {
                    self.leg_wakeup = at;
                    break;
                }
                Output::Transmit(t) => {
                    assert_eq!(t.from, bound_addr(), "the leg must send from its bound socket");
                    self.to_client.push_back(InFlight {
                        arrives: self.now + ONE_WAY_DELAY,
                        transmit: t,
                    });
                }
                Output::Event(e) => self.leg_events.push((self.now, e)),
            }
        }
    }

    /// Advances to the earliest pending thing (a delivery or a wakeup) no later than `limit`.
    fn step(&mut self, limit: Instant) {
        let next_to_leg = self.to_leg.front().map(|p| p.arrives);
        let next_to_client = self.to_client.front().map(|p| p.arrives);
        let next = [
            Some(self.client_wakeup),
            Some(self.leg_wakeup),
            next_to_leg,
            next_to_client,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap()
        .min(limit)
        .max(self.now);
        self.now = next;
        if next_to_leg.is_some_and(|t| t <= next) {
            let packet = self.to_leg.pop_front().unwrap();
            // The NAT forwards the packet for the public address to the bound socket.
            assert_eq!(packet.transmit.to, advertised_addr());
            let routed = self.demux.route(packet.transmit.from, &packet.transmit.bytes);
            assert_eq!(
                routed,
                Some(1),
                "demux must route the browser's datagrams to its leg"
            );
            self.leg.handle_receive(
                self.now,
                packet.transmit.from,
                bound_addr(),
                &packet.transmit.bytes,
            );
        } else if next_to_client.is_some_and(|t| t <= next) {
            let packet = self.to_client.pop_front().unwrap();
            assert_eq!(packet.transmit.to, client_addr());
            // ...and rewrites the source of what the gateway sends back.
            self.client
                .handle_receive(self.now, advertised_addr(), client_addr(), &packet.transmit.bytes);
        } else if self.leg_wakeup <= next {
            self.leg.handle_timeout(self.now);
        } else if self.client_wakeup <= next {
            self.client.handle_timeout(self.now);
        }
        self.drain();
    }

    /// Runs for `duration` of simulated time.
    fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        while self.now < until {
            self.step(until);
        }
    }

    /// Runs until `done` holds; panics after `limit`.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Pair) -> bool) {
        let until = self.now + limit;
        while !done(self) {
            assert!(self.now < until, "condition not reached within {limit:?}");
            self.step(until);
        }
    }

    fn has_leg_event(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.leg_events.iter().any(|(_, e)| f(e))
    }

    fn has_client_event(&self, f: impl Fn(&ClientEvent) -> bool) -> bool {
        self.client_events.iter().any(|(_, e)| f(e))
    }

    /// Audio packets the leg received: (pt, rtp_time, seq, ssrc, payload).
    fn leg_audio(&self) -> Vec<(u8, u32, u64, u32, Vec<u8>)> {
        self.leg_events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Audio {
                    pt,
                    rtp_time,
                    seq,
                    ssrc,
                    payload,
                    ..
                } => Some((*pt, *rtp_time, *seq, *ssrc, payload.to_vec())),
                _ => None,
            })
            .collect()
    }

    /// Audio frames the client received: (pt, rtp_time, seq, payload).
    fn client_audio(&self) -> Vec<(u8, u64, u64, Vec<u8>)> {
        self.client_events
            .iter()
            .filter_map(|(_, e)| match e {
                ClientEvent::Audio {
                    pt,
                    rtp_time,
                    seq,
                    payload,
                } => Some((*pt, *rtp_time, *seq, payload.to_vec())),
                _ => None,
            })
            .collect()
    }

    /// Sends `frames` 20 ms frames each way, the browser's starting at RTP time `client_base`, the
    /// leg's at `leg_base`, advancing the clock 20 ms per frame. Returns how many the leg could send.
    fn exchange_audio(&mut self, frames: u32, client_base: u64, leg_base: u32) -> u32 {
        let (client_pt, clock_rate) = self.client.audio_format().unwrap();
        let leg_pt = self.leg.audio().pt;
        assert_eq!(client_pt, leg_pt);
        let step = clock_rate / 50;
        let mut sent = 0;
        for i in 0..frames {
            let payload = frame_payload(i);
            if self.client.direction().is_sending() {
                self.client
                    .write_audio(self.now, client_base + u64::from(i * step), &payload)
                    .unwrap();
            }
            match self
                .leg
                .write_audio(self.now, leg_pt, leg_base + i * step, &payload[..])
            {
                Ok(()) => sent += 1,
                Err(WebrtcLegError::NotSending) => {}
                Err(e) => panic!("write_audio: {e}"),
            }
            self.drain();
            self.run_for(FRAME);
        }
        sent
    }
}

fn frame_payload(i: u32) -> Vec<u8> {
    // Opus-sized and distinct per frame; the codec never looks inside.
    (0..60).map(|b| (b as u32 + i) as u8).collect()
}

#[test]
fn connects_through_nat_and_audio_flows_both_ways() {
    let mut pair = Pair::connected(ClientConfig::chrome(client_addr()), CodecPrefs::default());
    assert!(
        pair.elapsed() < Duration::from_secs(1),
        "took {:?}",
        pair.elapsed()
    );
    let audio = pair.leg.audio();
    assert_eq!(audio.codec, AudioCodec::Opus);
    assert_eq!(audio.pt, 111);

    let sent = pair.exchange_audio(50, 9600, 48_000);
    assert_eq!(sent, 50);
    pair.run_for(Duration::from_millis(100));

    let at_leg = pair.leg_audio();
    assert_eq!(at_leg.len(), 50);
    for (i, (pt, rtp_time, seq, _ssrc, payload)) in at_leg.iter().enumerate() {
        assert_eq!(*pt, 111);
        assert_eq!(*rtp_time, 9600 + 960 * i as u32);
        assert_eq!(*seq, at_leg[0].2 + i as u64);
        assert_eq!(*payload, frame_payload(i as u32));
    }
    let at_client = pair.client_audio();
    assert_eq!(at_client.len(), 50);
    for (i, (pt, rtp_time, seq, payload)) in at_client.iter().enumerate() {
        assert_eq!(*pt, 111);
        assert_eq!(*rtp_time, 48_000 + 960 * i as u64);
        assert_eq!(*seq, at_client[0].2 + i as u64);
        assert_eq!(*payload, frame_payload(i as u32));
    }
    let stats = pair.leg.stats();
    assert_eq!(stats.packets_received, 50);
    assert_eq!(stats.packets_sent, 50);
    assert_eq!(stats.bytes_sent, 50 * 60);
    assert_eq!(stats.packets_lost, 0);
}

#[test]
fn rtcp_statistics_reach_the_leg() {
    let mut pair = Pair::connected(ClientConfig::chrome(client_addr()), CodecPrefs::default());
    // Long enough for sender and receiver reports both ways and a 5 s stats interval.
    pair.exchange_audio(400, 0, 0);
    pair.run_for(Duration::from_secs(8));
    let stats = pair.leg.stats();
    assert_eq!(stats.packets_received, 400);
    assert_eq!(stats.remote_packets_lost, Some(0));
    assert!(stats.jitter.is_some(), "{stats:?}");
    let rtt = stats.rtt.expect("RTT from the browser's receiver reports");
    assert!(rtt < Duration::from_millis(50), "{rtt:?}");
}

#[test]
fn dtmf_from_the_browser_arrives_once_per_digit() {
    let mut pair = Pair::connected(ClientConfig::chrome(client_addr()), CodecPrefs::default());
    let dtmf = pair.leg.audio().dtmf.unwrap();
    assert_eq!((dtmf.pt, dtmf.clock_rate), (110, 48_000));

    pair.exchange_audio(5, 0, 0);
    for (i, digit) in "1234#".chars().enumerate() {
        let rtp_time = 4800 + i as u64 * 9600;
        pair.client
            .send_dtmf(pair.now, rtp_time, digit, Duration::from_millis(100))
            .unwrap();
        pair.drain();
        pair.run_for(Duration::from_millis(200));
    }
    pair.run_for(Duration::from_secs(1));

    let digits: Vec<_> = pair
        .leg_events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Dtmf(d) => Some(*d),
            _ => None,
        })
        .collect();
    let chars: String = digits.iter().filter_map(|d| d.digit()).collect();
    assert_eq!(chars, "1234#");
    for d in &digits {
        assert_eq!(d.clock_rate, 48_000);
        assert_eq!(d.duration, 4800, "100 ms at 48 kHz");
    }
    // No digit leaked through as audio.
    assert!(pair.leg_audio().iter().all(|a| a.0 == 111));
}

#[test]
fn dtmf_toward_the_browser_arrives_once() {
    let mut pair = Pair::connected(ClientConfig::chrome(client_addr()), CodecPrefs::default());
    let start = 96_000;
    // 100 ms of '7' at 48 kHz: updates every 20 ms, then the end report three times.
    for tick in 1..=5u16 {
        let end = tick == 5;
        let report = DtmfReport {
            event: 7,
            end,
            volume: 10,
            duration: tick * 960,
        };
        for _ in 0..if end { 3 } else { 1 } {
            pair.leg.write_dtmf(pair.now, start, report, tick == 1).unwrap();
            pair.drain();
        }
        pair.run_for(FRAME);
    }
    pair.run_for(Duration::from_millis(500));
    let received: Vec<_> = pair
        .client_events
        .iter()
        .filter_map(|(_, e)| match e {
            ClientEvent::Dtmf { event, duration } => Some((*event, *duration)),
            _ => None,
        })
        .collect();
    assert_eq!(received, [(7, Duration::from_millis(100))]);
}

#[test]
fn hold_and_unhold_keep_ssrc_and_sequence_numbers() {
    let mut pair = Pair::connected(ClientConfig::chrome(client_addr()), CodecPrefs::default());
    let leg_ssrc = pair.leg.ssrc().unwrap();
    let client_ssrc = pair.client.ssrc().unwrap();
    assert_eq!(pair.exchange_audio(10, 0, 0), 10);

    // The browser holds (its re-INVITE): it offers sendonly, we answer recvonly.
    let offer = pair.client.create_reoffer(Direction::SendOnly).unwrap();
    let answer = pair.leg.accept_reoffer(pair.now, &offer).unwrap();
    assert!(answer.contains("a=recvonly"), "{answer}");
    pair.client.accept_answer(&answer).unwrap();
    pair.drain();
    assert_eq!(pair.leg.direction(), Direction::RecvOnly);
    assert!(pair.has_leg_event(|e| *e == Event::DirectionChanged(Direction::RecvOnly)));
    assert_eq!(
        pair.exchange_audio(10, 9600, 9600),
        0,
        "nothing is sent toward a held browser"
    );

    // The browser unholds.
    let offer = pair.client.create_reoffer(Direction::SendRecv).unwrap();
    let answer = pair.leg.accept_reoffer(pair.now, &offer).unwrap();
    pair.client.accept_answer(&answer).unwrap();
    pair.drain();
    assert_eq!(pair.leg.direction(), Direction::SendRecv);
    assert_eq!(pair.exchange_audio(10, 19_200, 19_200), 10);

    // The PBX holds: our re-INVITE offers sendonly to the browser, then unholds.
    for direction in [Direction::SendOnly, Direction::SendRecv] {
        let offer = pair.leg.create_offer(pair.now, direction).unwrap();
        let answer = pair.client.accept_offer(&offer).unwrap();
        pair.leg.accept_answer(pair.now, &answer).unwrap();
        pair.drain();
        assert_eq!(pair.leg.direction(), direction);
        assert_eq!(pair.exchange_audio(10, 28_800, 28_800), 10);
    }
    assert!(matches!(
        pair.leg.create_offer(pair.now, Direction::SendRecv),
        Err(WebrtcLegError::NothingToOffer)
    ));
    pair.run_for(Duration::from_millis(100));

    assert_eq!(pair.leg.ssrc(), Some(leg_ssrc));
    assert_eq!(pair.client.ssrc(), Some(client_ssrc));
    // Toward the browser: one stream, sequence numbers without a gap across both holds.
    let at_client = pair.client_audio();
    assert_eq!(at_client.len(), 40);
    assert!(
        at_client.windows(2).all(|w| w[1].2 == w[0].2 + 1),
        "{:?}",
        seqs(&at_client)
    );
    // From the browser: one SSRC, contiguous sequence numbers (it sent nothing while holding).
    let at_leg = pair.leg_audio();
    assert!(at_leg.iter().all(|a| a.3 == client_ssrc));
    assert!(at_leg.windows(2).all(|w| w[1].2 == w[0].2 + 1));
    assert_eq!(pair.leg.stats().packets_lost, 0);
}

fn seqs(audio: &[(u8, u64, u64, Vec<u8>)]) -> Vec<u64> {
    audio.iter().map(|a| a.2).collect()
}

#[test]
fn consent_is_lost_when_the_browser_goes_silent() {
    let mut pair = Pair::connected(ClientConfig::chrome(client_addr()), CodecPrefs::default());
    // A live browser keeps consent for as long as the call lasts.
    pair.run_for(Duration::from_secs(70));
    assert!(!pair.has_leg_event(|e| *e == Event::ConsentLost));
    assert!(!pair.leg.is_ended());

    pair.client_silent = true;
    let silent_from = pair.now;
    pair.run_until(Duration::from_secs(40), |p| {
        p.has_leg_event(|e| *e == Event::ConsentLost)
    });
    let lost_after = pair.now - silent_from;
    // 30 s after the last check, which came at most a few seconds before the silence.
    assert!(
        lost_after > Duration::from_secs(24) && lost_after <= Duration::from_secs(30),
        "{lost_after:?}"
    );
    assert!(pair.leg.is_ended());
    let events_at_end = pair.leg_events.len();
    pair.run_for(Duration::from_secs(5));
    assert_eq!(pair.leg_events.len(), events_at_end, "an ended leg is silent");
}

#[test]
fn pcmu_only_offer_is_answered_with_pcmu() {
    let mut pair = Pair::connected(ClientConfig::pcmu_only(client_addr()), CodecPrefs::default());
    let audio = pair.leg.audio();
    assert_eq!(audio.codec, AudioCodec::Pcmu);
    assert_eq!(audio.pt, 0);
    assert_eq!(audio.dtmf.map(|d| (d.pt, d.clock_rate)), Some((126, 8000)));
    assert_eq!(pair.exchange_audio(10, 0, 0), 10);
    pair.run_for(Duration::from_millis(100));
    let at_leg = pair.leg_audio();
    assert_eq!(at_leg.len(), 10);
    assert!(at_leg.windows(2).all(|w| w[1].1 == w[0].1 + 160));
    assert!(pair.client_audio().iter().all(|a| a.0 == 0));
}

#[test]
fn passthrough_preference_answers_a_chrome_offer_with_g711() {
    for (law, codec, pt) in [
        (G711::Pcmu, AudioCodec::Pcmu, 0),
        (G711::Pcma, AudioCodec::Pcma, 8),
    ] {
        let prefs = CodecPrefs {
            passthrough: Some(law),
        };
        let (pair, _, answer) = Pair::negotiate(ClientConfig::chrome(client_addr()), prefs);
        let audio = pair.leg.audio();
        assert_eq!((audio.codec, audio.pt), (codec, pt));
        // Chrome offers telephone-event at 48000 and 8000; only the G.711 clock rate is kept.
        assert_eq!(audio.dtmf.map(|d| (d.pt, d.clock_rate)), Some((126, 8000)));
        let m_line = answer.lines().find(|l| l.starts_with("m=audio")).unwrap();
        assert!(m_line.ends_with(&format!("SAVPF {pt} 126")), "{m_line}");
    }
}

#[test]
fn garbage_does_not_hurt_a_connected_leg() {
    let mut pair = Pair::connected(ClientConfig::chrome(client_addr()), CodecPrefs::default());
    let from = client_addr();
    let samples: [&[u8]; 6] = [
        &[],
        &[0x00, 0x01, 0x00, 0x00],
        &[0x00; 20],
        &[22, 0xfe, 0xfd, 0, 0],
        &[0x80, 111, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3],
        &[0x81, 200, 0, 1, 0, 0, 0, 1],
    ];
    for bytes in samples {
        pair.leg.handle_receive(pair.now, from, bound_addr(), bytes);
        pair.drain();
    }
    let mut noise = 0x1234_5678u32;
    for len in 0..300usize {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                noise ^= noise << 13;
                noise ^= noise >> 17;
                noise ^= noise << 5;
                noise as u8
            })
            .collect();
        pair.leg.handle_receive(pair.now, from, bound_addr(), &bytes);
        pair.drain();
    }
    assert!(pair.leg.is_connected());
    let rejected = pair.leg.stats().datagrams_rejected;
    // The same from an address ICE never validated is refused before str0m sees it.
    let stranger: SocketAddr = "198.51.100.99:4444".parse().unwrap();
    for bytes in samples {
        pair.leg.handle_receive(pair.now, stranger, bound_addr(), bytes);
        pair.drain();
    }
    // Classifiable ones too (DTLS, RTP): every one of them is refused.
    assert_eq!(
        pair.leg.stats().datagrams_rejected - rejected,
        samples.len() as u64
    );
    assert!(pair.leg.is_connected());
    assert_eq!(pair.exchange_audio(5, 0, 0), 5);
}

// ---- Golden SDP: our answers to real browser offers ----

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sdp/browser");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
}

/// Replaces what differs between runs (ICE credentials, certificate, SSRC, CNAME, session id) with
/// placeholders, line by line.
fn mask(sdp: &str) -> String {
    let mut out = String::new();
    for line in sdp.lines() {
        let masked = if let Some(rest) = line.strip_prefix("o=") {
            let mut fields: Vec<&str> = rest.split(' ').collect();
            if fields.len() > 1 {
                fields[1] = "<SESSION-ID>";
            }
            format!("o={}", fields.join(" "))
        } else if line.starts_with("a=ice-ufrag:") {
            "a=ice-ufrag:<UFRAG>".to_string()
        } else if line.starts_with("a=ice-pwd:") {
            "a=ice-pwd:<PWD>".to_string()
        } else if let Some(rest) = line.strip_prefix("a=fingerprint:") {
            let hash = rest.split(' ').next().unwrap_or_default();
            format!("a=fingerprint:{hash} <FINGERPRINT>")
        } else if let Some(rest) = line.strip_prefix("a=ssrc:") {
            let (_, attribute) = rest.split_once(' ').unwrap_or((rest, ""));
            let attribute = if attribute.starts_with("cname:") {
                "cname:<CNAME>"
            } else {
                attribute
            };
            format!("a=ssrc:<SSRC> {attribute}")
        } else if line.starts_with("a=candidate:") && line.contains(" ufrag ") {
            let (head, _) = line.split_once(" ufrag ").unwrap();
            format!("{head} ufrag <UFRAG>")
        } else {
            line.to_string()
        };
        out.push_str(&masked);
        out.push('\n');
    }
    out
}

/// Compares with the golden file; `CALLGATE_UPDATE_GOLDEN=1` rewrites it instead.
fn assert_golden(name: &str, answer: &str) {
    let path = format!("{FIXTURES}/{name}");
    let masked = mask(answer);
    if std::env::var_os("CALLGATE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &masked).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(masked, golden, "answer differs from {name}");
}

/// The lines of each section: `[0]` the session level, then one per m-line (the m-line first).
fn sections(sdp: &str) -> Vec<Vec<&str>> {
    let mut out = vec![Vec::new()];
    for line in sdp.lines() {
        if line.starts_with("m=") {
            out.push(Vec::new());
        }
        // `out` starts with the session section, so there is always a last one.
        out.last_mut().unwrap().push(line);
    }
    out
}

/// The values of `a=NAME:` lines in `section`.
fn attribute<'a>(section: &[&'a str], name: &str) -> Vec<&'a str> {
    let prefix = format!("a={name}:");
    section
        .iter()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

/// `pt -> "encoding/rate[/channels]"` from the rtpmap lines of `section`.
fn rtpmaps<'a>(section: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    attribute(section, "rtpmap")
        .into_iter()
        .filter_map(|v| v.split_once(' '))
        .collect()
}

/// The payload type `section` maps to `encoding` (as in "opus/48000/2"), compared case-insensitively.
fn payload_type_of<'a>(section: &[&'a str], encoding: &str) -> Option<&'a str> {
    rtpmaps(section)
        .into_iter()
        .find(|(_, e)| e.eq_ignore_ascii_case(encoding))
        .map(|(pt, _)| pt)
}

/// What an answer to a browser offer must hold, whatever the golden file says: the answer audio
/// codec and telephone-event, as the offer's rtpmap names them.
struct Expected {
    codec: &'static str,
    dtmf: &'static str,
}

/// Checks `answer` against `offer` (RFC 3264, RFC 8843, RFC 5763, RFC 4733) and returns what is
/// wrong, empty when nothing is. Payload types come from the offer, so the check stays right when a
/// recapture of the browser's offer renumbers them.
fn answer_problems(offer: &str, answer: &str, expected: &Expected) -> Vec<String> {
    let mut problems = Vec::new();
    let offer = sections(offer);
    let answer = sections(answer);
    if answer.len() != offer.len() {
        problems.push(format!(
            "{} m-lines answer {} offered",
            answer.len() - 1,
            offer.len() - 1
        ));
        return problems;
    }
    let session = &answer[0];
    if !session.contains(&"a=ice-lite") {
        problems.push("no a=ice-lite".into());
    }
    let mut accepted_mids = Vec::new();
    for (offered, answered) in offer[1..].iter().zip(&answer[1..]) {
        let offered_m: Vec<&str> = offered[0].split(' ').collect();
        let answered_m: Vec<&str> = answered[0].split(' ').collect();
        if offered_m[0] != answered_m[0] || answered_m.get(2) != offered_m.get(2) {
            problems.push(format!("m-line {:?} answers {:?}", answered[0], offered[0]));
            continue;
        }
        if offered_m[0] != "m=audio" {
            if answered_m.get(1) != Some(&"0") {
                problems.push(format!("{} is accepted, not declined with port 0", answered[0]));
            }
            continue;
        }
        if answered_m.get(1) == Some(&"0") {
            problems.push(format!("audio declined: {}", answered[0]));
            continue;
        }
        let mid = attribute(answered, "mid");
        if mid != attribute(offered, "mid") || mid.len() != 1 {
            problems.push(format!("a=mid {mid:?}, offered {:?}", attribute(offered, "mid")));
        }
        accepted_mids.extend(mid);

        let want: Vec<Option<&str>> = [expected.codec, expected.dtmf]
            .iter()
            .map(|e| payload_type_of(offered, e))
            .collect();
        let listed: Vec<Option<&str>> = answered_m[3..].iter().map(|pt| Some(*pt)).collect();
        if listed != want {
            problems.push(format!(
                "payload types {:?}, the offer's {} and {} are {want:?}",
                &answered_m[3..],
                expected.codec,
                expected.dtmf
            ));
        }
        let offered_maps = rtpmaps(offered);
        let answered_maps = rtpmaps(answered);
        if answered_maps.len() != answered_m.len() - 3 {
            problems.push(format!("rtpmap lines {answered_maps:?} for {}", answered[0]));
        }
        for (pt, encoding) in &answered_maps {
            if !offered_maps.contains(&(pt, encoding)) {
                problems.push(format!("a=rtpmap:{pt} {encoding} is not in the offer"));
            }
            if !answered_m[3..].contains(pt) {
                problems.push(format!("a=rtpmap:{pt} is not on the m-line"));
            }
        }
        for line in ["fmtp", "rtcp-fb"] {
            for value in attribute(answered, line) {
                let pt = value.split(' ').next().unwrap_or_default();
                if !answered_m[3..].contains(&pt) {
                    problems.push(format!("a={line}:{value} for a payload type not answered"));
                }
            }
        }
        // Without an fmtp the events are 0-15 (RFC 4733 section 7.1.1); with one, the digits must stay.
        if let Some(dtmf) = payload_type_of(answered, expected.dtmf) {
            let prefix = format!("{dtmf} ");
            for events in attribute(answered, "fmtp")
                .iter()
                .filter_map(|v| v.strip_prefix(prefix.as_str()))
            {
                if !events.starts_with("0-15") && !events.starts_with("0-16") {
                    problems.push(format!("telephone-event events {events}, not the 16 digits"));
                }
            }
        }
        for extmap in attribute(answered, "extmap") {
            if !attribute(offered, "extmap").contains(&extmap) {
                problems.push(format!("a=extmap:{extmap} is not in the offer with that id"));
            }
        }
        if attribute(offered, "setup").contains(&"actpass") && attribute(answered, "setup") != ["passive"] {
            problems.push(format!(
                "a=setup {:?}, wanted passive",
                attribute(answered, "setup")
            ));
        }
        if offered.contains(&"a=rtcp-mux") && !answered.contains(&"a=rtcp-mux") {
            problems.push("no a=rtcp-mux".into());
        }
        if !answered.contains(&"a=sendrecv") {
            problems.push("not a=sendrecv".into());
        }
        let fingerprint = attribute(answered, "fingerprint");
        let fingerprint_ok = fingerprint.len() == 1
            && fingerprint[0]
                .strip_prefix("sha-256 ")
                .is_some_and(|hex| hex.split(':').filter(|b| b.len() == 2).count() == 32);
        if !fingerprint_ok {
            problems.push(format!("fingerprint {fingerprint:?}"));
        }
        if attribute(answered, "ice-ufrag").len() != 1 || attribute(answered, "ice-pwd").len() != 1 {
            problems.push("ICE credentials".into());
        }
        let candidates = attribute(answered, "candidate");
        if candidates.len() != 1 || !candidates[0].contains(" udp 2130706175 203.0.113.10 50000 typ host") {
            problems.push(format!(
                "candidates {candidates:?}, wanted the one advertised host"
            ));
        }
    }
    let bundle: Vec<&str> = attribute(session, "group")
        .iter()
        .filter_map(|g| g.strip_prefix("BUNDLE "))
        .flat_map(|mids| mids.split(' '))
        .collect();
    if attribute(&offer[0], "group")
        .iter()
        .any(|g| g.starts_with("BUNDLE"))
        && bundle != accepted_mids
    {
        problems.push(format!(
            "BUNDLE group {bundle:?}, accepted mids {accepted_mids:?}"
        ));
    }
    problems
}

/// Answers `offer` with `prefs` and checks the answer; returns the leg and the answer.
fn answer_checked(offer: &str, prefs: CodecPrefs, expected: &Expected) -> (WebrtcLeg, String) {
    let (leg, answer) = WebrtcLeg::accept_offer(Instant::now(), offer, prefs, &leg_config()).unwrap();
    let problems = answer_problems(offer, &answer, expected);
    assert!(problems.is_empty(), "{problems:#?}\n{answer}");
    assert!(answer.contains(&format!("a=ice-ufrag:{}", leg.local_ufrag())));
    (leg, answer)
}

const OPUS: Expected = Expected {
    codec: "opus/48000/2",
    dtmf: "telephone-event/48000",
};
const PCMU: Expected = Expected {
    codec: "PCMU/8000",
    dtmf: "telephone-event/8000",
};
const PASSTHROUGH_PCMU: CodecPrefs = CodecPrefs {
    passthrough: Some(G711::Pcmu),
};

#[test]
fn chrome_offer_golden_answers() {
    let offer = fixture("chrome_offer.sdp");
    let (leg, answer) = answer_checked(&offer, CodecPrefs::default(), &OPUS);
    assert_eq!(leg.audio().codec, AudioCodec::Opus);
    let dtmf = leg.audio().dtmf.unwrap();
    assert_eq!(dtmf.clock_rate, 48_000);
    assert_golden("chrome_answer_opus.sdp", &answer);

    let (leg, answer) = answer_checked(&offer, PASSTHROUGH_PCMU, &PCMU);
    assert_eq!((leg.audio().codec, leg.audio().pt), (AudioCodec::Pcmu, 0));
    assert_golden("chrome_answer_pcmu.sdp", &answer);
}

#[test]
fn chrome_pcmu_only_offer_golden_answer() {
    let offer = fixture("chrome_offer_pcmu_only.sdp");
    let (leg, answer) = answer_checked(&offer, CodecPrefs::default(), &PCMU);
    assert_eq!((leg.audio().codec, leg.audio().pt), (AudioCodec::Pcmu, 0));
    assert_eq!(leg.audio().dtmf.unwrap().clock_rate, 8000);
    assert_golden("chrome_answer_pcmu_only.sdp", &answer);
}

#[test]
fn firefox_offer_golden_answers() {
    let offer = fixture("firefox_offer.sdp");
    // Firefox offers telephone-event only at 8000 Hz, next to Opus at 48000: it is kept at 8000.
    let firefox_opus = Expected {
        codec: "opus/48000/2",
        dtmf: "telephone-event/8000",
    };
    let (leg, answer) = answer_checked(&offer, CodecPrefs::default(), &firefox_opus);
    assert_eq!(leg.audio().codec, AudioCodec::Opus);
    assert_eq!(leg.audio().dtmf.unwrap().clock_rate, 8000);
    assert_golden("firefox_answer_opus.sdp", &answer);

    let (leg, answer) = answer_checked(&offer, PASSTHROUGH_PCMU, &PCMU);
    assert_eq!((leg.audio().codec, leg.audio().pt), (AudioCodec::Pcmu, 0));
    assert_golden("firefox_answer_pcmu.sdp", &answer);
}

/// The checks above can fail: each of these wrong answers is caught.
#[test]
fn answer_checks_catch_wrong_answers() {
    let offer = fixture("chrome_offer.sdp");
    let (_, answer) = answer_checked(&offer, CodecPrefs::default(), &OPUS);
    let opus = payload_type_of(&sections(&offer)[1], OPUS.codec).unwrap();
    let dtmf = payload_type_of(&sections(&offer)[1], OPUS.dtmf).unwrap();
    let m_line = answer.lines().find(|l| l.starts_with("m=audio")).unwrap();
    let mid_extmap = answer
        .lines()
        .find(|l| l.ends_with(" urn:ietf:params:rtp-hdrext:sdes:mid"))
        .unwrap();
    let wrong: Vec<(&str, String)> = vec![
        (
            "payload types",
            answer
                .replace(m_line, &m_line.replace(opus, "112"))
                .replace(&format!("a=rtpmap:{opus} "), "a=rtpmap:112 "),
        ),
        (
            "not in the offer",
            answer.replace(
                &format!("a=rtpmap:{dtmf} telephone-event/48000"),
                &format!("a=rtpmap:{dtmf} telephone-event/8000"),
            ),
        ),
        ("payload types", answer.replace(m_line, &format!("{m_line} 0"))),
        (
            "telephone-event events",
            answer.replace(&format!("a=fmtp:{dtmf} 0-16"), &format!("a=fmtp:{dtmf} 16")),
        ),
        (
            "a=fmtp:63 111/111 for a payload type not answered",
            answer.replace(
                &format!("a=fmtp:{dtmf} "),
                &format!("a=fmtp:63 111/111\r\na=fmtp:{dtmf} "),
            ),
        ),
        ("a=setup", answer.replace("a=setup:passive", "a=setup:actpass")),
        ("rtcp-mux", answer.replace("a=rtcp-mux\r\n", "")),
        ("a=mid", answer.replace("a=mid:0", "a=mid:1")),
        ("BUNDLE", answer.replace("a=group:BUNDLE 0", "a=group:BUNDLE 0 1")),
        (
            "extmap",
            answer.replace(mid_extmap, &mid_extmap.replace("a=extmap:4", "a=extmap:5")),
        ),
        ("sendrecv", answer.replace("a=sendrecv", "a=recvonly")),
        ("ice-lite", answer.replace("a=ice-lite\r\n", "")),
        ("candidates", answer.replace("203.0.113.10", "127.0.0.1")),
    ];
    for (what, sdp) in wrong {
        assert_ne!(sdp, answer, "the {what} mutation changed nothing");
        let problems = answer_problems(&offer, &sdp, &OPUS);
        assert!(
            problems.iter().any(|p| p.contains(what)),
            "{what} not caught: {problems:?}"
        );
    }
    let (video_offer, video_answer) = offer_with_video(&offer);
    assert!(answer_problems(&video_offer, &video_answer, &OPUS).is_empty());
    let accepted = video_answer.replace("m=video 0 ", "m=video 9 ");
    assert!(
        answer_problems(&video_offer, &accepted, &OPUS)
            .iter()
            .any(|p| p.contains("accepted"))
    );
}

/// The browser's audio m-line (everything after `m=audio`).
fn audio_m_line(offer: &str) -> &str {
    offer.lines().find_map(|l| l.strip_prefix("m=audio ")).unwrap()
}

#[test]
fn unacceptable_offers_are_refused() {
    let chrome = fixture("chrome_offer.sdp");
    let accept = |sdp: &str| {
        WebrtcLeg::accept_offer(Instant::now(), sdp, CodecPrefs::default(), &leg_config()).map(|_| ())
    };

    let no_fingerprint: String = chrome
        .lines()
        .filter(|l| !l.starts_with("a=fingerprint:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    assert_eq!(accept(&no_fingerprint), Err(WebrtcLegError::MissingFingerprint));

    let audio = audio_m_line(&chrome);
    let port = audio.split(' ').next().unwrap();
    let video_only = chrome
        .replace(
            &format!("m=audio {audio}"),
            &format!("m=video {port} UDP/TLS/RTP/SAVPF 96"),
        )
        .replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:96 VP8/90000");
    assert_eq!(accept(&video_only), Err(WebrtcLegError::NoAudio));

    // G.722, comfort noise and telephone-event: nothing we can take.
    let g722 = payload_type_of(&sections(&chrome)[1], "G722/8000").unwrap();
    let cn = payload_type_of(&sections(&chrome)[1], "CN/8000").unwrap();
    let event = payload_type_of(&sections(&chrome)[1], "telephone-event/8000").unwrap();
    let g722_only = chrome.replace(
        &format!("m=audio {audio}"),
        &format!("m=audio {port} UDP/TLS/RTP/SAVPF {g722} {cn} {event}"),
    );
    assert_eq!(accept(&g722_only), Err(WebrtcLegError::NoCommonCodec));

    assert!(matches!(
        accept("this is not SDP"),
        Err(WebrtcLegError::InvalidSdp(_))
    ));
    assert!(matches!(accept(""), Err(WebrtcLegError::InvalidSdp(_))));
}

/// `offer` with a bundled video m-section after its audio (what a browser offers when the page asks
/// for a camera too), and our answer to it.
fn offer_with_video(offer: &str) -> (String, String) {
    let audio = &sections(offer)[1];
    let ice = |name| format!("a={name}:{}", attribute(audio, name)[0]);
    let video = [
        "m=video 9 UDP/TLS/RTP/SAVPF 96".to_string(),
        "c=IN IP4 0.0.0.0".to_string(),
        ice("ice-ufrag"),
        ice("ice-pwd"),
        "a=setup:actpass".to_string(),
        "a=mid:1".to_string(),
        "a=sendrecv".to_string(),
        "a=rtcp-mux".to_string(),
        "a=rtpmap:96 VP8/90000".to_string(),
    ];
    let offer =
        offer.replace("a=group:BUNDLE 0\r\n", "a=group:BUNDLE 0 1\r\n") + &video.join("\r\n") + "\r\n";
    let (leg, answer) =
        WebrtcLeg::accept_offer(Instant::now(), &offer, CodecPrefs::default(), &leg_config()).unwrap();
    assert_eq!(leg.audio().codec, AudioCodec::Opus);
    (offer, answer)
}

#[test]
fn video_in_the_offer_is_declined() {
    for (name, dtmf) in [
        ("chrome_offer.sdp", "telephone-event/48000"),
        ("firefox_offer.sdp", "telephone-event/8000"),
    ] {
        let (offer, answer) = offer_with_video(&fixture(name));
        assert!(
            offer.contains("a=group:BUNDLE 0 1\r\n"),
            "{name}: the video was not added"
        );
        let expected = Expected {
            codec: "opus/48000/2",
            dtmf,
        };
        let problems = answer_problems(&offer, &answer, &expected);
        assert!(problems.is_empty(), "{name}: {problems:#?}\n{answer}");
        assert!(answer.contains("m=video 0 "), "{answer}");
    }
}

#[test]
fn closing_the_leg_tells_the_browser() {
    let mut pair = Pair::connected(ClientConfig::chrome(client_addr()), CodecPrefs::default());
    pair.leg.close(pair.now);
    pair.drain();
    pair.run_until(Duration::from_secs(2), |p| {
        p.has_client_event(|e| *e == ClientEvent::Disconnected)
    });
    assert!(pair.leg.is_ended());
    assert_eq!(
        pair.leg.write_audio(pair.now, 111, 0, &[1u8, 2, 3][..]),
        Err(WebrtcLegError::Ended)
    );
}

#[test]
fn legs_can_share_one_certificate() {
    let mut config = leg_config();
    config.dtls_cert = Some(generate_dtls_cert().unwrap());
    let offer = fixture("chrome_offer.sdp");
    let fingerprint = |answer: &str| {
        answer
            .lines()
            .find(|l| l.starts_with("a=fingerprint:"))
            .unwrap()
            .to_string()
    };
    let (_, first) = WebrtcLeg::accept_offer(Instant::now(), &offer, CodecPrefs::default(), &config).unwrap();
    let (_, second) =
        WebrtcLeg::accept_offer(Instant::now(), &offer, CodecPrefs::default(), &config).unwrap();
    let (_, own) =
        WebrtcLeg::accept_offer(Instant::now(), &offer, CodecPrefs::default(), &leg_config()).unwrap();
    assert_eq!(fingerprint(&first), fingerprint(&second));
    assert_ne!(fingerprint(&first), fingerprint(&own));
}

#[test]
fn real_udp_sockets_on_loopback() {
    use std::net::UdpSocket;

    let leg_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    leg_socket.set_nonblocking(true).unwrap();
    client_socket.set_nonblocking(true).unwrap();
    let leg_addr = leg_socket.local_addr().unwrap();
    let client_addr = client_socket.local_addr().unwrap();

    let start = Instant::now();
    let mut client = WebrtcClient::new(start, &ClientConfig::chrome(client_addr)).unwrap();
    let offer = client.create_offer().unwrap();
    let config = WebrtcLegConfig::new(leg_addr, leg_addr);
    let (mut leg, answer) = WebrtcLeg::accept_offer(start, &offer, CodecPrefs::default(), &config).unwrap();
    client.accept_answer(&answer).unwrap();
    let mut demux = Demux::new();
    demux.register(7u32, leg.local_ufrag()).unwrap();

    const FRAMES: u32 = 25;
    let (mut sent, mut at_leg, mut at_client) = (0u32, 0u32, 0u32);
    let mut next_frame = None;
    let mut buf = [0u8; 2000];
    let deadline = start + Duration::from_secs(10);
    while (at_leg < FRAMES || at_client < FRAMES) && Instant::now() < deadline {
        let now = Instant::now();
        while let Ok((len, source)) = leg_socket.recv_from(&mut buf) {
            assert_eq!(demux.route(source, &buf[..len]), Some(7));
            leg.handle_receive(now, source, leg_addr, &buf[..len]);
        }
        while let Ok((len, source)) = client_socket.recv_from(&mut buf) {
            client.handle_receive(now, source, client_addr, &buf[..len]);
        }
        leg.handle_timeout(now);
        client.handle_timeout(now);
        if leg.is_connected() && client.is_connected() && sent < FRAMES {
            let due = *next_frame.get_or_insert(now);
            if now >= due {
                let payload = frame_payload(sent);
                client.write_audio(now, u64::from(sent * 960), &payload).unwrap();
                leg.write_audio(now, 111, sent * 960, &payload[..]).unwrap();
                sent += 1;
                next_frame = Some(due + FRAME);
            }
        }
        loop {
            match leg.poll_output() {
                Output::Transmit(t) => {
                    assert_eq!(t.from, leg_addr);
                    leg_socket.send_to(&t.bytes, t.to).unwrap();
                }
                Output::Event(Event::Audio { payload, .. }) => {
                    assert_eq!(payload.to_vec(), frame_payload(at_leg));
                    at_leg += 1;
                }
                Output::Event(_) => {}
                Output::Timeout(_) => break,
            }
        }
        loop {
            match client.poll_output() {
                ClientOutput::Transmit(t) => {
                    client_socket.send_to(&t.bytes, t.to).unwrap();
                }
                ClientOutput::Event(ClientEvent::Audio { payload, .. }) => {
                    assert_eq!(payload.to_vec(), frame_payload(at_client));
                    at_client += 1;
                }
                ClientOutput::Event(_) => {}
                ClientOutput::Timeout(_) => break,
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!((at_leg, at_client), (FRAMES, FRAMES));
}
