//! What the untrusted relay and its clients parse from each other: control messages both ways
//! and capture files (read by `sotto frame inspect --capture` and the tests). Must never panic;
//! control messages that decode re-encode and decode to the same value; every record of a parsed
//! capture respects the payload limit, and frame reassembly never panics on any record sequence.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_relay::capture::{frames, parse};
use sotto_relay::consts::MAX_CAPTURE_PAYLOAD;
use sotto_relay::protocol::{decode_client, decode_server};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = decode_client(text) {
            let again = serde_json::to_string(&m).expect("re-encode");
            assert_eq!(decode_client(&again).expect("re-decode"), m);
        }
        if let Ok(m) = decode_server(text) {
            let again = serde_json::to_string(&m).expect("re-encode");
            assert_eq!(decode_server(&again).expect("re-decode"), m);
        }
    }
    if let Ok(records) = parse(data) {
        assert!(records.iter().all(|r| r.payload.len() <= MAX_CAPTURE_PAYLOAD));
        let _ = frames(&records);
    }
});
