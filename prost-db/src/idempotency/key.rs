//! Idempotency keys, event ids and payload fingerprints.

use std::borrow::Cow;
use std::fmt;

use sha2::{Digest, Sha256};

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
/// [`#[idempotent_handler]`](crate::idempotent_handler).
///
/// Implemented for references and smart pointers to events, so handlers may take
/// `&Event`, `Box<Event>` or `Arc<Event>`.
///
/// ```
/// use prost_db::idempotency::{EventId, IdempotencyKey};
///
/// struct OrderCreated { event_id: uuid::Uuid, order_id: i64 }
///
/// impl EventId for OrderCreated {
///     type Id = uuid::Uuid;
///     fn event_id(&self) -> &uuid::Uuid { &self.event_id }
/// }
///
/// let event = OrderCreated { event_id: uuid::Uuid::nil(), order_id: 1 };
/// assert_eq!((&event).event_id().to_key(), uuid::Uuid::nil().to_key());
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not carry an event id",
    label = "the event has no `EventId` implementation",
    note = "implement `prost_db::idempotency::EventId` for the event, or name the key with `#[idempotent_handler(key = ...)]`"
)]
pub trait EventId {
    /// The id's type.
    type Id: IdempotencyKey + ?Sized;

    /// The event's unique id, the same on every delivery of the event.
    fn event_id(&self) -> &Self::Id;
}

impl<E: EventId + ?Sized> EventId for &E {
    type Id = E::Id;
    fn event_id(&self) -> &E::Id {
        (**self).event_id()
    }
}

impl<E: EventId + ?Sized> EventId for &mut E {
    type Id = E::Id;
    fn event_id(&self) -> &E::Id {
        (**self).event_id()
    }
}

impl<E: EventId + ?Sized> EventId for Box<E> {
    type Id = E::Id;
    fn event_id(&self) -> &E::Id {
        (**self).event_id()
    }
}

impl<E: EventId + ?Sized> EventId for std::sync::Arc<E> {
    type Id = E::Id;
    fn event_id(&self) -> &E::Id {
        (**self).event_id()
    }
}

/// The SHA-256 of an event's JSON serialization, stored in `payload_hash` to tell a true
/// duplicate from a different event that reuses an id.
///
/// Serialization must be deterministic: a struct's fields always serialize in declaration
/// order, but a `HashMap` does not; use a `BTreeMap` in events.
///
/// ```
/// use prost_db::idempotency::Fingerprint;
///
/// let a = Fingerprint::of(&serde_json::json!({"order": 1})).unwrap();
/// let b = Fingerprint::of(&serde_json::json!({"order": 2})).unwrap();
/// assert_ne!(a, b);
/// assert_eq!(a, Fingerprint::of(&serde_json::json!({"order": 1})).unwrap());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Hashes `payload`'s JSON form.
    ///
    /// # Errors
    ///
    /// The serializer's error, for payloads JSON cannot represent (e.g. maps with
    /// non-string keys).
    pub fn of<P: serde::Serialize + ?Sized>(payload: &P) -> Result<Self, serde_json::Error> {
        let mut hasher = HashWriter(Sha256::new());
        serde_json::to_writer(&mut hasher, payload)?;
        Ok(Fingerprint(hasher.0.finalize().into()))
    }

    /// A fingerprint from its 32 bytes, as stored in the database.
    ///
    /// ```
    /// # use prost_db::idempotency::Fingerprint;
    /// let f = Fingerprint::of("x").unwrap();
    /// assert_eq!(Fingerprint::from_bytes(*f.as_bytes()), f);
    /// ```
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Fingerprint(bytes)
    }

    /// The 32 bytes.
    ///
    /// ```
    /// # use prost_db::idempotency::Fingerprint;
    /// assert_eq!(Fingerprint::of(&1).unwrap().as_bytes().len(), 32);
    /// ```
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint(")?;
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "..)")
    }
}

struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
