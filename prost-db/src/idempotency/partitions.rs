//! The opt-in partitioned layout of `idempotency_records`: day partitions on the key's UUIDv7 time, created ahead and dropped whole.
//!
//! # The layout, and why dedup stays exact
//!
//! The table is range-partitioned on `event_id` itself, the first column of the unique key
//! `(event_id, service_name, action)`. PostgreSQL requires a unique index of a partitioned
//! table to include the partition key; here it does without any derived column, so a key
//! always routes to the same partition and the one unique index decides as in the plain
//! layout: dedup is exact across partitions, and every statement on a record is the plain
//! layout's, pruned to one partition by `event_id = $1`.
//!
//! The ranges are days of UUIDv7 time. A UUIDv7 starts with its 48-bit Unix time in
//! milliseconds, so its text form (lower-case, hyphenated: what the `Uuid` key gives)
//! sorts by time, byte-wise (`COLLATE "C"`); the day from `D` to `D + 1` is the range
//! `FROM ('<ms of D>') TO ('<ms of D + 1>')`, the bounds written as the id's first 12 hex
//! digits (`0193a1b2-c3d4`). Every other key (a business key, a UUIDv4, an upper-case id,
//! a UUIDv7 of a day without partition) lands in the default partition
//! `idempotency_records_other`, which the maintenance purges by `created_at` like the plain
//! layout (row by row, so its cost is proportional to those keys only). A UUIDv4's random
//! first digits fall inside a kept day with a probability of about one in 10^5 per key;
//! such a record expires with that day.
//!
//! # Expiry
//!
//! [`PartitionedRecords::maintain`] expires every day older than the retention window
//! whole, whatever it holds: `DETACH PARTITION` (catalog rows only, the one moment handlers
//! wait), then `DROP TABLE` of the detached day, whose files go under a lock no handler
//! takes. It also creates the days ahead. A duplicate
//! that arrives after its day was dropped finds no record: with [`ExpiredKeys::Reprocess`]
//! it is processed again (its record goes to the default partition); with
//! [`ExpiredKeys::Reject`] a check constraint on the default partition refuses UUIDv7 keys
//! older than the window, and the delivery fails with
//! [`Error::IdempotencyKeyExpired`] (not transient: the consumer dead-letters it) without
//! running the body.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::AssertSqlSafe;

use crate::error::{Error, Result};
use crate::ident::{Identifier, IdentifierKind, render};
use crate::pool::Db;

use super::partition_ddl::{convert_holding, create_day, create_empty, detach_day, drop_detached};

/// The default partition: every key outside the day partitions.
///
/// ```
/// assert!(prost_db::idempotency::OTHER_PARTITION.starts_with(prost_db::idempotency::TABLE_NAME));
/// ```
pub const OTHER_PARTITION: &str = "idempotency_records_other";

/// The name of the constraint of [`ExpiredKeys::Reject`] on the default partition.
pub(crate) const EXPIRED_CONSTRAINT: &str = "idempotency_records_expired";

/// A UUIDv7 in its lower-case hyphenated form, the keys the day partitions hold.
const V7_PATTERN: &str = "^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$";

const PARTITION_PREFIX: &str = "idempotency_records_p";

/// What to do with a delivery whose key's day was dropped: its record is gone.
///
/// ```
/// use prost_db::idempotency::{ExpiredKeys, PartitionedRecords};
///
/// let records = PartitionedRecords::new(14)?.expired_keys(ExpiredKeys::Reject);
/// assert_eq!(records.expired(), ExpiredKeys::Reject);
/// # Ok::<(), prost_db::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpiredKeys {
    /// Process it as a new event (the plain layout's behaviour after a purge): right when a
    /// replay of old events is meant to apply again, wrong for a late duplicate.
    Reprocess,
    /// Refuse it with [`Error::IdempotencyKeyExpired`], comparing the key's UUIDv7 time with
    /// the window: a late duplicate never applies twice, and a genuinely new event with an
    /// old id is dead-lettered for a person to look at.
    Reject,
}

/// The settings of the partitioned layout, and its installation and maintenance.
///
/// ```no_run
/// use prost_db::idempotency::{ExpiredKeys, PartitionedRecords};
///
/// # async fn f(db: &prost_db::Db) -> prost_db::Result<()> {
/// let records = PartitionedRecords::new(14)?.days_ahead(3).expired_keys(ExpiredKeys::Reject);
/// records.install(db).await?; // once, after the migrations; converts the plain table
/// // then, e.g. hourly, from any replica (runs are serialized):
/// let done = records.maintain(db).await?;
/// println!("dropped {:?}, created {:?}", done.dropped, done.created);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PartitionedRecords {
    retention_days: u32,
    days_ahead: u32,
    expired: ExpiredKeys,
    lock_timeout: Duration,
}

