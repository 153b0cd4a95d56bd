//! Services (visit types): how long a visit takes, who offers it, and how far
//! ahead it can be booked.
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, DomainEvent};
use crate::error::{DomainError, DomainResult};
use crate::values::{Capacity, Minutes, Name, ShortText};
use crate::{PractitionerId, ServiceId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDetails {
    pub name: Name,
    pub duration: Minutes,
    /// Kept free before each visit (preparation), on the practitioner's calendar.
    pub buffer_before: Minutes,
    /// Kept free after each visit (cleaning, notes).
    pub buffer_after: Minutes,
    pub capacity: Capacity,
    pub practitioners: BTreeSet<PractitionerId>,
    /// A booking must start at least this long after it is made.
    pub min_notice: Minutes,
    /// A booking may start at most this many days after it is made.
    pub max_advance_days: u32,
    /// The HIS's own id for this service (absent in events written before
    /// services carried one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<ShortText>,
}

impl ServiceDetails {
    /// Checks the raw numbers a client sent.
    #[allow(clippy::too_many_arguments)]
    pub fn parse(
        name: &str,
        duration_minutes: i64,
        buffer_before_minutes: i64,
        buffer_after_minutes: i64,
        capacity: i64,
        practitioners: impl IntoIterator<Item = PractitionerId>,
        min_notice_minutes: i64,
        max_advance_days: i64,
    ) -> DomainResult<Self> {
        let practitioners: BTreeSet<_> = practitioners.into_iter().collect();
        if practitioners.is_empty() {
            return Err(DomainError::invalid(
                "practitionerIds",
                "a service needs at least one practitioner",
            ));
        }
        if !(1..=730).contains(&max_advance_days) {
            return Err(DomainError::invalid(
                "maxAdvanceDays",
                format!("must be between 1 and 730, got {max_advance_days}"),
            ));
        }
        Ok(ServiceDetails {
            name: Name::parse("name", name)?,
            duration: Minutes::parse("durationMinutes", duration_minutes, 5, 8 * 60)?,
            buffer_before: Minutes::parse("bufferBeforeMinutes", buffer_before_minutes, 0, 120)?,
            buffer_after: Minutes::parse("bufferAfterMinutes", buffer_after_minutes, 0, 120)?,
            capacity: Capacity::parse(capacity)?,
            practitioners,
            min_notice: Minutes::parse("minNoticeMinutes", min_notice_minutes, 0, 60 * 24 * 60)?,
            max_advance_days: max_advance_days as u32,
            external_id: None,
        })
    }

    /// The same service, known to the HIS as `external_id`.
    pub fn with_external_id(self, external_id: Option<ShortText>) -> Self {
        ServiceDetails {
            external_id,
            ..self
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServiceEvent {
    ServiceDefined {
        service_id: ServiceId,
        #[serde(flatten)]
        details: ServiceDetails,
    },
    ServiceUpdated {
        service_id: ServiceId,
        #[serde(flatten)]
        details: ServiceDetails,
    },
    ServiceDeactivated {
        service_id: ServiceId,
    },
    ServiceReactivated {
        service_id: ServiceId,
    },
}

impl DomainEvent for ServiceEvent {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub defined: Option<DefinedService>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefinedService {
    pub id: ServiceId,
    pub details: ServiceDetails,
    pub active: bool,
}

impl Aggregate for Service {
    type Event = ServiceEvent;
    const STREAM_TYPE: &'static str = "service";

    fn apply(&mut self, event: &ServiceEvent) {
        match event {
            ServiceEvent::ServiceDefined {
                service_id,
                details,
            } => {
                self.defined = Some(DefinedService {
                    id: *service_id,
                    details: details.clone(),
                    active: true,
                })
            }
            ServiceEvent::ServiceUpdated { details, .. } => {
                if let Some(s) = &mut self.defined {
                    s.details = details.clone();
                }
            }
            ServiceEvent::ServiceDeactivated { .. } => {
                if let Some(s) = &mut self.defined {
                    s.active = false;
                }
            }
            ServiceEvent::ServiceReactivated { .. } => {
                if let Some(s) = &mut self.defined {
                    s.active = true;
                }
            }
        }
    }
}

impl Service {
    pub fn get(&self, id: ServiceId) -> DomainResult<&DefinedService> {
        self.defined
            .as_ref()
            .filter(|x| x.id == id)
            .ok_or(DomainError::ServiceNotFound(id))
    }

    pub fn define(
        &self,
        id: ServiceId,
        details: ServiceDetails,
    ) -> DomainResult<Vec<ServiceEvent>> {
        if self.defined.is_some() {
            return Err(DomainError::ServiceAlreadyExists(id));
        }
        Ok(vec![ServiceEvent::ServiceDefined {
            service_id: id,
            details,
        }])
    }

    /// Existing appointments keep the duration they were booked with; only new
    /// bookings see the change.
    pub fn update(
        &self,
        id: ServiceId,
        details: ServiceDetails,
    ) -> DomainResult<Vec<ServiceEvent>> {
        let current = self.get(id)?;
        if current.details == details {
            return Ok(vec![]);
        }
        Ok(vec![ServiceEvent::ServiceUpdated {
            service_id: id,
            details,
        }])
    }

    /// The service as its master record (the HIS) has it now: defined if
    /// new, else updated, then activated or deactivated as needed.
    pub fn sync(
        &self,
        id: ServiceId,
        details: ServiceDetails,
        active: bool,
    ) -> DomainResult<Vec<ServiceEvent>> {
        let mut state = self.clone();
        let mut events = match self.defined {
            Some(_) => self.update(id, details)?,
            None => self.define(id, details)?,
        };
        events.iter().for_each(|e| state.apply(e));
        events.extend(state.set_active(id, active)?);
        Ok(events)
    }

    pub fn set_active(&self, id: ServiceId, active: bool) -> DomainResult<Vec<ServiceEvent>> {
        let current = self.get(id)?;
        Ok(match (current.active, active) {
            (true, false) => vec![ServiceEvent::ServiceDeactivated { service_id: id }],
            (false, true) => vec![ServiceEvent::ServiceReactivated { service_id: id }],
            _ => vec![],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details() -> ServiceDetails {
        let p = PractitionerId::from_uuid(uuid::Uuid::nil());
        ServiceDetails::parse("Consultation", 30, 5, 5, 1, [p], 60, 90).unwrap()
    }

    #[test]
    fn parse_rejects_each_bad_number_with_its_field() {
        let p = [PractitionerId::new()];
        let field = |r: DomainResult<ServiceDetails>| match r.unwrap_err() {
            DomainError::InvalidInput { field, .. } => field,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(
            field(ServiceDetails::parse("", 30, 0, 0, 1, p, 0, 30)),
            "name"
        );
        assert_eq!(
            field(ServiceDetails::parse("X", 0, 0, 0, 1, p, 0, 30)),
            "durationMinutes"
        );
        assert_eq!(
            field(ServiceDetails::parse("X", 30, -1, 0, 1, p, 0, 30)),
            "bufferBeforeMinutes"
        );
        assert_eq!(
            field(ServiceDetails::parse("X", 30, 0, 500, 1, p, 0, 30)),
            "bufferAfterMinutes"
        );
        assert_eq!(
            field(ServiceDetails::parse("X", 30, 0, 0, 0, p, 0, 30)),
            "capacity"
        );
        assert_eq!(
            field(ServiceDetails::parse("X", 30, 0, 0, 1, [], 0, 30)),
            "practitionerIds"
        );
        assert_eq!(
            field(ServiceDetails::parse("X", 30, 0, 0, 1, p, -1, 30)),
            "minNoticeMinutes"
        );
        assert_eq!(
            field(ServiceDetails::parse("X", 30, 0, 0, 1, p, 0, 0)),
            "maxAdvanceDays"
        );
    }

    #[test]
    fn define_once_then_update() {
        let id = ServiceId::new();
        let s = Service::from_events(&Service::default().define(id, details()).unwrap());
        assert_eq!(
            s.define(id, details()).unwrap_err().code(),
            "SERVICE_ALREADY_EXISTS"
        );
        assert!(s.update(id, details()).unwrap().is_empty());
        assert_eq!(
            Service::default().update(id, details()).unwrap_err().code(),
            "SERVICE_NOT_FOUND"
        );
    }

    #[test]
    fn deactivation_is_recorded_once() {
        let id = ServiceId::new();
        let s = Service::from_events(&Service::default().define(id, details()).unwrap());
        let events = s.set_active(id, false).unwrap();
        assert_eq!(events.len(), 1);
        let mut s2 = s.clone();
        s2.apply(&events[0]);
        assert!(!s2.get(id).unwrap().active);
        assert!(s2.set_active(id, false).unwrap().is_empty());
    }
}
