//! The audit trail: a tamper-evident hash chain over every tenant's events.
//!
//! Each event gets `hash = SHA-256(prev_hash || canonical_bytes(event))`,
//! chained per tenant in the global order that
//! [`EventStore::read_all`](crate::store::EventStore::read_all) returns; the
//! first event of a tenant chains to [`GENESIS`] (32 zero bytes). Changing,
//! removing or inserting an event after it was sealed changes a hash that
//! `buktor audit verify` recomputes from the events table.
//!
//! Why hashes are not computed inside the append: on PostgreSQL an event's
//! place in the global order, `(tx, seq)`, is only final once every older
//! transaction has ended (`read_all` returns nothing past the oldest running
//! one). So a [`sealer`] follows `read_all` after the fact and writes the
//! chain into its own append-only table, `event_chain`. Events are
//! unprotected between their commit and their seal, normally about a second.
//!
//! What a chain cannot catch by itself: someone who may write both tables
//! (a database superuser) can recompute every hash after the one they
//! changed. Against that an auditor keeps the head hash that `verify`
//! prints (or the last `hash` of an export) somewhere else and compares it
//! later: a rewritten past changes every later hash, the head included.
//!
//! - [`canonical_bytes`]: exactly what is hashed (also in README, "Audit").
//! - [`AuditLog`]: what a store backend provides for the chain.
//! - [`sealer`]: the background follower that extends the chain.
//! - [`verify`]: walks a chain and names its first broken link.
//! - [`export`]: JSON Lines that an auditor can re-hash outside Buktor.
use std::fmt;
use std::io::Write;

use async_trait::async_trait;
use buktor_domain::TenantId;
use chrono::SecondsFormat;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::store::{EventStore, Position, RecordedEvent, StoreError, StoreResult};

pub mod export;
pub mod sealer;
pub mod verify;

pub use export::{export, ExportFilter, ExportSummary};
pub use sealer::{seal_all, seal_tenant, spawn_sealer, SealerHandle};
pub use verify::{verify, Break, BrokenLink, TenantReport};

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Digest32(pub [u8; 32]);

/// What the first event of every tenant chains to.
pub const GENESIS: Digest32 = Digest32([0; 32]);

impl Digest32 {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// From stored bytes, which must be exactly 32.
    pub fn from_slice(bytes: &[u8]) -> StoreResult<Self> {
        <[u8; 32]>::try_from(bytes)
            .map(Digest32)
            .map_err(|_| StoreError::Corrupt(format!("a stored hash has {} bytes", bytes.len())))
    }
}

impl fmt::Display for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest32({})", self.to_hex())
    }
}

/// One row of `event_chain`: the seal of the event at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainLink {
    pub position: Position,
    pub event_id: Uuid,
    /// The previous link's `hash` ([`GENESIS`] for a tenant's first event).
    pub prev_hash: Digest32,
    pub hash: Digest32,
}

/// A token that this process is the one sealer of its database. Dropping
/// it gives the role up.
#[async_trait]
pub trait SealerLease: Send + Sync {
    /// Whether the lease is still held (on PostgreSQL: whether the
    /// connection that holds the advisory lock is still alive).
    async fn held(&self) -> bool;
}

/// What a store backend provides for the audit chain, besides its events.
///
/// Implemented at the end of `store/postgres.rs` and `store/sqlite.rs`.
#[async_trait]
pub trait AuditLog: EventStore {
    /// Every tenant that has at least one event, sorted.
    async fn event_tenants(&self) -> StoreResult<Vec<TenantId>>;

    /// The tenant's last link, if any: the sealer's checkpoint.
    async fn chain_head(&self, tenant: TenantId) -> StoreResult<Option<ChainLink>>;

    /// The tenant's links after `after`, in position order, at most `limit`.
    async fn chain_links(
        &self,
        tenant: TenantId,
        after: Position,
        limit: usize,
    ) -> StoreResult<Vec<ChainLink>>;

    /// The tenant's links at these positions, in position order; positions
    /// without a link are left out.
    async fn chain_links_at(
        &self,
        tenant: TenantId,
        positions: &[Position],
    ) -> StoreResult<Vec<ChainLink>>;

    /// Appends `links` (in position order, the first chaining to `head`) in
    /// one transaction, if the tenant's chain still ends at `head` (`None`:
    /// is still empty). Returns `false`, having written nothing, when
    /// another sealer extended the chain first.
    async fn append_links(
        &self,
        tenant: TenantId,
        head: Option<Position>,
        links: &[ChainLink],
    ) -> StoreResult<bool>;

