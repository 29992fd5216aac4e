//! Batch mode: many events of one action in one transaction, claimed by one statement.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::types::Json;

mod claims;

use self::claims::Claims;
use super::chained::Held;
use super::key::{EventId, IdempotencyKey};
use super::record::{Entry, StoredRecord, sql};
use super::runtime::{ErrorPolicy, Job, ResultCodec, execute};
use super::store::TxLease;
use super::{Fingerprint, HandlerError, IdempotencyStore, Outcome};
use crate::error::{Error, Result};

/// Claims every key of the batch at once, in key order (so that two batches sharing keys
/// take them in the same order and cannot deadlock on them): 1 row per key claimed now.
/// A key a twin holds uncommitted makes it wait, as the single claim does.
const CLAIM_ALL: &str = "INSERT INTO {schema}.idempotency_records \
     (event_id, service_name, action, payload_hash) \
     SELECT k, $2, $3, h FROM unnest($1::text[], $4::bytea[]) AS t(k, h) ORDER BY k \
     ON CONFLICT (event_id, service_name, action) DO NOTHING \
     RETURNING event_id";

/// Reads the committed records of the keys not claimed.
const SELECT_ALL: &str = "SELECT event_id, payload_hash, result, permanent_error, created_at \
     FROM {schema}.idempotency_records \
     WHERE event_id = ANY($1::text[]) AND service_name = $2 AND action = $3";

/// Writes the results that are not `null`, one statement for the batch.
const COMPLETE_ALL: &str = "UPDATE {schema}.idempotency_records AS r \
     SET result = t.v::jsonb, permanent_error = false \
     FROM unnest($1::text[], $4::text[]) AS t(k, v) \
     WHERE r.event_id = t.k AND r.service_name = $2 AND r.action = $3";

#[derive(sqlx::FromRow)]
struct Row {
    event_id: String,
    payload_hash: Option<Vec<u8>>,
    result: Option<Json<serde_json::Value>>,
    permanent_error: bool,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl IdempotencyStore {
    /// Runs `body` once per key of `items` (keys and payloads of one action), in one
    /// transaction: `BEGIN ...`, one claim for every key
    /// (`INSERT ... SELECT FROM unnest($1::text[], ...) ORDER BY 1 ON CONFLICT DO NOTHING
    /// RETURNING event_id`), the bodies of the claimed keys, one `SELECT` of the records of
    /// those already taken (for their replay), one `UPDATE ... FROM unnest(...)` of the
    /// results that are not `null`, and one `COMMIT`. A new event whose body sends one
    /// statement costs one round trip plus a share of four; in a transaction of its own it
    /// costs four or five. The transaction is that of the `Db`'s
    /// [`HandlerMode`](super::HandlerMode).
    ///
    /// A key twice in `items` runs once; its later items replay the first one's result
    /// (after the same fingerprint check as any duplicate). If any body fails, or the
    /// batch's database work does (a lock timeout, a deadlock with another batch), the
    /// batch rolls back and every item runs again on its own, as
    /// [`run`](Self::run) runs it: one poison event costs one batch, never an effect twice
    /// or a lost one. Results come back in the order of `items`.
    ///
    /// ```no_run
    /// # async fn f(store: &prost_db::idempotency::IdempotencyStore) -> Result<(), Box<dyn std::error::Error>> {
    /// let orders = vec![("order-7", 7_i64), ("order-8", 8)];
    /// let outcomes = store
    ///     .run_batch("ship", &orders, |mut tx, &(_, order)| async move {
    ///         let tx: &mut prost_db::idempotency::Tx = &mut tx;
    ///         sqlx::query("UPDATE orders SET shipped = true WHERE id = $1")
    ///             .bind(order)
    ///             .execute(&mut **tx)
    ///             .await
    ///             .map(|done| done.rows_affected())
    ///     })
    ///     .await;
    /// for outcome in outcomes {
    ///     println!("{:?}", outcome?);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn run_batch<'a, K, P, T, E, F, Fut>(
        &self,
        action: &str,
        items: &'a [(K, P)],
        body: F,
    ) -> Vec<Result<Outcome<T>, HandlerError<E>>>
    where
        K: IdempotencyKey,
        P: Serialize,
        T: Serialize + DeserializeOwned,
        F: FnMut(TxLease, &'a (K, P)) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let keys = items.iter().map(|(k, _)| k.to_key().into_owned()).collect();
        let fingerprints = items.iter().map(|(_, p)| Fingerprint::of(p)).collect();
        self.run_keyed(action, items, keys, fingerprints, no_prepare(), body)
            .await
            .results
    }

