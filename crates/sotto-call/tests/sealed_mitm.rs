#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Sealed call setup through the real signaling server (SQLite on disk, real WebSocket), with a
//! real WebSocket man-in-the-middle proxy between one client and the server. The proxy parses
//! each JSON text frame and hands it to a rule that may forward, rewrite, duplicate, hold back
//! (reorder) or drop it — everything a malicious server or network path can do.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use sotto_call::messages::{Body, CallId, CallMessage, Reorder, ReorderError};
use sotto_call::sealed::{Device, SealedError};
use sotto_call::state::{CallMachine, EndReason, Input, Output, Role, State};
use sotto_ratchet::Fingerprint;
use sotto_server::{Envelope, Events};
use sotto_testkit::device::device;
use sotto_testkit::server::server;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Client → server (requests).
    Up,
    /// Server → client (answers and pushes).
    Down,
}

type Rule = Box<dyn FnMut(Dir, Value) -> Vec<Value> + Send>;

/// A WebSocket man in the middle: every text frame, both ways, goes through `rule`.
struct Proxy {
    url: String,
    rule: Arc<Mutex<Rule>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let rule: Arc<Mutex<Rule>> = Arc::new(Mutex::new(Box::new(|_, v| vec![v])));
        let r = rule.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (upstream, rule) = (upstream.clone(), r.clone());
                tokio::spawn(async move {
                    let Ok(client) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    let Ok((server, _)) = tokio_tungstenite::connect_async(upstream).await else {
                        return;
                    };
                    let (mut c_tx, mut c_rx) = client.split();
                    let (mut s_tx, mut s_rx) = server.split();
                    let r2 = rule.clone();
                    let up = async move {
                        while let Some(Ok(m)) = c_rx.next().await {
                            for out in apply(&rule, Dir::Up, m) {
                                if s_tx.send(out).await.is_err() {
                                    return;
                                }
                            }
                        }
                    };
                    let down = async move {
                        while let Some(Ok(m)) = s_rx.next().await {
                            for out in apply(&r2, Dir::Down, m) {
                                if c_tx.send(out).await.is_err() {
                                    return;
                                }
                            }
                        }
                    };
                    tokio::select! { _ = up => {}, _ = down => {} }
                });
            }
        });
        Proxy { url, rule }
    }

    fn set(&self, rule: impl FnMut(Dir, Value) -> Vec<Value> + Send + 'static) {
        *self.rule.lock().unwrap() = Box::new(rule);
    }
}

fn apply(rule: &Mutex<Rule>, dir: Dir, m: Message) -> Vec<Message> {
    match m {
        Message::Text(t) => match serde_json::from_str::<Value>(t.as_str()) {
            Ok(v) => (rule.lock().unwrap())(dir, v)
                .into_iter()
                .map(|v| Message::text(v.to_string()))
                .collect(),
            Err(_) => vec![Message::Text(t)],
        },
        other => vec![other],
    }
}

fn is_envelope(v: &Value) -> bool {
    v["type"] == "envelope"
}

fn b64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

fn to_b64(b: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(b))
}

async fn recv(ev: &mut Events) -> Envelope {
    tokio::time::timeout(T, ev.next_envelope())
        .await
        .expect("no envelope in time")
        .expect("client closed")
}

async fn recv_none(ev: &mut Events, wait: Duration) {
    if let Ok(Some(e)) = tokio::time::timeout(wait, ev.next_envelope()).await {
        panic!("unexpected envelope {}", e.envelope_id);
    }
}

/// Receives, opens and acknowledges one envelope.
async fn open_next(
    dev: &Device,
    ev: &mut Events,
) -> Result<sotto_call::sealed::Incoming, SealedError> {
    let env = recv(ev).await;
    let r = dev.open(&env);
    dev.ack(&env).await.unwrap();
    r
}

const ALICE_FP: &str = "a=fingerprint:sha-256 AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA:AA";
const EVIL_FP: &str = "a=fingerprint:sha-256 EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE:EE";

