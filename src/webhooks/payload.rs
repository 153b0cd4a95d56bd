//! The body of a push, version 1 (`docs/webhooks.md`): the event, and the
//! state it left behind with the references a HIS needs, so that the HIS
//! never has to call back.
use std::collections::HashMap;

use buktor_domain::appointment::{Appointment, AppointmentEvent, BookedAppointment};
use buktor_domain::practitioner::{Practitioner, RegisteredPractitioner};
use buktor_domain::schedule::Schedule;
use buktor_domain::service::{DefinedService, Service};
use buktor_domain::{Aggregate, EventMetadata, TenantId};
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::store::{EventStore, RecordedEvent, StoreError};

pub const PAYLOAD_VERSION: u32 = 1;

/// The stream and event type of the alert written when a message is dead-lettered.
pub const ALERT_STREAM_TYPE: &str = "webhook-endpoint";
pub const DEAD_LETTERED_EVENT: &str = "WebhookMessageDeadLettered";

/// Every payload type an endpoint can subscribe to.
pub const TYPES: [&str; 10] = [
    "appointment.booked",
    "appointment.rescheduled",
    "appointment.cancelled",
    "appointment.checked_in",
    "appointment.completed",
    "appointment.no_show",
    "schedule.changed",
    "practitioner.changed",
    "service.changed",
    "webhook.dead_lettered",
];

/// The payload type of a stored event; `None` for events not pushed.
pub fn payload_type(event_type: &str) -> Option<&'static str> {
    Some(match event_type {
        "AppointmentBooked" => "appointment.booked",
        "AppointmentRescheduled" => "appointment.rescheduled",
        "AppointmentCancelled" => "appointment.cancelled",
        "PatientCheckedIn" => "appointment.checked_in",
        "AppointmentCompleted" => "appointment.completed",
        "AppointmentMarkedNoShow" => "appointment.no_show",
        "WeeklyRulesSet" | "ScheduleExceptionAdded" | "ScheduleExceptionRemoved" => {
            "schedule.changed"
        }
        "PractitionerRegistered"
        | "PractitionerUpdated"
        | "PractitionerDeactivated"
        | "PractitionerReactivated" => "practitioner.changed",
        "ServiceDefined" | "ServiceUpdated" | "ServiceDeactivated" | "ServiceReactivated" => {
            "service.changed"
        }
        DEAD_LETTERED_EVENT => "webhook.dead_lettered",
        _ => return None,
    })
}

