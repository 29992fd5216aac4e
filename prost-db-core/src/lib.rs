//! Implementation detail of the `prost-db` crate: what the runtime and the macros share.
//!
//! - [`ident`]: the identifier grammar;
//! - [`source`]: migration files on disk (names, order, directives, checksums).

pub mod ident;
pub mod source;
