//! Settlement of a batch: runs its handler (one transaction for the batch), then settles
//! each failure as a single delivery's, and acks the successes, with one `multiple` ack
//! where the channel's unsettled tags allow it.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use tracing::Instrument;

use super::batch::{Batch, BatchHandler, BatchResults};
use super::delivery::{Delivered, attempt_of, handle_span};
use super::settle::{Context, Done, Finished, Settled, settlement};
use crate::amqp::DeliveryError;
use crate::amqp::metrics;

/// A delivery of the batch whose event was committed (or was a duplicate).
struct Success {
    index: usize,
    delivery: Delivery,
    duplicate: bool,
    span: tracing::Span,
}

impl Context {
    /// Runs `batch` and settles every delivery of it; its tags then leave the unsettled set.
    pub(super) async fn process_batch(self: Arc<Self>, batch: Batch) -> Finished {
        let Batch {
            handler,
            deliveries,
        } = batch;
        let tags: Vec<u64> = deliveries.iter().map(|(d, _)| d.delivery_tag).collect();
        let event_type = deliveries
            .first()
            .map(|(_, envelope)| envelope.event_type.clone())
            .unwrap_or_default();
        let span = tracing::info_span!(
            "prost_db.handle_batch",
            event_type = %event_type,
            size = deliveries.len(),
        );
        let done = self
            .run_and_settle(&handler, &event_type, deliveries)
            .instrument(span)
            .await;
        self.unsettled.settled(tags);
        done
    }

    async fn run_and_settle(
        &self,
        handler: &BatchHandler,
        event_type: &str,
        deliveries: Vec<(Delivery, crate::events::Envelope)>,
    ) -> Finished {
        let batch_tags: BTreeSet<u64> = deliveries.iter().map(|(d, _)| d.delivery_tag).collect();
        let mut items = Vec::with_capacity(deliveries.len());
        let mut delivered = Vec::with_capacity(deliveries.len());
        for (delivery, envelope) in deliveries {
            let attempt = attempt_of(&delivery);
            let span = handle_span(&envelope, attempt);
            delivered.push(Delivered {
                envelope,
                body: delivery.data.as_slice().into(),
                attempt,
                redelivered: delivery.redelivered,
                routing_key: delivery.routing_key.as_str().to_owned(),
            });
            items.push((delivery, attempt, span));
        }
        let size = items.len();
        let started = std::time::Instant::now();
        let BatchResults { results, fell_back } = run_guarded(handler, delivered).await;
        let elapsed = started.elapsed();
        metrics::batch_size(&self.queue, event_type, size);
        if fell_back {
            metrics::batch_fallback(&self.queue, event_type);
        }
        for _ in 0..size {
            metrics::handler_latency(&self.queue, event_type, elapsed);
        }
        if let Some(hook) = &self.consumer.batch_faults.after_commit {
            hook(size);
        }

        // The failures first, each as a single delivery's: once settled, their tags cannot
        // be hit by the successes' `multiple` ack.
        let mut done: Vec<Option<Done>> = vec![None; size];
        let mut successes = Vec::with_capacity(size);
        for (index, ((delivery, attempt, span), result)) in
            items.into_iter().zip(results).enumerate()
        {
            match result {
                Ok(duplicate) => successes.push(Success {
                    index,
                    delivery,
                    duplicate,
                    span,
                }),
                Err(error) => {
                    let settled = self
                        .settle(delivery, Err(error), attempt, &span)
                        .instrument(span.clone())
                        .await;
                    done[index] = Some(settled.into());
                }
            }
        }
        for (index, settled) in self.ack(successes, &batch_tags).await {
            done[index] = Some(settled.into());
        }
        done.into_iter()
            .map(|done| done.unwrap_or_else(|| Settled::Unsettled.into()))
            .collect()
    }

    /// Acks the successes: those below the first unsettled tag that is not the batch's with
    /// one `multiple` ack (a `multiple` ack settles every unsettled delivery of the channel
    /// up to its tag, including those other handlers are still running), the rest one by one.
    async fn ack(&self, successes: Vec<Success>, batch: &BTreeSet<u64>) -> Vec<(usize, Settled)> {
        let tags: Vec<u64> = successes.iter().map(|s| s.delivery.delivery_tag).collect();
        let limit = if self.consumer.batch_faults.naive_multiple_ack {
            tags.iter().copied().max()
        } else {
            self.unsettled.multiple_ack_limit(batch, &tags)
        };
        let (covered, alone): (Vec<Success>, Vec<Success>) = successes
            .into_iter()
            .partition(|s| limit.is_some_and(|limit| s.delivery.delivery_tag <= limit));
        let mut settled = Vec::with_capacity(covered.len() + alone.len());
        let mut one_by_one = alone;
        if covered.len() >= 2 {
            let last = covered
                .iter()
                .max_by_key(|s| s.delivery.delivery_tag)
                .expect("two or more");
            let options = BasicAckOptions { multiple: true };
            let answer = last.delivery.acker.ack(options).await;
            metrics::batch_ack(&self.queue, true);
            let acked = settlement(answer, "multiple ack", Settled::Processed);
            for success in covered {
                settled.push((success.index, outcome(&success, acked)));
            }
        } else {
            one_by_one.extend(covered);
        }
        one_by_one.sort_by_key(|s| s.delivery.delivery_tag);
        for success in one_by_one {
            let answer = success.delivery.acker.ack(BasicAckOptions::default()).await;
            metrics::batch_ack(&self.queue, false);
            let acked = settlement(answer, "ack", Settled::Processed);
            settled.push((success.index, outcome(&success, acked)));
        }
        settled
    }
}

/// How a success settled, given its ack's [`settlement`], recorded on its span.
fn outcome(success: &Success, acked: Settled) -> Settled {
    if acked == Settled::Unsettled {
        return Settled::Unsettled;
    }
    let duplicate = success.duplicate;
    success
        .span
        .record("outcome", if duplicate { "duplicate" } else { "acked" });
    if duplicate {
        Settled::Duplicate
    } else {
        Settled::Processed
    }
}

/// The batch's results; if its body panicked, each delivery again on its own, so that the
/// one that panics is dead-lettered alone.
async fn run_guarded(handler: &BatchHandler, delivered: Vec<Delivered>) -> BatchResults {
    let panicked = || DeliveryError::permanent("handler panicked");
    if let Ok(results) = AssertUnwindSafe((handler.run)(delivered.clone()))
        .catch_unwind()
        .await
    {
        return results;
    }
    if delivered.len() == 1 {
        return BatchResults {
            results: vec![Err(panicked())],
            fell_back: false,
        };
    }
    tracing::warn!("a batch's body panicked; running its events one at a time");
    let mut results = Vec::with_capacity(delivered.len());
    for one in delivered {
        let result = match AssertUnwindSafe((handler.run)(vec![one]))
            .catch_unwind()
            .await
        {
            Ok(mut result) => result.results.pop().unwrap_or_else(|| Err(panicked())),
            Err(_) => Err(panicked()),
        };
        results.push(result);
    }
    BatchResults {
        results,
        fell_back: true,
    }
}
