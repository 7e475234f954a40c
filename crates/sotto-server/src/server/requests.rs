//! Authenticated requests: each one validated against the limits, run against the store, and
//! answered.

use std::time::Duration;

use crate::auth;
use crate::consts;
use crate::error::ErrorCode;
use crate::fetch_limits::FetchDecision;
use crate::limits::TokenBucket;
use crate::metrics::Metrics;
use crate::prekey_check;
use crate::protocol::{
    valid_username, Bundle, ClientMessage, ParticipantToken, ServerMessage, B64,
};
use crate::relay_rooms::Ask;
use crate::server::shared::Shared;
use crate::store::{
    BundleOutcome, DeviceAddr, NewEnvelope, QueueLimits, SetDeviceOutcome, WriteOp,
};
use crate::turn;
use crate::worker::Ended;

/// Device numbers accepted at `register` and `add_device`: `1..=MAX_DEVICE_ID`.
pub(crate) fn valid_device_id(device_id: u32) -> bool {
    (1..=consts::MAX_DEVICE_ID).contains(&device_id)
}

/// Validates a `send` or an `ack` into a store write, or answers it at once.
pub(crate) fn prepare_write(
    shared: &Shared,
    me: &DeviceAddr,
    bucket: &mut TokenBucket,
    id: u64,
    msg: ClientMessage,
) -> std::result::Result<WriteOp, Box<(ServerMessage, Option<Duration>)>> {
    let limits = &shared.cfg.limits;
    let err = |code, why: &str| Box::new((ServerMessage::error(Some(id), code, why), None));
    match msg {
        ClientMessage::Send {
            to_user,
            to_device,
            ttl_secs,
            ciphertext,
        } => {
            if let Err(wait) = bucket.try_take(std::time::Instant::now()) {
                return Err(Box::new((
                    ServerMessage::error(Some(id), ErrorCode::RateLimited, "envelope rate limit"),
                    Some(wait),
                )));
            }
            if ttl_secs == 0 || ttl_secs > limits.max_envelope_ttl_secs {
                return Err(err(ErrorCode::TtlTooLong, "ttl out of range"));
            }
            if !valid_username(&to_user) {
                return Err(err(ErrorCode::UnknownRecipient, "unknown recipient"));
            }
            let now = shared.cfg.clock.now_ms();
            Ok(WriteOp::Enqueue {
                env: NewEnvelope {
                    to: DeviceAddr::new(to_user, to_device),
                    from: me.clone(),
                    stored_at_ms: now,
                    expires_at_ms: now.saturating_add(ttl_secs.saturating_mul(1000)),
                    ciphertext: ciphertext.0,
                },
                limits: QueueLimits {
                    per_device: limits.max_queued_per_device,
                    per_sender: limits.max_queued_per_sender,
                },
            })
        }
        ClientMessage::Ack { envelope_id } => Ok(WriteOp::Ack {
            to: me.clone(),
            id: envelope_id,
        }),
        _ => Err(err(ErrorCode::Internal, "internal routing error")),
    }
}