    /// Runs `body` once per event of `events` (events of one action), in one transaction,
    /// as [`run_batch`](Self::run_batch) does, keyed and fingerprinted as an
    /// [`#[idempotent_handler]`](crate::idempotent_handler) keys the same event: by its
    /// [`EventId::event_id`], with its [`EventId::fingerprint`]. So an event handled in a
    /// batch is a duplicate to the same action run one at a time, and the other way round.
    /// The RabbitMQ consumer's batch mode runs its batches through this.
    ///
    /// ```no_run
    /// use prost_db::events::Event;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct OrderShipped { order_id: i64 }
    /// # async fn f(store: &prost_db::idempotency::IdempotencyStore, events: Vec<Event<OrderShipped>>) -> Result<(), Box<dyn std::error::Error>> {
    /// let outcomes = store
    ///     .run_batch_events("ship", &events, |mut tx, event| async move {
    ///         let tx: &mut prost_db::idempotency::Tx = &mut tx;
    ///         sqlx::query("UPDATE orders SET shipped = true WHERE id = $1")
    ///             .bind(event.payload.order_id)
    ///             .execute(&mut **tx)
    ///             .await
    ///             .map(|done| done.rows_affected())
    ///     })
    ///     .await;
    /// assert_eq!(outcomes.len(), events.len());
    /// # Ok(()) }
    /// ```
    pub async fn run_batch_events<'a, V, T, E, F, Fut>(
        &self,
        action: &str,
        events: &'a [V],
        body: F,
    ) -> Vec<Result<Outcome<T>, HandlerError<E>>>
    where
        V: EventId,
        T: Serialize + DeserializeOwned,
        F: FnMut(TxLease, &'a V) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_batch_events_reporting(action, events, no_prepare(), body)
            .await
            .results
    }

    /// Runs a batch of `events` as [`run_batch_events`](Self::run_batch_events) does, with
    /// one step more: `prepare` runs once on the batch's transaction, right after the claim
    /// and before any body, with the events claimed now (in the order of `events`; not the
    /// duplicates, nor a repeat of a key within the batch). It is where a batch takes its
    /// locks in one order: bodies that lock rows in the order their events arrived make two
    /// concurrent batches deadlock (and fall back to one event at a time), and a consumer's
    /// batch arrives in the broker's order, not one the service chose. Lock every row the
    /// batch's bodies will touch, sorted, and the bodies' own locks are then held already.
    ///
    /// If `prepare` fails, the batch rolls back and its events run one at a time, as for a
    /// failing body. It does not run when no event is claimed (all duplicates), nor for a
    /// batch of one or the one-at-a-time runs after a rollback, which run as
    /// [`run`](Self::run) runs an event: so it may only take locks or read ahead, never
    /// write what a body relies on.
    ///
    /// ```no_run
    /// use prost_db::events::Event;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct OrderShipped { order_id: i64 }
    /// # async fn f(store: &prost_db::idempotency::IdempotencyStore, events: Vec<Event<OrderShipped>>) -> Result<(), Box<dyn std::error::Error>> {
    /// let outcomes = store
    ///     .run_batch_events_prepared(
    ///         "ship",
    ///         &events,
    ///         |mut tx, claimed| async move {
    ///             let tx: &mut prost_db::idempotency::Tx = &mut tx;
    ///             let ids: Vec<i64> = claimed.iter().map(|e| e.payload.order_id).collect();
    ///             sqlx::query("SELECT id FROM orders WHERE id = ANY($1) ORDER BY id FOR UPDATE")
    ///                 .bind(&ids)
    ///                 .execute(&mut **tx)
    ///                 .await
    ///                 .map(drop)
    ///         },
    ///         |mut tx, event| async move {
    ///             let tx: &mut prost_db::idempotency::Tx = &mut tx;
    ///             sqlx::query("UPDATE orders SET shipped = true WHERE id = $1")
    ///                 .bind(event.payload.order_id)
    ///                 .execute(&mut **tx)
    ///                 .await
    ///                 .map(|done| done.rows_affected())
    ///         },
    ///     )
    ///     .await;
    /// assert_eq!(outcomes.len(), events.len());
    /// # Ok(()) }
    /// ```
    pub async fn run_batch_events_prepared<'a, V, Pr, PFut, PE, T, E, F, Fut>(
        &self,
        action: &str,
        events: &'a [V],
        prepare: Pr,
        body: F,
    ) -> Vec<Result<Outcome<T>, HandlerError<E>>>
    where
        V: EventId,
        Pr: FnOnce(TxLease, Vec<&'a V>) -> PFut,
        PFut: Future<Output = Result<(), PE>>,
        PE: std::fmt::Display,
        T: Serialize + DeserializeOwned,
        F: FnMut(TxLease, &'a V) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_batch_events_reporting(action, events, Some(prepare), body)
            .await
            .results
    }

    /// [`run_batch_events_prepared`](Self::run_batch_events_prepared), also saying whether
    /// the batch fell back to one event at a time (for the consumer's metric).
    pub(crate) async fn run_batch_events_reporting<'a, V, Pr, PFut, PE, T, E, F, Fut>(
        &self,
        action: &str,
        events: &'a [V],
        prepare: Option<Pr>,
        body: F,
    ) -> BatchRun<T, E>
    where
        V: EventId,
        Pr: FnOnce(TxLease, Vec<&'a V>) -> PFut,
        PFut: Future<Output = Result<(), PE>>,
        PE: std::fmt::Display,
        T: Serialize + DeserializeOwned,
        F: FnMut(TxLease, &'a V) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let keys = events
            .iter()
            .map(|event| event.event_id().to_key().into_owned())
            .collect();
        let fingerprints = events.iter().map(EventId::fingerprint).collect();
        self.run_keyed(action, events, keys, fingerprints, prepare, body)
            .await
    }

    /// The batch of `items`, the key and fingerprint of each given.
    async fn run_keyed<'a, I, Pr, PFut, PE, T, E, F, Fut>(
        &self,
        action: &str,
        items: &'a [I],
        keys: Vec<String>,
        fingerprints: Vec<std::result::Result<Fingerprint, serde_json::Error>>,
        prepare: Option<Pr>,
        mut body: F,
    ) -> BatchRun<T, E>
    where
        Pr: FnOnce(TxLease, Vec<&'a I>) -> PFut,
        PFut: Future<Output = Result<(), PE>>,
        PE: std::fmt::Display,
        T: Serialize + DeserializeOwned,
        F: FnMut(TxLease, &'a I) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut results: Vec<Option<Result<Outcome<T>, HandlerError<E>>>> =
            (0..items.len()).map(|_| None).collect();
        let mut ready = Vec::new();
        for (i, fingerprint) in fingerprints.into_iter().enumerate() {
            match fingerprint {
                Ok(fingerprint) => ready.push((i, fingerprint)),
                Err(source) => {
                    results[i] = Some(Err(HandlerError::Codec {
                        event_id: keys[i].clone(),
                        action: action.to_owned(),
                        source,
                    }));
                }
            }
        }

        let batch = Batch {
            store: self,
            action,
            keys: &keys,
        };
        if let [(i, fingerprint)] = ready[..] {
            // A batch of one is a transaction of its own, as `run` runs it.
            let job = batch.job(i, Some(fingerprint));
            let item = &items[i];
            results[i] = Some(execute(job, |lease| body(lease, item)).await);
            return BatchRun {
                results: results.into_iter().flatten().collect(),
                fell_back: false,
            };
        }
        let outcome = batch.attempt(&ready, items, prepare, &mut body).await;
        let fell_back = outcome.is_err();
        match outcome {
            Ok(done) => {
                for (i, result) in done {
                    results[i] = Some(result);
                }
            }
            Err(error) => {
                tracing::warn!(%error, items = ready.len(), "batch rolled back; running its events one at a time");
                for &(i, fingerprint) in &ready {
                    let job = batch.job(i, Some(fingerprint));
                    let item = &items[i];
                    results[i] = Some(execute(job, |lease| body(lease, item)).await);
                }
            }
        }
        // Every item has a result: its codec error, its batch's, or its own run's.
        let results: Vec<_> = results.into_iter().flatten().collect();
        debug_assert_eq!(results.len(), items.len());
        BatchRun { results, fell_back }
    }
}

