//! PostgreSQL types as marker types, named after `pg_type.typname`.
//!
//! ```
//! use prost_db::schema::{pg, CompatibleWith};
//!
//! fn holds<T: CompatibleWith<S>, S>() {}
//! holds::<i64, pg::int8>();
//! holds::<Option<String>, pg::varchar>();
//! holds::<Vec<uuid::Uuid>, pg::Array<pg::uuid>>();
//! holds::<sqlx::postgres::types::PgLTree, pg::ltree>();
//! ```

#![allow(non_camel_case_types)]

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
