//! Implementation detail of the `prost-db` crate: what the runtime and the macros share.
//!
//! - [`ident`]: the identifier grammar;
//! - [`source`]: migration files on disk (names, order, directives, checksums);
//! - [`split`]: the SQL statement splitter (psql's rules) the migrator and the catalog share;
//! - [`sql_types`]: the PostgreSQL types the schema checks have a Rust marker for;
//! - `catalog` (feature `catalog`): the tables and columns the migrations create, built
//!   without a database, for `#[derive(Schema)]`.

#[cfg(feature = "catalog")]
pub mod catalog;
pub mod ident;
pub mod source;
pub mod split;
pub mod sql_types;
