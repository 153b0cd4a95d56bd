//! The GraphQL API at `/graphql`: every command as a mutation, and the
//! queries needed to see their results.
//!
//! Errors: every error carries `extensions.code`. Domain refusals keep their
//! stable domain code; failures inside the server say `INTERNAL` and show no
//! detail (the cause is logged with the request id).
mod access;
mod embedding;
mod events;
pub mod guard;
mod inputs;
mod notifications;
mod read;
pub(crate) mod slot_changes;
mod subscriptions;
mod types;
mod webhooks;

use std::sync::Arc;

use async_graphql::{
    Context, Error, ErrorExtensions, MergedObject, MergedSubscription, Object, Result, Schema, ID,
};
use buktor_domain::{Actor, AppointmentId, PractitionerId, ServiceId, Source};
use uuid::Uuid;

use crate::app::{
    AppError, Attendance, CommandContext, CommandOutcome, RecordAttendance, Scheduler,
};
use crate::auth::Principal;
use crate::projection::ReadSide;
use async_graphql::dataloader::DataLoader;
use inputs::*;
use types::*;

pub use events::EventsQuery;
pub use guard::Endpoint;
pub use subscriptions::SubscriptionRoot;

pub type BuktorSchema = Schema<QueryRoot, MutationRoot, Subscriptions>;

/// Every subscription.
#[derive(MergedSubscription, Default)]
pub struct Subscriptions(SubscriptionRoot, slot_changes::SlotSubscription);

/// What each request carries into resolvers, besides the principal.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub remote_addr: Option<String>,
    pub request_id: Uuid,
    pub source: Option<Source>,
}

/// The most a query may cost: one point per field, a list field its page
/// size times what each item asks for. A full page of 500 slots with a few
/// fields fits; a query that fans out over several big pages does not.
pub const MAX_COMPLEXITY: usize = 10_000;

/// How deeply a query's selections may nest.
pub const MAX_DEPTH: usize = 12;

/// How deeply an operation that selects only introspection fields may
/// nest (see [`guard::Endpoint`]): the standard introspection query needs
/// 15 (`ofType` nine levels under `fields { type }`); a little room is
/// left for clients that ask one or two levels more.
pub const INTROSPECTION_MAX_DEPTH: usize = 20;

/// The schema behind the request limits of [`guard`].
pub fn schema(
    scheduler: Arc<Scheduler>,
    read_side: Arc<ReadSide>,
    webhooks: crate::config::Webhooks,
) -> Endpoint {
    let schema = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        Subscriptions::default(),
    )
    .data(scheduler)
    .data(webhooks)
    .data(DataLoader::new(
        read::AppointmentLoader(read_side.clone()),
        tokio::spawn,
    ))
    .data(DataLoader::new(
        read::HistoryLoader(read_side.clone()),
        tokio::spawn,
    ))
    .data(read_side)
    .limit_depth(MAX_DEPTH)
    .limit_complexity(MAX_COMPLEXITY)
    .limit_recursive_depth(32)
    .finish();
    // Introspection reads only the schema's own description: no data.
    let introspection = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        Subscriptions::default(),
    )
    .limit_depth(INTROSPECTION_MAX_DEPTH)
    .limit_complexity(MAX_COMPLEXITY)
    .limit_recursive_depth(32)
    .finish();
    Endpoint::new(schema, introspection)
}

/// The schema in SDL, as `buktor graphql schema` prints it. It does not
/// depend on any data, so it is built without a store.
pub fn sdl() -> String {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        Subscriptions::default(),
    )
    .finish()
    .sdl()
}

/// The GraphQL error for an application error, logged once here.
pub(crate) fn app_error(e: AppError) -> Error {
    let code = e.code();
    match &e {
        _ if e.is_unavailable() => {
            tracing::warn!(error = ?e, "the store is unavailable");
            Error::new("the store is unavailable; retry the request (with the same idempotencyKey)")
                .extend_with(|_, ext| ext.set("code", code))
        }
        AppError::Store(_) | AppError::Corrupt(_) => {
            tracing::error!(error = ?e, "request failed inside the server");
            Error::new("internal error").extend_with(|_, ext| ext.set("code", code))
        }
        AppError::Domain(buktor_domain::DomainError::InvalidInput { field, .. }) => {
            let field = *field;
            Error::new(e.to_string()).extend_with(|_, ext| {
                ext.set("code", code);
                ext.set("field", field);
            })
        }
        _ => Error::new(e.to_string()).extend_with(|_, ext| ext.set("code", code)),
    }
}

pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    app_error(AppError::Domain(buktor_domain::DomainError::invalid(
        field, message,
    )))
}

fn principal<'a>(ctx: &Context<'a>) -> &'a Principal {
    ctx.data_unchecked::<Principal>()
}

fn scheduler<'a>(ctx: &Context<'a>) -> &'a Arc<Scheduler> {
    ctx.data_unchecked::<Arc<Scheduler>>()
}

fn parse_id<T: std::str::FromStr>(field: &'static str, id: &ID) -> Result<T> {
    id.parse::<T>()
        .map_err(|_| invalid(field, format!("{:?} is not a valid id", id.as_str())))
}

