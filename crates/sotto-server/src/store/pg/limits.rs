//! Limits shared by every server on one PostgreSQL (see [`Store::take_limit_token`]): a bucket's
//! row is created full if missing (`ON CONFLICT DO NOTHING`: two servers creating it at once
//! leave one row), then read `FOR UPDATE`, so takes on any servers are serialized; the rule is
//! applied in Rust ([`SharedBucket`]) and the row written back, in the same transaction.

use super::*;
use crate::limits::SharedBucket;

impl Tx<'_> {
    fn bucket(&mut self, key: &str) -> Result<Option<SharedBucket>, postgres::Error> {
        let st = self.st("SELECT tokens, last_ms FROM limit_buckets WHERE key=$1 FOR UPDATE")?;
        Ok(self.tx.query_opt(&st, &[&key])?.map(|r| SharedBucket {
            tokens: r.get(0),
            last_ms: to_u64(r.get(1)),
        }))
    }

    fn put_bucket(&mut self, key: &str, b: SharedBucket) -> Result<(), postgres::Error> {
        let st = self.st(
            "INSERT INTO limit_buckets(key, tokens, last_ms) VALUES($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET tokens=excluded.tokens, last_ms=excluded.last_ms",
        )?;
        self.tx
            .execute(&st, &[&key, &b.tokens, &to_i64(b.last_ms)])?;
        Ok(())
    }
}

impl PgStore {
    pub(super) fn take_token(&self, key: &str, per_minute: u32, now_ms: u64) -> StoreResult<bool> {
        self.run(|t| {
            // buckets idle for a minute are full: forgetting them changes nothing
            let st = t.st("DELETE FROM limit_buckets WHERE last_ms <= $1")?;
            t.tx.execute(&st, &[&to_i64(now_ms.saturating_sub(60_000))])?;
            let full = SharedBucket::full(per_minute, now_ms);
            let st = t.st(
                "INSERT INTO limit_buckets(key, tokens, last_ms) VALUES($1, $2, $3)
                 ON CONFLICT (key) DO NOTHING",
            )?;
            t.tx.execute(&st, &[&key, &full.tokens, &to_i64(full.last_ms)])?;
            let mut b = t.bucket(key)?.unwrap_or(full);
            let taken = b.try_take(per_minute, now_ms);
            t.put_bucket(key, b)?;
            Ok(End::Commit(taken))
        })
    }

    pub(super) fn give_back_token(&self, key: &str, per_minute: u32) -> StoreResult<()> {
        self.run(|t| {
            if let Some(mut b) = t.bucket(key)? {
                b.give_back(per_minute);
                t.put_bucket(key, b)?;
            }
            Ok(End::Commit(()))
        })
    }
}
