//! Who did what, from where: recorded on every event.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::TenantId;

/// What an API key (or the CLI) may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Configures practitioners, services and schedules, and everything staff can do.
    Admin,
    /// Books and manages appointments on a patient's behalf.
    Staff,
    /// The hospital information system: sends and reads appointments and master data.
    HisSystem,
    /// Reads everything, changes nothing.
    Auditor,
    /// A patient booking for themselves through the widget, or managing the
    /// one appointment their manage link names. Never an API key's role.
    Patient,
}

impl Role {
    /// The roles an API key or an embed token can carry.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Staff, Role::HisSystem, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Staff => "staff",
            Role::HisSystem => "his-system",
            Role::Auditor => "auditor",
            Role::Patient => "patient",
        }
    }

    pub fn can_write_appointments(self) -> bool {
        matches!(self, Role::Admin | Role::Staff | Role::HisSystem)
    }

    pub fn can_configure(self) -> bool {
        matches!(self, Role::Admin | Role::HisSystem)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?}: expected admin, staff, his-system or auditor")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// The channel a command came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Widget,
    Admin,
    HisApi,
    Cli,
    System,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Widget => "widget",
            Source::Admin => "admin",
            Source::HisApi => "his-api",
            Source::Cli => "cli",
            Source::System => "system",
        }
    }
}

/// Who issued a command: a user or system id and the role it acted in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub id: String,
    pub role: Role,
}

/// Recorded with every event a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    pub tenant: TenantId,
    pub actor: Actor,
    pub source: Source,
    /// The client's address as seen by the server, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    /// Ties together everything done for one request or conversation.
    pub correlation_id: Uuid,
    /// The command (or event) that caused this one.
    pub causation_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Wall-clock time the command was handled.
    pub occurred_at: DateTime<Utc>,
}
