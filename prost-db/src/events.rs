//! Events: the seed's envelope and a typed event on top of it.
//!
//! Every event on the wire is one flat JSON object: the envelope's fields
//! (`event_id`, `event_type`, `aggregate_id`, `aggregate_type`, `version`, `timestamp`,
//! `correlation_id`) next to the payload's own fields, exactly as the Go services wrote it.
//!
//! ```
//! use prost_db::events::{Event, EventPayload};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
//! struct ProductCreated { name: String, sku: String }
//!
//! impl EventPayload for ProductCreated {
//!     const EVENT_TYPE: &'static str = "ProductCreated";
//!     const AGGREGATE_TYPE: &'static str = "product";
//!     const ROUTING_KEY: &'static str = "product.created";
//! }
//!
//! let event = Event::new("42", "saga-1", ProductCreated { name: "Mug".into(), sku: "MUG-1".into() });
//! let json = serde_json::to_value(&event).unwrap();
//! assert_eq!(json["event_type"], "ProductCreated");
//! assert_eq!(json["sku"], "MUG-1");
//! let back: Event<ProductCreated> = serde_json::from_value(json).unwrap();
//! assert_eq!(back, event);
//! ```

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The envelope every event carries (the seed's `BaseEvent`).
///
/// `event_id` is what consumers deduplicate on; `correlation_id` ties the events of one saga
/// together.
///
/// ```
/// use prost_db::events::Envelope;
///
/// let envelope = Envelope::new("OrderCreated", "1001", "order", "saga-7");
/// assert_eq!(envelope.version, "1");
/// assert_eq!(envelope.event_type, "OrderCreated");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique id of this event; redeliveries and republished copies keep it.
    pub event_id: Uuid,
    /// The event's type name, e.g. `OrderCreated`; consumers route on it.
    pub event_type: String,
    /// Id of the entity the event is about.
    pub aggregate_id: String,
    /// Kind of that entity, e.g. `order`.
    pub aggregate_type: String,
    /// Schema version of the payload (`"1"` in the seed).
    pub version: String,
    /// When the event was created (UTC).
    pub timestamp: DateTime<Utc>,
    /// Id shared by all events of one saga or request.
    pub correlation_id: String,
}

impl Envelope {
    /// A new envelope with a fresh UUID v7 `event_id`, version `"1"` and the current time.
    ///
    /// ```
    /// let a = prost_db::events::Envelope::new("CartCleared", "7", "cart", "c-1");
    /// let b = prost_db::events::Envelope::new("CartCleared", "7", "cart", "c-1");
    /// assert_ne!(a.event_id, b.event_id);
    /// ```
    pub fn new(
        event_type: &str,
        aggregate_id: impl Into<String>,
        aggregate_type: &str,
        correlation_id: impl Into<String>,
    ) -> Self {
        Envelope {
            event_id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            aggregate_id: aggregate_id.into(),
            aggregate_type: aggregate_type.to_owned(),
            version: "1".to_owned(),
            timestamp: Utc::now(),
            correlation_id: correlation_id.into(),
        }
    }
}

/// A payload type: names its event type, aggregate type and routing key.
///
/// ```
/// use prost_db::events::EventPayload;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct CartCleared { cart_id: i64, user_id: i64 }
///
/// impl EventPayload for CartCleared {
///     const EVENT_TYPE: &'static str = "CartCleared";
///     const AGGREGATE_TYPE: &'static str = "cart";
///     const ROUTING_KEY: &'static str = "cart.cleared";
/// }
/// assert_eq!(CartCleared::ROUTING_KEY, "cart.cleared");
/// ```
pub trait EventPayload: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The `event_type` string, e.g. `"OrderCreated"`.
    const EVENT_TYPE: &'static str;
    /// The `aggregate_type` string, e.g. `"order"`.
    const AGGREGATE_TYPE: &'static str;
    /// The topic routing key it is published with, e.g. `"order.created"`.
    const ROUTING_KEY: &'static str;
}

