//! O(1) demultiplexing of one media worker's UDP socket over the WebRTC legs it serves.
//!
//! Every browser flow starts with a STUN binding request whose USERNAME is
//! `<our ufrag>:<browser ufrag>` (RFC 8445 §7.2.2). The first half names the leg, so a new 5-tuple is
//! routed by a hash lookup on the ufrag and its source address is remembered; every later packet from
//! that address (DTLS, SRTP, SRTCP, consent checks) is routed by a hash lookup on the address. Nothing
//! here loops over legs, and nothing allocates per packet.
//!
//! Binding an address on the strength of a USERNAME alone is safe: the mapping only decides where
//! packets *from that address* go, and the leg checks MESSAGE-INTEGRITY before it answers, so a
//! forged request can only misroute the forger's own traffic.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::net::SocketAddr;

/// The STUN magic cookie (RFC 5389 §6).
const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// Length of the fixed STUN header.
const STUN_HEADER_LEN: usize = 20;
/// Message type of a Binding request.
const STUN_BINDING_REQUEST: u16 = 0x0001;
/// Message type of a Binding success response.
const STUN_BINDING_SUCCESS: u16 = 0x0101;
/// Attribute type of USERNAME.
const STUN_ATTR_USERNAME: u16 = 0x0006;
/// Attribute type of MESSAGE-INTEGRITY: what follows it is not covered by the integrity check.
const STUN_ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
/// RFC 5389 §15.3: USERNAME is shorter than 513 bytes.
const STUN_USERNAME_MAX: usize = 512;

/// How many remote addresses one leg may hold at once. A browser uses one or two (IPv4 and IPv6
/// host candidates, a relay); the bound stops a flood of forged requests from growing the table.
const MAX_ADDRS_PER_LEG: usize = 8;

/// What a datagram on a WebRTC port is, from its first byte (RFC 7983 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    /// A STUN message: first byte 0..=3.
    Stun,
    /// A DTLS record: first byte 20..=63.
    Dtls,
    /// An RTP or RTCP packet: first byte 128..=191.
    Rtp,
    /// Anything else, including an empty datagram.
    Unknown,
}

impl DatagramKind {
    /// Classifies a datagram by its first byte.
    pub fn of(datagram: &[u8]) -> DatagramKind {
        match datagram.first() {
            Some(0..=3) => DatagramKind::Stun,
            Some(20..=63) => DatagramKind::Dtls,
            Some(128..=191) => DatagramKind::Rtp,
            _ => DatagramKind::Unknown,
        }
    }
}

/// The parts of a STUN message header the demultiplexer and the consent timer need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StunHeader {
    /// The message type (method and class), e.g. 0x0001 for a Binding request.
    pub message_type: u16,
    /// Length of the attributes after the 20-byte header.
    pub length: usize,
}

impl StunHeader {
    /// Parses the fixed header, or `None` when the datagram is not a well-formed STUN message:
    /// top two bits set, wrong magic cookie, length not a multiple of four or past the datagram.
    pub fn parse(datagram: &[u8]) -> Option<StunHeader> {
        let header = datagram.get(..STUN_HEADER_LEN)?;
        if header[0] & 0xc0 != 0 || header[4..8] != STUN_MAGIC_COOKIE {
            return None;
        }
        let message_type = u16::from_be_bytes([header[0], header[1]]);
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if length % 4 != 0 || STUN_HEADER_LEN + length > datagram.len() {
            return None;
        }
        Some(StunHeader { message_type, length })
    }

    /// Whether this is a Binding request (an ICE connectivity or consent check).
    pub fn is_binding_request(&self) -> bool {
        self.message_type == STUN_BINDING_REQUEST
    }

    /// Whether this is a Binding success response.
    pub fn is_binding_success(&self) -> bool {
        self.message_type == STUN_BINDING_SUCCESS
    }
}

/// The USERNAME attribute of a STUN Binding request split at its first colon:
/// `(receiver's ufrag, sender's ufrag)`. `None` for anything else or for a malformed message.
pub fn stun_binding_username(datagram: &[u8]) -> Option<(&str, &str)> {
    let header = StunHeader::parse(datagram)?;
    if !header.is_binding_request() {
        return None;
    }
    let mut attributes = &datagram[STUN_HEADER_LEN..STUN_HEADER_LEN + header.length];
    while attributes.len() >= 4 {
        let kind = u16::from_be_bytes([attributes[0], attributes[1]]);
        let length = usize::from(u16::from_be_bytes([attributes[2], attributes[3]]));
        let value = attributes.get(4..4 + length)?;
        match kind {
            STUN_ATTR_USERNAME => {
                if length > STUN_USERNAME_MAX {
                    return None;
                }
                let username = std::str::from_utf8(value).ok()?;
                return username.split_once(':');
            }
            STUN_ATTR_MESSAGE_INTEGRITY => return None,
            _ => {}
        }
        // Attribute values are padded to a multiple of four bytes.
        let padded = 4 + length.div_ceil(4) * 4;
        attributes = attributes.get(padded..)?;
    }
    None
}

