//! The saga store: construction, the startup check, starting, reading and moving sagas.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::AssertSqlSafe;
use sqlx::types::Json;
use uuid::Uuid;

use crate::pool::{Db, Statements as StatementKind};

use super::sql::{SagaRow, Statements, decode_saga};
use super::{NewSaga, Saga, SagaError, SagaMachine, SagaTables, Tx};

/// Sagas of one [`SagaMachine`] in one pair of [`SagaTables`]; cheap to clone.
///
/// See [the module](crate::saga) for the guarantees and an example.
///
/// ```
/// use prost_db::saga::{SagaMachine, SagaStore, SagaTables};
///
/// static TRANSFER: SagaMachine = SagaMachine {
///     saga_type: "transfer",
///     initial: "debited",
///     transitions: &[("debited", "credited"), ("debited", "refunded")],
///     terminal: &["credited", "refunded"],
/// };
/// let store = SagaStore::new(SagaTables::new("billing")?, &TRANSFER)?;
/// assert_eq!(store.machine().saga_type, "transfer");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct SagaStore {
    pub(super) tables: Arc<SagaTables>,
    pub(super) machine: &'static SagaMachine,
    pub(super) sql: Arc<Statements>,
    /// Named or unnamed (behind a transaction pooler).
    pub(super) statements: StatementKind,
}

impl SagaStore {
    /// A store of `machine`'s sagas in `tables`.
    ///
    /// # Errors
    ///
    /// [`SagaError::InvalidMachine`] if the machine could leave a saga unfinished
    /// ([`SagaMachine::validate`]).
    ///
    /// See [`SagaStore`] for an example.
    pub fn new(tables: SagaTables, machine: &'static SagaMachine) -> Result<Self, SagaError> {
        machine.validate()?;
        Ok(SagaStore {
            sql: Arc::new(Statements::new(&tables)),
            tables: Arc::new(tables),
            machine,
            statements: StatementKind::NAMED,
        })
    }