/// The `webhook-id` of an event's message to an endpoint: the same whoever
/// computes it, so a fan-out done twice yields the same id.
pub fn message_id(endpoint: Uuid, event: Uuid) -> String {
    let digest = Sha256::new()
        .chain_update(endpoint.as_bytes())
        .chain_update(event.as_bytes())
        .finalize();
    format!("msg_{}", hex::encode(&digest[..16]))
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// A payload, and what the fan-out filters and orders it by.
#[derive(Debug, Clone)]
pub struct Built {
    pub payload_type: &'static str,
    pub body: String,
    /// Messages of one stream (an appointment) are delivered in order.
    pub ordering_key: String,
    /// The practitioners the event is about (for endpoint filters).
    pub practitioners: Vec<Uuid>,
    /// Their departments.
    pub departments: Vec<String>,
    /// For `webhook.dead_lettered`: the endpoint it is about, which is not told.
    pub about_endpoint: Option<Uuid>,
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("event {event_id} cannot be read: {reason}")]
    Unreadable { event_id: Uuid, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A state folded from a stream up to a version, kept between batches.
struct Folded<A> {
    version: i64,
    state: A,
}

/// Builds payloads for one tenant's events in global order, folding the
/// aggregates they need as it goes; state is read from the store only for
/// streams it has not seen yet.
pub struct PayloadBuilder {
    tenant: TenantId,
    time_zone: Tz,
    appointments: HashMap<String, Folded<Appointment>>,
    practitioners: HashMap<String, Folded<Practitioner>>,
    services: HashMap<String, Folded<Service>>,
    schedules: HashMap<String, Folded<Schedule>>,
}

/// Keeps memory bounded: a cache this big is dropped and refilled from the store.
const MAX_CACHED_STREAMS: usize = 50_000;

fn decode<E: buktor_domain::DomainEvent>(e: &RecordedEvent) -> Result<E, PayloadError> {
    buktor_domain::decode::<E>(&e.event_type, e.schema_version, e.payload.clone()).map_err(|err| {
        PayloadError::Unreadable {
            event_id: e.event_id,
            reason: err.to_string(),
        }
    })
}

/// Brings `cache[stream]` to `version` (or its last event, if fewer):
/// applies `event` (the stream's event at `version`, when given) if the
/// cache is just before it, else reads the missing events from the store.
/// In global order a stream's events come one after another, so after the
/// first read of a stream the store is not asked again.
async fn fold_to<'c, A: Aggregate>(
    cache: &'c mut HashMap<String, Folded<A>>,
    store: &dyn EventStore,
    tenant: TenantId,
    stream: &str,
    version: i64,
    event: Option<&RecordedEvent>,
) -> Result<&'c A, PayloadError> {
    if cache.len() > MAX_CACHED_STREAMS {
        cache.clear();
    }
    let stale = cache.get(stream).is_none_or(|f| f.version > version);
    if stale {
        cache.insert(
            stream.to_owned(),
            Folded {
                version: 0,
                state: A::default(),
            },
        );
    }
    let folded = cache.get_mut(stream).expect("inserted above");
    if let Some(e) = event.filter(|e| e.version == folded.version + 1 && e.version == version) {
        folded.state.apply(&decode::<A::Event>(e)?);
        folded.version = e.version;
    }
    if folded.version < version {
        for e in store.read_stream(tenant, stream, folded.version).await? {
            if e.version > version {
                break;
            }
            folded.state.apply(&decode::<A::Event>(&e)?);
            folded.version = e.version;
        }
    }
    Ok(&folded.state)
}

impl PayloadBuilder {
    pub fn new(tenant: TenantId, time_zone: Tz) -> Self {
        PayloadBuilder {
            tenant,
            time_zone,
            appointments: HashMap::new(),
            practitioners: HashMap::new(),
            services: HashMap::new(),
            schedules: HashMap::new(),
        }
    }

