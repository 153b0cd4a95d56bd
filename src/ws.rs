//! Drives one GraphQL WebSocket: async-graphql speaks the protocol
//! (`graphql-transport-ws`, and the older `graphql-ws`); this moves its
//! frames, keeps the connection alive, and closes it when the server stops
//! or when the caller's credential is revoked.
//!
//! async-graphql-actix-web's own driver cannot be closed from outside with a
//! code of our choosing, which revocation needs: 4403 (Forbidden), for
//! both protocols.
use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason};
use async_graphql::http::{WebSocket, WebSocketProtocols, WsMessage};
use async_graphql::{Data, Executor};
use futures::StreamExt;

/// How often the server pings; a client silent for [`CLIENT_TIMEOUT`] is dropped.
const HEARTBEAT: Duration = Duration::from_secs(5);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message accepted (a GraphQL document with its variables).
const MAX_MESSAGE: usize = 1 << 20;
/// The close code of a revoked credential.
pub const REVOKED: u16 = 4403;

#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("no supported subprotocol")]
    NoProtocol,
    #[error(transparent)]
    Handshake(#[from] actix_web::Error),
}

/// Upgrades the request and serves GraphQL on it, on this worker.
///
/// `on_init` checks `connection_init`; `revoked` resolves when the
/// connection must end with [`REVOKED`] (it should wait for `on_init` to
/// have named the caller); `stopped` when the server stops (close 1001).
pub fn serve<E, OnInit, InitFut>(
    req: &HttpRequest,
    payload: web::Payload,
    executor: E,
    data: Data,
    on_init: OnInit,
    revoked: impl Future<Output = ()> + 'static,
    stopped: impl Future<Output = ()> + 'static,
) -> Result<HttpResponse, WsError>
where
    E: Executor,
    OnInit: FnOnce(serde_json::Value) -> InitFut + Send + 'static,
    InitFut: Future<Output = async_graphql::Result<Data>> + Send + 'static,
{
    let protocol = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|offered| {
            offered
                .split(',')
                .find_map(|p| WebSocketProtocols::from_str(p.trim()).ok())
        })
        .ok_or(WsError::NoProtocol)?;
    let (mut response, mut session, messages) = actix_ws::handle(req, payload)?;
    response.headers_mut().insert(
        HeaderName::from_static("sec-websocket-protocol"),
        HeaderValue::from_static(protocol.sec_websocket_protocol()),
    );
    let mut messages = messages
        .max_frame_size(MAX_MESSAGE)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE);
    let (to_graphql, from_client) = futures::channel::mpsc::unbounded::<Vec<u8>>();
    let mut graphql = Box::pin(
        WebSocket::new(executor, from_client, protocol)
            .connection_data(data)
            .on_connection_init(on_init),
    );
    actix_web::rt::spawn(async move {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let mut last_heard = Instant::now();
        let mut revoked = std::pin::pin!(revoked);
        let mut stopped = std::pin::pin!(stopped);
        let close: Option<CloseReason> = loop {
            tokio::select! {
                incoming = messages.next() => {
                    last_heard = Instant::now();
                    match incoming {
                        Some(Ok(AggregatedMessage::Text(text))) => {
                            let _ = to_graphql.unbounded_send(text.as_bytes().to_vec());
                        }
                        Some(Ok(AggregatedMessage::Binary(bytes))) => {
                            let _ = to_graphql.unbounded_send(bytes.to_vec());
                        }
                        Some(Ok(AggregatedMessage::Ping(bytes))) => {
                            if session.pong(&bytes).await.is_err() {
                                return;
                            }
                        }
                        Some(Ok(AggregatedMessage::Pong(_))) => {}
                        Some(Ok(AggregatedMessage::Close(reason))) => break reason,
                        Some(Err(_)) | None => break None,
                    }
                }
                outgoing = graphql.next() => match outgoing {
                    Some(WsMessage::Text(text)) => {
                        if session.text(text).await.is_err() {
                            return;
                        }
                    }
                    Some(WsMessage::Close(code, description)) => {
                        break Some(CloseReason {
                            code: code.into(),
                            description: Some(description),
                        });
                    }
                    None => break None,
                },
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > CLIENT_TIMEOUT {
                        break None;
                    }
                    if session.ping(b"").await.is_err() {
                        return;
                    }
                }
                _ = &mut revoked => {
                    break Some(CloseReason {
                        code: CloseCode::Other(REVOKED),
                        description: Some("Forbidden: the credential was revoked".into()),
                    });
                }
                _ = &mut stopped => {
                    break Some(CloseReason {
                        code: CloseCode::Away,
                        description: Some("the server is stopping".into()),
                    });
                }
            }
        };
        let _ = session.close(close).await;
    });
    Ok(response)
}
