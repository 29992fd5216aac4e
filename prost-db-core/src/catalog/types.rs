//! PostgreSQL type names: from the surface syntax of a migration to `pg_type.typname` and
//! the spelling `format_type` prints.

/// A column's type in PostgreSQL's own vocabulary.
///
/// `name` is what `pg_type.typname` reports (`int8`, `varchar`, `timestamptz`, `_text` for
/// `text[]`, the type's name for enums and domains); `display` is what
/// `format_type(atttypid, atttypmod)` prints (`bigint`, `character varying(255)`).
///
/// ```
/// use prost_db_core::catalog::{SqlType, TypeKind};
///
/// let ty = SqlType::builtin("int8", "bigint");
/// assert_eq!(ty.name, "int8");
/// assert_eq!(ty.kind, TypeKind::Base);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlType {
    /// `pg_type.typname`.
    pub name: String,
    /// `format_type(...)` as PostgreSQL prints it, for messages.
    pub display: String,
    /// Base, enum, domain, composite or array.
    pub kind: TypeKind,
}

/// What kind of type a [`SqlType`] is.
///
/// ```
/// use prost_db_core::catalog::{Catalog, TypeKind};
///
/// let mut c = Catalog::new();
/// c.apply_script("s", "s/1.up.sql", "CREATE TYPE mood AS ENUM ('ok'); CREATE TABLE t (m mood, a TEXT[]);");
/// let t = c.table("s", "t").unwrap();
/// assert_eq!(t.column("m").unwrap().ty.kind, TypeKind::Enum { schema: "s".into() });
/// assert!(matches!(t.column("a").unwrap().ty.kind, TypeKind::Array { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeKind {
    /// A built-in type such as `int8`, or one the migrations do not define (an extension's
    /// `citext`, `ltree`, `hstore`).
    Base,
    /// A user enum (`CREATE TYPE ... AS ENUM`), with its schema; its labels are in
    /// [`Catalog::user_type`](super::Catalog::user_type).
    Enum {
        /// The schema the enum lives in.
        schema: String,
    },
    /// A domain over `base`.
    Domain {
        /// The schema the domain lives in.
        schema: String,
        /// The type the domain constrains.
        base: Box<SqlType>,
    },
    /// A composite type (`CREATE TYPE ... AS (...)`).
    Composite {
        /// The schema the type lives in.
        schema: String,
    },
    /// An array of `element` (`typname` is `_` + the element's).
    Array {
        /// The element type.
        element: Box<SqlType>,
    },
    /// A column whose type the catalog could not work out (an expression in
    /// `CREATE TABLE ... AS`); its table is uncertain.
    Unknown,
}

impl SqlType {
    /// A base type from its `typname` and `format_type` spelling.
    ///
    /// ```
    /// let ty = prost_db_core::catalog::SqlType::builtin("text", "text");
    /// assert_eq!(ty.display, "text");
    /// ```
    pub fn builtin(name: &str, display: &str) -> SqlType {
        SqlType {
            name: name.to_owned(),
            display: display.to_owned(),
            kind: TypeKind::Base,
        }
    }

    /// The type that decides which Rust types can hold a value: the base type of a domain,
    /// the type itself otherwise.
    ///
    /// ```
    /// let mut c = prost_db_core::catalog::Catalog::new();
    /// c.apply_script("s", "s/1.up.sql", "CREATE DOMAIN email AS VARCHAR(200); CREATE TABLE t (e email);");
    /// let ty = &c.table("s", "t").unwrap().column("e").unwrap().ty;
    /// assert_eq!((ty.name.as_str(), ty.storage().name.as_str()), ("email", "varchar"));
    /// ```
    pub fn storage(&self) -> &SqlType {
        match &self.kind {
            TypeKind::Domain { base, .. } => base.storage(),
            _ => self,
        }
    }

    /// The schema of a user-defined type (enum, domain, composite), or of an array's
    /// element type; `None` for built-in types.
    ///
    /// ```
    /// let mut c = prost_db_core::catalog::Catalog::new();
    /// c.apply_script("s", "s/1.up.sql", "CREATE TYPE mood AS ENUM ('ok'); CREATE TABLE t (m mood[], n INT);");
    /// let t = c.table("s", "t").unwrap();
    /// assert_eq!(t.column("m").unwrap().ty.schema(), Some("s"));
    /// assert_eq!(t.column("n").unwrap().ty.schema(), None);
    /// ```
    pub fn schema(&self) -> Option<&str> {
        match &self.kind {
            TypeKind::Enum { schema }
            | TypeKind::Domain { schema, .. }
            | TypeKind::Composite { schema } => Some(schema),
            TypeKind::Array { element } => element.schema(),
            TypeKind::Base | TypeKind::Unknown => None,
        }
    }

