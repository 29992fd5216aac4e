//! The planner's rules, without a database.

use super::*;
use crate::migrate::Migrations;
use prost_db_core::source::{SchemaMigrations, Script};

const NO_TX: &str = "-- prost-db:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);";

fn script(version: i64, kind: &str, sql: &str) -> Script {
    Script {
        path: format!("m/svc/{version:04}_m{version}.{kind}.sql").into(),
        sql: sql.to_owned().into(),
    }
}

/// A migration whose up script is `up` and whose down script, if any, is `down`.
fn migration(version: i64, up: &str, down: Option<&str>) -> Migration {
    Migration {
        version,
        name: format!("m{version}").into(),
        up: script(version, "up", up),
        down: down.map(|sql| script(version, "down", sql)),
        no_transaction: has_no_transaction_directive(up),
    }
}

fn reversible(version: i64) -> Migration {
    migration(
        version,
        &format!("CREATE TABLE t{version} (id int);"),
        Some(&format!("DROP TABLE t{version};")),
    )
}

fn files(migrations: Vec<Migration>) -> Migrations {
    Migrations::from_embedded(vec![(
        "m/svc",
        SchemaMigrations {
            schema: "svc".into(),
            migrations,
        },
    )])
}

/// The state after applying `versions` of `files` unchanged.
fn applied(files: &Migrations, versions: &[i64]) -> State {
    let source = files.source("svc").unwrap();
    State {
        framework: 3,
        applied: versions
            .iter()
            .map(|v| {
                let m = source.find(*v).unwrap();
                Applied {
                    version: *v,
                    name: m.name.to_string(),
                    checksum: source.checksum(m).to_owned(),
                }
            })
            .collect(),
    }
}

fn versions(migrations: &[&Migration]) -> Vec<i64> {
    migrations.iter().map(|m| m.version).collect()
}

#[test]
fn pending_are_the_unapplied_files_in_version_order() {
    let files = files((1..=5).map(reversible).collect());
    let source = files.source("svc").unwrap();
    let plan = plan("svc", source, &applied(&files, &[1, 2]), Policy::default()).unwrap();
    assert_eq!(versions(&plan.pending), [3, 4, 5]);
    assert!(plan.changed.is_empty());
    assert!(!plan.needs_steps());
}

#[test]
fn a_schema_without_the_framework_tables_has_everything_pending() {
    let files = files((1..=3).map(reversible).collect());
    let plan = plan(
        "svc",
        files.source("svc").unwrap(),
        &State::default(),
        Policy::default(),
    )
    .unwrap();
    assert_eq!(versions(&plan.pending), [1, 2, 3]);
}

#[test]
fn everything_applied_is_an_empty_plan() {
    let files = files((1..=3).map(reversible).collect());
    let state = applied(&files, &[1, 2, 3]);
    let plan = plan(
        "svc",
        files.source("svc").unwrap(),
        &state,
        Policy::default(),
    )
    .unwrap();
    assert!(plan.is_empty());
}

