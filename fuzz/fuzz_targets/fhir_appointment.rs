//! FHIR R4 Appointment bodies (POST and PUT /fhir/r4/Appointment): the bytes
//! read as a resource (`resource_of`) and then into what the request asks for
//! (`AppointmentFields::read`), as both routes do before running a command.
//! A refusal must be a 4xx: a 5xx here is a server bug.
#![no_main]

use buktor::fhir::{resource_of, AppointmentFields};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let read = resource_of(data, "Appointment").and_then(|r| AppointmentFields::read(&r));
    if let Err(outcome) = read {
        assert!(
            !outcome.status().is_server_error(),
            "a bad body answered {outcome:?}"
        );
    }
});
