//! Structured logs with `tracing`: pretty for people, JSON for collectors.
//!
//! **No secret reaches a log, at any level.** Two rules make that hold
//! whatever filter an operator sets (`log.filter`, `RUST_LOG`):
//!
//! 1. Only Buktor's own code (targets `buktor…`) logs below INFO. Every
//!    dependency is held at INFO and above, always: at DEBUG and TRACE
//!    libraries write what passes through them, and Buktor can vet only its
//!    own events. `tokio_postgres::query` logs every statement's parameters
//!    at DEBUG (webhook secrets, the token-signing key), lettre the SMTP
//!    dialogue with its `AUTH` line, h2/hyper/rustls/tungstenite their
//!    frames and handshakes. The operator's filter can only narrow this
//!    further (see [`dependency_ceiling`]).
//! 2. Buktor's own events never carry a secret's value: secrets are held in
//!    types whose `Debug` and `Display` redact ([`crate::config::Secret`],
//!    [`crate::webhooks::signature::SigningSecret`]), request spans name the
//!    route pattern, never the path or query (which can hold a token), and
//!    no header is logged.
//!
//! `tests/it/secrets.rs` runs a whole scenario at `trace` in both formats
//! and searches the output for every secret it made.
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::{Log, LogFormat};

/// Installs the global subscriber once; later calls (tests) are no-ops.
pub fn init(log: &Log) {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = filter.and(filter_fn(dependency_ceiling));
    let layer = fmt::layer().with_writer(std::io::stderr);
    let layer = match log.format {
        LogFormat::Json => layer.json().flatten_event(true).with_filter(filter).boxed(),
        LogFormat::Pretty => layer.compact().with_filter(filter).boxed(),
    };
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// Whether an event or span may be logged at all, before the operator's
/// filter is asked: Buktor's own at every level, a dependency's at INFO,
/// WARN and ERROR only.
pub fn dependency_ceiling(meta: &Metadata<'_>) -> bool {
    is_buktor(meta.target()) || *meta.level() <= Level::INFO
}

/// The targets of Buktor's crates and binaries: `buktor`, `buktor::…`,
/// `buktor_domain`, `buktor_projections`, `buktor_middleware`.
fn is_buktor(target: &str) -> bool {
    target == "buktor" || target.starts_with("buktor::") || target.starts_with("buktor_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_buktor_logs_below_info() {
        for own in [
            "buktor",
            "buktor::http",
            "buktor_domain::x",
            "buktor_middleware",
        ] {
            assert!(is_buktor(own), "{own}");
        }
        for dependency in [
            "tokio_postgres::query",
            "lettre::transport::smtp",
            "h2::codec",
            "buktorx",
            "",
        ] {
            assert!(!is_buktor(dependency), "{dependency}");
        }
    }
}
