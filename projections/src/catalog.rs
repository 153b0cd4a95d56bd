//! Practitioners, services and schedules: what can be booked, with whom, when.
use buktor_domain::practitioner::{Practitioner, PractitionerEvent, RegisteredPractitioner};
use buktor_domain::schedule::{Schedule, ScheduleEvent};
use buktor_domain::service::{DefinedService, Service, ServiceEvent};
use buktor_domain::Aggregate;
use serde::{Deserialize, Serialize};

use crate::{stream_key, DocMap, Envelope, Projection, ProjectionError};

pub struct Catalog;

/// Keys: `practitioner/<id>`, `service/<id>`, `schedule/<practitioner id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "state")]
pub enum CatalogDoc {
    Practitioner(RegisteredPractitioner),
    Service(DefinedService),
    Schedule(Schedule),
}

pub fn practitioner_key(id: impl std::fmt::Display) -> String {
    format!("practitioner/{id}")
}
pub fn service_key(id: impl std::fmt::Display) -> String {
    format!("service/{id}")
}
pub fn schedule_key(practitioner: impl std::fmt::Display) -> String {
    format!("schedule/{practitioner}")
}
pub const PRACTITIONER_PREFIX: &str = "practitioner/";
pub const SERVICE_PREFIX: &str = "service/";

impl Projection for Catalog {
    type Doc = CatalogDoc;
    const NAME: &'static str = "catalog";

    fn keys(event: &Envelope<'_>) -> Vec<String> {
        let s = event.stream_id;
        if let Some(id) = stream_key(s, Practitioner::STREAM_TYPE) {
            vec![practitioner_key(id)]
        } else if let Some(id) = stream_key(s, Service::STREAM_TYPE) {
            vec![service_key(id)]
        } else if let Some(id) = stream_key(s, Schedule::STREAM_TYPE) {
            vec![schedule_key(id)]
        } else {
            vec![]
        }
    }

    fn apply(event: &Envelope<'_>, docs: &mut DocMap<CatalogDoc>) -> Result<(), ProjectionError> {
        let Some(key) = Self::keys(event).pop() else {
            return Ok(());
        };
        let bad_stream = || ProjectionError::StreamId(event.stream_id.to_owned());
        if key.starts_with(PRACTITIONER_PREFIX) {
            let e: PractitionerEvent = event.decode()?;
            let mut state = Practitioner {
                registered: match docs.get(&key) {
                    Some(CatalogDoc::Practitioner(p)) => Some(p.clone()),
                    _ => None,
                },
            };
            state.apply(&e);
            docs.put(
                &key,
                CatalogDoc::Practitioner(state.registered.ok_or_else(bad_stream)?),
            );
        } else if key.starts_with(SERVICE_PREFIX) {
            let e: ServiceEvent = event.decode()?;
            let mut state = Service {
                defined: match docs.get(&key) {
                    Some(CatalogDoc::Service(s)) => Some(s.clone()),
                    _ => None,
                },
            };
            state.apply(&e);
            docs.put(
                &key,
                CatalogDoc::Service(state.defined.ok_or_else(bad_stream)?),
            );
        } else {
            let e: ScheduleEvent = event.decode()?;
            let mut state = match docs.get(&key) {
                Some(CatalogDoc::Schedule(s)) => s.clone(),
                _ => Schedule::default(),
            };
            state.apply(&e);
            docs.put(&key, CatalogDoc::Schedule(state));
        }
        Ok(())
    }
}
