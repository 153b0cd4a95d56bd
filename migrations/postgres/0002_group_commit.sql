-- Group commit: the appends of many commands in one transaction and one
-- round trip (see "Group commit" in src/store/postgres.rs).
--
-- buktor_append_batch(requests...) writes a batch of append requests. Each
-- request gets exactly what the single-request append statement would give
-- it (APPEND_SQL in src/store/postgres.rs): its events and claim are all
-- written or none is, and one request's refusal leaves the others alone.
--
-- Input: flat arrays.
--   per request: p_tenants, p_stream_counts, p_event_counts and the claim
--     (p_claim_keys NULL when the request has none);
--   per stream, in request order: p_stream_reqs (1-based request index),
--     p_stream_ids, p_expected;
--   per event, in request order: p_event_reqs and the event's columns, the
--     version already computed (expected + 1, + 2, ...).
--
-- Output: one row per request, in request order.
--   r_status 0: written; r_seqs are its events' seq in event order, r_tx the
--     writing transaction, r_at its recorded_at.
--   r_status 1: a stream is not at an expected version ahead of it (the
--     first such stream in r_stream, the expectation in r_version); nothing
--     written.
--   r_status 2: a unique violation (r_constraint, r_detail as the error
--     would report them); nothing written.
--   r_status 3: another error (r_detail: SQLSTATE and message); nothing
--     written. The caller runs that request again on its own to get the
--     error the single statement gives.
--
-- How:
--   1. If p_together (the caller checked that no two requests share a
--      stream), all requests in one statement inside one subtransaction:
--      the common case, conflict-free, costs a few statements per batch.
--   2. If that fails (a unique violation, a deadlock, bad data), or when
--      requests share streams, each request in a subtransaction of its own,
--      in order: a later request sees an earlier one's events.
--
-- Must run in a REPEATABLE READ (or SERIALIZABLE) transaction. All its
-- statements then read one snapshot, taken before the transaction gets its
-- id, so every event a request depends on (version N when it appends N+1)
-- was written by a transaction with a smaller id, and the (tx_id, seq)
-- order stays the commit order per stream. In READ COMMITTED a later
-- statement could see an event committed by a transaction with a larger id
-- and append after it with this transaction's smaller one.
--
-- Subtransactions: at most one per request plus one; those that abort give
-- their id back. Keep batches at 64 requests or fewer: more than 64
-- committed subtransactions in one transaction overflow its subtransaction
-- cache and slow every session's snapshots on the cluster.
CREATE FUNCTION buktor_append_batch(
    p_together        boolean,
    p_tenants         uuid[],
    p_stream_counts   integer[],
    p_event_counts    integer[],
    p_claim_keys      text[],
    p_claim_hashes    text[],
    p_claim_responses jsonb[],
    p_stream_reqs     integer[],
    p_stream_ids      text[],
    p_expected        bigint[],
    p_event_reqs      integer[],
    p_event_streams   text[],
    p_versions        bigint[],
    p_event_ids       uuid[],
    p_event_types     text[],
    p_schema_versions integer[],
    p_payloads        jsonb[],
    p_metadata        jsonb[]
) RETURNS TABLE (
    r_req        integer,
    r_status     smallint,
    r_seqs       bigint[],
    r_tx         bigint,
    r_at         timestamptz,
    r_stream     text,
    r_version    bigint,
    r_constraint text,
    r_detail     text
)
LANGUAGE plpgsql
AS $$
DECLARE
    v_n           integer := coalesce(array_length(p_tenants, 1), 0);
    v_done        boolean := false;
    v_reqs        integer[];
    v_seqs        bigint[];
    v_behind_reqs integer[];
    v_behind_ids  text[];
    v_behind_vers bigint[];
    v_s0          integer := 1;
    v_e0          integer := 1;
    v_s1          integer;
    v_e1          integer;
    v_state       text;
    v_message     text;
