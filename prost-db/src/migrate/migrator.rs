//! The builder and the public operations: `up`, `down`, `redo`, `status`, `dry_run` and
//! `reset`, each choosing an execution strategy for one schema.

use std::time::Duration;

use sqlx::postgres::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use super::error::MigrateError;
use super::plan::{self, Plan, Policy, Revert, State};
use super::report::{DryRun, Report, RunMode, Status, StepReport};
use super::source::{Migrations, SchemaSource};
use crate::framework;
use crate::ident::Identifier;
use crate::{Db, Error};
use prost_db_core::source::Migration;

/// Runs a database's migrations; one value serves every schema of its [`Migrations`].
///
/// ```no_run
/// use prost_db::migrate::{Migrations, Migrator};
///
/// # async fn run(db: prost_db::Db) -> Result<(), prost_db::Error> {
/// let migrator = Migrator::new(Migrations::from_dir("migrations/shop")?)
///     .applied_by("deploy 2026-11-24 (ci #812)");
/// migrator.up(&db).await?;
/// for entry in migrator.status(&db).await?.entries {
///     println!("{:>5} {:<30} {:?}", entry.version, entry.name, entry.state);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Migrator {
    pub(super) migrations: Migrations,
    pub(super) applied_by: String,
    pub(super) accept_changed: bool,
    pub(super) allow_out_of_order: bool,
    pub(super) allow_reset: bool,
    pub(super) lock_timeout: Option<Duration>,
}

/// One operation on one schema: what every strategy and the ledger need.
pub(super) struct Run<'a> {
    pub(super) migrator: &'a Migrator,
    pub(super) pool: &'a PgPool,
    pub(super) source: &'a SchemaSource,
    pub(super) schema: &'a Identifier,
    pub(super) deployment: Uuid,
    /// Statements sent so far (each one round trip), for the report.
    pub(super) queries: u32,
}

impl Migrator {
    /// A migrator for `migrations`.
    ///
    /// ```
    /// use prost_db::migrate::{Migrations, Migrator};
    ///
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// let migrator = Migrator::new(Migrations::from_dir(root)?);
    /// assert!(migrator.migrations().get("orders").is_some());
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn new(migrations: Migrations) -> Self {
        let applied_by = std::env::var("PROST_DB_APPLIED_BY").unwrap_or_else(|_| {
            let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
            format!("{user}@{host}")
        });
        Migrator {
            migrations,
            applied_by,
            accept_changed: false,
            allow_out_of_order: false,
            allow_reset: false,
            lock_timeout: None,
        }
    }

