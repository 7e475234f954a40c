//! Who may get relay tokens for which room (sans-IO, in memory).
//!
//! The first account to ask for tokens for a room claims it and becomes a member, with every
//! account it asked tokens for. After that only members may ask, and only for *other* names
//! (they become members): a member's own token comes with the claim or with an invitation
//! (sealed in the inviter's offer), so a member that left the call cannot mint itself a way
//! back in; a re-invitation mints a fresh one. Rooms are random 128-bit call ids known only to
//! members.
//!
//! Bounded without refusing anyone: past [`MAX_RELAY_ROOMS_PER_ACCOUNT`] rooms claimed by one
//! account, its least recently used room is forgotten; past [`MAX_RELAY_ROOMS`] in all, the
//! server's least recently used one. (Refusing instead let anyone with a few accounts keep
//! every claim refused for `RELAY_ROOM_IDLE_SECS`, and a heavy user lost group calls after 16
//! in six hours.) Forgetting a room costs what a restart costs, below, for that room only.
//!
//! Kept in memory only: a restart forgets every room. Calls already running are unaffected
//! (their tokens are with the members, and the relay does not ask the server), but an
//! invitation into such a call after the restart claims the room anew for the inviter (no
//! outsider knows the id to claim it first).

use std::collections::{HashMap, HashSet};

use crate::consts::{
    MAX_RELAY_ROOMS, MAX_RELAY_ROOMS_PER_ACCOUNT, MAX_RELAY_ROOM_MEMBERS,
    MAX_RELAY_TOKENS_PER_REQUEST, RELAY_ROOM_IDLE_SECS,
};
use crate::error::ErrorCode;

/// Why tokens were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomRefusal {
    /// The relay URL is not one the server has a secret for.
    #[error("unknown relay")]
    UnknownRelay,
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
            RoomRefusal::NotARoomMember => ErrorCode::NotARoomMember,
            RoomRefusal::RejoinNeedsInvite => ErrorCode::RejoinNeedsInvite,
            RoomRefusal::TooManyParticipants => ErrorCode::TooManyParticipants,
            RoomRefusal::RoomMembersFull => ErrorCode::RoomMembersFull,
            RoomRefusal::InvalidName => ErrorCode::InvalidField,
        }
    }
}

struct Room {
    owner: String,
    members: HashSet<String>,
    last_used_ms: u64,
    /// When it was last used in grant order (ties of `last_used_ms` within a millisecond).
    last_used_seq: u64,
}

/// Relay rooms by `(relay URL, room)`.
#[derive(Default)]
pub struct RelayRooms {
    rooms: HashMap<(String, String), Room>,
    /// Grants so far.
    seq: u64,
}

