//! Least-privilege roles: one login role per service that owns its schema and nothing else.

use std::fmt;

use sqlx::PgPool;

use crate::error::Result;
use crate::ident::{Identifier, IdentifierKind};

/// A service's login role and the schema it owns.
///
/// `Debug` never shows the password.
#[derive(Clone)]
pub struct ServiceRole {
    role: String,
    schema: String,
    password: Option<String>,
}

impl ServiceRole {
    /// A role named `role` that will own `schema`.
    pub fn new(role: &str, schema: &str) -> Self {
        ServiceRole {
            role: role.to_owned(),
            schema: schema.to_owned(),
            password: None,
        }
    }

    /// The role's login password (without one the role can log in only where `pg_hba.conf`
    /// trusts it).
    #[must_use]
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }
}

impl fmt::Debug for ServiceRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceRole")
            .field("role", &self.role)
            .field("schema", &self.schema)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Creates (or updates) a login role for one service, run by an administrator.
///
/// Afterwards the role:
/// - owns `schema` (created if missing) and every table and sequence already in it;
/// - is `NOSUPERUSER NOCREATEDB NOCREATEROLE`, so it cannot widen its own rights;
/// - has no privileges on any other schema: another service's `SELECT` or `INSERT` fails
///   with `permission denied for schema`. Schemas are closed to `PUBLIC` as well.
///
/// The password is passed as a bind parameter and quoted by the server (`format('%L')`),
/// so it appears in no logged statement; role and schema names are validated identifiers.
///
/// ```no_run
/// use prost_db::{provision_service_role, ServiceRole};
///
/// # async fn run(admin: sqlx::PgPool) -> Result<(), prost_db::Error> {
/// provision_service_role(&admin, &ServiceRole::new("catalog_svc", "catalog").password("s3cret")).await?;
/// // Now connect the catalog service as catalog_svc: it sees catalog.* and nothing else.
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::InvalidIdentifier`](crate::Error::InvalidIdentifier) before any SQL runs, or the
/// database error (e.g. the admin lacks `CREATEROLE`).
#[tracing::instrument(name = "prost_db.provision_role", skip_all, fields(role = %spec.role, schema = %spec.schema))]
pub async fn provision_service_role(admin: &PgPool, spec: &ServiceRole) -> Result<()> {
    let role = Identifier::new(IdentifierKind::Role, &spec.role)?;
    let schema = Identifier::new(IdentifierKind::Schema, &spec.schema)?;

    let mut tx = admin.begin().await?;
    // Serialise concurrent provisioning: CREATE ROLE has no IF NOT EXISTS.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('prost_db.provision_role'))")
        .execute(&mut *tx)
        .await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)")
            .bind(role.as_str())
            .fetch_one(&mut *tx)
            .await?;
    let verb = if exists { "ALTER" } else { "CREATE" };
    let role_sql = format!("{verb} ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE");
    let statement = match &spec.password {
        // The password reaches the server as a bind parameter and is spliced in by
        // PL/pgSQL, so it is in no statement text that sqlx (at debug level) or the
        // server (`log_statement = ddl`) would log.
        Some(password) => {
            sqlx::query("SELECT set_config('prost_db.role_password', $1, true)")
                .bind(password)
                .execute(&mut *tx)
                .await?;
            format!(
                "DO $prost_db$ BEGIN \
                 EXECUTE format('{role_sql} PASSWORD %L', current_setting('prost_db.role_password')); \
                 PERFORM set_config('prost_db.role_password', '', true); \
                 END $prost_db$"
            )
        }
        None => role_sql,
    };
    sqlx::query(sqlx::AssertSqlSafe(statement))
        .execute(&mut *tx)
        .await?;

    for statement in [
        format!("CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {role}"),
        format!("ALTER SCHEMA {schema} OWNER TO {role}"),
        format!("REVOKE ALL ON SCHEMA {schema} FROM PUBLIC"),
        format!("GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {role}"),
        format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{ServiceRole, provision_service_role};
    use crate::test_logs::CapturedLogs;
    use crate::testing::TestDb;

    #[tokio::test(flavor = "current_thread")]
    async fn the_password_is_set_but_never_in_a_logged_statement() -> crate::Result<()> {
        const PASSWORD: &str = "pw-marker-7f3a";
        let captured = CapturedLogs::start(tracing::Level::TRACE, false);

        let test_db = TestDb::new().await?;
        let admin = test_db.pool().await?;
        let role = format!("pw_{}", test_db.name().trim_start_matches("prost_test_"));
        let spec = ServiceRole::new(&role, "catalog").password(PASSWORD);
        provision_service_role(&admin, &spec).await?;
        provision_service_role(&admin, &spec).await?;
        let has_password: bool = sqlx::query_scalar(
            "SELECT rolpassword IS NOT NULL FROM pg_catalog.pg_authid WHERE rolname = $1",
        )
        .bind(&role)
        .fetch_one(&admin)
        .await?;
        admin.close().await;
        let server = test_db.connect_options();
        test_db.close().await?;
        let mut conn =
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&server.database("postgres"))
                .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP ROLE IF EXISTS \"{role}\""
        )))
        .execute(&mut conn)
        .await?;

        let logs = captured.text();
        assert!(has_password);
        assert!(
            logs.contains("ROLE"),
            "sqlx statements were not captured: {logs}"
        );
        assert!(!logs.contains(PASSWORD), "{logs}");
        Ok(())
    }
}
