//! The inbound HIS API under `/his/v1/` (integration 4): the HIS sends its
//! practitioners, services, schedules, patients and appointments keyed by
//! its own ids, each with its own version, and Buktor keeps them (and the
//! reminders that follow them) in sync.
//!
//! - Ids: Buktor derives its id from the HIS's (`HisRecordKind::buktor_id`),
//!   so every instance maps alike without a lookup table.
//! - Versions: every change carries the record's HIS version; an older one
//!   arriving late is acknowledged as `stale` and changes nothing
//!   (`crate::app::HisVersioned`).
//! - Idempotency: every write needs an `Idempotency-Key`; a repeat answers
//!   as the first did.
//! - Conflicts with Buktor's rules are typed problems; `force` with a
//!   `forceReason` overrides them, and the reason is recorded.
//! - Errors are RFC 9457 problem details with a stable `code`.
//!
//! `model` holds the bodies, `openapi` the generated OpenAPI 3.1 document
//! and the docs page.
pub mod model;
pub mod openapi;

use std::future::Future;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use buktor_domain::his::HisRecordKind;
use buktor_domain::{Actor, DomainError, Role, Source};
use futures::{stream, StreamExt};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::app::{AppError, Attendance, CommandContext, CommandOutcome, HisVersioned, Scheduler};
use crate::auth::Principal;
use crate::http::AppState;
use model::{
    AppointmentBody, AppointmentView, BulkBody, BulkResult, BulkSummary, CancelBody, Invalid,
    Outcome, Parsed, PatientBody, PractitionerBody, ProblemBody, ScheduleBody, ServiceBody,
    StepBody, WriteResult,
};

/// The most records one bulk request may carry.
pub const MAX_BULK_RECORDS: usize = 10_000;
/// The largest bulk body.
pub const MAX_BULK_BYTES: usize = 64 << 20;
/// Records of one bulk request decided at once: enough to keep the store
/// busy, few enough that one request does not starve the others.
const BULK_CONCURRENCY: usize = 32;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Each path answers its other methods with 405 and the ones it has.
    let resource = |path: &str, allow: &'static str| {
        web::resource(path).default_service(web::to(move || async move {
            let mut res = Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                format!("this path takes {allow}"),
            )
            .response();
            res.headers_mut().insert(
                actix_web::http::header::ALLOW,
                actix_web::http::header::HeaderValue::from_static(allow),
            );
            res
        }))
    };
    cfg.service(resource("/openapi.json", "GET").route(web::get().to(openapi::document)))
        .service(resource("/docs", "GET").route(web::get().to(openapi::page)))
        .service(resource("/practitioners/{his_id}", "PUT").route(web::put().to(put_practitioner)))
        .service(
            resource("/practitioners/{his_id}/schedule", "PUT").route(web::put().to(put_schedule)),
        )
        .service(resource("/services/{his_id}", "PUT").route(web::put().to(put_service)))
        .service(resource("/patients/{his_id}", "PUT").route(web::put().to(put_patient)))
        .service(
            resource("/appointments/{his_id}", "GET, PUT")
                .route(web::put().to(put_appointment))
                .route(web::get().to(get_appointment)),
        )
        .service(
            resource("/appointments/{his_id}/cancel", "POST")
                .route(web::post().to(cancel_appointment)),
        )
        .service(
            resource("/appointments/{his_id}/check-in", "POST").route(web::post().to(check_in)),
        )
        .service(
            resource("/appointments/{his_id}/complete", "POST").route(web::post().to(complete)),
        )
        .service(resource("/appointments/{his_id}/no-show", "POST").route(web::post().to(no_show)))
        .service(resource("/bulk", "POST").route(web::post().to(bulk)))
        .default_service(web::to(|| async {
            Problem::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "no such route in /his/v1",
            )
            .response()
        }));
}

