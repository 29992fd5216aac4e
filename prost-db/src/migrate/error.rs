//! What can go wrong when migrating.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use prost_db_core::source::SourceError;

/// Why a migration run stopped. Every variant names the schema and, where there is one,
/// the file.
///
/// ```
/// use prost_db::migrate::MigrateError;
///
/// let err = MigrateError::Missing {
///     schema: "catalog".into(),
///     version: 3,
///     file: "migrations/shop/catalog/0003_add_tags.up.sql".into(),
/// };
/// assert!(err.to_string().contains("0003_add_tags.up.sql"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The migration files could not be loaded (bad name, duplicate version, empty file...).
    #[error(transparent)]
    Source(#[from] SourceError),

    /// An applied migration's file was edited after it was applied.
    #[error(
        "applied migration {version} of schema {schema:?} was edited after it was applied: {file} \
         (checksum {applied} in the database, {current} on disk); restore the file and add a new \
         migration for the change, or, for a deliberate edit, run with `accept_changed` \
         (`--accept-changed`) to record the new checksum"
    )]
    Changed {
        /// The schema.
        schema: String,
        /// The migration's version.
        version: i64,
        /// The file as it is now.
        file: String,
        /// The checksum recorded when it was applied.
        applied: String,
        /// The checksum of the file now.
        current: String,
    },

    /// An applied migration has no file any more.
    #[error(
        "applied migration {version} of schema {schema:?} is missing: {file} does not exist; \
         restore it (an applied migration must stay in the migrations directory)"
    )]
    Missing {
        /// The schema.
        schema: String,
        /// The migration's version.
        version: i64,
        /// Where the file was expected.
        file: String,
    },

    /// A pending migration is older than the newest applied one.
    #[error(
        "migration {file} (version {version}) is pending but version {latest_applied} of schema \
         {schema:?} is already applied; give it a version above {latest_applied}, or allow \
         out-of-order migrations"
    )]
    OutOfOrder {
        /// The schema.
        schema: String,
        /// The pending migration's version.
        version: i64,
        /// Its file.
        file: String,
        /// The newest applied version.
        latest_applied: i64,
    },

    /// A script failed. `outcome` says what state the schema was left in.
    #[error("{failure}; {outcome}")]
    Failed {
        /// The failed script and the database's error.
        failure: Box<ScriptFailure>,
        /// What the runner did about it.
        outcome: FailureOutcome,
    },

    /// `down` would have to revert a migration that has no `.down.sql`.
    #[error(
        "migration {version} of schema {schema:?} is irreversible: {file} has no matching \
         .down.sql; nothing was reverted"
    )]
    Irreversible {
        /// The schema.
        schema: String,
        /// The migration's version.
        version: i64,
        /// Its up script.
        file: String,
    },

    /// `reset` was refused because the database is not named like a test database.
    #[error(
        "refusing to reset schema {schema:?} of database {database:?}: it is not named like a \
         test database (`prost_test_*`, `test_*`, `*_test` or `test`); reset drops every object \
         in the schema, so allow it explicitly (`Migrator::allow_reset(true)`, `--force`) if \
         this really is a throwaway database"
    )]
    ResetRefused {
        /// The schema.
        schema: String,
        /// The database.
        database: String,
    },

    /// The [`Db`](crate::Db) goes through a transaction pooler
    /// ([`Pooler::Transaction`](crate::Pooler::Transaction)) and has no direct URL for
    /// migrations: the migrator's session advisory lock and session settings would land on
    /// whichever server connection the pooler picks for each statement.
    #[error(
        "refusing to migrate schema {schema:?} through a transaction pooler: the migration lock \
         and session settings need a server connection of their own; set a direct URL to \
         PostgreSQL for migrations (`DbConfig::migrate_url`, or PROST_DB_MIGRATE_URL), or run \
         `prost-db migrate` with a DATABASE_URL that does not go through the pooler"
    )]
    ThroughPooler {
        /// The schema.
        schema: String,
    },

    /// Another run held the schema's migration lock for longer than the configured
    /// [`lock_wait`](crate::migrate::Migrator::lock_wait).
    #[error(
        "gave up after {waited:?} (lock_wait) waiting for the migration lock of schema {schema:?}, \
         held by {}; another deployment is migrating this schema, or a session hangs: look it \
         up in pg_stat_activity",
        holder.as_ref().map_or_else(|| "a session that has released it since".to_owned(), ToString::to_string)
    )]
    LockWaitTimedOut {
        /// The schema.
        schema: String,
        /// How long the run waited.
        waited: Duration,
        /// The session that held the lock, if it still did when the wait ended.
        holder: Option<Box<BlockingSession>>,
    },

    /// A migrator setting that PostgreSQL (or the lock wait, which follows the same rule)
    /// cannot take.
    #[error(
        "{setting} of {value:?} is beyond PostgreSQL's limit of 2147483647 ms (about 24.8 days); \
         give a shorter duration, or none for no limit"
    )]
    SettingOutOfRange {
        /// The builder method (and CLI flag stem) that got it: `lock_wait`,
        /// `ddl_lock_timeout` or `statement_timeout`.
        setting: &'static str,
        /// The rejected value.
        value: Duration,
    },

    /// The migrations root has no directory for the schema.
    #[error("the migrations have no directory for schema {schema:?} (known: {known})")]
    UnknownSchema {
        /// The schema asked for.
        schema: String,
        /// The schemas the root has, comma-separated.
        known: String,
    },
}

