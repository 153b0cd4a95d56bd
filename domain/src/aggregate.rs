//! The small event-sourcing model the domain is written in.
//!
//! Not cqrs-es's `Aggregate`: its `handle` is async and takes one aggregate,
//! while a booking decides over several streams (the appointment and the
//! practitioner's day) that must be written atomically. Here deciding is a
//! plain function over loaded states, and `apply` only folds events.
use serde::{de::DeserializeOwned, Serialize};

/// An event type of one aggregate. Serialized as `{"VariantName": {...}}`;
/// the variant name is the stored event type, the inner object the payload.
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + std::fmt::Debug {
    /// The current schema version of each event type. Bump it when a payload
    /// changes shape and add the step to [`DomainEvent::upcast`].
    fn schema_version(_event_type: &str) -> i32 {
        1
    }

    /// Brings a stored payload of an older schema version up to the current
    /// one, one version at a time. Unknown versions are an error.
    fn upcast(
        event_type: &str,
        from_version: i32,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        if from_version == Self::schema_version(event_type) {
            Ok(payload)
        } else {
            Err(format!(
                "no upcaster for {event_type} from schema version {from_version}"
            ))
        }
    }
}

/// State rebuilt from a stream's events.
pub trait Aggregate: Default + Clone + std::fmt::Debug {
    type Event: DomainEvent;
    /// The stream id prefix, e.g. `appointment`.
    const STREAM_TYPE: &'static str;

    /// Folds one event into the state. Must not fail: events are facts.
    fn apply(&mut self, event: &Self::Event);

    fn from_events<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self
    where
        Self::Event: 'a,
    {
        let mut state = Self::default();
        for e in events {
            state.apply(e);
        }
        state
    }
}

/// An event as stored: type name, schema version and payload.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedEvent {
    pub event_type: String,
    pub schema_version: i32,
    pub payload: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {event_type} v{schema_version}: {reason}")]
pub struct DecodeError {
    pub event_type: String,
    pub schema_version: i32,
    pub reason: String,
}

pub fn encode<E: DomainEvent>(event: &E) -> EncodedEvent {
    // Externally tagged: {"Variant": payload}. Serializing our own types to a Value cannot fail.
    let value = serde_json::to_value(event).unwrap_or_default();
    let (event_type, payload) = match value {
        serde_json::Value::Object(map) if map.len() == 1 => {
            map.into_iter().next().unwrap_or_default()
        }
        serde_json::Value::String(unit) => (unit, serde_json::Value::Null),
        other => (String::new(), other),
    };
    EncodedEvent {
        schema_version: E::schema_version(&event_type),
        event_type,
        payload,
    }
}

pub fn decode<E: DomainEvent>(
    event_type: &str,
    schema_version: i32,
    payload: serde_json::Value,
) -> Result<E, DecodeError> {
    let fail = |reason: String| DecodeError {
        event_type: event_type.to_owned(),
        schema_version,
        reason,
    };
    let mut version = schema_version;
    let mut payload = payload;
    let current = E::schema_version(event_type);
    if version > current {
        return Err(fail(format!("newer than this server's v{current}")));
    }
    while version < current {
        payload = E::upcast(event_type, version, payload).map_err(fail)?;
        version += 1;
    }
    let mut tagged = serde_json::Map::new();
    tagged.insert(event_type.to_owned(), payload);
    serde_json::from_value(serde_json::Value::Object(tagged)).map_err(|e| fail(e.to_string()))
}