/// Counters of datagrams the demultiplexer could not route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DemuxStats {
    /// Non-STUN datagrams (or STUN responses) from an address no leg has used.
    pub unknown_source: u64,
    /// Binding requests whose USERNAME names no registered leg (a leg that ended, or a guess).
    pub unknown_ufrag: u64,
    /// STUN-looking datagrams that did not parse, and datagrams of no known kind.
    pub malformed: u64,
}

/// Error from registering a leg.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DemuxError {
    /// Another leg is already registered under this ICE ufrag; routing would be ambiguous.
    #[error("ICE ufrag {0:?} is already registered by another leg")]
    UfragInUse(String),
    /// An empty ufrag can never match a USERNAME.
    #[error("an ICE ufrag must not be empty")]
    EmptyUfrag,
}

/// Routes of one leg, kept so removal touches only its own entries.
#[derive(Debug)]
struct LegRoutes {
    ufrag: Box<str>,
    /// Oldest first; bounded by [`MAX_ADDRS_PER_LEG`].
    addrs: Vec<SocketAddr>,
}

/// Maps datagrams arriving on one UDP socket to the leg they belong to.
///
/// `K` is whatever identifies a leg to the caller (an index into its slab of legs).
#[derive(Debug)]
pub struct Demux<K> {
    by_ufrag: HashMap<Box<str>, K>,
    by_addr: HashMap<SocketAddr, K>,
    legs: HashMap<K, LegRoutes>,
    stats: DemuxStats,
}

impl<K: Copy + Eq + Hash> Default for Demux<K> {
    fn default() -> Self {
        Demux {
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            legs: HashMap::new(),
            stats: DemuxStats::default(),
        }
    }
}

impl<K: Copy + Eq + Hash> Demux<K> {
    /// An empty demultiplexer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `leg` under its local ICE ufrag (the first half of the USERNAME the browser sends).
    /// Registering a leg again replaces its ufrag (after an ICE restart) and keeps its addresses.
    pub fn register(&mut self, leg: K, local_ufrag: &str) -> Result<(), DemuxError> {
        if local_ufrag.is_empty() {
            return Err(DemuxError::EmptyUfrag);
        }
        match self.by_ufrag.get(local_ufrag) {
            Some(owner) if *owner != leg => return Err(DemuxError::UfragInUse(local_ufrag.to_string())),
            Some(_) => return Ok(()),
            None => {}
        }
        let ufrag: Box<str> = local_ufrag.into();
        self.by_ufrag.insert(ufrag.clone(), leg);
        match self.legs.entry(leg) {
            Entry::Occupied(mut routes) => {
                let old = std::mem::replace(&mut routes.get_mut().ufrag, ufrag);
                self.by_ufrag.remove(&old);
            }
            Entry::Vacant(slot) => {
                slot.insert(LegRoutes {
                    ufrag,
                    addrs: Vec::new(),
                });
            }
        }
        Ok(())
    }

    /// Forgets `leg`: its ufrag and every address routed to it. Returns whether it was registered.
    pub fn remove(&mut self, leg: K) -> bool {
        let Some(routes) = self.legs.remove(&leg) else {
            return false;
        };
        self.by_ufrag.remove(&routes.ufrag);
        for addr in routes.addrs {
            self.by_addr.remove(&addr);
        }
        true
    }

    /// The leg a datagram from `source` belongs to, or `None` (counted) when it belongs to none.
    ///
    /// A Binding request is routed by its USERNAME even from a known address, so a NAT that reuses
    /// a port for a new call, or an ICE restart, moves the address to the right leg.
    pub fn route(&mut self, source: SocketAddr, datagram: &[u8]) -> Option<K> {
        match DatagramKind::of(datagram) {
            DatagramKind::Stun => {
                let Some(header) = StunHeader::parse(datagram) else {
                    self.stats.malformed += 1;
                    return None;
                };
                if header.is_binding_request() {
                    return self.route_binding_request(source, datagram);
                }
                self.route_by_addr(source)
            }
            DatagramKind::Dtls | DatagramKind::Rtp => self.route_by_addr(source),
            DatagramKind::Unknown => {
                self.stats.malformed += 1;
                None
            }
        }
    }

