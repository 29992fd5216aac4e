//! Tables described in Rust: `#[derive(Schema)]`, the type-compatibility trait, and the
//! startup check against the live database.
//!
//! `#[derive(Schema)]` checks a struct at compile time against the catalog built from the
//! migration files (see [`Schema`](macro@crate::Schema)), and implements [`Schema`] with the
//! table's [`TableDescription`]. At startup, [`Db::check_tables`] compares the descriptions
//! with `pg_catalog` in one round trip and reports every difference at once.
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

use std::collections::HashMap;
use std::fmt;

use crate::error::{Error, Result};
use crate::pool::Db;

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

/// The differences of one [`Db::check_tables`] run, shown one per line.
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

const CHECK_TABLES: &str = "\
SELECT w.ord, a.attname::text, t.typname::text, a.attnotnull, c.oid IS NOT NULL \
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(nspname, relname, ord) \
LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = w.nspname \
LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.relname \
     AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid";

type LiveRow = (i64, Option<String>, Option<String>, Option<bool>, bool);

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
        let rows: Vec<LiveRow> = sqlx::query_as(CHECK_TABLES)
            .bind(&schemas)
            .bind(&names)
            .fetch_all(self.pool())
            .await
            .map_err(|e| self.map_err(e))?;
        let differences = compare(tables, &rows);
        if differences.is_empty() {
            Ok(())
        } else {
            Err(Error::SchemaDrift(SchemaDrift(differences)))
        }
    }
}

fn compare(tables: &[&TableDescription], rows: &[LiveRow]) -> Vec<SchemaDifference> {
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

/// Marks `Self` as able to hold values of the PostgreSQL type `S` (a marker from [`pg`]).
///
/// `#[derive(Schema)]` requires `FieldType: CompatibleWith<pg::column_type>` for every
/// checked field. Opt your own types in with an empty impl:
///
/// ```
/// use prost_db::schema::{pg, CompatibleWith};
///
/// /// Cents stored in a `NUMERIC(10, 2)` column.
/// struct Money(rust_decimal::Decimal);
/// impl CompatibleWith<pg::numeric> for Money {}
///
/// /// A label path stored in an `ltree` column (an extension type: no Rust type holds it
/// /// unless it opts in, or the field is marked `#[schema(unchecked_type)]`).
/// struct Path(String);
/// impl CompatibleWith<pg::ltree> for Path {}
/// ```
///
/// Enum columns are checked by [`EnumColumn`] instead.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot hold a PostgreSQL `{S}` column",
    label = "the migrations give this column the SQL type `{S}`",
    note = "change the field's type, implement `prost_db::schema::CompatibleWith<{S}>` for it, or mark the field `#[schema(unchecked_type)]`"
)]
pub trait CompatibleWith<S> {}

/// A Rust type that can hold a column of a PostgreSQL enum type (`S` is
/// [`pg::Enum`](pg::Enum), or [`pg::Array<pg::Enum>`](pg::Array) for an array of one): a
/// Rust enum with `#[derive(sqlx::Type, prost_db::Schema)]`, which names its enum type and
/// whose labels `#[derive(Schema)]` checks, or `String` (any enum, labels unchecked).
///
/// ```
/// use prost_db::schema::{pg, EnumColumn};
///
/// assert_eq!(<String as EnumColumn<pg::Enum>>::SQL_ENUM, None);
/// assert_eq!(<Option<Vec<String>> as EnumColumn<pg::Array<pg::Enum>>>::SQL_ENUM, None);
/// ```
///
/// `#[derive(Schema)]` on the enum implements it:
///
/// ```ignore
/// #[derive(sqlx::Type, prost_db::Schema)]
/// #[sqlx(type_name = "order_status", rename_all = "snake_case")]
/// enum OrderStatus { Pending, Paid }
/// // impl EnumColumn<pg::Enum> for OrderStatus { SQL_ENUM = Some(("orders", "order_status")) }
/// ```
///
/// A `String` field decodes an enum column only if the query casts it (`status::text`):
/// sqlx checks the column's type when it decodes a row.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot hold this PostgreSQL enum column",
    label = "the migrations give this column an enum type",
    note = "use a Rust enum with `#[derive(sqlx::Type, prost_db::Schema)]` (its `#[sqlx(type_name)]` and labels are checked against the migrations), or `String` (`Vec<_>` for an array of enums), or mark the field `#[schema(unchecked_type)]`"
)]
pub trait EnumColumn<S> {
    /// `(schema, type name)` of the PostgreSQL enum this type maps to, or `None` for a type
    /// that holds any enum (`String`).
    const SQL_ENUM: Option<(&'static str, &'static str)>;
}

