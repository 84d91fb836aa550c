-- Deliveries of Instant Key links by SMS or email. One row per DeliverInstantKey call; the row is
-- also its queue entry: the delivery role leases a due pending row (lease_token, lease_until),
-- makes one attempt and records the outcome under that lease. Only the recipient is kept, never
-- the link or the message: the sender derives both from instant_key_id when it sends.
CREATE TABLE instant_key_deliveries (
    workspace_id    TEXT NOT NULL REFERENCES workspaces (workspace_id),
    delivery_id     TEXT NOT NULL,
    instant_key_id  TEXT NOT NULL,
    channel         TEXT NOT NULL CHECK (channel IN ('sms', 'email')),
    -- E.164 phone number or email address.
    recipient       TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    -- What accepted it once sent: 'sms_api', 'smtp' or 'outbox' (nothing left the machine).
    sent_via        TEXT CHECK (sent_via IN ('sms_api', 'smtp', 'outbox')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at BIGINT NOT NULL,
    lease_token     TEXT,
    lease_until     BIGINT,
    -- The W3C traceparent of the call that queued it (NULL when no exporter is configured).
    trace_context   TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    sent_at         BIGINT,
    PRIMARY KEY (workspace_id, delivery_id),
    FOREIGN KEY (workspace_id, instant_key_id) REFERENCES instant_keys (workspace_id, instant_key_id)
);
CREATE INDEX instant_key_deliveries_due ON instant_key_deliveries (status, next_attempt_at);
CREATE INDEX instant_key_deliveries_by_key ON instant_key_deliveries (workspace_id, instant_key_id, delivery_id);
CREATE INDEX instant_key_deliveries_recent ON instant_key_deliveries (created_at);

-- The delivery an event is about (instant_key.delivered, instant_key.delivery_failed); the key is
-- in events.instant_key_id (0010).
ALTER TABLE events ADD COLUMN delivery_id TEXT;