/// A room name as the relay accepts it (1..=64 of `[A-Za-z0-9._-]`).
fn valid_room(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= sotto_admission::consts::MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl RelayRooms {
    /// The membership rule: may account `me` have tokens for `participants` in `room` at
    /// `relay` now (`known_relay`: the server has its secret)? On success the participants are
    /// members. State is untouched on refusal.
    ///
    /// # Errors
    /// The [`RoomRefusal`] that applies.
    pub fn grant(
        &mut self,
        me: &str,
        relay: &str,
        known_relay: bool,
        room: &str,
        participants: &[String],
        now_ms: u64,
    ) -> Result<(), RoomRefusal> {
        if !known_relay {
            return Err(RoomRefusal::UnknownRelay);
        }
        if participants.is_empty() || participants.len() > MAX_RELAY_TOKENS_PER_REQUEST {
            return Err(RoomRefusal::TooManyParticipants);
        }
        if !valid_room(room)
            || !participants
                .iter()
                .all(|p| crate::protocol::valid_username(p))
        {
            return Err(RoomRefusal::InvalidName);
        }
        self.expire(now_ms);
        self.seq += 1;
        let seq = self.seq;
        let key = (relay.to_owned(), room.to_owned());
        match self.rooms.get_mut(&key) {
            Some(r) => {
                if !r.members.contains(me) {
                    return Err(RoomRefusal::NotARoomMember);
                }
                if participants.iter().any(|p| p == me) {
                    return Err(RoomRefusal::RejoinNeedsInvite);
                }
                let new = participants
                    .iter()
                    .filter(|p| !r.members.contains(*p))
                    .collect::<HashSet<_>>()
                    .len();
                if r.members.len() + new > MAX_RELAY_ROOM_MEMBERS {
                    return Err(RoomRefusal::RoomMembersFull);
                }
                r.members.extend(participants.iter().cloned());
                r.last_used_ms = now_ms;
                r.last_used_seq = seq;
            }
            None => {
                let mut members: HashSet<String> = participants.iter().cloned().collect();
                members.insert(me.to_owned());
                if members.len() > MAX_RELAY_ROOM_MEMBERS {
                    return Err(RoomRefusal::RoomMembersFull);
                }
                // bounded without refusing anyone: a claim past an account's share forgets
                // that account's least recently used room, a claim past the total the
                // server's (see the module docs for what forgetting costs)
                if self.rooms.values().filter(|r| r.owner == me).count()
                    >= MAX_RELAY_ROOMS_PER_ACCOUNT
                {
                    self.forget_least_recent(|r| r.owner == me);
                }
                if self.rooms.len() >= MAX_RELAY_ROOMS {
                    self.forget_least_recent(|_| true);
                }
                self.rooms.insert(
                    key,
                    Room {
                        owner: me.to_owned(),
                        members,
                        last_used_ms: now_ms,
                        last_used_seq: seq,
                    },
                );
            }
        }
        Ok(())
    }

    /// Forgets the least recently used room among those `which` selects.
    fn forget_least_recent(&mut self, which: impl Fn(&Room) -> bool) {
        let oldest = self
            .rooms
            .iter()
            .filter(|(_, r)| which(r))
            .min_by_key(|(_, r)| (r.last_used_ms, r.last_used_seq))
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.rooms.remove(&k);
        }
    }

    /// Whether account `who` is a member of `room` at `relay` (for tests).
    pub fn is_member(&self, relay: &str, room: &str, who: &str) -> bool {
        self.rooms
            .get(&(relay.to_owned(), room.to_owned()))
            .is_some_and(|r| r.members.contains(who))
    }

    /// Forgets rooms idle for [`RELAY_ROOM_IDLE_SECS`].
    fn expire(&mut self, now_ms: u64) {
        let idle = RELAY_ROOM_IDLE_SECS * 1000;
        self.rooms
            .retain(|_, r| now_ms.saturating_sub(r.last_used_ms) <= idle);
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

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn claim_invite_and_refusals() {
        let mut rooms = RelayRooms::default();
        let t = 1_000;
        assert_eq!(
            rooms.grant("alice", R, false, "c1", &names(&["alice"]), t),
            Err(RoomRefusal::UnknownRelay)
        );
        rooms
            .grant("alice", R, true, "c1", &names(&["alice", "bob"]), t)
            .unwrap();
        // an outsider cannot take a name in it, not even its own
        assert_eq!(
            rooms.grant("mallory", R, true, "c1", &names(&["mallory"]), t),
            Err(RoomRefusal::NotARoomMember)
        );
        // a member invites; the invitee is a member and may invite in turn
        rooms
            .grant("bob", R, true, "c1", &names(&["carol"]), t)
            .unwrap();
        rooms
            .grant("carol", R, true, "c1", &names(&["dave"]), t)
            .unwrap();
        // nobody mints their own way back in
        assert_eq!(
            rooms.grant("bob", R, true, "c1", &names(&["bob"]), t),
            Err(RoomRefusal::RejoinNeedsInvite)
        );
        // but a re-invitation works
        rooms
            .grant("alice", R, true, "c1", &names(&["bob"]), t)
            .unwrap();
        // the same room id at another relay is another room
        rooms
            .grant(
                "mallory",
                "wss://other",
                true,
                "c1",
                &names(&["mallory"]),
                t,
            )
            .unwrap();
        assert_eq!(
            rooms.grant("alice", R, true, "c1", &[], t),
            Err(RoomRefusal::TooManyParticipants)
        );
        assert_eq!(
            rooms.grant("alice", R, true, "c/1", &names(&["x"]), t),
            Err(RoomRefusal::InvalidName)
        );
        assert_eq!(
            rooms.grant("alice", R, true, "c1", &names(&["Bob!"]), t),
            Err(RoomRefusal::InvalidName)
        );
    }

    #[test]
    fn the_servers_total_forgets_its_least_recent_room() {
        let mut rooms = RelayRooms::default();
        let t = 1_000;
        for i in 0..MAX_RELAY_ROOMS {
            let owner = format!("u{}", i / MAX_RELAY_ROOMS_PER_ACCOUNT);
            rooms
                .grant(
                    &owner,
                    R,
                    true,
                    &format!("r{i}"),
                    &names(&["x"]),
                    t + i as u64,
                )
                .unwrap();
        }
        assert_eq!(rooms.len(), MAX_RELAY_ROOMS);
        rooms
            .grant("late", R, true, "late", &names(&["x"]), t + 1_000_000)
            .unwrap();
        assert_eq!(rooms.len(), MAX_RELAY_ROOMS);
        assert!(!rooms.is_member(R, "r0", "u0"));
        assert!(rooms.is_member(R, "r1", "u0"));
        assert!(rooms.is_member(R, "late", "late"));
    }

    #[test]
    fn limits_at_and_over() {
        let mut rooms = RelayRooms::default();
        let t = 1_000;
        let at: Vec<String> = (0..MAX_RELAY_TOKENS_PER_REQUEST)
            .map(|i| format!("p{i}"))
            .collect();
        rooms.grant("alice", R, true, "big", &at, t).unwrap();
        let over: Vec<String> = (0..=MAX_RELAY_TOKENS_PER_REQUEST)
            .map(|i| format!("q{i}"))
            .collect();
        assert_eq!(
            rooms.grant("alice", R, true, "big2", &over, t),
            Err(RoomRefusal::TooManyParticipants)
        );
        // the per-account share: `big` is one of alice's rooms already, the oldest
        for i in 1..MAX_RELAY_ROOMS_PER_ACCOUNT {
            let t = t + i as u64;
            rooms
                .grant("alice", R, true, &format!("r{i}"), &names(&["bob"]), t)
                .unwrap();
        }
        // bob's room is older than all of alice's but not hers to give up
        rooms
            .grant("bob", R, true, "bobs", &names(&["carol"]), t - 1)
            .unwrap();
        let before = rooms.len();
        rooms
            .grant("alice", R, true, "one-more", &names(&["bob"]), t + 100)
            .unwrap();
        assert_eq!(rooms.len(), before, "one of alice's rooms was forgotten");
        assert!(!rooms.is_member(R, "big", "alice"), "her least recent");
        assert!(rooms.is_member(R, "r1", "alice"));
        assert!(rooms.is_member(R, "one-more", "alice"));
        assert!(rooms.is_member(R, "bobs", "bob"), "others keep theirs");
        // a forgotten room is claimed anew by whoever asks first (here a member of it)
        rooms
            .grant("bob", R, true, "big", &names(&["p1"]), t + 101)
            .unwrap();
        assert!(!rooms.is_member(R, "big", "p2"));
        // rooms expire
        let later = t + 101 + RELAY_ROOM_IDLE_SECS * 1000 + 1;
        rooms
            .grant("alice", R, true, "fresh", &names(&["bob"]), later)
            .unwrap();
        assert_eq!(rooms.len(), 1);
        // members per room
        let mut rooms = RelayRooms::default();
        for i in 0..MAX_RELAY_ROOM_MEMBERS - 1 {
            rooms
                .grant("alice", R, true, "m", &names(&[&format!("u{i}")]), t)
                .unwrap();
        }
        assert_eq!(
            rooms.grant("alice", R, true, "m", &names(&["late"]), t),
            Err(RoomRefusal::RoomMembersFull)
        );
    }
}
