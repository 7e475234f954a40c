//! What goes into the call core ([`Event`]) and what comes out ([`Action`], [`Notice`]), and the
//! typed words the rest of the stack uses for call states and errors.

use std::time::Duration;

use sotto_admission::RelayToken;
use sotto_frame::KeyMaterial;

use crate::group::GroupError;
use crate::media::MediaKind;
use crate::messages::{CallId, CallMessage, ReorderError};
use crate::state::{EndReason, IllegalTransition, State};

/// What the user (or a script) asks the core for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UserCommand {
    /// Call `user` (device 1).
    Dial(String),
    /// Answer the ringing call.
    Answer,
    /// Reject the ringing call.
    Reject,
    /// Hang up.
    Hangup,
    /// Mute or unmute audio.
    MuteAudio(bool),
    /// Mute or unmute video.
    MuteVideo(bool),
    /// Rotate our media key now.
    RotateKey,
    /// Group call: invite `user` into our call (needs a call through a relay).
    Invite(String),
    /// How long after handing out a fresh key this device switches to it (capped at
    /// [`crate::consts::MAX_KEY_ACTIVATION_DELAY`]).
    SetKeyActivationDelay(Duration),
}

/// What the server says about a peer's identity key, asked by [`Action::CheckIdentity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityVerdict {
    /// The key the server lists is the one we pinned (or we have none pinned yet).
    Unchanged,
    /// The server binds another key than the pinned one.
    Changed,
    /// The check itself failed (server unreachable, timeout): the session stays authenticated,
    /// so the call goes on.
    Unknown,
}

/// What the relay says about the room.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoomEvent {
    /// `0` was admitted after us.
    MemberJoined(String),
    /// `0` left (or was dropped).
    MemberLeft(String),
    /// The relay's control channel closed: nothing more will be announced.
    Closed,
}

/// What the media backend reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaSignal {
    /// The connection is up.
    Connected,
    /// The connection failed or dropped.
    Failed,
    /// Trickle ICE: a local candidate (W3C `RTCIceCandidateInit` JSON) for the peer.
    LocalCandidate(String),
    /// Trickle ICE: gathering finished.
    GatheringComplete,
    /// Our sender key nears its counter limit.
    RotationNeeded,
    /// The first frame of this kind decrypted.
    FirstFrameDecrypted(MediaKind),
}

/// The signaling server's grant of relay tokens ([`Event::RelayTokens`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// The relay the room is placed at (its control URL).
    pub relay: String,
    /// `(participant, token)` pairs, in the order asked.
    pub tokens: Vec<(String, RelayToken)>,
}

/// Something that happened, fed to [`crate::core::CallCore::handle`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// The user asks.
    Command(UserCommand),
    /// A call message opened from `from`'s device `device` (authenticated by the ratchet).
    Message {
        /// Sender account.
        from: String,
        /// Sender device.
        device: u32,
        /// The message.
        message: CallMessage,
    },
    /// An envelope from `from` did not open; `untrusted_identity` when it was a first message
    /// under an identity key other than the pinned one.
    OpenFailed {
        /// Sender account.
        from: String,
        /// The ratchet refused the sender's identity key.
        untrusted_identity: bool,
        /// Why, in words (for the user).
        why: String,
    },
    /// Answer to [`Action::CheckIdentity`].
    IdentityChecked {
        /// The call it was asked for.
        call: CallId,
        /// Whose identity.
        user: String,
        /// The verdict.
        verdict: IdentityVerdict,
    },
    /// An [`Action::Send`] failed (successes are not reported).
    SendFailed {
        /// The call it was for.
        call: CallId,
        /// Recipient.
        to: String,
        /// The message type that was lost.
        kind: &'static str,
        /// The server binds another identity key to `to`.
        identity_changed: bool,
        /// Why, in words.
        why: String,
    },
    /// Answer to [`MediaAction::Create`]: `Ok(relay_only)`.
    MediaReady {
        /// The call.
        call: CallId,
        /// Whether the media uses relay candidates only, or why it could not be made.
        result: Result<bool, CallError>,
    },
    /// Answer to [`MediaAction::CreateOffer`] / [`MediaAction::AcceptOffer`]: our SDP.
    LocalDescription {
        /// The call.
        call: CallId,
        /// SDP or why not.
        result: Result<String, CallError>,
    },
    /// Answer to [`MediaAction::ApplyAnswer`].
    AnswerApplied {
        /// The call.
        call: CallId,
        /// Done or why not.
        result: Result<(), CallError>,
    },
    /// Answer to [`Action::RequestRelayTokens`]: the relay and one token per participant
    /// asked for, in order, or why not (the server's refusal, a timeout).
    RelayTokens {
        /// The call.
        call: CallId,
        /// The grant.
        result: Result<TokenGrant, CallError>,
    },
    /// Answer to [`Action::JoinRoom`]: who the relay already has in the room.
    RelayJoined {
        /// The call.
        call: CallId,
        /// Members present, or why the join failed (timeouts included).
        result: Result<Vec<String>, CallError>,
    },
    /// The relay room of `call` changed.
    Room {
        /// The call.
        call: CallId,
        /// What happened.
        event: RoomEvent,
    },
    /// The media of `call` reports.
    Media {
        /// The call.
        call: CallId,
        /// What happened.
        signal: MediaSignal,
    },
}