fn offer(call: CallId, seq: u32, fp: &str) -> CallMessage {
    CallMessage::new(
        call,
        seq,
        Body::Offer {
            sdp: format!("v=0\r\n{fp}\r\n"),
            video: true,
            media_key: Some(test_key(0x08)),
            relay: None,
            members: Vec::new(),
            relay_token: None,
        },
    )
}

fn sdp_of(m: &CallMessage) -> &str {
    match &m.body {
        Body::Offer { sdp, .. } | Body::Answer { sdp, .. } => sdp,
        other => panic!("not an offer/answer: {other:?}"),
    }
}

fn mute(call: CallId, seq: u32) -> CallMessage {
    CallMessage::new(
        call,
        seq,
        Body::Mute {
            audio: seq.is_multiple_of(2),
            video: seq.is_multiple_of(3),
        },
    )
}

/// The safety number computed independently from the two public identity keys.
fn genuine_safety_number(
    a: &str,
    a_key: &sotto_ratchet::IdentityKey,
    b: &str,
    b_key: &sotto_ratchet::IdentityKey,
) -> String {
    let fp = Fingerprint::new(2, a.as_bytes(), a_key, b.as_bytes(), b_key);
    fp.displayable
        .as_bytes()
        .chunks(5)
        .map(|c| std::str::from_utf8(c).unwrap().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Alice offers, Bob answers; then 40 messages each way, interleaved and in bursts. Every
/// message arrives once, from the right identity, intact and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_answer_and_many_messages_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let (alice, mut aev) = device(&srv.url(), "alice").await;
    let (bob, mut bev) = device(&srv.url(), "bob").await;
    let call = CallId::random();

    alice
        .send("bob", 1, &offer(call, 0, ALICE_FP))
        .await
        .unwrap();
    let inc = open_next(&bob, &mut bev).await.unwrap();
    assert_eq!((inc.from_user.as_str(), inc.from_device), ("alice", 1));
    assert!(inc.identity == alice.identity_key());
    assert_eq!(inc.message.call_id().unwrap(), call);
    assert!(sdp_of(&inc.message).contains(ALICE_FP));

    let answer = CallMessage::new(
        call,
        0,
        Body::Answer {
            sdp: "v=0\r\na=fingerprint:sha-256 BB\r\n".into(),
            media_key: test_key(0x09),
        },
    );
    bob.send("alice", 1, &answer).await.unwrap();
    let inc = open_next(&alice, &mut aev).await.unwrap();
    assert!(inc.identity == bob.identity_key());
    assert_eq!(inc.message, answer);

    // both sides show the same safety number, and it is the one the two keys give
    let sa = alice.safety_number("bob", 1).unwrap();
    let sb = bob.safety_number("alice", 1).unwrap();
    assert_eq!(sa, sb);
    assert_eq!(
        sa,
        genuine_safety_number("alice", &alice.identity_key(), "bob", &bob.identity_key())
    );
    assert_eq!(sa.len(), 60 + 11);

    for round in 0..8u32 {
        // bursts of five each way
        for i in 0..5 {
            alice
                .send("bob", 1, &mute(call, 1 + round * 5 + i))
                .await
                .unwrap();
            bob.send("alice", 1, &mute(call, 1 + round * 5 + i))
                .await
                .unwrap();
        }
        for i in 0..5 {
            let seq = 1 + round * 5 + i;
            assert_eq!(
                open_next(&bob, &mut bev).await.unwrap().message,
                mute(call, seq)
            );
            assert_eq!(
                open_next(&alice, &mut aev).await.unwrap().message,
                mute(call, seq)
            );
        }
    }
    // everything was acknowledged: nothing comes again
    recv_none(&mut aev, Duration::from_millis(300)).await;
    recv_none(&mut bev, Duration::from_millis(300)).await;
}

/// The proxy flips a byte of the ciphertext, changes the type byte, truncates: each is refused
/// with a typed error, and the next genuine message still opens (the queue never wedges).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_ciphertext_is_refused_and_the_queue_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let proxy = Proxy::start(srv.url()).await;
    let (alice, _aev) = device(&srv.url(), "alice").await;
    let (bob, mut bev) = device(&proxy.url, "bob").await;
    let call = CallId::random();

    let n = Arc::new(Mutex::new(0u32));
    let n2 = n.clone();
    proxy.set(move |dir, mut v| {
        if dir == Dir::Down && is_envelope(&v) {
            let mut k = n2.lock().unwrap();
            let mut ct = b64(&v["ciphertext"]);
            match *k {
                0 => {
                    let last = ct.len() - 1;
                    ct[last] ^= 1; // MAC
                }
                1 => {
                    let mid = ct.len() / 2;
                    ct[mid] ^= 0x80; // body
                }
                2 => ct[0] = 7, // unknown type byte
                3 => ct.truncate(0),
                4 => {
                    let half = ct.len() / 2;
                    ct.truncate(half);
                }
                _ => {}
            }
            *k += 1;
            v["ciphertext"] = to_b64(&ct);
        }
        vec![v]
    });

    for seq in 0..6 {
        alice
            .send("bob", 1, &offer(call, seq, ALICE_FP))
            .await
            .unwrap();
    }
    let mut errors = Vec::new();
    for _ in 0..5 {
        errors.push(open_next(&bob, &mut bev).await.unwrap_err());
    }
    assert!(
        matches!(errors[0], SealedError::Ratchet(_)),
        "{:?}",
        errors[0]
    );
    assert!(
        matches!(errors[1], SealedError::Ratchet(_)),
        "{:?}",
        errors[1]
    );
    assert!(
        matches!(errors[2], SealedError::NotRatchet),
        "{:?}",
        errors[2]
    );
    assert!(
        matches!(errors[3], SealedError::NotRatchet),
        "{:?}",
        errors[3]
    );
    assert!(
        matches!(errors[4], SealedError::Ratchet(_)),
        "{:?}",
        errors[4]
    );
    // the sixth, untouched, opens: failed attempts changed no state
    let ok = open_next(&bob, &mut bev).await.unwrap();
    assert_eq!(ok.message, offer(call, 5, ALICE_FP));
    assert_eq!(*n.lock().unwrap(), 6);
}

