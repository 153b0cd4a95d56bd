-- Secrets the server makes once and every instance on this database shares:
-- the key that signs embed, session and manage tokens. Made by the first
-- instance that needs one (INSERT ... ON CONFLICT DO NOTHING, then read).
CREATE TABLE server_secrets (
    name       text PRIMARY KEY,
    secret     bytea NOT NULL CHECK (length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
