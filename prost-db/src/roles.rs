//! Least-privilege roles: one login role per service that owns its schema and nothing else,
//! with a password the server only ever sees as a SCRAM-SHA-256 verifier.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::error::{Error, Origin, Result};
use crate::ident::{Identifier, IdentifierKind};
use crate::pool::Statements;

/// A service's login role and the schema it owns.
///
/// `Debug` never shows the password.
///
/// ```
/// use prost_db::ServiceRole;
///
/// let role = ServiceRole::new("catalog_svc", "catalog").password("s3cret").migrator("deployer");
/// assert!(!format!("{role:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct ServiceRole {
    role: String,
    schema: String,
    password: Option<String>,
    migrator: Option<String>,
}

impl ServiceRole {
    /// A role named `role` that will own `schema`.
    ///
    /// ```
    /// let role = prost_db::ServiceRole::new("orders_svc", "orders");
    /// ```
    pub fn new(role: &str, schema: &str) -> Self {
        ServiceRole {
            role: role.to_owned(),
            schema: schema.to_owned(),
            password: None,
            migrator: None,
        }
    }

    /// The role's login password (without one the role can log in only where `pg_hba.conf`
    /// trusts it). It never leaves the process: the server receives a SCRAM-SHA-256
    /// verifier computed here.
    ///
    /// ```
    /// let role = prost_db::ServiceRole::new("orders_svc", "orders").password("s3cret");
    /// ```
    #[must_use]
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// The role that runs the migrations which create this schema's tables after
    /// provisioning (default: the role that provisions, the connection's `current_user`).
    /// Tables and sequences it creates in the schema are granted to the service role.
    ///
    /// ```
    /// let role = prost_db::ServiceRole::new("orders_svc", "orders").migrator("deployer");
    /// ```
    #[must_use]
    pub fn migrator(mut self, migrator: &str) -> Self {
        self.migrator = Some(migrator.to_owned());
        self
    }
}

impl fmt::Debug for ServiceRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceRole")
            .field("role", &self.role)
            .field("schema", &self.schema)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("migrator", &self.migrator)
            .finish()
    }
}

/// Creates (or updates) a login role for one service, run by an administrator (a superuser,
/// or a role with `CREATEROLE` that is a member of the migrator).
///
/// Afterwards the role:
/// - has `schema` as its default `search_path`, which binds it to its schema behind a
///   transaction pooler ([`Pooler::Transaction`](crate::Pooler::Transaction));
/// - owns `schema` (created if missing). As its owner it may create objects in it, and
///   drop or alter any object in it;
/// - has every privilege on the tables and sequences that were already in the schema
///   (without owning them);
/// - has every privilege on the tables and sequences that the migrator (see
///   [`ServiceRole::migrator`]) creates in the schema later, through `ALTER DEFAULT
///   PRIVILEGES FOR ROLE <migrator> IN SCHEMA <schema>`; tables the service role creates
///   itself it owns;
/// - is `NOSUPERUSER NOCREATEDB NOCREATEROLE`, so it cannot widen its own rights;
/// - has no privileges on any other schema: another service's `SELECT` or `INSERT` fails
///   with `permission denied for schema`. Schemas are closed to `PUBLIC` as well.
///
/// The password never reaches the server: a SCRAM-SHA-256 verifier is computed here
/// (PBKDF2-HMAC-SHA-256, 4096 iterations, a random 16-byte salt; RFC 5802 and 7677) and
/// sent as `PASSWORD 'SCRAM-SHA-256$...'`, which PostgreSQL stores as it is. A failed
/// statement, a server log or an error's `CONTEXT` can show the verifier, never the
/// password. Role and schema names are validated identifiers. An existing superuser is
/// refused rather than stripped of its rights.
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
/// [`Error::InvalidIdentifier`] before any SQL runs; [`Error::Config`] if the role exists
/// and is a superuser; [`Error::Connect`] if the server cannot be reached; the database
/// error otherwise (e.g. the admin lacks `CREATEROLE`, or a name the server reserves).
#[tracing::instrument(name = "prost_db.provision_role", skip_all, fields(role = %spec.role, schema = %spec.schema))]
pub async fn provision_service_role(admin: &PgPool, spec: &ServiceRole) -> Result<()> {
    let role = Identifier::new(IdentifierKind::Role, &spec.role)?;
    let schema = Identifier::new(IdentifierKind::Schema, &spec.schema)?;
    let migrator = match &spec.migrator {
        Some(name) => Identifier::new(IdentifierKind::Role, name)?.quoted(),
        None => "CURRENT_USER".to_owned(),
    };
    let verifier = spec.password.as_deref().map(scram_verifier).transpose()?;
    let map = |e| Error::from_sqlx(e, Origin::Pool(admin));

    let mut tx = admin.begin().await.map_err(map)?;
    // Serialise concurrent provisioning: CREATE ROLE has no IF NOT EXISTS.
    // The admin pool may go through a transaction pooler: unnamed statements, in the
    // transaction.
    let statements = Statements::UNNAMED;
    statements
        .query("SELECT pg_advisory_xact_lock(hashtext('prost_db.provision_role'))")
        .execute(&mut *tx)
        .await
        .map_err(map)?;
    let superuser: Option<bool> = statements
        .query_scalar("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = $1")
        .bind(role.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map)?;
    if superuser == Some(true) {
        return Err(Error::Config(format!(
            "role {:?} is a superuser; provisioning it as a service role would take its rights away; \
             choose a role name of its own for the service",
            role.as_str()
        )));
    }
    let verb = if superuser.is_some() {
        "ALTER"
    } else {
        "CREATE"
    };
    let mut role_sql = format!("{verb} ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE");
    if let Some(verifier) = &verifier {
        // Base64, digits, `$` and `:` only: nothing to escape in a string literal.
        role_sql.push_str(&format!(" PASSWORD '{verifier}'"));
    }

    for statement in [
        role_sql,
        format!("CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {role}"),
        format!("ALTER SCHEMA {schema} OWNER TO {role}"),
        format!("REVOKE ALL ON SCHEMA {schema} FROM PUBLIC"),
        // How the role finds its schema where no startup option can say it (behind a
        // transaction pooler): its sessions start with this search_path.
        format!("ALTER ROLE {role} SET search_path = {schema}"),
        format!("GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {role}"),
        format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"),
        format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA {schema} GRANT ALL ON TABLES TO {role}"
        ),
        format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA {schema} GRANT ALL ON SEQUENCES TO {role}"
        ),
    ] {
        statements
            .query(sqlx::AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .map_err(map)?;
    }
    tx.commit().await.map_err(map)?;
    Ok(())
}

