//! The back-to-back user agent: each browser call becomes two independent SIP dialogs, and only what the
//! policy in [`call`] allows crosses from one leg to the other. Sans-IO, like the rest of the protocol code.
//!
//! [`gateway`] hosts the calls and the transaction layer; [`trunks`] keeps the trunks probed (OPTIONS
//! keepalive, up/down) and registered, through requests the gateway sends for it.

pub mod call;
pub mod gateway;
pub mod trunks;

pub use call::{Call, CallAction, CallInput, EndCause, Leg, Offer, Route, SessionTimer, TrunkChoice};
