//! The one-transaction strategy: a schema's whole batch (up, down, redo, the dry run and
//! reset's drop) and its bookkeeping in one transaction under the transaction-scoped lock,
//! so a failure leaves the schema exactly as it was.

use std::time::Instant;

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};

use super::error::{FailureOutcome, MigrateError, ScriptFailure};
use super::ledger::Direction;
use super::migrator::Run;
use super::plan::Revert;
use super::report::{DryRun, DryRunOutcome, DryRunStep, Report, RunMode, step_reports};
use crate::Error;
use prost_db_core::source::Migration;

/// The savepoint after the lock and the framework's tables: a failed script rolls back to
/// it, so the failure can still be logged in the same transaction.
pub(super) const SAVEPOINT: &str = "prost_db_batch";

impl Run<'_> {
    /// `up` in one transaction. `None` if the locked read found a non-transactional
    /// migration pending (the caller switches to step by step).
    pub(super) async fn up_in_transaction(
        &mut self,
        conn: &mut PgConnection,
    ) -> Result<Option<Report>, Error> {
        let mut tx = conn.begin().await?;
        self.queries += 1;
        let state = self.lock_and_read(&mut tx, true).await?;
        let plan = self.plan(&state)?;
        if plan.needs_steps() {
            self.queries += 1;
            tx.rollback().await?;
            return Ok(None);
        }
        let mut applied = vec![];
        for m in &plan.pending {
            let started = Instant::now();
            if let Err(mut failure) = self.script_in_tx(&mut tx, m, &m.up).await? {
                self.rollback_to_savepoint(&mut tx).await?;
                if failure.line.is_none() {
                    let prior: Vec<&Migration> = applied.iter().map(|(m, _)| *m).collect();
                    failure.line = self.locate(&mut tx, &prior, m).await;
                    self.rollback_to_savepoint(&mut tx).await?;
                }
                return Err(self.batch_failed(tx, m, failure).await);
            }
            let duration = started.elapsed();
            tracing::info!(version = m.version, name = %m.name, ?duration, "applied");
            applied.push((*m, duration));
        }
        for (m, old) in &plan.changed {
            self.accept_checksum(&mut tx, m, old).await?;
        }
        if !applied.is_empty() {
            self.record(&mut tx, Direction::Up, &applied, "applied")
                .await?;
        }
        self.queries += 1;
        tx.commit().await?;
        let mode = if applied.is_empty() {
            RunMode::NothingToDo
        } else {
            RunMode::Transactional
        };
        Ok(Some(self.report(mode, vec![], step_reports(&applied))))
    }

    /// `down` or `redo` in one transaction. `None` if the locked read found a script that
    /// must run outside a transaction (the caller switches to step by step).
    pub(super) async fn revert_in_transaction(
        &mut self,
        conn: &mut PgConnection,
        revert: Revert,
    ) -> Result<Option<Report>, Error> {
        let mut tx = conn.begin().await?;
        self.queries += 1;
        let state = self.lock_and_read(&mut tx, true).await?;
        let targets = self.revert_targets(&state, revert)?;
        if super::plan::revert_needs_steps(self.source, &state, revert) {
            self.queries += 1;
            tx.rollback().await?;
            return Ok(None);
        }
        let mut reverted = vec![];
        for m in &targets {
            let started = Instant::now();
            let down = m.down.as_ref().expect("checked reversible");
            if let Err(failure) = self.script_in_tx(&mut tx, m, down).await? {
                self.rollback_to_savepoint(&mut tx).await?;
                return Err(self.batch_failed(tx, m, failure).await);
            }
            reverted.push((*m, started.elapsed()));
        }
        let mut applied = vec![];
        if revert.reapplies() {
            for m in targets.iter().rev() {
                let started = Instant::now();
                if let Err(failure) = self.script_in_tx(&mut tx, m, &m.up).await? {
                    self.rollback_to_savepoint(&mut tx).await?;
                    return Err(self.batch_failed(tx, m, failure).await);
                }
                applied.push((*m, started.elapsed()));
            }
        }
        if !reverted.is_empty() {
            self.record(&mut tx, Direction::Down, &reverted, "reverted")
                .await?;
        }
        if !applied.is_empty() {
            self.record(&mut tx, Direction::Up, &applied, "applied")
                .await?;
        }
        self.queries += 1;
        tx.commit().await?;
        let mode = if reverted.is_empty() {
            RunMode::NothingToDo
        } else {
            RunMode::Transactional
        };
        Ok(Some(self.report(
            mode,
            step_reports(&reverted),
            step_reports(&applied),
        )))
    }

    /// The dry run: every pending up script in order, then their downs newest first, in
    /// one transaction that is always rolled back.
    pub(super) async fn rehearse(&mut self, conn: &mut PgConnection) -> Result<DryRun, Error> {
        let mut tx = conn.begin().await?;
        let state = self.lock_and_read(&mut tx, true).await?;
        let plan = self.plan(&state)?;
        let mut steps: Vec<DryRunStep> = plan
            .pending
            .iter()
            .map(|m| DryRunStep {
                version: m.version,
                name: m.name.to_string(),
                up: DryRunOutcome::NotRehearsed("an earlier step failed"),
                down: m
                    .down
                    .as_ref()
                    .map(|_| DryRunOutcome::NotRehearsed("an earlier step failed")),
            })
            .collect();
        let mut ok = true;
        for (i, m) in plan.pending.iter().enumerate() {
            if m.no_transaction {
                // Later steps may depend on this one, so the rehearsal ends here.
                let step = &mut steps[i];
                step.up = DryRunOutcome::NotRehearsed(
                    "marked no-transaction: cannot run inside the rehearsal's transaction",
                );
                step.down = step
                    .down
                    .as_ref()
                    .map(|_| DryRunOutcome::NotRehearsed("its up script was not rehearsed"));
                for later in &mut steps[i + 1..] {
                    let reason = "comes after a no-transaction step, which was not rehearsed";
                    later.up = DryRunOutcome::NotRehearsed(reason);
                    later.down = later
                        .down
                        .as_ref()
                        .map(|_| DryRunOutcome::NotRehearsed(reason));
                }
                break;
            }
            let step = &mut steps[i];
            let started = Instant::now();
            match self.script_in_tx(&mut tx, m, &m.up).await? {
                Ok(()) => {
                    step.up = DryRunOutcome::Ok {
                        duration: started.elapsed(),
                    }
                }
                Err(failure) => {
                    step.up = DryRunOutcome::Failed(failure);
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            for (m, step) in plan.pending.iter().zip(&mut steps).rev() {
                let (Some(down), DryRunOutcome::Ok { .. }) = (&m.down, &step.up) else {
                    continue;
                };
                let started = Instant::now();
                match self.script_in_tx(&mut tx, m, down).await? {
                    Ok(()) => {
                        step.down = Some(DryRunOutcome::Ok {
                            duration: started.elapsed(),
                        })
                    }
                    Err(failure) => {
                        step.down = Some(DryRunOutcome::Failed(failure));
                        break;
                    }
                }
            }
        }
        tx.rollback().await?;
        Ok(DryRun {
            schema: self.schema.as_str().to_owned(),
            steps,
        })
    }

    /// `reset`'s first half: drops the schema under its lock.
    pub(super) async fn drop_schema(&mut self, conn: &mut PgConnection) -> Result<(), Error> {
        let schema = self.schema;
        let mut tx = conn.begin().await?;
        self.locked(
            &mut tx,
            true,
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        )
        .await?;
        tx.commit().await?;
        tracing::warn!(schema = schema.as_str(), "schema dropped for reset");
        Ok(())
    }

    /// Undoes the batch's scripts since the savepoint; the framework's tables stay.
    async fn rollback_to_savepoint(&mut self, conn: &mut PgConnection) -> Result<(), Error> {
        self.queries += 1;
        sqlx::raw_sql(AssertSqlSafe(format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}")))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Ends a one-transaction batch that failed at `m` (already rolled back to the
    /// savepoint): logs the failure, commits the log entry, and returns the error to report.
    async fn batch_failed(
        &mut self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        m: &Migration,
        failure: Box<ScriptFailure>,
    ) -> Error {
        if let Err(e) = self.log_failure(&mut tx, m, &failure, "failed").await {
            return e;
        }
        self.queries += 1;
        if let Err(e) = tx.commit().await {
            return e.into();
        }
        MigrateError::Failed {
            failure,
            outcome: FailureOutcome::RolledBack,
        }
        .into()
    }
}
