-- Action attempts: asynchronous operations a caller polls (card encoding, remote unlock).
CREATE TABLE action_attempts (
    workspace_id      TEXT NOT NULL REFERENCES workspaces (workspace_id),
    action_attempt_id TEXT NOT NULL,
    action_type       TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'success', 'error')),
    access_method_id  TEXT,
    acs_encoder_id    TEXT,
    acs_entrance_id   TEXT,
    result            TEXT,
    error_type        TEXT,
    error_message     TEXT,
    created_at        BIGINT NOT NULL,
    completed_at      BIGINT,
    PRIMARY KEY (workspace_id, action_attempt_id)
);