/// A refusal, as RFC 9457 problem details (also the widget API's).
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    code: String,
    detail: String,
    field: Option<String>,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            code: code.to_owned(),
            detail: detail.into(),
            field: None,
        }
    }

    fn body(&self) -> ProblemBody {
        ProblemBody {
            type_: format!(
                "https://buktor.dev/problems/{}",
                self.code.to_lowercase().replace('_', "-")
            ),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            code: self.code.clone(),
            detail: self.detail.clone(),
            field: self.field.clone(),
        }
    }

    pub(crate) fn response(&self) -> HttpResponse {
        HttpResponse::build(self.status)
            .content_type("application/problem+json")
            .json(self.body())
    }
}

impl From<DomainError> for Problem {
    fn from(e: DomainError) -> Self {
        AppError::Domain(e).into()
    }
}

impl From<AppError> for Problem {
    fn from(e: AppError) -> Self {
        use DomainError as D;
        let status = match &e {
            AppError::Domain(d) if d.is_not_found() => StatusCode::NOT_FOUND,
            AppError::Domain(
                D::SlotTaken { .. }
                | D::HoldExpired { .. }
                | D::AppointmentAlreadyExists(_)
                | D::InvalidTransition { .. }
                | D::HisVersionKindChanged { .. },
            )
            | AppError::Contention(_)
            | AppError::IdempotencyKeyReused(_) => StatusCode::CONFLICT,
            AppError::Domain(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Forbidden { .. } => StatusCode::FORBIDDEN,
            // Only an unreachable or busy store is worth a retry; anything
            // else inside the server (an append it should not have built,
            // data that does not decode) fails the same way every time.
            AppError::Store(store) if store.is_unavailable() => {
                tracing::error!(error = ?e, "HIS request failed: the store is unavailable");
                return Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "STORE_UNAVAILABLE",
                    "the store failed; retry with the same Idempotency-Key",
                );
            }
            AppError::Corrupt(_) | AppError::Store(_) => {
                tracing::error!(error = ?e, "HIS request failed inside the server");
                return Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL",
                    "the server failed on this request; a retry will not help, report it",
                );
            }
        };
        let field = match &e {
            AppError::Domain(D::InvalidInput { field, .. }) => Some((*field).to_owned()),
            _ => None,
        };
        Problem {
            field,
            ..Problem::new(status, e.code(), e.to_string())
        }
    }
}

/// A HIS key, or the response refusing the caller.
async fn his_caller(req: &HttpRequest, state: &AppState) -> Result<Principal, HttpResponse> {
    let p = crate::http::authenticated(req, state).await?;
    if p.role != Role::HisSystem {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            format!(
                "the {} role may not use the HIS API; use a his-system key",
                p.role
            ),
        )
        .response());
    }
    Ok(p)
}

fn context(req: &HttpRequest, p: &Principal, key: String) -> CommandContext {
    let correlation_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::try_parse(v).ok())
        .unwrap_or_else(Uuid::now_v7);
    CommandContext {
        tenant: p.tenant.id,
        time_zone: p.tenant.time_zone,
        actor: Actor {
            id: p.actor_id.clone(),
            role: p.role,
        },
        source: Source::HisApi,
        remote_addr: req.peer_addr().map(|a| a.ip().to_string()),
        correlation_id,
        idempotency_key: Some(key),
    }
}

/// The `Idempotency-Key`: 1 to 200 visible ASCII characters, spaces and tabs
/// inside allowed (`openapi::IDEMPOTENCY_KEY_PATTERN` says the same to clients;
/// HTTP itself drops them around the value).
fn idempotency_key(req: &HttpRequest) -> Result<String, Problem> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "IDEMPOTENCY_KEY_REQUIRED",
            "every write needs an Idempotency-Key header",
        ));
    };
    match value.to_str() {
        Ok(key) if key.len() <= 200 && key.bytes().any(|b| b.is_ascii_graphic()) => {
            Ok(key.to_owned())
        }
        _ => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "INVALID_IDEMPOTENCY_KEY",
            "Idempotency-Key must be 1 to 200 visible ASCII characters (spaces inside allowed)",
        )),
    }
}

