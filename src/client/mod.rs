//! A browser stand-in, as a library: one JsSIP page calling through a SIP-over-WebSocket gateway, with
//! real WebRTC media. Integration tests use it to play the browser; the `callgate-load` generator runs
//! many of them in one process, so a call costs a tokio task and two sockets, never a thread.
//!
//! ## Layout
//!
//! - [`ua`]: the SIP side of one call, sans-IO: the INVITE as JsSIP writes it, CANCEL, digest
//!   challenges, the dialog, requests either way, session refresh.
//! - [`audio`]: the tone sent (pre-encoded once per process and looped) and the meter of what comes
//!   back (packets, loss, jitter, and on request the dominant frequency and the round trip through an
//!   echo), sans-IO.
//! - [`ws`]: one SIP-over-WebSocket connection (subprotocol `sip`, `Origin`, ws:// and wss://); also
//!   the raw escape hatch for malformed-message tests.
//! - [`call`]: [`Call`], the running call: [`Call::dial`], events, hang up, cancel, hold, DTMF (INFO and
//!   RFC 4733), raw frames, and a [`CallReport`] with setup timings and media figures.
//!
//! ```no_run
//! # async fn example() -> Result<(), callgate::client::ClientError> {
//! use std::time::Duration;
//! use callgate::client::{Call, CallOptions};
//!
//! let options = CallOptions {
//!     origin: Some("https://shop.example".to_owned()),
//!     analyse_audio: true,
//!     ..CallOptions::default()
//! };
//! let mut call = Call::dial("ws://127.0.0.1:8080/ws", "sip:w1dg3t@127.0.0.1", options).await?;
//! call.wait_answered(Duration::from_secs(5)).await?;
//! call.wait_media(Duration::from_secs(5)).await?;
//! tokio::time::sleep(Duration::from_secs(2)).await;
//! println!("{:?} Hz, {:?}", call.dominant_frequency(), call.report().setup_time());
//! call.hang_up().await?;
//! # Ok(())
//! # }
//! ```

pub mod audio;
pub mod call;
pub mod ua;
pub mod ws;

#[cfg(test)]
mod loopback;

pub use audio::{AudioMeter, ReceivedAudio, SendCodec, ToneLoop, ToneSpec};
pub use call::{Call, CallEvent, CallOptions, CallReport, OfferKind};
pub use ua::{CallUa, EndedBy, Phase, UaConfig, UaError, UaEvent, UaOutput};
pub use ws::{SipWebSocket, WsOptions};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket URL or a handshake header value is unusable.
    #[error("bad url: {0}")]
    Url(String),
    /// The TCP connection or the WebSocket handshake failed (refused, wrong subprotocol, HTTP error).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// TLS could not be set up for wss://.
    #[error("tls: {0}")]
    Tls(String),
    /// Sending on the WebSocket failed.
    #[error("websocket: {0}")]
    WebSocket(String),
    /// A socket operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The SIP user agent refused the command.
    #[error(transparent)]
    Ua(#[from] UaError),
    /// The WebRTC side refused (bad SDP, not negotiated, cannot send).
    #[error(transparent)]
    Webrtc(#[from] crate::media::webrtc_client::ClientError),
    /// The tone could not be encoded.
    #[error(transparent)]
    Codec(#[from] crate::media::opus_codec::OpusCodecError),
    /// The call is over, so the command cannot run.
    #[error("call ended: {0}")]
    Ended(String),
    /// What was waited for did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
}
