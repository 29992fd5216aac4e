//! The check-process-record transaction, and the hidden API `#[idempotent_handler]`
//! expands to (re-exported in `__private`; not public API).

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::chained::Held;
use super::error::{HandlerError, PermanentError};
use super::key::{EventId, IdempotencyKey};
use super::record::{Claim, Entry, StoredRecord};
use super::store::{DEFAULT_LOCK_TIMEOUT, TxLease};
use super::{Fingerprint, Outcome};
use crate::pool::Db;

/// One delivery to run: the record it claims, the fingerprint a duplicate must match, how
/// long to wait for a twin, how results are stored and which errors are recorded.
pub(super) struct Job<'a, T, E> {
    pub entry: Entry<'a>,
    pub fingerprint: Option<Fingerprint>,
    pub lock_timeout: Duration,
    pub codec: ResultCodec<T>,
    pub policy: ErrorPolicy<E>,
}

/// Runs `body` once per key, in a span with the event id, action, service and outcome.
pub(super) async fn execute<T, E, F, Fut>(
    job: Job<'_, T, E>,
    body: F,
) -> Result<Outcome<T>, HandlerError<E>>
where
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
    let result = job.execute(body).instrument(span.clone()).await;
    let outcome = match &result {
        Ok(outcome) => outcome.as_str(),
        Err(error) => error.kind(),
    };
    span.record("outcome", outcome);
    result
}

impl<T, E> Job<'_, T, E> {
    async fn execute<F, Fut>(&self, body: F) -> Result<Outcome<T>, HandlerError<E>>
    where
        F: FnOnce(TxLease) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let entry = &self.entry;
        let db = entry.db;
        let mut held = Held::begin(db, self.lock_timeout).await?;
        let claim = match entry
            .claim(held.tx(), self.fingerprint, self.lock_timeout)
            .await
        {
            Ok(claim) => claim,
            // A kept connection the server closed while idle: once more, on a new one.
            Err(error) => {
                held = held.recover(db, error).await?;
                entry
                    .claim(held.tx(), self.fingerprint, self.lock_timeout)
                    .await?
            }
        };
        if let Claim::Duplicate(record) = claim {
            // Nothing was written: the rollback is queued (or, chained, sent).
            held.release(db).await;
            return self.replay(record);
        }

        let (tx, parked) = held.park();
        let (lease, returned) = TxLease::lend(tx);
        let result = body(lease).await;
        // The body's future has completed, and dropped the lease with its captures.
        let Some(tx) = returned.take() else {
            return Err(HandlerError::Database(crate::Error::Config(
                "the handler's body kept its transaction".to_owned(),
            )));
        };
        let held = parked.resume(tx);
        let error = match result {
            Ok(value) => {
                let json = (self.codec.to_json)(&value).map_err(|e| self.codec_error(e))?;
                held.complete_and_commit(entry, &json).await?;
                return Ok(Outcome::Processed(value));
            }
            Err(error) => error,
        };
        held.rollback(db).await;

        // This delivery held the claim, so no twin can have committed: a transient error
        // is simply returned, and a permanent one is recorded in a transaction of its own
        // (unless a twin that claimed after the rollback got there first).
        let json = match (self.policy.record)(&error) {
            None => return Err(HandlerError::Failed(error)),
            Some(Err(e)) => return Err(self.codec_error(e)),
            Some(Ok(json)) => json,
        };
        let mut held = Held::begin(db, self.lock_timeout).await?;
        if entry
            .insert(held.tx(), self.fingerprint, &json, true)
            .await?
        {
            held.commit(db).await?;
            return Err(HandlerError::Permanent {
                error,
                replayed: false,
            });
        }
        let record = entry.select(&mut **held.tx()).await?;
        held.release(db).await;
        match record {
            Some(record) => self.replay(record),
            None => Err(HandlerError::Database(entry.vanished())),
        }
    }

    /// A duplicate's outcome from the first delivery's record. The fingerprints are
    /// compared only when both deliveries have one.
    #[allow(clippy::result_large_err)] // the error is the handler's, returned once per delivery
    pub(super) fn replay(&self, record: StoredRecord) -> Result<Outcome<T>, HandlerError<E>> {
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
            let error = (self.policy.replay)(value).map_err(|e| self.codec_error(e))?;
            return Err(HandlerError::Permanent {
                error,
                replayed: true,
            });
        }
        (self.codec.from_json)(value)
            .map(Outcome::Duplicate)
            .map_err(|e| self.codec_error(e))
    }

    /// The result as stored.
    #[allow(clippy::result_large_err)] // the error is the handler's, returned once per delivery
    pub(super) fn encode(&self, value: &T) -> Result<serde_json::Value, HandlerError<E>> {
        (self.codec.to_json)(value).map_err(|e| self.codec_error(e))
    }

    fn codec_error(&self, source: serde_json::Error) -> HandlerError<E> {
        codec_error(self.entry.key, self.entry.action, source)
    }
}

