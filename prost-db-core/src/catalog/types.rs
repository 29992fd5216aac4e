//! PostgreSQL type names: from the surface syntax of a migration to `pg_type.typname`.

use sqlparser::ast::{ArrayElemTypeDef, DataType, ObjectName};

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
    /// Base, enum, domain or array.
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
    /// A built-in (or extension) type such as `int8` or `citext`.
    Base,
    /// A user enum (`CREATE TYPE ... AS ENUM`), with its schema.
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
    /// An array of `element` (`typname` is `_` + the element's).
    Array {
        /// The element type.
        element: Box<SqlType>,
    },
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

    fn array(element: SqlType) -> SqlType {
        SqlType {
            name: format!("_{}", element.name),
            display: format!("{}[]", element.display),
            kind: TypeKind::Array {
                element: Box::new(element),
            },
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

/// A user-defined type name as written, for lookup in the catalog's enums and domains.
pub(crate) enum Resolved {
    Type(SqlType),
    /// A name that is not built in: `(schema, name)` with identifiers already folded.
    Custom(Option<String>, String),
}

/// Maps a parsed data type to PostgreSQL's vocabulary. `fold` applies identifier folding
/// to custom type names.
pub(crate) fn resolve(data_type: &DataType, fold: &dyn Fn(&ObjectName) -> Vec<String>) -> Resolved {
    match data_type {
        DataType::Array(
            ArrayElemTypeDef::SquareBracket(inner, _)
            | ArrayElemTypeDef::AngleBracket(inner)
            | ArrayElemTypeDef::Parenthesis(inner),
        ) => match resolve(inner, fold) {
            Resolved::Type(element) => Resolved::Type(SqlType::array(element)),
            Resolved::Custom(schema, name) => Resolved::Custom(schema, format!("{name}[]")),
        },
        DataType::Custom(name, modifiers) => {
            let mut parts = fold(name);
            let last = parts.pop().unwrap_or_default();
            if parts.is_empty() || parts == ["pg_catalog"] {
                let modifiers: Vec<String> = modifiers.iter().map(ToString::to_string).collect();
                if let Some(ty) = builtin(&last.to_ascii_uppercase(), &modifiers) {
                    return Resolved::Type(ty);
                }
            }
            Resolved::Custom(parts.pop(), last)
        }
        other => {
            let text = other.to_string();
            let (base, modifiers) = split_modifiers(&text);
            match builtin(&base, &modifiers) {
                Some(ty) => Resolved::Type(ty),
                None => Resolved::Type(SqlType::builtin(
                    &base.to_ascii_lowercase(),
                    &text.to_ascii_lowercase(),
                )),
            }
        }
    }
}

/// `NUMERIC(10,2)` -> (`NUMERIC`, ["10", "2"]); `TIMESTAMP(3) WITH TIME ZONE` ->
/// (`TIMESTAMP WITH TIME ZONE`, ["3"]).
fn split_modifiers(text: &str) -> (String, Vec<String>) {
    let mut base = String::new();
    let mut modifiers = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('(') {
        base.push_str(&rest[..open]);
        let close = rest[open..].find(')').map_or(rest.len(), |c| open + c);
        modifiers.extend(
            rest[open + 1..close]
                .split(',')
                .map(|m| m.trim().to_owned())
                .filter(|m| !m.is_empty()),
        );
        rest = rest.get(close + 1..).unwrap_or("");
    }
    base.push_str(rest);
    let base = base.split_whitespace().collect::<Vec<_>>().join(" ");
    (base.to_ascii_uppercase(), modifiers)
}

fn builtin(upper: &str, modifiers: &[String]) -> Option<SqlType> {
    let with = |name: &str, display: &str| {
        let display = if modifiers.is_empty() {
            display.to_owned()
        } else {
            format!("{display}({})", modifiers.join(","))
        };
        SqlType {
            name: name.to_owned(),
            display,
            kind: TypeKind::Base,
        }
    };
    let plain = SqlType::builtin;
    let ty = match upper {
        "SMALLINT" | "INT2" => plain("int2", "smallint"),
        "INT" | "INTEGER" | "INT4" => plain("int4", "integer"),
        "BIGINT" | "INT8" => plain("int8", "bigint"),
        "REAL" | "FLOAT4" => plain("float4", "real"),
        "DOUBLE PRECISION" | "DOUBLE" | "FLOAT8" => plain("float8", "double precision"),
        "FLOAT" => match modifiers.first().and_then(|p| p.parse::<u32>().ok()) {
            Some(p) if p <= 24 => plain("float4", "real"),
            _ => plain("float8", "double precision"),
        },
        "NUMERIC" | "DECIMAL" | "DEC" => with("numeric", "numeric"),
        "VARCHAR" | "CHARACTER VARYING" | "CHAR VARYING" => with("varchar", "character varying"),
        "CHAR" | "CHARACTER" | "BPCHAR" => {
            if modifiers.is_empty() && upper != "BPCHAR" {
                plain("bpchar", "character(1)")
            } else {
                with(
                    "bpchar",
                    if upper == "BPCHAR" {
                        "bpchar"
                    } else {
                        "character"
                    },
                )
            }
        }
        "TEXT" | "STRING" => plain("text", "text"),
        "BOOLEAN" | "BOOL" => plain("bool", "boolean"),
        "UUID" => plain("uuid", "uuid"),
        "DATE" => plain("date", "date"),
        "TIME" | "TIME WITHOUT TIME ZONE" => time("time", "time", "without time zone", modifiers),
        "TIMETZ" | "TIME WITH TIME ZONE" => time("timetz", "time", "with time zone", modifiers),
        "TIMESTAMP" | "TIMESTAMP WITHOUT TIME ZONE" => {
            time("timestamp", "timestamp", "without time zone", modifiers)
        }
        "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" => {
            time("timestamptz", "timestamp", "with time zone", modifiers)
        }
        "INTERVAL" => plain("interval", "interval"),
        "JSON" => plain("json", "json"),
        "JSONB" => plain("jsonb", "jsonb"),
        "BYTEA" => plain("bytea", "bytea"),
        "INET" => plain("inet", "inet"),
        "CIDR" => plain("cidr", "cidr"),
        "MACADDR" => plain("macaddr", "macaddr"),
        "MONEY" => plain("money", "money"),
        "XML" => plain("xml", "xml"),
        "OID" => plain("oid", "oid"),
        "NAME" => plain("name", "name"),
        "CITEXT" => plain("citext", "citext"),
        "TSVECTOR" => plain("tsvector", "tsvector"),
        "INT4RANGE" | "INT8RANGE" | "NUMRANGE" | "TSRANGE" | "TSTZRANGE" | "DATERANGE" => {
            let lower = upper.to_ascii_lowercase();
            plain(&lower, &lower)
        }
        _ => return None,
    };
    Some(ty)
}

fn time(name: &str, word: &str, zone: &str, modifiers: &[String]) -> SqlType {
    let display = match modifiers.first() {
        Some(p) => format!("{word}({p}) {zone}"),
        None => format!("{word} {zone}"),
    };
    SqlType {
        name: name.to_owned(),
        display,
        kind: TypeKind::Base,
    }
}
