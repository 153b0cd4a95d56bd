//! `buktor-middleware`: Buktor's webhooks for a HIS that cannot take pushes.
//!
//! It receives Buktor's signed pushes, stores each one durably in a local
//! SQLite file, and a scheduled job delivers the stored messages to the HIS's
//! outputs (its own SQL database, and optionally HL7 v2) when they can take
//! them. See `docs/middleware.md`.

pub mod hl7;
pub mod mllp;

use chrono::{DateTime, Utc};

/// One received webhook message, as the local store keeps it and as every
/// output gets it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// The `webhook-id` header: unique per event and endpoint, the de-duplication key.
    pub webhook_id: String,
    /// `data.appointment.id`, for `appointment.*` types.
    pub appointment_id: Option<String>,
    /// The body's `type`, e.g. `appointment.booked`.
    pub event_type: String,
    /// `data.appointment.version`: a newer state of the appointment has a higher one.
    pub appointment_version: Option<i64>,
    /// The whole body.
    pub payload: serde_json::Value,
    /// When the middleware stored it.
    pub received_at: DateTime<Utc>,
}
