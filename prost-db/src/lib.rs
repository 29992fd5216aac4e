//! # prost-db
//!
//! The database layer for event-driven services on PostgreSQL and RabbitMQ.
//!
//! - [`Db`]: a connection pool bound to one service and its schema: `search_path` is set on
//!   every connection, and [`Db::connect`] fails fast when the schema is missing.
//! - Schema utilities on [`Db`]: [`table_exists`](Db::table_exists),
//!   [`list_tables`](Db::list_tables), [`columns`](Db::columns),
//!   [`require_tables`](Db::require_tables).
//! - [`provision_service_role`]: a least-privilege role per service.
//! - [`testing::TestDb`]: a fresh database per test, cleaned up even after a crash.
//!
//! ```no_run
//! use prost_db::{Db, DbConfig};
//!
//! # async fn run() -> Result<(), prost_db::Error> {
//! let catalog = Db::connect(DbConfig::from_env("catalog")?).await?;
//! catalog.require_tables(&["products", "categories"]).await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

#[cfg(feature = "amqp")]
pub mod amqp;
mod error;
pub mod events;
mod ident;
mod inspect;
pub mod outbox;
mod pool;
mod roles;
pub mod testing;

pub use error::{Error, Result};
pub use ident::{Identifier, IdentifierKind, MAX_IDENTIFIER_LEN};
pub use inspect::ColumnInfo;
pub use pool::{
    DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_LIFETIME,
    DEFAULT_MIN_CONNECTIONS, Db, DbConfig, Health, PoolStats,
};
pub use roles::{ServiceRole, provision_service_role};

/// Re-exported so users name the same sqlx version prost-db was built with.
pub use sqlx;

/// Not public API: what the macros' expansions refer to. No semver guarantees.
#[doc(hidden)]
pub mod __private {}
