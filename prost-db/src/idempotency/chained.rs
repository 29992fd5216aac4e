//! Chained mode: per concurrent handler run, a dedicated connection whose open transaction
//! each event ends with `COMMIT AND CHAIN`, and the transaction a run works in either way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use sqlx::AssertSqlSafe;

use super::record::Entry;
use super::store::{Tx, begin};
use crate::error::{Error, Result};
use crate::pool::Db;

/// How an idempotent handler run gets its transaction: set on
/// [`DbConfig::handler_mode`](crate::DbConfig::handler_mode) (or `PROST_DB_HANDLER_MODE`),
/// so every `#[idempotent_handler]`, [`IdempotencyStore::run`](super::IdempotencyStore::run)
/// and the RabbitMQ consumer's handlers use it without code changes.
///
/// | mode | statements per new event (body with one statement) | round trips: result `()`, data | connections |
/// |---|---|---|---|
/// | `Transaction` | `BEGIN ...`, claim, body, result `UPDATE` (data only), `COMMIT` | 4, 5 | taken from the pool per run |
/// | `Chained` | claim, body, `COMMIT AND CHAIN` (with data: the result `UPDATE` and it in one message) | 3, 3: a bare transaction's | one kept per concurrent run |
///
/// **Transaction** (the default) begins a transaction per run:
/// `BEGIN ISOLATION LEVEL READ COMMITTED; SET SESSION AUTHORIZATION DEFAULT; RESET ALL;
/// SET LOCAL lock_timeout = <ms>`, then the claim, the body, the result `UPDATE` (only for a
/// result that is not `null`) and `COMMIT`; a failed body sends `ROLLBACK`.
///
/// **Chained** keeps, per concurrent run, a connection with a READ COMMITTED transaction
/// open. It is opened once with `BEGIN ISOLATION LEVEL READ COMMITTED; SET SESSION
/// AUTHORIZATION DEFAULT; RESET ALL; SET lock_timeout = <ms>; COMMIT AND CHAIN` (the
/// `lock_timeout` is a session setting, committed, so it survives every chain; `SET LOCAL`
/// would not). Per event: the claim, the body, then `COMMIT AND CHAIN`, which commits and
/// begins the next READ COMMITTED transaction in the same round trip; a result that is not
/// `null` is written in the same message, one simple query `WITH completed AS (UPDATE ...
/// SET result = <hex>::jsonb ... RETURNING 1) SELECT 1 / count(*)::int FROM completed;
/// COMMIT AND CHAIN`, in which every value from data (the result, the key, the service, the
/// action) is `convert_from(decode('<hex>', 'hex'), 'UTF8')`: only hex digits, so nothing
/// in the data can end a literal. A record the body deleted fails the `SELECT`
/// ([`Error::IdempotencyRecordVanished`]), a result jsonb refuses fails the `UPDATE`; either
/// way the server skips the commit, the slot sends `ROLLBACK AND CHAIN` and is kept. A failed
/// body sends `ROLLBACK AND CHAIN`, a duplicate too (after the claim and the `SELECT` of the
/// record). Every event still gets its own commit, so the guarantees of
/// [the module docs](super) hold unchanged.
///
/// Between events such a connection is *idle in transaction*: the transaction has no
/// snapshot and holds no lock (each event's statements took theirs, and its commit released
/// them), but the server counts it as open, so:
///
/// - `idle_in_transaction_session_timeout` applies: a server that kills the connection
///   costs nothing but a reconnect; the next run notices (its claim fails on a dead
///   connection, found with a ping) and retries the claim once on a new connection;
/// - a transaction pooler (PgBouncer in `transaction` mode) pins the server connection to
///   the client for as long as it is kept: use session pooling or the transaction mode;
/// - `now()` (and so `created_at` of the records) is the time the transaction began, which
///   is the previous event's commit: up to the idle period early. Use `clock_timestamp()`
///   in a body that needs the time of the event;
/// - a body's session-level `SET` (not `SET LOCAL`) lasts for the connection's later events
///   until it goes back to the pool (whose next user gets the session restored).
///
/// A connection idle for [`CHAINED_IDLE`] goes back to the pool (a background task checks),
/// as do all of them on [`Db::close`](crate::Db::close). Size the pool for one connection
/// per concurrent handler run, plus what else the service uses.
///
/// ```
/// use prost_db::idempotency::HandlerMode;
///
/// let config = prost_db::DbConfig::new("postgres://postgres@127.0.0.1/prost", "catalog")?
///     .handler_mode(HandlerMode::Chained);
/// assert_eq!(config.get_handler_mode(), HandlerMode::Chained);
/// assert_eq!("chained".parse::<HandlerMode>()?, HandlerMode::Chained);
/// # Ok::<(), prost_db::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandlerMode {
    /// A transaction of its own per run, on a connection taken from the pool.
    #[default]
    Transaction,
    /// A kept connection per concurrent run, its transaction chained from event to event.
    Chained,
}

