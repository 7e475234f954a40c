//! Group calls through a relay, in the core: invitations, `add`s, the relay's admissions and
//! departures, and who gets our key when. Every key decision is the schedule's
//! ([`crate::group::GroupKeys`]); this file only decides *when* to ask it.

use std::time::Instant;

use sotto_admission::RelayToken;

use super::call::{IdentityPurpose, MediaPhase, TokenPurpose};
use super::types::{Action, AddRefusal, CallError, Dropped, MemberChange, Notice, RoomEvent};
use super::{sender_id_clash, CallCore, RelayChoice};
use crate::consts::{MAX_GROUP_MEMBERS, MAX_PRESENT};
use crate::messages::{valid_member_name, Body};
use crate::state::{Input, State};

impl CallCore {
    /// Invites `user` into our relay call: checks, then the identity check (answer:
    /// [`CallCore::continue_invite`]).
    pub(super) fn invite(&mut self, user: String) {
        let me = self.cfg.me.clone();
        let Some(c) = self.call.as_mut() else {
            return self.notify(Notice::Error(CallError::NoCall));
        };
        if c.machine.state() != &State::Connected || !c.via_relay() {
            return self.notify(Notice::Error(CallError::InviteNeedsRelayCall));
        }
        if !valid_member_name(&user) {
            return self.notify(Notice::Error(CallError::NotAnAccountName));
        }
        if user == me || c.is_member(&user) || c.members.len() >= MAX_GROUP_MEMBERS {
            return self.notify(Notice::Error(CallError::CannotAdd(user)));
        }
        if let Some(other) = sender_id_clash(&user, &me, &c.members) {
            let other = other.to_owned();
            return self.notify(Notice::Error(CallError::SenderIdClash { user, other }));
        }
        if c.awaiting_identity.is_some() || c.awaiting_tokens.is_some() {
            return self.notify(Notice::Error(CallError::CannotAdd(user)));
        }
        c.awaiting_identity = Some(IdentityPurpose::Invite(user.clone()));
        let call = c.id;
        self.actions.push_back(Action::CheckIdentity { call, user });
    }

    /// The invitee's identity is as pinned: ask the signaling server for the invitee's relay
    /// token (answer: [`CallCore::finish_invite`]).
    pub(super) fn continue_invite(&mut self, user: String, _now: Instant) {
        let Some(c) = self.call.as_mut() else { return };
        if c.machine.state() != &State::Connected
            || c.is_member(&user)
            || c.members.len() >= MAX_GROUP_MEMBERS
        {
            return self.notify(Notice::Error(CallError::CannotAdd(user)));
        }
        // connected through a relay: its URL is known (placed or named)
        let Some(url) = c
            .relay
            .as_ref()
            .and_then(RelayChoice::url)
            .map(str::to_owned)
        else {
            return self.notify(Notice::Error(CallError::InviteNeedsRelayCall));
        };
        c.awaiting_tokens = Some(TokenPurpose::Invite(user.clone()));
        let (call, room) = (c.id, c.id.to_string());
        self.actions.push_back(Action::RequestRelayTokens {
            call,
            url: Some(url),
            room,
            participants: vec![user],
        });
    }

    /// The server gave the invitee's token: the offer (no key: members give theirs once the
    /// relay admits the invitee) with the token, an `add` to every member, and our key when
    /// admitted.
    pub(super) fn finish_invite(&mut self, user: String, token: Option<RelayToken>, now: Instant) {
        let Some(c) = self.call.as_mut() else { return };
        if c.machine.state() != &State::Connected
            || c.is_member(&user)
            || c.members.len() >= MAX_GROUP_MEMBERS
        {
            return self.notify(Notice::Error(CallError::CannotAdd(user)));
        }
        let Some(token) = token else {
            return self.notify(Notice::Error(CallError::NoRelayToken(user)));
        };
        let forget = match c.keys.admit(&user) {
            Ok(f) => f,
            Err(e) => return self.notify(Notice::Error(CallError::Keys(e))),
        };
        self.apply_keys(forget);
        let Some(c) = self.call.as_mut() else { return };
        let members = c.members.clone();
        let relay = c
            .relay
            .as_ref()
            .and_then(RelayChoice::url)
            .map(str::to_owned);
        // The offer first: the server delivers to the invitee in the order envelopes were
        // stored, so the members' keys (sent after they see `add`) arrive after the offer.
        self.send(
            &user,
            Body::Offer {
                sdp: String::new(),
                video: true,
                media_key: None,
                relay,
                members: members.clone(),
                relay_token: Some(token),
            },
        );
        for m in &members {
            self.send(m, Body::Add { user: user.clone() });
        }
        if let Some(c) = self.call.as_mut() {
            c.members.push(user.clone());
        }
        self.notify(Notice::Member(MemberChange::Invited(user.clone())));
        self.give_key(&user, now);
    }