    /// The payload of `event`, or `None` for an event that is not pushed.
    pub async fn build(
        &mut self,
        store: &dyn EventStore,
        event: &RecordedEvent,
    ) -> Result<Option<Built>, PayloadError> {
        let Some(payload_type) = payload_type(&event.event_type) else {
            return Ok(None);
        };
        let mut data = Map::new();
        data.insert("event".into(), self.event_json(event));
        data.insert(
            "tenant".into(),
            json!({ "id": self.tenant.to_string(), "timeZone": self.time_zone.name() }),
        );
        let mut practitioners = Vec::new();
        let mut about_endpoint = None;
        let tenant = self.tenant;
        match payload_type.split('.').next() {
            Some("appointment") => {
                let state = fold_to(
                    &mut self.appointments,
                    store,
                    tenant,
                    &event.stream_id,
                    event.version,
                    Some(event),
                )
                .await?
                .booked
                .clone()
                .ok_or_else(|| PayloadError::Unreadable {
                    event_id: event.event_id,
                    reason: "an appointment event before its booking".into(),
                })?;
                let previous = match decode::<AppointmentEvent>(event)? {
                    AppointmentEvent::AppointmentRescheduled {
                        previous_practitioner_id,
                        previous_start,
                        ..
                    } => {
                        // The practitioner as a whole (external id, name), so
                        // a HIS can say which resource the appointment left
                        // (HL7 AIP action `D`) without calling back.
                        let id = previous_practitioner_id.as_uuid();
                        let practitioner = self.practitioner_json(store, id).await?;
                        json!({
                            "practitionerId": id.to_string(),
                            "practitioner": practitioner,
                            "start": time(previous_start),
                        })
                    }
                    _ => Value::Null,
                };
                practitioners.push(state.practitioner_id.as_uuid());
                let appointment = self
                    .appointment_json(store, &state, event.version, previous)
                    .await?;
                data.insert("appointment".into(), appointment);
            }
            Some("schedule") => {
                let id = stream_suffix(event, Schedule::STREAM_TYPE)?;
                let schedule = fold_to(
                    &mut self.schedules,
                    store,
                    tenant,
                    &event.stream_id,
                    event.version,
                    Some(event),
                )
                .await?
                .clone();
                data.insert(
                    "schedule".into(),
                    serde_json::to_value(&schedule).unwrap_or_default(),
                );
                let practitioner = self.practitioner_json(store, id).await?;
                practitioners.push(id);
                data.insert("practitioner".into(), practitioner);
            }
            Some("practitioner") => {
                let id = stream_suffix(event, Practitioner::STREAM_TYPE)?;
                practitioners.push(id);
                fold_to(
                    &mut self.practitioners,
                    store,
                    tenant,
                    &event.stream_id,
                    event.version,
                    Some(event),
                )
                .await?;
                let practitioner = self.practitioner_json(store, id).await?;
                data.insert("practitioner".into(), practitioner);
            }
            Some("service") => {
                let service = fold_to(
                    &mut self.services,
                    store,
                    tenant,
                    &event.stream_id,
                    event.version,
                    Some(event),
                )
                .await?;
                data.insert("service".into(), service_json(service.defined.as_ref()));
            }
            _ => {
                about_endpoint = event
                    .payload
                    .get("endpointId")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok());
                data.insert("alert".into(), event.payload.clone());
            }
        }
        let occurred_at = metadata(event)
            .map(|m| m.occurred_at)
            .unwrap_or(event.recorded_at);
        let body = json!({
            "type": payload_type,
            "timestamp": time(occurred_at),
            "version": PAYLOAD_VERSION,
            "data": Value::Object(data),
        });
        let departments = self.departments_of(&practitioners);
        Ok(Some(Built {
            payload_type,
            body: body.to_string(),
            ordering_key: event.stream_id.clone(),
            practitioners,
            departments,
            about_endpoint,
        }))
    }

    fn departments_of(&self, practitioners: &[Uuid]) -> Vec<String> {
        practitioners
            .iter()
            .filter_map(|id| {
                self.practitioners
                    .get(&format!("{}-{id}", Practitioner::STREAM_TYPE))
                    .and_then(|f| f.state.registered.as_ref())
                    .and_then(|p| p.details.department.as_ref())
                    .map(|d| d.as_str().to_owned())
            })
            .collect()
    }

    fn event_json(&self, event: &RecordedEvent) -> Value {
        let meta = metadata(event);
        json!({
            "id": event.event_id.to_string(),
            "name": event.event_type,
            "position": event.position.to_string(),
            "stream": event.stream_id,
            "streamVersion": event.version,
            "occurredAt": time(meta.as_ref().map_or(event.recorded_at, |m| m.occurred_at)),
            "actor": meta.as_ref().map(|m| json!({"id": m.actor.id, "role": m.actor.role.as_str()})),
            "source": meta.as_ref().map(|m| m.source.as_str()),
            "correlationId": meta.as_ref().map(|m| m.correlation_id.to_string()),
        })
    }

    /// The practitioner as it is now in the global order (its latest events
    /// were folded when they went by, or are read now).
    async fn practitioner_json(
        &mut self,
        store: &dyn EventStore,
        id: Uuid,
    ) -> Result<Value, PayloadError> {
        let stream = format!("{}-{id}", Practitioner::STREAM_TYPE);
        if !self.practitioners.contains_key(&stream) {
            fold_to(
                &mut self.practitioners,
                store,
                self.tenant,
                &stream,
                i64::MAX,
                None,
            )
            .await?;
        }
        let p = self
            .practitioners
            .get(&stream)
            .and_then(|f| f.state.registered.as_ref());
        Ok(practitioner_json(id, p))
    }

    async fn appointment_json(
        &mut self,
        store: &dyn EventStore,
        a: &BookedAppointment,
        version: i64,
        previous: Value,
    ) -> Result<Value, PayloadError> {
        let practitioner = self
            .practitioner_json(store, a.practitioner_id.as_uuid())
            .await?;
        let service_stream = format!("{}-{}", Service::STREAM_TYPE, a.service_id);
        if !self.services.contains_key(&service_stream) {
            fold_to(
                &mut self.services,
                store,
                self.tenant,
                &service_stream,
                i64::MAX,
                None,
            )
            .await?;
        }
        let service = service_json(
            self.services
                .get(&service_stream)
                .and_then(|f| f.state.defined.as_ref()),
        );
        let tz = self.time_zone;
        Ok(json!({
            "id": a.id.to_string(),
            // The HIS's own id, when the HIS created the appointment
            // through /his/v1; `null` for Buktor's own bookings.
            "hisId": a.his_appointment_id.as_ref().map(|h| h.as_str()),
            "version": version,
            "status": a.status.as_str(),
            "start": time(a.start),
            "end": time(a.end),
            "localStart": local(a.start, tz),
            "localEnd": local(a.end, tz),
            "calendarDay": a.calendar_day.to_string(),
            "note": a.note.as_ref().map(|n| n.as_str()),
            "cancellation": a.cancellation.as_ref().map(|(reason, by)| json!({
                "reason": reason.as_str(),
                "cancelledBy": serde_json::to_value(by).unwrap_or_default(),
                // A code of HL7's appointment-cancellation-reason system, when given.
                "code": a.cancellation_code.map(|c| c.as_str()),
            })),
            "previous": previous,
            "patient": {
                "hisPatientId": a.patient.his_patient_id.as_str(),
                "name": a.patient.name.as_ref().map(|n| n.as_str()),
                "phone": a.patient.phone.as_ref().map(|p| p.as_str()),
                "email": a.patient.email.as_ref().map(|e| e.as_str()),
            },
            "practitioner": practitioner,
            "service": service,
        }))
    }
}

