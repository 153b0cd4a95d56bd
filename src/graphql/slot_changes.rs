//! `slotChanges`: live availability for a booking screen.
//!
//! The subscription first sends the free slots of every practitioner-day it
//! covers, then, whenever an event changes one of those days (a booking,
//! reschedule or cancellation on its calendar, the practitioner's schedule,
//! a service), the day's free slots again, computed from the read models
//! once they have applied that event. Every message is the whole day, so a
//! client just replaces what it shows; nothing can be missed between the
//! first message and the live ones because the feed starts at the position
//! the first messages were computed at.
use std::collections::BTreeSet;
use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions, Result, SimpleObject, Subscription, ID};
use buktor_domain::{PractitionerId, ServiceId, TenantId};
use chrono::NaiveDate;
use chrono_tz::Tz;
use futures::{Stream, StreamExt};

use super::read::{read_side, view_error, AvailableSlot, AT_LEAST_TIMEOUT};
use super::{app_error, invalid, parse_id, principal, scheduler};
use crate::app::{AppError, Scheduler};
use crate::live::{LiveError, LiveFeed};
use crate::projection::views::SlotSearch;
use crate::projection::ReadSide;
use crate::store::{Position, RecordedEvent};

/// At most this many practitioners and days per subscription.
pub const MAX_PRACTITIONERS: usize = 20;
pub const MAX_DAYS: i64 = 31;

/// The free slots of one practitioner on one hospital-local day, as of `position`.
#[derive(SimpleObject)]
pub struct SlotChange {
    pub practitioner_id: ID,
    pub date: NaiveDate,
    /// The read models had applied the events up to here.
    pub position: String,
    pub slots: Vec<AvailableSlot>,
}

#[derive(Default)]
pub struct SlotSubscription;

struct Watch {
    tenant: TenantId,
    time_zone: Tz,
    practitioners: BTreeSet<PractitionerId>,
    service: Option<ServiceId>,
    from: NaiveDate,
    to: NaiveDate,
    side: Arc<ReadSide>,
    scheduler: Arc<Scheduler>,
}

impl Watch {
    fn touched(&self, e: &RecordedEvent) -> Vec<(PractitionerId, NaiveDate)> {
        touched_days(e, &self.practitioners, self.from, self.to)
    }

    async fn day(&self, p: PractitionerId, date: NaiveDate, at: Position) -> Result<SlotChange> {
        let search = SlotSearch {
            practitioner_ids: Some(vec![p]),
            service_id: self.service,
            specialty: None,
        };
        let slots = self
            .side
            .available_slots(self.tenant, &search, date, date, self.scheduler.now())
            .await
            .map_err(view_error)?;
        Ok(SlotChange {
            practitioner_id: ID(p.to_string()),
            date,
            position: at.to_string(),
            slots: slots
                .into_iter()
                .map(|o| AvailableSlot::shown_in(o, self.time_zone))
                .collect(),
        })
    }
}

/// The practitioner-days of `practitioners` on `from..=to` whose free
/// slots an event may have changed: its calendar day, or every day of a
/// practitioner whose schedule or record changed, or every day of all of
/// them when a service changed.
pub(crate) fn touched_days(
    e: &RecordedEvent,
    practitioners: &BTreeSet<PractitionerId>,
    from: NaiveDate,
    to: NaiveDate,
) -> Vec<(PractitionerId, NaiveDate)> {
    let all_days = |p: PractitionerId| {
        from.iter_days()
            .take_while(|d| *d <= to)
            .map(move |d| (p, d))
            .collect::<Vec<_>>()
    };
    let id = &e.stream_id;
    if let Some(rest) = id.strip_prefix("calendar-") {
        if rest.len() == 36 + 1 + 10 {
            if let (Ok(p), Ok(d)) = (rest[..36].parse(), rest[37..].parse::<NaiveDate>()) {
                if practitioners.contains(&p) && d >= from && d <= to {
                    return vec![(p, d)];
                }
            }
        }
        return vec![];
    }
    for prefix in ["schedule-", "practitioner-"] {
        if let Some(p) = id.strip_prefix(prefix).and_then(|p| p.parse().ok()) {
            return if practitioners.contains(&p) {
                all_days(p)
            } else {
                vec![]
            };
        }
    }
    if id.starts_with("service-") {
        return practitioners.iter().flat_map(|p| all_days(*p)).collect();
    }
    vec![]
}

