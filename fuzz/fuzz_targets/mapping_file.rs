//! The middleware's mapping file (TOML): parsed and checked, then used to
//! build a row from a sample payload, as a sync pass does.
#![no_main]

use buktor::middleware::mapping::Mapping;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mapping) = Mapping::parse(text) {
        // A real push, as the receiver stores it.
        let payload: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/webhooks/appointment.booked.json"
        ))
        .expect("the fixture is JSON");
        let _ = mapping.row(&payload);
    }
});
