//! HTTP: routes, authentication, rate limits, request ids, metrics, and the
//! server's start and graceful stop.
//!
//! Errors outside GraphQL are RFC 9457 problem details
//! (`application/problem+json`) with a stable `code`.
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpMessage, HttpRequest, HttpResponse, HttpServer};
use async_graphql::http::GraphiQLSource;
use futures::StreamExt;
use serde_json::json;
use tracing::Instrument;
use uuid::Uuid;

use crate::app::{Clock, OffsetClock, Scheduler, SystemClock};
use crate::auth::{AuthError, Authenticator};
use crate::config::Config;
use crate::embed::tokens::TokenSigner;
use crate::graphql::{Endpoint, RequestInfo};
use crate::live::LiveFeed;
use crate::metrics::Metrics;
use crate::projection::ReadSide;
use crate::ratelimit::{Quota, RateLimited, RateLimiter};
use crate::store::Store;

/// Everything a request handler needs, shared by all workers.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub scheduler: Arc<Scheduler>,
    pub schema: Endpoint,
    pub auth: Authenticator,
    pub limiter: RateLimiter,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    /// Every stored event as it comes, for subscriptions.
    pub live: Arc<LiveFeed>,
    /// The projections' runners and read models.
    pub read_side: Arc<ReadSide>,
    /// Signs and checks the browser's tokens (embed, session, manage, hold).
    pub tokens: Arc<TokenSigner>,
    /// See `Config::web_dir`.
    pub web_dir: Option<std::path::PathBuf>,
}

impl AppState {
    pub fn new(config: &Config, store: Arc<dyn Store>) -> Self {
        let metrics = Arc::new(Metrics::new());
        let clock: Arc<dyn Clock> = if config.clock_offset_secs == 0 {
            Arc::new(SystemClock)
        } else {
            tracing::warn!(
                offset_secs = config.clock_offset_secs,
                "the server clock is shifted (clock_offset_secs)"
            );
            Arc::new(OffsetClock(chrono::Duration::seconds(
                config.clock_offset_secs,
            )))
        };
        let tokens = Arc::new(TokenSigner::new(store.clone(), clock.clone()));
        let scheduler = Arc::new(Scheduler::new(store.clone(), clock, metrics.clone()));
        let read_side = ReadSide::new(store.clone());
        AppState {
            live: LiveFeed::new(store.clone(), scheduler.watch_appends()),
            schema: crate::graphql::schema(
                scheduler.clone(),
                read_side.clone(),
                config.webhooks.clone(),
            ),
            read_side,
            auth: Authenticator::new(store.clone(), tokens.clone()),
            tokens,
            web_dir: config.web_dir.clone(),
            limiter: RateLimiter::new(
                config.rate_limit.requests,
                Duration::from_secs(config.rate_limit.window_secs),
            ),
            max_body_bytes: config.max_body_bytes,
            store,
            scheduler,
            metrics,
        }
    }
}

/// A bound, not yet running server.
pub struct Application {
    pub addr: std::net::SocketAddr,
    server: Server,
    live: Arc<LiveFeed>,
}

