//! The widget API under `/widget/v1/{tenant}/`: what the booking widget and
//! the manage page call from the browser (`docs/embedding.md`).
//!
//! Three kinds of caller, told apart by `Authorization`:
//! - none: a patient booking for themselves, if the hospital allows it;
//! - `Bearer bks_…` (or an API key) of this hospital that may book: staff
//!   booking on a patient's behalf;
//! - `Manage <token>`: whoever holds a booking's manage link, for that one
//!   appointment only.
//!
//! Every write is a command with the caller as actor and `widget` as source;
//! the hold is the domain's reservation, so a held slot is kept from every
//! other caller, whichever instance they reach.
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use buktor_domain::appointment::{BookedAppointment, CancelledBy};
use buktor_domain::embedding::EmbeddingSettings;
use buktor_domain::patient::PatientContact;
use buktor_domain::time::Instant;
use buktor_domain::values::{Email, Language, Name, PatientRef, Phone, Reason, ShortText};
use buktor_domain::{
    Actor, AppointmentId, DomainError, PractitionerId, ReservationId, Role, ServiceId, Source,
};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::tokens::{Grant, TokenError};
use super::{
    browser_origin, framed_page, invalid, parse_json, problem, settings_of, tenant_of_path,
    token_problem, unavailable, with_cors,
};
use crate::app::{
    Book, Cancel, CommandContext, RecordPatientContact, ReleaseReservation, Reschedule, ReserveSlot,
};
use crate::auth::Principal;
use crate::his::Problem;
use crate::http::AppState;
use crate::projection::views::SlotSearch;
use crate::store::TenantRecord;

/// Most days one slot search or stream covers.
pub(super) const MAX_DAYS: i64 = 31;
/// A hold token outlives its hold by this much: a lapsed hold still books
/// while nobody has taken the time (the domain decides), and only then
/// does the patient hear `HOLD_EXPIRED`.
const HOLD_TOKEN_GRACE_MINUTES: i64 = 60;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/frame", web::get().to(frame_page))
        .route("/manage", web::get().to(manage_page_or_read))
        .route("/config", web::get().to(config))
        .route("/slots", web::get().to(slots))
        .route("/slots/stream", web::get().to(super::stream::slots_stream))
        .route("/holds", web::post().to(hold))
        .route("/holds/{hold}", web::delete().to(release))
        .route("/bookings", web::post().to(book))
        .route("/patients/{his_id}", web::get().to(patient))
        .route("/manage/cancel", web::post().to(manage_cancel))
        .route("/manage/reschedule", web::post().to(manage_reschedule))
        .default_service(web::to(preflight_or_not_found));
}

/// Who calls, for which hospital, from which allowed site.
pub(super) struct Call {
    pub tenant: TenantRecord,
    pub settings: EmbeddingSettings,
    /// The allowed origin to answer with CORS, for a cross-site call.
    pub cors: Option<String>,
    pub who: Who,
}

pub(super) enum Who {
    Patient,
    Staff(Principal),
    Manage(AppointmentId),
}

impl Call {
    pub(super) fn respond(&self, result: Result<HttpResponse, Problem>) -> HttpResponse {
        let mut res = result.unwrap_or_else(|p| p.response());
        with_cors(&mut res, self.cors.as_deref());
        res
    }

    pub(super) fn is_staff(&self) -> bool {
        matches!(self.who, Who::Staff(_))
    }

    fn context(&self, req: &HttpRequest) -> CommandContext {
        let actor = match &self.who {
            Who::Staff(p) => Actor {
                id: p.actor_id.clone(),
                role: p.role,
            },
            Who::Patient => Actor {
                id: "patient:widget".into(),
                role: Role::Patient,
            },
            Who::Manage(id) => Actor {
                id: format!("patient:manage-link:{id}"),
                role: Role::Patient,
            },
        };
        let idempotency_key = req
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.is_empty() && k.len() <= 200)
            .map(str::to_owned);
        CommandContext {
            tenant: self.tenant.id,
            time_zone: self.tenant.time_zone,
            actor,
            source: Source::Widget,
            remote_addr: req.peer_addr().map(|a| a.ip().to_string()),
            correlation_id: Uuid::now_v7(),
            idempotency_key,
        }
    }
}

