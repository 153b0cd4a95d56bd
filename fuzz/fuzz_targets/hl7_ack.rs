//! What the MLLP client reads back from a HIS: bytes off the socket cut into
//! frames (`take_frame`, fed in small pieces as a socket delivers them), each
//! frame parsed as an ACK (`parse_ack`) and checked against the control id
//! that was sent (`check_ack`).
#![no_main]

use buktor::middleware::mllp::{check_ack, parse_ack, take_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buffer = Vec::new();
    for piece in data.chunks(97) {
        buffer.extend_from_slice(piece);
        while let Ok(Some(frame)) = take_frame(&mut buffer) {
            let _ = parse_ack(&frame);
        }
    }
    // Unframed too, as the tests and a lenient peer give it.
    let _ = check_ack(&String::from_utf8_lossy(data), "BKT000001");
});
