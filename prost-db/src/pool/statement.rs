//! The one way the crate builds its statements: named (prepared once per connection and
//! cached) on a direct connection, unnamed behind a transaction pooler, and, outside a
//! transaction, in one of their own behind a pooler ([`Db::autocommit`]).

use sqlx::postgres::{PgArguments, PgConnection, PgRow};
use sqlx::query::{Query, QueryAs, QueryScalar};
use sqlx::{FromRow, Postgres, SqlSafeStr};

use super::Db;
use crate::error::Result;

/// How statements are sent: as named prepared statements, which sqlx caches per connection
/// (the fastest, on a direct connection), or unnamed, parsed again each time (what survives
/// a transaction pooler, where the next transaction may run on another server connection).
///
/// [`Db::statements`] gives the right one for a pool; [`Db::query`], [`Db::query_as`] and
/// [`Db::query_scalar`] build sqlx's builders with it already set, and every statement of
/// the crate is built through it. Types that are made without a `Db` (the saga store,
/// [`Outbox::for_schema`](crate::outbox::Outbox::for_schema)) take one with
/// `with_statements`.
///
/// ```
/// use prost_db::Statements;
///
/// let query = Statements::UNNAMED.query("SELECT $1::int8").bind(7_i64);
/// assert!(!Statements::UNNAMED.named());
/// assert!(Statements::NAMED.named());
/// # drop(query);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Statements {
    named: bool,
}

impl Default for Statements {
    /// [`Statements::NAMED`], as sqlx does by default.
    fn default() -> Self {
        Statements::NAMED
    }
}

impl Statements {
    /// Named prepared statements, cached per connection: for a direct connection (or a
    /// pooler in session mode).
    pub const NAMED: Statements = Statements { named: true };

    /// Unnamed statements, parsed on every run: behind a transaction pooler.
    pub const UNNAMED: Statements = Statements { named: false };

    /// Whether statements are named and cached.
    ///
    /// ```
    /// assert!(prost_db::Statements::default().named());
    /// ```
    pub fn named(self) -> bool {
        self.named
    }

    /// [`sqlx::query()`] with this kind of statement.
    ///
    /// ```
    /// let query = prost_db::Statements::UNNAMED.query("DELETE FROM t WHERE id = $1").bind(1_i64);
    /// # drop(query);
    /// ```
    pub fn query<'q>(self, sql: impl SqlSafeStr) -> Query<'q, Postgres, PgArguments> {
        // The one place a `sqlx::query` builder is made (see `layout_tests`).
        sqlx::query(sql).persistent(self.named)
    }

    /// [`sqlx::query_as`] with this kind of statement.
    ///
    /// ```
    /// let query = prost_db::Statements::NAMED.query_as::<(i64, String)>("SELECT id, name FROM t");
    /// # drop(query);
    /// ```
    pub fn query_as<'q, O>(self, sql: impl SqlSafeStr) -> QueryAs<'q, Postgres, O, PgArguments>
    where
        O: for<'r> FromRow<'r, PgRow>,
    {
        sqlx::query_as(sql).persistent(self.named)
    }

    /// [`sqlx::query_scalar`] with this kind of statement.
    ///
    /// ```
    /// let query = prost_db::Statements::NAMED.query_scalar::<i64>("SELECT count(*) FROM t");
    /// # drop(query);
    /// ```
    pub fn query_scalar<'q, O>(
        self,
        sql: impl SqlSafeStr,
    ) -> QueryScalar<'q, Postgres, O, PgArguments>
    where
        (O,): for<'r> FromRow<'r, PgRow>,
    {
        sqlx::query_scalar(sql).persistent(self.named)
    }
}

impl Db {
    /// How this pool's statements are sent: [`Statements::UNNAMED`] behind
    /// [`Pooler::Transaction`](crate::Pooler::Transaction), [`Statements::NAMED`] otherwise.
    ///
    /// ```no_run
    /// # fn f(db: &prost_db::Db) {
    /// let store = prost_db::outbox::Outbox::for_schema(db.schema_ident())
    ///     .with_statements(db.statements());
    /// # }
    /// ```
    pub fn statements(&self) -> Statements {
        if self.prepares() {
            Statements::NAMED
        } else {
            Statements::UNNAMED
        }
    }

