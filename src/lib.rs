//! callgate: a session border controller that lets a website put a click-to-call button in front of an
//! existing phone system.
//!
//! ## Layout
//!
//! - [`admission`]: who may call: widget tokens, Origin checks, per-widget, per-source and gateway limits.
//! - [`config`]: typed configuration (`config/callgate.toml`, `CALLGATE_*` overrides); an invalid config
//!   cannot be built.
//! - [`db`]: sqlx pool (SQLite by default, PostgreSQL for several nodes), migrations from `sql/`, and the
//!   trunk, widget and call-record repositories.
//! - [`b2bua`]: the call: two SIP dialogs and the policy of what crosses between them (sans-IO).
//! - [`demo`]: the built-in echo endpoint (answers PCMU, echoes RTP) and the demo trunk and widget.
//! - [`client`]: a browser stand-in (SIP over WebSocket as JsSIP writes it, WebRTC media with a tone and
//!   measurements) for integration tests and the load generator.
//! - [`loadgen`]: the `callgate-load` generator: many browser stand-ins against any SIP-over-WebSocket
//!   gateway, with setup times, loss, jitter, round trips and the gateway's CPU and memory per call.
//! - [`cli`]: the `callgate` command line: admin commands for trunks, widgets and call records, `serve`,
//!   `migrate`, `check-config`.
//! - [`sip`]: SIP message parsing and printing, digest authentication, transactions and dialogs (sans-IO).
//! - [`sdp`]: SDP offer/answer toward the PBX: G.711 and telephone-event negotiation, hold directions.
//! - [`media`]: G.711, Opus, jitter buffer and DTMF (sans-IO).
//! - [`transport`]: the sockets of signaling: HTTP(S) + SIP over WebSocket toward browsers, SIP over UDP/TCP
//!   toward trunks.
//! - [`metrics`]: lock-free counters and histograms, rendered for `/metrics` in Prometheus text format.
//! - [`server`]: the running gateway: listeners, tasks, the clock, graceful shutdown.
//! - [`widget`]: the click-to-call script (bundled from `widget/` by `build.rs`), `/demo` page, snippet.

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
