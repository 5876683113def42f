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

use callgate::media::webrtc_client::{ClientConfig, ClientEvent, ClientOutput, WebrtcClient};
use callgate::media::webrtc_leg::{
    AudioCodec, CodecPrefs, DtmfReport, Event, G711, Output, Transmit, WebrtcLeg, WebrtcLegConfig,
    WebrtcLegError,
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
    assert_eq!(pair.exchange_audio(5, 0, 0), 5);
}