    /// The migrations this migrator runs.
    ///
    /// ```
    /// use prost_db::migrate::{Migrations, Migrator};
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// let migrator = Migrator::new(Migrations::from_dir(root)?);
    /// assert_eq!(migrator.migrations().schemas().count(), 4);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn migrations(&self) -> &Migrations {
        &self.migrations
    }

    /// Who is recorded as applying (default `$PROST_DB_APPLIED_BY`, else `$USER@$HOSTNAME`).
    /// The database role is recorded too.
    ///
    /// ```
    /// use prost_db::migrate::{Migrations, Migrator};
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// let migrator = Migrator::new(Migrations::from_dir(root)?).applied_by("ci pipeline #812");
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn applied_by(mut self, who: impl Into<String>) -> Self {
        self.applied_by = who.into();
        self
    }

    /// Accept applied migrations whose file was edited deliberately: their new checksum is
    /// recorded and a `checksum_accepted` row is logged, instead of failing with
    /// [`MigrateError::Changed`].
    ///
    /// ```
    /// use prost_db::migrate::{Migrations, Migrator};
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// let migrator = Migrator::new(Migrations::from_dir(root)?).accept_changed(true);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn accept_changed(mut self, accept: bool) -> Self {
        self.accept_changed = accept;
        self
    }

    /// Apply pending migrations older than the newest applied one instead of failing with
    /// [`MigrateError::OutOfOrder`].
    ///
    /// ```
    /// use prost_db::migrate::{Migrations, Migrator};
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// let migrator = Migrator::new(Migrations::from_dir(root)?).allow_out_of_order(true);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn allow_out_of_order(mut self, allow: bool) -> Self {
        self.allow_out_of_order = allow;
        self
    }

    /// Allow [`reset`](Self::reset) on a database that is not named like a test database
    /// (`prost_test_*`, `test_*`, `*_test` or `test`).
    ///
    /// ```
    /// use prost_db::migrate::{Migrations, Migrator};
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// let migrator = Migrator::new(Migrations::from_dir(root)?).allow_reset(true);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn allow_reset(mut self, allow: bool) -> Self {
        self.allow_reset = allow;
        self
    }

    /// Give up waiting for the schema's migration lock after `timeout` (default: wait as
    /// long as it takes) with [`MigrateError::LockTimeout`], which names the session holding
    /// it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use prost_db::migrate::{Migrations, Migrator};
    ///
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// let migrator = Migrator::new(Migrations::from_dir(root)?).lock_timeout(Duration::from_secs(60));
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = Some(timeout);
        self
    }

    fn start<'a>(&'a self, db: &'a Db) -> Result<Run<'a>, Error> {
        Ok(Run {
            migrator: self,
            pool: db.pool(),
            source: self.migrations.require(db.schema())?,
            schema: db.schema_ident(),
            deployment: Uuid::now_v7(),
            queries: 0,
        })
    }

    pub(super) fn policy(&self) -> Policy {
        Policy {
            accept_changed: self.accept_changed,
            allow_out_of_order: self.allow_out_of_order,
        }
    }

    /// Applies the pending migrations of `db`'s schema (creating the schema and the
    /// framework's tables if needed). A second call applies nothing and costs one query.
    ///
    /// ```no_run
    /// # async fn run(migrator: prost_db::migrate::Migrator, db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// let report = migrator.up(&db).await?;
    /// for step in &report.applied {
    ///     println!("applied {} {} in {:?}", step.version, step.name, step.duration);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`MigrateError::Changed`], [`MigrateError::Missing`], [`MigrateError::OutOfOrder`]
    /// before anything runs; [`MigrateError::Failed`] when a script fails, saying how the
    /// schema was restored; [`Error::Database`] for connection problems.
    pub async fn up(&self, db: &Db) -> Result<Report, Error> {
        let mut run = self.start(db)?;
        let span = tracing::info_span!("migrate_up", schema = db.schema(), deployment_id = %run.deployment);
        async move {
            // Optimistic read without the lock: pending migrations only ever disappear, so
            // "nothing to do" read here stays true.
            if run.everything_applied().await? {
                return Ok(run.report(RunMode::NothingToDo, vec![], vec![]));
            }
            let fast = run.read_state_unlocked().await?.unwrap_or_default();
            let plan = run.plan(&fast)?;
            if plan.is_empty() && fast.framework >= framework::latest_step() {
                return Ok(run.report(RunMode::NothingToDo, vec![], vec![]));
            }
            if !plan.needs_steps()
                && let Some(report) = run.up_in_transaction().await?
            {
                return Ok(report);
            }
            run.up_step_by_step().await
        }
        .instrument(span)
        .await
    }

    /// Reverts, newest first, every applied migration above `target` (0 reverts all), in
    /// one transaction unless a down script is marked non-transactional.
    ///
    /// ```no_run
    /// # async fn run(migrator: prost_db::migrate::Migrator, db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// migrator.down(&db, 2).await?; // back to version 2
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`MigrateError::Irreversible`] (nothing reverted) if one of them has no down script;
    /// [`MigrateError::Changed`] / [`MigrateError::Missing`] as for `up`;
    /// [`MigrateError::Failed`] when a down script fails.
    pub async fn down(&self, db: &Db, target: i64) -> Result<Report, Error> {
        let run = self.start(db)?;
        let span = tracing::info_span!("migrate_down", schema = db.schema(), target, deployment_id = %run.deployment);
        run.revert(Revert::Above(target)).instrument(span).await
    }

    /// Reverts the newest applied migration and applies it again (one transaction unless a
    /// script is non-transactional). Useful while writing a migration.
    ///
    /// # Errors
    ///
    /// As [`down`](Self::down) and [`up`](Self::up).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(migrator: prost_db::migrate::Migrator, db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// let report = migrator.redo(&db).await?;
    /// assert_eq!(report.reverted.len(), report.applied.len());
    /// # Ok(()) }
    /// ```
    pub async fn redo(&self, db: &Db) -> Result<Report, Error> {
        let run = self.start(db)?;
        let span = tracing::info_span!("migrate_redo", schema = db.schema(), deployment_id = %run.deployment);
        run.revert(Revert::Redo).instrument(span).await
    }

    /// Every migration's state: applied, pending, changed or missing, and whether it is
    /// reversible. Takes no lock and changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] for connection problems.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(migrator: prost_db::migrate::Migrator, db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// let status = migrator.status(&db).await?;
    /// assert!(status.entries.iter().all(|e| e.reversible));
    /// # Ok(()) }
    /// ```
    pub async fn status(&self, db: &Db) -> Result<Status, Error> {
        let mut run = self.start(db)?;
        let recorded = run.read_recorded().await?;
        Ok(Status {
            schema: db.schema().to_owned(),
            entries: plan::status_entries(run.source, recorded),
        })
    }

    /// Rehearses the pending batch: runs every pending up script in order, then their down
    /// scripts newest first, inside one transaction that is always rolled back. Reports what
    /// would happen; changes nothing.
    ///
    /// # Errors
    ///
    /// [`MigrateError::Changed`], [`MigrateError::Missing`], [`MigrateError::OutOfOrder`]
    /// as for `up`; script failures are reported in the result, not as errors.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(migrator: prost_db::migrate::Migrator, db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// let plan = migrator.dry_run(&db).await?;
    /// println!("{} pending, rehearsal ok: {}", plan.steps.len(), plan.succeeded());
    /// # Ok(()) }
    /// ```
    pub async fn dry_run(&self, db: &Db) -> Result<DryRun, Error> {
        self.start(db)?.rehearse().await
    }

    /// For test databases: drops the schema with everything in it, then applies every
    /// migration. Refused unless the database is named like a test database
    /// (`prost_test_*`, as [`TestDb`](crate::testing::TestDb) names them, `test_*`, `*_test`
    /// or exactly `test`; not `latest` or `contest`) or [`allow_reset`](Self::allow_reset)
    /// is set.
    ///
    /// # Errors
    ///
    /// [`MigrateError::ResetRefused`]; otherwise as [`up`](Self::up).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(migrator: prost_db::migrate::Migrator, db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// // A test database (named `orders_test`, say): start from scratch.
    /// migrator.reset(&db).await?;
    /// # Ok(()) }
    /// ```
    pub async fn reset(&self, db: &Db) -> Result<Report, Error> {
        if !self.allow_reset && !is_test_database(db.database()) {
            return Err(MigrateError::ResetRefused {
                schema: db.schema().to_owned(),
                database: db.database().to_owned(),
            }
            .into());
        }
        self.start(db)?.drop_schema().await?;
        self.up(db).await
    }
}

