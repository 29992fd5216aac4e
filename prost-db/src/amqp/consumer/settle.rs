//! Settlement: runs one delivery's handler, then acks, retries or dead-letters it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use lapin::types::AMQPValue;
use tracing::Instrument;

use super::batch::Unsettled;
use super::delivery::{
    ATTEMPT_HEADER, Delivered, attempt_of, decode_envelope, handle_span, headers_of,
};
use super::{Consumer, ConsumerStats};
use crate::amqp::DeliveryError;
use crate::amqp::metrics::{self, DeadLetter};
use crate::amqp::publisher::header_str;
use crate::amqp::{Message, Publisher};
use crate::error::Error;
use crate::events::Envelope;

/// Header on retry and dead-lettered copies: the handler's last error.
///
/// ```
/// assert_eq!(prost_db::amqp::LAST_ERROR_HEADER, "x-prost-last-error");
/// ```
pub const LAST_ERROR_HEADER: &str = "x-prost-last-error";
/// Header on dead-lettered copies: why the message was given up.
///
/// ```
/// assert_eq!(prost_db::amqp::DEAD_LETTER_REASON_HEADER, "x-prost-dead-letter-reason");
/// ```
pub const DEAD_LETTER_REASON_HEADER: &str = "x-prost-dead-letter-reason";

pub(super) struct Context {
    pub(super) publisher: Publisher,
    pub(super) dead_letter_exchange: String,
    /// The work queue, as the metrics label it.
    pub(super) queue: String,
    pub(super) consumer: Arc<Consumer>,
    /// Turns `true` when the session stops: retries in place give their delivery back.
    pub(super) stopping: tokio::sync::watch::Receiver<bool>,
    /// The consumer channel's delivery tags not settled yet.
    pub(super) unsettled: Unsettled,
}

pub(super) use crate::amqp::metrics::Outcome as Settled;

/// How one delivery ended, and how often it was retried in place on the way.
#[derive(Debug, Clone, Copy)]
pub(super) struct Done {
    pub(super) settled: Settled,
    pub(super) retried_in_place: u32,
}

/// How the deliveries of one task ended: one, or a batch's.
pub(super) type Finished = Vec<Done>;

impl From<Settled> for Done {
    fn from(settled: Settled) -> Self {
        Done {
            settled,
            retried_in_place: 0,
        }
    }
}

impl ConsumerStats {
    /// Deliveries settled one way or another (a requeue gives a delivery back: not progress).
    pub(super) fn settled(&self) -> u64 {
        self.acked + self.retried + self.dead_lettered + self.ignored
    }

    /// Counts `done` here and in the `metrics` facade.
    pub(super) fn record(&mut self, queue: &str, done: Done) {
        for _ in 0..done.retried_in_place {
            self.retried += 1;
            metrics::delivery(queue, Settled::Retried);
        }
        let settled = done.settled;
        match settled {
            Settled::Processed => self.acked += 1,
            Settled::Duplicate => {
                self.acked += 1;
                self.duplicates += 1;
            }
            Settled::Retried => self.retried += 1,
            Settled::DeadLettered(_) => self.dead_lettered += 1,
            Settled::Ignored => self.ignored += 1,
            Settled::Requeued => self.requeued += 1,
            Settled::Unsettled => self.unsettled += 1,
        }
        metrics::delivery(queue, settled);
    }
}

impl Context {
    /// Runs and settles one delivery; its tag then leaves the unsettled set.
    pub(super) async fn process(self: Arc<Self>, delivery: Delivery) -> Finished {
        let tag = delivery.delivery_tag;
        let done = self.process_one(delivery).await;
        self.unsettled.settled([tag]);
        vec![done]
    }

    async fn process_one(&self, delivery: Delivery) -> Done {
        let attempt = attempt_of(&delivery);
        let envelope = match decode_envelope(&delivery.data) {
            Ok(envelope) => envelope,
            Err(reason) => {
                tracing::warn!(%reason, "poison message");
                return self
                    .dead_letter(delivery, DeadLetter::Poison, &reason, None)
                    .await
                    .into();
            }
        };
        let span = handle_span(&envelope, attempt);
        self.handle(delivery, envelope, attempt, span.clone())
            .instrument(span)
            .await
    }

