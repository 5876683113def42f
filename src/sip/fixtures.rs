//! Realistic messages as captured from the clients and PBXs callgate talks to, written with LF line
//! ends; [`wire`] turns them into CRLF bytes and fills in `Content-Length: {len}`.

/// An INVITE from JsSIP 3.10 over a secure WebSocket, with a Chrome WebRTC offer.
pub(crate) const JSSIP_INVITE: &str = "\
INVITE sip:w_3f9a2c7b@gw.example.com SIP/2.0
Via: SIP/2.0/WSS 8sf2hg3lpc2l.invalid;branch=z9hG4bK2461718
Max-Forwards: 69
To: <sip:w_3f9a2c7b@gw.example.com>
From: \"Website visitor\" <sip:anonymous@anonymous.invalid>;tag=j5vp0l1bd1
Call-ID: 6m6ucdmdrckbhdkbqq8o
CSeq: 8046 INVITE
X-Callgate-Token: dzNmOWEyYzdiLjE3NjcyMjU2MDA.Xq3cG0m2lZ8u1bq0mD7n8k1tq2pYV4w9
Contact: <sip:k9qf2ohc@8sf2hg3lpc2l.invalid;transport=ws;ob>
Content-Type: application/sdp
Session-Expires: 90
Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY
Supported: timer,ice,replaces,outbound
User-Agent: JsSIP 3.10.1
Content-Length: {len}

v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=extmap-allow-mixed
a=msid-semantic: WMS 3b9c1f2e-5d3a-4c1b-9a7e-2f6d8e0c4b1a
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:2999745851 1 udp 2122260223 192.168.1.23 54321 typ host generation 0 network-id 1
a=candidate:1259421399 1 udp 1686052607 203.0.113.45 54321 typ srflx raddr 192.168.1.23 rport 54321 generation 0 network-id 1
a=candidate:4233069003 1 tcp 1518280447 192.168.1.23 9 typ host tcptype active generation 0 network-id 1
a=ice-ufrag:Wq3x
a=ice-pwd:3g3FZ7ov0vq1V8XkPZt5gR2h
a=ice-options:trickle
a=fingerprint:sha-256 5D:6B:2C:0E:11:8F:A4:3B:77:1C:9E:D2:40:5A:BB:01:8C:FE:62:13:47:9A:E0:35:7D:C8:21:B6:5F:04:9E:AA
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendrecv
a=msid:3b9c1f2e-5d3a-4c1b-9a7e-2f6d8e0c4b1a 9e1d2c3b-4a5f-4e6d-8c7b-1a2f3e4d5c6b
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:1129730721 cname:Hq7oVh3Ub0vU2Qx+
a=ssrc:1129730721 msid:3b9c1f2e-5d3a-4c1b-9a7e-2f6d8e0c4b1a 9e1d2c3b-4a5f-4e6d-8c7b-1a2f3e4d5c6b
";

/// An INVITE from SIP.js 0.21 over a secure WebSocket, with a Firefox WebRTC offer.
pub(crate) const SIPJS_INVITE: &str = "\
INVITE sip:w_3f9a2c7b@gw.example.com SIP/2.0
Via: SIP/2.0/WSS q1b4ovd3cqe1.invalid;branch=z9hG4bK4513640
To: <sip:w_3f9a2c7b@gw.example.com>
From: <sip:anonymous.h8s2m7@anonymous.invalid>;tag=e6kp4e1j2h
CSeq: 1 INVITE
Call-ID: 7dkojsbnmhsd7pbm4c5e
Max-Forwards: 70
Contact: <sip:ah3hn5n0@q1b4ovd3cqe1.invalid;transport=ws>;+sip.instance=\"<urn:uuid:8f1fa16a-1165-4a96-8341-785b1ef24f12>\"
Allow: ACK,CANCEL,INVITE,MESSAGE,BYE,OPTIONS,INFO,NOTIFY,REFER
Supported: outbound
User-Agent: SIP.js/0.21.2
Content-Type: application/sdp
Content-Length: {len}