/// The complete answer to a caller the widget API turns away (boxed: it
/// travels in `Err`, and a response is large).
pub(super) struct Refused(Box<HttpResponse>);

impl Refused {
    pub(super) fn response(self) -> HttpResponse {
        *self.0
    }
}

impl From<Problem> for Refused {
    fn from(p: Problem) -> Self {
        Refused(Box::new(p.response()))
    }
}

/// Sorts out the caller, then answers with what `handle` makes of the call,
/// CORS included whatever the outcome.
pub(super) async fn answer(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    handle: impl AsyncFnOnce(&Call) -> Result<HttpResponse, Problem>,
) -> HttpResponse {
    match call(req, state, tenant).await {
        Ok(call) => {
            let result = handle(&call).await;
            call.respond(result)
        }
        Err(refused) => refused.response(),
    }
}

/// Sorts out the caller.
pub(super) async fn call(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
) -> Result<Call, Refused> {
    let tenant = tenant_of_path(state, tenant).await?;
    let settings = settings_of(state, tenant.id).await?;
    let cors = browser_origin(req, &settings)?;
    // Refusals carry CORS too, so the widget can read and show them.
    let fail = |res: HttpResponse| {
        let mut res = res;
        with_cors(&mut res, cors.as_deref());
        Refused(Box::new(res))
    };
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let who = match authorization.and_then(|v| v.split_once(' ')) {
        None if authorization.is_some() => {
            return Err(fail(
                problem(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHENTICATED",
                    "Authorization is `Bearer <session>` or `Manage <token>`",
                )
                .response(),
            ))
        }
        None => {
            if !settings.patient_booking {
                return Err(fail(problem(
                    StatusCode::FORBIDDEN,
                    "PATIENT_BOOKING_DISABLED",
                    "this hospital does not take bookings from patients online; ask the hospital",
                ).response()));
            }
            let ip = req
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let key = Uuid::new_v5(
                &Uuid::NAMESPACE_OID,
                format!("buktor/widget/{}/{ip}", tenant.id).as_bytes(),
            );
            if let Err(refused) = state.limiter.admit(key) {
                return Err(fail(crate::http::too_many_requests(state, &refused)));
            }
            Who::Patient
        }
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("bearer") => {
            let p = crate::http::authenticated(req, state).await.map_err(fail)?;
            if p.tenant_id() != tenant.id {
                return Err(fail(
                    problem(
                        StatusCode::FORBIDDEN,
                        "FORBIDDEN",
                        "the session belongs to another hospital",
                    )
                    .response(),
                ));
            }
            if !p.role.can_write_appointments() {
                return Err(fail(
                    problem(
                        StatusCode::FORBIDDEN,
                        "FORBIDDEN",
                        format!("the {} role may not book", p.role),
                    )
                    .response(),
                ));
            }
            Who::Staff(p)
        }
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("manage") => {
            let v = state
                .tokens
                .verify(token.trim(), "manage")
                .await
                .map_err(|e| fail(token_problem(e).response()))?;
            match v.grant {
                Grant::Manage { appointment } if v.tenant == tenant.id => {
                    // A manage link counts against its own limit, as a key would.
                    let key = Uuid::new_v5(
                        &Uuid::NAMESPACE_OID,
                        format!("buktor/manage/{appointment}").as_bytes(),
                    );
                    if let Err(refused) = state.limiter.admit(key) {
                        return Err(fail(crate::http::too_many_requests(state, &refused)));
                    }
                    Who::Manage(appointment)
                }
                _ => return Err(fail(token_problem(TokenError::Invalid).response())),
            }
        }
        Some(_) => {
            return Err(fail(
                problem(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHENTICATED",
                    "Authorization is `Bearer <session>` or `Manage <token>`",
                )
                .response(),
            ))
        }
    };
    Ok(Call {
        tenant,
        settings,
        cors,
        who,
    })
}

