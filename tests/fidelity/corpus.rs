//! The catalog's fidelity corpus: about 260 migration files (about 470 KB) over four schemas,
//! written by a deterministic generator so that the repository stays small.
//!
//! It reads like the migrations of a service that grew for a few years: tables created,
//! extended, renamed and moved; enums whose labels and names change; domains; views (large
//! ones, as reporting code has); trigger functions and SQL-standard functions; partitioned
//! and inherited tables; `LIKE` copies; `CREATE TABLE ... AS`; temporary tables for data
//! fixes; `DO` blocks with and without DDL (guarded, dynamic, looping over tables); functions
//! that run DDL when called; seed data, indexes, grants, comments and policies.
//!
//! Every file is valid PostgreSQL 15 when applied in order (schema directories in name
//! order, files in version order, each with `search_path` set to its schema, as the
//! migrator runs them).
//!
//! - `tests/it/catalog.rs` applies it file by file and compares the catalog with
//!   `pg_catalog` after each file;
//! - `benches/schema_build.sh` compiles this file on its own (`rustc`, it has a `main`) and
//!   writes the corpus to a directory: `corpus <dir>`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// One migration file.
pub struct File {
    /// The schema directory.
    pub schema: &'static str,
    /// `<version>_<name>.up.sql`.
    pub name: String,
    /// The SQL.
    pub sql: String,
}

/// The schemas, in the order the migrator applies them.
pub const SCHEMAS: [&str; 4] = ["audit", "core", "ops", "sales"];

/// The whole corpus, in apply order.
pub fn corpus() -> Vec<File> {
    let mut g = Gen::new();
    g.foundation();
    g.modules();
    g.specials();
    g.finish()
}

/// Writes the corpus under `root` (`root/<schema>/<version>_<name>.up.sql`).
pub fn write(root: &Path) -> std::io::Result<()> {
    for file in corpus() {
        let dir = root.join(file.schema);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(&file.name), &file.sql)?;
    }
    Ok(())
}

#[allow(dead_code)]
fn main() {
    let root = std::env::args().nth(1).expect("usage: corpus <dir>");
    write(Path::new(&root)).expect("write the corpus");
}

/// xorshift64*: the same corpus on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A column type, as the generator knows it (to write values and pick operations).
#[derive(Clone, PartialEq)]
enum Ty {
    SmallInt,
    Int,
    BigInt,
    Numeric(u8, u8),
    Real,
    Double,
    Text,
    Varchar(u16),
    Char(u8),
    Bool,
    Date,
    Timestamptz,
    Timestamp,
    Time,
    Interval,
    Jsonb,
    Json,
    Uuid,
    Bytea,
    Inet,
    TextArray,
    IntArray,
    Citext,
    /// A user type by qualified name: an enum (with a label to write) or a domain (with a
    /// value to write).
    User(String, String),
    UserArray(String, String),
}

