//! Given/when/then tests of the decisions that span aggregates.
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

use crate::aggregate::{decode, encode, Aggregate};
use crate::appointment::{Appointment, AppointmentEvent, AppointmentStatus, CancelledBy};
use crate::booking::{self, BookAppointment, BookingContext, RescheduleAppointment};
use crate::calendar::CalendarDay;
use crate::practitioner::{Practitioner, PractitionerDetails};
use crate::schedule::{Schedule, WeeklyRule};
use crate::service::{Service, ServiceDetails};
use crate::values::{Name, PatientRef, Reason, ShortText};
use crate::{AppointmentId, PractitionerId, ServiceId};

const TZ: Tz = chrono_tz::Europe::Amsterdam;

struct World {
    practitioner_id: PractitionerId,
    service_id: ServiceId,
    practitioner: Practitioner,
    service: Service,
    schedule: Schedule,
    now: DateTime<Utc>,
}

/// Dr. A works Mon–Fri 08:00–12:00 Amsterdam time, 15-minute grid; a
/// 30-minute consultation needs 60 minutes' notice and 30 days' lead at most.
/// It is Monday 30 November 2026, 08:00 UTC.
fn world() -> World {
    let practitioner_id = PractitionerId::new();
    let service_id = ServiceId::new();
    let practitioner = Practitioner::from_events(
        &Practitioner::default()
            .register(
                practitioner_id,
                PractitionerDetails {
                    name: Name::parse("name", "Dr. A").unwrap(),
                    specialty: Name::parse("specialty", "Cardiology").unwrap(),
                    department: None,
                    location: None,
                    external_id: None,
                },
            )
            .unwrap(),
    );
    let details =
        ServiceDetails::parse("Consultation", 30, 0, 0, 1, [practitioner_id], 60, 30).unwrap();
    let service = Service::from_events(&Service::default().define(service_id, details).unwrap());
    let rule = WeeklyRule::parse(
        [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
        ],
        NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
        NaiveTime::from_hms_opt(12, 0, 0).unwrap(),
        15,
        NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        None,
    )
    .unwrap();
    let schedule = Schedule::from_events(
        &Schedule::default()
            .set_weekly_rules(practitioner_id, TZ, vec![rule])
            .unwrap(),
    );
    World {
        practitioner_id,
        service_id,
        practitioner,
        service,
        schedule,
        now: Utc.with_ymd_and_hms(2026, 11, 30, 8, 0, 0).unwrap(),
    }
}

impl World {
    fn ctx(&self) -> BookingContext<'_> {
        BookingContext {
            time_zone: TZ,
            practitioner: &self.practitioner,
            service: &self.service,
            schedule: &self.schedule,
            now: self.now,
        }
    }
    fn cmd(&self, start: DateTime<Utc>) -> BookAppointment {
        BookAppointment {
            appointment_id: AppointmentId::new(),
            practitioner_id: self.practitioner_id,
            service_id: self.service_id,
            start,
            patient: PatientRef {
                his_patient_id: ShortText::parse("patientId", "P-1").unwrap(),
                name: None,
                phone: None,
                email: None,
            },
            note: None,
            his_appointment_id: None,
            overriding: None,
            reservation: None,
        }
    }
    /// Books and returns the appointment and the calendar with the booking applied.
    fn booked(&self, start: DateTime<Utc>, calendar: &CalendarDay) -> (Appointment, CalendarDay) {
        let d = booking::book(
            &self.ctx(),
            &Appointment::default(),
            calendar,
            self.cmd(start),
        )
        .unwrap();
        let mut calendar = calendar.clone();
        for e in &d.calendar[0].1 {
            calendar.apply(e);
        }
        (Appointment::from_events([&d.appointment]), calendar)
    }
}

/// Tuesday 1 December 2026 at local `h:m` (CET, UTC+1).
fn tue(h: u32, m: u32) -> DateTime<Utc> {
    TZ.with_ymd_and_hms(2026, 12, 1, h, m, 0)
        .unwrap()
        .with_timezone(&Utc)
}