    /// Member `from` added `user`. We pass the `add` on to every other member (`from` may not
    /// know them all: two members inviting at once), take `user` on the roster, install any key
    /// `user` sent before this arrived, and give `user` our key if the relay already admitted it.
    pub(super) fn member_added(&mut self, user: &str, from: &str, now: Instant) {
        let me = self.cfg.me.clone();
        let Some(c) = self.call.as_mut() else { return };
        if user == me || c.is_member(user) {
            return;
        }
        let refuse = |why| {
            Notice::Dropped(Dropped::AddRefused {
                user: user.to_owned(),
                why,
            })
        };
        if c.members.len() >= MAX_GROUP_MEMBERS {
            return self.notify(refuse(AddRefusal::GroupFull));
        }
        if sender_id_clash(user, &me, &c.members).is_some() {
            return self.notify(refuse(AddRefusal::SenderIdClash));
        }
        let forget = match c.keys.admit(user) {
            Ok(f) => f,
            Err(e) => return self.notify(Notice::Error(CallError::Keys(e))),
        };
        self.apply_keys(forget);
        let Some(c) = self.call.as_mut() else { return };
        c.members.push(user.to_owned());
        let others: Vec<String> = c
            .members
            .iter()
            .filter(|m| *m != user && *m != from)
            .cloned()
            .collect();
        let (early, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut c.stranger_keys)
            .into_iter()
            .partition(|(u, _)| u == user);
        c.stranger_keys = rest;
        for o in others {
            self.send(
                &o,
                Body::Add {
                    user: user.to_owned(),
                },
            );
        }
        for (u, k) in early {
            self.member_key(&u, k, now);
        }
        self.notify(Notice::Member(MemberChange::Added {
            user: user.to_owned(),
            by: from.to_owned(),
        }));
        self.give_key(user, now);
    }

    /// Gives `user` our key, once: when `user` is a member *and* the relay has it in the room.
    /// Once we have encrypted anything, the schedule ratchets first (RFC 9605 §5.1), so `user`
    /// cannot open what we sent before it was given the key; before that, the current step
    /// (it opens nothing anyone else did not see). The relay only decides *when* (presence),
    /// never *which* key: a name the relay lists, or someone who lingered in the room after
    /// leaving and is added again, still gets a ratcheted step. Pending rotations are given too
    /// (nothing was encrypted under them yet).
    pub(super) fn give_key(&mut self, user: &str, now: Instant) {
        let Some(c) = self.call.as_mut() else { return };
        if c.keys.holds_our_key(user)
            || !c.present.contains(user)
            || !c.is_member(user)
            || c.media != MediaPhase::Ready
        {
            return;
        }
        let late = c.sending;
        let outs = if late {
            c.keys.member_joined(user, now)
        } else {
            c.keys.member_present(user)
        };
        match outs {
            Ok(outs) => self.apply_keys(outs),
            Err(e) => return self.notify(Notice::Error(CallError::Keys(e))),
        }
        self.notify(Notice::Member(MemberChange::GotOurKey {
            user: user.to_owned(),
            ratcheted: late,
        }));
    }

    /// What the relay says about the room.
    pub(super) fn on_room(&mut self, ev: RoomEvent, now: Instant) {
        let me = self.cfg.me.clone();
        let Some(c) = self.call.as_mut() else { return };
        match ev {
            RoomEvent::MemberJoined(p) if p != me && !c.machine.is_ended() => {
                // names the relay announces are bounded: only members are kept
                if c.is_member(&p) || c.present.len() < MAX_PRESENT {
                    c.present.insert(p.clone());
                }
                self.give_key(&p, now);
            }
            // The relay forwards nothing more from or to them: rotate away from any key they
            // hold even if their own hangup never reaches us (safe to believe: the worst a
            // lying relay gets is a needless rotation).
            RoomEvent::MemberLeft(p) => self.member_left(&p, now),
            RoomEvent::Closed => c.room = super::call::RoomPhase::Quiet,
            RoomEvent::MemberJoined(_) => {}
        }
    }

    /// `who` left a group call: the schedule rotates away from any key of ours they hold (a
    /// second leave while a rotation is pending draws another key, which they never get) and
    /// forgets their keys after the retention. No one left: the call ends.
    pub(super) fn member_left(&mut self, who: &str, now: Instant) {
        let Some(c) = self.call.as_mut() else { return };
        c.present.remove(who);
        if !c.is_member(who) || c.machine.is_ended() {
            return;
        }
        c.members.retain(|m| m != who);
        c.stranger_keys.retain(|(u, _)| u != who);
        // invited back later, both directions start a new sequence
        c.send_seq.remove(who);
        c.inbound.remove(who);
        if c.peer == who {
            if let Some(m) = c.members.first() {
                c.peer = m.clone();
                c.device = 1;
            }
        }
        let held = c.keys.holds_our_key(who);
        let outs = c.keys.member_left(who, now, &mut self.rng);
        let no_one_left = c.members.is_empty();
        match outs {
            Ok(outs) => self.apply_keys(outs),
            Err(e) => self.notify(Notice::Error(CallError::Keys(e))),
        }
        self.notify(Notice::Member(MemberChange::Left {
            user: who.to_owned(),
            rotated: held && !no_one_left,
        }));
        if no_one_left {
            self.input(Input::HangupReceived, now);
        }
    }
}
