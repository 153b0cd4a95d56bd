-- The event store, idempotency claims, tenants and API keys.
--
-- Every key and index leads with tenant_id so the schema can later be
-- distributed (sharded) by tenant without changing a constraint.

CREATE TABLE events (
    tenant_id      uuid        NOT NULL,
    -- Byte order ("C"): ids that share a prefix are contiguous in the primary
    -- key, so listing them by prefix is an index range, and the order matches
    -- the SQLite backend's.
    stream_id      text        COLLATE "C" NOT NULL,
    version        bigint      NOT NULL CHECK (version > 0),
    -- Global order is (tx_id, seq), not seq alone: a transaction that took a
    -- lower seq can commit after one that took a higher one. Readers only
    -- read rows whose transaction is older than the oldest running one.
    seq            bigserial   NOT NULL,
    tx_id          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id       uuid        NOT NULL,
    event_type     text        NOT NULL,
    schema_version integer     NOT NULL,
    payload        jsonb       NOT NULL,
    metadata       jsonb       NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    -- The optimistic-concurrency check: two writers cannot both add version N.
    CONSTRAINT events_pkey PRIMARY KEY (tenant_id, stream_id, version),
    CONSTRAINT events_event_id_key UNIQUE (tenant_id, event_id)
);

-- The global reader: WHERE tenant_id = $1 AND (tx_id, seq) > (...) ORDER BY tx_id, seq.
CREATE INDEX events_global_order_idx ON events (tenant_id, tx_id, seq);

-- Append-only: rows are never changed or removed, not even by the server.
CREATE FUNCTION events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % on events is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();

-- A command applied under an idempotency key, written in the same statement
-- as its events.
CREATE TABLE idempotency_keys (
    tenant_id    uuid        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    response     jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (tenant_id, key)
);

CREATE TABLE tenants (
    id         uuid        NOT NULL,
    name       text        NOT NULL,
    time_zone  text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenants_pkey PRIMARY KEY (id)
);

CREATE TABLE api_keys (
    id          uuid        NOT NULL,
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    name        text        NOT NULL,
    role        text        NOT NULL,
    secret_hash bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CONSTRAINT api_keys_pkey PRIMARY KEY (id)
);

CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, id);
