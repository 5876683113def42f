//! SIP core, sans-IO: message parsing and printing, digest authentication, transactions and dialogs.

pub mod dialog;
pub mod digest;
pub mod flow;
pub mod message;
pub mod transaction;

#[cfg(test)]
mod fixtures;

pub use flow::{Flow, Transport};
pub use message::{MessageError, MessageHeaders, ParseError};