/// The proxy delivers every envelope twice (a fresh envelope id for the copy, as a malicious
/// server could): the copy is refused by the ratchet as a duplicate, for the first (PQXDH)
/// message and for ratchet messages alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_envelope_is_refused_as_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let proxy = Proxy::start(srv.url()).await;
    let (alice, mut aev) = device(&srv.url(), "alice").await;
    let (bob, mut bev) = device(&proxy.url, "bob").await;
    let call = CallId::random();
    proxy.set(|dir, v| {
        if dir == Dir::Down && is_envelope(&v) {
            let mut copy = v.clone();
            copy["envelope_id"] = Value::from(v["envelope_id"].as_u64().unwrap() + 1_000_000);
            vec![v, copy]
        } else {
            vec![v]
        }
    });
    // PreKeySignalMessage
    alice
        .send("bob", 1, &offer(call, 0, ALICE_FP))
        .await
        .unwrap();
    assert_eq!(
        open_next(&bob, &mut bev).await.unwrap().message,
        offer(call, 0, ALICE_FP)
    );
    let replay = open_next(&bob, &mut bev).await.unwrap_err();
    assert!(
        matches!(
            replay,
            SealedError::Ratchet(sotto_ratchet::Error::DuplicateMessage)
        ),
        "{replay:?}"
    );
    // after a reply, Alice sends plain SignalMessages
    bob.send("alice", 1, &mute(call, 0)).await.unwrap();
    open_next(&alice, &mut aev).await.unwrap();
    for seq in 1..4 {
        alice.send("bob", 1, &mute(call, seq)).await.unwrap();
        let env = recv(&mut bev).await;
        assert_eq!(env.ciphertext.0[0], 2, "expected a SignalMessage");
        assert_eq!(bob.open(&env).unwrap().message, mute(call, seq));
        bob.ack(&env).await.unwrap();
        let replay = open_next(&bob, &mut bev).await.unwrap_err();
        assert!(
            matches!(
                replay,
                SealedError::Ratchet(sotto_ratchet::Error::DuplicateMessage)
            ),
            "{replay:?}"
        );
    }
}

