//! The relay: publishes staged events with confirms, then marks them sent.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ExchangeKind};
use sqlx::AssertSqlSafe;

use crate::amqp::Publisher;
use crate::error::Result;
use crate::pool::Db;

type Hook = Arc<dyn Fn() + Send + Sync>;

/// Publishes a service's staged events.
///
/// Each batch runs in one transaction: lock up to `batch_size` unpublished rows
/// (`FOR UPDATE SKIP LOCKED`, so several relays share the work), publish them, wait for
/// the broker's confirms, mark the confirmed rows, commit. A relay that dies before the
/// commit leaves the rows unpublished and they go out again: at least once.
///
/// Publishing to an exchange that does not exist makes the broker close the channel, which
/// would fail every batch holding such a row. [`run`](Self::run) therefore checks each
/// exchange once per connection (a passive declare on a channel of its own); the rows of a
/// missing exchange get `last_error` set and wait, out of the batches, while the others go
/// out; the exchange is checked again every 2 s, and its events follow once it exists.
///
/// ```no_run
/// use std::time::Duration;
/// use prost_db::{amqp, outbox::Relay};
///
/// # async fn run(db: prost_db::Db) -> prost_db::Result<()> {
/// let connection = amqp::connect(&amqp::url_from_env()).await?;
/// let published = Relay::new(db)
///     .batch_size(200)
///     .poll_interval(Duration::from_millis(50))
///     .run(&connection, async { let _ = tokio::signal::ctrl_c().await; })
///     .await?;
/// println!("{published} events published");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Relay {
    db: Db,
    select: Arc<str>,
    mark: Arc<str>,
    mark_failed: Arc<str>,
    batch_size: i64,
    poll_interval: Duration,
    after_publish: Option<Hook>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("schema", &self.db.schema())
            .field("batch_size", &self.batch_size)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay for `db`'s outbox: batches of 100, polling every 100 ms when idle.
    ///
    /// ```no_run
    /// # fn run(db: prost_db::Db) {
    /// let relay = prost_db::outbox::Relay::new(db);
    /// # }
    /// ```
    pub fn new(db: Db) -> Self {
        let schema = db.schema_ident();
        Relay {
            select: format!(
                "SELECT id, event_id::text, event_type, exchange, routing_key, payload::text \
                 FROM {schema}.outbox_events \
                 WHERE published_at IS NULL AND exchange <> ALL($2) \
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
            )
            .into(),
            mark: format!(
                "UPDATE {schema}.outbox_events \
                 SET published_at = now(), publish_attempts = publish_attempts + 1 \
                 WHERE id = ANY($1)"
            )
            .into(),
            mark_failed: format!(
                "UPDATE {schema}.outbox_events \
                 SET publish_attempts = publish_attempts + 1, last_error = $2 \
                 WHERE id = ANY($1)"
            )
            .into(),
            db,
            batch_size: 100,
            poll_interval: Duration::from_millis(100),
            after_publish: None,
        }
    }

    /// Rows per batch.
    ///
    /// ```no_run
    /// # fn run(db: prost_db::Db) {
    /// let relay = prost_db::outbox::Relay::new(db).batch_size(500);
    /// # }
    /// ```
    #[must_use]
    pub fn batch_size(mut self, n: u32) -> Self {
        self.batch_size = i64::from(n.max(1));
        self
    }

    /// Sleep between polls when the outbox is empty.
    ///
    /// ```no_run
    /// # fn run(db: prost_db::Db) {
    /// let relay = prost_db::outbox::Relay::new(db).poll_interval(std::time::Duration::from_millis(20));
    /// # }
    /// ```
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Fault injection for crash tests (feature `fault-injection`, never for a service):
    /// called after a batch is confirmed by the broker and before it is marked published.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    #[must_use]
    pub fn after_publish_hook(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.after_publish = Some(Arc::new(hook));
        self
    }

    /// Publishes one batch and returns how many events were confirmed and marked. Unlike
    /// [`run`](Self::run), it does not check that the exchanges exist: a row naming a
    /// missing one makes the broker close the publisher's channel.
    ///
    /// # Errors
    ///
    /// The database or broker error; nothing is marked then, so the batch is retried.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db, connection: prost_db::amqp::lapin::Connection) -> prost_db::Result<()> {
    /// let publisher = prost_db::amqp::Publisher::new(&connection).await?;
    /// let relay = prost_db::outbox::Relay::new(db);
    /// while relay.publish_pending(&publisher).await? > 0 {}
    /// # Ok(()) }
    /// ```
    pub async fn publish_pending(&self, publisher: &Publisher) -> Result<usize> {
        self.publish_batch(publisher, None).await
    }

    /// One batch; with `exchanges`, rows whose exchange does not exist are set aside
    /// instead of closing the publishing channel.
    async fn publish_batch(
        &self,
        publisher: &Publisher,
        exchanges: Option<&mut Exchanges<'_>>,
    ) -> Result<usize> {
        let skip = exchanges
            .as_ref()
            .map(|exchanges| exchanges.waiting())
            .unwrap_or_default();
        let mut tx = self.db.begin().await?;
        let mut rows: Vec<(i64, String, String, String, String, String)> =
            sqlx::query_as(AssertSqlSafe(Arc::clone(&self.select)))
                .bind(self.batch_size)
                .bind(&skip)
                .fetch_all(&mut *tx)
                .await?;
        if let Some(exchanges) = exchanges {
            let mut absent = HashSet::new();
            for (_, _, _, exchange, _, _) in &rows {
                if !absent.contains(exchange) && !exchanges.exists(exchange).await? {
                    absent.insert(exchange.clone());
                }
            }
            if !absent.is_empty() {
                let (waiting, ready) = rows
                    .into_iter()
                    .partition::<Vec<_>, _>(|row| absent.contains(&row.3));
                rows = ready;
                for exchange in &absent {
                    let ids: Vec<i64> = waiting
                        .iter()
                        .filter(|row| &row.3 == exchange)
                        .map(|row| row.0)
                        .collect();
                    let error = format!(
                        "exchange {exchange:?} does not exist; its events wait until it is declared"
                    );
                    tracing::warn!(exchange, events = ids.len(), "{error}");
                    sqlx::query(AssertSqlSafe(Arc::clone(&self.mark_failed)))
                        .bind(&ids)
                        .bind(&error)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let mut confirms = Vec::with_capacity(rows.len());
        for (id, event_id, event_type, exchange, routing_key, payload) in &rows {
            let confirm = publisher
                .send(
                    exchange,
                    routing_key,
                    payload.as_bytes(),
                    event_id,
                    event_type,
                    FieldTable::default(),
                )
                .await?;
            confirms.push((*id, exchange, routing_key, confirm));
        }
        let mut confirmed = Vec::with_capacity(rows.len());
        let mut refused = Vec::new();
        let mut last_error = String::new();
        for (id, exchange, routing_key, confirm) in confirms {
            match crate::amqp::publisher_wait_confirm(confirm, exchange, routing_key).await {
                Ok(()) => confirmed.push(id),
                Err(e) => {
                    tracing::warn!(error = %e, id, "outbox event not confirmed; will retry");
                    last_error = e.to_string();
                    refused.push(id);
                }
            }
        }
        if !refused.is_empty() {
            sqlx::query(AssertSqlSafe(Arc::clone(&self.mark_failed)))
                .bind(&refused)
                .bind(&last_error)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(hook) = &self.after_publish {
            hook();
        }
        sqlx::query(AssertSqlSafe(Arc::clone(&self.mark)))
            .bind(&confirmed)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::debug!(published = confirmed.len(), "outbox batch published");
        Ok(confirmed.len())
    }

    /// Publishes until `shutdown` completes; database errors (e.g. a restart) are logged
    /// and retried after the poll interval. Returns how many events it published.
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`](crate::Error::Amqp) if the broker connection fails. Events published
    /// but not yet marked are published again by the next run (at least once). To ride out
    /// a lost connection instead, use [`run_reconnecting`](Self::run_reconnecting).
    ///
    /// See [`Relay`] for an example.
    #[tracing::instrument(name = "prost_db.outbox_relay", skip_all, fields(schema = %self.db.schema()))]
    pub async fn run(
        &self,
        connection: &Connection,
        shutdown: impl Future<Output = ()>,
    ) -> Result<u64> {
        tokio::pin!(shutdown);
        let mut published = 0;
        self.session(connection, shutdown.as_mut(), &mut published)
            .await?;
        Ok(published)
    }

    /// Connects to `url` and publishes like [`run`](Self::run), but when the connection is
    /// lost it reconnects with backoff (100 ms doubling up to 5 s, without limit) and goes
    /// on, until `shutdown` completes. The first connection is not retried, so that a wrong
    /// URL fails at startup.
    ///
    /// # Errors
    ///
    /// [`Error::AmqpConnect`](crate::Error::AmqpConnect) if the first connection fails;
    /// [`Error::Amqp`](crate::Error::Amqp) for a broker error on a live connection.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db) -> prost_db::Result<()> {
    /// let relay = prost_db::outbox::Relay::new(db);
    /// let url = prost_db::amqp::url_from_env();
    /// let published = relay
    ///     .run_reconnecting(&url, async { let _ = tokio::signal::ctrl_c().await; })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(name = "prost_db.outbox_relay", skip_all, fields(schema = %self.db.schema()))]
    pub async fn run_reconnecting(
        &self,
        url: &str,
        shutdown: impl Future<Output = ()>,
    ) -> Result<u64> {
        tokio::pin!(shutdown);
        let mut published = 0;
        let mut connection = crate::amqp::connect(url).await?;
        loop {
            match self
                .session(&connection, shutdown.as_mut(), &mut published)
                .await
            {
                Ok(()) => return Ok(published),
                Err(error @ crate::Error::Amqp(_)) if !connection.status().connected() => {
                    tracing::warn!(%error, "outbox relay: connection lost; reconnecting");
                }
                Err(error) => return Err(error),
            }
            match crate::amqp::reconnect(url, shutdown.as_mut()).await {
                Some(live) => connection = live,
                None => return Ok(published),
            }
        }
    }

    async fn session<S: Future<Output = ()>>(
        &self,
        connection: &Connection,
        mut shutdown: Pin<&mut S>,
        published: &mut u64,
    ) -> Result<()> {
        let publisher = Publisher::new(connection).await?;
        let mut exchanges = Exchanges::new(connection);
        loop {
            let idle = match self.publish_batch(&publisher, Some(&mut exchanges)).await {
                Ok(n) => {
                    *published += n as u64;
                    n == 0
                }
                Err(e @ crate::Error::Amqp(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay: retrying");
                    true
                }
            };
            if idle {
                tokio::select! {
                    () = shutdown.as_mut() => return Ok(()),
                    () = tokio::time::sleep(self.poll_interval) => {}
                }
            } else if futures_util::FutureExt::now_or_never(shutdown.as_mut()).is_some() {
                return Ok(());
            }
        }
    }
}

/// How long the events of an exchange found missing are left out of the batches before the
/// exchange is checked again.
const MISSING_EXCHANGE_RECHECK: Duration = Duration::from_secs(2);

/// What the relay knows about the exchanges its rows name, for one connection. Publishing
/// to a missing exchange makes the broker close the channel (404), which would fail every
/// batch holding such a row; a passive declare on a channel of its own finds them first.
struct Exchanges<'c> {
    connection: &'c Connection,
    present: HashSet<String>,
    missing: HashMap<String, Instant>,
}

impl<'c> Exchanges<'c> {
    fn new(connection: &'c Connection) -> Self {
        Exchanges {
            connection,
            present: HashSet::new(),
            missing: HashMap::new(),
        }
    }

    /// The exchanges found missing within the recheck interval: their rows stay out of
    /// the batches, so they cannot fill them and hold the others back.
    fn waiting(&self) -> Vec<String> {
        self.missing
            .iter()
            .filter(|(_, checked)| checked.elapsed() < MISSING_EXCHANGE_RECHECK)
            .map(|(name, _)| name.clone())
            .collect()
    }

    async fn exists(&mut self, name: &str) -> Result<bool> {
        // The default exchange always exists and cannot be declared.
        if name.is_empty() || self.present.contains(name) {
            return Ok(true);
        }
        let channel = self.connection.create_channel().await?;
        let declared = channel
            .exchange_declare(
                name.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(()) => {
                let _ = channel.close(200, "checked".into()).await;
                self.missing.remove(name);
                self.present.insert(name.to_owned());
                Ok(true)
            }
            // The broker closed the probe channel, and only that one.
            Err(error) if matches!(error.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404) =>
            {
                self.missing.insert(name.to_owned(), Instant::now());
                Ok(false)
            }
            Err(error) => Err(error.into()),
        }
    }
}
