//! Migration files on disk: `<root>/<schema>/<version>_<name>.up.sql` and `.down.sql`.
//!
//! Both the runtime migrator and the compile-time catalog read migrations through this
//! module, so they agree on names, order and directives.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The directive that makes a migration run outside a transaction. It must appear in the
/// comment lines at the top of the `.up.sql` file (sqlx's `-- no-transaction` is accepted
/// too).
pub const NO_TRANSACTION_DIRECTIVE: &str = "-- prost-db:no-transaction";

/// One SQL script of a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Where the script came from, for error messages (`migrations/shop/catalog/0001_x.up.sql`).
    pub path: Cow<'static, str>,
    /// The SQL text.
    pub sql: Cow<'static, str>,
}

/// A versioned migration: its up script and, if reversible, its down script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The numeric version from the file name; migrations apply in ascending order.
    pub version: i64,
    /// The name part of the file name (`create_products`).
    pub name: Cow<'static, str>,
    /// The `.up.sql` script.
    pub up: Script,
    /// The `.down.sql` script; `None` marks the migration irreversible.
    pub down: Option<Script>,
    /// Whether the up script carries [`NO_TRANSACTION_DIRECTIVE`].
    pub no_transaction: bool,
}

impl Migration {
    /// Hex SHA-256 of the up script: what the tracking table records to detect edits.
    pub fn checksum(&self) -> String {
        checksum(&self.up.sql)
    }
}

/// The migrations of one schema, in version order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaMigrations {
    /// The schema (the directory's name).
    pub schema: Cow<'static, str>,
    /// Migrations sorted by version, without duplicates.
    pub migrations: Vec<Migration>,
}

/// Which script of a migration a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `.up.sql`
    Up,
    /// `.down.sql`
    Down,
}

/// What is wrong with a migrations directory. Every variant names the file.
#[derive(Debug)]
#[non_exhaustive]
pub enum SourceError {
    /// A directory or file could not be read.
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A `.sql` file whose name is not `<version>_<name>.up.sql` / `.down.sql`.
    BadFileName {
        /// The file.
        path: PathBuf,
        /// What is wrong with the name.
        reason: &'static str,
    },
    /// A schema directory whose name is not a valid schema name.
    BadSchemaName {
        /// The directory.
        path: PathBuf,
        /// The broken rule.
        reason: &'static str,
    },
    /// Two files claim the same version (and direction) in one schema.
    DuplicateVersion {
        /// The version.
        version: i64,
        /// The file seen first.
        first: PathBuf,
        /// The file seen second.
        second: PathBuf,
    },
    /// A `.down.sql` without its `.up.sql`.
    MissingUp {
        /// The down file.
        path: PathBuf,
    },
    /// A script that holds no SQL (only whitespace and comments).
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// A file that is not UTF-8.
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// A psql meta-command line (`\set ON_ERROR_STOP on`): the server cannot run it, so
    /// neither the migrator nor the catalog accepts it (see [`split`](crate::split)).
    MetaCommand {
        /// The file.
        path: PathBuf,
        /// Its line, from 1.
        line: u32,
        /// The command as written.
        command: String,
    },
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::Io { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            SourceError::BadFileName { path, reason } => write!(
                f,
                "bad migration file name {}: {reason}; expected <version>_<name>.up.sql or <version>_<name>.down.sql, e.g. 0001_create_products.up.sql",
                path.display()
            ),
            SourceError::BadSchemaName { path, reason } => write!(
                f,
                "bad schema directory {}: {reason}; each directory under the migrations root is named after its schema",
                path.display()
            ),
            SourceError::DuplicateVersion {
                version,
                first,
                second,
            } => write!(
                f,
                "duplicate migration version {version}: {} and {}; give one of them a new version",
                first.display(),
                second.display()
            ),
            SourceError::MissingUp { path } => write!(
                f,
                "{} has no matching .up.sql file; add it or remove the down script",
                path.display()
            ),
            SourceError::EmptyFile { path } => write!(
                f,
                "migration file {} is empty; write the SQL, or delete an empty .down.sql to mark the migration irreversible",
                path.display()
            ),
            SourceError::NotUtf8 { path } => {
                write!(f, "migration file {} is not valid UTF-8", path.display())
            }
            SourceError::MetaCommand {
                path,
                line,
                command,
            } => write!(
                f,
                "{}:{line}: `{command}` is a psql meta-command, not SQL; migrations are sent to the server, which cannot run it: remove the line (a migration's statements already stop at the first error)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SourceError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Hex SHA-256 of `sql`.
///
/// ```
/// assert_eq!(prost_db_core::source::checksum("").len(), 64);
/// ```
pub fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Splits a migration file name into version, name and direction.
///
/// ```
/// use prost_db_core::source::{parse_file_name, Direction};
///
/// assert_eq!(parse_file_name("0002_create_products.up.sql"), Ok((2, "create_products", Direction::Up)));
/// assert!(parse_file_name("create_products.sql").is_err());
/// ```
///
/// # Errors
///
/// The rule the name breaks.
pub fn parse_file_name(file_name: &str) -> Result<(i64, &str, Direction), &'static str> {
    let (stem, direction) = if let Some(stem) = file_name.strip_suffix(".up.sql") {
        (stem, Direction::Up)
    } else if let Some(stem) = file_name.strip_suffix(".down.sql") {
        (stem, Direction::Down)
    } else {
        return Err("it does not end in .up.sql or .down.sql");
    };
    let Some((version, name)) = stem.split_once('_') else {
        return Err("there is no `_` between the version and the name");
    };
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the version before the first `_` must be digits");
    }
    let version: i64 = version
        .parse()
        .map_err(|_| "the version does not fit in a 64-bit integer")?;
    if version == 0 {
        return Err("version 0 is reserved for `down` to an empty schema; start at 1");
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("the name must be ASCII letters, digits, `_` or `-`");
    }
    Ok((version, name, direction))
}

/// Whether `sql`'s leading comment lines carry the no-transaction directive.
pub fn has_no_transaction_directive(sql: &str) -> bool {
    sql.lines()
        .map(str::trim)
        .take_while(|line| line.is_empty() || line.starts_with("--"))
        .any(|line| {
            let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
            line == NO_TRANSACTION_DIRECTIVE
                || line == "-- prost-db: no-transaction"
                || line == "-- no-transaction"
        })
}

/// Whether `sql` holds anything but whitespace and comments.
pub fn is_blank(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, tail)| tail);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, tail)| tail);
        } else {
            return rest.is_empty();
        }
    }
}

