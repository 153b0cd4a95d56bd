//! The Buktor server: HTTP and GraphQL in front of an event-sourced
//! scheduling core.
//!
//! Layout: `config` (one typed configuration), `store` (the event store and
//! its two backends), `app` (commands: load → decide in `buktor_domain` →
//! append), `graphql` (the API), `http` (routes, authentication, rate limits,
//! start and graceful stop), `auth`, `ratelimit`, `metrics`, `telemetry`,
//! `demo` (the demo hospital seeded on a fresh embedded store).
pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod demo;
pub mod embed;
pub mod feed;
pub mod fhir;
pub mod graphql;
pub mod his;
pub mod http;
pub mod live;
pub mod metrics;
pub mod middleware;
pub mod notifications;
pub mod projection;
pub mod ratelimit;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod webhooks;
pub mod ws;