impl Ty {
    /// One of PostgreSQL's spellings of the type.
    fn sql(&self, rng: &mut Rng) -> String {
        let pick = |rng: &mut Rng, names: &[&str]| (*rng.pick(names)).to_owned();
        match self {
            Ty::SmallInt => pick(rng, &["SMALLINT", "int2", "smallint"]),
            Ty::Int => pick(rng, &["INTEGER", "INT", "int4", "integer"]),
            Ty::BigInt => pick(rng, &["BIGINT", "int8", "bigint"]),
            Ty::Numeric(p, s) => match rng.below(3) {
                0 => format!("NUMERIC({p}, {s})"),
                1 => format!("decimal({p},{s})"),
                _ => format!("numeric({p},{s})"),
            },
            Ty::Real => pick(rng, &["REAL", "float4"]),
            Ty::Double => pick(rng, &["DOUBLE PRECISION", "float8", "float"]),
            Ty::Text => pick(rng, &["TEXT", "text"]),
            Ty::Varchar(n) => match rng.below(3) {
                0 => format!("VARCHAR({n})"),
                1 => format!("character varying({n})"),
                _ => format!("varchar({n})"),
            },
            Ty::Char(n) => match rng.below(2) {
                0 => format!("CHAR({n})"),
                _ => format!("character({n})"),
            },
            Ty::Bool => pick(rng, &["BOOLEAN", "bool", "boolean"]),
            Ty::Date => "DATE".to_owned(),
            Ty::Timestamptz => pick(
                rng,
                &["TIMESTAMPTZ", "timestamp with time zone", "timestamptz"],
            ),
            Ty::Timestamp => pick(rng, &["TIMESTAMP", "timestamp without time zone"]),
            Ty::Time => pick(rng, &["TIME", "time without time zone"]),
            Ty::Interval => "INTERVAL".to_owned(),
            Ty::Jsonb => pick(rng, &["JSONB", "jsonb"]),
            Ty::Json => "JSON".to_owned(),
            Ty::Uuid => pick(rng, &["UUID", "uuid"]),
            Ty::Bytea => "BYTEA".to_owned(),
            Ty::Inet => "INET".to_owned(),
            Ty::TextArray => pick(rng, &["TEXT[]", "text[]", "varchar[]"]),
            Ty::IntArray => pick(rng, &["INTEGER[]", "int[]", "int4[]"]),
            Ty::Citext => "public.citext".to_owned(),
            Ty::User(name, _) => name.clone(),
            Ty::UserArray(name, _) => format!("{name}[]"),
        }
    }

    /// A value of the type.
    fn literal(&self, rng: &mut Rng) -> String {
        match self {
            Ty::SmallInt | Ty::Int | Ty::BigInt => (rng.below(900) + 1).to_string(),
            Ty::Numeric(_, s) => {
                if *s == 0 {
                    (rng.below(90) + 1).to_string()
                } else {
                    format!("{}.{:02}", rng.below(90) + 1, rng.below(100))
                }
            }
            Ty::Real | Ty::Double => format!("{}.5", rng.below(90)),
            Ty::Text | Ty::Citext => format!("'{}'", rng.pick(WORDS)),
            Ty::Varchar(n) => {
                let word = rng.pick(WORDS);
                format!("'{}'", &word[..word.len().min(*n as usize)])
            }
            Ty::Char(n) => format!("'{}'", &"XYZWQ"[..*n as usize]),
            Ty::Bool => (*rng.pick(&["true", "false"])).to_owned(),
            Ty::Date => format!("'2024-{:02}-{:02}'", rng.below(12) + 1, rng.below(28) + 1),
            Ty::Timestamptz | Ty::Timestamp => format!(
                "'2024-{:02}-{:02} 10:{:02}:00'",
                rng.below(12) + 1,
                rng.below(28) + 1,
                rng.below(60)
            ),
            Ty::Time => format!("'{:02}:30'", rng.below(24)),
            Ty::Interval => format!("'{} days'", rng.below(30) + 1),
            Ty::Jsonb | Ty::Json => format!("'{{\"k\": {}}}'", rng.below(9)),
            Ty::Uuid => format!("'00000000-0000-4000-8000-{:012}'", rng.below(999_999)),
            Ty::Bytea => "'\\x0102'".to_owned(),
            Ty::Inet => format!("'10.0.{}.{}'", rng.below(255), rng.below(255)),
            Ty::TextArray => format!("'{{{},{}}}'", rng.pick(WORDS), rng.pick(WORDS)),
            Ty::IntArray => format!("'{{{},{}}}'", rng.below(9), rng.below(9)),
            Ty::User(_, value) => format!("'{value}'"),
            Ty::UserArray(_, value) => format!("'{{{value}}}'"),
        }
    }
}

const WORDS: &[&str] = &[
    "alpha", "bravo", "delta", "north", "south", "amber", "cobalt", "linen", "maple", "orbit",
    "quartz", "ripple", "summit", "tundra", "velvet", "willow",
];

