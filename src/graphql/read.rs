//! Queries served from the projections: lists with Relay pagination, slot
//! searches, a practitioner's agenda, a patient's appointments and an
//! appointment's audit trail.
//!
//! Every query takes `atLeast`: the position a mutation returned. The query
//! then waits (at most [`AT_LEAST_TIMEOUT`]) until every projection has
//! applied the events up to it, so a client sees its own writes.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::{
    ComplexObject, Context, Enum, ErrorExtensions, InputObject, Object, Result, SimpleObject, ID,
};
use buktor_domain::appointment::AppointmentStatus;
use buktor_domain::time;
use buktor_domain::{AppointmentId, PractitionerId, ServiceId, TenantId};
use buktor_projections::agenda::AgendaDay;
use buktor_projections::appointments::AppointmentDoc;
use buktor_projections::audit::AuditEntry as AuditEntryDoc;
use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;

use super::types::{Actor, Appointment, Practitioner, Service, Status};
use super::{app_error, invalid, parse_id, principal, scheduler};
use crate::app::AppError;
use crate::projection::views::{AsOf, SlotSearch, ViewError};
use crate::projection::{ReadSide, WaitError};
use crate::store::Position;

/// The longest a query waits for `atLeast`.
pub const AT_LEAST_TIMEOUT: Duration = Duration::from_secs(5);
/// Page size when `first` is not given, and the most one page may hold.
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;
/// The longest range one slot or agenda query may cover.
pub const MAX_RANGE_DAYS: i64 = 62;

pub(crate) fn read_side<'a>(ctx: &Context<'a>) -> &'a Arc<ReadSide> {
    ctx.data_unchecked::<Arc<ReadSide>>()
}

pub(crate) fn view_error(e: ViewError) -> async_graphql::Error {
    match e {
        ViewError::Store(e) => app_error(AppError::Store(e)),
        ViewError::Document { .. } => app_error(AppError::Corrupt(e.to_string())),
    }
}

fn parse_position(field: &'static str, text: &str) -> Result<Position> {
    text.parse::<Position>()
        .map_err(|e| invalid(field, e.to_string()))
}

/// Waits for `atLeast`, if given.
pub(crate) async fn catch_up(ctx: &Context<'_>, at_least: Option<&str>) -> Result<()> {
    let Some(text) = at_least else {
        return Ok(());
    };
    let wanted = parse_position("atLeast", text)?;
    match read_side(ctx)
        .wait_for(principal(ctx).tenant_id(), wanted, AT_LEAST_TIMEOUT)
        .await
    {
        Ok(()) => Ok(()),
        Err(WaitError::Timeout { wanted, waited_ms }) => Err(async_graphql::Error::new(format!(
            "the read models have not reached position {wanted} after {waited_ms} ms; retry"
        ))
        .extend_with(|_, ext| {
            ext.set("code", "NOT_CAUGHT_UP");
            ext.set("position", wanted.to_string());
        })),
        Err(WaitError::Store(e)) => Err(app_error(AppError::Store(e))),
    }
}

pub(crate) fn page_size(first: Option<i32>) -> Result<usize> {
    match first {
        None => Ok(DEFAULT_PAGE),
        Some(n) if n >= 0 && n as usize <= MAX_PAGE => Ok(n as usize),
        Some(_) => Err(invalid("first", format!("must be 0 to {MAX_PAGE}"))),
    }
}

/// A page of appointments sorted by start, with cursors `start|id`.
fn appointments_page(
    docs: Vec<AppointmentDoc>,
    after: Option<&str>,
    size: usize,
) -> Result<Connection<String, PatientAppointment>> {
    let cursor_of =
        |d: &AppointmentDoc| format!("{}|{}", d.appointment.start.to_rfc3339(), d.appointment.id);
    page_after(
        docs.into_iter()
            .map(|d| (cursor_of(&d), PatientAppointment(d))),
        after,
        size,
    )
}

