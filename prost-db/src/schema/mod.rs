//! Tables described in Rust: `#[derive(Schema)]`, the type-compatibility trait, and the
//! startup check against the live database.
//!
//! `#[derive(Schema)]` checks a struct at compile time against the catalog built from the
//! migration files (see [`Schema`](macro@crate::Schema)), and implements [`Schema`] with the
//! table's [`TableDescription`]. At startup, [`Db::check_tables`](crate::Db::check_tables)
//! compares the descriptions with `pg_catalog` in one round trip and reports every
//! difference at once.
//!
//! ```no_run
//! use prost_db::schema::Schema;
//! use prost_db::Db;
//!
//! #[derive(prost_db::Schema)]
//! #[schema(schema = "catalog", table = "categories")]
//! struct Category {
//!     id: i64,
//!     name: String,
//!     description: Option<String>,
//! }
//!
//! # async fn run(db: Db) -> Result<(), prost_db::Error> {
//! db.check_tables(&[Category::TABLE]).await?;
//! # Ok(()) }
//! ```

use std::fmt;

mod check;
mod compat;
pub mod pg;
#[cfg(test)]
mod tests;

pub use compat::{CompatibleWith, EnumColumn};

/// A struct that maps to a table. Implement it with `#[derive(Schema)]`, which checks the
/// struct against the migrations at compile time.
///
/// ```
/// use prost_db::schema::{ColumnDescription, Schema, TableDescription};
///
/// // What `#[derive(Schema)]` generates, written by hand:
/// struct Category { id: i64 }
/// impl Schema for Category {
///     const TABLE: &'static TableDescription = &TableDescription {
///         schema: "catalog",
///         name: "categories",
///         columns: &[ColumnDescription { name: "id", sql_type: Some("int8"), nullable: Some(false) }],
///     };
/// }
/// assert_eq!(Category::TABLE.qualified_name(), "catalog.categories");
/// ```
pub trait Schema {
    /// The table, as the migrations define it, restricted to the struct's fields.
    const TABLE: &'static TableDescription;
}

/// A table as the code expects it: qualified name and the columns the code uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TableDescription {
    /// The schema.
    pub schema: &'static str,
    /// The table name.
    pub name: &'static str,
    /// The columns, in field order.
    pub columns: &'static [ColumnDescription],
}

impl TableDescription {
    /// `schema.name`.
    ///
    /// ```
    /// let t = prost_db::schema::TableDescription { schema: "orders", name: "orders", columns: &[] };
    /// assert_eq!(t.qualified_name(), "orders.orders");
    /// ```
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// A column as the code expects it.
///
/// ```
/// use prost_db::schema::ColumnDescription;
///
/// let id = ColumnDescription { name: "id", sql_type: Some("int8"), nullable: Some(false) };
/// assert_eq!(id.sql_type, Some("int8"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ColumnDescription {
    /// The column name.
    pub name: &'static str,
    /// Its type as `pg_type.typname` (`int8`, `varchar`, `timestamptz`, `_text`, an enum's
    /// current name, after the migrations' renames); `None` for `#[schema(unchecked)]`
    /// fields, whose type is not compared.
    pub sql_type: Option<&'static str>,
    /// Whether it accepts NULL; `None` for `#[schema(unchecked)]` fields.
    pub nullable: Option<bool>,
}

/// One way the live database differs from a [`TableDescription`].
///
/// ```
/// use prost_db::schema::SchemaDifference;
///
/// let d = SchemaDifference::MissingColumn { table: "catalog.products".into(), column: "sku".into() };
/// assert_eq!(d.to_string(), "column `sku` of `catalog.products` does not exist");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaDifference {
    /// The table does not exist.
    MissingTable {
        /// `schema.table`.
        table: String,
    },
    /// The table exists but has no such column.
    MissingColumn {
        /// `schema.table`.
        table: String,
        /// The column.
        column: String,
    },
    /// The column's type differs.
    TypeMismatch {
        /// `schema.table`.
        table: String,
        /// The column.
        column: String,
        /// `typname` the code expects.
        expected: String,
        /// `typname` the database has.
        actual: String,
    },
    /// The column's nullability differs.
    NullabilityMismatch {
        /// `schema.table`.
        table: String,
        /// The column.
        column: String,
        /// Whether the code expects it to accept NULL.
        expected_nullable: bool,
    },
}

impl fmt::Display for SchemaDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaDifference::MissingTable { table } => write!(f, "table `{table}` does not exist"),
            SchemaDifference::MissingColumn { table, column } => {
                write!(f, "column `{column}` of `{table}` does not exist")
            }
            SchemaDifference::TypeMismatch {
                table,
                column,
                expected,
                actual,
            } => write!(
                f,
                "column `{column}` of `{table}` is `{actual}`, the code expects `{expected}`"
            ),
            SchemaDifference::NullabilityMismatch {
                table,
                column,
                expected_nullable,
            } => {
                let (actual, expected) = if *expected_nullable {
                    ("NOT NULL", "NULL")
                } else {
                    ("NULL", "NOT NULL")
                };
                write!(
                    f,
                    "column `{column}` of `{table}` is {actual}, the code expects {expected}"
                )
            }
        }
    }
}

/// The differences of one [`Db::check_tables`](crate::Db::check_tables) run, shown one per line.
///
/// ```
/// use prost_db::schema::{SchemaDifference, SchemaDrift};
///
/// let drift = SchemaDrift(vec![SchemaDifference::MissingTable { table: "orders.orders".into() }]);
/// assert_eq!(drift.to_string(), "\n  - table `orders.orders` does not exist");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaDrift(pub Vec<SchemaDifference>);

impl fmt::Display for SchemaDrift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for difference in &self.0 {
            write!(f, "\n  - {difference}")?;
        }
        Ok(())
    }
}

/// Not public API: what `#[derive(Schema)]` expands to.
#[doc(hidden)]
pub mod __private {
    use super::EnumColumn;

    const fn same(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }

    /// Fails to compile, on the field's type, unless `T` can hold an enum column of shape
    /// `S`, and, with `message`, unless it maps to the enum `schema.name` (or to any enum).
    pub const fn assert_enum<T: ?Sized + EnumColumn<S>, S>(
        schema: &str,
        name: &str,
        message: &str,
    ) {
        if let Some((s, n)) = <T as EnumColumn<S>>::SQL_ENUM
            && !(same(s, schema) && same(n, name))
        {
            panic!("{}", message);
        }
    }
}
