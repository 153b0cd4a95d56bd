//! The read models folded from real domain events, checked against answers
//! worked out by hand.
//!
//! Events are made by the domain's own decisions (`booking::book`,
//! `reschedule`, `cancel`, `Schedule::set_weekly_rules`, ...), encoded and
//! stored in an in-memory log with the stream ids, versions, positions and
//! metadata the server writes, then folded the way the runner folds them:
//! the keys a batch names are loaded into a [`DocMap`], and the events are
//! applied in order.
//!
//! Time zone: Europe/Amsterdam. CET is UTC+1 (winter), CEST is UTC+2
//! (summer). On Sunday 2026-03-29 the clock jumps from 02:00 CET to 03:00
//! CEST (01:00Z); on Sunday 2026-10-25 it falls back from 03:00 CEST to
//! 02:00 CET (01:00Z), so 02:00–03:00 happens twice.
//!
//! Positions are `tx.seq`: every command is one transaction (`tx` counts
//! commands from 1), and `seq` counts events over the whole log from 1, the
//! calendar's events before the appointment's, as the server appends them.
use std::collections::{BTreeMap, HashMap};

use buktor_domain::appointment::{
    Appointment, AppointmentEvent, AppointmentStatus, BookedAppointment, CancelledBy,
};
use buktor_domain::booking::{
    self, stream_id, BookAppointment, BookingContext, Decision, RescheduleAppointment,
};
use buktor_domain::calendar::{calendar_stream, CalendarDay};
use buktor_domain::practitioner::{Practitioner, PractitionerDetails, RegisteredPractitioner};
use buktor_domain::schedule::{Schedule, ScheduleException, WeeklyRule};
use buktor_domain::service::{DefinedService, Service, ServiceDetails};
use buktor_domain::values::{Name, PatientRef, Reason, ShortText};
use buktor_domain::{
    decode, encode, Actor, Aggregate, AppointmentId, DomainEvent, DomainResult, EncodedEvent,
    EventMetadata, PractitionerId, Role, ServiceId, Source, TenantId,
};
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::agenda::{agenda, AgendaDay, BookedTime, Interval};
use crate::appointments::{patient_index, AppointmentDoc, Appointments};
use crate::audit::{AuditDoc, AuditTrail};
use crate::calendar::{day_key, Calendars};
use crate::catalog::{practitioner_key, schedule_key, service_key, Catalog, CatalogDoc};
use crate::slots::{free_slots, FreeSlot};
use crate::{DocMap, Envelope, Projection};

const AMS: Tz = chrono_tz::Europe::Amsterdam;

// ---------------------------------------------------------------------------
// Time helpers.

fn z(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}
fn t(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap()
}
fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}
/// What an Amsterdam wall clock shows at `at`, e.g. `02:30 CEST`.
fn wall(at: DateTime<Utc>) -> String {
    at.with_timezone(&AMS).format("%H:%M %Z").to_string()
}
fn free(start: DateTime<Utc>, minutes: i64, remaining: u32) -> FreeSlot {
    FreeSlot {
        start,
        end: start + Duration::minutes(minutes),
        remaining,
    }
}
fn starts(slots: &[FreeSlot]) -> Vec<DateTime<Utc>> {
    slots.iter().map(|s| s.start).collect()
}
fn iv(start: DateTime<Utc>, end: DateTime<Utc>) -> Interval {
    Interval { start, end }
}
#[track_caller]
fn assert_strictly_increasing(slots: &[FreeSlot]) {
    assert!(
        slots.windows(2).all(|w| w[0].start < w[1].start),
        "not distinct and sorted: {slots:?}"
    );
}

// ---------------------------------------------------------------------------
// Domain value helpers.

fn name(s: &str) -> Name {
    Name::parse("name", s).unwrap()
}
fn reason(s: &str) -> Reason {
    Reason::parse("reason", s).unwrap()
}
fn patient(his_id: &str) -> PatientRef {
    PatientRef {
        his_patient_id: ShortText::parse("patientId", his_id).unwrap(),
        name: Some(name(&format!("Patient {his_id}"))),
        phone: None,
        email: None,
    }
}
fn doctor(n: &str) -> PractitionerDetails {
    PractitionerDetails {
        name: name(n),
        specialty: name("Cardiology"),
        department: None,
        location: None,
        external_id: None,
    }
}
/// Mon–Fri `start`–`end` Amsterdam time on a `grid`-minute grid, from 1 January 2026.
fn weekdays(start: NaiveTime, end: NaiveTime, grid: i64) -> WeeklyRule {
    use Weekday::*;
    WeeklyRule::parse(
        [Mon, Tue, Wed, Thu, Fri],
        start,
        end,
        grid,
        d(2026, 1, 1),
        None,
    )
    .unwrap()
}
/// A night clinic on Sundays 01:00–04:00 wall-clock time, 30-minute grid:
/// it straddles both DST changes of 2026.
fn sunday_nights() -> WeeklyRule {
    WeeklyRule::parse([Weekday::Sun], t(1, 0), t(4, 0), 30, d(2026, 1, 1), None).unwrap()
}
/// A 30-minute consultation without buffers, bookable right away and up to 30 days ahead.
fn consult(p: PractitionerId) -> ServiceDetails {
    ServiceDetails::parse("Consultation", 30, 0, 0, 1, [p], 0, 30).unwrap()
}

// ---------------------------------------------------------------------------
// The event log: what the store holds.

#[derive(Debug, Clone)]
struct Stored {
    stream_id: String,
    version: i64,
    position: (i64, i64),
    event_id: Uuid,
    event_type: String,
    schema_version: i32,
    payload: Value,
    metadata: Value,
    recorded_at: DateTime<Utc>,
}

impl Stored {
    fn envelope(&self) -> Envelope<'_> {
        Envelope {
            stream_id: &self.stream_id,
            version: self.version,
            position: self.position,
            event_id: self.event_id,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            payload: &self.payload,
            metadata: &self.metadata,
            recorded_at: self.recorded_at,
        }
    }
    fn metadata(&self) -> EventMetadata {
        serde_json::from_value(self.metadata.clone()).unwrap()
    }
}

/// Who sends the next commands, and through what.
#[derive(Debug, Clone)]
struct Who {
    actor: Actor,
    source: Source,
    remote_addr: Option<String>,
    correlation_id: Uuid,
}

impl Who {
    fn new(id: &str, role: Role, source: Source, remote_addr: Option<&str>) -> Self {
        Who {
            actor: Actor {
                id: id.to_owned(),
                role,
            },
            source,
            remote_addr: remote_addr.map(str::to_owned),
            correlation_id: Uuid::new_v4(),
        }
    }
}

/// Events are recorded this long after the command was handled.
const RECORDING_LAG_MS: i64 = 250;

/// The write side in miniature: decides with the domain's functions over
/// state folded from the log, and appends what they decide.
struct World {
    tenant: TenantId,
    now: DateTime<Utc>,
    who: Who,
    log: Vec<Stored>,
    versions: HashMap<String, i64>,
    tx: i64,
    seq: i64,
}

impl World {
    fn new(now: DateTime<Utc>) -> Self {
        World {
            tenant: TenantId::new(),
            now,
            who: Who::new("admin-1", Role::Admin, Source::Admin, None),
            log: Vec::new(),
            versions: HashMap::new(),
            tx: 0,
            seq: 0,
        }
    }

    /// An aggregate as its stream stands.
    fn stream<A: Aggregate>(&self, stream: &str) -> A {
        let mut state = A::default();
        for e in self.log.iter().filter(|e| e.stream_id == stream) {
            let event =
                decode::<A::Event>(&e.event_type, e.schema_version, e.payload.clone()).unwrap();
            state.apply(&event);
        }
        state
    }

    /// Appends one command's events atomically; returns its transaction.
    fn append(&mut self, writes: Vec<(String, Vec<EncodedEvent>)>) -> i64 {
        self.tx += 1;
        let metadata = serde_json::to_value(EventMetadata {
            tenant: self.tenant,
            actor: self.who.actor.clone(),
            source: self.who.source,
            remote_addr: self.who.remote_addr.clone(),
            correlation_id: self.who.correlation_id,
            causation_id: Uuid::new_v4(),
            idempotency_key: None,
            occurred_at: self.now,
        })
        .unwrap();
        for (stream, events) in writes {
            for e in events {
                let version = self.versions.entry(stream.clone()).or_insert(0);
                *version += 1;
                self.seq += 1;
                self.log.push(Stored {
                    stream_id: stream.clone(),
                    version: *version,
                    position: (self.tx, self.seq),
                    event_id: Uuid::new_v4(),
                    event_type: e.event_type,
                    schema_version: e.schema_version,
                    payload: e.payload,
                    metadata: metadata.clone(),
                    recorded_at: self.now + Duration::milliseconds(RECORDING_LAG_MS),
                });
            }
        }
        self.tx
    }

    fn write<E: DomainEvent>(&mut self, stream: String, events: &[E]) {
        assert!(!events.is_empty(), "the command changed nothing");
        self.append(vec![(stream, events.iter().map(encode).collect())]);
    }

    fn commit(&mut self, id: AppointmentId, decision: Decision) {
        let mut writes: Vec<(String, Vec<EncodedEvent>)> = decision
            .calendar
            .into_iter()
            .filter(|(_, events)| !events.is_empty())
            .map(|(stream, events)| (stream, events.iter().map(encode).collect()))
            .collect();
        writes.push((
            stream_id::<Appointment>(id),
            vec![encode(&decision.appointment)],
        ));
        self.append(writes);
    }

    // Master data.