/// The first psql meta-command of `sql` (its line and text), if it has one.
///
/// ```
/// let sql = "CREATE TABLE t (a TEXT DEFAULT E'\\\\');\n\\set ON_ERROR_STOP on\n";
/// assert_eq!(prost_db_core::source::meta_command(sql), Some((2, "\\set ON_ERROR_STOP on")));
/// assert_eq!(prost_db_core::source::meta_command("SELECT '\\';"), None);
/// ```
pub fn meta_command(sql: &str) -> Option<(u32, &str)> {
    if !sql.contains('\\') {
        return None;
    }
    crate::split::split(sql)
        .into_iter()
        .find(|s| s.kind == crate::split::StatementKind::MetaCommand)
        .map(|s| (s.line, s.text))
}

/// Reads every schema directory under `root`, sorted by schema name. Files other than
/// `*.sql` (a README, say) and hidden entries are ignored.
///
/// # Errors
///
/// The first [`SourceError`] found, naming the file.
pub fn load_root(root: &Path) -> Result<Vec<SchemaMigrations>, SourceError> {
    let mut schemas = Vec::new();
    for entry in read_dir_sorted(root)? {
        if entry.is_dir() {
            let name = file_name(&entry);
            if name.starts_with('.') {
                continue;
            }
            if let Some(reason) = crate::ident::check(&name) {
                return Err(SourceError::BadSchemaName {
                    path: entry,
                    reason,
                });
            }
            schemas.push(load_schema_dir(&entry, &name)?);
        }
    }
    Ok(schemas)
}

