//! The `Migrator` and its public operations: `up`, `down`, `redo`, `status`, `dry_run` and
//! `reset`, each choosing an execution strategy for one schema (its settings are in
//! `settings`).

use std::time::Duration;

use sqlx::postgres::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use super::error::MigrateError;
use super::plan::{self, Plan, Policy, Revert, State};
use super::report::{DryRun, Report, RunMode, Status, StepReport};
use super::session::Session;
use super::settings::DEFAULT_DDL_LOCK_TIMEOUT;
use super::source::{Migrations, SchemaSource};
use crate::framework;
use crate::ident::Identifier;
use crate::{Db, Error};
use prost_db_core::source::Migration;

/// Runs a database's migrations; one value serves every schema of its [`Migrations`].
///
/// Every operation that runs scripts does so on a connection of its own, opened from the
/// [`Db`]'s connect options with the migrator's settings and closed afterwards: a
/// migration never inherits the service's `statement_timeout`, and nothing a script `SET`s
/// reaches the service's pool. Each script starts from those settings again (`RESET ALL`
/// before it): `search_path` is the schema, `lock_timeout` is the
/// [`ddl_lock_timeout`](Self::ddl_lock_timeout), `statement_timeout` is the migrator's
/// [`statement_timeout`](Self::statement_timeout) (none by default), everything else is
/// the server's default. A script's own `SET` (pg_dump's `SET search_path = ...`,
/// `set_config(.., false)`, `SET lock_timeout = 0`) holds for the rest of that script
/// only. The runner's own statements are schema-qualified.
///
/// Settings are set by the method named after them and read by `get_<name>`.
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
    pub(super) lock_wait: Option<Duration>,
    pub(super) ddl_lock_timeout: Option<Duration>,
    pub(super) statement_timeout: Option<Duration>,
}

/// One operation on one schema: what every strategy and the ledger need.
pub(super) struct Run<'a> {
    pub(super) migrator: &'a Migrator,
    /// The service's pool: for reads that set nothing (the no-op check, status, who holds
    /// a lock); scripts run on the run's own [`Session`].
    pub(super) pool: &'a PgPool,
    pub(super) source: &'a SchemaSource,
    pub(super) schema: &'a Identifier,
    pub(super) deployment: Uuid,
    /// Statements sent so far (each one round trip), for the report.
    pub(super) queries: u32,
    /// The backend pid of the run's session, once open.
    pub(super) session_pid: Option<i32>,
    /// Whether the session holds the session-scoped migration lock (step by step).
    pub(super) session_locked: bool,
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
            lock_wait: None,
            ddl_lock_timeout: Some(DEFAULT_DDL_LOCK_TIMEOUT),
            statement_timeout: None,
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

    fn start<'a>(&'a self, db: &'a Db) -> Result<Run<'a>, Error> {
        Ok(Run {
            migrator: self,
            pool: db.pool(),
            source: self.migrations.require(db.schema())?,
            schema: db.schema_ident(),
            deployment: Uuid::now_v7(),
            queries: 0,
            session_pid: None,
            session_locked: false,
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
        let direct = db.for_migrations().await?;
        let db = direct.as_ref().unwrap_or(db);
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
            let step_by_step = plan.needs_steps();
            let mut session = Session::open(&mut run).await?;
            let result = async {
                if !step_by_step && let Some(report) = run.up_in_transaction(&mut session).await? {
                    return Ok(report);
                }
                run.up_step_by_step(&mut session).await
            }
            .await;
            session.close(&mut run).await;
            result
        }
        .instrument(span)
        .await
        .map_err(|e| as_db_reports(db, e))
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
        let direct = db.for_migrations().await?;
        let db = direct.as_ref().unwrap_or(db);
        let run = self.start(db)?;
        let span = tracing::info_span!("migrate_down", schema = db.schema(), target, deployment_id = %run.deployment);
        run.revert(Revert::Above(target))
            .instrument(span)
            .await
            .map_err(|e| as_db_reports(db, e))
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
        let direct = db.for_migrations().await?;
        let db = direct.as_ref().unwrap_or(db);
        let run = self.start(db)?;
        let span = tracing::info_span!("migrate_redo", schema = db.schema(), deployment_id = %run.deployment);
        run.revert(Revert::Redo)
            .instrument(span)
            .await
            .map_err(|e| as_db_reports(db, e))
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
        let direct = db.for_migrations().await?;
        let db = direct.as_ref().unwrap_or(db);
        let mut run = self.start(db)?;
        let recorded = run
            .read_recorded()
            .await
            .map_err(|e| as_db_reports(db, e))?;
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
        let direct = db.for_migrations().await?;
        let db = direct.as_ref().unwrap_or(db);
        let mut run = self.start(db)?;
        let result = async {
            let mut session = Session::open(&mut run).await?;
            let result = run.rehearse(&mut session).await;
            session.close(&mut run).await;
            result
        }
        .await;
        result.map_err(|e| as_db_reports(db, e))
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
        let direct = db.for_migrations().await?;
        let db = direct.as_ref().unwrap_or(db);
        if !self.allow_reset && !crate::ident::is_test_database_name(db.database()) {
            return Err(MigrateError::ResetRefused {
                schema: db.schema().to_owned(),
                database: db.database().to_owned(),
            }
            .into());
        }
        let mut run = self.start(db)?;
        let dropped = async {
            let mut session = Session::open(&mut run).await?;
            let result = run.drop_schema(&mut session).await;
            session.close(&mut run).await;
            result
        }
        .await;
        dropped.map_err(|e| as_db_reports(db, e))?;
        self.up(db).await
    }
}

/// Connection failures as [`Db`] reports them ([`Error::Connect`], [`Error::PoolTimedOut`]),
/// whichever connection the migrator was using: one mapping, `Db`'s.
fn as_db_reports(db: &Db, error: Error) -> Error {
    match error {
        Error::Database(e) => db.map_err(e),
        other => other,
    }
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
        let step_by_step = plan::revert_needs_steps(self.source, &fast, revert);
        let mut session = Session::open(&mut self).await?;
        let result = async {
            if !step_by_step
                && let Some(report) = self.revert_in_transaction(&mut session, revert).await?
            {
                return Ok(report);
            }
            self.revert_step_by_step(&mut session, revert).await
        }
        .await;
        session.close(&mut self).await;
        result
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
