-- Real access systems: how a connected system is reached (non-secret settings as JSON, and the
-- credentials sealed by keygate-app with AEAD: the id of the key that sealed them is kept so keys
-- can rotate), its health (errors and warnings as JSON notices, as on grants), when it was last
-- synced and whether it was disconnected.
ALTER TABLE access_systems ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
ALTER TABLE access_systems ADD COLUMN credentials_key_id TEXT;
ALTER TABLE access_systems ADD COLUMN credentials_sealed TEXT;
ALTER TABLE access_systems ADD COLUMN errors TEXT NOT NULL DEFAULT '[]';
ALTER TABLE access_systems ADD COLUMN warnings TEXT NOT NULL DEFAULT '[]';
ALTER TABLE access_systems ADD COLUMN last_synced_at BIGINT;
ALTER TABLE access_systems ADD COLUMN disconnected_at BIGINT;

-- Doors come from the system: each entrance, group and encoder carries the system's own id,
-- which a sync matches on, and is marked when the system no longer lists it. Rows stored
-- before this migration are all virtual systems, whose names are unique per site and are the
-- ids their adapter reports.
ALTER TABLE entrances ADD COLUMN external_id TEXT NOT NULL DEFAULT '';
ALTER TABLE entrances ADD COLUMN removed_at BIGINT;
UPDATE entrances SET external_id = display_name;
CREATE INDEX entrances_by_external_id ON entrances (workspace_id, acs_system_id, external_id);

ALTER TABLE access_groups ADD COLUMN external_id TEXT NOT NULL DEFAULT '';
ALTER TABLE access_groups ADD COLUMN removed_at BIGINT;
UPDATE access_groups SET external_id = display_name;

ALTER TABLE encoders ADD COLUMN external_id TEXT NOT NULL DEFAULT '';
ALTER TABLE encoders ADD COLUMN removed_at BIGINT;
UPDATE encoders SET external_id = display_name;
