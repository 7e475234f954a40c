//! Fixtures shared by sotto's integration tests and benches: the SQLite signaling server on
//! loopback, registered devices and engines, loopback media peers with their frame taps, plain
//! webrtc-rs peers (ICE-gathering wait, connected flag) and participants joining a sotto-relay
//! room.
//!
//! For tests and benches only: this crate is only ever a `[dev-dependencies]` entry and never a
//! dependency of a shipped binary or library. It panics on any fixture failure (a test that
//! cannot set up fails there), so `unwrap`/`expect`/`panic` are allowed here.
//!
//! - [`server`]: the signaling server (SQLite in a test directory) and its id.
//! - [`device`]: devices registered on it (ephemeral or persistent), engines, call messages.
//! - [`media`]: loopback [`MediaPeer`](sotto_call::media::MediaPeer)s with taps, two peers
//!   connected, media factories, tap draining, key rotation.
//! - [`plain`]: a plain webrtc-rs peer (no SFrame) that answers an offer once ICE gathering is
//!   complete.
//! - [`relay`]: participants joining a sotto-relay room (sotto media peers or plain VP8 RTP), a
//!   relay on a runtime of its own whose CPU can be read.
//! - [`group`]: members' group key schedules with key deliveries carried in process.
//! - [`tls`]: a certificate authority made at test time, server certificates (loopback or
//!   named) and the PEM files servers and clients read.
//! - [`browser`]: headless Chromium, run the same way by every browser test.
//! - [`postgres`]: a throwaway PostgreSQL cluster on loopback (root and Debian's `postgresql`).
//! - [`nats`]: a throwaway `nats-server` on loopback (the servers' doorbell).
//! - [`store`]: the signaling server's store on SQLite or on PostgreSQL, for tests that run on
//!   both backends.
//! - [`cluster`]: signaling nodes sharing one PostgreSQL and one NATS, in this process or as
//!   `sotto-server` child processes.
//! - [`coturn`]: a real coturn with REST credentials, on loopback or in a network namespace.
//! - [`janus`]: a throwaway Janus (VideoRoom only) and a client of its API, the reference SFU
//!   of the relay's forward bench.
//! - [`netns`]: two homes behind NAT routers and a public network, in network namespaces
//!   (root only), for NAT traversal tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod browser;
pub mod cluster;
pub mod coturn;
pub mod device;
pub mod group;
pub mod janus;
pub mod media;
pub mod nats;
pub mod netns;
pub mod plain;
pub mod postgres;
pub mod relay;
pub mod server;
pub mod store;
pub mod tls;
