//! Reads served straight from the aggregates' streams. They cover what a
//! client needs to see the result of its commands; the projections of the
//! read side take over the list and search queries.
use std::collections::HashMap;

use buktor_domain::appointment::{Appointment, BookedAppointment};
use buktor_domain::booking::stream_id;
use buktor_domain::calendar::calendar_stream;
use buktor_domain::practitioner::{Practitioner, RegisteredPractitioner};
use buktor_domain::schedule::Schedule;
use buktor_domain::service::{DefinedService, Service};
use buktor_domain::{AppointmentId, DomainError, PractitionerId, ServiceId, TenantId};
use buktor_projections::slots::{free_slots, FreeSlot};
use chrono::NaiveDate;

use super::{AppResult, Scheduler};
use crate::store::RecordedEvent;

/// The longest range of days one slot query may cover.
pub const MAX_SLOT_QUERY_DAYS: i64 = 62;

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

    pub async fn practitioners(&self, tenant: TenantId) -> AppResult<Vec<RegisteredPractitioner>> {
        let mut out = Vec::new();
        for stream in self.store.stream_ids(tenant, "practitioner-").await? {
            let p = self.load(tenant, &self.practitioners, &stream).await?;
            out.extend(p.state.registered);
        }
        out.sort_by(|a, b| a.details.name.as_str().cmp(b.details.name.as_str()));
        Ok(out)
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

    pub async fn services(&self, tenant: TenantId) -> AppResult<Vec<DefinedService>> {
        let mut out = Vec::new();
        for stream in self.store.stream_ids(tenant, "service-").await? {
            let s = self.load(tenant, &self.services, &stream).await?;
            out.extend(s.state.defined);
        }
        out.sort_by(|a, b| a.details.name.as_str().cmp(b.details.name.as_str()));
        Ok(out)
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

    /// Every stored event of the appointment, with its metadata.
    pub async fn appointment_events(
        &self,
        tenant: TenantId,
        id: AppointmentId,
    ) -> AppResult<Vec<RecordedEvent>> {
        Ok(self
            .store
            .read_stream(tenant, &stream_id::<Appointment>(id), 0)
            .await?)
    }

    /// Free slots on the hospital-local dates `from..=to`.
    pub async fn available_slots(
        &self,
        tenant: TenantId,
        practitioner: PractitionerId,
        service_id: ServiceId,
        from: NaiveDate,
        to: NaiveDate,
    ) -> AppResult<Vec<FreeSlot>> {
        if to < from {
            return Err(DomainError::invalid("to", "must not be before from").into());
        }
        if (to - from).num_days() >= MAX_SLOT_QUERY_DAYS {
            return Err(DomainError::invalid(
                "to",
                format!("a query covers at most {MAX_SLOT_QUERY_DAYS} days"),
            )
            .into());
        }
        let service = self
            .service(tenant, service_id)
            .await?
            .ok_or(DomainError::ServiceNotFound(service_id))?;
        if !service.active || !service.details.practitioners.contains(&practitioner) {
            return Ok(vec![]);
        }
        match self.practitioner(tenant, practitioner).await? {
            Some(p) if p.active => {}
            Some(_) => return Ok(vec![]),
            None => return Err(DomainError::PractitionerNotFound(practitioner).into()),
        }
        let schedule = self.schedule(tenant, practitioner).await?;
        let mut calendars = HashMap::new();
        for date in from.iter_days().take_while(|d| *d <= to) {
            if schedule.slots_on(date, service.details.duration).is_empty() {
                continue;
            }
            let c = self
                .load(
                    tenant,
                    &self.calendars,
                    &calendar_stream(practitioner, date),
                )
                .await?;
            calendars.insert(date, c.state);
        }
        Ok(free_slots(
            &schedule,
            service_id,
            &service.details,
            &calendars,
            self.now(),
            from,
            to,
        ))
    }
}
