//! The DDL of the partitioned layout: the parent, the default partition, the conversion of a plain table, and the creation of a day.

use chrono::NaiveDate;
use sqlx::AssertSqlSafe;

use super::partitions::{OTHER_PARTITION, bound, day_start, partition, qualified, run, sql};
use crate::error::{Error, Result};
use crate::pool::Db;

const COLUMNS: &str =
    "id, event_id, service_name, action, payload_hash, result, permanent_error, created_at";

/// The partitioned parent: the plain layout's columns and key, partitioned on `event_id`.
const PARENT: &str = r#"
CREATE TABLE {schema}.idempotency_records (
    id              BIGINT      GENERATED ALWAYS AS IDENTITY,
    event_id        TEXT        COLLATE "C" NOT NULL,
    service_name    TEXT        COLLATE "C" NOT NULL,
    action          TEXT        COLLATE "C" NOT NULL,
    payload_hash    BYTEA,
    result          JSONB,
    permanent_error BOOLEAN     NOT NULL DEFAULT false,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_records_key PRIMARY KEY (event_id, service_name, action)
) PARTITION BY RANGE (event_id);
"#;

const DEFAULT_PARTITION: &str = r#"
CREATE TABLE {schema}.idempotency_records_other PARTITION OF {schema}.idempotency_records DEFAULT;
CREATE INDEX idempotency_records_other_created_at
    ON {schema}.idempotency_records_other USING brin (created_at);
"#;

/// A plain table that holds records becomes the default partition, keeping its rows.
const PLAIN_TO_DEFAULT: &str = r#"
ALTER TABLE {schema}.idempotency_records RENAME TO idempotency_records_other;
ALTER TABLE {schema}.idempotency_records_other ALTER COLUMN id DROP IDENTITY;
ALTER TABLE {schema}.idempotency_records_other
    RENAME CONSTRAINT idempotency_records_key TO idempotency_records_other_key;
"#;

const ATTACH_DEFAULT: &str = "ALTER TABLE {schema}.idempotency_records \
     ATTACH PARTITION {schema}.idempotency_records_other DEFAULT";

/// Creates `day`'s partition, moving into it the records the default partition holds for
/// it, and attaches it (SHARE UPDATE EXCLUSIVE on the parent). Returns the rows moved.
pub(super) async fn create_day(tx: &mut super::Tx, db: &Db, day: NaiveDate) -> Result<u64> {
    let schema = db.schema_ident();
    let part = partition(day)?;
    let (low, high) = (
        bound(day_start(day))?,
        bound(day_start(day + chrono::Days::new(1)))?,
    );
    let create = format!(
        "CREATE TABLE {schema}.{part} (LIKE {schema}.idempotency_records INCLUDING DEFAULTS)"
    );
    let attach = format!(
        "ALTER TABLE {schema}.idempotency_records ATTACH PARTITION {schema}.{part} \
         FOR VALUES FROM ('{low}') TO ('{high}')"
    );
    let move_rows = format!(
        "WITH moved AS (DELETE FROM {schema}.{OTHER_PARTITION} \
             WHERE event_id >= $1 AND event_id < $2 RETURNING {COLUMNS}) \
         INSERT INTO {schema}.{part} ({COLUMNS}) SELECT {COLUMNS} FROM moved"
    );
    let map = |e| db.map_err(e);
    sqlx::raw_sql(AssertSqlSafe(create))
        .execute(&mut **tx)
        .await
        .map_err(map)?;
    let moved = db
        .query(AssertSqlSafe(move_rows))
        .bind(&low)
        .bind(&high)
        .execute(&mut **tx)
        .await
        .map_err(map)?
        .rows_affected();
    sqlx::raw_sql(AssertSqlSafe(attach))
        .execute(&mut **tx)
        .await
        .map_err(map)?;
    Ok(moved)
}

/// Detaches `day`'s partition: catalog rows only, under a brief ACCESS EXCLUSIVE lock on the
/// parent (and on the default partition, whose implicit range takes the day back).
pub(super) async fn detach_day(tx: &mut super::Tx, db: &Db, day: NaiveDate) -> Result<()> {
    let schema = db.schema_ident();
    let detach = format!(
        "ALTER TABLE {schema}.idempotency_records DETACH PARTITION {schema}.{}",
        partition(day)?
    );
    sqlx::raw_sql(AssertSqlSafe(detach))
        .execute(&mut **tx)
        .await
        .map_err(|e| db.map_err(e))?;
    Ok(())
}

/// Drops the tables of detached `days` in one query. Their files go at commit, under locks
/// on those tables only.
pub(super) async fn drop_detached(tx: &mut super::Tx, db: &Db, days: &[NaiveDate]) -> Result<()> {
    let mut drop = String::new();
    for &day in days {
        drop += &format!(
            "DROP TABLE IF EXISTS {}.{};",
            db.schema_ident(),
            partition(day)?
        );
    }
    sqlx::raw_sql(AssertSqlSafe(drop))
        .execute(&mut **tx)
        .await
        .map_err(|e| db.map_err(e))?;
    Ok(())
}

pub(super) async fn create_empty(tx: &mut super::Tx, db: &Db) -> Result<()> {
    run(tx, db, PARENT).await?;
    run(tx, db, DEFAULT_PARTITION).await
}

/// The plain table holding records becomes the default partition of a new parent, and the
/// parent's ids continue after its last one.
pub(super) async fn convert_holding(tx: &mut super::Tx, db: &Db) -> Result<()> {
    run(tx, db, PLAIN_TO_DEFAULT).await?;
    run(tx, db, PARENT).await?;
    run(tx, db, ATTACH_DEFAULT).await?;
    db.query(sql(
        "SELECT setval(pg_get_serial_sequence($1, 'id'), \
             (SELECT coalesce(max(id), 0) + 1 FROM {schema}.idempotency_records), false)",
        db,
    ))
    .bind(qualified(db))
    .execute(&mut **tx)
    .await
    .map_err(|e| db.map_err(e))?;
    Ok(())
}

/// [`IdempotencyStore::purge_older_than`](super::IdempotencyStore::purge_older_than)'s
/// guard: its batched `DELETE` finds rows by `ctid`, which is unique only within one
/// partition, so on the partitioned layout it could delete live records of other days.
pub(super) async fn refuse_partitioned(db: &Db) -> Result<()> {
    // Outside a transaction: behind a pooler, in one of its own (see `Db::autocommit`).
    let kind: Option<String> = db
        .autocommit(async |conn| {
            db.query_scalar("SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)")
                .bind(qualified(db))
                .fetch_optional(conn)
                .await
        })
        .await?;
    if kind.as_deref() == Some("p") {
        return Err(Error::Config(format!(
            "{}.idempotency_records is partitioned: expire its records with PartitionedRecords::maintain, not purge_older_than",
            db.schema()
        )));
    }
    Ok(())
}
