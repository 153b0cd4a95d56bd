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

-- Stores a fan-out batch and moves the tenant's checkpoint from `expected`
-- to `to`, in one call. Returns the number of messages stored, or -1 (and
-- stores nothing) when the checkpoint was no longer at `expected`.
CREATE FUNCTION buktor_webhook_enqueue(
    tenant uuid, expected_tx bigint, expected_seq bigint, to_tx bigint, to_seq bigint,
    ids text[], endpoints uuid[], events uuid[], txs bigint[], seqs bigint[],
    keys text[], types text[], payloads text[]
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    stored integer;
    e uuid;
BEGIN
    -- Losing this commit in a crash is safe: the checkpoint is lost with the
    -- messages, and the fan-out writes them again with the same ids. Not
    -- waiting for the flush takes a WAL flush off every batch.
    SET LOCAL synchronous_commit = off;
    INSERT INTO webhook_fanout_checkpoints (tenant_id, position_tx, position_seq)
    VALUES (tenant, 0, 0) ON CONFLICT (tenant_id) DO NOTHING;
    UPDATE webhook_fanout_checkpoints
       SET position_tx = to_tx, position_seq = to_seq, updated_at = now()
     WHERE tenant_id = tenant AND position_tx = expected_tx AND position_seq = expected_seq;
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    IF coalesce(array_length(ids, 1), 0) = 0 THEN
        RETURN 0;
    END IF;
    PERFORM buktor_webhook_lock(endpoints);
    INSERT INTO webhook_messages (id, tenant_id, endpoint_id, event_id, position_tx,
                                  position_seq, ordering_key, event_type, payload, state)
    SELECT u.id, tenant, u.endpoint, u.event, u.tx, u.seq, u.key, u.type, u.payload, 'queued'
      FROM unnest(ids, endpoints, events, txs, seqs, keys, types, payloads)
           AS u(id, endpoint, event, tx, seq, key, type, payload)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS stored = ROW_COUNT;
    FOR e IN SELECT DISTINCT x FROM unnest(endpoints) x LOOP
        PERFORM buktor_webhook_promote(e, ARRAY(
            SELECT DISTINCT k FROM unnest(endpoints, keys) AS u(ep, k) WHERE ep = e));
    END LOOP;
    RETURN stored;
END $$;

-- Records a batch of attempts and applies their outcomes (delivered, retry,
-- dead-letter, endpoint-gone), in one call. A message whose lease `owner`
-- no longer holds only gets its attempt recorded. Returns the ids of the
-- messages it dead-lettered.
CREATE FUNCTION buktor_webhook_complete(
    owner text, ids text[], outcomes text[], retry_ms float8[], last_errors text[],
    endpoints uuid[], started timestamptz[], latencies integer[], codes integer[],
    errors text[], excerpts text[], disable boolean[]
) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    m record;
    applied boolean;
BEGIN
    -- Losing this commit in a crash only sends the messages again, with the
    -- same ids (at least once); waiting for the flush would cost one per batch.
    SET LOCAL synchronous_commit = off;
    PERFORM buktor_webhook_lock(endpoints);
    FOR i IN 1 .. coalesce(array_length(ids, 1), 0) LOOP
        UPDATE webhook_messages SET
            state = CASE outcomes[i]
                        WHEN 'delivered' THEN 'delivered'
                        WHEN 'dead-letter' THEN 'dead'
                        -- A replay may have queued it behind its key meanwhile.
                        ELSE CASE state WHEN 'queued' THEN 'queued' ELSE 'pending' END
                    END,
            attempts = attempts + 1,
            failures = failures + (outcomes[i] <> 'delivered')::integer,
            lease_owner = NULL,
            lease_until = NULL,
            next_attempt_at = now() + retry_ms[i] * interval '1 millisecond',
            delivered_at = CASE WHEN outcomes[i] = 'delivered' THEN now() ELSE delivered_at END,
            last_error = last_errors[i]
        WHERE id = ids[i] AND lease_owner = owner
        RETURNING tenant_id, endpoint_id, event_id, attempts, ordering_key INTO m;
        applied := FOUND;
        IF NOT applied THEN
            -- Our lease ran out and someone else has the message: keep the
            -- record of what we saw, change nothing else.
            SELECT tenant_id, endpoint_id, event_id, attempts + 1 AS attempts, ordering_key
              INTO m FROM webhook_messages WHERE id = ids[i];
            IF NOT FOUND THEN
                CONTINUE;
            END IF;
            RAISE WARNING 'webhook message % finished after its lease ended', ids[i];
        END IF;
        INSERT INTO webhook_attempts (tenant_id, message_id, endpoint_id, event_id, attempt,
                                      started_at, latency_ms, status_code, error,
                                      response_excerpt, outcome)
        VALUES (m.tenant_id, ids[i], m.endpoint_id, m.event_id, m.attempts, started[i],
                latencies[i], codes[i], errors[i], excerpts[i], outcomes[i]);
        CONTINUE WHEN NOT applied;
        IF outcomes[i] = 'delivered' THEN
            PERFORM buktor_webhook_promote(m.endpoint_id, ARRAY[m.ordering_key]);
        ELSIF outcomes[i] = 'dead-letter' THEN
            RETURN NEXT ids[i];
            IF disable[i] THEN
                UPDATE webhook_endpoints
                   SET enabled = false, disabled_reason = 'a message was dead-lettered',
                       updated_at = now()
                 WHERE id = m.endpoint_id AND enabled;
            END IF;
        ELSIF outcomes[i] = 'endpoint-gone' THEN
            UPDATE webhook_endpoints
               SET enabled = false, disabled_reason = 'the endpoint answered 410 Gone',
                   updated_at = now()
             WHERE id = m.endpoint_id AND enabled;
        END IF;
    END LOOP;
END $$;