impl Application {
    /// Binds `config.listen` (port 0 picks a free port) and builds the server.
    /// Signals are not handled here: `run_until_stopped` does that, so tests
    /// can stop a server without one.
    pub fn build(config: &Config, state: Arc<AppState>) -> std::io::Result<Application> {
        let listener = std::net::TcpListener::bind(config.listen)?;
        let addr = listener.local_addr()?;
        let live = state.live.clone();
        let data = web::Data::from(state);
        // For the tests of `answer_panics` only: a route that panics, so that
        // the layer is tested without depending on some input still panicking.
        let max_body_bytes = data.max_body_bytes;
        let panic_route = std::env::var("BUKTOR_TEST_PANIC_ROUTE").is_ok_and(|v| v == "1");
        let mut server = HttpServer::new(move || {
            let app = App::new();
            let app = if panic_route {
                app.route("/test/panic", web::to(test_panic))
            } else {
                app
            };
            app.app_data(data.clone())
                // `web::Bytes` bodies (the widget's) have the same limit as the rest.
                .app_data(web::PayloadConfig::new(max_body_bytes))
                .wrap(from_fn(refuse_control_characters))
                // Outermost: `observe` sees (and counts) the 500 a panic became.
                .wrap(from_fn(answer_panics))
                .wrap(from_fn(observe))
                .route("/health", web::get().to(health))
                .route("/ready", web::get().to(ready))
                .route("/metrics", web::get().to(metrics))
                .route("/graphql", web::post().to(graphql))
                .route("/graphql", web::get().to(graphql_get))
                .route("/events", web::get().to(crate::feed::page))
                .route("/events/stream", web::get().to(crate::feed::stream))
                .service(web::scope("/fhir/r4").configure(crate::fhir::configure))
                .service(web::scope("/his/v1").configure(crate::his::configure))
                .configure(crate::embed::configure)
                .default_service(web::to(not_found))
        })
        .disable_signals()
        .shutdown_timeout(config.shutdown_timeout_secs);
        if config.workers > 0 {
            server = server.workers(config.workers);
        }
        let server = server.listen(listener)?.run();
        Ok(Application { addr, server, live })
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Runs until SIGTERM or SIGINT, then stops accepting connections and lets
    /// in-flight requests finish (up to `shutdown_timeout_secs`).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let live = self.live.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: finishing in-flight requests");
            // Ends every subscription and closes the WebSockets, which would
            // otherwise hold the graceful stop for its whole timeout.
            live.stop();
            handle.stop(true).await;
        });
        self.server.await
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; stop with Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The request id travels in `X-Request-Id` (taken from the client if sane).
#[derive(Clone, Copy)]
struct RequestId(Uuid);

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request id, log span, latency and status metrics for every request.
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::try_parse(v).ok())
        .unwrap_or_else(Uuid::now_v7);
    req.extensions_mut().insert(RequestId(request_id));
    let method = req.method().to_string();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let span = tracing::info_span!("request", %request_id, %method, %route);
    let started = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    // An error (a handler that panicked, see `answer_panics`) becomes its
    // response after this layer: counted and logged here all the same.
    let status = match &result {
        Ok(res) => res.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            ms = elapsed.as_secs_f64() * 1e3,
            "request done"
        )
    });
    if let Some(m) = metrics {
        m.http_requests
            .with_label_values(&[&method, &route, status.as_str()])
            .inc();
        m.http_seconds
            .with_label_values(&[&method, &route])
            .observe(elapsed.as_secs_f64());
    }
    let mut res = result?;
    if let Ok(v) = HeaderValue::from_str(&request_id.to_string()) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    Ok(res)
}

/// A panic in a handler answers 500 `INTERNAL` with the request id,
/// instead of dropping the connection without an answer; other requests
/// never see it (each runs in its own future, and nothing a handler holds
/// is shared in a state a panic could leave half-written: shared maps use
/// locks that tolerate poisoning). The panic itself is printed by Rust's
/// panic hook; this logs it once more with the request id, as an error.
///
/// A stack overflow cannot be caught (Rust aborts the process), which is
/// why requests are measured before anything recursive reads them (see
/// `graphql::guard`).
async fn answer_panics(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    use futures::FutureExt;
    // No clone of the request is kept across the call: routing needs the
    // only reference to it.
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0);
    // `call` itself runs inside the caught future: a panic in a service's
    // synchronous part is caught as well.
    match std::panic::AssertUnwindSafe(async move { next.call(req).await })
        .catch_unwind()
        .await
    {
        Ok(Ok(res)) if res.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_problem(&res) => {
            // actix-web's own body extractors (`web::Bytes`) answer a bare
            // text; every surface answers problem details instead.
            let limit = res
                .request()
                .app_data::<web::Data<AppState>>()
                .map(|s| s.max_body_bytes)
                .unwrap_or_default();
            let (http_request, _) = res.into_parts();
            let answer = problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BODY_TOO_LARGE",
                format!("the body exceeds {limit} bytes"),
            );
            Ok(ServiceResponse::new(http_request, answer))
        }
        Ok(result) => result.map(ServiceResponse::map_into_boxed_body),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            let request_id = request_id.map(|id| id.to_string()).unwrap_or_default();
            tracing::error!(%request_id, panic = %what, "a request handler panicked");
            // The request went down with the handler: the error renders
            // the answer (see `HandlerPanicked`).
            Err(HandlerPanicked { request_id }.into())
        }
    }
}