/// Dates outside the years Buktor accepts are refused here, for every
/// date range a query takes (`buktor_domain::time`).
fn check_range(from: NaiveDate, to: NaiveDate) -> Result<()> {
    in_years(time::check_date("from", from))?;
    in_years(time::check_date("to", to))?;
    if to < from {
        return Err(invalid("to", "must not be before from"));
    }
    if (to - from).num_days() >= MAX_RANGE_DAYS {
        return Err(invalid(
            "to",
            format!("a query covers at most {MAX_RANGE_DAYS} days"),
        ));
    }
    Ok(())
}

fn in_years<T>(checked: buktor_domain::DomainResult<T>) -> Result<T> {
    checked.map_err(|e| app_error(e.into()))
}

/// A point in the past to read as of: exactly one of the two.
#[derive(InputObject)]
pub struct AsOfInput {
    /// A global position, as mutations return it.
    pub position: Option<String>,
    /// A time: the state after every event recorded at or before it.
    pub time: Option<DateTime<Utc>>,
}

impl AsOfInput {
    pub fn parse(&self) -> Result<AsOf> {
        match (&self.position, self.time) {
            (Some(p), None) => Ok(AsOf::Position(parse_position("asOf.position", p)?)),
            (None, Some(t)) => Ok(AsOf::Time(in_years(time::check_instant("asOf.time", t))?)),
            _ => Err(invalid("asOf", "give exactly one of position and time")),
        }
    }
}

/// An offered slot.
#[derive(SimpleObject)]
pub struct AvailableSlot {
    pub practitioner_id: ID,
    pub service_id: ID,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Places left (more than 1 only for group sessions).
    pub remaining: u32,
    /// The start as wall-clock time in the requested time zone (the
    /// hospital's by default), e.g. `2026-03-29T09:30:00+02:00`.
    pub local_start: String,
    pub time_zone: String,
}

impl AvailableSlot {
    /// An offered slot, with its start shown as wall-clock time in `tz`.
    pub fn shown_in(o: crate::projection::views::OfferedSlot, tz: Tz) -> Self {
        AvailableSlot {
            practitioner_id: ID(o.practitioner_id.to_string()),
            service_id: ID(o.service_id.to_string()),
            start: o.slot.start,
            end: o.slot.end,
            remaining: o.slot.remaining,
            local_start: o.slot.start.with_timezone(&tz).to_rfc3339(),
            time_zone: tz.name().to_owned(),
        }
    }
}

#[derive(SimpleObject)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct BookedTime {
    pub appointment_id: ID,
    pub service_id: ID,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Including the service's buffers.
    pub occupied: Interval,
    #[graphql(skip)]
    id: AppointmentId,
    #[graphql(skip)]
    tenant: TenantId,
}

#[ComplexObject]
impl BookedTime {
    /// The appointment (loaded in one batch for the whole agenda).
    async fn appointment(&self, ctx: &Context<'_>) -> Result<Option<Appointment>> {
        let loader = ctx.data_unchecked::<DataLoader<AppointmentLoader>>();
        let doc = loader.load_one((self.tenant, self.id)).await?;
        Ok(doc.map(|d| Appointment(d.appointment, None)))
    }
}

#[derive(SimpleObject)]
pub struct ScheduleDay {
    pub date: NaiveDate,
    /// When the practitioner works: weekly rules minus leave, plus extra sessions.
    pub working: Vec<Interval>,
    pub booked: Vec<BookedTime>,
    /// Working time no booking occupies.
    pub free: Vec<Interval>,
}

#[derive(SimpleObject)]
pub struct PractitionerSchedule {
    pub practitioner: Practitioner,
    pub time_zone: String,
    pub days: Vec<ScheduleDay>,
}

