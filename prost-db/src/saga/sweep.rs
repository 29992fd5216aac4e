//! Expired sagas: locking them for a step, and the sweep that runs one on each.

use std::future::Future;

use serde::de::DeserializeOwned;
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use crate::pool::Db;

use super::sql::{SagaRow, decode_saga};
use super::{Saga, SagaError, SagaStore, SweepReport, Tx};

impl SagaStore {
    /// Locks up to `limit` sagas in `statuses` whose deadline has passed, oldest deadline
    /// first, skipping sagas another transaction holds (`FOR UPDATE SKIP LOCKED`), and
    /// leaving out `except`. Transition them on the same transaction.
    ///
    /// # Errors
    ///
    /// [`SagaError::UnknownStatus`] for a status the machine does not know;
    /// [`SagaError::Payload`]; the database error.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db, store: prost_db::saga::SagaStore) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = db.begin().await?;
    /// for mut saga in store.lock_expired::<serde_json::Value>(&mut tx, &["reserving"], 100, &[]).await? {
    ///     store.transition(&mut tx, &mut saga, "compensating").await?;
    /// }
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn lock_expired<P: DeserializeOwned>(
        &self,
        tx: &mut Tx<'_>,
        statuses: &[&str],
        limit: usize,
        except: &[Uuid],
    ) -> Result<Vec<Saga<P>>, SagaError> {
        if let Some(status) = statuses.iter().find(|s| !self.machine.knows(s)) {
            return Err(SagaError::UnknownStatus {
                saga_type: self.machine.saga_type.to_owned(),
                status: (*status).to_owned(),
                known: self.machine.statuses(),
            });
        }
        let rows: Vec<SagaRow> = self
            .statements
            .query_as(AssertSqlSafe(self.sql.lock_expired.as_str()))
            .bind(self.machine.saga_type)
            .bind(statuses)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(except)
            .fetch_all(&mut **tx)
            .await?;
        rows.into_iter().map(decode_saga).collect()
    }

    /// Runs `step` on each saga in `statuses` whose deadline has passed, up to `limit`,
    /// each in a transaction of its own: lock one expired saga (`FOR UPDATE SKIP LOCKED`,
    /// so sweepers in several processes share the work), run `step`, commit if it
    /// returned `Ok`, roll back otherwise. `step` gets the transaction and the saga and
    /// gives the transaction back with its result; it must move the saga out of
    /// `statuses`, or the next sweep finds it again. A saga whose step failed is not tried
    /// again in the same sweep.
    ///
    /// The lock serializes the sweep with the saga's other steps: a step that read the
    /// saga before the sweep locked it gets [`SagaError::Conflict`] when it tries to move
    /// it, and one that moved it first makes the sweep skip it (locked) or not see it
    /// (moved out of `statuses`).
    ///
    /// # Errors
    ///
    /// As [`lock_expired`](Self::lock_expired), or the database error of a `BEGIN` or
    /// `COMMIT`; a failed step is not an error of the sweep but in
    /// [`SweepReport::failed`].
    ///
    /// ```no_run
    /// use prost_db::saga::SagaError;
    ///
    /// # async fn run(db: prost_db::Db, store: prost_db::saga::SagaStore) -> Result<(), SagaError> {
    /// let report = store
    ///     .sweep_expired::<serde_json::Value, SagaError, _, _>(&db, &["reserving"], 500, |mut tx, mut saga| {
    ///         let store = store.clone();
    ///         async move {
    ///             let result = store.transition(&mut tx, &mut saga, "compensating").await;
    ///             (tx, result)
    ///         }
    ///     })
    ///     .await?;
    /// println!("{} sagas expired", report.swept);
    /// # Ok(()) }
    /// ```
    pub async fn sweep_expired<P, E, F, Fut>(
        &self,
        db: &Db,
        statuses: &[&str],
        limit: usize,
        mut step: F,
    ) -> Result<SweepReport<E>, SagaError>
    where
        P: DeserializeOwned,
        F: FnMut(Tx<'static>, Saga<P>) -> Fut,
        Fut: Future<Output = (Tx<'static>, Result<(), E>)>,
    {
        let mut report = SweepReport::default();
        let mut failed_ids: Vec<Uuid> = Vec::new();
        while report.swept + report.failed.len() < limit {
            let mut tx = db.begin().await?;
            let Some(saga) = self
                .lock_expired::<P>(&mut tx, statuses, 1, &failed_ids)
                .await?
                .pop()
            else {
                tx.rollback().await.map_err(crate::Error::from)?;
                break;
            };
            let correlation_id = saga.correlation_id;
            let (tx, result) = step(tx, saga).await;
            match result {
                Ok(()) => {
                    tx.commit().await.map_err(crate::Error::from)?;
                    report.swept += 1;
                }
                Err(error) => {
                    tx.rollback().await.ok();
                    failed_ids.push(correlation_id);
                    report.failed.push((correlation_id, error));
                }
            }
        }
        if report.swept > 0 || !report.failed.is_empty() {
            tracing::info!(
                saga_type = self.machine.saga_type,
                swept = report.swept,
                failed = report.failed.len(),
                "expired sagas swept"
            );
        }
        Ok(report)
    }
}