/// A handler panicked on the request with this id: 500 `INTERNAL` problem
/// details, and the connection closes after the answer (it may hold a
/// half-read body).
#[derive(Debug, thiserror::Error)]
#[error("the server failed on this request (request id {request_id})")]
struct HandlerPanicked {
    request_id: String,
}

impl actix_web::ResponseError for HandlerPanicked {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            self.to_string(),
        );
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            res.headers_mut().insert(REQUEST_ID, v);
        }
        res.head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
        res
    }
}

/// No path segment or query parameter of this API holds a control
/// character, and PostgreSQL refuses a NUL in text: a percent-encoded one
/// (`%00` to `%1F`, `%7F`) is refused here, for every route at once, before
/// any id or search value reaches a handler or the store. FHIR answers an
/// OperationOutcome, every other surface problem details.
async fn refuse_control_characters(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let uri = req.uri();
    let in_path = has_encoded_control(uri.path(), &[]);
    // A GraphQL document sent with GET has line breaks and tabs.
    let in_query = uri
        .query()
        .is_some_and(|q| has_encoded_control(q, b"\t\n\r"));
    if !(in_path || in_query) {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    let detail = format!(
        "the {} must not contain control characters",
        if in_path { "path" } else { "query string" }
    );
    let answer = if req.path().starts_with("/fhir/") {
        crate::fhir::Outcome::invalid(detail).response()
    } else {
        problem(StatusCode::BAD_REQUEST, "INVALID_INPUT", detail)
    };
    Ok(req.into_response(answer))
}

/// Whether percent-encoded `text` decodes to a control character other
/// than those `allowed` (raw ones never get here: the HTTP parser refuses
/// them).
fn has_encoded_control(text: &str, allowed: &[u8]) -> bool {
    text.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && std::str::from_utf8(&w[1..])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .is_some_and(|b| (b < 0x20 || b == 0x7f) && !allowed.contains(&b))
    })
}

fn is_problem<B>(res: &ServiceResponse<B>) -> bool {
    res.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
}

/// An RFC 9457 problem.
pub fn problem(status: StatusCode, code: &str, detail: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/problem+json")
        .json(json!({
            "type": format!("https://buktor.dev/problems/{}", code.to_lowercase().replace('_', "-")),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "code": code,
            "detail": detail.into(),
        }))
}

async fn test_panic() -> HttpResponse {
    panic!("the test route panics (BUKTOR_TEST_PANIC_ROUTE)")
}

async fn not_found() -> HttpResponse {
    problem(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    match state.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Err(e) => {
            tracing::warn!(error = ?e, "store not ready");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "STORE_UNAVAILABLE",
                "the event store is not reachable",
            )
        }
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// `GET /graphql`: GraphiQL, or with `Upgrade: websocket` the subscriptions.
async fn graphql_get(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        subscriptions(req, payload, state).await
    } else {
        graphiql().await
    }
}

