//! callgate: a session border controller that lets a website put a click-to-call button in front of an
//! existing phone system.
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
//! - [`media`]: G.711, Opus, jitter buffer and DTMF (sans-IO).
//! - [`server`]: the running gateway: listeners, tasks, the clock, graceful shutdown.
//! - [`widget`]: the click-to-call script (bundled from `widget/` by `build.rs`), `/demo` page, snippet.

pub mod cli;
pub mod config;
pub mod db;
pub mod media;
pub mod server;
pub mod sip;
pub mod widget;
