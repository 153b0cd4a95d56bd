//! FHIR R4 under `/fhir/r4/`: read and search `Appointment`, `Patient`,
//! `Practitioner`, `Schedule` and `Slot`, create and update `Appointment`,
//! and the `CapabilityStatement` at `/fhir/r4/metadata`. Searches page with
//! `_count` and `_offset` and take `_include` where the statement says so.
//!
//! Layout: `params` (search parameters), `resources` (read models as FHIR
//! JSON), this module (routes, authentication, mapping writes onto the
//! `Scheduler`'s commands). Every request is authenticated like the rest of
//! the API (`crate::http::authenticated`); every error is an
//! `OperationOutcome` (`application/fhir+json`) carrying Buktor's code.
//! The mapping is documented in `docs/fhir.md`.
mod params;
mod resources;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use buktor_domain::appointment::{
    AppointmentStatus, BookedAppointment, CancellationCode, CANCELLATION_CODE_SYSTEM,
};
use buktor_domain::practitioner::RegisteredPractitioner;
use buktor_domain::service::DefinedService;
use buktor_domain::time::Instant;
use buktor_domain::values::{Name, PatientRef, Reason, ShortText};
use buktor_domain::{Actor, AppointmentId, PractitionerId, Role, ServiceId, Source, TenantId};
use buktor_projections::catalog::{practitioner_key, service_key, CatalogDoc};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::app::{
    AppError, Attendance, Book, Cancel, CommandContext, CommandOutcome, RecordAttendance,
    Reschedule,
};
use crate::auth::Principal;
use crate::http::AppState;
use crate::projection::views::{SlotSearch, ViewError};
use params::{Page, Range};
use resources::{
    Audit, APPOINTMENT_INCLUDES, ERROR_SYSTEM, PATIENT_SYSTEM, PRACTITIONER_SYSTEM,
    SCHEDULE_INCLUDES, SERVICE_SYSTEM, SLOT_INCLUDES,
};

const FHIR_JSON: &str = "application/fhir+json";
/// How long a write waits for the read models before answering, so the
/// client's next search sees it.
const CATCH_UP: Duration = Duration::from_secs(5);
/// The widest date range a practitioner's appointment search may cover.
const MAX_AGENDA_DAYS: i64 = 93;
/// The widest `start` range of a Slot search.
const MAX_SLOT_DAYS: i64 = 31;

/// The routes, mounted by `crate::http` under `/fhir/r4`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metadata", web::get().to(metadata))
        .route("/Appointment", web::get().to(search_appointments))
        .route("/Appointment", web::post().to(create_appointment))
        .route("/Appointment/{id}", web::get().to(read_appointment))
        .route("/Appointment/{id}", web::put().to(update_appointment))
        .route("/Patient", web::get().to(search_patients))
        .route("/Patient/{id}", web::get().to(read_patient))
        .route("/Practitioner", web::get().to(search_practitioners))
        .route("/Practitioner/{id}", web::get().to(read_practitioner))
        .route("/Schedule", web::get().to(search_schedules))
        .route("/Schedule/{id}", web::get().to(read_schedule))
        .route("/Slot", web::get().to(search_slots))
        .default_service(web::to(unknown_route));
}

/// A refusal, sent as an `OperationOutcome`.
#[derive(Debug)]
pub struct Outcome {
    status: StatusCode,
    /// The FHIR `IssueType` code.
    issue: &'static str,
    /// Buktor's stable error code.
    code: String,
    diagnostics: String,
}

impl Outcome {
    fn new(status: StatusCode, issue: &'static str, code: &str, diagnostics: String) -> Self {
        Outcome {
            status,
            issue,
            code: code.to_owned(),
            diagnostics,
        }
    }

    /// A bad search parameter or body: 400.
    pub fn invalid(diagnostics: String) -> Self {
        Outcome::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "INVALID_INPUT",
            diagnostics,
        )
    }

    /// A well-formed request Buktor cannot map onto a command: 422.
    fn unsupported(diagnostics: String) -> Self {
        Outcome::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not-supported",
            "UNSUPPORTED",
            diagnostics,
        )
    }

    /// A code of a code system Buktor knows that the system does not
    /// define: 422, naming the code.
    fn unknown_code(diagnostics: String) -> Self {
        Outcome::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "code-invalid",
            "UNKNOWN_CODE",
            diagnostics,
        )
    }

    fn not_found(what: &str, id: &str) -> Self {
        Outcome::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "NOT_FOUND",
            format!("{what}/{id} does not exist"),
        )
    }

    fn internal(e: impl std::fmt::Debug) -> Self {
        tracing::error!(error = ?e, "FHIR request failed inside the server");
        Outcome::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            "INTERNAL",
            "the server failed; try again".into(),
        )
    }

    /// The HTTP status it answers with; a 5xx is a server bug.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn response(&self) -> HttpResponse {
        operation_outcome(self.status, self.issue, &self.code, &self.diagnostics)
    }
}

impl From<ViewError> for Outcome {
    fn from(e: ViewError) -> Self {
        Outcome::internal(e)
    }
}

impl From<AppError> for Outcome {
    fn from(e: AppError) -> Self {
        use buktor_domain::DomainError as D;
        let (status, issue) = match &e {
            AppError::Domain(D::AppointmentNotFound(_)) => (StatusCode::NOT_FOUND, "not-found"),
            AppError::Domain(
                D::SlotTaken { .. }
                | D::AppointmentAlreadyExists(_)
                | D::InvalidTransition { .. }
                | D::SameTime { .. },
            )
            | AppError::Contention(_)
            | AppError::IdempotencyKeyReused(_) => (StatusCode::CONFLICT, "conflict"),
            AppError::Domain(_) => (StatusCode::UNPROCESSABLE_ENTITY, "business-rule"),
            AppError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            AppError::Store(_) if e.is_unavailable() => {
                tracing::warn!(error = ?e, "FHIR request: the store is unavailable");
                return Outcome::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "transient",
                    "STORE_UNAVAILABLE",
                    "the store is unavailable; try again".into(),
                );
            }
            AppError::Corrupt(_) | AppError::Store(_) => return Outcome::internal(e),
        };
        Outcome::new(status, issue, e.code(), e.to_string())
    }
}

