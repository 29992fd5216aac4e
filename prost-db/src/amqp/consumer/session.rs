//! The session loop: one channel's consumption until shutdown, a broker cancel or a lost
//! connection, and the reconnecting loop around it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::task::JoinSet;

use tokio::time::Instant;

use super::batch::{Forming, Routed, Unsettled};
use super::lanes::Lanes;
use super::settle::{Context, Finished, Settled};
use super::{Consumer, ConsumerStats};
use crate::amqp::Publisher;
use crate::error::Result;

impl Consumer {
    /// Consumes until `shutdown` completes (or the broker cancels the consumer), then
    /// finishes the deliveries in flight and returns what it did.
    ///
    /// # Errors
    ///
    /// [`Error::Amqp`](crate::Error::Amqp) if the channel cannot be set up, the connection
    /// is lost, or the channel for retry and dead-letter copies is gone (closed by the
    /// broker, or abandoned after a confirm timed out); deliveries not yet settled are
    /// redelivered by the broker. To ride out a lost connection instead, use
    /// [`run_reconnecting`](Self::run_reconnecting), which subscribes again in the last case.
    ///
    /// ```no_run
    /// use prost_db::amqp::{Consumer, QueueSpec};
    /// # async fn run(connection: prost_db::amqp::lapin::Connection) -> prost_db::Result<()> {
    /// let stats = Consumer::new(QueueSpec::new("cart.events"))
    ///     .run(&connection, async { let _ = tokio::signal::ctrl_c().await; })
    ///     .await?;
    /// assert_eq!(stats.unsettled, 0);
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(name = "prost_db.consume", skip_all, fields(queue = %self.spec.queue()))]
    pub async fn run(
        self,
        connection: &Connection,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ConsumerStats> {
        self.check_batches()?;
        let consumer = Arc::new(self);
        tokio::pin!(shutdown);
        let mut stats = ConsumerStats::default();
        let ended = consumer
            .session(connection, shutdown.as_mut(), &mut stats)
            .await;
        tracing::info!(?stats, "consumer stopped");
        match ended {
            Ended::Shutdown | Ended::Cancelled => Ok(stats),
            Ended::ChannelClosed(e) | Ended::Lost(e) | Ended::Refused(e) => Err(e),
        }
    }

    /// Connects to `url` and consumes like [`run`](Self::run), but when the connection is
    /// lost (broker restart, network cut, connection closed by an operator) it reconnects
    /// with backoff (jittered waits under a ceiling of 100 ms doubling up to 5 s, without
    /// limit) and consumes again, until
    /// `shutdown` completes. Deliveries that were in flight when the connection went are
    /// redelivered by the broker; idempotent handlers turn those that had committed into
    /// duplicates. Handlers still running when the connection goes get 5 s to finish
    /// (their results cannot be acked any more), then are cancelled, which rolls back what
    /// they had not committed. [`ConsumerStats::reconnects`] counts the reconnections.
    ///
    /// If the broker cancels the consumer (a queue moved on failover) or closes the channel
    /// (its `consumer_timeout`, say) while the connection stays up, it subscribes again on a
    /// new channel. The first connection is not retried, so that a wrong URL, wrong
    /// credentials or a broker that is down make the service fail at startup instead of
    /// waiting in silence.
    ///
    /// # Errors
    ///
    /// [`Error::AmqpConnect`](crate::Error::AmqpConnect) if the first connection fails;
    /// [`Error::Amqp`](crate::Error::Amqp) if the broker refuses the channel or the consumer
    /// while the connection stays up (a missing queue, say), which reconnecting cannot fix.
    ///
    /// ```no_run
    /// use prost_db::amqp::{self, Consumer, QueueSpec};
    /// # async fn run() -> prost_db::Result<()> {
    /// let stats = Consumer::new(QueueSpec::new("cart.events"))
    ///     .run_reconnecting(&amqp::url_from_env(), async {
    ///         let _ = tokio::signal::ctrl_c().await;
    ///     })
    ///     .await?;
    /// println!("acked {}, reconnected {} times", stats.acked, stats.reconnects);
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(name = "prost_db.consume", skip_all, fields(queue = %self.spec.queue()))]
    pub async fn run_reconnecting(
        self,
        url: &str,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ConsumerStats> {
        self.check_batches()?;
        let consumer = Arc::new(self);
        tokio::pin!(shutdown);
        let mut stats = ConsumerStats::default();
        let mut connection = crate::amqp::connect(url).await?;
        let mut resubscribe = crate::amqp::reconnect_backoff();
        loop {
            let settled_before = stats.settled();
            let ended = consumer
                .session(&connection, shutdown.as_mut(), &mut stats)
                .await;
            if stats.settled() > settled_before {
                resubscribe.reset();
            }
            match ended {
                Ended::Shutdown => break,
                Ended::Refused(e) => {
                    let _ = connection.close(200, "consumer stopped".into()).await;
                    return Err(e);
                }
                Ended::Cancelled | Ended::ChannelClosed(_) => {
                    // The connection is fine: subscribe again on a new channel. If the
                    // queue is gone, that is refused and returned.
                    tracing::warn!("consumer cancelled or channel closed; subscribing again");
                    if !resubscribe.wait(shutdown.as_mut()).await {
                        break;
                    }
                }
                Ended::Lost(error) => {
                    tracing::warn!(%error, "connection lost; reconnecting");
                    let _ = connection.close(200, "consumer stopped".into()).await;
                    match crate::amqp::reconnect(url, shutdown.as_mut()).await {
                        Some(live) => connection = live,
                        None => break,
                    }
                    stats.reconnects += 1;
                    crate::amqp::metrics::consumer_reconnect(&consumer.spec.queue());
                    tracing::info!(reconnects = stats.reconnects, "reconnected");
                }
            }
        }
        let _ = connection.close(200, "consumer stopped".into()).await;
        tracing::info!(?stats, "consumer stopped");
        Ok(stats)
    }

    /// One channel's consumption, until shutdown, a broker cancel or an error; settles or
    /// gives back everything it took before returning.
    async fn session<S: Future<Output = ()>>(
        self: &Arc<Self>,
        connection: &Connection,
        mut shutdown: Pin<&mut S>,
        stats: &mut ConsumerStats,
    ) -> Ended {
        let setup = async {
            let channel = connection.create_channel().await?;
            channel
                .basic_qos(self.prefetch, BasicQosOptions::default())
                .await?;
            // Retry and dead-letter copies go out on a channel of their own.
            let publisher = Publisher::new(connection).await?;
            let deliveries = channel
                .basic_consume(
                    self.spec.queue().into(),
                    self.tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, crate::Error>((channel, publisher, deliveries))
        };
        let (channel, publisher, mut deliveries) = match setup.await {
            Ok(ready) => ready,
            Err(e) if connection.status().connected() => return Ended::Refused(e),
            Err(e) => return Ended::Lost(e),
        };

        let queue = self.spec.queue();
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let ctx = Arc::new(Context {
            publisher: publisher.clone(),
            dead_letter_exchange: self.spec.dead_letter_exchange(),
            queue: self.spec.queue(),
            consumer: Arc::clone(self),
            stopping,
            unsettled: Unsettled::default(),
        });
        let mut in_flight: JoinSet<Finished> = JoinSet::new();
        let mut lanes = Lanes::new(self.serialize_by_aggregate);
        let mut forming = Forming::default();
        let ended = loop {
            let due = forming.next_deadline();
            tokio::select! {
                biased;
                () = shutdown.as_mut() => break Ended::Shutdown,
                Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                    let (id, finished) = match done {
                        Ok((id, finished)) => (id, finished),
                        Err(error) => (error.id(), vec![Settled::Unsettled.into()]),
                    };
                    for done in finished {
                        stats.record(&queue, done);
                    }
                    lanes.finished(id, &mut in_flight, &ctx, true);
                    if publisher.is_abandoned() || !publisher.channel().status().connected() {
                        let state = lapin::ChannelState::Closed;
                        let gone = lapin::ErrorKind::InvalidChannelState(state, "retry publisher");
                        break Ended::ChannelClosed(lapin::Error::from(gone).into());
                    }
                }
                () = sleep_until_due(due), if due.is_some() => {
                    for batch in forming.due(Instant::now()) {
                        in_flight.spawn(Arc::clone(&ctx).process_batch(batch));
                    }
                }
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => {
                        ctx.unsettled.received(delivery.delivery_tag);
                        match forming.route(delivery, self) {
                            Routed::Alone(delivery) => lanes.dispatch(delivery, &mut in_flight, &ctx),
                            Routed::Held => {}
                            Routed::Full(batch) => {
                                in_flight.spawn(Arc::clone(&ctx).process_batch(batch));
                            }
                        }
                    }
                    Some(Err(e)) if connection.status().connected() => {
                        break Ended::ChannelClosed(e.into());
                    }
                    Some(Err(e)) => break Ended::Lost(e.into()),
                    None if connection.status().connected() => break Ended::Cancelled,
                    None => {
                        let state = if connection.status().errored() {
                            lapin::ConnectionState::Error
                        } else {
                            lapin::ConnectionState::Closed
                        };
                        let lost = lapin::ErrorKind::InvalidConnectionState(state);
                        break Ended::Lost(lapin::Error::from(lost).into());
                    }
                },
            }
        };

        if matches!(ended, Ended::Shutdown | Ended::Cancelled) {
            // Stop the flow; prefetched deliveries not yet started are requeued on close.
            let _ = channel
                .basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default())
                .await;
        }
        let _ = stop.send(true);
        settle_in_flight(&mut in_flight, stats, &queue, connection, &channel).await;
        // Deliveries still waiting in a lane or a forming batch were never started: closing
        // the channel gives them back to the broker.
        drop(lanes);
        drop(forming);
        let _ = channel.close(200, "consumer stopped".into()).await;
        if !publisher.is_abandoned() {
            let _ = publisher
                .channel()
                .close(200, "consumer stopped".into())
                .await;
        }
        ended
    }
}

