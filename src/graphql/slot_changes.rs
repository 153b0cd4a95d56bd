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
//!
//! A widget hold that lapses frees time without an event, so the
//! subscription also keeps a timer at the end of every hold it sees, and
//! re-reads its days every [`RECHECK`] besides (holds made before it began,
//! and the minimum notice moving with the clock): a day is sent again then
//! only if its slots changed.
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::{Context, ErrorExtensions, Result, SimpleObject, Subscription, ID};
use buktor_domain::calendar::CalendarEvent;
use buktor_domain::{PractitionerId, ServiceId, TenantId};
use chrono::{DateTime, NaiveDate, Utc};
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
/// How often every day is read again for what no event announces.
const RECHECK: Duration = Duration::from_secs(15);

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
    /// When the holds seen so far lapse.
    lapses: Mutex<BTreeSet<DateTime<Utc>>>,
    /// Wakes the recheck timer when a hold is seen, to wait for its end.
    new_lapse: tokio::sync::Notify,
    /// The slots last sent per day, and the last position seen.
    sent: Mutex<(SentDays, Position)>,
}

/// What each practitioner-day's message last held: start and places of each slot.
type SentDays = HashMap<(PractitionerId, NaiveDate), Vec<(DateTime<Utc>, u32)>>;

/// Why the days are read again.
enum Trigger {
    Event(Box<std::result::Result<RecordedEvent, LiveError>>),
    Recheck,
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

    /// Remembers what a message sent; whether it differs from the last.
    fn note_sent(&self, change: &SlotChange) -> bool {
        let fingerprint: Vec<(DateTime<Utc>, u32)> = change
            .slots
            .iter()
            .map(|s| (s.start, s.remaining))
            .collect();
        let Ok(p) = change.practitioner_id.parse() else {
            return true;
        };
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent.0.insert((p, change.date), fingerprint.clone()) != Some(fingerprint)
    }

    /// Sleeps until the next hold lapses or the next recheck is due.
    async fn next_recheck(&self) {
        loop {
            let now = self.scheduler.now();
            let lapse = {
                let mut lapses = self.lapses.lock().unwrap_or_else(|e| e.into_inner());
                lapses.retain(|at| *at > now - chrono::Duration::seconds(1));
                lapses.first().copied()
            };
            let wait = lapse
                .and_then(|at| (at - now).to_std().ok())
                .map(|d| d + Duration::from_millis(200))
                .unwrap_or(RECHECK)
                .min(RECHECK);
            tokio::select! {
                _ = tokio::time::sleep(wait) => return,
                _ = self.new_lapse.notified() => {}
            }
        }
    }

    /// Every day whose slots changed since last sent.
    async fn changed_days(&self) -> Result<Vec<SlotChange>> {
        let at = self.sent.lock().unwrap_or_else(|e| e.into_inner()).1;
        let mut out = Vec::new();
        for p in &self.practitioners {
            for d in self.from.iter_days().take_while(|d| *d <= self.to) {
                let change = self.day(*p, d, at).await?;
                if self.note_sent(&change) {
                    out.push(change);
                }
            }
        }
        Ok(out)
    }

    /// The messages one event or recheck makes.
    async fn on(&self, trigger: Trigger) -> Result<Vec<SlotChange>> {
        let event = match trigger {
            Trigger::Recheck => return self.changed_days().await,
            Trigger::Event(event) => (*event).map_err(live_error)?,
        };
        if let Some(at) = hold_ends(&event) {
            self.lapses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(at);
            self.new_lapse.notify_one();
        }
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).1 = event.position;
        let touched = self.touched(&event);
        if touched.is_empty() {
            return Ok(vec![]);
        }
        if let Err(e) = self
            .side
            .wait_for(self.tenant, event.position, AT_LEAST_TIMEOUT)
            .await
        {
            return Err(async_graphql::Error::new(e.to_string())
                .extend_with(|_, ext| ext.set("code", "NOT_CAUGHT_UP")));
        }
        let mut out = Vec::new();
        for (p, d) in touched {
            let change = self.day(p, d, event.position).await?;
            self.note_sent(&change);
            out.push(change);
        }
        Ok(out)
    }
}

/// When the hold an event made lapses, if it made one: a lapse frees time
/// without an event of its own, so a slot stream sets a timer for it.
pub(crate) fn hold_ends(e: &RecordedEvent) -> Option<DateTime<Utc>> {
    if e.event_type != "SlotReserved" {
        return None;
    }
    match crate::app::decode_event::<CalendarEvent>(e) {
        Ok(CalendarEvent::SlotReserved { reservation, .. }) => Some(reservation.expires_at),
        _ => None,
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
        for (field, date) in [("from", from), ("to", to)] {
            buktor_domain::time::check_date(field, date).map_err(|e| app_error(e.into()))?;
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
        let live = ctx
            .data::<Arc<LiveFeed>>()
            .map_err(|_| app_error(AppError::Corrupt("no live feed".into())))?
            .clone();
        // Everything up to `start` is in the first messages; the feed
        // delivers every event after it.
        let side = read_side(ctx).clone();
        let start = side
            .position(principal.tenant_id())
            .await
            .map_err(|e| app_error(AppError::Store(e)))?;
        let watch = Arc::new(Watch {
            tenant: principal.tenant_id(),
            time_zone: principal.tenant.time_zone,
            practitioners,
            service: service_id
                .map(|id| parse_id("serviceId", &id))
                .transpose()?,
            from,
            to,
            side,
            scheduler: scheduler(ctx).clone(),
            lapses: Mutex::new(BTreeSet::new()),
            new_lapse: tokio::sync::Notify::new(),
            sent: Mutex::new((HashMap::new(), start)),
        });
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
                async move {
                    let change = watch.day(p, d, start).await?;
                    watch.note_sent(&change);
                    Ok(change)
                }
            })
        };
        let events = live
            .follow(watch.tenant, Some(start))
            .map(|e| Trigger::Event(Box::new(e)));
        let rechecks = futures::stream::unfold(watch.clone(), |watch| async move {
            watch.next_recheck().await;
            Some((Trigger::Recheck, watch))
        })
        .take_until(live.stopped());
        let changes = futures::stream::select(events, rechecks)
            .then(move |trigger| {
                let watch = watch.clone();
                async move { watch.on(trigger).await }
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
