//! SQLite [`Store`]: one file, WAL journal, one connection behind a mutex.
//!
//! ## Durability
//! The journal is WAL. [`Durability::Full`] (`synchronous=FULL`, the default) fsyncs the WAL on
//! every commit, so an envelope acknowledged as stored survives a process crash *and* a power
//! loss. [`Durability::Normal`] (`synchronous=NORMAL`) skips that fsync: in WAL mode a commit is
//! still atomic and survives the process being killed (the WAL is in the OS page cache and is
//! replayed on open), but the last commits before a power loss or kernel crash can roll back.
//! Normal trades that window for throughput; choose it only where the host is trusted to stay up.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::*;
use crate::protocol::B64;

mod relay_rooms;

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: survives power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives process crashes only.
    Normal,
}

/// The SQLite store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS devices(
  user TEXT NOT NULL, device INTEGER NOT NULL, identity BLOB NOT NULL, updated_ms INTEGER NOT NULL,
  PRIMARY KEY(user, device)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS signed_prekeys(
  user TEXT NOT NULL, device INTEGER NOT NULL, kind INTEGER NOT NULL,
  key_id INTEGER NOT NULL, public BLOB NOT NULL, signature BLOB NOT NULL,
  PRIMARY KEY(user, device, kind)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS one_time_prekeys(
  user TEXT NOT NULL, device INTEGER NOT NULL, key_id INTEGER NOT NULL, public BLOB NOT NULL,
  PRIMARY KEY(user, device, key_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS envelopes(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  to_user TEXT NOT NULL, to_device INTEGER NOT NULL,
  from_user TEXT NOT NULL, from_device INTEGER NOT NULL,
  stored_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL, ciphertext BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS envelopes_to ON envelopes(to_user, to_device, id);
CREATE INDEX IF NOT EXISTS envelopes_expiry ON envelopes(expires_ms);
CREATE TABLE IF NOT EXISTS connections(
  user TEXT NOT NULL, device INTEGER NOT NULL, node TEXT NOT NULL, epoch INTEGER NOT NULL,
  PRIMARY KEY(user, device)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS limit_buckets(
  key TEXT PRIMARY KEY, tokens REAL NOT NULL, last_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS relay_rooms(
  room TEXT PRIMARY KEY, relay TEXT NOT NULL, owner TEXT NOT NULL, members TEXT NOT NULL,
  last_used_ms INTEGER NOT NULL, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS relay_rooms_owner ON relay_rooms(owner, last_used_ms, seq);
CREATE INDEX IF NOT EXISTS relay_rooms_used ON relay_rooms(last_used_ms, seq);
PRAGMA user_version = 1;
";

const KIND_SIGNED: i64 = 0;
const KIND_KEM: i64 = 1;

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file.
    pub fn open(path: &Path, durability: Durability) -> StoreResult<Self> {
        let conn = Connection::open(path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Failed(format!(
                "journal_mode is {mode}, wanted wal"
            )));
        }
        conn.pragma_update(
            None,
            "synchronous",
            match durability {
                Durability::Full => "FULL",
                Durability::Normal => "NORMAL",
            },
        )?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(32);
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checkpoints the WAL into the main file (used on graceful shutdown).
    pub fn checkpoint(&self) -> StoreResult<()> {
        self.lock()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

fn get_signed(
    tx: &Connection,
    addr: &DeviceAddr,
    kind: i64,
) -> rusqlite::Result<Option<SignedPreKey>> {
    tx.query_row(
        "SELECT key_id, public, signature FROM signed_prekeys WHERE user=?1 AND device=?2 AND kind=?3",
        params![addr.user, addr.device, kind],
        |r| {
            Ok(SignedPreKey {
                id: r.get(0)?,
                public: B64(r.get(1)?),
                signature: B64(r.get(2)?),
            })
        },
    )
    .optional()
}

fn count_one_time(c: &Connection, addr: &DeviceAddr) -> rusqlite::Result<u32> {
    c.query_row(
        "SELECT COUNT(*) FROM one_time_prekeys WHERE user=?1 AND device=?2",
        params![addr.user, addr.device],
        |r| r.get(0),
    )
}

fn enqueue_in(
    tx: &Connection,
    env: &NewEnvelope,
    limits: QueueLimits,
) -> rusqlite::Result<EnqueueOutcome> {
    let known: bool = tx
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM devices WHERE user=?1 AND device=?2)")?
        .query_row(params![env.to.user, env.to.device], |r| r.get(0))?;
    if !known {
        return Ok(EnqueueOutcome::UnknownRecipient);
    }
    // one pass over the recipient's queue counts both: all unexpired, and the sender's share
    let (queued, from_sender): (i64, i64) = tx
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(from_user=?3), 0) FROM envelopes
             WHERE to_user=?1 AND to_device=?2 AND expires_ms>?4",
        )?
        .query_row(
            params![
                env.to.user,
                env.to.device,
                env.from.user,
                to_i64(env.stored_at_ms)
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
    let share_full = usize::try_from(from_sender).unwrap_or(usize::MAX) >= limits.per_sender;
    if usize::try_from(queued).unwrap_or(usize::MAX) >= limits.per_device {
        if share_full {
            return Ok(EnqueueOutcome::QueueFull);
        }
        // full: room is made from the largest share if it is larger than this sender's
        let largest: Option<(String, i64)> = tx
            .prepare_cached(
                "SELECT from_user, COUNT(*) AS n FROM envelopes
                 WHERE to_user=?1 AND to_device=?2 AND expires_ms>?3
                 GROUP BY from_user ORDER BY n DESC, MIN(id) ASC LIMIT 1",
            )?
            .query_row(
                params![env.to.user, env.to.device, to_i64(env.stored_at_ms)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match largest {
            Some((hog, n)) if n > from_sender => {
                tx.prepare_cached(
                    "DELETE FROM envelopes WHERE id=(SELECT MIN(id) FROM envelopes
                     WHERE to_user=?1 AND to_device=?2 AND from_user=?3 AND expires_ms>?4)",
                )?
                .execute(params![
                    env.to.user,
                    env.to.device,
                    hog,
                    to_i64(env.stored_at_ms)
                ])?;
            }
            _ => return Ok(EnqueueOutcome::QueueFull),
        }
    }
    if share_full {
        return Ok(EnqueueOutcome::SenderShareFull);
    }
    tx.prepare_cached(
        "INSERT INTO envelopes(to_user, to_device, from_user, from_device, stored_ms, expires_ms, ciphertext)
         VALUES(?1,?2,?3,?4,?5,?6,?7)",
    )?
    .execute(params![
        env.to.user,
        env.to.device,
        env.from.user,
        env.from.device,
        to_i64(env.stored_at_ms),
        to_i64(env.expires_at_ms),
        env.ciphertext
    ])?;
    Ok(EnqueueOutcome::Stored(to_u64(tx.last_insert_rowid())))
}

fn ack_in(c: &Connection, to: &DeviceAddr, id: u64) -> rusqlite::Result<bool> {
    let n = c
        .prepare_cached("DELETE FROM envelopes WHERE id=?1 AND to_user=?2 AND to_device=?3")?
        .execute(params![to_i64(id), to.user, to.device])?;
    Ok(n > 0)
}

impl Store for SqliteStore {
    fn register(&self, addr: &DeviceAddr, key: &[u8], now: u64) -> StoreResult<RegisterOutcome> {
        let mut c = self.lock();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<Vec<u8>> = tx
            .query_row(
                "SELECT identity FROM devices WHERE user=?1 AND device=?2",
                params![addr.user, addr.device],
                |r| r.get(0),
            )
            .optional()?;
        let outcome = match existing {
            Some(k) if k == key => RegisterOutcome::AlreadyRegistered,
            Some(_) => RegisterOutcome::IdentityMismatch,
            None => {
                let taken: bool = tx.query_row(
                    "SELECT EXISTS(SELECT 1 FROM devices WHERE user=?1)",
                    params![addr.user],
                    |r| r.get(0),
                )?;
                if taken {
                    RegisterOutcome::UsernameTaken
                } else {
                    tx.execute(
                        "INSERT INTO devices(user, device, identity, updated_ms) VALUES(?1,?2,?3,?4)",
                        params![addr.user, addr.device, key, to_i64(now)],
                    )?;
                    RegisterOutcome::Created
                }
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    fn set_device(
        &self,
        addr: &DeviceAddr,
        key: &[u8],
        now: u64,
        max_devices: usize,
    ) -> StoreResult<SetDeviceOutcome> {
        let mut c = self.lock();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<Vec<u8>> = tx
            .query_row(
                "SELECT identity FROM devices WHERE user=?1 AND device=?2",
                params![addr.user, addr.device],
                |r| r.get(0),
            )
            .optional()?;
        let outcome = match existing.as_deref() {
            Some(k) if k == key => return Ok(SetDeviceOutcome::Unchanged),
            Some(_) => SetDeviceOutcome::Replaced,
            None => {
                let n: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM devices WHERE user=?1",
                    params![addr.user],
                    |r| r.get(0),
                )?;
                if usize::try_from(n).unwrap_or(usize::MAX) >= max_devices {
                    return Ok(SetDeviceOutcome::TooManyDevices);
                }
                SetDeviceOutcome::Added
            }
        };
        tx.execute(
            "INSERT INTO devices(user, device, identity, updated_ms) VALUES(?1,?2,?3,?4)
             ON CONFLICT(user, device) DO UPDATE SET identity=excluded.identity, updated_ms=excluded.updated_ms",
            params![addr.user, addr.device, key, to_i64(now)],
        )?;
        for table in ["signed_prekeys", "one_time_prekeys"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE user=?1 AND device=?2"),
                params![addr.user, addr.device],
            )?;
        }
        tx.execute(
            "DELETE FROM envelopes WHERE to_user=?1 AND to_device=?2",
            params![addr.user, addr.device],
        )?;
        tx.commit()?;
        Ok(outcome)
    }

    fn identity(&self, addr: &DeviceAddr) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT identity FROM devices WHERE user=?1 AND device=?2",
                params![addr.user, addr.device],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn devices(&self, user: &str) -> StoreResult<Vec<u32>> {
        let c = self.lock();
        let mut st =
            c.prepare_cached("SELECT device FROM devices WHERE user=?1 ORDER BY device")?;
        let rows = st.query_map(params![user], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<u32>>>()?)
    }

    fn publish_prekeys(
        &self,
        addr: &DeviceAddr,
        signed: Option<&SignedPreKey>,
        kem: Option<&SignedPreKey>,
        one_time: &[OneTimePreKey],
        max_one_time: usize,
    ) -> StoreResult<Option<u32>> {
        let mut c = self.lock();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (kind, k) in [(KIND_SIGNED, signed), (KIND_KEM, kem)] {
            if let Some(k) = k {
                tx.execute(
                    "INSERT OR REPLACE INTO signed_prekeys(user, device, kind, key_id, public, signature)
                     VALUES(?1,?2,?3,?4,?5,?6)",
                    params![addr.user, addr.device, kind, k.id, k.public.0, k.signature.0],
                )?;
            }
        }
        for k in one_time {
            tx.execute(
                "INSERT OR REPLACE INTO one_time_prekeys(user, device, key_id, public) VALUES(?1,?2,?3,?4)",
                params![addr.user, addr.device, k.id, k.public.0],
            )?;
        }
        let n = count_one_time(&tx, addr)?;
        if usize::try_from(n).unwrap_or(usize::MAX) > max_one_time {
            tx.rollback()?;
            return Ok(None);
        }
        tx.commit()?;
        Ok(Some(n))
    }

    fn one_time_count(&self, addr: &DeviceAddr) -> StoreResult<u32> {
        Ok(count_one_time(&self.lock(), addr)?)
    }

    fn take_bundle(&self, addr: &DeviceAddr, one_time: bool) -> StoreResult<BundleOutcome> {
        let mut c = self.lock();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let identity: Option<Vec<u8>> = tx
            .query_row(
                "SELECT identity FROM devices WHERE user=?1 AND device=?2",
                params![addr.user, addr.device],
                |r| r.get(0),
            )
            .optional()?;
        let Some(identity_key) = identity else {
            return Ok(BundleOutcome::UnknownDevice);
        };
        let (Some(signed_prekey), Some(kem_prekey)) = (
            get_signed(&tx, addr, KIND_SIGNED)?,
            get_signed(&tx, addr, KIND_KEM)?,
        ) else {
            return Ok(BundleOutcome::NoPrekeys);
        };
        let one_time_prekey: Option<OneTimePreKey> = if !one_time {
            None
        } else {
            tx.query_row(
                "SELECT key_id, public FROM one_time_prekeys WHERE user=?1 AND device=?2
                 ORDER BY key_id LIMIT 1",
                params![addr.user, addr.device],
                |r| {
                    Ok(OneTimePreKey {
                        id: r.get(0)?,
                        public: B64(r.get(1)?),
                    })
                },
            )
            .optional()?
        };
        if let Some(k) = &one_time_prekey {
            tx.execute(
                "DELETE FROM one_time_prekeys WHERE user=?1 AND device=?2 AND key_id=?3",
                params![addr.user, addr.device, k.id],
            )?;
        }
        let one_time_remaining = count_one_time(&tx, addr)?;
        tx.commit()?;
        Ok(BundleOutcome::Bundle(StoredBundle {
            identity_key,
            signed_prekey,
            kem_prekey,
            one_time_prekey,
            one_time_remaining,
        }))
    }

    fn enqueue(&self, env: &NewEnvelope, limits: QueueLimits) -> StoreResult<EnqueueOutcome> {
        let mut c = self.lock();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = enqueue_in(&tx, env, limits)?;
        tx.commit()?;
        Ok(out)
    }

    fn write_batch(&self, ops: &[WriteOp]) -> StoreResult<Vec<WriteOutcome>> {
        let mut c = self.lock();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(match op {
                WriteOp::Enqueue { env, limits } => {
                    WriteOutcome::Enqueued(enqueue_in(&tx, env, *limits)?)
                }
                WriteOp::Ack { to, id } => WriteOutcome::Acked(ack_in(&tx, to, *id)?),
            });
        }
        tx.commit()?;
        Ok(out)
    }

    fn pending(
        &self,
        to: &DeviceAddr,
        after: u64,
        now_ms: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEnvelope>> {
        let c = self.lock();
        let mut st = c.prepare_cached(
            "SELECT id, from_user, from_device, stored_ms, expires_ms, ciphertext FROM envelopes
             WHERE to_user=?1 AND to_device=?2 AND id>?3 AND expires_ms>?4 ORDER BY id LIMIT ?5",
        )?;
        let rows = st.query_map(
            params![
                to.user,
                to.device,
                to_i64(after),
                to_i64(now_ms),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| {
                Ok(StoredEnvelope {
                    id: to_u64(r.get(0)?),
                    env: NewEnvelope {
                        to: to.clone(),
                        from: DeviceAddr {
                            user: r.get(1)?,
                            device: r.get(2)?,
                        },
                        stored_at_ms: to_u64(r.get(3)?),
                        expires_at_ms: to_u64(r.get(4)?),
                        ciphertext: r.get(5)?,
                    },
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn ack(&self, to: &DeviceAddr, id: u64) -> StoreResult<bool> {
        Ok(ack_in(&self.lock(), to, id)?)
    }

    fn purge_expired(&self, now_ms: u64) -> StoreResult<u64> {
        let n = self.lock().execute(
            "DELETE FROM envelopes WHERE expires_ms<=?1",
            params![to_i64(now_ms)],
        )?;
        Ok(n as u64)
    }

    fn flush(&self) -> StoreResult<()> {
        self.checkpoint()
    }

    fn queued(&self, to: &DeviceAddr) -> StoreResult<usize> {
        let n: i64 = self.lock().query_row(
            "SELECT COUNT(*) FROM envelopes WHERE to_user=?1 AND to_device=?2",
            params![to.user, to.device],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn claim_connection(&self, addr: &DeviceAddr, node: &str) -> StoreResult<u64> {
        let epoch: i64 = self.lock().query_row(
            "INSERT INTO connections(user, device, node, epoch) VALUES(?1, ?2, ?3, 1)
             ON CONFLICT(user, device) DO UPDATE SET node=excluded.node, epoch=epoch+1
             RETURNING epoch",
            params![addr.user, addr.device, node],
            |r| r.get(0),
        )?;
        Ok(to_u64(epoch))
    }

    fn take_limit_token(&self, key: &str, per_minute: u32, now_ms: u64) -> StoreResult<bool> {
        let mut c = self.lock();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM limit_buckets WHERE last_ms <= ?1",
            params![to_i64(now_ms.saturating_sub(60_000))],
        )?;
        let mut b = tx
            .query_row(
                "SELECT tokens, last_ms FROM limit_buckets WHERE key=?1",
                params![key],
                |r| {
                    Ok(crate::limits::SharedBucket {
                        tokens: r.get(0)?,
                        last_ms: to_u64(r.get(1)?),
                    })
                },
            )
            .optional()?
            .unwrap_or_else(|| crate::limits::SharedBucket::full(per_minute, now_ms));
        let taken = b.try_take(per_minute, now_ms);
        tx.execute(
            "INSERT OR REPLACE INTO limit_buckets(key, tokens, last_ms) VALUES(?1, ?2, ?3)",
            params![key, b.tokens, to_i64(b.last_ms)],
        )?;
        tx.commit()?;
        Ok(taken)
    }

    fn give_back_limit_token(&self, key: &str, per_minute: u32) -> StoreResult<()> {
        let mut c = self.lock();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = tx
            .query_row(
                "SELECT tokens, last_ms FROM limit_buckets WHERE key=?1",
                params![key],
                |r| {
                    Ok(crate::limits::SharedBucket {
                        tokens: r.get(0)?,
                        last_ms: to_u64(r.get(1)?),
                    })
                },
            )
            .optional()?;
        if let Some(mut b) = found {
            b.give_back(per_minute);
            tx.execute(
                "UPDATE limit_buckets SET tokens=?2 WHERE key=?1",
                params![key, b.tokens],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn grant_relay_room(
        &self,
        ask: &Ask<'_>,
        relays: &[String],
    ) -> StoreResult<Result<RoomRecord, RoomRefusal>> {
        self.grant_room(ask, relays)
    }

    fn connection(&self, addr: &DeviceAddr) -> StoreResult<Option<(String, u64)>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT node, epoch FROM connections WHERE user=?1 AND device=?2",
                params![addr.user, addr.device],
                |r| Ok((r.get(0)?, to_u64(r.get(1)?))),
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("s.db"), Durability::Full).unwrap();
        super::super::contract::all(&s);
    }

    /// Two connections on one file (two processes would be the same); rooms survive reopening.
    #[test]
    fn relay_rooms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let a = SqliteStore::open(&path, Durability::Full).unwrap();
        let b = SqliteStore::open(&path, Durability::Full).unwrap();
        super::super::contract::relay_rooms_shared_by_handles(&a, &b);
        drop((a, b));
        let s = SqliteStore::open(&path, Durability::Full).unwrap();
        let participants = vec!["mallory".to_string()];
        let ask = Ask {
            me: "mallory",
            relay: None,
            room: "c1",
            participants: &participants,
            now_ms: 1_000_000 + 3 + crate::consts::RELAY_ROOM_IDLE_SECS * 1000 + 2,
        };
        let relays = ["wss://r.example".to_string(), "wss://s.example".to_string()];
        assert_eq!(
            s.grant_relay_room(&ask, &relays).unwrap(),
            Err(RoomRefusal::RejoinNeedsInvite),
            "the room and its members are still there after reopening"
        );
    }

    #[test]
    fn write_batch() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("s.db"), Durability::Full).unwrap();
        super::super::contract::write_batch_in_order(&s);
    }

    #[test]
    fn sender_share() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("s.db"), Durability::Normal).unwrap();
        super::super::contract::sender_share_limit_and_limit_plus_one(&s);
    }

    #[test]
    fn full_queue_fairness() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("s.db"), Durability::Normal).unwrap();
        super::super::contract::full_queue_makes_room_from_the_largest_share(&s);
    }

    #[test]
    fn limit_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("s.db"), Durability::Normal).unwrap();
        super::super::contract::limit_buckets_at_limit_and_limit_plus_one(&s);
    }

    #[test]
    fn connection_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("s.db"), Durability::Normal).unwrap();
        super::super::contract::connection_epochs_fence_older_connections(&s);
    }

    #[test]
    fn queue_limit() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("s.db"), Durability::Normal).unwrap();
        super::super::contract::queue_limit_and_limit_plus_one(&s);
    }

    #[test]
    fn survives_reopen_and_ids_never_reused() {
        let q10 = QueueLimits {
            per_device: 10,
            per_sender: 10,
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.db");
        let b = DeviceAddr::new("bob", 1);
        let env = NewEnvelope {
            to: b.clone(),
            from: b.clone(),
            stored_at_ms: 0,
            expires_at_ms: 10,
            ciphertext: vec![7],
        };
        let id = {
            let s = SqliteStore::open(&p, Durability::Full).unwrap();
            s.register(&b, &[1; 33], 0).unwrap();
            let EnqueueOutcome::Stored(id) = s.enqueue(&env, q10).unwrap() else {
                panic!()
            };
            assert!(s.ack(&b, id).unwrap());
            let EnqueueOutcome::Stored(id2) = s.enqueue(&env, q10).unwrap() else {
                panic!()
            };
            id2
        };
        let s = SqliteStore::open(&p, Durability::Full).unwrap();
        assert_eq!(s.pending(&b, 0, 0, 10).unwrap()[0].id, id);
        let EnqueueOutcome::Stored(id3) = s.enqueue(&env, q10).unwrap() else {
            panic!()
        };
        assert!(id3 > id);
    }
}
