//! The inbound HIS API's JSON bodies (/his/v1), read the way the server reads
//! them: `serde_json` into the body type, then `parse` into the command the
//! application runs. The first byte picks the body type, the rest is the body.
#![no_main]

use buktor::app::Attendance;
use buktor::his::model::{
    AppointmentBody, BulkBody, CancelBody, PatientBody, PractitionerBody, ScheduleBody,
    ServiceBody, StepBody,
};
use buktor_domain::TenantId;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;

fn body<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    serde_json::from_slice(bytes).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let tenant = TenantId::from(uuid::Uuid::from_u128(7));
    // East of UTC by more than 12 hours: calendar days differ from UTC's most.
    let zone = chrono_tz::Pacific::Kiritimati;
    let id = "HIS-1";
    match which % 10 {
        0 => {
            let _ = body::<PractitionerBody>(rest).map(|b| b.parse(id));
        }
        1 => {
            let _ = body::<ServiceBody>(rest).map(|b| b.parse(tenant, id));
        }
        2 => {
            let _ = body::<ScheduleBody>(rest).map(|b| b.parse(tenant, id));
        }
        3 => {
            let _ = body::<PatientBody>(rest).map(|b| b.parse(id));
        }
        4 => {
            let _ = body::<AppointmentBody>(rest).map(|b| b.parse(tenant, zone, id));
        }
        5 => {
            let _ = body::<AppointmentBody>(rest)
                .map(|b| b.parse(tenant, chrono_tz::Europe::Amsterdam, id));
        }
        6 => {
            let _ = body::<CancelBody>(rest).map(|b| b.parse(tenant, id));
        }
        7 => {
            let _ = body::<StepBody>(rest).map(|b| b.parse(tenant, id, Attendance::CheckIn));
        }
        8 => {
            let _ = body::<StepBody>(rest).map(|b| b.parse(tenant, id, Attendance::NoShow));
        }
        _ => {
            // The bulk body parses each record as the endpoint does.
            if let Some(bulk) = body::<BulkBody>(rest) {
                bulk.practitioners
                    .into_iter()
                    .for_each(|b| drop(b.parse(id)));
                bulk.services
                    .into_iter()
                    .for_each(|b| drop(b.parse(tenant, id)));
                bulk.schedules
                    .into_iter()
                    .for_each(|b| drop(b.parse(tenant, id)));
                bulk.patients.into_iter().for_each(|b| drop(b.parse(id)));
                bulk.appointments
                    .into_iter()
                    .for_each(|b| drop(b.parse(tenant, zone, id)));
            }
        }
    }
});
