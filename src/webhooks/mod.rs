//! Outbound webhooks to HIS endpoints (integration 3 of the product).
//!
//! So far: signing per the Standard Webhooks specification, which both the
//! dispatcher and the legacy-HIS middleware build on.
pub mod signature;
