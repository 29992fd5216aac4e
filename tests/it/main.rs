mod idempotency;
