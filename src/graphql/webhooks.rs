//! Push endpoints over GraphQL: managed by admins; their delivery log read
//! by admins and auditors. A secret is returned once, by the mutation that
//! made it.
use async_graphql::connection::{Connection, Edge};
use async_graphql::{
    ComplexObject, Context, Enum, ErrorExtensions, InputObject, Object, Result, SimpleObject, ID,
};
use buktor_domain::Role;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::read::page_size;
use super::{app_error, invalid, parse_id, principal};
use crate::app::AppError;
use crate::store::webhooks::{
    AttemptFilter, AttemptRecord, EndpointRecord, MessageFilter, MessageRecord, MessageState,
    ReplayFrom,
};
use crate::store::{Position, Store};
use crate::webhooks::endpoints::{self, EndpointChanges, EndpointError};

fn store<'a>(ctx: &Context<'a>) -> &'a std::sync::Arc<dyn Store> {
    super::scheduler(ctx).store()
}

fn require(ctx: &Context<'_>, allowed: &[Role], action: &'static str) -> Result<()> {
    let role = principal(ctx).role;
    if allowed.contains(&role) {
        Ok(())
    } else {
        Err(app_error(AppError::Forbidden {
            role: role.as_str(),
            action,
        }))
    }
}

fn endpoint_error(e: EndpointError) -> async_graphql::Error {
    match e {
        EndpointError::Invalid { field, message } => invalid(field, message),
        EndpointError::NotFound(id) => {
            async_graphql::Error::new(format!("no webhook endpoint {id}"))
                .extend_with(|_, ext| ext.set("code", "NOT_FOUND"))
        }
        EndpointError::Store(e) => app_error(AppError::Store(e)),
    }
}

/// A message id as given: ids are short and printable, so anything else
/// names no message and is refused before it reaches the store.
fn message_id(id: &str) -> Result<&str> {
    if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
        return Err(crate::graphql::invalid(
            "id",
            "must be 1 to 200 characters without control characters",
        ));
    }
    Ok(id)
}

fn store_error(e: crate::store::StoreError) -> async_graphql::Error {
    app_error(AppError::Store(e))
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "WebhookMessageState")]
pub enum MessageStateGql {
    /// Waits for an earlier message of the same appointment.
    Queued,
    /// Due (again) at `nextAttemptAt`.
    Pending,
    Delivered,
    /// Given up on: replay it to send it again.
    Dead,
}

impl From<MessageState> for MessageStateGql {
    fn from(s: MessageState) -> Self {
        match s {
            MessageState::Queued => MessageStateGql::Queued,
            MessageState::Pending => MessageStateGql::Pending,
            MessageState::Delivered => MessageStateGql::Delivered,
            MessageState::Dead => MessageStateGql::Dead,
        }
    }
}

impl From<MessageStateGql> for MessageState {
    fn from(s: MessageStateGql) -> Self {
        match s {
            MessageStateGql::Queued => MessageState::Queued,
            MessageStateGql::Pending => MessageState::Pending,
            MessageStateGql::Delivered => MessageState::Delivered,
            MessageStateGql::Dead => MessageState::Dead,
        }
    }
}

/// A HIS endpoint Buktor pushes events to. Its secret is never shown here.
pub struct WebhookEndpoint(EndpointRecord);

#[derive(SimpleObject)]
pub struct WebhookMessageCounts {
    queued: u64,
    pending: u64,
    delivered: u64,
    dead: u64,
}

