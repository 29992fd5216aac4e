//! The migrator's settings: the builder methods, their getters, and the limits the
//! durations must keep.

use std::time::Duration;

use super::error::MigrateError;
use super::migrator::Migrator;

/// How long a script's statement waits for a table lock before it gives up
/// ([`Migrator::ddl_lock_timeout`]): long enough for ordinary transactions to finish, short
/// enough that the queries queued behind a waiting `ALTER TABLE` do not pile up.
///
/// ```
/// assert_eq!(prost_db::migrate::DEFAULT_DDL_LOCK_TIMEOUT.as_secs(), 5);
/// ```
pub const DEFAULT_DDL_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// PostgreSQL's limit for `lock_timeout` and `statement_timeout`, in milliseconds.
const PG_MAX_MILLIS: u128 = i32::MAX as u128;

/// `value` as whole milliseconds, rounded up so that a short duration never turns into
/// "no limit"; an error beyond PostgreSQL's range.
pub(super) fn millis(setting: &'static str, value: Duration) -> Result<u64, MigrateError> {
    let ms = value.as_millis() + u128::from(!value.subsec_nanos().is_multiple_of(1_000_000));
    if ms > PG_MAX_MILLIS {
        return Err(MigrateError::SettingOutOfRange { setting, value });
    }
    Ok(u64::try_from(ms).expect("below i32::MAX"))
}

/// A PostgreSQL timeout: `None` and zero both mean no limit, as `0` does for the server.
fn timeout(
    setting: &'static str,
    value: Option<Duration>,
) -> Result<Option<Duration>, MigrateError> {
    match value {
        Some(d) if !d.is_zero() => millis(setting, d).map(|_| Some(d)),
        _ => Ok(None),
    }
}

impl Migrator {
    /// Who is recorded as applying (default `$PROST_DB_APPLIED_BY`, else `$USER@$HOSTNAME`).
    /// The database role is recorded too.
    ///
    /// ```
    /// use prost_db::migrate::{Migrations, Migrator};
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// let migrator = Migrator::new(Migrations::from_dir(root)?).applied_by("ci pipeline #812");
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn applied_by(mut self, who: impl Into<String>) -> Self {
        self.applied_by = who.into();
        self
    }