    fn register(&mut self, n: &str) -> PractitionerId {
        let id = PractitionerId::new();
        let events = Practitioner::default().register(id, doctor(n)).unwrap();
        self.write(stream_id::<Practitioner>(id), &events);
        id
    }
    fn update_practitioner(&mut self, id: PractitionerId, details: PractitionerDetails) {
        let p: Practitioner = self.stream(&stream_id::<Practitioner>(id));
        let events = p.update(id, details).unwrap();
        self.write(stream_id::<Practitioner>(id), &events);
    }
    fn set_practitioner_active(&mut self, id: PractitionerId, active: bool) {
        let p: Practitioner = self.stream(&stream_id::<Practitioner>(id));
        let events = p.set_active(id, active).unwrap();
        self.write(stream_id::<Practitioner>(id), &events);
    }
    fn define_service(&mut self, details: ServiceDetails) -> ServiceId {
        let id = ServiceId::new();
        let events = Service::default().define(id, details).unwrap();
        self.write(stream_id::<Service>(id), &events);
        id
    }
    fn update_service(&mut self, id: ServiceId, details: ServiceDetails) {
        let s: Service = self.stream(&stream_id::<Service>(id));
        let events = s.update(id, details).unwrap();
        self.write(stream_id::<Service>(id), &events);
    }
    fn set_rules(&mut self, p: PractitionerId, rules: Vec<WeeklyRule>) {
        let s: Schedule = self.stream(&stream_id::<Schedule>(p));
        let events = s.set_weekly_rules(p, AMS, rules).unwrap();
        self.write(stream_id::<Schedule>(p), &events);
    }
    fn add_exception(&mut self, p: PractitionerId, exception: ScheduleException) -> Uuid {
        let id = exception.id;
        let s: Schedule = self.stream(&stream_id::<Schedule>(p));
        let events = s.add_exception(p, AMS, exception).unwrap();
        self.write(stream_id::<Schedule>(p), &events);
        id
    }
    fn leave(&mut self, p: PractitionerId, date: NaiveDate, hours: Option<(u32, u32)>) -> Uuid {
        let (start, end) = match hours {
            Some((from, to)) => (Some(t(from, 0)), Some(t(to, 0))),
            None => (None, None),
        };
        let e =
            ScheduleException::unavailable(Uuid::new_v4(), date, start, end, Some(reason("leave")))
                .unwrap();
        self.add_exception(p, e)
    }
    fn extra_session(
        &mut self,
        p: PractitionerId,
        date: NaiveDate,
        start: NaiveTime,
        end: NaiveTime,
    ) -> Uuid {
        let e =
            ScheduleException::extra_session(Uuid::new_v4(), date, start, end, 30, None).unwrap();
        self.add_exception(p, e)
    }
    fn remove_exception(&mut self, p: PractitionerId, id: Uuid) {
        let s: Schedule = self.stream(&stream_id::<Schedule>(p));
        let events = s.remove_exception(p, id).unwrap();
        self.write(stream_id::<Schedule>(p), &events);
    }

    // Appointments.

    fn book(
        &mut self,
        p: PractitionerId,
        s: ServiceId,
        start: DateTime<Utc>,
        his_id: &str,
    ) -> DomainResult<AppointmentId> {
        self.book_noted(p, s, start, his_id, None)
    }

    fn book_noted(
        &mut self,
        p: PractitionerId,
        s: ServiceId,
        start: DateTime<Utc>,
        his_id: &str,
        note: Option<&str>,
    ) -> DomainResult<AppointmentId> {
        let practitioner: Practitioner = self.stream(&stream_id::<Practitioner>(p));
        let service: Service = self.stream(&stream_id::<Service>(s));
        let schedule: Schedule = self.stream(&stream_id::<Schedule>(p));
        let calendar: CalendarDay = self.stream(&booking::calendar_for(AMS, p, start));
        let id = AppointmentId::new();
        let ctx = BookingContext {
            time_zone: AMS,
            practitioner: &practitioner,
            service: &service,
            schedule: &schedule,
            now: self.now,
        };
        let decision = booking::book(
            &ctx,
            &Appointment::default(),
            &calendar,
            BookAppointment {
                appointment_id: id,
                practitioner_id: p,
                service_id: s,
                start,
                patient: patient(his_id),
                note: note.map(reason),
                his_appointment_id: None,
                overriding: None,
                reservation: None,
            },
        )?;
        self.commit(id, decision);
        Ok(id)
    }

    fn reschedule(
        &mut self,
        id: AppointmentId,
        start: DateTime<Utc>,
        why: Option<&str>,
    ) -> DomainResult<()> {
        let appointment: Appointment = self.stream(&stream_id::<Appointment>(id));
        let current = appointment.get(id)?.clone();
        let p = current.practitioner_id;
        let practitioner: Practitioner = self.stream(&stream_id::<Practitioner>(p));
        let service: Service = self.stream(&stream_id::<Service>(current.service_id));
        let schedule: Schedule = self.stream(&stream_id::<Schedule>(p));
        let old_stream = calendar_stream(p, current.calendar_day);
        let new_stream = booking::calendar_for(AMS, p, start);
        let old_calendar: CalendarDay = self.stream(&old_stream);
        let new_calendar: Option<CalendarDay> =
            (new_stream != old_stream).then(|| self.stream(&new_stream));
        let ctx = BookingContext {
            time_zone: AMS,
            practitioner: &practitioner,
            service: &service,
            schedule: &schedule,
            now: self.now,
        };
        let decision = booking::reschedule(
            &ctx,
            &appointment,
            &old_calendar,
            new_calendar.as_ref(),
            RescheduleAppointment {
                appointment_id: id,
                practitioner_id: None,
                start,
                reason: why.map(reason),
                overriding: None,
                reservation: None,
            },
        )?;
        self.commit(id, decision);
        Ok(())
    }

    fn cancel(&mut self, id: AppointmentId, why: &str, by: CancelledBy) -> DomainResult<()> {
        let appointment: Appointment = self.stream(&stream_id::<Appointment>(id));
        let current = appointment.get(id)?;
        let calendar: CalendarDay = self.stream(&calendar_stream(
            current.practitioner_id,
            current.calendar_day,
        ));
        let decision = booking::cancel(&appointment, &calendar, id, reason(why), by, None)?;
        self.commit(id, decision);
        Ok(())
    }

    /// Check-in, completion or no-show, decided at `now`.
    fn progress(
        &mut self,
        id: AppointmentId,
        decide: fn(&Appointment, AppointmentId, DateTime<Utc>) -> DomainResult<AppointmentEvent>,
    ) -> DomainResult<()> {
        let appointment: Appointment = self.stream(&stream_id::<Appointment>(id));
        let event = decide(&appointment, id, self.now)?;
        self.write(stream_id::<Appointment>(id), &[event]);
        Ok(())
    }

    // The read side.

    fn read(&self) -> ReadSide {
        ReadSide {
            catalog: fold::<Catalog>(&self.log),
            calendars: fold::<Calendars>(&self.log),
            appointments: fold::<Appointments>(&self.log),
            audit: fold::<AuditTrail>(&self.log),
        }
    }

