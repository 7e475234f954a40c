//! One call's state inside the core: the state machine, who is in it, the key schedule, what the
//! media and the relay room have reached, and the per-member message sequence numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use sotto_admission::RelayToken;
use sotto_frame::KeyMaterial;

use super::types::MediaAction;
use crate::group::GroupKeys;
use crate::messages::{CallId, Reorder};
use crate::state::{CallMachine, Role};

/// How far the call's media has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MediaPhase {
    /// Not asked for yet.
    None,
    /// [`MediaAction::Create`] sent, waiting for the backend.
    Creating,
    /// Exists: media actions go out at once.
    Ready,
    /// Closed.
    Closed,
}

/// How far the call's relay room has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RoomPhase {
    /// Peer to peer (or not joined yet).
    None,
    /// Our relay tokens asked of the signaling server ([`Action::RequestRelayTokens`]).
    ///
    /// [`Action::RequestRelayTokens`]: super::types::Action::RequestRelayTokens
    Tokens,
    /// Join sent.
    Joining,
    /// Admitted.
    Joined,
    /// The relay's control channel closed.
    Quiet,
}

/// What a pending identity check was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdentityPurpose {
    /// Offering the call to the peer.
    Offer,
    /// Inviting this user into the group call.
    Invite(String),
}

/// What a pending relay-token request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenPurpose {
    /// Our own join (the caller's, with the callee's token for the offer).
    Join,
    /// Inviting this user into the group call.
    Invite(String),
}

/// The offer we were sent, kept until we answer.
pub(crate) struct RemoteOffer {
    pub sdp: String,
}

/// Per-sender receive order and when its oldest gap began.
pub(crate) struct Inbound {
    pub reorder: Reorder,
    pub gap_since: Option<Instant>,
    /// Since when messages arrive too far ahead to be held (a long run of lost ones).
    pub ahead_since: Option<Instant>,
}

pub(crate) struct Call {
    pub id: CallId,
    /// The other party (a group call: the member we dialled or who invited us; after they
    /// leave, another member).
    pub peer: String,
    pub device: u32,
    pub machine: CallMachine,
    /// Everyone else in the call (1:1: the peer), in the order they came.
    pub members: Vec<String>,
    /// The relay control URL when media goes through a relay.
    pub relay: Option<super::RelayChoice>,
    pub keys: GroupKeys,
    pub media: MediaPhase,
    /// Media actions waiting for the media to exist, in order.
    pub held_media: Vec<MediaAction>,
    pub relay_only: bool,
    pub remote_offer: Option<RemoteOffer>,
    pub room: RoomPhase,
    /// Group: who the relay says is in the room now (besides us).
    pub present: BTreeSet<String>,
    /// Our next sequence number per recipient.
    pub send_seq: BTreeMap<String, u32>,
    /// Receive order per sender.
    pub inbound: BTreeMap<String, Inbound>,
    /// Peer candidates that arrived before we applied their offer.
    pub pending_candidates: Vec<String>,
    /// Keys from users of this call who are not members (yet): a member's `add` for them may
    /// still be on its way.
    pub stranger_keys: Vec<(String, KeyMaterial)>,
    /// The server binds another identity key to the peer than our session pins: nothing more is
    /// sent to the peer in this call.
    pub peer_rekeyed: bool,
    /// A relay (TURN) candidate of ours was gathered.
    pub relay_candidate: bool,
    pub media_up: bool,
    /// We started encrypting: anyone given our key from now on gets a ratcheted step.
    pub sending: bool,
    /// This is a peer-to-peer 1:1 call: the peer's sender id may equal ours (the SFrame ring
    /// holds only the peer's keys).
    pub pairwise: bool,
    pub awaiting_identity: Option<IdentityPurpose>,
    pub awaiting_tokens: Option<TokenPurpose>,
    /// Our token for the relay room (the caller's from the server, a callee's from the offer).
    pub relay_token: Option<RelayToken>,
    /// The caller's token for the callee, sent in the offer.
    pub peer_token: Option<RelayToken>,
    pub started: Instant,
}

impl Call {
    pub fn new(
        id: CallId,
        peer: String,
        device: u32,
        machine: CallMachine,
        keys: GroupKeys,
        now: Instant,
    ) -> Self {
        Call {
            id,
            members: vec![peer.clone()],
            peer,
            device,
            machine,
            relay: None,
            keys,
            media: MediaPhase::None,
            held_media: Vec::new(),
            relay_only: false,
            remote_offer: None,
            room: RoomPhase::None,
            present: BTreeSet::new(),
            send_seq: BTreeMap::new(),
            inbound: BTreeMap::new(),
            pending_candidates: Vec::new(),
            stranger_keys: Vec::new(),
            peer_rekeyed: false,
            relay_candidate: false,
            media_up: false,
            sending: false,
            pairwise: false,
            awaiting_identity: None,
            awaiting_tokens: None,
            relay_token: None,
            peer_token: None,
            started: now,
        }
    }

    pub fn role(&self) -> Role {
        self.machine.role()
    }

    pub fn is_member(&self, who: &str) -> bool {
        self.members.iter().any(|m| m == who)
    }

    pub fn via_relay(&self) -> bool {
        self.relay.is_some()
    }

    /// The next sequence number for `to` (and counts it as used).
    pub fn next_seq(&mut self, to: &str) -> u32 {
        let s = self.send_seq.entry(to.to_owned()).or_insert(0);
        let seq = *s;
        *s = s.saturating_add(1);
        seq
    }
}
