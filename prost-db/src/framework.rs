//! The framework's own tables in each service schema, created and upgraded by the migrator
//! before the service's migrations, under the same lock.
//!
//! Every table is prefixed `_prost_db_` and always schema-qualified, so neither the
//! connection's `search_path` nor a migration that changes it can send bookkeeping to the
//! wrong schema. Applied steps are recorded in `<schema>._prost_db_framework`.

use crate::ident::Identifier;

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

/// The framework steps after the bootstrap, in order. Each runs once per schema, in the
/// migrator's transaction, and is recorded in `_prost_db_framework`.
pub(crate) const STEPS: &[FrameworkStep] = &[
    FrameworkStep {
        step: 2,
        name: "idempotency_records",
        sql: crate::idempotency::DDL,
    },
    FrameworkStep {
        step: 3,
        name: "outbox_events",
        sql: crate::outbox::DDL,
    },
    // Each `sql` uses `{schema}.` before every table name. Never edit a released step:
    // append a new one.
];

/// The newest framework step this build knows.
pub(crate) fn latest_step() -> i32 {
    STEPS.last().map_or(1, |s| s.step)
}

/// `sql` with `{schema}` replaced by the quoted schema.
pub(crate) fn render(sql: &str, schema: &Identifier) -> String {
    sql.replace("{schema}", &schema.quoted())
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
