//! The shop from the prost-db seed: four services (catalog, users, cart, orders) sharing one
//! PostgreSQL database, one schema each, talking over RabbitMQ.
//!
//! This crate holds the shop's events, the catalog service's `OrderCreated` handler, and the
//! seed's replay scenario used by `examples/shop.rs` and the integration tests, and the
//! `#[derive(Schema)]` structs of its tables.

pub mod catalog;
pub mod events;
pub mod handlers;
pub mod orders;
pub mod recorder;
pub mod scenario;
pub mod tables;