#[Object]
impl WebhookEndpoint {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn url(&self) -> &str {
        &self.0.spec.url
    }
    async fn description(&self) -> &str {
        &self.0.spec.description
    }
    /// Payload types it receives; empty = all.
    async fn event_types(&self) -> &[String] {
        &self.0.spec.event_types
    }
    async fn practitioner_ids(&self) -> Vec<ID> {
        self.0
            .spec
            .practitioner_ids
            .iter()
            .map(|p| ID(p.to_string()))
            .collect()
    }
    async fn departments(&self) -> &[String] {
        &self.0.spec.departments
    }
    async fn enabled(&self) -> bool {
        self.0.spec.enabled
    }
    /// Why Buktor disabled it (410 Gone, a dead letter), if it did.
    async fn disabled_reason(&self) -> Option<&str> {
        self.0.disabled_reason.as_deref()
    }
    async fn rate_limit_per_second(&self) -> Option<u32> {
        self.0.spec.rate_limit_per_second
    }
    async fn max_attempts(&self) -> Option<u32> {
        self.0.spec.max_attempts
    }
    async fn disable_on_dead_letter(&self) -> bool {
        self.0.spec.disable_on_dead_letter
    }
    /// Until when the secret before the last rotation still signs too.
    async fn previous_secret_valid_until(&self) -> Option<DateTime<Utc>> {
        self.0
            .previous_secret
            .as_ref()
            .map(|(_, until)| *until)
            .filter(|until| *until > Utc::now())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    async fn message_counts(&self, ctx: &Context<'_>) -> Result<WebhookMessageCounts> {
        let c = store(ctx)
            .webhooks()
            .message_counts(self.0.tenant, self.0.id)
            .await
            .map_err(store_error)?;
        Ok(WebhookMessageCounts {
            queued: c.queued,
            pending: c.pending,
            delivered: c.delivered,
            dead: c.dead,
        })
    }
    /// Its messages in global order, optionally in one state.
    #[graphql(
        complexity = "page_size(first).unwrap_or(super::read::MAX_PAGE) * child_complexity + 1"
    )]
    async fn messages(
        &self,
        ctx: &Context<'_>,
        state: Option<MessageStateGql>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, WebhookMessage>> {
        messages_page(
            ctx,
            &self.0,
            MessageFilter {
                endpoint_id: Some(self.0.id),
                state: state.map(Into::into),
                ..Default::default()
            },
            first,
            after,
        )
        .await
    }
    /// Every delivery attempt to it, oldest first.
    #[graphql(
        complexity = "page_size(first).unwrap_or(super::read::MAX_PAGE) * child_complexity + 1"
    )]
    async fn attempts(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, WebhookAttempt>> {
        attempts_page(
            ctx,
            self.0.tenant,
            AttemptFilter {
                endpoint_id: Some(self.0.id),
                ..Default::default()
            },
            first,
            after,
        )
        .await
    }
}