/// Handles one authenticated request; returns the response and, when rate limited, how long to
/// stop reading from this connection.
pub(crate) async fn handle_request(
    shared: &Shared,
    me: &DeviceAddr,

    id: u64,
    msg: ClientMessage,
) -> (ServerMessage, Option<Duration>) {
    let limits = &shared.cfg.limits;
    let err = |code, why: &str| (ServerMessage::error(Some(id), code, why), None);
    match msg {
        ClientMessage::Ping => (ServerMessage::Pong { id }, None),
        ClientMessage::Register { .. } | ClientMessage::Login { .. } => {
            err(ErrorCode::InvalidField, "already authenticated")
        }
        ClientMessage::Send { .. } | ClientMessage::Ack { .. } => {
            // Routed by `prepare_write` before this function is called.
            err(ErrorCode::Internal, "internal routing error")
        }
        ClientMessage::FetchBundle {
            username,
            device_id,
        } => {
            if !valid_username(&username) {
                return err(ErrorCode::UnknownRecipient, "unknown device");
            }
            let a = DeviceAddr::new(username, device_id);
            let one_time = match shared.decide_fetch(&me.user, &a) {
                FetchDecision::WithOneTime => true,
                FetchDecision::WithoutOneTime => {
                    Metrics::inc(&shared.metrics.one_time_prekeys_withheld_total);
                    false
                }
                FetchDecision::Refused(wait) => {
                    return (
                        ServerMessage::error(
                            Some(id),
                            ErrorCode::FetchRateLimited,
                            "bundle fetch rate limit",
                        ),
                        Some(wait.min(Duration::from_secs(1))),
                    );
                }
            };
            let a2 = a.clone();
            // on a cluster the target's one-time allowance is also the cluster's (a store
            // bucket), else every server would hand out its own
            let shared_bucket = (one_time && shared.clustered()).then(|| {
                (
                    one_time_bucket_key(&a),
                    limits.one_time_prekeys_per_target_per_minute,
                )
            });
            let now = shared.cfg.clock.now_ms();
            let taken = shared
                .store(move |s| {
                    let mut one_time = one_time;
                    if let Some((key, per_minute)) = &shared_bucket {
                        one_time = s.take_limit_token(key, *per_minute, now)?;
                    }
                    let b = s.take_bundle(&a2, one_time)?;
                    let handed =
                        matches!(&b, BundleOutcome::Bundle(b) if b.one_time_prekey.is_some());
                    if let (true, false, Some((key, per_minute))) =
                        (one_time, handed, &shared_bucket)
                    {
                        s.give_back_limit_token(key, *per_minute)?;
                    }
                    Ok((b, one_time))
                })
                .await
                .map(|(b, cluster_allowed)| {
                    if one_time && !cluster_allowed {
                        Metrics::inc(&shared.metrics.one_time_prekeys_withheld_total);
                    }
                    b
                });
            let handed =
                matches!(&taken, Ok(BundleOutcome::Bundle(b)) if b.one_time_prekey.is_some());
            if one_time && !handed {
                shared.fetch_found_no_one_time(&me.user, &a);
            }
            match taken {
                Ok(BundleOutcome::Bundle(b)) => {
                    Metrics::inc(&shared.metrics.bundles_fetched_total);
                    if b.one_time_prekey.is_some()
                        && b.one_time_remaining < limits.low_prekey_threshold
                    {
                        // on a cluster the target may be connected to another node: it is told
                        // through NATS
                        shared.prekeys_low(&a, b.one_time_remaining);
                    }
                    let bundle = Bundle {
                        username: a.user,
                        device_id: a.device,
                        identity_key: B64(b.identity_key),
                        signed_prekey: b.signed_prekey,
                        kem_prekey: b.kem_prekey,
                        one_time_prekey: b.one_time_prekey,
                    };
                    (ServerMessage::Bundle { id, bundle }, None)
                }
                Ok(BundleOutcome::UnknownDevice) => {
                    err(ErrorCode::UnknownRecipient, "unknown device")
                }
                Ok(BundleOutcome::NoPrekeys) => err(ErrorCode::NoPrekeys, "no prekeys published"),
                Err(code) => err(code, "storage failure"),
            }
        }
        ClientMessage::ListDevices { username } => {
            if !valid_username(&username) {
                return err(ErrorCode::UnknownRecipient, "unknown user");
            }
            let listed = shared
                .store(move |s| {
                    let ids = s.devices(&username)?;
                    let mut keys = Vec::with_capacity(ids.len());
                    for &device_id in &ids {
                        let addr = DeviceAddr {
                            user: username.clone(),
                            device: device_id,
                        };
                        keys.push(B64(s.identity(&addr)?.unwrap_or_default()));
                    }
                    Ok((ids, keys))
                })
                .await;
            match listed {
                Ok((device_ids, identity_keys)) => (
                    ServerMessage::Devices {
                        id,
                        device_ids,
                        identity_keys,
                    },
                    None,
                ),
                Err(code) => err(code, "storage failure"),
            }
        }
        ClientMessage::PublishPrekeys {
            signed_prekey,
            kem_prekey,
            one_time_prekeys,
        } => {
            if one_time_prekeys.len() > limits.max_one_time_prekeys_per_upload {
                return err(
                    ErrorCode::InvalidField,
                    "too many one-time prekeys in one upload",
                );
            }
            if let Err(r) = prekey_check::check_formats(
                signed_prekey.as_ref(),
                kem_prekey.as_ref(),
                &one_time_prekeys,
            ) {
                return err(r.code(), "a prekey is not a public key of its type");
            }
            let a = me.clone();
            let max = limits.max_one_time_prekeys_stored;
            match shared
                .store(move |s| {
                    // checked against the key bound now, in the same store step as the write
                    if signed_prekey.is_some() || kem_prekey.is_some() {
                        if let Some(identity) = s.identity(&a)? {
                            if let Err(r) = prekey_check::check_signatures(
                                &identity,
                                signed_prekey.as_ref(),
                                kem_prekey.as_ref(),
                            ) {
                                return Ok(Err(r));
                            }
                        }
                    }
                    s.publish_prekeys(
                        &a,
                        signed_prekey.as_ref(),
                        kem_prekey.as_ref(),
                        &one_time_prekeys,
                        max,
                    )
                    .map(Ok)
                })
                .await
            {
                Ok(Err(r)) => err(r.code(), "prekey signature does not verify"),
                Ok(Ok(Some(n))) => (
                    ServerMessage::Published {
                        id,
                        one_time_prekeys: n,
                    },
                    None,
                ),
                Ok(Ok(None)) => err(ErrorCode::InvalidField, "one-time prekey stock limit"),
                Err(code) => err(code, "storage failure"),
            }
        }
        ClientMessage::AddDevice {
            device_id,
            identity_key,
        } => {
            if device_id == me.device {
                return err(
                    ErrorCode::InvalidField,
                    "cannot re-key the signed-in device",
                );
            }
            if !valid_device_id(device_id) {
                return err(ErrorCode::InvalidDeviceId, "device id out of range");
            }
            if !auth::valid_identity_key(&identity_key.0) {
                return err(ErrorCode::InvalidField, "invalid identity key");
            }
            let a = DeviceAddr::new(me.user.clone(), device_id);
            let a2 = a.clone();
            let now = shared.cfg.clock.now_ms();
            let max = limits.max_devices_per_account;
            // count and add in one store step (one transaction): concurrent adds, on this
            // server or another sharing the store, cannot both pass the count
            match shared
                .store(move |s| s.set_device(&a2, &identity_key.0, now, max))
                .await
            {
                Ok(SetDeviceOutcome::TooManyDevices) => err(
                    ErrorCode::TooManyDevices,
                    "the account has the most devices allowed",
                ),
                Ok(done) => {
                    let replaced = done == SetDeviceOutcome::Replaced;
                    if replaced {
                        if let Some(c) = shared.online().get(&a) {
                            c.end(Ended::Replaced);
                        }
                    }
                    (ServerMessage::DeviceAdded { id, replaced }, None)
                }
                Err(code) => err(code, "storage failure"),
            }
        }
        ClientMessage::RelayTokens {
            relay,
            room,
            participants,
        } => relay_tokens(shared, me, id, relay, room, participants).await,
        ClientMessage::TurnCredentials => {
            let Some(t) = &shared.cfg.turn else {
                return err(ErrorCode::TurnUnavailable, "no TURN configured");
            };
            let expiry = shared.cfg.clock.now_ms() / 1000 + t.ttl_secs;
            let c = turn::credentials(&t.secret, &format!("{}.{}", me.user, me.device), expiry);
            (
                ServerMessage::Turn {
                    id,
                    username: c.username,
                    password: c.password,
                    ttl_secs: t.ttl_secs,
                    uris: t.uris.clone(),
                },
                None,
            )
        }
    }
}

