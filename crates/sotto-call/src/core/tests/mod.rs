//! The deterministic harness (quinn's `Pair`, generalised to N devices): call cores wired to a
//! simulated signaling server and relay that can drop, delay, reorder and stall, a virtual
//! clock, and a data plane per device (a `SenderKey` and a `KeyRing` driven by the core's media
//! actions, exactly as `MediaPeer` is). Whole calls run in microseconds. Relay tokens are the
//! real ones: the simulated server grants them by the server's own membership rule
//! (`sotto_server::relay_rooms`) and mints them with `sotto_admission`; the simulated relay
//! verifies them with `sotto_admission::verify` and remembers leaves.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use sotto_frame::{Codec, KeyMaterial, KeyRing, SenderKey};

use super::*;
use crate::consts::{LEAVER_KEY_RETENTION, RING_TIMEOUT};
use crate::messages::CallMessage;
use crate::state::EndReason;

const SUITE: sotto_frame::CipherSuite = sotto_frame::CipherSuite::Aes128GcmSha256_128;

/// What a device's media does with the core's data-plane actions.
#[derive(Default)]
struct Plane {
    exists: bool,
    send: Option<SenderKey>,
    ring: Option<KeyRing>,
    /// Every key this device was ever given (to attack with later).
    received: Vec<KeyMaterial>,
    sending: bool,
    offer_applied: bool,
    answer_applied: bool,
}

struct Dev {
    core: CallCore,
    plane: Plane,
    notices: Vec<Notice>,
    /// Relay joins we have not answered (the relay stalls).
    stalled_join: Option<CallId>,
}

/// A message on its way through the signaling server.
struct Mail {
    from: String,
    to: String,
    device: u32,
    msg: CallMessage,
}

/// Which mail the network holds back.
type HoldRule = Box<dyn Fn(&Mail) -> bool>;

struct Net {
    now: Instant,
    devs: BTreeMap<String, Dev>,
    mail: VecDeque<Mail>,
    /// Messages held back by the test (delivered when it says).
    held: Vec<Mail>,
    /// Which mail the network holds back instead of delivering.
    hold: Option<HoldRule>,
    /// The relay's rooms: who is in each.
    rooms: BTreeMap<String, BTreeSet<String>>,
    relay_stalls: bool,
    /// Users whose identity check reports a changed key.
    rekeyed: BTreeSet<String>,
    /// (from, to) → next sequence number seen going out.
    seqs: BTreeMap<(String, String), u32>,
    /// The secret the simulated server and relay share.
    secret: sotto_admission::RelaySecret,
    /// The server's relay rooms.
    token_rooms: sotto_server::relay_rooms::RelayRooms,
    /// When each (room, participant) last left the relay room (wall-clock ms).
    leaves: BTreeMap<(String, String), u64>,
    /// The last wall-clock ms handed out (strictly increasing).
    wall: u64,
    start: Instant,
    /// The server refuses every token request with this code.
    refuse_tokens: Option<sotto_server::ErrorCode>,
    /// Every token the simulated server minted, per participant (to replay later).
    minted: BTreeMap<String, Vec<sotto_admission::RelayToken>>,
}

/// The relay every relay call of the harness goes through.
const RELAY: &str = "wss://relay.test";

fn machine(role: Role) -> CallMachine {
    CallMachine::new(role)
}

impl Net {
    fn new(names: &[&str], relay: bool) -> Net {
        let now = Instant::now();
        let mut devs = BTreeMap::new();
        for (i, n) in names.iter().enumerate() {
            let mut cfg = CoreConfig::new(n);
            cfg.machine = machine;
            if relay {
                cfg.relay = Some(RelayChoice::Url(RELAY.into()));
            }
            devs.insert(
                n.to_string(),
                Dev {
                    core: CallCore::new(cfg, StdRng::seed_from_u64(i as u64 + 1)),
                    plane: Plane::default(),
                    notices: Vec::new(),
                    stalled_join: None,
                },
            );
        }
        Net {
            now,
            devs,
            mail: VecDeque::new(),
            held: Vec::new(),
            hold: None,
            rooms: BTreeMap::new(),
            relay_stalls: false,
            rekeyed: BTreeSet::new(),
            seqs: BTreeMap::new(),
            secret: sotto_admission::RelaySecret::from_bytes(&[7; 32]).unwrap(),
            token_rooms: Default::default(),
            leaves: BTreeMap::new(),
            wall: 0,
            start: now,
            refuse_tokens: None,
            minted: BTreeMap::new(),
        }
    }

