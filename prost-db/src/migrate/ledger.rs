//! The ledger SQL: the framework bootstrap, reading the recorded state, and writing the
//! tracking rows and the audit log.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{AssertSqlSafe, Row};

use super::batch::SAVEPOINT;
use super::error::ScriptFailure;
use super::migrator::Run;
use super::plan::{Applied, Recorded, State};
use crate::Error;
use crate::framework;
use prost_db_core::source::Migration;

/// Which way a step goes, and so which bookkeeping it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Up,
    Down,
}

impl Run<'_> {
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
    pub(super) async fn everything_applied(&mut self) -> Result<bool, Error> {
        let s = self.schema;
        let sql = format!(
            "SELECT (SELECT coalesce(max(step), 0) FROM {s}._prost_db_framework)::int8, \
             coalesce(encode(sha256(convert_to(string_agg(version::text || ':' || checksum, ',' \
             ORDER BY version), 'UTF8')), 'hex'), '') FROM {s}._prost_db_migrations"
        );
        self.queries += 1;
        // Prepared (and cached per connection): the no-op path is planned once.
        match sqlx::query(AssertSqlSafe(sql)).fetch_one(self.pool).await {
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

    pub(super) async fn read_state_unlocked(&mut self) -> Result<Option<State>, Error> {
        self.queries += 1;
        match sqlx::raw_sql(AssertSqlSafe(self.state_sql()))
            .fetch_all(self.pool)
            .await
        {
            Ok(rows) => Ok(Some(Self::parse_state(&rows)?)),
            Err(e) if is_undefined(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// One round trip: take the transaction-scoped lock, create what is missing, read the
    /// state, and open the savepoint a failure rolls back to.
    pub(super) async fn lock_and_read(
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

    /// Writes tracking rows (insert for up, delete for down) and their log rows in one query.
    pub(super) async fn record(
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

    pub(super) async fn log_failure(
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
            .bind(failure.detail())
            .bind(&self.migrator.applied_by)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    pub(super) async fn accept_checksum(
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

    /// The tracking table's rows, for `status`; none if the framework's tables are missing.
    pub(super) async fn read_recorded(&mut self) -> Result<Vec<Recorded>, Error> {
        let schema = self.schema;
        let sql = format!(
            "SELECT version, name, checksum, applied_at, applied_by FROM {schema}._prost_db_migrations ORDER BY version"
        );
        self.queries += 1;
        let rows: Vec<(i64, String, String, DateTime<Utc>, String)> =
            match sqlx::query_as(AssertSqlSafe(sql))
                .fetch_all(self.pool)
                .await
            {
                Ok(rows) => rows,
                Err(e) if is_undefined(&e) => vec![],
                Err(e) => return Err(e.into()),
            };
        Ok(rows
            .into_iter()
            .map(
                |(version, name, checksum, applied_at, applied_by)| Recorded {
                    version,
                    name,
                    checksum,
                    applied_at,
                    applied_by,
                },
            )
            .collect())
    }
}

/// The schema or the framework's tables do not exist yet.
fn is_undefined(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if matches!(e.code().as_deref(), Some("42P01" | "3F000")))
}
