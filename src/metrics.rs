//! Prometheus metrics, served at `/metrics`.
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_seconds: HistogramVec,
    pub commands: IntCounterVec,
    pub command_seconds: HistogramVec,
    /// Appends refused because a stream moved (each is retried or becomes a typed error).
    pub conflicts: IntCounter,
    pub append_seconds: Histogram,
    pub rate_limited: IntCounter,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("buktor".into()), None)
            .expect("the prefix is a valid metric name");
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let http_seconds = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )
        .expect("valid metric");
        let commands = IntCounterVec::new(
            Opts::new("commands_total", "Commands by name and outcome"),
            &["command", "outcome"],
        )
        .expect("valid metric");
        let command_seconds = HistogramVec::new(
            HistogramOpts::new(
                "command_duration_seconds",
                "Command latency, retries included",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["command"],
        )
        .expect("valid metric");
        let conflicts = IntCounter::new(
            "store_version_conflicts_total",
            "Appends refused because a stream moved",
        )
        .expect("valid metric");
        let append_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "store_append_duration_seconds",
                "Event store append latency",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let rate_limited = IntCounter::new("rate_limited_total", "Requests refused with 429")
            .expect("valid metric");
        for c in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_seconds.clone()),
            Box::new(commands.clone()),
            Box::new(command_seconds.clone()),
            Box::new(conflicts.clone()),
            Box::new(append_seconds.clone()),
            Box::new(rate_limited.clone()),
        ] {
            registry
                .register(c)
                .expect("each metric is registered once");
        }
        Metrics {
            registry,
            http_requests,
            http_seconds,
            commands,
            command_seconds,
            conflicts,
            append_seconds,
            rate_limited,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding our own well-formed metrics into memory does not fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
