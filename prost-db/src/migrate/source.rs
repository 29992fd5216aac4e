//! The migrations of one database, loaded from a directory or embedded in the binary.

use std::borrow::Cow;
use std::path::Path;

use prost_db_core::source::{Migration, SchemaMigrations, load_root, load_schema_dir};

use super::MigrateError;

/// The migrations of one database: one [`SchemaMigrations`] per schema directory.
///
/// Load them at run time with [`from_dir`](Migrations::from_dir), or embed them in the
/// binary with [`embed_migrations!`](crate::embed_migrations).
///
/// ```
/// use prost_db::migrate::Migrations;
///
/// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/shop");
/// let migrations = Migrations::from_dir(root)?;
/// assert!(migrations.schemas().any(|s| s == "catalog"));
/// # Ok::<(), prost_db::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Migrations {
    schemas: Vec<SchemaSource>,
}

#[derive(Debug, Clone)]
pub(crate) struct SchemaSource {
    pub(crate) dir: Cow<'static, str>,
    pub(crate) migrations: SchemaMigrations,
}

impl SchemaSource {
    pub(crate) fn find(&self, version: i64) -> Option<&Migration> {
        self.migrations
            .migrations
            .binary_search_by_key(&version, |m| m.version)
            .ok()
            .map(|i| &self.migrations.migrations[i])
    }

    /// Where the up script of an applied migration is expected.
    pub(crate) fn expected_file(&self, version: i64, name: &str) -> String {
        format!("{}/{version:04}_{name}.up.sql", self.dir)
    }
}

impl Migrations {
    /// Loads every schema directory under `root` (a migrations root is one database).
    ///
    /// # Errors
    ///
    /// [`MigrateError::Source`] naming the bad file: a file name that is not
    /// `<version>_<name>.up.sql`/`.down.sql`, a duplicate version, an empty file, a down
    /// script without its up script.
    pub fn from_dir(root: impl AsRef<Path>) -> Result<Self, crate::Error> {
        let root = root.as_ref();
        let schemas = load_root(root)?
            .into_iter()
            .map(|migrations| SchemaSource {
                dir: Cow::Owned(root.join(&*migrations.schema).display().to_string()),
                migrations,
            })
            .collect();
        Ok(Migrations { schemas })
    }

    /// Loads one schema's migrations from `dir`.
    ///
    /// ```
    /// use prost_db::migrate::Migrations;
    ///
    /// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/analytics/public");
    /// let migrations = Migrations::from_schema_dir(dir, "public")?;
    /// assert_eq!(migrations.get("public").unwrap().migrations.len(), 1);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`from_dir`](Self::from_dir).
    pub fn from_schema_dir(dir: impl AsRef<Path>, schema: &str) -> Result<Self, crate::Error> {
        let dir = dir.as_ref();
        crate::Identifier::new(crate::IdentifierKind::Schema, schema)?;
        Ok(Migrations {
            schemas: vec![SchemaSource {
                dir: Cow::Owned(dir.display().to_string()),
                migrations: load_schema_dir(dir, schema)?,
            }],
        })
    }

    /// Migrations built by [`embed_migrations!`](crate::embed_migrations): `(directory,
    /// schema migrations)` pairs.
    #[doc(hidden)]
    pub fn from_embedded(schemas: Vec<(&'static str, SchemaMigrations)>) -> Self {
        Migrations {
            schemas: schemas
                .into_iter()
                .map(|(dir, migrations)| SchemaSource {
                    dir: Cow::Borrowed(dir),
                    migrations,
                })
                .collect(),
        }
    }

    /// The schemas, in name order.
    pub fn schemas(&self) -> impl Iterator<Item = &str> {
        self.schemas.iter().map(|s| &*s.migrations.schema)
    }

    /// The migrations of `schema`.
    pub fn get(&self, schema: &str) -> Option<&SchemaMigrations> {
        self.source(schema).map(|s| &s.migrations)
    }

    pub(crate) fn source(&self, schema: &str) -> Option<&SchemaSource> {
        self.schemas.iter().find(|s| s.migrations.schema == schema)
    }

    pub(crate) fn require(&self, schema: &str) -> Result<&SchemaSource, MigrateError> {
        self.source(schema)
            .ok_or_else(|| MigrateError::UnknownSchema {
                schema: schema.to_owned(),
                known: self.schemas().collect::<Vec<_>>().join(", "),
            })
    }
}
