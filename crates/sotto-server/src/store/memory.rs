//! In-memory [`Store`] for unit tests and ephemeral servers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::*;

#[derive(Default)]
struct Device {
    identity: Vec<u8>,
    signed: Option<SignedPreKey>,
    kem: Option<SignedPreKey>,
    one_time: BTreeMap<u32, OneTimePreKey>,
}

#[derive(Default)]
struct Inner {
    devices: BTreeMap<DeviceAddr, Device>,
    queues: HashMap<DeviceAddr, BTreeMap<u64, NewEnvelope>>,
    next_id: u64,
    /// Connection claims: node and epoch per device.
    connections: HashMap<DeviceAddr, (String, u64)>,
    next_epoch: u64,
    /// Shared limit buckets.
    buckets: HashMap<String, crate::limits::SharedBucket>,
    /// Relay rooms.
    relay_rooms: crate::relay_rooms::RelayRooms,
}

/// Everything in a mutex; lost when dropped.
#[derive(Default)]
pub struct MemoryStore(Mutex<Inner>);

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for MemoryStore {
    fn register(&self, addr: &DeviceAddr, key: &[u8], _now: u64) -> StoreResult<RegisterOutcome> {
        let mut g = self.lock();
        if let Some(d) = g.devices.get(addr) {
            return Ok(if d.identity == key {
                RegisterOutcome::AlreadyRegistered
            } else {
                RegisterOutcome::IdentityMismatch
            });
        }
        let first = DeviceAddr::new(addr.user.clone(), 0);
        let last = DeviceAddr::new(addr.user.clone(), u32::MAX);
        if g.devices.range(first..=last).next().is_some() {
            return Ok(RegisterOutcome::UsernameTaken);
        }
        g.devices.insert(
            addr.clone(),
            Device {
                identity: key.to_vec(),
                ..Device::default()
            },
        );
        Ok(RegisterOutcome::Created)
    }

    fn set_device(
        &self,
        addr: &DeviceAddr,
        key: &[u8],
        _now: u64,
        max_devices: usize,
    ) -> StoreResult<SetDeviceOutcome> {
        let mut g = self.lock();
        let outcome = match g.devices.get(addr) {
            Some(d) if d.identity == key => return Ok(SetDeviceOutcome::Unchanged),
            Some(_) => SetDeviceOutcome::Replaced,
            None => {
                let first = DeviceAddr::new(addr.user.clone(), 0);
                let last = DeviceAddr::new(addr.user.clone(), u32::MAX);
                if g.devices.range(first..=last).count() >= max_devices {
                    return Ok(SetDeviceOutcome::TooManyDevices);
                }
                SetDeviceOutcome::Added
            }
        };
        g.devices.insert(
            addr.clone(),
            Device {
                identity: key.to_vec(),
                ..Device::default()
            },
        );
        g.queues.remove(addr);
        Ok(outcome)
    }

    fn identity(&self, addr: &DeviceAddr) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.lock().devices.get(addr).map(|d| d.identity.clone()))
    }

    fn devices(&self, user: &str) -> StoreResult<Vec<u32>> {
        Ok(self
            .lock()
            .devices
            .keys()
            .filter(|a| a.user == user)
            .map(|a| a.device)
            .collect())
    }

    fn publish_prekeys(
        &self,
        addr: &DeviceAddr,
        signed: Option<&SignedPreKey>,
        kem: Option<&SignedPreKey>,
        one_time: &[OneTimePreKey],
        max_one_time: usize,
    ) -> StoreResult<Option<u32>> {
        let mut g = self.lock();
        let Some(d) = g.devices.get_mut(addr) else {
            return Ok(None);
        };
        let new_ids = one_time
            .iter()
            .filter(|k| !d.one_time.contains_key(&k.id))
            .map(|k| k.id)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if d.one_time.len() + new_ids > max_one_time {
            return Ok(None);
        }
        if let Some(s) = signed {
            d.signed = Some(s.clone());
        }
        if let Some(k) = kem {
            d.kem = Some(k.clone());
        }
        for k in one_time {
            d.one_time.insert(k.id, k.clone());
        }
        Ok(Some(u32::try_from(d.one_time.len()).unwrap_or(u32::MAX)))
    }

    fn one_time_count(&self, addr: &DeviceAddr) -> StoreResult<u32> {
        Ok(self
            .lock()
            .devices
            .get(addr)
            .map(|d| u32::try_from(d.one_time.len()).unwrap_or(u32::MAX))
            .unwrap_or(0))
    }

    fn take_bundle(&self, addr: &DeviceAddr, one_time: bool) -> StoreResult<BundleOutcome> {
        let mut g = self.lock();
        let Some(d) = g.devices.get_mut(addr) else {
            return Ok(BundleOutcome::UnknownDevice);
        };
        let (Some(signed), Some(kem)) = (d.signed.clone(), d.kem.clone()) else {
            return Ok(BundleOutcome::NoPrekeys);
        };
        let otk = if one_time {
            d.one_time.pop_first().map(|(_, k)| k)
        } else {
            None
        };
        Ok(BundleOutcome::Bundle(StoredBundle {
            identity_key: d.identity.clone(),
            signed_prekey: signed,
            kem_prekey: kem,
            one_time_prekey: otk,
            one_time_remaining: u32::try_from(d.one_time.len()).unwrap_or(u32::MAX),
        }))
    }

    fn enqueue(&self, env: &NewEnvelope, limits: QueueLimits) -> StoreResult<EnqueueOutcome> {
        let mut g = self.lock();
        if !g.devices.contains_key(&env.to) {
            return Ok(EnqueueOutcome::UnknownRecipient);
        }
        let now = env.stored_at_ms;
        let id = g.next_id + 1;
        let q = g.queues.entry(env.to.clone()).or_default();
        q.retain(|_, e| e.expires_at_ms > now);
        let from_sender = q.values().filter(|e| e.from.user == env.from.user).count();
        let share_full = from_sender >= limits.per_sender;
        if q.len() >= limits.per_device {
            if share_full {
                return Ok(EnqueueOutcome::QueueFull);
            }
            // full: room is made from the largest share if it is larger than this sender's
            let mut shares: std::collections::HashMap<&str, (usize, u64)> =
                std::collections::HashMap::new();
            for (id, e) in q.iter() {
                let s = shares.entry(e.from.user.as_str()).or_insert((0, *id));
                s.0 += 1;
            }
            let largest = shares
                .iter()
                .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1)))
                .map(|(u, (n, _))| ((*u).to_owned(), *n));
            match largest {
                Some((hog, n)) if n > from_sender => {
                    let oldest = q
                        .iter()
                        .find(|(_, e)| e.from.user == hog)
                        .map(|(id, _)| *id);
                    if let Some(id) = oldest {
                        q.remove(&id);
                    }
                }
                _ => return Ok(EnqueueOutcome::QueueFull),
            }
        }
        if share_full {
            return Ok(EnqueueOutcome::SenderShareFull);
        }
        q.insert(id, env.clone());
        g.next_id = id;
        Ok(EnqueueOutcome::Stored(id))
    }

    fn pending(
        &self,
        to: &DeviceAddr,
        after: u64,
        now_ms: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEnvelope>> {
        let g = self.lock();
        Ok(g.queues
            .get(to)
            .map(|q| {
                q.range(after.saturating_add(1)..)
                    .filter(|(_, e)| e.expires_at_ms > now_ms)
                    .take(limit)
                    .map(|(id, e)| StoredEnvelope {
                        id: *id,
                        env: e.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    fn ack(&self, to: &DeviceAddr, id: u64) -> StoreResult<bool> {
        Ok(self
            .lock()
            .queues
            .get_mut(to)
            .is_some_and(|q| q.remove(&id).is_some()))
    }

    fn purge_expired(&self, now_ms: u64) -> StoreResult<u64> {
        let mut g = self.lock();
        let mut n = 0u64;
        for q in g.queues.values_mut() {
            let before = q.len();
            q.retain(|_, e| e.expires_at_ms > now_ms);
            n += (before - q.len()) as u64;
        }
        Ok(n)
    }

    fn queued(&self, to: &DeviceAddr) -> StoreResult<usize> {
        Ok(self.lock().queues.get(to).map_or(0, |q| q.len()))
    }

    fn claim_connection(&self, addr: &DeviceAddr, node: &str) -> StoreResult<u64> {
        let mut g = self.lock();
        g.next_epoch += 1;
        let epoch = g.next_epoch;
        g.connections.insert(addr.clone(), (node.to_owned(), epoch));
        Ok(epoch)
    }

    fn connection(&self, addr: &DeviceAddr) -> StoreResult<Option<(String, u64)>> {
        Ok(self.lock().connections.get(addr).cloned())
    }

    fn take_limit_token(&self, key: &str, per_minute: u32, now_ms: u64) -> StoreResult<bool> {
        let mut g = self.lock();
        g.buckets.retain(|_, b| !b.idle_for_a_minute(now_ms));
        Ok(g.buckets
            .entry(key.to_owned())
            .or_insert_with(|| crate::limits::SharedBucket::full(per_minute, now_ms))
            .try_take(per_minute, now_ms))
    }

    fn give_back_limit_token(&self, key: &str, per_minute: u32) -> StoreResult<()> {
        if let Some(b) = self.lock().buckets.get_mut(key) {
            b.give_back(per_minute);
        }
        Ok(())
    }

    fn grant_relay_room(
        &self,
        ask: &Ask<'_>,
        relays: &[String],
    ) -> StoreResult<Result<RoomRecord, RoomRefusal>> {
        Ok(self.lock().relay_rooms.grant(ask, relays))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract() {
        super::super::contract::all(&MemoryStore::new());
    }

    #[test]
    fn relay_rooms() {
        let s = MemoryStore::new();
        super::super::contract::relay_rooms_shared_by_handles(&s, &s);
    }

    #[test]
    fn queue_limit() {
        super::super::contract::queue_limit_and_limit_plus_one(&MemoryStore::new());
    }

    #[test]
    fn write_batch() {
        super::super::contract::write_batch_in_order(&MemoryStore::new());
    }

    #[test]
    fn sender_share() {
        super::super::contract::sender_share_limit_and_limit_plus_one(&MemoryStore::new());
    }

    #[test]
    fn full_queue_fairness() {
        super::super::contract::full_queue_makes_room_from_the_largest_share(&MemoryStore::new());
    }

    #[test]
    fn limit_buckets() {
        super::super::contract::limit_buckets_at_limit_and_limit_plus_one(&MemoryStore::new());
    }

    #[test]
    fn connection_epochs() {
        super::super::contract::connection_epochs_fence_older_connections(&MemoryStore::new());
    }
}
