-- Access system users (the console flow of seed 000): a person on one access system, linked to
-- a user identity, with access-group memberships. Deleted users stay as rows (deleted_at) so the
-- revocation of their credentials can still be traced; every read skips them.
CREATE TABLE acs_users (
    workspace_id     TEXT NOT NULL REFERENCES workspaces (workspace_id),
    acs_user_id      TEXT NOT NULL,
    acs_system_id    TEXT NOT NULL,
    full_name        TEXT NOT NULL,
    email_address    TEXT,
    phone_number     TEXT,
    access_starts_at BIGINT,
    access_ends_at   BIGINT,
    -- No foreign key: deleting a user identity unlinks its users (DeleteUserIdentity).
    user_identity_id TEXT,
    is_suspended     BOOLEAN NOT NULL,
    created_at       BIGINT NOT NULL,
    deleted_at       BIGINT,
    PRIMARY KEY (workspace_id, acs_user_id),
    FOREIGN KEY (workspace_id, acs_system_id) REFERENCES access_systems (workspace_id, acs_system_id)
);
CREATE INDEX acs_users_by_system ON acs_users (workspace_id, acs_system_id, acs_user_id);
CREATE INDEX acs_users_by_identity ON acs_users (workspace_id, user_identity_id, acs_user_id);

CREATE TABLE acs_user_groups (
    workspace_id        TEXT NOT NULL,
    acs_user_id         TEXT NOT NULL,
    acs_access_group_id TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, acs_user_id, acs_access_group_id),
    FOREIGN KEY (workspace_id, acs_user_id) REFERENCES acs_users (workspace_id, acs_user_id),
    FOREIGN KEY (workspace_id, acs_access_group_id) REFERENCES access_groups (workspace_id, acs_access_group_id)
);

-- A credential is a view of the access grant CreateCredential made (one grant per credential)
-- and of that grant's access method in the user's access system.
CREATE TABLE acs_credentials (
    workspace_id      TEXT NOT NULL,
    acs_credential_id TEXT NOT NULL,
    acs_user_id       TEXT NOT NULL,
    acs_system_id     TEXT NOT NULL,
    access_grant_id   TEXT NOT NULL,
    access_method_id  TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, acs_credential_id),
    FOREIGN KEY (workspace_id, acs_user_id) REFERENCES acs_users (workspace_id, acs_user_id),
    FOREIGN KEY (workspace_id, access_method_id) REFERENCES access_methods (workspace_id, access_method_id)
);
CREATE UNIQUE INDEX acs_credentials_by_grant ON acs_credentials (workspace_id, access_grant_id);
CREATE INDEX acs_credentials_by_user ON acs_credentials (workspace_id, acs_user_id, acs_credential_id);
