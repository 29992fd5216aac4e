//! The lock protocol: one runner per (database, schema), through an advisory lock that is
//! tried, never waited for inside a statement.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnection, PgPool, PgRow};

use super::error::{BlockingSession, MigrateError};
use super::migrator::Run;
use crate::Error;

/// The message of the error a busy migration lock raises.
const LOCK_BUSY: &str = "prost-db: the migration lock is busy";

/// The advisory-lock key the runner uses for `schema` (the same in every database; advisory
/// locks are per database already). Look for it in `pg_locks.objid`/`classid` when a run
/// seems to wait.
///
/// ```
/// let key = prost_db::migrate::lock_key("catalog");
/// assert_eq!(key, prost_db::migrate::lock_key("catalog"));
/// assert_ne!(key, prost_db::migrate::lock_key("orders"));
/// ```
pub fn lock_key(schema: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("prost-db migrate\0{schema}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

impl Run<'_> {
    /// Takes the schema's migration lock (transaction-scoped if `transactional`, else for
    /// the session) and runs `then` in the same round trip, returning its rows.
    pub(super) async fn locked(
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
                Ok(rows) => {
                    self.session_locked |= !transactional;
                    return Ok(rows);
                }
                Err(sqlx::Error::Database(e)) if e.message() == LOCK_BUSY => {
                    if transactional {
                        self.queries += 1;
                        sqlx::raw_sql("ROLLBACK AND CHAIN")
                            .execute(&mut *conn)
                            .await?;
                    }
                    if let Some(wait) = self.migrator.lock_wait
                        && started.elapsed() >= wait
                    {
                        let holder = self.lock_holder(key).await;
                        return Err(MigrateError::LockWaitTimedOut {
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

    /// Who holds the schema's migration lock, for the lock-wait error.
    async fn lock_holder(&self, key: i64) -> Option<Box<BlockingSession>> {
        // A bigint advisory key shows in pg_locks as classid (high half) and objid (low half).
        let high = key >> 32;
        let low = key & 0xffff_ffff;
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND l.classid = ($1::int8 & 4294967295)::oid AND l.objid = $2::int8::oid"
        );
        let row: Option<SessionRow> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(high)
            .bind(low)
            .fetch_optional(self.pool)
            .await
            .ok()
            .flatten();
        row.map(|row| Box::new(blocking_session(row)))
    }

    /// Releases the step-by-step session lock.
    pub(super) async fn release_session_lock(
        &self,
        conn: &mut PgConnection,
    ) -> Result<(), sqlx::Error> {
        let unlock = format!(
            "SELECT pg_advisory_unlock({})",
            lock_key(self.schema.as_str())
        );
        sqlx::raw_sql(AssertSqlSafe(unlock))
            .execute(&mut *conn)
            .await
            .map(drop)
    }
}

/// The sessions that backend `pid` waits for right now (`pg_blocking_pids`), read through
/// `pool`; none if the pool has no connection to spare within `patience`.
pub(super) async fn blocking_sessions(
    pool: &PgPool,
    pid: i32,
    patience: Duration,
) -> Vec<BlockingSession> {
    let Ok(Ok(mut conn)) = tokio::time::timeout(patience, pool.acquire()).await else {
        return vec![];
    };
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM pg_stat_activity a \
         WHERE a.pid = ANY (pg_blocking_pids($1)) ORDER BY a.pid"
    );
    let rows: Vec<SessionRow> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(pid)
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_default();
    rows.into_iter().map(blocking_session).collect()
}

/// What identifies a session of `pg_stat_activity a`, in [`SessionRow`] order.
const SESSION_COLUMNS: &str = "a.pid, coalesce(a.application_name, ''), \
     coalesce(a.usename::text, ''), a.state, coalesce(host(a.client_addr), 'local socket'), \
     a.xact_start, a.query_start";

/// pid, application, user, state, address, transaction start, query start.
type SessionRow = (
    i32,
    String,
    String,
    Option<String>,
    String,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

fn blocking_session(row: SessionRow) -> BlockingSession {
    let (pid, application_name, user, state, client, transaction_start, query_start) = row;
    BlockingSession {
        pid,
        application_name,
        user,
        state,
        client,
        transaction_start,
        query_start,
    }
}
