//! The data plane's keys: our send key (it only moves forward; the counter limit and rotation
//! warning), and the remote senders' keys in the key ring.

use std::sync::atomic::Ordering;
use std::time::Instant;

use sotto_frame::{KeyMaterial, SenderKey};

use super::shared::lock;
use super::{MediaError, MediaPeer};

impl MediaPeer {
    /// Our current sender key, to be sent to the peer inside the ratchet. Never log it.
    pub fn local_key_material(&self) -> KeyMaterial {
        lock(&self.shared.sender_key).material()
    }

    /// Installs (or updates) the peer's key. Frames that failed for want of it are not replayed,
    /// but every later frame decrypts.
    pub fn install_remote_key(&self, material: &KeyMaterial) -> Result<(), MediaError> {
        lock(&self.shared.ring).add_key(material, Instant::now())?;
        self.shared.key_epoch.send_modify(|e| *e += 1);
        Ok(())
    }

    /// Data plane: encrypt under `material` from now on (the call core decides which key, and
    /// when: join ratchets, rotations, their activation). The counter starts again under the new
    /// key. A key never goes back: material older than the current key is refused, and the same
    /// key id only while nothing was encrypted under the current one (a reused counter would
    /// reuse a nonce).
    ///
    /// # Errors
    /// [`MediaError::Frame`] for a key sotto-frame refuses or one that goes back.
    pub fn use_send_key(&self, material: &KeyMaterial) -> Result<(), MediaError> {
        let mut next = SenderKey::resume(material, 0)?;
        next.set_counter_limit(self.shared.counter_limit.load(Ordering::Relaxed));
        let mut cur = lock(&self.shared.sender_key);
        let (c, n) = (cur.id(), next.id());
        let goes_back = (n.generation, n.step) < (c.generation, c.step)
            || ((n.generation, n.step) == (c.generation, c.step) && cur.next_counter() > 0);
        if goes_back || n.sender != c.sender {
            return Err(MediaError::Frame(sotto_frame::Error::InvalidKeyId(
                "send key does not move forward",
            )));
        }
        *cur = next;
        drop(cur);
        self.shared
            .rotation_requested
            .store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Data plane: forget every key of sender id `sender` (a leaver's retention ended): their
    /// frames fail from now on.
    pub fn forget_sender(&self, sender: u64) {
        lock(&self.shared.ring).remove_sender(sender);
    }

    /// Lowers the number of frames each sender key may encrypt (the current one and every
    /// later generation; never above `sotto_frame::consts::MAX_FRAMES_PER_KEY`), e.g. to force
    /// periodic rotation. [`MediaEvent::RotationNeeded`] fires [`ROTATION_MARGIN`] frames
    /// before the limit (at once if the limit is lower than that).
    ///
    /// [`MediaEvent::RotationNeeded`]: super::MediaEvent::RotationNeeded
    /// [`ROTATION_MARGIN`]: super::consts::ROTATION_MARGIN
    pub fn set_counter_limit(&self, limit: u64) {
        let limit = limit.min(sotto_frame::consts::MAX_FRAMES_PER_KEY);
        self.shared.counter_limit.store(limit, Ordering::Relaxed);
        lock(&self.shared.sender_key).set_counter_limit(limit);
    }

    /// Frames the current key may still encrypt before its counter limit.
    pub fn frames_left(&self) -> u64 {
        lock(&self.shared.sender_key).frames_left()
    }
}
