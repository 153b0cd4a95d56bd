//! The notifications of one appointment, event-sourced in the stream
//! `reminders-<appointment id>`: what the planner scheduled and cancelled,
//! and what the dispatcher sent, failed to send or skipped. An auditor reads
//! an appointment's reminders there, beside its own stream.
//!
//! [`plan`] is the planner's decision: pure, from the appointment event, the
//! settings at that point of the global order and this stream's state, so
//! planning the same event twice (after a crash) decides nothing new.
use buktor_domain::appointment::AppointmentEvent;
use buktor_domain::patient::Channel;
use buktor_domain::{Aggregate, AppointmentId, DomainEvent, ServiceId};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::settings::{NotificationKind, NotificationSettings};

/// Namespace of the derived notification ids.
const NOTIFICATION_NAMESPACE: Uuid = Uuid::from_u128(0x6275_6b74_6f72_6e6f_7469_6669_6361_7469);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReminderEvent {
    /// A notification (a reminder, or the news of a booking, a move or a
    /// cancellation) is due at `due_at` on `channel`.
    NotificationScheduled {
        notification_id: Uuid,
        appointment_id: AppointmentId,
        kind: NotificationKind,
        channel: Channel,
        rule_id: Option<Uuid>,
        due_at: DateTime<Utc>,
        appointment_start: DateTime<Utc>,
        /// The appointment stream version that caused it.
        cause_version: i64,
    },
    /// Withdrawn before it was sent: the appointment moved, was cancelled
    /// or took place.
    NotificationCancelled {
        notification_id: Uuid,
        reason: String,
        cause_version: i64,
    },
    NotificationSent {
        notification_id: Uuid,
        channel: Channel,
        /// The address, partly masked (`a***@example.org`, `+31******78`).
        recipient: String,
        language: String,
        attempt: u32,
    },
    /// One attempt failed; `retry_at` is when the next is due, or none when
    /// this was the last.
    NotificationFailed {
        notification_id: Uuid,
        attempt: u32,
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
    /// Not sent on purpose.
    NotificationSkipped {
        notification_id: Uuid,
        reason: SkipReason,
    },
}

impl DomainEvent for ReminderEvent {}

/// Why a notification was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// The patient opted out of the channel.
    OptedOut,
    /// No e-mail address or phone number for the channel.
    NoAddress,
    /// The appointment has started (or is over): too late.
    AppointmentStarted,
    /// The appointment is no longer booked, or no longer at that time.
    AppointmentChanged,
    /// The hospital turned notifications or the channel off, or the server
    /// has no SMTP server configured.
    ChannelOff,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::OptedOut => "opted-out",
            SkipReason::NoAddress => "no-address",
            SkipReason::AppointmentStarted => "appointment-started",
            SkipReason::AppointmentChanged => "appointment-changed",
            SkipReason::ChannelOff => "channel-off",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Scheduled,
    Sent,
    Failed,
    Skipped,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub id: Uuid,
    pub kind: NotificationKind,
    pub channel: Channel,
    pub rule_id: Option<Uuid>,
    pub due_at: DateTime<Utc>,
    pub appointment_start: DateTime<Utc>,
    pub status: Status,
    /// Attempts made (failed ones and the one that sent).
    pub attempts: u32,
    /// The last failure, the skip reason or the cancellation reason.
    pub detail: Option<String>,
    pub recipient: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reminders {
    pub appointment_id: Option<AppointmentId>,
    /// The last appointment version the planner decided on.
    pub through_version: i64,
    pub notifications: Vec<Notification>,
}

impl Aggregate for Reminders {
    type Event = ReminderEvent;
    const STREAM_TYPE: &'static str = "reminders";

    fn apply(&mut self, event: &ReminderEvent) {
        use ReminderEvent::*;
        let find = |s: &mut Self, id: &Uuid| s.notifications.iter_mut().position(|n| n.id == *id);
        match event {
            NotificationScheduled {
                notification_id,
                appointment_id,
                kind,
                channel,
                rule_id,
                due_at,
                appointment_start,
                cause_version,
            } => {
                self.appointment_id = Some(*appointment_id);
                self.through_version = self.through_version.max(*cause_version);
                if find(self, notification_id).is_none() {
                    self.notifications.push(Notification {
                        id: *notification_id,
                        kind: *kind,
                        channel: *channel,
                        rule_id: *rule_id,
                        due_at: *due_at,
                        appointment_start: *appointment_start,
                        status: Status::Scheduled,
                        attempts: 0,
                        detail: None,
                        recipient: None,
                    });
                }
            }
            NotificationCancelled {
                notification_id,
                reason,
                cause_version,
            } => {
                self.through_version = self.through_version.max(*cause_version);
                if let Some(i) = find(self, notification_id) {
                    let n = &mut self.notifications[i];
                    n.status = Status::Cancelled;
                    n.detail = Some(reason.clone());
                }
            }
            NotificationSent {
                notification_id,
                recipient,
                attempt,
                ..
            } => {
                if let Some(i) = find(self, notification_id) {
                    let n = &mut self.notifications[i];
                    n.status = Status::Sent;
                    n.attempts = *attempt;
                    n.recipient = Some(recipient.clone());
                }
            }
            NotificationFailed {
                notification_id,
                attempt,
                error,
                retry_at,
            } => {
                if let Some(i) = find(self, notification_id) {
                    let n = &mut self.notifications[i];
                    n.attempts = *attempt;
                    n.detail = Some(error.clone());
                    match retry_at {
                        Some(at) => n.due_at = *at,
                        None => n.status = Status::Failed,
                    }
                }
            }
            NotificationSkipped {
                notification_id,
                reason,
            } => {
                if let Some(i) = find(self, notification_id) {
                    let n = &mut self.notifications[i];
                    n.status = Status::Skipped;
                    n.detail = Some(reason.as_str().to_owned());
                }
            }
        }
    }
}

impl Reminders {
    pub fn get(&self, id: Uuid) -> Option<&Notification> {
        self.notifications.iter().find(|n| n.id == id)
    }
}

pub fn reminders_stream(appointment: AppointmentId) -> String {
    format!("{}-{}", Reminders::STREAM_TYPE, appointment.as_uuid())
}

/// What happened to an appointment, as far as its notifications care.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Booked {
        start: DateTime<Utc>,
        service: ServiceId,
    },
    Rescheduled {
        start: DateTime<Utc>,
        /// Not in the event: the planner reads it from the appointment.
        service: Option<ServiceId>,
    },
    Cancelled,
    /// Checked in, completed or a no-show: nothing more to remind of.
    TookPlace(&'static str),
}