#[track_caller]
fn code(r: crate::DomainResult<impl std::fmt::Debug>) -> &'static str {
    r.unwrap_err().code()
}

#[test]
fn booking_a_free_slot_holds_the_calendar_and_books_the_appointment() {
    let w = world();
    let d = booking::book(
        &w.ctx(),
        &Appointment::default(),
        &CalendarDay::default(),
        w.cmd(tue(9, 0)),
    )
    .unwrap();
    assert_eq!(d.calendar.len(), 1);
    assert_eq!(
        d.calendar[0].0,
        format!("calendar-{}-2026-12-01", w.practitioner_id)
    );
    match d.appointment {
        AppointmentEvent::AppointmentBooked { start, end, .. } => {
            assert_eq!(start, tue(9, 0));
            assert_eq!(end, tue(9, 30));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_same_slot_cannot_be_booked_twice() {
    let w = world();
    let (_, calendar) = w.booked(tue(9, 0), &CalendarDay::default());
    assert_eq!(
        code(booking::book(
            &w.ctx(),
            &Appointment::default(),
            &calendar,
            w.cmd(tue(9, 0))
        )),
        "SLOT_TAKEN"
    );
    assert_eq!(
        code(booking::book(
            &w.ctx(),
            &Appointment::default(),
            &calendar,
            w.cmd(tue(9, 15))
        )),
        "SLOT_TAKEN"
    );
    assert!(booking::book(
        &w.ctx(),
        &Appointment::default(),
        &calendar,
        w.cmd(tue(9, 30))
    )
    .is_ok());
}

#[test]
fn each_booking_rule_has_its_error() {
    let w = world();
    let empty = CalendarDay::default();
    let book = |w: &World, cmd| booking::book(&w.ctx(), &Appointment::default(), &empty, cmd);
    // In the past.
    let mut past = world();
    past.now = tue(10, 0);
    assert_eq!(code(book(&past, past.cmd(tue(9, 0)))), "IN_THE_PAST");
    // Inside the 60-minute notice.
    assert_eq!(
        code(book(&past, past.cmd(tue(10, 30)))),
        "INSIDE_MINIMUM_NOTICE"
    );
    // Beyond 30 days.
    let far = TZ
        .with_ymd_and_hms(2027, 1, 5, 9, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(code(book(&w, w.cmd(far))), "BEYOND_BOOKING_WINDOW");
    // Off the grid, outside hours, on a weekend.
    assert_eq!(code(book(&w, w.cmd(tue(9, 5)))), "OUTSIDE_AVAILABILITY");
    assert_eq!(code(book(&w, w.cmd(tue(11, 45)))), "OUTSIDE_AVAILABILITY");
    assert_eq!(code(book(&w, w.cmd(tue(13, 0)))), "OUTSIDE_AVAILABILITY");
    let saturday = TZ
        .with_ymd_and_hms(2026, 12, 5, 9, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(code(book(&w, w.cmd(saturday))), "OUTSIDE_AVAILABILITY");
    // Unknown practitioner or service; service not offered.
    let mut cmd = w.cmd(tue(9, 0));
    cmd.service_id = ServiceId::new();
    assert_eq!(code(book(&w, cmd)), "SERVICE_NOT_FOUND");
    let other = world();
    let mut cmd = w.cmd(tue(9, 0));
    cmd.practitioner_id = other.practitioner_id;
    assert_eq!(
        code(booking::book(
            &BookingContext {
                practitioner: &other.practitioner,
                ..w.ctx()
            },
            &Appointment::default(),
            &empty,
            cmd,
        )),
        "SERVICE_NOT_OFFERED"
    );
    // An inactive practitioner.
    let mut inactive = world();
    for e in inactive
        .practitioner
        .set_active(inactive.practitioner_id, false)
        .unwrap()
    {
        inactive.practitioner.apply(&e);
    }
    assert_eq!(
        code(book(&inactive, inactive.cmd(tue(9, 0)))),
        "PRACTITIONER_INACTIVE"
    );
    // Booking an id twice.
    let (existing, _) = w.booked(tue(9, 0), &empty);
    let mut again = w.cmd(tue(10, 0));
    again.appointment_id = existing.booked.as_ref().unwrap().id;
    assert_eq!(
        code(booking::book(&w.ctx(), &existing, &empty, again)),
        "APPOINTMENT_ALREADY_EXISTS"
    );
}

#[test]
fn reschedule_within_the_day_moves_the_hold_in_one_stream() {
    let w = world();
    let (appointment, calendar) = w.booked(tue(9, 0), &CalendarDay::default());
    let id = appointment.booked.as_ref().unwrap().id;
    // Overlapping its own old time is fine.
    let d = booking::reschedule(
        &w.ctx(),
        &appointment,
        &calendar,
        None,
        RescheduleAppointment {
            appointment_id: id,
            practitioner_id: None,
            start: tue(9, 15),
            reason: None,
            overriding: None,
            reservation: None,
        },
    )
    .unwrap();
    assert_eq!(d.calendar.len(), 1);
    assert_eq!(d.calendar[0].1.len(), 2);
    let mut moved = calendar.clone();
    for e in &d.calendar[0].1 {
        moved.apply(e);
    }
    assert_eq!(moved.holds[&id].start, tue(9, 15));
    // Same time again is refused.
    assert_eq!(
        code(booking::reschedule(
            &w.ctx(),
            &appointment,
            &calendar,
            None,
            RescheduleAppointment {
                appointment_id: id,
                practitioner_id: None,
                start: tue(9, 0),
                reason: None,
                overriding: None,
                reservation: None,
            }
        )),
        "SAME_TIME"
    );
}

#[test]
fn reschedule_to_another_day_releases_and_holds_in_two_streams() {
    let w = world();
    let (appointment, calendar) = w.booked(tue(9, 0), &CalendarDay::default());
    let id = appointment.booked.as_ref().unwrap().id;
    let wednesday = TZ
        .with_ymd_and_hms(2026, 12, 2, 9, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    let (_, busy_wednesday) = w.booked(wednesday, &CalendarDay::default());
    let cmd = |start| RescheduleAppointment {
        appointment_id: id,
        practitioner_id: None,
        start,
        reason: None,
        overriding: None,
        reservation: None,
    };
    assert_eq!(
        code(booking::reschedule(
            &w.ctx(),
            &appointment,
            &calendar,
            Some(&busy_wednesday),
            cmd(wednesday)
        )),
        "SLOT_TAKEN"
    );
    let d = booking::reschedule(
        &w.ctx(),
        &appointment,
        &calendar,
        Some(&CalendarDay::default()),
        cmd(wednesday),
    )
    .unwrap();
    assert_eq!(d.calendar.len(), 2);
    assert!(d.calendar[1].0.ends_with("2026-12-02"));
}

#[test]
fn lifecycle_rules() {
    let w = world();
    let (appointment, calendar) = w.booked(tue(9, 0), &CalendarDay::default());
    let id = appointment.booked.as_ref().unwrap().id;
    // Too early to check in, complete or mark no-show.
    assert_eq!(code(appointment.check_in(id, w.now)), "CHECK_IN_TOO_EARLY");
    assert_eq!(code(appointment.mark_no_show(id, w.now)), "NOT_STARTED_YET");
    assert_eq!(
        code(appointment.complete(id, tue(9, 10))),
        "INVALID_TRANSITION"
    );
    // Check in, then complete.
    let checked_in = Appointment::from_events(&[
        appointment_event(&appointment),
        appointment.check_in(id, tue(8, 50)).unwrap(),
    ]);
    assert_eq!(
        checked_in.booked.as_ref().unwrap().status,
        AppointmentStatus::CheckedIn
    );
    assert_eq!(code(checked_in.complete(id, tue(8, 55))), "NOT_STARTED_YET");
    assert!(checked_in.complete(id, tue(9, 25)).is_ok());
    assert_eq!(
        code(checked_in.cancel(id, reason(), CancelledBy::Patient, None)),
        "INVALID_TRANSITION"
    );
    // Cancel frees the calendar; a cancelled appointment cannot be checked in.
    let d = booking::cancel(
        &appointment,
        &calendar,
        id,
        reason(),
        CancelledBy::Patient,
        None,
    )
    .unwrap();
    let mut freed = calendar.clone();
    for e in &d.calendar[0].1 {
        freed.apply(e);
    }
    assert!(freed.holds.is_empty());
    let cancelled = Appointment::from_events(&[appointment_event(&appointment), d.appointment]);
    assert_eq!(
        code(cancelled.check_in(id, tue(8, 50))),
        "INVALID_TRANSITION"
    );
    assert_eq!(
        code(cancelled.cancel(id, reason(), CancelledBy::Hospital, None)),
        "INVALID_TRANSITION"
    );
    assert_eq!(
        code(Appointment::default().check_in(id, w.now)),
        "APPOINTMENT_NOT_FOUND"
    );
}

fn reason() -> Reason {
    Reason::parse("reason", "Patient is ill").unwrap()
}

fn appointment_event(a: &Appointment) -> AppointmentEvent {
    let b = a.booked.as_ref().unwrap();
    AppointmentEvent::AppointmentBooked {
        appointment_id: b.id,
        practitioner_id: b.practitioner_id,
        service_id: b.service_id,
        start: b.start,
        end: b.end,
        calendar_day: b.calendar_day,
        patient: b.patient.clone(),
        note: None,
        his_appointment_id: None,
        rules_overridden: None,
    }
}

#[test]
fn events_round_trip_through_the_codec() {
    let w = world();
    let d = booking::book(
        &w.ctx(),
        &Appointment::default(),
        &CalendarDay::default(),
        w.cmd(tue(9, 0)),
    )
    .unwrap();
    let enc = encode(&d.appointment);
    assert_eq!(enc.event_type, "AppointmentBooked");
    assert_eq!(enc.schema_version, 2);
    let back: AppointmentEvent = decode(&enc.event_type, enc.schema_version, enc.payload).unwrap();
    assert_eq!(back, d.appointment);
    let held = &d.calendar[0].1[0];
    let enc = encode(held);
    assert_eq!(enc.event_type, "SlotHeld");
    assert_eq!(
        &decode::<crate::calendar::CalendarEvent>(&enc.event_type, 1, enc.payload).unwrap(),
        held
    );
}

#[test]
fn version_one_bookings_are_upcast() {
    let v1 = serde_json::json!({
        "appointment_id": AppointmentId::new(),
        "practitioner_id": PractitionerId::new(),
        "service_id": ServiceId::new(),
        "start": "2026-12-01T08:00:00Z",
        "end": "2026-12-01T08:30:00Z",
        "calendar_day": "2026-12-01",
        "patient_id": "P-77",
        "patient_name": "Ada",
        "note": null
    });
    let e: AppointmentEvent = decode("AppointmentBooked", 1, v1).unwrap();
    match e {
        AppointmentEvent::AppointmentBooked { patient, .. } => {
            assert_eq!(patient.his_patient_id.as_str(), "P-77");
            assert_eq!(patient.name.unwrap().as_str(), "Ada");
        }
        other => panic!("{other:?}"),
    }
    assert!(decode::<AppointmentEvent>("AppointmentBooked", 3, serde_json::json!({})).is_err());
    assert!(decode::<AppointmentEvent>("NoSuchEvent", 1, serde_json::json!({})).is_err());
}

#[test]
fn a_booking_in_the_repeated_hour_of_a_fall_back_day_is_its_own_slot() {
    // A night clinic 00:00–04:00 on Sunday 25 October 2026 (Amsterdam falls back at 03:00).
    let mut w = world();
    w.now = Utc.with_ymd_and_hms(2026, 10, 20, 8, 0, 0).unwrap();
    let rule = WeeklyRule::parse(
        [Weekday::Sun],
        NaiveTime::from_hms_opt(0, 0, 0).unwrap(),
        NaiveTime::from_hms_opt(4, 0, 0).unwrap(),
        30,
        NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        None,
    )
    .unwrap();
    w.schedule = Schedule::from_events(
        &Schedule::default()
            .set_weekly_rules(w.practitioner_id, TZ, vec![rule])
            .unwrap(),
    );
    // 02:30 local happens twice: 00:30Z (CEST) and 01:30Z (CET). Both are bookable, separately.
    let first = Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0).unwrap();
    let second = first + Duration::hours(1);
    let (_, calendar) = w.booked(first, &CalendarDay::default());
    let (_, calendar) = w.booked(second, &calendar);
    assert_eq!(calendar.holds.len(), 2);
    assert_eq!(
        code(booking::book(
            &w.ctx(),
            &Appointment::default(),
            &calendar,
            w.cmd(second)
        )),
        "SLOT_TAKEN"
    );
}

/// Each local day's calendar is checked on its own, so busy time that would
/// spill over midnight (buffers included) is refused rather than left
/// unseen by the next day's bookings.
#[test]
fn busy_time_never_crosses_local_midnight() {
    let mut w = world();
    let details =
        ServiceDetails::parse("Night check", 15, 15, 15, 1, [w.practitioner_id], 0, 30).unwrap();
    w.service = Service::from_events(&Service::default().define(w.service_id, details).unwrap());
    let every_day = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];
    let rule = |from: (u32, u32), to: (u32, u32)| {
        WeeklyRule::parse(
            every_day,
            NaiveTime::from_hms_opt(from.0, from.1, 0).unwrap(),
            NaiveTime::from_hms_opt(to.0, to.1, 0).unwrap(),
            15,
            NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            None,
        )
        .unwrap()
    };
    w.schedule = Schedule::from_events(
        &Schedule::default()
            .set_weekly_rules(
                w.practitioner_id,
                TZ,
                vec![rule((0, 0), (1, 0)), rule((23, 0), (23, 45))],
            )
            .unwrap(),
    );
    let empty = CalendarDay::default();
    let book = |start| booking::book(&w.ctx(), &Appointment::default(), &empty, w.cmd(start));
    // 23:30–23:45 plus 15 minutes after ends at midnight: inside the day.
    assert!(book(tue(23, 15)).is_ok());
    assert!(book(tue(23, 30)).is_ok());
    // 00:00 needs 15 minutes before it, on the previous day: refused, as
    // the calendar of Tuesday could not see it.
    assert_eq!(code(book(tue(0, 0))), "OUTSIDE_AVAILABILITY");
    assert!(book(tue(0, 15)).is_ok());
}

#[test]
fn a_service_defined_before_services_had_his_ids_still_decodes() {
    let p = PractitionerId::new();
    let details = ServiceDetails::parse("Consult", 20, 0, 0, 1, [p], 0, 90).unwrap();
    let defined = crate::service::ServiceEvent::ServiceDefined {
        service_id: ServiceId::new(),
        details: details.clone(),
    };
    let old = encode(&defined);
    assert!(
        old.payload.get("external_id").is_none(),
        "an absent HIS id is not written: {}",
        old.payload
    );
    let back: crate::service::ServiceEvent =
        decode(&old.event_type, old.schema_version, old.payload).unwrap();
    assert_eq!(back, defined);

    let with_id = details.with_external_id(Some(ShortText::parse("externalId", "SVC-7").unwrap()));
    let event = crate::service::ServiceEvent::ServiceUpdated {
        service_id: ServiceId::new(),
        details: with_id,
    };
    let encoded = encode(&event);
    assert_eq!(encoded.payload["external_id"], "SVC-7");
    let back: crate::service::ServiceEvent =
        decode(&encoded.event_type, encoded.schema_version, encoded.payload).unwrap();
    assert_eq!(back, event);
}

#[test]
fn an_override_books_what_the_rules_refuse_and_records_why() {
    let w = world();
    let (_, busy) = w.booked(tue(9, 0), &CalendarDay::default());
    let because = Reason::parse("forceReason", "HIS master record").unwrap();
    let overriding = |start| BookAppointment {
        overriding: Some(because.clone()),
        reservation: None,
        ..w.cmd(start)
    };
    // Taken time and a time outside every rule (midnight, Sunday).
    assert_eq!(
        code(booking::book(
            &w.ctx(),
            &Appointment::default(),
            &busy,
            w.cmd(tue(9, 0))
        )),
        "SLOT_TAKEN"
    );
    let d = booking::book(
        &w.ctx(),
        &Appointment::default(),
        &busy,
        overriding(tue(9, 0)),
    )
    .unwrap();
    match &d.appointment {
        AppointmentEvent::AppointmentBooked {
            rules_overridden, ..
        } => assert_eq!(rules_overridden.as_ref(), Some(&because)),
        other => panic!("expected a booking, got {other:?}"),
    }
    let mut overbooked = busy.clone();
    overbooked.apply(&d.calendar[0].1[0]);
    assert_eq!(overbooked.holds.len(), 2);
    let night = TZ
        .with_ymd_and_hms(2026, 12, 6, 0, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(
        code(booking::book(
            &w.ctx(),
            &Appointment::default(),
            &CalendarDay::default(),
            w.cmd(night)
        )),
        "OUTSIDE_AVAILABILITY"
    );
    assert!(booking::book(
        &w.ctx(),
        &Appointment::default(),
        &CalendarDay::default(),
        overriding(night)
    )
    .is_ok());
    // An unknown service is not a rule to override.
    let unknown = BookAppointment {
        service_id: crate::ServiceId::new(),
        ..overriding(tue(10, 0))
    };
    assert_eq!(
        code(booking::book(
            &w.ctx(),
            &Appointment::default(),
            &CalendarDay::default(),
            unknown
        )),
        "SERVICE_NOT_FOUND"
    );
}

#[test]
fn patient_contact_is_recorded_once_per_change() {
    use crate::patient::{patient_id_for, Channel, Patient, PatientContact};
    use crate::values::{Email, Language};
    let tenant = crate::TenantId::new();
    let his = ShortText::parse("patientId", "P-77").unwrap();
    let id = patient_id_for(tenant, &his);
    assert_eq!(id, patient_id_for(tenant, &his), "derived ids are stable");
    assert_ne!(id, patient_id_for(crate::TenantId::new(), &his));
    let contact = PatientContact {
        name: None,
        phone: None,
        email: Some(Email::parse("p@example.org").unwrap()),
        language: Some(Language::parse("nl").unwrap()),
        opted_out: vec![Channel::Sms],
    };
    let events = Patient::default()
        .record_contact(id, his.clone(), contact.clone())
        .unwrap();
    let patient = Patient::from_events(&events);
    assert!(!patient.known.as_ref().unwrap().contact.allows(Channel::Sms));
    assert!(patient
        .record_contact(id, his.clone(), contact)
        .unwrap()
        .is_empty());
}

#[test]
fn a_replaced_schedule_keeps_exactly_the_exceptions_sent() {
    use crate::schedule::ScheduleException;
    let w = world();
    let day = |d| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
    let leave = |id: u128, d| {
        ScheduleException::unavailable(uuid::Uuid::from_u128(id), day(d), None, None, None).unwrap()
    };
    let rules = w.schedule.rules.clone();
    let p = w.practitioner_id;
    let first = w
        .schedule
        .replace(p, TZ, rules.clone(), &[leave(1, 2), leave(2, 3)])
        .unwrap();
    let applied = |base: &Schedule, events: &[crate::schedule::ScheduleEvent]| {
        let mut s = base.clone();
        events.iter().for_each(|e| s.apply(e));
        s
    };
    let schedule = applied(&w.schedule, &first);
    // The same again changes nothing; one dropped and one moved are removed and re-added.
    assert!(schedule
        .replace(p, TZ, rules.clone(), &[leave(1, 2), leave(2, 3)])
        .unwrap()
        .is_empty());
    let second = schedule.replace(p, TZ, rules, &[leave(2, 4)]).unwrap();
    let after = applied(&schedule, &second);
    assert_eq!(after.exceptions.len(), 1);
    assert_eq!(after.exceptions[&uuid::Uuid::from_u128(2)].date, day(4));
}

#[test]
fn a_synced_practitioner_is_registered_then_updated_and_deactivated() {
    let id = PractitionerId::new();
    let details = |name: &str| PractitionerDetails {
        name: Name::parse("name", name).unwrap(),
        specialty: Name::parse("specialty", "Cardiology").unwrap(),
        department: None,
        location: None,
        external_id: Some(ShortText::parse("hisId", "DOC-1").unwrap()),
    };
    let created = Practitioner::default()
        .sync(id, details("Dr. A"), true)
        .unwrap();
    assert_eq!(created.len(), 1);
    let p = Practitioner::from_events(&created);
    assert!(p.sync(id, details("Dr. A"), true).unwrap().is_empty());
    let changed = p.sync(id, details("Dr. B"), false).unwrap();
    let p = Practitioner::from_events(created.iter().chain(&changed));
    let now = p.get(id).unwrap();
    assert_eq!((now.details.name.as_str(), now.active), ("Dr. B", false));
}

/// A forced booking for a practitioner without a schedule (the HIS sends
/// appointments for practitioners Buktor keeps no schedule for) goes to
/// the hospital's local day, at every half hour of days around the DST
/// changes, in zones far east and west of UTC. It went to the UTC day
/// (the empty schedule's zone), which was not the calendar the server
/// loaded: a 503 between 00:00 and 01:00 in Amsterdam.
#[test]
fn a_forced_booking_without_a_schedule_goes_to_the_local_day_at_every_half_hour() {
    let w = world();
    let no_schedule = Schedule::default();
    let because = Reason::parse("forceReason", "HIS master record").unwrap();
    let zones: [(Tz, &[&str]); 4] = [
        (TZ, &["2026-03-29", "2026-10-25", "2026-12-10"]),
        (
            chrono_tz::Pacific::Kiritimati,
            &["2026-12-10", "2026-12-31"],
        ),
        (
            chrono_tz::Pacific::Auckland,
            &["2026-04-05", "2026-09-27", "2026-12-10"],
        ),
        (
            chrono_tz::America::Los_Angeles,
            &["2026-03-08", "2026-11-01", "2026-12-10"],
        ),
    ];
    for (zone, days) in zones {
        for day in days.iter().map(|d| d.parse::<NaiveDate>().unwrap()) {
            for half_hours in 0..48 {
                let local = day.and_time(NaiveTime::MIN) + Duration::minutes(30 * half_hours);
                // Skipped by a spring-forward: no such wall-clock time.
                let Some(start) = zone.from_local_datetime(&local).earliest() else {
                    continue;
                };
                let start = start.with_timezone(&Utc);
                let ctx = BookingContext {
                    time_zone: zone,
                    schedule: &no_schedule,
                    ..w.ctx()
                };
                let d = booking::book(
                    &ctx,
                    &Appointment::default(),
                    &CalendarDay::default(),
                    BookAppointment {
                        overriding: Some(because.clone()),
                        ..w.cmd(start)
                    },
                )
                .unwrap_or_else(|e| panic!("{local} in {zone}: {e}"));
                let expected = crate::calendar::calendar_stream(w.practitioner_id, day);
                assert_eq!(d.calendar[0].0, expected, "{local} in {zone}");
                assert_eq!(
                    d.calendar[0].0,
                    booking::calendar_for(zone, w.practitioner_id, start)
                );
                match &d.appointment {
                    AppointmentEvent::AppointmentBooked { calendar_day, .. } => {
                        assert_eq!(*calendar_day, day, "{local} in {zone}")
                    }
                    other => panic!("expected a booking, got {other:?}"),
                }
            }
        }
    }
}
