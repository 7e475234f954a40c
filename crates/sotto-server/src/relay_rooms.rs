//! Relay rooms: where a call's room is placed, and who may get relay tokens for it.
//!
//! **Placement.** A room lives at one relay. The first request for a room places it: at the
//! relay the asker named (it must be one the server has a secret for), or, when the asker names
//! none, at the configured relay with the fewest live rooms (ties broken by a hash of the room
//! and the relay's URL, so equal relays share new rooms evenly). Every later request for that
//! room, on any server sharing the store, gets the same relay; naming another one is refused
//! ([`RoomRefusal::RoomAtAnotherRelay`]).
//!
//! **Membership.** The first account to ask for tokens for a room claims it and becomes a
//! member, with every account it asked tokens for. After that only members may ask, and only
//! for *other* names (they become members): a member's own token comes with the claim or with
//! an invitation (sealed in the inviter's offer), so a member that left the call cannot mint
//! itself a way back in; a re-invitation mints a fresh one. Rooms are random 128-bit call ids
//! known only to members.
//!
//! The rule is [`decide`], pure; the store applies it to the room's stored record in one atomic
//! step ([`crate::store::Store::grant_relay_room`]): rooms and their members are shared by every
//! server on one store and survive restarts. [`RelayRooms`] is the in-memory table
//! ([`crate::store::MemoryStore`] and tests).
//!
//! Bounded without refusing anyone: past [`MAX_RELAY_ROOMS_PER_ACCOUNT`] rooms claimed by one
//! account, its least recently used room is forgotten; past [`MAX_RELAY_ROOMS`] in all, the
//! store's least recently used one. (Refusing instead let anyone with a few accounts keep every
//! claim refused for `RELAY_ROOM_IDLE_SECS`, and a heavy user lost group calls after 16 in six
//! hours.) A forgotten room's calls go on (their tokens are with the members, and the relay does
//! not ask the server), but an invitation into such a call claims the room anew for the inviter
//! (no outsider knows the id to claim it first), placing it again (at the call's relay: the
//! inviter names it).

use std::collections::{BTreeSet, HashMap};

use crate::consts::{
    MAX_RELAY_ROOMS, MAX_RELAY_ROOMS_PER_ACCOUNT, MAX_RELAY_ROOM_MEMBERS,
    MAX_RELAY_TOKENS_PER_REQUEST, RELAY_ROOM_IDLE_SECS,
};
use crate::error::ErrorCode;

/// Why tokens were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomRefusal {
    /// The relay URL is not one the server has a secret for, the room's relay is no longer
    /// configured, or (no relay named) the server has no relay at all.
    #[error("unknown relay")]
    UnknownRelay,
    /// The room is placed at another relay than the one named.
    #[error("the room is at another relay")]
    RoomAtAnotherRelay,
    /// The room is claimed and the asker is not a member.
    #[error("not a member of the room")]
    NotARoomMember,
    /// A member asked for its own token in a room it already holds (a way back in after
    /// leaving needs an invitation).
    #[error("a member's own token comes with its invitation")]
    RejoinNeedsInvite,
    /// No participants, or more than [`MAX_RELAY_TOKENS_PER_REQUEST`].
    #[error("participants per request out of range (1..={MAX_RELAY_TOKENS_PER_REQUEST})")]
    TooManyParticipants,
    /// The room would have more than [`MAX_RELAY_ROOM_MEMBERS`] members.
    #[error("MAX_RELAY_ROOM_MEMBERS ({MAX_RELAY_ROOM_MEMBERS})")]
    RoomMembersFull,
    /// A room or participant name the relay would refuse.
    #[error("invalid room or participant name")]
    InvalidName,
}

impl RoomRefusal {
    /// The wire code.
    pub fn code(self) -> ErrorCode {
        match self {
            RoomRefusal::UnknownRelay => ErrorCode::UnknownRelay,
            RoomRefusal::RoomAtAnotherRelay => ErrorCode::RoomAtAnotherRelay,
            RoomRefusal::NotARoomMember => ErrorCode::NotARoomMember,
            RoomRefusal::RejoinNeedsInvite => ErrorCode::RejoinNeedsInvite,
            RoomRefusal::TooManyParticipants => ErrorCode::TooManyParticipants,
            RoomRefusal::RoomMembersFull => ErrorCode::RoomMembersFull,
            RoomRefusal::InvalidName => ErrorCode::InvalidField,
        }
    }
}

