//! Identifiers. Each is a newtype so a practitioner id can never be passed where
//! an appointment id is expected.
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered id (UUIDv7 keeps index inserts local).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

uuid_id!(
    /// A hospital. Every aggregate, event, query and API key belongs to exactly one.
    TenantId
);
uuid_id!(
    /// A doctor or other bookable clinician.
    PractitionerId
);
uuid_id!(
    /// A visit type.
    ServiceId
);
uuid_id!(
    /// One appointment, from booking to its end state.
    AppointmentId
);
uuid_id!(
    /// An event's own id, unique per tenant: lets consumers deduplicate.
    EventId
);
uuid_id!(
    /// A short hold on a slot while a patient fills in the booking form. Made
    /// with [`ReservationId::unguessable`]: whoever knows it can book the slot.
    ReservationId
);
uuid_id!(
    /// A patient as the HIS knows them, for contact data and notification
    /// preferences (Buktor keeps nothing clinical).
    PatientId
);

impl ReservationId {
    /// A random id: a time-ordered one would let others guess it.
    pub fn unguessable() -> Self {
        Self(Uuid::new_v4())
    }
}

/// A stable id for the HIS's id of one kind of record in one hospital, so
/// the HIS never needs Buktor's ids and every instance maps alike.
pub fn derived_uuid(tenant: TenantId, kind: &str, his_id: &str) -> Uuid {
    // The OID namespace only seeds the hash; the name is what matters.
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("buktor/{tenant}/{kind}/{his_id}").as_bytes(),
    )
}