/// What one maintenance run did.
///
/// ```
/// # fn f(done: prost_db::idempotency::Maintenance) {
/// for day in &done.dropped {
///     println!("expired the records of {day}");
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Maintenance {
    /// The days whose partitions were created.
    pub created: Vec<NaiveDate>,
    /// The days whose partitions were dropped: each detached, then dropped whole.
    pub dropped: Vec<NaiveDate>,
    /// Records moved from the default partition into a day created after they arrived.
    pub moved: u64,
    /// Records purged from the default partition (older than the window by `created_at`).
    pub purged_other: u64,
    /// The start of the window: keys older than this have no record any more.
    pub window_start: DateTime<Utc>,
}

impl PartitionedRecords {
    /// Records kept for `retention_days` whole days after their key's day (at least 1),
    /// 3 days created ahead, expired keys reprocessed, a 5 s lock timeout for maintenance.
    /// The retention must exceed the broker's redelivery horizon.
    ///
    /// ```
    /// use prost_db::idempotency::PartitionedRecords;
    ///
    /// assert!(PartitionedRecords::new(0).is_err());
    /// assert_eq!(PartitionedRecords::new(7)?.retention_days(), 7);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for 0 days or more than 3650.
    pub fn new(retention_days: u32) -> Result<Self> {
        if !(1..=3650).contains(&retention_days) {
            return Err(Error::Config(format!(
                "a retention of {retention_days} days for partitioned idempotency records: use 1 to 3650 days, longer than the broker's redelivery horizon"
            )));
        }
        Ok(PartitionedRecords {
            retention_days,
            days_ahead: 3,
            expired: ExpiredKeys::Reprocess,
            lock_timeout: Duration::from_secs(5),
        })
    }