/// GraphQL over WebSocket (`graphql-transport-ws`, also the older
/// `graphql-ws`), for subscriptions; queries and mutations work there too.
///
/// The key goes in the `connection_init` payload as
/// `{"authorization": "Bearer bk_…"}` (browsers cannot set headers on a
/// WebSocket), or in the upgrade request's `Authorization` header. A bad key
/// in the header is refused with 401 before the upgrade; a connection whose
/// `connection_init` brings no valid key (and had none in the header) is
/// closed without `connection_ack`. Opening a connection counts as one
/// request against the key's rate limit. When the key or session is
/// revoked, the socket is closed with code 4403 (see `crate::ws`).
async fn subscriptions(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let from_header = match bearer(&req) {
        None => None,
        Some(token) => match authenticate(&state, token).await {
            Ok(p) => Some(p),
            Err(res) => return res,
        },
    };
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0)
        .unwrap_or_else(Uuid::now_v7);
    let mut data = async_graphql::Data::default();
    data.insert(RequestInfo {
        remote_addr: req.peer_addr().map(|a| a.ip().to_string()),
        request_id,
        source: None,
    });
    data.insert(state.live.clone());
    let init_state = state.clone();
    // The caller, once `connection_init` named one: the socket closes when
    // its credential is revoked.
    let (named, caller) = tokio::sync::oneshot::channel::<crate::auth::Principal>();
    let on_init = move |init: serde_json::Value| async move {
        let token = init
            .as_object()
            .and_then(|o| {
                o.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            })
            .and_then(|(_, v)| v.as_str())
            .map(|v| match v.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    token.trim().to_owned()
                }
                _ => v.trim().to_owned(),
            });
        let principal = match (token, from_header) {
            (Some(token), _) => match init_state.auth.verify(&token).await {
                Ok(p) => {
                    let quota = init_state.limiter.check(p.key_id);
                    if !quota.allowed {
                        init_state.metrics.rate_limited.inc();
                        return Err(async_graphql::Error::new(format!(
                            "RATE_LIMITED: too many requests; retry in {} s",
                            quota.reset_secs
                        )));
                    }
                    p
                }
                Err(AuthError::Store(e)) => {
                    tracing::error!(error = ?e, "authentication failed inside the server");
                    return Err(async_graphql::Error::new("STORE_UNAVAILABLE: try again"));
                }
                Err(e) => return Err(async_graphql::Error::new(format!("UNAUTHENTICATED: {e}"))),
            },
            (None, Some(p)) => p,
            (None, None) => {
                // A close frame's reason holds at most 123 bytes.
                return Err(async_graphql::Error::new(
                    "UNAUTHENTICATED: send {\"authorization\": \"Bearer <key>\"} in connection_init",
                ));
            }
        };
        let _ = named.send(principal.clone());
        let mut data = async_graphql::Data::default();
        data.insert(principal);
        Ok(data)
    };
    let auth_state = state.clone();
    let revoked = async move {
        match caller.await {
            Ok(principal) => auth_state.auth.revoked(&principal).await,
            // Never named (the init failed, or none came): nothing to revoke.
            Err(_) => std::future::pending().await,
        }
    };
    // The socket ends when the server stops (see `run_until_stopped`).
    // Each operation on the socket counts against the caller's rate limit,
    // as a request over HTTP does.
    let limit_state = state.clone();
    let admission: crate::graphql::guard::Admission = Arc::new(move |data| {
        let Some(p) = crate::graphql::guard::data_get::<crate::auth::Principal>(data) else {
            return Ok(());
        };
        let quota = limit_state.limiter.check(p.key_id);
        if quota.allowed {
            return Ok(());
        }
        limit_state.metrics.rate_limited.inc();
        Err(crate::graphql::guard::coded_error(
            format!("too many requests; retry in {} s", quota.reset_secs),
            "RATE_LIMITED",
        ))
    });
    match crate::ws::serve(
        &req,
        payload,
        state.schema.with_admission(admission),
        data,
        on_init,
        revoked,
        state.live.stopped(),
    ) {
        Ok(res) => res,
        Err(e) => problem(
            StatusCode::BAD_REQUEST,
            "BAD_WEBSOCKET_REQUEST",
            format!("{e}; use the subprotocol graphql-transport-ws"),
        ),
    }
}

