//! The unauthenticated state of a connection: challenge sent, waiting for `register` or `login`.

use futures_util::{SinkExt, StreamExt};
use rand::RngCore;
use tokio_tungstenite::tungstenite::Message;

use crate::auth;
use crate::consts;
use crate::error::ErrorCode;
use crate::protocol::{decode_client_frame, valid_username, ClientMessage, ServerMessage, B64};
use crate::server::requests::valid_device_id;
use crate::server::shared::Shared;
use crate::server::wire::{frame, Ws};
use crate::store::{DeviceAddr, RegisterOutcome};

/// Why authentication failed: the request id (if any), the code and the detail sent before the
/// connection is closed.
pub(crate) type AuthErr = (Option<u64>, ErrorCode, &'static str);

/// Sends the challenge and answers frames until one authenticates the connection (its device
/// and, on a clustered server, the connection epoch it claimed; else 0) or fails (why, to be
/// sent before closing). `ip` is the peer's address, which a registration that
/// creates an account is counted against.
pub(crate) async fn authenticate(
    shared: &Shared,
    ws: &mut Ws,
    ip: std::net::IpAddr,
) -> std::result::Result<(DeviceAddr, u64), AuthErr> {
    let limits = &shared.cfg.limits;
    let mut nonce = [0u8; consts::CHALLENGE_NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let challenge = ServerMessage::Challenge {
        server: shared.cfg.server_id.clone(),
        nonce: B64(nonce.to_vec()),
    };
    ws.send(frame(&challenge))
        .await
        .map_err(|_| (None, ErrorCode::Internal, "send failed"))?;
    let mut malformed = 0u32;
    let mut shutdown = shared.shutdown.clone();
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = shutdown.changed() => return Err((None, ErrorCode::ShuttingDown, "server shutting down")),
        };
        let bytes = match msg {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {
                return Err((None, ErrorCode::Malformed, "connection closed"))
            }
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                return Err((None, ErrorCode::Malformed, "binary frames are not used"))
            }
            Some(Ok(_)) => continue,
        };
        let f = match decode_client_frame(bytes.as_bytes(), limits.max_frame_bytes) {
            Ok(f) => f,
            Err(e) if e.code == ErrorCode::FrameTooLarge => {
                return Err((e.id, e.code, "frame exceeds the size limit"))
            }
            Err(e) => {
                malformed += 1;
                if malformed >= limits.max_malformed_frames {
                    return Err((e.id, e.code, "too many malformed frames"));
                }
                shared.metrics.error(e.code);
                let _ = ws
                    .send(frame(&ServerMessage::error(
                        e.id,
                        e.code,
                        "malformed frame",
                    )))
                    .await;
                continue;
            }
        };
        let id = f.id;
        let (username, device_id, identity_key, signature, register) = match f.msg {
            ClientMessage::Register {
                username,
                device_id,
                identity_key,
                signature,
            } => (username, device_id, Some(identity_key), signature, true),
            ClientMessage::Login {
                username,
                device_id,
                signature,
            } => (username, device_id, None, signature, false),
            ClientMessage::Ping => {
                let _ = ws.send(frame(&ServerMessage::Pong { id })).await;
                continue;
            }
            _ => {
                shared.metrics.error(ErrorCode::NotAuthenticated);
                let _ = ws
                    .send(frame(&ServerMessage::error(
                        Some(id),
                        ErrorCode::NotAuthenticated,
                        "authenticate first",
                    )))
                    .await;
                continue;
            }
        };
        if !valid_username(&username) {
            return Err((Some(id), ErrorCode::InvalidField, "invalid username"));
        }
        if register && !valid_device_id(device_id) {
            return Err((
                Some(id),
                ErrorCode::InvalidDeviceId,
                "device id out of range",
            ));
        }
        let addr = DeviceAddr::new(username, device_id);
        let key = match identity_key {
            Some(k) => {
                if !auth::valid_identity_key(&k.0) {
                    return Err((Some(id), ErrorCode::InvalidField, "invalid identity key"));
                }
                k.0
            }
            None => {
                let a = addr.clone();
                match shared.store(move |s| s.identity(&a)).await {
                    Ok(Some(k)) => k,
                    Ok(None) => {
                        return Err((Some(id), ErrorCode::AuthFailed, "authentication failed"))
                    }
                    Err(code) => return Err((Some(id), code, "storage failure")),
                }
            }
        };
        let message = auth::auth_message(&shared.cfg.server_id, &nonce, &addr.user, addr.device);
        if !auth::verify(&key, &message, &signature.0) {
            return Err((Some(id), ErrorCode::AuthFailed, "authentication failed"));
        }
        let created = if register {
            // a device that exists already is logging in; otherwise counted before the store
            // call so that concurrent registrations cannot pass the limit together, and given
            // back below if no account was created
            let a = addr.clone();
            let exists = shared
                .store(move |s| s.identity(&a))
                .await
                .map_err(|code| (Some(id), code, "storage failure"))?
                .is_some();
            let counted = !exists;
            if counted && !shared.take_registration(ip) {
                return Err((
                    Some(id),
                    ErrorCode::RegistrationRateLimited,
                    "too many new accounts from this address",
                ));
            }
            let a = addr.clone();
            let k = key.clone();
            let now = shared.cfg.clock.now_ms();
            let outcome = shared.store(move |s| s.register(&a, &k, now)).await;
            if counted && !matches!(outcome, Ok(RegisterOutcome::Created)) {
                shared.registration_not_created(ip);
            }
            match outcome {
                Ok(RegisterOutcome::Created) => true,
                Ok(RegisterOutcome::AlreadyRegistered) => false,
                Ok(RegisterOutcome::UsernameTaken) => {
                    return Err((Some(id), ErrorCode::UsernameTaken, "username taken"))
                }
                Ok(RegisterOutcome::IdentityMismatch) => {
                    return Err((
                        Some(id),
                        ErrorCode::IdentityMismatch,
                        "device has another identity key",
                    ))
                }
                Err(code) => return Err((Some(id), code, "storage failure")),
            }
        } else {
            false
        };
        let a = addr.clone();
        let one_time_prekeys = shared
            .store(move |s| s.one_time_count(&a))
            .await
            .map_err(|code| (Some(id), code, "storage failure"))?;
        // claimed before `authenticated`: a client told it is logged in holds the current
        // connection, and any older one (on any server) is fenced off its queue
        let epoch = if shared.clustered() {
            let (a, node) = (addr.clone(), shared.node_id.clone());
            shared
                .store(move |s| s.claim_connection(&a, &node))
                .await
                .map_err(|code| (Some(id), code, "storage failure"))?
        } else {
            0
        };
        ws.send(frame(&ServerMessage::Authenticated {
            id,
            created,
            one_time_prekeys,
        }))
        .await
        .map_err(|_| (None, ErrorCode::Internal, "send failed"))?;
        return Ok((addr, epoch));
    }
}