/// The proxy reverses batches of envelopes. The ratchet opens them all (skipped message keys);
/// the per-call sequence numbers put them back in order; a message too far ahead and a repeat
/// are refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_envelopes_open_and_are_put_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let proxy = Proxy::start(srv.url()).await;
    let (alice, _aev) = device(&srv.url(), "alice").await;
    let (bob, mut bev) = device(&proxy.url, "bob").await;
    let call = CallId::random();
    const BATCH: usize = 6;
    let held = Arc::new(Mutex::new(Vec::<Value>::new()));
    let h = held.clone();
    proxy.set(move |dir, v| {
        if dir == Dir::Down && is_envelope(&v) {
            let mut held = h.lock().unwrap();
            held.push(v);
            if held.len() == BATCH {
                let mut out: Vec<Value> = held.drain(..).collect();
                out.reverse();
                return out;
            }
            return vec![];
        }
        vec![v]
    });
    for seq in 0..BATCH as u32 {
        let m = if seq == 0 {
            offer(call, 0, ALICE_FP)
        } else {
            mute(call, seq)
        };
        alice.send("bob", 1, &m).await.unwrap();
    }
    let mut reorder = Reorder::new();
    let mut arrived = Vec::new();
    let mut released = Vec::new();
    for _ in 0..BATCH {
        let inc = open_next(&bob, &mut bev).await.unwrap();
        arrived.push(inc.message.seq);
        released.extend(reorder.push(inc.message).unwrap());
    }
    assert_eq!(arrived, vec![5, 4, 3, 2, 1, 0]);
    let seqs: Vec<u32> = released.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(released[0].body.kind(), "offer");
    assert_eq!(
        reorder.push(mute(call, 3)).unwrap_err(),
        ReorderError::Stale { seq: 3, next: 6 }
    );
}

/// The proxy drops Alice's offer on its way to Bob. Bob never rings; Alice's state machine,
/// driven by the real clock, ends the call with `RingTimeout` and asks to send a hangup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_offer_ends_in_ring_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let proxy = Proxy::start(srv.url()).await;
    let (alice, mut aev) = device(&srv.url(), "alice").await;
    let (bob, mut bev) = device(&proxy.url, "bob").await;
    proxy.set(|dir, v| {
        if dir == Dir::Down && is_envelope(&v) {
            vec![]
        } else {
            vec![v]
        }
    });
    let call = CallId::random();
    let mut m = CallMachine::with_timeouts(Role::Caller, Duration::from_secs(2), T);
    assert_eq!(
        m.handle(Input::Dial, Instant::now()).unwrap(),
        vec![Output::SendOffer]
    );
    alice
        .send("bob", 1, &offer(call, 0, ALICE_FP))
        .await
        .unwrap();
    let deadline = m.poll_timeout().unwrap();
    // wait for anything from Bob until the machine's deadline
    let wait = deadline.saturating_duration_since(Instant::now());
    if let Ok(Some(e)) = tokio::time::timeout(wait, aev.next_envelope()).await {
        panic!("bob answered through a dropped path: {}", e.envelope_id);
    }
    assert_eq!(
        m.handle_timeout(Instant::now()),
        vec![Output::SendHangup, Output::StopMedia]
    );
    assert_eq!(m.state(), &State::Ended(EndReason::RingTimeout));
    recv_none(&mut bev, Duration::from_millis(200)).await;
    drop(bob);
}

