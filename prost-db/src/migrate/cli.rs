//! The `prost-db` command line (feature `cli`): `prost-db migrate up|down|status|redo|
//! dry-run|reset|new`.
//!
//! The logic lives here, in the library, so any binary can embed it and tests can call it:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     prost_db::migrate::cli::main()
//! }
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::{DryRunOutcome, MigrationState, Migrations, Migrator, Report, RunMode};
use crate::{Db, DbConfig, Error};

/// The `prost-db` command line, parsed. Its help text is [`ABOUT`] and [`LONG_ABOUT`], not
/// this documentation.
///
/// ```
/// use clap::Parser;
///
/// let cli = prost_db::migrate::cli::Cli::try_parse_from(["prost-db", "migrate", "new", "catalog", "add_tags"]);
/// assert!(cli.is_ok());
/// ```
#[derive(Debug, Parser)]
#[command(name = "prost-db", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What `prost-db -h` says.
///
/// ```
/// assert!(prost_db::migrate::cli::ABOUT.contains("migrations"));
/// ```
pub const ABOUT: &str = "Versioned PostgreSQL migrations for prost-db services: one directory per schema, \
     one lock per schema, all pending migrations of a schema in one transaction";

/// What `prost-db --help` says.
///
/// ```
/// assert!(prost_db::migrate::cli::LONG_ABOUT.contains("DATABASE_URL"));
/// ```
pub const LONG_ABOUT: &str = "Versioned PostgreSQL migrations for prost-db services.

A migrations root is one database; each directory under it is one schema, holding \
<version>_<name>.up.sql and optional .down.sql files. Every schema runs concurrently under \
its own lock; a schema's pending migrations run in one transaction, so a failure changes \
nothing, and a script marked `-- prost-db:no-transaction` makes the run commit step by step \
with automatic DOWNs on failure. The tracking table and the audit log live in each schema.

The database is DATABASE_URL (or --database-url); the root is --root (PROST_DB_MIGRATIONS, \
default `migrations`). Run `prost-db migrate --help` for the commands.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Versioned migrations of one database, one directory per schema.
    #[command(subcommand)]
    Migrate(MigrateCommand),
}

#[derive(Debug, Args)]
struct Target {
    /// The database, `postgres://user[:password]@host:port/database`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The migrations root: one directory per schema.
    #[arg(long, env = "PROST_DB_MIGRATIONS", default_value = "migrations")]
    root: PathBuf,
    /// Only these schemas (repeatable; default: every directory under the root).
    #[arg(long = "schema", short = 's')]
    schemas: Vec<String>,
    /// Recorded as who applied the migrations (default `$USER@$HOSTNAME`).
    #[arg(long, env = "PROST_DB_APPLIED_BY")]
    applied_by: Option<String>,
    /// Give up waiting for a schema's migration lock (another deployment migrating it)
    /// after this many milliseconds, naming the session that holds it (default: wait).
    #[arg(long, env = "PROST_DB_LOCK_WAIT_MS", value_name = "MS")]
    lock_wait_ms: Option<u64>,
    /// The scripts' `lock_timeout`: a statement waiting this long for a table lock (an
    /// ALTER TABLE behind a long transaction) fails, naming the blocking session (0: no
    /// limit).
    #[arg(
        long,
        env = "PROST_DB_DDL_LOCK_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 5000
    )]
    ddl_lock_timeout_ms: u64,
    /// The scripts' `statement_timeout` (default 0: none; the service's
    /// PROST_DB_STATEMENT_TIMEOUT_MS does not apply to migrations).
    #[arg(
        long,
        env = "PROST_DB_MIGRATION_STATEMENT_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 0
    )]
    statement_timeout_ms: u64,
}

