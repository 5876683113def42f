//! Reading a PBX's SDP into a [`PbxMedia`].

use std::io::Cursor;
use std::net::IpAddr;

use ::sdp::SessionDescription;
use ::sdp::description::common::{Attribute, ConnectionInformation};

use super::{
    AudioFormat, Codec, Direction, G711_CLOCK_RATE, MAX_SDP_LEN, MediaLine, PbxMedia, RtcpAttribute,
    SdpError, SdpOrigin, TelephoneEventFormat,
};

pub(super) fn parse(text: &str) -> Result<PbxMedia, SdpError> {
    if text.len() > MAX_SDP_LEN {
        return Err(SdpError::TooLarge { len: text.len() });
    }
    let session = SessionDescription::unmarshal(&mut Cursor::new(text.as_bytes()))
        .map_err(|e| SdpError::Syntax(e.to_string()))?;

    let media_lines: Vec<MediaLine> = session
        .media_descriptions
        .iter()
        .map(|m| MediaLine {
            media: m.media_name.media.clone(),
            // The crate parsed the port as u16, so this conversion cannot fail on parsed input.
            port: u16::try_from(m.media_name.port.value).unwrap_or(0),
            proto: m.media_name.protos.join("/"),
            formats: m.media_name.formats.clone(),
        })
        .collect();
    let audio_line = media_lines
        .iter()
        .position(|m| m.media == "audio")
        .ok_or(SdpError::NoAudio)?;
    let line = &media_lines[audio_line];
    let media = &session.media_descriptions[audio_line];
    // RTP/AVPF is RTP/AVP plus feedback messages we may ignore; anything secure needs keys we do not have.
    if line.proto != "RTP/AVP" && line.proto != "RTP/AVPF" {
        return Err(SdpError::UnsupportedTransport(line.proto.clone()));
    }

    let connection = media
        .connection_information
        .as_ref()
        .or(session.connection_information.as_ref())
        .ok_or(SdpError::NoConnection)?;
    let address = connection_address(connection)?;

    let mut codecs = Vec::new();
    let mut telephone_events: Vec<TelephoneEventFormat> = Vec::new();
    for payload_type in line
        .formats
        .iter()
        .filter_map(|f| f.parse::<u8>().ok())
        .filter(|pt| *pt < 128)
    {
        match encoding(&media.attributes, payload_type) {
            Some(Encoding::Audio(codec)) => codecs.push(AudioFormat { codec, payload_type }),
            Some(Encoding::TelephoneEvent(clock_rate)) => telephone_events.push(TelephoneEventFormat {
                payload_type,
                clock_rate,
            }),
            None => {}
        }
    }
    let codec = *codecs.first().ok_or(SdpError::NoCommonCodec)?;
    let telephone_event = telephone_events
        .iter()
        .find(|te| te.clock_rate == G711_CLOCK_RATE)
        .or(telephone_events.first())
        .copied();

    let media_level = &media.attributes;
    let session_level = &session.attributes;
    let number = |key: &str| {
        attribute(media_level, key)
            .or_else(|| attribute(session_level, key))
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    let direction = media_level
        .iter()
        .chain(session_level)
        .find_map(|a| Direction::from_attribute(&a.key))
        .unwrap_or_default();
    // RFC 2543 hold: "send me nothing" expressed by an unspecified address instead of an attribute.
    let direction = if address.is_unspecified() {
        Direction::from_flags(direction.sends(), false)
    } else {
        direction
    };

    Ok(PbxMedia {
        origin: SdpOrigin {
            session_id: session.origin.session_id,
            session_version: session.origin.session_version,
        },
        address,
        rtp_port: line.port,
        codec,
        codecs,
        telephone_event,
        ptime: number("ptime"),
        maxptime: number("maxptime"),
        direction,
        rtcp_mux: media_level.iter().any(|a| a.key == "rtcp-mux"),
        rtcp: attribute(media_level, "rtcp").and_then(rtcp_attribute),
        audio_line,
        media_lines,
    })
}

/// What a payload type of the audio line carries, as far as we care.
enum Encoding {
    Audio(Codec),
    TelephoneEvent(u32),
}

/// Resolves a payload type through its `a=rtpmap`, or through the static table when there is none
/// (RFC 3551 lets static types go unmapped, and some PBXs and phones do omit them).
fn encoding(attributes: &[Attribute], payload_type: u8) -> Option<Encoding> {
    let rtpmap = attributes
        .iter()
        .filter(|a| a.key == "rtpmap")
        .filter_map(|a| a.value.as_deref())
        .find(|value| {
            value
                .split_whitespace()
                .next()
                .and_then(|pt| pt.parse::<u8>().ok())
                == Some(payload_type)
        });
    let Some(rtpmap) = rtpmap else {
        return Codec::from_static_payload_type(payload_type).map(Encoding::Audio);
    };
    // `<pt> <name>/<rate>[/<channels>]`
    let mut fields = rtpmap.split_whitespace().nth(1)?.split('/');
    let name = fields.next()?;
    let clock_rate = fields.next()?.parse::<u32>().ok()?;
    let channels = fields.next().map(|c| c.parse::<u32>().ok()).unwrap_or(Some(1))?;
    if name.eq_ignore_ascii_case("telephone-event") {
        return Some(Encoding::TelephoneEvent(clock_rate));
    }
    let codec = Codec::from_encoding_name(name)?;
    (clock_rate == G711_CLOCK_RATE && channels == 1).then_some(Encoding::Audio(codec))
}

fn attribute<'a>(attributes: &'a [Attribute], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_deref())
}

fn connection_address(connection: &ConnectionInformation) -> Result<IpAddr, SdpError> {
    let raw = connection
        .address
        .as_ref()
        .map(|a| a.address.as_str())
        .ok_or(SdpError::NoConnection)?;
    // Multicast addresses may carry `/ttl[/count]`; only the address matters here.
    let host = raw.split('/').next().unwrap_or(raw);
    host.parse::<IpAddr>()
        .map_err(|_| SdpError::BadConnectionAddress(raw.to_owned()))
}

/// `a=rtcp:<port> [IN IP4 <address>]`; a malformed attribute is ignored (RTCP then goes to RTP port + 1).
fn rtcp_attribute(value: &str) -> Option<RtcpAttribute> {
    let mut fields = value.split_whitespace();
    let port = fields.next()?.parse::<u16>().ok()?;
    let address = match (fields.next(), fields.next(), fields.next()) {
        (Some("IN"), Some("IP4" | "IP6"), Some(address)) => address.parse::<IpAddr>().ok(),
        _ => None,
    };
    Some(RtcpAttribute { port, address })
}