/// A malicious path substitutes Mallory's prekey bundle for Bob's, reroutes Alice's envelopes to
/// Mallory and relabels Mallory's as Bob's. On first contact (trust on first use) Alice can
/// only tell by the safety number: hers differs from the genuine one and from Bob's. The
/// identity she sees is Mallory's, and the real Bob's own messages are then refused as
/// untrusted — Alice never gets an authenticated answer from Bob's device with Mallory's SDP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn substituted_bundle_shows_a_different_safety_number() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let proxy = Proxy::start(srv.url()).await;
    let (alice, mut aev) = device(&proxy.url, "alice").await;
    let (bob, mut bev) = device(&srv.url(), "bob").await;
    let (mallory, mut mev) = device(&srv.url(), "mallory").await;
    proxy.set(|dir, mut v| {
        match dir {
            Dir::Up if v["type"] == "fetch_bundle" && v["username"] == "bob" => {
                v["username"] = "mallory".into();
            }
            Dir::Up if v["type"] == "send" && v["to_user"] == "bob" => {
                v["to_user"] = "mallory".into();
            }
            Dir::Down if is_envelope(&v) && v["from_user"] == "mallory" => {
                v["from_user"] = "bob".into();
            }
            Dir::Down if v["type"] == "bundle" && v["bundle"]["username"] == "mallory" => {
                v["bundle"]["username"] = "bob".into();
            }
            _ => {}
        }
        vec![v]
    });
    let call = CallId::random();
    alice
        .send("bob", 1, &offer(call, 0, ALICE_FP))
        .await
        .unwrap();
    // Mallory reads the offer (that is the attack) and answers with her own DTLS fingerprint
    let stolen = open_next(&mallory, &mut mev).await.unwrap();
    assert_eq!(stolen.from_user, "alice");
    let evil = CallMessage::new(
        call,
        0,
        Body::Answer {
            sdp: format!("v=0\r\n{EVIL_FP}\r\n"),
            media_key: test_key(0x0a),
        },
    );
    mallory.send("alice", 1, &evil).await.unwrap();
    let inc = open_next(&alice, &mut aev).await.unwrap();
    assert_eq!(inc.from_user, "bob");
    // the authenticated identity is Mallory's, not Bob's
    assert!(inc.identity == mallory.identity_key());
    assert!(inc.identity != bob.identity_key());
    let alice_sees = alice.safety_number("bob", 1).unwrap();
    let genuine = genuine_safety_number("alice", &alice.identity_key(), "bob", &bob.identity_key());
    assert_ne!(alice_sees, genuine);
    // Bob never saw anything
    recv_none(&mut bev, Duration::from_millis(300)).await;
    // the real Bob now writes to Alice (straight to the server): Alice refuses it, typed
    bob.send("alice", 1, &mute(call, 0)).await.unwrap();
    let refused = open_next(&alice, &mut aev).await.unwrap_err();
    assert!(
        matches!(
            refused,
            SealedError::Ratchet(sotto_ratchet::Error::UntrustedIdentity(_))
        ),
        "{refused:?}"
    );
    // and Bob's safety number differs from Alice's: comparing them exposes the attack
    let bob_sees = bob.safety_number("alice", 1).unwrap();
    assert_eq!(bob_sees, genuine);
    assert_ne!(bob_sees, alice_sees);
}

/// Once Alice has seen Bob's identity, a bundle carrying another identity for Bob is refused
/// before anything is sealed: another device's bundle is `BadBundle`, one relabelled as Bob's is
/// `SealedError::IdentityChanged`, and nothing reaches anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_change_after_first_contact_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let proxy = Proxy::start(srv.url()).await;
    let (alice, _aev) = device(&proxy.url, "alice").await;
    let (_bob, mut bev) = device(&srv.url(), "bob").await;
    let (_mallory, mut mev) = device(&srv.url(), "mallory").await;
    // first contact: Alice pins Bob's key
    alice.client().fetch_bundle("bob", 1).await.unwrap();
    // a naive substitution (Mallory's bundle under Mallory's name) is refused as such
    proxy.set(|dir, mut v| {
        if dir == Dir::Up && v["type"] == "fetch_bundle" && v["username"] == "bob" {
            v["username"] = "mallory".into();
        }
        vec![v]
    });
    let e = alice
        .send("bob", 1, &offer(CallId::random(), 0, ALICE_FP))
        .await
        .unwrap_err();
    assert!(matches!(&e, SealedError::BadBundle(_)), "{e:?}");
    // a careful one relabels the bundle as Bob's: the identity differs from the pinned one
    proxy.set(|dir, mut v| {
        if dir == Dir::Up && v["type"] == "fetch_bundle" && v["username"] == "bob" {
            v["username"] = "mallory".into();
        }
        if dir == Dir::Down && v["type"] == "bundle" && v["bundle"]["username"] == "mallory" {
            v["bundle"]["username"] = "bob".into();
        }
        vec![v]
    });
    let e = alice
        .send("bob", 1, &offer(CallId::random(), 0, ALICE_FP))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SealedError::IdentityChanged(who) if who == "bob"),
        "{e:?}"
    );
    assert!(alice.safety_number("bob", 1).is_none());
    recv_none(&mut bev, Duration::from_millis(300)).await;
    recv_none(&mut mev, Duration::from_millis(100)).await;
}