fn command_context(ctx: &Context<'_>, idempotency_key: Option<String>) -> Result<CommandContext> {
    let p = principal(ctx);
    let info = ctx.data_unchecked::<RequestInfo>();
    if let Some(key) = &idempotency_key {
        if key.is_empty() || key.len() > 200 || key.chars().any(char::is_control) {
            return Err(invalid(
                "idempotencyKey",
                "must be 1 to 200 characters without control characters",
            ));
        }
    }
    Ok(CommandContext {
        tenant: p.tenant.id,
        time_zone: p.tenant.time_zone,
        actor: Actor {
            id: p.actor_id.clone(),
            role: p.role,
        },
        source: info.source.unwrap_or(match p.role {
            buktor_domain::Role::HisSystem => Source::HisApi,
            _ => Source::Admin,
        }),
        remote_addr: info.remote_addr.clone(),
        correlation_id: info.request_id,
        idempotency_key,
    })
}

/// Every query. Each part lives with the read side it serves.
#[derive(MergedObject, Default)]
pub struct QueryRoot(
    CoreQuery,
    EventsQuery,
    read::ReadQuery,
    webhooks::WebhookQuery,
    notifications::NotificationQuery,
    embedding::EmbeddingQuery,
    access::AccessQuery,
);

#[derive(Default)]
pub struct CoreQuery;

#[Object]
impl CoreQuery {
    /// The caller: its hospital and role.
    async fn me(&self, ctx: &Context<'_>) -> Me {
        Me(principal(ctx).clone())
    }

