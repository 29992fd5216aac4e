//! Which Rust types hold which PostgreSQL types: [`CompatibleWith`] and [`EnumColumn`].

use super::pg;

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