/// After Alice and Bob have talked, Mallory seals an offer with her own DTLS fingerprint for Bob
/// and the path relabels it as coming from Alice. Bob's ratchet refuses it (untrusted identity
/// for alice.1): the attacker's fingerprint never reaches Bob as Alice's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_offer_relabelled_as_alice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let proxy = Proxy::start(srv.url()).await;
    let (alice, mut aev) = device(&srv.url(), "alice").await;
    let (bob, mut bev) = device(&proxy.url, "bob").await;
    let (mallory, _mev) = device(&srv.url(), "mallory").await;
    let call = CallId::random();
    alice
        .send("bob", 1, &offer(call, 0, ALICE_FP))
        .await
        .unwrap();
    open_next(&bob, &mut bev).await.unwrap();
    bob.send("alice", 1, &mute(call, 0)).await.unwrap();
    open_next(&alice, &mut aev).await.unwrap();

    proxy.set(|dir, mut v| {
        if dir == Dir::Down && is_envelope(&v) && v["from_user"] == "mallory" {
            v["from_user"] = "alice".into();
        }
        vec![v]
    });
    let forged_call = CallId::random();
    mallory
        .send("bob", 1, &offer(forged_call, 0, EVIL_FP))
        .await
        .unwrap();
    let e = open_next(&bob, &mut bev).await.unwrap_err();
    assert!(
        matches!(
            e,
            SealedError::Ratchet(sotto_ratchet::Error::UntrustedIdentity(_))
        ),
        "{e:?}"
    );
    // the genuine Alice still gets through afterwards
    alice.send("bob", 1, &mute(call, 1)).await.unwrap();
    let ok = open_next(&bob, &mut bev).await.unwrap();
    assert_eq!(ok.message, mute(call, 1));
    assert!(ok.identity == alice.identity_key());
}

/// An offer whose encoding is exactly `len` bytes (SDP within MAX_SDP: "\r\n" costs 4 bytes
/// encoded, 2 raw).
fn offer_of_encoded_len(call: CallId, len: usize) -> CallMessage {
    let base = CallMessage::new(
        call,
        0,
        Body::Offer {
            sdp: String::new(),
            video: true,
            media_key: Some(test_key(0x08)),
            relay: None,
            members: Vec::new(),
            relay_token: None,
        },
    )
    .encode()
    .len();
    let room = len - base;
    let sdp = format!("{}{}", "\r\n".repeat(room / 4), "a".repeat(room % 4));
    assert!(sdp.len() <= sotto_call::messages::MAX_SDP);
    let m = CallMessage::new(
        call,
        0,
        Body::Offer {
            sdp,
            video: true,
            media_key: Some(test_key(0x08)),
            relay: None,
            members: Vec::new(),
            relay_token: None,
        },
    );
    assert_eq!(m.encode().len(), len);
    m
}

