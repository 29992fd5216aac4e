//! The check-process-record transaction, and the hidden API `#[idempotent_handler]`
//! expands to (re-exported in `__private`; not public API).

use std::borrow::Cow;
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::error::{HandlerError, PermanentError};
use super::key::{EventId, IdempotencyKey};
use super::record::{Claim, Entry, StoredRecord};
use super::store::{DEFAULT_LOCK_TIMEOUT, TxLease, begin};
use super::{Fingerprint, Outcome};
use crate::pool::Db;

/// One delivery to run: the record it claims, the fingerprint a duplicate must match, and
/// how long to wait for a twin.
pub(super) struct Job<'a> {
    pub entry: Entry<'a>,
    pub fingerprint: Option<Fingerprint>,
    pub lock_timeout: Duration,
}

/// Runs `body` once per key, in a span with the event id, action, service and outcome.
pub(super) async fn execute<P, T, E, F, Fut>(
    job: Job<'_>,
    body: F,
) -> Result<Outcome<T>, HandlerError<E>>
where
    P: ErrorPolicy<E>,
    T: StoredResult,
    F: FnOnce(TxLease) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let span = tracing::info_span!(
        "prost_db.idempotent_handler",
        event_id = job.entry.key,
        action = job.entry.action,
        service = job.entry.service,
        outcome = tracing::field::Empty,
    );
    let result = job
        .execute::<P, T, E, F, Fut>(body)
        .instrument(span.clone())
        .await;
    let outcome = match &result {
        Ok(outcome) => outcome.as_str(),
        Err(error) => error.kind(),
    };
    span.record("outcome", outcome);
    result
}

impl Job<'_> {
    async fn execute<P, T, E, F, Fut>(&self, body: F) -> Result<Outcome<T>, HandlerError<E>>
    where
        P: ErrorPolicy<E>,
        T: StoredResult,
        F: FnOnce(TxLease) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let entry = &self.entry;
        let mut tx = begin(entry.db, self.lock_timeout).await?;
        let claim = entry
            .claim(&mut tx, self.fingerprint, self.lock_timeout)
            .await?;
        if let Claim::Duplicate(record) = claim {
            // Nothing was written: the rollback is queued, and sqlx sends it when the
            // connection goes back to the pool, off this delivery's path.
            drop(tx);
            return self.replay::<P, T, E>(record);
        }

        let (lease, returned) = TxLease::lend(tx);
        let result = body(lease).await;
        // The body's future has completed, and dropped the lease with its captures.
        let Some(mut tx) = returned.take() else {
            return Err(HandlerError::Database(crate::Error::Config(
                "the handler's body kept its transaction".to_owned(),
            )));
        };
        let error = match result {
            Ok(value) => {
                let json = value.to_json().map_err(|e| self.codec(e))?;
                // The claim already stores NULL, which is what `()` and `None` replay from.
                if !json.is_null() {
                    entry.complete(&mut tx, &json).await?;
                }
                tx.commit().await.map_err(|e| entry.db.map_err(e))?;
                return Ok(Outcome::Processed(value));
            }
            Err(error) => error,
        };
        // A failed connection has rolled back already.
        tx.rollback().await.ok();

        // This delivery held the claim, so no twin can have committed: a transient error
        // is simply returned, and a permanent one is recorded in a transaction of its own
        // (unless a twin that claimed after the rollback got there first).
        let json = match P::record(&error) {
            None => return Err(HandlerError::Failed(error)),
            Some(Err(e)) => return Err(self.codec(e)),
            Some(Ok(json)) => json,
        };
        let mut tx = begin(entry.db, self.lock_timeout).await?;
        if entry.insert(&mut tx, self.fingerprint, &json, true).await? {
            tx.commit().await.map_err(|e| entry.db.map_err(e))?;
            return Err(HandlerError::Permanent {
                error,
                replayed: false,
            });
        }
        let record = entry.select(&mut *tx).await?;
        drop(tx);
        match record {
            Some(record) => self.replay::<P, T, E>(record),
            None => Err(HandlerError::Database(entry.vanished())),
        }
    }

    /// A duplicate's outcome from the first delivery's record. The fingerprints are
    /// compared only when both deliveries have one.
    #[allow(clippy::result_large_err)] // the error is the handler's, returned once per delivery
    fn replay<P, T, E>(&self, record: StoredRecord) -> Result<Outcome<T>, HandlerError<E>>
    where
        P: ErrorPolicy<E>,
        T: StoredResult,
    {
        if let (Some(stored), Some(this)) = (record.fingerprint, self.fingerprint)
            && stored != this
        {
            return Err(HandlerError::PayloadMismatch {
                event_id: self.entry.key.to_owned(),
                action: self.entry.action.to_owned(),
            });
        }
        let value = record.result.unwrap_or(serde_json::Value::Null);
        if record.permanent_error {
            let error = P::replay(value).map_err(|e| self.codec(e))?;
            return Err(HandlerError::Permanent {
                error,
                replayed: true,
            });
        }
        T::from_json(value)
            .map(Outcome::Duplicate)
            .map_err(|e| self.codec(e))
    }

    fn codec<E>(&self, source: serde_json::Error) -> HandlerError<E> {
        codec(self.entry.key, self.entry.action, source)
    }
}

