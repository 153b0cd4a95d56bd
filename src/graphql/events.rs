//! The event log for integrators: `events(after, first, types, streams)`, a
//! Relay connection over the caller's hospital's events in global order.
//!
//! - The cursor of an edge is the event's position (`"tx.seq"`); `after`
//!   takes any position, so a reader resumes from the last one it handled.
//! - `first`: 0 to 1000, default 100; more is refused with `INVALID_INPUT`
//!   (`field: "first"`), as is a malformed `after` (`field: "after"`).
//! - `types`: event type names (`AppointmentBooked`, …); `streams`: stream
//!   ids, where an entry ending in `-` is a prefix (`appointment-` is every
//!   appointment, `calendar-<practitioner>-` one practitioner's calendar
//!   days) and any other entry an exact id. An event is returned if it
//!   matches both lists; null or an empty list does not filter.
//! - `hasNextPage` says whether an event after the page (matching the
//!   filters) can be read now; `endCursor` is the last edge's position. An
//!   empty page leaves the reader's cursor where it was.
//!
//! Every role may read its own hospital's log (admin, staff, his-system and
//! auditor keys; patients hold no keys). Filters are applied while reading
//! the log in order, so a filter that matches little reads far.
use async_graphql::connection::{Connection, CursorType, Edge};
use async_graphql::{Context, Object, Result, ID};
use buktor_domain::EventMetadata;
use chrono::{DateTime, Utc};

use super::types::Actor;
use super::{app_error, invalid, principal, scheduler};
use crate::app::AppError;
use crate::feed::EventFilter;
use crate::store::{InvalidPosition, Position, RecordedEvent};

/// `first` when not given.
pub const DEFAULT_PAGE: usize = 100;
/// The largest `first`.
pub const MAX_PAGE: usize = 1000;
/// At most this many entries in `types` and in `streams`.
const MAX_FILTER_ENTRIES: usize = 100;

/// An edge cursor: a position in the tenant's global order.
pub struct Cursor(pub Position);

impl CursorType for Cursor {
    type Error = InvalidPosition;

    fn decode_cursor(s: &str) -> Result<Self, Self::Error> {
        s.parse().map(Cursor)
    }

    fn encode_cursor(&self) -> String {
        self.0.to_string()
    }
}

pub type EventConnection = Connection<Cursor, Event, ScanInfo>;

/// How far a filtered read got.
#[derive(async_graphql::SimpleObject)]
pub struct ScanInfo {
    /// The position up to which the log was read for this page. A filter
    /// that matches few events may end a page early (at most
    /// 10,000 events are read per request): then `hasNextPage` is true and
    /// the next page is asked with `after` = this.
    pub scanned_to: Option<String>,
}

/// One stored event with its metadata.
pub struct Event {
    event: RecordedEvent,
    meta: EventMetadata,
}

impl Event {
    pub fn new(event: RecordedEvent) -> Result<Event> {
        let meta: EventMetadata = serde_json::from_value(event.metadata.clone()).map_err(|e| {
            app_error(AppError::Corrupt(format!(
                "metadata of event {}: {e}",
                event.event_id
            )))
        })?;
        Ok(Event { event, meta })
    }
}

#[Object]
impl Event {
    /// The event's place in the hospital's global order (`"tx.seq"`).
    async fn position(&self) -> String {
        self.event.position.to_string()
    }
    async fn event_id(&self) -> ID {
        ID(self.event.event_id.to_string())
    }
    /// `{type}-{id}`, e.g. `appointment-<uuid>`.
    async fn stream_id(&self) -> &str {
        &self.event.stream_id
    }
    /// The event's version in its stream, from 1.
    async fn version(&self) -> i64 {
        self.event.version
    }
    #[graphql(name = "type")]
    async fn event_type(&self) -> &str {
        &self.event.event_type
    }
    /// The version of the payload's schema, as stored.
    async fn schema_version(&self) -> i32 {
        self.event.schema_version
    }
    /// When the command was handled.
    async fn occurred_at(&self) -> DateTime<Utc> {
        self.meta.occurred_at
    }
    /// When the store recorded it.
    async fn recorded_at(&self) -> DateTime<Utc> {
        self.event.recorded_at
    }
    async fn actor(&self) -> Actor {
        Actor::new(&self.meta.actor)
    }
    /// The channel: widget, admin, his-api, cli or system.
    async fn source(&self) -> &'static str {
        self.meta.source.as_str()
    }
    async fn remote_addr(&self) -> Option<&str> {
        self.meta.remote_addr.as_deref()
    }
    async fn correlation_id(&self) -> ID {
        ID(self.meta.correlation_id.to_string())
    }
    /// The payload as stored (JSON).
    async fn data(&self) -> async_graphql::Json<&serde_json::Value> {
        async_graphql::Json(&self.event.payload)
    }
}

/// The log filter, with the sizes a request may ask for checked.
fn event_filter(types: Option<Vec<String>>, streams: Option<Vec<String>>) -> Result<EventFilter> {
    let types = types.unwrap_or_default();
    let streams = streams.unwrap_or_default();
    if types.len() > MAX_FILTER_ENTRIES {
        return Err(invalid(
            "types",
            format!("at most {MAX_FILTER_ENTRIES} types"),
        ));
    }
    if streams.len() > MAX_FILTER_ENTRIES {
        return Err(invalid(
            "streams",
            format!("at most {MAX_FILTER_ENTRIES} streams"),
        ));
    }
    if streams.iter().any(|s| s.is_empty()) {
        return Err(invalid("streams", "a stream id or prefix is empty"));
    }
    Ok(EventFilter::new(types, streams))
}

#[derive(Default)]
pub struct EventsQuery;

#[Object]
impl EventsQuery {
    /// The hospital's events in global order, after the position `after`
    /// (exclusive; null = from the start). `first`: 0 to 1000, default 100.
    /// `types`: event types; `streams`: stream ids, an entry ending in `-`
    /// being a prefix (`appointment-`). Both filters must match.
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        first: Option<i32>,
        types: Option<Vec<String>>,
        streams: Option<Vec<String>>,
    ) -> Result<EventConnection> {
        let first = match first {
            None => DEFAULT_PAGE,
            Some(n) if (0..=MAX_PAGE as i32).contains(&n) => n as usize,
            Some(n) => {
                return Err(invalid(
                    "first",
                    format!("must be between 0 and {MAX_PAGE}, got {n}"),
                ))
            }
        };
        let after = match after {
            None => None,
            Some(a) => Some(
                a.parse::<Position>()
                    .map_err(|e| invalid("after", e.to_string()))?,
            ),
        };
        let filter = event_filter(types, streams)?;
        let scan = crate::feed::scan(
            scheduler(ctx).store().as_ref(),
            principal(ctx).tenant_id(),
            after.unwrap_or(Position::START),
            first,
            &filter,
        )
        .await
        .map_err(|e| app_error(e.into()))?;
        let mut connection = Connection::with_additional_fields(
            after.is_some(),
            scan.has_more,
            ScanInfo {
                scanned_to: (scan.scanned_to != Position::START)
                    .then(|| scan.scanned_to.to_string()),
            },
        );
        for event in scan.events {
            let cursor = Cursor(event.position);
            connection.edges.push(Edge::new(cursor, Event::new(event)?));
        }
        Ok(connection)
    }
}
