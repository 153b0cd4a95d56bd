//! Delivery: each instance claims due messages under a lease (so one
//! message is in flight on one instance at a time), posts them signed, and
//! records every attempt with its decision in one batch per round.
//!
//! Nothing waits on one endpoint but that endpoint: sends are tasks, each
//! endpoint has its own in-flight cap and rate limit, and a claim leaves out
//! endpoints at their cap. A slow or dead endpoint therefore costs its own
//! messages time, never another endpoint's.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use buktor_domain::{Actor, EventMetadata, Role, Source, TenantId};
use chrono::Utc;
use rand::Rng;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::payload::{ALERT_STREAM_TYPE, DEAD_LETTERED_EVENT};
use super::signature;
use crate::config::Webhooks as WebhooksConfig;
use crate::store::webhooks::{
    AttemptDecision, AttemptResult, ClaimRequest, Claimed, EndpointRecord, MessageRecord,
};
use crate::store::{AppendRequest, NewEvent, Store, StoreError, StreamAppend};

/// How much of a response body the delivery log keeps.
const EXCERPT_BYTES: usize = 1024;
/// The longest `Retry-After` honoured; beyond it the schedule's pause applies.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
const IDLE_MIN: Duration = Duration::from_millis(10);

/// What an endpoint did with one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    Timeout,
    /// Could not connect, or the connection broke.
    Transport(String),
}

/// The retry policy: what to do after `answer`, given the failures before it.
pub fn decide(
    answer: &Answer,
    failures_before: u32,
    max_attempts: u32,
    delays: &[Duration],
    disable_on_dead_letter: bool,
    jitter: f64,
) -> AttemptDecision {
    let dead = AttemptDecision::DeadLetter {
        disable_endpoint: disable_on_dead_letter,
    };
    let retry_after = match answer {
        Answer::Status { code, .. } if (200..300).contains(code) => {
            return AttemptDecision::Delivered
        }
        Answer::Status { code: 410, .. } => return AttemptDecision::EndpointGone,
        Answer::Status { code, retry_after } if *code == 408 || *code == 429 || *code >= 500 => {
            *retry_after
        }
        // Any other answer (a 4xx, a redirect) will not change by asking again.
        Answer::Status { .. } => return dead,
        Answer::Timeout | Answer::Transport(_) => None,
    };
    let failures = failures_before + 1;
    if failures >= max_attempts {
        return dead;
    }
    let index = (failures as usize - 1).min(delays.len().saturating_sub(1));
    let pause = delays.get(index).copied().unwrap_or_default();
    // ±jitter, so endpoints that failed together do not all retry together.
    let pause = pause.mul_f64(1.0 + jitter);
    let after = match retry_after {
        Some(asked) => pause.max(asked.min(MAX_RETRY_AFTER)),
        None => pause,
    };
    AttemptDecision::Retry { after }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&Utc) - now).to_std().ok()
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes a token; returns how long the caller must wait for it.
    fn take(&mut self, rate: u32) -> Duration {
        let rate = f64::from(rate);
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(rate);
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate)
        }
    }

    fn overdrawn(&self) -> bool {
        self.tokens < 0.0
    }
}

pub struct Dispatcher {
    store: Arc<dyn Store>,
    config: WebhooksConfig,
    client: reqwest::Client,
    owner: String,
    stored: Arc<Notify>,
    in_flight: HashMap<Uuid, usize>,
    buckets: HashMap<Uuid, Bucket>,
    /// Claimed messages in flight, for the alert when one is dead-lettered.
    claimed: HashMap<String, MessageRecord>,
}

