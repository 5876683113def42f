//! Our side of the offer/answer exchange with the PBX: the offer we put in the INVITE (and in our own
//! hold/unhold re-INVITEs), and the answer to a PBX re-INVITE.

use std::net::IpAddr;

use ::sdp::SessionDescription;
use ::sdp::description::common::{Address, Attribute, ConnectionInformation};
use ::sdp::description::media::{MediaDescription, MediaName, RangedPort};
use ::sdp::description::session::{Origin, TimeDescription, Timing};

use super::{
    AudioFormat, Codec, Direction, G711_CLOCK_RATE, MediaLine, PbxMedia, SdpError, TelephoneEventFormat,
};

/// The payload type we offer for telephone-event unless told otherwise (what Asterisk and FreeSWITCH use).
pub const DEFAULT_TELEPHONE_EVENT_PAYLOAD_TYPE: u8 = 101;

/// What our end of the RTP leg looks like: the source of our offers and answers.
///
/// Built once per call from the trunk's settings and the RTP leg's ports; the direction changes with hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbxOffer {
    address: IpAddr,
    rtp_port: u16,
    rtcp_port: u16,
    codecs: Vec<Codec>,
    telephone_event: Option<u8>,
    ptime: u32,
    direction: Direction,
    rtcp_mux: bool,
}

impl PbxOffer {
    /// An offer of `codecs` in preference order (duplicates dropped) on `address` (the public address the
    /// PBX must send to), with telephone-event on payload type 101, 20 ms packets, sendrecv, and RTCP on
    /// `rtcp_port` without rtcp-mux.
    pub fn new(address: IpAddr, rtp_port: u16, rtcp_port: u16, codecs: &[Codec]) -> Result<Self, SdpError> {
        let mut unique = Vec::with_capacity(codecs.len());
        for codec in codecs {
            if !unique.contains(codec) {
                unique.push(*codec);
            }
        }
        if unique.is_empty() {
            return Err(SdpError::NoCodecs);
        }
        Ok(PbxOffer {
            address,
            rtp_port,
            rtcp_port,
            codecs: unique,
            telephone_event: Some(DEFAULT_TELEPHONE_EVENT_PAYLOAD_TYPE),
            ptime: 20,
            direction: Direction::SendRecv,
            rtcp_mux: false,
        })
    }

    /// Sets the direction we offer: [`Direction::SendOnly`] puts the PBX on hold, sendrecv takes it off.
    pub fn with_direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
        self
    }

    /// Offers `a=rtcp-mux` (RFC 5761) in addition to the separate RTCP port.
    pub fn with_rtcp_mux(mut self, rtcp_mux: bool) -> Self {
        self.rtcp_mux = rtcp_mux;
        self
    }

    /// Sets the telephone-event payload type, or `None` to offer no RFC 4733 events.
    pub fn with_telephone_event(mut self, payload_type: Option<u8>) -> Self {
        self.telephone_event = payload_type;
        self
    }

    /// Sets `a=ptime` in milliseconds.
    pub fn with_ptime(mut self, ptime_ms: u32) -> Self {
        self.ptime = ptime_ms;
        self
    }

    /// The codecs in preference order (never empty).
    pub fn codecs(&self) -> &[Codec] {
        &self.codecs
    }

    /// The direction we offer.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Whether rtcp-mux is offered.
    pub fn rtcp_mux(&self) -> bool {
        self.rtcp_mux
    }

    /// Checks a parsed PBX answer against this offer: keeps only the codecs we offered (the first one left
    /// is the one to use), drops telephone-event and rtcp-mux when we did not offer them.
    pub fn accept_answer(&self, mut answer: PbxMedia) -> Result<PbxMedia, SdpError> {
        answer.codecs.retain(|f| self.codecs.contains(&f.codec));
        answer.codec = *answer.codecs.first().ok_or(SdpError::NoCommonCodec)?;
        if self.telephone_event.is_none() {
            answer.telephone_event = None;
        }
        answer.rtcp_mux &= self.rtcp_mux;
        Ok(answer)
    }
}