    /// Counters of unroutable datagrams since creation.
    pub fn stats(&self) -> DemuxStats {
        self.stats
    }

    /// Number of registered legs.
    pub fn len(&self) -> usize {
        self.legs.len()
    }

    /// Whether no leg is registered.
    pub fn is_empty(&self) -> bool {
        self.legs.is_empty()
    }

    fn route_by_addr(&mut self, source: SocketAddr) -> Option<K> {
        let leg = self.by_addr.get(&source).copied();
        if leg.is_none() {
            self.stats.unknown_source += 1;
        }
        leg
    }

    fn route_binding_request(&mut self, source: SocketAddr, datagram: &[u8]) -> Option<K> {
        let Some((local_ufrag, _remote_ufrag)) = stun_binding_username(datagram) else {
            self.stats.malformed += 1;
            return None;
        };
        let Some(leg) = self.by_ufrag.get(local_ufrag).copied() else {
            self.stats.unknown_ufrag += 1;
            return None;
        };
        self.bind(source, leg);
        Some(leg)
    }

    fn bind(&mut self, source: SocketAddr, leg: K) {
        let previous = self.by_addr.insert(source, leg);
        match previous {
            Some(owner) if owner == leg => return,
            Some(owner) => {
                if let Some(routes) = self.legs.get_mut(&owner) {
                    routes.addrs.retain(|addr| *addr != source);
                }
            }
            None => {}
        }
        // Registered legs always have routes: `by_ufrag` and `legs` change together.
        let Some(routes) = self.legs.get_mut(&leg) else {
            return;
        };
        if routes.addrs.len() >= MAX_ADDRS_PER_LEG {
            let oldest = routes.addrs.remove(0);
            self.by_addr.remove(&oldest);
        }
        routes.addrs.push(source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A Binding request as a browser sends it: USERNAME, then other attributes, then
    /// MESSAGE-INTEGRITY and FINGERPRINT (their values are not checked here).
    fn binding_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        // PRIORITY first, like Chrome, so the parser has to skip an attribute.
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 0x6e, 0x7f, 0x1e, 0xff]);
        attrs.extend_from_slice(&STUN_ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        attrs.extend_from_slice(&STUN_ATTR_MESSAGE_INTEGRITY.to_be_bytes());
        attrs.extend_from_slice(&20u16.to_be_bytes());
        attrs.extend_from_slice(&[0xaa; 20]);
        attrs.extend_from_slice(&[0x80, 0x28, 0x00, 0x04, 1, 2, 3, 4]);
        let mut msg = Vec::new();
        msg.extend_from_slice(&STUN_BINDING_REQUEST.to_be_bytes());
        msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        msg.extend_from_slice(&STUN_MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attrs);
        msg
    }

