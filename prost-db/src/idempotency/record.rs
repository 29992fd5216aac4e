//! The `idempotency_records` table: its DDL, and every statement on one record.

use std::time::Duration;

use sqlx::AssertSqlSafe;
use sqlx::types::Json;

use super::Fingerprint;
use super::partitions::EXPIRED_CONSTRAINT;
use super::store::Tx;
use crate::error::{Error, Result};
use crate::pool::Db;

/// The table, in the schema that replaces `{schema}`: the framework's released step. The
/// primary key is the unique key `(event_id, service_name, action)`, compared byte-wise;
/// retention scans `created_at` through a BRIN index.
pub(crate) const DDL: &str = crate::framework::STEP_2_IDEMPOTENCY_RECORDS;

const SELECT: &str = "SELECT payload_hash, result, permanent_error, created_at \
     FROM {schema}.idempotency_records \
     WHERE event_id = $1 AND service_name = $2 AND action = $3";

/// Claims the key: inserts a record without result unless the key is taken. The same
/// statement sets the transaction's `lock_timeout` (`set_config(..., true)` is `SET LOCAL`),
/// before the insert can wait for an uncommitted twin, so the bound costs no round trip of
/// its own. 1 row: claimed. 0 rows: a committed record holds the key, and the `SELECT`
/// that follows (a new snapshot, in READ COMMITTED) reads it.
const CLAIM: &str = "INSERT INTO {schema}.idempotency_records \
     (event_id, service_name, action, payload_hash) \
     SELECT $1, $2, $3, $4 FROM (SELECT set_config('lock_timeout', $5, true)) AS lock_timeout \
     ON CONFLICT (event_id, service_name, action) DO NOTHING";

const INSERT: &str = "INSERT INTO {schema}.idempotency_records \
     (event_id, service_name, action, payload_hash, result, permanent_error) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (event_id, service_name, action) DO NOTHING";

const COMPLETE: &str = "UPDATE {schema}.idempotency_records \
     SET result = $4, permanent_error = $5 \
     WHERE event_id = $1 AND service_name = $2 AND action = $3";

/// `template` with `{schema}` replaced by `db`'s quoted schema.
pub(super) fn sql(template: &'static str, db: &Db) -> AssertSqlSafe<String> {
    AssertSqlSafe(crate::ident::render(template, db.schema_ident()))
}

/// A record as stored: what [`IdempotencyStore::get`](super::IdempotencyStore::get)
/// returns.
///
/// ```
/// use prost_db::idempotency::StoredRecord;
///
/// fn describe(record: &StoredRecord) -> &'static str {
///     if record.permanent_error { "failed for good" } else { "succeeded" }
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StoredRecord {
    /// The first delivery's payload fingerprint; `None` if it had none (a business key
    /// without `fingerprint = ...`), or if it was stored by an older version of the
    /// canonical form, which is not compared.
    pub fingerprint: Option<Fingerprint>,
    /// The stored result (or permanent error) as JSON; `None` for a claim never completed.
    pub result: Option<serde_json::Value>,
    /// Whether `result` is a permanent error rather than a success.
    pub permanent_error: bool,
    /// When the record was written.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// What [`IdempotencyStore::claim`](super::IdempotencyStore::claim) found.
///
/// ```
/// use prost_db::idempotency::Claim;
///
/// fn should_run(claim: &Claim) -> bool {
///     matches!(claim, Claim::Claimed)
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This transaction holds the key: run the body, then
    /// [`complete`](super::IdempotencyStore::complete) and commit.
    Claimed,
    /// A committed delivery holds the key; this is its record.
    Duplicate(StoredRecord),
}

/// The record of one key of one action of one service: what every statement on
/// `idempotency_records` binds.
#[derive(Clone, Copy)]
pub(super) struct Entry<'a> {
    pub db: &'a Db,
    pub service: &'a str,
    pub action: &'a str,
    pub key: &'a str,
}

