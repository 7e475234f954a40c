//! sotto-call: the call engine.
//!
//! - [`consts`]: every limit and timeout, by name.
//! - [`state`]: the call state machine, free of I/O (time is a parameter).
//! - [`messages`]: call messages (offer, answer, ICE, hangup, mute, media keys) and their encoding.
//! - [`sealed`]: sealing call messages inside sotto-ratchet sessions carried by signaling envelopes.
//! - [`media`]: webrtc-rs 0.21 peers whose audio/video frames are SFrame-encrypted before packetizing.

pub mod consts;
pub mod core;
pub mod media;
pub mod messages;
pub mod sealed;
pub mod state;

pub mod engine;
pub mod group;
