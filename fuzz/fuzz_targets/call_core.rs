//! The call core as a state machine under hostile input: a device in a call (1:1 or through a
//! relay) takes any sequence of messages from its peer, other members and strangers (any body,
//! any sequence number, the current or another call id, keys for any sender id), relay
//! announcements, results of its own actions (relay tokens included; in any order, for any call), media signals,
//! commands and time. It must never panic, every action it asks for must be bounded, and a
//! send key it hands the data plane must never go back (that would reuse nonces).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sotto_call::core::{
    sender_id_for, Action, CallCore, CallError, CoreConfig, Event, IdentityVerdict, MediaAction,
    MediaSignal, RelayChoice, RoomEvent, TokenGrant, UserCommand,
};
use sotto_call::media::MediaKind;
use sotto_call::messages::{Body, CallId, CallMessage};
use sotto_frame::{CipherSuite, SenderKey};

const NAMES: [&str; 5] = ["bob", "carol", "dave", "mallory", "alice"];

/// A relay token as the server hands it out (the core never looks inside).
fn token() -> sotto_relay::admission::RelayToken {
    sotto_relay::admission::RelayToken::from_text("v1.Y2xhaW1z.bWFj".into()).expect("short")
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(mode) = input.byte() else { return };
    let mut cfg = CoreConfig::new("alice");
    cfg.relay = match mode & 3 {
        1 => Some(RelayChoice::Url("ws://relay.test".into())),
        3 => Some(RelayChoice::Placed),
        _ => None,
    };
    let mut core = CallCore::new(cfg, StdRng::seed_from_u64(u64::from(mode)));
    let t0 = Instant::now();
    let mut now = t0;
    let mut calls: Vec<CallId> = vec![CallId([7; 16])];
    let mut send_key: Option<(u64, u64)> = None;
    let mut actions = 0usize;
    while let Some(op) = input.byte() {
        let arg = input.byte().unwrap_or(0);
        let name = NAMES[usize::from(arg) % NAMES.len()].to_string();
        let call = calls[usize::from(arg >> 4) % calls.len()];
        let ev = match op % 16 {
            0 => Event::Command(match arg % 8 {
                0 => UserCommand::Dial(name),
                1 => UserCommand::Answer,
                2 => UserCommand::Reject,
                3 => UserCommand::Hangup,
                4 => UserCommand::MuteAudio(arg & 8 != 0),
                5 => UserCommand::RotateKey,
                6 => UserCommand::Invite(name),
                _ => UserCommand::SetKeyActivationDelay(Duration::from_millis(u64::from(arg) * 40)),
            }),
            1..=5 => {
                let seq = u32::from(input.byte().unwrap_or(0));
                let who = NAMES[usize::from(input.byte().unwrap_or(0)) % NAMES.len()];
                let key = SenderKey::new(CipherSuite::default(), sender_id_for(who), &[arg; 16])
                    .map(|k| k.material());
                let Ok(key) = key else { continue };
                let body = match arg % 10 {
                    0 => Body::Offer {
                        sdp: "v=0".into(),
                        video: true,
                        media_key: (arg & 16 != 0).then_some(key),
                        relay: (arg & 32 != 0).then(|| "ws://relay.test".into()),
                        members: NAMES[..usize::from(arg % 4)].iter().map(|s| s.to_string()).collect(),
                        relay_token: (arg & 64 != 0).then(token),
                    },
                    1 => Body::Ringing,
                    2 => Body::Answer { sdp: "v=0".into(), media_key: key },
                    3 => Body::MediaKey { media_key: key },
                    4 => Body::Add { user: who.into() },
                    5 => Body::Hangup { reason: String::new() },
                    6 => Body::Candidate { candidate: "{}".into() },
                    7 => Body::Mute { audio: true, video: false },
                    8 => Body::Reject,
                    _ => Body::Busy,
                };
                Event::Message { from: name, device: 1, message: CallMessage::new(call, seq, body) }
            }
            6 => Event::IdentityChecked {
                call,
                user: name,
                verdict: match arg % 3 {
                    0 => IdentityVerdict::Unchanged,
                    1 => IdentityVerdict::Changed,
                    _ => IdentityVerdict::Unknown,
                },
            },
            7 => Event::MediaReady {
                call,
                result: if arg & 1 == 0 { Ok(arg & 2 != 0) } else { Err(CallError::NoMedia) },
            },
            8 => Event::LocalDescription { call, result: Ok("v=0".into()) },
            9 => Event::RelayJoined {
                call,
                result: Ok(NAMES[..usize::from(arg % 5)].iter().map(|s| s.to_string()).collect()),
            },
            10 => Event::Room {
                call,
                event: if arg & 1 == 0 { RoomEvent::MemberJoined(name) } else { RoomEvent::MemberLeft(name) },
            },
            11 => Event::Media {
                call,
                signal: match arg % 5 {
                    0 => MediaSignal::Connected,
                    1 => MediaSignal::Failed,
                    2 => MediaSignal::GatheringComplete,
                    3 => MediaSignal::RotationNeeded,
                    _ => MediaSignal::FirstFrameDecrypted(MediaKind::Video),
                },
            },
            12 => Event::SendFailed { call, to: name, kind: "x", identity_changed: arg & 1 == 1, why: String::new() },
            13 => Event::AnswerApplied { call, result: Ok(()) },
            14 => Event::RelayTokens {
                call,
                result: if arg & 1 == 0 {
                    Ok(TokenGrant {
                        // the relay the server placed the room at: the one named, or another
                        relay: if arg & 2 == 0 { "ws://relay.test" } else { "ws://other.test" }.into(),
                        tokens: NAMES[..usize::from(arg % 6)].iter().map(|s| (s.to_string(), token())).collect(),
                    })
                } else {
                    Err(CallError::RelayTokensRefused(sotto_server::ErrorCode::NotARoomMember))
                },
            },
            _ => {
                now += Duration::from_millis(u64::from(arg) * 50);
                core.handle_timeout(now);
                continue;
            }
        };
        core.handle(ev, now);
        while let Some(a) = core.poll_action() {
            actions += 1;
            assert!(actions < 100_000, "unbounded actions");
            match a {
                Action::Media { action: MediaAction::UseSendKey(k), .. } => {
                    let id = (k.id.generation, k.id.step);
                    if let Some(prev) = send_key {
                        // a fresh call starts again at (0, 0); within one call keys move forward
                        assert!(id > prev || id == (0, 0), "send key went back: {prev:?} -> {id:?}");
                    }
                    send_key = Some(id);
                }
                Action::Send { call, .. }
                | Action::JoinRoom { call, .. }
                | Action::RequestRelayTokens { call, .. } => {
                    if !calls.contains(&call) && calls.len() < 4 {
                        calls.push(call);
                    }
                }
                _ => {}
            }
        }
        if let Some(t) = core.poll_timeout() {
            assert!(t >= t0, "a deadline before the start");
        }
    }
});