/// A script that PostgreSQL rejected, located in its file.
///
/// ```no_run
/// use prost_db::migrate::MigrateError;
///
/// # async fn run(migrator: prost_db::migrate::Migrator, db: prost_db::Db) {
/// if let Err(prost_db::Error::Migrate(e)) = migrator.up(&db).await {
///     if let MigrateError::Failed { failure, .. } = *e {
///         eprintln!("{}:{} [{}] {}", failure.file, failure.line.unwrap_or(0),
///                   failure.sqlstate.as_deref().unwrap_or("?"), failure.message);
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptFailure {
    /// The schema.
    pub schema: String,
    /// The migration's version.
    pub version: i64,
    /// The script's file.
    pub file: String,
    /// The 1-based line of the failing statement, when PostgreSQL reported a position or
    /// the statement was sent on its own.
    pub line: Option<u32>,
    /// The SQLSTATE code (`42601` for a syntax error), if the server sent one.
    pub sqlstate: Option<String>,
    /// The server's message.
    pub message: String,
    /// When a lock wait ran out (SQLSTATE `55P03`, the
    /// [`ddl_lock_timeout`](crate::migrate::Migrator::ddl_lock_timeout)): the sessions the
    /// script was seen waiting for. Empty otherwise.
    pub blocked_by: Vec<BlockingSession>,
}

/// SQLSTATE `lock_not_available`: a lock wait ran out (`lock_timeout`, `NOWAIT`).
pub(super) const LOCK_NOT_AVAILABLE: &str = "55P03";

impl ScriptFailure {
    /// The server's message and, after a lock wait ran out, who held the lock: what the
    /// migration log records.
    pub(super) fn detail(&self) -> String {
        if self.blocked_by.is_empty() {
            self.message.clone()
        } else {
            format!(
                "{}; blocked by {}",
                self.message,
                sessions(&self.blocked_by)
            )
        }
    }
}

impl fmt::Display for ScriptFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "migration {} of schema {:?} failed at {}",
            self.version, self.schema, self.file
        )?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(code) = &self.sqlstate {
            write!(f, "[{code}] ")?;
        }
        f.write_str(&self.message)?;
        if self.sqlstate.as_deref() == Some(LOCK_NOT_AVAILABLE) {
            match self.blocked_by.as_slice() {
                [] => f.write_str(
                    " (a lock wait ran out; the session holding the lock was not seen)",
                )?,
                held => write!(
                    f,
                    " (a lock wait ran out; the lock was held by {})",
                    sessions(held)
                )?,
            }
            f.write_str(
                "; the statement gave up, so nothing queues behind it: retry when that \
                 transaction has ended, end it, or raise ddl_lock_timeout (--ddl-lock-timeout-ms)",
            )?;
        }
        Ok(())
    }
}