type Sent = AttemptResult;

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, config: WebhooksConfig, stored: Arc<Notify>) -> Self {
        let client = reqwest::Client::builder()
            .user_agent("Buktor-Webhooks/1")
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(config.attempt_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("the HTTP client's settings are valid");
        let owner = format!(
            "{}:{}",
            std::process::id(),
            Uuid::new_v4()
                .simple()
                .to_string()
                .get(..12)
                .unwrap_or_default()
        );
        Dispatcher {
            store,
            config,
            client,
            owner,
            stored,
            in_flight: HashMap::new(),
            buckets: HashMap::new(),
            claimed: HashMap::new(),
        }
    }

    fn delays(&self) -> Vec<Duration> {
        self.config
            .retry_delays_ms
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect()
    }

    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tasks: JoinSet<Sent> = JoinSet::new();
        let mut done: Vec<Sent> = Vec::new();
        let mut idle = IDLE_MIN;
        let idle_max = Duration::from_millis(self.config.poll_ms);
        let total_cap = self.config.max_in_flight;
        loop {
            let stopping = *stop.borrow();
            if !done.is_empty() {
                self.complete(&mut done).await;
            }
            if stopping {
                if tasks.is_empty() {
                    return;
                }
            } else if tasks.len() < total_cap {
                match self.claim(total_cap - tasks.len()).await {
                    Ok(claimed) => {
                        if !claimed.is_empty() {
                            idle = IDLE_MIN;
                        }
                        for c in claimed {
                            self.spawn_send(&mut tasks, c);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot claim webhook messages"),
                }
            }
            tokio::select! {
                Some(finished) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(sent) = finished {
                        done.push(sent);
                    }
                    while let Some(Ok(sent)) = tasks.try_join_next() {
                        done.push(sent);
                    }
                }
                _ = self.stored.notified(), if !stopping => { idle = IDLE_MIN; }
                _ = tokio::time::sleep(idle), if !stopping => {
                    idle = (idle * 2).min(idle_max);
                }
                _ = stop.changed(), if !stopping => {}
            }
        }
    }

    async fn claim(&mut self, room: usize) -> Result<Vec<Claimed>, StoreError> {
        let cap = self.config.max_in_flight_per_endpoint;
        let mut skip: Vec<Uuid> = self
            .in_flight
            .iter()
            .filter(|(_, n)| **n >= cap)
            .map(|(id, _)| *id)
            .collect();
        skip.extend(
            self.buckets
                .iter()
                .filter(|(_, b)| b.overdrawn())
                .map(|(id, _)| *id),
        );
        let request = ClaimRequest {
            owner: self.owner.clone(),
            lease: Duration::from_millis(self.config.lease_ms),
            per_endpoint: cap,
            limit: room,
            skip_endpoints: skip,
        };
        // Each comes with its endpoint as it is now: a message claimed just
        // after a rotation is signed with the new secret, sent to a new URL.
        let claimed = self.store.webhooks().claim(&request).await?;
        let (claimed, late) = self.sendable_within_lease(claimed);
        if !late.is_empty() {
            let ids: Vec<String> = late.into_iter().map(|c| c.message.id).collect();
            if let Err(e) = self.store.webhooks().release(&self.owner, &ids).await {
                // Their leases run out instead; then they are claimed again.
                tracing::warn!(error = %e, messages = ids.len(), "cannot hand back webhook messages");
            }
        }
        Ok(claimed)
    }

    /// Splits off the messages a rate limit would hold back so long that
    /// their lease could end before the attempt is recorded: another instance
    /// would then send them too. They are handed back, not sent. (An attempt
    /// gets half the lease, as the configuration's rule says; the wait may
    /// use the rest.)
    fn sendable_within_lease(&self, claimed: Vec<Claimed>) -> (Vec<Claimed>, Vec<Claimed>) {
        let budget = Duration::from_millis(
            self.config
                .lease_ms
                .saturating_sub(2 * self.config.attempt_timeout_ms),
        );
        // What `spawn_send` will take from the buckets, taken from copies.
        let mut buckets: HashMap<Uuid, Bucket> = HashMap::new();
        claimed.into_iter().partition(|c| {
            let Some(rate) = c.endpoint.spec.rate_limit_per_second else {
                return true;
            };
            let id = c.endpoint.id;
            let bucket = buckets.entry(id).or_insert_with(|| {
                self.buckets.get(&id).copied().unwrap_or(Bucket {
                    tokens: f64::from(rate),
                    at: Instant::now(),
                })
            });
            bucket.take(rate) <= budget
        })
    }

    fn spawn_send(&mut self, tasks: &mut JoinSet<Sent>, claimed: Claimed) {
        let Claimed { message, endpoint } = claimed;
        let wait = match endpoint.spec.rate_limit_per_second {
            Some(rate) => self
                .buckets
                .entry(endpoint.id)
                .or_insert(Bucket {
                    tokens: f64::from(rate),
                    at: Instant::now(),
                })
                .take(rate),
            None => Duration::ZERO,
        };
        *self.in_flight.entry(endpoint.id).or_default() += 1;
        let max_attempts = endpoint
            .spec
            .max_attempts
            .unwrap_or(self.config.max_attempts);
        let delays = self.delays();
        let jitter = rand::thread_rng().gen_range(-0.1..=0.1);
        let client = self.client.clone();
        let timeout = Duration::from_millis(self.config.attempt_timeout_ms);
        self.claimed.insert(message.id.clone(), message.clone());
        tasks.spawn(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let started_at = Utc::now();
            let clock = Instant::now();
            let (answer, excerpt) = post(&client, &endpoint, &message, timeout).await;
            let decision = decide(
                &answer,
                message.failures,
                max_attempts,
                &delays,
                endpoint.spec.disable_on_dead_letter,
                jitter,
            );
            let (status_code, error) = match &answer {
                Answer::Status { code, .. } => (Some(*code), None),
                Answer::Timeout => (None, Some(format!("no answer within {timeout:?}"))),
                Answer::Transport(e) => (None, Some(e.clone())),
            };
            AttemptResult {
                message_id: message.id,
                tenant: message.tenant,
                endpoint_id: message.endpoint_id,
                started_at,
                latency_ms: clock.elapsed().as_millis().min(u32::MAX as u128) as u32,
                status_code,
                error,
                response_excerpt: excerpt,
                decision,
            }
        });
    }

    async fn complete(&mut self, done: &mut Vec<Sent>) {
        match self.store.webhooks().complete(&self.owner, done).await {
            Ok(dead) => {
                for sent in done.drain(..) {
                    if let Some(n) = self.in_flight.get_mut(&sent.endpoint_id) {
                        *n = n.saturating_sub(1);
                    }
                    let message = self.claimed.remove(&sent.message_id);
                    match (&sent.decision, message) {
                        (AttemptDecision::DeadLetter { disable_endpoint }, Some(m))
                            if dead.contains(&sent.message_id) =>
                        {
                            tracing::warn!(message = %m.id, endpoint = %m.endpoint_id, "webhook message dead-lettered");
                            if let Err(e) =
                                append_alert(&*self.store, &m, &sent, *disable_endpoint).await
                            {
                                tracing::error!(error = %e, message = %m.id, "cannot record the dead-letter alert");
                            }
                        }
                        (AttemptDecision::EndpointGone, _) => {
                            tracing::warn!(endpoint = %sent.endpoint_id, "endpoint answered 410 Gone: disabled");
                        }
                        _ => {}
                    }
                }
                self.in_flight.retain(|_, n| *n > 0);
            }
            // Kept for the next round; if the leases run out meanwhile the
            // messages go out again (at-least-once, same webhook-id).
            Err(e) => {
                tracing::warn!(error = %e, results = done.len(), "cannot record webhook attempts")
            }
        }
    }
}

