//! Relay rooms shared by every server on one PostgreSQL ([`Store::grant_relay_room`]): a grant
//! takes the asker's account lock (its share of rooms holds across servers) and a lock on the
//! room name (two servers claiming one new room are serialized: the second sees the first's
//! row), reads the row, applies the rule ([`decide`]) in Rust and writes the row back, in one
//! transaction. The total bound may be passed by the grants in flight at one moment; the next
//! claim trims it.

use std::collections::HashMap;

use super::*;
use crate::consts::{MAX_RELAY_ROOMS, MAX_RELAY_ROOMS_PER_ACCOUNT, RELAY_ROOM_IDLE_SECS};
use crate::relay_rooms::{check, decide};

/// Key class of the per-room advisory locks (the second key is `hashtext(room)`).
const ROOM_LOCK_CLASS: i32 = 0x536f_7402;

/// A room row that does not parse (the grant is rolled back and fails).
struct Unreadable;

impl Tx<'_> {
    fn relay_room(
        &mut self,
        room: &str,
    ) -> Result<Result<Option<RoomRecord>, Unreadable>, postgres::Error> {
        let st =
            self.st("SELECT relay, owner, members, last_used_ms FROM relay_rooms WHERE room=$1")?;
        let Some(r) = self.tx.query_opt(&st, &[&room])? else {
            return Ok(Ok(None));
        };
        let members: String = r.get(2);
        let Some(members) = RoomRecord::parse_members(&members) else {
            return Ok(Err(Unreadable));
        };
        Ok(Ok(Some(RoomRecord {
            relay: r.get(0),
            owner: r.get(1),
            members,
            last_used_ms: to_u64(r.get(3)),
        })))
    }

    fn relay_load(&mut self) -> Result<HashMap<String, usize>, postgres::Error> {
        let st = self.st("SELECT relay, COUNT(*) FROM relay_rooms GROUP BY relay")?;
        Ok(self
            .tx
            .query(&st, &[])?
            .iter()
            .map(|r| {
                let n: i64 = r.get(1);
                (r.get(0), usize::try_from(n).unwrap_or(usize::MAX))
            })
            .collect())
    }

    fn count_rooms(&mut self, owner: Option<&str>) -> Result<usize, postgres::Error> {
        let n: i64 = match owner {
            Some(o) => {
                let st = self.st("SELECT COUNT(*) FROM relay_rooms WHERE owner=$1")?;
                self.tx.query_one(&st, &[&o])?.get(0)
            }
            None => {
                let st = self.st("SELECT COUNT(*) FROM relay_rooms")?;
                self.tx.query_one(&st, &[])?.get(0)
            }
        };
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn forget_least_recent_room(&mut self, owner: Option<&str>) -> Result<(), postgres::Error> {
        match owner {
            Some(o) => {
                let st = self.st(
                    "DELETE FROM relay_rooms WHERE room = (SELECT room FROM relay_rooms
                     WHERE owner=$1 ORDER BY last_used_ms, seq LIMIT 1)",
                )?;
                self.tx.execute(&st, &[&o])?;
            }
            None => {
                let st = self.st(
                    "DELETE FROM relay_rooms WHERE room = (SELECT room FROM relay_rooms
                     ORDER BY last_used_ms, seq LIMIT 1)",
                )?;
                self.tx.execute(&st, &[])?;
            }
        }
        Ok(())
    }
}

impl PgStore {
    pub(super) fn grant_room(
        &self,
        ask: &Ask<'_>,
        relays: &[String],
    ) -> StoreResult<Result<RoomRecord, RoomRefusal>> {
        if let Err(r) = check(ask, relays) {
            return Ok(Err(r));
        }
        let done = self.run(|t| {
            t.lock_account(ask.me)?;
            let st = t.st("SELECT pg_advisory_xact_lock($1, hashtext($2))")?;
            t.tx.execute(&st, &[&ROOM_LOCK_CLASS, &ask.room])?;
            let idle_before = ask.now_ms.saturating_sub(RELAY_ROOM_IDLE_SECS * 1000);
            let st = t.st("DELETE FROM relay_rooms WHERE last_used_ms < $1")?;
            t.tx.execute(&st, &[&to_i64(idle_before)])?;
            let existing = match t.relay_room(ask.room)? {
                Ok(e) => e,
                Err(Unreadable) => return Ok(End::Rollback(Err(Unreadable))),
            };
            let placing = existing.is_none() && ask.relay.is_none();
            let load = if placing {
                t.relay_load()?
            } else {
                HashMap::new()
            };
            let rec = match decide(ask, existing.as_ref(), relays, || load) {
                Ok(r) => r,
                Err(refusal) => return Ok(End::Rollback(Ok(Err(refusal)))),
            };
            if existing.is_none() {
                if t.count_rooms(Some(ask.me))? >= MAX_RELAY_ROOMS_PER_ACCOUNT {
                    t.forget_least_recent_room(Some(ask.me))?;
                }
                if t.count_rooms(None)? >= MAX_RELAY_ROOMS {
                    t.forget_least_recent_room(None)?;
                }
            }
            let st = t.st(
                "INSERT INTO relay_rooms(room, relay, owner, members, last_used_ms, seq)
                 VALUES($1, $2, $3, $4, $5, nextval('relay_room_seq'))
                 ON CONFLICT (room) DO UPDATE SET relay=excluded.relay, owner=excluded.owner,
                   members=excluded.members, last_used_ms=excluded.last_used_ms, seq=excluded.seq",
            )?;
            t.tx.execute(
                &st,
                &[
                    &ask.room,
                    &rec.relay,
                    &rec.owner,
                    &rec.members_text(),
                    &to_i64(rec.last_used_ms),
                ],
            )?;
            Ok(End::Commit(Ok(Ok(rec))))
        })?;
        done.map_err(|Unreadable| StoreError::Failed("relay room members unreadable".into()))
    }
}
