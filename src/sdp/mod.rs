//! SDP offer/answer toward the PBX: plain RTP/AVP audio with G.711 (PCMU, PCMA) and RFC 4733
//! telephone-event, the direction attributes that carry hold and unhold, and RFC 3264 session versioning.
//!
//! Parsing and printing go through the `sdp` crate; this module adds the meaning: which codec was chosen,
//! where to send, whether the stream is held. It never allocates ports or opens sockets: the caller says
//! which ports the RTP leg owns.
//!
//! - [`PbxSdp::parse`] reads a PBX answer or re-INVITE offer into a [`PbxMedia`].
//! - [`PbxOffer`] describes our side (address, ports, codec preference, direction).
//! - [`PbxSdp`] keeps the `o=` line of one call and prints our offers and answers, incrementing the
//!   session version whenever the description changes (RFC 3264 §8).

mod offer;
mod parse;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

pub use offer::{DEFAULT_TELEPHONE_EVENT_PAYLOAD_TYPE, PbxAnswer, PbxOffer, PbxSdp};

/// The largest SDP body we parse; a real audio description is well under 2 KiB.
pub const MAX_SDP_LEN: usize = 16 * 1024;

/// The RTP clock rate of G.711 and of the telephone-event format we use toward the PBX.
pub const G711_CLOCK_RATE: u32 = 8000;

/// Why an SDP from the PBX could not be used. The B2BUA answers a re-INVITE that fails here with 488.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body is longer than [`MAX_SDP_LEN`].
    #[error("SDP body of {len} bytes is larger than the {MAX_SDP_LEN} byte limit")]
    TooLarge {
        /// Length of the body that was refused.
        len: usize,
    },
    /// The body is not well-formed SDP (the `sdp` crate's message).
    #[error("malformed SDP: {0}")]
    Syntax(String),
    /// The description has no `m=audio` line.
    #[error("SDP has no audio stream")]
    NoAudio,
    /// The audio stream uses a transport other than plain RTP (for example RTP/SAVP, which needs SRTP keys).
    #[error("unsupported audio transport {0:?} (only RTP/AVP)")]
    UnsupportedTransport(String),
    /// Neither the media nor the session level has a `c=` line for the audio stream.
    #[error("audio stream has no connection address")]
    NoConnection,
    /// The `c=` address is not an IP literal (host names would need a DNS lookup).
    #[error("connection address {0:?} is not an IP address")]
    BadConnectionAddress(String),
    /// The audio stream offers neither PCMU nor PCMA at 8000 Hz.
    #[error("no common codec (we support PCMU and PCMA)")]
    NoCommonCodec,
    /// A [`PbxOffer`] was built with an empty codec list.
    #[error("an offer needs at least one codec")]
    NoCodecs,
}

/// A G.711 codec we can send and receive toward the PBX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
}

impl Codec {
    /// The static RTP/AVP payload type (RFC 3551 table 4).
    pub fn static_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The encoding name as written in `a=rtpmap`.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The codec a static payload type stands for when no `a=rtpmap` line names it.
    pub fn from_static_payload_type(payload_type: u8) -> Option<Codec> {
        match payload_type {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    fn from_encoding_name(name: &str) -> Option<Codec> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(Codec::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(Codec::Pcma)
        } else {
            None
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encoding_name())
    }
}

/// A codec together with the payload type one SDP uses for it (normally the static one, but a dynamic
/// number with an `a=rtpmap` naming PCMU/PCMA is legal and is honoured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioFormat {
    /// Which G.711 law.
    pub codec: Codec,
    /// The payload type carried in RTP headers.
    pub payload_type: u8,
}

/// The RFC 4733 telephone-event format of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TelephoneEventFormat {
    /// The (dynamic) payload type, commonly 101.
    pub payload_type: u8,
    /// The RTP clock rate of the events; 8000 toward a G.711 PBX.
    pub clock_rate: u32,
}

/// The direction attribute of a stream, from the point of view of the side that wrote the SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// Both ways (the default when no attribute is present).
    #[default]
    SendRecv,
    /// The writer sends but does not want to receive: how a side puts the other on hold.
    SendOnly,
    /// The writer receives only: the answer to a `sendonly` offer.
    RecvOnly,
    /// Neither way (hold while already held, or both sides holding).
    Inactive,
}

