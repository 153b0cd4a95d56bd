//! Read models built from Buktor's events.
//!
//! `slots` answers "which times can still be booked": it is computed from the
//! practitioner's schedule, the service and the calendar days, the same
//! states the write side decides over, so what it offers is what a booking
//! accepts.
pub mod slots;