    pub(crate) fn array(element: SqlType) -> SqlType {
        SqlType {
            name: format!("_{}", element.name),
            display: format!("{}[]", element.display),
            kind: TypeKind::Array {
                element: Box::new(element),
            },
        }
    }

    pub(crate) fn unknown() -> SqlType {
        SqlType {
            name: String::new(),
            display: "(unknown)".to_owned(),
            kind: TypeKind::Unknown,
        }
    }
}

/// What the serial pseudo-types stand for.
pub(crate) fn serial(name: &str) -> Option<SqlType> {
    match name {
        "smallserial" | "serial2" => Some(SqlType::builtin("int2", "smallint")),
        "serial" | "serial4" => Some(SqlType::builtin("int4", "integer")),
        "bigserial" | "serial8" => Some(SqlType::builtin("int8", "bigint")),
        _ => None,
    }
}

/// A built-in type by its (folded, unqualified or `pg_catalog`-qualified) name as parsed:
/// multi-word names arrive joined (`double precision`, `character varying`, `bit varying`),
/// `zone` is `Some(true)` for `WITH TIME ZONE`, `fields` the interval's fields.
pub(crate) fn builtin(
    name: &str,
    modifiers: &[String],
    zone: Option<bool>,
    fields: Option<&str>,
) -> Option<SqlType> {
    let plain = SqlType::builtin;
    let with_mods = |name: &str, display: &str| {
        if modifiers.is_empty() {
            plain(name, display)
        } else {
            plain(name, &format!("{display}({})", modifiers.join(",")))
        }
    };
    let ty = match name {
        "smallint" | "int2" => plain("int2", "smallint"),
        "int" | "integer" | "int4" => plain("int4", "integer"),
        "bigint" | "int8" => plain("int8", "bigint"),
        "real" | "float4" => plain("float4", "real"),
        "double precision" | "float8" => plain("float8", "double precision"),
        "float" => match modifiers.first().and_then(|p| p.parse::<u32>().ok()) {
            Some(p) if p <= 24 => plain("float4", "real"),
            _ => plain("float8", "double precision"),
        },
        "numeric" | "decimal" | "dec" => match modifiers {
            [p] => plain("numeric", &format!("numeric({p},0)")),
            _ => with_mods("numeric", "numeric"),
        },
        "varchar" | "character varying" | "char varying" => {
            with_mods("varchar", "character varying")
        }
        "char" | "character" => {
            if modifiers.is_empty() {
                plain("bpchar", "character(1)")
            } else {
                with_mods("bpchar", "character")
            }
        }
        "bpchar" => with_mods("bpchar", "bpchar"),
        "text" => plain("text", "text"),
        "boolean" | "bool" => plain("bool", "boolean"),
        "uuid" => plain("uuid", "uuid"),
        "date" => plain("date", "date"),
        "time" => time("time", "time", zone == Some(true), modifiers),
        "timetz" => time("timetz", "time", true, modifiers),
        "timestamp" => time("timestamp", "timestamp", zone == Some(true), modifiers),
        "timestamptz" => time("timestamptz", "timestamp", true, modifiers),
        "interval" => {
            let mut display = "interval".to_owned();
            if let Some(fields) = fields {
                display.push(' ');
                display.push_str(fields);
            }
            if let Some(p) = modifiers.first() {
                display.push_str(&format!("({p})"));
            }
            plain("interval", &display)
        }
        "bit" => {
            if modifiers.is_empty() {
                plain("bit", "bit(1)")
            } else {
                with_mods("bit", "bit")
            }
        }
        "bit varying" | "varbit" => with_mods("varbit", "bit varying"),
        "json" | "jsonb" | "bytea" | "inet" | "cidr" | "macaddr" | "macaddr8" | "money" | "xml"
        | "oid" | "name" | "tsvector" | "tsquery" | "point" | "line" | "lseg" | "box" | "path"
        | "polygon" | "circle" | "regclass" | "regtype" | "regproc" | "pg_lsn" | "int4range"
        | "int8range" | "numrange" | "tsrange" | "tstzrange" | "daterange" | "int4multirange"
        | "int8multirange" | "nummultirange" | "tsmultirange" | "tstzmultirange"
        | "datemultirange" | "jsonpath" | "txid_snapshot" | "pg_snapshot" | "xid" | "xid8"
        | "cid" | "tid" => plain(name, name),
        _ => return None,
    };
    Some(ty)
}

fn time(name: &str, word: &str, zone: bool, modifiers: &[String]) -> SqlType {
    let zone = if zone {
        "with time zone"
    } else {
        "without time zone"
    };
    let name = match (name, zone) {
        ("time", "with time zone") => "timetz",
        ("timestamp", "with time zone") => "timestamptz",
        _ => name,
    };
    let display = match modifiers.first() {
        Some(p) => format!("{word}({p}) {zone}"),
        None => format!("{word} {zone}"),
    };
    SqlType::builtin(name, &display)
}
