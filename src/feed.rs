//! The integrator event feed over plain HTTP, for integrators who do not
//! speak GraphQL:
//!
//! - `GET /events?after=POSITION&limit=N&types=A,B`: a page of the caller's
//!   hospital's events in global order, as JSON, with the position to ask
//!   after next.
//! - `GET /events/stream?after=POSITION&types=A,B`: Server-Sent Events, one
//!   per event with `id:` = its position, first the stored ones after
//!   `after` (or after the `Last-Event-ID` a reconnecting client sends), then
//!   live ones as they are stored, each exactly once and in order (the hand
//!   over is `crate::live`'s).
use std::collections::HashSet;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use buktor_domain::EventMetadata;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::http::{problem, AppState};
use crate::live::LiveError;
use crate::store::{Position, RecordedEvent};

/// Events per page when `limit` is not given, and the most one page holds.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1_000;
/// Events one page request reads at most while filtering; the answer says
/// where it stopped, so a sparse filter never makes a request unbounded.
pub const MAX_SCANNED: usize = 10_000;
/// Events read per store call while filtering.
const SCAN_PAGE: usize = 1_000;
/// A comment line this often keeps proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    after: Option<String>,
    limit: Option<usize>,
    /// Comma-separated event types, e.g. `AppointmentBooked,AppointmentCancelled`.
    types: Option<String>,
}

/// One event as the feed shows it.
#[derive(Debug, Serialize)]
pub struct FeedEvent {
    pub position: String,
    pub stream_id: String,
    pub version: i64,
    pub r#type: String,
    pub schema_version: i32,
    pub event_id: String,
    /// When the command was handled; `recorded_at` is when it was stored.
    pub occurred_at: Option<chrono::DateTime<chrono::Utc>>,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
    pub actor: Option<buktor_domain::Actor>,
    pub source: Option<buktor_domain::Source>,
    pub correlation_id: Option<String>,
    pub data: serde_json::Value,
}

impl From<&RecordedEvent> for FeedEvent {
    fn from(e: &RecordedEvent) -> Self {
        let meta: Option<EventMetadata> = serde_json::from_value(e.metadata.clone()).ok();
        FeedEvent {
            position: e.position.to_string(),
            stream_id: e.stream_id.clone(),
            version: e.version,
            r#type: e.event_type.clone(),
            schema_version: e.schema_version,
            event_id: e.event_id.to_string(),
            occurred_at: meta.as_ref().map(|m| m.occurred_at),
            recorded_at: e.recorded_at,
            actor: meta.as_ref().map(|m| m.actor.clone()),
            source: meta.as_ref().map(|m| m.source),
            correlation_id: meta.as_ref().map(|m| m.correlation_id.to_string()),
            data: e.payload.clone(),
        }
    }
}

/// Which events a reader of the log wants: types, and stream ids where an
/// entry ending in `-` is a prefix (`appointment-`). Empty lists match all.
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    types: Vec<String>,
    exact_streams: Vec<String>,
    stream_prefixes: Vec<String>,
}

impl EventFilter {
    pub fn new(types: Vec<String>, streams: Vec<String>) -> Self {
        let (stream_prefixes, exact_streams) = streams.into_iter().partition(|s| s.ends_with('-'));
        EventFilter {
            types,
            exact_streams,
            stream_prefixes,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty() && self.exact_streams.is_empty() && self.stream_prefixes.is_empty()
    }

    pub fn matches(&self, e: &RecordedEvent) -> bool {
        let type_ok = self.types.is_empty() || self.types.contains(&e.event_type);
        let stream_ok = (self.exact_streams.is_empty() && self.stream_prefixes.is_empty())
            || self.exact_streams.contains(&e.stream_id)
            || self
                .stream_prefixes
                .iter()
                .any(|p| e.stream_id.starts_with(p.as_str()));
        type_ok && stream_ok
    }
}

/// A page of the log.
#[derive(Debug)]
pub struct Scan {
    /// At most the `limit` asked for, in global order.
    pub events: Vec<RecordedEvent>,
    /// How far the log was read: the next page starts after it.
    pub scanned_to: Position,
    /// A matching event follows, or the scan stopped at [`MAX_SCANNED`].
    pub has_more: bool,
}

/// The tenant's events after `after` that match `filter`, at most `limit`,
/// reading at most [`MAX_SCANNED`] events.
pub async fn scan(
    store: &dyn crate::store::Store,
    tenant: buktor_domain::TenantId,
    after: Position,
    limit: usize,
    filter: &EventFilter,
) -> crate::store::StoreResult<Scan> {
    // One more than asked, to know whether there is a next page.
    let wanted = limit + 1;
    let read_size = if filter.is_empty() { wanted } else { SCAN_PAGE };
    let mut scanned_to = after;
    let mut events = Vec::with_capacity(wanted.min(SCAN_PAGE));
    let mut scanned = 0;
    let mut has_more = false;
    'scan: loop {
        let page = store.read_all(tenant, scanned_to, read_size).await?;
        let full = page.len() == read_size;
        for event in page {
            if !filter.matches(&event) {
                scanned_to = event.position;
                scanned += 1;
                continue;
            }
            if events.len() == limit {
                has_more = true;
                break 'scan;
            }
            scanned_to = event.position;
            scanned += 1;
            events.push(event);
        }
        if !full {
            break;
        }
        if scanned >= MAX_SCANNED {
            has_more = true;
            break;
        }
    }
    Ok(Scan {
        events,
        scanned_to,
        has_more,
    })
}