/// A data-plane instruction for the call's media backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaAction {
    /// Build the media (answer: [`Event::MediaReady`]).
    Create,
    /// Trickle offer (answer: [`Event::LocalDescription`]).
    CreateOffer,
    /// Apply the peer's offer, trickle answer (answer: [`Event::LocalDescription`]).
    AcceptOffer {
        /// Their SDP.
        sdp: String,
    },
    /// Apply the peer's answer (answer: [`Event::AnswerApplied`]).
    ApplyAnswer {
        /// Their SDP.
        sdp: String,
    },
    /// Add a trickled remote candidate.
    AddCandidate {
        /// The JSON.
        candidate: String,
    },
    /// Encrypt under this key from now on.
    UseSendKey(KeyMaterial),
    /// Add a member's key to the receive ring.
    InstallKey(KeyMaterial),
    /// Forget every key of a sender id.
    ForgetSender(u64),
    /// Start streaming, with these mute flags.
    StartSending {
        /// Audio muted.
        audio_muted: bool,
        /// Video muted.
        video_muted: bool,
    },
    /// Set the mute flags.
    SetMuted {
        /// Audio muted.
        audio: bool,
        /// Video muted.
        video: bool,
    },
    /// Release the media (refresh the stats one last time first).
    Close,
}

/// Something the driver must do, taken from [`crate::core::CallCore::poll_action`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Action {
    /// Seal `message` for `to`'s device `device` and send it (in order with every other
    /// `Send`; a failure comes back as [`Event::SendFailed`]).
    Send {
        /// The call.
        call: CallId,
        /// Recipient account.
        to: String,
        /// Recipient device.
        device: u32,
        /// The message.
        message: CallMessage,
    },
    /// Ask the server which identity key it binds to `user` and compare with the pinned one
    /// (answer: [`Event::IdentityChecked`]).
    CheckIdentity {
        /// The call.
        call: CallId,
        /// Whose.
        user: String,
    },
    /// Ask the signaling server for tokens admitting `participants` to the relay room `room`
    /// at `url`, or (`None`) wherever the server places the room (answer:
    /// [`Event::RelayTokens`]).
    RequestRelayTokens {
        /// The call.
        call: CallId,
        /// Relay control URL, or `None`: the server places the room.
        url: Option<String>,
        /// Room name (the call id).
        room: String,
        /// Account names.
        participants: Vec<String>,
    },
    /// Join the relay room `room` at `url` under our name with `token`, answering the relay's
    /// offer with the call's media (answer: [`Event::RelayJoined`]).
    JoinRoom {
        /// The call.
        call: CallId,
        /// Relay control URL.
        url: String,
        /// Room name (the call id).
        room: String,
        /// Our token (none: the relay refuses with `token_missing`).
        token: Option<RelayToken>,
    },
    /// Leave the call's relay room.
    LeaveRoom {
        /// The call.
        call: CallId,
    },
    /// Act on the call's media.
    Media {
        /// The call.
        call: CallId,
        /// What to do.
        action: MediaAction,
    },
    /// Tell the user.
    Notify(Notice),
}

/// The call's state as a word screens and scripts use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum CallState {
    /// No call yet.
    #[default]
    Idle,
    /// We dialled; the peer's device rings.
    Ringing,
    /// Someone calls us.
    Incoming,
    /// Answered; media connecting.
    Connecting,
    /// Media flows.
    Connected,
    /// Over.
    Ended,
}

impl CallState {
    /// The word (`idle`, `ringing`, `incoming`, `connecting`, `connected`, `ended`).
    pub fn word(self) -> &'static str {
        match self {
            CallState::Idle => "idle",
            CallState::Ringing => "ringing",
            CallState::Incoming => "incoming",
            CallState::Connecting => "connecting",
            CallState::Connected => "connected",
            CallState::Ended => "ended",
        }
    }

    /// The state named by `word`, if any.
    pub fn from_word(word: &str) -> Option<CallState> {
        [
            CallState::Idle,
            CallState::Ringing,
            CallState::Incoming,
            CallState::Connecting,
            CallState::Connected,
            CallState::Ended,
        ]
        .into_iter()
        .find(|s| s.word() == word)
    }
}