    /// How many days after today to create partitions for (default 3; at most 60): keys of
    /// a day without partition go to the default partition and are moved when it is made.
    ///
    /// ```
    /// # use prost_db::idempotency::PartitionedRecords;
    /// let records = PartitionedRecords::new(7)?.days_ahead(1);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn days_ahead(mut self, days: u32) -> Self {
        self.days_ahead = days.min(60);
        self
    }

    /// The policy for a delivery whose record expired.
    ///
    /// ```
    /// # use prost_db::idempotency::{ExpiredKeys, PartitionedRecords};
    /// let records = PartitionedRecords::new(7)?.expired_keys(ExpiredKeys::Reject);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn expired_keys(mut self, policy: ExpiredKeys) -> Self {
        self.expired = policy;
        self
    }

    /// How long maintenance waits for a table lock (the `DETACH PARTITION` of a day waits
    /// for the handler transactions in flight on the table, and new ones queue behind it).
    ///
    /// ```
    /// # use prost_db::idempotency::PartitionedRecords;
    /// let records = PartitionedRecords::new(7)?.lock_timeout(std::time::Duration::from_secs(1));
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout.clamp(Duration::from_millis(1), Duration::from_secs(3600));
        self
    }

    /// The retention in days.
    ///
    /// ```
    /// # use prost_db::idempotency::PartitionedRecords;
    /// assert_eq!(PartitionedRecords::new(3)?.retention_days(), 3);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn retention_days(&self) -> u32 {
        self.retention_days
    }

    /// The policy for expired keys.
    ///
    /// ```
    /// # use prost_db::idempotency::{ExpiredKeys, PartitionedRecords};
    /// assert_eq!(PartitionedRecords::new(3)?.expired(), ExpiredKeys::Reprocess);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn expired(&self) -> ExpiredKeys {
        self.expired
    }

    /// Makes `db`'s `idempotency_records` partitioned, then maintains it. A missing or
    /// empty plain table is replaced; a plain table holding records becomes the default
    /// partition with its rows (they expire by `created_at`), and day partitions start
    /// tomorrow. A table already partitioned is only maintained. Safe from many replicas at
    /// once (serialized with [`IdempotencyStore::install`](super::IdempotencyStore::install)).
    ///
    /// ```no_run
    /// # async fn f(db: &prost_db::Db) -> prost_db::Result<()> {
    /// prost_db::idempotency::PartitionedRecords::new(14)?.install(db).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The database error, e.g. a lock timeout behind a long handler transaction.
    pub async fn install(&self, db: &Db) -> Result<Maintenance> {
        self.install_at(db, Utc::now()).await
    }

    /// [`install`](Self::install) as if the clock read `now` (for tests and backfills).
    ///
    /// ```no_run
    /// # async fn f(db: &prost_db::Db) -> prost_db::Result<()> {
    /// let records = prost_db::idempotency::PartitionedRecords::new(14)?;
    /// records.install_at(db, chrono::Utc::now()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`install`](Self::install).
    pub async fn install_at(&self, db: &Db, now: DateTime<Utc>) -> Result<Maintenance> {
        let mut tx = self.begin(db).await?;
        let first_day = match relkind(&mut tx, db).await?.as_deref() {
            Some("p") => None,
            Some("r") => {
                let held: bool = db
                    .query_scalar(sql(
                        "SELECT EXISTS (SELECT FROM {schema}.idempotency_records)",
                        db,
                    ))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| db.map_err(e))?;
                if held {
                    convert_holding(&mut tx, db).await?;
                    Some(now.date_naive() + chrono::Days::new(1))
                } else {
                    run(&mut tx, db, "DROP TABLE {schema}.idempotency_records").await?;
                    create_empty(&mut tx, db).await?;
                    None
                }
            }
            Some(other) => {
                return Err(Error::Config(format!(
                    "{}.idempotency_records is not a table (relkind {other:?}); drop it or use the plain layout",
                    db.schema()
                )));
            }
            None => {
                create_empty(&mut tx, db).await?;
                None
            }
        };
        tx.commit().await.map_err(|e| db.map_err(e))?;
        self.maintain_from(db, now, first_day).await
    }

    /// Drops the days older than the window (each detached, then dropped), creates the days up to
    /// `days_ahead` after today, sets the expired-key policy on the default partition and
    /// purges it by `created_at`. Each part is its own short transaction with the lock
    /// timeout; runs from several replicas are serialized. Run it at least daily.
    ///
    /// ```no_run
    /// # async fn f(db: &prost_db::Db) -> prost_db::Result<()> {
    /// let done = prost_db::idempotency::PartitionedRecords::new(14)?.maintain(db).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the table is not partitioned (call [`install`](Self::install)),
    /// or the database error, e.g. a lock timeout (transient: run it again).
    pub async fn maintain(&self, db: &Db) -> Result<Maintenance> {
        self.maintain_at(db, Utc::now()).await
    }

    /// [`maintain`](Self::maintain) as if the clock read `now`.
    ///
    /// ```no_run
    /// # async fn f(db: &prost_db::Db) -> prost_db::Result<()> {
    /// let records = prost_db::idempotency::PartitionedRecords::new(14)?;
    /// records.maintain_at(db, chrono::Utc::now()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`maintain`](Self::maintain).
    pub async fn maintain_at(&self, db: &Db, now: DateTime<Utc>) -> Result<Maintenance> {
        self.maintain_from(db, now, None).await
    }

    async fn maintain_from(
        &self,
        db: &Db,
        now: DateTime<Utc>,
        first_day: Option<NaiveDate>,
    ) -> Result<Maintenance> {
        let today = now.date_naive();
        let window_day = today - chrono::Days::new(u64::from(self.retention_days));
        let window_start = day_start(window_day);

        // Expiry in two steps, so that no handler waits while a day's files are removed:
        // each old day is detached (catalog rows only, under a brief ACCESS EXCLUSIVE lock on
        // the parent), then dropped as a table of its own, whose commit removes the files
        // (about 100 ms per 200 MB on the project's machine) under a lock no handler takes.
        // A day left detached by an interrupted run is dropped by the next.
        let mut tx = self.begin(db).await?;
        let (attached, mut dropped) = self.day_tables(&mut tx, db).await?;
        dropped.retain(|&day| day < window_day);
        for &day in attached.iter().filter(|&&day| day < window_day) {
            detach_day(&mut tx, db, day).await?;
            dropped.push(day);
        }
        tx.commit().await.map_err(|e| db.map_err(e))?;
        dropped.sort_unstable();
        if !dropped.is_empty() {
            // No advisory lock: these tables are out of the parent, and a replica racing on
            // one finds it gone (`IF EXISTS`).
            let mut tx = crate::pool::begin(db, Some(self.lock_timeout)).await?;
            drop_detached(&mut tx, db, &dropped).await?;
            tx.commit().await.map_err(|e| db.map_err(e))?;
        }

        // Then the days ahead: parent before default partition, the order handlers lock.
        let mut tx = self.begin(db).await?;
        let (days, _) = self.day_tables(&mut tx, db).await?;
        let start = match (days.iter().max(), first_day) {
            (Some(&last), _) => last + chrono::Days::new(1),
            (None, Some(first)) => first,
            (None, None) => today,
        };
        let end = today + chrono::Days::new(u64::from(self.days_ahead));
        let mut created = Vec::new();
        let mut moved = 0;
        if start <= end {
            run(
                &mut tx,
                db,
                "LOCK TABLE {schema}.idempotency_records IN SHARE UPDATE EXCLUSIVE MODE; \
                 LOCK TABLE {schema}.idempotency_records_other IN ACCESS EXCLUSIVE MODE",
            )
            .await?;
            let mut day = start;
            while day <= end {
                moved += create_day(&mut tx, db, day).await?;
                created.push(day);
                day = day + chrono::Days::new(1);
            }
        }
        self.set_policy(&mut tx, db, window_start).await?;
        tx.commit().await.map_err(|e| db.map_err(e))?;

        let other = format!("{}.{OTHER_PARTITION}", db.schema_ident());
        let horizon = Duration::from_secs(u64::from(self.retention_days) * 86_400);
        let purged_other =
            crate::pool::purge_in_batches(db.pool(), &other, "created_at", horizon).await?;
        tracing::info!(
            schema = db.schema(),
            ?dropped,
            ?created,
            moved,
            purged_other,
            "maintained partitioned idempotency records"
        );
        Ok(Maintenance {
            created,
            dropped,
            moved,
            purged_other,
            window_start,
        })
    }

    async fn begin(&self, db: &Db) -> Result<super::Tx> {
        let mut tx = crate::pool::begin(db, Some(self.lock_timeout)).await?;
        db.query(
            "SELECT pg_advisory_xact_lock(hashtext('prost_db.idempotency_records'), hashtext($1))",
        )
        .bind(db.schema())
        .execute(&mut *tx)
        .await
        .map_err(|e| db.map_err(e))?;
        Ok(tx)
    }

    /// The days of the day partitions, and of the day tables detached and not yet dropped,
    /// in one query, after checking that the table is partitioned.
    async fn day_tables(
        &self,
        tx: &mut super::Tx,
        db: &Db,
    ) -> Result<(Vec<NaiveDate>, Vec<NaiveDate>)> {
        let found: Option<(String, Vec<String>, Vec<String>)> = db
            .query_as(
                "SELECT c.relkind::text, \
                 ARRAY(SELECT p.relname::text FROM pg_inherits i \
                       JOIN pg_class p ON p.oid = i.inhrelid WHERE i.inhparent = c.oid), \
                 ARRAY(SELECT d.relname::text FROM pg_class d \
                       WHERE d.relnamespace = c.relnamespace AND d.relkind = 'r' \
                         AND NOT d.relispartition AND starts_with(d.relname::text, $2)) \
             FROM pg_class c WHERE c.oid = to_regclass($1)",
            )
            .bind(qualified(db))
            .bind(PARTITION_PREFIX)
            .fetch_optional(&mut **tx)
            .await
            .map_err(|e| db.map_err(e))?;
        match found {
            Some((kind, attached, detached)) if kind == "p" => {
                Ok((days_of(&attached), days_of(&detached)))
            }
            _ => Err(Error::Config(format!(
                "{}.idempotency_records is not partitioned; call PartitionedRecords::install first",
                db.schema()
            ))),
        }
    }

    /// The expired-key constraint on the default partition, replaced only when it changes
    /// (each change is a brief ACCESS EXCLUSIVE lock on that partition).
    async fn set_policy(
        &self,
        tx: &mut super::Tx,
        db: &Db,
        window_start: DateTime<Utc>,
    ) -> Result<()> {
        let current: Option<String> = db
            .query_scalar(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = to_regclass($1) AND conname = $2",
            )
            .bind(format!("{}.{OTHER_PARTITION}", db.schema_ident()))
            .bind(EXPIRED_CONSTRAINT)
            .fetch_optional(&mut **tx)
            .await
            .map_err(|e| db.map_err(e))?;
        let statement = match self.expired {
            ExpiredKeys::Reprocess if current.is_none() => return Ok(()),
            ExpiredKeys::Reprocess => format!(
                "ALTER TABLE {}.{OTHER_PARTITION} DROP CONSTRAINT {EXPIRED_CONSTRAINT}",
                db.schema_ident()
            ),
            ExpiredKeys::Reject => {
                let bound = bound(window_start)?;
                if current.is_some_and(|def| def.contains(&bound)) {
                    return Ok(());
                }
                format!(
                    "ALTER TABLE {schema}.{OTHER_PARTITION} \
                     DROP CONSTRAINT IF EXISTS {EXPIRED_CONSTRAINT}, \
                     ADD CONSTRAINT {EXPIRED_CONSTRAINT} \
                     CHECK (NOT (event_id < '{bound}' AND event_id ~ '{V7_PATTERN}')) NOT VALID",
                    schema = db.schema_ident()
                )
            }
        };
        sqlx::raw_sql(AssertSqlSafe(statement))
            .execute(&mut **tx)
            .await
            .map_err(|e| db.map_err(e))?;
        Ok(())
    }
}

