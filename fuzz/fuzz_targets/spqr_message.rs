//! SPQR (`pq_ratchet`, SignalMessage field 5): arbitrary bytes are parsed by the wire decoder and
//! fed, as a sequence of messages interleaved with sends, into live SPQR states taken at several
//! points of the braid (header, key, ciphertext phases, later epochs). Never panics; a decoded
//! message re-encodes to bytes that decode to the same message; the state keeps sending
//! afterwards.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sotto_ratchet::spqr::{wire, Direction, SpqrPolicy, SpqrState};

/// `(a, b)` after 0, 2, 4, 20, 40, 70, 100 ping-pong rounds.
fn live_states() -> &'static Vec<(SpqrState, SpqrState)> {
    static S: OnceLock<Vec<(SpqrState, SpqrState)>> = OnceLock::new();
    S.get_or_init(|| {
        let mut r = StdRng::seed_from_u64(16);
        let ak = [7u8; 32];
        let mut a = SpqrState::new(&ak, Direction::A2B, SpqrPolicy::Required).expect("a");
        let mut b = SpqrState::new(&ak, Direction::B2A, SpqrPolicy::Required).expect("b");
        let mut out = Vec::new();
        for round in 0..=100 {
            if [0, 2, 4, 20, 40, 70, 100].contains(&round) {
                out.push((a.clone(), b.clone()));
            }
            let s = a.send(&mut r).expect("send");
            a = s.state;
            b = b.recv(&s.wire).expect("recv").state;
            let s = b.send(&mut r).expect("send");
            b = s.state;
            a = a.recv(&s.wire).expect("recv").state;
        }
        out
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let states = live_states();
    let (a, b) = &states[usize::from(selector >> 1) % states.len()];
    let mut me = if selector & 1 == 0 {
        a.clone()
    } else {
        b.clone()
    };
    let mut r = StdRng::seed_from_u64(u64::from(selector));
    // Length-prefixed messages: len byte, then up to len bytes.
    let mut step = 0u32;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (msg, tail) = tail.split_at(n);
        rest = tail;
        if let Ok(m) = wire::Message::decode(msg) {
            assert_eq!(wire::Message::decode(&m.encode()).expect("re-decode"), m);
        }
        // recv is pure: a refused message leaves `me` as it was.
        if let Ok(got) = me.recv(msg) {
            me = got.state;
        }
        step += 1;
        if step % 3 == 0 {
            me = me.send(&mut r).expect("send after fuzzed input").state;
        }
    }
    // Still able to send.
    let _ = me.send(&mut r).expect("send at the end");
});
