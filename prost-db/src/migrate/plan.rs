//! State and planning: what the tracking table holds, and the pure decision of what a run
//! does with it and the files. Nothing here talks to the database.

use chrono::{DateTime, Utc};
use prost_db_core::source::{Migration, has_no_transaction_directive};

use super::error::MigrateError;
use super::report::{MigrationState, StatusEntry};
use super::source::SchemaSource;

/// What the tracking table holds for one migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Applied {
    pub(super) version: i64,
    pub(super) name: String,
    pub(super) checksum: String,
}

/// The schema's bookkeeping, as read: the newest framework step and the applied
/// migrations, by version. The default is a schema without the framework's tables.
#[derive(Debug, Clone, Default)]
pub(super) struct State {
    pub(super) framework: i32,
    pub(super) applied: Vec<Applied>,
}

/// What a run may do besides applying new migrations in order.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Policy {
    pub(super) accept_changed: bool,
    pub(super) allow_out_of_order: bool,
}

/// The checked difference between the files and the tracking table.
#[derive(Debug)]
pub(super) struct Plan<'s> {
    /// The migrations to apply, by version.
    pub(super) pending: Vec<&'s Migration>,
    /// Applied migrations whose file was edited, with the recorded checksum (only under
    /// `accept_changed`).
    pub(super) changed: Vec<(&'s Migration, String)>,
}

impl Plan<'_> {
    /// Nothing to apply and no checksum to accept.
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.changed.is_empty()
    }

    /// A pending migration must run outside a transaction, so the run commits step by step.
    pub(super) fn needs_steps(&self) -> bool {
        self.pending.iter().any(|m| m.no_transaction)
    }
}

/// Compares the files of `schema` with its recorded state.
///
/// # Errors
///
/// [`MigrateError::Missing`] for an applied migration without a file,
/// [`MigrateError::Changed`] for an edited one (unless `accept_changed`),
/// [`MigrateError::OutOfOrder`] for a pending one below the newest applied (unless
/// `allow_out_of_order`).
pub(super) fn plan<'s>(
    schema: &str,
    source: &'s SchemaSource,
    state: &State,
    policy: Policy,
) -> Result<Plan<'s>, MigrateError> {
    let mut changed = vec![];
    for applied in &state.applied {
        let Some(m) = source.find(applied.version) else {
            return Err(MigrateError::Missing {
                schema: schema.to_owned(),
                version: applied.version,
                file: source.expected_file(applied.version, &applied.name),
            });
        };
        let current = source.checksum(m).to_owned();
        if current != applied.checksum {
            if !policy.accept_changed {
                return Err(MigrateError::Changed {
                    schema: schema.to_owned(),
                    version: m.version,
                    file: m.up.path.to_string(),
                    applied: applied.checksum.clone(),
                    current,
                });
            }
            changed.push((m, applied.checksum.clone()));
        }
    }
    let latest = state.applied.last().map_or(0, |a| a.version);
    let pending: Vec<&Migration> = source
        .migrations
        .migrations
        .iter()
        .filter(|m| {
            state
                .applied
                .binary_search_by_key(&m.version, |a| a.version)
                .is_err()
        })
        .collect();
    if let Some(early) = pending.iter().find(|m| m.version < latest)
        && !policy.allow_out_of_order
    {
        return Err(MigrateError::OutOfOrder {
            schema: schema.to_owned(),
            version: early.version,
            file: early.up.path.to_string(),
            latest_applied: latest,
        });
    }
    Ok(Plan { pending, changed })
}

/// Which applied migrations `down` and `redo` revert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Revert {
    /// Every applied migration above this version (`down`; 0 reverts all).
    Above(i64),
    /// The newest applied migration, applied again afterwards (`redo`).
    Redo,
}

impl Revert {
    /// The versions to revert, newest first.
    pub(super) fn versions(self, applied: &[Applied]) -> Vec<i64> {
        match self {
            Revert::Above(target) => applied
                .iter()
                .rev()
                .filter(|a| a.version > target)
                .map(|a| a.version)
                .collect(),
            Revert::Redo => applied.last().map(|a| a.version).into_iter().collect(),
        }
    }

    /// Whether the reverted migrations are applied again.
    pub(super) fn reapplies(self) -> bool {
        self == Revert::Redo
    }
}

/// The migrations to revert, newest first, all checked before anything runs.
///
/// # Errors
///
/// As [`plan`] for changed and missing files; [`MigrateError::Irreversible`] if one of
/// them has no down script (then nothing is reverted).
pub(super) fn revert_targets<'s>(
    schema: &str,
    source: &'s SchemaSource,
    state: &State,
    policy: Policy,
    revert: Revert,
) -> Result<Vec<&'s Migration>, MigrateError> {
    plan(schema, source, state, policy)?;
    let mut targets = vec![];
    for version in revert.versions(&state.applied) {
        let m = source
            .find(version)
            .expect("plan checked that applied files exist");
        if m.down.is_none() {
            return Err(MigrateError::Irreversible {
                schema: schema.to_owned(),
                version,
                file: m.up.path.to_string(),
            });
        }
        targets.push(m);
    }
    Ok(targets)
}

/// Whether a revert must commit step by step: a down script it runs is marked
/// non-transactional, or a redo re-applies a non-transactional migration.
pub(super) fn revert_needs_steps(source: &SchemaSource, state: &State, revert: Revert) -> bool {
    revert.versions(&state.applied).iter().any(|v| {
        source.find(*v).is_some_and(|m| {
            m.down
                .as_ref()
                .is_some_and(|d| has_no_transaction_directive(&d.sql))
                || (revert.reapplies() && m.no_transaction)
        })
    })
}

/// One row of the tracking table, as `status` reads it.
#[derive(Debug, Clone)]
pub(super) struct Recorded {
    pub(super) version: i64,
    pub(super) name: String,
    pub(super) checksum: String,
    pub(super) applied_at: DateTime<Utc>,
    pub(super) applied_by: String,
}

/// Every migration known to the files or the tracking table, by version, with its state.
pub(super) fn status_entries(source: &SchemaSource, recorded: Vec<Recorded>) -> Vec<StatusEntry> {
    let mut entries = Vec::new();
    for row in recorded {
        let (state, file, reversible, no_transaction) = match source.find(row.version) {
            Some(m) => (
                if source.checksum(m) == row.checksum {
                    MigrationState::Applied
                } else {
                    MigrationState::Changed
                },
                m.up.path.to_string(),
                m.down.is_some(),
                m.no_transaction,
            ),
            None => (
                MigrationState::Missing,
                source.expected_file(row.version, &row.name),
                false,
                false,
            ),
        };
        entries.push(StatusEntry {
            version: row.version,
            name: row.name,
            state,
            reversible,
            no_transaction,
            applied_at: Some(row.applied_at),
            applied_by: Some(row.applied_by),
            file,
        });
    }
    for m in &source.migrations.migrations {
        if !entries.iter().any(|e| e.version == m.version) {
            entries.push(StatusEntry {
                version: m.version,
                name: m.name.to_string(),
                state: MigrationState::Pending,
                reversible: m.down.is_some(),
                no_transaction: m.no_transaction,
                applied_at: None,
                applied_by: None,
                file: m.up.path.to_string(),
            });
        }
    }
    entries.sort_by_key(|e| e.version);
    entries
}

#[cfg(test)]
mod tests;
