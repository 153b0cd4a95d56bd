-- Notification timers (src/store/reminders.rs): the index the dispatcher
-- polls; the record of each notification is its reminders-<appointment>
-- stream in the event store.

-- How far each tenant's notification planner has read the global order.
CREATE TABLE notification_planner_checkpoints (
    tenant_id    uuid        PRIMARY KEY,
    position_tx  bigint      NOT NULL,
    position_seq bigint      NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE notification_timers (
    id             uuid        PRIMARY KEY,
    tenant_id      uuid        NOT NULL,
    appointment_id uuid        NOT NULL,
    kind           text        NOT NULL,
    channel        text        NOT NULL,
    due_at         timestamptz NOT NULL,
    state          text        NOT NULL
                   CHECK (state IN ('pending', 'sent', 'failed', 'skipped', 'cancelled')),
    attempts       integer     NOT NULL DEFAULT 0,
    last_error     text,
    lease_owner    text,
    lease_until    timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- What a claim scans.
CREATE INDEX notification_timers_due ON notification_timers (due_at) WHERE state = 'pending';
CREATE INDEX notification_timers_by_appointment
    ON notification_timers (tenant_id, appointment_id, due_at);
