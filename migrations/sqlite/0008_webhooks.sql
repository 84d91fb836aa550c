-- Webhooks (SQLite): endpoints a workspace's events are POSTed to, and one delivery row per (webhook,
-- event). The signing secret is stored as is: every delivery is signed with it (HMAC), so it
-- cannot be kept hashed. There is no KMS envelope yet; database access means secret access.
CREATE TABLE webhooks (
    workspace_id         TEXT NOT NULL REFERENCES workspaces (workspace_id),
    webhook_id           TEXT NOT NULL,
    url                  TEXT NOT NULL,
    -- JSON array of dotted event types; [] means every type.
    event_types          TEXT NOT NULL,
    secret               TEXT NOT NULL,
    is_enabled           BOOLEAN NOT NULL,
    disabled_reason      TEXT,
    created_at           BIGINT NOT NULL,
    last_delivery_at     BIGINT,
    last_success_at      BIGINT,
    -- First failed attempt since the last success (or since creation); NULL while healthy.
    -- The webhook is disabled when this is older than the disable period.
    failing_since        BIGINT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    -- The last event seq fanned out to this webhook: events after it get delivery rows next.
    cursor_seq           BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, webhook_id)
);
CREATE INDEX webhooks_enabled ON webhooks (is_enabled, workspace_id);

-- One row per (webhook, event). Fan-out inserts it and advances the webhook's cursor in one
-- transaction; the primary key makes a second insert of the same pair a no-op. A worker leases a
-- due row (lease_token, lease_until), makes one attempt and records its outcome under that lease.
CREATE TABLE webhook_deliveries (
    workspace_id     TEXT NOT NULL,
    webhook_id       TEXT NOT NULL,
    event_seq        BIGINT NOT NULL,
    event_id         TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    last_attempt_at  BIGINT,
    last_status_code INTEGER,
    last_error       TEXT,
    lease_token      TEXT,
    lease_until      BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, webhook_id, event_seq),
    FOREIGN KEY (workspace_id, webhook_id) REFERENCES webhooks (workspace_id, webhook_id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);

-- The webhook an event is about (webhook.disabled).
ALTER TABLE events ADD COLUMN webhook_id TEXT;