/// The largest call message (MAX_CALL_MESSAGE bytes encoded), sealed as the first
/// (PreKeySignalMessage, largest) message, fits one signaling frame and arrives intact through
/// the real server; one byte more is refused before anything is sealed or sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn largest_call_message_fits_one_signaling_frame() {
    use sotto_call::messages::{MessageError, MAX_CALL_MESSAGE};
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let (alice, _aev) = device(&srv.url(), "alice").await;
    let (bob, mut bev) = device(&srv.url(), "bob").await;
    let call = CallId::random();
    let over = offer_of_encoded_len(call, MAX_CALL_MESSAGE + 1);
    let e = alice.send("bob", 1, &over).await.unwrap_err();
    assert!(
        matches!(e, SealedError::Message(MessageError::TooLarge(n)) if n == MAX_CALL_MESSAGE + 1),
        "{e:?}"
    );
    assert!(
        alice.safety_number("bob", 1).is_none(),
        "no session was set up"
    );
    let at = offer_of_encoded_len(call, MAX_CALL_MESSAGE);
    alice.send("bob", 1, &at).await.unwrap();
    let env = recv(&mut bev).await;
    assert_eq!(
        env.ciphertext.0[0], 3,
        "first message is a PreKeySignalMessage"
    );
    assert_eq!(bob.open(&env).unwrap().message, at);
}

async fn take(dev: &Device, ev: &mut Events) -> Result<sotto_call::sealed::Incoming, SealedError> {
    tokio::time::timeout(T, dev.next(ev))
        .await
        .unwrap()
        .unwrap()
}

/// `Device::next` over a path that delivers every envelope three times: once, again under the
/// same id (at-least-once redelivery: skipped without an error) and again under a fresh id (a
/// replay: refused as a duplicate). Garbage in between is an error item and the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_skips_redeliveries_refuses_replays_and_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let proxy = Proxy::start(srv.url()).await;
    let (alice, _aev) = device(&srv.url(), "alice").await;
    let (bob, mut bev) = device(&proxy.url, "bob").await;
    proxy.set(|dir, v| {
        if dir == Dir::Down && is_envelope(&v) {
            let again = v.clone();
            let mut replay = v.clone();
            replay["envelope_id"] = Value::from(v["envelope_id"].as_u64().unwrap() + 1_000_000);
            vec![v, again, replay]
        } else {
            vec![v]
        }
    });
    let call = CallId::random();
    alice
        .send("bob", 1, &offer(call, 0, ALICE_FP))
        .await
        .unwrap();
    assert_eq!(
        take(&bob, &mut bev).await.unwrap().message,
        offer(call, 0, ALICE_FP)
    );
    // the same-id copy is skipped silently; the fresh-id copy is the next item, refused
    let replay = take(&bob, &mut bev).await;
    assert!(
        matches!(
            replay,
            Err(SealedError::Ratchet(sotto_ratchet::Error::DuplicateMessage))
        ),
        "{replay:?}"
    );
    // a ratchet message: once, its redelivery skipped, its replay refused
    alice.send("bob", 1, &mute(call, 1)).await.unwrap();
    assert_eq!(take(&bob, &mut bev).await.unwrap().message, mute(call, 1));
    assert!(matches!(
        take(&bob, &mut bev).await,
        Err(SealedError::Ratchet(sotto_ratchet::Error::DuplicateMessage))
    ));
    // garbage (every even envelope id) is an error item; the genuine ones around it come through
    proxy.set(|dir, mut v| {
        if dir == Dir::Down && is_envelope(&v) && v["envelope_id"].as_u64().unwrap() % 2 == 0 {
            v["ciphertext"] = to_b64(&[3, 1, 2, 3]);
        }
        vec![v]
    });
    let mut got = Vec::new();
    let mut errors = 0;
    for seq in 2..8 {
        alice.send("bob", 1, &mute(call, seq)).await.unwrap();
    }
    while got.len() + errors < 6 {
        match take(&bob, &mut bev).await {
            Ok(inc) => got.push(inc.message.seq),
            Err(SealedError::Ratchet(_)) => errors += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(errors, 3, "every even envelope id was garbage");
    assert_eq!(got.len(), 3);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    recv_none(&mut bev, Duration::from_millis(300)).await;
}

/// A real media key for messages the test builds by hand.
fn test_key(b: u8) -> sotto_frame::KeyMaterial {
    sotto_frame::SenderKey::new(sotto_frame::CipherSuite::default(), 9, &[b; 16])
        .unwrap()
        .material()
}
