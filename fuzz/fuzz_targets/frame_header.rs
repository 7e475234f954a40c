//! Arbitrary bytes into the SFrame header decoder: never panics, and when it accepts, encoding
//! the header gives back exactly the bytes it consumed (one encoding per header).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_frame::Header;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, consumed)) = Header::decode(data) {
        assert!(consumed >= 1 && consumed <= data.len());
        assert_eq!(header.encode(), &data[..consumed]);
        assert_eq!(header.encoded_len(), consumed);
    }
});
