//! The HIS's own versions of the records it sends. Each HIS record (an
//! appointment, a practitioner, a service, a schedule, a patient) has a
//! small stream holding the last version Buktor applied; a change from the
//! HIS appends to it atomically with the change itself, at the version it
//! read. So an older version arriving after a newer one, even on another
//! server instance at the same moment, is refused and cannot roll back.
use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, DomainEvent};
use crate::error::{DomainError, DomainResult};
use crate::values::{Reason, ShortText};
use crate::TenantId;

/// The kinds of records the HIS sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HisRecordKind {
    Appointment,
    Practitioner,
    Service,
    Schedule,
    ScheduleException,
    Patient,
}

impl HisRecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HisRecordKind::Appointment => "appointment",
            HisRecordKind::Practitioner => "practitioner",
            HisRecordKind::Service => "service",
            HisRecordKind::Schedule => "schedule",
            HisRecordKind::ScheduleException => "schedule-exception",
            HisRecordKind::Patient => "patient",
        }
    }

    /// Buktor's id for the HIS's id of this kind in one hospital.
    pub fn buktor_id(self, tenant: TenantId, his_id: &ShortText) -> uuid::Uuid {
        crate::ids::derived_uuid(tenant, self.as_str(), his_id.as_str())
    }
}

/// A record's version as the HIS keeps it: a counter, or the time it was
/// last modified. One record keeps to one of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "value")]
pub enum HisVersion {
    Number(i64),
    Modified(DateTime<Utc>),
}

impl HisVersion {
    fn kind(self) -> &'static str {
        match self {
            HisVersion::Number(_) => "version numbers",
            HisVersion::Modified(_) => "last-modified times",
        }
    }

    fn compare(self, other: HisVersion) -> DomainResult<Ordering> {
        match (self, other) {
            (HisVersion::Number(a), HisVersion::Number(b)) => Ok(a.cmp(&b)),
            (HisVersion::Modified(a), HisVersion::Modified(b)) => Ok(a.cmp(&b)),
            (applied, received) => Err(DomainError::HisVersionKindChanged {
                applied: applied.kind(),
                received: received.kind(),
            }),
        }
    }
}

impl fmt::Display for HisVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HisVersion::Number(n) => write!(f, "{n}"),
            HisVersion::Modified(t) => write!(f, "{}", t.to_rfc3339()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HisRecordEvent {
    HisVersionApplied {
        kind: HisRecordKind,
        his_id: ShortText,
        version: HisVersion,
        /// Why Buktor's rules were overridden for this version, if they were.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rules_overridden: Option<Reason>,
    },
}

impl DomainEvent for HisRecordEvent {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HisRecord {
    pub applied: Option<HisVersion>,
}

impl Aggregate for HisRecord {
    type Event = HisRecordEvent;
    const STREAM_TYPE: &'static str = "his";

    fn apply(&mut self, event: &HisRecordEvent) {
        let HisRecordEvent::HisVersionApplied { version, .. } = event;
        self.applied = Some(*version);
    }
}

/// The guard stream of one HIS record.
pub fn his_record_stream(kind: HisRecordKind, buktor_id: uuid::Uuid) -> String {
    format!("{}-{}-{buktor_id}", HisRecord::STREAM_TYPE, kind.as_str())
}

impl HisRecord {
    /// Accepts `version` only if it is newer than the applied one; the
    /// returned event records it.
    pub fn apply_version(
        &self,
        kind: HisRecordKind,
        his_id: ShortText,
        version: HisVersion,
        rules_overridden: Option<Reason>,
    ) -> DomainResult<HisRecordEvent> {
        if let Some(applied) = self.applied {
            if applied.compare(version)? != Ordering::Less {
                return Err(DomainError::HisVersionNotNewer {
                    applied: applied.to_string(),
                    received: version.to_string(),
                });
            }
        }
        Ok(HisRecordEvent::HisVersionApplied {
            kind,
            his_id,
            version,
            rules_overridden,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ShortText {
        ShortText::parse("hisId", "A-1").unwrap()
    }

    #[test]
    fn only_newer_versions_apply() {
        let kind = HisRecordKind::Appointment;
        let record = HisRecord::from_events(&[HisRecordEvent::HisVersionApplied {
            kind,
            his_id: id(),
            version: HisVersion::Number(3),
            rules_overridden: None,
        }]);
        for older in [2, 3] {
            let e = record
                .apply_version(kind, id(), HisVersion::Number(older), None)
                .unwrap_err();
            assert_eq!(e.code(), "STALE_VERSION");
        }
        assert!(record
            .apply_version(kind, id(), HisVersion::Number(4), None)
            .is_ok());
        let e = record
            .apply_version(kind, id(), HisVersion::Modified(Utc::now()), None)
            .unwrap_err();
        assert_eq!(e.code(), "VERSION_KIND_CHANGED");
        assert!(HisRecord::default()
            .apply_version(kind, id(), HisVersion::Number(-5), None)
            .is_ok());
    }

    #[test]
    fn ids_are_per_kind_and_hospital() {
        let t = TenantId::new();
        assert_eq!(
            HisRecordKind::Practitioner.buktor_id(t, &id()),
            HisRecordKind::Practitioner.buktor_id(t, &id())
        );
        assert_ne!(
            HisRecordKind::Practitioner.buktor_id(t, &id()),
            HisRecordKind::Service.buktor_id(t, &id())
        );
    }
}