    /// [`sqlx::query()`] as this pool must send it ([`Db::statements`]): run it in a
    /// transaction ([`Db::begin`]) or through [`Db::autocommit`], which holds behind a
    /// transaction pooler too.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// let mut tx = db.begin().await?;
    /// db.query("UPDATE products SET stock = stock - 1 WHERE id = $1")
    ///     .bind(7_i64)
    ///     .execute(&mut *tx)
    ///     .await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub fn query<'q>(&self, sql: impl SqlSafeStr) -> Query<'q, Postgres, PgArguments> {
        self.statements().query(sql)
    }

    /// [`sqlx::query_as`] as this pool must send it (see [`Db::query`]).
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// let rows: Vec<(i64, String)> = db
    ///     .autocommit(async |conn| db.query_as("SELECT id, name FROM products").fetch_all(conn).await)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn query_as<'q, O>(&self, sql: impl SqlSafeStr) -> QueryAs<'q, Postgres, O, PgArguments>
    where
        O: for<'r> FromRow<'r, PgRow>,
    {
        self.statements().query_as(sql)
    }

    /// [`sqlx::query_scalar`] as this pool must send it (see [`Db::query`]).
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// let stock: i32 = db
    ///     .autocommit(async |conn| {
    ///         db.query_scalar("SELECT stock FROM products WHERE id = $1")
    ///             .bind(7_i64)
    ///             .fetch_one(conn)
    ///             .await
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn query_scalar<'q, O>(
        &self,
        sql: impl SqlSafeStr,
    ) -> QueryScalar<'q, Postgres, O, PgArguments>
    where
        (O,): for<'r> FromRow<'r, PgRow>,
    {
        self.statements().query_scalar(sql)
    }

    /// Runs statements that need no transaction of the caller's: on a direct connection,
    /// on a connection from the pool, each statement committing on its own; behind
    /// [`Pooler::Transaction`](crate::Pooler::Transaction), in a transaction of their own
    /// ([`Db::begin`], with its schema check, then `COMMIT`).
    ///
    /// A transaction pooler hands out a server connection per transaction, and sqlx sends a
    /// parameterized statement as Parse, then Bind in a second round trip: outside a
    /// transaction the pooler may put another client's statement between the two, or the
    /// Bind on another server connection (`unnamed prepared statement does not exist`). In
    /// a transaction both reach the same server connection.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// let deleted = db
    ///     .autocommit(async |conn| {
    ///         db.query("DELETE FROM carts WHERE expires_at < now()")
    ///             .execute(conn)
    ///             .await
    ///             .map(|done| done.rows_affected())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The mapped driver error; behind a pooler, [`Error::SchemaMismatch`](crate::Error::SchemaMismatch)
    /// as from [`Db::begin`].
    pub async fn autocommit<T, E: StatementError>(
        &self,
        run: impl AsyncFnOnce(&mut PgConnection) -> std::result::Result<T, E>,
    ) -> Result<T> {
        if self.prepares() {
            let mut conn = self.acquire().await?;
            run(&mut conn).await.map_err(|e| e.into_error(self))
        } else {
            let mut tx = self.begin().await?;
            let value = run(&mut tx).await.map_err(|e| e.into_error(self))?;
            tx.commit().await.map_err(|e| self.map_err(e))?;
            Ok(value)
        }
    }
}

/// The errors a [`Db::autocommit`] body may return: sqlx's (mapped as every error on the
/// pool is, naming the server for a lost connection) or the crate's.
pub trait StatementError {
    /// The crate's error for this one, met on `db`.
    ///
    /// ```no_run
    /// use prost_db::StatementError;
    /// # fn f(db: &prost_db::Db) {
    /// let error = sqlx::Error::RowNotFound.into_error(db);
    /// # }
    /// ```
    fn into_error(self, db: &Db) -> crate::Error;
}

impl StatementError for sqlx::Error {
    fn into_error(self, db: &Db) -> crate::Error {
        db.map_err(self)
    }
}

impl StatementError for crate::Error {
    fn into_error(self, _: &Db) -> crate::Error {
        self
    }
}
