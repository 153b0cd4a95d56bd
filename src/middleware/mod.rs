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

pub mod bench;
pub mod config;
pub mod his_db;
pub mod mapping;
pub mod payload;
pub mod receiver;
pub mod schedule;
pub mod serve;
pub mod store;
pub mod sync;

/// Where the middleware delivers messages. Each message has a sync state per output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Output {
    /// The HIS's own SQL database, through the mapping file.
    HisDb,
    /// HL7 v2 over MLLP.
    Hl7,
}

impl Output {
    pub const ALL: [Output; 2] = [Output::HisDb, Output::Hl7];

    pub fn as_str(self) -> &'static str {
        match self {
            Output::HisDb => "his_db",
            Output::Hl7 => "hl7",
        }
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Output {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Output::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not an output (his_db, hl7)"))
    }
}
