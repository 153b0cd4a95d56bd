//! Buktor in the browser: the booking widget, the patient's manage page and
//! the admin screens a HIS embeds, with the tokens that let them in
//! (`docs/embedding.md` is the contract).
//!
//! - `POST /embed/v1/tokens`: the HIS server, with its API key, gets a
//!   short-lived embed token for one of its users and hands it to its page.
//! - `POST /embed/v1/session`: the page trades it for a session (`bks_…`),
//!   a bearer credential for `/graphql` and the widget API.
//! - Pages are framed only by the hospital's allowed origins
//!   (`Content-Security-Policy: frame-ancestors`), and the widget API
//!   answers browsers of those origins only.
pub mod assets;
mod stream;
pub mod tokens;
mod widget;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use buktor_domain::embedding::EmbeddingSettings;
use buktor_domain::values::{Name, ShortText};
use buktor_domain::{DomainError, Role, TenantId};
use chrono::Duration;
use serde::Deserialize;
use serde_json::json;

use crate::auth::SESSION_PREFIX;
use crate::his::Problem;
use crate::http::AppState;
use tokens::{Grant, TokenError};

/// Longest an embed token may live: it only has to reach the page.
const MAX_EMBED_TTL_SECS: i64 = 600;
const DEFAULT_EMBED_TTL_SECS: i64 = 300;
/// How long a session lasts: a working shift.
const SESSION_HOURS: i64 = 8;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/embed/v1/tokens", web::post().to(issue_embed_token))
        .route("/embed/v1/session", web::post().to(open_session))
        .route(
            "/embed/v1/session",
            web::method(http_options()).to(preflight_any),
        )
        .route("/embed/assets/{file}", web::get().to(admin_asset))
        .route("/embed/{tenant}/admin/{screen}", web::get().to(admin_page))
        .route("/widget/v1/buktor-booking.js", web::get().to(widget_script))
        .route("/widget/v1/assets/{file}", web::get().to(widget_asset))
        .service(web::scope("/widget/v1/{tenant}").configure(widget::configure));
}

fn http_options() -> actix_web::http::Method {
    actix_web::http::Method::OPTIONS
}

fn problem(status: StatusCode, code: &str, detail: impl Into<String>) -> Problem {
    Problem::new(status, code, detail)
}

/// A read the answer needed failed inside the server: logged with what it
/// was, answered as 503 without the details.
fn unavailable(what: &str, error: &dyn std::fmt::Debug) -> Problem {
    tracing::error!(error = ?error, "{what} failed");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "STORE_UNAVAILABLE",
        "try again",
    )
}

fn token_problem(e: TokenError) -> Problem {
    match e {
        TokenError::Store(e) => unavailable("token check", &e),
        e => problem(StatusCode::UNAUTHORIZED, e.code(), e.to_string()),
    }
}

