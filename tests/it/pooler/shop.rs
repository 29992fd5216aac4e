//! The shop example (`examples/shop.rs`) through the real PgBouncer: its services log in as
//! roles of their own, send unnamed statements, and migrate over the direct URL.

use std::path::PathBuf;

use prost_db::amqp;
use prost_db::testing::TestDb;
use sqlx::Connection;

use super::{TestResult, pgbouncer};

/// The example's binary, which `cargo test --workspace` (and `cargo build --example shop`)
/// builds next to the test binary.
fn shop_example() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    let debug = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let shop = debug.join("examples").join("shop");
    assert!(
        shop.exists(),
        "{} is missing: build it with `cargo build --example shop` (`cargo test --workspace` \
         builds it too)",
        shop.display()
    );
    shop
}

#[tokio::test]
async fn the_shop_example_runs_consistently_through_the_pooler() -> TestResult {
    let bouncer = pgbouncer();
    let shop = TestDb::new().await?;
    let analytics = TestDb::new().await?;
    let prefix = format!("t{}.", uuid::Uuid::new_v4().simple());
    let pooler_url = format!(
        "postgres://{}:{}/{}",
        bouncer.get_host(),
        bouncer.get_port(),
        shop.name()
    );
    let output = tokio::process::Command::new(shop_example())
        .env("DATABASE_URL", shop.url())
        .env("ANALYTICS_DATABASE_URL", analytics.url())
        .env("SHOP_POOLER_URL", &pooler_url)
        .env("SHOP_ORDERS", "200")
        .env("SHOP_CONTROL", "0")
        .env("SHOP_PREFIX", &prefix)
        .kill_on_drop(true)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");

    // The example leaves its topology (it purges, and keeps it for the next run).
    let connection = amqp::connect(&amqp::url_from_env()).await?;
    let channel = connection.create_channel().await?;
    prost_shop::topology::delete(&prost_shop::topology::saga_topology(&prefix), &channel).await?;
    connection.close(200, "done".into()).await.ok();

    assert!(
        output.status.success(),
        "the shop failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("through the pooler at"), "{stdout}");
    assert!(
        stdout.contains("CONSISTENT: every saga ended as it should, exactly once"),
        "{stdout}"
    );

    let roles: Vec<String> = ["catalog", "users", "cart", "orders"]
        .iter()
        .map(|service| format!("{}_{service}", shop.name()))
        .collect();
    let server = shop.connect_options();
    shop.close().await?;
    analytics.close().await?;
    let mut conn = sqlx::PgConnection::connect_with(&server.database("postgres")).await?;
    for role in roles {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP ROLE IF EXISTS \"{role}\""
        )))
        .execute(&mut conn)
        .await?;
    }
    Ok(())
}