#[derive(Debug, Subcommand)]
enum MigrateCommand {
    /// Apply the pending migrations of every schema (schemas run concurrently).
    Up {
        #[command(flatten)]
        target: Target,
        /// Record the new checksum of applied migrations that were edited deliberately.
        #[arg(long)]
        accept_changed: bool,
        /// Apply pending migrations older than the newest applied one.
        #[arg(long)]
        allow_out_of_order: bool,
    },
    /// Revert applied migrations, newest first, down to a version.
    Down {
        #[command(flatten)]
        target: Target,
        /// Revert every migration above this version (0: all).
        #[arg(long, conflicts_with = "steps")]
        to: Option<i64>,
        /// Revert this many migrations (default 1).
        #[arg(long)]
        steps: Option<usize>,
    },
    /// Revert the newest applied migration and apply it again.
    Redo {
        #[command(flatten)]
        target: Target,
    },
    /// Show every migration: applied, pending, changed, missing, irreversible.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Run the pending migrations and their downs in a transaction that is rolled back.
    DryRun {
        #[command(flatten)]
        target: Target,
    },
    /// Drop each schema and apply everything again (test databases only).
    Reset {
        #[command(flatten)]
        target: Target,
        /// Allow it on a database not named like a test database (`prost_test_*`,
        /// `test_*`, `*_test`, `test`).
        #[arg(long)]
        force: bool,
    },
    /// Create the next numbered `.up.sql`/`.down.sql` pair in a schema's directory.
    New {
        /// The schema (its directory under the root).
        schema: String,
        /// The migration's name, e.g. `add_product_tags`.
        name: String,
        /// The migrations root.
        #[arg(long, env = "PROST_DB_MIGRATIONS", default_value = "migrations")]
        root: PathBuf,
        /// Mark it to run outside a transaction (e.g. `CREATE INDEX CONCURRENTLY`).
        #[arg(long)]
        no_transaction: bool,
    },
}

/// Parses the process arguments, runs the command and reports errors on stderr: the body
/// of a `main`.
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     prost_db::migrate::cli::main()
/// }
/// ```
pub fn main() -> ExitCode {
    run(std::env::args_os())
}

