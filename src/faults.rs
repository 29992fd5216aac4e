//! Fault injection on a consumer: the seed's "network failures" (a transmission fails and
//! is delivered again), and answers delayed past the order's deadline.
//!
//! Both act on deliveries as they arrive, before the handler runs, so they hit the
//! prost-db services and the seed-shaped control alike:
//!
//! - **Redeliveries.** A fraction `duplicate_rate` of the original deliveries (chosen by
//!   their event id, so the same events in every run and every process) is delivered
//!   `redeliveries` more times: the copies are published to the work queue right away and
//!   race the original.
//! - **Late answers.** A `StockReserved` whose reservation expires within
//!   `delay_short_holds` is held back until just after it expired (parked in the work
//!   queue's delay queue), so the order's confirmation arrives after its expiry.
//!
//! Copies and parked messages come back through the default exchange, with the queue's name
//! as routing key: they are never duplicated again.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use prost_db::amqp::lapin::BasicProperties;
use prost_db::amqp::lapin::options::BasicPublishOptions;
use prost_db::amqp::{Delivered, DeliveryError, Message, Publisher, QueueSpec};
use prost_db::events::{Event, EventPayload};
use uuid::Uuid;

use crate::events::StockReserved;
use crate::topology::delay_queue;

/// How long after its expiry a delayed answer arrives.
const LATE_BY: Duration = Duration::from_millis(300);

/// Which faults to inject.
///
/// ```
/// let faults = prost_shop::faults::Faults::seed();
/// assert_eq!((faults.duplicate_rate, faults.redeliveries), (0.02, 3));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Fraction of original deliveries hit by a network failure.
    pub duplicate_rate: f64,
    /// Extra deliveries of each of them.
    pub redeliveries: u32,
    /// Delay `StockReserved` of reservations expiring within this window past their expiry.
    pub delay_short_holds: Option<Duration>,
}

impl Faults {
    /// The seed's numbers: 2% network failures, 3 redeliveries each.
    pub fn seed() -> Self {
        Faults {
            duplicate_rate: 0.02,
            redeliveries: 3,
            delay_short_holds: None,
        }
    }

    /// Whether any fault is configured.
    ///
    /// ```
    /// assert!(!prost_shop::faults::Faults::default().any());
    /// ```
    pub fn any(&self) -> bool {
        (self.duplicate_rate > 0.0 && self.redeliveries > 0) || self.delay_short_holds.is_some()
    }
}

/// Whether event `id` is one of the `rate` hit by a network failure (the low 62 bits of
/// UUIDs v4 and v7 are random).
///
/// ```
/// use prost_shop::faults::hit;
/// let id = uuid::Uuid::new_v4();
/// assert!(!hit(id, 0.0));
/// assert!(hit(id, 1.0));
/// ```
pub fn hit(id: Uuid, rate: f64) -> bool {
    let bits = id.as_u128() as u64 & ((1 << 62) - 1);
    rate > 0.0 && (bits as f64) < rate * (1u64 << 62) as f64
}

/// What the injector did.
///
/// ```
/// let counts = prost_shop::faults::FaultCounts::default();
/// assert_eq!(counts.failures(), 0);
/// ```
#[derive(Debug, Default)]
pub struct FaultCounts {
    failures: AtomicU64,
    duplicates: AtomicU64,
    delayed: AtomicU64,
}

impl FaultCounts {
    /// Deliveries hit by a network failure.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Extra deliveries sent for them.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Answers delayed past their order's expiry.
    pub fn delayed(&self) -> u64 {
        self.delayed.load(Ordering::Relaxed)
    }
}

/// Injects [`Faults`] into the deliveries of one queue family.
#[derive(Debug, Clone)]
pub struct FaultInjector {
    faults: Faults,
    publisher: Publisher,
    queue: String,
    delay_queue: String,
    counts: Arc<FaultCounts>,
    /// Events whose network failure a batch body injected already.
    injected: Arc<Mutex<HashSet<Uuid>>>,
}