    /// Wall-clock milliseconds at the virtual `now`, strictly increasing per call (real time
    /// moves between a leave and a re-invitation).
    fn wall_ms(&mut self) -> u64 {
        let t = 1_800_000_000_000 + (self.now - self.start).as_millis() as u64;
        self.wall = t.max(self.wall + 1);
        self.wall
    }

    /// The simulated signaling server's answer to `relay_tokens` from `who` (`url` `None`:
    /// the server places the room; it has one relay, [`RELAY`]).
    fn relay_tokens(
        &mut self,
        who: &str,
        url: Option<&str>,
        room: &str,
        participants: &[String],
    ) -> Result<TokenGrant, CallError> {
        if let Some(code) = self.refuse_tokens {
            return Err(CallError::RelayTokensRefused(code));
        }
        let now = self.wall_ms();
        let ask = sotto_server::relay_rooms::Ask {
            me: who,
            relay: url,
            room,
            participants,
            now_ms: now,
        };
        let record = self
            .token_rooms
            .grant(&ask, &[RELAY.to_string()])
            .map_err(|r| CallError::RelayTokensRefused(r.code()))?;
        let mut tokens = Vec::new();
        for p in participants {
            let claims = sotto_admission::Claims {
                relay: record.relay.clone(),
                room: room.into(),
                participant: p.clone(),
                issued_at_ms: now,
                expires_at_ms: now + 180_000,
            };
            let t = sotto_admission::mint(&self.secret, &claims).unwrap();
            self.minted.entry(p.clone()).or_default().push(t.clone());
            tokens.push((p.clone(), t));
        }
        Ok(TokenGrant {
            relay: record.relay,
            tokens,
        })
    }

    /// The simulated relay's admission rule for `who` joining `room` at `url` with `token`.
    fn admits(
        &mut self,
        who: &str,
        url: &str,
        room: &str,
        token: Option<&sotto_admission::RelayToken>,
    ) -> Result<(), sotto_admission::TokenError> {
        let now_ms = self.wall_ms();
        let e = sotto_admission::Expected {
            relay: url,
            room,
            participant: who,
            now_ms,
            left_at_ms: self.leaves.get(&(room.to_owned(), who.to_owned())).copied(),
        };
        sotto_admission::verify(&self.secret, token.map(|t| t.as_str()), &e).map(|_| ())
    }

    fn cmd(&mut self, who: &str, c: UserCommand) {
        let now = self.now;
        self.devs
            .get_mut(who)
            .unwrap()
            .core
            .handle(Event::Command(c), now);
        self.run();
    }

    fn state(&self, who: &str) -> CallState {
        self.devs[who].core.status().state
    }

    fn feed(&mut self, who: &str, ev: Event) {
        let now = self.now;
        if let Some(d) = self.devs.get_mut(who) {
            d.core.handle(ev, now);
        }
    }