/// The principal of a key, or the response that refuses it (401, 429, 503).
/// The principal of a request's `Authorization: Bearer` key, within its
/// rate limit; else the problem response to send.
pub(crate) async fn authenticated(
    req: &HttpRequest,
    state: &AppState,
) -> Result<crate::auth::Principal, HttpResponse> {
    match bearer(req) {
        Some(token) => authenticate(state, token).await,
        None => Err(unauthorized(AuthError::Missing)),
    }
}

async fn authenticate(
    state: &AppState,
    token: &str,
) -> Result<crate::auth::Principal, HttpResponse> {
    authenticate_counted(state, token).await.map(|(p, _)| p)
}

/// [`authenticate`], and the caller's quota after counting this request.
async fn authenticate_counted(
    state: &AppState,
    token: &str,
) -> Result<(crate::auth::Principal, Quota), HttpResponse> {
    let principal = match state.auth.verify(token).await {
        Ok(p) => p,
        Err(AuthError::Store(e)) => {
            tracing::error!(error = ?e, "authentication failed inside the server");
            return Err(problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "STORE_UNAVAILABLE",
                "try again",
            ));
        }
        Err(e) => return Err(unauthorized(e)),
    };
    match state.limiter.admit(principal.key_id) {
        Ok(quota) => Ok((principal, quota)),
        Err(refused) => Err(too_many_requests(state, &refused)),
    }
}

/// The 429 of every surface: problem details with `Retry-After` and the
/// `RateLimit-*` headers (FHIR and the widget API reshape the body and
/// keep the headers).
pub(crate) fn too_many_requests(state: &AppState, refused: &RateLimited) -> HttpResponse {
    state.metrics.rate_limited.inc();
    let mut res = problem(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        format!(
            "too many requests; retry in {} s",
            refused.retry_after_secs()
        ),
    );
    refused.apply(&mut res);
    res
}

async fn graphiql() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(GraphiQLSource::build().endpoint("/graphql").finish())
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn with_quota(mut res: HttpResponse, q: &Quota) -> HttpResponse {
    q.apply(&mut res);
    res
}

/// Reads the body up to the configured limit.
pub(crate) async fn read_body(
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, HttpResponse> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            problem(
                StatusCode::BAD_REQUEST,
                "BAD_BODY",
                format!("cannot read the body: {e}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BODY_TOO_LARGE",
                format!("the body exceeds {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn graphql(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let Some(token) = bearer(&req) else {
        return unauthorized(AuthError::Missing);
    };
    let (principal, quota) = match authenticate_counted(&state, token).await {
        Ok(admitted) => admitted,
        Err(res) => return res,
    };
    let body = match read_body(payload, state.max_body_bytes).await {
        Ok(b) => b,
        Err(res) => return with_quota(res, &quota),
    };
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0)
        .unwrap_or_else(Uuid::now_v7);
    let source = req
        .headers()
        .get("x-buktor-source")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| serde_json::from_value(json!(v)).ok());
    let info = RequestInfo {
        remote_addr: req.peer_addr().map(|a| a.ip().to_string()),
        request_id,
        source,
    };
    let response = match state.schema.answer_http_body(&body, principal, info).await {
        Ok(response) => response,
        Err(crate::graphql::guard::BodyError::Refused(refusal)) => {
            tracing::warn!(
                code = refusal.code(),
                "refused a GraphQL request: {refusal}"
            );
            return with_quota(HttpResponse::Ok().json(refusal.response()), &quota);
        }
        Err(e) => {
            return with_quota(
                problem(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST", e.to_string()),
                &quota,
            )
        }
    };
    with_quota(HttpResponse::Ok().json(response), &quota)
}

fn unauthorized(e: AuthError) -> HttpResponse {
    let mut res = problem(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", e.to_string());
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"buktor\""),
    );
    res
}
