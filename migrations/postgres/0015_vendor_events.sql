-- Inbound vendor webhooks: the vendor's ids of the events already received from each access
-- system, so that a delivery the vendor repeats (they deliver at least once) is recorded once.
-- A row is written in the same transaction as the Keygate events it caused; rows older than
-- the oldest event an adapter accepts are pruned as new ones arrive (docs/providers.md).
CREATE TABLE vendor_events (
    workspace_id    TEXT NOT NULL,
    acs_system_id   TEXT NOT NULL,
    vendor_event_id TEXT NOT NULL,
    received_at     BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, acs_system_id, vendor_event_id),
    FOREIGN KEY (workspace_id, acs_system_id) REFERENCES access_systems (workspace_id, acs_system_id)
);
CREATE INDEX vendor_events_by_age ON vendor_events (workspace_id, acs_system_id, received_at);

-- A webhook names only its access system (the URL a vendor posts to): it is found by id alone.
CREATE INDEX access_systems_by_id ON access_systems (acs_system_id);
