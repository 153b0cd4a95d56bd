//! Every way a command can be refused, each with a stable machine code that
//! clients may match on (`extensions.code` in GraphQL, `code` in problem details).
use chrono::{DateTime, Utc};

use crate::{AppointmentId, PractitionerId, ServiceId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{field}: {message}")]
    InvalidInput {
        field: &'static str,
        message: String,
    },
    #[error("practitioner {0} does not exist")]
    PractitionerNotFound(PractitionerId),
    #[error("practitioner {0} already exists")]
    PractitionerAlreadyExists(PractitionerId),
    #[error("practitioner {0} is inactive and cannot be booked")]
    PractitionerInactive(PractitionerId),
    #[error("service {0} does not exist")]
    ServiceNotFound(ServiceId),
    #[error("service {0} already exists")]
    ServiceAlreadyExists(ServiceId),
    #[error("service {0} is inactive and cannot be booked")]
    ServiceInactive(ServiceId),
    #[error("service {service} is not offered by practitioner {practitioner}")]
    ServiceNotOffered {
        service: ServiceId,
        practitioner: PractitionerId,
    },
    #[error("appointment {0} does not exist")]
    AppointmentNotFound(AppointmentId),
    #[error("appointment {0} already exists")]
    AppointmentAlreadyExists(AppointmentId),
    #[error("{start} is in the past")]
    InThePast { start: DateTime<Utc> },
    #[error("{start} is inside the minimum notice; the earliest bookable time is {earliest}")]
    InsideMinimumNotice {
        start: DateTime<Utc>,
        earliest: DateTime<Utc>,
    },
    #[error("{start} is beyond the booking window; the latest bookable time is {latest}")]
    BeyondBookingWindow {
        start: DateTime<Utc>,
        latest: DateTime<Utc>,
    },
    #[error("{start} is not a slot in the practitioner's availability for this service")]
    OutsideAvailability { start: DateTime<Utc> },
    #[error("the slot at {start} is already taken")]
    SlotTaken { start: DateTime<Utc> },
    #[error("the hold on {start} has expired and the time was taken meanwhile")]
    HoldExpired { start: DateTime<Utc> },
    #[error("hold {0} does not exist")]
    HoldNotFound(crate::ReservationId),
    #[error("cannot {action} an appointment that is {status}")]
    InvalidTransition {
        action: &'static str,
        status: &'static str,
    },
    #[error("check-in opens at {opens}")]
    CheckInTooEarly { opens: DateTime<Utc> },
    #[error("the appointment has not started yet; it starts at {start}")]
    NotStartedYet { start: DateTime<Utc> },
    #[error("the appointment is already at {start} with this practitioner")]
    SameTime { start: DateTime<Utc> },
    #[error("schedule exception {0} does not exist")]
    ExceptionNotFound(uuid::Uuid),
    #[error(
        "version {received} of this HIS record is not newer than the applied version {applied}"
    )]
    HisVersionNotNewer { applied: String, received: String },
    #[error("this HIS record's versions are {applied}, not {received}")]
    HisVersionKindChanged {
        applied: &'static str,
        received: &'static str,
    },
}

impl DomainError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        DomainError::InvalidInput {
            field,
            message: message.into(),
        }
    }

    /// The stable code clients match on. Never change an existing one.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::InvalidInput { .. } => "INVALID_INPUT",
            DomainError::PractitionerNotFound(_) => "PRACTITIONER_NOT_FOUND",
            DomainError::PractitionerAlreadyExists(_) => "PRACTITIONER_ALREADY_EXISTS",
            DomainError::PractitionerInactive(_) => "PRACTITIONER_INACTIVE",
            DomainError::ServiceNotFound(_) => "SERVICE_NOT_FOUND",
            DomainError::ServiceAlreadyExists(_) => "SERVICE_ALREADY_EXISTS",
            DomainError::ServiceInactive(_) => "SERVICE_INACTIVE",
            DomainError::ServiceNotOffered { .. } => "SERVICE_NOT_OFFERED",
            DomainError::AppointmentNotFound(_) => "APPOINTMENT_NOT_FOUND",
            DomainError::AppointmentAlreadyExists(_) => "APPOINTMENT_ALREADY_EXISTS",
            DomainError::InThePast { .. } => "IN_THE_PAST",
            DomainError::InsideMinimumNotice { .. } => "INSIDE_MINIMUM_NOTICE",
            DomainError::BeyondBookingWindow { .. } => "BEYOND_BOOKING_WINDOW",
            DomainError::OutsideAvailability { .. } => "OUTSIDE_AVAILABILITY",
            DomainError::SlotTaken { .. } => "SLOT_TAKEN",
            DomainError::HoldExpired { .. } => "HOLD_EXPIRED",
            DomainError::HoldNotFound(_) => "HOLD_NOT_FOUND",
            DomainError::InvalidTransition { .. } => "INVALID_TRANSITION",
            DomainError::CheckInTooEarly { .. } => "CHECK_IN_TOO_EARLY",
            DomainError::NotStartedYet { .. } => "NOT_STARTED_YET",
            DomainError::SameTime { .. } => "SAME_TIME",
            DomainError::ExceptionNotFound(_) => "EXCEPTION_NOT_FOUND",
            DomainError::HisVersionNotNewer { .. } => "STALE_VERSION",
            DomainError::HisVersionKindChanged { .. } => "VERSION_KIND_CHANGED",
        }
    }

    /// Whether the resource the command is about is missing (HTTP 404 rather than 409/422).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            DomainError::PractitionerNotFound(_)
                | DomainError::ServiceNotFound(_)
                | DomainError::AppointmentNotFound(_)
                | DomainError::ExceptionNotFound(_)
                | DomainError::HoldNotFound(_)
        )
    }
}

pub type DomainResult<T> = Result<T, DomainError>;