/// A batch's results, in the order of its items, and whether it rolled back and ran its
/// items one at a time.
pub(crate) struct BatchRun<T, E> {
    pub(crate) results: Vec<Result<Outcome<T>, HandlerError<E>>>,
    pub(crate) fell_back: bool,
}

/// The type of "no prepare step".
type NoPrepare<'a, I> =
    fn(TxLease, Vec<&'a I>) -> std::future::Ready<Result<(), std::convert::Infallible>>;

fn no_prepare<'a, I>() -> Option<NoPrepare<'a, I>> {
    None
}

/// One batch of one action of one store.
struct Batch<'s> {
    store: &'s IdempotencyStore,
    action: &'s str,
    keys: &'s [String],
}

/// Why a batch is retried one event at a time.
enum Abandoned {
    Database(Error),
    Prepare(String),
    Body,
}

impl std::fmt::Display for Abandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Abandoned::Database(error) => error.fmt(f),
            Abandoned::Prepare(error) => write!(f, "the batch's prepare step failed: {error}"),
            Abandoned::Body => f.write_str("a body failed"),
        }
    }
}

impl From<Error> for Abandoned {
    fn from(error: Error) -> Self {
        Abandoned::Database(error)
    }
}

type Done<T, E> = Vec<(usize, Result<Outcome<T>, HandlerError<E>>)>;

