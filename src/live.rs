//! The live feed: every event of a tenant, in the store's global order, as
//! soon as this process can read it, for GraphQL subscriptions.
//!
//! One follower task per process tails the store for every tenant with
//! [`EventStore::read_all`] (the order a follower can trust never to skip an
//! event) and publishes each event on the tenant's `broadcast` channel. It
//! polls every [`POLL_INTERVAL`] and wakes at once when this process appends
//! (`Scheduler::watch_appends`); writes of other instances on the same PostgreSQL
//! arrive with the next poll. Tenants without subscribers are polled only
//! every [`IDLE_POLL_INTERVAL`], to keep their head current cheaply.
//!
//! The follower starts with the first subscription, on the runtime that made
//! the feed (not on an HTTP worker's). It first reads every known tenant's
//! log to its head (one scan, so that a feed publishes only new events), then
//! follows from there; a tenant created later is followed from its start.
//! The tenant list is refreshed every [`TENANT_REFRESH`], and a subscription
//! for a tenant the follower does not know yet adds it at once.
//!
//! Each published item carries the position of the event published before it
//! on the same channel (`prev`), so the items of a channel form a chain.
//! [`LiveFeed::follow`] uses it to hand over from the store to the feed with
//! no gap and no duplicate; see there.
//!
//! [`LiveFeed::stop`] (on SIGTERM/SIGINT) ends the follower and closes every
//! channel: every live subscription then ends.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use buktor_domain::TenantId;
use futures::Stream;
use tokio::sync::{broadcast, watch, Notify};

use crate::store::{Position, RecordedEvent, Store, StoreError};

/// How often the follower reads the store of tenants with subscribers.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How often it reads the store of tenants without subscribers.
pub const IDLE_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often the follower asks the directory for new tenants.
pub const TENANT_REFRESH: Duration = Duration::from_secs(1);
/// Events a subscriber may fall behind the feed before it is switched back
/// to reading the store (it loses nothing: see [`LiveFeed::follow`]).
pub const CHANNEL_CAPACITY: usize = 1024;
/// Events per store read, for the follower and for catching up.
pub const PAGE: usize = 500;