/// Our answer to a PBX offer (a re-INVITE), and what it means for the RTP leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbxAnswer {
    /// The SDP body to send in the 200 OK.
    pub sdp: String,
    /// The PBX's stream as negotiated: one codec, telephone-event only if we accepted it, rtcp-mux only
    /// if both sides have it. Hand this to the RTP leg.
    pub remote: PbxMedia,
    /// The direction we answered with.
    pub direction: Direction,
}

/// The SDP state of one call toward the PBX: our `o=` line and the last description we sent.
///
/// RFC 3264 §8: every SDP we send in the session keeps the session id and origin; the version goes up by
/// one when the description changes and stays put when it does not (a session-timer refresh re-sends an
/// unchanged SDP, and the PBX must be able to see that nothing changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbxSdp {
    session_id: u64,
    version: u64,
    origin_address: Option<IpAddr>,
    last_sent: Option<String>,
}

impl PbxSdp {
    /// Starts a session. `session_id` and `initial_version` come from the caller (random in production,
    /// fixed in tests so that golden files stay stable); RFC 4566 suggests an NTP timestamp or a random
    /// number, kept below 2^63 for interoperability.
    pub fn new(session_id: u64, initial_version: u64) -> Self {
        PbxSdp {
            session_id,
            version: initial_version,
            origin_address: None,
            last_sent: None,
        }
    }

    /// The session version of the last SDP printed (or the initial one before any).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Prints our offer: all our codecs in preference order, then telephone-event.
    pub fn offer(&mut self, local: &PbxOffer) -> String {
        let formats: Vec<AudioFormat> = local
            .codecs
            .iter()
            .map(|&codec| AudioFormat {
                codec,
                payload_type: codec.static_payload_type(),
            })
            .collect();
        let telephone_event = local.telephone_event.map(|payload_type| TelephoneEventFormat {
            payload_type,
            clock_rate: G711_CLOCK_RATE,
        });
        let audio = audio_description(
            local,
            &formats,
            telephone_event,
            local.direction,
            local.rtcp_mux,
            true,
        );
        self.print(local.address, vec![audio])
    }

    /// Answers a PBX offer (re-INVITE for hold, unhold, or a media change).
    ///
    /// The codec is `keep` when the offer still lists it, so that hold and unhold never switch codecs
    /// mid-call; otherwise the first of our preferences the PBX offers. The direction is the mirror of the
    /// PBX's, narrowed by ours: they say sendonly, we answer recvonly (or inactive if we are holding too).
    /// Streams other than the audio one are rejected with port 0, in the offer's order (RFC 3264 §6).
    pub fn answer(
        &mut self,
        local: &PbxOffer,
        offer: &PbxMedia,
        keep: Option<Codec>,
    ) -> Result<PbxAnswer, SdpError> {
        let offered = |codec: Codec| offer.codecs.iter().copied().find(|f| f.codec == codec);
        let chosen = keep
            .and_then(offered)
            .or_else(|| local.codecs.iter().copied().find_map(offered))
            .ok_or(SdpError::NoCommonCodec)?;
        let telephone_event = offer.telephone_event.filter(|_| local.telephone_event.is_some());
        let rtcp_mux = offer.rtcp_mux && local.rtcp_mux;
        let direction = Direction::from_flags(
            local.direction.sends() && offer.direction.receives(),
            local.direction.receives() && offer.direction.sends(),
        );

        let mut audio = audio_description(local, &[chosen], telephone_event, direction, rtcp_mux, false);
        if offer.is_rejected() {
            audio.media_name.port.value = 0;
        }
        let media = offer
            .media_lines
            .iter()
            .enumerate()
            .map(|(index, line)| {
                if index == offer.audio_line {
                    audio.clone()
                } else {
                    rejected(line)
                }
            })
            .collect();
        let sdp = self.print(local.address, media);

        let remote = PbxMedia {
            codec: chosen,
            codecs: vec![chosen],
            telephone_event,
            rtcp_mux,
            ..offer.clone()
        };
        Ok(PbxAnswer {
            sdp,
            remote,
            direction,
        })
    }