impl<'s> Batch<'s> {
    fn job<T: Serialize + DeserializeOwned, E>(
        &self,
        i: usize,
        fingerprint: Option<Fingerprint>,
    ) -> Job<'s, T, E> {
        Job {
            entry: Entry {
                db: self.store.db(),
                service: self.store.service(),
                action: self.action,
                key: &self.keys[i],
            },
            fingerprint,
            lock_timeout: self.store.lock_timeout(),
            codec: ResultCodec::json(),
            policy: ErrorPolicy::never(),
        }
    }

    /// The batch in one transaction; `Err` if it rolled back.
    async fn attempt<'a, I, Pr, PFut, PE, T, E, F, Fut>(
        &self,
        ready: &[(usize, Fingerprint)],
        items: &'a [I],
        prepare: Option<Pr>,
        body: &mut F,
    ) -> std::result::Result<Done<T, E>, Abandoned>
    where
        Pr: FnOnce(TxLease, Vec<&'a I>) -> PFut,
        PFut: Future<Output = std::result::Result<(), PE>>,
        PE: std::fmt::Display,
        T: Serialize + DeserializeOwned,
        F: FnMut(TxLease, &'a I) -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let db = self.store.db();
        let (service, action) = (self.store.service(), self.action);
        let mut held = Held::begin(db, self.store.lock_timeout()).await?;
        let claims = Claims::new(self.keys, ready);

        let rows: Vec<String> = db
            .query_scalar(sql(CLAIM_ALL, db))
            .bind(&claims.keys)
            .bind(service)
            .bind(action)
            .bind(&claims.hashes)
            .fetch_all(&mut **held.tx())
            .await
            .map_err(|e| db.map_err(e))?;
        let mut claimed = vec![false; claims.keys.len()];
        for key in &rows {
            if let Some(k) = claims.find(key) {
                claimed[k] = true;
            }
        }
        let mut records: Vec<Option<StoredRecord>> = vec![None; claims.keys.len()];
        let taken: Vec<&str> = claims
            .keys
            .iter()
            .zip(&claimed)
            .filter(|&(_, &claimed)| !claimed)
            .map(|(&key, _)| key)
            .collect();
        if !taken.is_empty() {
            let rows: Vec<Row> = db
                .query_as(sql(SELECT_ALL, db))
                .bind(&taken)
                .bind(service)
                .bind(action)
                .fetch_all(&mut **held.tx())
                .await
                .map_err(|e| db.map_err(e))?;
            for row in rows {
                if let Some(k) = claims.find(&row.event_id) {
                    records[k] = Some(stored(
                        row.payload_hash,
                        row.result,
                        row.permanent_error,
                        row.created_at,
                    ));
                }
            }
        }

        if let Some(prepare) = prepare {
            // The leaders claimed now, in the order of `items`.
            let leaders: Vec<&'a I> = (0..ready.len())
                .filter(|&r| {
                    let k = claims.slot[r];
                    claimed[k] && claims.leader[k] == r
                })
                .map(|r| &items[ready[r].0])
                .collect();
            if !leaders.is_empty() {
                let prepared;
                (held, prepared) = lend(held, "the batch's prepare step", |lease| {
                    prepare(lease, leaders)
                })
                .await?;
                if let Err(error) = prepared {
                    held.rollback(db).await;
                    return Err(Abandoned::Prepare(error.to_string()));
                }
            }
        }

        let mut done: Done<T, E> = Vec::with_capacity(ready.len());
        // The result of a leader whose key repeats later in the batch, for the repeats.
        let mut fresh: Vec<Option<serde_json::Value>> = vec![None; claims.keys.len()];
        let mut complete_keys: Vec<&str> = Vec::new();
        let mut complete_values: Vec<String> = Vec::new();
        let mut tx_slot = Some(held);
        for (r, &(i, fingerprint)) in ready.iter().enumerate() {
            let k = claims.slot[r];
            let job = self.job::<T, E>(i, Some(fingerprint));
            if !claimed[k] {
                let record = if claims.repeated[k] {
                    records[k].clone()
                } else {
                    records[k].take()
                };
                done.push((i, job.replay(record.ok_or_else(|| job.entry.vanished())?)));
                continue;
            }
            let leader = claims.leader[k];
            if leader != r {
                // A repeat within the batch: the leader's record, as a duplicate reads it.
                let Some(json) = &fresh[k] else {
                    return Err(Abandoned::Body);
                };
                let record = stored(
                    Some(ready[leader].1.to_stored()),
                    Some(Json(json.clone())),
                    false,
                    chrono::Utc::now(),
                );
                done.push((i, job.replay(record)));
                continue;
            }
            let held = tx_slot.take().expect("the batch's transaction is back");
            let (held, result) =
                lend(held, "the handler's body", |lease| body(lease, &items[i])).await?;
            let Ok(value) = result else {
                held.rollback(db).await;
                return Err(Abandoned::Body);
            };
            let Ok(json) = job.encode(&value) else {
                held.rollback(db).await;
                return Err(Abandoned::Body);
            };
            if !json.is_null() {
                complete_keys.push(claims.keys[k]);
                complete_values.push(json.to_string());
            }
            if claims.repeated[k] {
                fresh[k] = Some(json);
            }
            done.push((i, Ok(Outcome::Processed(value))));
            tx_slot = Some(held);
        }
        let mut held = tx_slot.expect("the batch's transaction is back");
        if !complete_keys.is_empty() {
            db.query(sql(COMPLETE_ALL, db))
                .bind(&complete_keys)
                .bind(service)
                .bind(action)
                .bind(&complete_values)
                .execute(&mut **held.tx())
                .await
                .map_err(|e| db.map_err(e))?;
        }
        held.commit(db).await?;
        Ok(done)
    }
}

/// Lends the batch's transaction to `f` (a body, or the prepare step: `what`), and takes it
/// back when `f`'s lease is dropped.
async fn lend<R, Fut: Future<Output = R>>(
    held: Held,
    what: &str,
    f: impl FnOnce(TxLease) -> Fut,
) -> std::result::Result<(Held, R), Abandoned> {
    let (tx, parked) = held.park();
    let (lease, returned) = TxLease::lend(tx);
    let result = f(lease).await;
    let Some(tx) = returned.take() else {
        return Err(Abandoned::Database(Error::Config(format!(
            "{what} kept its transaction"
        ))));
    };
    Ok((parked.resume(tx), result))
}

fn stored(
    payload_hash: Option<Vec<u8>>,
    result: Option<Json<serde_json::Value>>,
    permanent_error: bool,
    created_at: chrono::DateTime<chrono::Utc>,
) -> StoredRecord {
    StoredRecord {
        fingerprint: payload_hash.as_deref().and_then(Fingerprint::from_stored),
        result: result.map(|Json(value)| value),
        permanent_error,
        created_at,
    }
}