fn schedule_day(tenant: TenantId, day: AgendaDay) -> ScheduleDay {
    let interval = |i: buktor_projections::agenda::Interval| Interval {
        start: i.start,
        end: i.end,
    };
    ScheduleDay {
        date: day.date,
        working: day.working.into_iter().map(interval).collect(),
        booked: day
            .booked
            .into_iter()
            .map(|b| BookedTime {
                appointment_id: ID(b.appointment_id.to_string()),
                service_id: ID(b.service_id.to_string()),
                start: b.start,
                end: b.end,
                occupied: interval(b.occupied),
                id: b.appointment_id,
                tenant,
            })
            .collect(),
        free: day.free.into_iter().map(interval).collect(),
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum StatusFilter {
    Booked,
    CheckedIn,
    Completed,
    NoShow,
    Cancelled,
}

impl From<StatusFilter> for AppointmentStatus {
    fn from(s: StatusFilter) -> Self {
        match s {
            StatusFilter::Booked => AppointmentStatus::Booked,
            StatusFilter::CheckedIn => AppointmentStatus::CheckedIn,
            StatusFilter::Completed => AppointmentStatus::Completed,
            StatusFilter::NoShow => AppointmentStatus::NoShow,
            StatusFilter::Cancelled => AppointmentStatus::Cancelled,
        }
    }
}

/// An appointment in a patient's history.
pub struct PatientAppointment(pub AppointmentDoc);

#[Object]
impl PatientAppointment {
    async fn appointment(&self) -> Appointment {
        Appointment(self.0.appointment.clone(), None)
    }
    async fn booked_at(&self) -> DateTime<Utc> {
        self.0.booked_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    async fn status(&self) -> Status {
        self.0.appointment.status.into()
    }
    /// The position of the appointment's last event.
    async fn position(&self) -> &str {
        &self.0.position
    }
}

/// One entry of an appointment's audit trail.
pub struct AuditEntry(pub AuditEntryDoc);

#[Object]
impl AuditEntry {
    async fn position(&self) -> &str {
        &self.0.position
    }
    async fn version(&self) -> i64 {
        self.0.version
    }
    async fn event_id(&self) -> ID {
        ID(self.0.event_id.to_string())
    }
    async fn r#type(&self) -> &str {
        &self.0.event_type
    }
    async fn occurred_at(&self) -> DateTime<Utc> {
        self.0.occurred_at
    }
    async fn recorded_at(&self) -> DateTime<Utc> {
        self.0.recorded_at
    }
    async fn actor(&self) -> Actor {
        Actor::new(&self.0.actor)
    }
    async fn source(&self) -> &'static str {
        self.0.source.as_str()
    }
    async fn remote_addr(&self) -> Option<&str> {
        self.0.remote_addr.as_deref()
    }
    async fn correlation_id(&self) -> ID {
        ID(self.0.correlation_id.to_string())
    }
    /// Why: the reason or note given with the change, if any.
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    async fn data(&self) -> async_graphql::Json<&serde_json::Value> {
        async_graphql::Json(&self.0.data)
    }
}

/// Appointments by id from the appointments read model, one query per batch.
pub struct AppointmentLoader(pub Arc<ReadSide>);

impl Loader<(TenantId, AppointmentId)> for AppointmentLoader {
    type Value = AppointmentDoc;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[(TenantId, AppointmentId)],
    ) -> Result<HashMap<(TenantId, AppointmentId), AppointmentDoc>, Self::Error> {
        let mut by_tenant: HashMap<TenantId, Vec<AppointmentId>> = HashMap::new();
        for (t, id) in keys {
            by_tenant.entry(*t).or_default().push(*id);
        }
        let mut out = HashMap::new();
        for (tenant, ids) in by_tenant {
            let docs = self
                .0
                .appointments(tenant, &ids)
                .await
                .map_err(view_error)?;
            out.extend(docs.into_iter().map(|(id, d)| ((tenant, id), d)));
        }
        Ok(out)
    }
}