async fn preflight_or_not_found(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if req.method() != actix_web::http::Method::OPTIONS {
        return problem(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such route in the widget API",
        )
        .response();
    }
    let tenant = match tenant_of_path(&state, &path).await {
        Ok(t) => t,
        Err(p) => return p.response(),
    };
    let settings = match settings_of(&state, tenant.id).await {
        Ok(s) => s,
        Err(p) => return p.response(),
    };
    match browser_origin(&req, &settings) {
        Ok(cors) => {
            let mut res = HttpResponse::NoContent().finish();
            with_cors(&mut res, cors.as_deref());
            res
        }
        Err(p) => p.response(),
    }
}

async fn frame_page(path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let tenant = match tenant_of_path(&state, &path).await {
        Ok(t) => t,
        Err(p) => return p.response(),
    };
    match settings_of(&state, tenant.id).await {
        Ok(settings) => framed_page(super::assets::get(&state, "widget/frame.html"), &settings),
        Err(p) => p.response(),
    }
}

/// The manage page for a browser; the appointment as JSON for the page's
/// script, which sends its token as `Authorization: Manage …` (the page's
/// own URL carries it only in the fragment, which never reaches a server).
async fn manage_page_or_read(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let has_token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case("manage "));
    if !has_token {
        let tenant = match tenant_of_path(&state, &path).await {
            Ok(t) => t,
            Err(p) => return p.response(),
        };
        return match settings_of(&state, tenant.id).await {
            Ok(settings) => {
                framed_page(super::assets::get(&state, "widget/manage.html"), &settings)
            }
            Err(p) => p.response(),
        };
    }
    answer(&req, &state, &path, async |call| {
        let Who::Manage(id) = call.who else {
            return Err(forbidden("only a manage link reads this"));
        };
        let a = appointment(&state, call, id).await?;
        Ok(HttpResponse::Ok().json(appointment_json(&state, call, &a).await?))
    })
    .await
}

fn forbidden(detail: &str) -> Problem {
    problem(StatusCode::FORBIDDEN, "FORBIDDEN", detail)
}

fn app_problem(e: crate::app::AppError) -> Problem {
    Problem::from(e)
}

impl Call {
    /// A refusal of a command, with any time in it in the hospital's time
    /// zone: patients read the detail, and UTC means nothing to them.
    fn refusal(&self, e: crate::app::AppError) -> Problem {
        use crate::app::AppError;
        let local = |t: &DateTime<Utc>| {
            t.with_timezone(&self.tenant.time_zone)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        };
        match &e {
            AppError::Domain(DomainError::SlotTaken { start }) => problem(
                StatusCode::CONFLICT,
                e.code(),
                format!("{} is no longer free; choose another time", local(start)),
            ),
            AppError::Domain(DomainError::HoldExpired { start }) => problem(
                StatusCode::CONFLICT,
                e.code(),
                format!(
                    "the hold on {} ran out and someone else took the time; choose another",
                    local(start)
                ),
            ),
            _ => app_problem(e),
        }
    }
}

async fn config(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    answer(&req, &state, &path, async |call| {
        let side = &state.read_side;
        let view = |e: crate::projection::views::ViewError| unavailable("widget config read", &e);
        let practitioners: Vec<_> = side
            .practitioners(call.tenant.id, None, usize::MAX)
            .await
            .map_err(view)?
            .into_iter()
            .filter(|p| p.active)
            .collect();
        let services: Vec<Value> = side
            .services(call.tenant.id, None, usize::MAX)
            .await
            .map_err(view)?
            .into_iter()
            .filter(|s| s.active)
            .map(|s| {
                let offered_by: Vec<String> = s
                    .details
                    .practitioners
                    .iter()
                    .filter(|id| practitioners.iter().any(|p| p.id == **id))
                    .map(|id| id.to_string())
                    .collect();
                json!({
                    "id": s.id,
                    "name": s.details.name.as_str(),
                    "durationMinutes": s.details.duration.get(),
                    "practitionerIds": offered_by,
                })
            })
            .collect();
        Ok(HttpResponse::Ok().json(json!({
            "tenant": {"id": call.tenant.id, "name": call.tenant.name, "timeZone": call.tenant.time_zone.name()},
            "holdMinutes": call.settings.hold_minutes.get(),
            "patientBooking": call.settings.patient_booking,
            "mode": if call.is_staff() { "staff" } else { "patient" },
            "services": services,
            "practitioners": practitioners.iter().map(|p| json!({
                "id": p.id,
                "name": p.details.name.as_str(),
                "specialty": p.details.specialty.as_str(),
            })).collect::<Vec<_>>(),
        })))
    })
    .await
}