#[test]
fn an_edited_applied_file_is_refused_with_both_checksums() {
    let files = files((1..=2).map(reversible).collect());
    let mut state = applied(&files, &[1, 2]);
    state.applied[0].checksum = "recorded".into();
    let err = plan(
        "svc",
        files.source("svc").unwrap(),
        &state,
        Policy::default(),
    )
    .unwrap_err();
    let MigrateError::Changed {
        version,
        file,
        applied,
        current,
        ..
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!(version, 1);
    assert_eq!(file, "m/svc/0001_m1.up.sql");
    assert_eq!(applied, "recorded");
    assert_eq!(
        current,
        files.source("svc").unwrap().checksum(&reversible(1))
    );
}

#[test]
fn accept_changed_plans_the_new_checksum_instead() {
    let files = files((1..=3).map(reversible).collect());
    let mut state = applied(&files, &[1, 2]);
    state.applied[1].checksum = "recorded".into();
    let policy = Policy {
        accept_changed: true,
        ..Policy::default()
    };
    let plan = plan("svc", files.source("svc").unwrap(), &state, policy).unwrap();
    assert_eq!(plan.changed.len(), 1);
    assert_eq!(plan.changed[0].0.version, 2);
    assert_eq!(plan.changed[0].1, "recorded");
    assert_eq!(versions(&plan.pending), [3]);
    assert!(!plan.is_empty());
}

#[test]
fn an_applied_migration_without_its_file_is_missing() {
    let all = files((1..=3).map(reversible).collect());
    let state = applied(&all, &[1, 2, 3]);
    let without_2 = files(vec![reversible(1), reversible(3)]);
    let err = plan(
        "svc",
        without_2.source("svc").unwrap(),
        &state,
        Policy {
            accept_changed: true,
            allow_out_of_order: true,
        },
    )
    .unwrap_err();
    let MigrateError::Missing { version, file, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(version, 2);
    assert_eq!(file, "m/svc/0002_m2.up.sql");
}

#[test]
fn a_pending_migration_below_the_newest_applied_is_out_of_order() {
    let files = files((1..=4).map(reversible).collect());
    let state = applied(&files, &[1, 3]);
    let source = files.source("svc").unwrap();
    let err = plan("svc", source, &state, Policy::default()).unwrap_err();
    let MigrateError::OutOfOrder {
        version,
        latest_applied,
        ..
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!((version, latest_applied), (2, 3));

    let policy = Policy {
        allow_out_of_order: true,
        ..Policy::default()
    };
    let plan = plan("svc", source, &state, policy).unwrap();
    assert_eq!(versions(&plan.pending), [2, 4]);
}

#[test]
fn a_pending_no_transaction_step_makes_the_run_step_by_step() {
    let files = files(vec![
        reversible(1),
        migration(2, NO_TX, Some("DROP INDEX i;")),
        reversible(3),
    ]);
    let source = files.source("svc").unwrap();
    let fresh = plan("svc", source, &applied(&files, &[1]), Policy::default()).unwrap();
    assert!(fresh.needs_steps());
    let later = plan("svc", source, &applied(&files, &[1, 2]), Policy::default()).unwrap();
    assert!(
        !later.needs_steps(),
        "an applied no-transaction step does not matter"
    );
}

#[test]
fn down_to_a_version_reverts_everything_above_it_newest_first() {
    let files = files((1..=5).map(reversible).collect());
    let source = files.source("svc").unwrap();
    let state = applied(&files, &[1, 2, 3, 4]);
    let targets = |revert| {
        versions(&revert_targets("svc", source, &state, Policy::default(), revert).unwrap())
    };
    assert_eq!(targets(Revert::Above(2)), [4, 3]);
    assert_eq!(targets(Revert::Above(0)), [4, 3, 2, 1]);
    assert!(targets(Revert::Above(4)).is_empty());
    assert!(targets(Revert::Above(9)).is_empty());
}

#[test]
fn redo_reverts_and_reapplies_only_the_newest() {
    let files = files((1..=3).map(reversible).collect());
    let source = files.source("svc").unwrap();
    let state = applied(&files, &[1, 2]);
    let targets = revert_targets("svc", source, &state, Policy::default(), Revert::Redo).unwrap();
    assert_eq!(versions(&targets), [2]);
    assert!(Revert::Redo.reapplies());
    assert!(!Revert::Above(0).reapplies());
    let nothing = revert_targets(
        "svc",
        source,
        &State::default(),
        Policy::default(),
        Revert::Redo,
    )
    .unwrap();
    assert!(nothing.is_empty());
}

#[test]
fn reverting_an_irreversible_migration_is_refused_as_a_whole() {
    let files = files(vec![
        reversible(1),
        migration(2, "CREATE TABLE b (id int);", None),
        reversible(3),
    ]);
    let source = files.source("svc").unwrap();
    let state = applied(&files, &[1, 2, 3]);
    let err =
        revert_targets("svc", source, &state, Policy::default(), Revert::Above(0)).unwrap_err();
    let MigrateError::Irreversible { version, file, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(version, 2);
    assert_eq!(file, "m/svc/0002_m2.up.sql");
    let above_2 =
        revert_targets("svc", source, &state, Policy::default(), Revert::Above(2)).unwrap();
    assert_eq!(versions(&above_2), [3]);
}

#[test]
fn reverting_checks_the_files_like_up() {
    let files = files((1..=2).map(reversible).collect());
    let mut state = applied(&files, &[1, 2]);
    state.applied[0].checksum = "recorded".into();
    let err = revert_targets(
        "svc",
        files.source("svc").unwrap(),
        &state,
        Policy::default(),
        Revert::Above(1),
    )
    .unwrap_err();
    assert!(
        matches!(err, MigrateError::Changed { version: 1, .. }),
        "{err}"
    );
}

#[test]
fn a_revert_commits_step_by_step_only_for_no_transaction_scripts_it_runs() {
    let no_tx_down = "-- prost-db:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS i;";
    let files = files(vec![
        reversible(1),
        migration(2, NO_TX, Some(no_tx_down)),
        migration(3, NO_TX, Some("DROP INDEX i;")),
        reversible(4),
    ]);
    let source = files.source("svc").unwrap();
    let state = applied(&files, &[1, 2, 3, 4]);
    assert!(!revert_needs_steps(source, &state, Revert::Above(3)));
    assert!(
        !revert_needs_steps(source, &state, Revert::Above(2)),
        "3's down runs in a transaction"
    );
    assert!(revert_needs_steps(source, &state, Revert::Above(1)));
    let upto_3 = applied(&files, &[1, 2, 3]);
    assert!(
        revert_needs_steps(source, &upto_3, Revert::Redo),
        "redo re-applies 3"
    );
}

#[test]
fn status_lists_applied_changed_missing_and_pending_by_version() {
    let all = files((1..=4).map(reversible).collect());
    let state = applied(&all, &[1, 2, 3]);
    let on_disk = files(vec![
        reversible(1),
        migration(2, "CREATE TABLE edited (id int);", None),
        reversible(4),
        migration(5, NO_TX, None),
    ]);
    let at = Utc::now();
    let recorded = state
        .applied
        .iter()
        .rev()
        .map(|a| Recorded {
            version: a.version,
            name: a.name.clone(),
            checksum: a.checksum.clone(),
            applied_at: at,
            applied_by: "ci".into(),
        })
        .collect();
    let entries = status_entries(on_disk.source("svc").unwrap(), recorded);
    let summary: Vec<_> = entries
        .iter()
        .map(|e| (e.version, e.state, e.reversible, e.no_transaction))
        .collect();
    assert_eq!(
        summary,
        [
            (1, MigrationState::Applied, true, false),
            (2, MigrationState::Changed, false, false),
            (3, MigrationState::Missing, false, false),
            (4, MigrationState::Pending, true, false),
            (5, MigrationState::Pending, false, true),
        ]
    );
    assert_eq!(entries[2].file, "m/svc/0003_m3.up.sql");
    assert_eq!(entries[0].applied_by.as_deref(), Some("ci"));
    assert_eq!(entries[3].applied_at, None);
}
