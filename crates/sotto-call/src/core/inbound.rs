//! Incoming call messages, in the core: the offer verdict (ring, busy, glare), the roster
//! check, per-sender reordering, and what each message means for the call and its keys.

use std::time::Instant;

use sotto_frame::KeyMaterial;

use super::call::{Call, Inbound, RemoteOffer};
use super::types::{CallError, Dropped, MediaAction, Notice};
use super::{sender_id_for, Action, CallCore};
use crate::consts::{MAX_GROUP_MEMBERS, MAX_HELD_CANDIDATES, MAX_REORDER, REORDER_GAP_WAIT};
use crate::group::GroupError;
use crate::messages::{valid_member_name, Body, CallId, CallMessage, Reorder, ReorderError};
use crate::state::{offer_verdict, Input, OfferVerdict, Role, State};

impl CallCore {
    pub(super) fn on_message(&mut self, from: &str, device: u32, msg: CallMessage, now: Instant) {
        let Ok(call_id) = msg.call_id() else { return };
        if let Body::Offer { .. } = &msg.body {
            return self.on_offer(from, device, call_id, msg, now);
        }
        let Some(c) = self.call.as_mut().filter(|c| c.id == call_id) else {
            let kind = msg.body.kind();
            return self.notify(Notice::Dropped(Dropped::OtherCall { kind }));
        };
        // a call we left takes no more messages (no rotations, no forwarded adds, no keys)
        if c.machine.is_ended() {
            let kind = msg.body.kind();
            return self.notify(Notice::Dropped(Dropped::OtherCall { kind }));
        }
        let known = (c.peer == from && c.device == device) || c.is_member(from);
        let stranger_ok = c.via_relay()
            && matches!(msg.body, Body::Answer { .. } | Body::MediaKey { .. })
            && c.inbound.len() < MAX_GROUP_MEMBERS * 2;
        if !(known || stranger_ok || c.inbound.contains_key(from)) {
            let kind = msg.body.kind();
            return self.notify(Notice::Dropped(Dropped::OtherCall { kind }));
        }
        let inb = c.inbound.entry(from.to_owned()).or_insert_with(|| Inbound {
            reorder: Reorder::starting_at(call_id, 0),
            gap_since: None,
            ahead_since: None,
        });
        // more than MAX_REORDER messages lost in a row (sends that failed): after the gap wait,
        // start again from what arrives, rather than stall the sender for the call
        let next = inb.reorder.next_seq();
        if msg.seq.saturating_sub(next) >= MAX_REORDER
            && inb.ahead_since.is_some_and(|t| t + REORDER_GAP_WAIT <= now)
        {
            inb.reorder = Reorder::starting_at(call_id, msg.seq);
            inb.gap_since = None;
            inb.ahead_since = None;
            self.actions
                .push_back(Action::Notify(Notice::Dropped(Dropped::GapSkipped {
                    from: from.to_owned(),
                    missing: msg.seq.saturating_sub(next),
                })));
        }
        let released = match inb.reorder.push(msg) {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, ReorderError::TooFarAhead { .. }) && inb.ahead_since.is_none() {
                    inb.ahead_since = Some(now);
                }
                return self.notify(Notice::Dropped(Dropped::OutOfOrder(e)));
            }
        };
        inb.gap_since = match (inb.reorder.held() > 0, inb.gap_since) {
            (false, _) => None,
            (true, Some(t)) if released.is_empty() => Some(t),
            (true, _) => Some(now),
        };
        for m in released {
            self.dispatch(from, m, now);
        }
    }

    /// One in-order message of the current call from `from`.
    pub(super) fn dispatch(&mut self, from: &str, msg: CallMessage, now: Instant) {
        let Some(c) = self.call.as_mut() else { return };
        let from_peer = c.peer == from;
        let group = c.members.len() > 1;
        let member = c.is_member(from);
        let mut msg = msg;
        let body = std::mem::replace(&mut msg.body, Body::Ringing);
        match body {
            Body::Add { user } if member && c.via_relay() => self.member_added(&user, from, now),
            Body::Add { .. } => {}
            Body::Hangup { .. } if group => self.member_left(from, now),
            Body::Answer { media_key, .. } | Body::MediaKey { media_key } if !from_peer => {
                self.member_key(from, media_key, now)
            }
            _ if !from_peer => {}
            Body::Ringing => self.input(Input::RingingReceived, now),
            Body::Answer { sdp, media_key } => {
                if c.role() != Role::Caller || c.machine.state() != &State::Outgoing {
                    // an invitee's answer reaching us after it became our peer (the member we
                    // dialled left): its key, nothing more
                    return self.member_key(from, media_key, now);
                }
                if let Err(e) = self.take_key(from, &media_key, now) {
                    return self.fail(CallError::PeerKey(e), now);
                }
                let Some(c) = self.call.as_mut() else { return };
                if !c.via_relay() {
                    self.media(MediaAction::ApplyAnswer { sdp });
                }
                self.input(Input::AnswerReceived, now);
            }
            Body::Candidate { candidate } => {
                if c.remote_offer.is_some() {
                    if c.pending_candidates.len() < MAX_HELD_CANDIDATES {
                        c.pending_candidates.push(candidate);
                    }
                } else {
                    self.media(MediaAction::AddCandidate { candidate });
                }
            }
            Body::Reject => self.input(Input::RejectReceived, now),
            Body::Busy => self.input(Input::BusyReceived, now),
            Body::Hangup { .. } => self.input(Input::HangupReceived, now),
            Body::Mute { audio, video } => {
                self.status.peer_audio_muted = audio;
                self.status.peer_video_muted = video;
            }
            Body::MediaKey { media_key } => self.member_key(from, media_key, now),
            Body::Offer { .. } => {}
        }
    }

    /// Checks a member's key against its own sender id and the schedule, then installs it.
    pub(super) fn take_key(
        &mut self,
        from: &str,
        key: &KeyMaterial,
        now: Instant,
    ) -> Result<(), GroupError> {
        if key.id.sender != sender_id_for(from) {
            return Err(GroupError::SenderIdClaimed(key.id.sender));
        }
        let Some(c) = self.call.as_mut() else {
            return Err(GroupError::NotAMember);
        };
        let outs = c.keys.key_received(from, key, now)?;
        self.apply_keys(outs);
        Ok(())
    }

    /// A key from `from`: installed, held (a stranger whose `add` may still come), or dropped.
    pub(super) fn member_key(&mut self, from: &str, key: KeyMaterial, now: Instant) {
        match self.take_key(from, &key, now) {
            Ok(()) => {}
            Err(GroupError::NotAMember) => {
                let Some(c) = self.call.as_mut() else { return };
                let known = c.stranger_keys.iter().position(|(u, _)| u == from);
                if let (true, Some(i)) = (c.via_relay(), known) {
                    // one held key per user: the newest (a rotation replaces it)
                    c.stranger_keys[i].1 = key;
                } else if c.via_relay() && c.stranger_keys.len() < MAX_GROUP_MEMBERS * 2 {
                    c.stranger_keys.push((from.to_owned(), key));
                } else {
                    self.notify(Notice::Dropped(Dropped::Key {
                        from: from.to_owned(),
                        error: GroupError::NotAMember,
                    }));
                }
            }
            Err(error) => self.notify(Notice::Dropped(Dropped::Key {
                from: from.to_owned(),
                error,
            })),
        }
    }

    fn on_offer(
        &mut self,
        from: &str,
        device: u32,
        call_id: CallId,
        msg: CallMessage,
        now: Instant,
    ) {
        let offer_seq = msg.seq;
        if let Body::Offer {
            relay: Some(url), ..
        } = &msg.body
        {
            if !self.acceptable_peer_relay(url) {
                return self.notify(Notice::Dropped(Dropped::UnsafeRelay {
                    from: from.to_owned(),
                }));
            }
        }
        // the same call id again: a duplicate, unless we left that call and are invited back
        if self.is_current(call_id) && self.busy() {
            return self.notify(Notice::Dropped(Dropped::DuplicateOffer));
        }
        let verdict = offer_verdict(
            self.call.as_ref().map(|c| (&c.machine, &c.id.0)),
            self.call.as_ref().is_some_and(|c| c.peer == from),
            &call_id.0,
        );
        match verdict {
            OfferVerdict::GlareKeepOurs => {
                return self.notify(Notice::Dropped(Dropped::GlareOurCallWins))
            }
            OfferVerdict::Busy => {
                // bound to *their* call id; our call is untouched
                self.actions.push_back(Action::Send {
                    call: call_id,
                    to: from.to_owned(),
                    device,
                    message: CallMessage::new(call_id, 0, Body::Busy),
                });
                return self.notify(Notice::Dropped(Dropped::Busy {
                    from: from.to_owned(),
                }));
            }
            OfferVerdict::GlareTakeTheirs => {
                if let Some(c) = self.call.as_mut() {
                    let outs = c.machine.handle(Input::GlareLost, now).unwrap_or_default();
                    self.apply(outs, now);
                }
            }
            OfferVerdict::Ring => {}
        }
        let mut msg = msg;
        let Body::Offer {
            sdp,
            media_key,
            relay,
            members,
            relay_token,
            ..
        } = std::mem::replace(&mut msg.body, Body::Ringing)
        else {
            return;
        };
        let keys = match self.new_keys() {
            Ok(k) => k,
            Err(e) => return self.notify(Notice::Error(e)),
        };
        let me = self.cfg.me.clone();
        let mut machine = (self.cfg.machine)(Role::Callee);
        let outs = machine
            .handle(Input::OfferReceived, now)
            .unwrap_or_default();
        let mut call = Call::new(call_id, from.to_owned(), device, machine, keys, now);
        for m in members {
            if m != me && m != from && valid_member_name(&m) && !call.is_member(&m) {
                call.members.push(m);
            }
        }
        for m in call.members.clone() {
            if let Err(e) = call.keys.admit(&m) {
                self.notify(Notice::Error(CallError::Keys(e)));
            }
        }
        call.pairwise = relay.is_none();
        call.keys.set_pairwise(call.pairwise);
        call.relay = relay.map(super::RelayChoice::Url);
        call.relay_token = relay_token;
        call.remote_offer = Some(RemoteOffer { sdp });
        call.inbound.insert(
            from.to_owned(),
            Inbound {
                reorder: Reorder::starting_at(call_id, offer_seq.saturating_add(1)),
                gap_since: None,
                ahead_since: None,
            },
        );
        let glare = verdict == OfferVerdict::GlareTakeTheirs;
        self.call = Some(call);
        if let Some(key) = media_key {
            if let Err(error) = self.take_key(from, &key, now) {
                self.notify(Notice::Dropped(Dropped::Key {
                    from: from.to_owned(),
                    error,
                }));
            }
        }
        self.status.setup_time = None;
        self.status.peer_audio_muted = false;
        self.status.peer_video_muted = false;
        self.refresh_status();
        self.apply(outs, now);
        if glare {
            // we wanted this call anyway
            self.input(Input::Accept, now);
        }
    }
}
