//! A saga's compensation log: registering, requesting, completing and listing compensations.

use sqlx::AssertSqlSafe;
use sqlx::types::Json;
use uuid::Uuid;

use super::sql::{CompensationRow, decode_compensation};
use super::{Compensation, CompensationRecord, Saga, SagaError, SagaStore, Tx};

impl SagaStore {
    /// Runs `sql`, a compensation write that returns a row when it changed something.
    async fn write_compensation<P>(
        &self,
        sql: &str,
        tx: &mut Tx<'_>,
        saga: &Saga<P>,
        compensation: &Compensation,
    ) -> Result<bool, SagaError> {
        let row: Option<i32> = self
            .statements
            .query_scalar(AssertSqlSafe(sql))
            .bind(saga.correlation_id)
            .bind(&compensation.key)
            .bind(&compensation.event)
            .bind(Json(&compensation.payload))
            .fetch_optional(&mut **tx)
            .await?;
        Ok(row.is_some())
    }

    /// Registers what undoes a step, as `pending`, on the step's transaction; returns
    /// `false` if the saga already had a compensation with this key (nothing changed).
    ///
    /// # Errors
    ///
    /// [`SagaError::NotFound`] if the saga row is gone; the database error.
    ///
    /// See [the module](crate::saga) for an example.
    pub async fn register_compensation<P>(
        &self,
        tx: &mut Tx<'_>,
        saga: &Saga<P>,
        compensation: &Compensation,
    ) -> Result<bool, SagaError> {
        self.write_compensation(&self.sql.register, tx, saga, compensation)
            .await
    }

    /// Marks the saga's `pending` compensations `requested` and returns them, newest
    /// first (the order to undo the steps in).
    ///
    /// # Errors
    ///
    /// The database error.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db, store: prost_db::saga::SagaStore, id: uuid::Uuid) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = db.begin().await?;
    /// let mut saga = store.get::<serde_json::Value>(&mut *tx, id).await?;
    /// store.transition(&mut tx, &mut saga, "compensating").await?;
    /// for undo in store.request_compensations(&mut tx, &saga).await? {
    ///     println!("undo {} ({})", undo.key, undo.event); // stage the command that undoes it
    /// }
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn request_compensations<P>(
        &self,
        tx: &mut Tx<'_>,
        saga: &Saga<P>,
    ) -> Result<Vec<CompensationRecord>, SagaError> {
        let rows: Vec<CompensationRow> = self
            .statements
            .query_as(AssertSqlSafe(self.sql.request.as_str()))
            .bind(saga.correlation_id)
            .fetch_all(&mut **tx)
            .await?;
        let mut records = rows
            .into_iter()
            .map(decode_compensation)
            .collect::<Result<Vec<_>, _>>()?;
        records.sort_by_key(|record| std::cmp::Reverse(record.created_at));
        Ok(records)
    }

    /// Records that a compensation ran, on the step's transaction: completes the row with
    /// this key, or inserts it completed if its step was never registered (the undo's
    /// confirmation overtook the step's own event). Returns `true` if this call completed
    /// it, `false` if it was already completed.
    ///
    /// # Errors
    ///
    /// The database error.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db, store: prost_db::saga::SagaStore, id: uuid::Uuid) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = db.begin().await?;
    /// let saga = store.get::<serde_json::Value>(&mut *tx, id).await?;
    /// let done = prost_db::saga::Compensation::new("res-1", "StockReleased", &())?;
    /// assert!(store.complete_compensation(&mut tx, &saga, &done).await?);
    /// assert!(!store.complete_compensation(&mut tx, &saga, &done).await?);
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn complete_compensation<P>(
        &self,
        tx: &mut Tx<'_>,
        saga: &Saga<P>,
        compensation: &Compensation,
    ) -> Result<bool, SagaError> {
        self.write_compensation(&self.sql.complete, tx, saga, compensation)
            .await
    }

    /// Marks the saga's `pending` compensations `discarded` (the saga succeeded, nothing
    /// will be undone) and returns how many.
    ///
    /// # Errors
    ///
    /// The database error.
    ///
    /// See [the module](crate::saga) for an example.
    pub async fn discard_compensations<P>(
        &self,
        tx: &mut Tx<'_>,
        saga: &Saga<P>,
    ) -> Result<u64, SagaError> {
        Ok(self
            .statements
            .query(AssertSqlSafe(self.sql.discard.as_str()))
            .bind(saga.correlation_id)
            .execute(&mut **tx)
            .await?
            .rows_affected())
    }

    /// The saga's compensations, newest first.
    ///
    /// # Errors
    ///
    /// The database error.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db, store: prost_db::saga::SagaStore, id: uuid::Uuid) -> Result<(), prost_db::saga::SagaError> {
    /// use prost_db::saga::CompensationStatus;
    /// let open = store.compensations(db.pool(), id).await?
    ///     .into_iter()
    ///     .filter(|c| c.status == CompensationStatus::Requested)
    ///     .count();
    /// # Ok(()) }
    /// ```
    pub async fn compensations<'c>(
        &self,
        executor: impl sqlx::PgExecutor<'c>,
        correlation_id: Uuid,
    ) -> Result<Vec<CompensationRecord>, SagaError> {
        let rows: Vec<CompensationRow> = self
            .statements
            .query_as(AssertSqlSafe(self.sql.list.as_str()))
            .bind(correlation_id)
            .fetch_all(executor)
            .await?;
        rows.into_iter().map(decode_compensation).collect()
    }
}