fn operation_outcome(
    status: StatusCode,
    issue: &str,
    code: &str,
    diagnostics: &str,
) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(FHIR_JSON)
        .json(json!({
            "resourceType": "OperationOutcome",
            "issue": [{
                "severity": if status.is_server_error() { "fatal" } else { "error" },
                "code": issue,
                "details": {
                    "coding": [{"system": ERROR_SYSTEM, "code": code}],
                    "text": code,
                },
                "diagnostics": diagnostics,
            }],
        }))
}

fn ok(resource: Value) -> HttpResponse {
    HttpResponse::Ok().content_type(FHIR_JSON).json(resource)
}

fn respond(result: Result<HttpResponse, Outcome>) -> HttpResponse {
    result.unwrap_or_else(|o| o.response())
}

/// The caller, authenticated as everywhere else; a refusal (401, 429, 503)
/// keeps its status and headers but becomes an `OperationOutcome`.
async fn caller(req: &HttpRequest, state: &AppState) -> Result<Principal, HttpResponse> {
    match crate::http::authenticated(req, state).await {
        Ok(p) => Ok(p),
        Err(refused) => {
            let status = refused.status();
            let (issue, code) = match status {
                StatusCode::UNAUTHORIZED => ("login", "UNAUTHENTICATED"),
                StatusCode::TOO_MANY_REQUESTS => ("throttled", "RATE_LIMITED"),
                _ => ("transient", "STORE_UNAVAILABLE"),
            };
            let detail = match status {
                StatusCode::UNAUTHORIZED => "send a valid API key as `Authorization: Bearer <key>`",
                StatusCode::TOO_MANY_REQUESTS => "too many requests; retry later",
                _ => "try again",
            };
            let mut res = operation_outcome(status, issue, code, detail);
            for (name, value) in refused.headers() {
                if *name != header::CONTENT_TYPE && *name != header::CONTENT_LENGTH {
                    res.headers_mut().insert(name.clone(), value.clone());
                }
            }
            Err(res)
        }
    }
}

fn base_url(req: &HttpRequest) -> String {
    let ci = req.connection_info();
    format!("{}://{}/fhir/r4", ci.scheme(), ci.host())
}

/// A query string component, percent-encoded but for the unreserved characters.
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The paging links of a search: `self`, `first`, `last`, and `next` and
/// `previous` when those pages exist. Each is the request's own search
/// with `_count` and `_offset` set, so following `next` gives the
/// following matches in the same order.
fn page_links(
    req: &HttpRequest,
    pairs: &[(String, String)],
    page: Page,
    total: usize,
) -> Vec<(&'static str, String)> {
    let ci = req.connection_info();
    let prefix = format!("{}://{}{}", ci.scheme(), ci.host(), req.path());
    let kept: Vec<String> = pairs
        .iter()
        .filter(|(n, _)| n != "_count" && n != "_offset")
        .map(|(n, v)| format!("{}={}", encode_component(n), encode_component(v)))
        .collect();
    let url = |offset: usize| {
        let mut q = kept.clone();
        q.push(format!("_count={}", page.count));
        q.push(format!("_offset={offset}"));
        format!("{prefix}?{}", q.join("&"))
    };
    let mut links = vec![
        ("self", url(page.offset)),
        ("first", url(0)),
        ("last", url(page.last(total))),
    ];
    if let Some(next) = page.next(total) {
        links.push(("next", url(next)));
    }
    if let Some(previous) = page.previous() {
        links.push(("previous", url(previous)));
    }
    links
}

/// A searchset of one page of `total` matches, with its links.
fn search_answer(
    req: &HttpRequest,
    pairs: &[(String, String)],
    page: Page,
    total: usize,
    matches: Vec<Value>,
    included: Vec<Value>,
) -> HttpResponse {
    ok(resources::searchset(
        &base_url(req),
        page_links(req, pairs, page, total),
        total,
        matches,
        included,
    ))
}

fn page_of(pairs: &[(String, String)]) -> Result<Page, Outcome> {
    Page::parse(single(pairs, "_count")?, single(pairs, "_offset")?)
}

fn includes_of(
    pairs: &[(String, String)],
    supported: &[(&'static str, &'static str)],
) -> Result<Vec<&'static str>, Outcome> {
    params::includes(
        pairs
            .iter()
            .filter(|(n, _)| n == "_include")
            .map(|(_, v)| v.as_str()),
        supported,
    )
}

/// The query's pairs; repeated names (`date=ge…&date=lt…`) are kept.
/// Only the names in `known` (and `_format`, `_pretty`) are accepted.
fn query(req: &HttpRequest, known: &[&str]) -> Result<Vec<(String, String)>, Outcome> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| Outcome::invalid(format!("the query string cannot be read: {e}")))?
        .into_inner();
    // Control characters never get here: `http::refuse_control_characters`.
    for (name, _) in &pairs {
        if !known.contains(&name.as_str()) && name != "_format" && name != "_pretty" {
            return Err(Outcome::invalid(format!(
                "the search parameter {name:?} is not supported here; supported: {}",
                known.join(", ")
            )));
        }
    }
    Ok(pairs)
}

fn single<'a>(pairs: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, Outcome> {
    let mut values = pairs
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str());
    let first = values.next();
    if values.next().is_some() {
        return Err(Outcome::invalid(format!("{name} may be given only once")));
    }
    Ok(first)
}