impl FaultInjector {
    /// An injector for `spec`'s work queue, publishing its copies through `publisher`.
    pub fn new(
        faults: Faults,
        spec: &QueueSpec,
        publisher: Publisher,
        counts: Arc<FaultCounts>,
    ) -> Self {
        FaultInjector {
            faults,
            queue: spec.queue(),
            delay_queue: delay_queue(spec),
            publisher,
            counts,
            injected: Arc::default(),
        }
    }

    /// [`before`](Self::before)'s network failure, for an event handled in a batch
    /// ([`prost_db::amqp::Consumer::on_batch`]), whose body sees the event and not its
    /// delivery: the copies go out once per event id (they carry the same id, and the body
    /// may run twice for one event).
    ///
    /// # Errors
    ///
    /// A transient error if a copy could not be published (the batch is retried).
    pub async fn duplicate_once<P: EventPayload>(
        &self,
        event: &Event<P>,
    ) -> Result<(), DeliveryError> {
        let id = event.envelope.event_id;
        if self.faults.redeliveries == 0 || !hit(id, self.faults.duplicate_rate) {
            return Ok(());
        }
        if !self
            .injected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id)
        {
            return Ok(());
        }
        let body = event.to_json()?;
        self.publish_copies(&body, id, &event.envelope.event_type)
            .await
    }

    /// The injected network failure: `redeliveries` copies of `body` straight to the work
    /// queue, counted as one failure and that many duplicates.
    async fn publish_copies(
        &self,
        body: &[u8],
        id: Uuid,
        event_type: &str,
    ) -> Result<(), DeliveryError> {
        let copy = Message::new("", &self.queue, body)
            .message_id(&id.to_string())
            .event_type(event_type);
        let copies = vec![copy; self.faults.redeliveries as usize];
        for outcome in self
            .publisher
            .publish_all(&copies)
            .await
            .map_err(DeliveryError::transient)?
        {
            outcome.map_err(DeliveryError::transient)?;
        }
        self.counts.failures.fetch_add(1, Ordering::Relaxed);
        self.counts
            .duplicates
            .fetch_add(u64::from(self.faults.redeliveries), Ordering::Relaxed);
        Ok(())
    }

    /// Runs before the handler: returns `false` if the delivery was parked (ack it and do
    /// not handle it now).
    ///
    /// # Errors
    ///
    /// A transient error if a copy could not be published (the delivery is retried).
    pub async fn before(&self, delivered: &Delivered) -> Result<bool, DeliveryError> {
        let original = delivered.routing_key != self.queue;
        let id = delivered.envelope.event_id;
        if original && self.faults.redeliveries > 0 && hit(id, self.faults.duplicate_rate) {
            self.publish_copies(&delivered.body, id, &delivered.envelope.event_type)
                .await?;
        }
        if let Some(window) = self.faults.delay_short_holds
            && delivered.envelope.event_type == StockReserved::EVENT_TYPE
            && let Some(expires_at) = delivered.decode::<StockReserved>()?.payload.expires_at
        {
            let now = Utc::now();
            let release = expires_at + chrono::Duration::from_std(LATE_BY).unwrap_or_default();
            let short = expires_at - now < chrono::Duration::from_std(window).unwrap_or_default();
            if short && now < release {
                let wait = (release - now).num_milliseconds().max(1);
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_message_id(id.to_string().into())
                    .with_type(delivered.envelope.event_type.as_str().into())
                    .with_expiration(wait.to_string().into());
                let confirm = self
                    .publisher
                    .channel()
                    .basic_publish(
                        "".into(),
                        self.delay_queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &delivered.body,
                        properties,
                    )
                    .await
                    .map_err(DeliveryError::transient)?;
                confirm.await.map_err(DeliveryError::transient)?;
                self.counts.delayed.fetch_add(1, Ordering::Relaxed);
                return Ok(false);
            }
        }
        Ok(true)
    }
}