    fn print(&mut self, address: IpAddr, media: Vec<MediaDescription>) -> String {
        let origin_address = *self.origin_address.get_or_insert(address);
        let mut description = SessionDescription {
            version: 0,
            origin: Origin {
                username: "-".to_owned(),
                session_id: self.session_id,
                session_version: self.version,
                network_type: "IN".to_owned(),
                address_type: address_type(origin_address).to_owned(),
                unicast_address: origin_address.to_string(),
            },
            session_name: "callgate".to_owned(),
            connection_information: Some(connection(address)),
            time_descriptions: vec![TimeDescription {
                timing: Timing {
                    start_time: 0,
                    stop_time: 0,
                },
                repeat_times: vec![],
            }],
            media_descriptions: media,
            ..SessionDescription::default()
        };
        let mut text = description.marshal();
        if self.last_sent.as_ref().is_some_and(|last| *last != text) {
            self.version = self.version.wrapping_add(1);
            description.origin.session_version = self.version;
            text = description.marshal();
        }
        self.last_sent = Some(text.clone());
        text
    }
}

fn audio_description(
    local: &PbxOffer,
    formats: &[AudioFormat],
    telephone_event: Option<TelephoneEventFormat>,
    direction: Direction,
    rtcp_mux: bool,
    is_offer: bool,
) -> MediaDescription {
    let mut attributes = Vec::new();
    let mut payload_types = Vec::new();
    for format in formats {
        payload_types.push(format.payload_type.to_string());
        attributes.push(value_attribute(
            "rtpmap",
            format!(
                "{} {}/{G711_CLOCK_RATE}",
                format.payload_type,
                format.codec.encoding_name()
            ),
        ));
    }
    if let Some(te) = telephone_event {
        payload_types.push(te.payload_type.to_string());
        attributes.push(value_attribute(
            "rtpmap",
            format!("{} telephone-event/{}", te.payload_type, te.clock_rate),
        ));
        attributes.push(value_attribute("fmtp", format!("{} 0-16", te.payload_type)));
    }
    attributes.push(value_attribute("ptime", local.ptime.to_string()));
    // RFC 5761 §5.1.3: an offer of rtcp-mux still names the fallback RTCP port; with mux agreed in an
    // answer, RTCP is on the RTP port and a=rtcp says so.
    let rtcp_port = if rtcp_mux && !is_offer {
        local.rtp_port
    } else {
        local.rtcp_port
    };
    attributes.push(value_attribute("rtcp", rtcp_port.to_string()));
    if rtcp_mux {
        attributes.push(Attribute::new("rtcp-mux".to_owned(), None));
    }
    attributes.push(Attribute::new(direction.attribute().to_owned(), None));
    MediaDescription {
        media_name: MediaName {
            media: "audio".to_owned(),
            // u16 always fits in isize on the targets we build for (at least 32-bit).
            port: RangedPort {
                value: local.rtp_port as isize,
                range: None,
            },
            protos: vec!["RTP".to_owned(), "AVP".to_owned()],
            formats: payload_types,
        },
        attributes,
        ..MediaDescription::default()
    }
}

fn rejected(line: &MediaLine) -> MediaDescription {
    MediaDescription {
        media_name: MediaName {
            media: line.media.clone(),
            port: RangedPort {
                value: 0,
                range: None,
            },
            protos: vec![line.proto.clone()],
            // An m= line needs at least one format even when rejected (RFC 4566 §5.14).
            formats: line.formats.first().cloned().into_iter().collect(),
        },
        ..MediaDescription::default()
    }
}

fn value_attribute(key: &str, value: String) -> Attribute {
    Attribute::new(key.to_owned(), Some(value))
}

fn address_type(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

fn connection(address: IpAddr) -> ConnectionInformation {
    ConnectionInformation {
        network_type: "IN".to_owned(),
        address_type: address_type(address).to_owned(),
        address: Some(Address {
            address: address.to_string(),
            ttl: None,
            range: None,
        }),
    }
}
