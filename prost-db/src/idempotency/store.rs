//! The `idempotency_records` table and the check-process-record transaction.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::AssertSqlSafe;
use sqlx::types::Json;
use tracing::Instrument;

use super::Outcome;
use super::error::{HandlerError, PermanentError};
use super::key::{Fingerprint, IdempotencyKey};
use crate::error::{Error, Result};
use crate::pool::Db;

/// The transaction a handler's body writes through: READ COMMITTED, with `lock_timeout`
/// set, on a connection of the service's pool.
///
/// ```no_run
/// # async fn f(tx: &mut prost_db::idempotency::Tx) -> Result<(), sqlx::Error> {
/// sqlx::query("UPDATE products SET stock = stock - 1 WHERE id = $1")
///     .bind(7_i64)
///     .execute(&mut **tx)
///     .await?;
/// # Ok(()) }
/// ```
pub type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// The table's name, in every service schema.
///
/// ```
/// assert_eq!(prost_db::idempotency::TABLE_NAME, "idempotency_records");
/// ```
pub const TABLE_NAME: &str = "idempotency_records";

/// How long a delivery waits for an in-flight twin (or any lock its body needs) before
/// failing with a transient lock-timeout error.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(prost_db::idempotency::DEFAULT_LOCK_TIMEOUT, Duration::from_secs(30));
/// ```
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The table, in the schema that replaces `{schema}` (a quoted, validated identifier).
///
/// The primary key is the unique key `(event_id, service_name, action)`, so an insert
/// maintains one B-tree, compared byte-wise (`COLLATE "C"`: keys need equality, not
/// linguistic order); retention scans `created_at` through a BRIN index, which costs
/// next to nothing to maintain because records arrive in time order.
pub(crate) const DDL: &str = r#"
CREATE TABLE IF NOT EXISTS {schema}.idempotency_records (
    id              BIGINT      GENERATED ALWAYS AS IDENTITY,
    event_id        TEXT        COLLATE "C" NOT NULL,
    service_name    TEXT        COLLATE "C" NOT NULL,
    action          TEXT        COLLATE "C" NOT NULL,
    payload_hash    BYTEA,
    result          JSONB,
    permanent_error BOOLEAN     NOT NULL DEFAULT false,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_records_key PRIMARY KEY (event_id, service_name, action)
);
CREATE INDEX IF NOT EXISTS idempotency_records_created_at
    ON {schema}.idempotency_records USING brin (created_at);
"#;

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

fn sql(template: &'static str, db: &Db) -> AssertSqlSafe<String> {
    AssertSqlSafe(crate::framework::render(template, db.schema_ident()))
}

/// The idempotency records of one service, and the check-process-record transaction.
///
/// [`#[idempotent_handler]`](crate::idempotent_handler) uses it for you; use it directly to
/// run a closure idempotently, to claim keys by hand, or to purge old records.
///
/// ```no_run
/// use prost_db::Db;
/// use prost_db::idempotency::{IdempotencyStore, Outcome};
///
/// # async fn run(db: Db) -> Result<(), Box<dyn std::error::Error>> {
/// IdempotencyStore::install(&db).await?;
/// let store = IdempotencyStore::new(&db);
/// let event = serde_json::json!({"event_id": "e-1", "product_id": 7});
/// let outcome = store
///     .run("reserve_stock", "e-1", &event, |mut tx| async move {
///         let result = sqlx::query("UPDATE products SET stock = stock - 1 WHERE id = 7")
///             .execute(&mut *tx)
///             .await
///             .map(|done| done.rows_affected());
///         (tx, result)
///     })
///     .await?;
/// assert!(matches!(outcome, Outcome::Processed(1) | Outcome::Duplicate(1)));
/// store.purge_older_than(std::time::Duration::from_secs(7 * 24 * 3600)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct IdempotencyStore {
    db: Db,
    service: String,
    lock_timeout: Duration,
}

/// A record as stored: what [`IdempotencyStore::get`] returns.
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
    /// The first delivery's payload fingerprint, if one was stored.
    pub fingerprint: Option<Fingerprint>,
    /// The stored result (or permanent error) as JSON; `None` for a claim never completed.
    pub result: Option<serde_json::Value>,
    /// Whether `result` is a permanent error rather than a success.
    pub permanent_error: bool,
    /// When the record was written.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// What [`IdempotencyStore::claim`] found.
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
    /// [`complete`](IdempotencyStore::complete) and commit.
    Claimed,
    /// A committed delivery holds the key; this is its record.
    Duplicate(StoredRecord),
}

