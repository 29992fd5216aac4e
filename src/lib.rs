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

use std::sync::atomic::{AtomicBool, Ordering};

static UNNAMED: AtomicBool = AtomicBool::new(false);

/// How the services' own statements are sent: named (the default), or unnamed when the
/// shop runs behind a transaction pooler ([`use_statements`] with the `Db`'s
/// [`statements`](prost_db::Db::statements)). Every statement of the services is built
/// with it.
///
/// ```
/// let query = prost_shop::statements().query("SELECT 1");
/// # drop(query);
/// ```
pub fn statements() -> prost_db::Statements {
    if UNNAMED.load(Ordering::Relaxed) {
        prost_db::Statements::UNNAMED
    } else {
        prost_db::Statements::NAMED
    }
}

/// Sets what [`statements`] returns, for the whole process; call it before the services
/// start.
///
/// ```
/// prost_shop::use_statements(prost_db::Statements::NAMED);
/// assert!(prost_shop::statements().named());
/// ```
pub fn use_statements(statements: prost_db::Statements) {
    UNNAMED.store(!statements.named(), Ordering::Relaxed);
}