/// `relay_tokens`: placement and the membership rule ([`crate::relay_rooms::decide`], applied
/// by the store so every node sharing it agrees), then one token per participant, minted with
/// the secret of the relay the room is placed at.
async fn relay_tokens(
    shared: &Shared,
    me: &DeviceAddr,
    id: u64,
    relay: Option<String>,
    room: String,
    participants: Vec<String>,
) -> (ServerMessage, Option<Duration>) {
    let err = |code: ErrorCode| (ServerMessage::error(Some(id), code, code.as_str()), None);
    let now = shared.cfg.clock.now_ms();
    let relays: Vec<String> = shared.cfg.relays.iter().map(|r| r.url.clone()).collect();
    let ask_participants = participants.clone();
    let user = me.user.clone();
    let claim_room = room.clone();
    let granted = shared
        .store(move |s| {
            let ask = Ask {
                me: &user,
                relay: relay.as_deref(),
                room: &room,
                participants: &ask_participants,
                now_ms: now,
            };
            s.grant_relay_room(&ask, &relays)
        })
        .await;
    let record = match granted {
        Ok(Ok(record)) => record,
        Ok(Err(refusal)) => return err(refusal.code()),
        Err(code) => return err(code),
    };
    // the rule placed the room at a configured relay (or refused)
    let Some(entry) = shared.cfg.relay(&record.relay) else {
        return err(ErrorCode::UnknownRelay);
    };
    let expires = now.saturating_add(shared.cfg.relay_token_ttl_secs.saturating_mul(1000));
    let mut tokens = Vec::with_capacity(participants.len());
    for participant in participants {
        let claims = sotto_admission::Claims {
            relay: record.relay.clone(),
            room: claim_room.clone(),
            participant,
            issued_at_ms: now,
            expires_at_ms: expires,
        };
        match sotto_admission::mint(&entry.secret, &claims) {
            Ok(token) => tokens.push(ParticipantToken {
                participant: claims.participant,
                token,
            }),
            // names were checked by the rule; a relay URL over the limit is refused at config
            Err(_) => return err(ErrorCode::InvalidField),
        }
    }
    (
        ServerMessage::RelayTokens {
            id,
            relay: record.relay,
            tokens,
        },
        None,
    )
}

/// The store's limit bucket of the one-time prekeys `target` hands out (usernames are
/// `[a-z0-9._-]`, so `/` separates unambiguously).
fn one_time_bucket_key(target: &DeviceAddr) -> String {
    format!("one_time/{}/{}", target.user, target.device)
}