/// A page of a list read in id order and filtered afterwards: reads on
/// until the page is full or the list ends.
async fn filtered_page<I, T, N, F>(
    size: usize,
    after: Option<I>,
    mut fetch: impl FnMut(Option<I>, usize) -> F,
    id_of: impl Fn(&T) -> I,
    keep: impl Fn(&T) -> bool,
    node: impl Fn(T) -> N,
) -> Result<Connection<String, N>>
where
    I: Copy + std::fmt::Display,
    N: async_graphql::OutputType,
    F: std::future::Future<Output = Result<Vec<T>, ViewError>>,
{
    let step = size.max(1) * 2;
    let mut items = Vec::new();
    let mut cursor = after;
    let mut more = false;
    loop {
        let batch = fetch(cursor, step).await.map_err(view_error)?;
        let exhausted = batch.len() < step;
        for item in batch {
            cursor = Some(id_of(&item));
            if !keep(&item) {
                continue;
            }
            if items.len() == size {
                more = true;
                break;
            }
            items.push(item);
        }
        if more || exhausted {
            break;
        }
    }
    let mut connection = Connection::new(after.is_some(), more);
    connection.edges.extend(
        items
            .into_iter()
            .map(|item| Edge::new(id_of(&item).to_string(), node(item))),
    );
    Ok(connection)
}

/// Appointments' events from the store, every appointment of a batch in one
/// round trip: a list of appointments asking for their `history` would
/// otherwise read one stream per row.
pub struct HistoryLoader(pub Arc<ReadSide>);

impl Loader<(TenantId, AppointmentId)> for HistoryLoader {
    type Value = Vec<crate::store::RecordedEvent>;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[(TenantId, AppointmentId)],
    ) -> Result<HashMap<(TenantId, AppointmentId), Self::Value>, Self::Error> {
        use buktor_domain::appointment::Appointment as AppointmentAggregate;
        use buktor_domain::booking::stream_id;
        let mut by_tenant: HashMap<TenantId, Vec<AppointmentId>> = HashMap::new();
        for (t, id) in keys {
            by_tenant.entry(*t).or_default().push(*id);
        }
        let mut out: HashMap<(TenantId, AppointmentId), Self::Value> = HashMap::new();
        for (tenant, ids) in by_tenant {
            let streams: Vec<(String, i64)> = ids
                .iter()
                .map(|id| (stream_id::<AppointmentAggregate>(id), 0))
                .collect();
            let events = self
                .0
                .store()
                .read_streams(tenant, &streams)
                .await
                .map_err(|e| app_error(AppError::Store(e)))?;
            let stream_of: HashMap<&str, AppointmentId> = streams
                .iter()
                .zip(&ids)
                .map(|((stream, _), id)| (stream.as_str(), *id))
                .collect();
            for e in events {
                if let Some(id) = stream_of.get(e.stream_id.as_str()) {
                    out.entry((tenant, *id)).or_default().push(e);
                }
            }
        }
        Ok(out)
    }
}

/// The page of `items` (in list order, with their cursors) that follows the
/// item whose cursor is `after`, at most `size` of them.
fn page_after<N: async_graphql::OutputType>(
    items: impl Iterator<Item = (String, N)>,
    after: Option<&str>,
    size: usize,
) -> Result<Connection<String, N>> {
    let mut skipped = after.is_none();
    let mut connection = Connection::new(after.is_some(), false);
    for (cursor, node) in items {
        if !skipped {
            skipped = after == Some(cursor.as_str());
            continue;
        }
        if connection.edges.len() == size {
            connection.has_next_page = true;
            break;
        }
        connection.edges.push(Edge::new(cursor, node));
    }
    if !skipped {
        return Err(invalid("after", "not a cursor of this list"));
    }
    Ok(connection)
}

fn slot_cursor(s: &AvailableSlot) -> String {
    format!(
        "{}|{}|{}",
        s.start.to_rfc3339(),
        s.practitioner_id.as_str(),
        s.service_id.as_str()
    )
}

#[derive(Default)]
pub struct ReadQuery;

