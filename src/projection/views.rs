//! Typed reads of the live read models, and point-in-time reads folded
//! from the store, for the GraphQL resolvers.
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError};

use buktor_domain::appointment::{Appointment, AppointmentStatus};
use buktor_domain::booking::stream_id;
use buktor_domain::calendar::{calendar_stream, CalendarDay};
use buktor_domain::practitioner::RegisteredPractitioner;
use buktor_domain::schedule::Schedule;
use buktor_domain::service::DefinedService;
use buktor_domain::{decode, Aggregate, AppointmentId, PractitionerId, ServiceId, TenantId};
use buktor_projections::agenda::{agenda, AgendaDay};
use buktor_projections::appointments::{patient_index, AppointmentDoc, Appointments};
use buktor_projections::audit::{AuditDoc, AuditTrail};
use buktor_projections::calendar::{day_key, Calendars};
use buktor_projections::catalog::{
    practitioner_key, schedule_key, service_key, Catalog, CatalogDoc, PRACTITIONER_PREFIX,
    SERVICE_PREFIX,
};
use buktor_projections::slots::{free_slots, FreeSlot};
use buktor_projections::Projection;
use chrono::{DateTime, NaiveDate, Utc};
use serde::de::DeserializeOwned;

use super::ReadSide;
use crate::store::{DocRow, Position, RecordedEvent, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("read model {projection} holds an unreadable document {key:?}: {reason}")]
    Document {
        projection: &'static str,
        key: String,
        reason: String,
    },
}

pub type ViewResult<T> = Result<T, ViewError>;

fn parse<D: DeserializeOwned>(
    projection: &'static str,
    (key, json): DocRow,
) -> ViewResult<(String, D)> {
    match serde_json::from_str(&json) {
        Ok(doc) => Ok((key, doc)),
        Err(e) => Err(ViewError::Document {
            projection,
            key,
            reason: e.to_string(),
        }),
    }
}

/// A catalog document and the JSON it was parsed from.
pub struct ParsedDoc {
    json: Arc<str>,
    doc: Arc<CatalogDoc>,
}

/// A bookable slot of one practitioner for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedSlot {
    pub practitioner_id: PractitionerId,
    pub service_id: ServiceId,
    pub slot: FreeSlot,
}

/// Which practitioners and services a slot search covers.
#[derive(Debug, Clone, Default)]
pub struct SlotSearch {
    pub practitioner_ids: Option<Vec<PractitionerId>>,
    pub service_id: Option<ServiceId>,
    pub specialty: Option<String>,
}

/// Where a point-in-time read stops: at a position or at a time (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    Position(Position),
    Time(DateTime<Utc>),
}

impl AsOf {
    pub fn includes(&self, e: &RecordedEvent) -> bool {
        match self {
            AsOf::Position(p) => e.position <= *p,
            AsOf::Time(t) => e.recorded_at <= *t,
        }
    }
}

impl ReadSide {
    async fn docs<D: DeserializeOwned>(
        &self,
        projection: &'static str,
        tenant: TenantId,
        keys: &[String],
    ) -> ViewResult<HashMap<String, D>> {
        self.store()
            .read_models()
            .live_docs(projection, tenant, keys)
            .await?
            .into_iter()
            .map(|row| parse(projection, row))
            .collect()
    }

