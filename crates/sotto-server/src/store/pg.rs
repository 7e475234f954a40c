//! PostgreSQL [`Store`]: several servers share one database, with the same semantics as
//! [`super::SqliteStore`].
//!
//! Each server holds one connection (its store thread makes every call, in order), through the
//! synchronous `postgres` crate: the store thread is a plain OS thread, so a blocking client fits
//! it without a second runtime hop per call. The schema is versioned in
//! `crates/sotto-server/migrations/pg/`; [`PgStore::open`] applies what is missing, under an
//! advisory lock so servers starting together do not race.
//!
//! ## Concurrency between servers
//! Transactions run at `READ COMMITTED`, and every rule that counts and then writes takes a lock
//! first, so it holds across servers exactly as SQLite's single writer makes it hold on one:
//! * account changes (`register`, `set_device`, `publish_prekeys`) take a transaction-scoped
//!   advisory lock on the account name: one username, one first device; the device limit and the
//!   one-time stock limit cannot be passed by two servers at once;
//! * `take_bundle` deletes its one-time prekey with `DELETE … RETURNING` over a
//!   `FOR UPDATE SKIP LOCKED` pick: two fetchers never get the same key, and neither waits for
//!   the other (a fetcher that finds every remaining key taken by a fetch in flight gets a bundle
//!   without one, as when the stock is empty);
//! * an enqueue locks its recipient's `devices` row (`FOR UPDATE`, all recipients of a batch in
//!   one sorted pass, so two batches cannot deadlock) before it counts the queue, so the queue
//!   and sender-share limits hold, and a recipient's envelope ids increase in commit order (an id
//!   is drawn under the lock, which is held to the commit).
//!
//! ## PostgreSQL down
//! A call that cannot reach the database returns [`StoreError::Unavailable`] (the server tells
//! peers `storage_unavailable`) and drops the connection; the next call connects again, so the
//! server recovers by itself when the database is back. A connection found dead when a call
//! starts (PostgreSQL restarted while idle) is replaced and the call goes on: nothing had been
//! sent on it. A write that fails after it began is never retried (its commit may or may not
//! have happened; the peer was not told `stored` and resends).
//!
//! Every method blocks: call them from a plain thread (the server's store thread), or from async
//! code through `spawn_blocking`, never on a runtime's worker.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use postgres::error::SqlState;
use postgres::{Client, NoTls, Statement, Transaction};
use zeroize::Zeroizing;

use super::*;
use crate::consts::{PG_CONNECT_TIMEOUT, PG_IO_TIMEOUT, PG_MIGRATION_LOCK};
use crate::protocol::B64;

mod connections;
mod limits;
mod relay_rooms;

/// The versioned schema, in order: (version, SQL). A released file is never edited; a change is
/// a new file appended here.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../../migrations/pg/0001_init.sql")),
    (2, include_str!("../../migrations/pg/0002_connections.sql")),
    (
        3,
        include_str!("../../migrations/pg/0003_limit_buckets.sql"),
    ),
    (4, include_str!("../../migrations/pg/0004_relay_rooms.sql")),
];

const KIND_SIGNED: i16 = 0;
const KIND_KEM: i16 = 1;

/// Key class of the per-account advisory locks (the second key is `hashtext(user_name)`).
const ACCOUNT_LOCK_CLASS: i32 = 0x536f_7401;

/// A PostgreSQL connection string (`postgres://user:password@host/db` or `host=… user=…`). It
/// may hold a password: zeroized on drop, never printed.
#[derive(Clone)]
pub struct PgUrl(Zeroizing<String>);

impl PgUrl {
    /// Wraps a connection string.
    pub fn new(url: impl Into<String>) -> Self {
        Self(Zeroizing::new(url.into()))
    }
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgUrl(<redacted>)")
    }
}

/// One live connection and the statements prepared on it.
struct Conn {
    client: Client,
    prepared: HashMap<&'static str, Statement>,
}

/// The PostgreSQL store.
pub struct PgStore {
    config: postgres::Config,
    conn: Mutex<Option<Conn>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// Whether `e` means the database could not be reached (rather than refusing the operation).
fn is_unreachable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            code.code().starts_with("08") // connection exception
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
        }
        // no SQL state: a socket error is an outage; the rest (a value that does not convert,
        // an unexpected message) is a failure. Connect timeouts are mapped in `connected`.
        None => {
            let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
            while let Some(s) = src {
                if s.is::<std::io::Error>() {
                    return true;
                }
                src = s.source();
            }
            false
        }
    }
}

