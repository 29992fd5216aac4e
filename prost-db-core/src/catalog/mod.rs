//! The catalog: the tables and columns a database has after its migrations ran, built from
//! the migration files alone, without a database.
//!
//! Each up script is split with the shared splitter ([`crate::split`]). A statement's first
//! keywords decide what it is: most (indexes, views, functions, triggers, grants, data)
//! cannot change a table and are not parsed at all. The rest (`CREATE`/`ALTER`/`DROP` of
//! tables, types, domains and schemas, `SET search_path`) are parsed by a small parser of
//! PostgreSQL's grammar for them, and PostgreSQL's rules are applied: unquoted names fold
//! to lower case; `PRIMARY KEY`, serial and identity columns are `NOT NULL`;
//! `IF [NOT] EXISTS`; renames, drops and `SET SCHEMA` of tables, columns, types and enum
//! labels (columns and arrays of a renamed type follow it); partitions and inheritance
//! (columns added to a parent reach its children); `LIKE`; typed tables; temporary tables
//! (not tables of the schema, and they shadow unqualified names); `CREATE TABLE ... AS`
//! (columns from known tables, casts and literals).
//!
//! `DO` blocks and routine bodies are read for DDL: straight-line DDL is applied, idempotent
//! patterns (`IF NOT EXISTS (...) THEN`, `EXCEPTION WHEN duplicate_object`) are applied as
//! such, and only DDL the catalog cannot follow (under other conditions, in loops, dynamic
//! SQL, a routine that runs DDL when called) gives a [`Warning`] and marks the tables it may
//! change as uncertain.
//!
//! ```
//! use prost_db_core::catalog::Catalog;
//!
//! let mut catalog = Catalog::new();
//! catalog.apply_script(
//!     "catalog",
//!     "catalog/0001_products.up.sql",
//!     "CREATE TABLE Products (id BIGSERIAL PRIMARY KEY, name TEXT);\n\
//!      ALTER TABLE products ALTER COLUMN name SET NOT NULL;",
//! );
//! let products = catalog.table("catalog", "products").unwrap();
//! let id = products.column("id").unwrap();
//! assert_eq!((id.ty.name.as_str(), id.nullable), ("int8", false));
//! assert!(!products.column("name").unwrap().nullable);
//! assert_eq!(id.defined_at.to_string(), "catalog/0001_products.up.sql:1");
//! ```

mod apply;
mod body;
mod classify;
mod lex;
mod parse;
mod query;
mod suggest;
mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

pub use suggest::did_you_mean;
pub use types::{SqlType, TypeKind};

use crate::source::{SchemaMigrations, SourceError, load_root};

/// A place in a migration file.
///
/// ```
/// use prost_db_core::catalog::Location;
///
/// let at = Location::new("catalog/0002_create_products.up.sql", 3);
/// assert_eq!(at.to_string(), "catalog/0002_create_products.up.sql:3");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// The file, relative to the migrations root.
    pub file: String,
    /// The line, from 1.
    pub line: u64,
}

