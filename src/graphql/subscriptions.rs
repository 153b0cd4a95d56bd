//! GraphQL subscriptions, over WebSocket (`graphql-transport-ws`, see
//! `crate::http`).
//!
//! `appointmentEvents(filter, fromPosition)`: the caller's hospital's
//! appointment events (streams `appointment-…`), first those after
//! `fromPosition` (exclusive) out of the store, then each new one as it is
//! stored; every event exactly once and in position order, also across the
//! switch from the store to the live feed and when the subscriber is slow
//! (see `LiveFeed::follow`). `fromPosition: null` delivers only events stored
//! from now on. A client that reconnects resumes with the last position it
//! received.
//!
//! Filters (all given ones must match; null or an empty list does not filter):
//! - `appointmentIds`: events of these appointments;
//! - `types`: event types (`AppointmentBooked`, `AppointmentCancelled`, …);
//! - `practitionerIds`: events of appointments that are, at that event, with
//!   one of these practitioners. `AppointmentBooked` and
//!   `AppointmentRescheduled` name the practitioner; a reschedule matches
//!   both the practitioner it moves from and the one it moves to. For the
//!   other events (cancelled, checked in, …) the appointment's practitioner
//!   as of that event is used: learnt from the events the subscription has
//!   seen, or else read from the appointment's stream. So an appointment
//!   booked before `fromPosition` still has its later cancellation delivered.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_graphql::{Context, Error, ErrorExtensions, InputObject, Result, Subscription, ID};
use buktor_domain::TenantId;
use futures::{Stream, StreamExt};

use super::events::Event;
use super::{app_error, invalid, principal};
use crate::app::AppError;
use crate::live::{LiveError, LiveFeed};
use crate::store::{Position, RecordedEvent, Store};

const APPOINTMENT_PREFIX: &str = "appointment-";
/// At most this many entries in each filter list.
const MAX_FILTER_ENTRIES: usize = 1000;
/// Appointments whose practitioner a subscription remembers; past this it
/// forgets them all and reads streams again when needed.
const MAX_REMEMBERED: usize = 100_000;

/// Which appointment events a subscriber wants; all given lists must match.
#[derive(InputObject, Default, Debug)]
pub struct AppointmentEventFilter {
    pub appointment_ids: Option<Vec<ID>>,
    /// Events of appointments with one of these practitioners at that event.
    pub practitioner_ids: Option<Vec<ID>>,
    pub types: Option<Vec<String>>,
}

#[derive(Default)]
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Appointment events after `fromPosition` (exclusive; null = only events
    /// stored from now on), then live, each exactly once in position order.
    async fn appointment_events(
        &self,
        ctx: &Context<'_>,
        filter: Option<AppointmentEventFilter>,
        from_position: Option<String>,
    ) -> Result<impl Stream<Item = Result<Event>>> {
        let tenant = principal(ctx).tenant_id();
        let from = match from_position {
            None => None,
            Some(p) => Some(
                p.parse::<Position>()
                    .map_err(|e| invalid("fromPosition", e.to_string()))?,
            ),
        };
        let matcher = Matcher::new(filter.unwrap_or_default())?;
        let live = ctx
            .data::<Arc<LiveFeed>>()
            .map_err(|_| {
                tracing::error!("a subscription without the live feed in its data");
                Error::new("internal error").extend_with(|_, e| e.set("code", "INTERNAL"))
            })?
            .clone();
        let store = live.store().clone();
        let events = Box::pin(live.follow(tenant, from));
        let state = (events, matcher, store);
        Ok(futures::stream::unfold(
            state,
            move |(mut events, mut matcher, store)| async move {
                loop {
                    let item = match events.next().await? {
                        Ok(event) => match matcher.matches(&*store, tenant, &event).await {
                            Ok(true) => Event::new(event),
                            Ok(false) => continue,
                            Err(e) => Err(e),
                        },
                        Err(LiveError::ShuttingDown) => Err(Error::new(
                            "the server is shutting down; resubscribe from the last position received",
                        )
                        .extend_with(|_, e| e.set("code", "SHUTTING_DOWN"))),
                        Err(LiveError::Store(e)) => Err(app_error(AppError::Store(e))),
                    };
                    return Some((item, (events, matcher, store)));
                }
            },
        ))
    }
}