/// A request for tokens.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The asking account.
    pub me: &'a str,
    /// The relay the asker names (`None`: the server places the room).
    pub relay: Option<&'a str>,
    /// The room (a call id).
    pub room: &'a str,
    /// Accounts to mint tokens for.
    pub participants: &'a [String],
    /// Wall-clock milliseconds.
    pub now_ms: u64,
}

/// A room as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    /// The relay's public control URL.
    pub relay: String,
    /// The account that claimed it.
    pub owner: String,
    /// Accounts that may ask for tokens for others (at most [`MAX_RELAY_ROOM_MEMBERS`]).
    pub members: BTreeSet<String>,
    /// When it was last granted from.
    pub last_used_ms: u64,
}

impl RoomRecord {
    /// Whether it has been idle for [`RELAY_ROOM_IDLE_SECS`] at `now_ms` (then it is forgotten).
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_used_ms) > RELAY_ROOM_IDLE_SECS * 1000
    }

    /// Members as stored: names joined by `,` (names are `[a-z0-9._-]`, so unambiguous).
    pub fn members_text(&self) -> String {
        self.members
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Parses [`RoomRecord::members_text`]; `None` if a name is not one `register` accepts.
    pub fn parse_members(text: &str) -> Option<BTreeSet<String>> {
        text.split(',')
            .map(|n| crate::protocol::valid_username(n).then(|| n.to_owned()))
            .collect()
    }
}

