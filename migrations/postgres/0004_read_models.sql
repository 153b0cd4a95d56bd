-- Read models: documents built by the projections from the event store.
--
-- A projection's documents belong to a generation. Queries read the live
-- generation; a rebuild fills a new one beside it and then swaps which one is
-- live in one transaction, so readers never see a half-built read model.
-- Each generation keeps one checkpoint per tenant, moved in the same
-- transaction as the documents it covers.

CREATE TABLE projection_generations (
    projection text        NOT NULL,
    generation bigint      NOT NULL,
    -- live: served to queries and followed by the runner; building: being
    -- filled by a rebuild; scratch: filled by `verify`, then dropped.
    status     text        NOT NULL CHECK (status IN ('live', 'building', 'scratch')),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT projection_generations_pkey PRIMARY KEY (projection, generation)
);

CREATE UNIQUE INDEX projection_generations_one_live
    ON projection_generations (projection) WHERE status = 'live';

CREATE TABLE projection_checkpoints (
    projection   text        NOT NULL,
    generation   bigint      NOT NULL,
    tenant_id    uuid        NOT NULL,
    position_tx  bigint      NOT NULL,
    position_seq bigint      NOT NULL,
    events       bigint      NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT projection_checkpoints_pkey PRIMARY KEY (projection, generation, tenant_id),
    CONSTRAINT projection_checkpoints_generation_fkey FOREIGN KEY (projection, generation)
        REFERENCES projection_generations (projection, generation) ON DELETE CASCADE
);

CREATE TABLE projection_docs (
    projection text   NOT NULL,
    generation bigint NOT NULL,
    tenant_id  uuid   NOT NULL,
    key        text   COLLATE "C" NOT NULL,
    index_key  text   COLLATE "C",
    -- JSON as the server serialized it (fields in a fixed order), kept as
    -- text: documents are only ever read whole, never queried inside, and
    -- text equality is what `verify` compares.
    doc        text   NOT NULL,
    CONSTRAINT projection_docs_pkey PRIMARY KEY (projection, generation, tenant_id, key)
);

CREATE INDEX projection_docs_index_idx
    ON projection_docs (projection, generation, tenant_id, index_key)
    WHERE index_key IS NOT NULL;
