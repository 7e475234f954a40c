//! The call engine: the async driver of one device's [`CallCore`]. It owns the sockets and the
//! clock: it feeds the core what happens (envelopes, commands, media and relay events, results
//! of what it did, timeouts) and carries out the core's [`Action`]s. It decides nothing about a
//! call; every await on another party (the signaling server, the relay) runs off the loop with a
//! timeout, so a stalled server or relay never stops hangup or the call's own timeouts.
//!
//! Drive it with [`Command`]s; watch it through [`Status`] (a `watch` channel) and [`Notice`]s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{mpsc, watch};

pub use crate::consts::{KEY_ACTIVATION_DELAY, MAX_KEY_ACTIVATION_DELAY};
use crate::consts::{RELAY_JOIN_TIMEOUT, SIGNALING_TIMEOUT};
pub use crate::core::{
    sender_id_clash, sender_id_for, AddRefusal, Dropped, MemberChange, Notice, RelayChoice,
};
use crate::core::{
    Action, CallCore, CallError, CallState, CallStatus, CoreConfig, Event, IdentityVerdict,
    MediaAction, MediaSignal, RoomEvent, TokenGrant, UserCommand,
};
use crate::media::{
    IvfSource, MediaBackend, MediaEvent, MediaEvents, MediaMaker, MediaStats, WebrtcMedia,
};
use crate::messages::{CallId, CallMessage};
use crate::sealed::{Device, SealedError};
use crate::state::{CallMachine, EndReason, Role};

/// How often stats are refreshed while media runs.
pub const STATS_INTERVAL: Duration = Duration::from_millis(500);

/// How often a running engine refreshes its device's signed and Kyber prekeys
/// ([`Device::refresh_signed_prekeys`](crate::sealed::Device::refresh_signed_prekeys): rotated
/// when a week old), so a device that stays signed in for weeks still rotates them.
pub const PREKEY_REFRESH_INTERVAL: Duration = Duration::from_secs(3600);

/// Longest a local media operation (webrtc-rs, no other party) may take before the call fails.
pub const MEDIA_OP_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// How long after handing a fresh key (a member left) to the members who remain this device
    /// switches to it; [`KEY_ACTIVATION_DELAY`] unless set, capped at [`MAX_KEY_ACTIVATION_DELAY`].
    SetKeyActivationDelay(Duration),
    /// Test hook (`test-hooks` feature, never in the `sotto` binary): every media key this
    /// device receives from now on, in any call message, is also sent here as received, whether
    /// or not it is used.
    #[cfg(feature = "test-hooks")]
    LogReceivedKeys(mpsc::UnboundedSender<sotto_frame::KeyMaterial>),
}

/// A snapshot of the device's call, for screens and reports.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Our account.
    pub me: String,
    /// The other party of the current (or last) call.
    pub peer: Option<String>,
    /// Where the call is.
    pub state: CallState,
    /// Why the call ended.
    pub end_reason: Option<EndReason>,
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
    /// Other members of the call.
    pub members: Vec<String>,
}

pub use crate::media::MediaFactory;