impl HandlerMode {
    /// The mode's name, as `PROST_DB_HANDLER_MODE` spells it.
    ///
    /// ```
    /// assert_eq!(prost_db::idempotency::HandlerMode::Chained.as_str(), "chained");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            HandlerMode::Transaction => "transaction",
            HandlerMode::Chained => "chained",
        }
    }
}

impl std::fmt::Display for HandlerMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for HandlerMode {
    type Err = Error;

    /// `transaction` or `chained`, ignoring case and surrounding spaces.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "transaction" => Ok(HandlerMode::Transaction),
            "chained" => Ok(HandlerMode::Chained),
            _ => Err(Error::Config(format!(
                "unknown handler mode {s:?}; expected \"transaction\" or \"chained\""
            ))),
        }
    }
}

/// How long a chained connection may sit idle before it goes back to the pool.
///
/// ```
/// assert_eq!(prost_db::idempotency::CHAINED_IDLE, std::time::Duration::from_secs(5));
/// ```
pub const CHAINED_IDLE: Duration = Duration::from_secs(5);

/// The chained connections of one `Db`: those idle, waiting for the next run.
pub(crate) struct Chains {
    mode: HandlerMode,
    idle_after: Duration,
    idle: Mutex<Vec<Slot>>,
    reaper: AtomicBool,
    closed: AtomicBool,
}

/// A kept connection, its transaction open.
struct Slot {
    tx: Tx,
    lock_timeout: Duration,
    since: Instant,
}

impl Chains {
    pub(crate) fn new(mode: HandlerMode, idle_after: Duration) -> Arc<Chains> {
        Arc::new(Chains {
            mode,
            idle_after,
            idle: Mutex::new(Vec::new()),
            reaper: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    pub(crate) fn mode(&self) -> HandlerMode {
        self.mode
    }

    /// How many kept connections are idle now.
    pub(crate) fn idle_count(&self) -> usize {
        self.lock().len()
    }

    /// Gives every idle connection back, and every busy one as its run ends.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let slots = std::mem::take(&mut *self.lock());
        drop(slots);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle slot with this lock timeout, the most recently used (its connection is the
    /// likeliest alive); if there is none and the pool is full, an idle slot of another
    /// timeout is given back first, so that opening one cannot wait on kept connections.
    fn pop(&self, db: &Db, lock_timeout: Duration) -> Option<Slot> {
        let mut idle = self.lock();
        if let Some(at) = idle.iter().rposition(|s| s.lock_timeout == lock_timeout) {
            return Some(idle.remove(at));
        }
        let stats = db.stats();
        if !idle.is_empty() && stats.idle == 0 && stats.size >= stats.max {
            drop(idle.remove(0));
        }
        None
    }

    fn push(self: &Arc<Self>, mut slot: Slot) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        slot.since = Instant::now();
        self.lock().push(slot);
        if !self.reaper.swap(true, Ordering::SeqCst) {
            spawn_reaper(Arc::downgrade(self), self.idle_after);
        }
    }

    /// Gives back the slots idle for `idle_after` or longer.
    fn reap(&self) {
        let stale: Vec<Slot> = {
            let mut idle = self.lock();
            let (stale, fresh) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|s| s.since.elapsed() >= self.idle_after);
            *idle = fresh;
            stale
        };
        if !stale.is_empty() {
            tracing::debug!(
                connections = stale.len(),
                "chained connections idle, given back"
            );
        }
    }
}

/// Checks for idle slots every half idle period while the `Db` lives.
fn spawn_reaper(chains: Weak<Chains>, idle_after: Duration) {
    let period = (idle_after / 2).max(Duration::from_millis(10));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let Some(chains) = chains.upgrade() else {
                return;
            };
            if chains.closed.load(Ordering::SeqCst) {
                return;
            }
            chains.reap();
        }
    });
}

/// The transaction one handler run works in: its own, or a chained slot's.
pub(super) struct Held {
    tx: Tx,
    chained: Option<Chained>,
}

