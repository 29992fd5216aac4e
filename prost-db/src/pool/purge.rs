//! Batched deletes of old rows, shared by the outbox and idempotency purges.

use std::time::Duration;

use sqlx::AssertSqlSafe;
use sqlx::postgres::PgPool;

use super::Statements;
use crate::error::{Error, Origin, Result};

/// Purges delete at most this many rows per statement: each batch is a transaction of its
/// own, so the locks it holds and the WAL it writes stay bounded however much is old.
pub(crate) const PURGE_BATCH_ROWS: i64 = 5_000;

/// Deletes the rows of `table` (schema-qualified, quoted) whose `column` is older than
/// `horizon`, in batches of [`PURGE_BATCH_ROWS`], and returns how many it deleted. The
/// cutoff is fixed once, on the server's clock, so rows that age past the horizon while the
/// purge runs stay for the next one. `table` and `column` are SQL of our own, never input.
pub(crate) async fn purge_in_batches(
    pool: &PgPool,
    table: &str,
    column: &str,
    horizon: Duration,
) -> Result<u64> {
    let map = |e| Error::from_sqlx(e, Origin::Pool(pool));
    let horizon = sqlx::postgres::types::PgInterval::try_from(horizon)
        .map_err(|_| Error::Config(format!("purge horizon {horizon:?} is out of range")))?;
    // Each statement runs in a transaction of its own, with unnamed statements: that holds
    // on any pool, behind a transaction pooler too (see `Db::autocommit`), and costs two
    // round trips per few thousand rows.
    let statements = Statements::UNNAMED;
    let mut tx = pool.begin().await.map_err(map)?;
    let cutoff: chrono::DateTime<chrono::Utc> = statements
        .query_scalar("SELECT now() - $1")
        .bind(horizon)
        .fetch_one(&mut *tx)
        .await
        .map_err(map)?;
    tx.commit().await.map_err(map)?;
    // A TID scan: the batch's rows are found once and deleted by their physical address.
    let batch = format!(
        "DELETE FROM {table} WHERE ctid = ANY(ARRAY( \
             SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2))"
    );
    let mut deleted = 0;
    loop {
        let mut tx = pool.begin().await.map_err(map)?;
        let done = statements
            .query(AssertSqlSafe(batch.as_str()))
            .bind(cutoff)
            .bind(PURGE_BATCH_ROWS)
            .execute(&mut *tx)
            .await
            .map_err(map)?;
        tx.commit().await.map_err(map)?;
        deleted += done.rows_affected();
        if done.rows_affected() < PURGE_BATCH_ROWS as u64 {
            return Ok(deleted);
        }
    }
}
