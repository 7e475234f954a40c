//! The call-message decoder (what a device parses after the ratchet opened an envelope: the
//! peer is authenticated but may be malicious or buggy). Must never panic; a message that decodes
//! must re-encode and decode to the same value, and an over-limit input is refused by size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_call::messages::{CallMessage, MessageError, MAX_CALL_MESSAGE};

fuzz_target!(|data: &[u8]| {
    match CallMessage::decode(data) {
        Ok(m) => {
            let again = m.encode();
            let n = CallMessage::decode(&again).expect("a decoded message re-decodes");
            assert!(m == n, "re-decoded message differs");
        }
        Err(MessageError::TooLarge(n)) => assert!(n > MAX_CALL_MESSAGE),
        Err(_) => {}
    }
});
