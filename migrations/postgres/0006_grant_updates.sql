-- Updates of access grants. A door keeps its state while a change to it (revoking it, new
-- access times) is being pushed; the change waits here, as JSON, until the access system confirms.
ALTER TABLE access_method_entrances ADD COLUMN pending_mutation TEXT;
-- The sandbox systems keep the schedule they were given, as a vendor's credential would.
ALTER TABLE sandbox_credentials ADD COLUMN starts_at BIGINT;
ALTER TABLE sandbox_credentials ADD COLUMN ends_at BIGINT;
-- Jobs of one credential (access method, access system) run one at a time: the claim looks
-- for a running job of the same subject and system.
CREATE INDEX jobs_by_subject ON jobs (subject_id, acs_system_id, state);
-- The reconciler walks granted doors.
CREATE INDEX access_method_entrances_by_state ON access_method_entrances (state, workspace_id);