impl EnumColumn<pg::Enum> for String {
    const SQL_ENUM: Option<(&'static str, &'static str)> = None;
}
impl<T: EnumColumn<S>, S> EnumColumn<S> for Option<T> {
    const SQL_ENUM: Option<(&'static str, &'static str)> = T::SQL_ENUM;
}
impl<T: EnumColumn<pg::Enum>> EnumColumn<pg::Array<pg::Enum>> for Vec<T> {
    const SQL_ENUM: Option<(&'static str, &'static str)> = T::SQL_ENUM;
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

/// PostgreSQL types as marker types, named after `pg_type.typname`.
///
/// ```
/// use prost_db::schema::{pg, CompatibleWith};
///
/// fn holds<T: CompatibleWith<S>, S>() {}
/// holds::<i64, pg::int8>();
/// holds::<Option<String>, pg::varchar>();
/// holds::<Vec<uuid::Uuid>, pg::Array<pg::uuid>>();
/// holds::<sqlx::postgres::types::PgLTree, pg::ltree>();
/// ```
#[allow(non_camel_case_types)]
pub mod pg {
    use std::marker::PhantomData;

    macro_rules! markers {
        ($($name:ident),* $(,)?) => {
            $(
                #[doc = concat!("The PostgreSQL type `", stringify!($name), "`.")]
                #[derive(Debug, Clone, Copy)]
                pub struct $name;
            )*
            /// The markers' names, as `#[derive(Schema)]` knows them.
            #[cfg(test)]
            pub(super) const NAMES: &[&str] = &[$(stringify!($name)),*];
        };
    }

    markers!(
        int2,
        int4,
        int8,
        float4,
        float8,
        numeric,
        varchar,
        bpchar,
        text,
        citext,
        name,
        bool,
        uuid,
        date,
        time,
        timetz,
        timestamp,
        timestamptz,
        interval,
        json,
        jsonb,
        jsonpath,
        bytea,
        inet,
        cidr,
        macaddr,
        macaddr8,
        money,
        xml,
        oid,
        bit,
        varbit,
        point,
        line,
        lseg,
        r#box,
        path,
        polygon,
        circle,
        tsvector,
        tsquery,
        int4range,
        int8range,
        numrange,
        tsrange,
        tstzrange,
        daterange,
        int4multirange,
        int8multirange,
        nummultirange,
        tsmultirange,
        tstzmultirange,
        datemultirange,
        regclass,
        regtype,
        regproc,
        pg_lsn,
        xid,
        xid8,
        cid,
        tid,
        txid_snapshot,
        pg_snapshot,
        hstore,
        ltree,
        lquery,
        cube,
    );

    /// Any enum type made with `CREATE TYPE ... AS ENUM` (its name is checked by
    /// [`EnumColumn`](super::EnumColumn)).
    #[derive(Debug, Clone, Copy)]
    pub struct Enum;

