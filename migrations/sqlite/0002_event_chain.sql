-- The audit hash chain (see src/audit/mod.rs and "Audit" in README.md).
--
-- One row per sealed event: hash = SHA-256(prev_hash || canonical bytes of
-- the event), chained per tenant in seq order. Same logical schema as
-- migrations/postgres/0003_event_chain.sql; here tx = seq = the event's seq.
CREATE TABLE event_chain (
    tenant_id TEXT    NOT NULL,
    tx        INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    event_id  TEXT    NOT NULL,
    prev_hash BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    hash      BLOB    NOT NULL CHECK (length(hash) = 32),
    -- Informational only, not part of any hash.
    sealed_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (tenant_id, tx, seq)
) WITHOUT ROWID;

CREATE TRIGGER event_chain_no_update
    BEFORE UPDATE ON event_chain
BEGIN
    SELECT RAISE(ABORT, 'event_chain is append-only');
END;

CREATE TRIGGER event_chain_no_delete
    BEFORE DELETE ON event_chain
BEGIN
    SELECT RAISE(ABORT, 'event_chain is append-only');
END;
