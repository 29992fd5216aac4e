//! Integration tests against the real PostgreSQL (and RabbitMQ), one binary for all.
//!
//! Every test makes its own database with `prost_db::testing::TestDb` and drops it, so the
//! tests run in parallel and reruns start clean.

mod amqp;
mod amqp_batch;
mod catalog;
mod idempotency;
mod migrate;
mod pool;
mod pooler;
mod replicas;
mod saga;
mod schema;
mod shop;