    async fn handle(
        &self,
        delivery: Delivery,
        envelope: Envelope,
        mut attempt: u32,
        span: tracing::Span,
    ) -> Done {
        let Some(handler) = self.consumer.handlers.get(&envelope.event_type).cloned() else {
            if self.consumer.dead_letter_unknown {
                let reason = format!("no handler for event type {:?}", envelope.event_type);
                return self
                    .dead_letter(delivery, DeadLetter::NoHandler, &reason, None)
                    .await
                    .into();
            }
            let acked = delivery.acker.ack(BasicAckOptions::default()).await;
            return settlement(acked, "ack", Settled::Ignored).into();
        };
        if self.consumer.ack_before_handling {
            let acked = delivery.acker.ack(BasicAckOptions::default()).await;
            if settlement(acked, "ack", Settled::Processed) == Settled::Unsettled {
                return Settled::Unsettled.into();
            }
        }

        let event_type = envelope.event_type.clone();
        let mut delivered = Delivered {
            envelope,
            body: delivery.data.as_slice().into(),
            attempt,
            redelivered: delivery.redelivered,
            routing_key: delivery.routing_key.as_str().to_owned(),
        };
        let in_place =
            self.consumer.serialize_by_aggregate || self.consumer.spec.retries_in_place();
        let mut retried_in_place = 0;
        let result = loop {
            let started = std::time::Instant::now();
            let result = AssertUnwindSafe(handler(delivered.clone()))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(DeliveryError::permanent("handler panicked")));
            metrics::handler_latency(&self.queue, &event_type, started.elapsed());
            match result {
                Err(error @ DeliveryError::Transient(_))
                    if in_place && attempt < self.consumer.max_attempts =>
                {
                    // Retried here, holding the delivery (and its aggregate's lane), so that
                    // nothing behind it overtakes it.
                    tracing::warn!(%error, attempt, "transient failure; retrying in place");
                    retried_in_place += 1;
                    if !self.pause(attempt).await {
                        let settled = requeue(delivery).await;
                        return Done {
                            settled,
                            retried_in_place,
                        };
                    }
                    attempt += 1;
                    delivered.attempt = attempt;
                }
                result => break result,
            }
        };
        let settled = self.settle(delivery, result, attempt, &span).await;
        Done {
            settled,
            retried_in_place,
        }
    }

    /// Waits before retry `attempt` in place; `false` if the session stops meanwhile.
    async fn pause(&self, attempt: u32) -> bool {
        let delay = self
            .consumer
            .spec
            .retry_tier(attempt)
            .map_or(std::time::Duration::from_secs(1), |(delay, _)| delay);
        let mut stopping = self.stopping.clone();
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            _ = stopping.wait_for(|stop| *stop) => false,
        }
    }

    pub(super) async fn settle(
        &self,
        delivery: Delivery,
        result: Result<bool, DeliveryError>,
        attempt: u32,
        span: &tracing::Span,
    ) -> Settled {
        if self.consumer.ack_before_handling {
            return Settled::Processed;
        }
        match result {
            Ok(duplicate) => {
                span.record("outcome", if duplicate { "duplicate" } else { "acked" });
                // If the ack is lost, the redelivery is a duplicate the handler skips.
                let acked = delivery.acker.ack(BasicAckOptions::default()).await;
                let settled = if duplicate {
                    Settled::Duplicate
                } else {
                    Settled::Processed
                };
                settlement(acked, "ack", settled)
            }
            Err(error @ DeliveryError::Transient(_)) if attempt < self.consumer.max_attempts => {
                span.record("outcome", "retry");
                tracing::warn!(%error, "transient failure; retrying");
                self.retry(delivery, attempt, &error).await
            }
            Err(error @ DeliveryError::Transient(_)) => {
                span.record("outcome", "dead-lettered");
                let reason = format!("too many attempts ({attempt}): {error}");
                let why = DeadLetter::AttemptsExhausted;
                self.dead_letter(delivery, why, &reason, Some(&error)).await
            }
            Err(error) => {
                span.record("outcome", "dead-lettered");
                let reason = error.to_string();
                let why = DeadLetter::Permanent;
                self.dead_letter(delivery, why, &reason, Some(&error)).await
            }
        }
    }

    /// Publishes a delayed copy with the next attempt number, then acks the original. If no
    /// queue received the copy (the retry queue is missing), the original is dead-lettered
    /// with that reason; if the copy is not confirmed, the original is requeued.
    async fn retry(&self, delivery: Delivery, attempt: u32, error: &DeliveryError) -> Settled {
        let Some((delay, tier)) = self.consumer.spec.retry_tier(attempt) else {
            let reason = format!("no retry delays configured: {error}");
            let why = DeadLetter::RetryUnroutable;
            return self.dead_letter(delivery, why, &reason, Some(error)).await;
        };
        let mut headers = headers_of(&delivery);
        headers.insert(
            ATTEMPT_HEADER.into(),
            AMQPValue::LongLongInt(i64::from(attempt) + 1),
        );
        headers.insert(LAST_ERROR_HEADER.into(), header_str(&error.to_string()));
        let properties = delivery
            .properties
            .clone()
            .with_headers(headers)
            .with_expiration(delay.as_millis().to_string().into());
        // The tier's own TTL sets the delay; the same expiration on the copy overrides one it
        // may have brought from its publisher.
        let copy = Message::new("", &tier, &delivery.data).with_properties(properties);
        match self.publisher.publish_one(copy).await {
            Ok(()) => {
                let acked = delivery.acker.ack(BasicAckOptions::default()).await;
                settlement(acked, "ack", Settled::Retried)
            }
            Err(returned @ Error::PublishReturned { .. }) => {
                tracing::error!(error = %returned, "retry copy returned: no retry queue");
                let reason = format!(
                    "retry copy returned, the retry queue {tier:?} does not exist ({returned}); after: {error}"
                );
                let why = DeadLetter::RetryUnroutable;
                self.dead_letter(delivery, why, &reason, Some(error)).await
            }
            Err(e) => {
                tracing::warn!(error = %e, "retry copy not confirmed; requeueing");
                requeue(delivery).await
            }
        }
    }

    /// Publishes a copy carrying `reason` to the dead-letter exchange, then acks the
    /// original. If no queue received the copy, the original is requeued (rejecting it
    /// would send it through the same exchange to nowhere); if the copy is not confirmed,
    /// the original is rejected without requeue (the queue's DLX catches it, without our
    /// reason).
    async fn dead_letter(
        &self,
        delivery: Delivery,
        why: DeadLetter,
        reason: &str,
        error: Option<&DeliveryError>,
    ) -> Settled {
        tracing::warn!(%reason, "dead-lettering");
        let mut headers = headers_of(&delivery);
        headers.insert(DEAD_LETTER_REASON_HEADER.into(), header_str(reason));
        if let Some(error) = error {
            headers.insert(LAST_ERROR_HEADER.into(), header_str(&error.to_string()));
        }
        headers.insert(
            "x-prost-original-exchange".into(),
            header_str(delivery.exchange.as_str()),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        let copy = Message::new(
            &self.dead_letter_exchange,
            delivery.routing_key.as_str(),
            &delivery.data,
        )
        .with_properties(properties);
        let (answer, what) = match self.publisher.publish_one(copy).await {
            Ok(()) => (delivery.acker.ack(BasicAckOptions::default()).await, "ack"),
            Err(returned @ Error::PublishReturned { .. }) => {
                tracing::error!(
                    error = %returned,
                    "dead-letter copy returned: no queue bound to the dead-letter exchange; \
                     the delivery stays in the work queue"
                );
                tokio::time::sleep(UNROUTABLE_DEAD_LETTER_PAUSE).await;
                return requeue(delivery).await;
            }
            Err(_) => {
                let rejected = delivery.acker.reject(BasicRejectOptions { requeue: false });
                (rejected.await, "reject")
            }
        };
        settlement(answer, what, Settled::DeadLettered(why))
    }
}

/// How long a delivery whose dead-letter copy nobody received waits before it goes back to
/// the queue, so that a missing dead-letter queue does not become a busy loop.
const UNROUTABLE_DEAD_LETTER_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Gives the delivery back to the broker, to be delivered again.
async fn requeue(delivery: Delivery) -> Settled {
    let requeue = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    let nacked = delivery.acker.nack(requeue).await;
    settlement(nacked, "requeueing nack", Settled::Requeued)
}

/// How a delivery settled, from lapin's answer to its ack, nack or reject (`what`):
/// `settled` if the broker was told, [`Settled::Unsettled`] if the call failed or lapin did
/// not send it (`Ok(false)`: the acker was used already, or its channel is closed). Either
/// way the broker redelivers an unsettled delivery.
pub(super) fn settlement(answer: lapin::Result<bool>, what: &str, settled: Settled) -> Settled {
    match answer {
        Ok(true) => settled,
        Ok(false) => {
            tracing::warn!("{what} not sent: the channel is closed; the broker will redeliver");
            Settled::Unsettled
        }
        Err(error) => {
            tracing::warn!(%error, "{what} failed; the broker will redeliver");
            Settled::Unsettled
        }
    }
}