fn parse_id<T: std::str::FromStr>(what: &str, id: &str) -> Result<T, Outcome> {
    id.parse::<T>().map_err(|_| Outcome::not_found(what, id))
}

async fn unknown_route(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(res) = caller(&req, &state).await {
        return res;
    }
    operation_outcome(
        StatusCode::NOT_FOUND,
        "not-supported",
        "NOT_FOUND",
        &format!(
            "{} {} is not supported; see {}/metadata",
            req.method(),
            req.path(),
            base_url(&req)
        ),
    )
}

async fn metadata(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Err(res) = caller(&req, &state).await {
        return res;
    }
    ok(resources::capability_statement(&base_url(&req)))
}

// --- catalog lookups ---------------------------------------------------------

async fn catalog(
    state: &AppState,
    tenant: TenantId,
    practitioners: impl IntoIterator<Item = PractitionerId>,
    services: impl IntoIterator<Item = ServiceId>,
) -> Result<
    (
        HashMap<PractitionerId, RegisteredPractitioner>,
        HashMap<ServiceId, DefinedService>,
    ),
    Outcome,
> {
    let keys: BTreeSet<String> = practitioners
        .into_iter()
        .map(practitioner_key)
        .chain(services.into_iter().map(service_key))
        .collect();
    let keys: Vec<String> = keys.into_iter().collect();
    let docs = state.read_side.catalog_docs(tenant, &keys).await?;
    let (mut ps, mut ss) = (HashMap::new(), HashMap::new());
    for doc in docs.into_values() {
        match &*doc {
            CatalogDoc::Practitioner(p) => {
                ps.insert(p.id, p.clone());
            }
            CatalogDoc::Service(s) => {
                ss.insert(s.id, s.clone());
            }
            _ => {}
        }
    }
    Ok((ps, ss))
}

async fn render_appointments(
    state: &AppState,
    tenant: TenantId,
    items: &[(BookedAppointment, Audit)],
) -> Result<Vec<Value>, Outcome> {
    let (ps, ss) = catalog(
        state,
        tenant,
        items.iter().map(|(a, _)| a.practitioner_id),
        items.iter().map(|(a, _)| a.service_id),
    )
    .await?;
    Ok(items
        .iter()
        .map(|(a, audit)| {
            resources::appointment(a, *audit, ss.get(&a.service_id), ps.get(&a.practitioner_id))
        })
        .collect())
}

/// One appointment, current (read from its stream), with the read model's
/// booking time when it has caught up.
async fn appointment_resource(
    state: &AppState,
    tenant: TenantId,
    id: AppointmentId,
) -> Result<Option<Value>, Outcome> {
    let Some(a) = state.scheduler.appointment(tenant, id).await? else {
        return Ok(None);
    };
    let docs = state.read_side.appointments(tenant, &[id]).await?;
    let audit = docs.get(&id).map(Audit::from).unwrap_or_default();
    let mut rendered = render_appointments(state, tenant, &[(a, audit)]).await?;
    Ok(rendered.pop())
}

// --- Appointment ---------------------------------------------------------------

async fn read_appointment(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let p = match caller(&req, &state).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    respond(
        async {
            let id: AppointmentId = parse_id("Appointment", &path)?;
            match appointment_resource(&state, p.tenant_id(), id).await? {
                Some(r) => Ok(ok(r)),
                None => Err(Outcome::not_found("Appointment", &path)),
            }
        }
        .await,
    )
}

async fn search_appointments(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let p = match caller(&req, &state).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    respond(appointment_search(&req, &state, &p).await)
}

