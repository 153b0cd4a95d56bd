//! Reads served straight from the aggregates' streams: always current, so
//! a client sees the result of its commands at once. Lists and searches are
//! served from the projections (`crate::projection`).
use buktor_domain::appointment::{Appointment, BookedAppointment};
use buktor_domain::booking::stream_id;
use buktor_domain::patient::{patient_id_for, KnownPatient, Patient};
use buktor_domain::practitioner::{Practitioner, RegisteredPractitioner};
use buktor_domain::schedule::Schedule;
use buktor_domain::service::{DefinedService, Service};
use buktor_domain::values::ShortText;
use buktor_domain::{AppointmentId, PractitionerId, ServiceId, TenantId};

use super::{AppResult, Scheduler};

impl Scheduler {
    pub async fn practitioner(
        &self,
        tenant: TenantId,
        id: PractitionerId,
    ) -> AppResult<Option<RegisteredPractitioner>> {
        let p = self
            .load(tenant, &self.practitioners, &stream_id::<Practitioner>(id))
            .await?;
        Ok(p.state.registered.filter(|p| p.id == id))
    }

    pub async fn service(
        &self,
        tenant: TenantId,
        id: ServiceId,
    ) -> AppResult<Option<DefinedService>> {
        let s = self
            .load(tenant, &self.services, &stream_id::<Service>(id))
            .await?;
        Ok(s.state.defined.filter(|s| s.id == id))
    }

    pub async fn schedule(
        &self,
        tenant: TenantId,
        practitioner: PractitionerId,
    ) -> AppResult<Schedule> {
        Ok(self
            .load(
                tenant,
                &self.schedules,
                &stream_id::<Schedule>(practitioner),
            )
            .await?
            .state)
    }

    pub async fn appointment(
        &self,
        tenant: TenantId,
        id: AppointmentId,
    ) -> AppResult<Option<BookedAppointment>> {
        let a = self
            .load(tenant, &self.appointments, &stream_id::<Appointment>(id))
            .await?;
        Ok(a.state.booked.filter(|a| a.id == id))
    }

    /// What the HIS recorded about a patient (contact data, language,
    /// opt-outs), found by the HIS's patient id; `None` if nothing was.
    pub async fn patient(
        &self,
        tenant: TenantId,
        his_patient_id: &ShortText,
    ) -> AppResult<Option<KnownPatient>> {
        let id = patient_id_for(tenant, his_patient_id);
        let p = self
            .load(tenant, &self.patients, &stream_id::<Patient>(id))
            .await?;
        Ok(p.state
            .known
            .filter(|k| k.id == id && k.his_patient_id == *his_patient_id))
    }
}
