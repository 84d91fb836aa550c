-- Fencing: every claim of a job writes a fresh token; the worker that holds it checks it just
-- before calling the access system and again when it records the outcome, so the task of a
-- claim that was lost (its lease expired and the job was claimed again, by any process) can
-- neither call nor complete. Workers renew the leases of their live claims by token.
ALTER TABLE jobs ADD COLUMN lease_token TEXT;
CREATE INDEX jobs_by_lease_token ON jobs (lease_token);
-- Claims are made per access system: the due jobs of one system, oldest first per workspace.
CREATE INDEX jobs_due_by_system ON jobs (acs_system_id, state, run_at);
