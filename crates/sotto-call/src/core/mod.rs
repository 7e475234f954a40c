//! The call core: every rule of a device's calls, free of I/O (quinn-proto / str0m style).
//!
//! Feed it [`Event`]s with [`CallCore::handle`] (and [`CallCore::handle_timeout`] when
//! [`CallCore::poll_timeout`] says), carry out what [`CallCore::poll_action`] returns, and feed
//! the results back as events. It owns the call state machine, the offer verdict (busy, glare),
//! per-recipient sequence numbers and per-sender reordering, the group roster, the group key
//! schedule ([`crate::group::GroupKeys`], the one implementation of join/leave/rotation) and the
//! identity checks. No clock, no sockets, no tokio: time and randomness come in as parameters, so
//! tests drive whole calls in microseconds (`core::tests`). The async engine
//! ([`crate::engine`]) is only its driver.

mod call;
mod group_call;
mod inbound;
#[cfg(test)]
mod tests;
pub mod types;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::RngCore;
use sotto_frame::{CipherSuite, KeyMaterial};
use zeroize::Zeroizing;

use crate::consts::{
    FRESH_KEY_SIZE, KEY_ACTIVATION_DELAY, MAX_HELD_MEDIA, MAX_KEY_ACTIVATION_DELAY,
    REORDER_GAP_WAIT,
};
use crate::group::{GroupKeys, GroupOutput};
use crate::media::MediaKind;
use crate::messages::{Body, CallId, CallMessage};
use crate::state::{CallMachine, Input, Output, Role, State};
use call::{Call, IdentityPurpose, MediaPhase, RoomPhase, TokenPurpose};
pub use types::*;

/// The SFrame sender id of user `name` in every call: 16 bits of an FNV-1a hash of the name,
/// never 0 (short KIDs). Each receiver checks that a member's keys carry that member's id (a
/// member cannot pass its frames off as another's), and no one adds a member whose id equals
/// its own or another member's ([`sender_id_clash`]).
pub fn sender_id_for(name: &str) -> u64 {
    let mut h: u64 = 1469598103934665603;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(1099511628211);
    }
    (h & 0xffff) | 1
}

/// The member of `others` (or `me`) whose sender id `user`'s would equal, if any: such a user
/// cannot be added to the call (receivers could not tell their frames apart).
pub fn sender_id_clash<'a>(
    user: &str,
    me: &'a str,
    others: impl IntoIterator<Item = &'a String>,
) -> Option<&'a str> {
    let id = sender_id_for(user);
    std::iter::once(me)
        .chain(others.into_iter().map(String::as_str))
        .find(|o| *o != user && sender_id_for(o) == id)
}

/// Where the calls a device places go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayChoice {
    /// Through this sotto-relay (its control URL).
    Url(String),
    /// Through the relay the signaling server places the call's room at (one of the relays it
    /// is configured with; every node of a cluster gives the same one for a call).
    Placed,
}

impl RelayChoice {
    /// The relay's URL, once known.
    pub fn url(&self) -> Option<&str> {
        match self {
            RelayChoice::Url(u) => Some(u),
            RelayChoice::Placed => None,
        }
    }
}

/// How a [`CallCore`] is set up.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Our account.
    pub me: String,
    /// Calls we place go through a sotto-relay instead of peer to peer.
    pub relay: Option<RelayChoice>,
    /// SFrame cipher suite of our media.
    pub suite: CipherSuite,
    /// Builds each call's state machine (timeouts).
    pub machine: fn(Role) -> CallMachine,
    /// Whether a relay a *peer* names in its offer may be plain `ws://` to loopback (a local
    /// development setup, e.g. when our own signaling server is on loopback). Otherwise a peer
    /// may only name a `wss://` relay (or the relay we configured ourselves): it cannot make
    /// this device speak plain WebSocket to a service on its own machine.
    pub allow_plain_loopback_relays: bool,
}