impl Location {
    /// A location in `file` at `line`.
    pub fn new(file: impl Into<String>, line: u64) -> Location {
        Location {
            file: file.into(),
            line,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// How a column's value is produced, if not by the writer.
///
/// ```
/// use prost_db_core::catalog::{Catalog, Generated};
///
/// let mut c = Catalog::new();
/// c.apply_script("s", "s/1.up.sql", "CREATE TABLE t (a INT GENERATED ALWAYS AS IDENTITY, b INT GENERATED ALWAYS AS (a * 2) STORED);");
/// let t = c.table("s", "t").unwrap();
/// assert_eq!(t.column("a").unwrap().generated, Generated::Identity);
/// assert_eq!(t.column("b").unwrap().generated, Generated::Stored);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generated {
    /// An ordinary column.
    No,
    /// `GENERATED { ALWAYS | BY DEFAULT } AS IDENTITY` (or serial): `NOT NULL`.
    Identity,
    /// `GENERATED ALWAYS AS (expr) STORED`: read-only.
    Stored,
}

/// One column of a [`Table`].
///
/// ```
/// let mut c = prost_db_core::catalog::Catalog::new();
/// c.apply_script("s", "s/1.up.sql", "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, note TEXT);");
/// let note = c.table("s", "t").unwrap().column("note").unwrap();
/// assert_eq!((note.ty.name.as_str(), note.nullable), ("text", true));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column name, case-folded as PostgreSQL stores it.
    pub name: String,
    /// Its type.
    pub ty: SqlType,
    /// Whether it accepts NULL (`NOT pg_attribute.attnotnull`).
    pub nullable: bool,
    /// Identity, generated or ordinary.
    pub generated: Generated,
    /// The statement that created the column.
    pub defined_at: Location,
    /// The last statement that changed its name, type or nullability, if any.
    pub changed_at: Option<Location>,
    /// Inherited from a parent (partition, `INHERITS`) and not defined here.
    pub(crate) inherited: bool,
}

impl Column {
    /// Where the column got its current shape: the last change, else its definition.
    ///
    /// ```
    /// let mut c = prost_db_core::catalog::Catalog::new();
    /// c.apply_script("s", "s/1.up.sql", "CREATE TABLE t (a INT);\nALTER TABLE t ALTER COLUMN a SET NOT NULL;");
    /// let a = c.table("s", "t").unwrap().column("a").unwrap();
    /// assert_eq!((a.defined_at.line, a.last_defined_at().line), (1, 2));
    /// ```
    pub fn last_defined_at(&self) -> &Location {
        self.changed_at.as_ref().unwrap_or(&self.defined_at)
    }
}

/// Why a table's columns may not be what the catalog says.
///
/// ```
/// let mut c = prost_db_core::catalog::Catalog::new();
/// c.apply_script("s", "s/1.up.sql", "CREATE TABLE t (a INT);\n\
///     DO $$ BEGIN IF now() > '2030-01-01' THEN ALTER TABLE t ADD b INT; END IF; END $$;");
/// assert_eq!(c.table("s", "t").unwrap().uncertain[0].at.line, 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncertainty {
    /// The statement that could not be modelled.
    pub at: Location,
    /// What it was.
    pub reason: String,
}

/// A column that a migration dropped or renamed.
///
/// ```
/// let mut c = prost_db_core::catalog::Catalog::new();
/// c.apply_script("s", "s/1.up.sql", "CREATE TABLE t (a INT);\nALTER TABLE t RENAME a TO b;");
/// let removed = c.table("s", "t").unwrap().removed_column("a").unwrap();
/// assert_eq!(removed.renamed_to.as_deref(), Some("b"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedColumn {
    /// The old name.
    pub name: String,
    /// The new name, for a rename.
    pub renamed_to: Option<String>,
    /// The statement that dropped or renamed it.
    pub at: Location,
}

/// A table as the migrations leave it.
///
/// ```
/// let mut c = prost_db_core::catalog::Catalog::new();
/// c.apply_script("s", "s/1.up.sql", "CREATE TABLE t (a INT, b TEXT);");
/// let t = c.table("s", "t").unwrap();
/// assert_eq!(t.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// Its columns, in table order.
    pub columns: Vec<Column>,
    /// The statement that created it.
    pub defined_at: Location,
    /// Statements that may have changed it in ways the catalog does not know.
    pub uncertain: Vec<Uncertainty>,
    /// Columns dropped or renamed by later migrations, oldest first.
    pub removed: Vec<RemovedColumn>,
    /// Its partition parent or `INHERITS` parents.
    pub(crate) parents: Vec<(String, String)>,
    /// `PARTITION BY`.
    pub(crate) partitioned: bool,
    /// `CREATE TABLE ... OF type`.
    pub(crate) of_type: Option<(String, String)>,
}

impl Table {
    /// The column called `name` (already case-folded).
    ///
    /// ```
    /// let mut c = prost_db_core::catalog::Catalog::new();
    /// c.apply_script("s", "s/1.up.sql", r#"CREATE TABLE t (Plain INT, "Quoted" INT);"#);
    /// let t = c.table("s", "t").unwrap();
    /// assert!(t.column("plain").is_some() && t.column("Quoted").is_some());
    /// ```
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The last drop or rename of a column once called `name`.
    ///
    /// ```
    /// let mut c = prost_db_core::catalog::Catalog::new();
    /// c.apply_script("s", "s/1.up.sql", "CREATE TABLE t (a INT, b INT);\nALTER TABLE t DROP COLUMN b;");
    /// assert_eq!(c.table("s", "t").unwrap().removed_column("b").unwrap().at.line, 2);
    /// ```
    pub fn removed_column(&self, name: &str) -> Option<&RemovedColumn> {
        self.removed.iter().rev().find(|r| r.name == name)
    }

    fn column_mut(&mut self, name: &str) -> Option<&mut Column> {
        self.columns.iter_mut().find(|c| c.name == name)
    }
}

