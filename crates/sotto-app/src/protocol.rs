//! What the device and its page say to each other over the page's one WebSocket (JSON text
//! messages, at most [`MAX_PAGE_MESSAGE`](crate::consts::MAX_PAGE_MESSAGE) bytes). Normative
//! description: `protocol-spec/app.md`.
//!
//! The page never sees a Signal session: it sends commands and its own media's SDP and ICE
//! candidates; the device seals those into the ratchet exactly as the Rust media path does and
//! hands the page the SFrame keys the call core decides on, which the page passes only to its
//! frame worker.

use serde::{Deserialize, Serialize};

/// Page → device. `Debug` never prints the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FromPage {
    /// First message: the token (the link's, once; then the session token of the last
    /// [`ToPage::Welcome`]).
    Hello {
        /// Hex token.
        token: String,
    },
    /// A user action.
    Command {
        /// What the user did.
        command: PageCommand,
    },
    /// The answer to a [`ToPage::Media`] request.
    MediaReply {
        /// The request's id.
        id: u64,
        /// Its result.
        result: MediaResult,
    },
    /// Something the page's media engine reports by itself.
    MediaEvent {
        /// What happened.
        event: PageMediaEvent,
    },
}

impl std::fmt::Debug for FromPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FromPage::Hello { .. } => f.write_str("Hello(<redacted>)"),
            FromPage::Command { command } => write!(f, "Command({command:?})"),
            FromPage::MediaReply { id, .. } => write!(f, "MediaReply({id})"),
            FromPage::MediaEvent { event } => write!(f, "MediaEvent({event:?})"),
        }
    }
}

/// A user action on the call screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum PageCommand {
    /// Call an account.
    Dial {
        /// Account name.
        user: String,
    },
    /// Take the ringing call.
    Answer,
    /// Decline the ringing call.
    Reject,
    /// End the call.
    Hangup,
    /// Microphone on/off (announced to the peer).
    MuteAudio {
        /// Muted.
        muted: bool,
    },
    /// Camera on/off (announced to the peer).
    MuteVideo {
        /// Muted.
        muted: bool,
    },
    /// Group call through the relay: invite an account.
    Invite {
        /// Account name.
        user: String,
    },
    /// The user compared `peer`'s new safety number with `peer` and says it is this one: the
    /// device trusts the key the server offers if its number is this (as `sotto trust`).
    TrustIdentity {
        /// Account name.
        peer: String,
        /// The number the user compared (digits; spaces ignored).
        safety_number: String,
    },
}

/// The result of a media request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MediaResult {
    /// Done, nothing to return.
    Done,
    /// An SDP (offer or answer).
    Sdp(String),
    /// Statistics.
    Stats(PageStats),
    /// The page could not do it: a short machine-readable reason (a DOMException name such
    /// as `NotAllowedError`, or `no_media`).
    Failed(String),
}

/// What the page's media engine reports by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PageMediaEvent {
    /// `RTCPeerConnection.connectionState` changed.
    State {
        /// `new`, `connecting`, `connected`, `disconnected`, `failed` or `closed`.
        state: String,
    },
    /// A local ICE candidate (W3C `RTCIceCandidateInit` JSON).
    Candidate {
        /// The JSON.
        candidate: String,
    },
    /// Gathering finished.
    GatheringComplete,
    /// The first frame of a kind decrypted.
    FirstFrame {
        /// `audio` or `video`.
        media: String,
    },
    /// Frames of a kind stopped decrypting.
    DecryptFailing {
        /// `audio` or `video`.
        media: String,
        /// The frame worker's error code (`sotto_frame::Error` variant names).
        code: String,
    },
}

/// Counters the page reports (from its frame worker and `getStats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PageStats {
    /// `RTCPeerConnection.connectionState`.
    pub state: String,
    /// Local candidate type of the selected pair.
    pub local_candidate: Option<String>,
    /// Remote candidate type of the selected pair.
    pub remote_candidate: Option<String>,
    /// Round-trip time, milliseconds.
    pub rtt_ms: Option<u64>,
    /// Bits per second out.
    pub send_bitrate: u64,
    /// Bits per second in.
    pub recv_bitrate: u64,
    /// Frames encrypted (audio).
    pub audio_frames_sent: u64,
    /// Frames decrypted (audio).
    pub audio_frames_decrypted: u64,
    /// Frames that failed to decrypt (audio).
    pub audio_frames_failed: u64,
    /// Frames encrypted (video).
    pub video_frames_sent: u64,
    /// Frames decrypted (video).
    pub video_frames_decrypted: u64,
    /// Frames that failed to decrypt (video).
    pub video_frames_failed: u64,
}

/// Device → page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToPage {
    /// The token was right: who we are, and the token for this tab's next `hello` (a reload):
    /// every token works once, the link's included.
    Welcome {
        /// Our account.
        me: String,
        /// Hex; the page keeps it in `sessionStorage` (this tab only).
        session: SessionToken,
    },
    /// The call's state, sent whenever it changes.
    Status(PageStatus),
    /// Something to show in the event list.
    Notice {
        /// What kind.
        kind: NoticeKind,
        /// Text for the display (names and reasons may come from the peer: the page inserts
        /// it as text, never as HTML).
        text: String,
    },
    /// A request to the page's media engine; answered with [`FromPage::MediaReply`].
    Media {
        /// Request id.
        id: u64,
        /// What to do.
        request: MediaRequest,
    },
    /// A key for the frame worker (fire and forget, in order).
    Key(KeyOp),
    /// `peer`'s identity key changed: the number trusted until now and the one the server
    /// offers now, for the user to compare with `peer` before trusting it.
    Identity {
        /// Account name.
        peer: String,
        /// The safety number trusted until now (none when no key was trusted yet).
        trusted: Option<String>,
        /// The safety number of the key the server offers now.
        offered: String,
    },
    /// The people this device knows, for the contacts list (sent when the page connects and
    /// after every call).
    Contacts(PageContacts),
}

