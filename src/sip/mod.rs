//! SIP core, sans-IO: message parsing and printing, digest authentication, transactions and dialogs.

pub mod digest;
pub mod flow;
pub mod message;

#[cfg(test)]
mod fixtures;

pub use flow::{Flow, Transport};
pub use message::{MessageError, MessageHeaders, ParseError};
