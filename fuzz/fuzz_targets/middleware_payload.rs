//! The legacy-HIS middleware's receiver: a signed push's `webhook-id` and body
//! read into the message it stores (`Incoming::parse`). The first line is the
//! webhook id, the rest the body.
#![no_main]

use buktor::middleware::payload::{Incoming, WebhookId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (id, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"msg_fuzz"[..], data),
    };
    let Ok(id) = std::str::from_utf8(id) else {
        return;
    };
    if let Ok(id) = WebhookId::parse(id) {
        let _ = Incoming::parse(id, body);
    }
});
