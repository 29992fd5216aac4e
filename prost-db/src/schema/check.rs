//! The startup check: [`Db::check_tables`] against `pg_catalog`, in one round trip.

use std::collections::HashMap;

use super::{SchemaDifference, SchemaDrift, TableDescription};
use crate::error::{Error, Result};
use crate::pool::Db;

const CHECK_TABLES: &str = "\
SELECT w.ord, a.attname::text, t.typname::text, a.attnotnull, c.oid IS NOT NULL \
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(nspname, relname, ord) \
LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = w.nspname \
LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.relname \
     AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid";

pub(super) type LiveRow = (i64, Option<String>, Option<String>, Option<bool>, bool);

/// Per described table (by position): whether it exists, and its columns' `(typname, not null)`.
type LiveTables<'r> = HashMap<i64, (bool, HashMap<&'r str, (&'r str, bool)>)>;

impl Db {
    /// Compares tables described by `#[derive(Schema)]` with the live database in one round
    /// trip, and reports every missing table or column and every type or nullability
    /// difference at once. Call it at startup to catch drift (a hand-made change, a
    /// migration that did not run, the wrong database) before the first request.
    ///
    /// ```no_run
    /// use prost_db::schema::Schema;
    ///
    /// #[derive(prost_db::Schema)]
    /// #[schema(schema = "users", table = "users")]
    /// struct User { id: uuid::Uuid, email: String }
    ///
    /// # async fn run(db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// if let Err(prost_db::Error::SchemaDrift(drift)) = db.check_tables(&[User::TABLE]).await {
    ///     for difference in &drift.0 {
    ///         eprintln!("{difference}");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::SchemaDrift`] listing every difference; a database error otherwise.
    pub async fn check_tables(&self, tables: &[&TableDescription]) -> Result<()> {
        let schemas: Vec<&str> = tables.iter().map(|t| t.schema).collect();
        let names: Vec<&str> = tables.iter().map(|t| t.name).collect();
        let rows: Vec<LiveRow> = self
            .autocommit(async |conn| {
                self.query_as(CHECK_TABLES)
                    .bind(&schemas)
                    .bind(&names)
                    .fetch_all(conn)
                    .await
            })
            .await?;
        let differences = compare(tables, &rows);
        if differences.is_empty() {
            Ok(())
        } else {
            Err(Error::SchemaDrift(SchemaDrift(differences)))
        }
    }
}

pub(super) fn compare(tables: &[&TableDescription], rows: &[LiveRow]) -> Vec<SchemaDifference> {
    let mut live: LiveTables<'_> = HashMap::new();
    for (ord, column, ty, not_null, exists) in rows {
        let entry = live
            .entry(*ord)
            .or_insert_with(|| (*exists, HashMap::new()));
        if let (Some(column), Some(ty), Some(not_null)) = (column, ty, not_null) {
            entry.1.insert(column.as_str(), (ty.as_str(), *not_null));
        }
    }
    let mut differences = Vec::new();
    for (ord, description) in (1..).zip(tables) {
        let table = description.qualified_name();
        let Some((true, columns)) = live.get(&ord) else {
            differences.push(SchemaDifference::MissingTable { table });
            continue;
        };
        for column in description.columns {
            let Some(&(actual, not_null)) = columns.get(column.name) else {
                differences.push(SchemaDifference::MissingColumn {
                    table: table.clone(),
                    column: column.name.to_owned(),
                });
                continue;
            };
            if let Some(expected) = column.sql_type.filter(|&e| e != actual) {
                differences.push(SchemaDifference::TypeMismatch {
                    table: table.clone(),
                    column: column.name.to_owned(),
                    expected: expected.to_owned(),
                    actual: actual.to_owned(),
                });
            }
            if let Some(nullable) = column.nullable.filter(|&n| n == not_null) {
                differences.push(SchemaDifference::NullabilityMismatch {
                    table: table.clone(),
                    column: column.name.to_owned(),
                    expected_nullable: nullable,
                });
            }
        }
    }
    differences
}
