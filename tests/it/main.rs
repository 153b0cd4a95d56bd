mod store_conformance;
mod store_group_commit;
mod support;
mod webhook_store;

mod api_bad_input;
mod api_booking;
mod api_concurrency;
mod api_events;
mod api_feed;
mod api_restart;
mod api_security;
mod api_webhooks;
mod audit_chain;
mod middleware;
mod middleware_hl7;
mod read_side;
mod server;
