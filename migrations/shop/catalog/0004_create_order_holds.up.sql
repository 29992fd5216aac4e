-- The catalog's decision on each order's stock, one row per order it has heard of.
-- Whichever of the order's reservation and its cancellation arrives first inserts the row,
-- so the two are serialized on its primary key; a cancellation that overtakes the order
-- leaves a tombstone ('cancelled'), and the order then reserves nothing when it arrives.
CREATE TABLE order_holds (
    order_id BIGINT PRIMARY KEY,
    status VARCHAR(20) NOT NULL
        CHECK (status IN ('reserved', 'rejected', 'cancelled', 'released', 'fulfilled')),
    reason TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
