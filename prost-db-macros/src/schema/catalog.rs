//! Finding the migrations and parsing them once per crate.
//!
//! rustc keeps the proc-macro library loaded for a whole crate (rust-analyzer even longer,
//! across crates), so the parsed catalog is cached per migrations root and re-parsed only
//! when a file or directory under it changes (sqlx's approach, after its bug #3738).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prost_db_core::catalog::Catalog;

/// The environment variable naming the migrations root (relative to the crate's manifest
/// directory unless absolute).
pub(crate) const ROOT_VAR: &str = "PROST_DB_MIGRATIONS";

pub(crate) struct Loaded {
    pub catalog: Arc<Catalog>,
    /// Every up script, absolute, for `include_bytes!`.
    pub files: Arc<Vec<PathBuf>>,
}

type Stamp = Vec<(PathBuf, Option<SystemTime>)>;

struct Entry {
    stamp: Stamp,
    /// When `stamp` was last compared with the files.
    checked: Instant,
    catalog: Arc<Catalog>,
    files: Arc<Vec<PathBuf>>,
}

/// How long a check of the files' times stays good: the derives of one crate run within
/// it (one check instead of one per struct); an IDE's next expansion comes later.
const RECHECK_AFTER: Duration = Duration::from_secs(1);

static CACHE: Mutex<Option<HashMap<PathBuf, Entry>>> = Mutex::new(None);

static TRACKED: Mutex<Option<std::collections::HashSet<(String, PathBuf, String)>>> =
    Mutex::new(None);

/// Whether `what` happens for the first time in this crate for `root`.
fn first_in_crate(root: &Path, what: &str) -> bool {
    let krate = std::env::var("CARGO_CRATE_NAME").unwrap_or_default();
    let mut tracked = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    tracked.get_or_insert_with(Default::default).insert((
        krate,
        root.to_path_buf(),
        what.to_owned(),
    ))
}

/// Whether this derive should `include_bytes!` the migrations of `root`: only the first
/// derive of a crate does. One include per file is enough for rustc to rebuild the crate
/// when the file changes, and 100 files times 50 structs would be 5000 includes.
pub(crate) fn first_use_in_crate(root: &Path) -> bool {
    first_in_crate(root, "")
}

/// Whether the warning `key` has not been shown in this crate yet: a warning about a table
/// is shown once, on the first struct of that table.
pub(crate) fn first_warning_in_crate(root: &Path, key: &str) -> bool {
    first_in_crate(root, key)
}

/// The migrations root: the attribute (relative to `source_dir`), else `PROST_DB_MIGRATIONS`,
/// else `$CARGO_MANIFEST_DIR/migrations`.
pub(crate) fn root(attribute: Option<(&str, Option<PathBuf>)>) -> PathBuf {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let path = match attribute {
        Some((path, source_dir)) => {
            let base = source_dir.unwrap_or_else(|| manifest.clone());
            base.join(path)
        }
        None => match std::env::var_os(ROOT_VAR) {
            Some(value) => manifest.join(value),
            None => manifest.join("migrations"),
        },
    };
    let path = if path.is_absolute() {
        path
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    path.canonicalize().unwrap_or(path)
}

/// The catalog of `root` (shown as `shown` in messages), parsed at most once per change of
/// its files.
pub(crate) fn load(root: &Path, shown: &str) -> Result<Loaded, String> {
    if !root.is_dir() {
        return Err(format!(
            "migrations directory `{shown}` does not exist; set {ROOT_VAR} (relative to the crate's Cargo.toml) or #[schema(migrations = \"...\")] (relative to this file)"
        ));
    }
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(entry) = cache
        .get_mut(root)
        .filter(|e| e.checked.elapsed() < RECHECK_AFTER)
    {
        return Ok(Loaded {
            catalog: entry.catalog.clone(),
            files: entry.files.clone(),
        });
    }
    schema_directory(root, shown)?;
    let stamp = stamp(root);
    if let Some(entry) = cache.get_mut(root).filter(|e| e.stamp == stamp) {
        entry.checked = Instant::now();
        return Ok(Loaded {
            catalog: entry.catalog.clone(),
            files: entry.files.clone(),
        });
    }
    let schemas = prost_db_core::source::load_root(root).map_err(|e| {
        let text = e.to_string();
        text.replace(&format!("{}/", root.display()), "")
    })?;
    let files: Vec<PathBuf> = schemas
        .iter()
        .flat_map(|s| &s.migrations)
        .map(|m| PathBuf::from(m.up.path.as_ref()))
        .collect();
    let catalog = Arc::new(Catalog::from_migrations(&schemas, Some(root)));
    let files = Arc::new(files);
    cache.insert(
        root.to_path_buf(),
        Entry {
            stamp,
            checked: Instant::now(),
            catalog: catalog.clone(),
            files: files.clone(),
        },
    );
    Ok(Loaded { catalog, files })
}

/// A root that holds migration files itself is one schema's directory, not the root of
/// one directory per schema.
fn schema_directory(root: &Path, shown: &str) -> Result<(), String> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(());
    };
    let mut files: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .collect();
    if files.is_empty() {
        return Ok(());
    }
    files.sort();
    let parent = Path::new(shown)
        .parent()
        .map(|p| p.display().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "..".to_owned());
    let schema = root
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    Err(format!(
        "`{shown}` holds migration files itself (`{}`{}): it is the directory of schema `{schema}`, not a migrations root; point `migrations` at its parent `{parent}`, which has one directory per schema",
        files[0],
        if files.len() > 1 {
            format!(" and {} more", files.len() - 1)
        } else {
            String::new()
        }
    ))
}

fn stamp(root: &Path) -> Stamp {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if path.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
        }
        out.push((path, modified));
    }
    out.sort();
    out
}

/// The root as shown in messages: relative to the manifest directory, never absolute.
pub(crate) fn display_root(root: &Path) -> String {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let manifest = manifest.canonicalize().unwrap_or(manifest);
    match root.strip_prefix(&manifest) {
        Ok(relative) => relative.display().to_string(),
        Err(_) => root
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_once_until_a_migration_is_added_or_edited() {
        let root =
            std::env::temp_dir().join(format!("prost-db-macros-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("app")).unwrap();
        std::fs::write(root.join("app/0001_a.up.sql"), "CREATE TABLE a (x INT);").unwrap();

        let first = load(&root, "m").unwrap();
        let second = load(&root, "m").unwrap();
        assert!(Arc::ptr_eq(&first.catalog, &second.catalog), "parsed twice");

        std::fs::write(root.join("app/0002_b.up.sql"), "CREATE TABLE b (x INT);").unwrap();
        std::thread::sleep(RECHECK_AFTER);
        let third = load(&root, "m").unwrap();
        assert!(!Arc::ptr_eq(&first.catalog, &third.catalog));
        assert!(third.catalog.table("app", "b").is_some());
        assert_eq!(third.files.len(), 2);

        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_root_is_an_error_without_absolute_paths() {
        let error = load(Path::new("/nonexistent/prost-db/migrations"), "migrations")
            .err()
            .unwrap();
        assert!(error.contains("does not exist"), "{error}");
        assert!(!error.contains("/nonexistent"), "{error}");
    }
}