fn codec<E>(key: &str, action: &str, source: serde_json::Error) -> HandlerError<E> {
    HandlerError::Codec {
        event_id: key.to_owned(),
        action: action.to_owned(),
        source,
    }
}

/// Not public API: a handler's result, stored as JSON and replayed to duplicates.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an idempotent handler's result",
    label = "the handler's result type",
    note = "the result is stored as JSON and replayed to duplicates: derive `serde::Serialize` and `serde::Deserialize` for `{Self}`"
)]
pub trait StoredResult: Sized {
    /// The JSON stored in the record.
    fn to_json(&self) -> Result<serde_json::Value, serde_json::Error>;
    /// The result replayed from the record.
    fn from_json(value: serde_json::Value) -> Result<Self, serde_json::Error>;
}

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> StoredResult for T {
    fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }

    fn from_json(value: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(value)
    }
}

/// Not public API: the success and error types of a handler's declared return type.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "an idempotent handler must return `Result<T, E>`, not `{Self}`"
)]
pub trait HandlerResult {
    /// `T`.
    type Ok;
    /// `E`.
    type Err;
    /// The result as a `Result`.
    fn into_result(self) -> Result<Self::Ok, Self::Err>;
}

impl<T, E> HandlerResult for Result<T, E> {
    type Ok = T;
    type Err = E;
    fn into_result(self) -> Self {
        self
    }
}

/// Not public API: whether a handler records permanent errors.
#[doc(hidden)]
pub trait ErrorPolicy<E> {
    /// `Some` if `error` is to be recorded as the final result.
    fn record(error: &E) -> Option<Result<serde_json::Value, serde_json::Error>>;
    /// Decodes a recorded error.
    fn replay(value: serde_json::Value) -> Result<E, serde_json::Error>;
}

/// Not public API: errors always roll back.
#[doc(hidden)]
#[derive(Debug)]
pub enum NeverRecord {}

impl<E> ErrorPolicy<E> for NeverRecord {
    fn record(_: &E) -> Option<Result<serde_json::Value, serde_json::Error>> {
        None
    }

    fn replay(_: serde_json::Value) -> Result<E, serde_json::Error> {
        Err(serde::de::Error::custom(
            "the record holds a permanent error but this handler does not declare `permanent_errors`",
        ))
    }
}

/// Not public API: errors marked permanent are recorded.
#[doc(hidden)]
#[derive(Debug)]
pub enum RecordPermanent {}

impl<E: PermanentError> ErrorPolicy<E> for RecordPermanent {
    fn record(error: &E) -> Option<Result<serde_json::Value, serde_json::Error>> {
        error.is_permanent().then(|| serde_json::to_value(error))
    }

    fn replay(value: serde_json::Value) -> Result<E, serde_json::Error> {
        serde_json::from_value(value)
    }
}

/// Not public API: a handler's configuration, built by the expansion.
#[doc(hidden)]
#[derive(Debug)]
pub struct Handler<'a, P = NeverRecord> {
    action: Cow<'static, str>,
    service: Option<&'a str>,
    lock_timeout: Option<Duration>,
    policy: PhantomData<fn() -> P>,
}

impl Handler<'static> {
    /// A handler recording under `action`.
    pub fn new(action: &'static str) -> Self {
        Handler {
            action: Cow::Borrowed(action),
            service: None,
            lock_timeout: None,
            policy: PhantomData,
        }
    }

    /// The free fn `name` of `module`: its action is `module::name`.
    pub fn free(module: &'static str, name: &'static str) -> Self {
        Handler {
            action: Cow::Owned(format!("{module}::{name}")),
            ..Handler::new("")
        }
    }

    /// The handler `name`, a method of `S` written in `module`: its action is
    /// `module::Type::name`, with `S`'s name as [`method_action`] spells it.
    pub fn method<S: ?Sized>(module: &'static str, name: &'static str) -> Self {
        Handler {
            action: Cow::Owned(method_action::<S>(module, name)),
            ..Handler::new("")
        }
    }
}