impl From<&State> for CallState {
    fn from(s: &State) -> Self {
        match s {
            State::Idle => CallState::Idle,
            State::Outgoing => CallState::Ringing,
            State::Incoming => CallState::Incoming,
            State::Connecting => CallState::Connecting,
            State::Connected => CallState::Connected,
            State::Ended(_) => CallState::Ended,
        }
    }
}

impl std::fmt::Display for CallState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())
    }
}

/// A snapshot of the call, as the core knows it (the driver adds media statistics and the
/// safety number).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallStatus {
    /// The other party of the current (or last) call.
    pub peer: Option<String>,
    /// Where the call is.
    pub state: CallState,
    /// Why the call ended.
    pub end_reason: Option<EndReason>,
    /// Our mute flags.
    pub audio_muted: bool,
    /// Our mute flags.
    pub video_muted: bool,
    /// The peer's announced mute flags.
    pub peer_audio_muted: bool,
    /// The peer's announced mute flags.
    pub peer_video_muted: bool,
    /// Dial (or offer arrival) to first decrypted video frame.
    pub setup_time: Option<Duration>,
    /// Number of calls that ended.
    pub calls_ended: u32,
    /// Other members of the call (1:1: the peer).
    pub members: Vec<String>,
}

/// A change in a group call's membership.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberChange {
    /// We invited `0`.
    Invited(String),
    /// Member `by` added `user`.
    Added {
        /// The newcomer.
        user: String,
        /// Who added them.
        by: String,
    },
    /// `user` was given our key: `ratcheted` when the relay admitted them after us (they got
    /// a ratcheted step, so nothing we sent before opens with it).
    GotOurKey {
        /// The member.
        user: String,
        /// Whether our key ratcheted for them.
        ratcheted: bool,
    },
    /// `user` left; `rotated` when they held our key (we drew a fresh one for who remains).
    Left {
        /// The leaver.
        user: String,
        /// Whether our key rotated.
        rotated: bool,
    },
}

/// Why an incoming message was dropped (it was acknowledged: a bad message never blocks the
/// queue).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dropped {
    /// An envelope that did not open.
    Unopenable {
        /// Sender.
        from: String,
        /// Why, in words.
        why: String,
    },
    /// A second offer for the call we are in.
    DuplicateOffer,
    /// Glare: our call id is larger, theirs is ignored.
    GlareOurCallWins,
    /// A call while we are in another: answered `busy`.
    Busy {
        /// The caller.
        from: String,
    },
    /// A message for a call we are not in.
    OtherCall {
        /// The message type.
        kind: &'static str,
    },
    /// Out of order beyond repair (stale, duplicate, too far ahead).
    OutOfOrder(ReorderError),
    /// A candidate the media refused.
    BadCandidate,
    /// A media key refused (not a member, an id another member uses...).
    Key {
        /// Who sent it.
        from: String,
        /// Why.
        error: GroupError,
    },
    /// An `add` refused.
    AddRefused {
        /// The user to add.
        user: String,
        /// Why.
        why: AddRefusal,
    },
    /// A message that makes no sense in the call's state.
    Illegal(IllegalTransition),
    /// An offer naming a relay we do not connect to on a peer's word (plain `ws://`, or not a
    /// valid URL): not rung.
    UnsafeRelay {
        /// The caller.
        from: String,
    },
    /// A key or candidate that arrived while our media did not exist yet, beyond
    /// [`crate::consts::MAX_HELD_MEDIA`] held ones.
    HeldMediaFull,
    /// Held messages past a gap that did not fill within
    /// [`crate::consts::REORDER_GAP_WAIT`] were released; this many were missing.
    GapSkipped {
        /// Whose messages.
        from: String,
        /// How many sequence numbers never arrived.
        missing: u32,
    },
}

/// Why a member cannot be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddRefusal {
    /// [`crate::consts::MAX_GROUP_MEMBERS`] reached.
    GroupFull,
    /// Their sender id equals ours or another member's.
    SenderIdClash,
}