    /// Tries to become the one active sealer of this database; `None` if
    /// another process is. Sealing stays correct without the lease
    /// ([`AuditLog::append_links`] is safe against races); the lease only
    /// keeps instances from doing the same work over and over.
    async fn try_lead_sealing(&self) -> StoreResult<Option<Box<dyn SealerLease>>>;
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the export")]
    Write(#[source] std::io::Error),
}

/// The bytes of an event that its hash covers.
///
/// A JSON object, UTF-8, with no whitespace, whose members are, in this
/// (sorted) order:
///
/// | key | value |
/// |---|---|
/// | `event_id` | lowercase hyphenated UUID string |
/// | `event_type` | string |
/// | `metadata` | the stored metadata JSON |
/// | `payload` | the stored payload JSON, as stored (not upcast) |
/// | `position` | string `"TX.SEQ"` (decimal) |
/// | `recorded_at` | string, RFC 3339 UTC with exactly six fractional digits and `Z`, e.g. `"2026-03-01T09:30:00.120000Z"` |
/// | `schema_version` | integer |
/// | `stream_id` | string |
/// | `tenant` | lowercase hyphenated UUID string |
/// | `version` | integer |
///
/// Canonical form, at every depth: object members sorted by key in Unicode
/// code point order (which is UTF-8 byte order); no whitespace; strings
/// escape only `"`, `\` and control characters (`\b \f \n \r \t`, the rest
/// as `\u00xx` with lowercase hex), everything else literal UTF-8; integers
/// in plain decimal. This is what Python's `json.dumps(obj, sort_keys=True,
/// separators=(",", ":"), ensure_ascii=False)` writes. Buktor's payloads have
/// no fractional numbers; one would be written as serde_json writes an
/// `f64` (shortest round-trip form).
///
/// Computed from the event as read back from the store, so both backends
/// give the same bytes for the same event: both keep times to the
/// microsecond, and JSON is compared as values, not as stored text (key
/// order and spacing of the stored text do not matter).
///
/// The member order is sorted here by hand rather than trusting
/// `serde_json::Map`'s: with serde_json's `preserve_order` feature (which any
/// dependency could switch on) a map keeps insertion order, and the hash
/// would silently change.
pub fn canonical_bytes(event: &RecordedEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(&canonical_value(event), &mut out);
    out
}

/// The event as the JSON object [`canonical_bytes`] serializes; the export
/// writes the same members (plus `prev_hash` and `hash`).
pub fn canonical_value(event: &RecordedEvent) -> serde_json::Value {
    serde_json::json!({
        "event_id": event.event_id.hyphenated().to_string(),
        "event_type": event.event_type,
        "metadata": event.metadata,
        "payload": event.payload,
        "position": event.position.to_string(),
        "recorded_at": event.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        "schema_version": event.schema_version,
        "stream_id": event.stream_id,
        "tenant": event.tenant.as_uuid().hyphenated().to_string(),
        "version": event.version,
    })
}

/// `SHA-256(prev || canonical_bytes(event))`.
pub fn link_hash(prev: &Digest32, event: &RecordedEvent) -> Digest32 {
    let mut hasher = Sha256::new();
    hasher.update(prev.0);
    hasher.update(canonical_bytes(event));
    Digest32(hasher.finalize().into())
}

/// The link that seals `event` after `prev`.
pub fn seal(prev: &Digest32, event: &RecordedEvent) -> ChainLink {
    ChainLink {
        position: event.position,
        event_id: event.event_id,
        prev_hash: *prev,
        hash: link_hash(prev, event),
    }
}

fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        // serde_json writes scalars and strings exactly as documented above;
        // writing into a Vec cannot fail.
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {
            let _ = serde_json::to_writer(&mut *out, value);
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            let mut members: Vec<(&String, &Value)> = members.iter().collect();
            // `str`'s order is byte order, which for UTF-8 is code point order.
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut *out, key);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
    }
}

