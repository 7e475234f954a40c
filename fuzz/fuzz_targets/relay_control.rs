//! Relay control messages, both directions: what a client parses from the untrusted relay and
//! what the relay parses from any client. Must never panic; a message that decodes re-encodes and
//! decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_relay::protocol::{decode_client, decode_server};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = decode_client(text) {
        let again = serde_json::to_string(&m).expect("re-encode");
        assert_eq!(decode_client(&again).expect("re-decode"), m);
    }
    if let Ok(m) = decode_server(text) {
        let again = serde_json::to_string(&m).expect("re-encode");
        assert_eq!(decode_server(&again).expect("re-decode"), m);
    }
});
