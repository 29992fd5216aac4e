//! Script execution and error location: runs one script in the current transaction or
//! statement by statement, and turns the server's error into a [`ScriptFailure`] with the
//! file and line.

use std::pin::pin;
use std::time::Duration;

use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnection, PgDatabaseError, PgErrorPosition, PgPool};

use super::error::{BlockingSession, LOCK_NOT_AVAILABLE, ScriptFailure};
use super::lock::blocking_sessions;
use super::migrator::Run;
use super::script::{line_of_offset, line_of_position, split_statements};
use crate::Error;
use prost_db_core::source::{Migration, Script};

/// The outcome of one script: `Err` is the script's own failure (the transaction, if any,
/// is then aborted); the outer `Result` is for everything else (connection loss...).
pub(super) type ScriptResult = Result<Result<(), Box<ScriptFailure>>, Error>;

/// Sent before every script: back to the session's startup settings (the schema's
/// `search_path`, the migrator's timeouts), whatever an earlier script `SET`.
pub(super) const RESET: &str = "RESET ALL";

impl<'a> Run<'a> {
    /// Runs one script inside the current transaction, from the session's settings.
    /// `Ok(Err(_))` is a script failure; the transaction is then aborted.
    pub(super) async fn script_in_tx(
        &mut self,
        conn: &mut PgConnection,
        m: &Migration,
        script: &Script,
    ) -> ScriptResult {
        let prefix = format!("{RESET};\n");
        let sql = format!("{prefix}{}", script.sql);
        self.queries += 1;
        let watch = self.lock_watch();
        let (result, blocked_by) =
            watched(watch, sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn)).await;
        match result {
            Ok(_) => Ok(Ok(())),
            Err(e) => self.failure(e, m, script, blocked_by, |pos| {
                line_of_position(&script.sql, prefix.chars().count(), pos)
            }),
        }
    }

    /// Runs a non-transactional script statement by statement (PostgreSQL refuses
    /// `CREATE INDEX CONCURRENTLY` inside the implicit transaction of a multi-statement
    /// query).
    pub(super) async fn script_statements(
        &mut self,
        conn: &mut PgConnection,
        m: &Migration,
        script: &Script,
    ) -> ScriptResult {
        for (offset, statement) in split_statements(&script.sql) {
            self.queries += 1;
            let watch = self.lock_watch();
            let run = sqlx::raw_sql(AssertSqlSafe(statement.to_owned())).execute(&mut *conn);
            if let (Err(e), blocked_by) = watched(watch, run).await {
                let first = line_of_offset(&script.sql, offset);
                return self
                    .failure(e, m, script, blocked_by, |pos| {
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
    pub(super) async fn locate(
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
        sqlx::raw_sql(RESET).execute(&mut *conn).await.ok()?;
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

    /// The watch of the statement about to run on the session: only with a DDL lock
    /// timeout, which is what makes a lock wait fail.
    fn lock_watch(&self) -> Option<LockWatch<'a>> {
        let timeout = self.migrator.ddl_lock_timeout?;
        Some(LockWatch {
            pool: self.pool,
            pid: self.session_pid?,
            every: (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
        })
    }

    fn failure(
        &self,
        error: sqlx::Error,
        m: &Migration,
        script: &Script,
        blocked_by: Vec<BlockingSession>,
        line: impl Fn(usize) -> Option<u32>,
    ) -> ScriptResult {
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
            blocked_by: if sqlstate.as_deref() == Some(LOCK_NOT_AVAILABLE) {
                blocked_by
            } else {
                vec![]
            },
            sqlstate,
            message: db_error.message().to_owned(),
        };
        tracing::error!(%failure, "migration failed");
        Ok(Err(Box::new(failure)))
    }
}

/// Whom a statement on the session waits for, looked up from the pool while it runs.
#[derive(Clone, Copy)]
struct LockWatch<'p> {
    pool: &'p PgPool,
    pid: i32,
    every: Duration,
}

/// Runs `work` and, each `every` it is still running, records the sessions it waits for
/// (a quick statement costs nothing; the lookup needs a connection of the pool). After a
/// lock wait ran out, the last sessions seen are the ones that held the lock.
async fn watched<T>(
    watch: Option<LockWatch<'_>>,
    work: impl Future<Output = T>,
) -> (T, Vec<BlockingSession>) {
    let Some(watch) = watch else {
        return (work.await, vec![]);
    };
    let mut work = pin!(work);
    let mut seen = vec![];
    loop {
        tokio::select! {
            biased;
            out = &mut work => return (out, seen),
            () = tokio::time::sleep(watch.every) => {}
        }
        tokio::select! {
            biased;
            out = &mut work => return (out, seen),
            found = blocking_sessions(watch.pool, watch.pid, watch.every) => {
                if !found.is_empty() {
                    seen = found;
                }
            }
        }
    }
}