/// What a slot search or stream covers.
#[derive(Deserialize)]
pub(super) struct SlotQuery {
    pub service: String,
    pub practitioner: Option<String>,
    pub from: String,
    pub to: String,
}

pub(super) struct SlotRange {
    pub service: ServiceId,
    /// `None`: every practitioner offering the service ("first available").
    pub practitioner: Option<PractitionerId>,
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl SlotRange {
    pub(super) fn search(&self) -> SlotSearch {
        SlotSearch {
            practitioner_ids: self.practitioner.map(|p| vec![p]),
            service_id: Some(self.service),
            specialty: None,
        }
    }
}

impl SlotQuery {
    pub(super) fn parse(&self) -> Result<SlotRange, Problem> {
        let service: ServiceId = parse_id("service", &self.service)?;
        let practitioner: Option<PractitionerId> = self
            .practitioner
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(|p| parse_id("practitioner", p))
            .transpose()?;
        let date = |field: &'static str, raw: &str| {
            raw.parse::<NaiveDate>()
                .map_err(|_| DomainError::invalid(field, "a date YYYY-MM-DD"))
                .and_then(|d| buktor_domain::time::check_date(field, d))
                .map_err(invalid)
        };
        let (from, to) = (date("from", &self.from)?, date("to", &self.to)?);
        if to < from || (to - from).num_days() >= MAX_DAYS {
            return Err(invalid(DomainError::invalid(
                "to",
                format!("from..to covers 1 to {MAX_DAYS} days"),
            )));
        }
        Ok(SlotRange {
            service,
            practitioner,
            from,
            to,
        })
    }
}

fn parse_id<T: std::str::FromStr>(field: &'static str, raw: &str) -> Result<T, Problem> {
    raw.parse()
        .map_err(|_| invalid(DomainError::invalid(field, "not an id")))
}

pub(super) fn slot_json(o: &crate::projection::views::OfferedSlot, tz: chrono_tz::Tz) -> Value {
    json!({
        "practitionerId": o.practitioner_id,
        "serviceId": o.service_id,
        "start": o.slot.start,
        "end": o.slot.end,
        "localStart": o.slot.start.with_timezone(&tz).to_rfc3339(),
        "remaining": o.slot.remaining,
    })
}