/// A statement the catalog could not model, or a migration that would fail.
///
/// ```
/// let mut c = prost_db_core::catalog::Catalog::new();
/// c.apply_script("s", "s/1.up.sql", "CREATE TABLE t (a INT);\n\
///     DO $$ DECLARE t text := 't'; BEGIN EXECUTE format('ALTER TABLE %I ADD COLUMN b int', t); END $$;\n\
///     ALTER TABLE missing ADD COLUMN c int;");
/// let warnings = c.warnings();
/// assert_eq!(warnings[0].tables, ["s.t"]);
/// assert!(warnings[1].to_string().starts_with("s/1.up.sql:3: ALTER TABLE on `s.missing`"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where.
    pub at: Location,
    /// What, in a sentence.
    pub message: String,
    /// The tables it may have changed (`schema.table`), now marked uncertain.
    pub tables: Vec<String>,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// A table dropped or renamed by a migration.
///
/// ```
/// let mut c = prost_db_core::catalog::Catalog::new();
/// c.apply_script("s", "s/1.up.sql", "CREATE TABLE t (a INT);\nDROP TABLE t;");
/// assert_eq!(c.removed_table("s", "t").unwrap().at.line, 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedTable {
    /// The schema it was in.
    pub schema: String,
    /// Its old name.
    pub name: String,
    /// Its new name, for a rename.
    pub renamed_to: Option<String>,
    /// The statement.
    pub at: Location,
}

/// One label of an enum, with the statement that gave it its current name.
///
/// ```
/// let mut c = prost_db_core::catalog::Catalog::new();
/// c.apply_script("s", "s/1.up.sql", "CREATE TYPE mood AS ENUM ('ok');\nALTER TYPE mood ADD VALUE 'sad';");
/// let labels = &c.user_type("s", "mood").unwrap().labels;
/// assert_eq!((labels[1].name.as_str(), labels[1].at.line), ("sad", 2));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumLabel {
    /// The label.
    pub name: String,
    /// Where it was added or last renamed.
    pub at: Location,
}

/// A type the migrations create: an enum, a domain, a composite or another type.
///
/// ```
/// let mut c = prost_db_core::catalog::Catalog::new();
/// c.apply_script("s", "s/1.up.sql", "CREATE TYPE mood AS ENUM ('ok', 'sad');");
/// let mood = c.user_type("s", "mood").unwrap();
/// assert_eq!(mood.labels.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["ok", "sad"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserType {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// What a column of this type has as its type.
    pub ty: SqlType,
    /// An enum's labels, in order (empty for other types).
    pub labels: Vec<EnumLabel>,
    /// A composite type's attributes.
    pub(crate) attributes: Vec<Column>,
    /// The statement that created it.
    pub defined_at: Location,
    /// The last statement that renamed, moved or relabelled it.
    pub changed_at: Option<Location>,
}

/// A type renamed, moved or dropped by a migration.
///
/// ```
/// let mut c = prost_db_core::catalog::Catalog::new();
/// c.apply_script("s", "s/1.up.sql", "CREATE TYPE mood AS ENUM ('ok');\nALTER TYPE mood RENAME TO feeling;");
/// assert_eq!(c.removed_type("s", "mood").unwrap().renamed_to.as_deref(), Some("feeling"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedType {
    /// The schema it was in.
    pub schema: String,
    /// Its old name.
    pub name: String,
    /// Its new name (`schema.name` when it moved), for a rename.
    pub renamed_to: Option<String>,
    /// The statement.
    pub at: Location,
}

/// A routine whose body runs DDL the catalog cannot follow: calling it marks tables
/// uncertain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Routine {
    /// Tables its DDL names.
    pub tables: Vec<(String, String)>,
    /// A schema whose tables its dynamic SQL may change (narrowed by the call's literals).
    pub schema: Option<String>,
    pub defined_at: Location,
}

/// The database as the migrations leave it. See the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    schemas: BTreeSet<String>,
    tables: BTreeMap<(String, String), Table>,
    types: BTreeMap<(String, String), UserType>,
    removed_tables: Vec<RemovedTable>,
    removed_types: Vec<RemovedType>,
    routines: BTreeMap<String, Routine>,
    warnings: Vec<Warning>,
}

impl Catalog {
    /// An empty catalog (with the `public` schema, as in a new database).
    ///
    /// ```
    /// let c = prost_db_core::catalog::Catalog::new();
    /// assert_eq!(c.schemas().collect::<Vec<_>>(), ["public"]);
    /// ```
    pub fn new() -> Catalog {
        Catalog {
            schemas: BTreeSet::from(["public".to_owned()]),
            ..Catalog::default()
        }
    }