/// One signed POST. Never fails: every outcome is an [`Answer`].
async fn post(
    client: &reqwest::Client,
    endpoint: &EndpointRecord,
    message: &MessageRecord,
    timeout: Duration,
) -> (Answer, Option<String>) {
    let now = Utc::now();
    let headers = signature::headers(
        &endpoint.signing_secrets(now),
        &message.id,
        now.timestamp(),
        message.payload.as_bytes(),
    );
    let mut request = client
        .post(&endpoint.spec.url)
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let attempt = async {
        let mut response = request.body(message.payload.clone()).send().await?;
        let code = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        let mut excerpt = Vec::new();
        while excerpt.len() < EXCERPT_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk),
                _ => break,
            }
        }
        excerpt.truncate(EXCERPT_BYTES);
        let excerpt = (!excerpt.is_empty()).then(|| String::from_utf8_lossy(&excerpt).into_owned());
        Ok::<_, reqwest::Error>((Answer::Status { code, retry_after }, excerpt))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) if e.is_timeout() => (Answer::Timeout, None),
        Ok(Err(e)) => (Answer::Transport(transport_error(&e)), None),
        Err(_) => (Answer::Timeout, None),
    }
}

/// The innermost cause: "Connection refused (os error 111)" says more than
/// "error sending request".
fn transport_error(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    text
}

