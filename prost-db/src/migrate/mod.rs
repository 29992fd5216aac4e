//! The migration runner: per-schema versioned up/down migrations, applied atomically under
//! a per-schema lock, with a tracking table and an append-only log in every schema.
//!
//! # Layout
//!
//! A migrations root is one database; each directory under it is one schema:
//!
//! ```text
//! migrations/shop/catalog/0001_create_categories.up.sql
//! migrations/shop/catalog/0001_create_categories.down.sql
//! migrations/shop/orders/0001_create_orders.up.sql
//! ```
//!
//! Scripts use unqualified names: every script starts with `search_path` set to the
//! schema. A `.down.sql` is optional; without it the migration is irreversible.
//!
//! # Guarantees
//!
//! - **Run once.** Applied migrations are recorded in `<schema>._prost_db_migrations` and
//!   skipped; an applied migration whose file changed or disappeared stops the run with
//!   [`MigrateError::Changed`] / [`MigrateError::Missing`] naming the file.
//! - **One runner per schema.** Runs take an advisory lock keyed on the schema
//!   ([`lock_key`]), transaction-scoped by default, so it cannot outlive a failed run
//!   (waited for as long as [`Migrator::lock_wait`] allows);
//!   services in one database migrate their schemas in parallel. Waiters retry outside any
//!   statement, so a holder's `CREATE INDEX CONCURRENTLY` never waits for them.
//! - **All or nothing.** A schema's pending migrations run in one transaction: a failure at
//!   step 3 leaves the schema exactly as it was ([`FailureOutcome::RolledBack`]).
//! - **Automatic rollback.** A migration marked `-- prost-db:no-transaction` (for `CREATE
//!   INDEX CONCURRENTLY`) switches the run to step-by-step commits under a session lock on a
//!   dedicated connection; a failure then runs the DOWN scripts of the steps this deployment
//!   applied, newest first ([`FailureOutcome::Reverted`]).
//! - **Its own session.** Scripts run on a connection of the run's own, opened from the
//!   `Db`'s connect options and closed afterwards: nothing a script `SET`s reaches the
//!   service's pool, the service's `statement_timeout` does not apply
//!   ([`Migrator::statement_timeout`], none by default), and table-lock waits are bounded
//!   by [`Migrator::ddl_lock_timeout`] (5 s), whose failure names the blocking session.
//!   Each script starts from those settings (`RESET ALL`); a script's own `SET` holds for
//!   the rest of that script only.
//! - **Audit log.** Every apply, failure (with file, line and SQLSTATE), revert and automatic
//!   rollback is appended to `<schema>._prost_db_migration_log` with the deployment id.
//!
//! ```no_run
//! use prost_db::migrate::{Migrations, Migrator};
//! use prost_db::{Db, DbConfig};
//!
//! # async fn run() -> Result<(), prost_db::Error> {
//! let db = Db::connect(DbConfig::from_env("catalog")?.create_schema(true)).await?;
//! let migrator = Migrator::new(Migrations::from_dir("migrations/shop")?);
//! let report = migrator.up(&db).await?;
//! println!("applied {} migration(s) to {}", report.applied.len(), report.schema);
//! # Ok(()) }
//! ```

mod batch;
mod error;
mod execute;
mod ledger;
mod lock;
mod migrator;
mod plan;
mod report;
mod script;
mod session;
mod settings;
mod source;
mod stepwise;

#[cfg(feature = "cli")]
pub mod cli;

pub use error::{BlockingSession, FailureOutcome, MigrateError, ScriptFailure, SourceError};
pub use lock::lock_key;
pub use migrator::Migrator;
pub use prost_db_core::source::{Migration, NO_TRANSACTION_DIRECTIVE, SchemaMigrations, Script};
pub use report::{
    DryRun, DryRunOutcome, DryRunStep, MigrationState, Report, RunMode, Status, StatusEntry,
    StepReport,
};
pub use settings::DEFAULT_DDL_LOCK_TIMEOUT;
pub use source::Migrations;
