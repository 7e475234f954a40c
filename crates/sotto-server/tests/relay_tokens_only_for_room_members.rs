//! Relay tokens (`relay_tokens`): the first account to ask claims a room; only its members get
//! tokens, and only for others (a leaver needs a re-invitation); per-request and per-account
//! caps and an unknown relay are refused with typed errors. Every token the server mints is
//! checked with the relay's own rule (`sotto_admission::verify`) against the relay's secret.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use std::sync::Arc;

use common::*;
use sotto_admission::TokenError;
use sotto_server::consts::{MAX_RELAY_ROOMS_PER_ACCOUNT, MAX_RELAY_TOKENS_PER_REQUEST};
use sotto_server::protocol::ParticipantToken;
use sotto_server::{Client, Error, ErrorCode, MemoryStore, RelayEntry, ServerConfig};

const RELAY: &str = "wss://relay.test:8443";

async fn tokens(c: &Client, room: &str, who: &[&str]) -> Result<Vec<ParticipantToken>, Error> {
    let grant = c.relay_tokens(Some(RELAY), room, &names(who)).await?;
    assert_eq!(grant.relay, RELAY);
    Ok(grant.tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_tokens_go_only_to_room_members() {
    let s = relay_secret();
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.relays = vec![RelayEntry {
        url: RELAY.into(),
        secret: s.clone(),
    }];
    let server = start(cfg, Arc::new(MemoryStore::new())).await;
    let (alice, _ea, _) = register(&server, "alice").await;
    let (bob, _eb, _) = register(&server, "bob").await;
    let (mallory, _em, _) = register(&server, "mallory").await;

    // alice claims the room with tokens for herself and her callee, each for its own name
    let t = tokens(&alice, "call-1", &["alice", "bob"]).await.unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(admits(RELAY, &s, &t[0], "call-1", "alice"), Ok(()));
    assert_eq!(admits(RELAY, &s, &t[1], "call-1", "bob"), Ok(()));
    assert_eq!(
        admits(RELAY, &s, &t[1], "call-1", "alice"),
        Err(TokenError::WrongParticipant)
    );
    assert_eq!(
        admits(RELAY, &s, &t[0], "call-2", "alice"),
        Err(TokenError::WrongRoom)
    );

    // a non-member gets nothing for the claimed room: not its own name, not the members'
    for who in [&["mallory"][..], &["bob"][..], &["carol"][..]] {
        assert_eq!(
            refusal(tokens(&mallory, "call-1", who).await),
            ErrorCode::NotARoomMember
        );
    }
    // a member (bob, invited by alice) mints for an invitee, who becomes a member
    let t = tokens(&bob, "call-1", &["mallory"]).await.unwrap();
    assert_eq!(admits(RELAY, &s, &t[0], "call-1", "mallory"), Ok(()));
    tokens(&mallory, "call-1", &["carol"]).await.unwrap();
    // nobody mints their own way back in
    assert_eq!(
        refusal(tokens(&bob, "call-1", &["bob"]).await),
        ErrorCode::RejoinNeedsInvite
    );
    // an unknown relay
    assert_eq!(
        refusal(
            bob.relay_tokens(Some("wss://elsewhere:8443"), "call-9", &names(&["bob"]))
                .await
        ),
        ErrorCode::UnknownRelay
    );
    // the per-request cap: at and over
    let at: Vec<String> = (0..MAX_RELAY_TOKENS_PER_REQUEST)
        .map(|i| format!("p{i}"))
        .collect();
    assert_eq!(
        alice
            .relay_tokens(Some(RELAY), "wide", &at)
            .await
            .unwrap()
            .tokens
            .len(),
        at.len()
    );
    let over: Vec<String> = (0..=MAX_RELAY_TOKENS_PER_REQUEST)
        .map(|i| format!("q{i}"))
        .collect();
    assert_eq!(
        refusal(alice.relay_tokens(Some(RELAY), "wider", &over).await),
        ErrorCode::TooManyParticipants
    );
    // the per-account share: alice holds `call-1` (her oldest) and `wide`; one more claim
    // forgets `call-1` instead of being refused, so her newest call always gets its tokens
    for i in 2..MAX_RELAY_ROOMS_PER_ACCOUNT {
        tokens(&alice, &format!("r{i}"), &["bob"]).await.unwrap();
    }
    tokens(&alice, "one-more", &["bob"]).await.unwrap();
    // `call-1` is forgotten: the first to ask claims it anew (its members hold their tokens,
    // the relay does not ask the server), and others' rooms are untouched
    tokens(&mallory, "call-1", &["mallory"]).await.unwrap();
    assert_eq!(
        refusal(tokens(&mallory, "wide", &["mallory"]).await),
        ErrorCode::NotARoomMember
    );
    tokens(&bob, "bobs-call", &["bob", "alice"]).await.unwrap();
    server.shutdown().await;
}
