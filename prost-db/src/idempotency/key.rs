//! Idempotency keys, and the events that carry their own.

use std::borrow::Cow;

use super::Fingerprint;

/// A value that can identify an event in `idempotency_records.event_id` (a `TEXT` column).
///
/// Implemented for strings, UUIDs and integers. Implement it for your own id types by
/// returning their canonical text form; two deliveries of the same event must give the
/// same text.
///
/// ```
/// use std::borrow::Cow;
/// use prost_db::idempotency::IdempotencyKey;
///
/// struct OrderNumber(u32);
///
/// impl IdempotencyKey for OrderNumber {
///     fn to_key(&self) -> Cow<'_, str> {
///         Cow::Owned(format!("order-{}", self.0))
///     }
/// }
///
/// assert_eq!(OrderNumber(7).to_key(), "order-7");
/// assert_eq!(uuid::Uuid::nil().to_key(), "00000000-0000-0000-0000-000000000000");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as an idempotency key",
    label = "not an idempotency key",
    note = "use a string, a UUID or an integer, or implement `prost_db::idempotency::IdempotencyKey` for `{Self}`"
)]
pub trait IdempotencyKey {
    /// The key's text form, stored in `event_id`.
    fn to_key(&self) -> Cow<'_, str>;
}

impl IdempotencyKey for str {
    fn to_key(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl IdempotencyKey for String {
    fn to_key(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl IdempotencyKey for Cow<'_, str> {
    fn to_key(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl IdempotencyKey for uuid::Uuid {
    fn to_key(&self) -> Cow<'_, str> {
        Cow::Owned(self.hyphenated().to_string())
    }
}

macro_rules! integer_keys {
    ($($t:ty),*) => {$(
        impl IdempotencyKey for $t {
            fn to_key(&self) -> Cow<'_, str> {
                Cow::Owned(self.to_string())
            }
        }
    )*};
}

integer_keys!(i32, i64, u32, u64, i128, u128);

impl<K: IdempotencyKey + ?Sized> IdempotencyKey for &K {
    fn to_key(&self) -> Cow<'_, str> {
        (**self).to_key()
    }
}

impl<K: IdempotencyKey + ?Sized> IdempotencyKey for Box<K> {
    fn to_key(&self) -> Cow<'_, str> {
        (**self).to_key()
    }
}

impl<K: IdempotencyKey + ?Sized> IdempotencyKey for std::sync::Arc<K> {
    fn to_key(&self) -> Cow<'_, str> {
        (**self).to_key()
    }
}

/// An event that carries its own id: the default key of
/// [`#[idempotent_handler]`](crate::idempotent_handler), and what its payload fingerprint
/// covers.
///
/// A duplicate is replayed only if its fingerprint matches the first delivery's; a
/// different payload under the same id is [`HandlerError::PayloadMismatch`]. By default
/// the fingerprint covers the whole event as it serializes. Override
/// [`fingerprint`](Self::fingerprint) to leave out what a republisher may re-stamp (a
/// timestamp, a correlation id), as [`Event`](crate::events::Event) does.
///
/// Implemented for references and smart pointers to events, so handlers may take
/// `&Event`, `Box<Event>` or `Arc<Event>`.
///
/// ```
/// use prost_db::idempotency::{EventId, Fingerprint, IdempotencyKey};
///
/// #[derive(serde::Serialize)]
/// struct OrderCreated { event_id: uuid::Uuid, sent_at: String, order_id: i64 }
///
/// impl EventId for OrderCreated {
///     type Id = uuid::Uuid;
///     fn event_id(&self) -> &uuid::Uuid { &self.event_id }
///     // A resend carries a new `sent_at`: the same event.
///     fn fingerprint(&self) -> Result<Fingerprint, serde_json::Error> {
///         Fingerprint::of(&self.order_id)
///     }
/// }
///
/// let event = OrderCreated { event_id: uuid::Uuid::nil(), sent_at: "09:00".into(), order_id: 1 };
/// let resent = OrderCreated { sent_at: "09:05".into(), ..event };
/// assert_eq!(resent.event_id().to_key(), uuid::Uuid::nil().to_key());
/// assert_eq!(resent.fingerprint()?, Fingerprint::of(&1)?);
/// # Ok::<(), serde_json::Error>(())
/// ```
///
/// [`HandlerError::PayloadMismatch`]: super::HandlerError::PayloadMismatch
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not carry an event id",
    label = "the event has no `EventId` implementation",
    note = "implement `prost_db::idempotency::EventId` for the event, or name the key with `#[idempotent_handler(key = ...)]`"
)]
pub trait EventId: SerializedEvent {
    /// The id's type.
    type Id: IdempotencyKey + ?Sized;

    /// The event's unique id, the same on every delivery of the event.
    fn event_id(&self) -> &Self::Id;

    /// The fingerprint a duplicate must match to be replayed: by default, of the whole
    /// event.
    ///
    /// # Errors
    ///
    /// The serializer's error, for events JSON cannot represent.
    fn fingerprint(&self) -> Result<Fingerprint, serde_json::Error> {
        self.fingerprint_whole()
    }
}

/// Not public API: what [`EventId`] needs of an event, implemented for every
/// `serde::Serialize` type. A trait of our own rather than `Serialize` as the supertrait, so
/// that a missing derive gets one error in our words, on the event's type.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "the event `{Self}` does not implement `serde::Serialize`",
    label = "the event must serialize: its fingerprint is taken from the serialized form",
    note = "add `#[derive(serde::Serialize)]` to the event type"
)]
pub trait SerializedEvent {
    /// The canonical fingerprint of the whole event.
    fn fingerprint_whole(&self) -> Result<Fingerprint, serde_json::Error>;
}

impl<T: serde::Serialize + ?Sized> SerializedEvent for T {
    fn fingerprint_whole(&self) -> Result<Fingerprint, serde_json::Error> {
        Fingerprint::of(self)
    }
}

macro_rules! forward_event_id {
    ($($ty:ty),*) => {$(
        impl<E: EventId + serde::Serialize + ?Sized> EventId for $ty {
            type Id = E::Id;
            fn event_id(&self) -> &E::Id {
                (**self).event_id()
            }
            fn fingerprint(&self) -> Result<Fingerprint, serde_json::Error> {
                (**self).fingerprint()
            }
        }
    )*};
}

forward_event_id!(&E, &mut E, Box<E>, std::sync::Arc<E>);