/// The alert event: written to the endpoint's own stream, so that it is in
/// the audit trail and the event feed, and pushed to the other endpoints
/// that subscribe to `webhook.dead_lettered`.
async fn append_alert(
    store: &dyn Store,
    message: &MessageRecord,
    sent: &AttemptResult,
    endpoint_disabled: bool,
) -> Result<(), StoreError> {
    let tenant: TenantId = message.tenant;
    let stream_id = format!("{ALERT_STREAM_TYPE}-{}", message.endpoint_id);
    let payload = serde_json::json!({
        "endpointId": message.endpoint_id.to_string(),
        "messageId": message.id,
        "eventId": message.event_id.to_string(),
        "eventType": message.event_type,
        "position": message.position.to_string(),
        "attempts": message.attempts + 1,
        "lastStatus": sent.status_code,
        "lastError": sent.error,
        "endpointDisabled": endpoint_disabled,
    });
    let metadata = EventMetadata {
        tenant,
        actor: Actor {
            id: "webhook-dispatcher".into(),
            role: Role::Admin,
        },
        source: Source::System,
        remote_addr: None,
        correlation_id: message.event_id,
        causation_id: message.event_id,
        idempotency_key: None,
        occurred_at: Utc::now(),
    };
    for _ in 0..5 {
        let version = store
            .read_stream(tenant, &stream_id, 0)
            .await?
            .last()
            .map_or(0, |e| e.version);
        let request = AppendRequest {
            tenant,
            streams: vec![StreamAppend {
                stream_id: stream_id.clone(),
                expected_version: version,
                events: vec![NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: DEAD_LETTERED_EVENT.into(),
                    schema_version: 1,
                    payload: payload.clone(),
                    metadata: serde_json::to_value(&metadata).unwrap_or_default(),
                }],
            }],
            idempotency: None,
        };
        match store.append(request).await {
            Ok(_) => return Ok(()),
            Err(StoreError::VersionConflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Corrupt(format!(
        "stream {stream_id} kept moving while an alert was written"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Vec<Duration> {
        [5, 300, 1800, 7200, 18000, 36000, 36000]
            .into_iter()
            .map(Duration::from_secs)
            .collect()
    }

    fn status(code: u16) -> Answer {
        Answer::Status {
            code,
            retry_after: None,
        }
    }

    #[test]
    fn the_default_schedule_is_followed_then_the_message_is_dead_lettered() {
        let delays = schedule();
        let mut pauses = vec![];
        for failures in 0..7 {
            match decide(&status(503), failures, 8, &delays, false, 0.0) {
                AttemptDecision::Retry { after } => pauses.push(after.as_secs()),
                other => panic!("failure {failures}: {other:?}"),
            }
        }
        assert_eq!(pauses, [5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(
            decide(&Answer::Timeout, 7, 8, &delays, true, 0.0),
            AttemptDecision::DeadLetter {
                disable_endpoint: true
            }
        );
    }

    #[test]
    fn answers_are_classified() {
        let d = schedule();
        assert_eq!(
            decide(&status(204), 3, 8, &d, false, 0.0),
            AttemptDecision::Delivered
        );
        assert_eq!(
            decide(&status(410), 0, 8, &d, false, 0.0),
            AttemptDecision::EndpointGone
        );
        for code in [400, 401, 403, 404, 422, 301] {
            assert!(
                matches!(
                    decide(&status(code), 0, 8, &d, false, 0.0),
                    AttemptDecision::DeadLetter { .. }
                ),
                "{code}"
            );
        }
        for answer in [
            status(500),
            status(502),
            status(429),
            status(408),
            Answer::Timeout,
            Answer::Transport("refused".into()),
        ] {
            assert!(
                matches!(
                    decide(&answer, 0, 8, &d, false, 0.0),
                    AttemptDecision::Retry { .. }
                ),
                "{answer:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_when_longer_and_jitter_stays_within_ten_percent() {
        let d = schedule();
        let asked = Answer::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(60)),
        };
        assert_eq!(
            decide(&asked, 0, 8, &d, false, 0.0),
            AttemptDecision::Retry {
                after: Duration::from_secs(60)
            }
        );
        // A shorter Retry-After does not make Buktor retry sooner than its schedule.
        assert_eq!(
            decide(&asked, 1, 8, &d, false, 0.0),
            AttemptDecision::Retry {
                after: Duration::from_secs(300)
            }
        );
        let AttemptDecision::Retry { after } = decide(&status(500), 1, 8, &d, false, 0.1) else {
            panic!()
        };
        assert_eq!(after, Duration::from_secs(330));
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 10:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 09:00:00 GMT", now),
            None
        );
    }

    #[test]
    fn a_rate_limit_spaces_sends_out() {
        let mut bucket = Bucket {
            tokens: 2.0,
            at: Instant::now(),
        };
        assert_eq!(bucket.take(2), Duration::ZERO);
        assert_eq!(bucket.take(2), Duration::ZERO);
        let wait = bucket.take(2);
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(bucket.overdrawn());
    }
}
