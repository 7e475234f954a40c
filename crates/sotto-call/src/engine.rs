//! The call engine: one task per device that ties the signaling connection, the sealed call
//! messages, the call state machine and the SFrame media together.
//!
//! Drive it with [`Command`]s; watch it through [`Status`] (a `watch` channel) and [`Notice`]s.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sotto_frame::KeyMaterial;
use tokio::sync::{mpsc, watch};

use crate::media::{IvfSource, MediaConfig, MediaEvent, MediaEvents, MediaPeer, MediaStats};
use crate::messages::{Body, CallId, CallMessage};
use crate::sealed::{Device, SealedError};
use crate::state::{glare_we_win, CallMachine, Input, Output, Role, State};

/// How long a new sender key overlaps the old one before we switch (the peer installs it first).
pub const KEY_ACTIVATION_DELAY: Duration = Duration::from_millis(500);
/// How often stats are refreshed while media runs.
pub const STATS_INTERVAL: Duration = Duration::from_millis(500);

/// How often a running engine refreshes its device's signed and Kyber prekeys
/// ([`Device::refresh_signed_prekeys`](crate::sealed::Device::refresh_signed_prekeys): rotated
/// when a week old), so a device that stays signed in for weeks still rotates them.
pub const PREKEY_REFRESH_INTERVAL: Duration = Duration::from_secs(3600);

/// What the user (or a script) asks for.
#[derive(Debug)]
#[non_exhaustive]
pub enum Command {
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
    /// Replace the video source.
    SwitchSource(IvfSource),
    /// Rotate our media key now (normally done when the counter runs low).
    RotateKey,
    /// Group call: invite `user` into our call (needs a call through a relay).
    Invite(String),
    /// Audit and test hook: every media key this device receives from now on, in any call
    /// message (offer, answer, media key), is also sent here as received, whether or not it is
    /// used. Never printed (`KeyMaterial`'s `Debug` redacts the key).
    LogReceivedKeys(mpsc::UnboundedSender<KeyMaterial>),
    /// How long after handing a fresh key (a member left) to the members who remain this device
    /// switches to it; [`KEY_ACTIVATION_DELAY`] unless set, capped at [`MAX_KEY_ACTIVATION_DELAY`].
    /// Longer gives receivers behind slow links more time to get the key first (and lets a test
    /// widen the window in which a join races a pending rotation).
    SetKeyActivationDelay(Duration),
}

/// Upper bound for [`Command::SetKeyActivationDelay`]: the leaver can read our media until the
/// switch, so the switch is never put off for longer than this.
pub const MAX_KEY_ACTIVATION_DELAY: Duration = Duration::from_secs(5);

/// A snapshot of the device's call, for screens and reports.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Our account.
    pub me: String,
    /// The other party of the current (or last) call.
    pub peer: Option<String>,
    /// `idle`, `ringing`, `incoming`, `connecting`, `connected` or `ended`.
    pub state: String,
    /// Why the call ended.
    pub end_reason: Option<String>,
    /// Safety number with the peer.
    pub safety_number: Option<String>,
    /// Our mute flags.
    pub audio_muted: bool,
    /// Our mute flags.
    pub video_muted: bool,
    /// The peer's announced mute flags.
    pub peer_audio_muted: bool,
    /// The peer's announced mute flags.
    pub peer_video_muted: bool,
    /// Current video source.
    pub source: Option<String>,
    /// Media statistics (kept after the call ends).
    pub media: Option<MediaStats>,
    /// Dial (or offer arrival) to first decrypted video frame.
    pub setup_time: Option<Duration>,
    /// Number of calls that ended.
    pub calls_ended: u32,
}

/// Things worth telling the user as they happen.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// Someone calls.
    Incoming(String),
    /// The state changed.
    State(String),
    /// A message that failed to open or made no sense (dropped and acknowledged).
    Dropped(String),
    /// Our media key rotated to this generation.
    KeyRotated(u64),
    /// The peer rotated; we installed its generation.
    PeerKey(u64),
    /// Group membership changed.
    Member(String),
    /// Something the user asked for failed.
    Error(String),
    /// This account's identity key is no longer the one we pinned (a reinstall, or someone
    /// substituting keys): nothing is sent to or accepted from the new key until the user
    /// compares the new safety number and trusts it ([`Device::trust_identity`]).
    IdentityChanged(String),
}

/// Builds the media configuration for each call (sources, ICE servers, recording paths).
pub type MediaFactory = Box<dyn Fn(u64) -> Result<MediaConfig, crate::media::MediaError> + Send>;

/// Handle to a running engine.
pub struct Engine {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Status>,
    notices: mpsc::UnboundedReceiver<Notice>,
}

impl Engine {
    /// Starts the engine task for `device`.
    pub fn spawn(
        device: Device,
        events: sotto_server::Events,
        media: MediaFactory,
        machine: fn(Role) -> CallMachine,
    ) -> Engine {
        Self::spawn_with_relay(device, events, media, machine, None)
    }

    /// As [`Engine::spawn`]; calls this device places send their media through the sotto-relay
    /// at `relay` (control URL) instead of peer to peer.
    pub fn spawn_with_relay(
        device: Device,
        events: sotto_server::Events,
        media: MediaFactory,
        machine: fn(Role) -> CallMachine,
        relay: Option<String>,
    ) -> Engine {
        let (ctx, crx) = mpsc::channel(32);
        let (stx, srx) = watch::channel(Status {
            me: device.username().to_string(),
            state: "idle".into(),
            ..Status::default()
        });
        let (ntx, nrx) = mpsc::unbounded_channel();
        let task = Task {
            device: Arc::new(device),
            events,
            commands: crx,
            status: stx,
            notices: ntx,
            media_factory: media,
            machine,
            relay,
            call: None,
            key_log: None,
            key_activation_delay: KEY_ACTIVATION_DELAY,
        };
        tokio::spawn(task.run());
        Engine {
            commands: ctx,
            status: srx,
            notices: nrx,
        }
    }

    /// Sends a command.
    pub async fn command(&self, c: Command) {
        let _ = self.commands.send(c).await;
    }