#[Object]
impl ReadQuery {
    /// Practitioners, oldest first.
    #[graphql(complexity = "page_size(first).unwrap_or(MAX_PAGE) * child_complexity + 1")]
    async fn practitioners(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        #[graphql(desc = "Only those of this specialty (case-insensitive).")] specialty: Option<
            String,
        >,
        #[graphql(desc = "Also inactive ones.", default = false)] include_inactive: bool,
        at_least: Option<String>,
    ) -> Result<Connection<String, Practitioner>> {
        catch_up(ctx, at_least.as_deref()).await?;
        let size = page_size(first)?;
        let after: Option<PractitionerId> = after
            .as_deref()
            .map(|a| {
                a.parse()
                    .map_err(|_| invalid("after", "not a cursor of this list"))
            })
            .transpose()?;
        let tenant = principal(ctx).tenant_id();
        let side = read_side(ctx);
        filtered_page(
            size,
            after,
            |cursor, n| side.practitioners(tenant, cursor, n),
            |p| p.id,
            |p| {
                (include_inactive || p.active)
                    && specialty
                        .as_deref()
                        .is_none_or(|s| p.details.specialty.as_str().eq_ignore_ascii_case(s))
            },
            Practitioner,
        )
        .await
    }

    /// Services, oldest first.
    #[graphql(complexity = "page_size(first).unwrap_or(MAX_PAGE) * child_complexity + 1")]
    async fn services(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        #[graphql(desc = "Also inactive ones.", default = false)] include_inactive: bool,
        at_least: Option<String>,
    ) -> Result<Connection<String, Service>> {
        catch_up(ctx, at_least.as_deref()).await?;
        let size = page_size(first)?;
        let after: Option<ServiceId> = after
            .as_deref()
            .map(|a| {
                a.parse()
                    .map_err(|_| invalid("after", "not a cursor of this list"))
            })
            .transpose()?;
        let tenant = principal(ctx).tenant_id();
        let side = read_side(ctx);
        filtered_page(
            size,
            after,
            |cursor, n| side.services(tenant, cursor, n),
            |s| s.id,
            |s| include_inactive || s.active,
            Service,
        )
        .await
    }

    /// Bookable slots, by practitioners, by service, or by specialty (any
    /// combination narrows the search), on the dates `from..=to` of
    /// `timeZone` (the hospital's by default). Sorted by start.
    #[graphql(complexity = "page_size(first).unwrap_or(MAX_PAGE) * child_complexity + 5")]
    #[allow(clippy::too_many_arguments)]
    async fn available_slots(
        &self,
        ctx: &Context<'_>,
        practitioner_ids: Option<Vec<ID>>,
        service_id: Option<ID>,
        specialty: Option<String>,
        from: NaiveDate,
        to: NaiveDate,
        time_zone: Option<String>,
        first: Option<i32>,
        after: Option<String>,
        at_least: Option<String>,
    ) -> Result<Connection<String, AvailableSlot, EmptyFields, EmptyFields>> {
        if practitioner_ids.is_none() && service_id.is_none() && specialty.is_none() {
            return Err(invalid(
                "practitionerIds",
                "name practitionerIds, serviceId or specialty",
            ));
        }
        check_range(from, to)?;
        let size = page_size(first)?;
        let hospital_tz = principal(ctx).tenant.time_zone;
        let tz: Tz = match time_zone.as_deref() {
            None => hospital_tz,
            Some(name) => name
                .parse()
                .map_err(|_| invalid("timeZone", format!("{name:?} is not an IANA time zone")))?,
        };
        let search = SlotSearch {
            practitioner_ids: practitioner_ids
                .map(|ids| {
                    if ids.len() > 100 {
                        return Err(invalid("practitionerIds", "at most 100"));
                    }
                    ids.iter()
                        .map(|id| parse_id("practitionerIds", id))
                        .collect()
                })
                .transpose()?,
            service_id: service_id
                .map(|id| parse_id("serviceId", &id))
                .transpose()?,
            specialty,
        };
        catch_up(ctx, at_least.as_deref()).await?;
        let tenant = principal(ctx).tenant_id();
        if let Some(id) = search.service_id {
            let key = buktor_projections::catalog::service_key(id);
            let found = read_side(ctx)
                .catalog_docs(tenant, std::slice::from_ref(&key))
                .await
                .map_err(view_error)?;
            if found.is_empty() {
                return Err(app_error(AppError::Domain(
                    buktor_domain::DomainError::ServiceNotFound(id),
                )));
            }
        }
        // The asked dates in `tz` as instants, and the hospital dates that cover them.
        let start_of = |d: NaiveDate| buktor_domain::schedule::resolve_local(tz, d, NaiveTime::MIN);
        let window_start = start_of(from);
        let window_end = start_of(to.succ_opt().unwrap_or(to));
        let hospital_from = time::local_day(hospital_tz, window_start);
        let hospital_to = time::local_day(hospital_tz, window_end - ChronoDuration::seconds(1));
        let offered = read_side(ctx)
            .available_slots(
                tenant,
                &search,
                hospital_from,
                hospital_to,
                scheduler(ctx).now(),
            )
            .await
            .map_err(view_error)?;
        let slots = offered
            .into_iter()
            .filter(|o| o.slot.start >= window_start && o.slot.start < window_end)
            .map(|o| AvailableSlot::shown_in(o, tz));
        page_after(
            slots.map(|slot| (slot_cursor(&slot), slot)),
            after.as_deref(),
            size,
        )
    }