/// Writes one JSON value and a newline.
fn write_line(out: &mut dyn Write, value: &serde_json::Value) -> Result<(), AuditError> {
    serde_json::to_writer(&mut *out, value).map_err(|e| AuditError::Write(e.into()))?;
    out.write_all(b"\n").map_err(AuditError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    fn fixed_event() -> RecordedEvent {
        RecordedEvent {
            tenant: TenantId::from_uuid(
                Uuid::parse_str("0190a5f1-7c2e-7d4a-9b1e-3f2a1c0d4e5f").unwrap(),
            ),
            stream_id: "appointment-0190a5f1-0000-7000-8000-000000000001".into(),
            version: 1,
            position: Position { tx: 4711, seq: 42 },
            event_id: Uuid::parse_str("0190a5f1-1111-7222-8333-444455556666").unwrap(),
            event_type: "AppointmentBooked".into(),
            schema_version: 2,
            // Keys out of order, nested, non-ASCII, a quote and a control
            // character: everything the canonical form has a rule for.
            payload: json!({
                "start": "2026-03-02T08:00:00Z",
                "patient": {"name": "Zoë \"Z\" Ünal", "his_patient_id": "P-1001", "phone": null},
                "note": "line1\nline2\u{1}",
                "calendar_day": "2026-03-02",
                "tags": [3, true, {"b": 1, "a": 2}],
            }),
            metadata: json!({"actor": {"role": "staff", "id": "k1"}, "source": "graphql"}),
            recorded_at: Utc.with_ymd_and_hms(2026, 3, 1, 9, 30, 0).unwrap()
                + chrono::Duration::microseconds(120_000),
        }
    }

    /// The canonical form is a contract with auditors' own tools: if this
    /// test fails, old hashes no longer verify. Do not update the strings;
    /// fix the code.
    #[test]
    fn canonical_bytes_of_a_fixed_event_do_not_drift() {
        let event = fixed_event();
        let expected = concat!(
            r#"{"event_id":"0190a5f1-1111-7222-8333-444455556666","#,
            r#""event_type":"AppointmentBooked","#,
            r#""metadata":{"actor":{"id":"k1","role":"staff"},"source":"graphql"},"#,
            r#""payload":{"calendar_day":"2026-03-02","note":"line1\nline2\u0001","#,
            r#""patient":{"his_patient_id":"P-1001","name":"Zoë \"Z\" Ünal","phone":null},"#,
            r#""start":"2026-03-02T08:00:00Z","tags":[3,true,{"a":2,"b":1}]},"#,
            r#""position":"4711.42","recorded_at":"2026-03-01T09:30:00.120000Z","#,
            r#""schema_version":2,"#,
            r#""stream_id":"appointment-0190a5f1-0000-7000-8000-000000000001","#,
            r#""tenant":"0190a5f1-7c2e-7d4a-9b1e-3f2a1c0d4e5f","version":1}"#,
        );
        assert_eq!(
            String::from_utf8(canonical_bytes(&event)).unwrap(),
            expected
        );
        assert_eq!(
            link_hash(&GENESIS, &event).to_hex(),
            GOLDEN_GENESIS_HASH,
            "the hash of the fixed event after the genesis changed"
        );
        let second = link_hash(&link_hash(&GENESIS, &event), &event);
        assert_eq!(second.to_hex(), GOLDEN_SECOND_HASH);
    }

    // Computed independently with Python's hashlib and `json.dumps(obj,
    // sort_keys=True, separators=(",", ":"), ensure_ascii=False)`, the
    // recipe in README.
    const GOLDEN_GENESIS_HASH: &str =
        "55ac4b19194a58ec0501d208dd3e7df41e98c6d1719a93953df70ab8ee864aa0";
    const GOLDEN_SECOND_HASH: &str =
        "6917520a4f9966714b12263e762f8a66c234cd142fa8e75fedfb32074ee9ed47";

    #[test]
    fn whole_seconds_still_get_six_fractional_digits() {
        let mut event = fixed_event();
        event.recorded_at = Utc.with_ymd_and_hms(2026, 3, 1, 9, 30, 0).unwrap();
        let text = String::from_utf8(canonical_bytes(&event)).unwrap();
        assert!(text.contains(r#""recorded_at":"2026-03-01T09:30:00.000000Z""#));
    }

    #[test]
    fn stored_key_order_does_not_matter() {
        let a = fixed_event();
        let mut b = fixed_event();
        // The same values parsed from text with other key orders.
        b.payload = serde_json::from_str(&serde_json::to_string(&a.payload).unwrap()).unwrap();
        b.metadata =
            serde_json::from_str(r#"{"source":"graphql","actor":{"role":"staff","id":"k1"}}"#)
                .unwrap();
        assert_eq!(canonical_bytes(&a), canonical_bytes(&b));
    }

    #[test]
    fn any_change_changes_the_hash() {
        let event = fixed_event();
        let base = link_hash(&GENESIS, &event);
        let mut changed = event.clone();
        changed.payload["patient"]["his_patient_id"] = json!("P-1002");
        assert_ne!(link_hash(&GENESIS, &changed), base);
        let mut moved = event.clone();
        moved.position.seq += 1;
        assert_ne!(link_hash(&GENESIS, &moved), base);
        assert_ne!(link_hash(&Digest32([1; 32]), &event), base);
    }
}
