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

/// The chained mode's result write and commit, one simple query (one round trip): the
/// values are [`hex_text_literal`]s, put in place of `{result}`, `{key}`, `{service}` and
/// `{action}`. The `UPDATE` must write exactly the claimed record, before the commit: the
/// `SELECT` divides by the count of rows it wrote, so that 0 rows (a body that deleted its
/// own claim) fails with `division_by_zero` and the server skips the `COMMIT AND CHAIN`
/// (the primary key allows at most 1).
const COMPLETE_AND_CHAIN: &str = "WITH completed AS (UPDATE {schema}.idempotency_records \
     SET result = {result}::jsonb, permanent_error = false \
     WHERE event_id = {key} AND service_name = {service} AND action = {action} RETURNING 1) \
     SELECT 1 / count(*)::int FROM completed; COMMIT AND CHAIN";

/// The SQLSTATE of [`COMPLETE_AND_CHAIN`]'s check that it wrote the record: `division_by_zero`.
const NOTHING_COMPLETED: &str = "22012";

/// `text` as a SQL expression of type `text` in which no character of `text` appears:
/// `convert_from(decode('<hex of its UTF-8 bytes>', 'hex'), 'UTF8')`. The SQL only ever
/// holds `[0-9a-f]` where the data goes, so no quote, backslash, `$$` or keyword in the
/// data can end the literal, whatever `standard_conforming_strings` or the client encoding
/// is: the way to put data into a statement sent as a simple query, which has no
/// parameters. The cost: the data travels at twice its size, and the server decodes it.
/// `a'b` is `convert_from(decode('612762', 'hex'), 'UTF8')`. Its collation is `"C"` (from
/// the `name` argument), the key columns' own, so a comparison with a key column still uses
/// the primary key (a test checks the plan).
pub(crate) fn hex_text_literal(text: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    const HEAD: &str = "convert_from(decode('";
    const TAIL: &str = "', 'hex'), 'UTF8')";
    let mut sql = String::with_capacity(HEAD.len() + 2 * text.len() + TAIL.len());
    sql.push_str(HEAD);
    for byte in text.bytes() {
        sql.push(char::from(DIGITS[usize::from(byte >> 4)]));
        sql.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    sql.push_str(TAIL);
    sql
}

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

    /// Stores `result` in the record: `true` if it was there to update (it is, in the
    /// transaction that claimed it, unless the body deleted it).
    pub async fn complete(&self, tx: &mut Tx, result: &serde_json::Value) -> Result<bool> {
        let done = self
            .db
            .query(sql(COMPLETE, self.db))
            .bind(self.key)
            .bind(self.service)
            .bind(self.action)
            .bind(Json(result))
            .bind(false)
            .execute(&mut **tx)
            .await
            .map_err(|e| self.db.map_err(e))?;
        Ok(done.rows_affected() == 1)
    }

    /// [`COMPLETE_AND_CHAIN`] for `result`: the chained mode's last message of an event.
    pub fn complete_and_chain(&self, result: &serde_json::Value) -> AssertSqlSafe<String> {
        let AssertSqlSafe(template) = sql(COMPLETE_AND_CHAIN, self.db);
        // Each replacement is hex digits and constant SQL, so no later one can match in it.
        AssertSqlSafe(
            template
                .replace("{result}", &hex_text_literal(&result.to_string()))
                .replace("{key}", &hex_text_literal(self.key))
                .replace("{service}", &hex_text_literal(self.service))
                .replace("{action}", &hex_text_literal(self.action)),
        )
    }

    /// The error of [`complete_and_chain`](Self::complete_and_chain)'s statement: the
    /// record missing is [`Error::IdempotencyRecordVanished`], as in transaction mode.
    pub fn complete_error(&self, error: sqlx::Error) -> Error {
        if let sqlx::Error::Database(e) = &error
            && e.code().as_deref() == Some(NOTHING_COMPLETED)
        {
            return self.vanished();
        }
        self.db.map_err(error)
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

#[cfg(test)]
mod tests {
    use sqlx::{AssertSqlSafe, Row};

    use super::{Entry, hex_text_literal};
    use crate::testing::TestDb;

    const HEAD: &str = "convert_from(decode('";
    const TAIL: &str = "', 'hex'), 'UTF8')";

    /// Strings that end a naive literal, or look like the builder's own placeholders.
    fn hostile() -> Vec<String> {
        let mut texts: Vec<String> = [
            "it's",
            "''",
            r"a\b",
            r"\'; SELECT 1; --",
            "$$ $tag$ $$",
            "'; DROP TABLE idempotency_records; --",
            "\"double\" quotes",
            "{schema} {result} {key}",
            "ünïcödé 中文 עברית",
            "🦀👨‍👩‍👧 emoji",
            "\n\t\r",
            "",
        ]
        .map(str::to_owned)
        .into();
        // 1 MB of quotes, backslashes, dollars and multi-byte characters.
        texts.push("'\\$é🦀 ".repeat(1 << 17));
        texts
    }

    /// The hex digits of a literal `hex_text_literal` made, if that is what `sql` is.
    fn hex_of(sql: &str) -> Option<&str> {
        let hex = sql.strip_prefix(HEAD)?.strip_suffix(TAIL)?;
        hex.bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            .then_some(hex)
    }

    #[test]
    fn a_hex_text_literal_holds_only_hex_digits_between_constant_sql() {
        assert_eq!(
            hex_text_literal("a'b"),
            "convert_from(decode('612762', 'hex'), 'UTF8')"
        );
        for text in hostile() {
            let sql = hex_text_literal(&text);
            let hex = hex_of(&sql).unwrap_or_else(|| panic!("not hex: {:.80}", sql));
            let bytes: Vec<u8> = hex
                .as_bytes()
                .chunks(2)
                .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
                .collect();
            assert_eq!(bytes, text.as_bytes());
        }
    }

    #[tokio::test]
    async fn postgres_reads_every_hex_text_literal_back_and_a_naive_literal_breaks()
    -> crate::Result<()> {
        let test_db = TestDb::new().await?;
        let db = test_db.db("catalog").await?;
        let mut conn = db.acquire().await?;
        for conforming in ["on", "off"] {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "SET standard_conforming_strings = {conforming}"
            )))
            .execute(&mut *conn)
            .await?;
            for text in hostile() {
                let sql = format!("SELECT {}", hex_text_literal(&text));
                let row = sqlx::raw_sql(AssertSqlSafe(sql))
                    .fetch_one(&mut *conn)
                    .await?;
                let read: String = row.try_get(0)?;
                assert!(read == text, "{conforming}: {text:.80}");
            }

            // The control: the same values embedded as they are. A quote ends the literal
            // (the JSON of a result holding "it's" is a syntax error, the injection runs a
            // second statement), and with standard_conforming_strings off a backslash is
            // an escape, so the value read is another one.
            let json = serde_json::json!({"note": "it's"}).to_string();
            let naive = format!("SELECT '{json}'::jsonb");
            assert!(
                sqlx::raw_sql(AssertSqlSafe(naive))
                    .fetch_one(&mut *conn)
                    .await
                    .is_err()
            );
            let injected = format!("SELECT '{}'", "x'; SELECT 'injected");
            let results = sqlx::raw_sql(AssertSqlSafe(injected))
                .fetch_all(&mut *conn)
                .await?;
            assert_eq!(results.len(), 2, "two statements ran");
            let naive = format!("SELECT '{}'", r"a\b");
            let row = sqlx::raw_sql(AssertSqlSafe(naive))
                .fetch_one(&mut *conn)
                .await?;
            let read: String = row.try_get(0)?;
            assert_eq!(read == r"a\b", conforming == "on", "{read:?}");
        }
        drop(conn);
        db.close().await;
        test_db.close().await
    }

    #[tokio::test]
    async fn the_chained_completion_finds_its_record_through_the_primary_key() -> crate::Result<()>
    {
        let test_db = TestDb::new().await?;
        let db = test_db.db("catalog").await?;
        crate::idempotency::IdempotencyStore::install(&db).await?;
        let entry = Entry {
            db: &db,
            service: "catalog",
            action: "ship",
            key: "e-1",
        };
        let AssertSqlSafe(sql) = entry.complete_and_chain(&serde_json::json!({"n": 1}));
        let update = sql
            .strip_suffix("; COMMIT AND CHAIN")
            .expect("the commit last");
        // Without the index (a scan of every record per event) the plan says `Seq Scan`;
        // a literal of the database's default collation would get that plan.
        let mut conn = db.acquire().await?;
        sqlx::raw_sql(AssertSqlSafe(
            "SET enable_seqscan = off; SET enable_bitmapscan = off",
        ))
        .execute(&mut *conn)
        .await?;
        let plan: Vec<String> = sqlx::raw_sql(AssertSqlSafe(format!("EXPLAIN {update}")))
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<std::result::Result<_, _>>()?;
        let plan = plan.join("\n");
        assert!(
            plan.contains("Index Scan using idempotency_records_key"),
            "{plan}"
        );
        drop(conn);
        db.close().await;
        test_db.close().await
    }

    #[tokio::test]
    async fn the_chained_completion_is_the_update_and_the_commit_with_only_hex_from_data()
    -> crate::Result<()> {
        let test_db = TestDb::new().await?;
        let db = test_db.db("catalog").await?;
        let entry = Entry {
            db: &db,
            service: "catalog'; --",
            action: "ship $$ {key}",
            key: r"k'1\",
        };
        let AssertSqlSafe(sql) =
            entry.complete_and_chain(&serde_json::json!({"it's": [r"a\b", "$$", "🦀"]}));
        // Every value is a hex literal: what is left is constant SQL.
        let mut constant = String::new();
        let mut rest = sql.as_str();
        while let Some(at) = rest.find(HEAD) {
            let end = rest[at..].find(TAIL).expect("a literal's end") + at + TAIL.len();
            assert!(hex_of(&rest[at..end]).is_some(), "{}", &rest[at..end]);
            constant.push_str(&rest[..at]);
            constant.push('?');
            rest = &rest[end..];
        }
        constant.push_str(rest);
        assert_eq!(
            constant,
            "WITH completed AS (UPDATE \"catalog\".idempotency_records \
             SET result = ?::jsonb, permanent_error = false \
             WHERE event_id = ? AND service_name = ? AND action = ? RETURNING 1) \
             SELECT 1 / count(*)::int FROM completed; COMMIT AND CHAIN"
        );
        db.close().await;
        test_db.close().await
    }
}
