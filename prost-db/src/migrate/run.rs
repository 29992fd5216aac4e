//! The runner: plans a run from the tracking table and the files, then executes it in one
//! transaction or step by step.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnection, PgDatabaseError, PgErrorPosition, PgPool, PgRow};
use sqlx::{AssertSqlSafe, Connection, Row};
use tracing::Instrument;
use uuid::Uuid;

use super::error::{FailureOutcome, MigrateError, ScriptFailure};
use super::lock_key;
use super::script::{line_of_offset, line_of_position, split_statements};
use super::source::{Migrations, SchemaSource};
use crate::framework;
use crate::ident::Identifier;
use crate::{Db, Error};
use prost_db_core::source::{Migration, Script, has_no_transaction_directive};

const SAVEPOINT: &str = "prost_db_batch";

/// The message of the error a busy migration lock raises.
const LOCK_BUSY: &str = "prost-db: the migration lock is busy";

/// pid, application, user, address, transaction start.
type LockHolderRow = (i32, String, String, String, Option<DateTime<Utc>>);

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
    migrations: Migrations,
    applied_by: String,
    accept_changed: bool,
    allow_out_of_order: bool,
    allow_reset: bool,
    lock_timeout: Option<Duration>,
}

/// How a run executed.
///
/// ```no_run
/// # async fn run(migrator: prost_db::migrate::Migrator, db: prost_db::Db) -> Result<(), prost_db::Error> {
/// use prost_db::migrate::RunMode;
/// if migrator.up(&db).await?.mode == RunMode::NothingToDo {
///     println!("schema is up to date");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunMode {
    /// Everything was up to date; no lock was taken.
    NothingToDo,
    /// All steps ran in one transaction.
    Transactional,
    /// A non-transactional migration made the run commit step by step.
    StepByStep,
}

/// One migration applied or reverted by a run.
///
/// ```no_run
/// # async fn run(migrator: prost_db::migrate::Migrator, db: prost_db::Db) -> Result<(), prost_db::Error> {
/// for step in migrator.up(&db).await?.applied {
///     println!("{} {} took {:?}", step.version, step.name, step.duration);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    /// The version.
    pub version: i64,
    /// The name.
    pub name: String,
    /// How long its script took.
    pub duration: Duration,
}

/// What a run did.
///
/// ```no_run
/// # async fn run(migrator: prost_db::migrate::Migrator, db: prost_db::Db) -> Result<(), prost_db::Error> {
/// let report = migrator.up(&db).await?;
/// println!("deployment {} applied {} migration(s) in {} queries", report.deployment_id, report.applied.len(), report.queries);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Report {
    /// The schema.
    pub schema: String,
    /// The id recorded with every row this run wrote.
    pub deployment_id: Uuid,
    /// How it ran.
    pub mode: RunMode,
    /// Migrations reverted, in order (by `down` and `redo`).
    pub reverted: Vec<StepReport>,
    /// Migrations applied, in order.
    pub applied: Vec<StepReport>,
    /// Statements sent to the server (each one network round trip).
    pub queries: u32,
}

/// A migration's state, as [`Migrator::status`] sees it.
///
/// ```no_run
/// # async fn run(migrator: prost_db::migrate::Migrator, db: prost_db::Db) -> Result<(), prost_db::Error> {
/// use prost_db::migrate::MigrationState;
/// let status = migrator.status(&db).await?;
/// let pending = status.entries.iter().filter(|e| e.state == MigrationState::Pending).count();
/// println!("{pending} pending");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MigrationState {
    /// Applied, and the file still matches.
    Applied,
    /// Not applied yet.
    Pending,
    /// Applied, but the file was edited since.
    Changed,
    /// Applied, but the file is gone.
    Missing,
}

/// One line of [`Status`].
///
/// ```no_run
/// # async fn run(migrator: prost_db::migrate::Migrator, db: prost_db::Db) -> Result<(), prost_db::Error> {
/// for e in migrator.status(&db).await?.entries {
///     let reversible = if e.reversible { "" } else { " (irreversible)" };
///     println!("{} {} {:?}{reversible} {}", e.version, e.name, e.state, e.file);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct StatusEntry {
    /// The version.
    pub version: i64,
    /// The name.
    pub name: String,
    /// Applied, pending, changed or missing.
    pub state: MigrationState,
    /// Whether it has a `.down.sql` (`false` for missing ones).
    pub reversible: bool,
    /// Whether it runs outside a transaction.
    pub no_transaction: bool,
    /// When it was applied.
    pub applied_at: Option<DateTime<Utc>>,
    /// Who applied it.
    pub applied_by: Option<String>,
    /// Its up script, or where it was expected.
    pub file: String,
}

/// The result of [`Migrator::status`].
///
/// ```no_run
/// # async fn run(migrator: prost_db::migrate::Migrator, db: prost_db::Db) -> Result<(), prost_db::Error> {
/// let status = migrator.status(&db).await?;
/// println!("{}: {} migration(s)", status.schema, status.entries.len());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Status {
    /// The schema.
    pub schema: String,
    /// Every migration known to the files or the tracking table, by version.
    pub entries: Vec<StatusEntry>,
}

