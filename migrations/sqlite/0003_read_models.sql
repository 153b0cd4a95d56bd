-- Read models (SQLite): the same logical schema as migrations/postgres.
-- Documents are JSON text, written by serde in a fixed field order.

CREATE TABLE projection_generations (
    projection TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('live', 'building', 'scratch')),
    created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (projection, generation)
) WITHOUT ROWID;

CREATE UNIQUE INDEX projection_generations_one_live
    ON projection_generations (projection) WHERE status = 'live';

CREATE TABLE projection_checkpoints (
    projection   TEXT    NOT NULL,
    generation   INTEGER NOT NULL,
    tenant_id    TEXT    NOT NULL,
    position_tx  INTEGER NOT NULL,
    position_seq INTEGER NOT NULL,
    events       INTEGER NOT NULL DEFAULT 0,
    updated_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (projection, generation, tenant_id)
) WITHOUT ROWID;

CREATE TABLE projection_docs (
    projection TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    tenant_id  TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    index_key  TEXT,
    doc        TEXT    NOT NULL,
    PRIMARY KEY (projection, generation, tenant_id, key)
) WITHOUT ROWID;

CREATE INDEX projection_docs_index_idx
    ON projection_docs (projection, generation, tenant_id, index_key)
    WHERE index_key IS NOT NULL;