/// Handle to a running engine.
pub struct Engine {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Status>,
    notices: mpsc::UnboundedReceiver<Notice>,
    device: Arc<Device>,
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
        relay: Option<RelayChoice>,
    ) -> Engine {
        Self::spawn_with_media(device, events, Box::new(WebrtcMedia(media)), machine, relay)
    }

    /// As [`Engine::spawn_with_relay`] with any media backend ([`MediaMaker`]): the call core
    /// and this driver do not depend on webrtc-rs.
    pub fn spawn_with_media(
        device: Device,
        events: sotto_server::Events,
        media: Box<dyn MediaMaker>,
        machine: fn(Role) -> CallMachine,
        relay: Option<RelayChoice>,
    ) -> Engine {
        let (ctx, crx) = mpsc::channel(32);
        let me = device.username().to_string();
        let (stx, srx) = watch::channel(Status {
            me: me.clone(),
            ..Status::default()
        });
        let (ntx, nrx) = mpsc::unbounded_channel();
        let (rtx, rrx) = mpsc::unbounded_channel();
        let (jtx, jrx) = mpsc::unbounded_channel();
        let device = Arc::new(device);
        let sends = spawn_sender(device.clone(), rtx.clone());
        let mut cfg = CoreConfig::new(&me);
        cfg.relay = relay;
        cfg.machine = machine;
        // a peer may name a plain loopback relay only in a local setup (our server is one)
        cfg.allow_plain_loopback_relays = device
            .client()
            .node_urls()
            .all(sotto_tls::is_plain_loopback);
        let driver = Driver {
            core: CallCore::new(cfg, StdRng::from_entropy()),
            device: device.clone(),
            events,
            commands: crx,
            status: stx,
            notices: ntx,
            media_maker: media,
            media: None,
            media_events: None,
            room: None,
            results: rtx,
            results_rx: rrx,
            joined: jtx,
            joined_rx: jrx,
            sends,
            published: None,
            safety: None,
            #[cfg(feature = "test-hooks")]
            key_log: None,
        };
        tokio::spawn(driver.run());
        Engine {
            commands: ctx,
            status: srx,
            notices: nrx,
            device,
        }
    }

    /// The device the engine calls from (its identity store: `sotto app` shows and trusts
    /// a peer's changed identity through it, as `sotto trust` does).
    pub fn device(&self) -> Arc<Device> {
        self.device.clone()
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

    /// Waits until the call is in `state` (or `limit` passes); returns the status then.
    pub async fn wait_state(&self, state: CallState, limit: Duration) -> Option<Status> {
        let mut rx = self.status.clone();
        let fut = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if s.state == state {
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

/// Default machine factory (standard timeouts).
pub fn default_machine(role: Role) -> CallMachine {
    CallMachine::new(role)
}

/// A send (or acknowledgement) for the ordered signaling queue.
enum Outgoing {
    Message {
        call: CallId,
        to: String,
        device: u32,
        message: CallMessage,
    },
    Ack(sotto_server::Envelope),
}

/// One task sends every call message and acknowledgement, in order, each bounded by
/// [`SIGNALING_TIMEOUT`]; failures come back to the core as [`Event::SendFailed`].
fn spawn_sender(
    device: Arc<Device>,
    results: mpsc::UnboundedSender<Event>,
) -> mpsc::UnboundedSender<Outgoing> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    tokio::spawn(async move {
        while let Some(job) = rx.recv().await {
            match job {
                Outgoing::Ack(env) => {
                    let _ = tokio::time::timeout(SIGNALING_TIMEOUT, device.ack(&env)).await;
                }
                Outgoing::Message {
                    call,
                    to,
                    device: dev,
                    message,
                } => {
                    let kind = message.body.kind();
                    let failure = match tokio::time::timeout(
                        SIGNALING_TIMEOUT,
                        device.send(&to, dev, &message),
                    )
                    .await
                    {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => {
                            Some((matches!(e, SealedError::IdentityChanged(_)), e.to_string()))
                        }
                        Err(_) => Some((false, format!("no answer within {SIGNALING_TIMEOUT:?}"))),
                    };
                    if let Some((identity_changed, why)) = failure {
                        let _ = results.send(Event::SendFailed {
                            call,
                            to,
                            kind,
                            identity_changed,
                            why,
                        });
                    }
                }
            }
        }
    });
    tx
}

struct Driver {
    core: CallCore,
    device: Arc<Device>,
    events: sotto_server::Events,
    commands: mpsc::Receiver<Command>,
    status: watch::Sender<Status>,
    notices: mpsc::UnboundedSender<Notice>,
    media_maker: Box<dyn MediaMaker>,
    media: Option<(CallId, Arc<dyn MediaBackend>)>,
    media_events: Option<(CallId, MediaEvents)>,
    room: Option<(CallId, sotto_relay::client::RoomHandle)>,
    /// Results of work done off the loop (sends, identity checks, relay joins).
    results: mpsc::UnboundedSender<Event>,
    results_rx: mpsc::UnboundedReceiver<Event>,
    /// Relay joins that finished (off the loop), with the room's handle.
    joined: mpsc::UnboundedSender<JoinResult>,
    joined_rx: mpsc::UnboundedReceiver<JoinResult>,
    sends: mpsc::UnboundedSender<Outgoing>,
    /// What [`Driver::publish`] last published (the core's status and the safety number).
    published: Option<(CallStatus, Option<String>)>,
    /// The last safety number computed: (peer, device, number).
    safety: Option<(String, u32, String)>,
    #[cfg(feature = "test-hooks")]
    key_log: Option<mpsc::UnboundedSender<sotto_frame::KeyMaterial>>,
}

type JoinResult = (CallId, Result<sotto_relay::client::RoomHandle, CallError>);

/// Something from the current call's media or relay room.
enum CallInput {
    Media(CallId, Option<MediaEvent>),
    Room(CallId, Option<sotto_relay::protocol::ServerMsg>),
}

impl Driver {
    async fn run(mut self) {
        let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
        let mut prekey_tick = tokio::time::interval_at(
            tokio::time::Instant::now() + PREKEY_REFRESH_INTERVAL,
            PREKEY_REFRESH_INTERVAL,
        );
        loop {
            let deadline = self.core.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let call_input = async {
                let media = async {
                    match self.media_events.as_mut() {
                        Some((id, rx)) => CallInput::Media(*id, rx.recv().await),
                        None => std::future::pending().await,
                    }
                };
                let room = async {
                    match self.room.as_mut() {
                        Some((id, r)) => CallInput::Room(*id, r.events.recv().await),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    ev = media => ev,
                    ev = room => ev,
                }
            };
            tokio::select! {
                ev = self.events.next() => match ev {
                    None => return,
                    Some(sotto_server::Event::Envelope(env)) => self.on_envelope(env),
                    Some(sotto_server::Event::PrekeysLow { .. }) => self.replenish_prekeys(),
                    Some(_) => {}
                },
                cmd = self.commands.recv() => {
                    let Some(cmd) = cmd else { return };
                    self.on_command(cmd);
                }
                ev = self.results_rx.recv() => {
                    if let Some(ev) = ev {
                        self.core.handle(ev, Instant::now());
                    }
                }
                j = self.joined_rx.recv() => {
                    if let Some((call, result)) = j {
                        self.on_joined(call, result);
                    }
                }
                input = call_input => match input {
                    CallInput::Media(call, Some(ev)) => self.on_media_event(call, ev),
                    CallInput::Media(_, None) => self.media_events = None,
                    CallInput::Room(call, Some(msg)) => self.on_room(call, msg),
                    CallInput::Room(call, None) => {
                        self.room = None;
                        self.core.handle(Event::Room { call, event: RoomEvent::Closed }, Instant::now());
                    }
                },
                _ = sleep => self.core.handle_timeout(Instant::now()),
                _ = stats_tick.tick() => self.refresh_stats().await,
                _ = prekey_tick.tick() => self.refresh_prekeys(),
            }
            self.perform_actions().await;
            self.publish();
        }
    }

    fn notice(&self, n: Notice) {
        let _ = self.notices.send(n);
    }

    fn on_command(&mut self, cmd: Command) {
        let now = Instant::now();
        let c = match cmd {
            Command::Dial(u) => UserCommand::Dial(u),
            Command::Answer => UserCommand::Answer,
            Command::Reject => UserCommand::Reject,
            Command::Hangup => UserCommand::Hangup,
            Command::MuteAudio(m) => UserCommand::MuteAudio(m),
            Command::MuteVideo(m) => UserCommand::MuteVideo(m),
            Command::RotateKey => UserCommand::RotateKey,
            Command::Invite(u) => UserCommand::Invite(u),
            Command::SetKeyActivationDelay(d) => UserCommand::SetKeyActivationDelay(d),
            Command::SwitchSource(src) => {
                match &self.media {
                    Some((_, m)) => m.switch_video_source(src),
                    None => self.notice(Notice::Error(CallError::NoMedia)),
                }
                return;
            }
            #[cfg(feature = "test-hooks")]
            Command::LogReceivedKeys(tx) => {
                self.key_log = Some(tx);
                return;
            }
        };
        self.core.handle(Event::Command(c), now);
    }

    fn on_envelope(&mut self, env: sotto_server::Envelope) {
        let opened = self.device.open(&env);
        // Acknowledged in every case (a bad envelope must not block the queue), in order with
        // our sends, off the loop.
        let from = env.from_user.clone();
        let _ = self.sends.send(Outgoing::Ack(env));
        let now = Instant::now();
        match opened {
            Ok(inc) => {
                #[cfg(feature = "test-hooks")]
                self.log_keys(&inc.message);
                self.core.handle(
                    Event::Message {
                        from: inc.from_user,
                        device: inc.from_device,
                        message: inc.message,
                    },
                    now,
                );
            }
            Err(e) => {
                // a first message under an identity other than the pinned one: someone (or the
                // server) speaks for this account with a new key
                let untrusted_identity = matches!(
                    e,
                    SealedError::Ratchet(sotto_ratchet::Error::UntrustedIdentity(_))
                );
                self.core.handle(
                    Event::OpenFailed {
                        from,
                        untrusted_identity,
                        why: e.to_string(),
                    },
                    now,
                );
            }
        }
    }

    #[cfg(feature = "test-hooks")]
    fn log_keys(&self, m: &CallMessage) {
        use crate::messages::Body;
        let Some(log) = &self.key_log else { return };
        match &m.body {
            Body::Offer {
                media_key: Some(k), ..
            }
            | Body::Answer { media_key: k, .. }
            | Body::MediaKey { media_key: k } => {
                let _ = log.send(k.clone());
            }
            _ => {}
        }
    }

    fn replenish_prekeys(&self) {
        let (device, notices) = (self.device.clone(), self.notices.clone());
        tokio::spawn(async move {
            let r = tokio::time::timeout(
                SIGNALING_TIMEOUT,
                device.on_prekeys_low(std::time::Instant::now()),
            )
            .await;
            if let Some(why) = failure_text(r) {
                let _ = notices.send(Notice::Error(CallError::Prekeys(why)));
            }
        });
    }

    fn refresh_prekeys(&self) {
        let (device, notices) = (self.device.clone(), self.notices.clone());
        tokio::spawn(async move {
            let r = tokio::time::timeout(
                SIGNALING_TIMEOUT,
                device.refresh_signed_prekeys(std::time::SystemTime::now()),
            )
            .await;
            if let Some(why) = failure_text(r) {
                let _ = notices.send(Notice::Error(CallError::Prekeys(why)));
            }
        });
    }

    fn on_media_event(&mut self, call: CallId, ev: MediaEvent) {
        let signal = match ev {
            MediaEvent::State(s) if s == "connected" => MediaSignal::Connected,
            MediaEvent::State(s) if s == "failed" => MediaSignal::Failed,
            MediaEvent::LocalCandidate(c) => MediaSignal::LocalCandidate(c),
            MediaEvent::GatheringComplete => MediaSignal::GatheringComplete,
            MediaEvent::RotationNeeded { .. } => MediaSignal::RotationNeeded,
            MediaEvent::FirstFrameDecrypted(k) => MediaSignal::FirstFrameDecrypted(k),
            _ => return,
        };
        self.core
            .handle(Event::Media { call, signal }, Instant::now());
    }

    fn on_room(&mut self, call: CallId, msg: sotto_relay::protocol::ServerMsg) {
        use sotto_relay::protocol::ServerMsg;
        let event = match msg {
            ServerMsg::MemberJoined { participant } => RoomEvent::MemberJoined(participant),
            ServerMsg::MemberLeft { participant } => RoomEvent::MemberLeft(participant),
            _ => return,
        };
        self.core
            .handle(Event::Room { call, event }, Instant::now());
    }

    /// Carries out everything the core asked for, feeding results of local work back at once.
    async fn perform_actions(&mut self) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Send {
                    call,
                    to,
                    device,
                    message,
                } => {
                    let _ = self.sends.send(Outgoing::Message {
                        call,
                        to,
                        device,
                        message,
                    });
                }
                Action::CheckIdentity { call, user } => {
                    let (device, results) = (self.device.clone(), self.results.clone());
                    tokio::spawn(async move {
                        let verdict = match tokio::time::timeout(
                            SIGNALING_TIMEOUT,
                            device.check_identity(&user, 1),
                        )
                        .await
                        {
                            Ok(Ok(())) => IdentityVerdict::Unchanged,
                            Ok(Err(SealedError::IdentityChanged(_))) => IdentityVerdict::Changed,
                            Ok(Err(e)) => {
                                tracing::debug!("identity check for {user} failed: {e}");
                                IdentityVerdict::Unknown
                            }
                            Err(_) => IdentityVerdict::Unknown,
                        };
                        let _ = results.send(Event::IdentityChecked {
                            call,
                            user,
                            verdict,
                        });
                    });
                }
                Action::RequestRelayTokens {
                    call,
                    url,
                    room,
                    participants,
                } => {
                    let (device, results) = (self.device.clone(), self.results.clone());
                    tokio::spawn(async move {
                        let ask =
                            device
                                .client()
                                .relay_tokens(url.as_deref(), &room, &participants);
                        let result = match tokio::time::timeout(SIGNALING_TIMEOUT, ask).await {
                            Ok(Ok(grant)) => Ok(TokenGrant {
                                relay: grant.relay,
                                tokens: grant
                                    .tokens
                                    .into_iter()
                                    .map(|t| (t.participant, t.token))
                                    .collect(),
                            }),
                            Ok(Err(sotto_server::Error::Refused { code })) => {
                                Err(CallError::RelayTokensRefused(code))
                            }
                            Ok(Err(e)) => Err(CallError::Relay(e.to_string())),
                            Err(_) => Err(CallError::Timeout {
                                what: "relay tokens",
                                limit: SIGNALING_TIMEOUT,
                            }),
                        };
                        let _ = results.send(Event::RelayTokens { call, result });
                    });
                }
                Action::JoinRoom {
                    call,
                    url,
                    room,
                    token,
                } => self.join_room(call, url, room, token),
                Action::LeaveRoom { call } => {
                    if self.room.as_ref().is_some_and(|(id, _)| *id == call) {
                        self.room = None;
                    }
                }
                Action::Media { call, action } => self.media_action(call, action).await,
                Action::Notify(n) => {
                    // the status a notice speaks of is visible when the notice arrives
                    self.publish();
                    self.notice(n);
                }
            }
        }
    }

    fn join_room(
        &mut self,
        call: CallId,
        url: String,
        room: String,
        token: Option<sotto_admission::RelayToken>,
    ) {
        let Some((_, media)) = self.media.as_ref().filter(|(id, _)| *id == call) else {
            let result = Err(CallError::NoMedia);
            self.core
                .handle(Event::RelayJoined { call, result }, Instant::now());
            return;
        };
        let media = media.clone();
        let me = self.core.me().to_owned();
        let joined = self.joined.clone();
        // the relay is verified against the CAs the device trusts for its signaling server
        let tls = self.device.client_tls().clone();
        tokio::spawn(async move {
            let join = sotto_relay::client::join(
                &url,
                &tls,
                &room,
                &me,
                token.as_ref(),
                |offer| async move { media.answer_relay_offer(&offer).await },
            );
            let result = match tokio::time::timeout(RELAY_JOIN_TIMEOUT, join).await {
                Ok(Ok(handle)) => Ok(handle),
                Ok(Err(sotto_relay::client::JoinError::Refused { code, .. })) => {
                    Err(CallError::RelayRefused(code))
                }
                Ok(Err(e)) => Err(CallError::Relay(e.to_string())),
                Err(_) => Err(CallError::Timeout {
                    what: "relay join",
                    limit: RELAY_JOIN_TIMEOUT,
                }),
            };
            let _ = joined.send((call, result));
        });
    }

    /// The relay admitted us (or did not): keep the room's handle if the call is still ours
    /// (dropping it leaves the room), and tell the core.
    fn on_joined(
        &mut self,
        call: CallId,
        result: Result<sotto_relay::client::RoomHandle, CallError>,
    ) {
        let result = result.map(|handle| {
            let members = handle.members.clone();
            // kept only for a live call still waiting for it; otherwise dropped: we leave
            if self.core.awaits_room(call) {
                self.room = Some((call, handle));
            }
            members
        });
        self.core
            .handle(Event::RelayJoined { call, result }, Instant::now());
    }

    async fn media_action(&mut self, call: CallId, action: MediaAction) {
        let now = Instant::now();
        if let MediaAction::Create = action {
            let result = self.create_media(call).await;
            self.core.handle(Event::MediaReady { call, result }, now);
            return;
        }
        let Some(m) = self
            .media
            .as_ref()
            .filter(|(id, _)| *id == call)
            .map(|(_, m)| m.clone())
        else {
            return;
        };
        let media_err = |e: crate::media::MediaError| CallError::Media(e.to_string());
        match action {
            MediaAction::CreateOffer | MediaAction::AcceptOffer { .. } => {
                let r = match &action {
                    MediaAction::AcceptOffer { sdp } => bounded(m.accept_offer(sdp)).await,
                    _ => bounded(m.create_offer()).await,
                };
                let result = r.map_err(media_err);
                self.core
                    .handle(Event::LocalDescription { call, result }, now);
            }
            MediaAction::ApplyAnswer { sdp } => {
                let result = bounded(m.apply_answer(&sdp)).await.map_err(media_err);
                self.core.handle(Event::AnswerApplied { call, result }, now);
            }
            MediaAction::AddCandidate { candidate } => {
                if let Err(e) = bounded(m.add_remote_candidate(&candidate)).await {
                    tracing::debug!("peer candidate refused: {e}");
                    self.notice(Notice::Dropped(Dropped::BadCandidate));
                }
            }
            MediaAction::UseSendKey(k) => {
                if let Err(e) = m.use_send_key(&k) {
                    self.notice(Notice::Error(media_err(e)));
                }
            }
            MediaAction::InstallKey(k) => {
                if let Err(e) = m.install_remote_key(&k) {
                    self.notice(Notice::Error(media_err(e)));
                }
            }
            MediaAction::ForgetSender(s) => m.forget_sender(s),
            MediaAction::StartSending {
                audio_muted,
                video_muted,
            } => {
                m.set_muted(audio_muted, video_muted);
                if let Err(e) = bounded(m.start_sending()).await {
                    self.notice(Notice::Error(media_err(e)));
                }
            }
            MediaAction::SetMuted { audio, video } => m.set_muted(audio, video),
            MediaAction::Close => {
                self.refresh_stats().await;
                self.media = None;
                self.media_events = None;
                let _ = tokio::time::timeout(MEDIA_OP_TIMEOUT, m.close()).await;
            }
            MediaAction::Create => {}
        }
    }

    async fn create_media(&mut self, call: CallId) -> Result<bool, CallError> {
        let id = sender_id_for(self.core.me());
        let (peer, events) = bounded(self.media_maker.make(id))
            .await
            .map_err(|e| CallError::Media(e.to_string()))?;
        let relay_only = peer.relay_only();
        if let Some((_, old)) = self.media.take() {
            let _ = tokio::time::timeout(MEDIA_OP_TIMEOUT, old.close()).await;
        }
        self.media = Some((call, peer));
        self.media_events = Some((call, events));
        Ok(relay_only)
    }

    async fn refresh_stats(&mut self) {
        let Some((_, media)) = &self.media else {
            return;
        };
        let media = media.clone();
        let Ok(st) = tokio::time::timeout(MEDIA_OP_TIMEOUT, media.stats()).await else {
            return;
        };
        let source = media.video_source_name();
        self.status.send_modify(|s| {
            s.source = source;
            s.media = Some(st);
        });
    }

    /// The safety number with the current peer, computed (2 × 5200 SHA-512) once per peer
    /// device and kept: its identity key is pinned for the life of this process (trusting a new
    /// one is `sotto trust`, another process on a locked device).
    fn safety_number(&mut self) -> Option<String> {
        let (_, peer, device) = self.core.current_call()?;
        if let Some((p, d, n)) = &self.safety {
            if p == peer && *d == device {
                return Some(n.clone());
            }
        }
        let n = self.device.safety_number(peer, device)?;
        self.safety = Some((peer.to_owned(), device, n.clone()));
        Some(n)
    }

    /// Publishes the core's view of the call (and the safety number) when it changed.
    fn publish(&mut self) {
        let c = self.core.status().clone();
        let safety = self.safety_number();
        let now = (c, safety);
        if self.published.as_ref() == Some(&now) {
            return;
        }
        let (c, safety) = &now;
        self.status.send_modify(|s| {
            s.peer.clone_from(&c.peer);
            s.state = c.state;
            s.end_reason.clone_from(&c.end_reason);
            if safety.is_some() {
                s.safety_number.clone_from(safety);
            }
            s.audio_muted = c.audio_muted;
            s.video_muted = c.video_muted;
            s.peer_audio_muted = c.peer_audio_muted;
            s.peer_video_muted = c.peer_video_muted;
            s.setup_time = c.setup_time;
            s.calls_ended = c.calls_ended;
            s.members.clone_from(&c.members);
        });
        self.published = Some(now);
    }
}

/// A local media operation, bounded by [`MEDIA_OP_TIMEOUT`].
async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, crate::media::MediaError>>,
) -> Result<T, crate::media::MediaError> {
    tokio::time::timeout(MEDIA_OP_TIMEOUT, f)
        .await
        .unwrap_or(Err(crate::media::MediaError::Webrtc(format!(
            "no result within MEDIA_OP_TIMEOUT ({MEDIA_OP_TIMEOUT:?})"
        ))))
}

fn failure_text<T>(
    r: Result<Result<T, SealedError>, tokio::time::error::Elapsed>,
) -> Option<String> {
    match r {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {SIGNALING_TIMEOUT:?}")),
    }
}