    /// Accept applied migrations whose file was edited deliberately: their new checksum is
    /// recorded and a `checksum_accepted` row is logged, instead of failing with
    /// [`MigrateError::Changed`].
    ///
    /// ```
    /// use prost_db::migrate::{Migrations, Migrator};
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// let migrator = Migrator::new(Migrations::from_dir(root)?).accept_changed(true);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn accept_changed(mut self, accept: bool) -> Self {
        self.accept_changed = accept;
        self
    }

    /// Apply pending migrations older than the newest applied one instead of failing with
    /// [`MigrateError::OutOfOrder`].
    ///
    /// ```
    /// use prost_db::migrate::{Migrations, Migrator};
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// let migrator = Migrator::new(Migrations::from_dir(root)?).allow_out_of_order(true);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn allow_out_of_order(mut self, allow: bool) -> Self {
        self.allow_out_of_order = allow;
        self
    }

    /// Allow [`reset`](Self::reset) on a database that is not named like a test database
    /// (`prost_test_*`, `test_*`, `*_test` or `test`).
    ///
    /// ```
    /// use prost_db::migrate::{Migrations, Migrator};
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// let migrator = Migrator::new(Migrations::from_dir(root)?).allow_reset(true);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    #[must_use]
    pub fn allow_reset(mut self, allow: bool) -> Self {
        self.allow_reset = allow;
        self
    }

    /// Give up waiting for the schema's migration lock (another deployment migrating the
    /// same schema) after `wait`, with [`MigrateError::LockWaitTimedOut`] naming the session
    /// holding it. `None`, the default, waits as long as it takes; zero tries once.
    ///
    /// This is the advisory-lock wait of the runner, not a PostgreSQL setting; the table
    /// locks of the scripts are bounded by [`ddl_lock_timeout`](Self::ddl_lock_timeout).
    ///
    /// ```
    /// use std::time::Duration;
    /// use prost_db::migrate::{Migrations, Migrator};
    ///
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// let migrator = Migrator::new(Migrations::from_dir(root)?).lock_wait(Duration::from_secs(60))?;
    /// assert_eq!(migrator.get_lock_wait(), Some(Duration::from_secs(60)));
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`MigrateError::SettingOutOfRange`] beyond 2147483647 ms, the range of every
    /// migrator duration.
    pub fn lock_wait(mut self, wait: impl Into<Option<Duration>>) -> Result<Self, MigrateError> {
        let wait = wait.into();
        if let Some(d) = wait {
            millis("lock_wait", d)?;
        }
        self.lock_wait = wait;
        Ok(self)
    }

    /// The `lock_timeout` of the scripts' statements: how long one waits for a lock (an
    /// `ALTER TABLE` behind a long transaction on its table) before the script fails with
    /// SQLSTATE `55P03`, naming the blocking session ([`ScriptFailure::blocked_by`]), and
    /// the run is rolled back as for any failure. While a DDL statement waits, every query
    /// on its table queues behind it; the timeout bounds that stall. Default
    /// [`DEFAULT_DDL_LOCK_TIMEOUT`] (5 s); `None` or zero: no limit. `CREATE INDEX
    /// CONCURRENTLY` waits for older transactions through locks too: a no-transaction
    /// script that should wait longer can `SET lock_timeout` first (it holds for that
    /// script only).
    ///
    /// [`ScriptFailure::blocked_by`]: super::ScriptFailure::blocked_by
    ///
    /// ```
    /// use std::time::Duration;
    /// use prost_db::migrate::{Migrations, Migrator};
    ///
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// let migrator = Migrator::new(Migrations::from_dir(root)?).ddl_lock_timeout(Duration::from_secs(2))?;
    /// assert_eq!(migrator.get_ddl_lock_timeout(), Some(Duration::from_secs(2)));
    /// assert!(Migrator::new(Migrations::from_dir(root)?).ddl_lock_timeout(Duration::from_secs(30 * 86_400)).is_err());
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`MigrateError::SettingOutOfRange`] beyond PostgreSQL's 2147483647 ms.
    pub fn ddl_lock_timeout(
        mut self,
        timeout_value: impl Into<Option<Duration>>,
    ) -> Result<Self, MigrateError> {
        self.ddl_lock_timeout = timeout("ddl_lock_timeout", timeout_value.into())?;
        Ok(self)
    }

    /// The `statement_timeout` of the scripts' statements. Default none: migrations do not
    /// inherit the service's [`DbConfig::statement_timeout`](crate::DbConfig::statement_timeout),
    /// so a long `CREATE INDEX` finishes. `None` or zero: no limit.
    ///
    /// ```
    /// use std::time::Duration;
    /// use prost_db::migrate::{Migrations, Migrator};
    ///
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// let migrator = Migrator::new(Migrations::from_dir(root)?);
    /// assert_eq!(migrator.get_statement_timeout(), None);
    /// let migrator = migrator.statement_timeout(Duration::from_secs(600))?;
    /// assert_eq!(migrator.get_statement_timeout(), Some(Duration::from_secs(600)));
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`MigrateError::SettingOutOfRange`] beyond PostgreSQL's 2147483647 ms.
    pub fn statement_timeout(
        mut self,
        timeout_value: impl Into<Option<Duration>>,
    ) -> Result<Self, MigrateError> {
        self.statement_timeout = timeout("statement_timeout", timeout_value.into())?;
        Ok(self)
    }

    /// Who is recorded as applying.
    ///
    /// ```
    /// use prost_db::migrate::{Migrations, Migrator};
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// let migrator = Migrator::new(Migrations::from_dir(root)?).applied_by("ci #812");
    /// assert_eq!(migrator.get_applied_by(), "ci #812");
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn get_applied_by(&self) -> &str {
        &self.applied_by
    }

    /// Whether edited applied migrations are accepted ([`accept_changed`](Self::accept_changed)).
    ///
    /// ```
    /// use prost_db::migrate::{Migrations, Migrator};
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// assert!(!Migrator::new(Migrations::from_dir(root)?).get_accept_changed());
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn get_accept_changed(&self) -> bool {
        self.accept_changed
    }

    /// Whether out-of-order migrations are applied ([`allow_out_of_order`](Self::allow_out_of_order)).
    ///
    /// ```
    /// use prost_db::migrate::{Migrations, Migrator};
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// assert!(!Migrator::new(Migrations::from_dir(root)?).get_allow_out_of_order());
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn get_allow_out_of_order(&self) -> bool {
        self.allow_out_of_order
    }

    /// Whether `reset` runs on any database ([`allow_reset`](Self::allow_reset)).
    ///
    /// ```
    /// use prost_db::migrate::{Migrations, Migrator};
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// assert!(!Migrator::new(Migrations::from_dir(root)?).get_allow_reset());
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn get_allow_reset(&self) -> bool {
        self.allow_reset
    }

    /// The migration-lock wait ([`lock_wait`](Self::lock_wait)); `None`: no limit.
    ///
    /// ```
    /// use prost_db::migrate::{Migrations, Migrator};
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// assert_eq!(Migrator::new(Migrations::from_dir(root)?).get_lock_wait(), None);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn get_lock_wait(&self) -> Option<Duration> {
        self.lock_wait
    }

    /// The scripts' `lock_timeout` ([`ddl_lock_timeout`](Self::ddl_lock_timeout)); `None`:
    /// no limit.
    ///
    /// ```
    /// use prost_db::migrate::{DEFAULT_DDL_LOCK_TIMEOUT, Migrations, Migrator};
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// let migrator = Migrator::new(Migrations::from_dir(root)?);
    /// assert_eq!(migrator.get_ddl_lock_timeout(), Some(DEFAULT_DDL_LOCK_TIMEOUT));
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn get_ddl_lock_timeout(&self) -> Option<Duration> {
        self.ddl_lock_timeout
    }

    /// The scripts' `statement_timeout` ([`statement_timeout`](Self::statement_timeout));
    /// `None`: no limit.
    ///
    /// ```
    /// use prost_db::migrate::{Migrations, Migrator};
    /// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
    /// assert_eq!(Migrator::new(Migrations::from_dir(root)?).get_statement_timeout(), None);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn get_statement_timeout(&self) -> Option<Duration> {
        self.statement_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migrator() -> Migrator {
        Migrator::new(crate::migrate::Migrations::from_embedded(vec![]))
    }

    #[test]
    fn durations_beyond_postgres_range_are_refused_when_set() {
        let limit = Duration::from_millis(2_147_483_647);
        let beyond = limit + Duration::from_millis(1);
        for (setting, result) in [
            ("lock_wait", migrator().lock_wait(beyond).map(drop)),
            (
                "ddl_lock_timeout",
                migrator().ddl_lock_timeout(beyond).map(drop),
            ),
            (
                "statement_timeout",
                migrator().statement_timeout(beyond).map(drop),
            ),
        ] {
            let err = result.unwrap_err();
            assert!(
                matches!(err, MigrateError::SettingOutOfRange { setting: s, value } if s == setting && value == beyond),
                "{err}"
            );
            assert!(err.to_string().contains("2147483647 ms"), "{err}");
        }
        assert_eq!(
            migrator()
                .ddl_lock_timeout(limit)
                .unwrap()
                .get_ddl_lock_timeout(),
            Some(limit)
        );
        // A fraction of a millisecond past the limit rounds up, and is refused too.
        assert!(
            migrator()
                .statement_timeout(limit + Duration::from_nanos(1))
                .is_err()
        );
    }

    #[test]
    fn zero_timeouts_mean_no_limit_and_short_ones_stay_limits() {
        let m = migrator().ddl_lock_timeout(Duration::ZERO).unwrap();
        assert_eq!(m.get_ddl_lock_timeout(), None);
        let m = m.statement_timeout(None).unwrap();
        assert_eq!(m.get_statement_timeout(), None);
        assert_eq!(millis("x", Duration::from_micros(10)).unwrap(), 1);
        assert_eq!(millis("x", Duration::from_millis(1500)).unwrap(), 1500);
        let m = m.lock_wait(Duration::ZERO).unwrap();
        assert_eq!(
            m.get_lock_wait(),
            Some(Duration::ZERO),
            "zero waits: try once"
        );
    }
}