/// Runs the command line `args` (the first item is the program name) on a Tokio runtime
/// of its own, printing to stdout/stderr. Returns failure if the command failed.
///
/// ```no_run
/// let code = prost_db::migrate::cli::run(["prost-db", "migrate", "status", "--root", "migrations/shop"]);
/// # let _ = code;
/// ```
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(cli: Cli) -> Result<(), Error> {
    let Command::Migrate(command) = cli.command;
    match command {
        MigrateCommand::New {
            schema,
            name,
            root,
            no_transaction,
        } => {
            let (up, down) = new_migration(&root, &schema, &name, no_transaction)?;
            println!("created {}\ncreated {}", up.display(), down.display());
            Ok(())
        }
        MigrateCommand::Up {
            target,
            accept_changed,
            allow_out_of_order,
        } => {
            for_each_schema(
                &target,
                |m| {
                    m.accept_changed(accept_changed)
                        .allow_out_of_order(allow_out_of_order)
                },
                |m, db| async move {
                    let report = m.up(&db).await?;
                    print_report("up", &report);
                    Ok(())
                },
            )
            .await
        }
        MigrateCommand::Down { target, to, steps } => {
            for_each_schema(
                &target,
                |m| m,
                |m, db| async move {
                    let target = match to {
                        Some(to) => to,
                        None => {
                            let status = m.status(&db).await?;
                            let applied: Vec<i64> = status
                                .entries
                                .iter()
                                .filter(|e| e.state != MigrationState::Pending)
                                .map(|e| e.version)
                                .collect();
                            let keep = applied.len().saturating_sub(steps.unwrap_or(1));
                            if keep == 0 { 0 } else { applied[keep - 1] }
                        }
                    };
                    let report = m.down(&db, target).await?;
                    print_report("down", &report);
                    Ok(())
                },
            )
            .await
        }
        MigrateCommand::Redo { target } => {
            for_each_schema(
                &target,
                |m| m,
                |m, db| async move {
                    let report = m.redo(&db).await?;
                    print_report("redo", &report);
                    Ok(())
                },
            )
            .await
        }
        MigrateCommand::Status { target } => {
            for_each_schema(
                &target,
                |m| m,
                |m, db| async move {
                    let status = m.status(&db).await?;
                    let mut out = format!("schema {}\n", status.schema);
                    for e in &status.entries {
                        let state = match e.state {
                            MigrationState::Applied => "applied",
                            MigrationState::Pending => "pending",
                            MigrationState::Changed => "CHANGED",
                            MigrationState::Missing => "MISSING",
                        };
                        let flags = format!(
                            "{}{}",
                            if e.reversible { "" } else { " irreversible" },
                            if e.no_transaction {
                                " no-transaction"
                            } else {
                                ""
                            }
                        );
                        let when = e
                            .applied_at
                            .map(|t| t.format(" %Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_default();
                        out.push_str(&format!(
                            "  {:>6}  {:<8} {}{}{}  ({})\n",
                            e.version, state, e.name, flags, when, e.file
                        ));
                    }
                    print!("{out}");
                    Ok(())
                },
            )
            .await
        }
        MigrateCommand::DryRun { target } => {
            for_each_schema(
                &target,
                |m| m,
                |m, db| async move {
                    let dry = m.dry_run(&db).await?;
                    let mut out = format!("schema {} (dry run, rolled back)\n", dry.schema);
                    if dry.steps.is_empty() {
                        out.push_str("  nothing pending\n");
                    }
                    let show = |o: &DryRunOutcome| match o {
                        DryRunOutcome::Ok { duration } => format!("ok in {duration:?}"),
                        DryRunOutcome::Failed(f) => format!("FAILS: {f}"),
                        DryRunOutcome::NotRehearsed(why) => format!("not run: {why}"),
                        #[allow(unreachable_patterns)]
                        _ => "?".into(),
                    };
                    for s in &dry.steps {
                        let down = s
                            .down
                            .as_ref()
                            .map_or_else(|| "irreversible".to_owned(), show);
                        out.push_str(&format!(
                            "  {:>6} {}: up {}; down {}\n",
                            s.version,
                            s.name,
                            show(&s.up),
                            down
                        ));
                    }
                    print!("{out}");
                    if dry.succeeded() {
                        Ok(())
                    } else {
                        Err(Error::Config(format!(
                            "the dry run of schema {} failed",
                            dry.schema
                        )))
                    }
                },
            )
            .await
        }
        MigrateCommand::Reset { target, force } => {
            for_each_schema(
                &target,
                |m| m.allow_reset(force),
                |m, db| async move {
                    let report = m.reset(&db).await?;
                    print_report("reset", &report);
                    Ok(())
                },
            )
            .await
        }
    }
}

/// Runs `op` for every selected schema concurrently (each schema has its own lock); reports
/// every failure, not only the first.
async fn for_each_schema<F, Fut>(
    target: &Target,
    configure: impl Fn(Migrator) -> Migrator,
    op: F,
) -> Result<(), Error>
where
    F: Fn(std::sync::Arc<Migrator>, Db) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let migrations = Migrations::from_dir(&target.root)?;
    let mut migrator = Migrator::new(migrations);
    if let Some(who) = &target.applied_by {
        migrator = migrator.applied_by(who.clone());
    }
    if let Some(ms) = target.lock_wait_ms {
        migrator = migrator.lock_wait(Duration::from_millis(ms))?;
    }
    let migrator = migrator
        .ddl_lock_timeout(Duration::from_millis(target.ddl_lock_timeout_ms))?
        .statement_timeout(Duration::from_millis(target.statement_timeout_ms))?;
    let migrator = std::sync::Arc::new(configure(migrator));
    let schemas: Vec<String> = if target.schemas.is_empty() {
        migrator.migrations().schemas().map(str::to_owned).collect()
    } else {
        target.schemas.clone()
    };
    let runs = schemas.iter().map(|schema| {
        let migrator = migrator.clone();
        let op = &op;
        async move {
            let config = DbConfig::new(&target.database_url, schema)?
                .create_schema(true)
                .min_connections(0)
                .max_connections(2);
            let db = Db::connect(config).await?;
            let result = op(migrator, db.clone()).await;
            db.close().await;
            result
        }
    });
    let results = futures_util::future::join_all(runs).await;
    let mut failures: Vec<Error> = results.into_iter().filter_map(Result::err).collect();
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        _ => Err(Error::Config(
            failures
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\nerror: "),
        )),
    }
}