/// What happened to one step of a [`DryRun`].
///
/// ```no_run
/// # async fn run(migrator: prost_db::migrate::Migrator, db: prost_db::Db) -> Result<(), prost_db::Error> {
/// use prost_db::migrate::DryRunOutcome;
/// for step in migrator.dry_run(&db).await?.steps {
///     if let DryRunOutcome::Failed(failure) = &step.up {
///         eprintln!("would fail: {failure}");
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DryRunOutcome {
    /// The script ran.
    Ok {
        /// How long it took.
        duration: Duration,
    },
    /// The script failed.
    Failed(Box<ScriptFailure>),
    /// The script was not run, for the reason given.
    NotRehearsed(&'static str),
}

/// One pending migration of a [`DryRun`].
///
/// ```no_run
/// # async fn run(migrator: prost_db::migrate::Migrator, db: prost_db::Db) -> Result<(), prost_db::Error> {
/// for step in migrator.dry_run(&db).await?.steps {
///     println!("{} {}: up {:?}, down {:?}", step.version, step.name, step.up, step.down);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DryRunStep {
    /// The version.
    pub version: i64,
    /// The name.
    pub name: String,
    /// Its up script, run in order.
    pub up: DryRunOutcome,
    /// Its down script, run newest first after all ups (`None`: irreversible).
    pub down: Option<DryRunOutcome>,
}

/// The result of [`Migrator::dry_run`]: the pending batch was executed, then its DOWN
/// scripts, in one transaction that was rolled back.
///
/// ```no_run
/// # async fn run(migrator: prost_db::migrate::Migrator, db: prost_db::Db) -> Result<(), prost_db::Error> {
/// let plan = migrator.dry_run(&db).await?;
/// assert!(plan.succeeded(), "{plan:#?}");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DryRun {
    /// The schema.
    pub schema: String,
    /// The pending migrations, in order.
    pub steps: Vec<DryRunStep>,
}

