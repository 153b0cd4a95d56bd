//! Export: a tenant's sealed events as JSON Lines, one event per line, with
//! its link, so an auditor can recompute every hash outside Buktor.
//!
//! A line is the object of [`canonical_value`](super::canonical_value) plus
//! `prev_hash` and `hash` (lowercase hex). Removing those two members and
//! writing the rest canonically gives exactly the bytes that were hashed:
//! `hash == SHA-256(hex_decode(prev_hash) || canonical)`. Lines are in
//! global order; in an unfiltered range each line's `prev_hash` is the
//! previous line's `hash`.
//!
//! Only sealed events are exported (an unsealed one has no hash yet); the
//! summary counts those left out.
use std::collections::HashSet;
use std::io::Write;

use buktor_domain::appointment::{Appointment, AppointmentEvent};
use buktor_domain::{Aggregate, DomainEvent, TenantId};
use chrono::{DateTime, Utc};

use super::verify::{Step, Walk};
use super::{canonical_value, write_line, AuditError, AuditLog, ChainLink};
use crate::store::{Position, RecordedEvent};

/// Which of a tenant's events to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportFilter {
    /// Every event of one appointment's stream.
    Appointment(String),
    /// Every event of the appointments booked for this HIS patient id.
    Patient(String),
    /// Every event recorded at `from` or later and before `to`.
    Between {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Lines written.
    pub exported: u64,
    /// Matching events left out because they are not sealed yet.
    pub unsealed: u64,
}

/// Writes the tenant's sealed events that match `filter` to `out`.
///
/// `Appointment` reads one stream; `Patient` and `Between` read the
/// tenant's whole history in global order (the patient's appointments are
/// found by their `AppointmentBooked` event, which comes first in each).
pub async fn export(
    log: &dyn AuditLog,
    tenant: TenantId,
    filter: &ExportFilter,
    out: &mut dyn Write,
) -> Result<ExportSummary, AuditError> {
    let mut summary = ExportSummary::default();
    match filter {
        ExportFilter::Appointment(id) => {
            let stream = format!("{}-{id}", Appointment::STREAM_TYPE);
            let events = log.read_stream(tenant, &stream, 0).await?;
            let positions: Vec<Position> = events.iter().map(|e| e.position).collect();
            let links = log.chain_links_at(tenant, &positions).await?;
            let mut links = links.into_iter().peekable();
            for event in &events {
                while links.next_if(|l| l.position < event.position).is_some() {}
                match links.next_if(|l| l.position == event.position) {
                    Some(link) => {
                        write_event(out, event, &link)?;
                        summary.exported += 1;
                    }
                    None => summary.unsealed += 1,
                }
            }
        }
        ExportFilter::Patient(patient) => {
            let mut streams = HashSet::new();
            let mut walk = Walk::new(log, tenant);
            while let Some(step) = walk.next().await? {
                let (event, link) = match step {
                    Step::Sealed(event, link) => (event, Some(link)),
                    Step::Unsealed(event) => (event, None),
                    // A link without its event is for `verify` to report.
                    Step::Orphan(_) => continue,
                };
                if booked_for(&event, patient) {
                    streams.insert(event.stream_id.clone());
                }
                if streams.contains(&event.stream_id) {
                    emit(out, &event, link.as_ref(), &mut summary)?;
                }
            }
        }
        ExportFilter::Between { from, to } => {
            let mut walk = Walk::new(log, tenant);
            while let Some(step) = walk.next().await? {
                let (event, link) = match step {
                    Step::Sealed(event, link) => (event, Some(link)),
                    Step::Unsealed(event) => (event, None),
                    Step::Orphan(_) => continue,
                };
                if (*from..*to).contains(&event.recorded_at) {
                    emit(out, &event, link.as_ref(), &mut summary)?;
                }
            }
        }
    }
    out.flush().map_err(AuditError::Write)?;
    Ok(summary)
}

fn emit(
    out: &mut dyn Write,
    event: &RecordedEvent,
    link: Option<&ChainLink>,
    summary: &mut ExportSummary,
) -> Result<(), AuditError> {
    match link {
        Some(link) => {
            write_event(out, event, link)?;
            summary.exported += 1;
        }
        None => summary.unsealed += 1,
    }
    Ok(())
}

fn write_event(
    out: &mut dyn Write,
    event: &RecordedEvent,
    link: &ChainLink,
) -> Result<(), AuditError> {
    let mut line = canonical_value(event);
    if let Some(members) = line.as_object_mut() {
        members.insert("prev_hash".into(), link.prev_hash.to_hex().into());
        members.insert("hash".into(), link.hash.to_hex().into());
    }
    write_line(out, &line)
}

/// Whether `event` books an appointment for HIS patient `patient`. Older
/// schema versions are upcast first: version 1 kept the id elsewhere.
fn booked_for(event: &RecordedEvent, patient: &str) -> bool {
    if event.event_type != "AppointmentBooked"
        || !event
            .stream_id
            .starts_with(&format!("{}-", Appointment::STREAM_TYPE))
    {
        return false;
    }
    let payload = AppointmentEvent::upcast(
        &event.event_type,
        event.schema_version,
        event.payload.clone(),
    )
    .unwrap_or_else(|_| event.payload.clone());
    payload["patient"]["his_patient_id"].as_str() == Some(patient)
}
