use buktor_domain::{DecodeError, DomainEvent, EventMetadata};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A stored event as a projection sees it.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub stream_id: &'a str,
    pub version: i64,
    /// The event's place in the tenant's global order, `(tx, seq)`.
    pub position: (i64, i64),
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub schema_version: i32,
    pub payload: &'a serde_json::Value,
    pub metadata: &'a serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

impl Envelope<'_> {
    /// The domain event, upcast to the current schema.
    pub fn decode<E: DomainEvent>(&self) -> Result<E, ProjectionError> {
        Ok(buktor_domain::decode::<E>(
            self.event_type,
            self.schema_version,
            self.payload.clone(),
        )?)
    }

    pub fn metadata(&self) -> Result<EventMetadata, ProjectionError> {
        serde_json::from_value(self.metadata.clone()).map_err(|e| ProjectionError::Metadata {
            event_id: self.event_id,
            reason: e.to_string(),
        })
    }

    /// The position as clients write it, `tx.seq`.
    pub fn position_text(&self) -> String {
        format!("{}.{}", self.position.0, self.position.1)
    }
}

/// An event a projection cannot fold: the store holds something this server
/// does not understand. The runner stops rather than skip it.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("event {event_id} has unreadable metadata: {reason}")]
    Metadata { event_id: Uuid, reason: String },
    #[error("stream id {0:?} does not name what its events are about")]
    StreamId(String),
}