    /// A practitioner's days: working time, bookings and free time, on the
    /// hospital-local dates `from..=to`; as it was at `asOf` when given.
    async fn practitioner_schedule(
        &self,
        ctx: &Context<'_>,
        id: ID,
        from: NaiveDate,
        to: NaiveDate,
        at_least: Option<String>,
        as_of: Option<AsOfInput>,
    ) -> Result<Option<PractitionerSchedule>> {
        let practitioner: PractitionerId = parse_id("id", &id)?;
        check_range(from, to)?;
        let as_of = as_of.as_ref().map(AsOfInput::parse).transpose()?;
        let tenant = principal(ctx).tenant_id();
        let side = read_side(ctx);
        let found = match as_of {
            Some(as_of) => {
                side.agenda_as_of(tenant, practitioner, from, to, as_of)
                    .await
            }
            None => {
                catch_up(ctx, at_least.as_deref()).await?;
                side.agenda(tenant, practitioner, from, to).await
            }
        }
        .map_err(view_error)?;
        Ok(found.map(|(p, schedule, days)| PractitionerSchedule {
            practitioner: Practitioner(p),
            time_zone: schedule.time_zone.name().to_owned(),
            days: days.into_iter().map(|d| schedule_day(tenant, d)).collect(),
        }))
    }

    /// A patient's appointments (by the HIS patient id), past and future,
    /// sorted by start; `from`/`to` bound the start instant.
    #[graphql(complexity = "page_size(first).unwrap_or(MAX_PAGE) * child_complexity + 1")]
    #[allow(clippy::too_many_arguments)]
    async fn patient_appointments(
        &self,
        ctx: &Context<'_>,
        patient_id: String,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        status: Option<Vec<StatusFilter>>,
        first: Option<i32>,
        after: Option<String>,
        at_least: Option<String>,
    ) -> Result<Connection<String, PatientAppointment>> {
        if patient_id.trim().is_empty()
            || patient_id.len() > 200
            || patient_id.chars().any(char::is_control)
        {
            return Err(invalid(
                "patientId",
                "must be 1 to 200 characters without control characters",
            ));
        }
        let from = from
            .map(|t| in_years(time::check_instant("from", t)))
            .transpose()?;
        let to = to
            .map(|t| in_years(time::check_instant("to", t)))
            .transpose()?;
        let size = page_size(first)?;
        catch_up(ctx, at_least.as_deref()).await?;
        let statuses: Option<Vec<AppointmentStatus>> =
            status.map(|s| s.into_iter().map(Into::into).collect());
        let docs = read_side(ctx)
            .patient_appointments(
                principal(ctx).tenant_id(),
                &patient_id,
                from,
                to,
                statuses.as_deref(),
            )
            .await
            .map_err(view_error)?;
        appointments_page(docs, after.as_deref(), size)
    }

