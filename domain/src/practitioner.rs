//! Practitioners (doctors): who can be booked.
use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, DomainEvent};
use crate::error::{DomainError, DomainResult};
use crate::values::{Name, ShortText};
use crate::PractitionerId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PractitionerDetails {
    pub name: Name,
    pub specialty: Name,
    pub department: Option<Name>,
    pub location: Option<Name>,
    /// The HIS's own id for this practitioner, for matching inbound data.
    pub external_id: Option<ShortText>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PractitionerEvent {
    PractitionerRegistered {
        practitioner_id: PractitionerId,
        #[serde(flatten)]
        details: PractitionerDetails,
    },
    PractitionerUpdated {
        practitioner_id: PractitionerId,
        #[serde(flatten)]
        details: PractitionerDetails,
    },
    PractitionerDeactivated {
        practitioner_id: PractitionerId,
    },
    PractitionerReactivated {
        practitioner_id: PractitionerId,
    },
}

impl DomainEvent for PractitionerEvent {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Practitioner {
    pub registered: Option<RegisteredPractitioner>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredPractitioner {
    pub id: PractitionerId,
    pub details: PractitionerDetails,
    pub active: bool,
}

impl Aggregate for Practitioner {
    type Event = PractitionerEvent;
    const STREAM_TYPE: &'static str = "practitioner";

    fn apply(&mut self, event: &PractitionerEvent) {
        match event {
            PractitionerEvent::PractitionerRegistered {
                practitioner_id,
                details,
            } => {
                self.registered = Some(RegisteredPractitioner {
                    id: *practitioner_id,
                    details: details.clone(),
                    active: true,
                })
            }
            PractitionerEvent::PractitionerUpdated { details, .. } => {
                if let Some(p) = &mut self.registered {
                    p.details = details.clone();
                }
            }
            PractitionerEvent::PractitionerDeactivated { .. } => {
                if let Some(p) = &mut self.registered {
                    p.active = false;
                }
            }
            PractitionerEvent::PractitionerReactivated { .. } => {
                if let Some(p) = &mut self.registered {
                    p.active = true;
                }
            }
        }
    }
}

impl Practitioner {
    pub fn get(&self, id: PractitionerId) -> DomainResult<&RegisteredPractitioner> {
        self.registered
            .as_ref()
            .filter(|x| x.id == id)
            .ok_or(DomainError::PractitionerNotFound(id))
    }

    pub fn register(
        &self,
        id: PractitionerId,
        details: PractitionerDetails,
    ) -> DomainResult<Vec<PractitionerEvent>> {
        if self.registered.is_some() {
            return Err(DomainError::PractitionerAlreadyExists(id));
        }
        Ok(vec![PractitionerEvent::PractitionerRegistered {
            practitioner_id: id,
            details,
        }])
    }

    /// An update that changes nothing records nothing.
    pub fn update(
        &self,
        id: PractitionerId,
        details: PractitionerDetails,
    ) -> DomainResult<Vec<PractitionerEvent>> {
        let current = self.get(id)?;
        if current.details == details {
            return Ok(vec![]);
        }
        Ok(vec![PractitionerEvent::PractitionerUpdated {
            practitioner_id: id,
            details,
        }])
    }

    /// The practitioner as their master record (the HIS) has it now:
    /// registered if new, else updated, then activated or deactivated.
    pub fn sync(
        &self,
        id: PractitionerId,
        details: PractitionerDetails,
        active: bool,
    ) -> DomainResult<Vec<PractitionerEvent>> {
        let mut state = self.clone();
        let mut events = match self.registered {
            Some(_) => self.update(id, details)?,
            None => self.register(id, details)?,
        };
        events.iter().for_each(|e| state.apply(e));
        events.extend(state.set_active(id, active)?);
        Ok(events)
    }

    pub fn set_active(
        &self,
        id: PractitionerId,
        active: bool,
    ) -> DomainResult<Vec<PractitionerEvent>> {
        let current = self.get(id)?;
        Ok(match (current.active, active) {
            (true, false) => vec![PractitionerEvent::PractitionerDeactivated {
                practitioner_id: id,
            }],
            (false, true) => vec![PractitionerEvent::PractitionerReactivated {
                practitioner_id: id,
            }],
            _ => vec![],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(name: &str) -> PractitionerDetails {
        PractitionerDetails {
            name: Name::parse("name", name).unwrap(),
            specialty: Name::parse("specialty", "Cardiology").unwrap(),
            department: None,
            location: None,
            external_id: None,
        }
    }

    #[test]
    fn registers_once() {
        let id = PractitionerId::new();
        let events = Practitioner::default()
            .register(id, details("Dr. A"))
            .unwrap();
        let p = Practitioner::from_events(&events);
        assert!(p.get(id).unwrap().active);
        assert_eq!(
            p.register(id, details("Dr. A")).unwrap_err().code(),
            "PRACTITIONER_ALREADY_EXISTS"
        );
    }

    #[test]
    fn update_of_unknown_is_not_found_and_no_op_records_nothing() {
        let id = PractitionerId::new();
        assert_eq!(
            Practitioner::default()
                .update(id, details("Dr. A"))
                .unwrap_err()
                .code(),
            "PRACTITIONER_NOT_FOUND"
        );
        let p = Practitioner::from_events(
            &Practitioner::default()
                .register(id, details("Dr. A"))
                .unwrap(),
        );
        assert!(p.update(id, details("Dr. A")).unwrap().is_empty());
        assert_eq!(p.update(id, details("Dr. B")).unwrap().len(), 1);
    }

    #[test]
    fn deactivate_and_reactivate() {
        let id = PractitionerId::new();
        let mut events = Practitioner::default()
            .register(id, details("Dr. A"))
            .unwrap();
        let p = Practitioner::from_events(&events);
        events.extend(p.set_active(id, false).unwrap());
        let p = Practitioner::from_events(&events);
        assert!(!p.get(id).unwrap().active);
        assert!(p.set_active(id, false).unwrap().is_empty());
        assert_eq!(p.set_active(id, true).unwrap().len(), 1);
    }
}
