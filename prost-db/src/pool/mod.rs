//! The connection manager: a pool bound to one service and its schema.

mod config;
mod db;
mod health;
mod purge;
mod session;

pub use config::DbConfig;
pub use db::Db;
pub use health::{Health, PoolStats};
pub(crate) use purge::purge_in_batches;
pub(crate) use session::{begin, begin_chained};