    /// Performs every action and delivers every message until nothing moves.
    fn run(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            let names: Vec<String> = self.devs.keys().cloned().collect();
            for n in &names {
                while let Some(a) = self.devs.get_mut(n).and_then(|d| d.core.poll_action()) {
                    moved = true;
                    self.perform(n, a);
                }
            }
            if let Some(m) = self.mail.pop_front() {
                moved = true;
                if self.hold.as_ref().is_some_and(|h| h(&m)) {
                    self.held.push(m);
                } else {
                    self.deliver(m);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network did not settle");
    }

    fn deliver(&mut self, m: Mail) {
        let ev = Event::Message {
            from: m.from,
            device: m.device.min(1),
            message: m.msg,
        };
        self.feed(&m.to, ev);
    }

    /// Delivers the held mail in the order given by `order` (indices into `held`).
    fn release_held(&mut self, order: &[usize]) {
        let mut held: Vec<Option<Mail>> = std::mem::take(&mut self.held)
            .into_iter()
            .map(Some)
            .collect();
        for &i in order {
            if let Some(m) = held[i].take() {
                self.deliver(m);
            }
        }
        self.held = held.into_iter().flatten().collect();
        self.run();
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self
                .devs
                .values()
                .filter_map(|d| d.core.poll_timeout())
                .filter(|t| *t <= end)
                .min();
            let Some(t) = next else { break };
            self.now = self.now.max(t);
            let now = self.now;
            for d in self.devs.values_mut() {
                if d.core.poll_timeout().is_some_and(|t| t <= now) {
                    d.core.handle_timeout(now);
                }
            }
            self.run();
        }
        self.now = end;
        self.run();
    }

    fn perform(&mut self, who: &str, a: Action) {
        match a {
            Action::Send {
                to,
                device,
                message,
                ..
            } => {
                let next = self.seqs.entry((who.to_owned(), to.clone())).or_insert(0);
                *next = (*next).max(message.seq + 1);
                self.mail.push_back(Mail {
                    from: who.to_owned(),
                    to,
                    device,
                    msg: message,
                });
            }
            Action::CheckIdentity { call, user } => {
                let verdict = if self.rekeyed.contains(&user) {
                    IdentityVerdict::Changed
                } else {
                    IdentityVerdict::Unchanged
                };
                self.feed(
                    who,
                    Event::IdentityChecked {
                        call,
                        user,
                        verdict,
                    },
                );
            }
            Action::RequestRelayTokens {
                call,
                url,
                room,
                participants,
            } => {
                let result = self.relay_tokens(who, url.as_deref(), &room, &participants);
                self.feed(who, Event::RelayTokens { call, result });
            }
            Action::JoinRoom {
                call,
                url,
                room,
                token,
            } => {
                if self.relay_stalls {
                    self.devs.get_mut(who).unwrap().stalled_join = Some(call);
                    return;
                }
                if let Err(e) = self.admits(who, &url, &room, token.as_ref()) {
                    let code = sotto_relay::protocol::ErrorCode::from(e);
                    let result = Err(CallError::RelayRefused(code));
                    self.feed(who, Event::RelayJoined { call, result });
                    return;
                }
                self.join_room(who, call, &room);
            }
            Action::LeaveRoom { call } => self.leave_room(who, &call.to_string()),
            Action::Media { call, action } => self.media(who, call, action),
            Action::Notify(n) => self.devs.get_mut(who).unwrap().notices.push(n),
        }
    }

    fn join_room(&mut self, who: &str, call: CallId, room: &str) {
        let members = self.rooms.entry(room.to_owned()).or_default();
        let present: Vec<String> = members.iter().cloned().collect();
        members.insert(who.to_owned());
        for p in &present {
            self.feed(
                p,
                Event::Room {
                    call,
                    event: RoomEvent::MemberJoined(who.to_owned()),
                },
            );
        }
        self.feed(
            who,
            Event::RelayJoined {
                call,
                result: Ok(present),
            },
        );
        // through the relay, media is up once admitted
        self.feed(
            who,
            Event::Media {
                call,
                signal: MediaSignal::Connected,
            },
        );
    }

    fn leave_room(&mut self, who: &str, room: &str) {
        let Some(members) = self.rooms.get_mut(room) else {
            return;
        };
        if !members.remove(who) {
            return;
        }
        let t = self.wall_ms();
        self.leaves.insert((room.to_owned(), who.to_owned()), t);
        let Some(members) = self.rooms.get_mut(room) else {
            return;
        };
        let rest: Vec<String> = members.iter().cloned().collect();
        let call = CallId(<[u8; 16]>::try_from(hex::decode(room).unwrap()).unwrap());
        for p in rest {
            self.feed(
                &p,
                Event::Room {
                    call,
                    event: RoomEvent::MemberLeft(who.to_owned()),
                },
            );
        }
    }

    fn media(&mut self, who: &str, call: CallId, action: MediaAction) {
        let now = self.now;
        let d = self.devs.get_mut(who).unwrap();
        let p = &mut d.plane;
        let reply = match action {
            MediaAction::Create => {
                *p = Plane {
                    exists: true,
                    ring: Some(KeyRing::new(SUITE)),
                    received: std::mem::take(&mut p.received),
                    ..Plane::default()
                };
                Some(Event::MediaReady {
                    call,
                    result: Ok(false),
                })
            }
            MediaAction::CreateOffer => Some(Event::LocalDescription {
                call,
                result: Ok("v=0 offer".into()),
            }),
            MediaAction::AcceptOffer { .. } => {
                p.offer_applied = true;
                Some(Event::LocalDescription {
                    call,
                    result: Ok("v=0 answer".into()),
                })
            }
            MediaAction::ApplyAnswer { .. } => {
                p.answer_applied = true;
                Some(Event::AnswerApplied {
                    call,
                    result: Ok(()),
                })
            }
            MediaAction::UseSendKey(m) => {
                let next = SenderKey::resume(&m, 0).unwrap();
                if let Some(cur) = &p.send {
                    let (c, n) = (cur.id(), next.id());
                    assert!(
                        (n.generation, n.step) > (c.generation, c.step),
                        "a send key never goes back (nonce reuse)"
                    );
                }
                p.send = Some(next);
                None
            }
            MediaAction::InstallKey(m) => {
                p.received.push(m.clone());
                p.ring.as_mut().unwrap().add_key(&m, now).unwrap();
                None
            }
            MediaAction::ForgetSender(s) => {
                p.ring.as_mut().unwrap().remove_sender(s);
                None
            }
            MediaAction::StartSending { .. } => {
                p.sending = true;
                None
            }
            MediaAction::Close => {
                p.exists = false;
                p.sending = false;
                None
            }
            MediaAction::AddCandidate { .. } | MediaAction::SetMuted { .. } => None,
        };
        if let Some(ev) = reply {
            self.feed(who, ev);
        }
        // peer to peer: connected once both descriptions are applied
        let connected: Vec<String> = self
            .devs
            .iter()
            .filter(|(_, d)| d.plane.offer_applied || d.plane.answer_applied)
            .map(|(n, _)| n.clone())
            .collect();
        if connected.len() >= 2 {
            for n in connected {
                let d = self.devs.get_mut(&n).unwrap();
                d.plane.offer_applied = false;
                d.plane.answer_applied = false;
                let Some((call, _, _)) = d.core.current_call() else {
                    continue;
                };
                self.feed(
                    &n,
                    Event::Media {
                        call,
                        signal: MediaSignal::Connected,
                    },
                );
            }
        }
    }

    /// One frame from `who` under its current send key.
    fn frame(&mut self, who: &str, text: &str) -> Vec<u8> {
        let p = &mut self.devs.get_mut(who).unwrap().plane;
        p.send
            .as_mut()
            .expect("a send key")
            .encrypt(Codec::Full, b"", text.as_bytes())
            .unwrap()
    }

    fn opens(&mut self, who: &str, wire: &[u8]) -> bool {
        let now = self.now;
        let p = &mut self.devs.get_mut(who).unwrap().plane;
        p.ring
            .as_mut()
            .is_some_and(|r| r.decrypt(Codec::Full, b"", wire, now).is_ok())
    }

    /// Whether any key `keys` (or a ratchet step after it) opens `wire`.
    fn any_key_opens(&self, keys: &[KeyMaterial], wire: &[u8]) -> bool {
        keys.iter().any(|k| {
            let mut ring = KeyRing::new(SUITE);
            ring.add_key(k, self.now).unwrap();
            ring.decrypt(Codec::Full, b"", wire, self.now).is_ok()
        })
    }

    fn everyone_decrypts_everyone(&mut self, names: &[&str]) {
        for s in names {
            let w = self.frame(s, &format!("from {s}"));
            for r in names.iter().filter(|r| *r != s) {
                assert!(self.opens(r, &w), "{r} cannot decrypt {s}");
            }
        }
    }

    /// The sequence number `from`'s next message to `to` will carry (as the harness saw them).
    fn next_seq(&self, from: &str, to: &str) -> u32 {
        self.seqs
            .get(&(from.to_owned(), to.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// How many messages `who` has sent so far.
    fn sent_by(&self, who: &str) -> usize {
        self.seqs
            .iter()
            .filter(|((f, _), _)| f == who)
            .map(|(_, n)| *n as usize)
            .sum()
    }

    fn notices(&self, who: &str) -> &[Notice] {
        &self.devs[who].notices
    }

    /// alice calls bob (and bob answers) through whatever the net is set up with.
    fn connect(&mut self, a: &str, b: &str) {
        self.cmd(a, UserCommand::Dial(b.into()));
        assert_eq!(self.state(b), CallState::Incoming);
        assert_eq!(self.state(a), CallState::Ringing);
        self.cmd(b, UserCommand::Answer);
        assert_eq!(self.state(a), CallState::Connected);
        assert_eq!(self.state(b), CallState::Connected);
    }

    /// Invites `who` from `by` and has `who` answer.
    fn invite(&mut self, by: &str, who: &str) {
        self.cmd(by, UserCommand::Invite(who.into()));
        assert_eq!(self.state(who), CallState::Incoming, "{who} rings");
        self.cmd(who, UserCommand::Answer);
        assert_eq!(self.state(who), CallState::Connected);
    }
}

#[test]
fn one_to_one_call_connects_and_both_decrypt() {
    let mut n = Net::new(&["alice", "bob"], false);
    n.connect("alice", "bob");
    n.everyone_decrypts_everyone(&["alice", "bob"]);
    assert!(n.devs["alice"].plane.sending && n.devs["bob"].plane.sending);
    n.cmd("bob", UserCommand::Hangup);
    assert_eq!(n.state("alice"), CallState::Ended);
    assert_eq!(
        n.devs["alice"].core.status().end_reason,
        Some(EndReason::RemoteHangup)
    );
    assert!(!n.devs["alice"].plane.exists, "media closed");
}

#[test]
fn nobody_answers_the_ring_timeout_ends_both_sides() {
    let mut n = Net::new(&["alice", "bob"], false);
    n.cmd("alice", UserCommand::Dial("bob".into()));
    n.advance(RING_TIMEOUT);
    assert_eq!(n.state("alice"), CallState::Ended);
    assert_eq!(n.state("bob"), CallState::Ended);
}

#[test]
fn a_second_caller_gets_busy_and_the_call_goes_on() {
    let mut n = Net::new(&["alice", "bob", "carol"], false);
    n.connect("alice", "bob");
    n.cmd("carol", UserCommand::Dial("bob".into()));
    assert_eq!(n.state("carol"), CallState::Ended);
    assert_eq!(
        n.devs["carol"].core.status().end_reason,
        Some(EndReason::Busy)
    );
    assert_eq!(n.state("bob"), CallState::Connected);
    n.everyone_decrypts_everyone(&["alice", "bob"]);
}

#[test]
fn glare_both_dial_one_call_survives() {
    let mut n = Net::new(&["alice", "bob"], false);
    // both dial before either offer arrives
    n.hold = Some(Box::new(|_| true));
    n.cmd("alice", UserCommand::Dial("bob".into()));
    n.cmd("bob", UserCommand::Dial("alice".into()));
    n.hold = None;
    let all: Vec<usize> = (0..n.held.len()).collect();
    n.release_held(&all);
    let (a, b) = (n.state("alice"), n.state("bob"));
    assert_eq!((a, b), (CallState::Connected, CallState::Connected));
    assert_eq!(
        n.devs["alice"].core.current_call().map(|c| c.0),
        n.devs["bob"].core.current_call().map(|c| c.0)
    );
    n.everyone_decrypts_everyone(&["alice", "bob"]);
}

#[test]
fn changed_identity_stops_the_offer() {
    let mut n = Net::new(&["alice", "bob"], false);
    n.rekeyed.insert("bob".into());
    n.cmd("alice", UserCommand::Dial("bob".into()));
    assert_eq!(n.state("alice"), CallState::Ended);
    assert_eq!(n.state("bob"), CallState::Idle, "nothing reached bob");
    assert!(n
        .notices("alice")
        .contains(&Notice::IdentityChanged("bob".into())));
}

/// alice calls bob through the relay, then invites the others one by one.
fn group(names: &[&str]) -> Net {
    let mut n = Net::new(names, true);
    n.connect(names[0], names[1]);
    for who in &names[2..] {
        n.invite(names[0], who);
    }
    n.everyone_decrypts_everyone(names);
    n
}

#[test]
fn group_of_five_everyone_decrypts_everyone() {
    group(&["alice", "bob", "carol", "dave", "erin"]);
}

#[test]
fn joiner_cannot_decrypt_what_was_sent_before_the_join() {
    let mut n = Net::new(&["alice", "bob", "carol"], true);
    n.connect("alice", "bob");
    let before = n.frame("alice", "before carol");
    n.invite("alice", "carol");
    let keys = n.devs["carol"].plane.received.clone();
    assert!(!keys.is_empty());
    assert!(!n.any_key_opens(&keys, &before));
    assert!(!n.opens("carol", &before));
    n.everyone_decrypts_everyone(&["alice", "bob", "carol"]);
}

/// Regression (issue 12, bug 1): on main before the call core, `MediaPeer::prepare_rotation`
/// was idempotent while a rotation was pending, so a second leaver within the activation delay
/// had been given the very key that then became active, and decrypted everything after.
#[test]
fn second_leaver_within_activation_delay_cannot_decrypt_after_leaving() {
    let mut n = group(&["alice", "bob", "carol", "dave"]);
    n.cmd("carol", UserCommand::Hangup);
    n.advance(KEY_ACTIVATION_DELAY / 5);
    let dave_keys = n.devs["dave"].plane.received.clone();
    assert!(
        dave_keys.iter().any(|k| k.id.generation == 1),
        "dave was given the pending rotation (so the check below can fail)"
    );
    n.cmd("dave", UserCommand::Hangup);
    n.advance(KEY_ACTIVATION_DELAY * 2);
    n.everyone_decrypts_everyone(&["alice", "bob"]);
    for s in ["alice", "bob"] {
        let w = n.frame(s, "after both left");
        assert!(!n.any_key_opens(&dave_keys, &w), "dave reads {s}");
    }
}

/// Regression (issue 12, bug 2): on main before the call core a leaver's keys stayed in every
/// ring for the rest of the call; back in the room under the same name, its frames decrypted.
#[test]
fn leaver_rejoining_under_the_same_name_is_not_decrypted() {
    let mut n = group(&["alice", "bob", "carol"]);
    let room = n.devs["alice"].core.current_call().unwrap().0;
    let carol_send = n.devs["carol"].plane.send.as_ref().unwrap().material();
    n.cmd("carol", UserCommand::Hangup);
    n.advance(LEAVER_KEY_RETENTION + Duration::from_millis(1));
    // carol gets back into the room (the relay admits the name) with her old key
    n.join_room("carol", room, &room.to_string());
    let mut old = SenderKey::resume(&carol_send, 1_000).unwrap();
    let w = old.encrypt(Codec::Full, b"", b"it's carol again").unwrap();
    assert!(!n.opens("alice", &w));
    assert!(!n.opens("bob", &w));
    // and nobody gave her a key for it
    n.everyone_decrypts_everyone(&["alice", "bob"]);
}

/// Regression (issue 12, bug 3), core side: while the relay never answers a join, hangup still
/// ends the call at once (and the connect timeout would too); the driver bounds the join itself
/// with RELAY_JOIN_TIMEOUT.
#[test]
fn stalled_relay_join_times_out_and_hangup_still_works() {
    let mut n = Net::new(&["alice", "bob"], true);
    n.cmd("alice", UserCommand::Dial("bob".into()));
    assert_eq!(n.state("bob"), CallState::Incoming);
    n.relay_stalls = true;
    n.cmd("bob", UserCommand::Answer);
    assert_eq!(n.state("bob"), CallState::Connecting);
    assert!(n.devs["bob"].stalled_join.is_some());
    n.cmd("bob", UserCommand::Hangup);
    assert_eq!(n.state("bob"), CallState::Ended);
    assert_eq!(n.state("alice"), CallState::Ended, "the hangup went out");
    // a stalled join on the other side ends by the driver's timeout, reported as an event
    let mut n = Net::new(&["alice", "bob"], true);
    n.relay_stalls = true;
    n.cmd("alice", UserCommand::Dial("bob".into()));
    let call = n.devs["alice"].stalled_join.unwrap();
    n.feed(
        "alice",
        Event::RelayJoined {
            call,
            result: Err(CallError::Timeout {
                what: "relay join",
                limit: crate::consts::RELAY_JOIN_TIMEOUT,
            }),
        },
    );
    n.run();
    assert_eq!(n.state("alice"), CallState::Ended);
    assert!(matches!(
        n.devs["alice"].core.status().end_reason,
        Some(EndReason::Failed(_))
    ));
}

/// Regression (issue 12, bug 4): on main before the call core a call message that arrived after
/// a later one from the same sender was dropped as stale; a media key lost that way left the
/// receiver unable to decrypt after the switch.
#[test]
fn reordered_media_key_is_applied() {
    let mut n = Net::new(&["alice", "bob"], false);
    n.connect("alice", "bob");
    // bob's rotation key and his next message (a mute) reach alice the other way round
    n.hold = Some(Box::new(|m: &Mail| m.to == "alice"));
    n.cmd("bob", UserCommand::RotateKey);
    n.cmd("bob", UserCommand::MuteAudio(true));
    n.hold = None;
    assert_eq!(n.held.len(), 2);
    n.release_held(&[1, 0]);
    n.advance(KEY_ACTIVATION_DELAY);
    let w = n.frame("bob", "after rotation");
    assert_eq!(
        n.devs["bob"].plane.send.as_ref().unwrap().id().generation,
        1
    );
    assert!(n.opens("alice", &w), "alice installed the reordered key");
    assert!(n.devs["alice"].core.status().peer_audio_muted);
}

#[test]
fn a_lost_message_stalls_the_sender_only_until_the_gap_wait() {
    let mut n = Net::new(&["alice", "bob"], false);
    n.connect("alice", "bob");
    n.hold = Some(Box::new(|m: &Mail| m.to == "alice"));
    n.cmd("bob", UserCommand::MuteVideo(true));
    n.cmd("bob", UserCommand::MuteAudio(true));
    n.hold = None;
    n.release_held(&[1]); // the first is lost for good
    assert!(
        !n.devs["alice"].core.status().peer_audio_muted,
        "held behind the gap"
    );
    n.advance(crate::consts::REORDER_GAP_WAIT);
    assert!(n.devs["alice"].core.status().peer_audio_muted);
    assert!(n
        .notices("alice")
        .iter()
        .any(|x| matches!(x, Notice::Dropped(Dropped::GapSkipped { missing: 1, .. }))));
}

#[test]
fn eleven_joins_in_one_second_leave_everyone_on_the_right_keys() {
    let names: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut n = group(&refs);
    // 11 more admissions announced within a second: a member leaves and is re-invited
    for i in 0..11 {
        let who = refs[2 + i % 3];
        n.cmd(who, UserCommand::Hangup);
        n.advance(Duration::from_millis(40));
        n.devs.get_mut(who).unwrap().notices.clear();
        n.invite("m0", who);
        n.advance(Duration::from_millis(40));
    }
    n.advance(KEY_ACTIVATION_DELAY + LEAVER_KEY_RETENTION);
    n.everyone_decrypts_everyone(&refs);
}

mod review;

/// Review finding (TLS review): the relay URL in a peer's offer went straight to the connector,
/// whose plain-loopback exception is meant for local development; a caller could make the
/// callee send an HTTP upgrade with a path of its choosing to a service on the callee's machine.
#[test]
fn a_peer_cannot_name_a_plain_relay_on_our_machine() {
    let mut n = Net::new(&["alice", "bob"], true);
    let call = CallId([3; 16]);
    let offer = |relay: &str| Event::Message {
        from: "alice".into(),
        device: 1,
        message: CallMessage::new(
            call,
            0,
            Body::Offer {
                sdp: String::new(),
                video: true,
                media_key: None,
                relay: Some(relay.into()),
                members: Vec::new(),
                relay_token: None,
            },
        ),
    };
    n.feed("bob", offer("ws://127.0.0.1:2375/v1.41/containers/json?x"));
    n.run();
    assert_eq!(n.state("bob"), CallState::Idle, "not rung");
    assert!(n
        .notices("bob")
        .iter()
        .any(|x| matches!(x, Notice::Dropped(Dropped::UnsafeRelay { .. }))));
    for bad in [
        "ws://relay.example:80",
        "wss://a@relay.example",
        "http://relay.example",
    ] {
        assert!(!n.devs["bob"].core.acceptable_peer_relay(bad), "{bad}");
    }
    assert!(n.devs["bob"]
        .core
        .acceptable_peer_relay("wss://relay.example:8444"));
    // a local development setup allows plain loopback relays
    let mut cfg = CoreConfig::new("bob");
    cfg.allow_plain_loopback_relays = true;
    let core = CallCore::new(cfg, StdRng::seed_from_u64(9));
    assert!(core.acceptable_peer_relay("ws://127.0.0.1:8444"));
    assert!(!core.acceptable_peer_relay("ws://10.0.0.5:8444"));
}

/// Issue 14: a leaver cannot get back into the relay room with the token it was invited with
/// (the relay refuses a token minted before the leave), nor mint itself a new one (the server
/// gives a member's own token only with the claim or an invitation); a member's re-invitation
/// brings a fresh token and the call takes it back.
#[test]
fn a_rejoin_after_leaving_needs_a_new_invitation() {
    use sotto_admission::TokenError;
    let mut n = group(&["alice", "bob", "carol"]);
    let room = n.devs["alice"].core.current_call().unwrap().0.to_string();
    let old = n.minted["carol"].last().unwrap().clone();
    assert_eq!(n.admits("carol", RELAY, &room, Some(&old)), Ok(()));
    n.cmd("carol", UserCommand::Hangup);
    n.advance(LEAVER_KEY_RETENTION + Duration::from_millis(1));
    assert_eq!(
        n.admits("carol", RELAY, &room, Some(&old)),
        Err(TokenError::PredatesLeave)
    );
    let own = n.relay_tokens("carol", Some(RELAY), &room, &["carol".to_string()]);
    assert_eq!(
        own.err(),
        Some(CallError::RelayTokensRefused(
            sotto_server::ErrorCode::RejoinNeedsInvite
        ))
    );
    // an outsider gets nothing for the room either
    let outsider = n.relay_tokens("mallory", Some(RELAY), &room, &["mallory".to_string()]);
    assert_eq!(
        outsider.err(),
        Some(CallError::RelayTokensRefused(
            sotto_server::ErrorCode::NotARoomMember
        ))
    );
    n.invite("bob", "carol");
    let fresh = n.minted["carol"].last().unwrap().clone();
    assert_ne!(fresh, old);
    n.advance(KEY_ACTIVATION_DELAY * 2);
    n.everyone_decrypts_everyone(&["alice", "bob", "carol"]);
}

/// Issue 14: the server refuses the caller's relay tokens: the call ends cleanly with the
/// server's code, and nothing reached the callee.
/// A caller that lets the server place the call (`RelayChoice::Placed`) joins the relay the
/// grant names, the offer names it to the callee, and invitations go to the same relay.
#[test]
fn a_call_the_server_places_goes_through_the_relay_of_the_grant() {
    let mut n = Net::new(&["alice", "bob", "carol"], true);
    let mut cfg = CoreConfig::new("alice");
    cfg.machine = machine;
    cfg.relay = Some(RelayChoice::Placed);
    n.devs.get_mut("alice").unwrap().core = CallCore::new(cfg, StdRng::seed_from_u64(99));
    n.connect("alice", "bob");
    n.invite("alice", "carol");
    n.everyone_decrypts_everyone(&["alice", "bob", "carol"]);
    let room = n.rooms.keys().next().unwrap().clone();
    assert_eq!(
        n.rooms[&room].len(),
        3,
        "all three joined the one relay room"
    );
    let placed = n.token_rooms.get(&room).unwrap();
    assert_eq!(placed.relay, RELAY);
    assert_eq!(placed.owner, "alice");
}

#[test]
fn refused_relay_tokens_end_the_call_being_set_up() {
    let mut n = Net::new(&["alice", "bob"], true);
    n.refuse_tokens = Some(sotto_server::ErrorCode::RoomMembersFull);
    n.cmd("alice", UserCommand::Dial("bob".into()));
    assert_eq!(n.state("alice"), CallState::Ended);
    assert_eq!(n.state("bob"), CallState::Idle, "no offer without tokens");
    assert!(n
        .notices("alice")
        .contains(&Notice::Error(CallError::RelayTokensRefused(
            sotto_server::ErrorCode::RoomMembersFull
        ))));
    assert!(!n.devs["alice"].plane.exists, "media closed");
    assert!(n.rooms.values().all(|r| r.is_empty()), "no relay join");
}

/// Issue 14: the server refuses an invitee's token: the invitation is refused with the
/// server's code, nobody is added, and the call goes on; a later invitation works.
#[test]
fn refused_invitee_token_refuses_the_invitation_and_the_call_goes_on() {
    let mut n = Net::new(&["alice", "bob", "carol"], true);
    n.connect("alice", "bob");
    n.refuse_tokens = Some(sotto_server::ErrorCode::NotARoomMember);
    n.cmd("alice", UserCommand::Invite("carol".into()));
    assert_eq!(n.state("carol"), CallState::Idle, "carol never rang");
    assert!(n
        .notices("alice")
        .contains(&Notice::Error(CallError::RelayTokensRefused(
            sotto_server::ErrorCode::NotARoomMember
        ))));
    assert_eq!(n.state("alice"), CallState::Connected);
    assert_eq!(
        n.devs["alice"].core.status().members,
        vec!["bob".to_string()]
    );
    n.everyone_decrypts_everyone(&["alice", "bob"]);
    n.refuse_tokens = None;
    n.invite("alice", "carol");
    n.advance(KEY_ACTIVATION_DELAY * 2);
    n.everyone_decrypts_everyone(&["alice", "bob", "carol"]);
}
