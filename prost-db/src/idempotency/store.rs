//! The public face of the idempotency records: `IdempotencyStore`, its transaction and
//! its retention.

use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::HandlerError;
use super::key::IdempotencyKey;
use super::record::{Claim, DDL, Entry, StoredRecord, sql};
use super::runtime::{ErrorPolicy, Job, ResultCodec, execute};
use super::{Fingerprint, Outcome};
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

/// The transaction, lent to the body that [`IdempotencyStore::run`] runs: it dereferences
/// to [`Tx`], and goes back to the store when the body's future completes, so that the
/// store records the result and commits. (The body of an
/// [`#[idempotent_handler]`](crate::idempotent_handler) sees it as its `&mut Tx`.)
///
/// ```no_run
/// # async fn f(store: &prost_db::idempotency::IdempotencyStore) -> Result<(), Box<dyn std::error::Error>> {
/// store
///     .run("ship", "order-7", &"payload", |mut tx| async move {
///         let tx: &mut prost_db::idempotency::Tx = &mut tx;
///         sqlx::query("UPDATE orders SET shipped = true WHERE id = 7")
///             .execute(&mut **tx)
///             .await
///             .map(|done| done.rows_affected())
///     })
///     .await?;
/// # Ok(()) }
/// ```
pub struct TxLease {
    tx: Option<Tx>,
    slot: Arc<Mutex<Option<Tx>>>,
}

/// Where a lent transaction comes back.
pub(super) struct Returned(Arc<Mutex<Option<Tx>>>);

impl TxLease {
    pub(super) fn lend(tx: Tx) -> (TxLease, Returned) {
        let slot = Arc::new(Mutex::new(None));
        let lease = TxLease {
            tx: Some(tx),
            slot: slot.clone(),
        };
        (lease, Returned(slot))
    }
}

impl Returned {
    /// The transaction, once its lease is dropped.
    pub(super) fn take(self) -> Option<Tx> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl Deref for TxLease {
    type Target = Tx;

    fn deref(&self) -> &Tx {
        self.tx
            .as_ref()
            .expect("a lease holds its transaction until dropped")
    }
}

impl DerefMut for TxLease {
    fn deref_mut(&mut self) -> &mut Tx {
        self.tx
            .as_mut()
            .expect("a lease holds its transaction until dropped")
    }
}

impl Drop for TxLease {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        }
    }
}

impl fmt::Debug for TxLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxLease").finish_non_exhaustive()
    }
}

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
///         sqlx::query("UPDATE products SET stock = stock - 1 WHERE id = 7")
///             .execute(&mut **tx)
///             .await
///             .map(|done| done.rows_affected())
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

    /// The lock timeout its runs wait for a twin with.
    ///
    /// ```no_run
    /// # fn f(db: &prost_db::Db) {
    /// let store = prost_db::idempotency::IdempotencyStore::new(db);
    /// assert_eq!(store.lock_timeout(), prost_db::idempotency::DEFAULT_LOCK_TIMEOUT);
    /// # }
    /// ```
    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    pub(super) fn db(&self) -> &Db {
        &self.db
    }

    /// Creates `idempotency_records` in `db`'s schema if it does not exist. Safe to call
    /// from many replicas at once. A service that runs the [`Migrator`](crate::migrate::Migrator)
    /// need not call it: the migrator's framework steps create the same table (same DDL).
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
        // Behind a pooler with a migrate URL, as the migrator: its role owns the tables.
        let direct = db.for_installs().await?;
        let installed = Self::install_on(direct.as_ref().unwrap_or(db)).await;
        if let Some(direct) = direct {
            direct.close().await;
        }
        installed
    }

    async fn install_on(db: &Db) -> Result<()> {
        let mut tx = db.begin().await?;
        // Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog.
        db.query(
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
        let entry = self.entry(action, key);
        self.db
            .autocommit(async |conn| entry.select(conn).await)
            .await
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
        self.entry(action, key).complete(tx, &value).await?;
        Ok(())
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
    /// The database error, or [`Error::Config`] for a horizon PostgreSQL cannot represent,
    /// or for the partitioned layout, which expires records with
    /// [`PartitionedRecords::maintain`](super::PartitionedRecords::maintain).
    #[tracing::instrument(name = "prost_db.idempotency.purge", skip(self), fields(schema = self.db.schema()))]
    pub async fn purge_older_than(&self, horizon: Duration) -> Result<u64> {
        super::partition_ddl::refuse_partitioned(&self.db).await?;
        let table = format!("{}.idempotency_records", self.db.schema_ident());
        let deleted =
            crate::pool::purge_in_batches(self.db.pool(), &table, "created_at", horizon).await?;
        tracing::info!(deleted, "purged idempotency records");
        Ok(deleted)
    }

    /// Runs `body` exactly once per `key` and `action`, in the check-process-record
    /// transaction described in [the module docs](crate::idempotency). `payload` is
    /// fingerprinted to detect an id reused for a different event. `body` gets the
    /// transaction as a [`TxLease`]; when its future completes, the store records the
    /// result on the same transaction and commits.
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
        F: FnOnce(TxLease) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let key = key.to_key();
        let fingerprint = Fingerprint::of(payload).map_err(|source| HandlerError::Codec {
            event_id: key.to_string(),
            action: action.to_owned(),
            source,
        })?;
        let job = Job {
            entry: self.entry(action, &key),
            fingerprint: Some(fingerprint),
            lock_timeout: self.lock_timeout,
            codec: ResultCodec::json(),
            policy: ErrorPolicy::never(),
        };
        execute(job, body).await
    }
}

/// `BEGIN` with the store's `lock_timeout`, in one round trip. `SET LOCAL` here, and not
/// only the claim's `set_config`, because the claim takes its table locks before it runs:
/// behind a queued `ALTER TABLE`, those waits too must be bounded.
pub(super) async fn begin(db: &Db, lock_timeout: Duration) -> Result<Tx> {
    crate::pool::begin(db, Some(lock_timeout)).await
}

pub(super) fn millis(timeout: Duration) -> u128 {
    timeout.as_millis().max(1)
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
                .run("ship", "e-42", &"payload", |_| async {
                    Ok::<u8, crate::Error>(1)
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