    /// The same store, its statements sent as `statements` says: named (the default), or
    /// [`Db::statements`] of the pool it runs on, which behind a transaction pooler are
    /// unnamed (named ones fail there with `prepared statement "sqlx_s_1" already exists`).
    ///
    /// ```
    /// # use prost_db::saga::{SagaMachine, SagaStore, SagaTables};
    /// # static TRANSFER: SagaMachine = SagaMachine {
    /// #     saga_type: "transfer",
    /// #     initial: "debited",
    /// #     transitions: &[("debited", "credited")],
    /// #     terminal: &["credited"],
    /// # };
    /// let store = SagaStore::new(SagaTables::new("billing")?, &TRANSFER)?
    ///     .with_statements(prost_db::Statements::UNNAMED);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn with_statements(mut self, statements: StatementKind) -> Self {
        self.statements = statements;
        self
    }

    /// The store's machine.
    ///
    /// See [`SagaStore`] for an example.
    pub fn machine(&self) -> &'static SagaMachine {
        self.machine
    }

    /// The store's tables.
    ///
    /// ```
    /// # fn show(store: prost_db::saga::SagaStore) {
    /// println!("sagas in {}", store.tables().states_name());
    /// # }
    /// ```
    pub fn tables(&self) -> &SagaTables {
        &self.tables
    }

    /// Checks that both tables have every column the store needs (and the link columns),
    /// and reports everything missing at once: call it at startup.
    ///
    /// # Errors
    ///
    /// [`SagaError::MissingColumns`] for the first table that lacks columns, naming all of
    /// them; the database error otherwise.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db, store: prost_db::saga::SagaStore) -> Result<(), prost_db::saga::SagaError> {
    /// store.verify(&db).await?;
    /// # Ok(()) }
    /// ```
    pub async fn verify(&self, db: &Db) -> Result<(), SagaError> {
        let links = self.tables.links();
        let states: Vec<&str> = [
            "id",
            "correlation_id",
            "saga_type",
            "status",
            "payload",
            "version",
            "created_at",
            "updated_at",
            "expires_at",
        ]
        .into_iter()
        .chain(links.iter().copied())
        .collect();
        let compensations: Vec<&str> = [
            "saga_correlation_id",
            "compensation_key",
            "compensation_event",
            "compensation_payload",
            "status",
            "created_at",
            "completed_at",
        ]
        .into_iter()
        .chain(links.iter().copied())
        .collect();
        for (table, wanted) in [
            (&self.tables.states, states),
            (&self.tables.compensations, compensations),
        ] {
            let present: Vec<String> = db
                .autocommit(async |conn| {
                    db.query_scalar(
                        "SELECT column_name::text FROM information_schema.columns \
                         WHERE table_schema = $1 AND table_name = $2",
                    )
                    .bind(self.tables.schema.as_str())
                    .bind(table.as_str())
                    .fetch_all(conn)
                    .await
                })
                .await?;
            let missing: Vec<String> = wanted
                .iter()
                .filter(|c| !present.iter().any(|p| p == *c))
                .map(|c| (*c).to_owned())
                .collect();
            if !missing.is_empty() {
                return Err(SagaError::MissingColumns {
                    table: format!("{}.{}", self.tables.schema.as_str(), table.as_str()),
                    missing,
                });
            }
        }
        Ok(())
    }

    /// Starts a saga in the machine's initial status, on the step's transaction.
    ///
    /// # Errors
    ///
    /// [`SagaError::AlreadyStarted`] if the correlation id is taken (a step that starts a
    /// saga belongs in an idempotent handler, so a redelivery never gets here),
    /// [`SagaError::UnknownLink`], [`SagaError::Payload`], or the database error.
    ///
    /// See [the module](crate::saga) for an example.
    #[tracing::instrument(
        name = "prost_db.saga.start",
        skip_all,
        fields(saga_type = self.machine.saga_type, correlation_id = %new.correlation_id)
    )]
    pub async fn start<P: Serialize>(
        &self,
        tx: &mut Tx<'_>,
        new: NewSaga<P>,
    ) -> Result<Saga<P>, SagaError> {
        let correlation_id = new.correlation_id;
        let declared = self.tables.links();
        if let Some(column) = new.links.keys().find(|k| !declared.contains(&k.as_str())) {
            return Err(SagaError::UnknownLink {
                column: column.clone(),
                declared: declared.iter().map(|d| (*d).to_owned()).collect(),
            });
        }
        let payload = serde_json::to_value(&new.payload).map_err(|source| SagaError::Payload {
            correlation_id,
            source,
        })?;
        let linked = !self.tables.links.is_empty();
        let sql = if linked {
            &self.sql.insert_linked
        } else {
            &self.sql.insert
        };
        let mut query = self
            .statements
            .query_as::<(Uuid, DateTime<Utc>, DateTime<Utc>, DateTime<Utc>, bool)>(AssertSqlSafe(
                sql.as_str(),
            ))
            .bind(correlation_id)
            .bind(self.machine.saga_type)
            .bind(self.machine.initial)
            .bind(Json(&payload))
            .bind(new.expires_in.as_secs_f64());
        if linked {
            query = query.bind(Json(serde_json::Value::Object(new.links)));
        }
        let row = query.fetch_optional(&mut **tx).await?;
        let Some((id, created_at, updated_at, expires_at, expired)) = row else {
            return Err(SagaError::AlreadyStarted { correlation_id });
        };
        tracing::debug!(status = self.machine.initial, "saga started");
        Ok(Saga {
            id,
            correlation_id,
            saga_type: self.machine.saga_type.to_owned(),
            status: self.machine.initial.to_owned(),
            version: 0,
            payload: new.payload,
            created_at,
            updated_at,
            expires_at,
            expired,
        })
    }

    /// The saga with this correlation id, if there is one (through the pool, or on a
    /// transaction with `&mut *tx`).
    ///
    /// # Errors
    ///
    /// [`SagaError::Payload`] if the payload does not decode as `P`; the database error.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db, store: prost_db::saga::SagaStore, id: uuid::Uuid) -> Result<(), prost_db::saga::SagaError> {
    /// if let Some(saga) = store.load::<serde_json::Value>(db.pool(), id).await? {
    ///     println!("{}", saga.status);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn load<'c, P: DeserializeOwned>(
        &self,
        executor: impl sqlx::PgExecutor<'c>,
        correlation_id: Uuid,
    ) -> Result<Option<Saga<P>>, SagaError> {
        let row: Option<SagaRow> = self
            .statements
            .query_as(AssertSqlSafe(self.sql.select.as_str()))
            .bind(correlation_id)
            .bind(self.machine.saga_type)
            .fetch_optional(executor)
            .await?;
        row.map(decode_saga).transpose()
    }

    /// The saga with this correlation id.
    ///
    /// # Errors
    ///
    /// [`SagaError::NotFound`] if there is none; as [`load`](Self::load) otherwise.
    ///
    /// See [the module](crate::saga) for an example.
    pub async fn get<'c, P: DeserializeOwned>(
        &self,
        executor: impl sqlx::PgExecutor<'c>,
        correlation_id: Uuid,
    ) -> Result<Saga<P>, SagaError> {
        self.load(executor, correlation_id)
            .await?
            .ok_or_else(|| SagaError::NotFound {
                correlation_id,
                saga_type: self.machine.saga_type.to_owned(),
            })
    }

    /// Moves `saga` to `to` (or touches it, when `to` is its status), writing its payload
    /// and `expires_at`, if and only if nobody moved it since it was read; updates `saga`
    /// in place.
    ///
    /// # Errors
    ///
    /// [`SagaError::Conflict`] if another transaction moved the saga first (this one's
    /// update waited for it to commit): roll back and run the step again.
    /// [`SagaError::InvalidTransition`] if the machine does not allow it. The database
    /// error otherwise.
    ///
    /// See [the module](crate::saga) for an example.
    #[tracing::instrument(
        name = "prost_db.saga.transition",
        skip_all,
        fields(saga_type = self.machine.saga_type, correlation_id = %saga.correlation_id, from = %saga.status, to)
    )]
    pub async fn transition<P: Serialize>(
        &self,
        tx: &mut Tx<'_>,
        saga: &mut Saga<P>,
        to: &str,
    ) -> Result<(), SagaError> {
        if !self.machine.allows(&saga.status, to) {
            return Err(SagaError::InvalidTransition {
                correlation_id: saga.correlation_id,
                saga_type: saga.saga_type.clone(),
                from: saga.status.clone(),
                to: to.to_owned(),
            });
        }
        let payload = serde_json::to_value(&saga.payload).map_err(|source| SagaError::Payload {
            correlation_id: saga.correlation_id,
            source,
        })?;
        let row: Option<(i64, DateTime<Utc>, bool)> = self
            .statements
            .query_as(AssertSqlSafe(self.sql.update.as_str()))
            .bind(saga.correlation_id)
            .bind(saga.version)
            .bind(to)
            .bind(Json(&payload))
            .bind(saga.expires_at)
            .fetch_optional(&mut **tx)
            .await?;
        let Some((version, updated_at, expired)) = row else {
            tracing::debug!(version = saga.version, "saga conflict");
            return Err(SagaError::Conflict {
                correlation_id: saga.correlation_id,
                version: saga.version,
            });
        };
        saga.status = to.to_owned();
        saga.version = version;
        saga.updated_at = updated_at;
        saga.expired = expired;
        Ok(())
    }

    /// How many sagas of the machine's type are in each status, sorted by status.
    ///
    /// # Errors
    ///
    /// The database error.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db, store: prost_db::saga::SagaStore) -> Result<(), prost_db::saga::SagaError> {
    /// for (status, n) in store.count_by_status(db.pool()).await? {
    ///     let end = if store.machine().is_terminal(&status) { "terminal" } else { "in flight" };
    ///     println!("{status}: {n} ({end})");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn count_by_status<'c>(
        &self,
        executor: impl sqlx::PgExecutor<'c>,
    ) -> Result<Vec<(String, i64)>, SagaError> {
        Ok(self
            .statements
            .query_as(AssertSqlSafe(self.sql.count.as_str()))
            .bind(self.machine.saga_type)
            .fetch_all(executor)
            .await?)
    }
}