/// What a chained run keeps beside its transaction.
struct Chained {
    chains: Arc<Chains>,
    lock_timeout: Duration,
    /// Whether the slot served an earlier event (and so may have been killed while idle).
    reused: bool,
}

/// A held transaction's other half while the body has the transaction.
pub(super) struct Parked(Option<Chained>);

impl Held {
    /// A transaction in `db`'s [`HandlerMode`].
    pub(super) async fn begin(db: &Db, lock_timeout: Duration) -> Result<Held> {
        let chains = db.chains();
        if chains.mode() == HandlerMode::Transaction {
            return Ok(Held {
                tx: begin(db, lock_timeout).await?,
                chained: None,
            });
        }
        if let Some(slot) = chains.pop(db, lock_timeout) {
            return Ok(Held {
                tx: slot.tx,
                chained: Some(Chained {
                    chains: chains.clone(),
                    lock_timeout,
                    reused: true,
                }),
            });
        }
        Self::open(db, lock_timeout).await
    }

    /// A new chained slot.
    async fn open(db: &Db, lock_timeout: Duration) -> Result<Held> {
        Ok(Held {
            tx: crate::pool::begin_chained(db, lock_timeout).await?,
            chained: Some(Chained {
                chains: db.chains().clone(),
                lock_timeout,
                reused: false,
            }),
        })
    }

    pub(super) fn tx(&mut self) -> &mut Tx {
        &mut self.tx
    }

    /// After the first statement of a run failed with `error`: a reused chained slot
    /// whose connection is dead (the server killed it while idle in transaction) is
    /// replaced by a new one, on which the run starts over; anything else is `error`.
    pub(super) async fn recover(mut self, db: &Db, error: Error) -> Result<Held> {
        let Some(chained) = &self.chained else {
            return Err(error);
        };
        if !chained.reused || sqlx::Connection::ping(&mut *self.tx).await.is_ok() {
            return Err(error);
        }
        tracing::debug!(%error, "a chained connection was closed while idle; reopening");
        let lock_timeout = chained.lock_timeout;
        drop(self);
        Self::open(db, lock_timeout).await
    }

    /// The transaction, for the body; [`Parked::resume`] puts it back.
    pub(super) fn park(self) -> (Tx, Parked) {
        (self.tx, Parked(self.chained))
    }

    /// Commits: `COMMIT`, or `COMMIT AND CHAIN` and the slot waits for the next run.
    pub(super) async fn commit(self, db: &Db) -> Result<()> {
        self.end(db, None).await
    }

    /// Stores `result` in `entry`'s claimed record and commits. A `null` result is what the
    /// claim stored already: only the commit. Otherwise, in transaction mode, the result
    /// `UPDATE` then `COMMIT`; chained, the two in one message
    /// ([`Entry::complete_and_chain`]), so an event whose body returns data costs 3 round
    /// trips, as a bare transaction. Either way a record that is not there to update is
    /// [`Error::IdempotencyRecordVanished`] and nothing commits.
    pub(super) async fn complete_and_commit(
        self,
        entry: &Entry<'_>,
        result: &serde_json::Value,
    ) -> Result<()> {
        // The claim stored NULL, which is what `()` and `None` replay from.
        if result.is_null() {
            return self.commit(entry.db).await;
        }
        self.end(entry.db, Some((entry, result))).await
    }

    /// Rolls back: `ROLLBACK`, or `ROLLBACK AND CHAIN` and the slot waits for the next
    /// run. A failed connection has rolled back already; a chained slot whose rollback
    /// fails is dropped (its `ROLLBACK` is queued, and the pool closes the connection if it
    /// is dead).
    pub(super) async fn rollback(self, db: &Db) {
        let Held { mut tx, chained } = self;
        let done = match chained {
            None => tx.rollback().await,
            Some(chained) => chain(&mut tx, AssertSqlSafe("ROLLBACK AND CHAIN".to_owned()))
                .await
                .map(|()| chained.keep(tx)),
        };
        if let Err(error) = done {
            tracing::debug!(error = %db.map_err(error), "a rollback failed");
        }
    }

    /// Ends a run that wrote nothing: its own transaction's `ROLLBACK` is queued and sent
    /// when the connection goes back to the pool, off the run's path; a chained slot's is
    /// `ROLLBACK AND CHAIN`, so that the slot holds no lock while idle.
    pub(super) async fn release(self, db: &Db) {
        if self.chained.is_none() {
            return;
        }
        self.rollback(db).await;
    }

