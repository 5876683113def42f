//! callgate: a session border controller that lets a website put a click-to-call button in front of an
//! existing phone system.
//!
//! ## One call
//!
//! ```text
//!  browser (JsSIP)            callgate                                                    PBX
//!  SIP over WS  ──▶ transport::http ─▶ server::signaling ─▶ b2bua::gateway ─▶ transport::sip_net ──▶ SIP
//!                                       │  (sip transactions, dialogs, b2bua::call, admission, trunks)
//!                                       ▼
//!  ICE/DTLS/Opus ◀▶ server::media workers: media::session = webrtc_leg ⇄ jitter/Opus/G.711/DTMF ⇄ rtp_leg ◀▶ RTP
//!                                       db: widgets, trunks, calls (CDR)        cli: admin
//! ```
//!
//! The protocol cores (`sip`, `b2bua`, `media`) are sans-IO: they take input with an explicit `now` and
//! return what to send and when to wake; only `server` and `transport` own sockets, tasks and the clock.
//!
//! ## Layout
//!
//! - [`config`]: typed configuration (`config/callgate.toml`, `CALLGATE_*` overrides); an invalid config
//!   cannot be built.
//! - [`db`]: sqlx pool (SQLite by default, PostgreSQL for several nodes), migrations from `sql/`, and the
//!   trunk, widget and call-record repositories.
//! - [`cli`]: the `callgate` command line: admin commands for trunks, widgets and call records, `serve`,
//!   `migrate`, `check-config`.
//! - [`sip`]: SIP message parsing and printing, digest authentication, transactions and dialogs (sans-IO).
//! - [`sdp`]: SDP offer/answer toward the PBX: G.711 and telephone-event negotiation, hold directions.
//! - [`b2bua`]: the call state machine, the signaling core that hosts every call's two dialogs, and trunk
//!   keepalives and registration (sans-IO).
//! - [`admission`]: who may call: widget tokens, Origin checks, per-widget, per-source and gateway limits.
//! - [`media`]: one call's media (sans-IO): the WebRTC leg (str0m), the RTP leg, G.711, Opus, jitter
//!   buffers, DTMF, and the session that bridges them.
//! - [`transport`]: the sockets of signaling: HTTP(S) + SIP over WebSocket toward browsers, SIP over UDP/TCP/TLS
//!   toward trunks.
//! - [`server`]: the running gateway: the signaling task, the media worker threads, the clock, drain.
//! - [`metrics`]: lock-free counters and histograms, rendered for `/metrics` in Prometheus text format.
//! - [`demo`]: the built-in echo endpoint (answers PCMU, echoes RTP) and the demo trunk and widget.
//! - [`widget`]: the click-to-call script (bundled from `widget/` by `build.rs`), `/demo` page, snippet.
//! - [`client`]: a browser stand-in (SIP over WebSocket as JsSIP writes it, WebRTC media with a tone and
//!   measurements) for integration tests and the load generator.
//! - [`loadgen`]: the `callgate-load` generator: many browser stand-ins against any SIP-over-WebSocket
//!   gateway, with setup times, loss, jitter, round trips and the gateway's CPU and memory per call.

pub mod admission;
pub mod b2bua;
pub mod cli;
pub mod client;
pub mod config;
pub mod db;
pub mod demo;
pub mod loadgen;
pub mod media;
pub mod metrics;
pub mod sdp;
pub mod server;
pub mod sip;
pub mod transport;
pub mod widget;