/// PostgreSQL's default for `scram_iterations`.
const SCRAM_ITERATIONS: u32 = 4096;

/// A SCRAM-SHA-256 verifier for `password` with a fresh random salt, in the form
/// PostgreSQL stores: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
fn scram_verifier(password: &str) -> Result<String> {
    let mut salt = [0_u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|e| Error::Config(format!("no random bytes for a password salt: {e}")))?;
    Ok(scram_verifier_with(password, &salt, SCRAM_ITERATIONS))
}

fn scram_verifier_with(password: &str, salt: &[u8], iterations: u32) -> String {
    // As the server and libpq do: SASLprep the password, or use its bytes as they are if it
    // cannot be prepared.
    let prepared = stringprep::saslprep(password);
    let bytes = prepared.as_deref().unwrap_or(password).as_bytes();
    let salted = pbkdf2_sha256(bytes, salt, iterations);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac_sha256(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        BASE64.encode(salt),
        BASE64.encode(stored_key),
        BASE64.encode(server_key)
    )
}

fn keyed(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = keyed(key);
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// PBKDF2 (RFC 8018) with HMAC-SHA-256, one block: SCRAM's `Hi()`.
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let key = keyed(password);
    let mut mac = key.clone();
    mac.update(salt);
    mac.update(&1_u32.to_be_bytes());
    let mut block: [u8; 32] = mac.finalize().into_bytes().into();
    let mut result = block;
    for _ in 1..iterations {
        let mut mac = key.clone();
        mac.update(&block);
        block = mac.finalize().into_bytes().into();
        for (r, b) in result.iter_mut().zip(block) {
            *r ^= b;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::{ServiceRole, provision_service_role, scram_verifier_with};
    use crate::test_logs::CapturedLogs;
    use crate::testing::TestDb;

    /// The iterations and salt of a stored `SCRAM-SHA-256$<i>:<salt>$...` verifier.
    fn iterations_and_salt(verifier: &str) -> (u32, Vec<u8>) {
        use base64::Engine as _;
        let rest = verifier.strip_prefix("SCRAM-SHA-256$").expect(verifier);
        let (params, _) = rest.split_once('$').expect(verifier);
        let (iterations, salt) = params.split_once(':').expect(verifier);
        let salt = base64::engine::general_purpose::STANDARD
            .decode(salt)
            .expect(verifier);
        (iterations.parse().expect(verifier), salt)
    }

    async fn stored_verifier(admin: &sqlx::PgPool, role: &str) -> String {
        sqlx::query_scalar("SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1")
            .bind(role)
            .fetch_one(admin)
            .await
            .expect("the role's verifier")
    }

    async fn drop_roles(test_db: TestDb, roles: &[&str]) -> crate::Result<()> {
        let server = test_db.connect_options();
        test_db.close().await?;
        let mut conn =
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&server.database("postgres"))
                .await?;
        for role in roles {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP ROLE IF EXISTS \"{role}\""
            )))
            .execute(&mut conn)
            .await?;
        }
        Ok(())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_verifier_is_the_one_postgresql_computes_for_the_password() -> crate::Result<()> {
        let test_db = TestDb::new().await?;
        let admin = test_db.pool().await?;
        let suffix = test_db.name().trim_start_matches("prost_test_").to_owned();
        let mut roles = Vec::new();
        // ASCII, and a password SASLprep changes (a no-break space maps to a space).
        for (i, password) in ["correct horse battery staple", "p\u{e4}ss\u{a0}w\u{f6}rd"]
            .into_iter()
            .enumerate()
        {
            let role = format!("scram{i}_{suffix}");
            // The server's own verifier for a throwaway password, sent in clear on purpose.
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "SET password_encryption = 'scram-sha-256'; CREATE ROLE \"{role}\" PASSWORD '{password}'"
            )))
            .execute(&admin)
            .await?;
            let theirs = stored_verifier(&admin, &role).await;
            let (iterations, salt) = iterations_and_salt(&theirs);
            assert_eq!(
                scram_verifier_with(password, &salt, iterations),
                theirs,
                "{password:?}"
            );
            roles.push(role);
        }
        admin.close().await;
        let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
        drop_roles(test_db, &roles).await
    }

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
        // Stored as sent: had the server taken the verifier for a password and hashed it,
        // this would not be the verifier of PASSWORD.
        let stored = stored_verifier(&admin, &role).await;
        let (iterations, salt) = iterations_and_salt(&stored);
        assert_eq!((iterations, salt.len()), (4096, 16), "{stored}");
        assert_eq!(scram_verifier_with(PASSWORD, &salt, iterations), stored);
        admin.close().await;
        drop_roles(test_db, &[&role]).await?;

        let logs = captured.text();
        assert!(
            logs.contains("ROLE"),
            "sqlx statements were not captured: {logs}"
        );
        assert!(!logs.contains(PASSWORD), "{logs}");
        Ok(())
    }
}
