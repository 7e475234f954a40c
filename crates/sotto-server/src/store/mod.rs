//! Persistence behind a small trait: [`MemoryStore`] for unit tests, [`SqliteStore`] for one
//! server, [`PgStore`] for several servers sharing one PostgreSQL.
//!
//! Every method is synchronous and atomic; the server calls them from its one store thread. A
//! method that returns `Ok` has committed (for SQLite: the transaction is in the WAL with the
//! configured durability; for PostgreSQL: the server answered the `COMMIT`) — the server
//! acknowledges a stored envelope only after the `enqueue` or `write_batch` that stored it has
//! returned. A method that returns `Err` changed nothing.

mod memory;
mod pg;
mod sqlite;

pub use memory::MemoryStore;
pub use pg::{PgStore, PgUrl};
pub use sqlite::{Durability, SqliteStore};

use crate::protocol::{OneTimePreKey, SignedPreKey};
use crate::relay_rooms::{Ask, RoomRecord, RoomRefusal};

/// A device address: account name and device number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceAddr {
    /// Account name.
    pub user: String,
    /// Device number.
    pub device: u32,
}

impl DeviceAddr {
    /// Builds an address.
    pub fn new(user: impl Into<String>, device: u32) -> Self {
        Self {
            user: user.into(),
            device,
        }
    }
}

/// Result of [`Store::register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// A new account with this first device.
    Created,
    /// The device exists with exactly this identity key.
    AlreadyRegistered,
    /// The account exists but not this device (add it from a signed-in device).
    UsernameTaken,
    /// The device exists with a different identity key.
    IdentityMismatch,
}

/// Result of [`Store::set_device`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetDeviceOutcome {
    /// A new device of the account.
    Added,
    /// The device's identity key was replaced (its prekeys and queue dropped).
    Replaced,
    /// The device already has exactly this identity key; nothing changed.
    Unchanged,
    /// The account already has the most devices allowed; nothing changed.
    TooManyDevices,
}

/// Result of [`Store::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Committed with this id.
    Stored(u64),
    /// The recipient already has [`QueueLimits::per_device`] envelopes waiting, and no other
    /// sender has more of them than this one (else the oldest of the largest share makes room).
    QueueFull,
    /// The sender's account already has [`QueueLimits::per_sender`] envelopes waiting for the
    /// recipient.
    SenderShareFull,
    /// No such device.
    UnknownRecipient,
}

/// The limits an enqueue is checked against (unexpired envelopes only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Envelopes waiting for one recipient device.
    pub per_device: usize,
    /// Of those, envelopes from one sender account.
    pub per_sender: usize,
}

/// What a fetched bundle is made of (the protocol [`crate::protocol::Bundle`] minus names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBundle {
    /// Identity key bytes.
    pub identity_key: Vec<u8>,
    /// Signed prekey.
    pub signed_prekey: SignedPreKey,
    /// KEM prekey.
    pub kem_prekey: SignedPreKey,
    /// The one-time prekey just removed, if any (none when the stock is empty or none was
    /// asked for).
    pub one_time_prekey: Option<OneTimePreKey>,
    /// One-time prekeys left after this fetch.
    pub one_time_remaining: u32,
}

/// Result of [`Store::take_bundle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleOutcome {
    /// The bundle; its one-time prekey is gone from the store.
    Bundle(StoredBundle),
    /// No such device.
    UnknownDevice,
    /// The device has not published a signed and a KEM prekey.
    NoPrekeys,
}

/// An envelope to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEnvelope {
    /// Recipient.
    pub to: DeviceAddr,
    /// Authenticated sender.
    pub from: DeviceAddr,
    /// Store time, ms.
    pub stored_at_ms: u64,
    /// Expiry, ms.
    pub expires_at_ms: u64,
    /// Opaque.
    pub ciphertext: Vec<u8>,
}