impl Direction {
    /// Builds a direction from whether the writer sends and receives.
    pub fn from_flags(sends: bool, receives: bool) -> Direction {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// Whether the writer of the SDP sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the writer of the SDP wants to receive media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The same stream seen from the other end: what one side sends, the other receives.
    pub fn reversed(self) -> Direction {
        Direction::from_flags(self.receives(), self.sends())
    }

    /// The attribute name (`sendrecv`, `sendonly`, `recvonly`, `inactive`).
    pub fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn from_attribute(key: &str) -> Option<Direction> {
        match key {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.attribute())
    }
}

/// The `a=rtcp:` attribute (RFC 3605): where the writer receives RTCP when it is not RTP port + 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RtcpAttribute {
    /// The RTCP port.
    pub port: u16,
    /// The RTCP address when it differs from the `c=` address.
    pub address: Option<IpAddr>,
}

/// One `m=` line of a description, kept so that an answer can list every offered stream in order
/// (RFC 3264 §6), rejecting the ones we do not handle with port 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaLine {
    /// The media type (`audio`, `video`, `image`, …).
    pub media: String,
    /// The port (0 when the stream is rejected or disabled).
    pub port: u16,
    /// The transport, e.g. `RTP/AVP` or `udptl`.
    pub proto: String,
    /// The format list as written.
    pub formats: Vec<String>,
}

/// `o=` fields that identify one version of a peer's session description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SdpOrigin {
    /// `<sess-id>`: constant for the whole session.
    pub session_id: u64,
    /// `<sess-version>`: increments when the description changes (RFC 3264 §8).
    pub session_version: u64,
}

/// The audio stream a PBX described, in an answer to our offer or in an offer (re-INVITE) of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbxMedia {
    /// The PBX's `o=` session id and version; an unchanged version means an unchanged description.
    pub origin: SdpOrigin,
    /// The connection address (media-level `c=`, else session-level). `0.0.0.0` is the RFC 2543 hold form.
    pub address: IpAddr,
    /// The RTP port; 0 means the stream is rejected (in an answer) or disabled (in an offer).
    pub rtp_port: u16,
    /// The first codec we support in the PBX's list: in an answer, the one the PBX chose.
    pub codec: AudioFormat,
    /// Every codec we support in the PBX's order (starts with [`PbxMedia::codec`]); the sender may switch
    /// between them without a new offer, so the receive path accepts all of them.
    pub codecs: Vec<AudioFormat>,
    /// The telephone-event format, preferring the 8000 Hz one when several are listed.
    pub telephone_event: Option<TelephoneEventFormat>,
    /// `a=ptime` in milliseconds.
    pub ptime: Option<u32>,
    /// `a=maxptime` in milliseconds.
    pub maxptime: Option<u32>,
    /// The direction from the PBX's point of view; `c=0.0.0.0` removes "receives" (RFC 3264 §8.4).
    pub direction: Direction,
    /// `a=rtcp-mux`: RTCP shares the RTP port (RFC 5761).
    pub rtcp_mux: bool,
    /// `a=rtcp:` when present.
    pub rtcp: Option<RtcpAttribute>,
    /// Every `m=` line in order; an answer mirrors them.
    pub media_lines: Vec<MediaLine>,
    /// Index of the audio stream in [`PbxMedia::media_lines`].
    pub audio_line: usize,
}

impl PbxMedia {
    /// Whether the audio stream was refused (port 0).
    pub fn is_rejected(&self) -> bool {
        self.rtp_port == 0
    }

    /// Where to send RTP, until symmetric RTP learns the real source. `None` when the stream is rejected
    /// or the address is the unspecified hold address.
    pub fn rtp_addr(&self) -> Option<SocketAddr> {
        if self.rtp_port == 0 || self.address.is_unspecified() {
            return None;
        }
        Some(SocketAddr::new(self.address, self.rtp_port))
    }

