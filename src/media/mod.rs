//! Media for one call, sans-IO: the audio primitives of the transcoding pipeline.
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
//! - [`webrtc_leg`]: the browser-facing leg (str0m, ICE-lite, DTLS-SRTP), one per call.
//! - [`demux`]: O(1) routing of a media worker socket's datagrams to WebRTC legs.
//! - [`webrtc_client`]: the browser side of a WebRTC call, for tests and the load generator.

pub mod demux;
pub mod g711;
pub mod opus_codec;
pub mod plc;
pub mod rtcp;
pub mod rtp_packet;
pub mod webrtc_client;
pub mod webrtc_leg;
