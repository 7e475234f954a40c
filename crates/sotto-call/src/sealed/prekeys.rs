//! Prekey publishing: rotation of the medium-term (signed and last-resort Kyber) prekeys, and
//! one-time prekeys under ids never used twice.

use std::time::{Instant, SystemTime};

use sotto_ratchet::{
    plan_prekey_rotation, KyberPreKeyRecord, KyberPreKeyStore, PreKeyRecord, PreKeyStore,
    SignedPreKeyRecord, SignedPreKeyStore, SIGNED_PREKEY_GRACE_MS, SIGNED_PREKEY_ROTATE_AFTER_MS,
};
use sotto_server::protocol::{OneTimePreKey, SignedPreKey, B64};

use super::device::Device;
use super::profile::write_profile;
use super::replenish::Replenish;
use super::{lock, SealedError, MAX_STORED_ONE_TIME_PREKEYS, ONE_TIME_PREKEYS};

/// What [`Device::refresh_signed_prekeys`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrekeyRefresh {
    /// The signed prekey the server now hands out.
    pub signed_prekey_id: u32,
    /// The last-resort Kyber prekey the server now hands out.
    pub kyber_prekey_id: u32,
    /// Whether a new signed or Kyber prekey was drawn.
    pub rotated: bool,
    /// How many replaced keys were deleted (past their grace period).
    pub removed: usize,
}

impl Device {
    /// Keeps the medium-term prekeys fresh (run at every sign-in of a persistent device): if
    /// the current signed prekey or last-resort Kyber prekey is
    /// [`SIGNED_PREKEY_ROTATE_AFTER_MS`] old (or there is none), draws a new one under the next
    /// id and stores it; then publishes the current pair (again, if nothing changed: that also
    /// heals a crash between storing a new pair and publishing it); only once the server has
    /// it, deletes the keys replaced more than [`SIGNED_PREKEY_GRACE_MS`] ago. Replaced keys
    /// are kept until then, so a session start built on an older bundle still opens.
    ///
    /// # Errors
    /// Store or signaling errors; nothing is deleted unless the publication succeeded.
    pub async fn refresh_signed_prekeys(
        &self,
        now: SystemTime,
    ) -> Result<PrekeyRefresh, SealedError> {
        let now_ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let mut rng = rand::rngs::OsRng;
        let (signed, kyber, remove_signed, remove_kyber, rotated) = {
            let mut store = lock(&self.store);
            let plan = |keys: &[(u32, u64)]| {
                plan_prekey_rotation(
                    keys,
                    now_ms,
                    SIGNED_PREKEY_ROTATE_AFTER_MS,
                    SIGNED_PREKEY_GRACE_MS,
                )
            };
            let sp = plan(&store.signed_pre_key_stamps()?)?;
            let kp = plan(&store.last_resort_kyber_stamps()?)?;
            let new_signed = sp
                .new_id
                .map(|id| SignedPreKeyRecord::generate(id, now_ms, &self.identity, &mut rng));
            let new_kyber = kp
                .new_id
                .map(|id| KyberPreKeyRecord::generate(id, now_ms, &self.identity, &mut rng));
            let rotated = new_signed.is_some() || new_kyber.is_some();
            // the new pair is stored (one write) before the server can hand it out
            store.transaction(|s| {
                if let Some(r) = new_signed {
                    s.save_signed_pre_key(r)?;
                }
                if let Some(r) = new_kyber {
                    s.save_kyber_pre_key(r, true)?;
                }
                Ok(())
            })?;
            let missing =
                || SealedError::Device("current signed prekey missing from the store".into());
            let signed = store.get_signed_pre_key(sp.current)?.ok_or_else(missing)?;
            let kyber = store.get_kyber_pre_key(kp.current)?.ok_or_else(missing)?;
            (signed, kyber, sp.remove, kp.remove, rotated)
        };
        let spk = SignedPreKey {
            id: signed.id,
            public: B64(signed.key_pair.public_key.serialize().to_vec()),
            signature: B64(signed.signature.to_vec()),
        };
        let kpk = SignedPreKey {
            id: kyber.id,
            public: B64(kyber.key_pair.public_key.serialize()),
            signature: B64(kyber.signature.to_vec()),
        };
        self.client
            .publish_prekeys(Some(spk), Some(kpk), vec![])
            .await?;
        let removed = remove_signed.len() + remove_kyber.len();
        if removed > 0 {
            lock(&self.store).transaction(|s| {
                for id in &remove_signed {
                    s.remove_signed_pre_key(*id)?;
                }
                for id in &remove_kyber {
                    s.remove_kyber_pre_key(*id)?;
                }
                Ok(())
            })?;
        }
        Ok(PrekeyRefresh {
            signed_prekey_id: signed.id,
            kyber_prekey_id: kyber.id,
            rotated,
            removed,
        })
    }