    /// A command sender for other tasks.
    pub fn commands(&self) -> mpsc::Sender<Command> {
        self.commands.clone()
    }

    /// The status channel.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// The next notice.
    pub async fn notice(&mut self) -> Option<Notice> {
        self.notices.recv().await
    }

    /// Waits until the state word is `word` (or `limit` passes); returns the status then.
    pub async fn wait_state(&self, word: &str, limit: Duration) -> Option<Status> {
        let mut rx = self.status.clone();
        let fut = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if s.state == word {
                        return s.clone();
                    }
                }
                if rx.changed().await.is_err() {
                    return rx.borrow().clone();
                }
            }
        };
        tokio::time::timeout(limit, fut).await.ok()
    }
}

struct Call {
    id: CallId,
    peer: String,
    device: u32,
    machine: CallMachine,
    media: Option<Arc<MediaPeer>>,
    media_events: Option<MediaEvents>,
    remote_offer: Option<(String, String, Option<String>)>,
    /// Set when media goes through a relay room (dropping it leaves the room).
    room: Option<sotto_relay::client::RoomHandle>,
    media_up: bool,
    send_seq: u32,
    /// Highest sequence number seen per sender (group calls have several senders).
    recv_seq: std::collections::HashMap<String, u32>,
    /// Everyone else in the call (1:1: the peer; group: every member), device 1 each.
    members: Vec<String>,
    /// Media keys that arrived before our media existed (a member's key while we still ring).
    pending_keys: Vec<(String, String)>,
    /// Group: media keys from users of this call id who are not members (yet): a member's
    /// `add` for them may still be on its way. Installed if they become members.
    stranger_keys: Vec<(String, String)>,
    /// Group: who the relay says is in the room now (besides us).
    present: HashSet<String>,
    /// Group: members the relay admitted after us (they get a ratcheted key).
    late: HashSet<String>,
    /// Group: members we gave our current sender key (generation) to.
    keyed: HashSet<String>,
    /// The relay's control channel closed (no more announcements to wait for).
    room_quiet: bool,
    /// Peer candidates that arrived before our media existed.
    pending_candidates: Vec<String>,
    /// The server binds another identity key to the peer than our session pins: nothing more
    /// is sent to the peer in this call (not even the hangup: the old session would carry it to
    /// a device that cannot open it).
    peer_rekeyed: bool,
    /// A relay (TURN) candidate of ours was gathered.
    relay_candidate: bool,
    started: Instant,
    rotation_due: Option<Instant>,
    sending: bool,
}

impl Call {
    fn new(
        id: CallId,
        peer: String,
        device: u32,
        machine: CallMachine,
        members: Vec<String>,
        now: Instant,
    ) -> Self {
        Call {
            id,
            peer,
            device,
            machine,
            media: None,
            media_events: None,
            remote_offer: None,
            room: None,
            media_up: false,
            send_seq: 0,
            recv_seq: Default::default(),
            members,
            pending_keys: Vec::new(),
            stranger_keys: Vec::new(),
            present: HashSet::new(),
            late: HashSet::new(),
            keyed: HashSet::new(),
            room_quiet: false,
            pending_candidates: Vec::new(),
            peer_rekeyed: false,
            relay_candidate: false,
            started: now,
            rotation_due: None,
            sending: false,
        }
    }
}

struct Task {
    device: Arc<Device>,
    events: sotto_server::Events,
    commands: mpsc::Receiver<Command>,
    status: watch::Sender<Status>,
    notices: mpsc::UnboundedSender<Notice>,
    media_factory: MediaFactory,
    machine: fn(Role) -> CallMachine,
    relay: Option<String>,
    call: Option<Call>,
    key_log: Option<mpsc::UnboundedSender<KeyMaterial>>,
    key_activation_delay: Duration,
}

/// Something from the current call's media or relay room.
enum CallEvent {
    Media(Option<MediaEvent>),
    Room(Option<sotto_relay::protocol::ServerMsg>),
}

/// The SFrame sender id of user `name` in every call: 16 bits of an FNV-1a hash of the name,
/// never 0 (short KIDs). Each receiver checks that a member's keys carry that member's id
/// (a member cannot claim another's id, i.e. pass its frames off as the other's), and no one
/// adds a member whose id equals its own or another member's ([`sender_id_clash`]).
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

/// Checks that key material from `from` is for `from`'s own sender id.
fn check_key_owner(from: &str, m: &KeyMaterial) -> Result<(), String> {
    if m.id.sender != sender_id_for(from) {
        return Err(format!(
            "key from {from} for sender id {}, not its own ({})",
            m.id.sender,
            sender_id_for(from)
        ));
    }
    Ok(())
}

impl Task {
    fn notice(&self, n: Notice) {
        let _ = self.notices.send(n);
    }

    fn publish(&self) {
        let Some(call) = &self.call else { return };
        let word = call.machine.state().word().to_string();
        let reason = match call.machine.state() {
            State::Ended(r) => Some(r.to_string()),
            _ => None,
        };
        let safety = self.device.safety_number(&call.peer, call.device);
        let changed = self.status.borrow().state != word;
        self.status.send_modify(|s| {
            s.peer = Some(call.peer.clone());
            s.state = word.clone();
            s.end_reason = reason;
            if safety.is_some() {
                s.safety_number = safety;
            }
        });
        if changed {
            self.notice(Notice::State(word));
        }
    }

