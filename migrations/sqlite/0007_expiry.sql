-- Grants whose ends_at has passed are revoked everywhere once: expired_at marks those done.
ALTER TABLE access_grants ADD COLUMN expired_at BIGINT;
CREATE INDEX access_grants_ending ON access_grants (ends_at);
