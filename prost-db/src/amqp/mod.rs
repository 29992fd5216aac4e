//! RabbitMQ glue (feature `amqp`): topology, an ack-after-commit consumer, and a publisher
//! with confirms.
//!
//! The consumer routes deliveries by `event_type` to async handlers and settles each
//! delivery only after its handler returned:
//!
//! | handler result | what happens to the delivery |
//! |---|---|
//! | `Ok(())` or an [`Outcome`](crate::idempotency::Outcome) (committed, or a duplicate) | acked |
//! | [`DeliveryError::Transient`] on attempt `n`, attempts left | a copy with `x-prost-attempt = n + 1` goes to the `n`-th retry tier (a queue whose TTL returns it to the work queue; see [`QueueSpec`]), confirmed, then the original is acked; a copy that comes back unroutable dead-letters the original with that reason |
//! | [`DeliveryError::Transient`], no attempts left | dead-lettered with reason `too many attempts` |
//! | [`DeliveryError::Permanent`], undecodable, no `event_id` | dead-lettered with the reason in `x-prost-dead-letter-reason` |
//!
//! If the process dies anywhere before the ack, the broker redelivers the message; handlers
//! are idempotent (see `#[idempotent_handler]`), so a redelivery of a committed event is a
//! duplicate and is acked without running the body again. Work queues are quorum queues
//! with a delivery limit and a dead-letter exchange, so a message that kills its consumer
//! every time ends in the dead-letter queue. Every publish is mandatory: a message no queue
//! receives is an error ([`Error::PublishReturned`]), never a
//! confirmed delivery. [`OrderedQueues`] keeps each aggregate's events in order across
//! consumers. [`Consumer::on_batch`] runs the deliveries of one event type in batches, one
//! transaction and one commit per batch, settled after it;
//! [`Consumer::on_batch_prepared`] adds a step that locks what the batch touches, in one
//! order, before its bodies run.
//!
//! ## Metrics
//!
//! Emitted through the [`metrics`](https://docs.rs/metrics) facade, so any exporter
//! (Prometheus, OpenTelemetry, ...) installed by the service sees them; without one they
//! cost next to nothing.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `prost_db_consumer_deliveries_total` | counter | `queue`, `outcome`, `reason` | settled deliveries; `outcome` is `processed`, `duplicate`, `retried`, `dead_lettered`, `ignored`, `requeued` (given back to the queue with a nack) or `unsettled` (the broker was not told: it redelivers); `dead_lettered` carries `reason`: `poison`, `permanent`, `attempts_exhausted`, `retry_unroutable`, `no_handler` |
//! | `prost_db_consumer_handler_seconds` | histogram | `queue`, `event_type` | handler run time (in batch mode, one sample per delivery: its batch's run time) |
//! | `prost_db_consumer_batch_size` | histogram | `queue`, `event_type` | deliveries per batch of a [`Consumer::on_batch`] handler |
//! | `prost_db_consumer_batch_acks_total` | counter | `queue`, `multiple` | `basic.ack`s sent for batches' successes: `multiple` is `true` for one that settled many, `false` for one delivery's |
//! | `prost_db_consumer_batch_fallbacks_total` | counter | `queue`, `event_type` | batches that rolled back (a body, the prepare step or the batch's statements failed: a deadlock, a lock timeout) and ran their events one at a time |
//! | `prost_db_consumer_reconnects_total` | counter | `queue` | reconnections of [`Consumer::run_reconnecting`] |
//! | `prost_db_publish_returned_total` | counter | `exchange`, `routing_key` | publishes the broker returned because no queue was bound |
//! | `prost_db_outbox_published_total` | counter | `schema` | outbox events published and marked |
//! | `prost_db_outbox_batch_size` | histogram | `schema` | events per published relay batch |
//! | `prost_db_outbox_failed_total` | counter | `schema`, `reason` | events not published this time: `returned`, `not_confirmed`, `missing_exchange`, `broker_timeout`, `broker_error` |
//! | `prost_db_outbox_lag_seconds` | gauge | `schema` | age of the oldest pending outbox event, sampled every second (0 when none) |
//! | `prost_db_outbox_reconnects_total` | counter | `schema` | reconnections of the relay |
//!
//! ```no_run
//! use prost_db::amqp::{self, Consumer, DeliveryError, QueueSpec, Topology};
//!
//! # async fn run() -> prost_db::Result<()> {
//! let connection = amqp::connect(&amqp::url_from_env()).await?;
//! let spec = QueueSpec::new("products.events").bind("orders.events", "order.*");
//! Topology::new().exchange("orders.events").queue(spec.clone())
//!     .declare(&connection.create_channel().await?).await?;
//!
//! let stats = Consumer::new(spec)
//!     .prefetch(16)
//!     .handler("OrderCreated", |delivery| async move {
//!         println!("order event {}", delivery.envelope.event_id);
//!         Ok::<(), DeliveryError>(())
//!     })
//!     .run(&connection, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await?;
//! println!("acked {}", stats.acked);
//! # Ok(()) }
//! ```

