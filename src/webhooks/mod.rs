//! Outbound webhooks to HIS endpoints (integration 3 of the product).
//!
//! - `signature`: Standard Webhooks signing, shared with the middleware.
//! - `payload`: the versioned body (`docs/webhooks.md`).
//! - `endpoints`: managing endpoints (GraphQL and CLI share it).
//! - `fanout`: follows each tenant's global order and writes one message per
//!   event and subscribed endpoint into the outbox, with its checkpoint, in
//!   one transaction.
//! - `dispatch`: claims due messages under a lease and sends them, retrying
//!   per the schedule; in order per appointment, in parallel otherwise.
pub mod cli;
pub mod dispatch;
pub mod endpoints;
pub mod fanout;
pub mod payload;
pub mod signature;

use std::sync::Arc;
use std::time::Duration;

use crate::app::AppendSignal;
use crate::config::Webhooks as WebhooksConfig;
use crate::store::Store;

/// Starts this instance's fan-out (it works while it holds the lease) and
/// dispatcher. They stop when `stop` turns true; the dispatcher finishes
/// the attempts it has in flight first.
pub fn spawn(
    store: Arc<dyn Store>,
    config: &WebhooksConfig,
    appends: Arc<AppendSignal>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    if !config.dispatch {
        return vec![];
    }
    let stored = Arc::new(tokio::sync::Notify::new());
    let fanout = fanout::Fanout::new(
        store.clone(),
        appends,
        stored.clone(),
        Duration::from_millis(config.poll_ms),
    );
    let dispatcher = dispatch::Dispatcher::new(store, config.clone(), stored);
    vec![
        tokio::spawn(fanout.run(stop.clone())),
        tokio::spawn(dispatcher.run(stop)),
    ]
}
