//! [`Shared`]: the state a peer's tasks (send loops, receive loops, event handler) share.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sotto_frame::{KeyRing, SenderKey};
use tokio::sync::{mpsc, Notify};

use super::loss;
use super::record::Sinks;
use super::stats::Counters;
use super::{IvfSource, MediaEvent, OggOpusSource, TapFrame};

pub(super) struct Shared {
    pub(super) sender_key: Mutex<SenderKey>,
    /// Frames each sender key may encrypt (see [`MediaPeer::set_counter_limit`]).
    ///
    /// [`MediaPeer::set_counter_limit`]: super::MediaPeer::set_counter_limit
    pub(super) counter_limit: AtomicU64,
    /// [`MediaEvent::RotationNeeded`] already fired for the current key.
    pub(super) rotation_requested: AtomicBool,
    pub(super) ring: Mutex<KeyRing>,
    /// Bumped at each key installed: receive loops retry the frames waiting for a key.
    pub(super) key_epoch: tokio::sync::watch::Sender<u64>,
    pub(super) remote_generation: Mutex<Option<u64>>,
    pub(super) video_src: Mutex<Option<IvfSource>>,
    pub(super) audio_src: Mutex<Option<OggOpusSource>>,
    pub(super) muted: [AtomicBool; 2],
    pub(super) counters: [Counters; 2],
    pub(super) sinks: Mutex<Sinks>,
    pub(super) events: mpsc::UnboundedSender<MediaEvent>,
    pub(super) tap: Option<mpsc::UnboundedSender<TapFrame>>,
    pub(super) state: Mutex<String>,
    pub(super) gathered: Notify,
    pub(super) gathering_done: AtomicBool,
    pub(super) connected: Notify,
    pub(super) closed: AtomicBool,
    pub(super) started: Instant,
    /// Outgoing RTP loss for tests (see [`MediaPeer::set_outgoing_loss_per_mille`]).
    ///
    /// [`MediaPeer::set_outgoing_loss_per_mille`]: super::MediaPeer::set_outgoing_loss_per_mille
    pub(super) loss: Arc<loss::LossKnob>,
    /// Test knob: share of incoming RTP packets dropped before reassembly, per mille.
    pub(super) rx_loss_per_mille: AtomicU64,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave half-updated crypto state (every
    // update is a single assignment), so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub(super) fn emit(&self, e: MediaEvent) {
        let _ = self.events.send(e);
    }
}