impl IdempotencyStore {
    /// The store of `db`'s service, with [`DEFAULT_LOCK_TIMEOUT`].
    ///
    /// ```no_run
    /// # fn f(db: &prost_db::Db) {
    /// let store = prost_db::idempotency::IdempotencyStore::new(db);
    /// assert_eq!(store.service(), db.service());
    /// # }
    /// ```
    pub fn new(db: &Db) -> Self {
        IdempotencyStore {
            db: db.clone(),
            service: db.service().to_owned(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }

    /// Records under `service` instead of the `Db`'s service name.
    ///
    /// ```no_run
    /// # fn f(db: &prost_db::Db) {
    /// let store = prost_db::idempotency::IdempotencyStore::new(db).with_service("billing");
    /// assert_eq!(store.service(), "billing");
    /// # }
    /// ```
    #[must_use]
    pub fn with_service(mut self, service: impl Into<String>) -> Self {
        self.service = service.into();
        self
    }

    /// How long to wait for an in-flight twin or any other lock (`SET LOCAL lock_timeout`).
    /// Rounded up to whole milliseconds; must exceed your slowest handler.
    ///
    /// ```no_run
    /// # fn f(db: &prost_db::Db) -> prost_db::Result<()> {
    /// use std::time::Duration;
    /// let store = prost_db::idempotency::IdempotencyStore::new(db)
    ///     .with_lock_timeout(Duration::from_secs(5))?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::SettingOutOfRange`] beyond PostgreSQL's limit of 2147483647 ms (about 24.8
    /// days), which would make every `BEGIN` fail.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Result<Self> {
        crate::error::pg_timeout_millis("lock_timeout", timeout)?;
        self.lock_timeout = timeout;
        Ok(self)
    }

    /// The service name records are written under.
    ///
    /// ```no_run
    /// # fn f(db: &prost_db::Db) {
    /// # let store = prost_db::idempotency::IdempotencyStore::new(db);
    /// println!("{}", store.service());
    /// # }
    /// ```
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Creates `idempotency_records` in `db`'s schema if it does not exist. Safe to call
    /// from many replicas at once; the migrator calls it too.
    ///
    /// ```no_run
    /// # async fn f(db: &prost_db::Db) -> prost_db::Result<()> {
    /// prost_db::idempotency::IdempotencyStore::install(db).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The database error, e.g. missing `CREATE` privilege on the schema.
    pub async fn install(db: &Db) -> Result<()> {
        let mut tx = db.begin().await?;
        // Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog.
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtext('prost_db.idempotency_records'), hashtext($1))",
        )
        .bind(db.schema())
        .execute(&mut *tx)
        .await?;
        sqlx::raw_sql(sql(DDL, db)).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Starts a READ COMMITTED transaction with the store's lock timeout, in one round trip.
    ///
    /// ```no_run
    /// # async fn f(store: &prost_db::idempotency::IdempotencyStore) -> prost_db::Result<()> {
    /// let tx = store.begin().await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::PoolTimedOut`] or a connection error.
    pub async fn begin(&self) -> Result<Tx> {
        begin(&self.db, self.lock_timeout).await
    }

    /// The committed record of `key` for `action`, if any.
    ///
    /// ```no_run
    /// # async fn f(store: &prost_db::idempotency::IdempotencyStore) -> prost_db::Result<()> {
    /// if let Some(record) = store.get("reserve_stock", "e-1").await? {
    ///     println!("handled at {}", record.created_at);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The database error.
    pub async fn get(&self, action: &str, key: &str) -> Result<Option<StoredRecord>> {
        self.entry(action, key).select(self.db.pool()).await
    }