    /// The slots offered at `now` on the local dates `from..=to`.
    fn slots(
        &self,
        p: PractitionerId,
        s: ServiceId,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Vec<FreeSlot> {
        self.read().slots(p, s, self.now, from, to)
    }
    fn slots_on(&self, p: PractitionerId, s: ServiceId, day: NaiveDate) -> Vec<FreeSlot> {
        self.slots(p, s, day, day)
    }
    fn agenda(&self, p: PractitionerId, from: NaiveDate, to: NaiveDate) -> Vec<AgendaDay> {
        self.read().agenda(p, from, to)
    }

    /// The stored event of `stream` at `version`.
    fn event(&self, stream: &str, version: i64) -> &Stored {
        self.log
            .iter()
            .find(|e| e.stream_id == stream && e.version == version)
            .unwrap()
    }
}

/// A clinic with Dr. A (registered in tx 1), the given weekly rules (tx 2)
/// and a 30-minute consultation without buffers (tx 3).
fn clinic(now: DateTime<Utc>, rules: Vec<WeeklyRule>) -> (World, PractitionerId, ServiceId) {
    let mut w = World::new(now);
    let p = w.register("Dr. A");
    w.set_rules(p, rules);
    let s = w.define_service(consult(p));
    (w, p, s)
}

// ---------------------------------------------------------------------------
// Folding, as the runner does it.

/// Loads every key the events name (none is stored yet), then applies them in order.
fn fold<P: Projection>(events: &[Stored]) -> DocMap<P::Doc> {
    let mut docs = DocMap::new();
    for e in events {
        for key in P::keys(&e.envelope()) {
            if !docs.knows(&key) {
                docs.loaded(key, None);
            }
        }
    }
    for e in events {
        P::apply(&e.envelope(), &mut docs)
            .unwrap_or_else(|err| panic!("{} cannot fold {e:?}: {err}", P::NAME));
    }
    docs
}

/// Stored rows: key → (index key, JSON document).
type Rows = BTreeMap<String, (Option<String>, String)>;

fn rows<P: Projection>(docs: &DocMap<P::Doc>) -> Rows {
    docs.iter()
        .map(|(k, doc)| {
            (
                k.to_owned(),
                (P::index_key(doc), serde_json::to_string(doc).unwrap()),
            )
        })
        .collect()
}

/// The runner without its cache: each batch loads the documents its events
/// name from the stored JSON, applies the batch, and writes back the changes.
fn fold_in_batches<P: Projection>(events: &[Stored], size: usize) -> Rows {
    let mut store = Rows::new();
    for batch in events.chunks(size) {
        let mut docs: DocMap<P::Doc> = DocMap::new();
        for e in batch {
            for key in P::keys(&e.envelope()) {
                if !docs.knows(&key) {
                    let doc = store
                        .get(&key)
                        .map(|(_, json)| serde_json::from_str::<P::Doc>(json).unwrap());
                    docs.loaded(key, doc);
                }
            }
        }
        for e in batch {
            P::apply(&e.envelope(), &mut docs).unwrap();
        }
        for (key, doc) in docs.changes() {
            match doc {
                Some(doc) => {
                    store.insert(
                        key.to_owned(),
                        (P::index_key(doc), serde_json::to_string(doc).unwrap()),
                    );
                }
                None => {
                    store.remove(key);
                }
            }
        }
    }
    store
}

/// The four read models, folded from the whole log.
struct ReadSide {
    catalog: DocMap<CatalogDoc>,
    calendars: DocMap<CalendarDay>,
    appointments: DocMap<AppointmentDoc>,
    audit: DocMap<AuditDoc>,
}

impl ReadSide {
    fn schedule(&self, p: PractitionerId) -> Schedule {
        match self.catalog.get(&schedule_key(p)) {
            Some(CatalogDoc::Schedule(s)) => s.clone(),
            other => panic!("no schedule for {p}: {other:?}"),
        }
    }
    fn service(&self, s: ServiceId) -> DefinedService {
        match self.catalog.get(&service_key(s)) {
            Some(CatalogDoc::Service(s)) => s.clone(),
            other => panic!("no service {s}: {other:?}"),
        }
    }
    fn practitioner(&self, p: PractitionerId) -> RegisteredPractitioner {
        match self.catalog.get(&practitioner_key(p)) {
            Some(CatalogDoc::Practitioner(p)) => p.clone(),
            other => panic!("no practitioner {p}: {other:?}"),
        }
    }
    /// The practitioner's calendar days, by local date (keys `<id>/<date>`).
    fn calendars(&self, p: PractitionerId) -> HashMap<NaiveDate, CalendarDay> {
        let prefix = format!("{p}/");
        self.calendars
            .iter()
            .filter_map(|(k, day)| {
                let date = k.strip_prefix(&prefix)?.parse().unwrap();
                Some((date, day.clone()))
            })
            .collect()
    }
    fn calendar(&self, p: PractitionerId, date: NaiveDate) -> &CalendarDay {
        self.calendars.get(&day_key(p, date)).unwrap()
    }
    fn slots(
        &self,
        p: PractitionerId,
        s: ServiceId,
        now: DateTime<Utc>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Vec<FreeSlot> {
        let service = self.service(s);
        free_slots(
            &self.schedule(p),
            s,
            &service.details,
            &self.calendars(p),
            now,
            from,
            to,
        )
    }
    fn agenda(&self, p: PractitionerId, from: NaiveDate, to: NaiveDate) -> Vec<AgendaDay> {
        agenda(&self.schedule(p), &self.calendars(p), from, to)
    }
    fn appointment(&self, id: AppointmentId) -> &AppointmentDoc {
        self.appointments.get(&id.to_string()).unwrap()
    }
    fn audit(&self, id: AppointmentId) -> &AuditDoc {
        self.audit.get(&id.to_string()).unwrap()
    }
}

// ---------------------------------------------------------------------------
// Available slots.

/// Monday 30 November 2026, 08:00Z; Tuesday 1 December is a plain CET day.
fn monday_morning() -> DateTime<Utc> {
    z(2026, 11, 30, 8, 0)
}

#[test]
fn a_normal_day_offers_every_grid_slot_and_each_is_bookable() {
    // Mon–Fri 09:00–12:00, 30-minute grid, 30-minute visits.
    let (mut w, p, s) = clinic(monday_morning(), vec![weekdays(t(9, 0), t(12, 0), 30)]);
    let tue = d(2026, 12, 1);
    // CET is UTC+1: 09:00 local = 08:00Z; the last visit must end by
    // 12:00 local = 11:00Z, so the last start is 10:30Z. Six slots.
    let expected = vec![
        free(z(2026, 12, 1, 8, 0), 30, 1),
        free(z(2026, 12, 1, 8, 30), 30, 1),
        free(z(2026, 12, 1, 9, 0), 30, 1),
        free(z(2026, 12, 1, 9, 30), 30, 1),
        free(z(2026, 12, 1, 10, 0), 30, 1),
        free(z(2026, 12, 1, 10, 30), 30, 1),
    ];
    assert_eq!(w.slots_on(p, s, tue), expected);
    assert_eq!(
        expected.iter().map(|x| wall(x.start)).collect::<Vec<_>>(),
        [
            "09:00 CET",
            "09:30 CET",
            "10:00 CET",
            "10:30 CET",
            "11:00 CET",
            "11:30 CET"
        ]
    );
    // The weekend has no rule.
    assert!(w.slots(p, s, d(2026, 12, 5), d(2026, 12, 6)).is_empty());
    // Tuesday to Sunday: four working days (Tue–Fri) × 6 slots = 24.
    assert_eq!(w.slots(p, s, tue, d(2026, 12, 6)).len(), 24);

    // Off the grid is refused by the write side.
    assert_eq!(
        w.book(p, s, z(2026, 12, 1, 8, 15), "P-1")
            .unwrap_err()
            .code(),
        "OUTSIDE_AVAILABILITY"
    );
    // Everything offered is accepted, and once all six are booked nothing is left.
    for (i, slot) in expected.iter().enumerate() {
        w.book(p, s, slot.start, &format!("P-{i}")).unwrap();
        assert_eq!(w.slots_on(p, s, tue), expected[i + 1..].to_vec());
    }
    assert_eq!(
        w.book(p, s, expected[0].start, "P-9").unwrap_err().code(),
        "SLOT_TAKEN"
    );
    // All six holds are on Tuesday's calendar document.
    assert_eq!(w.read().calendar(p, tue).holds.len(), 6);
}

#[test]
fn spring_forward_offers_real_instants_and_nothing_in_the_gap() {
    // Friday 27 March 2026, noon UTC; Sunday 29 March the clocks go forward.
    let (mut w, p, s) = clinic(z(2026, 3, 27, 12, 0), vec![sunday_nights()]);
    let sunday = d(2026, 3, 29);
    // 01:00 CET = 00:00Z. At 02:00 CET (01:00Z) the clock shows 03:00 CEST;
    // 04:00 CEST = 02:00Z. So 01:00–04:00 on the wall is two real hours:
    // four 30-minute slots, and no wall-clock 02:xx.
    let expected = vec![
        free(z(2026, 3, 29, 0, 0), 30, 1),
        free(z(2026, 3, 29, 0, 30), 30, 1),
        free(z(2026, 3, 29, 1, 0), 30, 1),
        free(z(2026, 3, 29, 1, 30), 30, 1),
    ];
    let slots = w.slots_on(p, s, sunday);
    assert_eq!(slots, expected);
    assert_strictly_increasing(&slots);
    assert_eq!(
        slots.iter().map(|x| wall(x.start)).collect::<Vec<_>>(),
        ["01:00 CET", "01:30 CET", "03:00 CEST", "03:30 CEST"]
    );
    // The 01:30 CET visit ends at 02:00 CET, which is the same instant as 03:00 CEST.
    assert_eq!(slots[1].end, slots[2].start);

    // A week later (all CEST, UTC+2): 01:00 = 23:00Z the day before, six slots.
    assert_eq!(
        starts(&w.slots_on(p, s, d(2026, 4, 5))),
        [
            z(2026, 4, 4, 23, 0),
            z(2026, 4, 4, 23, 30),
            z(2026, 4, 5, 0, 0),
            z(2026, 4, 5, 0, 30),
            z(2026, 4, 5, 1, 0),
            z(2026, 4, 5, 1, 30),
        ]
    );

    // An extra session "02:30–03:30" that day starts in the gap: it begins
    // when the clock jumps, 03:00 CEST = 01:00Z, and ends 03:30 CEST = 01:30Z.
    // Its one slot is the rule's 01:00Z slot: offered once, not twice.
    w.extra_session(p, sunday, t(2, 30), t(3, 30));
    assert_eq!(w.slots_on(p, s, sunday), expected);

    // Booking 01:30 CET takes exactly that instant; the rest stay.
    let a = w.book(p, s, z(2026, 3, 29, 0, 30), "P-1").unwrap();
    assert_eq!(
        starts(&w.slots_on(p, s, sunday)),
        [
            z(2026, 3, 29, 0, 0),
            z(2026, 3, 29, 1, 0),
            z(2026, 3, 29, 1, 30)
        ]
    );
    let read = w.read();
    assert_eq!(read.appointment(a).appointment.calendar_day, sunday);
    assert_eq!(read.calendar(p, sunday).holds.len(), 1);
}

#[test]
fn fall_back_offers_both_occurrences_of_the_repeated_hour_once_each() {
    // Friday 23 October 2026, noon UTC; Sunday 25 October the clocks go back.
    let (mut w, p, s) = clinic(z(2026, 10, 23, 12, 0), vec![sunday_nights()]);
    let sunday = d(2026, 10, 25);
    // 01:00 CEST (UTC+2) = 23:00Z on the 24th. At 03:00 CEST (01:00Z) the
    // clock goes back to 02:00 CET; 04:00 CET (UTC+1) = 03:00Z. Wall-clock
    // 01:00–04:00 is four real hours: eight slots, 02:00 and 02:30 twice
    // on the wall but at different instants.
    let expected_starts = [
        z(2026, 10, 24, 23, 0),
        z(2026, 10, 24, 23, 30),
        z(2026, 10, 25, 0, 0),
        z(2026, 10, 25, 0, 30),
        z(2026, 10, 25, 1, 0),
        z(2026, 10, 25, 1, 30),
        z(2026, 10, 25, 2, 0),
        z(2026, 10, 25, 2, 30),
    ];
    let slots = w.slots_on(p, s, sunday);
    assert_eq!(starts(&slots), expected_starts);
    assert_strictly_increasing(&slots);
    assert!(slots
        .iter()
        .all(|x| x.end == x.start + Duration::minutes(30)));
    assert_eq!(
        slots.iter().map(|x| wall(x.start)).collect::<Vec<_>>(),
        [
            "01:00 CEST",
            "01:30 CEST",
            "02:00 CEST",
            "02:30 CEST",
            "02:00 CET",
            "02:30 CET",
            "03:00 CET",
            "03:30 CET",
        ]
    );
    // The 23:00Z slot belongs to Sunday's local date, not to Saturday (which has no rule).
    assert!(w.slots_on(p, s, d(2026, 10, 24)).is_empty());

    // Book the first 02:30 (CEST, 00:30Z) and the first slot (23:00Z on the 24th).
    let first_0230 = w.book(p, s, z(2026, 10, 25, 0, 30), "P-1").unwrap();
    let first = w.book(p, s, z(2026, 10, 24, 23, 0), "P-2").unwrap();
    // The second 02:30 (CET, 01:30Z) is still free.
    assert_eq!(
        starts(&w.slots_on(p, s, sunday)),
        [
            z(2026, 10, 24, 23, 30),
            z(2026, 10, 25, 0, 0),
            z(2026, 10, 25, 1, 0),
            z(2026, 10, 25, 1, 30),
            z(2026, 10, 25, 2, 0),
            z(2026, 10, 25, 2, 30),
        ]
    );
    // Both are held on the 25 October calendar, including the one at 23:00Z on the 24th.
    let read = w.read();
    assert_eq!(read.appointment(first).appointment.calendar_day, sunday);
    assert_eq!(
        read.appointment(first_0230).appointment.calendar_day,
        sunday
    );
    assert_eq!(read.calendar(p, sunday).holds.len(), 2);
    assert!(read.calendars.get(&day_key(p, d(2026, 10, 24))).is_none());
    // And the second 02:30 can be booked too.
    w.book(p, s, z(2026, 10, 25, 1, 30), "P-3").unwrap();
}

#[test]
fn buffers_block_the_neighbouring_slots() {
    // Tuesday 09:00–12:00 (08:00Z–11:00Z) on a 15-minute grid: 30-minute
    // visits can start 08:00Z, 08:15Z, ..., 10:30Z (11 starts).
    let (mut w, p, quick) = clinic(monday_morning(), vec![weekdays(t(9, 0), t(12, 0), 15)]);
    let tue = d(2026, 12, 1);
    // A procedure: 30 minutes, 15 before and 15 after.
    let procedure =
        w.define_service(ServiceDetails::parse("Procedure", 30, 15, 15, 1, [p], 0, 30).unwrap());
    let all: Vec<_> = (0..11)
        .map(|i| z(2026, 12, 1, 8, 0) + Duration::minutes(15 * i))
        .collect();
    assert_eq!(starts(&w.slots_on(p, procedure, tue)), all);
    assert_eq!(starts(&w.slots_on(p, quick, tue)), all);

    // A procedure at 09:00Z occupies 08:45Z–09:45Z.
    w.book(p, procedure, z(2026, 12, 1, 9, 0), "P-1").unwrap();
    // Another procedure at s occupies [s-15, s+45): it clashes when
    // s-15 < 09:45 and s+45 > 08:45, i.e. 08:00 < s < 10:00. Left: 08:00
    // (occupies 07:45–08:45, touching) and 10:00 (09:45–10:45, touching) on.
    assert_eq!(
        starts(&w.slots_on(p, procedure, tue)),
        [
            z(2026, 12, 1, 8, 0),
            z(2026, 12, 1, 10, 0),
            z(2026, 12, 1, 10, 15),
            z(2026, 12, 1, 10, 30),
        ]
    );
    // A quick visit at s occupies [s, s+30): clashes when s < 09:45 and
    // s+30 > 08:45, i.e. 08:15 < s < 09:45. Left: 08:00, 08:15, 09:45 on.
    // 08:30 and 09:30 are lost to the procedure's buffers alone.
    assert_eq!(
        starts(&w.slots_on(p, quick, tue)),
        [
            z(2026, 12, 1, 8, 0),
            z(2026, 12, 1, 8, 15),
            z(2026, 12, 1, 9, 45),
            z(2026, 12, 1, 10, 0),
            z(2026, 12, 1, 10, 15),
            z(2026, 12, 1, 10, 30),
        ]
    );
    // The write side agrees: 09:45Z is taken for a procedure, free for a quick visit.
    assert_eq!(
        w.book(p, procedure, z(2026, 12, 1, 9, 45), "P-2")
            .unwrap_err()
            .code(),
        "SLOT_TAKEN"
    );
    assert_eq!(
        w.book(p, quick, z(2026, 12, 1, 9, 30), "P-2")
            .unwrap_err()
            .code(),
        "SLOT_TAKEN"
    );
    w.book(p, quick, z(2026, 12, 1, 9, 45), "P-2").unwrap();
    // Now 08:45Z–10:15Z is occupied: a procedure clashes when
    // s-15 < 10:15 and s+45 > 08:45, i.e. 08:00 < s < 10:30.
    assert_eq!(
        starts(&w.slots_on(p, procedure, tue)),
        [z(2026, 12, 1, 8, 0), z(2026, 12, 1, 10, 30)]
    );

    // The agenda shows each booking with its buffers, and free time around them.
    let day = &w.agenda(p, tue, tue)[0];
    assert_eq!(
        day.working,
        [iv(z(2026, 12, 1, 8, 0), z(2026, 12, 1, 11, 0))]
    );
    let occupied: Vec<_> = day.booked.iter().map(|b| b.occupied.clone()).collect();
    assert_eq!(
        occupied,
        [
            iv(z(2026, 12, 1, 8, 45), z(2026, 12, 1, 9, 45)),
            iv(z(2026, 12, 1, 9, 45), z(2026, 12, 1, 10, 15)),
        ]
    );
    assert_eq!(
        day.free,
        [
            iv(z(2026, 12, 1, 8, 0), z(2026, 12, 1, 8, 45)),
            iv(z(2026, 12, 1, 10, 15), z(2026, 12, 1, 11, 0)),
        ]
    );
}

#[test]
fn a_group_session_counts_down_and_disappears_when_full() {
    // Wednesday 2 December 14:00–16:00 CET = 13:00Z–15:00Z, 60-minute grid.
    let wed_rule =
        WeeklyRule::parse([Weekday::Wed], t(14, 0), t(16, 0), 60, d(2026, 1, 1), None).unwrap();
    let (mut w, p, consult) = clinic(monday_morning(), vec![wed_rule]);
    let wed = d(2026, 12, 2);
    let class =
        w.define_service(ServiceDetails::parse("Diabetes class", 60, 0, 0, 3, [p], 0, 30).unwrap());
    let one = z(2026, 12, 2, 13, 0);
    let two = z(2026, 12, 2, 14, 0);
    assert_eq!(
        w.slots_on(p, class, wed),
        [free(one, 60, 3), free(two, 60, 3)]
    );

    let a = w.book(p, class, one, "P-1").unwrap();
    assert_eq!(
        w.slots_on(p, class, wed),
        [free(one, 60, 2), free(two, 60, 3)]
    );
    // A consultation cannot share the group's hour: only 14:00Z is left for it
    // (30-minute visits on the 60-minute grid start at 13:00Z and 14:00Z).
    assert_eq!(w.slots_on(p, consult, wed), [free(two, 30, 1)]);

    let b = w.book(p, class, one, "P-2").unwrap();
    assert_eq!(
        w.slots_on(p, class, wed),
        [free(one, 60, 1), free(two, 60, 3)]
    );
    w.book(p, class, one, "P-3").unwrap();
    // Full: 13:00Z is no longer offered, and a fourth booking is refused.
    assert_eq!(w.slots_on(p, class, wed), [free(two, 60, 3)]);
    assert_eq!(
        w.book(p, class, one, "P-4").unwrap_err().code(),
        "SLOT_TAKEN"
    );

    // One cancels: a place opens again.
    w.cancel(b, "cannot come", CancelledBy::Patient).unwrap();
    assert_eq!(
        w.slots_on(p, class, wed),
        [free(one, 60, 1), free(two, 60, 3)]
    );
    w.book(p, class, one, "P-4").unwrap();
    assert_eq!(w.slots_on(p, class, wed), [free(two, 60, 3)]);

    // The agenda lists the three participants, each occupying 13:00Z–14:00Z.
    let day = &w.agenda(p, wed, wed)[0];
    assert_eq!(day.booked.len(), 3);
    assert!(day
        .booked
        .iter()
        .all(|x| x.occupied == iv(one, two) && x.service_id == class));
    assert!(day.booked.iter().any(|x| x.appointment_id == a));
    assert!(!day.booked.iter().any(|x| x.appointment_id == b));
    assert_eq!(day.free, [iv(two, z(2026, 12, 2, 15, 0))]);
}

#[test]
fn schedule_exceptions_remove_and_add_time() {
    let (mut w, p, s) = clinic(monday_morning(), vec![weekdays(t(9, 0), t(12, 0), 30)]);
    // Tuesday: unavailable 10:00–11:00 CET (09:00Z–10:00Z). The slots at
    // 09:00Z and 09:30Z overlap it; 08:00Z, 08:30Z, 10:00Z, 10:30Z remain.
    w.leave(p, d(2026, 12, 1), Some((10, 11)));
    // Thursday: unavailable all day.
    let thursday_leave = w.leave(p, d(2026, 12, 3), None);
    // Saturday (no rule): an extra session 10:00–11:00 CET = 09:00Z–10:00Z.
    w.extra_session(p, d(2026, 12, 5), t(10, 0), t(11, 0));
    // Friday: on leave all day, but an extra session 13:00–14:00 CET
    // (12:00Z–13:00Z) is booked on purpose and still offered.
    w.leave(p, d(2026, 12, 4), None);
    w.extra_session(p, d(2026, 12, 4), t(13, 0), t(14, 0));

    assert_eq!(
        starts(&w.slots_on(p, s, d(2026, 12, 1))),
        [
            z(2026, 12, 1, 8, 0),
            z(2026, 12, 1, 8, 30),
            z(2026, 12, 1, 10, 0),
            z(2026, 12, 1, 10, 30),
        ]
    );
    // Wednesday is untouched: six slots.
    assert_eq!(w.slots_on(p, s, d(2026, 12, 2)).len(), 6);
    assert!(w.slots_on(p, s, d(2026, 12, 3)).is_empty());
    assert_eq!(
        starts(&w.slots_on(p, s, d(2026, 12, 4))),
        [z(2026, 12, 4, 12, 0), z(2026, 12, 4, 12, 30)]
    );
    assert_eq!(
        starts(&w.slots_on(p, s, d(2026, 12, 5))),
        [z(2026, 12, 5, 9, 0), z(2026, 12, 5, 9, 30)]
    );
    // The leave is refused by the write side too, the extra session accepted.
    assert_eq!(
        w.book(p, s, z(2026, 12, 1, 9, 0), "P-1")
            .unwrap_err()
            .code(),
        "OUTSIDE_AVAILABILITY"
    );
    w.book(p, s, z(2026, 12, 5, 9, 30), "P-1").unwrap();
    assert_eq!(
        starts(&w.slots_on(p, s, d(2026, 12, 5))),
        [z(2026, 12, 5, 9, 0)]
    );

    // The agenda: working time is the rules minus leave, plus extra sessions.
    let days = w.agenda(p, d(2026, 12, 1), d(2026, 12, 5));
    assert_eq!(
        days.iter().map(|x| x.date).collect::<Vec<_>>(),
        (1..=5).map(|n| d(2026, 12, n)).collect::<Vec<_>>()
    );
    assert_eq!(
        days[0].working,
        [
            iv(z(2026, 12, 1, 8, 0), z(2026, 12, 1, 9, 0)),
            iv(z(2026, 12, 1, 10, 0), z(2026, 12, 1, 11, 0)),
        ]
    );
    assert_eq!(days[0].free, days[0].working);
    assert_eq!(
        days[1].working,
        [iv(z(2026, 12, 2, 8, 0), z(2026, 12, 2, 11, 0))]
    );
    assert!(days[2].working.is_empty() && days[2].free.is_empty());
    assert_eq!(
        days[3].working,
        [iv(z(2026, 12, 4, 12, 0), z(2026, 12, 4, 13, 0))]
    );
    assert_eq!(
        days[4].working,
        [iv(z(2026, 12, 5, 9, 0), z(2026, 12, 5, 10, 0))]
    );
    assert_eq!(
        days[4].free,
        [iv(z(2026, 12, 5, 9, 0), z(2026, 12, 5, 9, 30))]
    );

    // Taking back Thursday's leave gives its six slots back.
    w.remove_exception(p, thursday_leave);
    assert_eq!(
        starts(&w.slots_on(p, s, d(2026, 12, 3))),
        (0..6)
            .map(|i| z(2026, 12, 3, 8, 0) + Duration::minutes(30 * i))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_cancellation_frees_the_slot_again() {
    let (mut w, p, s) = clinic(monday_morning(), vec![weekdays(t(9, 0), t(12, 0), 30)]);
    let tue = d(2026, 12, 1);
    let all = starts(&w.slots_on(p, s, tue));
    let a = w.book(p, s, z(2026, 12, 1, 8, 30), "P-1").unwrap();
    assert_eq!(
        starts(&w.slots_on(p, s, tue)),
        [
            z(2026, 12, 1, 8, 0),
            z(2026, 12, 1, 9, 0),
            z(2026, 12, 1, 9, 30),
            z(2026, 12, 1, 10, 0),
            z(2026, 12, 1, 10, 30),
        ]
    );
    w.cancel(a, "feeling better", CancelledBy::Patient).unwrap();
    assert_eq!(starts(&w.slots_on(p, s, tue)), all);
    let read = w.read();
    // The calendar day stays, empty; the appointment is cancelled.
    assert!(read.calendar(p, tue).holds.is_empty());
    assert_eq!(
        read.appointment(a).appointment.status,
        AppointmentStatus::Cancelled
    );
    // Someone else can have the time now; a second cancellation is refused.
    w.book(p, s, z(2026, 12, 1, 8, 30), "P-2").unwrap();
    assert_eq!(
        w.cancel(a, "again", CancelledBy::Patient)
            .unwrap_err()
            .code(),
        "INVALID_TRANSITION"
    );
}

#[test]
fn a_reschedule_frees_the_old_time_and_takes_the_new() {
    let (mut w, p, s) = clinic(monday_morning(), vec![weekdays(t(9, 0), t(12, 0), 30)]);
    let (tue, wed) = (d(2026, 12, 1), d(2026, 12, 2));
    let tue_all = starts(&w.slots_on(p, s, tue));
    let a = w.book(p, s, z(2026, 12, 1, 8, 0), "P-1").unwrap();

    // Within the day: 08:00Z -> 09:30Z.
    w.reschedule(a, z(2026, 12, 1, 9, 30), Some("later please"))
        .unwrap();
    assert_eq!(
        starts(&w.slots_on(p, s, tue)),
        [
            z(2026, 12, 1, 8, 0),
            z(2026, 12, 1, 8, 30),
            z(2026, 12, 1, 9, 0),
            z(2026, 12, 1, 10, 0),
            z(2026, 12, 1, 10, 30),
        ]
    );
    let read = w.read();
    let hold = &read.calendar(p, tue).holds[&a];
    assert_eq!(
        (hold.start, hold.end),
        (z(2026, 12, 1, 9, 30), z(2026, 12, 1, 10, 0))
    );

    // To another day: Wednesday 11:00 CET = 10:00Z. Tuesday is whole again.
    w.reschedule(a, z(2026, 12, 2, 10, 0), None).unwrap();
    assert_eq!(starts(&w.slots_on(p, s, tue)), tue_all);
    assert_eq!(
        starts(&w.slots_on(p, s, wed)),
        [
            z(2026, 12, 2, 8, 0),
            z(2026, 12, 2, 8, 30),
            z(2026, 12, 2, 9, 0),
            z(2026, 12, 2, 9, 30),
            z(2026, 12, 2, 10, 30),
        ]
    );
    let read = w.read();
    assert!(read.calendar(p, tue).holds.is_empty());
    assert_eq!(
        read.calendar(p, wed)
            .holds
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [a]
    );
    let doc = &read.appointment(a).appointment;
    assert_eq!(
        (doc.start, doc.end, doc.calendar_day, doc.status),
        (
            z(2026, 12, 2, 10, 0),
            z(2026, 12, 2, 10, 30),
            wed,
            AppointmentStatus::Booked
        )
    );
    // Moving onto a taken time is refused, and nothing changes.
    let b = w.book(p, s, z(2026, 12, 2, 8, 0), "P-2").unwrap();
    assert_eq!(
        w.reschedule(b, z(2026, 12, 2, 10, 0), None)
            .unwrap_err()
            .code(),
        "SLOT_TAKEN"
    );
}

#[test]
fn min_notice_and_max_advance_bound_what_is_offered() {
    let (mut w, p, _) = clinic(monday_morning(), vec![weekdays(t(9, 0), t(12, 0), 30)]);
    // 2 hours' notice, at most 2 days ahead.
    let s = w.define_service(ServiceDetails::parse("Scan", 30, 0, 0, 1, [p], 120, 2).unwrap());
    // Now: Tuesday 1 December 08:00Z (09:00 CET).
    w.now = z(2026, 12, 1, 8, 0);
    // earliest = 08:00Z + 2h = 10:00Z (inclusive); latest = Thursday 3 December 08:00Z (inclusive).
    // Tuesday: 08:00Z is now (not offered), 08:30Z–09:30Z are inside the notice: 10:00Z, 10:30Z.
    // Wednesday: all six. Thursday: only 08:00Z. Friday: beyond the window.
    let expected = [
        z(2026, 12, 1, 10, 0),
        z(2026, 12, 1, 10, 30),
        z(2026, 12, 2, 8, 0),
        z(2026, 12, 2, 8, 30),
        z(2026, 12, 2, 9, 0),
        z(2026, 12, 2, 9, 30),
        z(2026, 12, 2, 10, 0),
        z(2026, 12, 2, 10, 30),
        z(2026, 12, 3, 8, 0),
    ];
    assert_eq!(
        starts(&w.slots(p, s, d(2026, 11, 30), d(2026, 12, 4))),
        expected
    );
    // One minute later both bounds move: 10:00Z is inside the notice (earliest
    // 10:01Z) and Thursday 08:00Z is still within the window (latest 08:01Z).
    w.now = z(2026, 12, 1, 8, 1);
    assert_eq!(
        starts(&w.slots(p, s, d(2026, 11, 30), d(2026, 12, 4))),
        expected[1..]
    );
    w.now = z(2026, 12, 1, 8, 0);
    // The write side agrees at the edges.
    assert_eq!(
        w.book(p, s, z(2026, 12, 1, 8, 0), "P-1")
            .unwrap_err()
            .code(),
        "IN_THE_PAST"
    );
    assert_eq!(
        w.book(p, s, z(2026, 12, 1, 9, 30), "P-1")
            .unwrap_err()
            .code(),
        "INSIDE_MINIMUM_NOTICE"
    );
    assert_eq!(
        w.book(p, s, z(2026, 12, 3, 8, 30), "P-1")
            .unwrap_err()
            .code(),
        "BEYOND_BOOKING_WINDOW"
    );
    w.book(p, s, z(2026, 12, 1, 10, 0), "P-1").unwrap();
    w.book(p, s, z(2026, 12, 3, 8, 0), "P-2").unwrap();
    assert_eq!(
        starts(&w.slots(p, s, d(2026, 11, 30), d(2026, 12, 4))),
        expected[1..8]
    );
}

// ---------------------------------------------------------------------------
// The practitioner's agenda.

#[test]
fn agenda_is_working_time_minus_leave_and_occupied_time() {
    let (mut w, p, _) = clinic(monday_morning(), vec![weekdays(t(9, 0), t(12, 0), 15)]);
    let s = w.define_service(ServiceDetails::parse("Check-up", 30, 5, 10, 1, [p], 0, 30).unwrap());
    let tue = d(2026, 12, 1);
    // Leave 10:30–11:00 CET = 09:30Z–10:00Z.
    w.leave_minutes(p, tue, t(10, 30), t(11, 0));
    // 08:15Z occupies 08:10Z–08:55Z (5 before, 10 after).
    let a = w.book(p, s, z(2026, 12, 1, 8, 15), "P-1").unwrap();
    // 10:00Z (11:00 CET, right after the leave) occupies 09:55Z–10:40Z; its
    // before-buffer lies in the leave, which is allowed.
    let b = w.book(p, s, z(2026, 12, 1, 10, 0), "P-2").unwrap();

    let days = w.agenda(p, tue, d(2026, 12, 2));
    assert_eq!(days.len(), 2);
    let day = &days[0];
    assert_eq!(day.date, tue);
    // Working: 08:00Z–11:00Z minus 09:30Z–10:00Z.
    assert_eq!(
        day.working,
        [
            iv(z(2026, 12, 1, 8, 0), z(2026, 12, 1, 9, 30)),
            iv(z(2026, 12, 1, 10, 0), z(2026, 12, 1, 11, 0)),
        ]
    );
    assert_eq!(
        day.booked,
        [
            BookedTime {
                appointment_id: a,
                service_id: s,
                start: z(2026, 12, 1, 8, 15),
                end: z(2026, 12, 1, 8, 45),
                occupied: iv(z(2026, 12, 1, 8, 10), z(2026, 12, 1, 8, 55)),
            },
            BookedTime {
                appointment_id: b,
                service_id: s,
                start: z(2026, 12, 1, 10, 0),
                end: z(2026, 12, 1, 10, 30),
                occupied: iv(z(2026, 12, 1, 9, 55), z(2026, 12, 1, 10, 40)),
            },
        ]
    );
    // Free: [08:00, 09:30) minus [08:10, 08:55) = [08:00, 08:10), [08:55, 09:30);
    // [10:00, 11:00) minus [09:55, 10:40) = [10:40, 11:00).
    assert_eq!(
        day.free,
        [
            iv(z(2026, 12, 1, 8, 0), z(2026, 12, 1, 8, 10)),
            iv(z(2026, 12, 1, 8, 55), z(2026, 12, 1, 9, 30)),
            iv(z(2026, 12, 1, 10, 40), z(2026, 12, 1, 11, 0)),
        ]
    );
    // Wednesday: nothing booked, all of 08:00Z–11:00Z free.
    assert_eq!(
        days[1],
        AgendaDay {
            date: d(2026, 12, 2),
            working: vec![iv(z(2026, 12, 2, 8, 0), z(2026, 12, 2, 11, 0))],
            booked: vec![],
            free: vec![iv(z(2026, 12, 2, 8, 0), z(2026, 12, 2, 11, 0))],
        }
    );
    // A cancelled booking leaves the agenda.
    w.cancel(a, "ill", CancelledBy::Practitioner).unwrap();
    let day = &w.agenda(p, tue, tue)[0];
    assert_eq!(day.booked.len(), 1);
    assert_eq!(
        day.free,
        [
            iv(z(2026, 12, 1, 8, 0), z(2026, 12, 1, 9, 30)),
            iv(z(2026, 12, 1, 10, 40), z(2026, 12, 1, 11, 0)),
        ]
    );
}

#[test]
fn agenda_across_dst_days_counts_real_time() {
    let (mut w, p, _) = clinic(z(2026, 3, 27, 12, 0), vec![sunday_nights()]);
    // 30 minutes plus 10 after, bookable up to a year ahead.
    let s =
        w.define_service(ServiceDetails::parse("Night visit", 30, 0, 10, 1, [p], 0, 365).unwrap());
    let spring = d(2026, 3, 29);
    let fall = d(2026, 10, 25);
    // Spring: leave 03:00–03:30 CEST = 01:00Z–01:30Z.
    w.leave_minutes(p, spring, t(3, 0), t(3, 30));
    // 01:00 CET = 00:00Z, occupies 00:00Z–00:40Z.
    let a = w.book(p, s, z(2026, 3, 29, 0, 0), "P-1").unwrap();
    // Fall: the second 02:30 (CET) = 01:30Z, occupies 01:30Z–02:10Z.
    let b = w.book(p, s, z(2026, 10, 25, 1, 30), "P-2").unwrap();

    let days = w.agenda(p, spring, spring);
    let day = &days[0];
    // 01:00 CET–04:00 CEST is 00:00Z–02:00Z; minus the leave 01:00Z–01:30Z.
    // 1.5 real hours of work although the wall clock spans 3 h minus 30 min.
    assert_eq!(
        day.working,
        [
            iv(z(2026, 3, 29, 0, 0), z(2026, 3, 29, 1, 0)),
            iv(z(2026, 3, 29, 1, 30), z(2026, 3, 29, 2, 0)),
        ]
    );
    assert_eq!(day.booked.len(), 1);
    assert_eq!(day.booked[0].appointment_id, a);
    assert_eq!(
        day.booked[0].occupied,
        iv(z(2026, 3, 29, 0, 0), z(2026, 3, 29, 0, 40))
    );
    assert_eq!(
        day.free,
        [
            iv(z(2026, 3, 29, 0, 40), z(2026, 3, 29, 1, 0)),
            iv(z(2026, 3, 29, 1, 30), z(2026, 3, 29, 2, 0)),
        ]
    );

    let days = w.agenda(p, d(2026, 10, 24), fall);
    // Saturday: no rule.
    assert!(days[0].working.is_empty() && days[0].booked.is_empty());
    let day = &days[1];
    // 01:00 CEST (23:00Z the 24th) to 04:00 CET (03:00Z): four real hours.
    assert_eq!(
        day.working,
        [iv(z(2026, 10, 24, 23, 0), z(2026, 10, 25, 3, 0))]
    );
    assert_eq!(day.booked.len(), 1);
    assert_eq!(day.booked[0].appointment_id, b);
    assert_eq!(
        (day.booked[0].start, day.booked[0].end),
        (z(2026, 10, 25, 1, 30), z(2026, 10, 25, 2, 0))
    );
    assert_eq!(wall(day.booked[0].start), "02:30 CET");
    assert_eq!(
        day.free,
        [
            iv(z(2026, 10, 24, 23, 0), z(2026, 10, 25, 1, 30)),
            iv(z(2026, 10, 25, 2, 10), z(2026, 10, 25, 3, 0)),
        ]
    );
}

impl World {
    fn leave_minutes(
        &mut self,
        p: PractitionerId,
        date: NaiveDate,
        start: NaiveTime,
        end: NaiveTime,
    ) {
        let e = ScheduleException::unavailable(Uuid::new_v4(), date, Some(start), Some(end), None)
            .unwrap();
        self.add_exception(p, e);
    }
}

// ---------------------------------------------------------------------------
// A patient's history.

#[test]
fn patient_history_tracks_each_appointment_through_its_lifecycle() {
    // tx 1 registers Dr. A (seq 1), tx 2 sets the rules (seq 2), tx 3 defines
    // the service (seq 3). Each booking is then one tx with two events: the
    // calendar's hold, then the appointment's booking.
    let (mut w, p, s) = clinic(monday_morning(), vec![weekdays(t(9, 0), t(12, 0), 30)]);
    // tx 4 (seq 4, 5), booked Mon 08:00Z.
    let a = w.book(p, s, z(2026, 12, 1, 8, 0), "HIS-42").unwrap();
    // tx 5 (seq 6, 7), booked Mon 08:05Z.
    w.now = z(2026, 11, 30, 8, 5);
    let b = w.book(p, s, z(2026, 12, 1, 9, 0), "HIS-42").unwrap();
    // tx 6 (seq 8, 9), booked Mon 08:10Z, on Wednesday.
    w.now = z(2026, 11, 30, 8, 10);
    let c = w.book(p, s, z(2026, 12, 2, 8, 0), "HIS-42").unwrap();
    // tx 7 (seq 10, 11): another patient.
    w.now = z(2026, 11, 30, 8, 15);
    let other = w.book(p, s, z(2026, 12, 1, 10, 0), "HIS-7").unwrap();

    let read = w.read();
    let doc = read.appointment(a);
    assert_eq!(doc.appointment.status, AppointmentStatus::Booked);
    assert_eq!(
        (doc.booked_at, doc.updated_at),
        (z(2026, 11, 30, 8, 0), z(2026, 11, 30, 8, 0))
    );
    assert_eq!((doc.version, doc.position.as_str()), (1, "4.5"));
    assert_eq!(
        doc.appointment,
        BookedAppointment {
            id: a,
            practitioner_id: p,
            service_id: s,
            start: z(2026, 12, 1, 8, 0),
            end: z(2026, 12, 1, 8, 30),
            calendar_day: d(2026, 12, 1),
            patient: patient("HIS-42"),
            note: None,
            his_appointment_id: None,
            status: AppointmentStatus::Booked,
            cancellation: None,
            cancellation_code: None,
        }
    );
    assert_eq!(read.appointment(other).position, "7.11");

    // tx 8 (calendar release seq 12, appointment seq 13), Mon 09:00Z: A cancelled.
    w.now = z(2026, 11, 30, 9, 0);
    w.cancel(a, "moved abroad", CancelledBy::Patient).unwrap();
    // tx 9 (seq 14), Tue 07:30Z (check-in opens 2 h before 09:00Z): B checked in.
    w.now = z(2026, 12, 1, 7, 30);
    w.progress(b, Appointment::check_in).unwrap();
    let checked_in = w.read().appointment(b).clone();
    assert_eq!(checked_in.appointment.status, AppointmentStatus::CheckedIn);
    assert_eq!(
        (checked_in.version, checked_in.position.as_str()),
        (2, "9.14")
    );
    // tx 10 (seq 15), Tue 09:25Z: B completed.
    w.now = z(2026, 12, 1, 9, 25);
    w.progress(b, Appointment::complete).unwrap();
    // tx 11 (seq 16), Wed 08:20Z: C did not show up.
    w.now = z(2026, 12, 2, 8, 20);
    w.progress(c, Appointment::mark_no_show).unwrap();

    let read = w.read();
    let (doc_a, doc_b, doc_c) = (
        read.appointment(a),
        read.appointment(b),
        read.appointment(c),
    );
    assert_eq!(doc_a.appointment.status, AppointmentStatus::Cancelled);
    assert_eq!(
        doc_a.appointment.cancellation,
        Some((reason("moved abroad"), CancelledBy::Patient))
    );
    assert_eq!(
        (
            doc_a.booked_at,
            doc_a.updated_at,
            doc_a.version,
            doc_a.position.as_str()
        ),
        (z(2026, 11, 30, 8, 0), z(2026, 11, 30, 9, 0), 2, "8.13")
    );
    assert_eq!(doc_b.appointment.status, AppointmentStatus::Completed);
    assert_eq!(
        (
            doc_b.booked_at,
            doc_b.updated_at,
            doc_b.version,
            doc_b.position.as_str()
        ),
        (z(2026, 11, 30, 8, 5), z(2026, 12, 1, 9, 25), 3, "10.15")
    );
    assert_eq!(doc_c.appointment.status, AppointmentStatus::NoShow);
    assert_eq!(
        (
            doc_c.booked_at,
            doc_c.updated_at,
            doc_c.version,
            doc_c.position.as_str()
        ),
        (z(2026, 11, 30, 8, 10), z(2026, 12, 2, 8, 20), 2, "11.16")
    );
    // The other patient's appointment did not move.
    let doc_other = read.appointment(other);
    assert_eq!(
        (
            doc_other.appointment.status,
            doc_other.version,
            doc_other.position.as_str()
        ),
        (AppointmentStatus::Booked, 1, "7.11")
    );

    // The patient index finds exactly HIS-42's three appointments.
    assert_eq!(patient_index("HIS-42"), "patient/HIS-42");
    let mut history: Vec<String> = read
        .appointments
        .iter()
        .filter(|(_, doc)| Appointments::index_key(doc).as_deref() == Some("patient/HIS-42"))
        .map(|(k, _)| k.to_owned())
        .collect();
    history.sort();
    let mut want = vec![a.to_string(), b.to_string(), c.to_string()];
    want.sort();
    assert_eq!(history, want);
    assert_eq!(
        Appointments::index_key(doc_other).as_deref(),
        Some("patient/HIS-7")
    );
    // Only appointment streams make appointment documents.
    assert_eq!(read.appointments.iter().count(), 4);
    // A finished appointment cannot change any more.
    assert_eq!(
        w.progress(b, Appointment::check_in).unwrap_err().code(),
        "INVALID_TRANSITION"
    );
}

#[test]
fn a_booking_stored_in_the_old_schema_folds_like_a_current_one() {
    let (mut w, p, s) = clinic(monday_morning(), vec![weekdays(t(9, 0), t(12, 0), 30)]);
    let a = w.book(p, s, z(2026, 12, 1, 8, 0), "HIS-42").unwrap();
    w.now = z(2026, 11, 30, 9, 0);
    w.cancel(a, "moved abroad", CancelledBy::Patient).unwrap();
    // Rewrite the booking as schema version 1 stored it: the patient as two
    // flat fields instead of `patient`.
    let mut old = w.log.clone();
    let booked = old
        .iter_mut()
        .find(|e| e.event_type == "AppointmentBooked")
        .unwrap();
    assert_eq!(booked.schema_version, 2);
    let fields = booked.payload.as_object_mut().unwrap();
    assert_eq!(
        fields.remove("patient"),
        Some(
            json!({"his_patient_id": "HIS-42", "name": "Patient HIS-42", "phone": null, "email": null})
        )
    );
    fields.insert("patient_id".into(), json!("HIS-42"));
    fields.insert("patient_name".into(), json!("Patient HIS-42"));
    booked.schema_version = 1;
    let v1_payload = booked.payload.clone();
    // The appointment document is the same, byte for byte.
    assert_eq!(
        rows::<Appointments>(&fold::<Appointments>(&old)),
        rows::<Appointments>(&fold::<Appointments>(&w.log))
    );
    // The audit trail keeps the event as stored.
    let audit = fold::<AuditTrail>(&old);
    let entry = &audit.get(&a.to_string()).unwrap().entries[0];
    assert_eq!((entry.schema_version, &entry.data), (1, &v1_payload));
}

// ---------------------------------------------------------------------------
// The audit trail.

#[test]
fn audit_trail_records_who_when_where_and_why_once_per_event() {
    let (mut w, p, s) = clinic(monday_morning(), vec![weekdays(t(9, 0), t(12, 0), 30)]);
    let desk = Who::new("desk-anna", Role::Staff, Source::Admin, Some("10.1.2.3"));
    let his = Who::new("his-gateway", Role::HisSystem, Source::HisApi, None);
    let portal = Who::new("portal", Role::Staff, Source::Widget, Some("203.0.113.9"));

    // tx 4: hold seq 4, booking seq 5.
    w.who = desk.clone();
    let a = w
        .book_noted(p, s, z(2026, 12, 1, 8, 0), "HIS-42", Some("first visit"))
        .unwrap();
    // tx 5 at 10:00Z: release seq 6, hold seq 7, reschedule seq 8.
    w.now = z(2026, 11, 30, 10, 0);
    w.who = his.clone();
    w.reschedule(a, z(2026, 12, 1, 9, 30), Some("patient asked for later"))
        .unwrap();
    // tx 6 at 12:00Z: release seq 9, cancellation seq 10.
    w.now = z(2026, 11, 30, 12, 0);
    w.who = portal.clone();
    w.cancel(a, "feeling better", CancelledBy::Patient).unwrap();

    let read = w.read();
    let trail = read.audit(a);
    assert_eq!(trail.entries.len(), 3);
    let stream = stream_id::<Appointment>(a);
    let expected = [
        // (position, version, type, schema, occurred_at, who, reason)
        (
            "4.5",
            1,
            "AppointmentBooked",
            2,
            monday_morning(),
            &desk,
            Some("first visit"),
        ),
        (
            "5.8",
            2,
            "AppointmentRescheduled",
            1,
            z(2026, 11, 30, 10, 0),
            &his,
            Some("patient asked for later"),
        ),
        (
            "6.10",
            3,
            "AppointmentCancelled",
            1,
            z(2026, 11, 30, 12, 0),
            &portal,
            Some("feeling better"),
        ),
    ];
    for (entry, (position, version, event_type, schema, at, who, why)) in
        trail.entries.iter().zip(expected)
    {
        let stored = w.event(&stream, version);
        assert_eq!(entry.position, position);
        assert_eq!(entry.version, version);
        assert_eq!(entry.event_type, event_type);
        assert_eq!(entry.schema_version, schema);
        assert_eq!(entry.event_id, stored.event_id);
        assert_eq!(entry.occurred_at, at);
        assert_eq!(
            entry.recorded_at,
            at + Duration::milliseconds(RECORDING_LAG_MS)
        );
        assert_eq!(entry.actor, who.actor);
        assert_eq!(entry.source, who.source);
        assert_eq!(entry.remote_addr, who.remote_addr);
        assert_eq!(entry.correlation_id, who.correlation_id);
        assert_eq!(entry.causation_id, stored.metadata().causation_id);
        assert_eq!(entry.reason.as_deref(), why);
        assert_eq!(entry.data, stored.payload);
    }
    assert_eq!(trail.entries[1].remote_addr, None);
    assert_eq!(
        trail.entries[2].data,
        json!({"appointment_id": a, "reason": "feeling better", "cancelled_by": "patient"})
    );

    // Without a note or reason the entry has none; check-in has none either.
    w.who = desk.clone();
    w.now = monday_morning();
    let b = w.book(p, s, z(2026, 12, 1, 10, 0), "HIS-7").unwrap();
    w.now = z(2026, 12, 1, 9, 30);
    w.progress(b, Appointment::check_in).unwrap();
    let read = w.read();
    let trail_b = read.audit(b);
    assert_eq!(
        trail_b
            .entries
            .iter()
            .map(|e| (e.event_type.as_str(), e.reason.clone()))
            .collect::<Vec<_>>(),
        [("AppointmentBooked", None), ("PatientCheckedIn", None)]
    );
    // Calendar, catalog and schedule events make no audit documents.
    assert_eq!(read.audit.iter().count(), 2);

    // Applying an event again (same version) adds nothing.
    let mut audit = fold::<AuditTrail>(&w.log);
    let before = serde_json::to_string(audit.get(&a.to_string()).unwrap()).unwrap();
    for version in [1, 3, 2] {
        AuditTrail::apply(&w.event(&stream, version).envelope(), &mut audit).unwrap();
    }
    let after = audit.get(&a.to_string()).unwrap();
    assert_eq!(after.entries.len(), 3);
    assert_eq!(serde_json::to_string(after).unwrap(), before);

    // Nor does it roll the appointment back to an earlier state.
    let mut appointments = fold::<Appointments>(&w.log);
    let before = serde_json::to_string(appointments.get(&a.to_string()).unwrap()).unwrap();
    for version in [1, 2] {
        Appointments::apply(&w.event(&stream, version).envelope(), &mut appointments).unwrap();
    }
    let after = serde_json::to_string(appointments.get(&a.to_string()).unwrap()).unwrap();
    assert_eq!(after, before);
}

// ---------------------------------------------------------------------------
// The catalog.

#[test]
fn catalog_follows_practitioners_services_and_schedules() {
    let mut w = World::new(monday_morning());
    let p = w.register("Dr. A");
    let read = w.read();
    assert_eq!(
        read.practitioner(p),
        RegisteredPractitioner {
            id: p,
            details: doctor("Dr. A"),
            active: true,
        }
    );

    let renamed = PractitionerDetails {
        name: name("Dr. A. Jansen"),
        specialty: name("Cardiology"),
        department: Some(name("Heart centre")),
        location: Some(name("Building B")),
        external_id: Some(ShortText::parse("externalId", "HIS-DOC-17").unwrap()),
    };
    w.update_practitioner(p, renamed.clone());
    assert_eq!(
        w.read().practitioner(p),
        RegisteredPractitioner {
            id: p,
            details: renamed.clone(),
            active: true,
        }
    );

    let s = w.define_service(consult(p));
    assert_eq!(
        w.read().service(s),
        DefinedService {
            id: s,
            details: consult(p),
            active: true,
        }
    );
    let longer = ServiceDetails::parse("Long consultation", 45, 5, 5, 1, [p], 60, 90).unwrap();
    w.update_service(s, longer.clone());
    assert_eq!(
        w.read().service(s),
        DefinedService {
            id: s,
            details: longer.clone(),
            active: true,
        }
    );

    let rules = vec![weekdays(t(9, 0), t(12, 0), 15)];
    w.set_rules(p, rules.clone());
    let leave = ScheduleException::unavailable(
        Uuid::new_v4(),
        d(2026, 12, 24),
        None,
        None,
        Some(reason("Christmas Eve")),
    )
    .unwrap();
    let extra = ScheduleException::extra_session(
        Uuid::new_v4(),
        d(2026, 12, 5),
        t(10, 0),
        t(11, 0),
        15,
        None,
    )
    .unwrap();
    w.add_exception(p, leave.clone());
    w.add_exception(p, extra.clone());
    assert_eq!(
        w.read().schedule(p),
        Schedule {
            time_zone: AMS,
            rules: rules.clone(),
            exceptions: BTreeMap::from([(leave.id, leave.clone()), (extra.id, extra.clone())]),
        }
    );
    w.remove_exception(p, leave.id);
    let nights = vec![sunday_nights()];
    w.set_rules(p, nights.clone());
    assert_eq!(
        w.read().schedule(p),
        Schedule {
            time_zone: AMS,
            rules: nights,
            exceptions: BTreeMap::from([(extra.id, extra.clone())]),
        }
    );

    w.set_practitioner_active(p, false);
    let read = w.read();
    assert_eq!(
        read.practitioner(p),
        RegisteredPractitioner {
            id: p,
            details: renamed,
            active: false,
        }
    );
    // Exactly one document per practitioner, service and schedule.
    assert_eq!(
        read.catalog
            .iter()
            .map(|(k, _)| k.to_owned())
            .collect::<Vec<_>>(),
        {
            let mut keys = vec![practitioner_key(p), service_key(s), schedule_key(p)];
            keys.sort();
            keys
        }
    );
    assert!(read
        .catalog
        .iter()
        .all(|(_, doc)| Catalog::index_key(doc).is_none()));
    // An inactive practitioner cannot be booked.
    assert_eq!(
        w.book(p, s, z(2026, 12, 5, 9, 0), "P-1")
            .unwrap_err()
            .code(),
        "PRACTITIONER_INACTIVE"
    );
}

#[test]
fn each_projection_reads_only_its_own_streams() {
    let (mut w, p, s) = clinic(monday_morning(), vec![weekdays(t(9, 0), t(12, 0), 30)]);
    let a = w.book(p, s, z(2026, 12, 1, 8, 0), "P-1").unwrap();
    let keys = |stream: &str| {
        let e = w
            .log
            .iter()
            .find(|e| e.stream_id == stream)
            .unwrap()
            .envelope();
        [
            Catalog::keys(&e),
            Calendars::keys(&e),
            Appointments::keys(&e),
            AuditTrail::keys(&e),
        ]
    };
    let none: Vec<String> = vec![];
    assert_eq!(
        keys(&stream_id::<Practitioner>(p)),
        [
            vec![practitioner_key(p)],
            none.clone(),
            none.clone(),
            none.clone()
        ]
    );
    assert_eq!(
        keys(&stream_id::<Schedule>(p)),
        [
            vec![schedule_key(p)],
            none.clone(),
            none.clone(),
            none.clone()
        ]
    );
    assert_eq!(
        keys(&stream_id::<Service>(s)),
        [
            vec![service_key(s)],
            none.clone(),
            none.clone(),
            none.clone()
        ]
    );
    assert_eq!(
        keys(&calendar_stream(p, d(2026, 12, 1))),
        [
            none.clone(),
            vec![format!("{p}/2026-12-01")],
            none.clone(),
            none.clone()
        ]
    );
    assert_eq!(
        keys(&stream_id::<Appointment>(a)),
        [none.clone(), none, vec![a.to_string()], vec![a.to_string()]]
    );
}

// ---------------------------------------------------------------------------
// Determinism.

/// A history touching every read model: two practitioners, a group session,
/// buffers, exceptions, both DST days, cancellations, reschedules within and
/// across days, check-ins, completions, no-shows and master-data updates.
fn busy_world() -> World {
    let mut w = World::new(z(2026, 3, 20, 8, 0));
    let a = w.register("Dr. A");
    let b = w.register("Dr. B");
    w.set_rules(a, vec![weekdays(t(9, 0), t(12, 0), 15), sunday_nights()]);
    w.set_rules(b, vec![weekdays(t(13, 0), t(17, 0), 30)]);
    let visit =
        w.define_service(ServiceDetails::parse("Visit", 30, 5, 10, 1, [a, b], 60, 365).unwrap());
    let group = w.define_service(ServiceDetails::parse("Group", 60, 0, 0, 3, [a], 0, 365).unwrap());
    w.leave(a, d(2026, 3, 25), None);
    let extra = w.extra_session(a, d(2026, 3, 28), t(10, 0), t(12, 0));

    // Both DST nights (wall clock 01:30 CET / 03:30 CEST, and both 02:30s).
    w.book(a, visit, z(2026, 3, 29, 0, 30), "P-1").unwrap();
    w.book(a, visit, z(2026, 3, 29, 1, 30), "P-2").unwrap();
    w.book(a, visit, z(2026, 10, 25, 0, 30), "P-3").unwrap();
    let second_0230 = w.book(a, visit, z(2026, 10, 25, 1, 30), "P-4").unwrap();
    // A group on Tuesday 24 March, 09:00 CET = 08:00Z.
    let g1 = w.book(a, group, z(2026, 3, 24, 8, 0), "P-5").unwrap();
    let g2 = w.book(a, group, z(2026, 3, 24, 8, 0), "P-6").unwrap();
    let g3 = w.book(a, group, z(2026, 3, 24, 8, 0), "P-7").unwrap();
    let v = w.book(a, visit, z(2026, 3, 24, 9, 15), "P-1").unwrap();
    let vb = w.book(b, visit, z(2026, 3, 24, 12, 0), "P-8").unwrap();
    w.book(a, visit, z(2026, 3, 28, 9, 0), "P-9").unwrap();

    w.who = Who::new("his", Role::HisSystem, Source::HisApi, None);
    w.cancel(g2, "ill", CancelledBy::Patient).unwrap();
    w.reschedule(v, z(2026, 3, 26, 8, 30), Some("clash"))
        .unwrap();
    w.reschedule(vb, z(2026, 3, 24, 13, 0), None).unwrap();
    w.reschedule(second_0230, z(2026, 10, 25, 2, 0), Some("later"))
        .unwrap();
    w.remove_exception(a, extra);

    w.now = z(2026, 3, 24, 7, 30);
    w.progress(g1, Appointment::check_in).unwrap();
    w.now = z(2026, 3, 24, 8, 10);
    w.progress(g1, Appointment::complete).unwrap();
    w.progress(g3, Appointment::mark_no_show).unwrap();
    w.update_practitioner(b, doctor("Dr. B. de Vries"));
    w.update_service(
        visit,
        ServiceDetails::parse("Visit", 45, 5, 10, 1, [a, b], 60, 365).unwrap(),
    );
    w.set_practitioner_active(b, false);
    w
}

fn all_rows(events: &[Stored]) -> [Rows; 4] {
    [
        rows::<Catalog>(&fold::<Catalog>(events)),
        rows::<Calendars>(&fold::<Calendars>(events)),
        rows::<Appointments>(&fold::<Appointments>(events)),
        rows::<AuditTrail>(&fold::<AuditTrail>(events)),
    ]
}

fn all_rows_in_batches(events: &[Stored], size: usize) -> [Rows; 4] {
    [
        fold_in_batches::<Catalog>(events, size),
        fold_in_batches::<Calendars>(events, size),
        fold_in_batches::<Appointments>(events, size),
        fold_in_batches::<AuditTrail>(events, size),
    ]
}

#[test]
fn folding_twice_gives_byte_identical_documents() {
    let w = busy_world();
    let first = all_rows(&w.log);
    let second = all_rows(&w.log);
    assert_eq!(first, second);
    // Sanity: every read model has documents, and the history is long enough
    // to split into batches meaningfully.
    assert!(first.iter().all(|r| !r.is_empty()), "{first:?}");
    assert!(w.log.len() > 40, "{}", w.log.len());
    // Calendar days: 24, 26, 28, 29 March and 25 October (Dr. A), 24 March
    // (Dr. B) = 6 documents; 10 appointments, each with a trail.
    assert_eq!(first[1].len(), 6);
    assert_eq!(first[2].len(), 10);
    assert_eq!(first[3].len(), 10);
    // 2 practitioners, 2 services, 2 schedules.
    assert_eq!(first[0].len(), 6);
}

#[test]
fn folding_in_batches_of_any_size_matches_one_batch() {
    let w = busy_world();
    let whole = all_rows(&w.log);
    assert_eq!(all_rows_in_batches(&w.log, w.log.len()), whole);
    for size in 1..w.log.len() {
        assert_eq!(
            all_rows_in_batches(&w.log, size),
            whole,
            "batches of {size} differ from one batch"
        );
    }
}

#[test]
fn answers_from_reloaded_documents_match_answers_from_one_fold() {
    let w = busy_world();
    let read = w.read();
    // Rebuild the catalog and calendars from rows folded one event at a time.
    let mut catalog = DocMap::new();
    for (k, (_, json)) in fold_in_batches::<Catalog>(&w.log, 1) {
        catalog.loaded(k, Some(serde_json::from_str(&json).unwrap()));
    }
    let mut calendars = DocMap::new();
    for (k, (_, json)) in fold_in_batches::<Calendars>(&w.log, 1) {
        calendars.loaded(k, Some(serde_json::from_str(&json).unwrap()));
    }
    let reloaded = ReadSide {
        catalog,
        calendars,
        appointments: DocMap::new(),
        audit: DocMap::new(),
    };
    let a = read
        .catalog
        .iter()
        .find_map(|(_, doc)| match doc {
            CatalogDoc::Practitioner(p) if p.details.name.as_str() == "Dr. A" => Some(p.id),
            _ => None,
        })
        .expect("Dr. A is in the catalog");
    let services: Vec<ServiceId> = read
        .catalog
        .iter()
        .filter_map(|(_, doc)| match doc {
            CatalogDoc::Service(s) => Some(s.id),
            _ => None,
        })
        .collect();
    let now = z(2026, 3, 20, 8, 0);
    for s in services {
        for (from, to) in [
            (d(2026, 3, 23), d(2026, 3, 29)),
            (d(2026, 10, 24), d(2026, 10, 26)),
        ] {
            assert_eq!(
                read.slots(a, s, now, from, to),
                reloaded.slots(a, s, now, from, to)
            );
        }
    }
    assert_eq!(
        read.agenda(a, d(2026, 3, 23), d(2026, 3, 29)),
        reloaded.agenda(a, d(2026, 3, 23), d(2026, 3, 29))
    );
    assert_eq!(
        read.agenda(a, d(2026, 10, 25), d(2026, 10, 25)),
        reloaded.agenda(a, d(2026, 10, 25), d(2026, 10, 25))
    );
}