/// Whether `reset` may drop schemas of the database named `name` without `allow_reset`.
/// The one place that decides it.
pub(super) fn is_test_database(name: &str) -> bool {
    name == "test"
        || name.starts_with("test_")
        || name.ends_with("_test")
        || name.starts_with(crate::testing::TEST_DATABASE_PREFIX)
}

impl<'a> Run<'a> {
    pub(super) fn report(
        &self,
        mode: RunMode,
        reverted: Vec<StepReport>,
        applied: Vec<StepReport>,
    ) -> Report {
        Report {
            schema: self.schema.as_str().to_owned(),
            deployment_id: self.deployment,
            mode,
            reverted,
            applied,
            queries: self.queries,
        }
    }

    /// `down` and `redo`: in one transaction, unless a script they run is
    /// non-transactional. The mode is decided from an unlocked read; the locked read checks
    /// it again.
    async fn revert(mut self, revert: Revert) -> Result<Report, Error> {
        let Some(fast) = self.read_state_unlocked().await? else {
            return Ok(self.report(RunMode::NothingToDo, vec![], vec![]));
        };
        if !plan::revert_needs_steps(self.source, &fast, revert)
            && let Some(report) = self.revert_in_transaction(revert).await?
        {
            return Ok(report);
        }
        self.revert_step_by_step(revert).await
    }

    /// The files' targets for `revert` in `state`, checked.
    pub(super) fn revert_targets(
        &self,
        state: &State,
        revert: Revert,
    ) -> Result<Vec<&'a Migration>, MigrateError> {
        plan::revert_targets(
            self.schema.as_str(),
            self.source,
            state,
            self.migrator.policy(),
            revert,
        )
    }

    /// The plan for `up` from `state`, checked.
    pub(super) fn plan(&self, state: &State) -> Result<Plan<'a>, MigrateError> {
        plan::plan(
            self.schema.as_str(),
            self.source,
            state,
            self.migrator.policy(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::is_test_database;

    #[test]
    fn only_databases_named_like_test_databases_may_be_reset() {
        for name in ["prost_test_41_17_3", "orders_test", "test_orders", "test"] {
            assert!(is_test_database(name), "{name} is a test database");
        }
        for name in [
            "latest",
            "contest",
            "prod",
            "testing",
            "attest_db",
            "my_tests",
            "tester",
            "prost",
            "test-db",
            "",
        ] {
            assert!(!is_test_database(name), "{name} is not a test database");
        }
    }
}