    /// A practitioner's appointments of every status (cancelled ones too)
    /// that start on the hospital-local dates `from..=to`, sorted by start:
    /// the admin screens' day and week lists.
    #[graphql(complexity = "page_size(first).unwrap_or(MAX_PAGE) * child_complexity + 1")]
    #[allow(clippy::too_many_arguments)]
    async fn practitioner_appointments(
        &self,
        ctx: &Context<'_>,
        practitioner_id: ID,
        from: NaiveDate,
        to: NaiveDate,
        status: Option<Vec<StatusFilter>>,
        first: Option<i32>,
        after: Option<String>,
        at_least: Option<String>,
    ) -> Result<Connection<String, PatientAppointment>> {
        let practitioner: PractitionerId = parse_id("practitionerId", &practitioner_id)?;
        check_range(from, to)?;
        let size = page_size(first)?;
        catch_up(ctx, at_least.as_deref()).await?;
        let statuses: Option<Vec<AppointmentStatus>> =
            status.map(|s| s.into_iter().map(Into::into).collect());
        let tenant = principal(ctx).tenant_id();
        let tz = principal(ctx).tenant.time_zone;
        let side = read_side(ctx);
        let ids = side
            .practitioner_appointment_ids(tenant, practitioner, from, to)
            .await
            .map_err(view_error)?;
        let mut docs: Vec<AppointmentDoc> = side
            .appointments(tenant, &ids)
            .await
            .map_err(view_error)?
            .into_values()
            .filter(|d| {
                // A moved appointment is listed where it is now, once.
                let a = &d.appointment;
                let day = time::local_day(tz, a.start);
                a.practitioner_id == practitioner
                    && day >= from
                    && day <= to
                    && statuses.as_deref().is_none_or(|s| s.contains(&a.status))
            })
            .collect();
        docs.sort_by_key(|d| (d.appointment.start, d.appointment.id));
        appointments_page(docs, after.as_deref(), size)
    }

    /// Every event of an appointment with who, when, from where and why,
    /// oldest first (the audit read model).
    #[graphql(complexity = "page_size(first).unwrap_or(MAX_PAGE) * child_complexity + 1")]
    async fn audit_trail(
        &self,
        ctx: &Context<'_>,
        appointment_id: ID,
        first: Option<i32>,
        after: Option<String>,
        at_least: Option<String>,
    ) -> Result<Connection<String, AuditEntry>> {
        let id: AppointmentId = parse_id("appointmentId", &appointment_id)?;
        let size = page_size(first)?;
        let after_version: i64 = after
            .as_deref()
            .map(|a| {
                a.parse()
                    .map_err(|_| invalid("after", "not a cursor of this list"))
            })
            .transpose()?
            .unwrap_or(0);
        catch_up(ctx, at_least.as_deref()).await?;
        let trail = read_side(ctx)
            .audit_trail(principal(ctx).tenant_id(), id)
            .await
            .map_err(view_error)?
            .unwrap_or_default();
        let mut rest = trail
            .entries
            .into_iter()
            .filter(|e| e.version > after_version)
            .peekable();
        let mut connection = Connection::new(after_version > 0, false);
        while connection.edges.len() < size {
            match rest.next() {
                Some(e) => connection
                    .edges
                    .push(Edge::new(e.version.to_string(), AuditEntry(e))),
                None => break,
            }
        }
        connection.has_next_page = rest.peek().is_some();
        Ok(connection)
    }
}