async fn appointment_search(
    req: &HttpRequest,
    state: &AppState,
    p: &Principal,
) -> Result<HttpResponse, Outcome> {
    let pairs = query(
        req,
        &[
            "patient",
            "practitioner",
            "date",
            "status",
            "_count",
            "_offset",
            "_include",
        ],
    )?;
    let tenant = p.tenant_id();
    let zone = p.tenant.time_zone;
    // `Some(None)`: a Patient id that names no HIS patient id, so nobody.
    let patient: Option<Option<String>> = single(&pairs, "patient")?
        .map(|raw| -> Result<Option<String>, Outcome> {
            if !raw.contains('|') && raw.contains('/') {
                let id = params::reference("patient", raw, "Patient")?;
                Ok(resources::his_patient_id(id))
            } else {
                params::token("patient", raw, PATIENT_SYSTEM).map(|his| Some(his.to_owned()))
            }
        })
        .transpose()?;
    let practitioner: Option<PractitionerId> = single(&pairs, "practitioner")?
        .map(|raw| {
            let id = params::reference("practitioner", raw, "Practitioner")?;
            id.parse().map_err(|_| {
                Outcome::invalid(format!("practitioner: {id:?} is not a practitioner id"))
            })
        })
        .transpose()?;
    let mut range = Range::default();
    for (_, v) in pairs.iter().filter(|(n, _)| n == "date") {
        range.add("date", v, zone)?;
    }
    let statuses: Option<Vec<AppointmentStatus>> = single(&pairs, "status")?
        .map(|raw| {
            raw.split(',')
                .map(|code| {
                    params::status_of(code).ok_or_else(|| {
                        Outcome::invalid(format!(
                            "status: {code:?} is not one of booked, checked-in, fulfilled, noshow, cancelled"
                        ))
                    })
                })
                .collect()
        })
        .transpose()?;
    let page = page_of(&pairs)?;
    let includes = includes_of(&pairs, &APPOINTMENT_INCLUDES)?;

    let docs = match (patient, practitioner) {
        (Some(None), _) => Vec::new(),
        (Some(Some(his)), _) => {
            state
                .read_side
                .patient_appointments(tenant, &his, None, None, None)
                .await?
        }
        (None, Some(practitioner)) => {
            let (Some(from), Some(to)) = (range.from, range.to) else {
                return Err(Outcome::invalid(
                    "a search by practitioner alone needs a date range with both ends (e.g. date=ge2026-12-01&date=lt2026-12-08)".into(),
                ));
            };
            if to - from > chrono::Duration::days(MAX_AGENDA_DAYS) {
                return Err(Outcome::invalid(format!(
                    "date: a search by practitioner alone covers at most {MAX_AGENDA_DAYS} days"
                )));
            }
            // Every appointment ever booked on those days, whatever its
            // status now (the calendar read model keeps only held time).
            let first = buktor_domain::time::local_day(zone, from);
            let last = buktor_domain::time::local_day(zone, to);
            let ids = state
                .read_side
                .practitioner_appointment_ids(tenant, practitioner, first, last)
                .await?;
            state
                .read_side
                .appointments(tenant, &ids)
                .await?
                .into_values()
                .collect()
        }
        (None, None) => {
            return Err(Outcome::invalid(
                "an Appointment search needs patient or practitioner".into(),
            ))
        }
    };
    let mut found: Vec<(BookedAppointment, Audit)> = docs
        .into_iter()
        .map(|d| {
            let audit = Audit::from(&d);
            (d.appointment, audit)
        })
        .collect();
    found.retain(|(a, _)| {
        practitioner.is_none_or(|id| a.practitioner_id == id)
            && range.contains(a.start)
            && statuses.as_ref().is_none_or(|s| s.contains(&a.status))
    });
    found.sort_by_key(|(a, _)| (a.start, a.id));
    let total = found.len();
    let found = page.of(found);
    let rendered = render_appointments(state, tenant, &found).await?;
    let mut included = Vec::new();
    if includes.contains(&"Appointment:patient") {
        let mut his_ids: Vec<&ShortText> = Vec::new();
        for (a, _) in &found {
            if !his_ids.contains(&&a.patient.his_patient_id) {
                his_ids.push(&a.patient.his_patient_id);
            }
        }
        for his in his_ids {
            included.extend(patient_resource(state, tenant, his).await?);
        }
    }
    if includes.contains(&"Appointment:practitioner") {
        let (ps, _) = catalog(
            state,
            tenant,
            found.iter().map(|(a, _)| a.practitioner_id),
            std::iter::empty(),
        )
        .await?;
        let mut ps: Vec<&RegisteredPractitioner> = ps.values().collect();
        ps.sort_by_key(|p| p.id);
        included.extend(ps.into_iter().map(resources::practitioner));
    }
    Ok(search_answer(req, &pairs, page, total, rendered, included))
}

// --- Patient -------------------------------------------------------------------------

/// The Patient with this HIS id: the contact the HIS recorded (name,
/// phone, e-mail, language), else the newest booking's copy (name, phone,
/// e-mail). `None` if Buktor knows nothing of the patient, or the HIS id
/// has no FHIR id (`resources::patient_id`).
async fn patient_resource(
    state: &AppState,
    tenant: TenantId,
    his: &ShortText,
) -> Result<Option<Value>, Outcome> {
    let known = state.scheduler.patient(tenant, his).await?;
    let newest = state
        .read_side
        .patient_appointments(tenant, his.as_str(), None, None, None)
        .await?
        .into_iter()
        .max_by_key(|d| (d.booked_at, d.appointment.id))
        .map(|d| d.appointment.patient);
    let booked = newest.as_ref();
    let data = match &known {
        Some(k) => resources::PatientData {
            his_patient_id: his.as_str(),
            name: k
                .contact
                .name
                .as_ref()
                .or(booked.and_then(|b| b.name.as_ref()))
                .map(|n| n.as_str()),
            phone: k.contact.phone.as_ref().map(|p| p.as_str()),
            email: k.contact.email.as_ref().map(|e| e.as_str()),
            language: k.contact.language.as_ref().map(|l| l.as_str()),
        },
        None => match booked {
            Some(b) => resources::PatientData {
                his_patient_id: his.as_str(),
                name: b.name.as_ref().map(|n| n.as_str()),
                phone: b.phone.as_ref().map(|p| p.as_str()),
                email: b.email.as_ref().map(|e| e.as_str()),
                language: None,
            },
            None => return Ok(None),
        },
    };
    Ok(resources::patient(data))
}

/// The HIS id a Patient id or identifier names, if it can be one.
fn his_of(raw: &str) -> Option<ShortText> {
    ShortText::parse("patient", raw)
        .ok()
        .filter(|t| t.as_str() == raw)
}

async fn read_patient(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let p = match caller(&req, &state).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    respond(
        async {
            let his = resources::his_patient_id(&path)
                .and_then(|his| his_of(&his))
                .ok_or_else(|| Outcome::not_found("Patient", &path))?;
            match patient_resource(&state, p.tenant_id(), &his).await? {
                Some(r) => Ok(ok(r)),
                None => Err(Outcome::not_found("Patient", &path)),
            }
        }
        .await,
    )
}

async fn search_patients(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let p = match caller(&req, &state).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    respond(
        async {
            let pairs = query(&req, &["identifier", "_count", "_offset"])?;
            let identifier = single(&pairs, "identifier")?
                .map(|raw| params::token("identifier", raw, PATIENT_SYSTEM))
                .transpose()?
                .ok_or_else(|| {
                    Outcome::invalid(
                        "a Patient search needs identifier (the HIS patient id)".into(),
                    )
                })?;
            let page = page_of(&pairs)?;
            let found: Vec<Value> = match his_of(identifier) {
                Some(his) => patient_resource(&state, p.tenant_id(), &his)
                    .await?
                    .into_iter()
                    .collect(),
                None => Vec::new(),
            };
            let total = found.len();
            Ok(search_answer(
                &req,
                &pairs,
                page,
                total,
                page.of(found),
                Vec::new(),
            ))
        }
        .await,
    )
}

