//! The room registry and its admission rule: who is in which room, which of each member's
//! slots carries whom, and whether one more may join.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use webrtc::peer_connection::PeerConnection;

use sotto_admission::{address_key, RelaySecret, TokenError};

use crate::consts::{MAX_ROOMS, MAX_ROOMS_PER_ADDR, MAX_ROOM_SIZE};
use crate::forward::Inbound;
use crate::leaves::Leaves;
use crate::protocol::{ErrorCode, ServerMsg};
use crate::slot::Slot;

/// One participant in a room.
pub(crate) struct Member {
    /// The slots the relay sends others' media to this member on.
    pub(crate) slots: Vec<Slot>,
    /// Membership events for this member's control channel.
    pub(crate) control: mpsc::UnboundedSender<ServerMsg>,
    pub(crate) pc: Arc<dyn PeerConnection>,
    pub(crate) inbound: Arc<Inbound>,
    /// Tasks reading receivers' RTCP on this member's slot tracks.
    pub(crate) feedback: Vec<tokio::task::JoinHandle<()>>,
}

pub(crate) struct Room {
    pub(crate) members: HashMap<String, Member>,
    /// The address key of the connection whose join created the room.
    opened_from: IpAddr,
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

    /// Admits `me` to `room` (creating it) if [`Rooms::check`] allows: gives `me`'s slots to the
    /// members already there and a free slot of each of theirs to `me`, tells them, and adds the
    /// member `member` builds from its slots. Returns the members already there.
    pub(crate) fn admit(
        &mut self,
        room: &str,
        me: &str,
        ticket: Ticket<'_>,
        mut slots: Vec<Slot>,
        member: impl FnOnce(Vec<Slot>) -> Member,
    ) -> Result<Vec<String>, Refusal> {
        self.check(room, me, ticket)?;
        let r = self.rooms.entry(room.to_string()).or_insert_with(|| Room {
            members: HashMap::new(),
            opened_from: address_key(ticket.from),
        });
        let others: Vec<String> = r.members.keys().cloned().collect();
        for (i, o) in others.iter().enumerate() {
            if let Some(s) = slots.get_mut(i) {
                s.holder = Some(o.clone());
            }
        }
        for m in r.members.values_mut() {
            if let Some(s) = m.slots.iter_mut().find(|s| s.holder.is_none()) {
                s.holder = Some(me.to_string());
            }
            let _ = m.control.send(ServerMsg::MemberJoined {
                participant: me.to_string(),
            });
        }
        r.members.insert(me.to_string(), member(slots));
        Ok(others)
    }

    /// Removes `me` from `room` at `now_ms`: frees the slots others held for it, tells them,
    /// remembers the leave (tokens minted before it no longer admit `me`), and drops the room
    /// once empty. Returns the member, if it was there.
    pub(crate) fn leave(&mut self, room: &str, me: &str, now_ms: u64) -> Option<Member> {
        let r = self.rooms.get_mut(room)?;
        let gone = r.members.remove(me);
        if gone.is_some() {
            self.leaves.record(room, me, now_ms);
        }
        let r = self.rooms.get_mut(room)?;
        for m in r.members.values_mut() {
            for s in m
                .slots
                .iter_mut()
                .filter(|s| s.holder.as_deref() == Some(me))
            {
                s.holder = None;
            }
            let _ = m.control.send(ServerMsg::MemberLeft {
                participant: me.to_string(),
            });
        }
        if r.members.is_empty() {
            self.rooms.remove(room);
        }
        gone
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