fn store_error(e: postgres::Error) -> StoreError {
    if is_unreachable(&e) {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Failed(e.to_string())
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_u32(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Failed(format!("value {v} out of u32 range")))
}

fn count_to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// A statement prepared once per connection.
fn prepared(
    cache: &mut HashMap<&'static str, Statement>,
    tx: &mut Transaction<'_>,
    sql: &'static str,
) -> Result<Statement, postgres::Error> {
    if let Some(st) = cache.get(sql) {
        return Ok(st.clone());
    }
    let st = tx.prepare(sql)?;
    cache.insert(sql, st.clone());
    Ok(st)
}

/// A transaction and its connection's statement cache.
struct Tx<'a> {
    tx: Transaction<'a>,
    cache: &'a mut HashMap<&'static str, Statement>,
}

impl Tx<'_> {
    fn st(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        prepared(self.cache, &mut self.tx, sql)
    }

    fn lock_account(&mut self, user: &str) -> Result<(), postgres::Error> {
        let st = self.st("SELECT pg_advisory_xact_lock($1, hashtext($2))")?;
        self.tx.execute(&st, &[&ACCOUNT_LOCK_CLASS, &user])?;
        Ok(())
    }

    fn identity(&mut self, addr: &DeviceAddr) -> Result<Option<Vec<u8>>, postgres::Error> {
        let st = self.st("SELECT identity FROM devices WHERE user_name=$1 AND device=$2")?;
        Ok(self
            .tx
            .query_opt(&st, &[&addr.user, &i64::from(addr.device)])?
            .map(|r| r.get(0)))
    }

    fn count_one_time(&mut self, addr: &DeviceAddr) -> Result<u32, postgres::Error> {
        let st =
            self.st("SELECT COUNT(*) FROM one_time_prekeys WHERE user_name=$1 AND device=$2")?;
        let n: i64 = self
            .tx
            .query_one(&st, &[&addr.user, &i64::from(addr.device)])?
            .get(0);
        Ok(count_to_u32(n))
    }

    /// Locks the `devices` rows of every recipient of `ops`, in one sorted pass.
    fn lock_recipients(&mut self, ops: &[WriteOp]) -> Result<(), postgres::Error> {
        let mut users = Vec::new();
        let mut devices = Vec::new();
        for op in ops {
            if let WriteOp::Enqueue { env, .. } = op {
                users.push(env.to.user.as_str());
                devices.push(i64::from(env.to.device));
            }
        }
        if users.is_empty() {
            return Ok(());
        }
        let st = self.st("SELECT 1 FROM devices WHERE (user_name, device) IN
               (SELECT * FROM unnest($1::text[], $2::bigint[]))
             ORDER BY user_name, device FOR UPDATE")?;
        self.tx.execute(&st, &[&users, &devices])?;
        Ok(())
    }

    /// An enqueue whose recipient row is already locked (see [`Tx::lock_recipients`]): one
    /// insert attempt and, on a full queue, room made from the largest share and a second.
    fn enqueue(
        &mut self,
        env: &NewEnvelope,
        limits: QueueLimits,
    ) -> Result<EnqueueOutcome, postgres::Error> {
        match self.insert(env, limits)? {
            EnqueueOutcome::QueueFull if self.make_room(env, limits)? => self.insert(env, limits),
            out => Ok(out),
        }
    }

    /// The device check, both counts and the insert in one statement (one round trip).
    fn insert(
        &mut self,
        env: &NewEnvelope,
        limits: QueueLimits,
    ) -> Result<EnqueueOutcome, postgres::Error> {
        let st = self.st(
            "WITH d AS (SELECT 1 FROM devices WHERE user_name=$1 AND device=$2),
                  q AS (SELECT COUNT(*) AS queued, COUNT(*) FILTER (WHERE from_user=$3) AS mine
                          FROM envelopes WHERE to_user=$1 AND to_device=$2 AND expires_ms>$5),
                  ins AS (INSERT INTO envelopes(to_user, to_device, from_user, from_device,
                                                stored_ms, expires_ms, ciphertext)
                          SELECT $1,$2,$3,$4,$5,$6,$7 FROM d, q
                           WHERE q.queued < $8 AND q.mine < $9
                          RETURNING id)
             SELECT EXISTS(SELECT 1 FROM d), (SELECT queued FROM q), (SELECT id FROM ins)",
        )?;
        let row = self.tx.query_one(
            &st,
            &[
                &env.to.user,
                &i64::from(env.to.device),
                &env.from.user,
                &i64::from(env.from.device),
                &to_i64(env.stored_at_ms),
                &to_i64(env.expires_at_ms),
                &env.ciphertext,
                &i64::try_from(limits.per_device).unwrap_or(i64::MAX),
                &i64::try_from(limits.per_sender).unwrap_or(i64::MAX),
            ],
        )?;
        let (known, queued, id): (bool, i64, Option<i64>) = (row.get(0), row.get(1), row.get(2));
        Ok(match id {
            Some(id) => EnqueueOutcome::Stored(to_u64(id)),
            None if !known => EnqueueOutcome::UnknownRecipient,
            None if usize::try_from(queued).unwrap_or(usize::MAX) >= limits.per_device => {
                EnqueueOutcome::QueueFull
            }
            None => EnqueueOutcome::SenderShareFull,
        })
    }

    /// A full queue makes room for `env` (store contract `full_queue_makes_room_from_the_
    /// largest_share`): the oldest envelope of the largest share goes if that share is larger
    /// than `env`'s sender's and the sender's own share is not full. Whether one went.
    fn make_room(
        &mut self,
        env: &NewEnvelope,
        limits: QueueLimits,
    ) -> Result<bool, postgres::Error> {
        let st = self.st(
            "WITH s AS (SELECT from_user, COUNT(*) AS n, MIN(id) AS oldest FROM envelopes
                         WHERE to_user=$1 AND to_device=$2 AND expires_ms>$4 GROUP BY from_user),
                  mine AS (SELECT COALESCE((SELECT n FROM s WHERE from_user=$3), 0) AS n),
                  hog AS (SELECT from_user, n, oldest FROM s ORDER BY n DESC, oldest ASC LIMIT 1)
             DELETE FROM envelopes WHERE id=(SELECT oldest FROM hog)
                AND (SELECT n FROM hog) > (SELECT n FROM mine)
                AND (SELECT n FROM mine) < $5
             RETURNING id",
        )?;
        let rows = self.tx.query(
            &st,
            &[
                &env.to.user,
                &i64::from(env.to.device),
                &env.from.user,
                &to_i64(env.stored_at_ms),
                &i64::try_from(limits.per_sender).unwrap_or(i64::MAX),
            ],
        )?;
        Ok(!rows.is_empty())
    }

    /// Unexpired envelopes for `to` after `after`, ascending, at most `limit` (rows for
    /// [`envelopes`]).
    fn pending(
        &mut self,
        to: &DeviceAddr,
        after: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<postgres::Row>, postgres::Error> {
        let st = self.st(
            "SELECT id, from_user, from_device, stored_ms, expires_ms, ciphertext FROM envelopes
             WHERE to_user=$1 AND to_device=$2 AND id>$3 AND expires_ms>$4
             ORDER BY id LIMIT $5",
        )?;
        self.tx.query(
            &st,
            &[
                &to.user,
                &i64::from(to.device),
                &to_i64(after),
                &to_i64(now_ms),
                &i64::try_from(limit).unwrap_or(i64::MAX),
            ],
        )
    }

    fn ack(&mut self, to: &DeviceAddr, id: u64) -> Result<bool, postgres::Error> {
        let st = self.st("DELETE FROM envelopes WHERE id=$1 AND to_user=$2 AND to_device=$3")?;
        Ok(self
            .tx
            .execute(&st, &[&to_i64(id), &to.user, &i64::from(to.device)])?
            > 0)
    }

    fn signed(
        &mut self,
        addr: &DeviceAddr,
    ) -> Result<(Option<SignedPreKey>, Option<SignedPreKey>), postgres::Error> {
        let st = self.st("SELECT kind, key_id, public, signature FROM signed_prekeys
             WHERE user_name=$1 AND device=$2")?;
        let (mut signed, mut kem) = (None, None);
        for r in self.tx.query(&st, &[&addr.user, &i64::from(addr.device)])? {
            let kind: i16 = r.get(0);
            let id: i64 = r.get(1);
            let Ok(id) = u32::try_from(id) else { continue };
            let k = SignedPreKey {
                id,
                public: B64(r.get(2)),
                signature: B64(r.get(3)),
            };
            match kind {
                KIND_SIGNED => signed = Some(k),
                KIND_KEM => kem = Some(k),
                _ => {}
            }
        }
        Ok((signed, kem))
    }
}

impl PgStore {
    /// Connects to `url`, applies the migrations the database lacks, and keeps the connection.
    /// Blocks (see the module docs).
    ///
    /// # Errors
    /// [`StoreError::Failed`] for a URL that does not parse, a refused login, or a database
    /// whose schema is newer than this server; [`StoreError::Unavailable`] when the database
    /// cannot be reached.
    pub fn open(url: &PgUrl) -> StoreResult<Self> {
        let mut config: postgres::Config = url
            .0
            .parse()
            .map_err(|e: postgres::Error| StoreError::Failed(format!("postgres url: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(PG_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("sotto-server");
        }
        // a database that stops answering (network partition, hung host) fails the call instead
        // of holding the store thread; a server that dies inside a transaction does not keep its
        // row locks from the others
        config.tcp_user_timeout(PG_IO_TIMEOUT);
        config.keepalives_idle(PG_IO_TIMEOUT);
        if config.get_options().is_none() {
            config.options(&format!(
                "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
                PG_IO_TIMEOUT.as_millis(),
                PG_IO_TIMEOUT.as_millis()
            ));
        }
        let store = Self {
            config,
            conn: Mutex::new(None),
        };
        {
            let mut g = store.lock();
            let c = store.connected(&mut g)?;
            migrate(&mut c.client).map_err(store_error)?;
        }
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Conn>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live connection, connecting if there is none.
    fn connected<'g>(&self, g: &'g mut Option<Conn>) -> StoreResult<&'g mut Conn> {
        if g.as_ref().is_some_and(|c| c.client.is_closed()) {
            *g = None;
        }
        if g.is_none() {
            let client = self.config.connect(NoTls).map_err(|e| {
                // a refused login or an unknown database is a configuration error, not an outage
                match e.code() {
                    Some(c)
                        if c.code().starts_with("28") || *c == SqlState::INVALID_CATALOG_NAME =>
                    {
                        StoreError::Failed(e.to_string())
                    }
                    _ => StoreError::Unavailable(e.to_string()),
                }
            })?;
            *g = Some(Conn {
                client,
                prepared: HashMap::new(),
            });
        }
        g.as_mut()
            .ok_or_else(|| StoreError::Failed("no connection".into()))
    }

    /// Runs `f` in one transaction; commits or rolls back as it says. A connection found dead
    /// at `BEGIN` is replaced once (nothing was sent on it); a failure after `BEGIN` drops a
    /// dead connection and is returned, never retried.
    fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<End<T>, postgres::Error>,
    {
        let mut f = Some(f);
        let mut g = self.lock();
        let mut first = true;
        loop {
            let reused = g.is_some();
            let c = self.connected(&mut g)?;
            match in_transaction(c, &mut f) {
                Ok(v) => return Ok(v),
                Err(Failure::Begin(e)) if first && reused && is_unreachable(&e) => {
                    tracing::warn!(error = %e, "postgres connection lost while idle; reconnecting");
                    *g = None;
                    first = false;
                }
                Err(Failure::Spent) => {
                    return Err(StoreError::Failed("transaction body already ran".into()))
                }
                Err(Failure::Begin(e) | Failure::Body(e)) => {
                    let err = store_error(e);
                    if matches!(err, StoreError::Unavailable(_)) {
                        *g = None;
                    }
                    return Err(err);
                }
            }
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Closing the client blocks on its own runtime, which panics on a tokio worker (where
        // the last handle to a store may well be dropped): close it on a thread of its own.
        if let Some(c) = self.lock().take() {
            let _ = std::thread::Builder::new()
                .name("sotto-pg-close".into())
                .spawn(move || drop(c));
        }
    }
}

/// What a transaction's body decided.
enum End<T> {
    /// Commit, then return this.
    Commit(T),
    /// Roll back (nothing changes), then return this.
    Rollback(T),
}

enum Failure {
    /// `BEGIN` failed: the body never ran.
    Begin(postgres::Error),
    /// The body, the commit or the rollback failed.
    Body(postgres::Error),
    /// The body already ran (a second attempt after `BEGIN` succeeded; never happens).
    Spent,
}

fn in_transaction<T, F>(c: &mut Conn, f: &mut Option<F>) -> Result<T, Failure>
where
    F: FnOnce(&mut Tx<'_>) -> Result<End<T>, postgres::Error>,
{
    let Conn { client, prepared } = c;
    let tx = client.transaction().map_err(Failure::Begin)?;
    let mut t = Tx {
        tx,
        cache: prepared,
    };
    // taken only once BEGIN succeeded, so a retried BEGIN still has it
    let Some(f) = f.take() else {
        return Err(Failure::Spent);
    };
    match f(&mut t).map_err(Failure::Body)? {
        End::Commit(v) => {
            t.tx.commit().map_err(Failure::Body)?;
            Ok(v)
        }
        End::Rollback(v) => {
            t.tx.rollback().map_err(Failure::Body)?;
            Ok(v)
        }
    }
}

impl Store for PgStore {
    fn register(&self, addr: &DeviceAddr, key: &[u8], now: u64) -> StoreResult<RegisterOutcome> {
        self.run(|t| {
            t.lock_account(&addr.user)?;
            let outcome = match t.identity(addr)? {
                Some(k) if k == key => RegisterOutcome::AlreadyRegistered,
                Some(_) => RegisterOutcome::IdentityMismatch,
                None => {
                    let st = t.st("SELECT EXISTS(SELECT 1 FROM devices WHERE user_name=$1)")?;
                    let taken: bool = t.tx.query_one(&st, &[&addr.user])?.get(0);
                    if taken {
                        RegisterOutcome::UsernameTaken
                    } else {
                        let st = t.st(
                            "INSERT INTO devices(user_name, device, identity, updated_ms)
                             VALUES($1,$2,$3,$4)",
                        )?;
                        t.tx.execute(
                            &st,
                            &[&addr.user, &i64::from(addr.device), &key, &to_i64(now)],
                        )?;
                        RegisterOutcome::Created
                    }
                }
            };
            Ok(End::Commit(outcome))
        })
    }

    fn set_device(
        &self,
        addr: &DeviceAddr,
        key: &[u8],
        now: u64,
        max_devices: usize,
    ) -> StoreResult<SetDeviceOutcome> {
        self.run(|t| {
            t.lock_account(&addr.user)?;
            let device = i64::from(addr.device);
            let outcome = match t.identity(addr)? {
                Some(k) if k == key => return Ok(End::Rollback(SetDeviceOutcome::Unchanged)),
                Some(_) => SetDeviceOutcome::Replaced,
                None => {
                    let st = t.st("SELECT COUNT(*) FROM devices WHERE user_name=$1")?;
                    let n: i64 = t.tx.query_one(&st, &[&addr.user])?.get(0);
                    if usize::try_from(n).unwrap_or(usize::MAX) >= max_devices {
                        return Ok(End::Rollback(SetDeviceOutcome::TooManyDevices));
                    }
                    SetDeviceOutcome::Added
                }
            };
            let st = t.st(
                "INSERT INTO devices(user_name, device, identity, updated_ms) VALUES($1,$2,$3,$4)
                 ON CONFLICT (user_name, device)
                 DO UPDATE SET identity=excluded.identity, updated_ms=excluded.updated_ms",
            )?;
            t.tx.execute(&st, &[&addr.user, &device, &key, &to_i64(now)])?;
            for sql in [
                "DELETE FROM signed_prekeys WHERE user_name=$1 AND device=$2",
                "DELETE FROM one_time_prekeys WHERE user_name=$1 AND device=$2",
                "DELETE FROM envelopes WHERE to_user=$1 AND to_device=$2",
            ] {
                let st = t.st(sql)?;
                t.tx.execute(&st, &[&addr.user, &device])?;
            }
            Ok(End::Commit(outcome))
        })
    }

    fn identity(&self, addr: &DeviceAddr) -> StoreResult<Option<Vec<u8>>> {
        self.run(|t| Ok(End::Commit(t.identity(addr)?)))
    }

    fn devices(&self, user: &str) -> StoreResult<Vec<u32>> {
        let ids: Vec<i64> = self.run(|t| {
            let st = t.st("SELECT device FROM devices WHERE user_name=$1 ORDER BY device")?;
            Ok(End::Commit(
                t.tx.query(&st, &[&user])?
                    .iter()
                    .map(|r| r.get(0))
                    .collect(),
            ))
        })?;
        ids.into_iter().map(to_u32).collect()
    }

    fn publish_prekeys(
        &self,
        addr: &DeviceAddr,
        signed: Option<&SignedPreKey>,
        kem: Option<&SignedPreKey>,
        one_time: &[OneTimePreKey],
        max_one_time: usize,
    ) -> StoreResult<Option<u32>> {
        self.run(|t| {
            t.lock_account(&addr.user)?;
            let device = i64::from(addr.device);
            for (kind, k) in [(KIND_SIGNED, signed), (KIND_KEM, kem)] {
                if let Some(k) = k {
                    let st = t.st(
                        "INSERT INTO signed_prekeys(user_name, device, kind, key_id, public, signature)
                         VALUES($1,$2,$3,$4,$5,$6)
                         ON CONFLICT (user_name, device, kind) DO UPDATE SET
                           key_id=excluded.key_id, public=excluded.public, signature=excluded.signature",
                    )?;
                    t.tx.execute(
                        &st,
                        &[
                            &addr.user,
                            &device,
                            &kind,
                            &i64::from(k.id),
                            &k.public.0,
                            &k.signature.0,
                        ],
                    )?;
                }
            }
            if !one_time.is_empty() {
                let ids: Vec<i64> = one_time.iter().map(|k| i64::from(k.id)).collect();
                let keys: Vec<&[u8]> = one_time.iter().map(|k| k.public.0.as_slice()).collect();
                // one statement for the batch; a repeated id in it keeps its last key, as
                // SQLite's INSERT OR REPLACE one by one does
                let st = t.st(
                    "INSERT INTO one_time_prekeys(user_name, device, key_id, public)
                     SELECT DISTINCT ON (k.id) $1, $2, k.id, k.public
                       FROM unnest($3::bigint[], $4::bytea[]) WITH ORDINALITY AS k(id, public, n)
                      ORDER BY k.id, k.n DESC
                     ON CONFLICT (user_name, device, key_id) DO UPDATE SET public=excluded.public",
                )?;
                t.tx.execute(&st, &[&addr.user, &device, &ids, &keys])?;
            }
            let n = t.count_one_time(addr)?;
            if usize::try_from(n).unwrap_or(usize::MAX) > max_one_time {
                return Ok(End::Rollback(None));
            }
            Ok(End::Commit(Some(n)))
        })
    }

    fn one_time_count(&self, addr: &DeviceAddr) -> StoreResult<u32> {
        self.run(|t| Ok(End::Commit(t.count_one_time(addr)?)))
    }

    fn take_bundle(&self, addr: &DeviceAddr, one_time: bool) -> StoreResult<BundleOutcome> {
        self.run(|t| {
            let Some(identity_key) = t.identity(addr)? else {
                return Ok(End::Rollback(BundleOutcome::UnknownDevice));
            };
            let (Some(signed_prekey), Some(kem_prekey)) = t.signed(addr)? else {
                return Ok(End::Rollback(BundleOutcome::NoPrekeys));
            };
            let device = i64::from(addr.device);
            let one_time_prekey = if one_time {
                // the lowest key no concurrent fetch holds, deleted in the same statement: no
                // two fetchers (on any server) get the same key
                let st = t.st(
                    "DELETE FROM one_time_prekeys WHERE user_name=$1 AND device=$2 AND key_id=(
                       SELECT key_id FROM one_time_prekeys WHERE user_name=$1 AND device=$2
                       ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING key_id, public",
                )?;
                match t.tx.query_opt(&st, &[&addr.user, &device])? {
                    Some(r) => {
                        let id: i64 = r.get(0);
                        u32::try_from(id).ok().map(|id| OneTimePreKey {
                            id,
                            public: B64(r.get(1)),
                        })
                    }
                    None => None,
                }
            } else {
                None
            };
            let one_time_remaining = t.count_one_time(addr)?;
            Ok(End::Commit(BundleOutcome::Bundle(StoredBundle {
                identity_key,
                signed_prekey,
                kem_prekey,
                one_time_prekey,
                one_time_remaining,
            })))
        })
    }

    fn enqueue(&self, env: &NewEnvelope, limits: QueueLimits) -> StoreResult<EnqueueOutcome> {
        let op = [WriteOp::Enqueue {
            env: env.clone(),
            limits,
        }];
        match self.write_batch(&op)?.first() {
            Some(WriteOutcome::Enqueued(o)) => Ok(*o),
            _ => Err(StoreError::Failed("enqueue without its outcome".into())),
        }
    }

    fn write_batch(&self, ops: &[WriteOp]) -> StoreResult<Vec<WriteOutcome>> {
        self.run(|t| {
            t.lock_recipients(ops)?;
            let mut out = Vec::with_capacity(ops.len());
            for op in ops {
                out.push(match op {
                    WriteOp::Enqueue { env, limits } => {
                        WriteOutcome::Enqueued(t.enqueue(env, *limits)?)
                    }
                    WriteOp::Ack { to, id } => WriteOutcome::Acked(t.ack(to, *id)?),
                });
            }
            Ok(End::Commit(out))
        })
    }

    fn pending(
        &self,
        to: &DeviceAddr,
        after: u64,
        now_ms: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEnvelope>> {
        let rows = self.run(|t| Ok(End::Commit(t.pending(to, after, now_ms, limit)?)))?;
        envelopes(to, &rows)
    }

    fn pending_fenced(
        &self,
        to: &DeviceAddr,
        epoch: u64,
        after: u64,
        now_ms: u64,
        limit: usize,
    ) -> StoreResult<Fenced<Vec<StoredEnvelope>>> {
        self.pending_if_current(to, epoch, after, now_ms, limit)
    }

    fn claim_connection(&self, addr: &DeviceAddr, node: &str) -> StoreResult<u64> {
        self.claim(addr, node)
    }

    fn connection(&self, addr: &DeviceAddr) -> StoreResult<Option<(String, u64)>> {
        self.claimed(addr)
    }

    fn take_limit_token(&self, key: &str, per_minute: u32, now_ms: u64) -> StoreResult<bool> {
        self.take_token(key, per_minute, now_ms)
    }

    fn give_back_limit_token(&self, key: &str, per_minute: u32) -> StoreResult<()> {
        self.give_back_token(key, per_minute)
    }

    fn grant_relay_room(
        &self,
        ask: &Ask<'_>,
        relays: &[String],
    ) -> StoreResult<Result<RoomRecord, RoomRefusal>> {
        self.grant_room(ask, relays)
    }

    fn ack(&self, to: &DeviceAddr, id: u64) -> StoreResult<bool> {
        self.run(|t| Ok(End::Commit(t.ack(to, id)?)))
    }

    fn purge_expired(&self, now_ms: u64) -> StoreResult<u64> {
        self.run(|t| {
            let st = t.st("DELETE FROM envelopes WHERE expires_ms<=$1")?;
            Ok(End::Commit(t.tx.execute(&st, &[&to_i64(now_ms)])?))
        })
    }

    fn queued(&self, to: &DeviceAddr) -> StoreResult<usize> {
        let n: i64 = self.run(|t| {
            let st = t.st("SELECT COUNT(*) FROM envelopes WHERE to_user=$1 AND to_device=$2")?;
            Ok(End::Commit(
                t.tx.query_one(&st, &[&to.user, &i64::from(to.device)])?
                    .get(0),
            ))
        })?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

/// The envelopes [`Tx::pending`] read.
fn envelopes(to: &DeviceAddr, rows: &[postgres::Row]) -> StoreResult<Vec<StoredEnvelope>> {
    rows.iter()
        .map(|r| {
            Ok(StoredEnvelope {
                id: to_u64(r.get(0)),
                env: NewEnvelope {
                    to: to.clone(),
                    from: DeviceAddr {
                        user: r.get(1),
                        device: to_u32(r.get(2))?,
                    },
                    stored_at_ms: to_u64(r.get(3)),
                    expires_at_ms: to_u64(r.get(4)),
                    ciphertext: r.get(5),
                },
            })
        })
        .collect()
}

/// Applies the missing migrations in one transaction each, under an advisory lock.
fn migrate(client: &mut Client) -> Result<(), postgres::Error> {
    client.batch_execute(
        "CREATE TABLE IF NOT EXISTS sotto_schema_migrations(
           version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )?;
    for (version, sql) in MIGRATIONS {
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_MIGRATION_LOCK])?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM sotto_schema_migrations WHERE version=$1",
                &[version],
            )?
            .is_some();
        if !done {
            tx.batch_execute(sql)?;
            tx.execute(
                "INSERT INTO sotto_schema_migrations(version) VALUES($1)",
                &[version],
            )?;
            tracing::info!(version, "postgres schema migrated");
        }
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use sotto_testkit::postgres::PgCluster;

    /// A store on a fresh cluster, or `None` where PostgreSQL cannot run (reason on stderr).
    fn store() -> Option<(PgCluster, PgStore)> {
        let pg = PgCluster::start()?;
        let s = PgStore::open(&PgUrl::new(pg.url())).unwrap();
        Some((pg, s))
    }

    #[test]
    fn contract() {
        let Some((_pg, s)) = store() else { return };
        super::super::contract::all(&s);
    }

    /// Two servers' stores on one database, then 24 grants racing from 8 threads over 3 stores
    /// for 3 new rooms placed by the server: one owner and one relay per room, every member
    /// added by a grant that succeeded is there.
    #[test]
    fn relay_rooms() {
        let Some((pg, a)) = store() else { return };
        let b = PgStore::open(&PgUrl::new(pg.url())).unwrap();
        super::super::contract::relay_rooms_shared_by_handles(&a, &b);
        let c = PgStore::open(&PgUrl::new(pg.url())).unwrap();
        let stores = [&a, &b, &c];
        // relays with no rooms yet (the contract's rooms are on r and s)
        let relays = [
            "wss://u.example".to_string(),
            "wss://v.example".to_string(),
            "wss://w.example".to_string(),
        ];
        let results = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|sc| {
            for th in 0..8usize {
                let (stores, relays, results) = (&stores, &relays, &results);
                sc.spawn(move || {
                    for i in 0..3usize {
                        let room = format!("race-{i}");
                        let invitee = vec![format!("guest{th}")];
                        let ask = Ask {
                            me: "host",
                            relay: None,
                            room: &room,
                            participants: &invitee,
                            now_ms: 5_000_000,
                        };
                        let r = stores[(th + i) % 3].grant_relay_room(&ask, relays).unwrap();
                        results.lock().unwrap().push((room, invitee[0].clone(), r));
                    }
                });
            }
        });
        let results = results.into_inner().unwrap();
        for i in 0..3 {
            let room = format!("race-{i}");
            let mine: Vec<_> = results.iter().filter(|(r, _, _)| *r == room).collect();
            assert_eq!(mine.len(), 8);
            let placed: std::collections::BTreeSet<&str> = mine
                .iter()
                .map(|(_, _, r)| r.as_ref().unwrap().relay.as_str())
                .collect();
            assert_eq!(placed.len(), 1, "one relay for {room}");
            // the last grant's record holds every guest and the host
            let last = mine
                .iter()
                .map(|(_, _, r)| r.as_ref().unwrap())
                .max_by_key(|r| r.members.len())
                .unwrap();
            assert_eq!(last.members.len(), 9, "{:?}", last.members);
            assert_eq!(last.owner, "host");
        }
        let on: std::collections::BTreeSet<String> = results
            .iter()
            .map(|(_, _, r)| r.as_ref().unwrap().relay.clone())
            .collect();
        assert_eq!(on.len(), 3, "3 new rooms on 3 relays: {on:?}");
        // 8 accounts claiming one new room at once: one claim, 7 outsiders
        let claims = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|sc| {
            for th in 0..8usize {
                let (stores, relays, claims) = (&stores, &relays, &claims);
                sc.spawn(move || {
                    let me = format!("claimer{th}");
                    let who = vec![me.clone()];
                    let ask = Ask {
                        me: &me,
                        relay: None,
                        room: "contested",
                        participants: &who,
                        now_ms: 5_000_000,
                    };
                    let r = stores[th % 3].grant_relay_room(&ask, relays).unwrap();
                    claims.lock().unwrap().push(r);
                });
            }
        });
        let claims = claims.into_inner().unwrap();
        assert_eq!(claims.iter().filter(|r| r.is_ok()).count(), 1, "{claims:?}");
        assert!(claims
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| *e == RoomRefusal::NotARoomMember));
    }

    #[test]
    fn write_batch() {
        let Some((_pg, s)) = store() else { return };
        super::super::contract::write_batch_in_order(&s);
    }

    #[test]
    fn sender_share() {
        let Some((_pg, s)) = store() else { return };
        super::super::contract::sender_share_limit_and_limit_plus_one(&s);
    }

    #[test]
    fn full_queue_fairness() {
        let Some((_pg, s)) = store() else { return };
        super::super::contract::full_queue_makes_room_from_the_largest_share(&s);
    }

    #[test]
    fn limit_buckets() {
        let Some((_pg, s)) = store() else { return };
        super::super::contract::limit_buckets_at_limit_and_limit_plus_one(&s);
    }

    #[test]
    fn connection_epochs() {
        let Some((_pg, s)) = store() else { return };
        super::super::contract::connection_epochs_fence_older_connections(&s);
    }

    #[test]
    fn queue_limit() {
        let Some((_pg, s)) = store() else { return };
        super::super::contract::queue_limit_and_limit_plus_one(&s);
    }

    /// A second server opening the same database finds the schema applied and the data there;
    /// envelope ids are never reused.
    #[test]
    fn reopen_migrates_once_and_ids_never_reused() {
        let Some((pg, s)) = store() else { return };
        let b = DeviceAddr::new("bob", 1);
        let q = QueueLimits {
            per_device: 10,
            per_sender: 10,
        };
        let env = NewEnvelope {
            to: b.clone(),
            from: b.clone(),
            stored_at_ms: 0,
            expires_at_ms: 10,
            ciphertext: vec![7],
        };
        s.register(&b, &[1; 33], 0).unwrap();
        let EnqueueOutcome::Stored(id) = s.enqueue(&env, q).unwrap() else {
            panic!()
        };
        assert!(s.ack(&b, id).unwrap());
        let s2 = PgStore::open(&PgUrl::new(pg.url())).unwrap();
        let EnqueueOutcome::Stored(id2) = s2.enqueue(&env, q).unwrap() else {
            panic!()
        };
        assert!(id2 > id);
        assert_eq!(s.pending(&b, 0, 0, 10).unwrap()[0].id, id2);
    }

    /// Down: every call fails with `Unavailable`, nothing panics; back up: the same store
    /// works again without being reopened.
    #[test]
    fn unreachable_database_is_unavailable_then_recovers() {
        let Some((pg, s)) = store() else { return };
        let b = DeviceAddr::new("bob", 1);
        s.register(&b, &[1; 33], 0).unwrap();
        pg.stop();
        assert!(matches!(s.identity(&b), Err(StoreError::Unavailable(_))));
        assert!(matches!(
            s.register(&DeviceAddr::new("carol", 1), &[2; 33], 0),
            Err(StoreError::Unavailable(_))
        ));
        pg.restart();
        assert_eq!(s.identity(&b).unwrap(), Some(vec![1; 33]));
        // restarted while idle: the dead connection is replaced without failing the call
        pg.stop();
        pg.restart();
        assert_eq!(s.devices("bob").unwrap(), vec![1]);
    }

    /// A hung database or a server dead inside a transaction cannot hold the store thread or
    /// the others' locks for longer than PG_IO_TIMEOUT.
    #[test]
    fn session_timeouts_are_set() {
        let Some((_pg, s)) = store() else { return };
        let want = format!("{}s", PG_IO_TIMEOUT.as_secs());
        for setting in [
            "SHOW statement_timeout",
            "SHOW idle_in_transaction_session_timeout",
        ] {
            let got: String = s
                .run(|t| Ok(End::Commit(t.tx.query_one(setting, &[])?.get(0))))
                .unwrap();
            assert_eq!(got, want, "{setting}");
        }
    }

    #[test]
    fn the_url_is_never_printed() {
        let u = PgUrl::new("postgres://sotto:hunter2@db/sotto");
        assert!(!format!("{u:?}").contains("hunter2"));
        assert!(matches!(
            PgStore::open(&PgUrl::new("postgres://[bad")),
            Err(StoreError::Failed(_))
        ));
    }
}