fn metadata(event: &RecordedEvent) -> Option<EventMetadata> {
    serde_json::from_value(event.metadata.clone()).ok()
}

fn stream_suffix(event: &RecordedEvent, stream_type: &str) -> Result<Uuid, PayloadError> {
    event
        .stream_id
        .strip_prefix(stream_type)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| PayloadError::Unreadable {
            event_id: event.event_id,
            reason: format!("stream id {:?} names no id", event.stream_id),
        })
}

fn practitioner_json(id: Uuid, p: Option<&RegisteredPractitioner>) -> Value {
    let d = p.map(|p| &p.details);
    json!({
        "id": id.to_string(),
        "externalId": d.and_then(|d| d.external_id.as_ref()).map(|x| x.as_str()),
        "name": d.map(|d| d.name.as_str()),
        "specialty": d.map(|d| d.specialty.as_str()),
        "department": d.and_then(|d| d.department.as_ref()).map(|x| x.as_str()),
        "location": d.and_then(|d| d.location.as_ref()).map(|x| x.as_str()),
        "active": p.map(|p| p.active),
    })
}

fn service_json(s: Option<&DefinedService>) -> Value {
    let Some(s) = s else {
        return Value::Null;
    };
    json!({
        "id": s.id.to_string(),
        "externalId": s.details.external_id.as_ref().map(|x| x.as_str()),
        "name": s.details.name.as_str(),
        "durationMinutes": s.details.duration.get(),
        "active": s.active,
    })
}