/// An event: the envelope plus a typed payload, flattened into one JSON object.
///
/// ```
/// use prost_db::events::{Event, EventPayload};
///
/// #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// struct OrderConfirmed { order_id: i64 }
/// impl EventPayload for OrderConfirmed {
///     const EVENT_TYPE: &'static str = "OrderConfirmed";
///     const AGGREGATE_TYPE: &'static str = "order";
///     const ROUTING_KEY: &'static str = "order.confirmed";
/// }
///
/// let event = Event::new("1001", "saga-1", OrderConfirmed { order_id: 1001 });
/// assert_eq!(event.envelope.aggregate_type, "order");
/// assert_eq!(event.payload.order_id, 1001);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event<P> {
    /// The envelope.
    #[serde(flatten)]
    pub envelope: Envelope,
    /// The event-specific fields.
    #[serde(flatten)]
    pub payload: P,
}

impl<P: EventPayload> Event<P> {
    /// A new event of type `P` about aggregate `aggregate_id`, with a fresh event id.
    ///
    /// ```
    /// # use prost_db::events::{Event, EventPayload};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Ping {}
    /// # impl EventPayload for Ping {
    /// #     const EVENT_TYPE: &'static str = "Ping";
    /// #     const AGGREGATE_TYPE: &'static str = "ping";
    /// #     const ROUTING_KEY: &'static str = "ping";
    /// # }
    /// let event = Event::new("1", "corr", Ping {});
    /// assert_eq!(event.envelope.event_type, "Ping");
    /// ```
    pub fn new(
        aggregate_id: impl Into<String>,
        correlation_id: impl Into<String>,
        payload: P,
    ) -> Self {
        Event {
            envelope: Envelope::new(
                P::EVENT_TYPE,
                aggregate_id,
                P::AGGREGATE_TYPE,
                correlation_id,
            ),
            payload,
        }
    }

    /// The same event with a given `event_id` (for deterministic ids, e.g. derived from a
    /// command's idempotency key).
    ///
    /// ```
    /// # use prost_db::events::{Event, EventPayload};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Ping {}
    /// # impl EventPayload for Ping {
    /// #     const EVENT_TYPE: &'static str = "Ping";
    /// #     const AGGREGATE_TYPE: &'static str = "ping";
    /// #     const ROUTING_KEY: &'static str = "ping";
    /// # }
    /// let id = uuid::Uuid::nil();
    /// assert_eq!(Event::new("1", "c", Ping {}).with_event_id(id).envelope.event_id, id);
    /// ```
    #[must_use]
    pub fn with_event_id(mut self, event_id: Uuid) -> Self {
        self.envelope.event_id = event_id;
        self
    }

    /// The JSON bytes published on the wire.
    ///
    /// # Errors
    ///
    /// A `serde_json` error if the payload cannot be serialized.
    ///
    /// ```
    /// # use prost_db::events::{Event, EventPayload};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Ping { n: u8 }
    /// # impl EventPayload for Ping {
    /// #     const EVENT_TYPE: &'static str = "Ping";
    /// #     const AGGREGATE_TYPE: &'static str = "ping";
    /// #     const ROUTING_KEY: &'static str = "ping";
    /// # }
    /// let bytes = Event::new("1", "c", Ping { n: 3 }).to_json()?;
    /// assert!(std::str::from_utf8(&bytes).unwrap().contains("\"n\":3"));
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

/// Idempotent handlers deduplicate events on the envelope's `event_id`, and a duplicate is
/// replayed if its event type and payload match the first delivery's. The rest of the
/// envelope (timestamp, correlation id, aggregate, version) is left out of the
/// fingerprint: a republisher may re-stamp it, and the id already names the event.
///
/// ```
/// use prost_db::events::{Envelope, Event};
/// use prost_db::idempotency::EventId;
///
/// let event = Event { envelope: Envelope::new("Ping", "1", "ping", "c"), payload: 7 };
/// assert_eq!(event.event_id(), &event.envelope.event_id);
///
/// let mut republished = event.clone();
/// republished.envelope.timestamp += chrono::Duration::seconds(30);
/// assert_eq!(republished.fingerprint()?, event.fingerprint()?);
/// # Ok::<(), serde_json::Error>(())
/// ```
impl<P: Serialize> crate::idempotency::EventId for Event<P> {
    type Id = Uuid;

    fn event_id(&self) -> &Uuid {
        &self.envelope.event_id
    }

    fn fingerprint(&self) -> Result<crate::idempotency::Fingerprint, serde_json::Error> {
        crate::idempotency::Fingerprint::of(&(&self.envelope.event_type, &self.payload))
    }
}