mod backoff;
mod consumer;
mod handler_error;
pub(crate) mod metrics;
mod ordered;
mod publisher;
mod queue_spec;
mod topology;

pub use consumer::{
    ATTEMPT_HEADER, Batching, Consumer, ConsumerStats, DEAD_LETTER_REASON_HEADER, Delivered,
    Handled, LAST_ERROR_HEADER,
};
pub use handler_error::DeliveryError;
pub use lapin;
pub use ordered::OrderedQueues;
pub use publisher::{AGGREGATE_ID_HEADER, DEFAULT_CONFIRM_TIMEOUT, Message, Publisher};
pub use queue_spec::{DEFAULT_DELIVERY_LIMIT, DEFAULT_RETRY_DELAYS, QueueSpec};
pub use topology::Topology;

use crate::error::{Error, Result};
pub(crate) use backoff::Backoff;

/// The broker URL when `AMQP_URL` is not set: the local RabbitMQ with its default user.
///
/// ```
/// assert!(prost_db::amqp::DEFAULT_AMQP_URL.contains("127.0.0.1:5672"));
/// ```
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// `AMQP_URL`, or [`DEFAULT_AMQP_URL`].
///
/// ```
/// let url = prost_db::amqp::url_from_env();
/// assert!(url.starts_with("amqp"));
/// ```
pub fn url_from_env() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned())
}

/// Opens a connection to RabbitMQ.
///
/// # Errors
///
/// [`Error::AmqpConnect`] naming the host (never the password) and how to start RabbitMQ.
///
/// ```no_run
/// # async fn run() -> prost_db::Result<()> {
/// let connection = prost_db::amqp::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<lapin::Connection> {
    lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .map_err(|source| Error::AmqpConnect {
            address: redact_url(url),
            source: Box::new(source),
        })
}

/// The backoff between reconnection attempts and resubscriptions: waits with full jitter
/// under a ceiling of 100 ms doubling up to 5 s.
pub(crate) fn reconnect_backoff() -> Backoff {
    Backoff::new(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(5),
    )
}

/// Connects to `url` again after a lost connection, with [`reconnect_backoff`] before every
/// attempt, without limit. `None` if `shutdown` completes first.
pub(crate) async fn reconnect<S: std::future::Future<Output = ()>>(
    url: &str,
    mut shutdown: std::pin::Pin<&mut S>,
) -> Option<lapin::Connection> {
    let mut backoff = reconnect_backoff();
    loop {
        if !backoff.wait(shutdown.as_mut()).await {
            return None;
        }
        // A host that drops packets can keep a connect waiting for minutes.
        let attempt = tokio::select! {
            biased;
            () = shutdown.as_mut() => return None,
            attempt = connect(url) => attempt,
        };
        match attempt {
            Ok(connection) => return Some(connection),
            Err(error) => tracing::warn!(%error, "reconnecting failed"),
        }
    }
}

/// `amqp://user:secret@host/vhost` without the password.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<invalid url>".to_owned();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((auth, host)) => (Some(auth), host),
        None => (None, rest),
    };
    match auth.map(|a| a.split_once(':').map_or(a, |(user, _)| user)) {
        Some(user) => format!("{scheme}://{user}@{host}"),
        None => format!("{scheme}://{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("amqp://guest:s3cret@127.0.0.1:5672/%2f"),
            "amqp://guest@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("amqp://host"), "amqp://host");
    }
}
