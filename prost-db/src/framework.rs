//! The framework's own tables in each service schema, created and upgraded by the migrator
//! before the service's migrations, under the same lock; every released step's SQL is
//! frozen here.
//!
//! The migrator's bookkeeping tables are prefixed `_prost_db_` ([`FRAMEWORK_TABLE`],
//! [`MIGRATIONS_TABLE`], [`MIGRATION_LOG_TABLE`]); the tables the features read and write
//! keep the names services know them by: `idempotency_records` (the seed's name) and
//! `outbox_events`. [`TABLES`] lists them all. Every statement names them
//! schema-qualified, so neither the connection's `search_path` nor a migration that
//! changes it can send bookkeeping to the wrong schema. Applied steps are recorded in
//! `<schema>._prost_db_framework`.
//!
//! A released step is never edited (a unit test pins each one's checksum): a change to a
//! framework table is a new step appended to the list.

use crate::ident::{Identifier, render};

/// The tracking table: one row per applied migration.
///
/// ```
/// assert_eq!(prost_db::framework::MIGRATIONS_TABLE, "_prost_db_migrations");
/// ```
pub const MIGRATIONS_TABLE: &str = "_prost_db_migrations";
/// The append-only log of every apply, failure, revert and automatic rollback.
///
/// ```
/// assert!(prost_db::framework::MIGRATION_LOG_TABLE.starts_with("_prost_db_"));
/// ```
pub const MIGRATION_LOG_TABLE: &str = "_prost_db_migration_log";
/// The framework's own version table (one row per applied framework step).
///
/// ```
/// assert!(prost_db::framework::FRAMEWORK_TABLE.starts_with("_prost_db_"));
/// ```
pub const FRAMEWORK_TABLE: &str = "_prost_db_framework";

/// Every table the framework creates in a service schema, in step order: the migrator's
/// own (`_prost_db_` prefix) and the features' (the names services use).
///
/// ```
/// use prost_db::framework::TABLES;
///
/// assert!(TABLES.contains(&"idempotency_records"));
/// assert!(TABLES.contains(&prost_db::outbox::OUTBOX_TABLE));
/// assert!(TABLES.iter().all(|t| t.starts_with("_prost_db_")
///     || [prost_db::idempotency::TABLE_NAME, prost_db::outbox::OUTBOX_TABLE].contains(t)));
/// ```
pub const TABLES: &[&str] = &[
    FRAMEWORK_TABLE,
    MIGRATIONS_TABLE,
    MIGRATION_LOG_TABLE,
    "idempotency_records",
    "outbox_events",
];

/// One versioned change to the framework's tables; `{schema}` in `sql` stands for the
/// quoted schema name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameworkStep {
    pub step: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Step 1, the bootstrap: the version table, the tracking table and the log. It runs inside
/// a PL/pgSQL block only when the version table is missing, so a schema that has it costs
/// no DDL and emits no notices.
const BOOTSTRAP: &str = r#"
CREATE TABLE {schema}._prost_db_framework (
    step integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {schema}._prost_db_migrations (
    version bigint PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    duration_us bigint NOT NULL,
    applied_by text NOT NULL,
    db_role text NOT NULL DEFAULT current_user,
    deployment_id uuid NOT NULL,
    no_transaction boolean NOT NULL DEFAULT false
);
CREATE TABLE {schema}._prost_db_migration_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    deployment_id uuid NOT NULL,
    event text NOT NULL CHECK (event IN
        ('applied', 'failed', 'reverted', 'rolled_back', 'rollback_failed', 'checksum_accepted')),
    version bigint NOT NULL,
    name text NOT NULL,
    checksum text,
    file text,
    line integer,
    sqlstate text,
    message text,
    duration_us bigint,
    applied_by text NOT NULL,
    db_role text NOT NULL DEFAULT current_user
);
CREATE INDEX ON {schema}._prost_db_migration_log (deployment_id);
CREATE FUNCTION {schema}._prost_db_append_only() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'the migration log %.% is append-only', TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$fn$;
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE
    ON {schema}._prost_db_migration_log
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}._prost_db_append_only();
INSERT INTO {schema}._prost_db_framework (step, name) VALUES (1, 'migrations and log');
"#;

/// Step 2 as released: the idempotency records. The primary key is the unique key
/// `(event_id, service_name, action)`, so an insert maintains one B-tree, compared
/// byte-wise (`COLLATE "C"`: keys need equality, not linguistic order); retention scans
/// `created_at` through a BRIN index, which costs next to nothing to maintain because
/// records arrive in time order. `IdempotencyStore::install` runs the same text.
pub(crate) const STEP_2_IDEMPOTENCY_RECORDS: &str = r#"
CREATE TABLE IF NOT EXISTS {schema}.idempotency_records (
    id              BIGINT      GENERATED ALWAYS AS IDENTITY,
    event_id        TEXT        COLLATE "C" NOT NULL,
    service_name    TEXT        COLLATE "C" NOT NULL,
    action          TEXT        COLLATE "C" NOT NULL,
    payload_hash    BYTEA,
    result          JSONB,
    permanent_error BOOLEAN     NOT NULL DEFAULT false,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_records_key PRIMARY KEY (event_id, service_name, action)
);
CREATE INDEX IF NOT EXISTS idempotency_records_created_at
    ON {schema}.idempotency_records USING brin (created_at);