impl Change {
    pub fn of(event: &AppointmentEvent) -> (AppointmentId, Change) {
        use AppointmentEvent::*;
        match event {
            AppointmentBooked {
                appointment_id,
                start,
                service_id,
                ..
            } => (
                *appointment_id,
                Change::Booked {
                    start: *start,
                    service: *service_id,
                },
            ),
            AppointmentRescheduled {
                appointment_id,
                start,
                ..
            } => (
                *appointment_id,
                Change::Rescheduled {
                    start: *start,
                    service: None,
                },
            ),
            AppointmentCancelled { appointment_id, .. } => (*appointment_id, Change::Cancelled),
            PatientCheckedIn { appointment_id, .. } => {
                (*appointment_id, Change::TookPlace("checked-in"))
            }
            AppointmentCompleted { appointment_id, .. } => {
                (*appointment_id, Change::TookPlace("completed"))
            }
            AppointmentMarkedNoShow { appointment_id, .. } => {
                (*appointment_id, Change::TookPlace("no-show"))
            }
        }
    }
}

/// One appointment event to plan for.
#[derive(Debug, Clone)]
pub struct Planned<'a> {
    pub appointment_id: AppointmentId,
    /// The appointment stream version of the event.
    pub version: i64,
    /// When it happened, on the server's clock.
    pub occurred_at: DateTime<Utc>,
    pub change: Change,
    /// The hospital's settings as of the event.
    pub settings: &'a NotificationSettings,
    pub zone: Tz,
}

pub fn notification_id(
    appointment: AppointmentId,
    version: i64,
    kind: NotificationKind,
    channel: Channel,
    rule: Option<Uuid>,
) -> Uuid {
    let name = format!(
        "{}/{version}/{}/{}/{}",
        appointment.as_uuid(),
        kind.as_str(),
        channel.as_str(),
        rule.map(|r| r.to_string()).unwrap_or_default()
    );
    Uuid::new_v5(&NOTIFICATION_NAMESPACE, name.as_bytes())
}

