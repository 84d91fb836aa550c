-- Deleted grants and methods disappear from reads at once; their revocation jobs keep running.
ALTER TABLE access_grants ADD COLUMN deleted_at BIGINT;
ALTER TABLE access_methods ADD COLUMN deleted_at BIGINT;