/// The request body as a FHIR resource of `resource_type`.
async fn body_resource(
    payload: web::Payload,
    state: &AppState,
    resource_type: &str,
) -> Result<Value, Outcome> {
    use futures::StreamExt;
    let mut payload = payload;
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Outcome::invalid(format!("cannot read the body: {e}")))?;
        if body.len() + chunk.len() > state.max_body_bytes {
            return Err(Outcome::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-costly",
                "BODY_TOO_LARGE",
                format!("the body exceeds {} bytes", state.max_body_bytes),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    resource_of(&body, resource_type)
}

/// Reads a request body as a resource of `resource_type`: JSON with that
/// `resourceType`. Public for the fuzz target (`fuzz/fuzz_targets/fhir_appointment.rs`).
pub fn resource_of(body: &[u8], resource_type: &str) -> Result<Value, Outcome> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Outcome::invalid(format!("the body is not JSON: {e}")))?;
    match value.get("resourceType").and_then(Value::as_str) {
        Some(t) if t == resource_type => Ok(value),
        Some(t) => Err(Outcome::invalid(format!(
            "the body is a {t}; expected a {resource_type}"
        ))),
        None => Err(Outcome::invalid(format!(
            "the body has no resourceType; expected a {resource_type}"
        ))),
    }
}

fn command_context(req: &HttpRequest, p: &Principal) -> Result<CommandContext, Outcome> {
    let idempotency_key = match req.headers().get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= 200 => Some(k.to_owned()),
            _ => {
                return Err(Outcome::invalid(
                    "Idempotency-Key must be 1 to 200 visible ASCII characters".into(),
                ))
            }
        },
    };
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::try_parse(v).ok())
        .unwrap_or_else(Uuid::now_v7);
    Ok(CommandContext {
        tenant: p.tenant.id,
        time_zone: p.tenant.time_zone,
        actor: Actor {
            id: p.actor_id.clone(),
            role: p.role,
        },
        source: match p.role {
            Role::HisSystem => Source::HisApi,
            _ => Source::Admin,
        },
        remote_addr: req.peer_addr().map(|a| a.ip().to_string()),
        correlation_id: request_id,
        idempotency_key,
    })
}

/// The resource's `start`, within the years Buktor accepts.
fn start_of(r: &Value) -> Result<Option<Instant>, Outcome> {
    match r.get("start") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map_err(|_| Outcome::invalid(format!("start: {s:?} is not a FHIR instant")))
            .and_then(|t| {
                Instant::parse("start", t.with_timezone(&Utc))
                    .map(Some)
                    .map_err(|e| Outcome::invalid(e.to_string()))
            }),
        Some(other) => Err(Outcome::invalid(format!(
            "start: {other} is not a FHIR instant"
        ))),
    }
}

fn actors(r: &Value) -> impl Iterator<Item = &Value> {
    r.get("participant")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("actor"))
}

fn practitioner_of(r: &Value) -> Result<Option<PractitionerId>, Outcome> {
    let refs: Vec<&str> = actors(r)
        .filter_map(|a| a.get("reference").and_then(Value::as_str))
        .filter(|r| r.starts_with("Practitioner/"))
        .collect();
    match refs.as_slice() {
        [] => Ok(None),
        [one] => one["Practitioner/".len()..].parse().map(Some).map_err(|_| {
            Outcome::unsupported(format!("participant: {one:?} is not a Buktor practitioner"))
        }),
        _ => Err(Outcome::unsupported(
            "participant: Buktor appointments have exactly one practitioner".into(),
        )),
    }
}

fn patient_of(r: &Value) -> Result<Option<PatientRef>, Outcome> {
    for actor in actors(r) {
        let reference = actor.get("reference").and_then(Value::as_str);
        let by_ref = reference.and_then(|r| r.strip_prefix("Patient/"));
        let identifier = actor.get("identifier");
        let by_identifier = identifier
            .filter(|i| {
                i.get("system")
                    .and_then(Value::as_str)
                    .is_none_or(|s| s == PATIENT_SYSTEM)
            })
            .and_then(|i| i.get("value"))
            .and_then(Value::as_str);
        let is_patient = by_ref.is_some() || (reference.is_none() && by_identifier.is_some());
        if !is_patient {
            continue;
        }
        let his = by_identifier.or(by_ref).unwrap_or_default();
        let his = ShortText::parse("participant.actor.identifier", his)?;
        let name = actor
            .get("display")
            .and_then(Value::as_str)
            .map(|d| Name::parse("participant.actor.display", d))
            .transpose()?;
        return Ok(Some(PatientRef {
            his_patient_id: his,
            name,
            phone: None,
            email: None,
        }));
    }
    Ok(None)
}

fn service_of(r: &Value) -> Result<Option<ServiceId>, Outcome> {
    let codes: Vec<&str> = r
        .get("serviceType")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("coding").and_then(Value::as_array))
        .flatten()
        .filter(|c| {
            c.get("system")
                .and_then(Value::as_str)
                .is_none_or(|s| s == SERVICE_SYSTEM)
        })
        .filter_map(|c| c.get("code").and_then(Value::as_str))
        .collect();
    match codes.as_slice() {
        [] => Ok(None),
        [one] => one.parse().map(Some).map_err(|_| {
            Outcome::unsupported(format!("serviceType: {one:?} is not a Buktor service id"))
        }),
        _ => Err(Outcome::unsupported(
            "serviceType: name exactly one Buktor service".into(),
        )),
    }
}

fn status_code_of(r: &Value) -> Result<&str, Outcome> {
    r.get("status")
        .and_then(Value::as_str)
        .ok_or_else(|| Outcome::invalid("status is required".into()))
}

