//! See the crate docs for what this module owns.

pub mod demux;
pub mod webrtc_client;
pub mod webrtc_leg;
