//! The room registry and its admission rule: who is in which room, which of each member's
//! slots carries whom (the room's speaker places, [`crate::speakers`]), and whether one more may
//! join.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use webrtc::peer_connection::PeerConnection;

use sotto_admission::{address_key, RelaySecret, TokenError};

use crate::consts::{AUDIO_SLOTS, MAX_ROOMS, MAX_ROOMS_PER_ADDR, MAX_ROOM_SIZE, VIDEO_SLOTS};
use crate::forward::Inbound;
use crate::leaves::Leaves;
use crate::protocol::{ErrorCode, ServerMsg};
use crate::slot::Slot;
use crate::speakers::{for_receiver, Ranking, Speakers};

/// One participant in a room.
pub(crate) struct Member {
    /// The slots the relay sends others' audio to this member on ([`AUDIO_SLOTS`]).
    pub(crate) audio: Vec<Slot>,
    /// The slots the relay sends others' video to this member on ([`VIDEO_SLOTS`]).
    pub(crate) video: Vec<Slot>,
    /// Membership events for this member's control channel.
    pub(crate) control: mpsc::UnboundedSender<ServerMsg>,
    pub(crate) pc: Arc<dyn PeerConnection>,
    pub(crate) inbound: Arc<Inbound>,
    /// Tasks reading receivers' RTCP on this member's video slot tracks.
    pub(crate) feedback: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Member {
    /// A member that leaves (or is refused after its connection was built) stops reading
    /// feedback.
    fn drop(&mut self) {
        self.feedback.iter().for_each(|t| t.abort());
    }
}

pub(crate) struct Room {
    pub(crate) members: HashMap<String, Member>,
    /// The address key of the connection whose join created the room.
    opened_from: IpAddr,
    /// Who is speaking: which members' media the slots carry.
    pub(crate) speakers: Speakers,
    /// When the ranking was last applied (on audio packets at most every
    /// [`crate::consts::RANK_INTERVAL`]).
    pub(crate) ranked_at: Option<Instant>,
}

impl Room {
    /// Applies the speaker ranking at `now` to every member's slots, if it changed (or
    /// anyway, with `always`: a newcomer's slots). Returns the members given a video slot they
    /// did not have: each is to be asked for a key frame.
    pub(crate) fn reassign(&mut self, now: Instant, always: bool) -> Vec<Arc<Inbound>> {
        self.ranked_at = Some(now);
        let ranking = match self.speakers.poll(now) {
            Some(r) => r,
            None if always => self.speakers.ranking(),
            None => return Vec::new(),
        };
        let mut new_video = Vec::new();
        for (name, m) in self.members.iter_mut() {
            new_video.extend(assign(&mut m.audio, &ranking.audio, name, now));
            new_video.extend(assign(&mut m.video, &ranking.video, name, now));
        }
        new_video.sort();
        new_video.dedup();
        new_video
            .iter()
            .filter_map(|n| self.members.get(n).map(|m| m.inbound.clone()))
            .collect()
    }

    /// The current places.
    pub(crate) fn ranking(&self) -> Ranking {
        self.speakers.ranking()
    }
}

/// Gives receiver `me`'s `slots` the `places` not its own, keeping every holder that stays on
/// the slot it has; returns the members given a slot they were not assigned before.
fn assign(slots: &mut [Slot], places: &[String], me: &str, now: Instant) -> Vec<String> {
    let want = for_receiver(places, me, slots.len());
    let mut newcomers: Vec<&String> = want
        .iter()
        .filter(|w| slots.iter().all(|s| s.feed.assigned() != Some(w.as_str())))
        .collect();
    let mut keyframe = Vec::new();
    for s in slots.iter_mut() {
        let keep = s
            .feed
            .assigned()
            .is_some_and(|a| want.iter().any(|w| w == a));
        if keep {
            continue;
        }
        let next = if newcomers.is_empty() {
            None
        } else {
            Some(newcomers.remove(0))
        };
        if s.feed.assign(next.map(String::as_str), now) {
            keyframe.extend(next.cloned());
        }
    }
    keyframe
}

/// Why a participant may not join (the `message` of the relay's error is its `Display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// Someone in the room already has the name.
    #[error("participant name in use")]
    NameTaken,
    /// The room has [`MAX_ROOM_SIZE`] members.
    #[error("MAX_ROOM_SIZE ({MAX_ROOM_SIZE})")]
    RoomFull,
    /// The room is new and there are [`MAX_ROOMS`] already.
    #[error("MAX_ROOMS ({MAX_ROOMS})")]
    TooManyRooms,
    /// The room is new and [`MAX_ROOMS_PER_ADDR`] rooms opened from the joiner's address are
    /// live.
    #[error("MAX_ROOMS_PER_ADDR ({MAX_ROOMS_PER_ADDR})")]
    TooManyRoomsFromAddress,
    /// The join's token does not admit it.
    #[error(transparent)]
    Token(TokenError),
}