    async fn run(mut self) {
        let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
        let mut prekey_tick = tokio::time::interval_at(
            tokio::time::Instant::now() + PREKEY_REFRESH_INTERVAL,
            PREKEY_REFRESH_INTERVAL,
        );
        loop {
            let deadline = self.call.as_ref().and_then(|c| {
                [c.machine.poll_timeout(), c.rotation_due]
                    .into_iter()
                    .flatten()
                    .min()
            });
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let call_event = async {
                let Some(c) = self.call.as_mut() else {
                    return std::future::pending().await;
                };
                let (media, room) = (
                    &mut c.media_events,
                    c.room.as_mut().filter(|_| !c.room_quiet),
                );
                let media = async {
                    match media.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let room = async {
                    match room {
                        Some(r) => r.events.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    ev = media => CallEvent::Media(ev),
                    ev = room => CallEvent::Room(ev),
                }
            };
            tokio::select! {
                ev = self.events.next() => {
                    match ev {
                        None => return,
                        Some(sotto_server::Event::Envelope(env)) => self.on_envelope(env).await,
                        Some(sotto_server::Event::PrekeysLow { .. }) => {
                            if let Err(e) = self.device.replenish_prekeys().await {
                                self.notice(Notice::Error(format!("publishing prekeys: {e}")));
                            }
                        }
                        Some(_) => {}
                    }
                }
                cmd = self.commands.recv() => {
                    let Some(cmd) = cmd else { return };
                    self.on_command(cmd).await;
                }
                ev = call_event => match ev {
                    CallEvent::Media(Some(ev)) => self.on_media(ev).await,
                    CallEvent::Media(None) => {
                        if let Some(c) = self.call.as_mut() { c.media_events = None; }
                    }
                    CallEvent::Room(Some(ev)) => self.on_room(ev).await,
                    // the relay's control channel closed: nothing more will be announced
                    CallEvent::Room(None) => {
                        if let Some(c) = self.call.as_mut() { c.room_quiet = true; }
                    }
                },
                _ = sleep => self.on_timer().await,
                _ = stats_tick.tick() => self.refresh_stats().await,
                _ = prekey_tick.tick() => {
                    if let Err(e) = self.device.refresh_signed_prekeys(std::time::SystemTime::now()).await {
                        self.notice(Notice::Error(format!("refreshing prekeys: {e}")));
                    }
                }
            }
            self.publish();
        }
    }

    async fn refresh_stats(&mut self) {
        let Some(call) = &self.call else { return };
        let Some(media) = &call.media else { return };
        let st = media.stats().await;
        let setup = if st.video.frames_decrypted > 0 {
            Some(())
        } else {
            None
        };
        let started = call.started;
        let source = media.video_source_name();
        self.status.send_modify(|s| {
            if setup.is_some() && s.setup_time.is_none() {
                s.setup_time = Some(started.elapsed());
            }
            s.source = source;
            s.media = Some(st);
        });
    }

    async fn send(&mut self, body: Body) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let msg = CallMessage::new(call.id, call.send_seq, body);
        call.send_seq += 1;
        let (peer, device) = (call.peer.clone(), call.device);
        if let Err(e) = self.device.send(&peer, device, &msg).await {
            if let SealedError::IdentityChanged(who) = &e {
                self.notice(Notice::IdentityChanged(who.clone()));
            }
            self.notice(Notice::Error(format!(
                "sending {} failed: {e}",
                msg.body.kind()
            )));
            if let Some(call) = self.call.as_mut() {
                let outs = call
                    .machine
                    .handle(Input::SetupFailed(e.to_string()), Instant::now())
                    .unwrap_or_default();
                Box::pin(self.apply(outs)).await;
            }
        }
    }

    /// Before offering a call to `user`: false (with [`Notice::IdentityChanged`]) if the server
    /// now binds another identity key to `user` than the one our session pins. Other failures
    /// of the check are logged and let the call go on: the session itself stays authenticated.
    async fn identity_unchanged(&mut self, user: &str) -> bool {
        match self.device.check_identity(user, 1).await {
            Ok(()) => true,
            Err(SealedError::IdentityChanged(who)) => {
                self.notice(Notice::IdentityChanged(who));
                false
            }
            Err(e) => {
                tracing::debug!("identity check for {user} failed: {e}");
                true
            }
        }
    }

    /// Sends a call message to one member of a group call.
    async fn send_to(&mut self, user: &str, body: Body) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let msg = CallMessage::new(call.id, call.send_seq, body);
        call.send_seq += 1;
        if let Err(e) = self.device.send(user, 1, &msg).await {
            if let SealedError::IdentityChanged(who) = &e {
                self.notice(Notice::IdentityChanged(who.clone()));
            }
            self.notice(Notice::Error(format!(
                "sending {} to {user} failed: {e}",
                msg.body.kind()
            )));
        }
    }

    /// Invites `user` into our relay call. The offer carries no key of ours: every member
    /// (us included) gives `user` its key only once the relay has admitted `user`, ratcheted
    /// first ([`Task::give_key`]), so nothing captured before the admission opens with it.
    async fn invite(&mut self, user: String) {
        let Some(call) = self.call.as_ref() else {
            return self.notice(Notice::Error("no call".into()));
        };
        if call.machine.state() != &State::Connected || call.room.is_none() {
            return self.notice(Notice::Error(
                "invite needs a connected call through a relay".into(),
            ));
        }
        if !crate::messages::valid_member_name(&user) {
            return self.notice(Notice::Error(
                "cannot add: not an account name ([a-z0-9._-], at most MAX_MEMBER_NAME bytes)"
                    .into(),
            ));
        }
        if call.members.contains(&user) || call.members.len() >= crate::consts::MAX_GROUP_MEMBERS {
            return self.notice(Notice::Error(format!("cannot add {user}")));
        }
        let me = self.device.username().to_string();
        if let Some(other) = sender_id_clash(&user, &me, &call.members) {
            return self.notice(Notice::Error(format!(
                "cannot add {user}: its sender id equals {other}'s"
            )));
        }
        let Some(relay) = self.relay.clone() else {
            return;
        };
        let members = call.members.clone();
        if !self.identity_unchanged(&user).await {
            return;
        }
        // The offer first: the server delivers to the invitee in the order envelopes were
        // stored, so the members' keys (sent after they see `add`) arrive after the offer.
        self.send_to(
            &user,
            Body::Offer {
                sdp: String::new(),
                video: true,
                media_key: String::new(),
                relay: Some(relay),
                members: members.clone(),
            },
        )
        .await;
        for m in &members {
            self.send_to(m, Body::Add { user: user.clone() }).await;
        }
        if let Some(c) = self.call.as_mut() {
            c.members.push(user.clone());
        }
        self.notice(Notice::Member(format!("{user} invited")));
        self.give_key(&user).await;
    }