/// How long handlers in flight may run on after their connection was lost.
const LOST_CONNECTION_GRACE: Duration = Duration::from_secs(5);

/// Why a session ended.
enum Ended {
    Shutdown,
    /// The broker cancelled the consumer (its queue was deleted, or moved on failover).
    Cancelled,
    /// The channel closed under a live connection (e.g. the broker's `consumer_timeout`).
    ChannelClosed(crate::Error),
    /// The connection is gone: reconnecting may help.
    Lost(crate::Error),
    /// The broker refused the channel or the consumer on a live connection (a missing
    /// queue, say): neither subscribing again nor reconnecting will help.
    Refused(crate::Error),
}

/// Waits for the handlers in flight and records how they settled. While the channel is
/// open they take as long as they need. Once it is gone nothing can be settled any more
/// (the broker redelivers it all): handlers get a grace period to finish their
/// transactions (a committed one makes the redelivery a duplicate), then are cancelled,
/// which rolls back what they had not committed. The grace is also a bound: an ack issued
/// just as the connection died may never complete.
async fn settle_in_flight(
    in_flight: &mut JoinSet<Finished>,
    stats: &mut ConsumerStats,
    queue: &str,
    connection: &Connection,
    channel: &Channel,
) {
    loop {
        match tokio::time::timeout(Duration::from_millis(100), in_flight.join_next()).await {
            Ok(Some(done)) => record(stats, queue, done),
            Ok(None) => return,
            Err(_) if connection.status().connected() && channel.status().connected() => {}
            Err(_) => break,
        }
    }
    let drained = tokio::time::timeout(LOST_CONNECTION_GRACE, async {
        while let Some(done) = in_flight.join_next().await {
            record(stats, queue, done);
        }
    })
    .await;
    if drained.is_err() {
        stats.unsettled += in_flight.len() as u64;
        in_flight.shutdown().await;
    }
}

/// Counts what a task settled; a task that panicked settled nothing it can tell.
fn record(
    stats: &mut ConsumerStats,
    queue: &str,
    finished: std::result::Result<Finished, tokio::task::JoinError>,
) {
    for done in finished.unwrap_or_else(|_| vec![Settled::Unsettled.into()]) {
        stats.record(queue, done);
    }
}

/// Sleeps until the next forming batch is due (never, without one).
async fn sleep_until_due(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}
