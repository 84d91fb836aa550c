-- Keygate schema v1 (PostgreSQL). Every tenant-owned table has workspace_id first in its primary
-- key, so a row can only be reached through its workspace. Ids are UUIDv7 text (lexical order =
-- creation order, used for keyset paging); times are Unix microseconds, identical to SQLite's.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE workspaces (
    workspace_id   TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    workspace_type TEXT NOT NULL CHECK (workspace_type IN ('sandbox', 'production')),
    created_at     BIGINT NOT NULL
);

CREATE TABLE api_keys (
    api_key_id    TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces (workspace_id),
    name          TEXT NOT NULL,
    secret_sha256 BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX api_keys_by_workspace ON api_keys (workspace_id, api_key_id);

CREATE TABLE access_systems (
    workspace_id  TEXT NOT NULL REFERENCES workspaces (workspace_id),
    acs_system_id TEXT NOT NULL,
    name          TEXT NOT NULL,
    external_type TEXT NOT NULL,
    system_type   TEXT NOT NULL,
    is_virtual    BOOLEAN NOT NULL,
    time_zone     TEXT NOT NULL,
    capabilities  TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, acs_system_id)
);

CREATE TABLE entrances (
    workspace_id               TEXT NOT NULL,
    acs_entrance_id            TEXT NOT NULL,
    acs_system_id              TEXT NOT NULL,
    display_name               TEXT NOT NULL,
    can_unlock_with_card       BOOLEAN NOT NULL,
    can_unlock_with_code       BOOLEAN NOT NULL,
    can_unlock_with_mobile_key BOOLEAN NOT NULL,
    can_unlock_with_cloud_key  BOOLEAN NOT NULL,
    can_belong_to_reservation  BOOLEAN NOT NULL,
    created_at                 BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, acs_entrance_id),
    FOREIGN KEY (workspace_id, acs_system_id) REFERENCES access_systems (workspace_id, acs_system_id)
);
CREATE INDEX entrances_by_system ON entrances (workspace_id, acs_system_id, acs_entrance_id);

CREATE TABLE access_groups (
    workspace_id        TEXT NOT NULL,
    acs_access_group_id TEXT NOT NULL,
    acs_system_id       TEXT NOT NULL,
    display_name        TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, acs_access_group_id),
    FOREIGN KEY (workspace_id, acs_system_id) REFERENCES access_systems (workspace_id, acs_system_id)
);
CREATE INDEX access_groups_by_system ON access_groups (workspace_id, acs_system_id, acs_access_group_id);

CREATE TABLE access_group_entrances (
    workspace_id        TEXT NOT NULL,
    acs_access_group_id TEXT NOT NULL,
    acs_entrance_id     TEXT NOT NULL,
    PRIMARY KEY (workspace_id, acs_access_group_id, acs_entrance_id),
    FOREIGN KEY (workspace_id, acs_access_group_id) REFERENCES access_groups (workspace_id, acs_access_group_id),
    FOREIGN KEY (workspace_id, acs_entrance_id) REFERENCES entrances (workspace_id, acs_entrance_id)
);
CREATE INDEX access_group_entrances_by_entrance ON access_group_entrances (workspace_id, acs_entrance_id);

CREATE TABLE encoders (
    workspace_id   TEXT NOT NULL,
    acs_encoder_id TEXT NOT NULL,
    acs_system_id  TEXT NOT NULL,
    display_name   TEXT NOT NULL,
    is_online      BOOLEAN NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, acs_encoder_id),
    FOREIGN KEY (workspace_id, acs_system_id) REFERENCES access_systems (workspace_id, acs_system_id)
);
CREATE INDEX encoders_by_system ON encoders (workspace_id, acs_system_id, acs_encoder_id);

CREATE TABLE user_identities (
    workspace_id      TEXT NOT NULL REFERENCES workspaces (workspace_id),
    user_identity_id  TEXT NOT NULL,
    user_identity_key TEXT,
    full_name         TEXT NOT NULL,
    email_address     TEXT,
    phone_number      TEXT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, user_identity_id)
);
CREATE UNIQUE INDEX user_identities_key ON user_identities (workspace_id, user_identity_key);
CREATE INDEX user_identities_email ON user_identities (workspace_id, lower(email_address));

-- request_id idempotency (AIP-155): the first request's body hash and the resource it created.
CREATE TABLE idempotency_records (
    workspace_id   TEXT NOT NULL REFERENCES workspaces (workspace_id),
    request_id     TEXT NOT NULL,
    operation      TEXT NOT NULL,
    request_sha256 BYTEA NOT NULL,
    resource_id    TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, request_id)
);
CREATE INDEX idempotency_records_by_age ON idempotency_records (created_at);
