//! The connection manager: a pool bound to one service and its schema.

mod config;
mod db;
mod health;
mod purge;
mod scale;
mod session;
mod statement;

pub use config::DbConfig;
pub use db::Db;
pub(crate) use db::begin;
pub(crate) use db::begin_chained;
pub use health::{Health, PoolStats};
pub(crate) use purge::purge_in_batches;
#[cfg(test)]
pub(crate) use session::{begin_statement, chained_statement};
pub use statement::{StatementError, Statements};