    /// Reads `root/<schema>/*.up.sql` through [`load_root`] and applies every schema's
    /// migrations in version order. File names in locations are relative to `root`.
    ///
    /// ```
    /// # let root = std::env::temp_dir().join(format!("prost-db-doc-catalog-{}", std::process::id()));
    /// # std::fs::create_dir_all(root.join("catalog")).unwrap();
    /// # std::fs::write(root.join("catalog/0001_init.up.sql"), "CREATE TABLE t (id INT PRIMARY KEY);").unwrap();
    /// let catalog = prost_db_core::catalog::Catalog::from_root(&root)?;
    /// assert!(catalog.table("catalog", "t").is_some());
    /// # std::fs::remove_dir_all(&root).unwrap();
    /// # Ok::<(), prost_db_core::source::SourceError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The [`SourceError`] of a file that cannot be read or is misnamed. SQL that cannot be
    /// parsed is never an error: it is a [`Warning`].
    pub fn from_root(root: &Path) -> Result<Catalog, SourceError> {
        let schemas = load_root(root)?;
        Ok(Catalog::from_migrations(&schemas, Some(root)))
    }

    /// Applies already loaded migrations; `root`, if given, is stripped from file names.
    ///
    /// ```
    /// # let root = std::env::temp_dir().join(format!("prost-db-doc-from-migrations-{}", std::process::id()));
    /// # std::fs::create_dir_all(root.join("app")).unwrap();
    /// # std::fs::write(root.join("app/0001_init.up.sql"), "CREATE TABLE t (id INT);").unwrap();
    /// let schemas = prost_db_core::source::load_root(&root).unwrap();
    /// let c = prost_db_core::catalog::Catalog::from_migrations(&schemas, Some(&root));
    /// assert_eq!(c.table("app", "t").unwrap().defined_at.file, "app/0001_init.up.sql");
    /// # std::fs::remove_dir_all(&root).unwrap();
    /// ```
    pub fn from_migrations(schemas: &[SchemaMigrations], root: Option<&Path>) -> Catalog {
        let mut catalog = Catalog::new();
        for schema in schemas {
            catalog.schemas.insert(schema.schema.to_string());
            for migration in &schema.migrations {
                let path = Path::new(migration.up.path.as_ref());
                let file = root
                    .and_then(|root| path.strip_prefix(root).ok())
                    .unwrap_or(path)
                    .to_string_lossy()
                    .replace('\\', "/");
                catalog.apply_script(&schema.schema, &file, &migration.up.sql);
            }
        }
        catalog
    }

    /// Applies one script that runs with `search_path` set to `schema` (created if new).
    ///
    /// ```
    /// let mut c = prost_db_core::catalog::Catalog::new();
    /// c.apply_script("orders", "orders/0001.up.sql", "CREATE TABLE orders (id BIGSERIAL PRIMARY KEY);");
    /// assert!(c.table("orders", "orders").is_some());
    /// ```
    pub fn apply_script(&mut self, schema: &str, file: &str, sql: &str) {
        self.schemas.insert(schema.to_owned());
        apply::Script::new(self, schema, file).run(sql);
    }

    /// The table `schema.name` (names as stored: case-folded unless quoted).
    ///
    /// ```
    /// let mut c = prost_db_core::catalog::Catalog::new();
    /// c.apply_script("s", "s/1.up.sql", "CREATE TABLE Products (id INT);");
    /// assert!(c.table("s", "products").is_some());
    /// assert!(c.table("s", "Products").is_none());
    /// ```
    pub fn table(&self, schema: &str, name: &str) -> Option<&Table> {
        self.tables.get(&(schema.to_owned(), name.to_owned()))
    }

    /// Every table, ordered by schema and name.
    ///
    /// ```
    /// let mut c = prost_db_core::catalog::Catalog::new();
    /// c.apply_script("s", "s/1.up.sql", "CREATE TABLE b (x INT); CREATE TABLE a (x INT);");
    /// assert_eq!(c.tables().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    /// ```
    pub fn tables(&self) -> impl Iterator<Item = &Table> {
        self.tables.values()
    }