/// The contacts list: the accounts whose identity keys the device keeps (from calls made or
/// received, or trusted), at most [`MAX_CONTACTS_SENT`](crate::consts::MAX_CONTACTS_SENT),
/// sorted by name. The page shows each with a Call button that dials it as the name field does;
/// names come from the network: the page inserts them as text, never as HTML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageContacts {
    /// The contacts.
    pub contacts: Vec<PageContact>,
    /// More are known than were sent.
    pub truncated: bool,
}

/// One contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageContact {
    /// Account name.
    pub name: String,
    /// How many devices the signaling server lists for it now (`None`: the server did not
    /// answer in time, or the lookup failed).
    pub devices: Option<u32>,
}

/// The token for a page's next `hello`; `Debug` never prints it, zeroized when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionToken(pub String);

impl Drop for SessionToken {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// A notice's kind (the page styles and tests match on it, never on the text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// A call is ringing here.
    Incoming,
    /// A peer's identity key changed.
    IdentityChanged,
    /// The user's `trust_identity` was carried out: the peer's new key is trusted.
    IdentityTrusted,
    /// Someone joined, left or was invited.
    Member,
    /// A call state change.
    State,
    /// Something was dropped (bad message, unsafe relay...).
    Dropped,
    /// Our or a peer's media key changed.
    Key,
    /// An error.
    Error,
    /// Anything else.
    Other,
}

/// The call's state, for the screen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageStatus {
    /// `idle`, `ringing`, `incoming`, `connecting`, `connected`, `ended`.
    pub state: String,
    /// The other party.
    pub peer: Option<String>,
    /// Why the call ended, in words.
    pub end_reason: Option<String>,
    /// Safety number with the peer (compare it out of band).
    pub safety_number: Option<String>,
    /// Our mute flags.
    pub audio_muted: bool,
    /// Our mute flags.
    pub video_muted: bool,
    /// The peer's announced mute flags.
    pub peer_audio_muted: bool,
    /// The peer's announced mute flags.
    pub peer_video_muted: bool,
    /// Everyone else in the call (1:1: the peer; a group: every other member, the invited
    /// included), in the order they came, each with the SFrame sender id its frames carry: the
    /// page shows one tile per member and finds its picture by the sender of the frames it
    /// decrypts (a relay's slots are not labelled, `relay.md` §3).
    pub members: Vec<PageMember>,
    /// Dial to first decrypted video frame, milliseconds.
    pub setup_ms: Option<u64>,
    /// Our SFrame key generation.
    pub local_generation: Option<u64>,
    /// The peer's newest SFrame key generation we hold.
    pub remote_generation: Option<u64>,
}

/// A member of the call, as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageMember {
    /// Account name.
    pub name: String,
    /// Its SFrame sender id (`sotto_call::core::sender_id_for`), decimal.
    pub sender: String,
}

/// A request to the page's media engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum MediaRequest {
    /// Build this call's peer connection (camera and microphone with frame transforms).
    Create {
        /// This call's number: a later `close` for another call is ignored.
        call: u64,
        /// Our SFrame sender id (every send key carries it), decimal (ids reach 2^56).
        sender_id: String,
        /// SFrame cipher suite.
        suite: u16,
        /// ICE servers for `RTCPeerConnection`.
        ice_servers: Vec<PageIceServer>,
        /// `iceTransportPolicy: "relay"`.
        relay_only: bool,
    },
    /// Create an offer (candidates trickle as events).
    CreateOffer,
    /// Apply the peer's offer, answer (trickle).
    AcceptOffer {
        /// SDP.
        sdp: String,
    },
    /// Apply a relay's offer, answer with every candidate gathered.
    AnswerRelayOffer {
        /// SDP.
        sdp: String,
    },
    /// Apply the peer's answer.
    ApplyAnswer {
        /// SDP.
        sdp: String,
    },
    /// Add a trickled remote candidate.
    AddCandidate {
        /// W3C `RTCIceCandidateInit` JSON.
        candidate: String,
    },
    /// Start sending.
    Start,
    /// Mute flags.
    SetMuted {
        /// Audio muted.
        audio: bool,
        /// Video muted.
        video: bool,
    },
    /// Counters.
    Stats,
    /// Close call `call`'s peer connection and forget every key.
    Close {
        /// The call's number (from its `create`).
        call: u64,
    },
}

/// One ICE server, as `RTCIceServer`. `Debug` never prints the credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageIceServer {
    /// `stun:` / `turn:` / `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// TURN credential.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential: String,
}

impl std::fmt::Debug for PageIceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageIceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A key operation for the frame worker. Key material is base64 of
/// `sotto_frame::KeyMaterial::to_bytes` (frame.md §3.5).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyOp {
    /// Encrypt under this key from now on.
    UseSendKey {
        /// Material, base64.
        material: String,
    },
    /// A member's key for the receive ring.
    Install {
        /// Material, base64.
        material: String,
    },
    /// Forget every key of a sender id.
    Forget {
        /// The sender id (decimal string: ids reach 2^56).
        sender: String,
    },
}

impl std::fmt::Debug for KeyOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyOp::UseSendKey { .. } => f.write_str("UseSendKey(<redacted>)"),
            KeyOp::Install { .. } => f.write_str("Install(<redacted>)"),
            KeyOp::Forget { sender } => write!(f, "Forget({sender})"),
        }
    }
}

impl Drop for KeyOp {
    fn drop(&mut self) {
        if let KeyOp::UseSendKey { material } | KeyOp::Install { material } = self {
            zeroize::Zeroize::zeroize(material);
        }
    }
}