/// A room name as the relay accepts it (1..=64 of `[A-Za-z0-9._-]`).
fn valid_room(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= sotto_admission::consts::MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// What needs no stored state: participant count and names, and that a named relay is one of
/// `relays` (the URLs the server has secrets for).
///
/// # Errors
/// The [`RoomRefusal`] that applies.
pub fn check(ask: &Ask<'_>, relays: &[String]) -> Result<(), RoomRefusal> {
    if ask.relay.is_some_and(|r| !relays.iter().any(|k| k == r)) {
        return Err(RoomRefusal::UnknownRelay);
    }
    if ask.participants.is_empty() || ask.participants.len() > MAX_RELAY_TOKENS_PER_REQUEST {
        return Err(RoomRefusal::TooManyParticipants);
    }
    if !valid_room(ask.room)
        || !ask
            .participants
            .iter()
            .all(|p| crate::protocol::valid_username(p))
    {
        return Err(RoomRefusal::InvalidName);
    }
    Ok(())
}

/// FNV-1a over the room and the relay URL: the tie-break between equally loaded relays.
fn tie(room: &str, relay: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.bytes().chain([0u8]).chain(relay.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The rule: the room's record after granting `ask`, given its stored record (`None`: not
/// claimed, or forgotten; an expired record counts as none), the relays the server has secrets
/// for (in configuration order) and `load`, the live rooms each relay holds (asked only when a
/// new room is placed by the server).
///
/// # Errors
/// The [`RoomRefusal`] that applies; the caller then changes nothing.
pub fn decide(
    ask: &Ask<'_>,
    existing: Option<&RoomRecord>,
    relays: &[String],
    load: impl FnOnce() -> HashMap<String, usize>,
) -> Result<RoomRecord, RoomRefusal> {
    check(ask, relays)?;
    let existing = existing.filter(|r| !r.expired(ask.now_ms));
    match existing {
        Some(r) => {
            if !relays.contains(&r.relay) {
                return Err(RoomRefusal::UnknownRelay);
            }
            if ask.relay.is_some_and(|named| named != r.relay) {
                return Err(RoomRefusal::RoomAtAnotherRelay);
            }
            if !r.members.contains(ask.me) {
                return Err(RoomRefusal::NotARoomMember);
            }
            if ask.participants.iter().any(|p| p == ask.me) {
                return Err(RoomRefusal::RejoinNeedsInvite);
            }
            let mut next = r.clone();
            next.members.extend(ask.participants.iter().cloned());
            if next.members.len() > MAX_RELAY_ROOM_MEMBERS {
                return Err(RoomRefusal::RoomMembersFull);
            }
            next.last_used_ms = ask.now_ms;
            Ok(next)
        }
        None => {
            let mut members: BTreeSet<String> = ask.participants.iter().cloned().collect();
            members.insert(ask.me.to_owned());
            if members.len() > MAX_RELAY_ROOM_MEMBERS {
                return Err(RoomRefusal::RoomMembersFull);
            }
            let relay = match ask.relay {
                Some(named) => named.to_owned(),
                None => {
                    let load = load();
                    relays
                        .iter()
                        .min_by_key(|r| (load.get(*r).copied().unwrap_or(0), tie(ask.room, r)))
                        .ok_or(RoomRefusal::UnknownRelay)?
                        .clone()
                }
            };
            Ok(RoomRecord {
                relay,
                owner: ask.me.to_owned(),
                members,
                last_used_ms: ask.now_ms,
            })
        }
    }
}

/// Rooms in memory, by room name ([`crate::store::MemoryStore`], and the call core's tests).
#[derive(Default)]
pub struct RelayRooms {
    rooms: HashMap<String, (RoomRecord, u64)>,
    /// Grants so far (orders grants within one millisecond).
    seq: u64,
}

impl RelayRooms {
    /// Applies [`decide`] to `ask` and stores the result, then keeps the bounds (module docs).
    /// State is untouched on refusal.
    ///
    /// # Errors
    /// The [`RoomRefusal`] that applies.
    pub fn grant(&mut self, ask: &Ask<'_>, relays: &[String]) -> Result<RoomRecord, RoomRefusal> {
        check(ask, relays)?;
        self.expire(ask.now_ms);
        let existing = self.rooms.get(ask.room).map(|(r, _)| r);
        let new = existing.is_none();
        let rooms = &self.rooms;
        let record = decide(ask, existing, relays, || {
            let mut load = HashMap::new();
            for (r, _) in rooms.values() {
                *load.entry(r.relay.clone()).or_insert(0) += 1;
            }
            load
        })?;
        self.seq += 1;
        if new {
            // bounded without refusing anyone: a claim past an account's share forgets that
            // account's least recently used room, a claim past the total the least recent one
            if self
                .rooms
                .values()
                .filter(|(r, _)| r.owner == ask.me)
                .count()
                >= MAX_RELAY_ROOMS_PER_ACCOUNT
            {
                self.forget_least_recent(|r| r.owner == ask.me);
            }
            if self.rooms.len() >= MAX_RELAY_ROOMS {
                self.forget_least_recent(|_| true);
            }
        }
        self.rooms
            .insert(ask.room.to_owned(), (record.clone(), self.seq));
        Ok(record)
    }

    /// Forgets the least recently used room among those `which` selects.
    fn forget_least_recent(&mut self, which: impl Fn(&RoomRecord) -> bool) {
        let oldest = self
            .rooms
            .iter()
            .filter(|(_, (r, _))| which(r))
            .min_by_key(|(_, (r, seq))| (r.last_used_ms, *seq))
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.rooms.remove(&k);
        }
    }

    /// The room's record, if held.
    pub fn get(&self, room: &str) -> Option<&RoomRecord> {
        self.rooms.get(room).map(|(r, _)| r)
    }

    /// Whether account `who` is a member of `room` (for tests).
    pub fn is_member(&self, room: &str, who: &str) -> bool {
        self.get(room).is_some_and(|r| r.members.contains(who))
    }

    /// Forgets rooms idle for [`RELAY_ROOM_IDLE_SECS`].
    fn expire(&mut self, now_ms: u64) {
        self.rooms.retain(|_, (r, _)| !r.expired(now_ms));
    }

    /// Rooms held now.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether no room is held.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const R: &str = "wss://relay.example.org:8443";
    const S: &str = "wss://s.example";

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn relays() -> Vec<String> {
        names(&[R, S])
    }

    /// Grants `who` asked by `me` for `room` at `R`.
    fn at(
        rooms: &mut RelayRooms,
        me: &str,
        room: &str,
        who: &[&str],
        t: u64,
    ) -> Result<RoomRecord, RoomRefusal> {
        let participants = names(who);
        let ask = Ask {
            me,
            relay: Some(R),
            room,
            participants: &participants,
            now_ms: t,
        };
        rooms.grant(&ask, &relays())
    }

    /// Grants with the server placing the room.
    fn placed(
        rooms: &mut RelayRooms,
        me: &str,
        room: &str,
        who: &[&str],
        t: u64,
    ) -> Result<RoomRecord, RoomRefusal> {
        let participants = names(who);
        let ask = Ask {
            me,
            relay: None,
            room,
            participants: &participants,
            now_ms: t,
        };
        rooms.grant(&ask, &relays())
    }

    #[test]
    fn claim_invite_and_refusals() {
        let mut rooms = RelayRooms::default();
        let t = 1_000;
        let participants = names(&["alice"]);
        let unknown = Ask {
            me: "alice",
            relay: Some("wss://nobody"),
            room: "c1",
            participants: &participants,
            now_ms: t,
        };
        assert_eq!(
            rooms.grant(&unknown, &relays()),
            Err(RoomRefusal::UnknownRelay)
        );
        assert!(rooms.is_empty(), "a refusal changes nothing");
        at(&mut rooms, "alice", "c1", &["alice", "bob"], t).unwrap();
        // an outsider cannot take a name in it, not even its own
        assert_eq!(
            at(&mut rooms, "mallory", "c1", &["mallory"], t),
            Err(RoomRefusal::NotARoomMember)
        );
        // a member invites; the invitee is a member and may invite in turn
        at(&mut rooms, "bob", "c1", &["carol"], t).unwrap();
        at(&mut rooms, "carol", "c1", &["dave"], t).unwrap();
        // nobody mints their own way back in
        assert_eq!(
            at(&mut rooms, "bob", "c1", &["bob"], t),
            Err(RoomRefusal::RejoinNeedsInvite)
        );
        // but a re-invitation works
        at(&mut rooms, "alice", "c1", &["bob"], t).unwrap();
        // the room is at R: naming another relay is refused, naming none gets R
        let p = names(&["erin"]);
        let elsewhere = Ask {
            me: "alice",
            relay: Some(S),
            room: "c1",
            participants: &p,
            now_ms: t,
        };
        let before = rooms.get("c1").cloned();
        assert_eq!(
            rooms.grant(&elsewhere, &relays()),
            Err(RoomRefusal::RoomAtAnotherRelay)
        );
        assert_eq!(rooms.get("c1").cloned(), before, "state untouched");
        assert_eq!(
            placed(&mut rooms, "alice", "c1", &["erin"], t)
                .unwrap()
                .relay,
            R
        );
        assert_eq!(
            at(&mut rooms, "alice", "c1", &[], t),
            Err(RoomRefusal::TooManyParticipants)
        );
        assert_eq!(
            at(&mut rooms, "alice", "c/1", &["x"], t),
            Err(RoomRefusal::InvalidName)
        );
        assert_eq!(
            at(&mut rooms, "alice", "c1", &["Bob!"], t),
            Err(RoomRefusal::InvalidName)
        );
        // a relay taken out of the configuration: its rooms get no more tokens
        let only_s = names(&[S]);
        let p = names(&["frank"]);
        let ask = Ask {
            me: "alice",
            relay: None,
            room: "c1",
            participants: &p,
            now_ms: t,
        };
        assert_eq!(rooms.grant(&ask, &only_s), Err(RoomRefusal::UnknownRelay));
        // and a server without relays places nothing
        let ask = Ask { room: "c2", ..ask };
        assert_eq!(rooms.grant(&ask, &[]), Err(RoomRefusal::UnknownRelay));
    }

    #[test]
    fn the_server_places_new_rooms_on_the_least_loaded_relay() {
        let mut rooms = RelayRooms::default();
        let mut per_relay: HashMap<String, usize> = HashMap::new();
        for i in 0..40 {
            let r = placed(
                &mut rooms,
                &format!("u{i}"),
                &format!("r{i}"),
                &["x"],
                1_000,
            )
            .unwrap();
            *per_relay.entry(r.relay).or_default() += 1;
        }
        assert_eq!(per_relay.get(R), Some(&20));
        assert_eq!(per_relay.get(S), Some(&20));
        // three rooms pinned on R: the next three placed rooms go to S
        for i in 0..3 {
            at(&mut rooms, "pin", &format!("p{i}"), &["x"], 1_000).unwrap();
        }
        for i in 0..3 {
            let r = placed(&mut rooms, "v", &format!("q{i}"), &["x"], 1_000).unwrap();
            assert_eq!(r.relay, S, "the less loaded relay");
        }
        // expired rooms do not count as load and are forgotten
        let later = 1_000 + RELAY_ROOM_IDLE_SECS * 1000 + 1;
        placed(&mut rooms, "w", "late", &["x"], later).unwrap();
        assert_eq!(rooms.len(), 1);
    }

    #[test]
    fn the_servers_total_forgets_its_least_recent_room() {
        let mut rooms = RelayRooms::default();
        let t = 1_000;
        for i in 0..MAX_RELAY_ROOMS {
            let owner = format!("u{}", i / MAX_RELAY_ROOMS_PER_ACCOUNT);
            at(&mut rooms, &owner, &format!("r{i}"), &["x"], t + i as u64).unwrap();
        }
        assert_eq!(rooms.len(), MAX_RELAY_ROOMS);
        at(&mut rooms, "late", "late", &["x"], t + 1_000_000).unwrap();
        assert_eq!(rooms.len(), MAX_RELAY_ROOMS);
        assert!(!rooms.is_member("r0", "u0"));
        assert!(rooms.is_member("r1", "u0"));
        assert!(rooms.is_member("late", "late"));
    }

    #[test]
    fn limits_at_and_over() {
        let mut rooms = RelayRooms::default();
        let t = 1_000;
        let at_limit: Vec<String> = (0..MAX_RELAY_TOKENS_PER_REQUEST)
            .map(|i| format!("p{i}"))
            .collect();
        let refs: Vec<&str> = at_limit.iter().map(String::as_str).collect();
        at(&mut rooms, "alice", "big", &refs, t).unwrap();
        let over: Vec<String> = (0..=MAX_RELAY_TOKENS_PER_REQUEST)
            .map(|i| format!("q{i}"))
            .collect();
        let refs: Vec<&str> = over.iter().map(String::as_str).collect();
        assert_eq!(
            at(&mut rooms, "alice", "big2", &refs, t),
            Err(RoomRefusal::TooManyParticipants)
        );
        // the per-account share: `big` is one of alice's rooms already, the oldest
        for i in 1..MAX_RELAY_ROOMS_PER_ACCOUNT {
            at(
                &mut rooms,
                "alice",
                &format!("r{i}"),
                &["bob"],
                t + i as u64,
            )
            .unwrap();
        }
        // bob's room is older than all of alice's but not hers to give up
        at(&mut rooms, "bob", "bobs", &["carol"], t - 1).unwrap();
        let before = rooms.len();
        at(&mut rooms, "alice", "one-more", &["bob"], t + 100).unwrap();
        assert_eq!(rooms.len(), before, "one of alice's rooms was forgotten");
        assert!(!rooms.is_member("big", "alice"), "her least recent");
        assert!(rooms.is_member("r1", "alice"));
        assert!(rooms.is_member("one-more", "alice"));
        assert!(rooms.is_member("bobs", "bob"), "others keep theirs");
        // a forgotten room is claimed anew by whoever asks first (here a member of it)
        at(&mut rooms, "bob", "big", &["p1"], t + 101).unwrap();
        assert!(!rooms.is_member("big", "p2"));
        // rooms expire
        let later = t + 101 + RELAY_ROOM_IDLE_SECS * 1000 + 1;
        at(&mut rooms, "alice", "fresh", &["bob"], later).unwrap();
        assert_eq!(rooms.len(), 1);
        // members per room
        let mut rooms = RelayRooms::default();
        for i in 0..MAX_RELAY_ROOM_MEMBERS - 1 {
            at(&mut rooms, "alice", "m", &[format!("u{i}").as_str()], t).unwrap();
        }
        assert_eq!(
            at(&mut rooms, "alice", "m", &["late"], t),
            Err(RoomRefusal::RoomMembersFull)
        );
    }

    #[test]
    fn members_text_round_trips_and_refuses_bad_names() {
        let r = RoomRecord {
            relay: R.into(),
            owner: "a".into(),
            members: names(&["a", "b.c", "d_e-f"]).into_iter().collect(),
            last_used_ms: 1,
        };
        assert_eq!(
            RoomRecord::parse_members(&r.members_text()),
            Some(r.members)
        );
        assert_eq!(RoomRecord::parse_members("a,,b"), None);
        assert_eq!(RoomRecord::parse_members("a,B"), None);
    }
}
