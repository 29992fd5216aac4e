-- The checkout saga: a cart leaves `active` when it is checked out and ends `ordered` or
-- `checkout_cancelled`, tied to its saga by the correlation id that every event carries.
ALTER TABLE carts DROP CONSTRAINT carts_status_check;
ALTER TABLE carts ADD CONSTRAINT carts_status_check
    CHECK (status IN ('active', 'checked_out', 'ordered', 'checkout_cancelled', 'abandoned'));
ALTER TABLE carts ADD COLUMN saga_correlation_id UUID;
ALTER TABLE carts ADD COLUMN order_id BIGINT;
ALTER TABLE carts ADD COLUMN checked_out_at TIMESTAMPTZ;
ALTER TABLE carts ADD COLUMN closed_at TIMESTAMPTZ;

-- One saga per cart, and a retried checkout finds the saga it started.
CREATE UNIQUE INDEX idx_carts_saga_correlation_id ON carts (saga_correlation_id);