    /// Member `from` added `user`. We pass the `add` on to every other member (`from` may not
    /// know them all: two members inviting at once), take `user` as a member, install any key
    /// `user` sent before this arrived, and give `user` our key if the relay already admitted it.
    async fn member_added(&mut self, user: &str, from: &str) {
        let me = self.device.username().to_string();
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if user == me || call.members.iter().any(|m| m == user) {
            return;
        }
        if call.members.len() >= crate::consts::MAX_GROUP_MEMBERS {
            return self.notice(Notice::Dropped(format!("add {user}: group full")));
        }
        if let Some(other) = sender_id_clash(user, &me, &call.members) {
            let why = format!("add {user}: its sender id equals {other}'s");
            return self.notice(Notice::Dropped(why));
        }
        call.members.push(user.to_string());
        let others: Vec<String> = call
            .members
            .iter()
            .filter(|m| *m != user && *m != from)
            .cloned()
            .collect();
        let (early, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut call.stranger_keys)
            .into_iter()
            .partition(|(u, _)| u == user);
        call.stranger_keys = rest;
        for o in others {
            self.send_to(
                &o,
                Body::Add {
                    user: user.to_string(),
                },
            )
            .await;
        }
        for (u, k) in early {
            self.member_key(&u, k);
        }
        self.notice(Notice::Member(format!("{user} added by {from}")));
        self.give_key(user).await;
    }

