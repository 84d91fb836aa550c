-- Instant Keys. The link token is derived from the key id with a server secret (settings
-- `instant_key_secret`), so only its SHA-256 is kept, to find a key from a link.
CREATE TABLE instant_keys (
    workspace_id     TEXT NOT NULL REFERENCES workspaces (workspace_id),
    instant_key_id   TEXT NOT NULL,
    token_sha256     TEXT NOT NULL UNIQUE,
    user_identity_id TEXT NOT NULL,
    access_grant_id  TEXT,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT,
    max_use_count    INTEGER NOT NULL,
    revoked_at       BIGINT,
    PRIMARY KEY (workspace_id, instant_key_id)
);
CREATE INDEX instant_keys_by_user ON instant_keys (workspace_id, user_identity_id, instant_key_id);

-- Devices that opened a key's link, by the SHA-256 of their device cookie; at most max_use_count.
CREATE TABLE instant_key_claims (
    workspace_id   TEXT NOT NULL,
    instant_key_id TEXT NOT NULL,
    device_sha256  TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, instant_key_id, device_sha256)
);

-- The grant's and the mobile key's Instant Key; their links are derived, not stored.
ALTER TABLE access_grants ADD COLUMN instant_key_id TEXT;
ALTER TABLE access_methods ADD COLUMN instant_key_id TEXT;

-- Remote unlocks the sandbox virtual systems performed, as a vendor's log would show them.
CREATE TABLE sandbox_unlocks (
    action_attempt_id TEXT PRIMARY KEY,
    workspace_id      TEXT NOT NULL,
    acs_system_id     TEXT NOT NULL,
    acs_entrance_id   TEXT NOT NULL,
    created_at        BIGINT NOT NULL
);

-- The Instant Key and the action attempt an event is about (unlocks, Instant Key events).
ALTER TABLE events ADD COLUMN instant_key_id TEXT;
ALTER TABLE events ADD COLUMN action_attempt_id TEXT;
