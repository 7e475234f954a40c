//! `sotto app`: the browser call screen. The device (Signal sessions, the sans-IO call core and
//! its driver) stays in Rust; a page served on 127.0.0.1 is its screen and its media engine
//! (camera, microphone, `RTCPeerConnection`, and an SFrame frame worker implementing
//! `protocol-spec/frame.md` in WebCrypto). See `protocol-spec/app.md`.
//!
//! - [`server`]: the loopback web server (embedded assets, CSP, token, `Origin`/`Host` checks).
//! - [`PageMedia`]: the call driver's [`sotto_call::media::MediaMaker`] backed by the page.
//! - [`protocol`]: what device and page say to each other.
//! - [`contacts`]: the page's contacts list (bounded in size and time).

pub mod assets;
pub mod consts;
pub mod contacts;
pub mod page_media;
pub mod protocol;
pub mod server;

pub use page_media::{PageLink, PageMedia};
pub use server::{start, AppError, AppServer, AppWiring};