    /// Answers the server's "prekeys low" received at `now`: publishes a batch
    /// ([`Device::replenish_prekeys`]) unless the backoff says to wait
    /// ([`super::ReplenishBackoff`]: at once the first time, then no sooner than
    /// [`super::PREKEY_REPLENISH_BACKOFF_MIN`], doubling while the "lows" keep coming), so a
    /// drain of the server's stock cannot make the device mint without bound.
    ///
    /// # Errors
    /// Store or signaling errors (the backoff counts the attempt all the same).
    pub async fn on_prekeys_low(&self, now: Instant) -> Result<Replenish, SealedError> {
        let decision = lock(&self.replenish).on_low(now);
        if decision == Replenish::Now {
            self.publish_one_time_prekeys().await?;
        }
        Ok(decision)
    }

    /// Publishes [`ONE_TIME_PREKEYS`] more one-time prekeys under ids never used before, now
    /// (no backoff: for an explicit request; the server's "prekeys low" goes through
    /// [`Device::on_prekeys_low`]). At most [`MAX_STORED_ONE_TIME_PREKEYS`] are kept.
    ///
    /// # Errors
    /// Store or signaling errors.
    pub async fn replenish_prekeys(&self) -> Result<(), SealedError> {
        self.publish_one_time_prekeys().await
    }

    /// Generates [`ONE_TIME_PREKEYS`] one-time prekeys under fresh ids, stores them (and, for a
    /// persistent device, the next id) before anything is published, then publishes them. In
    /// the same store write, the oldest one-time prekeys past [`MAX_STORED_ONE_TIME_PREKEYS`]
    /// are dropped (lowest ids: the ones the server hands out first, so most likely already
    /// handed to someone who never used them).
    pub(super) async fn publish_one_time_prekeys(&self) -> Result<(), SealedError> {
        // reserve the range first: whatever happens next, these ids are never handed out again
        let first = {
            let mut next = lock(&self.next_prekey);
            let first = *next;
            let after = first.checked_add(ONE_TIME_PREKEYS).ok_or_else(|| {
                SealedError::Device("one-time prekey ids exhausted (register a new device)".into())
            })?;
            if let Some(p) = &self.persisted {
                let mut p = lock(p);
                let before = p.profile.next_prekey_id;
                p.profile.next_prekey_id = after;
                if let Err(e) = write_profile(&p.dir, &p.profile) {
                    p.profile.next_prekey_id = before;
                    return Err(e);
                }
            }
            *next = after;
            first
        };
        let mut rng = rand::rngs::OsRng;
        let records: Vec<PreKeyRecord> = (first..first + ONE_TIME_PREKEYS)
            .map(|id| PreKeyRecord::generate(id, &mut rng))
            .collect();
        let otpks = records
            .iter()
            .map(|pk| OneTimePreKey {
                id: pk.id,
                public: B64(pk.key_pair.public_key.serialize().to_vec()),
            })
            .collect();
        // one write for the whole batch, before the server can hand any of them out
        lock(&self.store).transaction(|s| {
            for pk in records {
                s.save_pre_key(pk)?;
            }
            let ids = s.pre_key_ids()?;
            let excess = ids
                .len()
                .saturating_sub(MAX_STORED_ONE_TIME_PREKEYS as usize);
            for id in &ids[..excess] {
                s.remove_pre_key(*id)?;
            }
            Ok(())
        })?;
        self.client.publish_prekeys(None, None, otpks).await?;
        Ok(())
    }
}
