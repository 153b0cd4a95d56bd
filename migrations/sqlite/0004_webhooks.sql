-- Push subscriptions (SQLite): endpoints, the outbox of messages owed to
-- them, and every delivery attempt. The same logical schema as
-- migrations/postgres/0005_webhooks.sql; see src/store/webhooks.rs for a
-- message's states.
--
-- Arrays are JSON text. Times are RFC 3339 UTC text with exactly six
-- fractional digits, written by the store (never by a column default), so
-- that comparing them as text compares them in time: claims and replays
-- depend on it.

CREATE TABLE webhook_endpoints (
    id                     TEXT    NOT NULL PRIMARY KEY,
    tenant_id              TEXT    NOT NULL REFERENCES tenants (id),
    url                    TEXT    NOT NULL,
    description            TEXT    NOT NULL DEFAULT '',
    event_types            TEXT    NOT NULL DEFAULT '[]',
    practitioner_ids       TEXT    NOT NULL DEFAULT '[]',
    departments            TEXT    NOT NULL DEFAULT '[]',
    enabled                INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    rate_limit_per_second  INTEGER CHECK (rate_limit_per_second > 0),
    max_attempts           INTEGER CHECK (max_attempts > 0),
    disable_on_dead_letter INTEGER NOT NULL DEFAULT 0 CHECK (disable_on_dead_letter IN (0, 1)),
    -- The signing keys must be readable to sign with: they are as sensitive
    -- as the database file and never leave the server but once.
    secret                 TEXT    NOT NULL,
    previous_secret        TEXT,
    previous_secret_until  TEXT,
    disabled_reason        TEXT,
    created_at             TEXT    NOT NULL,
    updated_at             TEXT    NOT NULL
) WITHOUT ROWID;

CREATE INDEX webhook_endpoints_by_tenant ON webhook_endpoints (tenant_id, created_at);

-- How far each tenant's fan-out has read the global order.
CREATE TABLE webhook_fanout_checkpoints (
    tenant_id    TEXT    NOT NULL PRIMARY KEY,
    position_tx  INTEGER NOT NULL,
    position_seq INTEGER NOT NULL,
    updated_at   TEXT    NOT NULL
) WITHOUT ROWID;

CREATE TABLE webhook_messages (
    id              TEXT    NOT NULL PRIMARY KEY,
    tenant_id       TEXT    NOT NULL,
    endpoint_id     TEXT    NOT NULL REFERENCES webhook_endpoints (id),
    event_id        TEXT    NOT NULL,
    position_tx     INTEGER NOT NULL,
    position_seq    INTEGER NOT NULL,
    ordering_key    TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('queued', 'pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    failures        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL,
    lease_owner     TEXT,
    lease_until     TEXT,
    created_at      TEXT    NOT NULL,
    delivered_at    TEXT,
    last_error      TEXT,
    UNIQUE (endpoint_id, event_id)
);

-- What a claim scans: due messages per endpoint.
CREATE INDEX webhook_messages_due ON webhook_messages (endpoint_id, next_attempt_at)
    WHERE state = 'pending';
-- The head of each appointment's queue at an endpoint.
CREATE INDEX webhook_messages_undelivered ON webhook_messages
    (endpoint_id, ordering_key, position_tx, position_seq) WHERE state <> 'delivered';
CREATE INDEX webhook_messages_by_position ON webhook_messages (endpoint_id, position_tx, position_seq);
CREATE INDEX webhook_messages_by_event ON webhook_messages (tenant_id, event_id);
CREATE INDEX webhook_messages_by_tenant ON webhook_messages (tenant_id, position_tx, position_seq, endpoint_id);

CREATE TABLE webhook_attempts (
    -- AUTOINCREMENT: a seq is never reused, so it stays a paging cursor.
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id        TEXT    NOT NULL,
    message_id       TEXT    NOT NULL REFERENCES webhook_messages (id),
    endpoint_id      TEXT    NOT NULL,
    event_id         TEXT    NOT NULL,
    attempt          INTEGER NOT NULL,
    started_at       TEXT    NOT NULL,
    latency_ms       INTEGER NOT NULL,
    status_code      INTEGER,
    error            TEXT,
    response_excerpt TEXT,
    outcome          TEXT    NOT NULL
);

CREATE INDEX webhook_attempts_by_endpoint ON webhook_attempts (endpoint_id, seq);
CREATE INDEX webhook_attempts_by_message ON webhook_attempts (message_id, seq);
CREATE INDEX webhook_attempts_by_event ON webhook_attempts (tenant_id, event_id, seq);