impl Refusal {
    /// The wire code.
    pub(crate) fn code(self) -> ErrorCode {
        match self {
            Refusal::NameTaken => ErrorCode::NameTaken,
            Refusal::RoomFull => ErrorCode::RoomFull,
            Refusal::TooManyRooms => ErrorCode::TooManyRooms,
            Refusal::TooManyRoomsFromAddress => ErrorCode::TooManyRoomsFromAddress,
            Refusal::Token(e) => ErrorCode::from(e),
        }
    }

    /// The relay's error message for it.
    pub(crate) fn to_msg(self) -> ServerMsg {
        ServerMsg::Error {
            code: self.code(),
            message: self.to_string(),
        }
    }
}

/// A join's credentials: its token, checked against the relay's secret and public URL at the
/// relay's clock, and the address it comes from.
#[derive(Clone, Copy)]
pub(crate) struct Ticket<'a> {
    pub(crate) from: IpAddr,
    pub(crate) secret: &'a RelaySecret,
    pub(crate) relay: &'a str,
    pub(crate) token: Option<&'a str>,
    pub(crate) now_ms: u64,
}

/// Every room of a relay, and who left which when.
#[derive(Default)]
pub(crate) struct Rooms {
    rooms: HashMap<String, Room>,
    leaves: Leaves,
}

impl Rooms {
    /// Live rooms opened from `ip`'s address key.
    fn opened_from(&self, ip: IpAddr) -> usize {
        let key = address_key(ip);
        self.rooms.values().filter(|r| r.opened_from == key).count()
    }

    /// The admission rule: may `me` join `room` now with `ticket`? The token first
    /// ([`sotto_admission::verify`], with the time `me` last left `room`), then room and
    /// name.
    pub(crate) fn check(&self, room: &str, me: &str, ticket: Ticket<'_>) -> Result<(), Refusal> {
        let expected = sotto_admission::Expected {
            relay: ticket.relay,
            room,
            participant: me,
            now_ms: ticket.now_ms,
            left_at_ms: self.leaves.left_at(room, me),
        };
        sotto_admission::verify(ticket.secret, ticket.token, &expected).map_err(Refusal::Token)?;
        match self.rooms.get(room) {
            Some(r) if r.members.contains_key(me) => Err(Refusal::NameTaken),
            Some(r) if r.members.len() >= MAX_ROOM_SIZE => Err(Refusal::RoomFull),
            None if self.rooms.len() >= MAX_ROOMS => Err(Refusal::TooManyRooms),
            None if self.opened_from(ticket.from) >= MAX_ROOMS_PER_ADDR => {
                Err(Refusal::TooManyRoomsFromAddress)
            }
            _ => Ok(()),
        }
    }