fn invalid(e: DomainError) -> Problem {
    Problem::from(e)
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| {
        problem(
            StatusCode::BAD_REQUEST,
            "MALFORMED_REQUEST",
            format!("the body is not the expected JSON: {e}"),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EmbedTokenRequest {
    user: String,
    name: String,
    role: String,
    ttl_seconds: Option<i64>,
}

/// `POST /embed/v1/tokens`: for the HIS server only (an admin or his-system
/// key), never for a browser: the key must not reach one.
async fn issue_embed_token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let caller = match crate::http::authenticated(&req, &state).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let body = match crate::http::read_body(payload, state.max_body_bytes).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    embed_token_for(&state, &caller, &body)
        .await
        .unwrap_or_else(|p| p.response())
}

async fn embed_token_for(
    state: &AppState,
    caller: &crate::auth::Principal,
    body: &[u8],
) -> Result<HttpResponse, Problem> {
    if caller.session || !caller.role.can_configure() {
        return Err(problem(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "embed tokens are issued to an admin or his-system API key",
        ));
    }
    let request: EmbedTokenRequest = parse_json(body)?;
    let grant = embed_grant(&request.user, &request.name, &request.role)?;
    let ttl = request.ttl_seconds.unwrap_or(DEFAULT_EMBED_TTL_SECS);
    if !(1..=MAX_EMBED_TTL_SECS).contains(&ttl) {
        return Err(invalid(DomainError::invalid(
            "ttlSeconds",
            format!("from 1 to {MAX_EMBED_TTL_SECS} seconds"),
        )));
    }
    let expires_at = state.tokens.now() + Duration::seconds(ttl);
    let token = state
        .tokens
        .issue(caller.tenant_id(), grant, expires_at)
        .await
        .map_err(token_problem)?;
    tracing::info!(
        tenant = %caller.tenant_id(),
        issuer = %caller.actor_id,
        user = request.user.trim(),
        role = request.role.as_str(),
        "embed token issued"
    );
    Ok(HttpResponse::Created().json(json!({"token": token, "expiresAt": expires_at})))
}

/// What an embed token lets its user be: one of the roles a person at a
/// screen has (never `his-system`, which is the HIS server's own).
fn embed_grant(user: &str, name: &str, role: &str) -> Result<Grant, DomainError> {
    let user = ShortText::parse("user", user)?;
    let name = Name::parse("name", name)?;
    let role = match role {
        "staff" => Role::Staff,
        "admin" => Role::Admin,
        "auditor" => Role::Auditor,
        other => {
            return Err(DomainError::invalid(
                "role",
                format!("{other:?}: one of staff, admin, auditor"),
            ))
        }
    };
    Ok(Grant::Embed {
        user: user.as_str().to_owned(),
        name: name.as_str().to_owned(),
        role,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum AdminLinkError {
    #[error(transparent)]
    Invalid(#[from] DomainError),
    #[error("cannot sign the token: {0}")]
    Token(#[from] TokenError),
}

/// The address of an admin screen with a fresh embed token (valid for the
/// longest an embed token lives) in its fragment: the admin screens outside
/// a HIS, for a first look, a demo or the support desk (`buktor embed-link`).
pub async fn admin_link(
    tokens: &tokens::TokenSigner,
    base_url: &str,
    tenant: TenantId,
    user: &str,
    name: &str,
    role: &str,
    screen: &str,
) -> Result<String, AdminLinkError> {
    if !ADMIN_SCREENS.contains(&screen) {
        return Err(DomainError::invalid(
            "screen",
            format!("{screen:?}: one of {}", ADMIN_SCREENS.join(", ")),
        )
        .into());
    }
    let grant = embed_grant(user, name, role)?;
    let expires_at = tokens.now() + Duration::seconds(MAX_EMBED_TTL_SECS);
    let token = tokens.issue(tenant, grant, expires_at).await?;
    let base = base_url.trim_end_matches('/');
    Ok(format!(
        "{base}/embed/{tenant}/admin/{screen}#token={token}"
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionRequest {
    token: String,
}

/// `POST /embed/v1/session`: an embed token for a session. Called by
/// Buktor's own pages and by the staff widget on the HIS's page, so it
/// answers CORS for the origins the token's hospital allows.
async fn open_session(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let body = match crate::http::read_body(payload, state.max_body_bytes).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    session_for(&req, &state, &body)
        .await
        .unwrap_or_else(|p| p.response())
}

async fn session_for(
    req: &HttpRequest,
    state: &AppState,
    body: &[u8],
) -> Result<HttpResponse, Problem> {
    let request: SessionRequest = parse_json(body)?;
    let verified = state
        .tokens
        .verify(&request.token, "embed")
        .await
        .map_err(token_problem)?;
    let Grant::Embed { user, name, role } = verified.grant else {
        return Err(token_problem(TokenError::Invalid));
    };
    let tenant = state
        .auth
        .tenant(verified.tenant)
        .await
        .map_err(|_| token_problem(TokenError::Invalid))?;
    let settings = settings_of(state, tenant.id).await?;
    let cors = browser_origin(req, &settings)?;
    let expires_at = state.tokens.now() + Duration::hours(SESSION_HOURS);
    let (id, session) = state
        .auth
        .open_session(tenant.id, &user, &name, role, expires_at)
        .await
        .map_err(token_problem)?;
    tracing::info!(tenant = %tenant.id, session = %id, user = user.as_str(), role = %role, "session opened");
    let mut res = HttpResponse::Ok().json(json!({
        "session": format!("{SESSION_PREFIX}{session}"),
        "expiresAt": expires_at,
        "role": role.as_str(),
        "user": user,
        "name": name,
        "tenant": {"id": tenant.id, "name": tenant.name, "timeZone": tenant.time_zone.name()},
    }));
    with_cors(&mut res, cors.as_deref());
    Ok(res)
}

/// A preflight for a route whose answer checks the origin itself.
async fn preflight_any(req: HttpRequest) -> HttpResponse {
    let mut res = HttpResponse::NoContent().finish();
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    with_cors(&mut res, origin);
    res
}

pub(crate) async fn settings_of(
    state: &AppState,
    tenant: TenantId,
) -> Result<EmbeddingSettings, Problem> {
    state
        .scheduler
        .embedding_settings(tenant)
        .await
        .map_err(Problem::from)
}

/// The calling page's origin when it is another site the hospital allows
/// (`Some`, to answer with CORS), `None` when the call is not cross-origin;
/// any other site is refused.
pub(crate) fn browser_origin(
    req: &HttpRequest,
    settings: &EmbeddingSettings,
) -> Result<Option<String>, Problem> {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    if is_same_origin(req, origin) {
        return Ok(None);
    }
    if settings.allows(origin) {
        return Ok(Some(origin.to_owned()));
    }
    Err(problem(
        StatusCode::FORBIDDEN,
        "ORIGIN_NOT_ALLOWED",
        format!("{origin} is not among this hospital's allowed origins"),
    ))
}

/// Whether `origin` is this server as the browser reached it (Buktor's own
/// pages send an `Origin` on their POSTs too).
fn is_same_origin(req: &HttpRequest, origin: &str) -> bool {
    let host = req.connection_info().host().to_ascii_lowercase();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(&host))
}

pub(crate) fn with_cors(res: &mut HttpResponse, origin: Option<&str>) {
    let Some(origin) = origin.and_then(|o| HeaderValue::from_str(o).ok()) else {
        return;
    };
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    // Not CORS-safelisted: without this a widget on the hospital's site
    // could not read when to retry a 429.
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(
            "Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset",
        ),
    );
}

/// Headers of every page Buktor lets a hospital frame: only its allowed
/// origins may, and the page never leaks its URL (which holds tokens in
/// the fragment only, but still) to what it links to.
pub(crate) fn framed_page(html: assets::Asset, settings: &EmbeddingSettings) -> HttpResponse {
    let ancestors: Vec<&str> = std::iter::once("'self'")
        .chain(settings.allowed_origins.iter().map(|o| o.as_str()))
        .collect();
    // Inline styles only (the widget's shadow root has its own); scripts,
    // calls and the admin screens' WebSocket go to this server alone.
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; connect-src 'self'; frame-ancestors {}; \
         base-uri 'none'; object-src 'none'; form-action 'self'",
        ancestors.join(" ")
    );
    let mut res = html.response();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The hospital a page's path names, if it exists.
pub(crate) async fn tenant_of_path(
    state: &AppState,
    raw: &str,
) -> Result<crate::store::TenantRecord, Problem> {
    let not_found = || problem(StatusCode::NOT_FOUND, "NOT_FOUND", "no such hospital");
    let id: TenantId = raw.parse().map_err(|_| not_found())?;
    match state.auth.hospital(id).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(not_found()),
        Err(e) => Err(unavailable("reading a hospital", &e)),
    }
}

const ADMIN_SCREENS: [&str; 5] = [
    "appointments",
    "schedules",
    "services",
    "endpoints",
    "audit",
];

/// `GET /embed/{tenant}/admin/{screen}`: one page for every screen; the
/// script reads the screen from the path and the token from the fragment.
async fn admin_page(path: web::Path<(String, String)>, state: web::Data<AppState>) -> HttpResponse {
    let (tenant, screen) = path.into_inner();
    if !ADMIN_SCREENS.contains(&screen.as_str()) {
        return problem(StatusCode::NOT_FOUND, "NOT_FOUND", "no such admin screen").response();
    }
    let tenant = match tenant_of_path(&state, &tenant).await {
        Ok(t) => t,
        Err(p) => return p.response(),
    };
    match settings_of(&state, tenant.id).await {
        Ok(settings) => framed_page(assets::get(&state, "admin/index.html"), &settings),
        Err(p) => p.response(),
    }
}

async fn admin_asset(file: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    assets::get(&state, &format!("admin/{file}")).response()
}

async fn widget_asset(file: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    assets::get(&state, &format!("widget/{file}")).response()
}

/// The web component: any site may load it; what it may do is decided by
/// the widget API, per hospital.
async fn widget_script(state: web::Data<AppState>) -> HttpResponse {
    let mut res = assets::get(&state, "widget/buktor-booking.js").response();
    res.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    res
}