/// The time a UUIDv7 key carries (its first 48 bits, Unix milliseconds); `None` for any
/// other key, and for a UUIDv7 not in the lower-case hyphenated form the day partitions
/// hold.
///
/// ```
/// use prost_db::idempotency::key_time;
///
/// let id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, 1_700_000_000, 0));
/// assert_eq!(key_time(&id.to_string()).map(|t| t.timestamp()), Some(1_700_000_000));
/// assert_eq!(key_time(&uuid::Uuid::new_v4().to_string()), None);
/// assert_eq!(key_time("order-7"), None);
/// ```
pub fn key_time(key: &str) -> Option<DateTime<Utc>> {
    let id = uuid::Uuid::try_parse(key).ok()?;
    if id.get_version_num() != 7
        || id.get_variant() != uuid::Variant::RFC4122
        || id.hyphenated().to_string() != key
    {
        return None;
    }
    let b = id.as_bytes();
    let millis = u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]]);
    DateTime::from_timestamp_millis(i64::try_from(millis).ok()?)
}

/// The text every UUIDv7 of `at` or later sorts at or after: its first 12 hex digits.
pub(super) fn bound(at: DateTime<Utc>) -> Result<String> {
    let millis = u64::try_from(at.timestamp_millis())
        .ok()
        .filter(|&ms| ms < 1 << 48)
        .ok_or_else(|| Error::Config(format!("{at} is outside the time a UUIDv7 holds")))?;
    Ok(format!("{:08x}-{:04x}", millis >> 16, millis & 0xffff))
}

