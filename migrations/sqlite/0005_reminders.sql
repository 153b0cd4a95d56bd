-- Notification timers, as on PostgreSQL (migrations/postgres/0006_reminders.sql).
-- Times are fixed-width RFC 3339 text, so they compare as text.

CREATE TABLE notification_planner_checkpoints (
    tenant_id    TEXT    PRIMARY KEY,
    position_tx  INTEGER NOT NULL,
    position_seq INTEGER NOT NULL,
    updated_at   TEXT    NOT NULL
);

CREATE TABLE notification_timers (
    id             TEXT    PRIMARY KEY,
    tenant_id      TEXT    NOT NULL,
    appointment_id TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    channel        TEXT    NOT NULL,
    due_at         TEXT    NOT NULL,
    state          TEXT    NOT NULL
                   CHECK (state IN ('pending', 'sent', 'failed', 'skipped', 'cancelled')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT,
    lease_owner    TEXT,
    lease_until    TEXT,
    updated_at     TEXT    NOT NULL
);

CREATE INDEX notification_timers_due ON notification_timers (due_at) WHERE state = 'pending';
CREATE INDEX notification_timers_by_appointment
    ON notification_timers (tenant_id, appointment_id, due_at);
