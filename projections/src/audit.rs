//! Every event of an appointment with who did it, when, from where and why:
//! what an auditor reads without decoding the store.
use buktor_domain::appointment::Appointment;
use buktor_domain::{Actor, Aggregate, Source};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{stream_key, DocMap, Envelope, Projection, ProjectionError};

pub struct AuditTrail;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AuditDoc {
    pub entries: Vec<AuditEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub position: String,
    pub version: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub actor: Actor,
    pub source: Source,
    pub remote_addr: Option<String>,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    /// The reason given with the change, when there is one (cancellations,
    /// reschedules): the "why" of the trail.
    pub reason: Option<String>,
    /// The event as stored.
    pub data: serde_json::Value,
}

impl Projection for AuditTrail {
    type Doc = AuditDoc;
    const NAME: &'static str = "audit";

    fn keys(event: &Envelope<'_>) -> Vec<String> {
        stream_key(event.stream_id, Appointment::STREAM_TYPE)
            .map(|id| vec![id.to_owned()])
            .unwrap_or_default()
    }

    fn apply(event: &Envelope<'_>, docs: &mut DocMap<AuditDoc>) -> Result<(), ProjectionError> {
        let Some(key) = Self::keys(event).pop() else {
            return Ok(());
        };
        let meta = event.metadata()?;
        let reason = ["reason", "note"]
            .iter()
            .find_map(|field| event.payload.get(field).and_then(|v| v.as_str()))
            .map(str::to_owned);
        let doc = docs.upsert_with(&key, AuditDoc::default);
        // A replay after a crash never applies twice (the checkpoint moves
        // with the documents), but a trail is cheap to keep exact anyway.
        if doc.entries.iter().any(|e| e.version >= event.version) {
            return Ok(());
        }
        doc.entries.push(AuditEntry {
            position: event.position_text(),
            version: event.version,
            event_id: event.event_id,
            event_type: event.event_type.to_owned(),
            schema_version: event.schema_version,
            occurred_at: meta.occurred_at,
            recorded_at: event.recorded_at,
            actor: meta.actor,
            source: meta.source,
            remote_addr: meta.remote_addr,
            correlation_id: meta.correlation_id,
            causation_id: meta.causation_id,
            reason,
            data: event.payload.clone(),
        });
        Ok(())
    }
}
