//! The shop.

pub mod tables;
