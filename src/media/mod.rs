//! See the crate docs for what this module owns.

pub mod rtcp;
pub mod rtp_leg;
pub mod rtp_packet;
