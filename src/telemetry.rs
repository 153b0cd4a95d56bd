//! Structured logs with `tracing`: pretty for people, JSON for collectors.
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{Log, LogFormat};

/// Installs the global subscriber once; later calls (tests) are no-ops.
pub fn init(log: &Log) {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
