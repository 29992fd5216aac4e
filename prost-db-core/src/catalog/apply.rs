//! PostgreSQL's rules, statement by statement.

use std::collections::BTreeSet;

use super::classify::{Class, classify};
use super::lex::tokens;
use super::parse::{ColumnDef, Name, Parser, TypeName};
use super::types::{self, SqlType, TypeKind};
use super::{Catalog, Column, Generated, Location, RemovedTable, Uncertainty, Warning};
use crate::split::{StatementKind, split};

mod derive;
mod effects;
mod routines;
mod statement;
mod table;
mod unparsed;

pub(crate) type Key = (String, String);

pub(crate) struct Script<'c> {
    catalog: &'c mut Catalog,
    file: String,
    schema: String,
    search_path: Vec<String>,
    /// Temporary tables of this session: unqualified names resolve to them first.
    temporary: BTreeSet<String>,
    line: u32,
}

/// Who a dynamic statement may change.
enum Targets {
    None,
    Tables(Vec<Key>),
    /// Tables whose names are computed: those of this schema named by the body's literals,
    /// else all of them.
    Schema(String),
    /// Creates tables whose names are computed.
    Unnamed,
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    let needle = needle.as_bytes();
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

impl<'c> Script<'c> {
    pub(crate) fn new(catalog: &'c mut Catalog, schema: &str, file: &str) -> Self {
        Script {
            catalog,
            file: file.to_owned(),
            schema: schema.to_owned(),
            search_path: vec![schema.to_owned()],
            temporary: BTreeSet::new(),
            line: 1,
        }
    }

    pub(crate) fn run(mut self, sql: &str) {
        for statement in split(sql) {
            self.line = statement.line;
            match statement.kind {
                StatementKind::Sql => self.statement(statement.text, statement.line),
                StatementKind::MetaCommand => self.warn(
                    format!(
                        "`{}` is a psql meta-command, not SQL; the migration would fail",
                        statement.text
                    ),
                    Vec::new(),
                ),
                StatementKind::Unterminated(what) => self.warn(
                    format!(
                        "the file ends inside {}; the migration would fail",
                        what.describe()
                    ),
                    Vec::new(),
                ),
            }
        }
    }

    fn statement(&mut self, text: &str, line: u32) {
        match classify(text) {
            Class::Ignore => {}
            Class::Model => {
                let toks = tokens(text, line);
                let parsed = Parser::new(&toks, line).statement();
                match parsed {
                    Ok(ast) => self.apply(ast, line),
                    Err(error) => self.unparsed(&toks, &error),
                }
            }
            Class::Query => self.query(text, line),
            Class::Call => self.call(text, line),
            Class::Do => self.do_block(text, line),
            Class::Routine => self.routine(text, line),
            Class::Special => self.special(text, line),
            Class::Unknown => {
                let toks = tokens(text, line);
                let tables = self.scan_tables(&toks);
                let what = super::lex::first_words(text, 2).join(" ");
                self.warn(
                    format!("`{what}` is not a statement the catalog knows"),
                    tables,
                );
            }
        }
    }

    // --- helpers -----------------------------------------------------------------------

    fn here(&self) -> Location {
        Location::new(self.file.clone(), u64::from(self.line))
    }

    fn at_line(&self, line: u32) -> Location {
        Location::new(
            self.file.clone(),
            u64::from(if line == 0 { self.line } else { line }),
        )
    }

    fn warn(&mut self, message: String, tables: Vec<Key>) {
        let at = self.here();
        let mut named = Vec::new();
        // What changes a table in unknown ways changes its partitions and children too.
        let mut family = Vec::new();
        for key in &tables {
            for k in self.family(key) {
                if !family.contains(&k) {
                    family.push(k);
                }
            }
        }
        for key in family {
            if let Some(table) = self.catalog.tables.get_mut(&key) {
                if !table
                    .uncertain
                    .iter()
                    .any(|u| u.at == at && u.reason == message)
                {
                    table.uncertain.push(Uncertainty {
                        at: at.clone(),
                        reason: message.clone(),
                    });
                }
                let name = format!("{}.{}", key.0, key.1);
                if !named.contains(&name) {
                    named.push(name);
                }
            }
        }
        self.catalog.warnings.push(Warning {
            at,
            message,
            tables: named,
        });
    }

    /// The first schema of the search path that exists (where `CREATE` puts a name).
    fn creation_schema(&self) -> String {
        self.search_path
            .iter()
            .find(|s| s.as_str() != "$user" && self.catalog.schemas.contains(*s))
            .cloned()
            .unwrap_or_else(|| self.schema.clone())
    }

    fn create_key(&self, name: &Name) -> Key {
        let schema = name
            .schema()
            .map_or_else(|| self.creation_schema(), str::to_owned);
        (schema, name.object().to_owned())
    }

    /// Whether an unqualified `name` is one of this session's temporary tables.
    fn is_temporary(&self, name: &Name) -> bool {
        match name.schema() {
            Some(schema) => schema == "pg_temp",
            None => self.temporary.contains(name.object()),
        }
    }

    /// Where a table name resolves: qualified, or the first schema of the path holding it.
    fn table_key(&self, name: &Name) -> Key {
        if let Some(schema) = name.schema() {
            return (schema.to_owned(), name.object().to_owned());
        }
        self.search_path
            .iter()
            .map(|s| (s.clone(), name.object().to_owned()))
            .find(|key| self.catalog.tables.contains_key(key))
            .unwrap_or_else(|| self.create_key(name))
    }