fn codec_error<E>(key: &str, action: &str, source: serde_json::Error) -> HandlerError<E> {
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
pub trait StoredResult: Serialize + DeserializeOwned {}

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> StoredResult for T {}

/// How a result is stored and replayed, taken where the result type is named, so that a
/// type that cannot be stored is one error, there.
pub(super) struct ResultCodec<T> {
    to_json: fn(&T) -> Result<serde_json::Value, serde_json::Error>,
    from_json: fn(serde_json::Value) -> Result<T, serde_json::Error>,
}

impl<T: StoredResult> ResultCodec<T> {
    pub(super) fn json() -> Self {
        ResultCodec {
            to_json: |value| serde_json::to_value(value),
            from_json: serde_json::from_value,
        }
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

/// Not public API: which errors a handler records as its final result: by default none
/// (every error rolls back); with `permanent_errors`, those that
/// `PermanentError::is_permanent` marks.
#[doc(hidden)]
pub struct ErrorPolicy<E> {
    /// `Some` if `error` is to be recorded.
    record: fn(&E) -> Option<Result<serde_json::Value, serde_json::Error>>,
    /// Decodes a recorded error.
    replay: fn(serde_json::Value) -> Result<E, serde_json::Error>,
}

impl<E> ErrorPolicy<E> {
    pub(super) fn never() -> Self {
        ErrorPolicy {
            record: |_| None,
            replay: |_| {
                Err(serde::de::Error::custom(
                    "the record holds a permanent error but this handler does not declare `permanent_errors`",
                ))
            },
        }
    }

    fn permanent() -> Self
    where
        E: PermanentError,
    {
        ErrorPolicy {
            record: |error| error.is_permanent().then(|| serde_json::to_value(error)),
            replay: serde_json::from_value,
        }
    }
}

/// Not public API: a handler's configuration, built by the expansion; `R` is its declared
/// return type.
#[doc(hidden)]
pub struct Handler<'a, R: HandlerResult> {
    action: Cow<'static, str>,
    service: Option<&'a str>,
    lock_timeout: Option<Duration>,
    codec: ResultCodec<R::Ok>,
    policy: ErrorPolicy<R::Err>,
}

/// Not public API: the handler recording under `action`. The expansion spans this call
/// at the handler's return type, where a result that cannot be stored is reported.
#[doc(hidden)]
pub fn named<R>(action: &'static str) -> Handler<'static, R>
where
    R: HandlerResult,
    R::Ok: StoredResult,
{
    Handler {
        action: Cow::Borrowed(action),
        service: None,
        lock_timeout: None,
        codec: ResultCodec::json(),
        policy: ErrorPolicy::never(),
    }
}

/// Not public API: the free fn `name` of `module`, recording under `module::name`.
#[doc(hidden)]
pub fn free_fn<R>(module: &'static str, name: &'static str) -> Handler<'static, R>
where
    R: HandlerResult,
    R::Ok: StoredResult,
{
    Handler {
        action: Cow::Owned(format!("{module}::{name}")),
        ..named("")
    }
}

/// Not public API: the method `name` of `S`, written in `module`, recording under
/// `module::Type::name` ([`method_action`]).
#[doc(hidden)]
pub fn method<R, S: ?Sized>(module: &'static str, name: &'static str) -> Handler<'static, R>
where
    R: HandlerResult,
    R::Ok: StoredResult,
{
    Handler {
        action: Cow::Owned(method_action::<S>(module, name)),
        ..named("")
    }
}

/// Not public API: records the errors that `PermanentError::is_permanent` marks. The
/// expansion spans this call at the handler's error type.
#[doc(hidden)]
pub fn permanent_errors<E: PermanentError>() -> ErrorPolicy<E> {
    ErrorPolicy::permanent()
}

impl<'a, R: HandlerResult> Handler<'a, R> {
    /// Records the errors `policy` marks.
    pub fn permanent_errors(self, policy: ErrorPolicy<R::Err>) -> Self {
        Handler { policy, ..self }
    }

    /// Records under `service` instead of the `Db`'s service name.
    pub fn service<'b>(self, service: &'b str) -> Handler<'b, R>
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
    pub fn event<V: EventId + ?Sized>(self, event: &V) -> Keyed<'a, R> {
        Keyed {
            key: event.event_id().to_key().into_owned(),
            fingerprint: event.fingerprint().map(Some),
            handler: self,
        }
    }

    /// Keyed by a business key, with no fingerprint unless one is named.
    pub fn key<K: IdempotencyKey + ?Sized>(self, key: &K) -> Keyed<'a, R> {
        Keyed {
            key: key.to_key().into_owned(),
            fingerprint: Ok(None),
            handler: self,
        }
    }
}

/// Not public API: a handler with the key and fingerprint of one delivery.
#[doc(hidden)]
pub struct Keyed<'a, R: HandlerResult> {
    handler: Handler<'a, R>,
    key: String,
    fingerprint: Result<Option<Fingerprint>, serde_json::Error>,
}

impl<R: HandlerResult> Keyed<'_, R> {
    /// Fingerprints `payload` instead.
    #[must_use]
    pub fn fingerprint<F: Serialize + ?Sized>(self, payload: &F) -> Self {
        Keyed {
            fingerprint: Fingerprint::of(payload).map(Some),
            ..self
        }
    }

    /// Runs the body once per key.
    ///
    /// # Errors
    ///
    /// See [`HandlerError`].
    pub async fn run<Fut>(
        self,
        db: &Db,
        body: impl FnOnce(TxLease) -> Fut,
    ) -> Result<Outcome<R::Ok>, HandlerError<R::Err>>
    where
        Fut: Future<Output = R>,
    {
        let Keyed {
            handler,
            key,
            fingerprint,
        } = self;
        let fingerprint = fingerprint.map_err(|e| codec_error(&key, &handler.action, e))?;
        let job = Job {
            entry: Entry {
                db,
                service: handler.service.unwrap_or(db.service()),
                action: &handler.action,
                key: &key,
            },
            fingerprint,
            lock_timeout: handler.lock_timeout.unwrap_or(DEFAULT_LOCK_TIMEOUT),
            codec: handler.codec,
            policy: handler.policy,
        };
        execute(
            job,
            move |lease| async move { body(lease).await.into_result() },
        )
        .await
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