impl DryRun {
    /// Whether every up and down script that was run succeeded.
    ///
    /// ```no_run
    /// # async fn run(migrator: prost_db::migrate::Migrator, db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// if !migrator.dry_run(&db).await?.succeeded() {
    ///     eprintln!("do not deploy");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn succeeded(&self) -> bool {
        self.steps.iter().all(|s| {
            !matches!(s.up, DryRunOutcome::Failed(_))
                && !matches!(s.down, Some(DryRunOutcome::Failed(_)))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

/// What the tracking table holds for one migration.
struct Applied {
    version: i64,
    name: String,
    checksum: String,
}

/// The schema's bookkeeping, as read.
struct State {
    framework: i32,
    applied: Vec<Applied>,
}

/// The checked difference between files and tracking table.
struct Plan<'s> {
    pending: Vec<&'s Migration>,
    changed: Vec<(&'s Migration, String)>,
}

struct Run<'a> {
    migrator: &'a Migrator,
    pool: &'a PgPool,
    source: &'a SchemaSource,
    schema: &'a Identifier,
    deployment: Uuid,
    queries: u32,
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

    /// Allow [`reset`](Self::reset) on a database whose name does not contain `test`.
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
            if run.everything_applied(db.pool()).await? {
                return Ok(run.report(RunMode::NothingToDo, vec![], vec![]));
            }
            let fast = run.read_state_unlocked(db.pool()).await?;
            let step_by_step = match &fast {
                Some(state) => {
                    let plan = run.plan(state)?;
                    if plan.pending.is_empty()
                        && plan.changed.is_empty()
                        && state.framework >= framework::latest_step()
                    {
                        return Ok(run.report(RunMode::NothingToDo, vec![], vec![]));
                    }
                    plan.pending.iter().any(|m| m.no_transaction)
                }
                None => run
                    .source
                    .migrations
                    .migrations
                    .iter()
                    .any(|m| m.no_transaction),
            };
            if !step_by_step && let Some(report) = run.up_in_transaction(db.pool()).await? {
                return Ok(report);
            }
            run.up_step_by_step(db.pool()).await
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
        run.revert(
            db.pool(),
            |applied| {
                applied
                    .iter()
                    .rev()
                    .filter(|a| a.version > target)
                    .map(|a| a.version)
                    .collect()
            },
            false,
        )
        .instrument(span)
        .await
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
        run.revert(
            db.pool(),
            |applied| applied.last().map(|a| a.version).into_iter().collect(),
            true,
        )
        .instrument(span)
        .await
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
        let source = self.migrations.require(db.schema())?;
        let schema = db.schema_ident();
        let sql = format!(
            "SELECT version, name, checksum, applied_at, applied_by FROM {schema}._prost_db_migrations ORDER BY version"
        );
        let rows: Vec<(i64, String, String, DateTime<Utc>, String)> =
            match sqlx::query_as(AssertSqlSafe(sql))
                .fetch_all(db.pool())
                .await
            {
                Ok(rows) => rows,
                Err(e) if is_undefined(&e) => vec![],
                Err(e) => return Err(e.into()),
            };
        let mut entries = Vec::new();
        for (version, name, checksum, applied_at, applied_by) in rows {
            let (state, file, reversible, no_transaction) = match source.find(version) {
                Some(m) if source.checksum(m) == checksum => (
                    MigrationState::Applied,
                    m.up.path.to_string(),
                    m.down.is_some(),
                    m.no_transaction,
                ),
                Some(m) => (
                    MigrationState::Changed,
                    m.up.path.to_string(),
                    m.down.is_some(),
                    m.no_transaction,
                ),
                None => (
                    MigrationState::Missing,
                    source.expected_file(version, &name),
                    false,
                    false,
                ),
            };
            entries.push(StatusEntry {
                version,
                name,
                state,
                reversible,
                no_transaction,
                applied_at: Some(applied_at),
                applied_by: Some(applied_by),
                file,
            });
        }
        for m in &source.migrations.migrations {
            if !entries.iter().any(|e| e.version == m.version) {
                entries.push(StatusEntry {
                    version: m.version,
                    name: m.name.to_string(),
                    state: MigrationState::Pending,
                    reversible: m.down.is_some(),
                    no_transaction: m.no_transaction,
                    applied_at: None,
                    applied_by: None,
                    file: m.up.path.to_string(),
                });
            }
        }
        entries.sort_by_key(|e| e.version);
        Ok(Status {
            schema: db.schema().to_owned(),
            entries,
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
        let mut run = self.start(db)?;
        let mut tx = db.pool().begin().await?;
        let state = run.lock_and_read(&mut tx, true).await?;
        let plan = run.plan(&state)?;
        let mut steps: Vec<DryRunStep> = plan
            .pending
            .iter()
            .map(|m| DryRunStep {
                version: m.version,
                name: m.name.to_string(),
                up: DryRunOutcome::NotRehearsed("an earlier step failed"),
                down: m
                    .down
                    .as_ref()
                    .map(|_| DryRunOutcome::NotRehearsed("an earlier step failed")),
            })
            .collect();
        let mut ok = true;
        for (i, m) in plan.pending.iter().enumerate() {
            if m.no_transaction {
                // Later steps may depend on this one, so the rehearsal ends here.
                let step = &mut steps[i];
                step.up = DryRunOutcome::NotRehearsed(
                    "marked no-transaction: cannot run inside the rehearsal's transaction",
                );
                step.down = step
                    .down
                    .as_ref()
                    .map(|_| DryRunOutcome::NotRehearsed("its up script was not rehearsed"));
                for later in &mut steps[i + 1..] {
                    let reason = "comes after a no-transaction step, which was not rehearsed";
                    later.up = DryRunOutcome::NotRehearsed(reason);
                    later.down = later
                        .down
                        .as_ref()
                        .map(|_| DryRunOutcome::NotRehearsed(reason));
                }
                break;
            }
            let step = &mut steps[i];
            let started = Instant::now();
            match run.script_in_tx(&mut tx, m, &m.up).await? {
                Ok(()) => {
                    step.up = DryRunOutcome::Ok {
                        duration: started.elapsed(),
                    }
                }
                Err(failure) => {
                    step.up = DryRunOutcome::Failed(failure);
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            for (m, step) in plan.pending.iter().zip(&mut steps).rev() {
                let (Some(down), DryRunOutcome::Ok { .. }) = (&m.down, &step.up) else {
                    continue;
                };
                let started = Instant::now();
                match run.script_in_tx(&mut tx, m, down).await? {
                    Ok(()) => {
                        step.down = Some(DryRunOutcome::Ok {
                            duration: started.elapsed(),
                        })
                    }
                    Err(failure) => {
                        step.down = Some(DryRunOutcome::Failed(failure));
                        break;
                    }
                }
            }
        }
        tx.rollback().await?;
        Ok(DryRun {
            schema: db.schema().to_owned(),
            steps,
        })
    }

    /// For test databases: drops the schema with everything in it, then applies every
    /// migration. Refused unless the database's name contains `test` or
    /// [`allow_reset`](Self::allow_reset) is set.
    ///
    /// # Errors
    ///
    /// [`MigrateError::ResetRefused`]; otherwise as [`up`](Self::up).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(migrator: prost_db::migrate::Migrator, db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// // A test database (its name contains `test`): start from scratch.
    /// migrator.reset(&db).await?;
    /// # Ok(()) }
    /// ```
    pub async fn reset(&self, db: &Db) -> Result<Report, Error> {
        if !self.allow_reset && !db.database().contains("test") {
            return Err(MigrateError::ResetRefused {
                schema: db.schema().to_owned(),
                database: db.database().to_owned(),
            }
            .into());
        }
        let schema = db.schema_ident();
        let mut run = self.start(db)?;
        let mut tx = db.pool().begin().await?;
        run.locked(
            &mut tx,
            true,
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        )
        .await?;
        tx.commit().await?;
        tracing::warn!(schema = schema.as_str(), "schema dropped for reset");
        self.up(db).await
    }
}

impl<'a> Run<'a> {
    fn report(&self, mode: RunMode, reverted: Vec<StepReport>, applied: Vec<StepReport>) -> Report {
        Report {
            schema: self.schema.as_str().to_owned(),
            deployment_id: self.deployment,
            mode,
            reverted,
            applied,
            queries: self.queries,
        }
    }

    fn state_sql(&self) -> String {
        let s = self.schema;
        format!(
            "SELECT 0::int8, coalesce(max(step), 0)::int8, '', '' FROM {s}._prost_db_framework \
             UNION ALL SELECT 1, version, name, checksum FROM {s}._prost_db_migrations"
        )
    }

    fn parse_state(rows: &[PgRow]) -> Result<State, sqlx::Error> {
        let mut state = State {
            framework: 0,
            applied: vec![],
        };
        for row in rows.iter().filter(|r| r.len() == 4) {
            let kind: i64 = row.try_get(0)?;
            let version: i64 = row.try_get(1)?;
            if kind == 0 {
                state.framework = i32::try_from(version).unwrap_or(i32::MAX);
            } else {
                state.applied.push(Applied {
                    version,
                    name: row.try_get(2)?,
                    checksum: row.try_get(3)?,
                });
            }
        }
        state.applied.sort_by_key(|a| a.version);
        Ok(state)
    }

    /// One query, one short row: the tracking table's digest of `version:checksum` pairs,
    /// compared with the files'. Equal means every file is applied unchanged and nothing
    /// else is: the no-op `up`.
    async fn everything_applied(&mut self, pool: &PgPool) -> Result<bool, Error> {
        let s = self.schema;
        let sql = format!(
            "SELECT (SELECT coalesce(max(step), 0) FROM {s}._prost_db_framework)::int8, \
             coalesce(encode(sha256(convert_to(string_agg(version::text || ':' || checksum, ',' \
             ORDER BY version), 'UTF8')), 'hex'), '') FROM {s}._prost_db_migrations"
        );
        self.queries += 1;
        // Prepared (and cached per connection): the no-op path is planned once.
        match sqlx::query(AssertSqlSafe(sql)).fetch_one(pool).await {
            Ok(row) => {
                let framework: i64 = row.try_get(0)?;
                let digest: String = row.try_get(1)?;
                Ok(framework >= i64::from(framework::latest_step())
                    && digest == self.source.all_applied_digest)
            }
            Err(e) if is_undefined(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn read_state_unlocked(&mut self, pool: &PgPool) -> Result<Option<State>, Error> {
        self.queries += 1;
        match sqlx::raw_sql(AssertSqlSafe(self.state_sql()))
            .fetch_all(pool)
            .await
        {
            Ok(rows) => Ok(Some(Self::parse_state(&rows)?)),
            Err(e) if is_undefined(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// One round trip: take the transaction-scoped lock, create what is missing, read the
    /// state, and open the savepoint a failure rolls back to.
    async fn lock_and_read(
        &mut self,
        conn: &mut PgConnection,
        transactional: bool,
    ) -> Result<State, Error> {
        let savepoint = if transactional {
            format!(";\nSAVEPOINT {SAVEPOINT}")
        } else {
            String::new()
        };
        let then = format!(
            "{};\n{}{savepoint}",
            framework::bootstrap_sql(self.schema),
            self.state_sql()
        );
        let rows = self.locked(conn, transactional, &then).await?;
        let state = Self::parse_state(&rows)?;
        if let Some(sql) = framework::pending_steps_sql(self.schema, state.framework) {
            self.queries += 1;
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut *conn)
                .await?;
        }
        Ok(state)
    }

    /// Takes the schema's migration lock (transaction-scoped if `transactional`, else for
    /// the session) and runs `then` in the same round trip, returning its rows.
    async fn locked(
        &mut self,
        conn: &mut PgConnection,
        transactional: bool,
        then: &str,
    ) -> Result<Vec<PgRow>, Error> {
        let key = lock_key(self.schema.as_str());
        // The lock is *tried* and the wait happens here, between attempts, outside any
        // statement: a runner blocked inside `pg_advisory_lock` holds a snapshot, which
        // `CREATE INDEX CONCURRENTLY` in the lock holder waits for, a deadlock. `key` is an
        // integer computed here, not user input.
        let lock_fn = if transactional {
            "pg_try_advisory_xact_lock"
        } else {
            "pg_try_advisory_lock"
        };
        let sql = format!(
            "DO $prost_db_lock$ BEGIN IF NOT {lock_fn}({key}) THEN \
             RAISE EXCEPTION '{LOCK_BUSY}' USING ERRCODE = 'lock_not_available'; \
             END IF; END $prost_db_lock$;\n{then}"
        );
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            self.queries += 1;
            match sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                .fetch_all(&mut *conn)
                .await
            {
                Ok(rows) => return Ok(rows),
                Err(sqlx::Error::Database(e)) if e.message() == LOCK_BUSY => {
                    if transactional {
                        self.queries += 1;
                        sqlx::raw_sql("ROLLBACK AND CHAIN")
                            .execute(&mut *conn)
                            .await?;
                    }
                    if let Some(timeout) = self.migrator.lock_timeout
                        && started.elapsed() >= timeout
                    {
                        let holder = self.lock_holder(key).await;
                        return Err(MigrateError::LockTimeout {
                            schema: self.schema.as_str().to_owned(),
                            waited: started.elapsed(),
                            holder,
                        }
                        .into());
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Who holds the schema's migration lock, for the timeout error.
    async fn lock_holder(&self, key: i64) -> Option<String> {
        // A bigint advisory key shows in pg_locks as classid (high half) and objid (low half).
        let high = key >> 32;
        let low = key & 0xffff_ffff;
        let row: Option<LockHolderRow> = sqlx::query_as(
            "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.usename::text, ''), \
             coalesce(host(a.client_addr), 'local socket'), a.xact_start \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND l.classid = ($1::int8 & 4294967295)::oid AND l.objid = $2::int8::oid",
        )
        .bind(high)
        .bind(low)
        .fetch_optional(self.pool)
        .await
        .ok()
        .flatten();
        row.map(|(pid, app, user, addr, since)| {
            let since = since
                .map(|t| format!(", in a transaction since {t}"))
                .unwrap_or_default();
            format!("backend pid {pid} (application {app:?}, user {user:?}, from {addr}{since})")
        })
    }

    /// Compares the files with the tracking table.
    fn plan(&self, state: &State) -> Result<Plan<'a>, MigrateError> {
        let source = self.source;
        let schema = self.schema.as_str();
        let mut changed = vec![];
        for applied in &state.applied {
            let Some(m) = source.find(applied.version) else {
                return Err(MigrateError::Missing {
                    schema: schema.to_owned(),
                    version: applied.version,
                    file: source.expected_file(applied.version, &applied.name),
                });
            };
            let current = source.checksum(m).to_owned();
            if current != applied.checksum {
                if !self.migrator.accept_changed {
                    return Err(MigrateError::Changed {
                        schema: schema.to_owned(),
                        version: m.version,
                        file: m.up.path.to_string(),
                        applied: applied.checksum.clone(),
                        current,
                    });
                }
                changed.push((m, applied.checksum.clone()));
            }
        }
        let latest = state.applied.last().map_or(0, |a| a.version);
        let pending: Vec<&Migration> = source
            .migrations
            .migrations
            .iter()
            .filter(|m| {
                state
                    .applied
                    .binary_search_by_key(&m.version, |a| a.version)
                    .is_err()
            })
            .collect();
        if let Some(early) = pending.iter().find(|m| m.version < latest)
            && !self.migrator.allow_out_of_order
        {
            return Err(MigrateError::OutOfOrder {
                schema: schema.to_owned(),
                version: early.version,
                file: early.up.path.to_string(),
                latest_applied: latest,
            });
        }
        Ok(Plan { pending, changed })
    }

    /// Runs one script inside the current transaction with `search_path` set to the schema.
    /// `Ok(Err(_))` is a script failure; the transaction is then aborted.
    async fn script_in_tx(
        &mut self,
        conn: &mut PgConnection,
        m: &Migration,
        script: &Script,
    ) -> Result<Result<(), Box<ScriptFailure>>, Error> {
        let prefix = format!("SET LOCAL search_path TO {};\n", self.schema);
        let sql = format!("{prefix}{}", script.sql);
        self.queries += 1;
        match sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn).await {
            Ok(_) => Ok(Ok(())),
            Err(e) => self.failure(e, m, script, |pos| {
                line_of_position(&script.sql, prefix.chars().count(), pos)
            }),
        }
    }

    /// Runs a non-transactional script statement by statement (PostgreSQL refuses
    /// `CREATE INDEX CONCURRENTLY` inside the implicit transaction of a multi-statement
    /// query).
    async fn script_statements(
        &mut self,
        conn: &mut PgConnection,
        m: &Migration,
        script: &Script,
    ) -> Result<Result<(), Box<ScriptFailure>>, Error> {
        for (offset, statement) in split_statements(&script.sql) {
            self.queries += 1;
            if let Err(e) = sqlx::raw_sql(AssertSqlSafe(statement.to_owned()))
                .execute(&mut *conn)
                .await
            {
                let first = line_of_offset(&script.sql, offset);
                return self
                    .failure(e, m, script, |pos| {
                        line_of_position(statement, 0, pos).map(|l| l + first - 1)
                    })
                    .map(|r| {
                        r.map_err(|mut f| {
                            f.line = f.line.or(Some(first));
                            f
                        })
                    });
            }
        }
        Ok(Ok(()))
    }

    /// PostgreSQL reports no position for some errors (`ALTER TABLE` on a missing table):
    /// replay the migration's earlier batch steps, then its statements one by one, to find
    /// the failing statement's line. Runs on the failure path only; the caller rolls back.
    async fn locate(
        &mut self,
        conn: &mut PgConnection,
        prior: &[&Migration],
        m: &Migration,
    ) -> Option<u32> {
        for p in prior {
            if !matches!(self.script_in_tx(conn, p, &p.up).await, Ok(Ok(()))) {
                return None;
            }
        }
        let set = format!("SET LOCAL search_path TO {}", self.schema);
        sqlx::raw_sql(AssertSqlSafe(set))
            .execute(&mut *conn)
            .await
            .ok()?;
        for (offset, statement) in split_statements(&m.up.sql) {
            self.queries += 1;
            if sqlx::raw_sql(AssertSqlSafe(statement.to_owned()))
                .execute(&mut *conn)
                .await
                .is_err()
            {
                return Some(line_of_offset(&m.up.sql, offset));
            }
        }
        None
    }

    fn failure(
        &self,
        error: sqlx::Error,
        m: &Migration,
        script: &Script,
        line: impl Fn(usize) -> Option<u32>,
    ) -> Result<Result<(), Box<ScriptFailure>>, Error> {
        let sqlx::Error::Database(db_error) = &error else {
            return Err(error.into());
        };
        let (sqlstate, line) = match db_error.try_downcast_ref::<PgDatabaseError>() {
            Some(pg) => (
                Some(pg.code().to_owned()),
                match pg.position() {
                    Some(PgErrorPosition::Original(pos)) => line(pos),
                    _ => None,
                },
            ),
            None => (db_error.code().map(|c| c.into_owned()), None),
        };
        let failure = ScriptFailure {
            schema: self.schema.as_str().to_owned(),
            version: m.version,
            file: script.path.to_string(),
            line,
            sqlstate,
            message: db_error.message().to_owned(),
        };
        tracing::error!(%failure, "migration failed");
        Ok(Err(Box::new(failure)))
    }

    /// The default mode: everything in one transaction. `None` if the locked read found a
    /// non-transactional migration pending (the caller switches modes).
    async fn up_in_transaction(&mut self, pool: &PgPool) -> Result<Option<Report>, Error> {
        let mut tx = pool.begin().await?;
        self.queries += 1;
        let state = self.lock_and_read(&mut tx, true).await?;
        let plan = self.plan(&state)?;
        if plan.pending.iter().any(|m| m.no_transaction) {
            return Ok(None);
        }
        let mut applied = vec![];
        for m in &plan.pending {
            let started = Instant::now();
            if let Err(mut failure) = self.script_in_tx(&mut tx, m, &m.up).await? {
                self.rollback_to_savepoint(&mut tx).await?;
                if failure.line.is_none() {
                    let prior: Vec<&Migration> = applied.iter().map(|(m, _)| *m).collect();
                    failure.line = self.locate(&mut tx, &prior, m).await;
                    self.rollback_to_savepoint(&mut tx).await?;
                }
                return Err(self.batch_failed(tx, m, failure).await);
            }
            let duration = started.elapsed();
            tracing::info!(version = m.version, name = %m.name, ?duration, "applied");
            applied.push((*m, duration));
        }
        for (m, old) in &plan.changed {
            self.accept_checksum(&mut tx, m, old).await?;
        }
        if !applied.is_empty() {
            self.record(&mut tx, Direction::Up, &applied, "applied")
                .await?;
        }
        self.queries += 1;
        tx.commit().await?;
        let mode = if applied.is_empty() {
            RunMode::NothingToDo
        } else {
            RunMode::Transactional
        };
        Ok(Some(self.report(mode, vec![], steps(&applied))))
    }

    /// Step by step under a session lock held on a dedicated connection, which is closed at
    /// the end whatever happened (closing releases the lock server-side too).
    async fn up_step_by_step(&mut self, pool: &PgPool) -> Result<Report, Error> {
        let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
        let result = self.up_step_by_step_on(&mut conn).await;
        self.release_session_lock(conn).await;
        result
    }

    /// Releases the step-by-step session lock and closes its dedicated connection. If the
    /// unlock fails the connection is dropped instead, which ends the session and with it
    /// the lock.
    async fn release_session_lock(&self, mut conn: PgConnection) {
        let unlock = format!(
            "SELECT pg_advisory_unlock({})",
            lock_key(self.schema.as_str())
        );
        if sqlx::raw_sql(AssertSqlSafe(unlock))
            .execute(&mut conn)
            .await
            .is_ok()
        {
            conn.close().await.ok();
        }
    }

    /// Undoes the batch's scripts since the savepoint; the framework's tables stay.
    async fn rollback_to_savepoint(&mut self, conn: &mut PgConnection) -> Result<(), Error> {
        self.queries += 1;
        sqlx::raw_sql(AssertSqlSafe(format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}")))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Ends a one-transaction batch that failed at `m` (already rolled back to the
    /// savepoint): logs the failure, commits the log entry, and returns the error to report.
    async fn batch_failed(
        &mut self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        m: &Migration,
        failure: Box<ScriptFailure>,
    ) -> Error {
        if let Err(e) = self.log_failure(&mut tx, m, &failure, "failed").await {
            return e;
        }
        self.queries += 1;
        if let Err(e) = tx.commit().await {
            return e.into();
        }
        MigrateError::Failed {
            failure,
            outcome: FailureOutcome::RolledBack,
        }
        .into()
    }

    async fn up_step_by_step_on(&mut self, conn: &mut PgConnection) -> Result<Report, Error> {
        let state = self.lock_and_read(conn, false).await?;
        let plan = self.plan(&state)?;
        for (m, old) in &plan.changed {
            self.accept_checksum(conn, m, old).await?;
        }
        let mut applied: Vec<(&Migration, Duration)> = vec![];
        for m in &plan.pending {
            let started = Instant::now();
            let outcome = self.step(conn, m, Direction::Up, "applied").await?;
            let duration = started.elapsed();
            if let Err(failure) = outcome {
                self.log_failure(conn, m, &failure, "failed").await?;
                let outcome = self.roll_back(conn, m, &applied).await?;
                return Err(MigrateError::Failed { failure, outcome }.into());
            }
            tracing::info!(version = m.version, name = %m.name, ?duration, "applied");
            applied.push((m, duration));
        }
        let mode = if applied.is_empty() {
            RunMode::NothingToDo
        } else {
            RunMode::StepByStep
        };
        Ok(self.report(mode, vec![], steps(&applied)))
    }

    /// One step with its own commit: the script and its bookkeeping in one transaction, or,
    /// for a non-transactional script, statement by statement and then the bookkeeping.
    async fn step(
        &mut self,
        conn: &mut PgConnection,
        m: &Migration,
        direction: Direction,
        event: &str,
    ) -> Result<Result<(), Box<ScriptFailure>>, Error> {
        let script = match direction {
            Direction::Up => &m.up,
            Direction::Down => m.down.as_ref().expect("checked reversible"),
        };
        let started = Instant::now();
        if has_no_transaction_directive(&script.sql) {
            self.queries += 1;
            sqlx::raw_sql(AssertSqlSafe(format!("SET search_path TO {}", self.schema)))
                .execute(&mut *conn)
                .await?;
            if let Err(failure) = self.script_statements(conn, m, script).await? {
                return Ok(Err(failure));
            }
            self.record(conn, direction, &[(m, started.elapsed())], event)
                .await?;
        } else {
            self.queries += 2;
            let mut tx = conn.begin().await?;
            if let Err(mut failure) = self.script_in_tx(&mut tx, m, script).await? {
                tx.rollback().await?;
                if failure.line.is_none() && direction == Direction::Up {
                    let mut tx = conn.begin().await?;
                    failure.line = self.locate(&mut tx, &[], m).await;
                    tx.rollback().await?;
                }
                return Ok(Err(failure));
            }
            self.record(&mut tx, direction, &[(m, started.elapsed())], event)
                .await?;
            tx.commit().await?;
        }
        Ok(Ok(()))
    }

    /// After `failed` failed in a step-by-step `up`: its own DOWN if it is
    /// non-transactional (a failed `CREATE INDEX CONCURRENTLY` leaves an invalid index),
    /// then the DOWNs of this deployment's steps, newest first.
    async fn roll_back(
        &mut self,
        conn: &mut PgConnection,
        failed: &Migration,
        applied: &[(&Migration, Duration)],
    ) -> Result<FailureOutcome, Error> {
        if let (true, Some(down)) = (failed.no_transaction, &failed.down) {
            let run = if has_no_transaction_directive(&down.sql) {
                self.script_statements(conn, failed, down).await?
            } else {
                let mut tx = conn.begin().await?;
                let r = self.script_in_tx(&mut tx, failed, down).await?;
                if r.is_ok() {
                    tx.commit().await?;
                } else {
                    tx.rollback().await?;
                }
                r
            };
            if let Err(f) = run {
                tracing::warn!(failure = %f, "cleanup of the failed non-transactional step failed");
            }
        }
        let mut reverted = vec![];
        for (m, _) in applied.iter().rev() {
            if m.down.is_none() {
                let reason = format!("{} has no .down.sql", m.up.path);
                let failure = ScriptFailure {
                    schema: self.schema.as_str().to_owned(),
                    version: m.version,
                    file: m.up.path.to_string(),
                    line: None,
                    sqlstate: None,
                    message: reason.clone(),
                };
                self.log_failure(conn, m, &failure, "rollback_failed")
                    .await?;
                return Ok(FailureOutcome::RollbackIncomplete {
                    reverted,
                    stuck: m.version,
                    reason,
                });
            }
            if let Err(failure) = self.step(conn, m, Direction::Down, "rolled_back").await? {
                self.log_failure(conn, m, &failure, "rollback_failed")
                    .await?;
                return Ok(FailureOutcome::RollbackIncomplete {
                    reverted,
                    stuck: m.version,
                    reason: failure.to_string(),
                });
            }
            tracing::warn!(version = m.version, name = %m.name, "rolled back");
            reverted.push(m.version);
        }
        Ok(FailureOutcome::Reverted { versions: reverted })
    }

    /// `down` (`reapply == false`) and `redo` (`reapply == true`): reverts the versions
    /// `choose` picks from the applied ones, newest first, then re-applies them for redo.
    async fn revert(
        mut self,
        pool: &PgPool,
        choose: impl Fn(&[Applied]) -> Vec<i64>,
        reapply: bool,
    ) -> Result<Report, Error> {
        // Decide the mode from an unlocked read; the locked read re-checks.
        let fast = self.read_state_unlocked(pool).await?;
        let Some(fast) = fast else {
            return Ok(self.report(RunMode::NothingToDo, vec![], vec![]));
        };
        let needs_steps = |run: &Self, state: &State| -> bool {
            choose(&state.applied).iter().any(|v| {
                run.source.find(*v).is_some_and(|m| {
                    m.down
                        .as_ref()
                        .is_some_and(|d| has_no_transaction_directive(&d.sql))
                        || (reapply && m.no_transaction)
                })
            })
        };
        if !needs_steps(&self, &fast) {
            let mut tx = pool.begin().await?;
            self.queries += 1;
            let state = self.lock_and_read(&mut tx, true).await?;
            let targets = self.revert_targets(&state, &choose)?;
            if !needs_steps(&self, &state) {
                let mut reverted = vec![];
                for m in &targets {
                    let started = Instant::now();
                    let down = m.down.as_ref().expect("checked reversible");
                    if let Err(failure) = self.script_in_tx(&mut tx, m, down).await? {
                        self.rollback_to_savepoint(&mut tx).await?;
                        return Err(self.batch_failed(tx, m, failure).await);
                    }
                    reverted.push((*m, started.elapsed()));
                }
                let mut applied = vec![];
                if reapply {
                    for m in targets.iter().rev() {
                        let started = Instant::now();
                        if let Err(failure) = self.script_in_tx(&mut tx, m, &m.up).await? {
                            self.rollback_to_savepoint(&mut tx).await?;
                            return Err(self.batch_failed(tx, m, failure).await);
                        }
                        applied.push((*m, started.elapsed()));
                    }
                }
                if !reverted.is_empty() {
                    self.record(&mut tx, Direction::Down, &reverted, "reverted")
                        .await?;
                }
                if !applied.is_empty() {
                    self.record(&mut tx, Direction::Up, &applied, "applied")
                        .await?;
                }
                self.queries += 1;
                tx.commit().await?;
                let mode = if reverted.is_empty() {
                    RunMode::NothingToDo
                } else {
                    RunMode::Transactional
                };
                return Ok(self.report(mode, steps(&reverted), steps(&applied)));
            }
        }
        let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
        let result = self.revert_step_by_step(&mut conn, &choose, reapply).await;
        self.release_session_lock(conn).await;
        result
    }

    async fn revert_step_by_step(
        &mut self,
        conn: &mut PgConnection,
        choose: &impl Fn(&[Applied]) -> Vec<i64>,
        reapply: bool,
    ) -> Result<Report, Error> {
        let state = self.lock_and_read(conn, false).await?;
        let targets = self.revert_targets(&state, choose)?;
        let mut reverted = vec![];
        for m in &targets {
            let started = Instant::now();
            if let Err(failure) = self.step(conn, m, Direction::Down, "reverted").await? {
                self.log_failure(conn, m, &failure, "failed").await?;
                return Err(MigrateError::Failed {
                    failure,
                    outcome: FailureOutcome::Stopped,
                }
                .into());
            }
            reverted.push((*m, started.elapsed()));
        }
        let mut applied = vec![];
        if reapply {
            for m in targets.iter().rev() {
                let started = Instant::now();
                if let Err(failure) = self.step(conn, m, Direction::Up, "applied").await? {
                    self.log_failure(conn, m, &failure, "failed").await?;
                    return Err(MigrateError::Failed {
                        failure,
                        outcome: FailureOutcome::Stopped,
                    }
                    .into());
                }
                applied.push((*m, started.elapsed()));
            }
        }
        let mode = if reverted.is_empty() {
            RunMode::NothingToDo
        } else {
            RunMode::StepByStep
        };
        Ok(self.report(mode, steps(&reverted), steps(&applied)))
    }

    /// The migrations to revert, newest first; all checked before anything runs.
    fn revert_targets(
        &self,
        state: &State,
        choose: &impl Fn(&[Applied]) -> Vec<i64>,
    ) -> Result<Vec<&'a Migration>, MigrateError> {
        let plan = self.plan(state)?;
        drop(plan);
        let mut targets = vec![];
        for version in choose(&state.applied) {
            let m = self
                .source
                .find(version)
                .expect("plan checked that applied files exist");
            if m.down.is_none() {
                return Err(MigrateError::Irreversible {
                    schema: self.schema.as_str().to_owned(),
                    version,
                    file: m.up.path.to_string(),
                });
            }
            targets.push(m);
        }
        Ok(targets)
    }

    /// Writes tracking rows (insert for up, delete for down) and their log rows in one query.
    async fn record(
        &mut self,
        conn: &mut PgConnection,
        direction: Direction,
        steps: &[(&Migration, Duration)],
        event: &str,
    ) -> Result<(), Error> {
        let s = self.schema;
        let input = "WITH input AS (SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::bool[]) \
                     AS t(version, name, checksum, duration_us, file, no_transaction))";
        let tracking = match direction {
            Direction::Up => format!(
                "tracked AS (INSERT INTO {s}._prost_db_migrations \
                 (version, name, checksum, duration_us, applied_by, deployment_id, no_transaction) \
                 SELECT version, name, checksum, duration_us, $7, $8, no_transaction FROM input)"
            ),
            Direction::Down => format!(
                "tracked AS (DELETE FROM {s}._prost_db_migrations WHERE version IN (SELECT version FROM input))"
            ),
        };
        let sql = format!(
            "{input}, {tracking} INSERT INTO {s}._prost_db_migration_log \
             (deployment_id, event, version, name, checksum, file, duration_us, applied_by) \
             SELECT $8, $9, version, name, checksum, file, duration_us, $7 FROM input"
        );
        let script = |m: &Migration| match direction {
            Direction::Up => m.up.path.to_string(),
            Direction::Down => m
                .down
                .as_ref()
                .map_or_else(String::new, |d| d.path.to_string()),
        };
        self.queries += 1;
        sqlx::query(AssertSqlSafe(sql))
            .bind(steps.iter().map(|(m, _)| m.version).collect::<Vec<_>>())
            .bind(
                steps
                    .iter()
                    .map(|(m, _)| m.name.to_string())
                    .collect::<Vec<_>>(),
            )
            .bind(
                steps
                    .iter()
                    .map(|(m, _)| self.source.checksum(m).to_owned())
                    .collect::<Vec<_>>(),
            )
            .bind(
                steps
                    .iter()
                    .map(|(_, d)| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
                    .collect::<Vec<_>>(),
            )
            .bind(steps.iter().map(|(m, _)| script(m)).collect::<Vec<_>>())
            .bind(
                steps
                    .iter()
                    .map(|(m, _)| m.no_transaction)
                    .collect::<Vec<_>>(),
            )
            .bind(&self.migrator.applied_by)
            .bind(self.deployment)
            .bind(event)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn log_failure(
        &mut self,
        conn: &mut PgConnection,
        m: &Migration,
        failure: &ScriptFailure,
        event: &str,
    ) -> Result<(), Error> {
        let s = self.schema;
        let sql = format!(
            "INSERT INTO {s}._prost_db_migration_log \
             (deployment_id, event, version, name, checksum, file, line, sqlstate, message, applied_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        );
        self.queries += 1;
        sqlx::query(AssertSqlSafe(sql))
            .bind(self.deployment)
            .bind(event)
            .bind(m.version)
            .bind(m.name.as_ref())
            .bind(self.source.checksum(m).to_owned())
            .bind(&failure.file)
            .bind(failure.line.and_then(|l| i32::try_from(l).ok()))
            .bind(&failure.sqlstate)
            .bind(&failure.message)
            .bind(&self.migrator.applied_by)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn accept_checksum(
        &mut self,
        conn: &mut PgConnection,
        m: &Migration,
        old: &str,
    ) -> Result<(), Error> {
        let s = self.schema;
        let sql = format!(
            "WITH updated AS (UPDATE {s}._prost_db_migrations SET checksum = $3 WHERE version = $1) \
             INSERT INTO {s}._prost_db_migration_log \
             (deployment_id, event, version, name, checksum, file, message, applied_by) \
             VALUES ($4, 'checksum_accepted', $1, $2, $3, $5, $6, $7)"
        );
        self.queries += 1;
        sqlx::query(AssertSqlSafe(sql))
            .bind(m.version)
            .bind(m.name.as_ref())
            .bind(self.source.checksum(m).to_owned())
            .bind(self.deployment)
            .bind(m.up.path.as_ref())
            .bind(format!(
                "edited after it was applied; previous checksum {old}"
            ))
            .bind(&self.migrator.applied_by)
            .execute(&mut *conn)
            .await?;
        tracing::warn!(version = m.version, file = %m.up.path, "accepted the checksum of an edited migration");
        Ok(())
    }
}

fn steps(done: &[(&Migration, Duration)]) -> Vec<StepReport> {
    done.iter()
        .map(|(m, duration)| StepReport {
            version: m.version,
            name: m.name.to_string(),
            duration: *duration,
        })
        .collect()
}

/// The schema or the framework's tables do not exist yet.
fn is_undefined(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if matches!(e.code().as_deref(), Some("42P01" | "3F000")))
}