    const RTP: [u8; 12] = [0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    const DTLS: [u8; 13] = [22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    #[test]
    fn parses_username_after_skipping_other_attributes() {
        let msg = binding_request("Lx3f:9tZ+q");
        assert_eq!(stun_binding_username(&msg), Some(("Lx3f", "9tZ+q")));
    }

    #[test]
    fn rejects_malformed_stun() {
        let good = binding_request("abcd:efgh");
        // Truncated inside the attributes: the header length points past the end.
        assert_eq!(stun_binding_username(&good[..good.len() - 4]), None);
        // Wrong magic cookie.
        let mut bad = good.clone();
        bad[4] = 0;
        assert_eq!(stun_binding_username(&bad), None);
        // An attribute length running past the message.
        let mut bad = good.clone();
        bad[STUN_HEADER_LEN + 8 + 2..STUN_HEADER_LEN + 8 + 4].copy_from_slice(&0x0400u16.to_be_bytes());
        assert_eq!(stun_binding_username(&bad), None);
        // A response is not a request.
        let mut bad = good;
        bad[0..2].copy_from_slice(&STUN_BINDING_SUCCESS.to_be_bytes());
        assert_eq!(stun_binding_username(&bad), None);
        // No colon.
        assert_eq!(stun_binding_username(&binding_request("abcdefgh")), None);
        // Garbage of every short length.
        for len in 0..40 {
            assert_eq!(stun_binding_username(&vec![0u8; len]), None);
        }
    }

    #[test]
    fn first_stun_binds_the_address_then_media_follows_it() {
        let mut demux = Demux::new();
        demux.register(1u32, "leg1").unwrap();
        demux.register(2u32, "leg2").unwrap();
        let browser = addr("198.51.100.7:50000");

        assert_eq!(demux.route(browser, &RTP), None, "media before STUN is dropped");
        assert_eq!(demux.stats().unknown_source, 1);

        assert_eq!(demux.route(browser, &binding_request("leg2:br0wser")), Some(2));
        assert_eq!(demux.route(browser, &DTLS), Some(2));
        assert_eq!(demux.route(browser, &RTP), Some(2));
        assert_eq!(demux.route(addr("198.51.100.7:50001"), &RTP), None);
        assert_eq!(demux.stats().unknown_source, 2);
    }

    #[test]
    fn unknown_ufrag_and_garbage_are_counted() {
        let mut demux = Demux::new();
        demux.register(1u32, "leg1").unwrap();
        let browser = addr("198.51.100.7:50000");
        assert_eq!(demux.route(browser, &binding_request("nope:br0wser")), None);
        assert_eq!(demux.route(browser, &[0x00, 0x01, 0x00]), None);
        assert_eq!(demux.route(browser, &[0xff; 30]), None);
        assert_eq!(demux.route(browser, &[]), None);
        assert_eq!(
            demux.stats(),
            DemuxStats {
                unknown_source: 0,
                unknown_ufrag: 1,
                malformed: 3
            }
        );
    }

    #[test]
    fn removal_forgets_ufrag_and_addresses() {
        let mut demux = Demux::new();
        demux.register(1u32, "leg1").unwrap();
        let browser = addr("[2001:db8::1]:40000");
        assert_eq!(demux.route(browser, &binding_request("leg1:b")), Some(1));
        assert!(demux.remove(1));
        assert!(!demux.remove(1));
        assert!(demux.is_empty());
        assert_eq!(demux.route(browser, &RTP), None);
        assert_eq!(demux.route(browser, &binding_request("leg1:b")), None);
    }

    #[test]
    fn a_reused_address_moves_to_the_leg_its_username_names() {
        let mut demux = Demux::new();
        demux.register(1u32, "old1").unwrap();
        demux.register(2u32, "new2").unwrap();
        let nat = addr("203.0.113.9:61000");
        assert_eq!(demux.route(nat, &binding_request("old1:x")), Some(1));
        assert_eq!(demux.route(nat, &binding_request("new2:y")), Some(2));
        assert_eq!(demux.route(nat, &RTP), Some(2));
        // Removing the first leg must not take the address the second leg now owns.
        demux.remove(1);
        assert_eq!(demux.route(nat, &RTP), Some(2));
    }

    #[test]
    fn ufrags_are_unique_and_can_be_replaced() {
        let mut demux = Demux::new();
        demux.register(1u32, "same").unwrap();
        assert_eq!(
            demux.register(2u32, "same"),
            Err(DemuxError::UfragInUse("same".into()))
        );
        assert_eq!(demux.register(2u32, ""), Err(DemuxError::EmptyUfrag));
        let browser = addr("198.51.100.7:50000");
        assert_eq!(demux.route(browser, &binding_request("same:b")), Some(1));
        // ICE restart: a new ufrag, the old one stops routing, the address stays.
        demux.register(1u32, "next").unwrap();
        assert_eq!(demux.route(browser, &binding_request("same:b")), None);
        assert_eq!(demux.route(browser, &binding_request("next:b")), Some(1));
        assert_eq!(demux.route(browser, &RTP), Some(1));
        assert_eq!(demux.len(), 1);
    }

    #[test]
    fn addresses_per_leg_are_bounded() {
        let mut demux = Demux::new();
        demux.register(1u32, "leg1").unwrap();
        let request = binding_request("leg1:b");
        for port in 0..(MAX_ADDRS_PER_LEG as u16 + 3) {
            let source = SocketAddr::from(([192, 0, 2, 1], 10000 + port));
            assert_eq!(demux.route(source, &request), Some(1));
        }
        assert_eq!(demux.by_addr.len(), MAX_ADDRS_PER_LEG);
        // The oldest addresses were evicted, the newest still route.
        assert_eq!(demux.route(SocketAddr::from(([192, 0, 2, 1], 10000)), &RTP), None);
        let newest = SocketAddr::from(([192, 0, 2, 1], 10000 + MAX_ADDRS_PER_LEG as u16 + 2));
        assert_eq!(demux.route(newest, &RTP), Some(1));
    }

    #[test]
    fn classifies_by_first_byte() {
        assert_eq!(DatagramKind::of(&[0x01]), DatagramKind::Stun);
        assert_eq!(DatagramKind::of(&[22]), DatagramKind::Dtls);
        assert_eq!(DatagramKind::of(&[0x80]), DatagramKind::Rtp);
        assert_eq!(DatagramKind::of(&[0x40]), DatagramKind::Unknown);
        assert_eq!(DatagramKind::of(&[]), DatagramKind::Unknown);
    }
}
