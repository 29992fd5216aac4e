//! Implementation detail of the `prost-db` crate.
