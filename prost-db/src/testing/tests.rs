//! Unit tests of the test-database helpers; the role sweep against the real server.

use super::*;

async fn role_exists(conn: &mut PgConnection, role: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(conn)
        .await
        .unwrap()
}

async fn create_role(conn: &mut PgConnection, role: &str) {
    let role = Identifier::new(IdentifierKind::Role, role).unwrap();
    let sql = format!("CREATE ROLE {role} LOGIN");
    sqlx::query(AssertSqlSafe(sql)).execute(conn).await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn the_role_sweep_drops_a_dead_runs_roles_and_never_a_live_tests() -> Result<()> {
    let server = server_options(&server_url())?;
    let mut admin = maintenance_connection(&server).await?;
    // A dead run's role: its database and its owner's session are gone.
    let dead = TestDb::new().await?;
    let stale = dead.role_name("stale");
    dead.close().await?;
    create_role(&mut admin, &stale).await;
    // A live test's role: its database and owner are alive.
    let live = TestDb::new().await?;
    let fresh = live.role_name("fresh");
    create_role(&mut admin, &fresh).await;
    // A test between dropping its database and dropping its role: the owner's session
    // is still open.
    let closing = TestDb::new().await?;
    let owned = closing.role_name("owned_by_a_live_run");
    let owner = server.clone().application_name(&owner_mark(&closing.name));
    let owner = maintenance_connection(&owner).await?;
    closing.close().await?;
    create_role(&mut admin, &owned).await;
    assert!(
        role_exists(&mut admin, &stale).await,
        "control: the leftover exists"
    );
    // An application's role shaped like a test's, on a shared server, without the prefix:
    // its "database" is gone and nobody is logged in as it, and it stays.
    let foreign = stale.trim_start_matches(TEST_ROLE_PREFIX).to_owned();
    create_role(&mut admin, &foreign).await;

    sweep_roles(&mut admin).await?;
    assert!(
        !role_exists(&mut admin, &stale).await,
        "the leftover is dropped"
    );
    let kept = role_exists(&mut admin, &foreign).await;
    let foreign = Identifier::new(IdentifierKind::Role, &foreign)?;
    sqlx::query(AssertSqlSafe(format!("DROP ROLE {foreign}")))
        .execute(&mut admin)
        .await?;
    assert!(kept, "a role without the test prefix stays");
    assert!(
        role_exists(&mut admin, &fresh).await,
        "a live test's role stays"
    );
    assert!(
        role_exists(&mut admin, &owned).await,
        "a live owner's role stays"
    );

    // Once its owner is gone, the last one is a leftover too (the backend's exit shows
    // in pg_stat_activity shortly after the close).
    owner.close().await?;
    let mut gone = false;
    for _ in 0..50 {
        sweep_roles(&mut admin).await?;
        gone = !role_exists(&mut admin, &owned).await;
        if gone {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the role of a run whose owner is gone is dropped");
    assert!(role_exists(&mut admin, &fresh).await);

    live.close().await?;
    let fresh = Identifier::new(IdentifierKind::Role, &fresh)?;
    sqlx::query(AssertSqlSafe(format!("DROP ROLE {fresh}")))
        .execute(&mut admin)
        .await?;
    admin.close().await.ok();
    Ok(())
}

#[test]
fn test_url_replaces_only_the_database() {
    for (server, expected) in [
        (
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://postgres@127.0.0.1:5432/t1",
        ),
        ("postgres://u:pw@db:5432", "postgres://u:pw@db:5432/t1"),
        (
            "postgres://u@db/prost?sslmode=verify-full&sslrootcert=/etc/ca.pem",
            "postgres://u@db/t1?sslmode=verify-full&sslrootcert=/etc/ca.pem",
        ),
        (
            "postgresql://u@db?sslrootcert=/etc/ca.pem",
            "postgresql://u@db/t1?sslrootcert=/etc/ca.pem",
        ),
        (
            "postgres:///prost?host=/var/run/postgresql",
            "postgres:///t1?host=/var/run/postgresql",
        ),
    ] {
        assert_eq!(with_database(server, "t1"), expected, "{server}");
    }
}