impl CoreConfig {
    /// Defaults for `me`: peer to peer, AES-128-GCM, standard timeouts.
    pub fn new(me: &str) -> Self {
        CoreConfig {
            me: me.to_owned(),
            relay: None,
            suite: CipherSuite::Aes128GcmSha256_128,
            machine: CallMachine::new,
            allow_plain_loopback_relays: false,
        }
    }
}

/// One device's calls (one at a time), as a state machine.
pub struct CallCore {
    cfg: CoreConfig,
    rng: StdRng,
    activation_delay: Duration,
    call: Option<Call>,
    actions: VecDeque<Action>,
    status: CallStatus,
}

impl std::fmt::Debug for CallCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallCore")
            .field("me", &self.cfg.me)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl CallCore {
    /// A core for `cfg.me`; `rng` draws call ids and media keys (seed it from the OS in
    /// production, from a constant in tests).
    pub fn new(cfg: CoreConfig, rng: StdRng) -> Self {
        CallCore {
            cfg,
            rng,
            activation_delay: KEY_ACTIVATION_DELAY,
            call: None,
            actions: VecDeque::new(),
            status: CallStatus::default(),
        }
    }

    /// Our account.
    pub fn me(&self) -> &str {
        &self.cfg.me
    }

    /// The call as the core sees it.
    pub fn status(&self) -> &CallStatus {
        &self.status
    }

    /// The current call's id and the peer's (account, device), if there is a call.
    pub fn current_call(&self) -> Option<(CallId, &str, u32)> {
        self.call
            .as_ref()
            .map(|c| (c.id, c.peer.as_str(), c.device))
    }

    /// Whether `call` is the current, live call and waits for its relay join (a driver keeps
    /// the room's handle only then; a join that completes later is left at once).
    pub fn awaits_room(&self, call: CallId) -> bool {
        self.call
            .as_ref()
            .is_some_and(|c| c.id == call && !c.machine.is_ended() && c.room == RoomPhase::Joining)
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`CallCore::handle_timeout`] must run next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let c = self.call.as_ref()?;
        let gaps = c
            .inbound
            .values()
            .filter_map(|i| i.gap_since.map(|t| t + REORDER_GAP_WAIT));
        [c.machine.poll_timeout(), c.keys.next_deadline()]
            .into_iter()
            .flatten()
            .chain(gaps)
            .min()
    }

    /// Fires whatever is due at `now`: ring and connect timeouts, key activations and leaver
    /// key expiry, message gaps given up on.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(c) = self.call.as_mut() else { return };
        let outs = c.machine.handle_timeout(now);
        let keys = c.keys.poll(now);
        self.apply(outs, now);
        match keys {
            Ok(k) => self.apply_keys(k),
            Err(e) => self.notify(Notice::Error(CallError::Keys(e))),
        }
        let due: Vec<String> = self
            .call
            .as_ref()
            .map(|c| {
                c.inbound
                    .iter()
                    .filter(|(_, i)| i.gap_since.is_some_and(|t| t + REORDER_GAP_WAIT <= now))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        for from in due {
            let Some(inb) = self.call.as_mut().and_then(|c| c.inbound.get_mut(&from)) else {
                continue;
            };
            let (msgs, missing) = inb.reorder.skip_gap();
            inb.gap_since = (inb.reorder.held() > 0).then_some(now);
            self.notify(Notice::Dropped(Dropped::GapSkipped {
                from: from.clone(),
                missing,
            }));
            for m in msgs {
                self.dispatch(&from, m, now);
            }
        }
        self.refresh_status();
    }

    /// Takes one event at `now`.
    pub fn handle(&mut self, event: Event, now: Instant) {
        match event {
            Event::Command(c) => self.on_command(c, now),
            Event::Message {
                from,
                device,
                message,
            } => self.on_message(&from, device, message, now),
            Event::OpenFailed {
                from,
                untrusted_identity,
                why,
            } => {
                if untrusted_identity {
                    self.notify(Notice::IdentityChanged(from.clone()));
                }
                self.notify(Notice::Dropped(Dropped::Unopenable { from, why }));
            }
            Event::IdentityChecked {
                call,
                user,
                verdict,
            } => self.on_identity(call, &user, verdict, now),
            Event::SendFailed {
                call,
                to,
                kind,
                identity_changed,
                why,
            } => {
                if identity_changed {
                    self.notify(Notice::IdentityChanged(to.clone()));
                }
                let peer =
                    self.is_current(call) && self.call.as_ref().is_some_and(|c| c.peer == to);
                let err = CallError::Send { to, kind, why };
                if peer {
                    self.fail(err, now);
                } else {
                    self.notify(Notice::Error(err));
                }
            }
            Event::MediaReady { call, result } => self.on_media_ready(call, result, now),
            Event::LocalDescription { call, result } => {
                if !self.is_current(call) {
                    return;
                }
                match result {
                    Ok(sdp) => self.send_description(sdp, None, now),
                    Err(e) => self.fail(e, now),
                }
            }
            Event::AnswerApplied { call, result } => {
                if let (true, Err(e)) = (self.is_current(call), result) {
                    self.fail(e, now);
                }
            }
            Event::RelayTokens { call, result } => self.on_relay_tokens(call, result, now),
            Event::RelayJoined { call, result } => self.on_relay_joined(call, result, now),
            Event::Room { call, event } => {
                if self.is_current(call) {
                    self.on_room(event, now);
                }
            }
            Event::Media { call, signal } => {
                if self.is_current(call) {
                    self.on_media(signal, now);
                }
            }
        }
        self.refresh_status();
    }

    // ---- plumbing -------------------------------------------------------------------------

    fn is_current(&self, call: CallId) -> bool {
        self.call.as_ref().is_some_and(|c| c.id == call)
    }

    fn notify(&mut self, n: Notice) {
        self.actions.push_back(Action::Notify(n));
    }

    fn busy(&self) -> bool {
        self.call.as_ref().is_some_and(|c| !c.machine.is_ended())
    }

    /// Sends `body` in the current call to `to` (the peer's device, or device 1 of a member).
    fn send(&mut self, to: &str, body: Body) {
        let Some(c) = self.call.as_mut() else { return };
        let device = if to == c.peer { c.device } else { 1 };
        let seq = c.next_seq(to);
        let message = CallMessage::new(c.id, seq, body);
        self.actions.push_back(Action::Send {
            call: c.id,
            to: to.to_owned(),
            device,
            message,
        });
    }

    /// A media action for the current call: now if the media exists, else held in order.
    fn media(&mut self, action: MediaAction) {
        let Some(c) = self.call.as_mut() else { return };
        match c.media {
            MediaPhase::Ready => self.actions.push_back(Action::Media { call: c.id, action }),
            MediaPhase::None | MediaPhase::Creating if c.held_media.len() < MAX_HELD_MEDIA => {
                c.held_media.push(action)
            }
            MediaPhase::None | MediaPhase::Creating => {
                self.actions
                    .push_back(Action::Notify(Notice::Dropped(Dropped::HeldMediaFull)));
            }
            MediaPhase::Closed => {}
        }
    }

    /// Carries out the key schedule's outputs.
    fn apply_keys(&mut self, outs: Vec<GroupOutput>) {
        for o in outs {
            match o {
                GroupOutput::SendKey { to, material } => self.send(
                    &to,
                    Body::MediaKey {
                        media_key: material,
                    },
                ),
                GroupOutput::UseSendKey { material } => {
                    let g = material.id.generation;
                    let rotated = g > 0 && material.id.step == 0;
                    self.media(MediaAction::UseSendKey(material));
                    if rotated {
                        self.notify(Notice::KeyRotated(g));
                    }
                }
                GroupOutput::InstallKey { from, material } => {
                    let generation = material.id.generation;
                    self.media(MediaAction::InstallKey(material));
                    self.notify(Notice::PeerKey { from, generation });
                }
                GroupOutput::ForgetSender { sender } => {
                    self.media(MediaAction::ForgetSender(sender))
                }
            }
        }
    }

    /// A fresh key schedule for a new call.
    fn new_keys(&mut self) -> Result<GroupKeys, CallError> {
        let mut base = Zeroizing::new([0u8; FRESH_KEY_SIZE]);
        self.rng.fill_bytes(&mut *base);
        let me = self.cfg.me.clone();
        let mut keys = GroupKeys::new(&me, self.cfg.suite, &[(sender_id_for(&me), &base[..])])
            .map_err(CallError::Keys)?;
        keys.set_activation_delay(self.activation_delay);
        Ok(keys)
    }

    /// Whether we connect to `url`, a relay a peer named in its offer.
    pub(crate) fn acceptable_peer_relay(&self, url: &str) -> bool {
        self.cfg.relay.as_ref().and_then(RelayChoice::url) == Some(url)
            || sotto_tls::is_tls_url(url)
            || (self.cfg.allow_plain_loopback_relays && sotto_tls::is_plain_loopback(url))
    }

    fn new_call_id(&mut self) -> CallId {
        let mut id = [0u8; 16];
        self.rng.fill_bytes(&mut id);
        CallId(id)
    }

    fn refresh_status(&mut self) {
        let Some(c) = &self.call else { return };
        let state = CallState::from(c.machine.state());
        let end_reason = match c.machine.state() {
            State::Ended(r) => Some(r.clone()),
            _ => None,
        };
        let changed = self.status.state != state;
        self.status.peer = Some(c.peer.clone());
        self.status.state = state;
        self.status.end_reason = end_reason;
        self.status.members = c.members.clone();
        if changed {
            self.notify(Notice::State(state));
        }
    }

    /// Ends the call with `err` if it is still being set up (a connected call goes on).
    fn fail(&mut self, err: CallError, now: Instant) {
        let outs = match self.call.as_mut() {
            Some(c) => c
                .machine
                .handle(Input::SetupFailed(err.to_string()), now)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        self.notify(Notice::Error(err));
        self.apply(outs, now);
    }

    /// Feeds `input` to the machine; an illegal one is dropped with a notice.
    fn input(&mut self, input: Input, now: Instant) {
        let Some(c) = self.call.as_mut() else { return };
        match c.machine.handle(input, now) {
            Ok(outs) => self.apply(outs, now),
            Err(e) => self.notify(Notice::Dropped(Dropped::Illegal(e))),
        }
    }

    /// Carries out the state machine's outputs.
    fn apply(&mut self, outs: Vec<Output>, now: Instant) {
        for out in outs {
            let Some(c) = self.call.as_mut() else { return };
            match out {
                Output::SendOffer => {
                    c.awaiting_identity = Some(IdentityPurpose::Offer);
                    let (call, user) = (c.id, c.peer.clone());
                    self.actions.push_back(Action::CheckIdentity { call, user });
                }
                Output::Ring => {
                    let peer = c.peer.clone();
                    self.notify(Notice::Incoming(peer));
                }
                Output::SendRinging => {
                    let peer = c.peer.clone();
                    self.send(&peer, Body::Ringing);
                }
                Output::SendAnswer => self.create_media(),
                // through a relay our media may be up before the answer arrives
                Output::ApplyAnswer => self.media_progress(now),
                Output::SendReject => {
                    let peer = c.peer.clone();
                    self.send(&peer, Body::Reject);
                }
                Output::SendHangup => {
                    let hangup = || Body::Hangup {
                        reason: "hangup".into(),
                    };
                    let (peer, rekeyed) = (c.peer.clone(), c.peer_rekeyed);
                    let others: Vec<String> =
                        c.members.iter().filter(|m| **m != peer).cloned().collect();
                    if !rekeyed {
                        self.send(&peer, hangup());
                    }
                    for m in others {
                        self.send(&m, hangup());
                    }
                }
                Output::StopMedia => {
                    let id = c.id;
                    if c.media == MediaPhase::Ready {
                        self.actions.push_back(Action::Media {
                            call: id,
                            action: MediaAction::Close,
                        });
                    }
                    c.held_media.clear();
                    // a media still being created is closed when it reports ready
                    if c.media != MediaPhase::Creating {
                        c.media = MediaPhase::Closed;
                    }
                    if c.room != RoomPhase::None {
                        c.room = RoomPhase::None;
                        self.actions.push_back(Action::LeaveRoom { call: id });
                    }
                    self.status.calls_ended += 1;
                }
            }
        }
    }

    fn create_media(&mut self) {
        let Some(c) = self.call.as_mut() else { return };
        if c.media != MediaPhase::None {
            return;
        }
        c.media = MediaPhase::Creating;
        let call = c.id;
        self.actions.push_back(Action::Media {
            call,
            action: MediaAction::Create,
        });
    }

    // ---- commands ------------------------------------------------------------------------

    fn on_command(&mut self, cmd: UserCommand, now: Instant) {
        match cmd {
            UserCommand::Dial(peer) => {
                if self.busy() {
                    return self.notify(Notice::Error(CallError::AlreadyInCall));
                }
                // through a relay, receivers tell members apart by sender id; peer to peer the
                // ring holds only the peer's keys, so equal ids are fine there
                let me = self.cfg.me.clone();
                if self.cfg.relay.is_some() && sender_id_for(&peer) == sender_id_for(&me) {
                    return self.notify(Notice::Error(CallError::SenderIdClash {
                        user: peer,
                        other: me,
                    }));
                }
                let keys = match self.new_keys() {
                    Ok(k) => k,
                    Err(e) => return self.notify(Notice::Error(e)),
                };
                let id = self.new_call_id();
                let mut machine = (self.cfg.machine)(Role::Caller);
                let outs = machine.handle(Input::Dial, now).unwrap_or_default();
                let mut call = Call::new(id, peer, 1, machine, keys, now);
                call.relay = self.cfg.relay.clone();
                call.pairwise = call.relay.is_none();
                call.keys.set_pairwise(call.pairwise);
                self.call = Some(call);
                self.status.setup_time = None;
                self.status.audio_muted = false;
                self.status.video_muted = false;
                self.status.peer_audio_muted = false;
                self.status.peer_video_muted = false;
                self.refresh_status();
                self.apply(outs, now);
            }
            UserCommand::Answer | UserCommand::Reject | UserCommand::Hangup => {
                let input = match cmd {
                    UserCommand::Answer => Input::Accept,
                    UserCommand::Reject => Input::Reject,
                    _ => Input::Hangup,
                };
                let Some(c) = self.call.as_mut() else {
                    return self.notify(Notice::Error(CallError::NoCall));
                };
                match c.machine.handle(input, now) {
                    Ok(outs) => self.apply(outs, now),
                    Err(e) => self.notify(Notice::Error(CallError::Illegal(e))),
                }
            }
            UserCommand::MuteAudio(m) | UserCommand::MuteVideo(m) => {
                if matches!(cmd, UserCommand::MuteAudio(_)) {
                    self.status.audio_muted = m;
                } else {
                    self.status.video_muted = m;
                }
                let (audio, video) = (self.status.audio_muted, self.status.video_muted);
                if self.busy() {
                    self.media(MediaAction::SetMuted { audio, video });
                    if let Some(peer) = self.call.as_ref().map(|c| c.peer.clone()) {
                        self.send(&peer, Body::Mute { audio, video });
                    }
                }
            }
            UserCommand::RotateKey => self.rotate(now),
            UserCommand::Invite(user) => self.invite(user),
            UserCommand::SetKeyActivationDelay(d) => {
                self.activation_delay = d.min(MAX_KEY_ACTIVATION_DELAY);
                let d = self.activation_delay;
                if let Some(c) = self.call.as_mut() {
                    c.keys.set_activation_delay(d);
                }
            }
        }
    }

    fn rotate(&mut self, now: Instant) {
        let Some(c) = self.call.as_mut() else {
            return self.notify(Notice::Error(CallError::NoMedia));
        };
        if c.media != MediaPhase::Ready || c.machine.is_ended() {
            return self.notify(Notice::Error(CallError::NoMedia));
        }
        match c.keys.rotate(now, &mut self.rng) {
            Ok(outs) => self.apply_keys(outs),
            Err(e) => self.notify(Notice::Error(CallError::Keys(e))),
        }
    }

    // ---- results of actions ---------------------------------------------------------------

    fn on_identity(&mut self, call: CallId, user: &str, verdict: IdentityVerdict, now: Instant) {
        let Some(c) = self.call.as_mut().filter(|c| c.id == call) else {
            return;
        };
        let Some(purpose) = c.awaiting_identity.take() else {
            return;
        };
        let asked = match &purpose {
            IdentityPurpose::Offer => c.peer.clone(),
            IdentityPurpose::Invite(u) => u.clone(),
        };
        if asked != user {
            // a verdict about someone else (an earlier question): keep waiting for ours
            c.awaiting_identity = Some(purpose);
            return;
        }
        match (purpose, verdict) {
            (IdentityPurpose::Offer, IdentityVerdict::Changed) => {
                c.peer_rekeyed = true;
                self.notify(Notice::IdentityChanged(user.to_owned()));
                self.fail(CallError::IdentityChanged(user.to_owned()), now);
            }
            (IdentityPurpose::Offer, _) => {
                if c.machine.state() == &State::Outgoing {
                    self.create_media();
                }
            }
            (IdentityPurpose::Invite(u), IdentityVerdict::Changed) => {
                self.notify(Notice::IdentityChanged(u));
            }
            (IdentityPurpose::Invite(u), _) => self.continue_invite(u, now),
        }
    }

    fn on_media_ready(&mut self, call: CallId, result: Result<bool, CallError>, now: Instant) {
        let Some(c) = self.call.as_mut().filter(|c| c.id == call) else {
            // a media for a call that is gone: release it
            self.actions.push_back(Action::Media {
                call,
                action: MediaAction::Close,
            });
            return;
        };
        if c.media != MediaPhase::Creating {
            if c.media == MediaPhase::Closed || c.machine.is_ended() {
                self.actions.push_back(Action::Media {
                    call,
                    action: MediaAction::Close,
                });
            }
            return;
        }
        if c.machine.is_ended() {
            c.media = MediaPhase::Closed;
            self.actions.push_back(Action::Media {
                call,
                action: MediaAction::Close,
            });
            return;
        }
        let relay_only = match result {
            Ok(r) => r,
            Err(e) => {
                c.media = MediaPhase::Closed;
                return self.fail(e, now);
            }
        };
        c.media = MediaPhase::Ready;
        c.relay_only = relay_only;
        // our key first, then what waited (peer keys, candidates), in order
        let mut first: Vec<MediaAction> = c
            .keys
            .use_current()
            .into_iter()
            .filter_map(|o| match o {
                GroupOutput::UseSendKey { material } => Some(MediaAction::UseSendKey(material)),
                _ => None,
            })
            .collect();
        // the key in force now supersedes any key change that waited for the media
        first.extend(
            std::mem::take(&mut c.held_media)
                .into_iter()
                .filter(|a| !matches!(a, MediaAction::UseSendKey(_))),
        );
        for action in first {
            self.actions.push_back(Action::Media { call, action });
        }
        let Some(c) = self.call.as_mut() else { return };
        if let Some(relay) = c.relay.clone() {
            let room = c.id.to_string();
            if c.role() == Role::Callee {
                // a callee's relay is the URL its offer named
                let Some(url) = relay.url().map(str::to_owned) else {
                    return;
                };
                // our token came with the offer
                c.remote_offer = None;
                c.room = RoomPhase::Joining;
                let token = c.relay_token.clone();
                self.actions.push_back(Action::JoinRoom {
                    call,
                    url,
                    room,
                    token,
                });
            } else {
                // the caller claims the room at the server: tokens for us and the callee
                c.room = RoomPhase::Tokens;
                c.awaiting_tokens = Some(TokenPurpose::Join);
                let participants = vec![self.cfg.me.clone(), c.peer.clone()];
                self.actions.push_back(Action::RequestRelayTokens {
                    call,
                    url: relay.url().map(str::to_owned),
                    room,
                    participants,
                });
            }
            return;
        }
        match c.role() {
            Role::Caller => self.media(MediaAction::CreateOffer),
            Role::Callee => {
                let Some(offer) = c.remote_offer.take() else {
                    return;
                };
                let held = std::mem::take(&mut c.pending_candidates);
                self.media(MediaAction::AcceptOffer { sdp: offer.sdp });
                for candidate in held {
                    self.media(MediaAction::AddCandidate { candidate });
                }
            }
        }
    }

    /// Our SDP (or, through a relay, none) is ready: the offer or the answer goes out with our
    /// key for the peer.
    fn send_description(&mut self, sdp: String, relay: Option<String>, now: Instant) {
        let Some(c) = self.call.as_mut() else { return };
        if c.machine.is_ended() {
            return;
        }
        let peer = c.peer.clone();
        let outs = match c.keys.member_present(&peer) {
            Ok(o) => o,
            Err(e) => return self.fail(CallError::Keys(e), now),
        };
        // the first key for the peer rides in the offer/answer, the rest as media keys
        let mut key: Option<KeyMaterial> = None;
        let mut rest = Vec::new();
        for o in outs {
            match o {
                GroupOutput::SendKey { to, material } if to == peer && key.is_none() => {
                    key = Some(material)
                }
                o => rest.push(o),
            }
        }
        let Some(key) = key else {
            return self.fail(CallError::Media("no key for the peer".into()), now);
        };
        let body = match c.role() {
            Role::Caller => Body::Offer {
                sdp,
                video: true,
                media_key: Some(key),
                relay_token: relay.as_ref().and(c.peer_token.take()),
                relay,
                members: Vec::new(),
            },
            Role::Callee => Body::Answer {
                sdp,
                media_key: key,
            },
        };
        self.send(&peer, body);
        self.apply_keys(rest);
    }

    /// The server's answer to [`Action::RequestRelayTokens`]: the caller joins with its own
    /// token (the callee's goes in the offer), an invitation goes out with the invitee's. A
    /// refusal ends a call being set up, or refuses the invitation (the call goes on).
    fn on_relay_tokens(
        &mut self,
        call: CallId,
        result: Result<TokenGrant, CallError>,
        now: Instant,
    ) {
        let me = self.cfg.me.clone();
        let Some(c) = self.call.as_mut().filter(|c| c.id == call) else {
            return;
        };
        let Some(purpose) = c.awaiting_tokens.take() else {
            return;
        };
        let TokenGrant { relay, mut tokens } = match result {
            Ok(t) => t,
            Err(e) => {
                return match purpose {
                    TokenPurpose::Join => {
                        c.room = RoomPhase::None;
                        self.fail(e, now)
                    }
                    TokenPurpose::Invite(_) => self.notify(Notice::Error(e)),
                };
            }
        };
        let mut take = |who: &str| {
            tokens
                .iter()
                .position(|(p, _)| p == who)
                .map(|i| tokens.swap_remove(i).1)
        };
        match purpose {
            TokenPurpose::Join => {
                if c.room != RoomPhase::Tokens || c.machine.is_ended() {
                    return;
                }
                let (mine, theirs) = (take(&me), take(&c.peer));
                // the relay the server placed the room at (the one we named, if we named one)
                let named = c.relay.as_ref().and_then(RelayChoice::url);
                let Some(mine) = mine.filter(|_| named.is_none_or(|n| n == relay)) else {
                    c.room = RoomPhase::None;
                    return self.fail(CallError::NoRelayToken(me), now);
                };
                let url = relay;
                c.relay = Some(RelayChoice::Url(url.clone()));
                c.relay_token = Some(mine.clone());
                c.peer_token = theirs;
                c.room = RoomPhase::Joining;
                let room = c.id.to_string();
                self.actions.push_back(Action::JoinRoom {
                    call,
                    url,
                    room,
                    token: Some(mine),
                });
            }
            TokenPurpose::Invite(user) => {
                // the invitee joins the call's relay: a token for another one is none
                let same = c.relay.as_ref().and_then(RelayChoice::url) == Some(relay.as_str());
                let token = take(&user).filter(|_| same);
                self.finish_invite(user, token, now);
            }
        }
    }

    fn on_relay_joined(
        &mut self,
        call: CallId,
        result: Result<Vec<String>, CallError>,
        now: Instant,
    ) {
        let me = self.cfg.me.clone();
        let Some(c) = self.call.as_mut().filter(|c| c.id == call) else {
            return;
        };
        if c.room != RoomPhase::Joining || c.machine.is_ended() {
            if result.is_ok() {
                self.actions.push_back(Action::LeaveRoom { call });
            }
            return;
        }
        let present = match result {
            Ok(p) => p,
            Err(e) => {
                c.room = RoomPhase::None;
                return self.fail(e, now);
            }
        };
        c.room = RoomPhase::Joined;
        c.present = present.into_iter().filter(|p| *p != me).collect();
        let url = c
            .relay
            .as_ref()
            .and_then(RelayChoice::url)
            .map(str::to_owned);
        let members = c.members.clone();
        let role = c.role();
        self.send_description(String::new(), url.filter(|_| role == Role::Caller), now);
        if role == Role::Callee {
            // the members the relay has in the room get our key now, the others when it
            // admits them
            for m in members {
                self.give_key(&m, now);
            }
        }
    }

    fn on_media(&mut self, signal: MediaSignal, now: Instant) {
        let Some(c) = self.call.as_mut() else { return };
        match signal {
            MediaSignal::Connected => {
                c.media_up = true;
                self.media_progress(now);
            }
            MediaSignal::Failed => {
                if matches!(c.machine.state(), State::Connecting | State::Connected) {
                    self.input(Input::MediaFailed, now);
                }
            }
            MediaSignal::LocalCandidate(json) => {
                if c.via_relay() || c.machine.is_ended() {
                    return;
                }
                if json.contains("typ relay") {
                    c.relay_candidate = true;
                }
                let peer = c.peer.clone();
                self.send(&peer, Body::Candidate { candidate: json });
            }
            MediaSignal::GatheringComplete => {
                if !c.via_relay() && !c.relay_candidate && c.relay_only {
                    self.fail(CallError::NoRelayCandidate, now);
                }
            }
            MediaSignal::RotationNeeded => self.rotate(now),
            MediaSignal::FirstFrameDecrypted(MediaKind::Video) => {
                if self.status.setup_time.is_none() {
                    self.status.setup_time = Some(now.saturating_duration_since(c.started));
                }
            }
            MediaSignal::FirstFrameDecrypted(_) => {}
        }
    }

    /// Media is up and the call answered: tell the machine, then start sending.
    fn media_progress(&mut self, now: Instant) {
        let Some(c) = self.call.as_mut() else { return };
        if !c.media_up {
            return;
        }
        if c.machine.state() == &State::Connecting {
            if let Ok(outs) = c.machine.handle(Input::MediaConnected, now) {
                self.apply(outs, now);
            }
        }
        let Some(c) = self.call.as_mut() else { return };
        if c.machine.state() == &State::Connected && !c.sending {
            c.sending = true;
            let (audio_muted, video_muted) = (self.status.audio_muted, self.status.video_muted);
            self.media(MediaAction::StartSending {
                audio_muted,
                video_muted,
            });
        }
    }
}
