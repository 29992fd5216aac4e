//! Liveness and pool statistics: [`Db::health`] and [`Db::stats`].

use std::time::{Duration, Instant};

use super::Db;
use crate::error::Result;

impl Db {
    /// A cheap liveness check: one `SELECT current_schema()` round trip.
    ///
    /// ```no_run
    /// # async fn run(db: prost_db::Db) -> Result<(), prost_db::Error> {
    /// let health = db.health().await?;
    /// println!("{:?}, {} of {} connections idle", health.latency, health.pool.idle, health.pool.size);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The connection error, or [`Error::SchemaMissing`](crate::Error::SchemaMissing) if the
    /// schema was dropped.
    pub async fn health(&self) -> Result<Health> {
        let started = Instant::now();
        self.verify_schema().await?;
        Ok(Health {
            latency: started.elapsed(),
            pool: self.stats(),
        })
    }

    /// The pool's current size and idle count.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: self.pool.num_idle(),
            max: self.pool.options().get_max_connections(),
            min: self.pool.options().get_min_connections(),
        }
    }
}

/// The result of [`Db::health`].
#[derive(Debug, Clone, Copy)]
pub struct Health {
    /// Round-trip time of the check.
    pub latency: Duration,
    /// Pool statistics at the time of the check.
    pub pool: PoolStats,
}

/// Pool statistics, from [`Db::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections, busy or idle.
    pub size: u32,
    /// Idle connections.
    pub idle: usize,
    /// Configured maximum.
    pub max: u32,
    /// Configured minimum.
    pub min: u32,
}