/// Something the user asked for, or the call, failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// Dial while in a call.
    #[error("already in a call")]
    AlreadyInCall,
    /// A command that needs a call.
    #[error("no call")]
    NoCall,
    /// A command that needs the call's media.
    #[error("no media")]
    NoMedia,
    /// Invite outside a connected call through a relay.
    #[error("invite needs a connected call through a relay")]
    InviteNeedsRelayCall,
    /// Not an account name.
    #[error("cannot add: not an account name ([a-z0-9._-], at most MAX_MEMBER_NAME bytes)")]
    NotAnAccountName,
    /// Already a member, or the group is full.
    #[error("cannot add {0}")]
    CannotAdd(String),
    /// The user's sender id equals a member's.
    #[error("cannot add {user}: its sender id equals {other}'s")]
    SenderIdClash {
        /// Who was to be added.
        user: String,
        /// Whose id it equals.
        other: String,
    },
    /// The server binds another identity key to `0`.
    #[error("{0}'s identity key changed: verify the safety number before calling")]
    IdentityChanged(String),
    /// A message could not be sent.
    #[error("sending {kind} to {to} failed: {why}")]
    Send {
        /// Recipient.
        to: String,
        /// Message type.
        kind: &'static str,
        /// Why.
        why: String,
    },
    /// The media backend failed.
    #[error("media: {0}")]
    Media(String),
    /// Relay-only ICE gathered no relay candidate.
    #[error("relay-only ICE gathered no relay candidate (check the TURN server and credentials)")]
    NoRelayCandidate,
    /// The relay refused or failed.
    #[error("relay: {0}")]
    Relay(String),
    /// The relay refused our join with this code (e.g. `token_predates_leave`: rejoining a
    /// call after leaving it needs a new invitation).
    #[error("relay refused: {0}")]
    RelayRefused(sotto_relay::protocol::ErrorCode),
    /// The signaling server refused relay tokens with this code (`not_a_room_member`,
    /// `unknown_relay`, `room_members_full`, ...).
    #[error("relay tokens refused: {0}")]
    RelayTokensRefused(sotto_server::ErrorCode),
    /// The server's answer to a token request held no token for `0`.
    #[error("no relay token for {0}")]
    NoRelayToken(String),
    /// Another party did not answer in time.
    #[error("{what} did not answer within {limit:?}")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// For how long.
        limit: Duration,
    },
    /// The peer's media key is unusable.
    #[error("peer media key: {0}")]
    PeerKey(GroupError),
    /// The group key schedule refused.
    #[error("keys: {0}")]
    Keys(GroupError),
    /// The command makes no sense in the call's state.
    #[error(transparent)]
    Illegal(IllegalTransition),
    /// The device's prekeys could not be published or refreshed.
    #[error("prekeys: {0}")]
    Prekeys(String),
}

/// Things worth telling the user as they happen.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// Someone calls.
    Incoming(String),
    /// The state changed.
    State(CallState),
    /// A message was dropped.
    Dropped(Dropped),
    /// Our media key switched to this generation.
    KeyRotated(u64),
    /// A member's key was installed.
    PeerKey {
        /// Whose.
        from: String,
        /// Its generation.
        generation: u64,
    },
    /// Group membership changed.
    Member(MemberChange),
    /// Something failed.
    Error(CallError),
    /// This account's identity key is no longer the one we pinned: nothing is sent to or
    /// accepted from the new key until the user compares the new safety number and trusts it.
    IdentityChanged(String),
}

impl std::fmt::Display for MemberChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemberChange::Invited(u) => write!(f, "{u} invited"),
            MemberChange::Added { user, by } => write!(f, "{user} added by {by}"),
            MemberChange::GotOurKey {
                user,
                ratcheted: true,
            } => write!(f, "{user} joined; our key ratcheted"),
            MemberChange::GotOurKey { user, .. } => write!(f, "{user} has our key"),
            MemberChange::Left {
                user,
                rotated: true,
            } => write!(f, "{user} left; rotating our key"),
            MemberChange::Left { user, .. } => write!(f, "{user} left"),
        }
    }
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dropped::Unopenable { from, why } => write!(f, "envelope from {from}: {why}"),
            Dropped::DuplicateOffer => f.write_str("duplicate offer"),
            Dropped::GlareOurCallWins => f.write_str("glare: our call wins"),
            Dropped::Busy { from } => write!(f, "busy: call from {from}"),
            Dropped::OtherCall { kind } => write!(f, "{kind} for another call"),
            Dropped::OutOfOrder(e) => write!(f, "{e}"),
            Dropped::BadCandidate => f.write_str("peer candidate refused"),
            Dropped::Key { from, error } => write!(f, "media key from {from}: {error}"),
            Dropped::AddRefused {
                user,
                why: AddRefusal::GroupFull,
            } => write!(f, "add {user}: group full"),
            Dropped::AddRefused { user, .. } => {
                write!(f, "add {user}: its sender id equals a member's")
            }
            Dropped::Illegal(e) => write!(f, "{e}"),
            Dropped::HeldMediaFull => f.write_str("too much held before our media exists"),
            Dropped::UnsafeRelay { from } => {
                write!(f, "call from {from} through a relay that is not wss://")
            }
            Dropped::GapSkipped { from, missing } => {
                write!(f, "{missing} call message(s) from {from} never arrived")
            }
        }
    }
}
