//! Schema utilities: what tables and columns the service's schema has.
//!
//! All of these read `pg_catalog` with bind parameters; none builds SQL from names.

use crate::error::{Error, Result};
use crate::ident::{Identifier, IdentifierKind};
use crate::pool::Db;

/// One column of a table, as PostgreSQL reports it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// The type as `format_type` prints it (`bigint`, `numeric(12,2)`, `timestamp with time zone`).
    pub data_type: String,
    /// Whether the column accepts NULL.
    pub nullable: bool,
}

impl Db {
    /// The schema `current_schema()` reports on a pooled connection.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// assert_eq!(db.current_schema().await?, db.schema());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::SchemaMissing`] if the schema does not exist; a database error otherwise.
    pub async fn current_schema(&self) -> Result<String> {
        // The simple protocol: one message, so it holds behind a transaction pooler too.
        let row = sqlx::raw_sql("SELECT current_schema()::text")
            .fetch_one(self.pool())
            .await
            .map_err(|e| self.map_err(e))?;
        let current: Option<String> = sqlx::Row::try_get(&row, 0).map_err(Error::Database)?;
        current.ok_or_else(|| Error::SchemaMissing {
            schema: self.schema().to_owned(),
            database: self.database().to_owned(),
        })
    }

    /// Whether `table` exists in the service's schema (tables, partitioned tables, views).
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// if !db.table_exists("products").await? {
    ///     eprintln!("products table not found: did the migrations run?");
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidIdentifier`] for a bad name; a database error otherwise.
    pub async fn table_exists(&self, table: &str) -> Result<bool> {
        Identifier::new(IdentifierKind::Table, table)?;
        let missing = self.missing_tables(&[table]).await?;
        Ok(missing.is_empty())
    }

    /// The tables of the service's schema, sorted by name.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// let tables = db.list_tables().await?;
    /// println!("{} has {tables:?}", db.schema());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// A database error.
    pub async fn list_tables(&self) -> Result<Vec<String>> {
        self.autocommit(async |conn| {
            self.query_scalar(
                "SELECT c.relname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
             ORDER BY c.relname",
            )
            .bind(self.schema())
            .fetch_all(conn)
            .await
        })
        .await
    }

    /// The columns of `table` in the service's schema, in table order. Empty if the table
    /// does not exist.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// for column in db.columns("products").await? {
    ///     println!("{} {} {}", column.name, column.data_type, if column.nullable { "NULL" } else { "NOT NULL" });
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidIdentifier`] for a bad name; a database error otherwise.
    pub async fn columns(&self, table: &str) -> Result<Vec<ColumnInfo>> {
        Identifier::new(IdentifierKind::Table, table)?;
        self.autocommit(async |conn| {
            self.query_as(
                "SELECT a.attname::text AS name, \
                    pg_catalog.format_type(a.atttypid, a.atttypmod) AS data_type, \
                    NOT a.attnotnull AS nullable \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            )
            .bind(self.schema())
            .bind(table)
            .fetch_all(conn)
            .await
        })
        .await
    }

    /// Checks that every table in `tables` exists, in one round trip, and reports all the
    /// missing ones at once.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// // At startup: fail fast instead of crashing on the first request.
    /// db.require_tables(&["products", "categories", "inventory_reservations"]).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::MissingTables`] listing every missing table; [`Error::InvalidIdentifier`]
    /// for a bad name (before any query).
    pub async fn require_tables(&self, tables: &[&str]) -> Result<()> {
        for table in tables {
            Identifier::new(IdentifierKind::Table, table)?;
        }
        let missing = self.missing_tables(tables).await?;
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::MissingTables {
                schema: self.schema().to_owned(),
                missing,
            })
        }
    }

    async fn missing_tables(&self, tables: &[&str]) -> Result<Vec<String>> {
        self.autocommit(async |conn| {
            self.query_scalar(
                "SELECT wanted.name FROM unnest($2::text[]) WITH ORDINALITY AS wanted(name, ord) \
             WHERE NOT EXISTS ( \
                 SELECT 1 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = wanted.name \
                   AND c.relkind IN ('r', 'p', 'v', 'm', 'f')) \
             ORDER BY wanted.ord",
            )
            .bind(self.schema())
            .bind(tables)
            .fetch_all(conn)
            .await
        })
        .await
    }
}