    fn type_key(&self, name: &Name) -> Option<Key> {
        if let Some(schema) = name.schema() {
            let key = (schema.to_owned(), name.object().to_owned());
            return self.catalog.types.contains_key(&key).then_some(key);
        }
        self.search_path
            .iter()
            .map(|s| (s.clone(), name.object().to_owned()))
            .find(|key| self.catalog.types.contains_key(key))
    }

    /// A type as written, in PostgreSQL's vocabulary; `true` for the serial pseudo-types.
    fn resolve_type(&self, ty: &TypeName) -> (SqlType, bool) {
        let (builtin_name, qualified_builtin) = match ty.name.as_slice() {
            [name] => (Some(name.as_str()), false),
            [schema, name] if schema == "pg_catalog" => (Some(name.as_str()), true),
            _ => (None, false),
        };
        let element = if let Some(name) = builtin_name {
            if let (false, Some(serial)) = (qualified_builtin, types::serial(name))
                && !ty.array
            {
                return (serial, true);
            }
            types::builtin(name, &ty.modifiers, ty.zone, ty.fields.as_deref())
        } else {
            None
        };
        let element = element.unwrap_or_else(|| {
            let name = Name {
                parts: ty.name.clone(),
                line: 0,
            };
            match self.type_key(&name) {
                Some(key) => self.catalog.types[&key].ty.clone(),
                None => {
                    let object = name.object();
                    if ty.modifiers.is_empty() {
                        SqlType::builtin(object, object)
                    } else {
                        SqlType::builtin(object, &format!("{object}({})", ty.modifiers.join(",")))
                    }
                }
            }
        });
        if ty.array {
            (SqlType::array(element), false)
        } else {
            (element, false)
        }
    }

    fn column(&self, def: &ColumnDef) -> Column {
        let (ty, serial) = def
            .ty
            .as_ref()
            .map_or_else(|| (SqlType::unknown(), false), |t| self.resolve_type(t));
        let mut column = Column {
            name: def.name.clone(),
            ty,
            nullable: !serial,
            generated: if serial {
                Generated::Identity
            } else {
                Generated::No
            },
            defined_at: self.at_line(def.line),
            changed_at: None,
            inherited: false,
        };
        Self::constrain(&mut column, def);
        column
    }

    /// A column definition's constraints (also the options of `PARTITION OF` columns).
    fn constrain(column: &mut Column, def: &ColumnDef) {
        if def.not_null == Some(true) || def.primary_key {
            column.nullable = false;
        }
        if def.identity {
            column.nullable = false;
            column.generated = Generated::Identity;
        }
        if def.stored {
            column.generated = Generated::Stored;
        }
    }

    /// The table and every table that inherits from it (partitions, children), recursively.
    fn family(&self, key: &Key) -> Vec<Key> {
        let mut out = vec![key.clone()];
        let mut i = 0;
        while i < out.len() {
            let parent = out[i].clone();
            for (k, t) in &self.catalog.tables {
                if t.parents.contains(&parent) && !out.contains(k) {
                    out.push(k.clone());
                }
            }
            i += 1;
        }
        out
    }

    /// Re-points references to table `from` (parents of other tables) at `to`.
    fn retarget_parents(&mut self, from: &Key, to: &Key) {
        for table in self.catalog.tables.values_mut() {
            for parent in &mut table.parents {
                if parent == from {
                    *parent = to.clone();
                }
            }
        }
    }

    fn move_table(&mut self, from: &Key, to: Key, renamed: bool) {
        let Some(mut table) = self.catalog.tables.remove(from) else {
            return;
        };
        table.schema = to.0.clone();
        table.name = to.1.clone();
        self.catalog.schemas.insert(to.0.clone());
        self.catalog.tables.insert(to.clone(), table);
        self.retarget_parents(from, &to);
        self.catalog.removed_tables.push(RemovedTable {
            schema: from.0.clone(),
            name: from.1.clone(),
            renamed_to: Some(if renamed || from.0 == to.0 {
                to.1.clone()
            } else {
                format!("{}.{}", to.0, to.1)
            }),
            at: self.here(),
        });
    }
}

/// Whether `ty` is (or is an array of, or a domain over) the user type `key`.
fn uses_type(ty: &SqlType, key: &Key) -> bool {
    match &ty.kind {
        TypeKind::Enum { schema } | TypeKind::Composite { schema } => {
            schema == &key.0 && ty.name == key.1
        }
        TypeKind::Domain { schema, base } => {
            (schema == &key.0 && ty.name == key.1) || uses_type(base, key)
        }
        TypeKind::Array { element } => uses_type(element, key),
        TypeKind::Base | TypeKind::Unknown => false,
    }
}

/// Points `ty` (and its elements, bases) at user type `to` where it named `from`.
fn retype(ty: &mut SqlType, from: &Key, to: &Key) {
    let hit = match &mut ty.kind {
        TypeKind::Enum { schema } | TypeKind::Composite { schema } => {
            let hit = *schema == from.0 && ty.name == from.1;
            if hit {
                *schema = to.0.clone();
            }
            hit
        }
        TypeKind::Domain { schema, base } => {
            retype(base, from, to);
            let hit = *schema == from.0 && ty.name == from.1;
            if hit {
                *schema = to.0.clone();
            }
            hit
        }
        TypeKind::Array { element } => {
            retype(element, from, to);
            ty.name = format!("_{}", element.name);
            ty.display = format!("{}[]", element.display);
            false
        }
        TypeKind::Base | TypeKind::Unknown => false,
    };
    if hit {
        ty.name = to.1.clone();
        ty.display = to.1.clone();
    }
}
