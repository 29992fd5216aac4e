//! `Db::connect` finds a transaction pooler in its way: one that refuses the startup
//! `options` (PgBouncer's default) and one that drops them (`ignore_startup_parameters =
//! options`, a second PgBouncer started for the test on a port of its own), reported with
//! the setting to use under `Pooler::None`, and gone through as `Pooler::Transaction`
//! under `Pooler::Auto`.

use std::path::PathBuf;
use std::process::Command;

use prost_db::{Db, DbConfig, Error, Pooler, Statements};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{Service, TestResult, statements_through};

/// A PgBouncer of the test's own, configured as `.ci/pgbouncer` does but for
/// `ignore_startup_parameters`, in a temporary directory; stopped and removed on drop.
struct Bouncer {
    dir: PathBuf,
    port: u16,
}

impl Bouncer {
    fn start(ignore_startup_parameters: &str) -> Bouncer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("prost-pgbouncer-test-{port}"));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/pgbouncer");
        let config = Command::new("bash")
            .args([script, "config"])
            .env("PROST_PGBOUNCER_DIR", &dir)
            .env("PROST_PGBOUNCER_PORT", port.to_string())
            .output()
            .expect("run .ci/pgbouncer config");
        assert!(config.status.success(), "{config:?}");
        let config = String::from_utf8(config.stdout).unwrap();
        let config: String = config
            .lines()
            .map(|line| {
                if line.starts_with("ignore_startup_parameters") {
                    format!("ignore_startup_parameters = {ignore_startup_parameters}\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pgbouncer.ini"), config).unwrap();
        std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n").unwrap();
        let bouncer = Bouncer { dir, port };
        let ini = bouncer.dir.join("pgbouncer.ini");
        let mut command = Command::new("pgbouncer");
        command.env(
            "PATH",
            format!("{}:/usr/sbin", std::env::var("PATH").unwrap_or_default()),
        );
        command.arg("-d");
        // PgBouncer refuses to run as root.
        if Command::new("id").arg("-u").output().unwrap().stdout == b"0\n" {
            Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&bouncer.dir)
                .status()
                .unwrap();
            command.args(["-u", "postgres"]);
        }
        let status = command.arg(&ini).status().expect("start pgbouncer");
        assert!(status.success(), "pgbouncer did not start: {status}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return bouncer;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the test's PgBouncer did not open port {port}");
    }

    fn options(&self, service: &Service) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(&service.role)
            .database(service.test_db.name())
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pgbouncer.pid")) {
            Command::new("kill").arg(pid.trim()).status().ok();
        }
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

#[tokio::test]
async fn a_pooler_refusing_the_schema_option_is_detected_and_auto_goes_through_it() -> TestResult {
    let service = Service::new("auto", "catalog").await?;
    let config = || DbConfig::from_connect_options(service.through_pgbouncer(), "catalog");
    let err = Db::connect(config()).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::PoolerDetected { .. }), "{err:?}");
    assert!(!err.is_transient(), "retrying cannot help: {err}");
    assert!(
        message.contains("a transaction pooler is in the way")
            && message.contains("unsupported startup parameter")
            && message.contains("Pooler::Transaction")
            && message.contains("PROST_DB_POOLER=auto"),
        "{message}"
    );

    let db = Db::connect(config().pooler(Pooler::Auto).max_connections(2)).await?;
    assert_eq!(db.statements(), Statements::UNNAMED);
    let admin = service.test_db.pool().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE catalog.t (v TEXT); GRANT ALL ON catalog.t TO \"{}\"",
        service.role
    )))
    .execute(&admin)
    .await?;
    let mut tx = db.begin().await?;
    db.query("INSERT INTO t VALUES ($1)")
        .bind("auto")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let rows: Vec<String> = sqlx::query_scalar("SELECT v FROM catalog.t")
        .fetch_all(&admin)
        .await?;
    assert_eq!(rows, ["auto"]);

    // Straight to PostgreSQL, Auto stays direct, with named statements.
    let direct = Db::connect(service.test_db.config("catalog").pooler(Pooler::Auto)).await?;
    assert_eq!(direct.statements(), Statements::NAMED);
    direct.close().await;
    db.close().await;
    admin.close().await;
    service.close().await
}

#[tokio::test]
async fn a_pooler_dropping_the_schema_option_is_detected_and_auto_goes_through_it() -> TestResult {
    let bouncer = Bouncer::start("extra_float_digits, options");
    let service = Service::new("drop", "catalog").await?;
    let config =
        || DbConfig::from_connect_options(bouncer.options(&service), "catalog").max_connections(2);

    // The control: what a direct pool would do there. The role's default is the schema,
    // so the connection looks right, and named statements then break.
    let plain = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(
            bouncer
                .options(&service)
                .options([("search_path", "catalog")]),
        )
        .await?;
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .persistent(false)
        .fetch_one(&plain)
        .await?;
    assert_eq!(
        schema, "catalog",
        "the dropped option is not visible in the schema"
    );
    let errors = statements_through(&plain, true, 50).await?;
    plain.close().await;
    println!("named statements through the pooler that drops `options`: {errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("prepared statement")),
        "{errors:?}"
    );

    let err = Db::connect(config()).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::PoolerDetected { .. }), "{err:?}");
    assert!(
        message.contains("dropped the startup parameter `options`")
            && message.contains("listens on port 5432")
            && message.contains("Pooler::Transaction"),
        "{message}"
    );

    let db = Db::connect(config().pooler(Pooler::Auto)).await?;
    assert_eq!(db.statements(), Statements::UNNAMED);
    let errors = statements_through(db.pool(), false, 20).await?;
    assert!(errors.is_empty(), "{errors:?}");
    db.close().await;

    // Without the role's default, Auto cannot bind the schema either, and says what to set.
    let admin = service.test_db.pool().await?;
    service
        .set_role_default(&admin, "RESET search_path")
        .await?;
    admin.close().await;
    let err = loop {
        match Db::connect(config().pooler(Pooler::Auto)).await {
            Err(e) if e.is_transient() => continue,
            Err(e) => break e,
            Ok(_) => panic!("Auto connected in the wrong schema"),
        }
    };
    let message = err.to_string();
    assert!(matches!(err, Error::PoolerDetected { .. }), "{err:?}");
    assert!(
        message.contains("ALTER ROLE") && message.contains("search_path = catalog"),
        "{message}"
    );
    drop(bouncer);
    service.close().await
}
