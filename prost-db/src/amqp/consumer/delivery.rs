//! Delivery decoding: the handler's view of a delivery, the attempt header, and the
//! envelope check that names what is wrong with a poison message.

use std::sync::Arc;

use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};
use uuid::Uuid;

use crate::amqp::DeliveryError;
use crate::events::{Envelope, Event, EventPayload};

/// Header holding the delivery attempt (1 on first publish; absent means 1).
///
/// ```
/// assert_eq!(prost_db::amqp::ATTEMPT_HEADER, "x-prost-attempt");
/// ```
pub const ATTEMPT_HEADER: &str = "x-prost-attempt";

/// A decoded delivery, as handlers see it.
///
/// ```
/// use prost_db::amqp::Delivered;
/// use prost_db::events::Envelope;
///
/// let delivered = Delivered::new(Envelope::new("Ping", "1", "ping", "c"), br#"{}"#.to_vec());
/// assert_eq!(delivered.attempt, 1);
/// ```
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The event's envelope.
    pub envelope: Envelope,
    /// The whole JSON body (envelope and payload).
    pub body: Arc<[u8]>,
    /// 1 for the first try, +1 for every retry through the retry queue.
    pub attempt: u32,
    /// Whether the broker marked this delivery as redelivered (a consumer died or
    /// disconnected before settling it).
    pub redelivered: bool,
    /// The routing key the message was published with.
    pub routing_key: String,
}

impl Delivered {
    /// A delivery of `body` with `envelope`, first attempt (for tests and direct calls).
    ///
    /// ```
    /// use prost_db::amqp::Delivered;
    /// use prost_db::events::Envelope;
    /// let delivered = Delivered::new(Envelope::new("Ping", "1", "ping", "c"), b"{}".to_vec());
    /// assert!(!delivered.redelivered);
    /// ```
    pub fn new(envelope: Envelope, body: Vec<u8>) -> Self {
        Delivered {
            envelope,
            body: body.into(),
            attempt: 1,
            redelivered: false,
            routing_key: String::new(),
        }
    }

    /// Decodes the body as a typed event.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::Permanent`] if the payload does not match `P` (a poison message).
    ///
    /// ```
    /// use prost_db::amqp::Delivered;
    /// use prost_db::events::{Event, EventPayload};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Ping { n: u32 }
    /// impl EventPayload for Ping {
    ///     const EVENT_TYPE: &'static str = "Ping";
    ///     const AGGREGATE_TYPE: &'static str = "ping";
    ///     const ROUTING_KEY: &'static str = "ping";
    /// }
    /// let event = Event::new("1", "c", Ping { n: 5 });
    /// let delivered = Delivered::new(event.envelope.clone(), event.to_json().unwrap());
    /// assert_eq!(delivered.decode::<Ping>().unwrap().payload.n, 5);
    /// ```
    pub fn decode<P: EventPayload>(&self) -> Result<Event<P>, DeliveryError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            DeliveryError::permanent(format!("cannot decode {} payload: {e}", P::EVENT_TYPE))
        })
    }
}

/// The `prost_db.handle` span of one delivery's handling; `outcome` is recorded on
/// settlement.
pub(super) fn handle_span(envelope: &Envelope, attempt: u32) -> tracing::Span {
    tracing::info_span!(
        "prost_db.handle",
        event_id = %envelope.event_id,
        event_type = %envelope.event_type,
        attempt,
        outcome = tracing::field::Empty,
    )
}

pub(super) fn headers_of(delivery: &Delivery) -> FieldTable {
    delivery.properties.headers().clone().unwrap_or_default()
}

pub(super) fn attempt_of(delivery: &Delivery) -> u32 {
    let Some(headers) = delivery.properties.headers() else {
        return 1;
    };
    let n = match headers.inner().get(ATTEMPT_HEADER) {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        Some(AMQPValue::LongUInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortInt(n)) => i64::from(*n),
        Some(AMQPValue::ShortUInt(n)) => i64::from(*n),
        _ => 1,
    };
    u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}

/// The lane key of a delivery: its `aggregate_type` and `aggregate_id`, read without
/// decoding the rest; `None` if the body has neither.
pub(super) fn aggregate_key(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Aggregate<'a> {
        #[serde(borrow, default)]
        aggregate_type: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        aggregate_id: std::borrow::Cow<'a, str>,
    }
    let aggregate: Aggregate<'_> = serde_json::from_slice(body).ok()?;
    let kind = aggregate.aggregate_type.unwrap_or_default();
    Some(format!("{kind}\u{0}{}", aggregate.aggregate_id))
}

/// Reads the envelope, naming precisely what is wrong with a poison message.
pub(super) fn decode_envelope(body: &[u8]) -> std::result::Result<Envelope, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("undecodable: not JSON ({e})"))?;
    let Some(object) = value.as_object() else {
        return Err("undecodable: not a JSON object".to_owned());
    };
    match object.get("event_id") {
        None | Some(serde_json::Value::Null) => return Err("missing event_id".to_owned()),
        Some(serde_json::Value::String(s)) if Uuid::parse_str(s).is_ok() => {}
        Some(other) => return Err(format!("invalid event_id {other}: expected a UUID")),
    }
    if !object
        .get("event_type")
        .is_some_and(serde_json::Value::is_string)
    {
        return Err("missing event_type".to_owned());
    }
    serde_json::from_value(value).map_err(|e| format!("undecodable envelope: {e}"))
}

#[cfg(test)]
mod tests {
    use super::decode_envelope;

    #[test]
    fn poison_reasons_are_precise() {
        assert!(
            decode_envelope(b"{nope")
                .unwrap_err()
                .starts_with("undecodable")
        );
        assert_eq!(
            decode_envelope(br#"{"event_type":"X"}"#).unwrap_err(),
            "missing event_id"
        );
        assert!(
            decode_envelope(br#"{"event_id":"42","event_type":"X"}"#)
                .unwrap_err()
                .starts_with("invalid event_id")
        );
        let ok = br#"{"event_id":"0195f3c5-8f2a-7cc1-9a6e-000000000001","event_type":"X",
            "aggregate_id":"1","aggregate_type":"x","version":"1",
            "timestamp":"2026-01-01T00:00:00Z","correlation_id":"c","extra":1}"#;
        assert_eq!(decode_envelope(ok).unwrap().event_type, "X");
    }
}
