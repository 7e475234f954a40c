//! Which node holds each device's live connection, on PostgreSQL: the claim a login makes and
//! the fenced queue read (see [`Store::claim_connection`] and [`Store::pending_fenced`]).
//!
//! A claim updates the device's `connections` row (epoch + 1); a fenced read takes that row's
//! share lock (`FOR SHARE`) before it reads the queue and holds it to its commit, so a claim
//! waits for a read in flight and every read after the claim's commit sees the new epoch. An
//! older connection's read is then answered [`Fenced::Superseded`] and its node closes it.

use super::*;

impl PgStore {
    pub(super) fn claim(&self, addr: &DeviceAddr, node: &str) -> StoreResult<u64> {
        let epoch: i64 = self.run(|t| {
            let st = t.st(
                "INSERT INTO connections(user_name, device, node, epoch) VALUES($1, $2, $3, 1)
                 ON CONFLICT (user_name, device)
                 DO UPDATE SET node=excluded.node, epoch=connections.epoch+1
                 RETURNING epoch",
            )?;
            Ok(End::Commit(
                t.tx.query_one(&st, &[&addr.user, &i64::from(addr.device), &node])?
                    .get(0),
            ))
        })?;
        Ok(to_u64(epoch))
    }

    pub(super) fn claimed(&self, addr: &DeviceAddr) -> StoreResult<Option<(String, u64)>> {
        let row: Option<(String, i64)> = self.run(|t| {
            let st =
                t.st("SELECT node, epoch FROM connections WHERE user_name=$1 AND device=$2")?;
            Ok(End::Commit(
                t.tx.query_opt(&st, &[&addr.user, &i64::from(addr.device)])?
                    .map(|r| (r.get(0), r.get(1))),
            ))
        })?;
        Ok(row.map(|(node, epoch)| (node, to_u64(epoch))))
    }

    pub(super) fn pending_if_current(
        &self,
        to: &DeviceAddr,
        epoch: u64,
        after: u64,
        now_ms: u64,
        limit: usize,
    ) -> StoreResult<Fenced<Vec<StoredEnvelope>>> {
        let rows = self.run(|t| {
            let st =
                t.st("SELECT epoch FROM connections WHERE user_name=$1 AND device=$2 FOR SHARE")?;
            let current: Option<i64> =
                t.tx.query_opt(&st, &[&to.user, &i64::from(to.device)])?
                    .map(|r| r.get(0));
            if current.is_some_and(|c| to_u64(c) > epoch) {
                return Ok(End::Rollback(None));
            }
            Ok(End::Commit(Some(t.pending(to, after, now_ms, limit)?)))
        })?;
        match rows {
            None => Ok(Fenced::Superseded),
            Some(rows) => Ok(Fenced::Current(envelopes(to, &rows)?)),
        }
    }
}
