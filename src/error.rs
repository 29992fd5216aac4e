//! The shop's error type, and how a consumer should treat each error.

use prost_db::amqp::DeliveryError;
use prost_db::idempotency::HandlerError;
use prost_db::saga::SagaError;

/// What a step of the shop can fail with.
///
/// ```
/// use prost_shop::error::ShopError;
/// let e = ShopError::Invalid("cart 7 is empty".into());
/// assert_eq!(e.to_string(), "invalid: cart 7 is empty");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ShopError {
    /// The database (or the outbox) failed.
    #[error(transparent)]
    Db(Box<prost_db::Error>),
    /// The saga store refused: a conflict (run the step again) or a bug.
    #[error(transparent)]
    Saga(#[from] SagaError),
    /// The request or event cannot be served, however often it is retried.
    #[error("invalid: {0}")]
    Invalid(String),
}

impl From<prost_db::Error> for ShopError {
    fn from(error: prost_db::Error) -> Self {
        ShopError::Db(Box::new(error))
    }
}

impl From<sqlx::Error> for ShopError {
    fn from(error: sqlx::Error) -> Self {
        ShopError::from(prost_db::Error::Database(error))
    }
}

impl ShopError {
    /// Whether this is the saga store's optimistic-concurrency conflict.
    ///
    /// ```
    /// use prost_shop::error::ShopError;
    /// assert!(!ShopError::Invalid("x".into()).is_conflict());
    /// ```
    pub fn is_conflict(&self) -> bool {
        matches!(self, ShopError::Saga(e) if e.is_conflict())
    }
}

impl From<ShopError> for DeliveryError {
    fn from(error: ShopError) -> Self {
        match error {
            ShopError::Db(e) => DeliveryError::from(*e),
            ShopError::Saga(e) => DeliveryError::from(e),
            invalid @ ShopError::Invalid(_) => DeliveryError::permanent(invalid),
        }
    }
}

/// Classifies an idempotent handler's error for the consumer: the body's own errors by
/// their cause (a lost connection or a saga conflict is retried, a bad event is
/// dead-lettered), the runtime's as the runtime says.
///
/// ```
/// use prost_db::idempotency::HandlerError;
/// use prost_shop::error::{ShopError, delivery_error};
/// let e = delivery_error(HandlerError::Failed(ShopError::Invalid("no lines".into())));
/// assert!(!e.is_transient());
/// ```
pub fn delivery_error(error: HandlerError<ShopError>) -> DeliveryError {
    match error {
        HandlerError::Failed(e) => DeliveryError::from(e),
        other => DeliveryError::from(other),
    }
}

/// Runs `step` again while it fails with a saga conflict, up to `attempts` times, with a
/// short random pause: the step rolled back, and its next run reads what the winner did.
/// Conflicts beyond that go to the consumer, which retries through the retry queue.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use prost_shop::error::{ShopError, retry_conflicts};
/// let mut runs = 0;
/// let result: Result<u8, ShopError> = retry_conflicts(3, || { runs += 1; async { Ok(7) } }).await;
/// assert_eq!(result.unwrap(), 7);
/// assert_eq!(runs, 1);
/// # }
/// ```
pub async fn retry_conflicts<T, E, F, Fut>(attempts: u32, mut step: F) -> Result<T, E>
where
    E: IsConflict,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match step().await {
            Err(e) if e.is_conflict() && attempt < attempts => {
                attempt += 1;
                let pause = 1 + (uuid::Uuid::new_v4().as_u128() % 5) as u64 * u64::from(attempt);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            other => return other,
        }
    }
}

/// Errors that can be a saga conflict, for [`retry_conflicts`].
///
/// ```
/// use prost_shop::error::{IsConflict, ShopError};
/// assert!(!ShopError::Invalid("x".into()).is_conflict());
/// ```
pub trait IsConflict {
    /// Whether the error is a saga conflict.
    fn is_conflict(&self) -> bool;
}

impl IsConflict for ShopError {
    fn is_conflict(&self) -> bool {
        ShopError::is_conflict(self)
    }
}

impl IsConflict for HandlerError<ShopError> {
    fn is_conflict(&self) -> bool {
        matches!(self, HandlerError::Failed(e) if e.is_conflict())
    }
}
