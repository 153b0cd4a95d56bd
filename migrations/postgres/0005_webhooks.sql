-- Push subscriptions: endpoints, the outbox of messages owed to them, and
-- every delivery attempt. See src/store/webhooks.rs for a message's states.

CREATE TABLE webhook_endpoints (
    id                     uuid        PRIMARY KEY,
    tenant_id              uuid        NOT NULL REFERENCES tenants (id),
    url                    text        NOT NULL,
    description            text        NOT NULL DEFAULT '',
    event_types            text[]      NOT NULL DEFAULT '{}',
    practitioner_ids       uuid[]      NOT NULL DEFAULT '{}',
    departments            text[]      NOT NULL DEFAULT '{}',
    enabled                boolean     NOT NULL,
    rate_limit_per_second  integer     CHECK (rate_limit_per_second > 0),
    max_attempts           integer     CHECK (max_attempts > 0),
    disable_on_dead_letter boolean     NOT NULL DEFAULT false,
    -- The signing keys must be readable to sign with: they are as sensitive
    -- as the database credentials and never leave the server but once.
    secret                 text        NOT NULL,
    previous_secret        text,
    previous_secret_until  timestamptz,
    disabled_reason        text,
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL
);

CREATE INDEX webhook_endpoints_by_tenant ON webhook_endpoints (tenant_id, created_at);

-- How far each tenant's fan-out has read the global order.
CREATE TABLE webhook_fanout_checkpoints (
    tenant_id    uuid        PRIMARY KEY,
    position_tx  bigint      NOT NULL,
    position_seq bigint      NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_messages (
    id              text        PRIMARY KEY,
    tenant_id       uuid        NOT NULL,
    endpoint_id     uuid        NOT NULL REFERENCES webhook_endpoints (id),
    event_id        uuid        NOT NULL,
    position_tx     bigint      NOT NULL,
    position_seq    bigint      NOT NULL,
    ordering_key    text        NOT NULL,
    event_type      text        NOT NULL,
    payload         text        NOT NULL,
    state           text        NOT NULL CHECK (state IN ('queued', 'pending', 'delivered', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    failures        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_owner     text,
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text,
    CONSTRAINT webhook_messages_once UNIQUE (endpoint_id, event_id)
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
    seq              bigserial   PRIMARY KEY,
    tenant_id        uuid        NOT NULL,
    message_id       text        NOT NULL REFERENCES webhook_messages (id),
    endpoint_id      uuid        NOT NULL,
    event_id         uuid        NOT NULL,
    attempt          integer     NOT NULL,
    started_at       timestamptz NOT NULL,
    latency_ms       integer     NOT NULL,
    status_code      integer,
    error            text,
    response_excerpt text,
    outcome          text        NOT NULL
);

CREATE INDEX webhook_attempts_by_endpoint ON webhook_attempts (endpoint_id, seq);
CREATE INDEX webhook_attempts_by_message ON webhook_attempts (message_id, seq);
CREATE INDEX webhook_attempts_by_event ON webhook_attempts (tenant_id, event_id, seq);

-- Serializes, per endpoint, everything that queues or promotes its messages.
CREATE FUNCTION buktor_webhook_lock(endpoints uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    e uuid;
BEGIN
    -- One order for every caller, so two callers never wait on each other in a cycle.
    FOREACH e IN ARRAY ARRAY(SELECT DISTINCT x FROM unnest(endpoints) x ORDER BY x) LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended('buktor-webhook:' || e::text, 0));
    END LOOP;
END $$;

-- Makes the first undelivered message of each given key due, if it is queued.
CREATE FUNCTION buktor_webhook_promote(endpoint uuid, keys text[]) RETURNS void
LANGUAGE sql AS $$
    UPDATE webhook_messages m
       SET state = 'pending', next_attempt_at = now(), failures = 0
      FROM (SELECT DISTINCT ON (ordering_key) id, state
              FROM webhook_messages
             WHERE endpoint_id = endpoint AND ordering_key = ANY (keys) AND state <> 'delivered'
             ORDER BY ordering_key, position_tx, position_seq) head
     WHERE m.id = head.id AND head.state = 'queued';
$$;
