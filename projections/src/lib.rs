//! Read models built from Buktor's events.
//!
//! Every read model is a [`Projection`]: a pure fold of events into keyed
//! documents. The server's runner feeds it the store's global order in
//! batches, loads the documents a batch touches, and writes back the changed
//! ones together with its checkpoint; nothing here does I/O, so a projection
//! is tested with events in and documents out, and a rebuild replays the
//! same fold deterministically.
//!
//! - [`catalog`]: practitioners, services and schedules.
//! - [`calendar`]: each practitioner-day's held time.
//! - [`appointments`]: each appointment's current state, indexed by patient.
//! - [`audit`]: each appointment's events with who, when, from where and why.
//!
//! [`slots`] and [`agenda`] compute answers (free slots, a practitioner's
//! day) from those documents at query time, with the same rules the write
//! side decides with, so what is offered is what a booking accepts.
pub mod agenda;
pub mod appointments;
pub mod audit;
pub mod calendar;
pub mod catalog;
mod docs;
mod envelope;
pub mod slots;

#[cfg(test)]
mod tests;

pub use docs::DocMap;
pub use envelope::{Envelope, ProjectionError};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A read model: which documents an event touches and how it changes them.
pub trait Projection: Send + Sync + 'static {
    type Doc: Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync + std::fmt::Debug;

    /// Stable name: it keys the checkpoint and the stored documents.
    const NAME: &'static str;

    /// Keys of the documents `event` reads or writes; empty when it is not
    /// about this read model. Decided from the envelope alone (stream id),
    /// so the runner can load a whole batch's documents in one query.
    fn keys(event: &Envelope<'_>) -> Vec<String>;

    /// Folds the event into the documents named by `keys` (loaded into `docs`
    /// if they exist).
    fn apply(event: &Envelope<'_>, docs: &mut DocMap<Self::Doc>) -> Result<(), ProjectionError>;

    /// A secondary key to look documents up by (e.g. the patient), if any.
    fn index_key(_doc: &Self::Doc) -> Option<String> {
        None
    }
}

/// The id after `prefix-` in a stream id such as `appointment-<uuid>`.
pub(crate) fn stream_key<'a>(stream_id: &'a str, stream_type: &str) -> Option<&'a str> {
    stream_id
        .strip_prefix(stream_type)
        .and_then(|rest| rest.strip_prefix('-'))
}

/// Names every projection, for the CLI and the runner.
pub const ALL: [&str; 4] = [
    catalog::Catalog::NAME,
    calendar::Calendars::NAME,
    appointments::Appointments::NAME,
    audit::AuditTrail::NAME,
];