impl<'a, P> Handler<'a, P> {
    /// Records errors that `PermanentError::is_permanent` marks.
    pub fn permanent_errors(self) -> Handler<'a, RecordPermanent> {
        Handler {
            action: self.action,
            service: self.service,
            lock_timeout: self.lock_timeout,
            policy: PhantomData,
        }
    }

    /// Records under `service` instead of the `Db`'s service name.
    pub fn service<'b>(self, service: &'b str) -> Handler<'b, P>
    where
        'a: 'b,
    {
        Handler {
            service: Some(service),
            ..self
        }
    }

    /// Waits at most `ms` milliseconds for a twin or another lock.
    pub fn lock_timeout_ms(self, ms: u32) -> Self {
        Handler {
            lock_timeout: Some(Duration::from_millis(u64::from(ms))),
            ..self
        }
    }

    /// Keyed by the event's id, fingerprinted as the event says.
    pub fn event<E: EventId + ?Sized>(self, event: &E) -> Keyed<'a, P> {
        Keyed {
            key: event.event_id().to_key().into_owned(),
            fingerprint: event.fingerprint().map(Some),
            handler: self,
        }
    }

    /// Keyed by a business key, with no fingerprint unless one is named.
    pub fn key<K: IdempotencyKey + ?Sized>(self, key: &K) -> Keyed<'a, P> {
        Keyed {
            key: key.to_key().into_owned(),
            fingerprint: Ok(None),
            handler: self,
        }
    }
}

/// Not public API: a handler with the key and fingerprint of one delivery.
#[doc(hidden)]
#[derive(Debug)]
pub struct Keyed<'a, P> {
    handler: Handler<'a, P>,
    key: String,
    fingerprint: Result<Option<Fingerprint>, serde_json::Error>,
}

impl<P> Keyed<'_, P> {
    /// Fingerprints `payload` instead.
    #[must_use]
    pub fn fingerprint<F: Serialize + ?Sized>(self, payload: &F) -> Self {
        Keyed {
            fingerprint: Fingerprint::of(payload).map(Some),
            ..self
        }
    }

    /// Runs the body once per key. `R`, the handler's declared return type, is named so
    /// that `?` and `return` in the body see it.
    ///
    /// # Errors
    ///
    /// See [`HandlerError`].
    pub async fn run<R, Fut>(
        self,
        db: &Db,
        body: impl FnOnce(TxLease) -> Fut,
    ) -> Result<Outcome<R::Ok>, HandlerError<R::Err>>
    where
        R: HandlerResult,
        R::Ok: StoredResult,
        P: ErrorPolicy<R::Err>,
        Fut: Future<Output = R>,
    {
        let Keyed {
            handler,
            key,
            fingerprint,
        } = self;
        let fingerprint = fingerprint.map_err(|e| codec(&key, &handler.action, e))?;
        let job = Job {
            entry: Entry {
                db,
                service: handler.service.unwrap_or(db.service()),
                action: &handler.action,
                key: &key,
            },
            fingerprint,
            lock_timeout: handler.lock_timeout.unwrap_or(DEFAULT_LOCK_TIMEOUT),
        };
        let body = move |lease| async move { body(lease).await.into_result() };
        execute::<P, R::Ok, R::Err, _, _>(job, body).await
    }
}

/// The default action of a method `name` of `S`, written in `module`:
/// `module::Type::name`, where `Type` is the last segment of `S`'s type name without its
/// generic arguments. The type name is `std::any::type_name`'s, whose text rustc does not
/// promise to keep; a unit test pins it, so a toolchain that spells it differently fails
/// the build's tests before it can change a stored action.
pub(crate) fn method_action<S: ?Sized>(module: &str, name: &str) -> String {
    let full = std::any::type_name::<S>();
    let path = full.split('<').next().unwrap_or(full);
    let last = path.rsplit("::").next().unwrap_or(path);
    let plain = !last.is_empty() && last.chars().all(|c| c.is_alphanumeric() || c == '_');
    let ty = if plain { last } else { full };
    format!("{module}::{ty}::{name}")
}

#[cfg(test)]
mod tests {
    use super::method_action;

    struct Billing;
    #[allow(dead_code)]
    struct Repo<T>(T);

    mod nested {
        pub struct Shipping;
    }

    #[test]
    fn a_method_action_names_the_module_the_type_and_the_method() {
        assert_eq!(
            method_action::<Billing>("shop::billing", "handle"),
            "shop::billing::Billing::handle"
        );
        assert_eq!(
            method_action::<nested::Shipping>("shop", "handle"),
            "shop::Shipping::handle"
        );
        assert_eq!(
            method_action::<Repo<Vec<String>>>("shop", "save"),
            "shop::Repo::save"
        );
        assert_eq!(
            method_action::<&Billing>("shop", "handle"),
            "shop::Billing::handle"
        );
        assert_eq!(method_action::<str>("shop", "handle"), "shop::str::handle");
        assert_eq!(
            method_action::<(Billing, u8)>("shop", "handle"),
            "shop::(prost_db::idempotency::runtime::tests::Billing, u8)::handle",
            "not a plain name: the whole type name"
        );
    }
}