/// One event as published: `prev` is the position of the event published
/// just before it on the tenant's channel (or the head the follower started
/// from), so consecutive items satisfy `item.prev == previous.event.position`.
#[derive(Debug)]
pub struct LiveEvent {
    pub prev: Position,
    pub event: RecordedEvent,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Channel {
    sender: broadcast::Sender<Arc<LiveEvent>>,
    /// The position of the last event published (or of the head the
    /// follower starts from): the next item's `prev`.
    head: Position,
    last_poll: Option<Instant>,
}

impl Channel {
    fn new(head: Position) -> Self {
        Channel {
            sender: broadcast::channel(CHANNEL_CAPACITY).0,
            head,
            last_poll: None,
        }
    }
}

pub struct LiveFeed {
    store: Arc<dyn Store>,
    /// Changes after each append of this instance (`Scheduler::watch_appends`).
    appends: Mutex<Option<watch::Receiver<u64>>>,
    /// Wakes the follower when a subscriber arrives.
    woken: Notify,
    runtime: Option<tokio::runtime::Handle>,
    channels: Mutex<HashMap<TenantId, Channel>>,
    started: std::sync::Once,
    /// True once the follower knows every tenant's head.
    ready: watch::Sender<bool>,
    stopped: watch::Sender<bool>,
}

/// A new receiver and the `prev` of the first item it will get.
struct Subscribed {
    rx: broadcast::Receiver<Arc<LiveEvent>>,
    head: Position,
}

impl LiveFeed {
    /// A feed over `store`, woken by `appends`. Must be made inside the
    /// Tokio runtime the follower is to run on; nothing runs until the first
    /// subscription.
    pub fn new(store: Arc<dyn Store>, appends: watch::Receiver<u64>) -> Arc<Self> {
        Arc::new(LiveFeed {
            store,
            appends: Mutex::new(Some(appends)),
            woken: Notify::new(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            channels: Mutex::new(HashMap::new()),
            started: std::sync::Once::new(),
            ready: watch::channel(false).0,
            stopped: watch::channel(false).0,
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Stops the follower and ends every subscription. Idempotent.
    pub fn stop(&self) {
        self.stopped.send_replace(true);
        self.lock().clear();
    }

    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Resolves once [`stop`](Self::stop) was called.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stopped.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Channel>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ensure_started(self: &Arc<Self>) {
        self.started.call_once(|| {
            let feed = self.clone();
            let task = async move { feed.run().await };
            match &self.runtime {
                Some(rt) => drop(rt.spawn(task)),
                None => drop(tokio::spawn(task)),
            }
        });
    }

    async fn subscribe(self: &Arc<Self>, tenant: TenantId) -> Result<Subscribed, LiveError> {
        self.ensure_started();
        let mut ready = self.ready.subscribe();
        tokio::select! {
            r = ready.wait_for(|r| *r) => { r.map_err(|_| LiveError::ShuttingDown)?; }
            _ = self.stopped() => return Err(LiveError::ShuttingDown),
        }
        let mut channels = self.lock();
        // Checked under the lock: `stop` sets the flag before it clears the
        // channels, so no channel is added after the clearing.
        if self.is_stopped() {
            return Err(LiveError::ShuttingDown);
        }
        let fresh = !channels.contains_key(&tenant);
        // A tenant the follower has not seen was created after it listed the
        // tenants, so its whole log is new: follow it from the start.
        let channel = channels
            .entry(tenant)
            .or_insert_with(|| Channel::new(Position::START));
        let subscribed = Subscribed {
            rx: channel.sender.subscribe(),
            head: channel.head,
        };
        // Poll this tenant at once rather than at its idle interval.
        channel.last_poll = None;
        drop(channels);
        if fresh {
            tracing::debug!(%tenant, "live feed follows a new tenant");
        }
        self.woken.notify_one();
        Ok(subscribed)
    }

    async fn run(self: Arc<Self>) {
        tracing::info!("live feed started");
        let mut stopped = self.stopped.subscribe();
        let mut last_refresh = None::<Instant>;
        let mut failures = 0u32;
        let mut appends = self
            .appends
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        loop {
            if *stopped.borrow() {
                break;
            }
            let result = if *self.ready.borrow() {
                self.tick(&mut last_refresh).await
            } else {
                self.start_heads().await
            };
            let pause = match result {
                Ok(()) => {
                    failures = 0;
                    POLL_INTERVAL
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = ?e, failures, "live feed cannot read the store");
                    POLL_INTERVAL * 2u32.pow(failures.min(7))
                }
            };
            let appended = async {
                match appends.as_mut() {
                    Some(rx) => {
                        if rx.changed().await.is_err() {
                            // No writer in this process any more: poll only.
                            appends = None;
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = appended => {}
                _ = self.woken.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = stopped.wait_for(|s| *s) => {}
            }
        }
        self.lock().clear();
        tracing::info!("live feed stopped");
    }

    /// Learns every known tenant's head; then the feed is ready.
    async fn start_heads(&self) -> Result<(), StoreError> {
        let mut heads = Vec::new();
        for tenant in self.store.tenants().await? {
            let mut head = Position::START;
            loop {
                let page = self.store.read_all(tenant.id, head, 1000).await?;
                if let Some(last) = page.last() {
                    head = last.position;
                }
                if page.len() < 1000 {
                    break;
                }
            }
            heads.push((tenant.id, head));
        }
        let mut channels = self.lock();
        for (tenant, head) in heads {
            channels.entry(tenant).or_insert_with(|| Channel::new(head));
        }
        drop(channels);
        self.ready.send_replace(true);
        tracing::debug!("live feed knows every tenant's head");
        Ok(())
    }

    async fn tick(&self, last_refresh: &mut Option<Instant>) -> Result<(), StoreError> {
        if last_refresh.is_none_or(|t| t.elapsed() >= TENANT_REFRESH) {
            let tenants = self.store.tenants().await?;
            *last_refresh = Some(Instant::now());
            let mut channels = self.lock();
            for t in tenants {
                channels
                    .entry(t.id)
                    .or_insert_with(|| Channel::new(Position::START));
            }
        }
        let due: Vec<(TenantId, Position)> = {
            let channels = self.lock();
            channels
                .iter()
                .filter(|(_, c)| {
                    let interval = if c.sender.receiver_count() > 0 {
                        Duration::ZERO
                    } else {
                        IDLE_POLL_INTERVAL
                    };
                    c.last_poll.is_none_or(|t| t.elapsed() >= interval)
                })
                .map(|(t, c)| (*t, c.head))
                .collect()
        };
        for (tenant, mut head) in due {
            loop {
                let page = self.store.read_all(tenant, head, PAGE).await?;
                let full = page.len() == PAGE;
                let mut channels = self.lock();
                let Some(channel) = channels.get_mut(&tenant) else {
                    break; // stopped meanwhile
                };
                if channel.head != head {
                    break; // cannot happen with one follower; never publish out of order
                }
                for event in page {
                    let position = event.position;
                    // No receivers is fine: nobody listens to this tenant now.
                    let _ = channel
                        .sender
                        .send(Arc::new(LiveEvent { prev: head, event }));
                    head = position;
                }
                channel.head = head;
                channel.last_poll = Some(Instant::now());
                if !full {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The tenant's events after `from` (exclusive), then every later event
    /// as it is stored, each exactly once and in position order. `from: None`
    /// starts at the store's head when the stream starts: only events that
    /// become readable later (the store is read to its end first, from the
    /// feed's head, and what it has is skipped, as the feed may be a poll
    /// behind).
    ///
    /// The hand-over from the store to the feed:
    /// 1. subscribe to the tenant's channel first, remembering the `prev` of
    ///    the first item it will get;
    /// 2. replay from the store with `read_all` from `from`, page after page,
    ///    until a page comes back short: everything the feed published before
    ///    step 1 was readable then, so the replay reaches at least the first
    ///    item's `prev`;
    /// 3. then take items from the channel, skipping those at or before the
    ///    last position delivered. An item whose `prev` is past the last
    ///    position delivered would leave a gap: the stream reads the store
    ///    again instead (this is a safety net; the chain makes it unreachable).
    /// 4. A subscriber that falls more than [`CHANNEL_CAPACITY`] events behind
    ///    (`RecvError::Lagged`) goes back to step 2 from its last position,
    ///    so a slow consumer loses nothing.
    ///
    /// The stream ends with [`LiveError::ShuttingDown`] when the feed stops,
    /// and with the error when the store fails: resubscribe from the last
    /// position seen.
    pub fn follow(
        self: &Arc<Self>,
        tenant: TenantId,
        from: Option<Position>,
    ) -> impl Stream<Item = Result<RecordedEvent, LiveError>> + Send + 'static {
        let state = Follow {
            feed: self.clone(),
            tenant,
            from,
            rx: None,
            last: Position::START,
            replaying: false,
            skipping: false,
            buffer: VecDeque::new(),
            done: false,
        };
        futures::stream::unfold(state, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        })
    }
}

struct Follow {
    feed: Arc<LiveFeed>,
    tenant: TenantId,
    from: Option<Position>,
    rx: Option<broadcast::Receiver<Arc<LiveEvent>>>,
    /// The position of the last event delivered (or buffered to be).
    last: Position,
    replaying: bool,
    /// While replaying, drop what is read instead of delivering it (`from: None`).
    skipping: bool,
    buffer: VecDeque<RecordedEvent>,
    done: bool,
}

impl Follow {
    async fn next(&mut self) -> Option<Result<RecordedEvent, LiveError>> {
        if self.done {
            return None;
        }
        let result = self.step().await;
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }

    async fn step(&mut self) -> Result<RecordedEvent, LiveError> {
        if self.rx.is_none() {
            let Subscribed { rx, head } = self.feed.subscribe(self.tenant).await?;
            self.rx = Some(rx);
            match self.from {
                Some(from) => {
                    self.last = from;
                    self.replaying = true;
                }
                None => {
                    self.last = head;
                    self.replaying = true;
                    self.skipping = true;
                }
            }
        }
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Ok(event);
            }
            if self.replaying {
                let page = self
                    .feed
                    .store
                    .read_all(self.tenant, self.last, PAGE)
                    .await?;
                self.replaying = page.len() == PAGE;
                if let Some(e) = page.last() {
                    self.last = e.position;
                }
                if self.skipping {
                    self.skipping = self.replaying;
                } else {
                    self.buffer.extend(page);
                }
                continue;
            }
            let Some(rx) = self.rx.as_mut() else {
                return Err(LiveError::ShuttingDown);
            };
            match rx.recv().await {
                Ok(item) => {
                    if item.event.position <= self.last {
                        continue; // already delivered from the store
                    }
                    if item.prev > self.last {
                        tracing::warn!(tenant = %self.tenant, last = %self.last, prev = %item.prev,
                            "live feed skipped ahead; catching up from the store");
                        self.replaying = true;
                        continue;
                    }
                    self.last = item.event.position;
                    return Ok(item.event.clone());
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(tenant = %self.tenant, missed, "subscriber lagged; catching up from the store");
                    self.replaying = true;
                }
                Err(broadcast::error::RecvError::Closed) => return Err(LiveError::ShuttingDown),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AppendRequest, Directory, NewEvent, StreamAppend, TenantRecord};
    use futures::StreamExt;

    async fn store_with_tenants(n: usize) -> (Arc<dyn Store>, Vec<TenantId>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("buktor.db")).unwrap();
        let mut tenants = Vec::new();
        for i in 0..n {
            let t = TenantRecord {
                id: TenantId::new(),
                name: format!("hospital {i}"),
                time_zone: chrono_tz::Europe::Amsterdam,
                created_at: chrono::Utc::now(),
            };
            store.create_tenant(&t).await.unwrap();
            tenants.push(t.id);
        }
        (Arc::new(store), tenants, dir)
    }

    /// Appends `streams` one-event streams named `{prefix}-{i}` in one write.
    async fn append(store: &dyn Store, tenant: TenantId, prefix: &str, streams: usize) {
        let streams = (0..streams)
            .map(|i| StreamAppend {
                stream_id: format!("{prefix}-{i}"),
                expected_version: 0,
                events: vec![NewEvent {
                    event_id: uuid::Uuid::now_v7(),
                    event_type: "Tested".into(),
                    schema_version: 1,
                    payload: serde_json::json!({ "i": i }),
                    metadata: serde_json::json!({}),
                }],
            })
            .collect();
        store
            .append(AppendRequest {
                tenant,
                streams,
                idempotency: None,
            })
            .await
            .unwrap();
    }

    /// A subscriber that does not read while the feed publishes far more than
    /// the channel holds lags, reads the store again, and still gets every
    /// event exactly once, in order, and then the live ones; another tenant's
    /// events never reach it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lagging_subscriber_loses_nothing() {
        let (store, tenants, _dir) = store_with_tenants(2).await;
        let (mine, other) = (tenants[0], tenants[1]);
        append(&*store, mine, "before", 10).await;
        let (woken, appends) = watch::channel(0u64);
        let woken = Arc::new(woken);
        let feed = LiveFeed::new(store.clone(), appends);
        let mut events = Box::pin(feed.follow(mine, Some(Position::START)));
        // The first item subscribes, then replays.
        let first = events.next().await.unwrap().unwrap();
        assert_eq!(first.stream_id, "before-0");

        for batch in 0..(3 * CHANNEL_CAPACITY / 100 + 1) {
            append(&*store, mine, &format!("during{batch}"), 100).await;
            append(&*store, other, &format!("foreign{batch}"), 10).await;
            woken.send_modify(|n| *n += 1);
        }
        let expected = 10 + 100 * (3 * CHANNEL_CAPACITY / 100 + 1);
        // Wait until the feed has published all of them, unread.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let head = feed.lock().get(&mine).map(|c| c.head);
            let all = store
                .read_all(mine, Position::START, usize::MAX)
                .await
                .unwrap();
            if head == all.last().map(|e| e.position) {
                break;
            }
            assert!(Instant::now() < deadline, "the feed did not catch up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let mut seen = vec![first];
        while seen.len() < expected {
            seen.push(events.next().await.unwrap().unwrap());
        }
        append(&*store, mine, "after", 1).await;
        woken.send_modify(|n| *n += 1);
        let live = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("the live event")
            .unwrap()
            .unwrap();
        assert_eq!(live.stream_id, "after-0");
        seen.push(live);

        let all = store
            .read_all(mine, Position::START, usize::MAX)
            .await
            .unwrap();
        let ids = |v: &[RecordedEvent]| v.iter().map(|e| e.event_id).collect::<Vec<_>>();
        assert_eq!(ids(&seen), ids(&all));
        assert!(seen.iter().all(|e| e.tenant == mine));

        // Stopping ends the stream.
        feed.stop();
        let end = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("the stream ends");
        assert!(matches!(end, Some(Err(LiveError::ShuttingDown))));
        assert!(events.next().await.is_none());
    }

    /// `from: None` starts at the head: only later events.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn following_from_now_skips_the_past() {
        let (store, tenants, _dir) = store_with_tenants(1).await;
        append(&*store, tenants[0], "old", 5).await;
        let (woken, appends) = watch::channel(0u64);
        let woken = Arc::new(woken);
        let feed = LiveFeed::new(store.clone(), appends);
        let mut events = Box::pin(feed.follow(tenants[0], None));
        let writer = {
            let store = store.clone();
            let woken = woken.clone();
            async move {
                // Give the follow a moment to subscribe first.
                tokio::time::sleep(Duration::from_millis(200)).await;
                append(&*store, tenants[0], "new", 3).await;
                woken.send_modify(|n| *n += 1);
            }
        };
        let reader = async {
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(events.next().await.unwrap().unwrap().stream_id);
            }
            got
        };
        let ((), got) = tokio::join!(writer, reader);
        assert_eq!(got, ["new-0", "new-1", "new-2"]);
    }
}