/// The events `p` adds to the appointment's reminders in `state`.
///
/// - Booked: the booking news now and a reminder per applicable rule, per
///   enabled channel; nothing for an appointment that had already started.
/// - Rescheduled: what was pending is cancelled; the news of the move and
///   the reminders for the new time are scheduled.
/// - Cancelled: what was pending is cancelled; the news of the cancellation
///   is scheduled.
/// - Took place: what was pending is cancelled.
///
/// A reminder whose time had passed when the event happened is left out
/// (the booking news already told the patient). Cancelling happens even while
/// notifications are off; scheduling only while they are on.
pub fn plan(state: &Reminders, p: &Planned<'_>) -> Vec<ReminderEvent> {
    if p.version <= state.through_version {
        return vec![];
    }
    let mut events = Vec::new();
    let cancel_pending = |events: &mut Vec<ReminderEvent>, reason: &str| {
        for n in state
            .notifications
            .iter()
            .filter(|n| n.status == Status::Scheduled)
        {
            events.push(ReminderEvent::NotificationCancelled {
                notification_id: n.id,
                reason: reason.to_owned(),
                cause_version: p.version,
            });
        }
    };
    let (start, service, news) = match &p.change {
        Change::Booked { start, service } => (*start, Some(*service), NotificationKind::Booked),
        Change::Rescheduled { start, service } => {
            cancel_pending(&mut events, "rescheduled");
            (*start, *service, NotificationKind::Rescheduled)
        }
        Change::Cancelled => {
            cancel_pending(&mut events, "cancelled");
            let start = state
                .notifications
                .iter()
                .map(|n| n.appointment_start)
                .next_back();
            match start {
                Some(start) => (start, None, NotificationKind::Cancelled),
                // Never told of it: no news of its cancellation either.
                None => return events,
            }
        }
        Change::TookPlace(what) => {
            cancel_pending(&mut events, what);
            return events;
        }
    };
    let general = &p.settings.general;
    if !general.enabled || start <= p.occurred_at {
        return events;
    }
    let channels = general.channels();
    let mut schedule = |kind, rule_id, due_at| {
        for &channel in &channels {
            events.push(ReminderEvent::NotificationScheduled {
                notification_id: notification_id(
                    p.appointment_id,
                    p.version,
                    kind,
                    channel,
                    rule_id,
                ),
                appointment_id: p.appointment_id,
                kind,
                channel,
                rule_id,
                due_at,
                appointment_start: start,
                cause_version: p.version,
            });
        }
    };
    schedule(news, None, p.occurred_at);
    if news == NotificationKind::Cancelled {
        return events;
    }
    for rule in &p.settings.rules {
        if let Some(service) = service {
            if !rule.applies_to(service) {
                continue;
            }
        } else if !rule.service_ids.is_empty() {
            // The service is unknown: only rules for every service apply.
            continue;
        }
        if let Some(due) = rule.timing.due(start, p.zone) {
            if due > p.occurred_at {
                schedule(NotificationKind::Reminder, Some(rule.id), due);
            }
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notifications::rules::Timing;
    use crate::notifications::settings::{General, ReminderRule};
    use chrono::NaiveTime;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn settings(rules: Vec<ReminderRule>) -> NotificationSettings {
        NotificationSettings {
            general: General {
                enabled: true,
                ..General::default()
            },
            rules,
            templates: vec![],
        }
    }

    fn rules() -> Vec<ReminderRule> {
        vec![
            ReminderRule {
                id: Uuid::from_u128(1),
                timing: Timing::days_before_at(1, NaiveTime::from_hms_opt(9, 0, 0).unwrap())
                    .unwrap(),
                service_ids: vec![],
            },
            ReminderRule {
                id: Uuid::from_u128(2),
                timing: Timing::before(120).unwrap(),
                service_ids: vec![],
            },
        ]
    }

    fn fold(events: &[ReminderEvent]) -> Reminders {
        let mut r = Reminders::default();
        for e in events {
            r.apply(e);
        }
        r
    }

    fn scheduled(events: &[ReminderEvent]) -> Vec<(NotificationKind, DateTime<Utc>)> {
        events
            .iter()
            .filter_map(|e| match e {
                ReminderEvent::NotificationScheduled { kind, due_at, .. } => Some((*kind, *due_at)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_booking_schedules_its_news_and_a_reminder_per_rule_and_planning_again_adds_nothing() {
        let s = settings(rules());
        let id = AppointmentId::from_uuid(Uuid::from_u128(9));
        let p = Planned {
            appointment_id: id,
            version: 1,
            occurred_at: utc("2027-03-20T10:00:00Z"),
            change: Change::Booked {
                start: utc("2027-03-29T08:00:00Z"),
                service: ServiceId::from_uuid(Uuid::from_u128(5)),
            },
            settings: &s,
            zone: chrono_tz::Europe::Amsterdam,
        };
        let events = plan(&Reminders::default(), &p);
        assert_eq!(
            scheduled(&events),
            vec![
                (NotificationKind::Booked, utc("2027-03-20T10:00:00Z")),
                (NotificationKind::Reminder, utc("2027-03-28T07:00:00Z")),
                (NotificationKind::Reminder, utc("2027-03-29T06:00:00Z")),
            ]
        );
        assert!(plan(&fold(&events), &p).is_empty());

        // Moved: the two pending reminders and the news are cancelled, new ones made.
        let state = fold(&events);
        let moved = Planned {
            version: 2,
            change: Change::Rescheduled {
                start: utc("2027-04-05T08:00:00Z"),
                service: None,
            },
            ..p.clone()
        };
        let events2 = plan(&state, &moved);
        let cancelled = events2
            .iter()
            .filter(|e| matches!(e, ReminderEvent::NotificationCancelled { .. }))
            .count();
        assert_eq!(cancelled, 3);
        assert_eq!(scheduled(&events2).len(), 3);
        assert_eq!(scheduled(&events2)[0].0, NotificationKind::Rescheduled);

        // Cancelled: only the cancellation news remains to send.
        let mut all = events.clone();
        all.extend(events2);
        let cancel = Planned {
            version: 3,
            change: Change::Cancelled,
            ..p.clone()
        };
        let events3 = plan(&fold(&all), &cancel);
        assert_eq!(
            scheduled(&events3),
            vec![(NotificationKind::Cancelled, utc("2027-03-20T10:00:00Z"))]
        );
        all.extend(events3);
        let end = fold(&all);
        assert_eq!(
            end.notifications
                .iter()
                .filter(|n| n.status == Status::Scheduled)
                .count(),
            1
        );
    }

    #[test]
    fn nothing_is_scheduled_for_a_past_appointment_or_while_off_and_late_reminders_are_left_out() {
        let s = settings(rules());
        let base = Planned {
            appointment_id: AppointmentId::from_uuid(Uuid::from_u128(9)),
            version: 1,
            occurred_at: utc("2027-03-29T07:00:00Z"),
            change: Change::Booked {
                start: utc("2027-03-29T06:00:00Z"),
                service: ServiceId::from_uuid(Uuid::from_u128(5)),
            },
            settings: &s,
            zone: chrono_tz::Europe::Amsterdam,
        };
        assert!(plan(&Reminders::default(), &base).is_empty());
        // Booked 1 h before: the 2 h and day-before reminders are past.
        let soon = Planned {
            change: Change::Booked {
                start: utc("2027-03-29T08:00:00Z"),
                service: ServiceId::from_uuid(Uuid::from_u128(5)),
            },
            ..base.clone()
        };
        assert_eq!(
            scheduled(&plan(&Reminders::default(), &soon)),
            vec![(NotificationKind::Booked, utc("2027-03-29T07:00:00Z"))]
        );
        let off = NotificationSettings::default();
        let p = Planned {
            settings: &off,
            ..soon
        };
        assert!(plan(&Reminders::default(), &p).is_empty());
    }

    #[test]
    fn rules_for_other_services_do_not_apply() {
        let mut r = rules();
        r[0].service_ids = vec![ServiceId::from_uuid(Uuid::from_u128(77))];
        let s = settings(r);
        let p = Planned {
            appointment_id: AppointmentId::from_uuid(Uuid::from_u128(9)),
            version: 1,
            occurred_at: utc("2027-03-20T10:00:00Z"),
            change: Change::Booked {
                start: utc("2027-03-29T08:00:00Z"),
                service: ServiceId::from_uuid(Uuid::from_u128(5)),
            },
            settings: &s,
            zone: chrono_tz::Europe::Amsterdam,
        };
        assert_eq!(scheduled(&plan(&Reminders::default(), &p)).len(), 2);
    }
}
