//! What can go wrong when migrating.

use std::fmt;

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

    /// Another run held the schema's migration lock for longer than the lock timeout.
    #[error(
        "gave up after {waited:?} waiting for the migration lock of schema {schema:?}, held by {}; \
         another deployment is migrating this schema, or a session hangs: look it up in \
         pg_stat_activity",
        holder.as_deref().unwrap_or("a session that has released it since")
    )]
    LockTimeout {
        /// The schema.
        schema: String,
        /// The configured timeout.
        waited: std::time::Duration,
        /// Who held the lock (pid, application, user, address), if still found.
        holder: Option<String>,
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
        f.write_str(&self.message)
    }
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
