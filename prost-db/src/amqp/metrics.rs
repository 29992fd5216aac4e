//! The metrics the consumer, the publisher and the outbox relay emit through the `metrics`
//! facade (any exporter works); their names and labels are listed in the `amqp` module's
//! documentation.

use std::time::Duration;

pub(crate) const DELIVERIES: &str = "prost_db_consumer_deliveries_total";
pub(crate) const HANDLER_SECONDS: &str = "prost_db_consumer_handler_seconds";
pub(crate) const BATCH_SIZE: &str = "prost_db_consumer_batch_size";
pub(crate) const BATCH_ACKS: &str = "prost_db_consumer_batch_acks_total";
pub(crate) const BATCH_FALLBACKS: &str = "prost_db_consumer_batch_fallbacks_total";
pub(crate) const CONSUMER_RECONNECTS: &str = "prost_db_consumer_reconnects_total";
pub(crate) const PUBLISH_RETURNED: &str = "prost_db_publish_returned_total";
pub(crate) const OUTBOX_PUBLISHED: &str = "prost_db_outbox_published_total";
pub(crate) const OUTBOX_FAILED: &str = "prost_db_outbox_failed_total";
pub(crate) const OUTBOX_BATCH_SIZE: &str = "prost_db_outbox_batch_size";
pub(crate) const OUTBOX_LAG_SECONDS: &str = "prost_db_outbox_lag_seconds";
pub(crate) const OUTBOX_RECONNECTS: &str = "prost_db_outbox_reconnects_total";

/// How a delivery was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Processed,
    Duplicate,
    Retried,
    DeadLettered(DeadLetter),
    Ignored,
    /// Given back to the broker with a requeueing nack, to be delivered again.
    Requeued,
    Unsettled,
}

/// Why a delivery was dead-lettered, as the `reason` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeadLetter {
    /// Not JSON, not an object, no or a bad `event_id`, no `event_type`.
    Poison,
    /// The handler failed permanently (or panicked, or the payload did not decode).
    Permanent,
    /// Transient failures on every allowed attempt.
    AttemptsExhausted,
    /// The retry copy came back: no retry queue.
    RetryUnroutable,
    /// No handler for the event type, with `dead_letter_unknown`.
    NoHandler,
}

impl Outcome {
    fn labels(self) -> (&'static str, &'static str) {
        match self {
            Outcome::Processed => ("processed", ""),
            Outcome::Duplicate => ("duplicate", ""),
            Outcome::Retried => ("retried", ""),
            Outcome::DeadLettered(reason) => (
                "dead_lettered",
                match reason {
                    DeadLetter::Poison => "poison",
                    DeadLetter::Permanent => "permanent",
                    DeadLetter::AttemptsExhausted => "attempts_exhausted",
                    DeadLetter::RetryUnroutable => "retry_unroutable",
                    DeadLetter::NoHandler => "no_handler",
                },
            ),
            Outcome::Ignored => ("ignored", ""),
            Outcome::Requeued => ("requeued", ""),
            Outcome::Unsettled => ("unsettled", ""),
        }
    }
}

pub(crate) fn delivery(queue: &str, outcome: Outcome) {
    let (outcome, reason) = outcome.labels();
    if reason.is_empty() {
        metrics::counter!(DELIVERIES, "queue" => queue.to_owned(), "outcome" => outcome)
            .increment(1);
    } else {
        metrics::counter!(
            DELIVERIES,
            "queue" => queue.to_owned(),
            "outcome" => outcome,
            "reason" => reason
        )
        .increment(1);
    }
}

pub(crate) fn handler_latency(queue: &str, event_type: &str, elapsed: Duration) {
    metrics::histogram!(
        HANDLER_SECONDS,
        "queue" => queue.to_owned(),
        "event_type" => event_type.to_owned()
    )
    .record(elapsed.as_secs_f64());
}

pub(crate) fn batch_size(queue: &str, event_type: &str, size: usize) {
    metrics::histogram!(
        BATCH_SIZE,
        "queue" => queue.to_owned(),
        "event_type" => event_type.to_owned()
    )
    .record(size as f64);
}

pub(crate) fn batch_fallback(queue: &str, event_type: &str) {
    metrics::counter!(
        BATCH_FALLBACKS,
        "queue" => queue.to_owned(),
        "event_type" => event_type.to_owned()
    )
    .increment(1);
}

pub(crate) fn batch_ack(queue: &str, multiple: bool) {
    let multiple = if multiple { "true" } else { "false" };
    metrics::counter!(BATCH_ACKS, "queue" => queue.to_owned(), "multiple" => multiple).increment(1);
}

pub(crate) fn consumer_reconnect(queue: &str) {
    metrics::counter!(CONSUMER_RECONNECTS, "queue" => queue.to_owned()).increment(1);
}

pub(crate) fn publish_returned(exchange: &str, routing_key: &str) {
    metrics::counter!(
        PUBLISH_RETURNED,
        "exchange" => exchange.to_owned(),
        "routing_key" => routing_key.to_owned()
    )
    .increment(1);
}

pub(crate) fn outbox_batch(schema: &str, published: usize) {
    metrics::histogram!(OUTBOX_BATCH_SIZE, "schema" => schema.to_owned()).record(published as f64);
    metrics::counter!(OUTBOX_PUBLISHED, "schema" => schema.to_owned()).increment(published as u64);
}

/// `reason`: `returned`, `not_confirmed`, `missing_exchange` or `broker_timeout`.
pub(crate) fn outbox_failed(schema: &str, reason: &'static str, events: usize) {
    metrics::counter!(OUTBOX_FAILED, "schema" => schema.to_owned(), "reason" => reason)
        .increment(events as u64);
}

pub(crate) fn outbox_lag(schema: &str, lag: Duration) {
    metrics::gauge!(OUTBOX_LAG_SECONDS, "schema" => schema.to_owned()).set(lag.as_secs_f64());
}

pub(crate) fn outbox_reconnect(schema: &str) {
    metrics::counter!(OUTBOX_RECONNECTS, "schema" => schema.to_owned()).increment(1);
}