/// A session that held a lock a migration waited for, as `pg_stat_activity` showed it.
///
/// ```
/// use prost_db::migrate::BlockingSession;
///
/// # fn show(session: &BlockingSession) {
/// eprintln!("blocked by pid {} ({})", session.pid, session.state.as_deref().unwrap_or("?"));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockingSession {
    /// The backend's process id (`pg_terminate_backend(pid)` ends it).
    pub pid: i32,
    /// Its `application_name`.
    pub application_name: String,
    /// The role it is logged in as.
    pub user: String,
    /// `active`, `idle in transaction`... (`None` if not visible to this role).
    pub state: Option<String>,
    /// The client's address, or `local socket`.
    pub client: String,
    /// When its current transaction started.
    pub transaction_start: Option<DateTime<Utc>>,
    /// When its current or last query started.
    pub query_start: Option<DateTime<Utc>>,
}

impl fmt::Display for BlockingSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "backend pid {} (application {:?}, user {:?}, {}, from {}",
            self.pid,
            self.application_name,
            self.user,
            self.state.as_deref().unwrap_or("state not visible"),
            self.client
        )?;
        if let Some(t) = self.transaction_start {
            write!(f, ", in a transaction since {t}")?;
        }
        if let Some(t) = self.query_start {
            write!(f, ", query started {t}")?;
        }
        f.write_str(")")
    }
}

fn sessions(sessions: &[BlockingSession]) -> String {
    sessions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the runner did after a script failed.
///
/// ```
/// use prost_db::migrate::FailureOutcome;
///
/// let outcome = FailureOutcome::Reverted { versions: vec![2, 1] };
/// assert!(outcome.to_string().contains("(2 -> 1)"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureOutcome {
    /// The batch ran in one transaction, which was rolled back: the schema is as it was.
    RolledBack,
    /// Step-by-step run: the DOWN scripts of the steps this deployment had applied ran,
    /// newest first (the listed versions); the schema is as it was.
    Reverted {
        /// The versions reverted, in the order their DOWN scripts ran.
        versions: Vec<i64>,
    },
    /// Step-by-step run: the automatic rollback could not finish. The listed versions were
    /// reverted; `stuck` is still applied and needs a person.
    RollbackIncomplete {
        /// The versions reverted.
        reverted: Vec<i64>,
        /// The version whose DOWN is missing or failed.
        stuck: i64,
        /// Why.
        reason: String,
    },
    /// A step-by-step `down` or `redo` stopped; the steps before it stay done.
    Stopped,
}

impl fmt::Display for FailureOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureOutcome::RolledBack => f.write_str(
                "nothing was changed: the schema's pending migrations ran in one transaction, which was rolled back",
            ),
            FailureOutcome::Reverted { versions } if versions.is_empty() => {
                f.write_str("nothing had been applied by this deployment, nothing to revert")
            }
            FailureOutcome::Reverted { versions } => write!(
                f,
                "the DOWN scripts of the steps this deployment applied ran automatically ({}); the schema is as it was",
                join(versions)
            ),
            FailureOutcome::RollbackIncomplete { reverted, stuck, reason } => write!(
                f,
                "automatic rollback INCOMPLETE: reverted [{}], but migration {stuck} could not be reverted ({reason}); fix it by hand, see the migration log",
                join(reverted)
            ),
            FailureOutcome::Stopped => f.write_str("the steps before it stay done"),
        }
    }
}

fn join(versions: &[i64]) -> String {
    versions
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(" -> ")
}

impl From<MigrateError> for crate::Error {
    fn from(error: MigrateError) -> Self {
        crate::Error::Migrate(Box::new(error))
    }
}

impl From<SourceError> for crate::Error {
    fn from(error: SourceError) -> Self {
        MigrateError::Source(error).into()
    }
}