    /// Claims `key` for `action` in `tx`: `INSERT ... ON CONFLICT DO NOTHING` of a record
    /// without result. If a twin holds the key uncommitted, this waits for it, bounded by
    /// the store's lock timeout, which the same statement sets for the rest of `tx` (so it
    /// holds whichever way `tx` was begun). Claimed: run the body on `tx`, then
    /// [`complete`](Self::complete) and commit; a rollback releases the claim. Taken: a
    /// second statement reads the committed record that holds the key.
    ///
    /// ```no_run
    /// use prost_db::idempotency::{Claim, Fingerprint};
    ///
    /// # async fn f(store: &prost_db::idempotency::IdempotencyStore) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = store.begin().await?;
    /// let fingerprint = Fingerprint::of(&serde_json::json!({"product_id": 7}))?;
    /// match store.claim(&mut tx, "reserve_stock", "e-1", Some(fingerprint)).await? {
    ///     Claim::Claimed => {
    ///         sqlx::query("UPDATE products SET stock = stock - 1 WHERE id = 7")
    ///             .execute(&mut *tx)
    ///             .await?;
    ///         store.complete(&mut tx, "reserve_stock", "e-1", &"reserved").await?;
    ///         tx.commit().await?;
    ///     }
    ///     Claim::Duplicate(record) => println!("already done: {:?}", record.result),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The database error; a lock timeout is SQLSTATE 55P03.
    pub async fn claim(
        &self,
        tx: &mut Tx,
        action: &str,
        key: &str,
        fingerprint: Option<Fingerprint>,
    ) -> Result<Claim> {
        self.entry(action, key)
            .claim(tx, fingerprint, self.lock_timeout)
            .await
    }

    /// Stores the result of a claimed key, in the claiming transaction.
    ///
    /// ```no_run
    /// # async fn f(store: &prost_db::idempotency::IdempotencyStore, tx: &mut prost_db::idempotency::Tx) -> prost_db::Result<()> {
    /// store.complete(tx, "reserve_stock", "e-1", &serde_json::json!({"left": 3})).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The database error, or [`Error::Config`] if `result` cannot be serialized to JSON.
    pub async fn complete<T: Serialize + ?Sized>(
        &self,
        tx: &mut Tx,
        action: &str,
        key: &str,
        result: &T,
    ) -> Result<()> {
        let value = serde_json::to_value(result)
            .map_err(|e| Error::Config(format!("cannot serialize the handler's result: {e}")))?;
        self.entry(action, key).complete(tx, &value).await
    }

    /// Writes a record with its result in `tx`, unless the key is taken: `true` if written.
    /// Waits for an uncommitted twin like [`claim`](Self::claim). This is the last statement
    /// of [`run`](Self::run) before `COMMIT`.
    ///
    /// ```no_run
    /// # async fn f(store: &prost_db::idempotency::IdempotencyStore) -> prost_db::Result<()> {
    /// let mut tx = store.begin().await?;
    /// if store.record(&mut tx, "reserve_stock", "e-1", None, &serde_json::json!("ok")).await? {
    ///     tx.commit().await?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The database error.
    pub async fn record(
        &self,
        tx: &mut Tx,
        action: &str,
        key: &str,
        fingerprint: Option<Fingerprint>,
        result: &serde_json::Value,
    ) -> Result<bool> {
        self.entry(action, key)
            .insert(tx, fingerprint, result, false)
            .await
    }

    fn entry<'a>(&'a self, action: &'a str, key: &'a str) -> Entry<'a> {
        Entry {
            db: &self.db,
            service: &self.service,
            action,
            key,
        }
    }

    /// Deletes records older than `horizon` (of every action of the service's schema) and
    /// returns how many. The horizon must exceed the broker's redelivery horizon (unacked
    /// timeout, retry delays, dead-letter replays), or a late redelivery runs again.
    ///
    /// ```no_run
    /// # async fn f(store: &prost_db::idempotency::IdempotencyStore) -> prost_db::Result<()> {
    /// let deleted = store.purge_older_than(std::time::Duration::from_secs(14 * 24 * 3600)).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// The purge deletes in batches of a few thousand rows, each its own transaction, so it
    /// never holds many locks or writes a burst of WAL however many records are old.
    ///
    /// # Errors
    ///
    /// The database error, or [`Error::Config`] for a horizon PostgreSQL cannot represent.
    #[tracing::instrument(name = "prost_db.idempotency.purge", skip(self), fields(schema = self.db.schema()))]
    pub async fn purge_older_than(&self, horizon: Duration) -> Result<u64> {
        let table = format!("{}.idempotency_records", self.db.schema_ident());
        let deleted =
            crate::pool::purge_in_batches(self.db.pool(), &table, "created_at", horizon).await?;
        tracing::info!(deleted, "purged idempotency records");
        Ok(deleted)
    }

    /// Runs `body` exactly once per `key` and `action`, in the check-process-record
    /// transaction described in [the module docs](crate::idempotency). `payload` is hashed
    /// to detect an id reused for a different event. `body` receives the transaction and
    /// returns it with its result, so that the store can record and commit.
    /// [`#[idempotent_handler]`](crate::idempotent_handler) writes that closure for you.
    ///
    /// See [`IdempotencyStore`] for an example.
    ///
    /// # Errors
    ///
    /// See [`HandlerError`].
    pub async fn run<K, P, T, E, F, Fut>(
        &self,
        action: &str,
        key: &K,
        payload: &P,
        body: F,
    ) -> Result<Outcome<T>, HandlerError<E>>
    where
        K: IdempotencyKey + ?Sized,
        P: Serialize + ?Sized,
        T: Serialize + DeserializeOwned,
        F: FnOnce(Tx) -> Fut,
        Fut: Future<Output = (Tx, Result<T, E>)>,
    {
        let key = key.to_key();
        let handler = Handler {
            action,
            service: Some(&self.service),
            lock_timeout: Some(self.lock_timeout),
        };
        let fingerprint = fingerprint(&key, action, payload)?;
        run_with::<NeverRecord, _, _, _, _>(&self.db, handler, &key, fingerprint, body).await
    }
}

