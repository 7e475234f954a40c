//! Arbitrary bytes into a populated key ring: never panics, never returns plaintext that no
//! sender encrypted, and a failed frame leaves the ring able to decrypt the next genuine frame.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sotto_frame::{CipherSuite, Codec, KeyRing, SenderKey};

const SUITES: [CipherSuite; 3] = [
    CipherSuite::Aes128GcmSha256_128,
    CipherSuite::Aes256GcmSha512_128,
    CipherSuite::Aes128CtrHmacSha256_80,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let suite = SUITES[usize::from(selector % 3)];
    let codec = match (selector >> 2) % 3 {
        0 => Codec::Full,
        1 => Codec::Vp8,
        _ => Codec::Opus,
    };
    let t0 = Instant::now();
    // Three senders; one has ratcheted, one has rotated, as in a call with joins and leaves.
    let mut senders: Vec<SenderKey> = (0..3u64)
        .map(|s| SenderKey::new(suite, s, &[s as u8 + 1; 32]).expect("sender"))
        .collect();
    let mut ring = KeyRing::new(suite);
    for s in &senders {
        ring.add_key(&s.material(), t0).expect("add");
    }
    senders[1].ratchet().expect("ratchet");
    senders[2].rotate(&[0x99; 32]).expect("rotate");
    ring.add_key(&senders[2].material(), t0).expect("add");

    let now = t0 + Duration::from_millis(u64::from(selector));
    if let Ok(d) = ring.decrypt(codec, b"", input, now) {
        // Only frames a sender really encrypted can open; the fuzzer cannot forge a tag
        // (the input would have to contain one made with these keys).
        panic!("forged frame accepted: {:?}", d.id);
    }
    // The ring still works for a genuine frame from every sender.
    let frame = [0x10u8, 2, 0, 0x9d, 1, 0x2a, 0, 1, 0, 1, 0xaa, 0xbb, 0xcc];
    for s in &mut senders {
        let wire = s.encrypt(codec, b"", &frame).expect("encrypt");
        let got = ring.decrypt(codec, b"", &wire, now).expect("genuine frame decrypts");
        assert_eq!(got.frame, frame);
    }
});
