//! SPQR's symmetric chain: per epoch, one key chain per direction; new epochs are mixed in
//! from the braid's epoch secrets (`protocol-spec/ratchet.md` SPQR-3 … SPQR-7).

use std::collections::VecDeque;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{Direction, Epoch};
use crate::consts::{SPQR_EPOCHS_KEPT_BEFORE_SEND, SPQR_MAX_JUMP, SPQR_MAX_OOO_KEYS};
use crate::crypto::hkdf;
use crate::error::{Error, Result};

const START_INFO: &[u8] = b"Signal PQ Ratchet V1 Chain  Start";
const NEXT_INFO: &[u8] = b"Signal PQ Ratchet V1 Chain Next";
const ADD_EPOCH_INFO: &[u8] = b"Signal PQ Ratchet V1 Chain Add Epoch";

/// A 32-byte SPQR message key (the HKDF salt of the Double Ratchet message keys): zeroized on
/// drop, redacted in `Debug`.
#[derive(Clone)]
pub struct MessageKey(Zeroizing<[u8; 32]>);

impl MessageKey {
    fn new(key: [u8; 32]) -> Self {
        Self(Zeroizing::new(key))
    }
}

impl core::ops::Deref for MessageKey {
    type Target = [u8; 32];
    fn deref(&self) -> &[u8; 32] {
        &self.0
    }
}

impl core::fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MessageKey([redacted])")
    }
}

/// One direction of one epoch: counter, next chain key (absent once retired) and skipped keys.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct EpochDirection {
    pub(crate) ctr: u32,
    pub(crate) next: Option<[u8; 32]>,
    /// Skipped keys `(counter, key)`, for out-of-order delivery.
    pub(crate) skipped: Vec<(u32, [u8; 32])>,
}

impl EpochDirection {
    fn new(key: &[u8]) -> Self {
        let mut next = [0u8; 32];
        next.copy_from_slice(&key[..32]);
        Self {
            ctr: 0,
            next: Some(next),
            skipped: Vec::new(),
        }
    }

    /// `ctr += 1; o = HKDF(0×32, next, BE32(ctr) ‖ NEXT_INFO, 64)`; `next = o[..32]`, key `o[32..]`.
    fn step(&mut self) -> Result<(u32, [u8; 32])> {
        let next = self
            .next
            .as_mut()
            .ok_or(Error::InvalidArgument("SPQR chain retired"))?;
        self.ctr = self
            .ctr
            .checked_add(1)
            .ok_or(Error::InvalidMessage("SPQR chain exhausted"))?;
        let mut info = self.ctr.to_be_bytes().to_vec();
        info.extend_from_slice(NEXT_INFO);
        let okm = hkdf::<64>(Some(&[0u8; 32]), next.as_slice(), &info);
        next.copy_from_slice(&okm[..32]);
        let mut key = [0u8; 32];
        key.copy_from_slice(&okm[32..]);
        Ok((self.ctr, key))
    }

    /// The key at `at`, as the receiving side: skipped keys are stored (bounded) and used once.
    fn key_at(&mut self, at: u32) -> Result<MessageKey> {
        if at == self.ctr {
            return Err(Error::DuplicateMessage);
        }
        if at < self.ctr {
            if at.saturating_add(SPQR_MAX_OOO_KEYS) < self.ctr {
                return Err(Error::DuplicateMessage);
            }
            let pos = self
                .skipped
                .iter()
                .position(|(i, _)| *i == at)
                .ok_or(Error::DuplicateMessage)?;
            let (_, key) = self.skipped.swap_remove(pos);
            return Ok(MessageKey::new(key));
        }
        if at - self.ctr > SPQR_MAX_JUMP {
            return Err(Error::TooFarInFuture);
        }
        if at > self.ctr.saturating_add(SPQR_MAX_OOO_KEYS) {
            self.skipped.clear();
        }
        while at > self.ctr + 1 {
            let (i, key) = self.step()?;
            if i.saturating_add(SPQR_MAX_OOO_KEYS) >= at {
                self.skipped.push((i, key));
            }
        }
        let horizon = self.ctr.saturating_sub(SPQR_MAX_OOO_KEYS);
        self.skipped.retain(|(i, _)| *i >= horizon);
        let (_, key) = self.step()?;
        Ok(MessageKey::new(key))
    }
}