    /// The tables called `name` in any schema.
    ///
    /// ```
    /// let mut c = prost_db_core::catalog::Catalog::new();
    /// c.apply_script("a", "a/1.up.sql", "CREATE TABLE t (x INT);");
    /// c.apply_script("b", "b/1.up.sql", "CREATE TABLE t (x INT);");
    /// assert_eq!(c.tables_named("t").len(), 2);
    /// ```
    pub fn tables_named(&self, name: &str) -> Vec<&Table> {
        self.tables.values().filter(|t| t.name == name).collect()
    }

    /// The last drop or rename of a table once called `schema.name`.
    ///
    /// ```
    /// let mut c = prost_db_core::catalog::Catalog::new();
    /// c.apply_script("s", "s/1.up.sql", "CREATE TABLE t (x INT); ALTER TABLE t RENAME TO u;");
    /// assert_eq!(c.removed_table("s", "t").unwrap().renamed_to.as_deref(), Some("u"));
    /// ```
    pub fn removed_table(&self, schema: &str, name: &str) -> Option<&RemovedTable> {
        self.removed_tables
            .iter()
            .rev()
            .find(|t| t.schema == schema && t.name == name)
    }

    /// The type `schema.name` made by the migrations (an enum, domain or composite type).
    ///
    /// ```
    /// let mut c = prost_db_core::catalog::Catalog::new();
    /// c.apply_script("s", "s/1.up.sql", "CREATE DOMAIN email AS TEXT;");
    /// assert_eq!(c.user_type("s", "email").unwrap().ty.storage().name, "text");
    /// ```
    pub fn user_type(&self, schema: &str, name: &str) -> Option<&UserType> {
        self.types.get(&(schema.to_owned(), name.to_owned()))
    }

    /// The types called `name` in any schema.
    ///
    /// ```
    /// let mut c = prost_db_core::catalog::Catalog::new();
    /// c.apply_script("a", "a/1.up.sql", "CREATE TYPE mood AS ENUM ('x');");
    /// c.apply_script("b", "b/1.up.sql", "CREATE TYPE mood AS ENUM ('y');");
    /// assert_eq!(c.user_types_named("mood").len(), 2);
    /// ```
    pub fn user_types_named(&self, name: &str) -> Vec<&UserType> {
        self.types.values().filter(|t| t.name == name).collect()
    }

    /// Every type the migrations made, ordered by schema and name.
    ///
    /// ```
    /// let mut c = prost_db_core::catalog::Catalog::new();
    /// c.apply_script("s", "s/1.up.sql", "CREATE TYPE b AS ENUM ('x'); CREATE DOMAIN a AS INT;");
    /// assert_eq!(c.user_types().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    /// ```
    pub fn user_types(&self) -> impl Iterator<Item = &UserType> {
        self.types.values()
    }

    /// The last rename, move or drop of a type once called `schema.name`.
    ///
    /// ```
    /// let mut c = prost_db_core::catalog::Catalog::new();
    /// c.apply_script("s", "s/1.up.sql", "CREATE TYPE mood AS ENUM ('x'); DROP TYPE mood;");
    /// assert!(c.removed_type("s", "mood").unwrap().renamed_to.is_none());
    /// ```
    pub fn removed_type(&self, schema: &str, name: &str) -> Option<&RemovedType> {
        self.removed_types
            .iter()
            .rev()
            .find(|t| t.schema == schema && t.name == name)
    }

    /// The schemas that exist.
    ///
    /// ```
    /// let mut c = prost_db_core::catalog::Catalog::new();
    /// c.apply_script("s", "s/1.up.sql", "CREATE SCHEMA audit;");
    /// assert_eq!(c.schemas().collect::<Vec<_>>(), ["audit", "public", "s"]);
    /// ```
    pub fn schemas(&self) -> impl Iterator<Item = &str> {
        self.schemas.iter().map(String::as_str)
    }

    /// Everything the catalog could not model, and migrations that would fail, in file
    /// order. Warnings that name tables also mark them [uncertain](Table::uncertain).
    ///
    /// ```
    /// let mut c = prost_db_core::catalog::Catalog::new();
    /// c.apply_script("s", "s/1.up.sql", "CREATE TABLE t (x INT);\n\
    ///     DO $$ BEGIN RAISE NOTICE 'only a notice'; END $$;\n\
    ///     DO $$ DECLARE c text := 'y'; BEGIN EXECUTE 'ALTER TABLE t ADD COLUMN ' || c || ' int'; END $$;");
    /// assert_eq!(c.warnings().len(), 1);
    /// assert_eq!(c.warnings()[0].tables, ["s.t"]);
    /// ```
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }
}

#[cfg(test)]
mod tests;
