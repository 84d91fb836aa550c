-- What the sandbox virtual access systems hold, as a vendor's own database would: credentials
-- keyed by Keygate's reference (the access method), so a repeated call finds the first one.
CREATE TABLE sandbox_credentials (
    acs_system_id    TEXT NOT NULL,
    access_method_id TEXT NOT NULL,
    workspace_id     TEXT NOT NULL,
    provider_user_id TEXT NOT NULL,
    credential_id    TEXT NOT NULL,
    entrance_ids     TEXT NOT NULL,
    code             TEXT,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (acs_system_id, access_method_id)
);