#[derive(Clone)]
pub(crate) struct ChainEpoch {
    pub(crate) send: EpochDirection,
    pub(crate) recv: EpochDirection,
}

/// The whole SPQR chain of one session.
#[derive(Clone)]
pub(crate) struct Chain {
    pub(crate) dir: Direction,
    pub(crate) current_epoch: Epoch,
    pub(crate) send_epoch: Epoch,
    /// Epochs `current_epoch − links.len() + 1 ..= current_epoch`.
    pub(crate) links: VecDeque<ChainEpoch>,
    pub(crate) next_root: Zeroizing<[u8; 32]>,
}

impl core::fmt::Debug for Chain {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Chain")
            .field("current_epoch", &self.current_epoch)
            .field("send_epoch", &self.send_epoch)
            .finish_non_exhaustive()
    }
}

fn link_from(okm: &[u8; 96], dir: Direction) -> ChainEpoch {
    let part = |d: Direction| match d {
        Direction::A2B => &okm[32..64],
        Direction::B2A => &okm[64..96],
    };
    ChainEpoch {
        send: EpochDirection::new(part(dir)),
        recv: EpochDirection::new(part(dir.switch())),
    }
}

impl Chain {
    /// Epoch 0 from the PQXDH auth key.
    pub(crate) fn new(auth_key: &[u8], dir: Direction) -> Self {
        let okm = hkdf::<96>(Some(&[0u8; 32]), auth_key, START_INFO);
        let mut next_root = Zeroizing::new([0u8; 32]);
        next_root.copy_from_slice(&okm[..32]);
        Self {
            dir,
            current_epoch: 0,
            send_epoch: 0,
            links: VecDeque::from([link_from(&okm, dir)]),
            next_root,
        }
    }

    /// Mixes in the secret of epoch `current_epoch + 1`.
    pub(crate) fn add_epoch(&mut self, epoch: Epoch, secret: &[u8]) -> Result<()> {
        if Some(epoch) != self.current_epoch.checked_add(1) {
            return Err(Error::InvalidMessage("SPQR epoch out of order"));
        }
        let okm = hkdf::<96>(Some(self.next_root.as_slice()), secret, ADD_EPOCH_INFO);
        self.next_root.copy_from_slice(&okm[..32]);
        self.current_epoch = epoch;
        self.links.push_back(link_from(&okm, self.dir));
        Ok(())
    }

    fn index_of(&self, epoch: Epoch) -> Result<usize> {
        let back = self
            .current_epoch
            .checked_sub(epoch)
            .ok_or(Error::InvalidMessage("SPQR epoch out of range"))?;
        let back = usize::try_from(back).map_err(|_| Error::InvalidMessage("SPQR epoch"))?;
        if back >= self.links.len() {
            return Err(Error::InvalidMessage("SPQR epoch out of range"));
        }
        Ok(self.links.len() - 1 - back)
    }

    /// Whether the chains of `epoch` are still kept.
    pub(crate) fn has_epoch(&self, epoch: Epoch) -> bool {
        self.index_of(epoch).is_ok()
    }

    /// Next sending key in `epoch`: `(counter, key)`. Retires older epochs' sending chains.
    pub(crate) fn send_key(&mut self, epoch: Epoch) -> Result<(u32, MessageKey)> {
        if epoch < self.send_epoch {
            return Err(Error::InvalidArgument("SPQR send epoch went back"));
        }
        let mut idx = self.index_of(epoch)?;
        if epoch != self.send_epoch {
            self.send_epoch = epoch;
            while idx > SPQR_EPOCHS_KEPT_BEFORE_SEND {
                self.links.pop_front();
                idx -= 1;
            }
            for link in self.links.iter_mut().take(idx) {
                if let Some(mut k) = link.send.next.take() {
                    k.zeroize();
                }
            }
        }
        let link = self
            .links
            .get_mut(idx)
            .ok_or(Error::InvalidArgument("SPQR chain link"))?;
        let (i, key) = link.send.step()?;
        Ok((i, MessageKey::new(key)))
    }

