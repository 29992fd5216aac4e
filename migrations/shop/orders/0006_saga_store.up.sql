-- What prost_db::saga::SagaStore needs on top of the seed's saga tables.

-- Optimistic concurrency: every step of a saga bumps its version, and a step that read an
-- older version does not match and runs again.
ALTER TABLE saga_states ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

-- The expiry sweep: sagas of a type in a status, oldest deadline first.
CREATE INDEX idx_saga_states_sweep ON saga_states (saga_type, status, expires_at);

-- Each compensation has a key unique within its saga (the reservation it releases), so it
-- is registered and completed once however often its events arrive.
ALTER TABLE compensation_log ADD COLUMN compensation_key TEXT;
CREATE UNIQUE INDEX idx_compensation_log_saga_key
    ON compensation_log (saga_correlation_id, compensation_key);
