//! The PostgreSQL types (by `pg_type.typname`) that `prost_db::schema::pg` has a marker
//! for: `#[derive(Schema)]` checks a column of one of these against the field's Rust type,
//! and asks for an explicit opt-in (`#[schema(unchecked_type)]`) for any other type.

/// See the [module docs](self).
///
/// ```
/// assert!(prost_db_core::sql_types::MARKED.contains(&"ltree"));
/// ```
pub const MARKED: &[&str] = &[
    "int2",
    "int4",
    "int8",
    "float4",
    "float8",
    "numeric",
    "varchar",
    "bpchar",
    "text",
    "citext",
    "name",
    "bool",
    "uuid",
    "date",
    "time",
    "timetz",
    "timestamp",
    "timestamptz",
    "interval",
    "json",
    "jsonb",
    "jsonpath",
    "bytea",
    "inet",
    "cidr",
    "macaddr",
    "macaddr8",
    "money",
    "xml",
    "oid",
    "bit",
    "varbit",
    "point",
    "line",
    "lseg",
    "box",
    "path",
    "polygon",
    "circle",
    "tsvector",
    "tsquery",
    "int4range",
    "int8range",
    "numrange",
    "tsrange",
    "tstzrange",
    "daterange",
    "int4multirange",
    "int8multirange",
    "nummultirange",
    "tsmultirange",
    "tstzmultirange",
    "datemultirange",
    "regclass",
    "regtype",
    "regproc",
    "pg_lsn",
    "xid",
    "xid8",
    "cid",
    "tid",
    "txid_snapshot",
    "pg_snapshot",
    "hstore",
    "ltree",
    "lquery",
    "cube",
];

/// Whether `typname` has a marker.
///
/// ```
/// assert!(prost_db_core::sql_types::is_marked("int8"));
/// assert!(!prost_db_core::sql_types::is_marked("my_composite"));
/// ```
pub fn is_marked(typname: &str) -> bool {
    MARKED.contains(&typname)
}