impl Entry<'_> {
    pub async fn claim(
        &self,
        tx: &mut Tx,
        fingerprint: Option<Fingerprint>,
        lock_timeout: Duration,
    ) -> Result<Claim> {
        let done = self
            .db
            .query(sql(CLAIM, self.db))
            .bind(self.key)
            .bind(self.service)
            .bind(self.action)
            .bind(fingerprint.map(Fingerprint::to_stored))
            .bind(super::store::millis(lock_timeout).to_string())
            .execute(&mut **tx)
            .await
            .map_err(|e| self.write_error(e))?;
        if done.rows_affected() == 1 {
            return Ok(Claim::Claimed);
        }
        self.select(&mut **tx)
            .await?
            .map(Claim::Duplicate)
            .ok_or_else(|| self.vanished())
    }

    /// The committed record, through the pool or inside a transaction.
    pub async fn select<'c>(
        &self,
        executor: impl sqlx::PgExecutor<'c>,
    ) -> Result<Option<StoredRecord>> {
        let row = self
            .db
            .query_as::<RecordRow>(sql(SELECT, self.db))
            .bind(self.key)
            .bind(self.service)
            .bind(self.action)
            .fetch_optional(executor)
            .await
            .map_err(|e| self.db.map_err(e))?;
        Ok(row.map(StoredRecord::from))
    }

    pub async fn complete(&self, tx: &mut Tx, result: &serde_json::Value) -> Result<()> {
        self.db
            .query(sql(COMPLETE, self.db))
            .bind(self.key)
            .bind(self.service)
            .bind(self.action)
            .bind(Json(result))
            .bind(false)
            .execute(&mut **tx)
            .await
            .map_err(|e| self.db.map_err(e))?;
        Ok(())
    }

    /// Writes a record with its result: `true` if written, `false` if the key was taken.
    pub async fn insert(
        &self,
        tx: &mut Tx,
        fingerprint: Option<Fingerprint>,
        result: &serde_json::Value,
        permanent: bool,
    ) -> Result<bool> {
        let done = self
            .db
            .query(sql(INSERT, self.db))
            .bind(self.key)
            .bind(self.service)
            .bind(self.action)
            .bind(fingerprint.map(Fingerprint::to_stored))
            .bind(Json(result))
            .bind(permanent)
            .execute(&mut **tx)
            .await
            .map_err(|e| self.write_error(e))?;
        Ok(done.rows_affected() == 1)
    }

    /// The error of a statement writing a record: an expired key refused by the
    /// partitioned layout's constraint is [`Error::IdempotencyKeyExpired`].
    fn write_error(&self, error: sqlx::Error) -> Error {
        if let sqlx::Error::Database(e) = &error
            && e.constraint() == Some(EXPIRED_CONSTRAINT)
        {
            return Error::IdempotencyKeyExpired {
                event_id: self.key.to_owned(),
                action: self.action.to_owned(),
                // The constraint refuses UUIDv7 keys only, whose time always parses.
                key_time: super::key_time(self.key).unwrap_or_default(),
            };
        }
        self.db.map_err(error)
    }

    /// A record that held the key a moment ago is gone (purged in between).
    pub fn vanished(&self) -> Error {
        Error::IdempotencyRecordVanished {
            event_id: self.key.to_owned(),
            action: self.action.to_owned(),
        }
    }
}

#[derive(sqlx::FromRow)]
struct RecordRow {
    payload_hash: Option<Vec<u8>>,
    result: Option<Json<serde_json::Value>>,
    permanent_error: bool,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl From<RecordRow> for StoredRecord {
    fn from(row: RecordRow) -> Self {
        StoredRecord {
            fingerprint: row
                .payload_hash
                .as_deref()
                .and_then(Fingerprint::from_stored),
            result: row.result.map(|Json(value)| value),
            permanent_error: row.permanent_error,
            created_at: row.created_at,
        }
    }
}
