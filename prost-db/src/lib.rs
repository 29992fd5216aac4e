//! # prost-db
//!
//! The database layer for event-driven services on PostgreSQL and RabbitMQ.
//!
//! - [`Db`]: a connection pool bound to one service and its schema: `search_path` is set on
//!   every connection, and [`Db::connect`] fails fast when the schema is missing.
//! - Schema utilities on [`Db`]: [`table_exists`](Db::table_exists),
//!   [`list_tables`](Db::list_tables), [`columns`](Db::columns),
//!   [`require_tables`](Db::require_tables).
//! - [`macro@Schema`]: `#[derive(Schema)]` checks structs against the migrations at compile
//!   time; [`Db::check_tables`] compares them with the live database at startup
//!   ([`schema`]).
//! - [`provision_service_role`]: a least-privilege role per service.
//! - `testing::TestDb` (feature `testing`): a fresh database per test, cleaned up even
//!   after a crash.
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
pub mod framework;
pub mod idempotency;
mod ident;
mod inspect;
#[cfg(test)]
mod layout_tests;
pub mod migrate;
pub mod outbox;
mod pool;
mod pooler;
mod roles;
pub mod saga;
pub mod schema;
#[cfg(test)]
mod test_logs;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Error, Result};
pub use ident::{Identifier, IdentifierKind, MAX_IDENTIFIER_LEN};
pub use inspect::ColumnInfo;
pub use pool::{Db, DbConfig, Health, PoolStats, StatementError, Statements};
pub use pooler::Pooler;
pub use roles::{ServiceRole, provision_service_role};
pub use schema::Schema;

#[cfg(feature = "macros")]
#[doc = include_str!("schema/derive.md")]
pub use prost_db_macros::Schema;
#[cfg(feature = "macros")]
#[doc = include_str!("idempotency/handler.md")]
pub use prost_db_macros::idempotent_handler;

/// Re-exported so users name the same sqlx version prost-db was built with.
pub use sqlx;

/// Not public API: what the macros' expansions refer to. No semver guarantees.
#[doc(hidden)]
pub mod __private {
    pub use prost_db_core::source::{Migration, SchemaMigrations, Script};
    /// Fails to compile, on the field's type, unless `T` can hold the SQL type `S`.
    pub const fn assert_compatible<T: ?Sized + crate::schema::CompatibleWith<S>, S>() {}
    pub use crate::idempotency::runtime::{
        ErrorPolicy, Handler, HandlerResult, Keyed, StoredResult, free_fn, method, named,
        permanent_errors,
    };
    pub use crate::schema::__private::assert_enum;
}

/// Embeds a migrations root in the binary at compile time: one directory per schema, files
/// named `<version>_<name>.up.sql` / `.down.sql`, read through the same discovery as
/// [`Migrations::from_dir`](migrate::Migrations::from_dir). The path is relative to the
/// crate's `Cargo.toml`. A bad file name, a duplicate version or an empty file is a compile
/// error naming the file. Editing a file rebuilds the crate; to pick up *new* files without
/// touching the source, add a `build.rs` with `println!("cargo:rerun-if-changed=migrations");`.
///
/// ```
/// let migrations = prost_db::embed_migrations!("../migrations/shop");
/// assert_eq!(migrations.schemas().collect::<Vec<_>>(), ["cart", "catalog", "orders", "users"]);
/// ```
#[cfg(feature = "macros")]
pub use prost_db_macros::embed_migrations;