    /// An array of `S` (`typname` `_s`).
    #[derive(Debug, Clone, Copy)]
    pub struct Array<S>(PhantomData<S>);
}

impl CompatibleWith<pg::int2> for i16 {}
impl CompatibleWith<pg::int4> for i32 {}
impl CompatibleWith<pg::int8> for i64 {}
impl CompatibleWith<pg::float4> for f32 {}
impl CompatibleWith<pg::float8> for f64 {}
impl CompatibleWith<pg::bool> for bool {}
impl CompatibleWith<pg::varchar> for String {}
impl CompatibleWith<pg::bpchar> for String {}
impl CompatibleWith<pg::text> for String {}
impl CompatibleWith<pg::citext> for String {}
impl CompatibleWith<pg::name> for String {}
impl CompatibleWith<pg::varchar> for &str {}
impl CompatibleWith<pg::bpchar> for &str {}
impl CompatibleWith<pg::text> for &str {}
impl CompatibleWith<pg::citext> for &str {}
impl CompatibleWith<pg::name> for &str {}
impl CompatibleWith<pg::varchar> for std::borrow::Cow<'_, str> {}
impl CompatibleWith<pg::bpchar> for std::borrow::Cow<'_, str> {}
impl CompatibleWith<pg::text> for std::borrow::Cow<'_, str> {}
impl CompatibleWith<pg::citext> for std::borrow::Cow<'_, str> {}
impl CompatibleWith<pg::name> for std::borrow::Cow<'_, str> {}
impl CompatibleWith<pg::varchar> for Box<str> {}
impl CompatibleWith<pg::bpchar> for Box<str> {}
impl CompatibleWith<pg::text> for Box<str> {}
impl CompatibleWith<pg::citext> for Box<str> {}
impl CompatibleWith<pg::name> for Box<str> {}
impl CompatibleWith<pg::numeric> for rust_decimal::Decimal {}
impl CompatibleWith<pg::uuid> for uuid::Uuid {}
impl CompatibleWith<pg::date> for chrono::NaiveDate {}
impl CompatibleWith<pg::time> for chrono::NaiveTime {}
impl CompatibleWith<pg::timestamp> for chrono::NaiveDateTime {}
impl CompatibleWith<pg::timestamptz> for chrono::DateTime<chrono::Utc> {}
impl CompatibleWith<pg::timestamptz> for chrono::DateTime<chrono::Local> {}
impl CompatibleWith<pg::timestamptz> for chrono::DateTime<chrono::FixedOffset> {}
impl CompatibleWith<pg::interval> for sqlx::postgres::types::PgInterval {}
impl CompatibleWith<pg::timetz> for sqlx::postgres::types::PgTimeTz {}
impl CompatibleWith<pg::money> for sqlx::postgres::types::PgMoney {}
impl CompatibleWith<pg::oid> for sqlx::postgres::types::Oid {}
impl CompatibleWith<pg::citext> for sqlx::postgres::types::PgCiText {}
impl CompatibleWith<pg::ltree> for sqlx::postgres::types::PgLTree {}
impl CompatibleWith<pg::lquery> for sqlx::postgres::types::PgLQuery {}
impl CompatibleWith<pg::hstore> for sqlx::postgres::types::PgHstore {}
impl CompatibleWith<pg::cube> for sqlx::postgres::types::PgCube {}
impl CompatibleWith<pg::point> for sqlx::postgres::types::PgPoint {}
impl CompatibleWith<pg::line> for sqlx::postgres::types::PgLine {}
impl CompatibleWith<pg::lseg> for sqlx::postgres::types::PgLSeg {}
impl CompatibleWith<pg::r#box> for sqlx::postgres::types::PgBox {}
impl CompatibleWith<pg::path> for sqlx::postgres::types::PgPath {}
impl CompatibleWith<pg::polygon> for sqlx::postgres::types::PgPolygon {}
impl CompatibleWith<pg::circle> for sqlx::postgres::types::PgCircle {}
impl CompatibleWith<pg::int4range> for sqlx::postgres::types::PgRange<i32> {}
impl CompatibleWith<pg::int8range> for sqlx::postgres::types::PgRange<i64> {}
impl CompatibleWith<pg::numrange> for sqlx::postgres::types::PgRange<rust_decimal::Decimal> {}
impl CompatibleWith<pg::daterange> for sqlx::postgres::types::PgRange<chrono::NaiveDate> {}
impl CompatibleWith<pg::tsrange> for sqlx::postgres::types::PgRange<chrono::NaiveDateTime> {}
impl CompatibleWith<pg::tstzrange>
    for sqlx::postgres::types::PgRange<chrono::DateTime<chrono::Utc>>
{
}
impl CompatibleWith<pg::json> for serde_json::Value {}
impl CompatibleWith<pg::jsonb> for serde_json::Value {}
impl CompatibleWith<pg::bytea> for Vec<u8> {}
impl CompatibleWith<pg::bytea> for &[u8] {}

impl<T> CompatibleWith<pg::json> for sqlx::types::Json<T> {}
impl<T> CompatibleWith<pg::jsonb> for sqlx::types::Json<T> {}
impl<T: CompatibleWith<S>, S> CompatibleWith<S> for Option<T> {}
impl<T: CompatibleWith<S>, S> CompatibleWith<pg::Array<S>> for Vec<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    const PRODUCTS: TableDescription = TableDescription {
        schema: "catalog",
        name: "products",
        columns: &[
            ColumnDescription {
                name: "id",
                sql_type: Some("int8"),
                nullable: Some(false),
            },
            ColumnDescription {
                name: "name",
                sql_type: Some("varchar"),
                nullable: Some(false),
            },
            ColumnDescription {
                name: "gone",
                sql_type: Some("text"),
                nullable: Some(true),
            },
            ColumnDescription {
                name: "free",
                sql_type: None,
                nullable: None,
            },
        ],
    };
    const MISSING: TableDescription = TableDescription {
        schema: "catalog",
        name: "nope",
        columns: &[],
    };

    fn row(column: &str, ty: &str, not_null: bool) -> LiveRow {
        (
            1,
            Some(column.into()),
            Some(ty.into()),
            Some(not_null),
            true,
        )
    }

    #[test]
    fn the_derive_knows_every_marker_and_no_other() {
        let names: Vec<&str> = pg::NAMES
            .iter()
            .map(|n| n.trim_start_matches("r#"))
            .collect();
        assert_eq!(names, prost_db_core::sql_types::MARKED);
    }

    #[test]
    fn reports_every_difference() {
        let rows = vec![
            row("id", "int4", false),
            row("name", "varchar", true),
            row("free", "whatever", true),
            (2, None, None, None, false),
        ];
        let differences = compare(&[&PRODUCTS, &MISSING], &rows);
        let text: Vec<String> = differences.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "column `id` of `catalog.products` is `int4`, the code expects `int8`",
                "column `id` of `catalog.products` is NULL, the code expects NOT NULL",
                "column `gone` of `catalog.products` does not exist",
                "table `catalog.nope` does not exist",
            ]
        );
    }
}
