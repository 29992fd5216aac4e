DROP INDEX idx_carts_saga_correlation_id;
ALTER TABLE carts DROP COLUMN closed_at;
ALTER TABLE carts DROP COLUMN checked_out_at;
ALTER TABLE carts DROP COLUMN order_id;
ALTER TABLE carts DROP COLUMN saga_correlation_id;
UPDATE carts SET status = 'checked_out' WHERE status IN ('ordered', 'checkout_cancelled');
ALTER TABLE carts DROP CONSTRAINT carts_status_check;
ALTER TABLE carts ADD CONSTRAINT carts_status_check
    CHECK (status IN ('active', 'checked_out', 'abandoned'));