    /// Receiving key at (`epoch`, `index`).
    pub(crate) fn recv_key(&mut self, epoch: Epoch, index: u32) -> Result<MessageKey> {
        let idx = self.index_of(epoch)?;
        self.links
            .get_mut(idx)
            .ok_or(Error::InvalidArgument("SPQR chain link"))?
            .recv
            .key_at(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Chain, Chain) {
        (
            Chain::new(&[41u8; 32], Direction::A2B),
            Chain::new(&[41u8; 32], Direction::B2A),
        )
    }

    #[test]
    fn both_directions_agree_in_and_out_of_order() {
        let (mut a, mut b) = pair();
        let keys: Vec<_> = (0..5).map(|_| a.send_key(0).unwrap()).collect();
        assert_eq!(keys[0].0, 1, "the first key of an epoch has index 1");
        for i in [4usize, 0, 2, 1, 3] {
            assert_eq!(*b.recv_key(0, keys[i].0).unwrap(), *keys[i].1);
        }
        assert_eq!(
            b.recv_key(0, keys[2].0).err(),
            Some(Error::DuplicateMessage)
        );
        let (i, k) = b.send_key(0).unwrap();
        assert_eq!(*a.recv_key(0, i).unwrap(), *k);
        assert_ne!(*k, *keys[0].1, "directions use different chains");
    }

    #[test]
    fn epochs_change_keys_and_old_send_epochs_retire() {
        let (mut a, mut b) = pair();
        a.add_epoch(1, b"secret").unwrap();
        b.add_epoch(1, b"secret").unwrap();
        let (i, k) = a.send_key(1).unwrap();
        assert_eq!(*b.recv_key(1, i).unwrap(), *k);
        assert!(a.send_key(0).is_err(), "send epoch cannot go back");
        assert!(a.add_epoch(3, b"x").is_err());
        assert!(b.recv_key(2, 1).is_err());
    }

    #[test]
    fn message_key_debug_is_redacted() {
        let (mut a, _) = pair();
        let (_, k) = a.send_key(0).unwrap();
        let shown = format!("{k:?}");
        assert_eq!(shown, "MessageKey([redacted])");
    }

    #[test]
    fn epochs_kept_before_send_at_limit_and_limit_plus_one() {
        // The sender moves to send epoch 2: epoch 2 − SPQR_EPOCHS_KEPT_BEFORE_SEND still
        // receives, one further back is gone.
        let (mut a, mut b) = pair();
        let late: Vec<_> = (0..3u64)
            .map(|e| {
                if e > 0 {
                    a.add_epoch(e, &[e as u8; 32]).unwrap();
                    b.add_epoch(e, &[e as u8; 32]).unwrap();
                }
                b.send_key(e).unwrap()
            })
            .collect();
        a.send_key(2).unwrap();
        let kept = 2 - SPQR_EPOCHS_KEPT_BEFORE_SEND as u64;
        assert_eq!(
            *a.recv_key(kept, late[kept as usize].0).unwrap(),
            *late[kept as usize].1
        );
        assert!(a.recv_key(kept - 1, late[kept as usize - 1].0).is_err());
        assert_eq!(*a.recv_key(2, late[2].0).unwrap(), *late[2].1);
    }

    #[test]
    fn jump_limit_is_enforced_at_limit_and_limit_plus_one() {
        let (_, mut b) = pair();
        assert!(b.clone().recv_key(0, SPQR_MAX_JUMP).is_ok());
        assert_eq!(
            b.recv_key(0, SPQR_MAX_JUMP + 1).err(),
            Some(Error::TooFarInFuture)
        );
    }

    #[test]
    fn skipped_keys_are_bounded() {
        let (mut a, mut b) = pair();
        let first = a.send_key(0).unwrap();
        let mut last = first.0;
        for _ in 0..SPQR_MAX_OOO_KEYS + 1 {
            last = a.send_key(0).unwrap().0;
        }
        b.recv_key(0, last).unwrap();
        // counter 1 is SPQR_MAX_OOO_KEYS + 1 behind: trimmed.
        assert_eq!(b.recv_key(0, first.0).err(), Some(Error::DuplicateMessage));
        assert!(
            b.recv_key(0, 2).is_ok(),
            "exactly SPQR_MAX_OOO_KEYS behind is kept"
        );
    }
}