/// A stored envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEnvelope {
    /// Id, increasing in store order.
    pub id: u64,
    /// The envelope.
    pub env: NewEnvelope,
}

/// One write in a [`Store::write_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// [`Store::enqueue`].
    Enqueue {
        /// The envelope.
        env: NewEnvelope,
        /// Queue limits for its recipient.
        limits: QueueLimits,
    },
    /// [`Store::ack`].
    Ack {
        /// The acknowledging recipient.
        to: DeviceAddr,
        /// Envelope id.
        id: u64,
    },
}

/// Result of one [`WriteOp`], in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Result of an enqueue.
    Enqueued(EnqueueOutcome),
    /// Result of an ack: true if the envelope existed and is now deleted.
    Acked(bool),
}

/// Result of [`Store::pending_fenced`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fenced<T> {
    /// The connection's epoch is the device's current one: here is the answer.
    Current(T),
    /// A later connection of the device claimed it (on this node or another): the caller's
    /// connection is stale and must stop delivering.
    Superseded,
}

/// Storage failure (details go to logs, not to peers). Either way nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database cannot be reached (PostgreSQL down, restarting or unreachable). The next
    /// call tries to connect again; peers are told `storage_unavailable` and retry.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The database refused or failed the operation.
    #[error("storage failure: {0}")]
    Failed(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Failed(e.to_string())
    }
}

