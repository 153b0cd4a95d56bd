-- Revoking API keys and browser sessions (see the PostgreSQL migration of
-- the same name).
ALTER TABLE api_keys ADD COLUMN revoked_by TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at TEXT;

CREATE TABLE sessions (
    id           TEXT NOT NULL PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    user_id      TEXT NOT NULL,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT,
    revoked_by   TEXT
) WITHOUT ROWID;

CREATE INDEX sessions_tenant_idx ON sessions (tenant_id, user_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

-- One row per revocation, in order: a server on this file polls it to hear
-- of revocations made by another process (the CLI) within a second.
CREATE TABLE revocations (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    revoked_at TEXT NOT NULL
);