async fn json_body<T: DeserializeOwned>(
    payload: web::Payload,
    limit: usize,
) -> Result<T, HttpResponse> {
    let bytes = crate::http::read_body(payload, limit).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "MALFORMED_BODY",
            format!("the body is not the expected JSON: {e}"),
        )
        .response()
    })
}

/// What a command's outcome says about the record.
fn written(kind: HisRecordKind, his_id: &str, outcome: CommandOutcome) -> WriteResult {
    WriteResult {
        kind: kind.as_str(),
        his_id: his_id.to_owned(),
        id: Some(outcome.id),
        // The version guard's own event is always one of them.
        outcome: if outcome.events > 1 {
            Outcome::Applied
        } else {
            Outcome::Unchanged
        },
        position: outcome.position.map(|p| p.to_string()),
        detail: None,
        problem: None,
    }
}

/// Runs one parsed record through `run`; a stale version is an answer, not
/// an error.
async fn apply<C, F, Fut>(
    kind: HisRecordKind,
    ctx: &CommandContext,
    parsed: Invalid<Parsed<C>>,
    raw_id: &str,
    run: F,
) -> Result<WriteResult, Problem>
where
    F: FnOnce(HisVersioned<C>) -> Fut,
    Fut: Future<Output = Result<CommandOutcome, AppError>>,
{
    let parsed = parsed?;
    let command = HisVersioned {
        kind,
        his_id: parsed.his_id,
        version: parsed.version,
        overriding: parsed.overriding,
        change: parsed.change,
    };
    let id = command.buktor_id(ctx.tenant);
    match run(command).await {
        Ok(outcome) => Ok(written(kind, raw_id, outcome)),
        Err(AppError::Domain(e @ DomainError::HisVersionNotNewer { .. })) => Ok(WriteResult {
            kind: kind.as_str(),
            his_id: raw_id.to_owned(),
            id: Some(id),
            outcome: Outcome::Stale,
            position: None,
            detail: Some(e.to_string()),
            problem: None,
        }),
        Err(e) => Err(unknown_ids(e)),
    }
}

/// Names a missing record by what the HIS calls it, not by Buktor's id.
fn unknown_ids(e: AppError) -> Problem {
    let (code, what) = match &e {
        AppError::Domain(DomainError::PractitionerNotFound(_)) => (
            "UNKNOWN_PRACTITIONER",
            "a practitioner it names was not sent to Buktor yet",
        ),
        AppError::Domain(DomainError::ServiceNotFound(_)) => (
            "UNKNOWN_SERVICE",
            "the service it names was not sent to Buktor yet",
        ),
        AppError::Domain(DomainError::AppointmentNotFound(_)) => (
            "UNKNOWN_APPOINTMENT",
            "Buktor has no appointment with this HIS id",
        ),
        _ => return e.into(),
    };
    Problem::new(StatusCode::NOT_FOUND, code, what)
}

type Handler = Result<HttpResponse, Refused>;

/// A response that ends a handler early (authentication, a malformed body).
#[derive(Debug)]
struct Refused(HttpResponse);

impl From<HttpResponse> for Refused {
    fn from(res: HttpResponse) -> Self {
        Refused(res)
    }
}

impl From<Refused> for actix_web::Error {
    fn from(r: Refused) -> Self {
        actix_web::error::InternalError::from_response("refused", r.0).into()
    }
}

fn answer(result: Result<WriteResult, Problem>) -> HttpResponse {
    match result {
        Ok(w) => HttpResponse::Ok().json(w),
        Err(p) => p.response(),
    }
}

/// The frame every single-record write shares: a HIS caller, an
/// idempotency key, a body within the limit, parsed for the caller's
/// hospital, and the change run under its version guard.
#[allow(clippy::too_many_arguments)]
async fn write<B, C, Fut>(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
    kind: HisRecordKind,
    parse: impl FnOnce(B, &CommandContext, &str) -> Invalid<Parsed<C>>,
    run: impl FnOnce(Arc<Scheduler>, CommandContext, HisVersioned<C>) -> Fut,
) -> Handler
where
    B: DeserializeOwned,
    Fut: Future<Output = Result<CommandOutcome, AppError>>,
{
    let p = his_caller(&req, &state).await?;
    let key = idempotency_key(&req).map_err(|p| p.response())?;
    let body: B = json_body(payload, state.max_body_bytes).await?;
    let ctx = context(&req, &p, key);
    let parsed = parse(body, &ctx, &path);
    let scheduler = state.scheduler.clone();
    let result = apply(kind, &ctx, parsed, &path, |c| {
        run(scheduler, ctx.clone(), c)
    })
    .await;
    Ok(answer(result))
}