    async fn practitioner(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Practitioner>> {
        let id: PractitionerId = parse_id("id", &id)?;
        let p = scheduler(ctx)
            .practitioner(principal(ctx).tenant_id(), id)
            .await
            .map_err(app_error)?;
        Ok(p.map(Practitioner))
    }

    async fn service(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Service>> {
        let id: ServiceId = parse_id("id", &id)?;
        let s = scheduler(ctx)
            .service(principal(ctx).tenant_id(), id)
            .await
            .map_err(app_error)?;
        Ok(s.map(Service))
    }

    /// A practitioner's weekly rules and exceptions; null for an unknown practitioner.
    async fn schedule(&self, ctx: &Context<'_>, practitioner_id: ID) -> Result<Option<Schedule>> {
        let id: PractitionerId = parse_id("practitionerId", &practitioner_id)?;
        let s = scheduler(ctx);
        let tenant = principal(ctx).tenant_id();
        if s.practitioner(tenant, id)
            .await
            .map_err(app_error)?
            .is_none()
        {
            return Ok(None);
        }
        let schedule = s.schedule(tenant, id).await.map_err(app_error)?;
        Ok(Some(Schedule {
            practitioner_id: id,
            schedule,
        }))
    }

    /// An appointment as it is now (read from its own events, so always
    /// current), or as it was at `asOf`.
    async fn appointment(
        &self,
        ctx: &Context<'_>,
        id: ID,
        as_of: Option<read::AsOfInput>,
    ) -> Result<Option<Appointment>> {
        let id: AppointmentId = parse_id("id", &id)?;
        if let Some(as_of) = as_of {
            let as_of = as_of.parse()?;
            let a = read::read_side(ctx)
                .appointment_as_of(principal(ctx).tenant_id(), id, as_of)
                .await
                .map_err(read::view_error)?;
            return Ok(a.map(|a| Appointment(a, Some(as_of))));
        }
        let a = scheduler(ctx)
            .appointment(principal(ctx).tenant_id(), id)
            .await
            .map_err(app_error)?;
        Ok(a.map(|a| Appointment(a, None)))
    }
}

/// Every mutation.
#[derive(MergedObject, Default)]
pub struct MutationRoot(
    CoreMutation,
    webhooks::WebhookMutation,
    notifications::NotificationMutation,
    embedding::EmbeddingMutation,
    access::AccessMutation,
);

#[derive(Default)]
pub struct CoreMutation;

async fn done(
    fut: impl std::future::Future<Output = crate::app::AppResult<CommandOutcome>>,
) -> Result<CommandResult> {
    fut.await.map(CommandResult).map_err(app_error)
}

#[Object]
impl CoreMutation {
    async fn register_practitioner(
        &self,
        ctx: &Context<'_>,
        input: PractitionerInput,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        let cmd = input.into_register()?;
        let c = command_context(ctx, idempotency_key)?;
        done(scheduler(ctx).register_practitioner(&c, &cmd)).await
    }

    async fn update_practitioner(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: PractitionerInput,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        let cmd = input.into_update(parse_id("id", &id)?)?;
        let c = command_context(ctx, idempotency_key)?;
        done(scheduler(ctx).update_practitioner(&c, &cmd)).await
    }

    async fn set_practitioner_active(
        &self,
        ctx: &Context<'_>,
        id: ID,
        active: bool,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        let cmd = crate::app::SetPractitionerActive {
            id: parse_id("id", &id)?,
            active,
        };
        let c = command_context(ctx, idempotency_key)?;
        done(scheduler(ctx).set_practitioner_active(&c, &cmd)).await
    }

    async fn define_service(
        &self,
        ctx: &Context<'_>,
        input: ServiceInput,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        let cmd = input.into_define()?;
        let c = command_context(ctx, idempotency_key)?;
        done(scheduler(ctx).define_service(&c, &cmd)).await
    }

    async fn update_service(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: ServiceInput,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        let cmd = input.into_update(parse_id("id", &id)?)?;
        let c = command_context(ctx, idempotency_key)?;
        done(scheduler(ctx).update_service(&c, &cmd)).await
    }

    async fn set_service_active(
        &self,
        ctx: &Context<'_>,
        id: ID,
        active: bool,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        let cmd = crate::app::SetServiceActive {
            id: parse_id("id", &id)?,
            active,
        };
        let c = command_context(ctx, idempotency_key)?;
        done(scheduler(ctx).set_service_active(&c, &cmd)).await
    }

    /// Replaces the practitioner's weekly rules. Times are wall-clock in the hospital's time zone.
    async fn set_weekly_rules(
        &self,
        ctx: &Context<'_>,
        practitioner_id: ID,
        rules: Vec<WeeklyRuleInput>,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        let cmd = crate::app::SetWeeklyRules {
            practitioner_id: parse_id("practitionerId", &practitioner_id)?,
            rules: rules
                .into_iter()
                .map(WeeklyRuleInput::parse)
                .collect::<Result<_>>()?,
        };
        let c = command_context(ctx, idempotency_key)?;
        done(scheduler(ctx).set_weekly_rules(&c, &cmd)).await
    }

    async fn add_schedule_exception(
        &self,
        ctx: &Context<'_>,
        practitioner_id: ID,
        input: ScheduleExceptionInput,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        let cmd = crate::app::AddScheduleException {
            practitioner_id: parse_id("practitionerId", &practitioner_id)?,
            exception: input.parse()?,
        };
        let c = command_context(ctx, idempotency_key)?;
        done(scheduler(ctx).add_schedule_exception(&c, &cmd)).await
    }

    async fn remove_schedule_exception(
        &self,
        ctx: &Context<'_>,
        practitioner_id: ID,
        exception_id: ID,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        let cmd = crate::app::RemoveScheduleException {
            practitioner_id: parse_id("practitionerId", &practitioner_id)?,
            exception_id: parse_id("exceptionId", &exception_id)?,
        };
        let c = command_context(ctx, idempotency_key)?;
        done(scheduler(ctx).remove_schedule_exception(&c, &cmd)).await
    }

    async fn book_appointment(
        &self,
        ctx: &Context<'_>,
        input: BookInput,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        let cmd = input.parse()?;
        let c = command_context(ctx, idempotency_key)?;
        done(scheduler(ctx).book(&c, &cmd)).await
    }

    async fn reschedule_appointment(
        &self,
        ctx: &Context<'_>,
        id: ID,
        start: chrono::DateTime<chrono::Utc>,
        practitioner_id: Option<ID>,
        reason: Option<String>,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        let cmd = crate::app::Reschedule {
            appointment_id: parse_id("id", &id)?,
            practitioner_id: practitioner_id
                .map(|p| parse_id("practitionerId", &p))
                .transpose()?,
            start: buktor_domain::time::Instant::parse("start", start)
                .map_err(|e| app_error(e.into()))?,
            reason: reason.map(|r| parse_reason("reason", &r)).transpose()?,
            overriding: None,
            reservation: None,
        };
        let c = command_context(ctx, idempotency_key)?;
        done(scheduler(ctx).reschedule(&c, &cmd)).await
    }

    async fn cancel_appointment(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: String,
        cancelled_by: CancelledByInput,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        let cmd = crate::app::Cancel {
            appointment_id: parse_id("id", &id)?,
            reason: parse_reason("reason", &reason)?,
            cancelled_by: cancelled_by.into(),
            reason_code: None,
        };
        let c = command_context(ctx, idempotency_key)?;
        done(scheduler(ctx).cancel(&c, &cmd)).await
    }

    async fn check_in_appointment(
        &self,
        ctx: &Context<'_>,
        id: ID,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        attendance(ctx, id, Attendance::CheckIn, idempotency_key).await
    }

    async fn complete_appointment(
        &self,
        ctx: &Context<'_>,
        id: ID,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        attendance(ctx, id, Attendance::Complete, idempotency_key).await
    }

    async fn mark_no_show(
        &self,
        ctx: &Context<'_>,
        id: ID,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        attendance(ctx, id, Attendance::NoShow, idempotency_key).await
    }
}

async fn attendance(
    ctx: &Context<'_>,
    id: ID,
    step: Attendance,
    idempotency_key: Option<String>,
) -> Result<CommandResult> {
    let cmd = RecordAttendance {
        appointment_id: parse_id("id", &id)?,
        step,
    };
    let c = command_context(ctx, idempotency_key)?;
    done(scheduler(ctx).record_attendance(&c, &cmd)).await
}
