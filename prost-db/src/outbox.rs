//! The transactional outbox: events a handler produces are written in the handler's own
//! transaction and published by a relay afterwards, so a crash between COMMIT and publish
//! loses nothing.
//!
//! The relay publishes with publisher confirms and marks rows sent only after the broker
//! confirmed them; if it dies in between, the rows are published again (at least once).
//! Consumers are idempotent on `event_id`, so the second copy is a duplicate they skip.
//!
//! ```no_run
//! use prost_db::outbox::{self, Outbox};
//! use prost_db::events::{Event, EventPayload};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct StockReserved { product_id: i64, quantity: i32 }
//! impl EventPayload for StockReserved {
//!     const EVENT_TYPE: &'static str = "StockReserved";
//!     const AGGREGATE_TYPE: &'static str = "product";
//!     const ROUTING_KEY: &'static str = "product.stock.reserved";
//! }
//!
//! # async fn run(db: prost_db::Db) -> prost_db::Result<()> {
//! outbox::install(&db).await?;
//! let outbox = Outbox::new(&db);
//! let mut tx = db.begin().await?;
//! // ... the handler's writes on `tx` ...
//! let event = Event::new("42", "saga-1", StockReserved { product_id: 42, quantity: 1 });
//! outbox.stage(&mut tx, "products.events", &event).await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use sqlx::{AssertSqlSafe, PgConnection};

use crate::error::{Error, Origin, Result, Server};
use crate::events::{Event, EventPayload};
use crate::ident::Identifier;
use crate::pool::{Db, Statements};

#[cfg(feature = "amqp")]
mod destinations;
#[cfg(feature = "amqp")]
mod relay;
#[cfg(feature = "amqp")]
pub use relay::Relay;

/// Name of the outbox table in each service schema.
///
/// ```
/// assert_eq!(prost_db::outbox::OUTBOX_TABLE, "outbox_events");
/// ```
pub const OUTBOX_TABLE: &str = "outbox_events";

/// The outbox table; `{schema}` is replaced by the quoted service schema. The migrator's
/// framework steps install it with the other framework tables; [`install`] does it alone.
const DDL: &str = crate::framework::STEP_3_OUTBOX_EVENTS;

/// The outbox DDL for `schema`.
pub(crate) fn ddl(schema: &Identifier) -> String {
    crate::ident::render(DDL, schema)
}

/// Creates the outbox table in `db`'s schema if it does not exist (safe to run from several
/// processes at once). The migration runner calls this with the other framework tables.
/// Behind a transaction pooler with a [`DbConfig::migrate_url`](crate::DbConfig::migrate_url)
/// it runs over that direct URL, as the migrator does.
///
/// # Errors
///
/// The database error.
///
/// ```no_run
/// # async fn run(db: prost_db::Db) -> prost_db::Result<()> {
/// prost_db::outbox::install(&db).await?;
/// assert!(db.table_exists("outbox_events").await?);
/// # Ok(()) }
/// ```
pub async fn install(db: &Db) -> Result<()> {
    // Behind a pooler with a migrate URL, as the migrator: its role owns the tables.
    let direct = db.for_installs().await?;
    let installed = install_on(direct.as_ref().unwrap_or(db)).await;
    if let Some(direct) = direct {
        direct.close().await;
    }
    installed
}

async fn install_on(db: &Db) -> Result<()> {
    let mut tx = db.begin().await?;
    db.query("SELECT pg_advisory_xact_lock(hashtext('prost_db.outbox.' || $1))")
        .bind(db.schema())
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(AssertSqlSafe(ddl(db.schema_ident())))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Stages events in a service's outbox table.
///
/// ```no_run
/// # async fn run(db: prost_db::Db) -> prost_db::Result<()> {
/// let outbox = prost_db::outbox::Outbox::new(&db);
/// assert_eq!(outbox.pending(db.pool()).await?, 0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Outbox {
    insert: Arc<str>,
    insert_many: Arc<str>,
    pending: Arc<str>,
    table: Arc<str>,
    // Named by connection errors; unknown for an outbox made with `for_schema`.
    server: Option<Arc<Server>>,
    // Named prepared statements, or unnamed behind a transaction pooler.
    statements: Statements,
}

impl Outbox {
    /// The outbox of `db`'s schema.
    ///
    /// ```no_run
    /// # fn run(db: prost_db::Db) {
    /// let outbox = prost_db::outbox::Outbox::new(&db);
    /// # }
    /// ```
    pub fn new(db: &Db) -> Self {
        Outbox {
            server: Some(Arc::clone(db.server())),
            statements: db.statements(),
            ..Self::for_schema(db.schema_ident())
        }
    }