/// Not public API: a handler's static configuration, built by the macro.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Handler<'a> {
    pub action: &'a str,
    pub service: Option<&'a str>,
    pub lock_timeout: Option<Duration>,
}

/// Not public API: whether a handler records permanent errors.
#[doc(hidden)]
pub trait ErrorPolicy<E> {
    /// `Some` if `error` is to be recorded as the final result.
    fn record(error: &E) -> Option<Result<serde_json::Value, serde_json::Error>>;
    /// Decodes a recorded error.
    fn replay(value: serde_json::Value) -> Result<E, serde_json::Error>;
}

/// Not public API: errors always roll back.
#[doc(hidden)]
#[derive(Debug)]
pub enum NeverRecord {}

impl<E> ErrorPolicy<E> for NeverRecord {
    fn record(_: &E) -> Option<Result<serde_json::Value, serde_json::Error>> {
        None
    }

    fn replay(_: serde_json::Value) -> Result<E, serde_json::Error> {
        Err(serde::de::Error::custom(
            "the record holds a permanent error but this handler does not declare `permanent_errors`",
        ))
    }
}

/// Not public API: errors marked permanent are recorded.
#[doc(hidden)]
#[derive(Debug)]
pub enum RecordPermanent {}

impl<E: PermanentError> ErrorPolicy<E> for RecordPermanent {
    fn record(error: &E) -> Option<Result<serde_json::Value, serde_json::Error>> {
        error.is_permanent().then(|| serde_json::to_value(error))
    }

    fn replay(value: serde_json::Value) -> Result<E, serde_json::Error> {
        serde_json::from_value(value)
    }
}

/// Not public API: the payload fingerprint, with a serialization failure as a handler error.
#[doc(hidden)]
#[allow(clippy::result_large_err)] // the error is the handler's, returned once per delivery
pub fn fingerprint<P: Serialize + ?Sized, E>(
    key: &str,
    action: &str,
    payload: &P,
) -> Result<Fingerprint, HandlerError<E>> {
    Fingerprint::of(payload).map_err(|source| HandlerError::Codec {
        event_id: key.to_owned(),
        action: action.to_owned(),
        source,
    })
}

/// Not public API: the runtime behind `#[idempotent_handler]` and [`IdempotencyStore::run`].
#[doc(hidden)]
pub async fn run_with<P, T, E, F, Fut>(
    db: &Db,
    handler: Handler<'_>,
    key: &str,
    fingerprint: Fingerprint,
    body: F,
) -> Result<Outcome<T>, HandlerError<E>>
where
    P: ErrorPolicy<E>,
    T: Serialize + DeserializeOwned,
    F: FnOnce(Tx) -> Fut,
    Fut: Future<Output = (Tx, Result<T, E>)>,
{
    let service = handler.service.unwrap_or(db.service());
    let span = tracing::info_span!(
        "prost_db.idempotent_handler",
        event_id = key,
        action = handler.action,
        service,
        outcome = tracing::field::Empty,
    );
    let run = Run {
        entry: Entry {
            db,
            service,
            action: handler.action,
            key,
        },
        fingerprint,
        lock_timeout: handler.lock_timeout.unwrap_or(DEFAULT_LOCK_TIMEOUT),
    };
    let result = run
        .execute::<P, T, E, F, Fut>(body)
        .instrument(span.clone())
        .await;
    let outcome = match &result {
        Ok(outcome) => outcome.as_str(),
        Err(error) => error.kind(),
    };
    span.record("outcome", outcome);
    result
}