    /// A member's media key: installed now, or when our media exists.
    fn member_key(&mut self, from: &str, key: String) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.media.is_none() {
            if call.pending_keys.len() < crate::consts::MAX_GROUP_MEMBERS * 2 {
                call.pending_keys.push((from.to_string(), key));
            }
            return;
        }
        match self.install_key(from, &key) {
            Ok(g) => self.notice(Notice::PeerKey(g)),
            Err(e) => self.notice(Notice::Dropped(format!("member key: {e}"))),
        }
    }

    /// Gives `user` our sender key, once: when `user` is a member (a member's sealed `add`, or
    /// our invite) *and* the relay has it in the room. If the relay admitted `user` after us, we
    /// ratchet first (RFC 9605 §5.1), so `user` cannot open what we sent before; otherwise it
    /// gets the current step (it was in the room when we joined: we sent nothing before it was
    /// there). A rotation still pending is given too (nothing was encrypted under it yet).
    async fn give_key(&mut self, user: &str) {
        let Some(call) = self.call.as_ref() else {
            return;
        };
        if call.keyed.contains(user)
            || !call.present.contains(user)
            || !call.members.iter().any(|m| m == user)
        {
            return;
        }
        let Some(media) = call.media.clone() else {
            return;
        };
        let late = call.late.contains(user);
        let material = if late {
            match media.ratchet_send_key() {
                Ok(k) => k,
                Err(e) => return self.notice(Notice::Error(format!("ratchet: {e}"))),
            }
        } else {
            media.local_key_material()
        };
        let pending = media.pending_key_material();
        if let Some(c) = self.call.as_mut() {
            c.keyed.insert(user.to_string());
        }
        for m in std::iter::once(material).chain(pending) {
            self.send_to(
                user,
                Body::MediaKey {
                    media_key: Self::key_hex(&m),
                },
            )
            .await;
        }
        self.notice(Notice::Member(if late {
            format!("{user} joined; our key ratcheted")
        } else {
            format!("{user} has our key")
        }));
    }

    /// What the relay says about the room: admissions and departures.
    async fn on_room(&mut self, ev: sotto_relay::protocol::ServerMsg) {
        use sotto_relay::protocol::ServerMsg;
        match ev {
            ServerMsg::MemberJoined { participant } => {
                if let Some(c) = self.call.as_mut() {
                    c.present.insert(participant.clone());
                    c.late.insert(participant.clone());
                }
                self.give_key(&participant).await;
            }
            // The relay forwards nothing more from or to them: rotate away from any key they
            // hold even if their own hangup never reaches us (safe to believe: the worst a
            // lying relay gets is a needless rotation).
            ServerMsg::MemberLeft { participant } => self.member_left(&participant).await,
            _ => {}
        }
    }

    /// `who` left a group call: if we ever gave it our key, draw a fresh key, give it only to
    /// the members who hold our key, switch to it after the key activation delay
    /// ([`KEY_ACTIVATION_DELAY`] unless [`Command::SetKeyActivationDelay`] changed it). Members
    /// who do not hold our key yet get it (with the rotation) from [`Task::give_key`].
    async fn member_left(&mut self, who: &str) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        call.present.remove(who);
        call.late.remove(who);
        if !call.members.iter().any(|m| m == who) {
            return;
        }
        call.members.retain(|m| m != who);
        let held_our_key = call.keyed.remove(who);
        if call.peer == who {
            if let Some(m) = call.members.first() {
                call.peer = m.clone();
            }
        }
        let remaining: Vec<String> = call
            .members
            .iter()
            .filter(|m| call.keyed.contains(*m))
            .cloned()
            .collect();
        let no_one_left = call.members.is_empty();
        let Some(media) = call.media.clone() else {
            return;
        };
        if no_one_left {
            self.notice(Notice::Member(format!("{who} left; no one else")));
            let outs = self
                .call
                .as_mut()
                .and_then(|c| c.machine.handle(Input::HangupReceived, Instant::now()).ok())
                .unwrap_or_default();
            return self.apply(outs).await;
        }
        if !held_our_key {
            return self.notice(Notice::Member(format!("{who} left (never had our key)")));
        }
        self.notice(Notice::Member(format!("{who} left; rotating our key")));
        match media.prepare_rotation() {
            Ok(m) => {
                let hexkey = Self::key_hex(&m);
                for r in &remaining {
                    self.send_to(
                        r,
                        Body::MediaKey {
                            media_key: hexkey.clone(),
                        },
                    )
                    .await;
                }
                let delay = self.key_activation_delay;
                if let Some(c) = self.call.as_mut() {
                    c.rotation_due = Some(Instant::now() + delay);
                }
            }
            Err(e) => self.notice(Notice::Error(format!("rotation: {e}"))),
        }
    }

    async fn new_media(&mut self) -> Result<(), String> {
        let me = self.device.username().to_string();
        let mut cfg = (self.media_factory)(sender_id_for(&me)).map_err(|e| e.to_string())?;
        // receivers check that our keys carry our own id
        cfg.sender_id = sender_id_for(&me);
        let (peer, events) = MediaPeer::new(cfg).await.map_err(|e| e.to_string())?;
        let pending = match self.call.as_mut() {
            Some(call) => {
                call.media = Some(Arc::new(peer));
                call.media_events = Some(events);
                std::mem::take(&mut call.pending_keys)
            }
            None => Vec::new(),
        };
        for (from, k) in pending {
            if let Err(e) = self.install_key(&from, &k) {
                self.notice(Notice::Dropped(format!("early member key: {e}")));
            }
        }
        Ok(())
    }

    fn key_hex(m: &KeyMaterial) -> String {
        hex::encode(&*m.to_bytes())
    }

    fn install_key(&self, from: &str, hexkey: &str) -> Result<u64, String> {
        let bytes = zeroize::Zeroizing::new(hex::decode(hexkey).map_err(|e| e.to_string())?);
        let m = KeyMaterial::from_bytes(&bytes).map_err(|e| e.to_string())?;
        check_key_owner(from, &m)?;
        let media = self
            .call
            .as_ref()
            .and_then(|c| c.media.clone())
            .ok_or("no media")?;
        media.install_remote_key(&m).map_err(|e| e.to_string())?;
        Ok(m.id.generation)
    }

    async fn fail(&mut self, why: String) {
        let now = Instant::now();
        let outs = match self.call.as_mut() {
            Some(c) => c
                .machine
                .handle(Input::SetupFailed(why.clone()), now)
                .unwrap_or_default(),
            None => vec![],
        };
        self.notice(Notice::Error(why));
        Box::pin(self.apply(outs)).await;
    }

    /// Carries out what the state machine asked for.
    async fn apply(&mut self, outs: Vec<Output>) {
        for out in outs {
            match out {
                Output::SendOffer => {
                    let peer = self
                        .call
                        .as_ref()
                        .map(|c| c.peer.clone())
                        .unwrap_or_default();
                    if !self.identity_unchanged(&peer).await {
                        if let Some(c) = self.call.as_mut() {
                            c.peer_rekeyed = true;
                        }
                        return self
                            .fail(format!(
                                "{peer}'s identity key changed: verify the safety number before calling"
                            ))
                            .await;
                    }
                    if let Err(e) = self.new_media().await {
                        return self.fail(format!("media setup: {e}")).await;
                    }
                    let Some(media) = self.call.as_ref().and_then(|c| c.media.clone()) else {
                        return;
                    };
                    let media_key = Self::key_hex(&media.local_key_material());
                    if let Some(c) = self.call.as_mut() {
                        let peer = c.peer.clone();
                        c.keyed.insert(peer);
                    }
                    if let Some(url) = self.relay.clone() {
                        if let Err(e) = self.join_room(&url).await {
                            return self.fail(format!("relay: {e}")).await;
                        }
                        self.send(Body::Offer {
                            sdp: String::new(),
                            video: true,
                            media_key,
                            relay: Some(url),
                            members: Vec::new(),
                        })
                        .await;
                    } else {
                        match media.create_offer_trickle().await {
                            Ok(sdp) => {
                                self.send(Body::Offer {
                                    sdp,
                                    video: true,
                                    media_key,
                                    relay: None,
                                    members: Vec::new(),
                                })
                                .await;
                            }
                            Err(e) => return self.fail(format!("offer: {e}")).await,
                        }
                    }
                }
                Output::Ring => {
                    let peer = self
                        .call
                        .as_ref()
                        .map(|c| c.peer.clone())
                        .unwrap_or_default();
                    self.notice(Notice::Incoming(peer));
                }
                Output::SendRinging => self.send(Body::Ringing).await,
                Output::SendAnswer => {
                    if let Err(e) = self.new_media().await {
                        return self.fail(format!("media setup: {e}")).await;
                    }
                    let Some(call) = self.call.as_mut() else {
                        return;
                    };
                    let Some((sdp, key, relay)) = call.remote_offer.take() else {
                        return;
                    };
                    let Some(media) = call.media.clone() else {
                        return;
                    };
                    // a group invite carries no key: the members give theirs once we are in
                    if !(key.is_empty() && relay.is_some()) {
                        let peer = call.peer.clone();
                        if let Err(e) = self.install_key(&peer, &key) {
                            return self.fail(format!("peer media key: {e}")).await;
                        }
                    }
                    if let Some(url) = relay {
                        if let Err(e) = self.join_room(&url).await {
                            return self.fail(format!("relay: {e}")).await;
                        }
                        let media_key = Self::key_hex(&media.local_key_material());
                        if let Some(c) = self.call.as_mut() {
                            let peer = c.peer.clone();
                            c.keyed.insert(peer);
                        }
                        self.send(Body::Answer {
                            sdp: String::new(),
                            media_key,
                        })
                        .await;
                        // the members the relay has in the room get our key now, the others
                        // when it admits them
                        let others: Vec<String> = self
                            .call
                            .as_ref()
                            .map(|c| c.members.clone())
                            .unwrap_or_default();
                        for m in others {
                            self.give_key(&m).await;
                        }
                        continue;
                    }
                    let answered = media.accept_offer_trickle(&sdp).await;
                    let held: Vec<String> = self
                        .call
                        .as_mut()
                        .map(|c| std::mem::take(&mut c.pending_candidates))
                        .unwrap_or_default();
                    for c in held {
                        if let Err(e) = media.add_remote_candidate(&c).await {
                            self.notice(Notice::Dropped(format!("peer candidate: {e}")));
                        }
                    }
                    match answered {
                        Ok(answer) => {
                            let media_key = Self::key_hex(&media.local_key_material());
                            self.send(Body::Answer {
                                sdp: answer,
                                media_key,
                            })
                            .await;
                        }
                        Err(e) => return self.fail(format!("answer: {e}")).await,
                    }
                }
                // through a relay our media may be up before the answer arrives: that
                // "connected" event was seen while still ringing, so check again now
                Output::ApplyAnswer => Box::pin(self.media_progress(Instant::now())).await,
                Output::SendReject => self.send(Body::Reject).await,
                Output::SendHangup => {
                    let others: Vec<String> = self
                        .call
                        .as_ref()
                        .map(|c| {
                            c.members
                                .iter()
                                .filter(|m| **m != c.peer)
                                .cloned()
                                .collect()
                        })
                        .unwrap_or_default();
                    if !self.call.as_ref().is_some_and(|c| c.peer_rekeyed) {
                        self.send(Body::Hangup {
                            reason: "hangup".into(),
                        })
                        .await;
                    }
                    for m in others {
                        self.send_to(
                            &m,
                            Body::Hangup {
                                reason: "hangup".into(),
                            },
                        )
                        .await;
                    }
                }
                Output::StopMedia => {
                    self.refresh_stats().await;
                    if let Some(m) = self.call.as_mut().and_then(|c| c.media.take()) {
                        let _ = m.close().await;
                    }
                    if let Some(c) = self.call.as_mut() {
                        c.media_events = None;
                        c.room = None;
                    }
                    self.status.send_modify(|s| s.calls_ended += 1);
                }
            }
        }
    }

    fn busy(&self) -> bool {
        self.call.as_ref().is_some_and(|c| !c.machine.is_ended())
    }

    async fn on_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Dial(peer) => {
                let peer_name = peer.clone();
                if self.busy() {
                    return self.notice(Notice::Error("already in a call".into()));
                }
                let mut machine = (self.machine)(Role::Caller);
                let outs = machine.handle(Input::Dial, now).unwrap_or_default();
                self.call = Some(Call::new(
                    CallId::random(),
                    peer,
                    1,
                    machine,
                    vec![peer_name.clone()],
                    now,
                ));
                self.status.send_modify(|s| {
                    s.setup_time = None;
                    s.media = None;
                    s.audio_muted = false;
                    s.video_muted = false;
                    s.peer_audio_muted = false;
                    s.peer_video_muted = false;
                });
                self.publish();
                self.apply(outs).await;
            }
            Command::Answer | Command::Reject | Command::Hangup => {
                let input = match cmd {
                    Command::Answer => Input::Accept,
                    Command::Reject => Input::Reject,
                    _ => Input::Hangup,
                };
                let res = match self.call.as_mut() {
                    Some(c) => c.machine.handle(input, now),
                    None => return self.notice(Notice::Error("no call".into())),
                };
                match res {
                    Ok(outs) => self.apply(outs).await,
                    Err(e) => self.notice(Notice::Error(e.to_string())),
                }
            }
            Command::MuteAudio(m) | Command::MuteVideo(m) => {
                let audio = matches!(cmd, Command::MuteAudio(_));
                if let Some(media) = self.call.as_ref().and_then(|c| c.media.clone()) {
                    if audio {
                        media.set_audio_muted(m);
                    } else {
                        media.set_video_muted(m);
                    }
                }
                self.status.send_modify(|s| {
                    if audio {
                        s.audio_muted = m;
                    } else {
                        s.video_muted = m;
                    }
                });
                let (a, v) = {
                    let s = self.status.borrow();
                    (s.audio_muted, s.video_muted)
                };
                if self.busy() {
                    self.send(Body::Mute { audio: a, video: v }).await;
                }
            }
            Command::SwitchSource(src) => match self.call.as_ref().and_then(|c| c.media.clone()) {
                Some(media) => media.switch_video_source(src),
                None => self.notice(Notice::Error("no media to switch".into())),
            },
            Command::RotateKey => self.rotate().await,
            Command::Invite(user) => self.invite(user).await,
            Command::LogReceivedKeys(tx) => self.key_log = Some(tx),
            Command::SetKeyActivationDelay(d) => {
                self.key_activation_delay = d.min(MAX_KEY_ACTIVATION_DELAY)
            }
        }
    }

    async fn rotate(&mut self) {
        let Some(media) = self.call.as_ref().and_then(|c| c.media.clone()) else {
            return self.notice(Notice::Error("no media".into()));
        };
        match media.prepare_rotation() {
            Ok(m) => {
                let members: Vec<String> = self
                    .call
                    .as_ref()
                    .map(|c| {
                        c.members
                            .iter()
                            .filter(|u| c.room.is_none() || c.keyed.contains(*u))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                for u in members {
                    self.send_to(
                        &u,
                        Body::MediaKey {
                            media_key: Self::key_hex(&m),
                        },
                    )
                    .await;
                }
                let delay = self.key_activation_delay;
                if let Some(c) = self.call.as_mut() {
                    c.rotation_due = Some(Instant::now() + delay);
                }
            }
            Err(e) => self.notice(Notice::Error(format!("rotation: {e}"))),
        }
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.rotation_due.is_some_and(|d| now >= d) {
            call.rotation_due = None;
            if let Some(g) = call.media.as_ref().and_then(|m| m.activate_rotation()) {
                self.notice(Notice::KeyRotated(g));
            }
            return;
        }
        let outs = call.machine.handle_timeout(now);
        self.apply(outs).await;
    }

    async fn on_media(&mut self, ev: MediaEvent) {
        tracing::debug!(me = %self.device.username(), ?ev, state = ?self.call.as_ref().map(|c| c.machine.state().clone()), "media event");
        let now = Instant::now();
        match ev {
            MediaEvent::State(s) if s == "connected" => {
                if let Some(call) = self.call.as_mut() {
                    call.media_up = true;
                }
                self.media_progress(now).await;
            }
            MediaEvent::RotationNeeded { .. } => self.rotate().await,
            MediaEvent::LocalCandidate(json) => {
                let Some(call) = self.call.as_mut() else {
                    return;
                };
                if call.room.is_some() || call.machine.is_ended() {
                    return;
                }
                if json.contains("typ relay") {
                    call.relay_candidate = true;
                }
                self.send(Body::Candidate { candidate: json }).await;
            }
            MediaEvent::GatheringComplete => {
                let relay_only = self.call.as_ref().is_some_and(|c| {
                    c.room.is_none()
                        && !c.relay_candidate
                        && c.media.as_ref().is_some_and(|m| m.relay_only())
                });
                if relay_only {
                    self.fail(crate::media::MediaError::NoRelayCandidate.to_string())
                        .await;
                }
            }
            MediaEvent::State(s) if s == "failed" => {
                if let Some(call) = self.call.as_mut() {
                    if let Ok(outs) = call.machine.handle(Input::MediaFailed, now) {
                        self.apply(outs).await;
                    }
                }
            }
            MediaEvent::FirstFrameDecrypted(crate::media::MediaKind::Video) => {
                if let Some(call) = &self.call {
                    let t = call.started.elapsed();
                    self.status.send_modify(|s| s.setup_time = Some(t));
                }
            }
            _ => {}
        }
    }

    /// Joins the relay room named by the call id, answering the relay's offer with our media.
    async fn join_room(&mut self, url: &str) -> Result<(), String> {
        let me = self.device.username().to_string();
        let Some(call) = self.call.as_mut() else {
            return Err("no call".into());
        };
        let Some(media) = call.media.clone() else {
            return Err("no media".into());
        };
        let room = call.id.to_string();
        let handle = sotto_relay::client::join(url, &room, &me, |offer| async move {
            media.accept_offer(&offer).await
        })
        .await?;
        if let Some(call) = self.call.as_mut() {
            call.present = handle.members.iter().cloned().collect();
            call.room = Some(handle);
        }
        Ok(())
    }

    /// Media is up and the call answered: tell the machine, then start sending.
    async fn media_progress(&mut self, now: Instant) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if !call.media_up {
            return;
        }
        if call.machine.state() == &State::Connecting {
            if let Ok(outs) = call.machine.handle(Input::MediaConnected, now) {
                self.apply(outs).await;
            }
        }
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.machine.state() == &State::Connected && !call.sending {
            if let Some(m) = call.media.clone() {
                call.sending = true;
                let (a, v) = {
                    let s = self.status.borrow();
                    (s.audio_muted, s.video_muted)
                };
                m.set_audio_muted(a);
                m.set_video_muted(v);
                if let Err(e) = m.start_sending().await {
                    self.notice(Notice::Error(format!("start sending: {e}")));
                }
            }
        }
    }

    async fn on_envelope(&mut self, env: sotto_server::Envelope) {
        let opened = self.device.open(&env);
        // Acknowledge in every case: a bad envelope must not block the queue.
        let _ = self.device.ack(&env).await;
        let inc = match opened {
            Ok(i) => i,
            Err(e) => {
                // a first message under an identity other than the pinned one: someone (or the
                // server) speaks for this account with a new key
                if matches!(
                    e,
                    SealedError::Ratchet(sotto_ratchet::Error::UntrustedIdentity(_))
                ) {
                    self.notice(Notice::IdentityChanged(env.from_user.clone()));
                }
                return self.notice(Notice::Dropped(format!(
                    "envelope from {}: {e}",
                    env.from_user
                )));
            }
        };
        if let (
            Some(log),
            Body::Offer { media_key, .. }
            | Body::Answer { media_key, .. }
            | Body::MediaKey { media_key },
        ) = (&self.key_log, &inc.message.body)
        {
            if let Some(m) = hex::decode(media_key)
                .ok()
                .map(zeroize::Zeroizing::new)
                .and_then(|b| KeyMaterial::from_bytes(&b).ok())
            {
                let _ = log.send(m);
            }
        }
        let Ok(call_id) = inc.message.call_id() else {
            return;
        };
        let now = Instant::now();
        let same_call = self.call.as_ref().is_some_and(|c| {
            c.id == call_id
                && ((c.peer == inc.from_user && c.device == inc.from_device)
                    || c.members.contains(&inc.from_user))
        });

        if let Body::Offer {
            sdp,
            media_key,
            relay,
            members: offer_members,
            ..
        } = &inc.message.body
        {
            let me = self.device.username().to_string();
            if same_call {
                return self.notice(Notice::Dropped("duplicate offer".into()));
            }
            // glare: we are calling the same peer who is calling us
            let glare = self.call.as_ref().is_some_and(|c| {
                c.peer == inc.from_user
                    && c.machine.role() == Role::Caller
                    && c.machine.state() == &State::Outgoing
            });
            if glare {
                let ours = self.call.as_ref().map(|c| c.id.0).unwrap_or_default();
                if glare_we_win(&ours, &call_id.0) {
                    return self.notice(Notice::Dropped("glare: our call wins".into()));
                }
                if let Some(c) = self.call.as_mut() {
                    let outs = c.machine.handle(Input::GlareLost, now).unwrap_or_default();
                    self.apply(outs).await;
                }
            } else if self.busy() {
                // a second call while in a call: busy, bound to *that* call id
                let msg = CallMessage::new(call_id, 0, Body::Busy);
                if let Err(e) = self
                    .device
                    .send(&inc.from_user, inc.from_device, &msg)
                    .await
                {
                    self.notice(Notice::Error(format!("busy reply: {e}")));
                }
                return self.notice(Notice::Dropped(format!(
                    "busy: call from {}",
                    inc.from_user
                )));
            }
            let mut machine = (self.machine)(Role::Callee);
            let outs = machine
                .handle(Input::OfferReceived, now)
                .unwrap_or_default();
            self.call = Some(Call {
                remote_offer: Some((sdp.clone(), media_key.clone(), relay.clone())),
                recv_seq: [(inc.from_user.clone(), inc.message.seq)]
                    .into_iter()
                    .collect(),
                ..Call::new(
                    call_id,
                    inc.from_user.clone(),
                    inc.from_device,
                    machine,
                    std::iter::once(inc.from_user.clone())
                        .chain(offer_members.iter().filter(|m| **m != me).cloned())
                        .collect(),
                    now,
                )
            });
            self.status.send_modify(|s| {
                s.setup_time = None;
                s.media = None;
                s.peer_audio_muted = false;
                s.peer_video_muted = false;
            });
            self.publish();
            self.apply(outs).await;
            if glare {
                // we wanted this call anyway
                if let Some(c) = self.call.as_mut() {
                    let outs = c.machine.handle(Input::Accept, now).unwrap_or_default();
                    self.apply(outs).await;
                }
            }
            return;
        }
        if !same_call {
            // a key from someone in this call whose `add` has not reached us yet: keep it
            if let (Some(c), Body::Answer { media_key, .. } | Body::MediaKey { media_key }) =
                (self.call.as_mut(), &inc.message.body)
            {
                if c.id == call_id
                    && c.room.is_some()
                    && c.stranger_keys.len() < crate::consts::MAX_GROUP_MEMBERS * 2
                {
                    c.stranger_keys
                        .push((inc.from_user.clone(), media_key.clone()));
                    return;
                }
            }
            return self.notice(Notice::Dropped(format!(
                "{} for another call",
                inc.message.body.kind()
            )));
        }
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call
            .recv_seq
            .get(&inc.from_user)
            .is_some_and(|s| inc.message.seq <= *s)
        {
            return self.notice(Notice::Dropped("replayed or stale call message".into()));
        }
        call.recv_seq.insert(inc.from_user.clone(), inc.message.seq);
        // group: messages from members other than our call peer, and membership changes
        let from_peer = call.peer == inc.from_user;
        let group = call.members.len() > 1;
        match &inc.message.body {
            Body::Add { user } => {
                let (user, from) = (user.clone(), inc.from_user.clone());
                return self.member_added(&user, &from).await;
            }
            Body::Hangup { .. } if group => {
                let who = inc.from_user.clone();
                return self.member_left(&who).await;
            }
            Body::Answer { media_key, .. } | Body::MediaKey { media_key } if !from_peer => {
                let (key, from) = (media_key.clone(), inc.from_user.clone());
                return self.member_key(&from, key);
            }
            _ if !from_peer => return,
            _ => {}
        }
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let input = match &inc.message.body {
            Body::Ringing => Input::RingingReceived,
            Body::Answer { sdp, media_key } => {
                let (sdp, key) = (sdp.clone(), media_key.clone());
                let Some(media) = call.media.clone() else {
                    return;
                };
                let via_relay = call.room.is_some();
                if let Err(e) = self.install_key(&inc.from_user, &key) {
                    return self.fail(format!("peer media key: {e}")).await;
                }
                if !via_relay {
                    if let Err(e) = media.accept_answer(&sdp).await {
                        return self.fail(format!("answer: {e}")).await;
                    }
                }
                Input::AnswerReceived
            }
            Body::Candidate { candidate } => {
                let c = candidate.clone();
                match call.media.clone() {
                    Some(m) if call.remote_offer.is_none() => {
                        if let Err(e) = m.add_remote_candidate(&c).await {
                            self.notice(Notice::Dropped(format!("peer candidate: {e}")));
                        }
                    }
                    _ => {
                        if call.pending_candidates.len() < crate::consts::MAX_HELD_CANDIDATES {
                            call.pending_candidates.push(c);
                        }
                    }
                }
                return;
            }
            Body::Reject => Input::RejectReceived,
            Body::Busy => Input::BusyReceived,
            Body::Hangup { .. } => Input::HangupReceived,
            Body::Mute { audio, video } => {
                let (a, v) = (*audio, *video);
                self.status.send_modify(|s| {
                    s.peer_audio_muted = a;
                    s.peer_video_muted = v;
                });
                return;
            }
            Body::MediaKey { media_key } => {
                let key = media_key.clone();
                match self.install_key(&inc.from_user, &key) {
                    Ok(g) => self.notice(Notice::PeerKey(g)),
                    Err(e) => self.notice(Notice::Dropped(format!("peer key: {e}"))),
                }
                return;
            }
            Body::Offer { .. } | Body::Add { .. } => return,
        };
        let Some(call) = self.call.as_mut() else {
            return;
        };
        match call.machine.handle(input, now) {
            Ok(outs) => self.apply(outs).await,
            Err(e) => self.notice(Notice::Dropped(e.to_string())),
        }
    }
}