    /// Commits, after storing `complete`'s result if there is one.
    async fn end(self, db: &Db, complete: Option<(&Entry<'_>, &serde_json::Value)>) -> Result<()> {
        let Held { mut tx, chained } = self;
        let Some(chained) = chained else {
            if let Some((entry, result)) = complete
                && !entry.complete(&mut tx, result).await?
            {
                return Err(entry.vanished());
            }
            return tx.commit().await.map_err(|e| db.map_err(e));
        };
        let Some((entry, result)) = complete else {
            // On an error the slot is dropped: its `ROLLBACK` is queued, and the pool
            // closes the connection if it is dead.
            chain(&mut tx, AssertSqlSafe("COMMIT AND CHAIN".to_owned()))
                .await
                .map_err(|e| db.map_err(e))?;
            chained.keep(tx);
            return Ok(());
        };
        match chain(&mut tx, entry.complete_and_chain(result)).await {
            Ok(()) => {
                chained.keep(tx);
                Ok(())
            }
            // The `UPDATE` failed (a value jsonb refuses, the record missing), so the server
            // skipped the `COMMIT AND CHAIN` and the transaction is aborted: rolled back,
            // the slot serves the next run; if that fails too, the slot is dropped.
            Err(error) => {
                let error = entry.complete_error(error);
                Held {
                    tx,
                    chained: Some(chained),
                }
                .rollback(db)
                .await;
                Err(error)
            }
        }
    }
}

/// Sends `statement` (one that ends a chained slot's transaction and begins the next) as a
/// simple query on the slot's connection.
async fn chain(tx: &mut Tx, statement: AssertSqlSafe<String>) -> sqlx::Result<()> {
    sqlx::raw_sql(statement).execute(&mut **tx).await?;
    Ok(())
}

impl Chained {
    /// Puts the slot back, to wait for the next run.
    fn keep(self, tx: Tx) {
        self.chains.push(Slot {
            tx,
            lock_timeout: self.lock_timeout,
            since: Instant::now(),
        });
    }
}

impl Parked {
    pub(super) fn resume(self, tx: Tx) -> Held {
        Held {
            tx,
            chained: self.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::HandlerMode;
    use crate::idempotency::{IdempotencyStore, TxLease};
    use crate::pool::Db;
    use crate::test_logs::CapturedLogs;
    use crate::testing::TestDb;

    /// The statements sqlx sent for one event of `mode` whose body runs one statement and
    /// returns `result`, on a warm slot (or pool): sqlx logs each message it sends.
    async fn statements_of(db: &Db, key: &str, result: Value) -> crate::Result<Vec<String>> {
        let store = IdempotencyStore::new(db);
        let captured = CapturedLogs::start(tracing::Level::DEBUG, false);
        store
            .run("count", key, &(), async move |mut tx: TxLease| {
                sqlx::raw_sql("SELECT 1").execute(&mut **tx).await?;
                Ok::<_, crate::Error>(result)
            })
            .await
            .map_err(|e| crate::Error::Config(e.to_string()))?
            .into_inner();
        let logs = captured.text();
        Ok(logs
            .split("sqlx::query:")
            .skip(1)
            .map(|message| message.chars().take(200).collect())
            .collect())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_chained_event_returning_data_sends_three_messages_like_a_bare_transaction()
    -> crate::Result<()> {
        let test_db = TestDb::new().await?;
        // Transaction mode's `BEGIN` is a message too, one sqlx does not log: 4 and 5 sent.
        let modes = [
            (HandlerMode::Chained, 3, 3),
            (HandlerMode::Transaction, 3, 4),
        ];
        for (mode, unit, data) in modes {
            let db = Db::connect(test_db.config("catalog").handler_mode(mode)).await?;
            IdempotencyStore::install(&db).await?;
            statements_of(&db, &format!("{mode}-warm"), Value::Null).await?;
            let sent = [
                statements_of(&db, &format!("{mode}-unit"), Value::Null).await?,
                statements_of(&db, &format!("{mode}-data"), json!({"left": 3})).await?,
            ];
            assert_eq!(
                [sent[0].len(), sent[1].len()],
                [unit, data],
                "{mode}: {sent:#?}"
            );
            if mode == HandlerMode::Chained {
                let last = sent[1].last().expect("a message");
                assert!(last.contains("WITH completed AS (UPDATE"), "{last}");
            }
            db.close().await;
        }
        test_db.close().await
    }
}