/// What an Appointment create or update body asks for, read and checked as
/// far as it can be without the store. Both routes read bodies through
/// [`AppointmentFields::read`], and so does the fuzz target
/// (`fuzz/fuzz_targets/fhir_appointment.rs`).
#[derive(Debug)]
pub struct AppointmentFields {
    pub status: String,
    pub practitioner: Option<PractitionerId>,
    pub patient: Option<PatientRef>,
    pub service: Option<ServiceId>,
    /// Within the years Buktor accepts (`buktor_domain::time`).
    pub start: Option<Instant>,
    pub comment: Option<Reason>,
    pub cancellation_code: Option<CancellationCode>,
}

impl AppointmentFields {
    pub fn read(r: &Value) -> Result<AppointmentFields, Outcome> {
        Ok(AppointmentFields {
            status: status_code_of(r)?.to_owned(),
            service: service_of(r)?,
            patient: patient_of(r)?,
            practitioner: practitioner_of(r)?,
            start: start_of(r)?,
            comment: r
                .get("comment")
                .and_then(Value::as_str)
                .map(|c| Reason::parse("comment", c))
                .transpose()?,
            cancellation_code: cancellation_code_of(r)?,
        })
    }
}

fn domain(e: buktor_domain::DomainError) -> Outcome {
    Outcome::from(AppError::Domain(e))
}

impl From<buktor_domain::DomainError> for Outcome {
    fn from(e: buktor_domain::DomainError) -> Self {
        domain(e)
    }
}

/// Waits until the read models hold the command's events, so that the
/// client's next search finds them (a timeout only makes that later).
async fn catch_up(state: &AppState, tenant: TenantId, outcome: &CommandOutcome) {
    if let Some(at) = outcome.position {
        if let Err(e) = state.read_side.wait_for(tenant, at, CATCH_UP).await {
            tracing::warn!(error = %e, "FHIR write answered before the read models caught up");
        }
    }
}

async fn create_appointment(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let p = match caller(&req, &state).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    respond(
        async {
            let r = body_resource(payload, &state, "Appointment").await?;
            let fields = AppointmentFields::read(&r)?;
            let status = fields.status;
            if status != "booked" {
                return Err(Outcome::unsupported(format!(
                    "status: an appointment is created as booked, not {status:?}"
                )));
            }
            let practitioner_id = fields.practitioner.ok_or_else(|| {
                Outcome::unsupported("participant: name the practitioner (Practitioner/<id>)".into())
            })?;
            let patient = fields.patient.ok_or_else(|| {
                Outcome::unsupported(
                    "participant: name the patient (Patient/<HIS id> or an identifier)".into(),
                )
            })?;
            let service_id = fields.service.ok_or_else(|| {
                Outcome::unsupported(format!(
                    "serviceType: give a coding with system {SERVICE_SYSTEM} and a Buktor service id"
                ))
            })?;
            let start = fields
                .start
                .ok_or_else(|| Outcome::unsupported("start is required".into()))?;
            let note = fields.comment;
            let ctx = command_context(&req, &p)?;
            let outcome = state
                .scheduler
                .book(
                    &ctx,
                    &Book {
                        appointment_id: None,
                        practitioner_id,
                        service_id,
                        start,
                        patient,
                        note,
                        his_appointment_id: None,
                        overriding: None,
                        reservation: None,
                    },
                )
                .await?;
            catch_up(&state, ctx.tenant, &outcome).await;
            let id = AppointmentId::from_uuid(outcome.id);
            let resource = appointment_resource(&state, ctx.tenant, id)
                .await?
                .ok_or_else(|| Outcome::internal("a booked appointment cannot be read"))?;
            let location = format!("{}/Appointment/{id}", base_url(&req));
            let mut res = HttpResponse::Created()
                .content_type(FHIR_JSON)
                .json(resource);
            if let Ok(v) = HeaderValue::from_str(&location) {
                res.headers_mut().insert(header::LOCATION, v);
            }
            Ok(res)
        }
        .await,
    )
}

async fn update_appointment(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let p = match caller(&req, &state).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    respond(update(&req, &state, &p, &path, payload).await)
}

