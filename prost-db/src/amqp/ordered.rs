//! Ordering per aggregate across consumers: a consistent-hash exchange spreads the events
//! over partition queues by aggregate id, each with a single active consumer.

use lapin::options::{ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use super::{AGGREGATE_ID_HEADER, QueueSpec};
use crate::error::{Error, Result};

/// A queue family split into partitions that keep the events of one aggregate in order
/// across any number of consumer processes.
///
/// The recipe, declared by [`Topology::ordered`](crate::amqp::Topology::ordered):
///
/// 1. the topic exchanges the events are published to are bound (exchange to exchange)
///    to `<base>.hash`, an `x-consistent-hash` exchange that hashes the
///    [`AGGREGATE_ID_HEADER`] every prost-db publisher sets, so all events of one
///    aggregate land in the same partition, in publish order;
/// 2. `<base>.p0` ... `<base>.p{n-1}` are quorum queues with a single active consumer
///    ([`QueueSpec::single_active_consumer`]): every process consumes every partition, the
///    broker delivers each partition to one of them at a time, and hands it to the next
///    (unsettled deliveries first) when that one goes;
/// 3. each partition is consumed with
///    [`Consumer::serialize_by_aggregate`](crate::amqp::Consumer::serialize_by_aggregate), so
///    that with prefetch > 1 the events of one aggregate still run one after the other,
///    while different aggregates run concurrently; transient failures are retried in place
///    ([`QueueSpec::retry_in_place`]) instead of through a retry queue that would let later
///    events overtake them.
///
/// Needs RabbitMQ's `rabbitmq_consistent_hash_exchange` plugin, which ships with the server:
/// `rabbitmq-plugins enable rabbitmq_consistent_hash_exchange`. Order also needs the events
/// to be published in order: one outbox relay per service (several relays would race), or
/// one publisher. A dead-lettered event leaves a gap its aggregate's later events see.
///
/// ```
/// use prost_db::amqp::OrderedQueues;
///
/// let ordered = OrderedQueues::new("ledger.ordered", 4).bind("accounts.events", "account.#");
/// assert_eq!(ordered.hash_exchange(), "ledger.ordered.hash");
/// let partitions = ordered.partitions();
/// assert_eq!(partitions.len(), 4);
/// assert_eq!(partitions[3].queue(), "ledger.ordered.p3.queue");
/// assert!(partitions[0].is_single_active_consumer());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderedQueues {
    base: String,
    partitions: u16,
    bindings: Vec<(String, String)>,
}

impl OrderedQueues {
    /// `partitions` partition queues named after `base` (at least one). More partitions
    /// than consumer processes spread the load better; changing the number later moves
    /// aggregates between partitions, so drain the queues first.
    ///
    /// ```
    /// assert_eq!(prost_db::amqp::OrderedQueues::new("ledger", 8).partitions().len(), 8);
    /// ```
    pub fn new(base: impl Into<String>, partitions: u16) -> Self {
        OrderedQueues {
            base: base.into(),
            partitions: partitions.max(1),
            bindings: Vec::new(),
        }
    }

    /// Receive the events published to `exchange` (a topic exchange) whose routing key
    /// matches `pattern`.
    ///
    /// ```
    /// let ordered = prost_db::amqp::OrderedQueues::new("ledger", 2).bind("accounts.events", "account.*");
    /// assert_eq!(ordered.bindings()[0].0, "accounts.events");
    /// ```
    #[must_use]
    pub fn bind(mut self, exchange: impl Into<String>, pattern: impl Into<String>) -> Self {
        self.bindings.push((exchange.into(), pattern.into()));
        self
    }

    /// The `(exchange, pattern)` bindings.
    ///
    /// ```
    /// assert!(prost_db::amqp::OrderedQueues::new("ledger", 2).bindings().is_empty());
    /// ```
    pub fn bindings(&self) -> &[(String, String)] {
        &self.bindings
    }

    /// The consistent-hash exchange: `<base>.hash`.
    ///
    /// ```
    /// assert_eq!(prost_db::amqp::OrderedQueues::new("ledger", 2).hash_exchange(), "ledger.hash");
    /// ```
    pub fn hash_exchange(&self) -> String {
        format!("{}.hash", self.base)
    }

    /// The partitions' queue families (`<base>.p<i>`), to consume one
    /// [`Consumer`](crate::amqp::Consumer) each: quorum work queues with a single active
    /// consumer, a dead-letter exchange and queue each, retries in place.
    ///
    /// ```
    /// let partitions = prost_db::amqp::OrderedQueues::new("ledger", 2).partitions();
    /// assert_eq!(partitions[1].dead_letter_queue(), "ledger.p1.dlq");
    /// assert!(partitions[1].retry_queues().is_empty());
    /// ```
    pub fn partitions(&self) -> Vec<QueueSpec> {
        (0..self.partitions)
            .map(|i| {
                QueueSpec::new(format!("{}.p{i}", self.base))
                    .single_active_consumer()
                    .retry_in_place()
            })
            .collect()
    }

    /// Declares the hash exchange and its bindings; the partitions' queue families are
    /// declared by the caller ([`Topology::declare`](crate::amqp::Topology::declare)), then
    /// bound here.
    pub(crate) async fn declare_exchange(&self, channel: &Channel) -> Result<()> {
        let mut args = FieldTable::default();
        args.insert(
            "hash-header".into(),
            AMQPValue::LongString(AGGREGATE_ID_HEADER.into()),
        );
        let declared = channel
            .exchange_declare(
                self.hash_exchange().as_str().into(),
                ExchangeKind::Custom("x-consistent-hash".into()),
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                args,
            )
            .await;
        if let Err(error) = declared {
            return Err(match error.kind() {
                // COMMAND_INVALID: "invalid exchange type".
                lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 503 => {
                    Error::Config(format!(
                        "RabbitMQ has no x-consistent-hash exchange type ({}): enable the plugin \
                         that ships with it, `rabbitmq-plugins enable \
                         rabbitmq_consistent_hash_exchange`",
                        amqp.get_message()
                    ))
                }
                _ => error.into(),
            });
        }
        for (exchange, pattern) in &self.bindings {
            channel
                .exchange_bind(
                    self.hash_exchange().as_str().into(),
                    exchange.as_str().into(),
                    pattern.as_str().into(),
                    ExchangeBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Binds every partition's work queue to the hash exchange with weight 1.
    pub(crate) async fn bind_partitions(&self, channel: &Channel) -> Result<()> {
        for spec in self.partitions() {
            channel
                .queue_bind(
                    spec.queue().as_str().into(),
                    self.hash_exchange().as_str().into(),
                    "1".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }
}
