CREATE TABLE compensation_log (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id BIGINT NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    saga_correlation_id UUID NOT NULL,
    compensation_event VARCHAR(100) NOT NULL,
    compensation_payload JSONB NOT NULL DEFAULT '{}',
    status VARCHAR(20) NOT NULL DEFAULT 'pending',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at TIMESTAMPTZ
);

CREATE INDEX idx_compensation_log_order_id ON compensation_log (order_id);
CREATE INDEX idx_compensation_log_saga_correlation_id ON compensation_log (saga_correlation_id);
