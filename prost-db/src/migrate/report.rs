//! Report types: what a run, a status query and a dry run hand back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::ScriptFailure;
use prost_db_core::source::Migration;

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

/// A migration's state, as [`Migrator::status`](super::Migrator::status) sees it.
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

/// The result of [`Migrator::status`](super::Migrator::status).
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

/// The result of [`Migrator::dry_run`](super::Migrator::dry_run): the pending batch was executed, then its DOWN
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

/// The report lines of the steps a run did, in order.
pub(super) fn step_reports(done: &[(&Migration, Duration)]) -> Vec<StepReport> {
    done.iter()
        .map(|(m, duration)| StepReport {
            version: m.version,
            name: m.name.to_string(),
            duration: *duration,
        })
        .collect()
}
