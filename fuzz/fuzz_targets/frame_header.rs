//! Arbitrary bytes into the SFrame header decoder: never panics, and when it accepts, encoding
//! the header gives back exactly the bytes it consumed (one encoding per header). The same bytes
//! go through `Codec::split` (the keyless layout check) for every codec: never panics, and an
//! accepted frame's parts add up to its length with at least a tag after the header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_frame::{CipherSuite, Codec, Header};

fuzz_target!(|data: &[u8]| {
    if let Ok((header, consumed)) = Header::decode(data) {
        assert!(consumed >= 1 && consumed <= data.len());
        assert_eq!(header.encode(), &data[..consumed]);
        assert_eq!(header.encoded_len(), consumed);
    }
    let suite = CipherSuite::default();
    for codec in [Codec::Full, Codec::Vp8, Codec::Opus] {
        if let Ok(p) = codec.split(suite, data) {
            assert_eq!(p.clear_len + p.header_len + p.body_len, data.len());
            assert!(p.body_len >= suite.nt());
            let (h, n) = Header::decode(&data[p.clear_len..]).unwrap();
            assert_eq!((h, n), (p.header, p.header_len));
        }
    }
});