struct Run<'a> {
    entry: Entry<'a>,
    fingerprint: Fingerprint,
    lock_timeout: Duration,
}

impl Run<'_> {
    async fn execute<P, T, E, F, Fut>(&self, body: F) -> Result<Outcome<T>, HandlerError<E>>
    where
        P: ErrorPolicy<E>,
        T: Serialize + DeserializeOwned,
        F: FnOnce(Tx) -> Fut,
        Fut: Future<Output = (Tx, Result<T, E>)>,
    {
        let entry = &self.entry;
        let mut tx = begin(entry.db, self.lock_timeout).await?;
        let claim = entry
            .claim(&mut tx, Some(self.fingerprint), self.lock_timeout)
            .await?;
        if let Claim::Duplicate(record) = claim {
            // Nothing was written: the rollback is queued, and sqlx sends it when the
            // connection goes back to the pool, off this delivery's path.
            drop(tx);
            return self.replay::<P, T, E>(record);
        }

        let (mut tx, result) = body(tx).await;
        let error = match result {
            Ok(value) => {
                let json = serde_json::to_value(&value).map_err(|e| self.codec(e))?;
                // The claim already stores NULL, which is what `()` and `None` replay from.
                if !json.is_null() {
                    entry.complete(&mut tx, &json).await?;
                }
                tx.commit().await.map_err(|e| entry.db.map_err(e))?;
                return Ok(Outcome::Processed(value));
            }
            Err(error) => error,
        };
        // A failed connection has rolled back already.
        tx.rollback().await.ok();

        // This delivery held the claim, so no twin can have committed: a transient error
        // is simply returned, and a permanent one is recorded in a transaction of its own
        // (unless a twin that claimed after the rollback got there first).
        let json = match P::record(&error) {
            None => return Err(HandlerError::Failed(error)),
            Some(Err(e)) => return Err(self.codec(e)),
            Some(Ok(json)) => json,
        };
        let mut tx = begin(entry.db, self.lock_timeout).await?;
        if entry
            .insert(&mut tx, Some(self.fingerprint), &json, true)
            .await?
        {
            tx.commit().await.map_err(|e| entry.db.map_err(e))?;
            return Err(HandlerError::Permanent {
                error,
                replayed: false,
            });
        }
        let record = entry.select(&mut *tx).await?;
        drop(tx);
        match record {
            Some(record) => self.replay::<P, T, E>(record),
            None => Err(HandlerError::Database(entry.vanished())),
        }
    }

    #[allow(clippy::result_large_err)] // as `fingerprint`
    fn replay<P, T, E>(&self, record: StoredRecord) -> Result<Outcome<T>, HandlerError<E>>
    where
        P: ErrorPolicy<E>,
        T: DeserializeOwned,
    {
        if record
            .fingerprint
            .is_some_and(|stored| stored != self.fingerprint)
        {
            return Err(HandlerError::PayloadMismatch {
                event_id: self.entry.key.to_owned(),
                action: self.entry.action.to_owned(),
            });
        }
        let value = record.result.unwrap_or(serde_json::Value::Null);
        if record.permanent_error {
            let error = P::replay(value).map_err(|e| self.codec(e))?;
            return Err(HandlerError::Permanent {
                error,
                replayed: true,
            });
        }
        serde_json::from_value(value)
            .map(Outcome::Duplicate)
            .map_err(|e| self.codec(e))
    }

    fn codec<E>(&self, source: serde_json::Error) -> HandlerError<E> {
        HandlerError::Codec {
            event_id: self.entry.key.to_owned(),
            action: self.entry.action.to_owned(),
            source,
        }
    }
}

/// `BEGIN` with the store's `lock_timeout`, in one round trip. `SET LOCAL` here, and not
/// only the claim's `set_config`, because the claim takes its table locks before it runs:
/// behind a queued `ALTER TABLE`, those waits too must be bounded.
async fn begin(db: &Db, lock_timeout: Duration) -> Result<Tx> {
    crate::pool::begin(db, Some(lock_timeout)).await
}