/// Default machine factory (standard timeouts).
pub fn default_machine(role: Role) -> CallMachine {
    CallMachine::new(role)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A name other than `of` with the same sender id (16 bits: found within a few 10^5 tries).
    fn twin_of(of: &str) -> String {
        (0u32..)
            .map(|i| format!("u{i}"))
            .find(|n| n != of && sender_id_for(n) == sender_id_for(of))
            .unwrap()
    }

    #[test]
    fn a_user_whose_sender_id_clashes_is_not_added() {
        let members = vec!["bob".to_string(), "carol".to_string()];
        assert_eq!(sender_id_clash("dave", "alice", &members), None);
        let t = twin_of("carol");
        assert_eq!(sender_id_clash(&t, "alice", &members), Some("carol"));
        let t = twin_of("alice");
        assert_eq!(sender_id_clash(&t, "alice", &members), Some("alice"));
        // a member is not its own clash
        assert_eq!(sender_id_clash("bob", "alice", &members), None);
    }

    #[test]
    fn a_member_key_for_another_members_sender_id_is_refused() {
        let m = |name: &str| {
            sotto_frame::SenderKey::new(
                sotto_frame::CipherSuite::default(),
                sender_id_for(name),
                &[7u8; 16],
            )
            .unwrap()
            .material()
        };
        assert!(check_key_owner("bob", &m("bob")).is_ok());
        // mallory hands out a key under alice's id: her frames would pass for alice's
        let err = check_key_owner("mallory", &m("alice")).unwrap_err();
        assert!(err.contains("not its own"), "{err}");
    }
}