async fn slots(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<SlotQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    answer(&req, &state, &path, async |call| {
        let range = query.parse()?;
        let offered = state
            .read_side
            .available_slots(
                call.tenant.id,
                &range.search(),
                range.from,
                range.to,
                state.scheduler.now(),
            )
            .await
            .map_err(|e| unavailable("widget slot read", &e))?;
        let tz = call.tenant.time_zone;
        Ok(HttpResponse::Ok().json(json!({
            "slots": offered.iter().map(|o| slot_json(o, tz)).collect::<Vec<_>>()
        })))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HoldRequest {
    practitioner_id: String,
    service_id: String,
    start: DateTime<Utc>,
}

async fn hold(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    answer(&req, &state, &path, async |call| {
        let request: HoldRequest = parse_json(&body)?;
        let practitioner: PractitionerId = parse_id("practitionerId", &request.practitioner_id)?;
        let service: ServiceId = parse_id("serviceId", &request.service_id)?;
        let start = Instant::parse("start", request.start).map_err(invalid)?;
        let now = state.scheduler.now();
        let expires_at = now + call.settings.hold_minutes.duration();
        let reservation = ReservationId::unguessable();
        state
            .scheduler
            .reserve_slot(
                &call.context(&req),
                &ReserveSlot {
                    reservation_id: reservation,
                    practitioner_id: practitioner,
                    service_id: service,
                    start,
                    expires_at,
                },
            )
            .await
            .map_err(|e| call.refusal(e))?;
        let grant = Grant::Hold {
            reservation,
            practitioner,
            service,
            start: start.get(),
        };
        let token = state
            .tokens
            .issue(
                call.tenant.id,
                grant,
                expires_at + Duration::minutes(HOLD_TOKEN_GRACE_MINUTES),
            )
            .await
            .map_err(token_problem)?;
        Ok(HttpResponse::Created().json(json!({"holdId": token, "expiresAt": expires_at})))
    })
    .await
}

struct HeldSlot {
    reservation: ReservationId,
    practitioner: PractitionerId,
    service: ServiceId,
    start: Instant,
}

async fn held(state: &AppState, call: &Call, token: &str) -> Result<HeldSlot, Problem> {
    let v = state
        .tokens
        .verify(token, "hold")
        .await
        .map_err(|e| match e {
            // The grace period is over: the hold is long gone.
            TokenError::Expired => problem(
                StatusCode::CONFLICT,
                "HOLD_EXPIRED",
                "the hold has expired; choose a time again",
            ),
            e => token_problem(e),
        })?;
    match v.grant {
        Grant::Hold {
            reservation,
            practitioner,
            service,
            start,
        } if v.tenant == call.tenant.id => Ok(HeldSlot {
            reservation,
            practitioner,
            service,
            // Signed by this server from a start it parsed: always in range.
            start: Instant::parse("holdId", start).map_err(invalid)?,
        }),
        _ => Err(token_problem(TokenError::Invalid)),
    }
}

async fn release(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (tenant, token) = path.into_inner();
    answer(&req, &state, &tenant, async |call| {
        let h = held(&state, call, &token).await?;
        let day = h.start.local_day(call.tenant.time_zone);
        state
            .scheduler
            .release_reservation(
                &call.context(&req),
                &ReleaseReservation {
                    reservation_id: h.reservation,
                    practitioner_id: h.practitioner,
                    day,
                },
            )
            .await
            .map_err(app_problem)?;
        Ok(HttpResponse::NoContent().finish())
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PatientInput {
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    his_patient_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BookingRequest {
    hold_id: String,
    #[serde(default)]
    patient: PatientInput,
    note: Option<String>,
    language: Option<String>,
}

fn optional<T>(
    raw: Option<&str>,
    parse: impl FnOnce(&str) -> buktor_domain::DomainResult<T>,
) -> Result<Option<T>, Problem> {
    raw.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse)
        .transpose()
        .map_err(invalid)
}

/// The patient a booking is for: the one the HIS knows by id (staff), or
/// whoever fills in the form (patient), who gets an id of their own from
/// their e-mail address or phone, so their bookings group together.
async fn booking_patient(
    state: &AppState,
    call: &Call,
    input: &PatientInput,
) -> Result<PatientRef, Problem> {
    let name = optional(input.name.as_deref(), |s| Name::parse("patient.name", s))?;
    let email = optional(input.email.as_deref(), Email::parse)?;
    let phone = optional(input.phone.as_deref(), Phone::parse)?;
    if call.is_staff() {
        let his_id = optional(input.his_patient_id.as_deref(), |s| {
            ShortText::parse("patient.hisPatientId", s)
        })?
        .ok_or_else(|| {
            invalid(DomainError::invalid(
                "patient.hisPatientId",
                "staff book for a patient the HIS knows: give the HIS patient id",
            ))
        })?;
        let known = state
            .scheduler
            .patient(call.tenant.id, &his_id)
            .await
            .map_err(app_problem)?
            .map(|k| k.contact);
        return Ok(PatientRef {
            his_patient_id: his_id,
            name: name.or_else(|| known.as_ref().and_then(|k| k.name.clone())),
            phone: phone.or_else(|| known.as_ref().and_then(|k| k.phone.clone())),
            email: email.or_else(|| known.as_ref().and_then(|k| k.email.clone())),
        });
    }
    let name =
        name.ok_or_else(|| invalid(DomainError::invalid("patient.name", "your name is needed")))?;
    let reach = match (&email, &phone) {
        (Some(e), _) => format!("email:{}", e.as_str().to_lowercase()),
        (None, Some(p)) => format!("phone:{}", p.as_str()),
        (None, None) => {
            return Err(invalid(DomainError::invalid(
                "patient.email",
                "give an e-mail address or a phone number, so the hospital can reach you",
            )))
        }
    };
    let digest = hex::encode(Sha256::digest(reach.as_bytes()));
    Ok(PatientRef {
        his_patient_id: ShortText::parse("patient.hisPatientId", &format!("web-{}", &digest[..24]))
            .map_err(invalid)?,
        name: Some(name),
        phone,
        email,
    })
}

async fn book(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    answer(&req, &state, &path, async |call| {
        if matches!(call.who, Who::Manage(_)) {
            return Err(forbidden("a manage link cannot book"));
        }
        let request: BookingRequest = parse_json(&body)?;
        let h = held(&state, call, &request.hold_id).await?;
        let patient = booking_patient(&state, call, &request.patient).await?;
        let note = optional(request.note.as_deref(), |s| Reason::parse("note", s))?;
        let language = optional(request.language.as_deref(), Language::parse)?;
        let ctx = call.context(&req);
        let outcome = state
            .scheduler
            .book(
                &ctx,
                &Book {
                    appointment_id: None,
                    practitioner_id: h.practitioner,
                    service_id: h.service,
                    start: h.start,
                    patient: patient.clone(),
                    note,
                    his_appointment_id: None,
                    overriding: None,
                    reservation: Some(h.reservation),
                },
            )
            .await
            .map_err(|e| call.refusal(e))?;
        let id = AppointmentId::from_uuid(outcome.id);
        // A patient's language is theirs to set; staff book for someone the
        // HIS keeps the contact data of.
        if let (Who::Patient, Some(language)) = (&call.who, language) {
            let contact = PatientContact {
                name: patient.name.clone(),
                phone: patient.phone.clone(),
                email: patient.email.clone(),
                language: Some(language),
                opted_out: Vec::new(),
            };
            let ctx = CommandContext {
                idempotency_key: None,
                ..ctx
            };
            if let Err(e) = state
                .scheduler
                .record_patient_contact(
                    &ctx,
                    &RecordPatientContact {
                        his_patient_id: patient.his_patient_id.clone(),
                        contact,
                    },
                )
                .await
            {
                // The booking stands; notifications fall back to the hospital's language.
                tracing::warn!(error = ?e, appointment = %id, "could not record the patient's language");
            }
        }
        let a = appointment(&state, call, id).await?;
        let mut answer = appointment_json(&state, call, &a).await?;
        let (token, url) = manage_link(&state, call, &req, &a).await?;
        answer["manageToken"] = json!(token);
        answer["manageUrl"] = json!(url);
        Ok(HttpResponse::Created().json(answer))
    })
    .await
}

async fn manage_link(
    state: &AppState,
    call: &Call,
    req: &HttpRequest,
    a: &BookedAppointment,
) -> Result<(String, String), Problem> {
    let token = state
        .tokens
        .issue(call.tenant.id, Grant::Manage { appointment: a.id }, a.start)
        .await
        .map_err(token_problem)?;
    let info = req.connection_info();
    let url = format!(
        "{}://{}/widget/v1/{}/manage#token={token}",
        info.scheme(),
        info.host(),
        call.tenant.id
    );
    Ok((token, url))
}

async fn appointment(
    state: &AppState,
    call: &Call,
    id: AppointmentId,
) -> Result<BookedAppointment, Problem> {
    state
        .scheduler
        .appointment(call.tenant.id, id)
        .await
        .map_err(app_problem)?
        .ok_or_else(|| app_problem(DomainError::AppointmentNotFound(id).into()))
}

async fn appointment_json(
    state: &AppState,
    call: &Call,
    a: &BookedAppointment,
) -> Result<Value, Problem> {
    let practitioner = state
        .scheduler
        .practitioner(call.tenant.id, a.practitioner_id)
        .await
        .map_err(app_problem)?;
    let service = state
        .scheduler
        .service(call.tenant.id, a.service_id)
        .await
        .map_err(app_problem)?;
    Ok(json!({
        "appointmentId": a.id,
        "status": a.status.as_str(),
        "start": a.start,
        "end": a.end,
        "localStart": a.start.with_timezone(&call.tenant.time_zone).to_rfc3339(),
        "timeZone": call.tenant.time_zone.name(),
        "practitioner": {"id": a.practitioner_id, "name": practitioner.map(|p| p.details.name.as_str().to_owned())},
        "service": {"id": a.service_id, "name": service.map(|s| s.details.name.as_str().to_owned())},
        "patientName": a.patient.name.as_ref().map(|n| n.as_str()),
    }))
}

async fn patient(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (tenant, his_id) = path.into_inner();
    answer(&req, &state, &tenant, async |call| {
        if !call.is_staff() {
            return Err(forbidden("only staff look patients up"));
        }
        let his_id = ShortText::parse("hisPatientId", &his_id).map_err(invalid)?;
        let known = state
            .scheduler
            .patient(call.tenant.id, &his_id)
            .await
            .map_err(app_problem)?
            .ok_or_else(|| {
                problem(
                    StatusCode::NOT_FOUND,
                    "PATIENT_NOT_FOUND",
                    "the HIS has recorded no patient with this id",
                )
            })?;
        let c = known.contact;
        Ok(HttpResponse::Ok().json(json!({
            "hisPatientId": known.his_patient_id.as_str(),
            "name": c.name.as_ref().map(|n| n.as_str()),
            "email": c.email.as_ref().map(|e| e.as_str()),
            "phone": c.phone.as_ref().map(|p| p.as_str()),
            "language": c.language.as_ref().map(|l| l.as_str()),
        })))
    })
    .await
}

fn managed(call: &Call) -> Result<AppointmentId, Problem> {
    match call.who {
        Who::Manage(id) => Ok(id),
        _ => Err(problem(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "send the manage link's token as `Authorization: Manage <token>`",
        )),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    reason: Option<String>,
}

async fn manage_cancel(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    answer(&req, &state, &path, async |call| {
        let id = managed(call)?;
        let request: CancelRequest = if body.is_empty() {
            CancelRequest::default()
        } else {
            parse_json(&body)?
        };
        let reason = optional(request.reason.as_deref(), |s| Reason::parse("reason", s))?
            .unwrap_or_else(|| {
                Reason::parse("reason", "cancelled by the patient online").expect("valid text")
            });
        state
            .scheduler
            .cancel(
                &call.context(&req),
                &Cancel {
                    appointment_id: id,
                    reason,
                    cancelled_by: CancelledBy::Patient,
                    reason_code: None,
                },
            )
            .await
            .map_err(app_problem)?;
        let a = appointment(&state, call, id).await?;
        Ok(HttpResponse::Ok().json(appointment_json(&state, call, &a).await?))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RescheduleRequest {
    hold_id: String,
}

async fn manage_reschedule(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    answer(&req, &state, &path, async |call| {
        let id = managed(call)?;
        let request: RescheduleRequest = parse_json(&body)?;
        let h = held(&state, call, &request.hold_id).await?;
        let before = appointment(&state, call, id).await?;
        if before.service_id != h.service {
            return Err(invalid(DomainError::invalid(
                "holdId",
                "the hold is for another service than the appointment",
            )));
        }
        state
            .scheduler
            .reschedule(
                &call.context(&req),
                &Reschedule {
                    appointment_id: id,
                    practitioner_id: Some(h.practitioner),
                    start: h.start,
                    reason: None,
                    overriding: None,
                    reservation: Some(h.reservation),
                },
            )
            .await
            .map_err(|e| call.refusal(e))?;
        let a = appointment(&state, call, id).await?;
        let mut answer = appointment_json(&state, call, &a).await?;
        // The old link stops at the old start; the new one lasts to the new.
        let (token, url) = manage_link(&state, call, &req, &a).await?;
        answer["manageToken"] = json!(token);
        answer["manageUrl"] = json!(url);
        Ok(HttpResponse::Ok().json(answer))
    })
    .await
}