/// `Result` for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The server's persistent state.
pub trait Store: Send + Sync + 'static {
    /// Creates an account with its first device, or recognises an existing device.
    fn register(
        &self,
        addr: &DeviceAddr,
        identity_key: &[u8],
        now_ms: u64,
    ) -> StoreResult<RegisterOutcome>;

    /// Adds a device to an account unless it already has `max_devices` devices, or replaces a
    /// device's identity key (dropping its prekeys and queued envelopes, which were for the old
    /// key). The count and the write are one atomic step, so concurrent adds (on any number of
    /// servers sharing the store) never pass the limit together.
    fn set_device(
        &self,
        addr: &DeviceAddr,
        identity_key: &[u8],
        now_ms: u64,
        max_devices: usize,
    ) -> StoreResult<SetDeviceOutcome>;

    /// The identity key bound to a device.
    fn identity(&self, addr: &DeviceAddr) -> StoreResult<Option<Vec<u8>>>;

    /// An account's device numbers, ascending (empty if no account).
    fn devices(&self, user: &str) -> StoreResult<Vec<u32>>;

    /// Stores prekeys; returns the one-time stock afterwards. Fails with `Ok(None)` if the
    /// one-time stock would exceed `max_one_time`.
    fn publish_prekeys(
        &self,
        addr: &DeviceAddr,
        signed: Option<&SignedPreKey>,
        kem: Option<&SignedPreKey>,
        one_time: &[OneTimePreKey],
        max_one_time: usize,
    ) -> StoreResult<Option<u32>>;

    /// One-time prekeys stored for a device.
    fn one_time_count(&self, addr: &DeviceAddr) -> StoreResult<u32>;

    /// Builds a bundle; with `one_time`, atomically removes one one-time prekey (lowest id) and
    /// puts it in, so no two callers ever receive the same one.
    fn take_bundle(&self, addr: &DeviceAddr, one_time: bool) -> StoreResult<BundleOutcome>;

    /// Stores an envelope unless the recipient is unknown, has `limits.per_device` unexpired
    /// waiting, or `limits.per_sender` of them from the sender's account.
    fn enqueue(&self, env: &NewEnvelope, limits: QueueLimits) -> StoreResult<EnqueueOutcome>;

    /// Unexpired envelopes for `to` with id > `after`, ascending, at most `limit`.
    fn pending(
        &self,
        to: &DeviceAddr,
        after: u64,
        now_ms: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEnvelope>>;

    /// Deletes an envelope addressed to `to`. True if it existed.
    fn ack(&self, to: &DeviceAddr, id: u64) -> StoreResult<bool>;

    /// Deletes every envelope expired at `now_ms`; returns how many.
    fn purge_expired(&self, now_ms: u64) -> StoreResult<u64>;

    /// Number of envelopes stored for `to` (expired or not).
    fn queued(&self, to: &DeviceAddr) -> StoreResult<usize>;

    /// Applies `ops` in order as one atomic unit (SQLite: one transaction, so one commit and one
    /// fsync for the whole batch — group commit). `Ok` means every outcome is committed; `Err`
    /// means none is. The default applies them one by one.
    fn write_batch(&self, ops: &[WriteOp]) -> StoreResult<Vec<WriteOutcome>> {
        ops.iter()
            .map(|op| match op {
                WriteOp::Enqueue { env, limits } => {
                    self.enqueue(env, *limits).map(WriteOutcome::Enqueued)
                }
                WriteOp::Ack { to, id } => self.ack(to, *id).map(WriteOutcome::Acked),
            })
            .collect()
    }

    /// Records that `addr` has a new live connection on `node` and returns its epoch, greater
    /// than every epoch claimed for `addr` before (on any node sharing the store). A connection
    /// delivers only while its epoch is current (see [`Store::pending_fenced`]), so a takeover
    /// whose notice to the old node is lost still cannot leave two connections delivering one
    /// queue.
    fn claim_connection(&self, addr: &DeviceAddr, node: &str) -> StoreResult<u64>;

    /// The current connection epoch of `addr` and the node that claimed it, if any.
    fn connection(&self, addr: &DeviceAddr) -> StoreResult<Option<(String, u64)>>;

    /// [`Store::pending`] for the connection with `epoch`, or [`Fenced::Superseded`] if a later
    /// connection claimed `to`. The check and the read are one step: a claim lands before or
    /// after both (PostgreSQL: the read holds the claim row's share lock to its commit).
    fn pending_fenced(
        &self,
        to: &DeviceAddr,
        epoch: u64,
        after: u64,
        now_ms: u64,
        limit: usize,
    ) -> StoreResult<Fenced<Vec<StoredEnvelope>>> {
        match self.connection(to)? {
            Some((_, e)) if e > epoch => Ok(Fenced::Superseded),
            _ => Ok(Fenced::Current(self.pending(to, after, now_ms, limit)?)),
        }
    }

    /// Takes a token from the per-minute limit bucket `key` (`per_minute` a minute, as a burst
    /// of `per_minute`; created full) shared by every server on this store: the read, the rule
    /// ([`crate::limits::SharedBucket`]) and the write are one atomic step. Whether one was taken.
    fn take_limit_token(&self, key: &str, per_minute: u32, now_ms: u64) -> StoreResult<bool>;

    /// Returns a token [`Store::take_limit_token`] took for something that did not happen.
    fn give_back_limit_token(&self, key: &str, per_minute: u32) -> StoreResult<()>;

    /// Grants relay tokens for `ask.room`: reads the room's record, applies the rule
    /// ([`crate::relay_rooms::decide`]; `relays` are the URLs the server has secrets for) and
    /// stores the result, in one atomic step against every server sharing the store; a new room
    /// then keeps the bounds (an account's share and the total: the least recently used room
    /// goes, `crate::relay_rooms`). Rooms idle for `RELAY_ROOM_IDLE_SECS` are forgotten.
    /// `Ok(Err(refusal))` changed nothing.
    fn grant_relay_room(
        &self,
        ask: &Ask<'_>,
        relays: &[String],
    ) -> StoreResult<Result<RoomRecord, RoomRefusal>>;

    /// Called on graceful shutdown (SQLite: checkpoint the WAL).
    fn flush(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod contract {
    //! The same contract tests run against both implementations.
    use super::*;
    use crate::consts::MAX_QUEUED_ENVELOPES_PER_DEVICE;
    use crate::protocol::B64;

    fn spk(id: u32) -> SignedPreKey {
        SignedPreKey {
            id,
            public: B64(vec![5; 33]),
            signature: B64(vec![9; 64]),
        }
    }

    fn q(n: usize) -> QueueLimits {
        QueueLimits {
            per_device: n,
            per_sender: n,
        }
    }

    fn env(to: &DeviceAddr, exp: u64) -> NewEnvelope {
        NewEnvelope {
            to: to.clone(),
            from: DeviceAddr::new("alice", 1),
            stored_at_ms: 0,
            expires_at_ms: exp,
            ciphertext: vec![1, 2, 3],
        }
    }

    pub fn all(s: &dyn Store) {
        let a = DeviceAddr::new("alice", 1);
        let b = DeviceAddr::new("bob", 1);
        assert_eq!(
            s.register(&a, &[1; 33], 0).unwrap(),
            RegisterOutcome::Created
        );
        assert_eq!(
            s.register(&a, &[1; 33], 0).unwrap(),
            RegisterOutcome::AlreadyRegistered
        );
        assert_eq!(
            s.register(&a, &[2; 33], 0).unwrap(),
            RegisterOutcome::IdentityMismatch
        );
        assert_eq!(
            s.register(&DeviceAddr::new("alice", 2), &[2; 33], 0)
                .unwrap(),
            RegisterOutcome::UsernameTaken
        );
        assert_eq!(
            s.set_device(&DeviceAddr::new("alice", 2), &[2; 33], 0, 2)
                .unwrap(),
            SetDeviceOutcome::Added
        );
        assert_eq!(
            s.set_device(&DeviceAddr::new("alice", 2), &[2; 33], 0, 2)
                .unwrap(),
            SetDeviceOutcome::Unchanged
        );
        // limit 2 reached: a third device is refused, re-keying one of the two is not
        assert_eq!(
            s.set_device(&DeviceAddr::new("alice", 3), &[3; 33], 0, 2)
                .unwrap(),
            SetDeviceOutcome::TooManyDevices
        );
        assert_eq!(s.devices("alice").unwrap(), vec![1, 2]);
        assert_eq!(
            s.register(&b, &[3; 33], 0).unwrap(),
            RegisterOutcome::Created
        );

        // Prekeys: no bundle before signed + KEM prekeys; one-time handed out once each.
        assert_eq!(s.take_bundle(&b, true).unwrap(), BundleOutcome::NoPrekeys);
        assert_eq!(
            s.take_bundle(&DeviceAddr::new("carol", 1), true).unwrap(),
            BundleOutcome::UnknownDevice
        );
        let otks: Vec<_> = (1..=3)
            .map(|id| OneTimePreKey {
                id,
                public: B64(vec![id as u8; 33]),
            })
            .collect();
        assert_eq!(
            s.publish_prekeys(&b, Some(&spk(1)), Some(&spk(2)), &otks, 3)
                .unwrap(),
            Some(3)
        );
        // One over the stored limit is refused, nothing changes.
        let extra = [OneTimePreKey {
            id: 99,
            public: B64(vec![0; 33]),
        }];
        assert_eq!(s.publish_prekeys(&b, None, None, &extra, 3).unwrap(), None);
        let mut seen = Vec::new();
        for left in (0..3).rev() {
            match s.take_bundle(&b, true).unwrap() {
                BundleOutcome::Bundle(bd) => {
                    assert_eq!(bd.identity_key, vec![3; 33]);
                    assert_eq!(bd.one_time_remaining, left);
                    seen.push(bd.one_time_prekey.unwrap().id);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen, vec![1, 2, 3]);
        // Without a one-time prekey asked for, none is used.
        s.publish_prekeys(&b, None, None, &otks[..1], 3).unwrap();
        match s.take_bundle(&b, false).unwrap() {
            BundleOutcome::Bundle(bd) => {
                assert!(bd.one_time_prekey.is_none());
                assert_eq!(bd.one_time_remaining, 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.take_bundle(&b, true).unwrap(),
            BundleOutcome::Bundle(StoredBundle {
                one_time_prekey: Some(_),
                ..
            })
        ));
        match s.take_bundle(&b, true).unwrap() {
            BundleOutcome::Bundle(bd) => assert!(bd.one_time_prekey.is_none()),
            other => panic!("{other:?}"),
        }

        // Envelopes: queue, pending cursor, ack, expiry.
        let id1 = match s.enqueue(&env(&b, 100), q(10)).unwrap() {
            EnqueueOutcome::Stored(id) => id,
            o => panic!("{o:?}"),
        };
        let id2 = match s.enqueue(&env(&b, 200), q(10)).unwrap() {
            EnqueueOutcome::Stored(id) => id,
            o => panic!("{o:?}"),
        };
        assert!(id2 > id1);
        assert_eq!(
            s.enqueue(&env(&DeviceAddr::new("carol", 1), 100), q(10))
                .unwrap(),
            EnqueueOutcome::UnknownRecipient
        );
        let p = s.pending(&b, 0, 50, 10).unwrap();
        assert_eq!(p.iter().map(|e| e.id).collect::<Vec<_>>(), vec![id1, id2]);
        assert_eq!(p[0].env, env(&b, 100));
        assert_eq!(s.pending(&b, id1, 50, 10).unwrap().len(), 1);
        assert_eq!(
            s.pending(&b, 0, 150, 10).unwrap().len(),
            1,
            "expired hidden"
        );
        assert!(!s.ack(&a, id1).unwrap(), "only the recipient can ack");
        assert!(s.ack(&b, id1).unwrap());
        assert!(!s.ack(&b, id1).unwrap());
        assert_eq!(s.purge_expired(250).unwrap(), 1);
        assert_eq!(s.queued(&b).unwrap(), 0);

        // Replacing a device's key drops its queue and prekeys.
        s.enqueue(&env(&b, 1000), q(10)).unwrap();
        assert_eq!(
            s.set_device(&b, &[4; 33], 0, 1).unwrap(),
            SetDeviceOutcome::Replaced
        );
        assert_eq!(s.queued(&b).unwrap(), 0);
        assert_eq!(s.take_bundle(&b, true).unwrap(), BundleOutcome::NoPrekeys);
        assert_eq!(s.identity(&b).unwrap(), Some(vec![4; 33]));
    }

    /// A shared limit bucket: `per_minute` tokens at once, the next refused, one more a
    /// minute/`per_minute` later; a token given back is usable again; buckets are independent.
    pub fn limit_buckets_at_limit_and_limit_plus_one(s: &dyn Store) {
        for _ in 0..4 {
            assert!(s.take_limit_token("k", 4, 1_000).unwrap());
        }
        assert!(!s.take_limit_token("k", 4, 1_000).unwrap());
        assert!(s.take_limit_token("other", 4, 1_000).unwrap());
        s.give_back_limit_token("k", 4).unwrap();
        assert!(s.take_limit_token("k", 4, 1_000).unwrap());
        assert!(!s.take_limit_token("k", 4, 1_000).unwrap());
        // 4 a minute: one more 15 s later, not 9 s later
        assert!(!s.take_limit_token("k", 4, 10_000).unwrap());
        assert!(s.take_limit_token("k", 4, 17_000).unwrap());
        assert!(!s.take_limit_token("k", 4, 17_000).unwrap());
    }

    /// Relay rooms through two handles `a` and `b` on one store (two servers): placement, the
    /// membership rule and its refusals (state untouched), the per-account share, expiry.
    pub fn relay_rooms_shared_by_handles(a: &dyn Store, b: &dyn Store) {
        use crate::consts::{MAX_RELAY_ROOMS_PER_ACCOUNT, RELAY_ROOM_IDLE_SECS};
        const R: &str = "wss://r.example";
        const S: &str = "wss://s.example";
        let relays = vec![R.to_string(), S.to_string()];
        let grant = |s: &dyn Store, me: &str, relay: Option<&str>, room: &str, who: &[&str], t| {
            let participants: Vec<String> = who.iter().map(|w| w.to_string()).collect();
            let ask = Ask {
                me,
                relay,
                room,
                participants: &participants,
                now_ms: t,
            };
            s.grant_relay_room(&ask, &relays).unwrap()
        };
        let t = 1_000_000;
        // the server places the room; every handle then gets the same relay
        let first = grant(a, "alice", None, "c1", &["alice", "bob"], t).unwrap();
        assert_eq!(first.owner, "alice");
        let again = grant(b, "bob", None, "c1", &["carol"], t + 1).unwrap();
        assert_eq!(again.relay, first.relay);
        let other = if first.relay == R { S } else { R };
        assert_eq!(
            grant(a, "carol", Some(other), "c1", &["dave"], t + 2),
            Err(RoomRefusal::RoomAtAnotherRelay)
        );
        // membership is the store's, not a handle's
        assert_eq!(
            grant(b, "mallory", None, "c1", &["mallory"], t + 2),
            Err(RoomRefusal::NotARoomMember)
        );
        assert_eq!(
            grant(b, "bob", None, "c1", &["bob"], t + 2),
            Err(RoomRefusal::RejoinNeedsInvite)
        );
        // refusals changed nothing: dave was not added by the refused grant
        assert_eq!(
            grant(a, "dave", None, "c1", &["erin"], t + 3),
            Err(RoomRefusal::NotARoomMember)
        );
        let rec = grant(a, "carol", Some(&first.relay), "c1", &["dave"], t + 3).unwrap();
        let members: Vec<&str> = rec.members.iter().map(String::as_str).collect();
        assert_eq!(members, ["alice", "bob", "carol", "dave"]);
        assert_eq!(rec.last_used_ms, t + 3);
        // placement spreads new rooms: c1 and 9 more, alternating between the two relays
        let mut on_r = usize::from(first.relay == R);
        for i in 0..9 {
            let rec = grant(b, "zed", None, &format!("p{i}"), &["x"], t + 10 + i).unwrap();
            on_r += usize::from(rec.relay == R);
        }
        assert_eq!(on_r, 5, "10 rooms, 5 on each relay");
        // zed's share: 9 rooms so far; up to the share, then its least recent is forgotten
        for i in 9..MAX_RELAY_ROOMS_PER_ACCOUNT as u64 {
            grant(a, "zed", Some(R), &format!("p{i}"), &["x"], t + 10 + i).unwrap();
        }
        grant(a, "zed", Some(R), "one-more", &["x"], t + 100).unwrap();
        assert_eq!(
            grant(b, "zed", None, "p0", &["y"], t + 101).map(|r| r.members.len()),
            Ok(2),
            "p0 was forgotten: zed claims it anew (zed and y), not as a member of the old room"
        );
        // an idle room is forgotten: anyone may claim its name again
        let later = t + 3 + RELAY_ROOM_IDLE_SECS * 1000 + 1;
        let fresh = grant(b, "mallory", Some(R), "c1", &["mallory"], later).unwrap();
        assert_eq!(fresh.owner, "mallory");
    }

    /// Each claim gets a higher epoch; an older epoch is fenced off the queue, the current one
    /// reads it.
    pub fn connection_epochs_fence_older_connections(s: &dyn Store) {
        let b = DeviceAddr::new("bob", 1);
        s.register(&b, &[3; 33], 0).unwrap();
        s.enqueue(&env(&b, 1000), q(10)).unwrap();
        assert_eq!(s.connection(&b).unwrap(), None);
        let e1 = s.claim_connection(&b, "node-a").unwrap();
        assert_eq!(s.connection(&b).unwrap(), Some(("node-a".into(), e1)));
        let Fenced::Current(p) = s.pending_fenced(&b, e1, 0, 0, 10).unwrap() else {
            panic!("the only connection is current")
        };
        assert_eq!(p.len(), 1);
        let e2 = s.claim_connection(&b, "node-b").unwrap();
        assert!(e2 > e1);
        assert_eq!(s.connection(&b).unwrap(), Some(("node-b".into(), e2)));
        assert_eq!(
            s.pending_fenced(&b, e1, 0, 0, 10).unwrap(),
            Fenced::Superseded
        );
        assert!(matches!(
            s.pending_fenced(&b, e2, 0, 0, 10).unwrap(),
            Fenced::Current(p) if p.len() == 1
        ));
        // epochs are per device
        let a = DeviceAddr::new("alice", 1);
        let ea = s.claim_connection(&a, "node-a").unwrap();
        assert!(matches!(
            s.pending_fenced(&a, ea, 0, 0, 10).unwrap(),
            Fenced::Current(p) if p.is_empty()
        ));
        assert_eq!(s.connection(&b).unwrap(), Some(("node-b".into(), e2)));
    }

    pub fn write_batch_in_order(s: &dyn Store) {
        let b = DeviceAddr::new("bob", 1);
        s.register(&b, &[3; 33], 0).unwrap();
        let ops = vec![
            WriteOp::Enqueue {
                env: env(&b, 1000),
                limits: q(2),
            },
            WriteOp::Enqueue {
                env: env(&DeviceAddr::new("carol", 1), 1000),
                limits: q(2),
            },
            WriteOp::Enqueue {
                env: env(&b, 1000),
                limits: q(2),
            },
            WriteOp::Enqueue {
                env: env(&b, 1000),
                limits: q(2),
            },
        ];
        let out = s.write_batch(&ops).unwrap();
        let ids: Vec<u64> = out
            .iter()
            .filter_map(|o| match o {
                WriteOutcome::Enqueued(EnqueueOutcome::Stored(id)) => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(ids.len(), 2);
        assert!(ids[1] > ids[0]);
        assert_eq!(
            out[1],
            WriteOutcome::Enqueued(EnqueueOutcome::UnknownRecipient)
        );
        assert_eq!(out[3], WriteOutcome::Enqueued(EnqueueOutcome::QueueFull));
        // Acks in the same batch as a later enqueue: the freed slot is usable immediately.
        let out = s
            .write_batch(&[
                WriteOp::Ack {
                    to: b.clone(),
                    id: ids[0],
                },
                WriteOp::Ack {
                    to: b.clone(),
                    id: ids[0],
                },
                WriteOp::Enqueue {
                    env: env(&b, 1000),
                    limits: q(2),
                },
            ])
            .unwrap();
        assert_eq!(out[0], WriteOutcome::Acked(true));
        assert_eq!(out[1], WriteOutcome::Acked(false));
        assert!(matches!(
            out[2],
            WriteOutcome::Enqueued(EnqueueOutcome::Stored(_))
        ));
        assert_eq!(s.queued(&b).unwrap(), 2);
    }

    pub fn sender_share_limit_and_limit_plus_one(s: &dyn Store) {
        let b = DeviceAddr::new("bob", 1);
        s.register(&b, &[3; 33], 0).unwrap();
        let limits = QueueLimits {
            per_device: 10,
            per_sender: 3,
        };
        let from = |user: &str, device: u32| NewEnvelope {
            from: DeviceAddr::new(user, device),
            ..env(&b, 1000)
        };
        for d in 1..=3 {
            // the share is the account's, whichever of its devices sends
            assert!(matches!(
                s.enqueue(&from("mallory", d), limits).unwrap(),
                EnqueueOutcome::Stored(_)
            ));
        }
        assert_eq!(
            s.enqueue(&from("mallory", 4), limits).unwrap(),
            EnqueueOutcome::SenderShareFull
        );
        assert!(matches!(
            s.enqueue(&from("alice", 1), limits).unwrap(),
            EnqueueOutcome::Stored(_)
        ));
        // expired envelopes do not count against the share
        let mut late = from("mallory", 1);
        late.stored_at_ms = 1500;
        late.expires_at_ms = 2500;
        assert!(matches!(
            s.enqueue(&late, limits).unwrap(),
            EnqueueOutcome::Stored(_)
        ));
    }

    /// A full queue makes room for a sender from the largest share, oldest first, as long as
    /// that share is larger than the sender's own: strangers together cannot fill a queue
    /// against someone who sent less than each of them.
    pub fn full_queue_makes_room_from_the_largest_share(s: &dyn Store) {
        let b = DeviceAddr::new("bob", 1);
        s.register(&b, &[3; 33], 0).unwrap();
        let limits = QueueLimits {
            per_device: 6,
            per_sender: 3,
        };
        let from = |user: &str| NewEnvelope {
            from: DeviceAddr::new(user, 1),
            ..env(&b, 1000)
        };
        let stored = |o: EnqueueOutcome| match o {
            EnqueueOutcome::Stored(id) => id,
            other => panic!("not stored: {other:?}"),
        };
        let mut sybil_ids = Vec::new();
        for m in ["m1", "m2"] {
            for _ in 0..3 {
                sybil_ids.push(stored(s.enqueue(&from(m), limits).unwrap()));
            }
        }
        let queued_ids = || -> Vec<u64> {
            s.pending(&b, 0, 0, 10)
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect()
        };
        // full; a third stranger at zero gets in at the oldest of the largest (m1's first)
        let alice = stored(s.enqueue(&from("alice"), limits).unwrap());
        assert_eq!(s.queued(&b).unwrap(), 6);
        let ids = queued_ids();
        assert!(!ids.contains(&sybil_ids[0]), "m1's oldest made room");
        assert!(ids.contains(&alice));
        // m2 (3) is now the largest: the next room comes from it
        let carol = stored(s.enqueue(&from("carol"), limits).unwrap());
        let ids = queued_ids();
        assert!(!ids.contains(&sybil_ids[3]), "m2's oldest made room");
        assert!(ids.contains(&carol) && ids.contains(&alice));
        // shares are now m1 2, m2 2, alice 1, carol 1: alice gets one more (from m1), then
        // no share is larger than hers
        stored(s.enqueue(&from("alice"), limits).unwrap());
        assert_eq!(
            s.enqueue(&from("alice"), limits).unwrap(),
            EnqueueOutcome::QueueFull
        );
        assert_eq!(s.queued(&b).unwrap(), 6);
        // a sender's own share never makes room for itself
        assert_eq!(
            s.enqueue(&from("m2"), limits).unwrap(),
            EnqueueOutcome::QueueFull
        );
    }

    pub fn queue_limit_and_limit_plus_one(s: &dyn Store) {
        let b = DeviceAddr::new("bob", 1);
        s.register(&b, &[3; 33], 0).unwrap();
        for _ in 0..MAX_QUEUED_ENVELOPES_PER_DEVICE {
            assert!(matches!(
                s.enqueue(&env(&b, 1000), q(MAX_QUEUED_ENVELOPES_PER_DEVICE))
                    .unwrap(),
                EnqueueOutcome::Stored(_)
            ));
        }
        assert_eq!(
            s.enqueue(&env(&b, 1000), q(MAX_QUEUED_ENVELOPES_PER_DEVICE))
                .unwrap(),
            EnqueueOutcome::QueueFull
        );
        // Expired envelopes do not count against the limit.
        let mut late = env(&b, 2000);
        late.stored_at_ms = 1500;
        assert!(matches!(
            s.enqueue(&late, q(MAX_QUEUED_ENVELOPES_PER_DEVICE))
                .unwrap(),
            EnqueueOutcome::Stored(_)
        ));
    }
}
