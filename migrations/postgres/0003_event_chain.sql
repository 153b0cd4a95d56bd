-- The audit hash chain (see src/audit/mod.rs and "Audit" in README.md).
--
-- One row per sealed event: hash = SHA-256(prev_hash || canonical bytes of
-- the event), chained per tenant in the global order (tx, seq) that
-- read_all returns. The sealer writes rows after the fact, because on
-- PostgreSQL an event's place in the global order is only final once every
-- older transaction has ended; the last row of a tenant is its checkpoint.
--
-- The primary key is what keeps two racing sealers from forking the chain:
-- both would insert the same positions, so the second one fails and rolls
-- back (the sealer also compares the chain's head inside its transaction).
CREATE TABLE event_chain (
    tenant_id uuid        NOT NULL,
    tx        bigint      NOT NULL,
    seq       bigint      NOT NULL,
    event_id  uuid        NOT NULL,
    prev_hash bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash      bytea       NOT NULL CHECK (octet_length(hash) = 32),
    -- Informational only, not part of any hash.
    sealed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_chain_pkey PRIMARY KEY (tenant_id, tx, seq)
);

-- Append-only, like events. A generic function (the one in 0001 names the
-- events table in its message).
CREATE FUNCTION buktor_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER event_chain_no_update_or_delete
    BEFORE UPDATE OR DELETE ON event_chain
    FOR EACH ROW EXECUTE FUNCTION buktor_append_only();

CREATE TRIGGER event_chain_no_truncate
    BEFORE TRUNCATE ON event_chain
    FOR EACH STATEMENT EXECUTE FUNCTION buktor_append_only();