async fn messages_page(
    ctx: &Context<'_>,
    endpoint: &EndpointRecord,
    mut filter: MessageFilter,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Connection<String, WebhookMessage>> {
    let size = page_size(first)?;
    filter.after = match &after {
        Some(cursor) => Some(
            cursor
                .parse::<Position>()
                .map(|p| (p, endpoint.id))
                .map_err(|_| invalid("after", "is not a cursor from this list"))?,
        ),
        None => None,
    };
    filter.limit = size + 1;
    let mut rows = store(ctx)
        .webhooks()
        .messages(endpoint.tenant, &filter)
        .await
        .map_err(store_error)?;
    let more = rows.len() > size;
    rows.truncate(size);
    let mut page = Connection::new(after.is_some(), more);
    page.edges.extend(
        rows.into_iter()
            .map(|m| Edge::new(m.position.to_string(), WebhookMessage(m))),
    );
    Ok(page)
}

async fn attempts_page(
    ctx: &Context<'_>,
    tenant: buktor_domain::TenantId,
    mut filter: AttemptFilter,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Connection<String, WebhookAttempt>> {
    let size = page_size(first)?;
    filter.after = match &after {
        Some(cursor) => Some(
            cursor
                .parse::<i64>()
                .map_err(|_| invalid("after", "is not a cursor from this list"))?,
        ),
        None => None,
    };
    filter.limit = size + 1;
    let mut rows = store(ctx)
        .webhooks()
        .attempts(tenant, &filter)
        .await
        .map_err(store_error)?;
    let more = rows.len() > size;
    rows.truncate(size);
    let mut page = Connection::new(after.is_some(), more);
    page.edges.extend(
        rows.into_iter()
            .map(|a| Edge::new(a.seq.to_string(), WebhookAttempt::from(a))),
    );
    Ok(page)
}

/// One event owed to one endpoint.
pub struct WebhookMessage(MessageRecord);

#[Object]
impl WebhookMessage {
    /// The `webhook-id` header: the same on every attempt and replay.
    async fn id(&self) -> &str {
        &self.0.id
    }
    async fn endpoint_id(&self) -> ID {
        ID(self.0.endpoint_id.to_string())
    }
    async fn event_id(&self) -> ID {
        ID(self.0.event_id.to_string())
    }
    /// The payload type, e.g. `appointment.booked`.
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }
    async fn position(&self) -> String {
        self.0.position.to_string()
    }
    async fn state(&self) -> MessageStateGql {
        self.0.state.into()
    }
    async fn attempt_count(&self) -> u32 {
        self.0.attempts
    }
    async fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        (self.0.state == MessageState::Pending).then_some(self.0.next_attempt_at)
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn delivered_at(&self) -> Option<DateTime<Utc>> {
        self.0.delivered_at
    }
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    /// The JSON body exactly as it is sent.
    async fn payload(&self) -> &str {
        &self.0.payload
    }
    /// Its attempts, oldest first.
    async fn attempts(&self, ctx: &Context<'_>) -> Result<Vec<WebhookAttempt>> {
        let rows = store(ctx)
            .webhooks()
            .attempts(
                self.0.tenant,
                &AttemptFilter {
                    message_id: Some(self.0.id.clone()),
                    limit: 1000,
                    ..Default::default()
                },
            )
            .await
            .map_err(store_error)?;
        Ok(rows.into_iter().map(WebhookAttempt::from).collect())
    }
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct WebhookAttempt {
    /// 1 for the first attempt at its message.
    attempt: u32,
    message_id: String,
    started_at: DateTime<Utc>,
    latency_ms: u32,
    /// The HTTP status, when the endpoint answered.
    status_code: Option<u16>,
    /// Timeout, connection refused…
    error: Option<String>,
    /// The first kilobyte of the answer.
    response_excerpt: Option<String>,
    /// delivered, retry, dead-letter or endpoint-gone.
    outcome: String,
    #[graphql(skip)]
    endpoint: Uuid,
    #[graphql(skip)]
    event: Uuid,
}

#[ComplexObject]
impl WebhookAttempt {
    async fn endpoint_id(&self) -> ID {
        ID(self.endpoint.to_string())
    }
    async fn event_id(&self) -> ID {
        ID(self.event.to_string())
    }
}

impl From<AttemptRecord> for WebhookAttempt {
    fn from(a: AttemptRecord) -> Self {
        WebhookAttempt {
            attempt: a.attempt,
            message_id: a.message_id,
            started_at: a.started_at,
            latency_ms: a.latency_ms,
            status_code: a.status_code,
            error: a.error,
            response_excerpt: a.response_excerpt,
            outcome: a.outcome,
            endpoint: a.endpoint_id,
            event: a.event_id,
        }
    }
}

#[derive(SimpleObject)]
pub struct CreatedWebhookSecret {
    endpoint: WebhookEndpoint,
    /// `whsec_…`: shown only now. Buktor signs every message with it.
    secret: String,
}

#[derive(InputObject)]
pub struct WebhookEndpointInput {
    url: String,
    description: Option<String>,
    /// Payload types to receive (see `docs/webhooks.md`); empty or absent = all.
    event_types: Option<Vec<String>>,
    practitioner_ids: Option<Vec<ID>>,
    departments: Option<Vec<String>>,
    enabled: Option<bool>,
    rate_limit_per_second: Option<u32>,
    max_attempts: Option<u32>,
    disable_on_dead_letter: Option<bool>,
}

/// Changes to an endpoint; absent fields keep their value.
#[derive(InputObject)]
pub struct WebhookEndpointChanges {
    url: Option<String>,
    description: Option<String>,
    event_types: Option<Vec<String>>,
    practitioner_ids: Option<Vec<ID>>,
    departments: Option<Vec<String>>,
    enabled: Option<bool>,
    /// 0 removes the limit.
    rate_limit_per_second: Option<u32>,
    /// 0 returns to the server's default.
    max_attempts: Option<u32>,
    disable_on_dead_letter: Option<bool>,
}

fn practitioners(ids: Option<Vec<ID>>) -> Result<Option<Vec<Uuid>>> {
    ids.map(|ids| {
        ids.iter()
            .map(|id| parse_id("practitionerIds", id))
            .collect()
    })
    .transpose()
}

#[derive(Default)]
pub struct WebhookQuery;

#[Object]
impl WebhookQuery {
    async fn webhook_endpoints(&self, ctx: &Context<'_>) -> Result<Vec<WebhookEndpoint>> {
        require(ctx, &[Role::Admin, Role::Auditor], "read webhook endpoints")?;
        let list = store(ctx)
            .webhooks()
            .endpoints(Some(principal(ctx).tenant_id()))
            .await
            .map_err(store_error)?;
        Ok(list.into_iter().map(WebhookEndpoint).collect())
    }

    async fn webhook_endpoint(&self, ctx: &Context<'_>, id: ID) -> Result<Option<WebhookEndpoint>> {
        require(ctx, &[Role::Admin, Role::Auditor], "read webhook endpoints")?;
        let id: Uuid = parse_id("id", &id)?;
        let e = store(ctx)
            .webhooks()
            .endpoint(principal(ctx).tenant_id(), id)
            .await
            .map_err(store_error)?;
        Ok(e.map(WebhookEndpoint))
    }

    /// What became of one event at every endpoint it was owed to.
    async fn webhook_messages_for_event(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
    ) -> Result<Vec<WebhookMessage>> {
        require(ctx, &[Role::Admin, Role::Auditor], "read the delivery log")?;
        let event: Uuid = parse_id("eventId", &event_id)?;
        let rows = store(ctx)
            .webhooks()
            .messages(
                principal(ctx).tenant_id(),
                &MessageFilter {
                    event_id: Some(event),
                    limit: 1000,
                    ..Default::default()
                },
            )
            .await
            .map_err(store_error)?;
        Ok(rows.into_iter().map(WebhookMessage).collect())
    }

    async fn webhook_message(
        &self,
        ctx: &Context<'_>,
        id: String,
    ) -> Result<Option<WebhookMessage>> {
        require(ctx, &[Role::Admin, Role::Auditor], "read the delivery log")?;
        let id = message_id(&id)?;
        let m = store(ctx)
            .webhooks()
            .message(principal(ctx).tenant_id(), id)
            .await
            .map_err(store_error)?;
        Ok(m.map(WebhookMessage))
    }
}

#[derive(Default)]
pub struct WebhookMutation;

#[Object]
impl WebhookMutation {
    /// Makes an endpoint; the answer holds its signing secret, shown only now.
    async fn create_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        input: WebhookEndpointInput,
    ) -> Result<CreatedWebhookSecret> {
        require(ctx, &[Role::Admin], "manage webhook endpoints")?;
        let changes = EndpointChanges {
            url: Some(input.url),
            description: input.description,
            event_types: input.event_types,
            practitioner_ids: practitioners(input.practitioner_ids)?,
            departments: input.departments,
            enabled: input.enabled,
            rate_limit_per_second: input.rate_limit_per_second.map(Some),
            max_attempts: input.max_attempts.map(Some),
            disable_on_dead_letter: input.disable_on_dead_letter,
        };
        let record = endpoints::create(store(ctx).webhooks(), principal(ctx).tenant_id(), changes)
            .await
            .map_err(endpoint_error)?;
        let secret = record.secret.expose();
        Ok(CreatedWebhookSecret {
            endpoint: WebhookEndpoint(record),
            secret,
        })
    }

    async fn update_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        id: ID,
        changes: WebhookEndpointChanges,
    ) -> Result<WebhookEndpoint> {
        require(ctx, &[Role::Admin], "manage webhook endpoints")?;
        let id: Uuid = parse_id("id", &id)?;
        let c = EndpointChanges {
            url: changes.url,
            description: changes.description,
            event_types: changes.event_types,
            practitioner_ids: practitioners(changes.practitioner_ids)?,
            departments: changes.departments,
            enabled: changes.enabled,
            rate_limit_per_second: changes.rate_limit_per_second.map(|r| (r > 0).then_some(r)),
            max_attempts: changes.max_attempts.map(|m| (m > 0).then_some(m)),
            disable_on_dead_letter: changes.disable_on_dead_letter,
        };
        let record = endpoints::update(store(ctx).webhooks(), principal(ctx).tenant_id(), id, c)
            .await
            .map_err(endpoint_error)?;
        Ok(WebhookEndpoint(record))
    }

    /// A new secret, shown only now. The old one keeps signing too for
    /// `overlapMinutes` (default: the server's `webhooks.rotation_overlap_secs`).
    async fn rotate_webhook_endpoint_secret(
        &self,
        ctx: &Context<'_>,
        id: ID,
        overlap_minutes: Option<i32>,
    ) -> Result<CreatedWebhookSecret> {
        require(ctx, &[Role::Admin], "manage webhook endpoints")?;
        let id: Uuid = parse_id("id", &id)?;
        let overlap = match overlap_minutes {
            Some(m) => chrono::Duration::minutes(i64::from(m)),
            None => chrono::Duration::seconds(
                ctx.data_unchecked::<crate::config::Webhooks>()
                    .rotation_overlap_secs as i64,
            ),
        };
        let record = endpoints::rotate_secret(
            store(ctx).webhooks(),
            principal(ctx).tenant_id(),
            id,
            overlap,
        )
        .await
        .map_err(endpoint_error)?;
        let secret = record.secret.expose();
        Ok(CreatedWebhookSecret {
            endpoint: WebhookEndpoint(record),
            secret,
        })
    }

    /// Sends a dead-lettered message again (and then the messages of its
    /// appointment that waited behind it).
    async fn replay_webhook_message(
        &self,
        ctx: &Context<'_>,
        id: String,
    ) -> Result<WebhookMessage> {
        require(ctx, &[Role::Admin], "replay webhook messages")?;
        message_id(&id)?;
        let tenant = principal(ctx).tenant_id();
        let s = store(ctx).webhooks();
        let Some(message) = s.message(tenant, &id).await.map_err(store_error)? else {
            return Err(
                async_graphql::Error::new(format!("no webhook message {id:?}"))
                    .extend_with(|_, ext| ext.set("code", "NOT_FOUND")),
            );
        };
        if !s.replay_message(tenant, &id).await.map_err(store_error)? {
            return Err(async_graphql::Error::new(format!(
                "message {id:?} is {}, only a dead message can be replayed",
                message.state.as_str()
            ))
            .extend_with(|_, ext| ext.set("code", "NOT_DEAD")));
        }
        tracing::info!(message = %id, "webhook message replayed");
        let m = s.message(tenant, &id).await.map_err(store_error)?;
        Ok(WebhookMessage(m.unwrap_or(message)))
    }

    /// Sends every delivered or dead message of an endpoint again, from a
    /// position or a time on, in order per appointment. Returns how many.
    async fn replay_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        id: ID,
        from_position: Option<String>,
        from_time: Option<DateTime<Utc>>,
    ) -> Result<u64> {
        require(ctx, &[Role::Admin], "replay webhook messages")?;
        let id: Uuid = parse_id("id", &id)?;
        let from =
            match (from_position, from_time) {
                (Some(p), None) => ReplayFrom::Position(p.parse().map_err(
                    |e: crate::store::InvalidPosition| invalid("fromPosition", e.to_string()),
                )?),
                (None, Some(t)) => ReplayFrom::Time(
                    buktor_domain::time::check_instant("fromTime", t)
                        .map_err(|e| app_error(e.into()))?,
                ),
                _ => {
                    return Err(invalid(
                        "fromPosition",
                        "give exactly one of fromPosition and fromTime",
                    ))
                }
            };
        let tenant = principal(ctx).tenant_id();
        endpoints::get(store(ctx).webhooks(), tenant, id)
            .await
            .map_err(endpoint_error)?;
        let n = store(ctx)
            .webhooks()
            .replay_endpoint(tenant, id, from)
            .await
            .map_err(store_error)?;
        tracing::info!(endpoint = %id, messages = n, "webhook endpoint replayed");
        Ok(n)
    }
}
