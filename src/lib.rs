//! The shop from the prost-db seed: four services (catalog, users, cart, orders) sharing one
//! PostgreSQL database, one schema each, talking over RabbitMQ, and the order saga across
//! three of them.
//!
//! - [`cart`], [`orders`], [`catalog`]: each service's steps of the order saga; the orders
//!   service orchestrates it through [`prost_db::saga::SagaStore`].
//! - [`services`]: the steps as idempotent handlers, with their consumers, outbox relays and
//!   the expiry sweep, runnable in one process or one process per service.
//! - [`seed`]: the same saga in the seed's shape, the control.
//! - [`faults`]: the seed's network failures and late answers, injected into deliveries.
//! - [`scenario`]: the seed's scenarios and the checks that every saga ended right.
//! - [`handlers`]: the first step alone, for the single-step replay tests.
//! - [`tables`]: the `#[derive(Schema)]` structs of the shop's tables.

pub mod cart;
pub mod catalog;
pub mod emit;
pub mod error;
pub mod events;
pub mod faults;
pub mod handlers;
pub mod orders;
pub mod recorder;
pub mod scenario;
pub mod seed;
pub mod services;
pub mod tables;
pub mod topology;