    /// The outbox of `schema`.
    ///
    /// ```
    /// use prost_db::{Identifier, IdentifierKind, outbox::Outbox};
    /// let outbox = Outbox::for_schema(&Identifier::new(IdentifierKind::Schema, "catalog")?);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn for_schema(schema: &Identifier) -> Self {
        Outbox {
            insert: format!(
                "INSERT INTO {schema}.outbox_events \
                 (event_id, event_type, exchange, routing_key, payload) \
                 VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (event_id, exchange) DO NOTHING"
            )
            .into(),
            insert_many: format!(
                "INSERT INTO {schema}.outbox_events \
                 (event_id, event_type, exchange, routing_key, payload) \
                 SELECT e.id, $2, $3, $4, e.payload::jsonb \
                 FROM unnest($1::uuid[], $5::text[]) AS e(id, payload) \
                 ON CONFLICT (event_id, exchange) DO NOTHING"
            )
            .into(),
            pending: format!(
                "SELECT count(*) FROM {schema}.outbox_events WHERE published_at IS NULL"
            )
            .into(),
            table: format!("{schema}.outbox_events").into(),
            server: None,
            statements: Statements::NAMED,
        }
    }

    /// The same outbox, its statements sent as `statements` says: an outbox made with
    /// [`for_schema`](Self::for_schema) uses named statements, which a transaction pooler
    /// breaks; [`Outbox::new`] takes the `Db`'s ([`Db::statements`]).
    ///
    /// ```
    /// use prost_db::{Identifier, IdentifierKind, Statements, outbox::Outbox};
    /// let schema = Identifier::new(IdentifierKind::Schema, "catalog")?;
    /// let outbox = Outbox::for_schema(&schema).with_statements(Statements::UNNAMED);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn with_statements(mut self, statements: Statements) -> Self {
        self.statements = statements;
        self
    }

    fn map_err(&self, error: sqlx::Error) -> Error {
        Error::from_sqlx(error, Origin::Connection(self.server.as_deref()))
    }

    /// Writes `event` for publication to `exchange` (with its type's routing key) on the
    /// caller's transaction: it is published if and only if the transaction commits.
    /// Staging the same event id for the same exchange twice stores it once.
    ///
    /// # Errors
    ///
    /// [`Error::EventEncode`] or the database error.
    ///
    /// See [the module](self) for an example.
    pub async fn stage<P: EventPayload>(
        &self,
        conn: &mut PgConnection,
        exchange: &str,
        event: &Event<P>,
    ) -> Result<()> {
        let payload = serde_json::to_string(event).map_err(Error::EventEncode)?;
        self.statements
            .query(AssertSqlSafe(Arc::clone(&self.insert)))
            .bind(event.envelope.event_id)
            .bind(P::EVENT_TYPE)
            .bind(exchange)
            .bind(P::ROUTING_KEY)
            .bind(payload)
            .execute(conn)
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(())
    }

    /// Stages many events of one type in one statement (see [`stage`](Self::stage)).
    ///
    /// # Errors
    ///
    /// [`Error::EventEncode`] or the database error.
    ///
    /// ```no_run
    /// # use prost_db::events::{Event, EventPayload};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Ping { n: u32 }
    /// # impl EventPayload for Ping {
    /// #     const EVENT_TYPE: &'static str = "Ping";
    /// #     const AGGREGATE_TYPE: &'static str = "ping";
    /// #     const ROUTING_KEY: &'static str = "ping";
    /// # }
    /// # async fn run(db: prost_db::Db) -> prost_db::Result<()> {
    /// let events: Vec<Event<Ping>> = (0..3).map(|n| Event::new("1", "c", Ping { n })).collect();
    /// let mut tx = db.begin().await?;
    /// prost_db::outbox::Outbox::new(&db).stage_all(&mut tx, "pings", &events).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn stage_all<P: EventPayload>(
        &self,
        conn: &mut PgConnection,
        exchange: &str,
        events: &[Event<P>],
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.envelope.event_id).collect();
        let payloads: Vec<String> = events
            .iter()
            .map(serde_json::to_string)
            .collect::<std::result::Result<_, _>>()
            .map_err(Error::EventEncode)?;
        self.statements
            .query(AssertSqlSafe(Arc::clone(&self.insert_many)))
            .bind(&ids)
            .bind(P::EVENT_TYPE)
            .bind(exchange)
            .bind(P::ROUTING_KEY)
            .bind(&payloads)
            .execute(conn)
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(())
    }

    /// How many staged events are not yet published.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db) -> prost_db::Result<()> {
    /// let pending = prost_db::outbox::Outbox::new(&db).pending(db.pool()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The database error.
    pub async fn pending<'c, E>(&self, executor: E) -> Result<i64>
    where
        E: sqlx::PgExecutor<'c>,
    {
        // No parameters: the simple protocol, one message, which holds on any executor,
        // behind a transaction pooler too.
        let row = sqlx::raw_sql(AssertSqlSafe(Arc::clone(&self.pending)))
            .fetch_one(executor)
            .await
            .map_err(|e| self.map_err(e))?;
        sqlx::Row::try_get(&row, 0).map_err(Error::Database)
    }
}

impl Outbox {
    /// Deletes events published more than `horizon` ago (unpublished ones are kept) and
    /// returns how many. It deletes in batches of a few thousand rows, each its own
    /// statement and transaction, so locks and WAL stay bounded however much is old.
    ///
    /// # Errors
    ///
    /// The database error, or [`Error::Config`] for a horizon PostgreSQL cannot represent.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db) -> prost_db::Result<()> {
    /// use std::time::Duration;
    /// let outbox = prost_db::outbox::Outbox::new(&db);
    /// let deleted = outbox.purge_published(db.pool(), Duration::from_secs(7 * 86_400)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn purge_published(
        &self,
        pool: &sqlx::PgPool,
        horizon: std::time::Duration,
    ) -> Result<u64> {
        crate::pool::purge_in_batches(pool, &self.table, "published_at", horizon).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ident::IdentifierKind;

    #[test]
    fn ddl_quotes_the_schema() {
        let schema = Identifier::new(IdentifierKind::Schema, "catalog").unwrap();
        let sql = ddl(&schema);
        assert!(sql.contains("\"catalog\".outbox_events"));
        assert!(!sql.contains("{schema}"));
    }
}
