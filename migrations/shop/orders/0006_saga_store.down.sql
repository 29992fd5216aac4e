DROP INDEX idx_compensation_log_saga_key;
ALTER TABLE compensation_log DROP COLUMN compensation_key;
DROP INDEX idx_saga_states_sweep;
ALTER TABLE saga_states DROP COLUMN version;