fn print_report(what: &str, report: &Report) {
    let mut out = String::new();
    if report.mode == RunMode::NothingToDo {
        out.push_str(&format!("{what} {}: up to date\n", report.schema));
    }
    for s in &report.reverted {
        out.push_str(&format!(
            "{what} {}: reverted {} {} ({:?})\n",
            report.schema, s.version, s.name, s.duration
        ));
    }
    for s in &report.applied {
        out.push_str(&format!(
            "{what} {}: applied {} {} ({:?})\n",
            report.schema, s.version, s.name, s.duration
        ));
    }
    print!("{out}");
}

/// Creates `<root>/<schema>/<next>_<name>.up.sql` and `.down.sql`, numbering after the
/// newest existing version with the same zero padding (4 digits by default). Returns the
/// two paths.
///
/// ```
/// let root = std::env::temp_dir().join(format!("prost-db-doc-new-{}", std::process::id()));
/// let (up, down) = prost_db::migrate::cli::new_migration(&root, "catalog", "add_tags", false)?;
/// assert!(up.ends_with("catalog/0001_add_tags.up.sql"));
/// assert!(down.ends_with("catalog/0001_add_tags.down.sql"));
/// # std::fs::remove_dir_all(root).unwrap();
/// # Ok::<(), prost_db::Error>(())
/// ```
///
/// # Errors
///
/// An invalid schema or migration name, or an unreadable directory.
pub fn new_migration(
    root: &Path,
    schema: &str,
    name: &str,
    no_transaction: bool,
) -> Result<(PathBuf, PathBuf), Error> {
    crate::Identifier::new(crate::IdentifierKind::Schema, schema)?;
    let dir = root.join(schema);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
    let existing = prost_db_core::source::load_schema_dir(&dir, schema)?;
    let (width, last) = existing.migrations.last().map_or((4, 0), |m| {
        let width =
            m.up.path
                .rsplit('/')
                .next()
                .and_then(|f| f.split('_').next())
                .map_or(4, str::len);
        (width, m.version)
    });
    let next = last.checked_add(1).ok_or_else(|| {
        Error::Config(format!(
            "schema {schema:?} has no version left after {last}"
        ))
    })?;
    let stem = format!("{next:0width$}_{name}");
    prost_db_core::source::parse_file_name(&format!("{stem}.up.sql"))
        .map_err(|reason| Error::Config(format!("bad migration name {name:?}: {reason}")))?;
    let up = dir.join(format!("{stem}.up.sql"));
    let down = dir.join(format!("{stem}.down.sql"));
    let header = if no_transaction {
        format!(
            "{}\n-- Runs outside a transaction; keep it to one statement.\n",
            super::NO_TRANSACTION_DIRECTIVE
        )
    } else {
        String::new()
    };
    let write = |path: &Path, text: String| {
        std::fs::write(path, text)
            .map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))
    };
    write(
        &up,
        format!("{header}-- {name}: write the change here.\nSELECT 1;\n"),
    )?;
    write(
        &down,
        format!("{header}-- Undo {name}: write the exact reverse here.\nSELECT 1;\n"),
    )?;
    Ok((up, down))
}