fn millis(timeout: Duration) -> u128 {
    timeout.as_millis().max(1)
}

/// The record of one key of one action of one service: what every statement on
/// `idempotency_records` binds.
#[derive(Clone, Copy)]
struct Entry<'a> {
    db: &'a Db,
    service: &'a str,
    action: &'a str,
    key: &'a str,
}

impl Entry<'_> {
    async fn claim(
        &self,
        tx: &mut Tx,
        fingerprint: Option<Fingerprint>,
        lock_timeout: Duration,
    ) -> Result<Claim> {
        let done = sqlx::query(sql(CLAIM, self.db))
            .bind(self.key)
            .bind(self.service)
            .bind(self.action)
            .bind(fingerprint.map(|f| f.as_bytes().to_vec()))
            .bind(millis(lock_timeout).to_string())
            .execute(&mut **tx)
            .await
            .map_err(|e| self.db.map_err(e))?;
        if done.rows_affected() == 1 {
            return Ok(Claim::Claimed);
        }
        self.select(&mut **tx)
            .await?
            .map(Claim::Duplicate)
            .ok_or_else(|| self.vanished())
    }

    /// The committed record, through the pool or inside a transaction.
    async fn select<'c>(
        &self,
        executor: impl sqlx::PgExecutor<'c>,
    ) -> Result<Option<StoredRecord>> {
        let row = sqlx::query_as::<_, RecordRow>(sql(SELECT, self.db))
            .bind(self.key)
            .bind(self.service)
            .bind(self.action)
            .fetch_optional(executor)
            .await
            .map_err(|e| self.db.map_err(e))?;
        Ok(row.map(StoredRecord::from))
    }

    async fn complete(&self, tx: &mut Tx, result: &serde_json::Value) -> Result<()> {
        sqlx::query(sql(COMPLETE, self.db))
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

    /// `true` if the record was written, `false` if the key was taken.
    async fn insert(
        &self,
        tx: &mut Tx,
        fingerprint: Option<Fingerprint>,
        result: &serde_json::Value,
        permanent: bool,
    ) -> Result<bool> {
        let done = sqlx::query(sql(INSERT, self.db))
            .bind(self.key)
            .bind(self.service)
            .bind(self.action)
            .bind(fingerprint.map(|f| f.as_bytes().to_vec()))
            .bind(Json(result))
            .bind(permanent)
            .execute(&mut **tx)
            .await
            .map_err(|e| self.db.map_err(e))?;
        Ok(done.rows_affected() == 1)
    }

    /// A record that held the key a moment ago is gone (purged in between).
    fn vanished(&self) -> Error {
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
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .map(Fingerprint::from_bytes),
            result: row.result.map(|Json(value)| value),
            permanent_error: row.permanent_error,
            created_at: row.created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IdempotencyStore;
    use crate::test_logs::CapturedLogs;
    use crate::testing::TestDb;

    #[tokio::test(flavor = "current_thread")]
    async fn each_run_is_a_span_with_event_id_action_and_outcome() -> crate::Result<()> {
        let captured = CapturedLogs::start(tracing::Level::INFO, true);

        let test_db = TestDb::new().await?;
        let db = test_db.db("catalog").await?;
        IdempotencyStore::install(&db).await?;
        let store = IdempotencyStore::new(&db);
        for _ in 0..2 {
            let _ = store
                .run("ship", "e-42", &"payload", |tx| async move {
                    (tx, Ok::<u8, crate::Error>(1))
                })
                .await
                .unwrap();
        }
        db.close().await;
        test_db.close().await?;

        let logs = captured.text();
        let spans: Vec<&str> = logs
            .lines()
            .filter(|line| line.contains("prost_db.idempotent_handler"))
            .collect();
        assert_eq!(spans.len(), 2, "{logs}");
        for (span, outcome) in spans.iter().zip(["processed", "duplicate"]) {
            assert!(span.contains("event_id=\"e-42\""), "{span}");
            assert!(span.contains("action=\"ship\""), "{span}");
            assert!(span.contains("service=\"catalog\""), "{span}");
            assert!(span.contains(&format!("outcome=\"{outcome}\"")), "{span}");
        }
        Ok(())
    }
}