/// Column names by type, so that tables read like real ones.
fn column_pool(ty: &Ty) -> &'static [&'static str] {
    match ty {
        Ty::SmallInt | Ty::Int | Ty::BigInt => &[
            "quantity", "position", "rank", "attempts", "priority", "score", "capacity",
            "revision", "seats", "retries",
        ],
        Ty::Numeric(..) | Ty::Real | Ty::Double => &[
            "amount", "price", "cost", "balance", "discount", "tax", "fee", "weight", "ratio",
        ],
        Ty::Text | Ty::Varchar(_) | Ty::Citext => &[
            "title",
            "label",
            "description",
            "notes",
            "summary",
            "code",
            "reference",
            "slug",
            "remark",
            "headline",
        ],
        Ty::Char(_) => &["currency", "country", "grade"],
        Ty::Bool => &[
            "active", "archived", "verified", "visible", "locked", "flagged",
        ],
        Ty::Date => &["due_on", "starts_on", "ends_on", "valid_from"],
        Ty::Timestamptz | Ty::Timestamp => &[
            "processed_at",
            "expires_at",
            "confirmed_at",
            "synced_at",
            "closed_at",
        ],
        Ty::Time => &["opens_at", "cutoff"],
        Ty::Interval => &["duration", "grace_period"],
        Ty::Jsonb | Ty::Json => &["metadata", "settings", "attributes", "payload"],
        Ty::Uuid => &["external_id", "correlation_id", "token"],
        Ty::Bytea => &["checksum", "thumbnail"],
        Ty::Inet => &["client_ip", "origin"],
        Ty::TextArray | Ty::IntArray => &["tags", "aliases", "slots"],
        Ty::User(..) | Ty::UserArray(..) => &["kind", "state", "stage"],
    }
}

#[derive(Clone)]
struct Col {
    name: String,
    ty: Ty,
    not_null: bool,
    /// Used by a view, a generated column or a key: never dropped or retyped.
    pinned: bool,
}

struct Table {
    schema: &'static str,
    name: String,
    cols: Vec<Col>,
    /// Partitioned or inherited by others: its columns change only through the parent.
    family: bool,
    /// A partition or child: its columns are the parent's.
    member: bool,
    alive: bool,
}

impl Table {
    fn col(&self, name: &str) -> Option<&Col> {
        self.cols.iter().find(|c| c.name == name)
    }

    fn fresh_name(&self, base: &str) -> String {
        if self.col(base).is_none() {
            return base.to_owned();
        }
        (2..)
            .map(|n| format!("{base}_{n}"))
            .find(|name| self.col(name).is_none())
            .expect("a free name")
    }
}

struct EnumType {
    schema: &'static str,
    name: String,
    labels: Vec<String>,
}

struct Gen {
    rng: Rng,
    files: Vec<File>,
    versions: BTreeMap<&'static str, u32>,
    tables: Vec<Table>,
    enums: Vec<EnumType>,
    /// Trigger function per schema, once created.
    touch: BTreeMap<&'static str, bool>,
}