fn live_error(e: LiveError) -> async_graphql::Error {
    match e {
        LiveError::ShuttingDown => {
            async_graphql::Error::new("the server is shutting down; subscribe again")
                .extend_with(|_, e| e.set("code", "SHUTTING_DOWN"))
        }
        LiveError::Store(e) => app_error(AppError::Store(e)),
    }
}

#[Subscription]
impl SlotSubscription {
    /// The free slots of the practitioners on the hospital-local dates
    /// `from..=to` (for one service, or all they offer): first every day,
    /// then each day again whenever it changes.
    async fn slot_changes(
        &self,
        ctx: &Context<'_>,
        practitioner_ids: Vec<ID>,
        service_id: Option<ID>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<impl Stream<Item = Result<SlotChange>>> {
        if practitioner_ids.is_empty() || practitioner_ids.len() > MAX_PRACTITIONERS {
            return Err(invalid(
                "practitionerIds",
                format!("name 1 to {MAX_PRACTITIONERS} practitioners"),
            ));
        }
        if to < from || (to - from).num_days() >= MAX_DAYS {
            return Err(invalid(
                "to",
                format!("from..=to covers 1 to {MAX_DAYS} days"),
            ));
        }
        let practitioners = practitioner_ids
            .iter()
            .map(|id| parse_id("practitionerIds", id))
            .collect::<Result<BTreeSet<PractitionerId>>>()?;
        let principal = principal(ctx);
        let watch = Arc::new(Watch {
            tenant: principal.tenant_id(),
            time_zone: principal.tenant.time_zone,
            practitioners,
            service: service_id
                .map(|id| parse_id("serviceId", &id))
                .transpose()?,
            from,
            to,
            side: read_side(ctx).clone(),
            scheduler: scheduler(ctx).clone(),
        });
        let live = ctx
            .data::<Arc<LiveFeed>>()
            .map_err(|_| app_error(AppError::Corrupt("no live feed".into())))?
            .clone();
        // Everything up to `start` is in the first messages; the feed
        // delivers every event after it.
        let start = watch
            .side
            .position(watch.tenant)
            .await
            .map_err(|e| app_error(AppError::Store(e)))?;
        let first: Vec<(PractitionerId, NaiveDate)> = watch
            .practitioners
            .iter()
            .flat_map(|p| {
                from.iter_days()
                    .take_while(|d| *d <= to)
                    .map(move |d| (*p, d))
            })
            .collect();
        let initial = {
            let watch = watch.clone();
            futures::stream::iter(first).then(move |(p, d)| {
                let watch = watch.clone();
                async move { watch.day(p, d, start).await }
            })
        };
        let events = live.follow(watch.tenant, Some(start));
        let changes = events
            .then(move |event| {
                let watch = watch.clone();
                async move {
                    let event = event.map_err(live_error)?;
                    let touched = watch.touched(&event);
                    if touched.is_empty() {
                        return Ok(vec![]);
                    }
                    if let Err(e) = watch
                        .side
                        .wait_for(watch.tenant, event.position, AT_LEAST_TIMEOUT)
                        .await
                    {
                        return Err(async_graphql::Error::new(e.to_string())
                            .extend_with(|_, ext| ext.set("code", "NOT_CAUGHT_UP")));
                    }
                    let mut out = Vec::new();
                    for (p, d) in touched {
                        out.push(watch.day(p, d, event.position).await?);
                    }
                    Ok(out)
                }
            })
            .flat_map(|batch: Result<Vec<SlotChange>>| {
                futures::stream::iter(match batch {
                    Ok(changes) => changes.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(e) => vec![Err(e)],
                })
            });
        Ok(initial.chain(changes))
    }
}
