//! Script execution and error location: runs one script in the current transaction or
//! statement by statement, and turns the server's error into a [`ScriptFailure`] with the
//! file and line.

use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnection, PgDatabaseError, PgErrorPosition};

use super::error::ScriptFailure;
use super::migrator::Run;
use super::script::{line_of_offset, line_of_position, split_statements};
use crate::Error;
use prost_db_core::source::{Migration, Script};

/// The outcome of one script: `Err` is the script's own failure (the transaction, if any,
/// is then aborted); the outer `Result` is for everything else (connection loss...).
pub(super) type ScriptResult = Result<Result<(), Box<ScriptFailure>>, Error>;

impl Run<'_> {
    /// Runs one script inside the current transaction with `search_path` set to the schema.
    /// `Ok(Err(_))` is a script failure; the transaction is then aborted.
    pub(super) async fn script_in_tx(
        &mut self,
        conn: &mut PgConnection,
        m: &Migration,
        script: &Script,
    ) -> ScriptResult {
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
    pub(super) async fn script_statements(
        &mut self,
        conn: &mut PgConnection,
        m: &Migration,
        script: &Script,
    ) -> ScriptResult {
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
            sqlstate,
            message: db_error.message().to_owned(),
        };
        tracing::error!(%failure, "migration failed");
        Ok(Err(Box::new(failure)))
    }
}
