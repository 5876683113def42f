//! Media for one call, sans-IO: the legs, the audio primitives of the transcoding pipeline, and the
//! session that joins them.
//!
//! Nothing here reads the clock, opens a socket or allocates per packet: callers pass `now` and caller-owned
//! buffers, so every type can run on a media worker thread and be driven by a simulated clock in tests.
//!
//! - [`g711`]: ITU-T G.711 µ-law and A-law encode/decode (tables, exact against SoX).
//! - [`plc`]: G.711 packet loss concealment (pitch repetition with fade-out, after G.711 Appendix I).
//! - [`opus_codec`]: libopus decoding straight to 8 kHz and encoding from 8 kHz, with in-band FEC and PLC.
//! - [`jitter`]: an adaptive jitter buffer producing one 20 ms frame per tick.
//! - [`dtmf`]: RFC 4733 telephone-events (sender, receiver, 48000 ⇄ 8000 Hz mapping) and SIP INFO bodies.
//! - [`rtp_packet`]: RTP header parse/write without allocation, RFC 5761 RTP/RTCP demux.
//! - [`rtcp`]: RTCP sender/receiver reports and RFC 3550 reception statistics.
//! - [`rtp_leg`]: the PBX-facing RTP leg of one call: symmetric RTP, RTCP, continuity across hold.
//! - [`webrtc_leg`]: the browser-facing leg (str0m, ICE-lite, DTLS-SRTP), one per call.
//! - [`dtls_provider`]: str0m's crypto with the DTLS configuration (and its self-test) built once, not per call.
//! - [`demux`]: O(1) routing of a media worker socket's datagrams to WebRTC legs.
//! - [`session`]: one call's media: both legs and the pipeline between them (passthrough or jitter
//!   buffers and codecs), DTMF, hold, media timeout and the call's statistics.
//! - [`webrtc_client`]: the browser side of a WebRTC call, for tests and the load generator.

pub mod demux;
pub mod dtls_provider;
pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod opus_codec;
pub mod plc;
pub mod rtcp;
pub mod rtp_leg;
pub mod rtp_packet;
pub mod session;
pub mod webrtc_client;
pub mod webrtc_leg;
