-- Access grants, their methods and per-door state, the orchestration job queue, and the
-- per-workspace event log.

CREATE TABLE access_grants (
    workspace_id             TEXT NOT NULL REFERENCES workspaces (workspace_id),
    access_grant_id          TEXT NOT NULL,
    user_identity_id         TEXT NOT NULL,
    access_grant_key         TEXT,
    name                     TEXT NOT NULL,
    reservation_key          TEXT,
    starts_at                BIGINT NOT NULL,
    ends_at                  BIGINT,
    requested_access_methods TEXT NOT NULL,
    instant_key_url          TEXT,
    warnings                 TEXT NOT NULL,
    errors                   TEXT NOT NULL,
    created_at               BIGINT NOT NULL,
    updated_at               BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, access_grant_id)
);
CREATE UNIQUE INDEX access_grants_key ON access_grants (workspace_id, access_grant_key);
CREATE INDEX access_grants_by_user ON access_grants (workspace_id, user_identity_id, access_grant_id);

-- The grant's entrances, in request order (position), for filters by entrance and system.
CREATE TABLE access_grant_entrances (
    workspace_id    TEXT NOT NULL,
    access_grant_id TEXT NOT NULL,
    acs_entrance_id TEXT NOT NULL,
    acs_system_id   TEXT NOT NULL,
    position        INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, access_grant_id, acs_entrance_id),
    FOREIGN KEY (workspace_id, access_grant_id) REFERENCES access_grants (workspace_id, access_grant_id)
);
CREATE INDEX access_grant_entrances_by_entrance ON access_grant_entrances (workspace_id, acs_entrance_id);
CREATE INDEX access_grant_entrances_by_system ON access_grant_entrances (workspace_id, acs_system_id);

CREATE TABLE access_methods (
    workspace_id              TEXT NOT NULL,
    access_method_id          TEXT NOT NULL,
    access_grant_id           TEXT NOT NULL,
    user_identity_id          TEXT NOT NULL,
    mode                      TEXT NOT NULL,
    display_name              TEXT NOT NULL,
    is_issued                 BOOLEAN NOT NULL,
    issued_at                 BIGINT,
    is_card_encoding_required BOOLEAN NOT NULL,
    is_ready_for_encoding     BOOLEAN NOT NULL,
    code                      TEXT,
    client_session_token      TEXT,
    instant_key_url           TEXT,
    warnings                  TEXT NOT NULL,
    errors                    TEXT NOT NULL,
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, access_method_id),
    FOREIGN KEY (workspace_id, access_grant_id) REFERENCES access_grants (workspace_id, access_grant_id)
);
CREATE INDEX access_methods_by_grant ON access_methods (workspace_id, access_grant_id, access_method_id);
CREATE INDEX access_methods_by_user ON access_methods (workspace_id, user_identity_id, access_method_id);

CREATE TABLE access_method_entrances (
    workspace_id     TEXT NOT NULL,
    access_method_id TEXT NOT NULL,
    acs_entrance_id  TEXT NOT NULL,
    acs_system_id    TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'granted', 'failed', 'revoked', 'unknown')),
    reason           TEXT,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, access_method_id, acs_entrance_id),
    FOREIGN KEY (workspace_id, access_method_id) REFERENCES access_methods (workspace_id, access_method_id)
);
CREATE INDEX access_method_entrances_by_entrance ON access_method_entrances (workspace_id, acs_entrance_id);

-- Durable orchestration jobs. A worker leases a job (lease_owner, lease_until); a lease that
-- expires is taken over by another worker, so a dead worker's jobs are not lost.
CREATE TABLE jobs (
    job_id        TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces (workspace_id),
    kind          TEXT NOT NULL,
    acs_system_id TEXT NOT NULL,
    subject_id    TEXT NOT NULL,
    payload       TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'dead')),
    attempts      INTEGER NOT NULL,
    run_at        BIGINT NOT NULL,
    lease_owner   TEXT,
    lease_until   BIGINT,
    last_error    TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX jobs_due ON jobs (state, run_at);

-- Per-workspace event sequence. Incrementing the counter row locks it until commit, so a
-- workspace's seq order is its commit order: a watcher resuming after seq N never misses an
-- event that committed later with a smaller number.
CREATE TABLE event_counters (
    workspace_id TEXT PRIMARY KEY REFERENCES workspaces (workspace_id),
    last_seq     BIGINT NOT NULL
);

CREATE TABLE events (
    workspace_id     TEXT NOT NULL REFERENCES workspaces (workspace_id),
    seq              BIGINT NOT NULL,
    event_id         TEXT NOT NULL UNIQUE,
    event_type       TEXT NOT NULL,
    description      TEXT NOT NULL,
    occurred_at      BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    access_grant_id  TEXT,
    access_method_id TEXT,
    acs_system_id    TEXT,
    acs_entrance_id  TEXT,
    user_identity_id TEXT,
    PRIMARY KEY (workspace_id, seq)
);
CREATE INDEX events_by_grant ON events (workspace_id, access_grant_id, seq);