BEGIN
    IF current_setting('transaction_isolation') NOT IN ('repeatable read', 'serializable') THEN
        RAISE EXCEPTION 'buktor_append_batch needs a REPEATABLE READ transaction, not %',
            current_setting('transaction_isolation')
            USING ERRCODE = 'invalid_transaction_state';
    END IF;

    -- 1. Everything in one statement.
    IF p_together THEN
        BEGIN
            WITH behind AS (
                SELECT DISTINCT ON (s.req) s.req, s.stream_id, s.expected
                FROM unnest(p_stream_reqs, p_stream_ids, p_expected)
                    WITH ORDINALITY AS s(req, stream_id, expected, ord)
                WHERE s.expected > 0
                  AND NOT EXISTS (
                      SELECT 1 FROM events e
                      WHERE e.tenant_id = p_tenants[s.req]
                        AND e.stream_id = s.stream_id
                        AND e.version = s.expected
                      -- A primary-key probe per stream, never an anti-join over the tenant.
                      OFFSET 0
                  )
                ORDER BY s.req, s.ord
            ),
            input AS MATERIALIZED (
                SELECT u.req, u.ord, u.stream_id, u.version, u.event_id, u.event_type,
                       u.schema_version, u.payload, u.metadata,
                       nextval('events_seq_seq'::regclass) AS seq
                FROM unnest(p_event_reqs, p_event_streams, p_versions, p_event_ids,
                            p_event_types, p_schema_versions, p_payloads, p_metadata)
                    WITH ORDINALITY AS u(req, stream_id, version, event_id, event_type,
                                         schema_version, payload, metadata, ord)
                WHERE NOT EXISTS (SELECT 1 FROM behind b WHERE b.req = u.req)
                ORDER BY u.ord
            ),
            inserted AS (
                INSERT INTO events (tenant_id, stream_id, version, seq, event_id, event_type,
                                    schema_version, payload, metadata)
                SELECT p_tenants[i.req], i.stream_id, i.version, i.seq, i.event_id, i.event_type,
                       i.schema_version, i.payload, i.metadata
                FROM input i
                ORDER BY i.ord
            ),
            claimed AS (
                INSERT INTO idempotency_keys (tenant_id, key, request_hash, response)
                SELECT p_tenants[c.req], c.key, c.request_hash, c.response
                FROM unnest(p_claim_keys, p_claim_hashes, p_claim_responses)
                    WITH ORDINALITY AS c(key, request_hash, response, req)
                WHERE c.key IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM behind b WHERE b.req = c.req)
            )
            SELECT (SELECT array_agg(i.req ORDER BY i.ord) FROM input i),
                   (SELECT array_agg(i.seq ORDER BY i.ord) FROM input i),
                   (SELECT array_agg(b.req ORDER BY b.req) FROM behind b),
                   (SELECT array_agg(b.stream_id ORDER BY b.req) FROM behind b),
                   (SELECT array_agg(b.expected ORDER BY b.req) FROM behind b)
            INTO v_reqs, v_seqs, v_behind_reqs, v_behind_ids, v_behind_vers;
            v_done := true;
        EXCEPTION WHEN OTHERS THEN
            -- Nothing of the batch was written: one request at a time below.
            v_done := false;
        END;
        IF v_done THEN
            RETURN QUERY
            SELECT r.req,
                   CASE WHEN b.req IS NULL THEN 0 ELSE 1 END::smallint,
                   w.seqs,
                   CASE WHEN b.req IS NULL THEN pg_current_xact_id_if_assigned()::text::bigint END,
                   CASE WHEN b.req IS NULL THEN now() END,
                   b.stream_id,
                   b.expected,
                   NULL::text,
                   NULL::text
            FROM generate_series(1, v_n) AS r(req)
            LEFT JOIN (
                SELECT x.req, array_agg(x.seq ORDER BY x.ord) AS seqs
                FROM unnest(v_reqs, v_seqs) WITH ORDINALITY AS x(req, seq, ord)
                GROUP BY x.req
            ) w ON w.req = r.req
            LEFT JOIN unnest(v_behind_reqs, v_behind_ids, v_behind_vers) AS b(req, stream_id, expected)
                ON b.req = r.req
            ORDER BY r.req;
            RETURN;
        END IF;
    END IF;

    -- 2. One request at a time, each in a subtransaction.
    FOR v_i IN 1..v_n LOOP
        v_s1 := v_s0 + p_stream_counts[v_i];
        v_e1 := v_e0 + p_event_counts[v_i];
        r_req := v_i;
        r_seqs := NULL;
        r_tx := NULL;
        r_at := NULL;
        r_stream := NULL;
        r_version := NULL;
        r_constraint := NULL;
        r_detail := NULL;

        SELECT s.stream_id, s.expected INTO r_stream, r_version
        FROM unnest(p_stream_ids[v_s0:v_s1 - 1], p_expected[v_s0:v_s1 - 1])
            WITH ORDINALITY AS s(stream_id, expected, ord)
        WHERE s.expected > 0
          AND NOT EXISTS (
              SELECT 1 FROM events e
              WHERE e.tenant_id = p_tenants[v_i]
                AND e.stream_id = s.stream_id
                AND e.version = s.expected
              -- A primary-key probe per stream, never an anti-join over the tenant.
              OFFSET 0
          )
        ORDER BY s.ord
        LIMIT 1;

        IF FOUND THEN
            r_status := 1;
        ELSE
            BEGIN
                -- Events first, then the claim: the single statement reports
                -- a version conflict before a taken key.
                IF v_e1 > v_e0 THEN
                    WITH input AS MATERIALIZED (
                        SELECT u.ord, u.stream_id, u.version, u.event_id, u.event_type,
                               u.schema_version, u.payload, u.metadata,
                               nextval('events_seq_seq'::regclass) AS seq
                        FROM unnest(p_event_streams[v_e0:v_e1 - 1], p_versions[v_e0:v_e1 - 1],
                                    p_event_ids[v_e0:v_e1 - 1], p_event_types[v_e0:v_e1 - 1],
                                    p_schema_versions[v_e0:v_e1 - 1], p_payloads[v_e0:v_e1 - 1],
                                    p_metadata[v_e0:v_e1 - 1])
                            WITH ORDINALITY AS u(stream_id, version, event_id, event_type,
                                                 schema_version, payload, metadata, ord)
                        ORDER BY u.ord
                    ),
                    inserted AS (
                        INSERT INTO events (tenant_id, stream_id, version, seq, event_id,
                                            event_type, schema_version, payload, metadata)
                        SELECT p_tenants[v_i], i.stream_id, i.version, i.seq, i.event_id,
                               i.event_type, i.schema_version, i.payload, i.metadata
                        FROM input i
                        ORDER BY i.ord
                    )
                    SELECT array_agg(i.seq ORDER BY i.ord) INTO r_seqs FROM input i;
                END IF;
                IF p_claim_keys[v_i] IS NOT NULL THEN
                    INSERT INTO idempotency_keys (tenant_id, key, request_hash, response)
                    VALUES (p_tenants[v_i], p_claim_keys[v_i], p_claim_hashes[v_i],
                            p_claim_responses[v_i]);
                END IF;
                r_status := 0;
                r_tx := pg_current_xact_id()::text::bigint;
                r_at := now();
            EXCEPTION
                WHEN unique_violation THEN
                    GET STACKED DIAGNOSTICS r_constraint = CONSTRAINT_NAME,
                                            r_detail = PG_EXCEPTION_DETAIL;
                    r_status := 2;
                    r_seqs := NULL;
                    r_tx := NULL;
                    r_at := NULL;
                WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE,
                                            v_message = MESSAGE_TEXT;
                    r_status := 3;
                    r_detail := v_state || ': ' || v_message;
                    r_seqs := NULL;
                    r_tx := NULL;
                    r_at := NULL;
            END;
        END IF;
        RETURN NEXT;
        v_s0 := v_s1;
        v_e0 := v_e1;
    END LOOP;
END;
$$;
