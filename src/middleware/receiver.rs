//! The receiver: `POST /webhooks/buktor` and `GET /health`.
//!
//! A message is checked in this order, and anything refused is stored
//! nowhere (RFC 9457 problem details, `application/problem+json`):
//!
//! | check | status | code |
//! |---|---|---|
//! | body larger than `max_body_bytes` | 413 | `PAYLOAD_TOO_LARGE` |
//! | a `webhook-id`, `-timestamp` or `-signature` header missing | 401 | `MISSING_SIGNATURE` |
//! | `webhook-timestamp` not a number | 400 | `MALFORMED_TIMESTAMP` |
//! | `webhook-timestamp` further than `tolerance_secs` from now | 400 | `STALE_TIMESTAMP` |
//! | no signature made with any configured secret | 401 | `BAD_SIGNATURE` |
//! | `webhook-id` not 1–255 visible ASCII characters | 400 | `BAD_WEBHOOK_ID` |
//! | body not a JSON object | 400 | `MALFORMED_BODY` |
//! | payload `version` other than 1 | 422 | `UNSUPPORTED_VERSION` |
//! | no `type`/`data`, or an `appointment.*` body without `data.appointment.id`/`version` | 422 | `INVALID_PAYLOAD` |
//! | the local store cannot write | 500 | `STORE_FAILED` |
//!
//! A stale timestamp is 400, not 401: the signature may be fine and the
//! sender's clock is what needs fixing. Accepted messages are answered
//! `200 {"status": "stored" | "duplicate", "webhookId": …}` only after the
//! local transaction is on disk.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use chrono::Utc;
use futures::StreamExt;
use serde_json::json;

use super::payload::{Incoming, PayloadError, WebhookId};
use super::store::{Inserted, LocalStore};
use super::Output;
use crate::http::problem;
use crate::webhooks::signature::{self, SignatureError, SigningSecret, HEADER_ID};

/// The route Buktor's endpoint is pointed at.
pub const PATH: &str = "/webhooks/buktor";

/// What the receiver needs, shared by its workers.
pub struct ReceiverState {
    pub store: LocalStore,
    pub secrets: Vec<SigningSecret>,
    pub tolerance_secs: i64,
    pub max_body_bytes: usize,
    /// Each stored message gets a pending delivery for each of these.
    pub outputs: Vec<Output>,
}

/// A bound, not yet running receiver.
pub struct Receiver {
    pub addr: SocketAddr,
    server: Server,
}

impl Receiver {
    /// Binds `listen` (port 0 picks a free port). Signals are the caller's.
    pub fn build(
        listen: SocketAddr,
        workers: usize,
        shutdown_timeout: Duration,
        state: Arc<ReceiverState>,
    ) -> std::io::Result<Receiver> {
        let listener = std::net::TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let data = web::Data::from(state);
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route(PATH, web::post().to(receive))
                .route("/health", web::get().to(health))
                .default_service(web::to(|| async {
                    problem(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
                }))
        })
        .disable_signals()
        .shutdown_timeout(shutdown_timeout.as_secs());
        if workers > 0 {
            server = server.workers(workers);
        }
        let server = server.listen(listener)?.run();
        Ok(Receiver { addr, server })
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped through [`Self::handle`].
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }
}

async fn health(state: web::Data<ReceiverState>) -> HttpResponse {
    let ping = state.store.run(|s| s.ping()).await;
    match ping {
        Ok(_) => HttpResponse::Ok().json(json!({"status": "ok"})),
        Err(e) => {
            tracing::error!(error = %e, "the local store does not answer");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "STORE_UNAVAILABLE",
                "the local store does not answer",
            )
        }
    }
}

fn refuse(status: StatusCode, code: &str, detail: impl Into<String>) -> HttpResponse {
    let detail = detail.into();
    tracing::warn!(status = status.as_u16(), code, %detail, "refused a webhook");
    problem(status, code, detail)
}

fn too_large(limit: usize) -> HttpResponse {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        format!("the body is larger than {limit} bytes"),
    )
}

async fn receive(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<ReceiverState>,
) -> HttpResponse {
    let limit = state.max_body_bytes;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large(limit);
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "MALFORMED_BODY",
                "the body could not be read",
            );
        };
        if body.len() + chunk.len() > limit {
            return too_large(limit);
        }
        body.extend_from_slice(&chunk);
    }

    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let now = Utc::now().timestamp();
    let mut verdict = Err(SignatureError::NoMatch);
    for secret in &state.secrets {
        verdict = signature::verify(secret, header, &body, now, state.tolerance_secs);
        if !matches!(verdict, Err(SignatureError::NoMatch)) {
            break;
        }
    }
    if let Err(e) = verdict {
        let (status, code) = match e {
            SignatureError::MissingHeader(_) => (StatusCode::UNAUTHORIZED, "MISSING_SIGNATURE"),
            SignatureError::MalformedTimestamp => (StatusCode::BAD_REQUEST, "MALFORMED_TIMESTAMP"),
            SignatureError::StaleTimestamp(_) => (StatusCode::BAD_REQUEST, "STALE_TIMESTAMP"),
            SignatureError::NoMatch => (StatusCode::UNAUTHORIZED, "BAD_SIGNATURE"),
            SignatureError::MalformedSecret => {
                (StatusCode::INTERNAL_SERVER_ERROR, "MALFORMED_SECRET")
            }
        };
        return refuse(status, code, e.to_string());
    }
    let webhook_id = match WebhookId::parse(&header(HEADER_ID).unwrap_or_default()) {
        Ok(id) => id,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "BAD_WEBHOOK_ID", e),
    };
    let message = match Incoming::parse(webhook_id, &body) {
        Ok(m) => m,
        Err(e) => {
            let (status, code) = match &e {
                PayloadError::Malformed(_) => (StatusCode::BAD_REQUEST, "MALFORMED_BODY"),
                PayloadError::UnsupportedVersion(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "UNSUPPORTED_VERSION")
                }
                PayloadError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "INVALID_PAYLOAD"),
            };
            return refuse(status, code, e.to_string());
        }
    };

    let outputs = state.outputs.clone();
    let id = message.webhook_id.clone();
    let event_type = message.event_type.clone();
    let stored = state
        .store
        .run(move |s| s.insert(&message, &outputs, Utc::now()))
        .await;
    match stored {
        Ok(inserted) => {
            let status = match inserted {
                Inserted::New => "stored",
                Inserted::Duplicate => "duplicate",
            };
            tracing::info!(webhook_id = %id, %event_type, status, "received");
            HttpResponse::Ok().json(json!({"status": status, "webhookId": id.as_str()}))
        }
        Err(e) => {
            tracing::error!(webhook_id = %id, error = %e, "cannot store a webhook");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "STORE_FAILED",
                "the message could not be stored; send it again",
            )
        }
    }
}