/// Create or update a practitioner
///
/// The practitioner as the HIS has it now, keyed by the HIS's id. An
/// inactive practitioner is kept (with their appointments) but cannot be
/// booked.
#[utoipa::path(
    put, path = "/his/v1/practitioners/{hisId}", tag = "practitioners",
    params(("hisId" = String, Path, description = "The HIS's practitioner id")),
    request_body(content = PractitionerBody, example = json!({
        "version": 7, "name": "Dr. Ada Jansen", "specialty": "Cardiology",
        "department": "Heart Centre", "location": "Building B, floor 2",
    })),
    responses(
        (status = 200, description = "Applied, unchanged or stale", body = WriteResult),
    ),
)]
async fn put_practitioner(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Handler {
    write(
        req,
        state,
        path,
        payload,
        HisRecordKind::Practitioner,
        |b: PractitionerBody, _, id| b.parse(id),
        |s, ctx, c| async move { s.his_upsert_practitioner(&ctx, &c).await },
    )
    .await
}

/// Replace a practitioner's schedule
///
/// The whole schedule: weekly rules in the hospital's local time, and the
/// exceptions (leave, extra sessions). Exceptions not in it are removed.
/// Send the practitioner first.
#[utoipa::path(
    put, path = "/his/v1/practitioners/{hisId}/schedule", tag = "schedules",
    params(("hisId" = String, Path, description = "The HIS's practitioner id")),
    request_body(content = ScheduleBody, example = json!({
        "version": 3,
        "weeklyRules": [{
            "weekdays": ["MON", "TUE", "THU"], "start": "08:00", "end": "12:00",
            "gridMinutes": 20, "effectiveFrom": "2026-01-05",
        }],
        "exceptions": [
            {"hisId": "LEAVE-12", "date": "2026-12-24", "kind": "unavailable", "reason": "Christmas leave"},
            {"hisId": "EXTRA-3", "date": "2026-12-19", "kind": "extra-session", "start": "09:00", "end": "11:00", "gridMinutes": 20},
        ],
    })),
    responses(
        (status = 200, description = "Applied, unchanged or stale", body = WriteResult),
        (status = 404, description = "UNKNOWN_PRACTITIONER: send the practitioner first", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
async fn put_schedule(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Handler {
    write(
        req,
        state,
        path,
        payload,
        HisRecordKind::Schedule,
        |b: ScheduleBody, ctx, id| b.parse(ctx.tenant, id),
        |s, ctx, c| async move { s.his_replace_schedule(&ctx, &c).await },
    )
    .await
}

/// Create or update a service
///
/// What can be booked: its duration, buffers, capacity, booking window and
/// the practitioners who offer it (sent before).
#[utoipa::path(
    put, path = "/his/v1/services/{hisId}", tag = "services",
    params(("hisId" = String, Path, description = "The HIS's service id")),
    request_body(content = ServiceBody, example = json!({
        "version": 2, "name": "Cardiology consultation", "durationMinutes": 20,
        "bufferAfterMinutes": 5, "practitionerIds": ["DOC-1"],
        "minNoticeMinutes": 60, "maxAdvanceDays": 90,
    })),
    responses(
        (status = 200, description = "Applied, unchanged or stale", body = WriteResult),
        (status = 404, description = "UNKNOWN_PRACTITIONER: a practitioner it names was not sent yet", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
async fn put_service(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Handler {
    write(
        req,
        state,
        path,
        payload,
        HisRecordKind::Service,
        |b: ServiceBody, ctx, id| b.parse(ctx.tenant, id),
        |s, ctx, c| async move { s.his_upsert_service(&ctx, &c).await },
    )
    .await
}

/// Record a patient's contact data
///
/// Contact data and notification preferences, whole: what is absent is
/// removed. Nothing clinical.
#[utoipa::path(
    put, path = "/his/v1/patients/{hisId}", tag = "patients",
    params(("hisId" = String, Path, description = "The HIS's patient id")),
    request_body(content = PatientBody, example = json!({
        "lastModified": "2026-11-30T16:05:00Z", "name": "Ada Jansen",
        "phone": "+31 20 123 4567", "email": "ada@example.org", "language": "nl",
        "optedOut": ["sms"],
    })),
    responses(
        (status = 200, description = "Applied, unchanged or stale", body = WriteResult),
    ),
)]
async fn put_patient(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Handler {
    write(
        req,
        state,
        path,
        payload,
        HisRecordKind::Patient,
        |b: PatientBody, _, id| b.parse(id),
        |s, ctx, c| async move { s.his_record_patient_contact(&ctx, &c).await },
    )
    .await
}

/// Book or move an appointment
///
/// The appointment as the HIS has it now. Unknown to Buktor: it is booked;
/// known: it is moved when its time or practitioner changed. Buktor's rules
/// apply (free time, schedule, notice, window) unless `force` is sent with
/// a `forceReason`, which is recorded.
#[utoipa::path(
    put, path = "/his/v1/appointments/{hisId}", tag = "appointments",
    params(("hisId" = String, Path, description = "The HIS's appointment id")),
    request_body(content = AppointmentBody, example = json!({
        "version": 1, "practitionerId": "DOC-1", "serviceId": "SVC-CARD",
        "start": "2027-03-02T09:20:00+01:00",
        "patient": {"hisId": "PAT-1", "name": "Ada Jansen", "phone": "+31 20 123 4567"},
        "note": "Bring the referral letter",
    })),
    responses(
        (status = 200, description = "Booked, moved, unchanged or stale", body = WriteResult),
        (status = 409, description = "The time is taken (SLOT_TAKEN); send force with a forceReason to override", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "UNKNOWN_PRACTITIONER or UNKNOWN_SERVICE", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "A rule refuses it (OUTSIDE_AVAILABILITY, IN_THE_PAST, …) or the input is invalid", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
async fn put_appointment(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Handler {
    write(
        req,
        state,
        path,
        payload,
        HisRecordKind::Appointment,
        |b: AppointmentBody, ctx, id| b.parse(ctx.tenant, ctx.time_zone, id),
        |s, ctx, c| async move { s.his_upsert_appointment(&ctx, &c).await },
    )
    .await
}

/// Cancel an appointment
///
/// Says who cancelled and why; the patient is told.
#[utoipa::path(
    post, path = "/his/v1/appointments/{hisId}/cancel", tag = "appointments",
    params(("hisId" = String, Path, description = "The HIS's appointment id")),
    request_body(content = CancelBody, example = json!({
        "version": 2, "reason": "Patient called to cancel", "cancelledBy": "patient",
    })),
    responses(
        (status = 200, description = "Cancelled or stale", body = WriteResult),
        (status = 404, description = "UNKNOWN_APPOINTMENT", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
async fn cancel_appointment(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Handler {
    write(
        req,
        state,
        path,
        payload,
        HisRecordKind::Appointment,
        |b: CancelBody, ctx, id| b.parse(ctx.tenant, id),
        |s, ctx, c| async move { s.his_cancel_appointment(&ctx, &c).await },
    )
    .await
}

async fn step(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
    step: Attendance,
) -> Handler {
    write(
        req,
        state,
        path,
        payload,
        HisRecordKind::Appointment,
        |b: StepBody, ctx, id| b.parse(ctx.tenant, id, step),
        |s, ctx, c| async move { s.his_record_attendance(&ctx, &c).await },
    )
    .await
}

/// Check a patient in
///
/// The patient arrived for the appointment.
#[utoipa::path(
    post, path = "/his/v1/appointments/{hisId}/check-in", tag = "appointments",
    params(("hisId" = String, Path, description = "The HIS's appointment id")),
    request_body(content = StepBody, example = json!({"version": 3})),
    responses(
        (status = 200, description = "Checked in or stale", body = WriteResult),
        (status = 404, description = "UNKNOWN_APPOINTMENT", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "CHECK_IN_TOO_EARLY", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
async fn check_in(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Handler {
    step(req, state, path, payload, Attendance::CheckIn).await
}

/// Complete an appointment
///
/// The appointment took place.
#[utoipa::path(
    post, path = "/his/v1/appointments/{hisId}/complete", tag = "appointments",
    params(("hisId" = String, Path, description = "The HIS's appointment id")),
    request_body(content = StepBody, example = json!({"version": 4})),
    responses(
        (status = 200, description = "Completed or stale", body = WriteResult),
        (status = 404, description = "UNKNOWN_APPOINTMENT", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
async fn complete(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Handler {
    step(req, state, path, payload, Attendance::Complete).await
}

/// Mark an appointment as a no-show
///
/// The patient did not come (only after the start).
#[utoipa::path(
    post, path = "/his/v1/appointments/{hisId}/no-show", tag = "appointments",
    params(("hisId" = String, Path, description = "The HIS's appointment id")),
    request_body(content = StepBody, example = json!({"lastModified": "2026-12-01T10:02:00+01:00"})),
    responses(
        (status = 200, description = "Marked as no-show or stale", body = WriteResult),
        (status = 404, description = "UNKNOWN_APPOINTMENT", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "NOT_STARTED_YET", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
async fn no_show(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Handler {
    step(req, state, path, payload, Attendance::NoShow).await
}

/// Read an appointment
///
/// The appointment as Buktor has it, with the last HIS version applied.
#[utoipa::path(
    get, path = "/his/v1/appointments/{hisId}", tag = "appointments",
    params(("hisId" = String, Path, description = "The HIS's appointment id")),
    responses(
        (status = 200, description = "The appointment as Buktor has it", body = AppointmentView),
        (status = 404, description = "UNKNOWN_APPOINTMENT", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
async fn get_appointment(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Handler {
    let p = his_caller(&req, &state).await?;
    let tenant = p.tenant.id;
    let found = async {
        let his_id = model::parse_his_id("hisId", &path)?;
        let id = model::appointment_id(tenant, &his_id);
        let Some(a) = state.scheduler.appointment(tenant, id).await? else {
            return Err(unknown_ids(AppError::Domain(
                DomainError::AppointmentNotFound(id),
            )));
        };
        let practitioner = state
            .scheduler
            .practitioner(tenant, a.practitioner_id)
            .await?;
        let service = state.scheduler.service(tenant, a.service_id).await?;
        let version = state
            .scheduler
            .his_version(tenant, HisRecordKind::Appointment, id.as_uuid())
            .await?;
        Ok::<_, Problem>(AppointmentView {
            his_id: his_id.to_string(),
            id: id.as_uuid(),
            status: a.status.as_str().to_owned(),
            start: a.start,
            end: a.end,
            start_local: a.start.with_timezone(&p.tenant.time_zone).to_rfc3339(),
            practitioner_id: practitioner
                .and_then(|p| p.details.external_id)
                .map(|e| e.to_string()),
            service_id: service
                .and_then(|s| s.details.external_id)
                .map(|e| e.to_string()),
            patient_id: a.patient.his_patient_id.to_string(),
            his_version: version.map(|v| v.to_string()),
        })
    }
    .await;
    Ok(match found {
        Ok(view) => HttpResponse::Ok().json(view),
        Err(p) => p.response(),
    })
}

/// Each record of a bulk request gets its own idempotency key, derived from
/// the request's, so a repeat of the whole request answers record by
/// record as the first did.
fn record_key(key: &str, kind: HisRecordKind, index: usize) -> String {
    let digest = Sha256::digest(format!("{key}\u{0}{}\u{0}{index}", kind.as_str()));
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("bulk:{hex}")
}

fn failed(kind: HisRecordKind, his_id: Option<&str>, p: Problem) -> WriteResult {
    WriteResult {
        kind: kind.as_str(),
        his_id: his_id.unwrap_or_default().to_owned(),
        id: None,
        outcome: Outcome::Failed,
        position: None,
        detail: None,
        problem: Some(p.body()),
    }
}

/// Runs one group of a bulk request, at most `BULK_CONCURRENCY` at a time.
#[allow(clippy::too_many_arguments)]
async fn bulk_group<B, C, P, R, Fut>(
    scheduler: &Arc<Scheduler>,
    ctx: &CommandContext,
    kind: HisRecordKind,
    key: &str,
    items: Vec<B>,
    his_id_of: impl Fn(&B) -> Option<String>,
    parse: P,
    run: R,
) -> Vec<WriteResult>
where
    P: Fn(B, &str) -> Invalid<Parsed<C>>,
    R: Fn(Arc<Scheduler>, CommandContext, HisVersioned<C>) -> Fut,
    Fut: Future<Output = Result<CommandOutcome, AppError>>,
{
    let parse = &parse;
    let run = &run;
    stream::iter(items.into_iter().enumerate())
        .map(|(index, item)| {
            let his_id = his_id_of(&item);
            let mut ctx = ctx.clone();
            ctx.idempotency_key = Some(record_key(key, kind, index));
            async move {
                let Some(raw) = his_id.as_deref() else {
                    return failed(
                        kind,
                        None,
                        DomainError::invalid("hisId", "is required for each record in bulk").into(),
                    );
                };
                let parsed = parse(item, raw);
                let c = ctx.clone();
                apply(kind, &ctx, parsed, raw, |cmd| {
                    run(scheduler.clone(), c, cmd)
                })
                .await
                .unwrap_or_else(|p| failed(kind, Some(raw), p))
            }
        })
        .buffered(BULK_CONCURRENCY)
        .collect()
        .await
}

/// Load or reconcile many records at once
///
/// The initial load or a nightly reconciliation: up to 10,000 records,
/// applied in dependency order (practitioners, services, schedules,
/// patients, appointments). Each record is checked and applied alone: one
/// that is refused fails with its problem, the others apply.
#[utoipa::path(
    post, path = "/his/v1/bulk", tag = "bulk",
    request_body(content = BulkBody, example = json!({
        "practitioners": [{"hisId": "DOC-1", "version": 7, "name": "Dr. Ada Jansen", "specialty": "Cardiology"}],
        "services": [{"hisId": "SVC-CARD", "version": 2, "name": "Cardiology consultation", "durationMinutes": 20, "practitionerIds": ["DOC-1"]}],
        "schedules": [{"practitionerId": "DOC-1", "version": 3, "weeklyRules": [{"weekdays": ["MON", "WED"], "start": "08:00", "end": "12:00", "gridMinutes": 20, "effectiveFrom": "2026-01-05"}]}],
        "patients": [{"hisId": "PAT-1", "version": 1, "name": "Ada Jansen", "language": "nl"}],
    })),
    responses(
        (status = 200, description = "Every record's outcome; refused records carry their problem", body = BulkResult),
        (status = 413, description = "TOO_MANY_RECORDS (more than 10,000) or BODY_TOO_LARGE", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
async fn bulk(req: HttpRequest, state: web::Data<AppState>, payload: web::Payload) -> Handler {
    let p = his_caller(&req, &state).await?;
    let key = idempotency_key(&req).map_err(|p| p.response())?;
    let body: BulkBody = json_body(payload, MAX_BULK_BYTES).await?;
    if body.records() > MAX_BULK_RECORDS {
        return Err(Refused(
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "TOO_MANY_RECORDS",
                format!(
                    "{} records; send at most {MAX_BULK_RECORDS} per request",
                    body.records()
                ),
            )
            .response(),
        ));
    }
    let ctx = context(&req, &p, key.clone());
    let tenant = ctx.tenant;
    let zone = ctx.time_zone;
    let mut results = Vec::with_capacity(body.records());
    results.extend(
        bulk_group(
            &state.scheduler,
            &ctx,
            HisRecordKind::Practitioner,
            &key,
            body.practitioners,
            |b| b.his_id.clone(),
            |b, id| b.parse(id),
            |s, c, cmd| async move { s.his_upsert_practitioner(&c, &cmd).await },
        )
        .await,
    );
    results.extend(
        bulk_group(
            &state.scheduler,
            &ctx,
            HisRecordKind::Service,
            &key,
            body.services,
            |b| b.his_id.clone(),
            |b, id| b.parse(tenant, id),
            |s, c, cmd| async move { s.his_upsert_service(&c, &cmd).await },
        )
        .await,
    );
    results.extend(
        bulk_group(
            &state.scheduler,
            &ctx,
            HisRecordKind::Schedule,
            &key,
            body.schedules,
            |b| b.practitioner_id.clone(),
            |b, id| b.parse(tenant, id),
            |s, c, cmd| async move { s.his_replace_schedule(&c, &cmd).await },
        )
        .await,
    );
    results.extend(
        bulk_group(
            &state.scheduler,
            &ctx,
            HisRecordKind::Patient,
            &key,
            body.patients,
            |b| b.his_id.clone(),
            |b, id| b.parse(id),
            |s, c, cmd| async move { s.his_record_patient_contact(&c, &cmd).await },
        )
        .await,
    );
    results.extend(
        bulk_group(
            &state.scheduler,
            &ctx,
            HisRecordKind::Appointment,
            &key,
            body.appointments,
            |b| b.his_id.clone(),
            |b, id| b.parse(tenant, zone, id),
            |s, c, cmd| async move { s.his_upsert_appointment(&c, &cmd).await },
        )
        .await,
    );
    let mut summary = BulkSummary::default();
    for r in &results {
        *match r.outcome {
            Outcome::Applied => &mut summary.applied,
            Outcome::Unchanged => &mut summary.unchanged,
            Outcome::Stale => &mut summary.stale,
            Outcome::Failed => &mut summary.failed,
        } += 1;
    }
    tracing::info!(
        applied = summary.applied,
        unchanged = summary.unchanged,
        stale = summary.stale,
        failed = summary.failed,
        "HIS bulk request done"
    );
    Ok(HttpResponse::Ok().json(BulkResult { summary, results }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn bulk_record_keys_differ_by_kind_and_position() {
        use super::record_key;
        use buktor_domain::his::HisRecordKind as K;
        let a = record_key("k", K::Appointment, 0);
        assert_eq!(a, record_key("k", K::Appointment, 0));
        assert_ne!(a, record_key("k", K::Appointment, 1));
        assert_ne!(a, record_key("k", K::Patient, 0));
        assert_ne!(a, record_key("l", K::Appointment, 0));
        assert!(a.len() <= 200);
    }

    #[test]
    fn only_an_unavailable_store_is_a_retryable_503() {
        use crate::app::AppError;
        use crate::store::StoreError;
        let bug: super::Problem =
            AppError::Store(StoreError::InvalidAppend("stream s has no events".into())).into();
        assert_eq!((bug.status.as_u16(), bug.code.as_str()), (500, "INTERNAL"));
        let corrupt: super::Problem = AppError::Corrupt("calendar differs".into()).into();
        assert_eq!(corrupt.status.as_u16(), 500);
        let down: super::Problem =
            AppError::Store(StoreError::backend(std::io::Error::other("refused"))).into();
        assert_eq!(
            (down.status.as_u16(), down.code.as_str()),
            (503, "STORE_UNAVAILABLE")
        );
    }

    #[test]
    fn a_rule_conflict_is_a_409_with_its_code() {
        let p: super::Problem = buktor_domain::DomainError::SlotTaken {
            start: chrono::Utc::now(),
        }
        .into();
        assert_eq!(p.status.as_u16(), 409);
        assert_eq!(p.code, "SLOT_TAKEN");
        let _ = serde_json::json!(p.body());
    }
}
