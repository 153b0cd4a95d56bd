//! `GET /widget/v1/{tenant}/slots/stream`: the widget's live slots, as
//! Server-Sent Events (`event: day`, the whole practitioner-day each time).
//!
//! Like the GraphQL `slotChanges` subscription it sends every day first,
//! computed at a read-model position, then follows the event feed from that
//! position, so nothing falls between. Unlike it, it also re-reads the days
//! when a hold lapses: a lapse is no event (the domain just stops counting
//! the hold), so the stream sets a timer at each hold's end it sees, and
//! re-reads every day on a slow tick besides (holds made before it started,
//! and the minimum notice that moves with the clock).
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use buktor_domain::{PractitionerId, ServiceId};
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::widget::{answer, slot_json, Call, SlotQuery, Who};
use crate::graphql::slot_changes::{hold_ends, touched_days};
use crate::his::Problem;
use crate::http::AppState;
use crate::projection::views::SlotSearch;
use crate::store::Position;

/// Most practitioners one stream follows ("first available" of a big service).
const MAX_PRACTITIONERS: usize = 20;
/// How often every day is read again, and a keep-alive comment sent.
const TICK: Duration = Duration::from_secs(15);
/// How long to wait for the read models to apply an event before reading.
const CATCH_UP: Duration = Duration::from_secs(5);

struct Days {
    state: web::Data<AppState>,
    tenant: buktor_domain::TenantId,
    tz: chrono_tz::Tz,
    service: ServiceId,
    practitioners: BTreeSet<PractitionerId>,
    from: NaiveDate,
    to: NaiveDate,
    /// What was last sent per day, so an unchanged day is not sent again.
    sent: HashMap<(PractitionerId, NaiveDate), Value>,
}

impl Days {
    fn all(&self) -> Vec<(PractitionerId, NaiveDate)> {
        self.practitioners
            .iter()
            .flat_map(|p| {
                self.from
                    .iter_days()
                    .take_while(|d| *d <= self.to)
                    .map(move |d| (*p, d))
            })
            .collect()
    }

    /// The SSE messages for the days that changed since last sent.
    async fn refresh(&mut self, days: Vec<(PractitionerId, NaiveDate)>) -> Result<Vec<Bytes>, ()> {
        let now = self.state.scheduler.now();
        let mut out = Vec::new();
        for (p, d) in days {
            let search = SlotSearch {
                practitioner_ids: Some(vec![p]),
                service_id: Some(self.service),
                specialty: None,
            };
            let offered = self
                .state
                .read_side
                .available_slots(self.tenant, &search, d, d, now)
                .await
                .map_err(|e| tracing::warn!(error = ?e, "slot stream read failed"))?;
            let slots: Vec<Value> = offered.iter().map(|o| slot_json(o, self.tz)).collect();
            let message = json!({"practitionerId": p, "date": d, "slots": slots});
            if self.sent.get(&(p, d)) == Some(&message) {
                continue;
            }
            out.push(Bytes::from(format!("event: day\ndata: {message}\n\n")));
            self.sent.insert((p, d), message);
        }
        Ok(out)
    }
}

pub(super) async fn slots_stream(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<SlotQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    answer(&req, &state, &path, async |call| {
        let (days, start) = watch(&state, call, &query).await?;
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        tokio::spawn(follow(days, start, tx));
        // A staff session's stream ends when the session is revoked.
        let revoked: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            match &call.who {
                Who::Staff(p) => Box::pin(state.auth.revoked(p)),
                _ => Box::pin(std::future::pending()),
            };
        let body = futures::stream::unfold((rx, revoked), |(mut rx, mut revoked)| async move {
            tokio::select! {
                _ = &mut revoked => None,
                chunk = rx.recv() => chunk.map(|c| (Ok::<_, actix_web::Error>(c), (rx, revoked))),
            }
        });
        Ok(HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header(("Cache-Control", "no-store"))
            // Proxies must pass each event on as it comes.
            .insert_header(("X-Accel-Buffering", "no"))
            .streaming(body))
    })
    .await
}

/// The days a stream covers, and the read-model position its first
/// messages are read at.
async fn watch(
    state: &web::Data<AppState>,
    call: &Call,
    query: &SlotQuery,
) -> Result<(Days, Position), Problem> {
    let range = query.parse()?;
    let service = range.service;
    let practitioners: BTreeSet<PractitionerId> = match range.practitioner {
        Some(one) => BTreeSet::from([one]),
        None => state
            .scheduler
            .service(call.tenant.id, service)
            .await
            .map_err(Problem::from)?
            .map(|s| s.details.practitioners.into_iter().collect())
            .unwrap_or_default(),
    };
    if practitioners.len() > MAX_PRACTITIONERS {
        return Err(super::invalid(buktor_domain::DomainError::invalid(
            "practitioner",
            format!("this service has over {MAX_PRACTITIONERS} practitioners: choose one"),
        )));
    }
    let start: Position = state
        .read_side
        .position(call.tenant.id)
        .await
        .map_err(|e| super::unavailable("slot stream start", &e))?;
    let days = Days {
        state: state.clone(),
        tenant: call.tenant.id,
        tz: call.tenant.time_zone,
        service,
        practitioners,
        from: range.from,
        to: range.to,
        sent: HashMap::new(),
    };
    Ok((days, start))
}

/// Feeds the stream until the client goes, the server stops or the store
/// fails (the widget then reconnects and starts over).
async fn follow(mut days: Days, start: Position, tx: mpsc::Sender<Bytes>) {
    let live = days.state.live.clone();
    let side = days.state.read_side.clone();
    let stopped = live.stopped();
    tokio::pin!(stopped);
    let mut events = Box::pin(live.follow(days.tenant, Some(start)));
    let mut lapses: BTreeSet<DateTime<Utc>> = BTreeSet::new();
    let mut tick = tokio::time::interval(TICK);
    tick.tick().await;
    let all = days.all();
    if !send_changes(&mut days, all, &tx).await {
        return;
    }
    loop {
        let now = days.state.scheduler.now();
        let next_lapse = lapses
            .first()
            .map(|at| (*at - now).to_std().unwrap_or_default() + Duration::from_millis(200));
        let lapse_timer = tokio::time::sleep(next_lapse.unwrap_or(TICK * 4));
        let touched = tokio::select! {
            _ = &mut stopped => return,
            _ = tx.closed() => return,
            _ = tick.tick() => {
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    return;
                }
                days.all()
            }
            _ = lapse_timer, if next_lapse.is_some() => {
                let now = days.state.scheduler.now();
                lapses.retain(|at| *at > now);
                days.all()
            }
            event = events.next() => {
                let Some(Ok(event)) = event else { return };
                if let Some(at) = hold_ends(&event) {
                    lapses.insert(at);
                }
                let touched = touched_days(&event, &days.practitioners, days.from, days.to);
                if touched.is_empty() {
                    continue;
                }
                if side.wait_for(days.tenant, event.position, CATCH_UP).await.is_err() {
                    return;
                }
                touched
            }
        };
        if !send_changes(&mut days, touched, &tx).await {
            return;
        }
    }
}

/// Whether the stream goes on: false once the client is gone or a read failed.
async fn send_changes(
    days: &mut Days,
    touched: Vec<(PractitionerId, NaiveDate)>,
    tx: &mpsc::Sender<Bytes>,
) -> bool {
    let Ok(chunks) = days.refresh(touched).await else {
        return false;
    };
    for chunk in chunks {
        if tx.send(chunk).await.is_err() {
            return false;
        }
    }
    true
}
