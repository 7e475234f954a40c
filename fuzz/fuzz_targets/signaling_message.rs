//! The signaling wire decoder: arbitrary bytes as a client frame (what the server parses) and as
//! a server frame (what the client library parses). Must never panic; a frame that decodes must
//! re-encode and decode to the same value; the server's decoder (with its `send`/`ack` fast path)
//! must give exactly what the generic reference decoder gives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_server::consts::MAX_FRAME_BYTES;
use sotto_server::protocol::{
    decode_client_frame, decode_client_frame_generic, decode_server_frame, encode_client_frame,
    encode_server_frame,
};

fuzz_target!(|data: &[u8]| {
    let decoded = decode_client_frame(data, MAX_FRAME_BYTES);
    assert_eq!(decoded, decode_client_frame_generic(data, MAX_FRAME_BYTES));
    if let Ok(f) = decoded {
        let again = encode_client_frame(f.id, &f.msg).expect("re-encode");
        let g = decode_client_frame(again.as_bytes(), usize::MAX).expect("re-decode");
        assert_eq!(f, g);
    }
    if let Ok(m) = decode_server_frame(data, MAX_FRAME_BYTES) {
        let again = encode_server_frame(&m).expect("re-encode");
        let n = decode_server_frame(again.as_bytes(), usize::MAX).expect("re-decode");
        assert_eq!(m, n);
    }
});