v=0
o=mozilla...THIS_IS_SDPARTA-99.0 7393473911438131029 0 IN IP4 0.0.0.0
s=-
t=0 0
a=fingerprint:sha-256 1A:83:9C:0D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9
a=group:BUNDLE 0
a=ice-options:trickle
a=msid-semantic:WMS *
m=audio 54022 UDP/TLS/RTP/SAVPF 109 9 0 8 101
c=IN IP4 198.51.100.7
a=candidate:0 1 UDP 2122252543 10.0.0.5 54022 typ host
a=candidate:1 1 UDP 1686052863 198.51.100.7 54022 typ srflx raddr 10.0.0.5 rport 54022
a=sendrecv
a=end-of-candidates
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2/recvonly urn:ietf:params:rtp-hdrext:csrc-audio-level
a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid
a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1
a=fmtp:101 0-15
a=ice-pwd:7c1b6ab3d4e5f60718293a4b5c6d7e8f
a=ice-ufrag:4f2e9a1c
a=mid:0
a=msid:{5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9} {0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d}
a=rtcp-mux
a=rtpmap:109 opus/48000/2
a=rtpmap:9 G722/8000/1
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000/1
a=setup:actpass
a=ssrc:2871034912 cname:{6a7b8c9d-0e1f-4a2b-b3c4-d5e6f7a8b9c0}
";

/// A 200 OK from Asterisk (chan_pjsip) behind a record-routing proxy, using compact header forms.
pub(crate) const ASTERISK_200: &str = "\
SIP/2.0 200 OK
v: SIP/2.0/UDP 192.0.2.10:5060;rport=5060;received=192.0.2.10;branch=z9hG4bKPj8c1d2e3f
Record-Route: <sip:192.0.2.1;lr;ftag=as5d1e2f3a>, <sip:192.0.2.2;transport=udp;lr>
i: 3848276298220188511@192.0.2.10
f: <sip:+4930123456@192.0.2.10>;tag=as5d1e2f3a
t: <sip:2001@192.0.2.20>;tag=9f0e1d2c-3b4a-5968-7a6b-5c4d3e2f1a0b
CSeq: 102 INVITE
Server: Asterisk PBX 20.5.0
Allow: OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, INFO, REFER
m: <sip:192.0.2.20:5060>
k: 100rel, timer, replaces, norefersub
c: application/sdp
l: {len}

v=0
o=- 1183021392 1183021393 IN IP4 192.0.2.20
s=Asterisk
c=IN IP4 192.0.2.20
t=0 0
m=audio 14562 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:140
a=sendrecv
";

/// A BYE from FreeSWITCH over UDP with no body.
pub(crate) const FREESWITCH_BYE: &str = "\
BYE sip:callgate@192.0.2.10:5060;transport=udp SIP/2.0
Via: SIP/2.0/UDP 192.0.2.30;rport;branch=z9hG4bKQ2Ng6c8gr4SyB
Max-Forwards: 70
From: <sip:2001@192.0.2.30>;tag=5XeH0e8jtQBZa
To: <sip:+4930123456@192.0.2.10>;tag=k2h8d7s6a5
Call-ID: 9f3c4b0e-2c8a-4a7e-b1d9-7e6f5a4b3c2d
CSeq: 57410327 BYE
User-Agent: FreeSWITCH-mod_sofia/1.10.11-release~64bit
Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, UPDATE, REGISTER, REFER, NOTIFY
Supported: timer, path, replaces
Reason: Q.850;cause=16;text=\"NORMAL_CLEARING\"
Content-Length: {len}

";

/// All fixtures, for loops over real-world messages.
pub(crate) const ALL: [&str; 4] = [JSSIP_INVITE, SIPJS_INVITE, ASTERISK_200, FREESWITCH_BYE];

/// The fixture as it travels: CRLF line ends and the real body length in place of `{len}`.
pub(crate) fn wire(fixture: &str) -> Vec<u8> {
    let crlf = fixture.replace('\n', "\r\n");
    let body_len = crlf.split_once("\r\n\r\n").map_or(0, |(_, body)| body.len());
    crlf.replace("{len}", &body_len.to_string()).into_bytes()
}