    /// Catalog documents by key, parsed once per version of their JSON.
    async fn catalog(
        &self,
        tenant: TenantId,
        keys: &[String],
    ) -> ViewResult<HashMap<String, Arc<CatalogDoc>>> {
        let rows = self
            .store()
            .read_models()
            .live_docs(Catalog::NAME, tenant, keys)
            .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for (key, json) in rows {
            let cache_key = (tenant, key);
            let cached = self
                .parsed_catalog
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&cache_key)
                .filter(|c| *c.json == *json)
                .map(|c| c.doc.clone());
            let doc = match cached {
                Some(doc) => doc,
                None => {
                    let (_, doc) =
                        parse::<CatalogDoc>(Catalog::NAME, (cache_key.1.clone(), json.clone()))?;
                    let doc = Arc::new(doc);
                    self.parsed_catalog
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(
                            cache_key.clone(),
                            ParsedDoc {
                                json: json.into(),
                                doc: doc.clone(),
                            },
                        );
                    doc
                }
            };
            out.insert(cache_key.1, doc);
        }
        Ok(out)
    }

    /// Catalog documents of one kind in key (= id) order after `after`.
    async fn catalog_page<T>(
        &self,
        tenant: TenantId,
        prefix: &str,
        after: Option<String>,
        limit: usize,
        pick: impl Fn(CatalogDoc) -> Option<T>,
    ) -> ViewResult<Vec<T>> {
        let rows = self
            .store()
            .read_models()
            .live_scan(Catalog::NAME, tenant, prefix, after.as_deref(), limit)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (_, doc) = parse(Catalog::NAME, row)?;
            out.extend(pick(doc));
        }
        Ok(out)
    }

    /// Practitioners in id order after `after`, at most `limit`.
    pub async fn practitioners(
        &self,
        tenant: TenantId,
        after: Option<PractitionerId>,
        limit: usize,
    ) -> ViewResult<Vec<RegisteredPractitioner>> {
        let after = after.map(practitioner_key);
        self.catalog_page(tenant, PRACTITIONER_PREFIX, after, limit, |doc| match doc {
            CatalogDoc::Practitioner(p) => Some(p),
            _ => None,
        })
        .await
    }

    /// Services in id order after `after`, at most `limit`.
    pub async fn services(
        &self,
        tenant: TenantId,
        after: Option<ServiceId>,
        limit: usize,
    ) -> ViewResult<Vec<DefinedService>> {
        let after = after.map(service_key);
        self.catalog_page(tenant, SERVICE_PREFIX, after, limit, |doc| match doc {
            CatalogDoc::Service(s) => Some(s),
            _ => None,
        })
        .await
    }

    async fn all_services(&self, tenant: TenantId) -> ViewResult<Vec<DefinedService>> {
        self.services(tenant, None, usize::MAX).await
    }

    async fn calendar_days(
        &self,
        tenant: TenantId,
        practitioner: PractitionerId,
        dates: impl Iterator<Item = NaiveDate>,
    ) -> ViewResult<HashMap<NaiveDate, CalendarDay>> {
        let dates: Vec<NaiveDate> = dates.collect();
        let keys: Vec<String> = dates.iter().map(|d| day_key(practitioner, *d)).collect();
        let mut docs: HashMap<String, CalendarDay> =
            self.docs(Calendars::NAME, tenant, &keys).await?;
        Ok(dates
            .iter()
            .zip(keys)
            .filter_map(|(d, k)| docs.remove(&k).map(|c| (*d, c)))
            .collect())
    }

    /// Free slots on the hospital-local dates `from..=to` of every
    /// (practitioner, service) pair the search names, sorted by start.
    pub async fn available_slots(
        &self,
        tenant: TenantId,
        search: &SlotSearch,
        from: NaiveDate,
        to: NaiveDate,
        now: DateTime<Utc>,
    ) -> ViewResult<Vec<OfferedSlot>> {
        let service_docs: Vec<Arc<CatalogDoc>> = match search.service_id {
            Some(id) => self
                .catalog(tenant, &[service_key(id)])
                .await?
                .into_values()
                .collect(),
            None => self
                .all_services(tenant)
                .await?
                .into_iter()
                .map(|s| Arc::new(CatalogDoc::Service(s)))
                .collect(),
        };
        let services: Vec<&DefinedService> = service_docs
            .iter()
            .filter_map(|d| match &**d {
                CatalogDoc::Service(s) if s.active => Some(s),
                _ => None,
            })
            .collect();
        let mut wanted: BTreeSet<PractitionerId> = services
            .iter()
            .flat_map(|s| s.details.practitioners.iter().copied())
            .collect();
        if let Some(ids) = &search.practitioner_ids {
            wanted.retain(|p| ids.contains(p));
        }
        let keys: Vec<String> = wanted
            .iter()
            .flat_map(|p| [practitioner_key(p), schedule_key(p)])
            .collect();
        let catalog = self.catalog(tenant, &keys).await?;
        let mut out = Vec::new();
        for p in wanted {
            let Some(CatalogDoc::Practitioner(practitioner)) =
                catalog.get(&practitioner_key(p)).map(|d| &**d)
            else {
                continue;
            };
            if !practitioner.active {
                continue;
            }
            if let Some(specialty) = &search.specialty {
                if !practitioner
                    .details
                    .specialty
                    .as_str()
                    .eq_ignore_ascii_case(specialty)
                {
                    continue;
                }
            }
            let Some(CatalogDoc::Schedule(schedule)) = catalog.get(&schedule_key(p)).map(|d| &**d)
            else {
                continue;
            };
            let offered: Vec<&DefinedService> = services
                .iter()
                .copied()
                .filter(|s| s.details.practitioners.contains(&p))
                .collect();
            let days = from.iter_days().take_while(|d| *d <= to).filter(|d| {
                offered
                    .iter()
                    .any(|s| !schedule.slots_on(*d, s.details.duration).is_empty())
            });
            let calendars = self.calendar_days(tenant, p, days).await?;
            for s in offered {
                for slot in free_slots(schedule, s.id, &s.details, &calendars, now, from, to) {
                    out.push(OfferedSlot {
                        practitioner_id: p,
                        service_id: s.id,
                        slot,
                    });
                }
            }
        }
        out.sort_by_key(|o| (o.slot.start, o.practitioner_id, o.service_id));
        Ok(out)
    }

    /// A practitioner's agenda on the hospital-local dates `from..=to`, with
    /// the schedule it was computed from; `None` for an unknown practitioner.
    pub async fn agenda(
        &self,
        tenant: TenantId,
        practitioner: PractitionerId,
        from: NaiveDate,
        to: NaiveDate,
    ) -> ViewResult<Option<(RegisteredPractitioner, Schedule, Vec<AgendaDay>)>> {
        let keys = [practitioner_key(practitioner), schedule_key(practitioner)];
        let mut catalog = self.catalog(tenant, &keys).await?;
        let Some(CatalogDoc::Practitioner(p)) = catalog.remove(&keys[0]).map(Arc::unwrap_or_clone)
        else {
            return Ok(None);
        };
        let schedule = match catalog.remove(&keys[1]).map(Arc::unwrap_or_clone) {
            Some(CatalogDoc::Schedule(s)) => s,
            _ => Schedule::default(),
        };
        let calendars = self
            .calendar_days(
                tenant,
                practitioner,
                from.iter_days().take_while(|d| *d <= to),
            )
            .await?;
        let days = agenda(&schedule, &calendars, from, to);
        Ok(Some((p, schedule, days)))
    }

    /// The same agenda as the store held it at `as_of`, folded from the events.
    pub async fn agenda_as_of(
        &self,
        tenant: TenantId,
        practitioner: PractitionerId,
        from: NaiveDate,
        to: NaiveDate,
        as_of: AsOf,
    ) -> ViewResult<Option<(RegisteredPractitioner, Schedule, Vec<AgendaDay>)>> {
        use buktor_domain::practitioner::Practitioner;
        let p: Practitioner = self
            .fold_as_of(tenant, &stream_id::<Practitioner>(practitioner), as_of)
            .await?;
        let Some(p) = p.registered else {
            return Ok(None);
        };
        let schedule: Schedule = self
            .fold_as_of(tenant, &stream_id::<Schedule>(practitioner), as_of)
            .await?;
        let mut calendars = HashMap::new();
        for date in from.iter_days().take_while(|d| *d <= to) {
            let day: CalendarDay = self
                .fold_as_of(tenant, &calendar_stream(practitioner, date), as_of)
                .await?;
            calendars.insert(date, day);
        }
        let days = agenda(&schedule, &calendars, from, to);
        Ok(Some((p, schedule, days)))
    }

    /// An aggregate as its stream stood at `as_of`.
    pub async fn fold_as_of<A: Aggregate>(
        &self,
        tenant: TenantId,
        stream: &str,
        as_of: AsOf,
    ) -> ViewResult<A> {
        let events = self.store().read_stream(tenant, stream, 0).await?;
        let mut state = A::default();
        for e in events.into_iter().filter(|e| as_of.includes(e)) {
            let event = decode::<A::Event>(&e.event_type, e.schema_version, e.payload)
                .map_err(|err| ViewError::Store(StoreError::Corrupt(err.to_string())))?;
            state.apply(&event);
        }
        Ok(state)
    }

    /// An appointment as it stood at `as_of`.
    pub async fn appointment_as_of(
        &self,
        tenant: TenantId,
        id: AppointmentId,
        as_of: AsOf,
    ) -> ViewResult<Option<buktor_domain::appointment::BookedAppointment>> {
        let a: Appointment = self
            .fold_as_of(tenant, &stream_id::<Appointment>(id), as_of)
            .await?;
        Ok(a.booked)
    }

    pub async fn appointments(
        &self,
        tenant: TenantId,
        ids: &[AppointmentId],
    ) -> ViewResult<HashMap<AppointmentId, AppointmentDoc>> {
        let keys: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        let docs: HashMap<String, AppointmentDoc> =
            self.docs(Appointments::NAME, tenant, &keys).await?;
        Ok(docs.into_values().map(|d| (d.appointment.id, d)).collect())
    }

    /// The ids of every appointment booked with `practitioner` on the
    /// hospital-local dates `from..=to`, whatever its status now, sorted.
    ///
    /// Read from the practitioner-days' calendar streams rather than the
    /// calendar read model: the read model keeps only the time still held
    /// (booked, checked-in), whereas each booking (and each move onto the
    /// day) leaves a `SlotHeld` event in the stream for good. All the days
    /// are read in one round trip. A moved appointment is listed under the
    /// days it ever held; callers filter by its current practitioner and start.
    pub async fn practitioner_appointment_ids(
        &self,
        tenant: TenantId,
        practitioner: PractitionerId,
        from: NaiveDate,
        to: NaiveDate,
    ) -> ViewResult<Vec<AppointmentId>> {
        use buktor_domain::calendar::CalendarEvent;
        let streams: Vec<(String, i64)> = from
            .iter_days()
            .take_while(|d| *d <= to)
            .map(|d| (calendar_stream(practitioner, d), 0))
            .collect();
        let mut ids = BTreeSet::new();
        for e in self.store().read_streams(tenant, &streams).await? {
            let event = decode::<CalendarEvent>(&e.event_type, e.schema_version, e.payload)
                .map_err(|err| ViewError::Store(StoreError::Corrupt(err.to_string())))?;
            if let CalendarEvent::SlotHeld {
                practitioner_id,
                appointment_id,
                ..
            } = event
            {
                if practitioner_id == practitioner {
                    ids.insert(appointment_id);
                }
            }
        }
        Ok(ids.into_iter().collect())
    }

    /// A patient's appointments, sorted by start, filtered by local start
    /// date range (instants) and status.
    pub async fn patient_appointments(
        &self,
        tenant: TenantId,
        his_patient_id: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        statuses: Option<&[AppointmentStatus]>,
    ) -> ViewResult<Vec<AppointmentDoc>> {
        let rows = self
            .store()
            .read_models()
            .live_by_index(Appointments::NAME, tenant, &patient_index(his_patient_id))
            .await?;
        let mut out: Vec<AppointmentDoc> = rows
            .into_iter()
            .map(|row| parse(Appointments::NAME, row).map(|(_, d)| d))
            .collect::<ViewResult<_>>()?;
        out.retain(|d| {
            let a = &d.appointment;
            from.is_none_or(|f| a.end > f)
                && to.is_none_or(|t| a.start < t)
                && statuses.is_none_or(|s| s.contains(&a.status))
        });
        out.sort_by_key(|d| (d.appointment.start, d.appointment.id));
        Ok(out)
    }

    pub async fn audit_trail(
        &self,
        tenant: TenantId,
        id: AppointmentId,
    ) -> ViewResult<Option<AuditDoc>> {
        let key = id.to_string();
        let mut docs: HashMap<String, AuditDoc> = self
            .docs(AuditTrail::NAME, tenant, std::slice::from_ref(&key))
            .await?;
        Ok(docs.remove(&key))
    }

    /// Catalog documents by key, for the DataLoader.
    pub async fn catalog_docs(
        &self,
        tenant: TenantId,
        keys: &[String],
    ) -> ViewResult<HashMap<String, Arc<CatalogDoc>>> {
        self.catalog(tenant, keys).await
    }
}