async fn update(
    req: &HttpRequest,
    state: &AppState,
    p: &Principal,
    path: &str,
    payload: web::Payload,
) -> Result<HttpResponse, Outcome> {
    let r = body_resource(payload, state, "Appointment").await?;
    if r.get("id").and_then(Value::as_str) != Some(path) {
        return Err(Outcome::invalid(format!(
            "the body's id must be the id in the URL ({path})"
        )));
    }
    let id: AppointmentId = parse_id("Appointment", path)?;
    let tenant = p.tenant_id();
    let current = state
        .scheduler
        .appointment(tenant, id)
        .await?
        .ok_or_else(|| Outcome::not_found("Appointment", path))?;
    let fields = AppointmentFields::read(&r)?;
    let status = fields.status.as_str();
    let wanted = params::status_of(status).ok_or_else(|| {
        Outcome::unsupported(format!(
            "status: Buktor has no appointments that are {status:?}"
        ))
    })?;
    if let Some(service) = fields.service {
        if service != current.service_id {
            return Err(Outcome::unsupported(
                "serviceType: the service of an appointment cannot change; cancel and book again"
                    .into(),
            ));
        }
    }
    if let Some(patient) = &fields.patient {
        if patient.his_patient_id != current.patient.his_patient_id {
            return Err(Outcome::unsupported(
                "participant: the patient of an appointment cannot change".into(),
            ));
        }
    }
    let practitioner = fields.practitioner.unwrap_or(current.practitioner_id);
    let start = match fields.start {
        Some(start) => start,
        None => Instant::parse("start", current.start)?,
    };
    let moves = practitioner != current.practitioner_id || start.get() != current.start;
    let ctx = command_context(req, p)?;
    let outcome = match (wanted, moves) {
        (w, false) if w == current.status => None,
        (AppointmentStatus::Booked, true) if current.status == AppointmentStatus::Booked => Some(
            state
                .scheduler
                .reschedule(
                    &ctx,
                    &Reschedule {
                        appointment_id: id,
                        practitioner_id: (practitioner != current.practitioner_id)
                            .then_some(practitioner),
                        start,
                        reason: None,
                        overriding: None,
                        reservation: None,
                    },
                )
                .await?,
        ),
        (AppointmentStatus::Cancelled, false) => {
            let code = fields.cancellation_code;
            // The text, else the code's display, else a fixed phrase: the
            // domain keeps a reason with every cancellation.
            let reason = r
                .pointer("/cancelationReason/text")
                .and_then(Value::as_str)
                .or(code.map(CancellationCode::display))
                .unwrap_or("cancelled through FHIR");
            Some(
                state
                    .scheduler
                    .cancel(
                        &ctx,
                        &Cancel {
                            appointment_id: id,
                            reason: Reason::parse("cancelationReason.text", reason)?,
                            // Who asked follows from the code's branch; a
                            // cancellation without a code is the hospital's.
                            cancelled_by: code.map_or(
                                buktor_domain::appointment::CancelledBy::Hospital,
                                CancellationCode::cancelled_by,
                            ),
                            reason_code: code,
                        },
                    )
                    .await?,
            )
        }
        (step @ (AppointmentStatus::CheckedIn
        | AppointmentStatus::Completed
        | AppointmentStatus::NoShow), false) => {
            let step = match step {
                AppointmentStatus::CheckedIn => Attendance::CheckIn,
                AppointmentStatus::Completed => Attendance::Complete,
                _ => Attendance::NoShow,
            };
            Some(
                state
                    .scheduler
                    .record_attendance(
                        &ctx,
                        &RecordAttendance {
                            appointment_id: id,
                            step,
                        },
                    )
                    .await?,
            )
        }
        (AppointmentStatus::Cancelled, true) => {
            return Err(Outcome::unsupported(
                "cancel without changing start or practitioner in the same update".into(),
            ))
        }
        (w, _) => {
            return Err(Outcome::unsupported(format!(
                "changing a {} appointment to {} through FHIR is not supported; FHIR updates reschedule (start, practitioner), cancel, check in, fulfil or mark no-show, one at a time",
                params::fhir_status(current.status),
                params::fhir_status(w),
            )))
        }
    };
    if let Some(outcome) = &outcome {
        catch_up(state, tenant, outcome).await;
    }
    let resource = appointment_resource(state, tenant, id)
        .await?
        .ok_or_else(|| Outcome::not_found("Appointment", path))?;
    Ok(ok(resource))
}

/// The coded reason of a cancelling update: the codings of
/// `cancelationReason` from HL7's appointment-cancellation-reason system
/// (or, as before that system was read, without a system but with one of
/// its codes). Codings of other systems are left aside. A code of that
/// system that it does not define is 422 `UNKNOWN_CODE`; two different
/// codes of it are 400.
fn cancellation_code_of(r: &Value) -> Result<Option<CancellationCode>, Outcome> {
    let Some(concept) = r.get("cancelationReason") else {
        return Ok(None);
    };
    let codings = match concept.get("coding") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(codings)) => codings,
        Some(_) => {
            return Err(Outcome::invalid(
                "cancelationReason.coding must be an array of Codings".into(),
            ))
        }
    };
    let mut found: Option<CancellationCode> = None;
    for (i, coding) in codings.iter().enumerate() {
        let system = coding.get("system").and_then(Value::as_str);
        let Some(code) = coding.get("code").and_then(Value::as_str) else {
            continue;
        };
        let parsed = match system {
            Some(CANCELLATION_CODE_SYSTEM) => Some(CancellationCode::parse(code).ok_or_else(|| {
                Outcome::unknown_code(format!(
                    "cancelationReason.coding[{i}]: `{code}` is not a code of {CANCELLATION_CODE_SYSTEM}"
                ))
            })?),
            None => CancellationCode::parse(code),
            Some(_) => None,
        };
        match (found, parsed) {
            (Some(a), Some(b)) if a != b => {
                return Err(Outcome::invalid(format!(
                "cancelationReason: give one code of {CANCELLATION_CODE_SYSTEM}, not `{}` and `{}`",
                a.as_str(),
                b.as_str()
            )))
            }
            (None, Some(b)) => found = Some(b),
            _ => {}
        }
    }
    Ok(found)
}

// --- Practitioner and Schedule -------------------------------------------------------

async fn all_practitioners(
    state: &AppState,
    tenant: TenantId,
) -> Result<Vec<RegisteredPractitioner>, Outcome> {
    Ok(state
        .read_side
        .practitioners(tenant, None, usize::MAX)
        .await?)
}

async fn one_practitioner(
    state: &AppState,
    tenant: TenantId,
    what: &str,
    id: &str,
) -> Result<RegisteredPractitioner, Outcome> {
    let pid: PractitionerId = parse_id(what, id)?;
    state
        .scheduler
        .practitioner(tenant, pid)
        .await?
        .ok_or_else(|| Outcome::not_found(what, id))
}

async fn read_practitioner(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let p = match caller(&req, &state).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    respond(
        one_practitioner(&state, p.tenant_id(), "Practitioner", &path)
            .await
            .map(|pr| ok(resources::practitioner(&pr))),
    )
}