    /// Admits `me` to `room` (creating it) if [`Rooms::check`] allows: tells the members
    /// already there, adds the member `member` builds, and gives everyone's slots to the room's
    /// speaker places at `now` (a newcomer takes a free place: in a small room everyone has
    /// one). Returns the members already there, and the members to ask for a key frame (given
    /// a video slot they did not have).
    pub(crate) fn admit(
        &mut self,
        room: &str,
        me: &str,
        ticket: Ticket<'_>,
        now: Instant,
        member: Member,
    ) -> Result<(Vec<String>, Vec<Arc<Inbound>>), Refusal> {
        self.check(room, me, ticket)?;
        let r = self.rooms.entry(room.to_string()).or_insert_with(|| Room {
            members: HashMap::new(),
            opened_from: address_key(ticket.from),
            speakers: Speakers::new(AUDIO_SLOTS + 1, VIDEO_SLOTS + 1),
            ranked_at: None,
        });
        let others: Vec<String> = r.members.keys().cloned().collect();
        for m in r.members.values_mut() {
            let _ = m.control.send(ServerMsg::MemberJoined {
                participant: me.to_string(),
            });
        }
        r.members.insert(me.to_string(), member);
        r.speakers.join(me);
        let keyframes = r.reassign(now, true);
        Ok((others, keyframes))
    }

    /// Removes `me` from `room` at `now_ms` (`now` on the relay's monotonic clock): frees its
    /// places (others' slots that carried it go to whoever takes them), tells the others,
    /// remembers the leave (tokens minted before it no longer admit `me`), and drops the room
    /// once empty. Returns the member, if it was there, and the members to ask for a key frame.
    pub(crate) fn leave(
        &mut self,
        room: &str,
        me: &str,
        now_ms: u64,
        now: Instant,
    ) -> (Option<Member>, Vec<Arc<Inbound>>) {
        let Some(r) = self.rooms.get_mut(room) else {
            return (None, Vec::new());
        };
        let gone = r.members.remove(me);
        r.speakers.leave(me);
        // the leaver's state on every slot goes with it (a rejoin is a new holder)
        for m in r.members.values_mut() {
            for s in m.audio.iter_mut().chain(m.video.iter_mut()) {
                s.feed.forget(me);
            }
        }
        for m in r.members.values_mut() {
            let _ = m.control.send(ServerMsg::MemberLeft {
                participant: me.to_string(),
            });
        }
        let keyframes = r.reassign(now, false);
        if r.members.is_empty() {
            self.rooms.remove(room);
        }
        if gone.is_some() {
            self.leaves.record(room, me, now_ms);
        }
        (gone, keyframes)
    }

    pub(crate) fn get(&self, room: &str) -> Option<&Room> {
        self.rooms.get(room)
    }

    pub(crate) fn get_mut(&mut self, room: &str) -> Option<&mut Room> {
        self.rooms.get_mut(room)
    }

    /// Names of `room`'s members, sorted.
    pub(crate) fn names(&self, room: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .rooms
            .get(room)
            .map(|r| r.members.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Every member of every room.
    pub(crate) fn all_members(&self) -> impl Iterator<Item = &Member> {
        self.rooms.values().flat_map(|r| r.members.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Kind;

    fn v(x: &[&str]) -> Vec<String> {
        x.iter().map(|s| s.to_string()).collect()
    }

    fn carried(slots: &[Slot]) -> Vec<Option<&str>> {
        slots.iter().map(|s| s.feed.assigned()).collect()
    }

    #[test]
    fn a_changed_place_moves_only_the_slot_that_carried_it() {
        let now = Instant::now();
        let mut slots: Vec<Slot> = (0..3).map(|i| Slot::new(Kind::Video, i)).collect();
        // receiver b: the places other than its own, each new video holder asked for a key frame
        let asked = assign(&mut slots, &v(&["a", "b", "c", "d"]), "b", now);
        assert_eq!(asked, v(&["a", "c", "d"]));
        assert_eq!(carried(&slots), [Some("a"), Some("c"), Some("d")]);
        // c's place goes to e: only c's slot changes
        let asked = assign(&mut slots, &v(&["a", "b", "e", "d"]), "b", now);
        assert_eq!(asked, v(&["e"]));
        assert_eq!(carried(&slots), [Some("a"), Some("e"), Some("d")]);
        // a smaller room: the slot left over carries no one
        let asked = assign(&mut slots, &v(&["d", "b"]), "b", now);
        assert!(asked.is_empty());
        assert_eq!(carried(&slots), [None, None, Some("d")]);
        // nothing changed: nothing to do
        assert!(assign(&mut slots, &v(&["d", "b"]), "b", now).is_empty());
    }
}
