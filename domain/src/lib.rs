//! Buktor's domain: what a hospital's appointments, practitioners, services
//! and schedules may do, decided by pure functions.
//!
//! Layout: `ids`, `values` and `metadata` are shared vocabulary; each
//! aggregate has its own module with its events and the rules that produce
//! them (deciding returns events, `apply` only folds them). `booking` holds
//! the decisions that span aggregates. Nothing here reads a clock or does
//! I/O: time comes in as an argument, so a replay decides as the original did.
pub mod aggregate;
pub mod appointment;
pub mod booking;
pub mod calendar;
pub mod embedding;
pub mod error;
pub mod his;
pub mod ids;
pub mod metadata;
pub mod patient;
pub mod practitioner;
pub mod schedule;
pub mod service;
pub mod time;
pub mod values;

pub use aggregate::{decode, encode, Aggregate, DecodeError, DomainEvent, EncodedEvent};
pub use error::{DomainError, DomainResult};
pub use ids::*;
pub use metadata::*;

#[cfg(test)]
mod tests;
