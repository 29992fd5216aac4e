//! Two services, one database, each in its own schema; then the seed's pooling claim,
//! measured: N queries that each open a new connection versus N queries through the pool.
//!
//! ```sh
//! cargo run --example quickstart            # against postgres://postgres@127.0.0.1:5432
//! DATABASE_URL=postgres://... cargo run --example quickstart
//! ```
//!
//! It works in a throwaway database (made and dropped with `prost_db::testing::TestDb`), so it
//! leaves nothing behind.

use std::time::{Duration, Instant};

use prost_db::testing::TestDb;
use prost_db::{Db, Error};
use sqlx::Connection;

const QUERIES: u32 = 200;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scratch = match TestDb::new().await {
        Ok(db) => db,
        Err(e @ Error::Connect { .. }) => {
            eprintln!("{e}");
            eprintln!(
                "start PostgreSQL with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
            );
            std::process::exit(2);
        }
        Err(e) => return Err(e.into()),
    };
    println!("scratch database: {}\n", scratch.name());

    let catalog = scratch.db("catalog").await?;
    let orders = scratch.db("orders").await?;

    // The same unqualified DDL lands in each service's own schema.
    for (db, table) in [(&catalog, "products"), (&orders, "orders")] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )))
        .execute(db.pool())
        .await?;
    }
    for db in [&catalog, &orders] {
        println!(
            "service {:<8} current_schema() = {:<8} tables = {:?}",
            db.service(),
            db.current_schema().await?,
            db.list_tables().await?
        );
    }
    match catalog.require_tables(&["products", "orders"]).await {
        Err(e) => println!("catalog cannot see orders' table: {e}\n"),
        Ok(()) => return Err("schema isolation failed: catalog sees orders.orders".into()),
    }

    let (fresh, pooled) = measure(&scratch, &catalog).await?;
    let per = |d: Duration| d.as_secs_f64() * 1e3 / f64::from(QUERIES);
    println!("{QUERIES} queries of `SELECT 1`:");
    println!("{:<28} {:>12}", "", "avg latency");
    println!("{:<28} {:>9.3} ms", "new connection per query", per(fresh));
    println!("{:<28} {:>9.3} ms", "through the pool", per(pooled));
    println!(
        "{:<28} {:>9.1}x",
        "pool speed-up",
        fresh.as_secs_f64() / pooled.as_secs_f64()
    );
    println!("pool stats: {:?}", catalog.stats());

    catalog.close().await;
    orders.close().await;
    scratch.close().await?;
    Ok(())
}

async fn measure(scratch: &TestDb, db: &Db) -> Result<(Duration, Duration), sqlx::Error> {
    let options = scratch
        .connect_options()
        .options([("search_path", "catalog")]);
    let started = Instant::now();
    for _ in 0..QUERIES {
        let mut conn = sqlx::PgConnection::connect_with(&options).await?;
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        conn.close().await?;
    }
    let fresh = started.elapsed();

    let started = Instant::now();
    for _ in 0..QUERIES {
        sqlx::query("SELECT 1").execute(db.pool()).await?;
    }
    Ok((fresh, started.elapsed()))
}