async fn search_practitioners(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let p = match caller(&req, &state).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    respond(
        async {
            let pairs = query(&req, &["name", "identifier", "_count", "_offset"])?;
            let name = single(&pairs, "name")?.map(str::to_lowercase);
            let identifier = single(&pairs, "identifier")?
                .map(|raw| params::token("identifier", raw, PRACTITIONER_SYSTEM))
                .transpose()?;
            let page = page_of(&pairs)?;
            let mut found = all_practitioners(&state, p.tenant_id()).await?;
            found.retain(|pr| {
                name.as_ref()
                    .is_none_or(|n| pr.details.name.as_str().to_lowercase().contains(n))
                    && identifier.is_none_or(|i| {
                        pr.details.external_id.as_ref().map(|e| e.as_str()) == Some(i)
                    })
            });
            let total = found.len();
            let matches = page.of(found).iter().map(resources::practitioner).collect();
            Ok(search_answer(
                &req,
                &pairs,
                page,
                total,
                matches,
                Vec::new(),
            ))
        }
        .await,
    )
}

async fn read_schedule(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let p = match caller(&req, &state).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    respond(
        async {
            let pr = one_practitioner(&state, p.tenant_id(), "Schedule", &path).await?;
            let services = state
                .read_side
                .services(p.tenant_id(), None, usize::MAX)
                .await?;
            Ok(ok(resources::schedule(&pr, &services)))
        }
        .await,
    )
}

async fn search_schedules(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let p = match caller(&req, &state).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    respond(
        async {
            let pairs = query(&req, &["actor", "_count", "_offset", "_include"])?;
            let actor = single(&pairs, "actor")?
                .map(|raw| params::reference("actor", raw, "Practitioner"))
                .transpose()?;
            let page = page_of(&pairs)?;
            let includes = includes_of(&pairs, &SCHEDULE_INCLUDES)?;
            let mut found = all_practitioners(&state, p.tenant_id()).await?;
            found.retain(|pr| actor.is_none_or(|a| pr.id.to_string() == a));
            let services = state
                .read_side
                .services(p.tenant_id(), None, usize::MAX)
                .await?;
            let total = found.len();
            let found = page.of(found);
            let matches = found
                .iter()
                .map(|pr| resources::schedule(pr, &services))
                .collect();
            let included = if includes.contains(&"Schedule:actor") {
                found.iter().map(resources::practitioner).collect()
            } else {
                Vec::new()
            };
            Ok(search_answer(&req, &pairs, page, total, matches, included))
        }
        .await,
    )
}

// --- Slot ------------------------------------------------------------------------------

async fn search_slots(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let p = match caller(&req, &state).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    respond(slot_search(&req, &state, &p).await)
}

async fn slot_search(
    req: &HttpRequest,
    state: &AppState,
    p: &Principal,
) -> Result<HttpResponse, Outcome> {
    let pairs = query(
        req,
        &[
            "schedule",
            "practitioner",
            "start",
            "service-type",
            "status",
            "_count",
            "_offset",
            "_include",
        ],
    )?;
    let tenant = p.tenant_id();
    let zone = p.tenant.time_zone;
    let mut practitioners = Vec::new();
    for (name, raw) in pairs
        .iter()
        .filter(|(n, _)| n == "schedule" || n == "practitioner")
    {
        let kind = if name == "schedule" {
            "Schedule"
        } else {
            "Practitioner"
        };
        let id = params::reference(name, raw, kind)?;
        let id: PractitionerId = id
            .parse()
            .map_err(|_| Outcome::invalid(format!("{name}: {id:?} is not a practitioner id")))?;
        practitioners.push(id);
    }
    let service_id: Option<ServiceId> = single(&pairs, "service-type")?
        .map(|raw| {
            let code = params::token("service-type", raw, SERVICE_SYSTEM)?;
            code.parse().map_err(|_| {
                Outcome::invalid(format!("service-type: {code:?} is not a Buktor service id"))
            })
        })
        .transpose()?;
    if let Some(status) = single(&pairs, "status")? {
        if status != "free" {
            return Err(Outcome::invalid(format!(
                "status: only free slots are published, not {status:?}"
            )));
        }
    }
    let mut range = Range::default();
    for (_, v) in pairs.iter().filter(|(n, _)| n == "start") {
        range.add("start", v, zone)?;
    }
    let (Some(from), Some(to)) = (range.from, range.to) else {
        return Err(Outcome::invalid(
            "start: give a range with both ends (e.g. start=ge2026-12-01&start=le2026-12-07)"
                .into(),
        ));
    };
    if to - from > chrono::Duration::days(MAX_SLOT_DAYS) {
        return Err(Outcome::invalid(format!(
            "start: a Slot search covers at most {MAX_SLOT_DAYS} days"
        )));
    }
    let page = page_of(&pairs)?;
    let includes = includes_of(&pairs, &SLOT_INCLUDES)?;
    let search = SlotSearch {
        practitioner_ids: (!practitioners.is_empty()).then_some(practitioners),
        service_id,
        specialty: None,
    };
    let first = buktor_domain::time::local_day(zone, from);
    let last = buktor_domain::time::local_day(zone, to);
    let mut offered = state
        .read_side
        .available_slots(tenant, &search, first, last, state.scheduler.now())
        .await?;
    offered.retain(|o| range.contains(o.slot.start));
    let total = offered.len();
    let offered = page.of(offered);
    let (practitioners, services) = catalog(
        state,
        tenant,
        offered.iter().map(|o| o.practitioner_id),
        offered.iter().map(|o| o.service_id),
    )
    .await?;
    let matches: Vec<Value> = offered
        .iter()
        .filter_map(|o| {
            services
                .get(&o.service_id)
                .map(|s| resources::slot(o.practitioner_id, s, o.slot.start, o.slot.end))
        })
        .collect();
    let mut included = Vec::new();
    if includes.contains(&"Slot:schedule") {
        let all_services = state.read_side.services(tenant, None, usize::MAX).await?;
        let mut schedules: Vec<&RegisteredPractitioner> = practitioners.values().collect();
        schedules.sort_by_key(|p| p.id);
        included.extend(
            schedules
                .into_iter()
                .map(|pr| resources::schedule(pr, &all_services)),
        );
    }
    Ok(search_answer(req, &pairs, page, total, matches, included))
}
