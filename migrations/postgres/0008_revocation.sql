-- Revoking API keys and browser sessions (docs/security.md, "Revocation").
--
-- Who revoked a key and when; when it was last used (written at most about
-- once per key cache period per instance, so it is approximate).
ALTER TABLE api_keys
    ADD COLUMN revoked_by   text,
    ADD COLUMN last_used_at timestamptz;

-- Every browser session opened from an embed token (`bks_`), so that an
-- admin can list and end them one by one. A session token carries its id;
-- one whose row is missing or revoked is refused. Rows are removed a day
-- after their session expired.
CREATE TABLE sessions (
    id           uuid        PRIMARY KEY,
    tenant_id    uuid        NOT NULL REFERENCES tenants (id),
    user_id      text        NOT NULL,
    name         text        NOT NULL,
    role         text        NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    revoked_by   text
);

CREATE INDEX sessions_tenant_idx ON sessions (tenant_id, user_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

-- A revocation is announced to every instance with
-- NOTIFY buktor_revocations, '<key|session>:<uuid>' in its transaction;
-- instances LISTEN on a connection of their own and drop the credential
-- from their caches (and the whole cache when that connection was lost).
