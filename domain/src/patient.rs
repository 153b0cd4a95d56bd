//! A patient's contact data and notification preferences, as the HIS sends
//! them. Appointments carry a copy of the contact data taken at booking;
//! what is recorded here is newer and wins when a notification is sent.
use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, DomainEvent};
use crate::error::{DomainError, DomainResult};
use crate::values::{Email, Language, Name, Phone, ShortText};
use crate::{PatientId, TenantId};

/// The channels a patient can be told things on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub const ALL: [Channel; 2] = [Channel::Email, Channel::Sms];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientContact {
    pub name: Option<Name>,
    pub phone: Option<Phone>,
    pub email: Option<Email>,
    pub language: Option<Language>,
    /// Channels the patient asked not to be contacted on.
    #[serde(default)]
    pub opted_out: Vec<Channel>,
}

impl PatientContact {
    pub fn allows(&self, channel: Channel) -> bool {
        !self.opted_out.contains(&channel)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PatientEvent {
    /// The whole contact record as of now (the HIS sends it whole).
    PatientContactRecorded {
        patient_id: PatientId,
        his_patient_id: ShortText,
        #[serde(flatten)]
        contact: PatientContact,
    },
}

impl DomainEvent for PatientEvent {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Patient {
    pub known: Option<KnownPatient>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnownPatient {
    pub id: PatientId,
    pub his_patient_id: ShortText,
    pub contact: PatientContact,
}

impl Aggregate for Patient {
    type Event = PatientEvent;
    const STREAM_TYPE: &'static str = "patient";

    fn apply(&mut self, event: &PatientEvent) {
        match event {
            PatientEvent::PatientContactRecorded {
                patient_id,
                his_patient_id,
                contact,
            } => {
                self.known = Some(KnownPatient {
                    id: *patient_id,
                    his_patient_id: his_patient_id.clone(),
                    contact: contact.clone(),
                })
            }
        }
    }
}

/// The patient id Buktor uses for the HIS's patient id in one hospital:
/// derived, so every instance and every request agrees without a lookup.
pub fn patient_id_for(tenant: TenantId, his_patient_id: &ShortText) -> PatientId {
    PatientId::from_uuid(crate::ids::derived_uuid(
        tenant,
        "patient",
        his_patient_id.as_str(),
    ))
}

impl Patient {
    /// Records `contact`; recording what is already recorded changes nothing.
    pub fn record_contact(
        &self,
        id: PatientId,
        his_patient_id: ShortText,
        contact: PatientContact,
    ) -> DomainResult<Vec<PatientEvent>> {
        if let Some(known) = &self.known {
            if known.his_patient_id != his_patient_id {
                return Err(DomainError::invalid(
                    "patientId",
                    "belongs to another HIS patient id",
                ));
            }
            if known.contact == contact {
                return Ok(Vec::new());
            }
        }
        Ok(vec![PatientEvent::PatientContactRecorded {
            patient_id: id,
            his_patient_id,
            contact,
        }])
    }
}
