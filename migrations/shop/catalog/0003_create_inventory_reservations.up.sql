CREATE TABLE inventory_reservations (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    product_id BIGINT NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    order_id BIGINT NOT NULL,
    reservation_id UUID NOT NULL UNIQUE,
    status VARCHAR(20) NOT NULL DEFAULT 'reserved'
        CHECK (status IN ('reserved', 'released', 'fulfilled')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL DEFAULT now() + INTERVAL '24 hours',
    released_at TIMESTAMPTZ
);

CREATE INDEX idx_inventory_reservations_product_id ON inventory_reservations (product_id);
CREATE INDEX idx_inventory_reservations_order_id ON inventory_reservations (order_id);