/// Quotes a name when PostgreSQL would fold it.
fn q(name: &str) -> String {
    if name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

impl Gen {
    fn new() -> Gen {
        Gen {
            rng: Rng(0x9E37_79B9_7F4A_7C15),
            files: Vec::new(),
            versions: BTreeMap::new(),
            tables: Vec::new(),
            enums: Vec::new(),
            touch: BTreeMap::new(),
        }
    }

    fn finish(mut self) -> Vec<File> {
        // The migrator applies schema directories in name order: so does the corpus.
        self.files
            .sort_by(|a, b| (a.schema, &a.name).cmp(&(b.schema, &b.name)));
        self.files
    }

    /// Adds a migration file with a header like the ones people write.
    fn file(&mut self, schema: &'static str, name: &str, purpose: &str, body: String) {
        let version = self.versions.entry(schema).or_insert(0);
        *version += 1;
        let version = *version;
        let mut sql = String::new();
        let _ = writeln!(sql, "-- {schema}: {}", name.replace('_', " "));
        let _ = writeln!(sql, "--");
        for line in wrap(purpose, 88) {
            let _ = writeln!(sql, "-- {line}");
        }
        let _ = writeln!(
            sql,
            "-- Migration {version:04} of schema `{schema}`; reviewed with the on-call runbook."
        );
        let _ = writeln!(sql, "--");
        let note = NOTES[(version as usize + name.len()) % NOTES.len()];
        for line in wrap(note, 88) {
            let _ = writeln!(sql, "-- {line}");
        }
        sql.push('\n');
        sql.push_str(&body);
        if !sql.ends_with('\n') {
            sql.push('\n');
        }
        self.files.push(File {
            schema,
            name: format!("{version:04}_{name}.up.sql"),
            sql,
        });
    }

    fn table_index(&self, schema: &str, name: &str) -> usize {
        self.tables
            .iter()
            .position(|t| t.alive && t.schema == schema && t.name == name)
            .unwrap_or_else(|| panic!("generator: no table {schema}.{name}"))
    }

    fn table(&self, schema: &str, name: &str) -> &Table {
        &self.tables[self.table_index(schema, name)]
    }

    fn table_mut(&mut self, schema: &str, name: &str) -> &mut Table {
        let i = self.table_index(schema, name);
        &mut self.tables[i]
    }

    fn new_enum(&mut self, schema: &'static str, name: &str, labels: &[&str]) -> String {
        self.enums.push(EnumType {
            schema,
            name: name.to_owned(),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        });
        let list = labels
            .iter()
            .map(|l| format!("'{l}'"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("CREATE TYPE {name} AS ENUM ({list});\n")
    }

    fn enum_mut(&mut self, schema: &str, name: &str) -> &mut EnumType {
        self.enums
            .iter_mut()
            .find(|e| e.schema == schema && e.name == name)
            .expect("generator: enum exists")
    }

    /// Re-points every column of enum `old` (by its qualified spelling) at `new`.
    fn rename_type_everywhere(&mut self, schema: &str, old: &str, new: &str) {
        for table in &mut self.tables {
            for col in &mut table.cols {
                match &mut col.ty {
                    Ty::User(name, _) | Ty::UserArray(name, _) => {
                        let unqualified = name.rsplit('.').next().unwrap_or_default().to_owned();
                        let in_schema =
                            name.split('.').next() == Some(schema) || table.schema == schema;
                        if unqualified == old && in_schema {
                            *name = if name.contains('.') {
                                format!("{schema}.{new}")
                            } else if table.schema == schema {
                                new.to_owned()
                            } else {
                                format!("{schema}.{new}")
                            };
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn relabel_everywhere(&mut self, type_name: &str, old: &str, new: &str) {
        for table in &mut self.tables {
            for col in &mut table.cols {
                if let Ty::User(name, value) | Ty::UserArray(name, value) = &mut col.ty
                    && name.rsplit('.').next() == Some(type_name)
                    && value == old
                {
                    *value = new.to_owned();
                }
            }
        }
    }
}

/// Why a change is made, as the comment above it says.
const WHY: &[&str] = &[
    "requested by the product team for the next release (see the planning notes).",
    "the application has written this for months; the database now agrees.",
    "found during the incident review; prevents the same bad rows from coming back.",
    "needed by the reporting job, which reads it every hour.",
    "cleanup after the migration to the new service boundaries.",
    "the partner integration sends this field; we store it as received.",
];

/// What reviewers write at the top of a migration, for the corpus to read like real files.
const NOTES: &[&str] = &[
    "Rollback: there is no down script; restore from the nightly snapshot if this must be \
     undone. The change is additive for readers: old application versions keep working while \
     the deployment rolls out.",
    "Locking: every statement here takes its lock for milliseconds only (no table rewrite, no \
     full scan), so it is safe during business hours. Run the staging migration first and \
     compare the timings in the migration log.",
    "Data: the backfill touches only rows created before the feature flag was switched on; \
     newer rows are written by the application with the new columns set. Checked on a copy \
     of production with 2.3 million rows: 14 seconds.",
    "Compatibility: the API keeps serving the old field names for one release; the mapping \
     lives in the service's serializer, not in the database. Remove it when the mobile apps \
     older than 5.2 are gone.",
    "Ownership: the team that owns the table reviews changes to it. Reports that read it are \
     listed in the data catalog; their owners were told about this change in the weekly sync.",
];

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("one line");
        if !line.is_empty() && line.len() + word.len() + 1 > width {
            lines.push(word.to_owned());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

include!("corpus_story.rs");
