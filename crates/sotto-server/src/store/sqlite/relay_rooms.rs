//! Relay rooms in SQLite ([`Store::grant_relay_room`]): the room's row is read, the rule
//! ([`decide`]) applied in Rust and the row written back in one `IMMEDIATE` transaction (SQLite's
//! single writer serializes grants).

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension, Transaction};

use super::*;
use crate::consts::{MAX_RELAY_ROOMS, MAX_RELAY_ROOMS_PER_ACCOUNT, RELAY_ROOM_IDLE_SECS};
use crate::relay_rooms::{check, decide};

/// The room's stored record.
fn record(tx: &Transaction<'_>, room: &str) -> StoreResult<Option<RoomRecord>> {
    let row = tx
        .query_row(
            "SELECT relay, owner, members, last_used_ms FROM relay_rooms WHERE room=?1",
            params![room],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            },
        )
        .optional()?;
    row.map(|(relay, owner, members, last)| {
        Ok(RoomRecord {
            relay,
            owner,
            members: RoomRecord::parse_members(&members)
                .ok_or_else(|| StoreError::Failed("relay room members unreadable".into()))?,
            last_used_ms: to_u64(last),
        })
    })
    .transpose()
}

/// Live rooms per relay.
fn load(tx: &Transaction<'_>) -> StoreResult<HashMap<String, usize>> {
    let mut st = tx.prepare("SELECT relay, COUNT(*) FROM relay_rooms GROUP BY relay")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            usize::try_from(r.get::<_, i64>(1)?).unwrap_or(usize::MAX),
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Forgets the least recently used room, of `owner` if given.
fn forget_least_recent(tx: &Transaction<'_>, owner: Option<&str>) -> StoreResult<()> {
    match owner {
        Some(o) => tx.execute(
            "DELETE FROM relay_rooms WHERE room = (SELECT room FROM relay_rooms WHERE owner=?1
             ORDER BY last_used_ms, seq LIMIT 1)",
            params![o],
        )?,
        None => tx.execute(
            "DELETE FROM relay_rooms WHERE room = (SELECT room FROM relay_rooms
             ORDER BY last_used_ms, seq LIMIT 1)",
            [],
        )?,
    };
    Ok(())
}

impl SqliteStore {
    pub(super) fn grant_room(
        &self,
        ask: &Ask<'_>,
        relays: &[String],
    ) -> StoreResult<Result<RoomRecord, RoomRefusal>> {
        if let Err(r) = check(ask, relays) {
            return Ok(Err(r));
        }
        let mut c = self.lock();
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let idle_before = ask.now_ms.saturating_sub(RELAY_ROOM_IDLE_SECS * 1000);
        tx.execute(
            "DELETE FROM relay_rooms WHERE last_used_ms < ?1",
            params![to_i64(idle_before)],
        )?;
        let existing = record(&tx, ask.room)?;
        let placing = existing.is_none() && ask.relay.is_none();
        let load = if placing { load(&tx)? } else { HashMap::new() };
        let rec = match decide(ask, existing.as_ref(), relays, || load) {
            Ok(r) => r,
            // dropping `tx` rolls back: nothing changed
            Err(refusal) => return Ok(Err(refusal)),
        };
        if existing.is_none() {
            let owned: i64 = tx.query_row(
                "SELECT COUNT(*) FROM relay_rooms WHERE owner=?1",
                params![ask.me],
                |r| r.get(0),
            )?;
            if usize::try_from(owned).unwrap_or(usize::MAX) >= MAX_RELAY_ROOMS_PER_ACCOUNT {
                forget_least_recent(&tx, Some(ask.me))?;
            }
            let total: i64 = tx.query_row("SELECT COUNT(*) FROM relay_rooms", [], |r| r.get(0))?;
            if usize::try_from(total).unwrap_or(usize::MAX) >= MAX_RELAY_ROOMS {
                forget_least_recent(&tx, None)?;
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO relay_rooms(room, relay, owner, members, last_used_ms, seq)
             VALUES(?1, ?2, ?3, ?4, ?5, (SELECT COALESCE(MAX(seq), 0) + 1 FROM relay_rooms))",
            params![
                ask.room,
                rec.relay,
                rec.owner,
                rec.members_text(),
                to_i64(rec.last_used_ms)
            ],
        )?;
        tx.commit()?;
        Ok(Ok(rec))
    }
}