"#;

/// Step 3 as released: the transactional outbox. `outbox::install` runs the same text.
pub(crate) const STEP_3_OUTBOX_EVENTS: &str = "
CREATE TABLE IF NOT EXISTS {schema}.outbox_events (
    id BIGSERIAL PRIMARY KEY,
    event_id UUID NOT NULL,
    event_type TEXT NOT NULL,
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    payload JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ,
    publish_attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    UNIQUE (event_id, exchange)
);
CREATE INDEX IF NOT EXISTS outbox_events_pending
    ON {schema}.outbox_events (id) WHERE published_at IS NULL;
";

/// The framework steps after the bootstrap, in order. Each runs once per schema, in the
/// migrator's transaction, and is recorded in `_prost_db_framework`.
pub(crate) const STEPS: &[FrameworkStep] = &[
    FrameworkStep {
        step: 2,
        name: "idempotency_records",
        sql: STEP_2_IDEMPOTENCY_RECORDS,
    },
    FrameworkStep {
        step: 3,
        name: "outbox_events",
        sql: STEP_3_OUTBOX_EVENTS,
    },
    // Each `sql` uses `{schema}.` before every table name. Never edit a released step:
    // append a new one, with its text in a constant of this module.
];

/// The newest framework step this build knows.
pub(crate) fn latest_step() -> i32 {
    STEPS.last().map_or(1, |s| s.step)
}

/// The statement that creates the schema and the bootstrap tables if the version table is
/// missing. It is plain SQL text with validated, quoted identifiers only.
pub(crate) fn bootstrap_sql(schema: &Identifier) -> String {
    let quoted = schema.to_string();
    format!(
        "DO $prost_db$ BEGIN\n\
         IF to_regnamespace('{quoted}') IS NULL THEN CREATE SCHEMA {quoted}; END IF;\n\
         IF to_regclass('{quoted}._prost_db_framework') IS NULL THEN\n{}\nEND IF;\n\
         END $prost_db$",
        render(BOOTSTRAP, schema)
    )
}

/// The SQL of the steps after `applied`, each followed by its record.
pub(crate) fn pending_steps_sql(schema: &Identifier, applied: i32) -> Option<String> {
    let mut sql = String::new();
    for step in STEPS.iter().filter(|s| s.step > applied) {
        sql.push_str(&render(step.sql, schema));
        sql.push_str(&format!(
            ";\nINSERT INTO {schema}._prost_db_framework (step, name) VALUES ({}, '{}');\n",
            step.step, step.name
        ));
    }
    (!sql.is_empty()).then_some(sql)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ident::IdentifierKind;

    /// The SHA-256 of each released step's SQL. A mismatch means a released step was
    /// edited: restore it, and put the change in a new step.
    const RELEASED: &[(i32, &str)] = &[
        (
            1,
            "a61b24f77703a2bbe775c9c0d0bb21db40bea8c4e3823559ffb8d726937dcfbe",
        ),
        (
            2,
            "414fa9801df99efca585c3ec51a3f66a6ab5f48a0fdc211d50aa89f481c20b30",
        ),
        (
            3,
            "a07883f801d238275612b888e5691ebf49bcad988c879655d4602747d581cc01",
        ),
    ];

    fn released_sql() -> Vec<(i32, &'static str)> {
        std::iter::once((1, BOOTSTRAP))
            .chain(STEPS.iter().map(|s| (s.step, s.sql)))
            .collect()
    }

    #[test]
    fn released_steps_are_frozen() {
        let now: Vec<(i32, String)> = released_sql()
            .into_iter()
            .map(|(step, sql)| (step, prost_db_core::source::checksum(sql)))
            .collect();
        for (step, pinned) in RELEASED {
            let current = now.iter().find(|(s, _)| s == step).map(|(_, c)| c.as_str());
            assert_eq!(
                current,
                Some(*pinned),
                "framework step {step} was edited after its release; restore it and append a new step"
            );
        }
        assert_eq!(
            now.len(),
            RELEASED.len(),
            "pin the checksum of a new step here when it is released: {now:?}"
        );
    }

    #[test]
    fn steps_are_numbered_in_order_and_name_every_table_schema_qualified() {
        let schema = Identifier::new(IdentifierKind::Schema, "svc").unwrap();
        for (n, step) in STEPS.iter().enumerate() {
            assert_eq!(step.step, i32::try_from(n).unwrap() + 2);
        }
        assert_eq!(latest_step(), 3);
        let sql = pending_steps_sql(&schema, 1).unwrap();
        for table in &TABLES[3..] {
            assert!(sql.contains(&format!("\"svc\".{table}")), "{table}");
        }
        assert!(!sql.contains("{schema}"));
        assert_eq!(pending_steps_sql(&schema, 3), None);
    }
}
