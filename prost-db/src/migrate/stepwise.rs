//! The step-by-step strategy: each step commits on its own under a session lock on a
//! dedicated connection, and a failed `up` runs the DOWN scripts of the steps this
//! deployment applied, newest first.

use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::error::{FailureOutcome, MigrateError, ScriptFailure};
use super::execute::{RESET, ScriptResult};
use super::ledger::Direction;
use super::migrator::Run;
use super::plan::Revert;
use super::report::{Report, RunMode, step_reports};
use crate::Error;
use prost_db_core::source::{Migration, has_no_transaction_directive};

impl Run<'_> {
    /// `up` step by step on the run's session, under the session-scoped lock (released
    /// when the session closes, whatever happened).
    pub(super) async fn up_step_by_step(
        &mut self,
        conn: &mut PgConnection,
    ) -> Result<Report, Error> {
        let state = self.lock_and_read(conn, false).await?;
        let plan = self.plan(&state)?;
        for (m, old) in &plan.changed {
            self.accept_checksum(conn, m, old).await?;
        }
        let mut applied: Vec<(&Migration, Duration)> = vec![];
        for m in &plan.pending {
            let started = Instant::now();
            let outcome = self.step(conn, m, Direction::Up, "applied").await?;
            let duration = started.elapsed();
            if let Err(failure) = outcome {
                self.log_failure(conn, m, &failure, "failed").await?;
                let outcome = self.roll_back(conn, m, &applied).await?;
                return Err(MigrateError::Failed { failure, outcome }.into());
            }
            tracing::info!(version = m.version, name = %m.name, ?duration, "applied");
            applied.push((m, duration));
        }
        let mode = if applied.is_empty() {
            RunMode::NothingToDo
        } else {
            RunMode::StepByStep
        };
        Ok(self.report(mode, vec![], step_reports(&applied)))
    }

    /// One step with its own commit: the script and its bookkeeping in one transaction, or,
    /// for a non-transactional script, statement by statement and then the bookkeeping.
    async fn step(
        &mut self,
        conn: &mut PgConnection,
        m: &Migration,
        direction: Direction,
        event: &str,
    ) -> ScriptResult {
        let script = match direction {
            Direction::Up => &m.up,
            Direction::Down => m.down.as_ref().expect("checked reversible"),
        };
        let started = Instant::now();
        if has_no_transaction_directive(&script.sql) {
            self.queries += 1;
            sqlx::raw_sql(RESET).execute(&mut *conn).await?;
            if let Err(failure) = self.script_statements(conn, m, script).await? {
                return Ok(Err(failure));
            }
            self.record(conn, direction, &[(m, started.elapsed())], event)
                .await?;
        } else {
            self.queries += 2;
            let mut tx = conn.begin().await?;
            if let Err(mut failure) = self.script_in_tx(&mut tx, m, script).await? {
                tx.rollback().await?;
                if failure.line.is_none() && direction == Direction::Up {
                    let mut tx = conn.begin().await?;
                    failure.line = self.locate(&mut tx, &[], m).await;
                    tx.rollback().await?;
                }
                return Ok(Err(failure));
            }
            self.record(&mut tx, direction, &[(m, started.elapsed())], event)
                .await?;
            tx.commit().await?;
        }
        Ok(Ok(()))
    }

    /// After `failed` failed in a step-by-step `up`: its own DOWN if it is
    /// non-transactional (a failed `CREATE INDEX CONCURRENTLY` leaves an invalid index),
    /// then the DOWNs of this deployment's steps, newest first.
    async fn roll_back(
        &mut self,
        conn: &mut PgConnection,
        failed: &Migration,
        applied: &[(&Migration, Duration)],
    ) -> Result<FailureOutcome, Error> {
        if let (true, Some(down)) = (failed.no_transaction, &failed.down) {
            let run = if has_no_transaction_directive(&down.sql) {
                self.script_statements(conn, failed, down).await?
            } else {
                let mut tx = conn.begin().await?;
                let r = self.script_in_tx(&mut tx, failed, down).await?;
                if r.is_ok() {
                    tx.commit().await?;
                } else {
                    tx.rollback().await?;
                }
                r
            };
            if let Err(f) = run {
                tracing::warn!(failure = %f, "cleanup of the failed non-transactional step failed");
            }
        }
        let mut reverted = vec![];
        for (m, _) in applied.iter().rev() {
            if m.down.is_none() {
                let reason = format!("{} has no .down.sql", m.up.path);
                let failure = ScriptFailure {
                    schema: self.schema.as_str().to_owned(),
                    version: m.version,
                    file: m.up.path.to_string(),
                    line: None,
                    sqlstate: None,
                    message: reason.clone(),
                    blocked_by: vec![],
                };
                self.log_failure(conn, m, &failure, "rollback_failed")
                    .await?;
                return Ok(FailureOutcome::RollbackIncomplete {
                    reverted,
                    stuck: m.version,
                    reason,
                });
            }
            if let Err(failure) = self.step(conn, m, Direction::Down, "rolled_back").await? {
                self.log_failure(conn, m, &failure, "rollback_failed")
                    .await?;
                return Ok(FailureOutcome::RollbackIncomplete {
                    reverted,
                    stuck: m.version,
                    reason: failure.to_string(),
                });
            }
            tracing::warn!(version = m.version, name = %m.name, "rolled back");
            reverted.push(m.version);
        }
        Ok(FailureOutcome::Reverted { versions: reverted })
    }
    /// `down` or `redo` step by step, as for `up`.
    pub(super) async fn revert_step_by_step(
        &mut self,
        conn: &mut PgConnection,
        revert: Revert,
    ) -> Result<Report, Error> {
        let state = self.lock_and_read(conn, false).await?;
        let targets = self.revert_targets(&state, revert)?;
        let mut reverted = vec![];
        for m in &targets {
            let started = Instant::now();
            if let Err(failure) = self.step(conn, m, Direction::Down, "reverted").await? {
                self.log_failure(conn, m, &failure, "failed").await?;
                return Err(MigrateError::Failed {
                    failure,
                    outcome: FailureOutcome::Stopped,
                }
                .into());
            }
            reverted.push((*m, started.elapsed()));
        }
        let mut applied = vec![];
        if revert.reapplies() {
            for m in targets.iter().rev() {
                let started = Instant::now();
                if let Err(failure) = self.step(conn, m, Direction::Up, "applied").await? {
                    self.log_failure(conn, m, &failure, "failed").await?;
                    return Err(MigrateError::Failed {
                        failure,
                        outcome: FailureOutcome::Stopped,
                    }
                    .into());
                }
                applied.push((*m, started.elapsed()));
            }
        }
        let mode = if reverted.is_empty() {
            RunMode::NothingToDo
        } else {
            RunMode::StepByStep
        };
        Ok(self.report(mode, step_reports(&reverted), step_reports(&applied)))
    }
}