/// Reads the migrations of one schema from `dir`.
///
/// # Errors
///
/// The first [`SourceError`] found, naming the file.
pub fn load_schema_dir(dir: &Path, schema: &str) -> Result<SchemaMigrations, SourceError> {
    struct Pending {
        name: String,
        up: Option<(PathBuf, String)>,
        down: Option<(PathBuf, String)>,
    }
    let mut by_version: BTreeMap<i64, Pending> = BTreeMap::new();
    for path in read_dir_sorted(dir)? {
        let name = file_name(&path);
        if name.starts_with('.') || path.is_dir() {
            continue;
        }
        if !name.ends_with(".sql") {
            continue;
        }
        let (version, stem, direction) =
            parse_file_name(&name).map_err(|reason| SourceError::BadFileName {
                path: path.clone(),
                reason,
            })?;
        let bytes = std::fs::read(&path).map_err(|source| SourceError::Io {
            path: path.clone(),
            source,
        })?;
        let sql =
            String::from_utf8(bytes).map_err(|_| SourceError::NotUtf8 { path: path.clone() })?;
        if is_blank(&sql) {
            return Err(SourceError::EmptyFile { path });
        }
        if let Some((line, command)) = meta_command(&sql) {
            return Err(SourceError::MetaCommand {
                path,
                line,
                command: command.to_owned(),
            });
        }
        let pending = by_version.entry(version).or_insert_with(|| Pending {
            name: stem.to_owned(),
            up: None,
            down: None,
        });
        let (slot, other) = match direction {
            Direction::Up => (&mut pending.up, &pending.down),
            Direction::Down => (&mut pending.down, &pending.up),
        };
        let renamed = (pending.name != stem).then(|| other.as_ref().map(|(p, _)| p.clone()));
        if let Some(first) = slot.as_ref().map(|(p, _)| p.clone()).or(renamed.flatten()) {
            return Err(SourceError::DuplicateVersion {
                version,
                first,
                second: path,
            });
        }
        *slot = Some((path, sql));
    }

    let mut migrations = Vec::with_capacity(by_version.len());
    for (version, pending) in by_version {
        let Some((up_path, up_sql)) = pending.up else {
            let (path, _) = pending.down.expect("a version has at least one file");
            return Err(SourceError::MissingUp { path });
        };
        migrations.push(Migration {
            version,
            name: Cow::Owned(pending.name),
            no_transaction: has_no_transaction_directive(&up_sql),
            up: Script {
                path: Cow::Owned(display_path(&up_path)),
                sql: Cow::Owned(up_sql),
            },
            down: pending.down.map(|(path, sql)| Script {
                path: Cow::Owned(display_path(&path)),
                sql: Cow::Owned(sql),
            }),
        });
    }
    Ok(SchemaMigrations {
        schema: Cow::Owned(schema.to_owned()),
        migrations,
    })
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let io = |source| SourceError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    entries.sort();
    Ok(entries)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn display_path(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "prost-db-source-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, sql) in files {
            std::fs::write(dir.join(name), sql).unwrap();
        }
        dir
    }

    #[test]
    fn loads_in_numeric_order_with_directive() {
        let d = dir(&[
            ("10_ten.up.sql", "SELECT 10;"),
            (
                "2_two.up.sql",
                "-- prost-db:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);",
            ),
            ("2_two.down.sql", "DROP INDEX i;"),
            ("README.md", "not sql"),
        ]);
        let s = load_schema_dir(&d, "catalog").unwrap();
        let versions: Vec<_> = s.migrations.iter().map(|m| m.version).collect();
        assert_eq!(versions, [2, 10]);
        assert!(s.migrations[0].no_transaction);
        assert!(s.migrations[0].down.is_some());
        assert!(!s.migrations[1].no_transaction);
        assert!(s.migrations[1].down.is_none());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn rejects_duplicate_versions() {
        let d = dir(&[("1_a.up.sql", "SELECT 1;"), ("1_b.up.sql", "SELECT 1;")]);
        let err = load_schema_dir(&d, "s").unwrap_err();
        assert!(
            matches!(err, SourceError::DuplicateVersion { version: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("1_b.up.sql"));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn rejects_bad_names_empty_files_and_orphan_downs() {
        for (files, expect) in [
            (vec![("create.sql", "SELECT 1;")], "bad migration file name"),
            (vec![("x_y.up.sql", "SELECT 1;")], "must be digits"),
            (
                vec![("1_a.up.sql", "  -- nothing\n/* here */\n")],
                "is empty",
            ),
            (vec![("1_a.down.sql", "SELECT 1;")], "no matching .up.sql"),
        ] {
            let d = dir(&files);
            let err = load_schema_dir(&d, "s").unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
            assert!(err.contains(files[0].0), "{err}");
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn rejects_psql_meta_commands_naming_the_line() {
        let d = dir(&[(
            "1_a.up.sql",
            "CREATE TABLE t (a INT);\n\\set ON_ERROR_STOP on\nSELECT 1;",
        )]);
        let err = load_schema_dir(&d, "s").unwrap_err();
        assert!(
            matches!(&err, SourceError::MetaCommand { line: 2, command, .. } if command == "\\set ON_ERROR_STOP on"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("1_a.up.sql:2: `\\set ON_ERROR_STOP on` is a psql meta-command"),
            "{err}"
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn blank_detection() {
        assert!(is_blank(" \n-- a\n/* b */ "));
        assert!(!is_blank("-- a\nSELECT 1"));
    }
}
