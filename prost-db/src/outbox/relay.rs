//! The relay: publishes staged events with confirms, then marks them sent.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::Connection;
use sqlx::AssertSqlSafe;

use super::destinations::Destinations;
use crate::amqp::metrics;
use crate::amqp::{Backoff, Message, Publisher};
use crate::error::Result;
use crate::pool::Db;

type Hook = Arc<dyn Fn() + Send + Sync>;

/// id, event id, event type, exchange, routing key, payload, aggregate id.
type Row = (i64, String, String, String, String, String, String);

/// Publishes a service's staged events.
///
/// Each batch runs in one transaction: lock up to `batch_size` unpublished rows
/// (`FOR UPDATE SKIP LOCKED`, so several relays share the work), publish them, wait for
/// the broker's confirms, mark the confirmed rows, commit. A relay that dies before the
/// commit leaves the rows unpublished and they go out again: at least once.
///
/// Every publish is mandatory: a row whose routing key no queue is bound for comes back
/// from the broker, stays pending with `last_error` saying so, and is tried again later; it
/// is never marked published. Publishing to an exchange that does not exist makes the
/// broker close the channel, which would fail every batch holding such a row.
/// [`run`](Self::run) therefore checks each exchange once per connection (a passive declare
/// on a channel of its own). The rows of a missing exchange or of an unroutable routing key
/// get `last_error` set and wait, out of the batches, while the others go out; they are
/// tried again every 2 s, and follow once their exchange and binding exist.
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
    oldest_pending: Arc<str>,
    batch_size: i64,
    poll_interval: Duration,
    publish_timeout: Duration,
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
                "SELECT id, event_id::text, event_type, exchange, routing_key, payload::text, \
                 coalesce(payload->>'aggregate_id', '') \
                 FROM {schema}.outbox_events \
                 WHERE published_at IS NULL AND exchange <> ALL($2) \
                 AND (exchange, routing_key) NOT IN \
                 (SELECT * FROM unnest($3::text[], $4::text[])) \
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
            )
            .into(),
            mark: format!(
                "UPDATE {schema}.outbox_events \
                 SET published_at = now(), publish_attempts = publish_attempts + 1 \
                 WHERE id = ANY($1)"
            )
            .into(),
            oldest_pending: format!(
                "SELECT extract(epoch FROM now() - created_at)::float8 \
                 FROM {schema}.outbox_events WHERE published_at IS NULL ORDER BY id LIMIT 1"
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
            publish_timeout: crate::amqp::DEFAULT_CONFIRM_TIMEOUT,
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

    /// The longest a batch may wait on the broker (exchange checks, publishes and confirms
    /// together) while it holds its rows locked; default
    /// [`DEFAULT_CONFIRM_TIMEOUT`](crate::amqp::DEFAULT_CONFIRM_TIMEOUT). When it elapses
    /// (a memory or disk alarm blocks publishers), the batch rolls back, its rows get
    /// `last_error` and stay pending, and the connection is given up:
    /// [`run`](Self::run) returns [`Error::PublishTimedOut`](crate::Error::PublishTimedOut),
    /// [`run_reconnecting`](Self::run_reconnecting) reconnects. No transaction stays open
    /// longer than this while the broker does not answer.
    ///
    /// ```no_run
    /// # fn run(db: prost_db::Db) {
    /// let relay = prost_db::outbox::Relay::new(db).publish_timeout(std::time::Duration::from_secs(2));
    /// # }
    /// ```
    #[must_use]
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
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

    /// One batch; with `destinations`, rows whose exchange does not exist, or whose
    /// routing key no queue receives, are set aside for a while instead of being tried in
    /// every batch.
    async fn publish_batch(
        &self,
        publisher: &Publisher,
        mut destinations: Option<&mut Destinations<'_>>,
    ) -> Result<usize> {
        let (skip, unroutable) = destinations
            .as_ref()
            .map(|destinations| destinations.waiting())
            .unwrap_or_default();
        let (skip_exchanges, skip_keys): (Vec<String>, Vec<String>) =
            unroutable.into_iter().unzip();
        let mut tx = self.db.begin().await?;
        let mut rows: Vec<Row> = self
            .db
            .query_as(AssertSqlSafe(Arc::clone(&self.select)))
            .bind(self.batch_size)
            .bind(&skip)
            .bind(&skip_exchanges)
            .bind(&skip_keys)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.db.map_err(e))?;
        // Every wait on the broker from here to the commit shares one deadline.
        let deadline = tokio::time::Instant::now() + self.publish_timeout;
        let timed_out = |row: &Row| crate::Error::PublishTimedOut {
            exchange: row.3.clone(),
            routing_key: row.4.clone(),
            after: self.publish_timeout,
        };
        if let Some(destinations) = destinations.as_deref_mut() {
            let mut absent = HashSet::new();
            for row in &rows {
                if absent.contains(&row.3) {
                    continue;
                }
                match tokio::time::timeout_at(deadline, destinations.exists(&row.3)).await {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => {
                        absent.insert(row.3.clone());
                    }
                    Ok(Err(error)) => return self.give_up(tx, &rows, error).await,
                    Err(_) => return self.give_up(tx, &rows, timed_out(row)).await,
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
                    metrics::outbox_failed(self.db.schema(), "missing_exchange", ids.len());
                    self.record_failure(&mut tx, &ids, &error)
                        .await
                        .map_err(|e| self.db.map_err(e))?;
                }
            }
        }
        if rows.is_empty() {
            tx.commit().await.map_err(|e| self.db.map_err(e))?;
            return Ok(0);
        }
        let messages: Vec<Message> = rows
            .iter()
            .map(
                |(_, event_id, event_type, exchange, routing_key, payload, aggregate)| {
                    Message::new(exchange, routing_key, payload.as_bytes())
                        .message_id(event_id)
                        .event_type(event_type)
                        .aggregate_id(aggregate)
                },
            )
            .collect();
        let published = tokio::time::timeout_at(deadline, publisher.publish_all(&messages)).await;
        let outcomes = match published {
            Ok(Ok(outcomes)) => outcomes,
            Ok(Err(error)) => return self.give_up(tx, &rows, error).await,
            Err(_) => {
                let error = timed_out(&rows[0]);
                return self.give_up(tx, &rows, error).await;
            }
        };
        let mut confirmed = Vec::with_capacity(rows.len());
        let mut failed: HashMap<String, (&'static str, Vec<i64>)> = HashMap::new();
        for (row, outcome) in rows.iter().zip(outcomes) {
            match outcome {
                Ok(()) => confirmed.push(row.0),
                Err(error) => {
                    let returned = matches!(error, crate::Error::PublishReturned { .. });
                    if let (Some(destinations), true) = (destinations.as_deref_mut(), returned) {
                        destinations.unroutable(&row.3, &row.4);
                    }
                    let kind = if returned {
                        "returned"
                    } else {
                        "not_confirmed"
                    };
                    let entry = failed
                        .entry(error.to_string())
                        .or_insert((kind, Vec::new()));
                    entry.1.push(row.0);
                }
            }
        }
        for (error, (kind, ids)) in &failed {
            tracing::warn!(%error, events = ids.len(), "outbox events not delivered; will retry");
            metrics::outbox_failed(self.db.schema(), kind, ids.len());
            self.record_failure(&mut tx, ids, error)
                .await
                .map_err(|e| self.db.map_err(e))?;
        }
        if let Some(hook) = &self.after_publish {
            hook();
        }
        self.db
            .query(AssertSqlSafe(Arc::clone(&self.mark)))
            .bind(&confirmed)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.db.map_err(e))?;
        tx.commit().await.map_err(|e| self.db.map_err(e))?;
        metrics::outbox_batch(self.db.schema(), confirmed.len());
        tracing::debug!(published = confirmed.len(), "outbox batch published");
        Ok(confirmed.len())
    }

    /// Ends a batch the broker failed: rolls back at once (the rows stay pending), then
    /// records `error` on them outside the transaction.
    async fn give_up(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Postgres>,
        rows: &[Row],
        error: crate::Error,
    ) -> Result<usize> {
        tx.rollback().await.map_err(|e| self.db.map_err(e))?;
        tracing::warn!(%error, events = rows.len(), "outbox batch not published; will retry");
        let kind = match error {
            crate::Error::PublishTimedOut { .. } => "broker_timeout",
            _ => "broker_error",
        };
        metrics::outbox_failed(self.db.schema(), kind, rows.len());
        let ids: Vec<i64> = rows.iter().map(|row| row.0).collect();
        let message = error.to_string();
        self.db
            .autocommit(async |conn| self.record_failure(conn, &ids, &message).await)
            .await?;
        Err(error)
    }

    /// Sets the lag gauge: the age of the oldest pending row (0 when none is pending).
    async fn sample_lag(&self) {
        // No parameters: the simple protocol, which holds behind a transaction pooler.
        let age: std::result::Result<Option<f64>, sqlx::Error> =
            sqlx::raw_sql(AssertSqlSafe(Arc::clone(&self.oldest_pending)))
                .fetch_optional(self.db.pool())
                .await
                .and_then(|row| row.map(|row| sqlx::Row::try_get(&row, 0)).transpose());
        match age {
            Ok(age) => metrics::outbox_lag(
                self.db.schema(),
                Duration::from_secs_f64(age.unwrap_or(0.0).max(0.0)),
            ),
            Err(error) => tracing::debug!(%error, "outbox lag not sampled"),
        }
    }

    /// Counts a failed attempt on `ids` and keeps `error` as their `last_error`.
    async fn record_failure(
        &self,
        conn: &mut sqlx::PgConnection,
        ids: &[i64],
        error: &str,
    ) -> sqlx::Result<()> {
        self.db
            .query(AssertSqlSafe(Arc::clone(&self.mark_failed)))
            .bind(ids)
            .bind(error)
            .execute(conn)
            .await
            .map(drop)
    }

    /// Publishes until `shutdown` completes; database errors (e.g. a restart) are logged
    /// and retried after the poll interval. Returns how many events it published.
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`](crate::Error::Amqp) if the broker connection fails,
    /// [`Error::PublishTimedOut`](crate::Error::PublishTimedOut) if the broker does not take a
    /// batch within the [publish timeout](Self::publish_timeout). Events published
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
    /// lost, or the broker does not take a batch within the
    /// [publish timeout](Self::publish_timeout), it reconnects with backoff and goes on,
    /// until `shutdown` completes. The first connection is not retried, so that a wrong
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
                Err(error @ crate::Error::PublishTimedOut { .. }) => {
                    // A blocked connection answers nothing, not even its close.
                    tracing::warn!(%error, "outbox relay: broker not confirming; reconnecting");
                    let closing = connection.close(200, "outbox relay gave up".into());
                    let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
                }
                Err(error) => return Err(error),
            }
            match crate::amqp::reconnect(url, shutdown.as_mut()).await {
                Some(live) => connection = live,
                None => return Ok(published),
            }
            metrics::outbox_reconnect(self.db.schema());
        }
    }

    async fn session<S: Future<Output = ()>>(
        &self,
        connection: &Connection,
        mut shutdown: Pin<&mut S>,
        published: &mut u64,
    ) -> Result<()> {
        let opened = tokio::time::timeout(self.publish_timeout, Publisher::new(connection)).await;
        let publisher = opened
            .map_err(|_| crate::Error::PublishTimedOut {
                exchange: String::new(),
                routing_key: String::new(),
                after: self.publish_timeout,
            })??
            .confirm_timeout(self.publish_timeout);
        let mut destinations = Destinations::new(connection);
        // Database errors (a restart, say) are retried with the same jittered backoff as
        // reconnects, starting at the poll interval.
        let mut database = Backoff::new(self.poll_interval, Duration::from_secs(5));
        let mut lag_sampled: Option<Instant> = None;
        loop {
            if lag_sampled.is_none_or(|at| at.elapsed() >= LAG_SAMPLE_INTERVAL) {
                lag_sampled = Some(Instant::now());
                self.sample_lag().await;
            }
            let idle = match self
                .publish_batch(&publisher, Some(&mut destinations))
                .await
            {
                Ok(n) => {
                    database.reset();
                    *published += n as u64;
                    n == 0
                }
                Err(e @ (crate::Error::Amqp(_) | crate::Error::PublishTimedOut { .. })) => {
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay: retrying");
                    if !database.wait(shutdown.as_mut()).await {
                        return Ok(());
                    }
                    continue;
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

/// How often the relay samples its lag (one indexed lookup).
const LAG_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