pub(super) fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

pub(super) fn partition(day: NaiveDate) -> Result<Identifier> {
    Identifier::new(
        IdentifierKind::Table,
        &format!("{PARTITION_PREFIX}{}", day.format("%Y%m%d")),
    )
}

/// The days of the day tables among `names`, in order.
fn days_of(names: &[String]) -> Vec<NaiveDate> {
    let mut days: Vec<NaiveDate> = names
        .iter()
        .filter_map(|name| name.strip_prefix(PARTITION_PREFIX))
        .filter_map(|day| NaiveDate::parse_from_str(day, "%Y%m%d").ok())
        .collect();
    days.sort_unstable();
    days
}

async fn relkind(tx: &mut super::Tx, db: &Db) -> Result<Option<String>> {
    db.query_scalar("SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)")
        .bind(qualified(db))
        .fetch_optional(&mut **tx)
        .await
        .map_err(|e| db.map_err(e))
}

pub(super) fn qualified(db: &Db) -> String {
    format!("{}.idempotency_records", db.schema_ident())
}

pub(super) async fn run(tx: &mut super::Tx, db: &Db, template: &'static str) -> Result<()> {
    sqlx::raw_sql(sql(template, db))
        .execute(&mut **tx)
        .await
        .map_err(|e| db.map_err(e))?;
    Ok(())
}

pub(super) fn sql(template: &'static str, db: &Db) -> AssertSqlSafe<String> {
    AssertSqlSafe(render(template, db.schema_ident()))
}

#[cfg(test)]
mod tests {
    use super::{bound, key_time};

    #[test]
    fn a_day_bound_sorts_between_the_last_id_before_it_and_the_first_at_it() {
        let at = chrono::DateTime::from_timestamp(1_764_547_200, 0).unwrap();
        let low = bound(at).unwrap();
        let first = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            1_764_547_200,
            0,
        ));
        let before = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            1_764_547_199,
            999_000_000,
        ));
        assert!(first.to_string().as_str() >= low.as_str());
        assert!(before.to_string().as_str() < low.as_str());
        assert_eq!(key_time(&first.to_string()), Some(at));
        assert_eq!(key_time(&first.to_string().to_uppercase()), None);
    }
}