    /// Where to send RTCP: the RTP address with rtcp-mux, else `a=rtcp:` (with its own address when given),
    /// else RTP port + 1 (RFC 3550 §11).
    pub fn rtcp_addr(&self) -> Option<SocketAddr> {
        let rtp = self.rtp_addr()?;
        if self.rtcp_mux {
            return Some(rtp);
        }
        match self.rtcp {
            Some(RtcpAttribute { port, address }) => {
                Some(SocketAddr::new(address.unwrap_or(self.address), port))
            }
            None => self
                .rtp_port
                .checked_add(1)
                .map(|port| SocketAddr::new(self.address, port)),
        }
    }

    /// Whether `payload_type` is one of the negotiated audio formats, and which codec it carries.
    pub fn codec_for(&self, payload_type: u8) -> Option<Codec> {
        self.codecs
            .iter()
            .find(|f| f.payload_type == payload_type)
            .map(|f| f.codec)
    }
}

impl PbxSdp {
    /// Parses a PBX answer or offer into the audio stream we will use. See [`PbxMedia`] for what is kept.
    ///
    /// A rejected stream (port 0) still parses, so that the caller can tell "rejected" from "malformed";
    /// its formats must still include PCMU or PCMA, which holds for real rejections (they echo our offer).
    pub fn parse(text: &str) -> Result<PbxMedia, SdpError> {
        parse::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../../tests/fixtures/sdp/pbx/", $name))
        };
    }

    const PUBLIC_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));

    fn our_offer() -> PbxOffer {
        PbxOffer::new(PUBLIC_IP, 20000, 20001, &[Codec::Pcmu, Codec::Pcma]).unwrap()
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn pcmu() -> AudioFormat {
        AudioFormat {
            codec: Codec::Pcmu,
            payload_type: 0,
        }
    }

    fn pcma() -> AudioFormat {
        AudioFormat {
            codec: Codec::Pcma,
            payload_type: 8,
        }
    }

    #[test]
    fn asterisk_answer() {
        let media = PbxSdp::parse(fixture!("asterisk20-answer.sdp")).unwrap();
        assert_eq!(
            media.origin,
            SdpOrigin {
                session_id: 1712345678,
                session_version: 1712345680
            }
        );
        assert_eq!(media.rtp_addr(), Some(addr("192.0.2.20:17062")));
        assert_eq!(media.rtcp_addr(), Some(addr("192.0.2.20:17063")));
        assert_eq!(media.codec, pcmu());
        assert_eq!(media.codecs, vec![pcmu()]);
        assert_eq!(
            media.telephone_event,
            Some(TelephoneEventFormat {
                payload_type: 101,
                clock_rate: 8000
            })
        );
        assert_eq!((media.ptime, media.maxptime), (Some(20), Some(150)));
        assert_eq!(media.direction, Direction::SendRecv);
        assert!(!media.rtcp_mux && media.rtcp.is_none() && !media.is_rejected());
        let accepted = our_offer().accept_answer(media.clone()).unwrap();
        assert_eq!(accepted, media);
    }

    #[test]
    fn asterisk_pcma_answer_with_rtcp_mux() {
        let media = PbxSdp::parse(fixture!("asterisk20-answer-pcma-rtcp-mux.sdp")).unwrap();
        assert_eq!(media.codec, pcma());
        assert!(media.rtcp_mux);
        assert_eq!(media.rtcp_addr(), Some(addr("192.0.2.20:10734")));
        // We did not offer rtcp-mux, so an answer claiming it must not switch RTCP onto the RTP port.
        let accepted = our_offer().accept_answer(media.clone()).unwrap();
        assert!(!accepted.rtcp_mux);
        assert_eq!(accepted.rtcp_addr(), Some(addr("192.0.2.20:10735")));
        let accepted = our_offer().with_rtcp_mux(true).accept_answer(media).unwrap();
        assert!(accepted.rtcp_mux);
    }

    #[test]
    fn freeswitch_answer_names_its_rtcp_address() {
        let media = PbxSdp::parse(fixture!("freeswitch110-answer.sdp")).unwrap();
        assert_eq!(media.origin.session_version, 1712340001);
        assert_eq!(media.codec, pcmu());
        let rtcp_ip = Some("192.0.2.30".parse().unwrap());
        assert_eq!(
            media.rtcp,
            Some(RtcpAttribute {
                port: 24681,
                address: rtcp_ip
            })
        );
        assert_eq!(media.rtcp_addr(), Some(addr("192.0.2.30:24681")));
        assert_eq!(media.maxptime, None);
    }

    #[test]
    fn sipp_echo_answer_with_bare_line_feeds() {
        let media = PbxSdp::parse(fixture!("sipp-uas-rtp-echo-answer.sdp")).unwrap();
        assert_eq!(media.rtp_addr(), Some(addr("127.0.0.1:6000")));
        assert_eq!(media.codec, pcmu());
        assert_eq!(media.telephone_event, None);
        assert_eq!(media.ptime, None);
    }

    #[test]
    fn static_payload_types_without_rtpmap_and_media_level_connection() {
        let media = PbxSdp::parse(fixture!("static-payload-types-no-rtpmap.sdp")).unwrap();
        assert_eq!(media.codecs, vec![pcma(), pcmu()]);
        assert_eq!(
            media.telephone_event,
            Some(TelephoneEventFormat {
                payload_type: 96,
                clock_rate: 8000
            })
        );
        assert_eq!(media.rtp_addr(), Some(addr("192.0.2.51:40000")));
        assert_eq!(media.ptime, Some(30));
        assert_eq!(media.media_lines.len(), 2);
        assert_eq!(media.codec_for(0), Some(Codec::Pcmu));
        assert_eq!(media.codec_for(96), None);
    }

    #[test]
    fn rejected_answer_parses_as_rejected() {
        let media = PbxSdp::parse(fixture!("answer-rejected.sdp")).unwrap();
        assert!(media.is_rejected());
        assert_eq!((media.rtp_addr(), media.rtcp_addr()), (None, None));
    }

    #[test]
    fn legacy_zero_address_hold_means_they_do_not_receive() {
        let media = PbxSdp::parse(fixture!("legacy-hold-zero-address.sdp")).unwrap();
        assert_eq!(media.direction, Direction::SendOnly);
        assert_eq!(media.rtp_addr(), None);
        let mut sdp = PbxSdp::new(4242, 1);
        let answer = sdp.answer(&our_offer(), &media, Some(Codec::Pcmu)).unwrap();
        assert_eq!(answer.direction, Direction::RecvOnly);
    }

    #[test]
    fn no_common_codec() {
        let err = PbxSdp::parse(fixture!("freeswitch110-offer-no-g711.sdp")).unwrap_err();
        assert_eq!(err, SdpError::NoCommonCodec);
        // An answer with a codec we support but did not offer is no better.
        let pcma_only = PbxSdp::parse(fixture!("asterisk20-answer-pcma-rtcp-mux.sdp")).unwrap();
        let pcmu_offer = PbxOffer::new(PUBLIC_IP, 20000, 20001, &[Codec::Pcmu]).unwrap();
        assert_eq!(
            pcmu_offer.accept_answer(pcma_only).unwrap_err(),
            SdpError::NoCommonCodec
        );
        assert_eq!(
            PbxOffer::new(PUBLIC_IP, 20000, 20001, &[]).unwrap_err(),
            SdpError::NoCodecs
        );
    }

    #[test]
    fn malformed_and_unsupported_descriptions() {
        let asterisk = fixture!("asterisk20-answer.sdp");
        type IsExpected = fn(&SdpError) -> bool;
        let cases: [(String, IsExpected); 7] = [
            (String::new(), |e| matches!(e, SdpError::Syntax(_))),
            ("hello world".to_owned(), |e| matches!(e, SdpError::Syntax(_))),
            (asterisk.replace("RTP/AVP", "RTP/SAVP"), |e| {
                matches!(e, SdpError::UnsupportedTransport(_))
            }),
            (asterisk.replace("m=audio", "m=video"), |e| {
                *e == SdpError::NoAudio
            }),
            (asterisk.replace("c=IN IP4 192.0.2.20\r\n", ""), |e| {
                *e == SdpError::NoConnection
            }),
            (
                asterisk.replace("c=IN IP4 192.0.2.20", "c=IN IP4 pbx.example.com"),
                |e| matches!(e, SdpError::BadConnectionAddress(_)),
            ),
            (asterisk.repeat(200), |e| matches!(e, SdpError::TooLarge { .. })),
        ];
        for (text, expected) in cases {
            let err = PbxSdp::parse(&text).unwrap_err();
            assert!(expected(&err), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn truncated_and_mutated_input_never_panics() {
        let mut rng = StdRng::seed_from_u64(7);
        for text in [
            fixture!("freeswitch110-reinvite-offer.sdp"),
            fixture!("asterisk20-answer.sdp"),
        ] {
            for end in 0..text.len() {
                let _ = PbxSdp::parse(&text[..end]);
            }
            for _ in 0..2000 {
                let mut bytes = text.as_bytes().to_vec();
                for _ in 0..rng.random_range(1..8) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = rng.random();
                }
                let _ = PbxSdp::parse(&String::from_utf8_lossy(&bytes));
            }
        }
        for _ in 0..2000 {
            let len = rng.random_range(0..300);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let _ = PbxSdp::parse(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn offers_match_golden_files_and_version_follows_changes() {
        let mut sdp = PbxSdp::new(4242, 1);
        let offer = our_offer();
        assert_eq!(sdp.offer(&offer), fixture!("callgate-offer.sdp"));
        // A session refresh re-sends the same description: same version (RFC 3264 §8).
        assert_eq!(sdp.offer(&offer), fixture!("callgate-offer.sdp"));
        assert_eq!(sdp.version(), 1);
        let hold = offer.clone().with_direction(Direction::SendOnly);
        assert_eq!(sdp.offer(&hold), fixture!("callgate-offer-hold.sdp"));
        assert_eq!(sdp.version(), 2);
        let unhold = sdp.offer(&offer);
        assert_eq!(sdp.version(), 3);
        assert_eq!(
            unhold,
            fixture!("callgate-offer.sdp").replace("4242 1 IN", "4242 3 IN")
        );
        // Our own offer parses back to what it says.
        let parsed = PbxSdp::parse(&unhold).unwrap();
        assert_eq!(parsed.codecs, vec![pcmu(), pcma()]);
        assert_eq!(parsed.rtcp_addr(), Some(addr("203.0.113.10:20001")));
    }

    #[test]
    fn rtcp_mux_offer_in_alaw_first_order() {
        let offer = PbxOffer::new(PUBLIC_IP, 30000, 30001, &[Codec::Pcma, Codec::Pcmu, Codec::Pcma])
            .unwrap()
            .with_rtcp_mux(true);
        assert_eq!(offer.codecs(), &[Codec::Pcma, Codec::Pcmu]);
        let mut sdp = PbxSdp::new(99, 7);
        assert_eq!(sdp.offer(&offer), fixture!("callgate-offer-pcma-rtcp-mux.sdp"));
    }

    #[test]
    fn answering_asterisk_hold_and_unhold() {
        let mut sdp = PbxSdp::new(4242, 1);
        let offer = our_offer();
        sdp.offer(&offer);
        let hold = PbxSdp::parse(fixture!("asterisk20-reinvite-hold.sdp")).unwrap();
        assert_eq!(hold.direction, Direction::SendOnly);
        // The PBX lists PCMU and PCMA; we keep the codec in use (PCMA here) rather than switch on hold.
        let answer = sdp.answer(&offer, &hold, Some(Codec::Pcma)).unwrap();
        assert_eq!(answer.sdp, fixture!("callgate-answer-hold.sdp"));
        assert_eq!(answer.direction, Direction::RecvOnly);
        assert_eq!((answer.remote.codec, answer.remote.codecs.len()), (pcma(), 1));
        assert_eq!(answer.remote.direction, Direction::SendOnly);

        let unhold = PbxSdp::parse(fixture!("asterisk20-reinvite-unhold.sdp")).unwrap();
        let answer = sdp.answer(&offer, &unhold, Some(Codec::Pcma)).unwrap();
        assert_eq!(answer.direction, Direction::SendRecv);
        assert_eq!(sdp.version(), 3);
        assert!(answer.sdp.contains("m=audio 20000 RTP/AVP 8 101\r\n"));
        assert!(answer.sdp.ends_with("a=sendrecv\r\n"));
    }

    #[test]
    fn answering_inactive_and_holding_while_held() {
        let mut sdp = PbxSdp::new(1, 1);
        let text = fixture!("freeswitch110-reinvite-hold.sdp");
        let inactive = PbxSdp::parse(&text.replace("a=sendonly", "a=inactive")).unwrap();
        let answer = sdp.answer(&our_offer(), &inactive, Some(Codec::Pcmu)).unwrap();
        assert_eq!(answer.direction, Direction::Inactive);
        assert!(answer.sdp.contains("a=inactive\r\n"));
        // We hold the PBX (sendonly) and the PBX holds us too: nobody sends.
        let held = PbxSdp::parse(text).unwrap();
        let local = our_offer().with_direction(Direction::SendOnly);
        assert_eq!(
            sdp.answer(&local, &held, Some(Codec::Pcmu)).unwrap().direction,
            Direction::Inactive
        );
    }

    #[test]
    fn answering_freeswitch_offer_keeps_codec_and_their_event_payload_type() {
        let mut sdp = PbxSdp::new(4242, 1);
        let offer = PbxSdp::parse(fixture!("freeswitch110-reinvite-offer.sdp")).unwrap();
        assert_eq!(offer.codec, pcma());
        assert_eq!(offer.codecs, vec![pcma(), pcmu()]);
        let answer = sdp.answer(&our_offer(), &offer, Some(Codec::Pcmu)).unwrap();
        assert_eq!(answer.remote.codec, pcmu());
        assert!(answer.sdp.contains("m=audio 20000 RTP/AVP 0 101\r\n"));
        // Without a codec to keep, our preference decides among what they offer.
        let answer = sdp.answer(&our_offer(), &offer, None).unwrap();
        assert_eq!(answer.remote.codec, pcmu());
        let no_events = our_offer().with_telephone_event(None);
        let answer = sdp.answer(&no_events, &offer, Some(Codec::Pcma)).unwrap();
        assert!(answer.sdp.contains("m=audio 20000 RTP/AVP 8\r\n"));
        assert_eq!(answer.remote.telephone_event, None);
    }

    #[test]
    fn answer_rejects_other_streams_in_order() {
        let mut sdp = PbxSdp::new(4242, 1);
        let offer = PbxSdp::parse(fixture!("static-payload-types-no-rtpmap.sdp")).unwrap();
        let answer = sdp.answer(&our_offer(), &offer, None).unwrap();
        assert_eq!(answer.remote.telephone_event.map(|te| te.payload_type), Some(96));
        let audio = answer.sdp.find("m=audio 20000 RTP/AVP 0 96\r\n").unwrap();
        let video = answer.sdp.find("m=video 0 RTP/AVP 31\r\n").unwrap();
        assert!(audio < video);
        let reparsed = PbxSdp::parse(&answer.sdp).unwrap();
        assert_eq!(reparsed.media_lines.len(), 2);
    }

    #[test]
    fn direct_media_reinvite_moves_the_remote_address() {
        let media = PbxSdp::parse(fixture!("asterisk20-reinvite-direct-media.sdp")).unwrap();
        assert_eq!(media.rtp_addr(), Some(addr("198.51.100.7:4002")));
        let mut sdp = PbxSdp::new(4242, 1);
        let answer = sdp.answer(&our_offer(), &media, Some(Codec::Pcmu)).unwrap();
        assert_eq!(answer.remote.rtp_addr(), Some(addr("198.51.100.7:4002")));
        assert_eq!(answer.remote.codec, pcmu());
    }

    #[test]
    fn direction_algebra() {
        for direction in [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ] {
            assert_eq!(direction.reversed().reversed(), direction);
            assert_eq!(
                Direction::from_flags(direction.sends(), direction.receives()),
                direction
            );
            assert_eq!(Direction::from_attribute(direction.attribute()), Some(direction));
        }
        assert_eq!(Direction::SendOnly.reversed(), Direction::RecvOnly);
        assert_eq!(Direction::Inactive.reversed(), Direction::Inactive);
    }
}