struct Matcher {
    appointment_streams: Option<HashSet<String>>,
    practitioners: Option<HashSet<String>>,
    types: Option<HashSet<String>>,
    /// Appointment stream → its practitioner after the last event seen.
    owners: HashMap<String, String>,
}

fn non_empty<T>(list: Option<Vec<T>>) -> Option<Vec<T>> {
    list.filter(|l| !l.is_empty())
}

fn check_len<T>(field: &'static str, list: &Option<Vec<T>>) -> Result<()> {
    match list {
        Some(l) if l.len() > MAX_FILTER_ENTRIES => Err(invalid(
            field,
            format!("at most {MAX_FILTER_ENTRIES} entries"),
        )),
        _ => Ok(()),
    }
}

fn parse_ids(field: &'static str, ids: Vec<ID>) -> Result<HashSet<String>> {
    ids.iter()
        .map(|id| {
            uuid::Uuid::parse_str(id)
                .map(|u| u.to_string())
                .map_err(|_| invalid(field, format!("{:?} is not a valid id", id.as_str())))
        })
        .collect()
}

impl Matcher {
    fn new(filter: AppointmentEventFilter) -> Result<Self> {
        check_len("filter.appointmentIds", &filter.appointment_ids)?;
        check_len("filter.practitionerIds", &filter.practitioner_ids)?;
        check_len("filter.types", &filter.types)?;
        let appointment_streams = non_empty(filter.appointment_ids)
            .map(|ids| parse_ids("filter.appointmentIds", ids))
            .transpose()?
            .map(|ids| {
                ids.into_iter()
                    .map(|id| format!("{APPOINTMENT_PREFIX}{id}"))
                    .collect()
            });
        let practitioners = non_empty(filter.practitioner_ids)
            .map(|ids| parse_ids("filter.practitionerIds", ids))
            .transpose()?;
        Ok(Matcher {
            appointment_streams,
            practitioners,
            types: non_empty(filter.types).map(|t| t.into_iter().collect()),
            owners: HashMap::new(),
        })
    }

    async fn matches(
        &mut self,
        store: &dyn Store,
        tenant: TenantId,
        e: &RecordedEvent,
    ) -> Result<bool> {
        if !e.stream_id.starts_with(APPOINTMENT_PREFIX) {
            return Ok(false);
        }
        // Learnt from every appointment event, matched or not.
        let named = payload_id(&e.payload, "practitioner_id");
        if let (Some(_), Some(p)) = (&self.practitioners, &named) {
            if self.owners.len() >= MAX_REMEMBERED {
                self.owners.clear();
            }
            self.owners.insert(e.stream_id.clone(), p.clone());
        }
        if self
            .types
            .as_ref()
            .is_some_and(|t| !t.contains(&e.event_type))
        {
            return Ok(false);
        }
        if self
            .appointment_streams
            .as_ref()
            .is_some_and(|s| !s.contains(&e.stream_id))
        {
            return Ok(false);
        }
        let Some(wanted) = &self.practitioners else {
            return Ok(true);
        };
        if let Some(p) = named {
            let previous = payload_id(&e.payload, "previous_practitioner_id");
            return Ok(wanted.contains(&p) || previous.is_some_and(|p| wanted.contains(&p)));
        }
        let owner = match self.owners.get(&e.stream_id) {
            Some(p) => Some(p.clone()),
            None => {
                // Booked before this subscription's first event: its stream says.
                let history = store
                    .read_stream(tenant, &e.stream_id, 0)
                    .await
                    .map_err(|err| app_error(AppError::Store(err)))?;
                let owner = history
                    .iter()
                    .filter(|h| h.version <= e.version)
                    .filter_map(|h| payload_id(&h.payload, "practitioner_id"))
                    .next_back();
                if let Some(p) = &owner {
                    self.owners.insert(e.stream_id.clone(), p.clone());
                }
                owner
            }
        };
        Ok(owner.is_some_and(|p| wanted.contains(&p)))
    }
}

fn payload_id(payload: &serde_json::Value, key: &str) -> Option<String> {
    payload.get(key)?.as_str().map(str::to_owned)
}