#[derive(Debug, Serialize)]
struct Page {
    events: Vec<FeedEvent>,
    /// Ask with `after` = this for the next page (unchanged when nothing new).
    next: String,
    /// More stored events follow `next` right now.
    has_more: bool,
}

fn invalid(detail: impl Into<String>) -> HttpResponse {
    problem(StatusCode::BAD_REQUEST, "INVALID_INPUT", detail)
}

/// A position from a query parameter or header; the error names it.
fn parse_position(field: &str, text: &str) -> Result<Position, String> {
    text.parse().map_err(|e| format!("{field}: {e}"))
}

fn parse_types(types: Option<&str>) -> Result<Vec<String>, String> {
    let Some(types) = types else {
        return Ok(Vec::new());
    };
    let set: HashSet<String> = types
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if set.len() > 50 || set.iter().any(|t| t.len() > 100) {
        return Err("types: at most 50 types of at most 100 characters".into());
    }
    Ok(set.into_iter().collect())
}

/// `GET /events`.
pub async fn page(
    req: HttpRequest,
    query: web::Query<FeedQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let principal = match crate::http::authenticated(&req, &state).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let after = match query.after.as_deref() {
        Some(a) => match parse_position("after", a) {
            Ok(p) => p,
            Err(why) => return invalid(why),
        },
        None => Position::START,
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return invalid(format!("limit: must be 1 to {MAX_LIMIT}"));
    }
    let types = match parse_types(query.types.as_deref()) {
        Ok(t) => t,
        Err(why) => return invalid(why),
    };
    let filter = EventFilter::new(types, Vec::new());
    let scan = match scan(
        state.store.as_ref(),
        principal.tenant_id(),
        after,
        limit,
        &filter,
    )
    .await
    {
        Ok(scan) => scan,
        Err(e) => {
            tracing::error!(error = ?e, "the event feed cannot read the store");
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "STORE_UNAVAILABLE",
                "try again",
            );
        }
    };
    HttpResponse::Ok().json(Page {
        events: scan.events.iter().map(FeedEvent::from).collect(),
        next: scan.scanned_to.to_string(),
        has_more: scan.has_more,
    })
}

fn sse_frame(e: &RecordedEvent) -> Bytes {
    let data = serde_json::to_string(&FeedEvent::from(e)).unwrap_or_default();
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        e.position, e.event_type
    ))
}

/// `GET /events/stream`.
pub async fn stream(
    req: HttpRequest,
    query: web::Query<FeedQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let principal = match crate::http::authenticated(&req, &state).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    // A reconnecting EventSource sends the last id it saw.
    let resume = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty());
    let from = match (resume, query.after.as_deref()) {
        (Some(id), _) => match parse_position("Last-Event-ID", id.trim()) {
            Ok(p) => Some(p),
            Err(why) => return invalid(why),
        },
        (None, Some(a)) => match parse_position("after", a) {
            Ok(p) => Some(p),
            Err(why) => return invalid(why),
        },
        (None, None) => None,
    };
    let types = match parse_types(query.types.as_deref()) {
        Ok(t) => t,
        Err(why) => return invalid(why),
    };
    let events = Box::pin(state.live.follow(principal.tenant_id(), from));
    let filter = EventFilter::new(types, Vec::new());
    // The stream ends when the caller's key or session is revoked.
    let revoked = Box::pin(state.auth.revoked(&principal));
    let state = (
        events,
        filter,
        tokio::time::Instant::now() + KEEP_ALIVE,
        revoked,
    );
    let body = futures::stream::unfold(
        state,
        |(mut events, filter, mut ping, mut revoked)| async move {
            loop {
                tokio::select! {
                    _ = &mut revoked => return None,
                    next = events.next() => {
                        ping = tokio::time::Instant::now() + KEEP_ALIVE;
                        match next? {
                            Ok(e) if filter.matches(&e) => {
                                return Some((Ok::<_, actix_web::Error>(sse_frame(&e)), (events, filter, ping, revoked)));
                            }
                            Ok(_) => continue,
                            Err(LiveError::ShuttingDown) => return None,
                            Err(LiveError::Store(e)) => {
                                tracing::error!(error = ?e, "the event stream cannot read the store");
                                return None;
                            }
                        }
                    }
                    _ = tokio::time::sleep_until(ping) => {
                        ping = tokio::time::Instant::now() + KEEP_ALIVE;
                        return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), (events, filter, ping, revoked)));
                    }
                }
            }
        },
    );
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}
