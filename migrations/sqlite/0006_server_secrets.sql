-- Secrets the server makes once: the key that signs embed, session and
-- manage tokens (see the PostgreSQL migration of the same name).
CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    secret     BLOB NOT NULL CHECK (length(secret) >= 32),
    created_at TEXT NOT NULL
);
