//! PostgreSQL's rules, statement by statement.

use std::collections::BTreeSet;

use super::body::{self, Dynamic, Effects, Guard, PLACEHOLDER};
use super::classify::{Class, classify};
use super::lex::{Kind, Token, tokens};
use super::parse::{
    Action, Ast, Body, ColumnDef, CreateTable, Element, Name, Object, ParseError, Parser, TypeName,
};
use super::query::{self, Expr, Literal, Query};
use super::types::{self, SqlType, TypeKind};
use super::{
    Catalog, Column, EnumLabel, Generated, Location, RemovedColumn, RemovedTable, RemovedType,
    Routine, Table, Uncertainty, UserType, Warning,
};
use crate::split::{StatementKind, split};

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

    // --- statements ----------------------------------------------------------------------

    fn apply(&mut self, ast: Ast<'_>, line: u32) {
        let here = self.at_line(line);
        match ast {
            Ast::CreateTable(create) => self.create_table(create),
            Ast::AlterTable {
                name,
                if_exists,
                only,
                actions,
            } => {
                if self.is_temporary(&name) {
                    return;
                }
                let key = self.table_key(&name);
                if !self.catalog.tables.contains_key(&key) {
                    if !if_exists {
                        self.warn(
                            format!(
                                "ALTER TABLE on `{}.{}`, which does not exist at this point; the migration would fail",
                                key.0, key.1
                            ),
                            Vec::new(),
                        );
                    }
                    return;
                }
                for action in actions {
                    self.alter_table(&key, only, action);
                }
            }
            Ast::RenameTable {
                name,
                if_exists,
                to,
            } => {
                if self.is_temporary(&name) {
                    self.temporary.remove(name.object());
                    self.temporary.insert(to);
                    return;
                }
                let key = self.table_key(&name);
                if self.catalog.tables.contains_key(&key) {
                    let new = (key.0.clone(), to);
                    self.move_table(&key, new, true);
                } else if !if_exists {
                    self.would_fail("ALTER TABLE ... RENAME", &key);
                }
            }
            Ast::RenameColumn {
                table,
                if_exists,
                from,
                to,
            } => {
                if self.is_temporary(&table) {
                    return;
                }
                let key = self.table_key(&table);
                if !self.catalog.tables.contains_key(&key) {
                    if !if_exists {
                        self.would_fail("ALTER TABLE ... RENAME COLUMN", &key);
                    }
                    return;
                }
                if self.catalog.tables[&key].column(&from).is_none() {
                    if self.is_uncertain(&key) {
                        return;
                    }
                    self.warn(
                        format!(
                            "RENAME COLUMN `{from}`, which does not exist; the migration would fail"
                        ),
                        Vec::new(),
                    );
                    return;
                }
                for k in self.family(&key) {
                    let table = self.catalog.tables.get_mut(&k).expect("in the family");
                    if let Some(column) = table.column_mut(&from) {
                        column.name = to.clone();
                        column.changed_at = Some(here.clone());
                        table.removed.push(RemovedColumn {
                            name: from.clone(),
                            renamed_to: Some(to.clone()),
                            at: here.clone(),
                        });
                    }
                }
            }
            Ast::SetSchema {
                object,
                name,
                if_exists,
                schema,
            } => match object {
                Object::Table => {
                    if self.is_temporary(&name) {
                        return;
                    }
                    let key = self.table_key(&name);
                    if self.catalog.tables.contains_key(&key) {
                        let to = (schema, key.1.clone());
                        self.move_table(&key, to, false);
                    } else if !if_exists {
                        self.would_fail("ALTER TABLE ... SET SCHEMA", &key);
                    }
                }
                _ => {
                    if let Some(key) = self.type_key(&name) {
                        let to = (schema, key.1.clone());
                        self.move_type(&key, &to);
                    }
                }
            },
            Ast::Drop {
                object,
                names,
                if_exists,
                cascade,
            } => {
                for name in names {
                    self.drop(object, &name, if_exists, cascade);
                }
            }
            Ast::CreateSchema { name, elements } => {
                self.catalog.schemas.insert(name.clone());
                if elements {
                    self.warn(
                        format!("CREATE SCHEMA `{name}` with objects in it is not modelled; write them as separate statements"),
                        Vec::new(),
                    );
                }
            }
            Ast::RenameSchema { from, to } => self.rename_schema(&from, &to),
            Ast::CreateEnum { name, labels } => {
                let key = self.create_key(&name);
                let ty = SqlType {
                    name: key.1.clone(),
                    display: key.1.clone(),
                    kind: TypeKind::Enum {
                        schema: key.0.clone(),
                    },
                };
                let labels = labels
                    .into_iter()
                    .map(|name| EnumLabel {
                        name,
                        at: here.clone(),
                    })
                    .collect();
                self.insert_type(key, ty, labels, Vec::new());
            }
            Ast::CreateComposite { name, attributes } => {
                let key = self.create_key(&name);
                let ty = SqlType {
                    name: key.1.clone(),
                    display: key.1.clone(),
                    kind: TypeKind::Composite {
                        schema: key.0.clone(),
                    },
                };
                let attributes = attributes
                    .iter()
                    .map(|(attribute, ty)| Column {
                        name: attribute.clone(),
                        ty: self.resolve_type(ty).0,
                        nullable: true,
                        generated: Generated::No,
                        defined_at: here.clone(),
                        changed_at: None,
                        inherited: false,
                    })
                    .collect();
                self.insert_type(key, ty, Vec::new(), attributes);
            }
            Ast::CreateOtherType { name } => {
                let key = self.create_key(&name);
                let ty = SqlType::builtin(&key.1, &key.1);
                self.insert_type(key, ty, Vec::new(), Vec::new());
            }
            Ast::CreateDomain { name, base } => {
                let key = self.create_key(&name);
                let (base, _) = self.resolve_type(&base);
                let ty = SqlType {
                    name: key.1.clone(),
                    display: key.1.clone(),
                    kind: TypeKind::Domain {
                        schema: key.0.clone(),
                        base: Box::new(base),
                    },
                };
                self.insert_type(key, ty, Vec::new(), Vec::new());
            }
            Ast::RenameType { name, to } => {
                if let Some(key) = self.type_key(&name) {
                    let new = (key.0.clone(), to);
                    self.move_type(&key, &new);
                } else {
                    self.warn(
                        format!(
                            "ALTER TYPE `{}`, which the catalog does not know",
                            name.parts.join(".")
                        ),
                        Vec::new(),
                    );
                }
            }
            Ast::RenameValue { name, from, to } => {
                let Some(key) = self.type_key(&name) else {
                    return;
                };
                let ty = self.catalog.types.get_mut(&key).expect("found");
                match ty.labels.iter_mut().find(|l| l.name == from) {
                    Some(label) => {
                        label.name = to;
                        label.at = here.clone();
                        ty.changed_at = Some(here);
                    }
                    None => {
                        let message = format!(
                            "RENAME VALUE '{from}' of `{}.{}`, which has no such label; the migration would fail",
                            key.0, key.1
                        );
                        self.warn(message, Vec::new());
                    }
                }
            }
            Ast::AddValue {
                name,
                value,
                if_not_exists,
                place,
            } => {
                let Some(key) = self.type_key(&name) else {
                    return;
                };
                let ty = self.catalog.types.get_mut(&key).expect("found");
                if ty.labels.iter().any(|l| l.name == value) {
                    if !if_not_exists {
                        let message = format!(
                            "ADD VALUE '{value}' to `{}.{}`, which has it; the migration would fail",
                            key.0, key.1
                        );
                        self.warn(message, Vec::new());
                    }
                    return;
                }
                let position = match &place {
                    Some((before, neighbour)) => ty
                        .labels
                        .iter()
                        .position(|l| &l.name == neighbour)
                        .map_or(ty.labels.len(), |p| if *before { p } else { p + 1 }),
                    None => ty.labels.len(),
                };
                ty.labels.insert(
                    position,
                    EnumLabel {
                        name: value,
                        at: here.clone(),
                    },
                );
                ty.changed_at = Some(here);
            }
            Ast::AlterComposite { name } => {
                let Some(key) = self.type_key(&name) else {
                    return;
                };
                let tables: Vec<Key> = self
                    .catalog
                    .tables
                    .iter()
                    .filter(|(_, t)| t.of_type.as_ref() == Some(&key))
                    .map(|(k, _)| k.clone())
                    .collect();
                self.warn(
                    format!("ALTER TYPE `{}.{}` changes its attributes; the tables of that type are not modelled", key.0, key.1),
                    tables,
                );
            }
            Ast::SetSearchPath(path) => self.search_path = path,
            Ast::ResetSearchPath => self.search_path = vec![self.schema.clone()],
            Ast::Harmless => {}
        }
    }

    /// Whether the catalog of `key` is already uncertain: a column it does not know may
    /// come from the statement that made it so, so a change to one is no news.
    fn is_uncertain(&self, key: &Key) -> bool {
        self.catalog
            .tables
            .get(key)
            .is_some_and(|t| !t.uncertain.is_empty())
    }

    fn would_fail(&mut self, what: &str, key: &Key) {
        self.warn(
            format!(
                "{what} on `{}.{}`, which does not exist at this point; the migration would fail",
                key.0, key.1
            ),
            Vec::new(),
        );
    }

    fn insert_type(
        &mut self,
        key: Key,
        ty: SqlType,
        labels: Vec<EnumLabel>,
        attributes: Vec<Column>,
    ) {
        if self.catalog.types.contains_key(&key) {
            self.warn(
                format!(
                    "CREATE TYPE `{}.{}`, which already exists; the migration would fail",
                    key.0, key.1
                ),
                Vec::new(),
            );
            return;
        }
        self.catalog.schemas.insert(key.0.clone());
        self.catalog.types.insert(
            key.clone(),
            UserType {
                schema: key.0,
                name: key.1,
                ty,
                labels,
                attributes,
                defined_at: self.here(),
                changed_at: None,
            },
        );
    }

    /// Renames or moves a type: every column, attribute and domain of it follows.
    fn move_type(&mut self, from: &Key, to: &Key) {
        let Some(mut user) = self.catalog.types.remove(from) else {
            return;
        };
        user.schema = to.0.clone();
        user.name = to.1.clone();
        retype(&mut user.ty, from, to);
        user.changed_at = Some(self.here());
        self.catalog.types.insert(to.clone(), user);
        for ty in self.catalog.types.values_mut() {
            retype(&mut ty.ty, from, to);
            for attribute in &mut ty.attributes {
                retype(&mut attribute.ty, from, to);
            }
        }
        for table in self.catalog.tables.values_mut() {
            for column in &mut table.columns {
                retype(&mut column.ty, from, to);
            }
            if table.of_type.as_ref() == Some(from) {
                table.of_type = Some(to.clone());
            }
        }
        self.catalog.removed_types.push(RemovedType {
            schema: from.0.clone(),
            name: from.1.clone(),
            renamed_to: Some(if from.0 == to.0 {
                to.1.clone()
            } else {
                format!("{}.{}", to.0, to.1)
            }),
            at: self.here(),
        });
    }

    fn create_table(&mut self, create: CreateTable<'_>) {
        if create.temporary || create.name.schema() == Some("pg_temp") {
            self.temporary.insert(create.name.object().to_owned());
            return;
        }
        let key = self.create_key(&create.name);
        if self.catalog.tables.contains_key(&key) {
            if !create.if_not_exists {
                self.warn(
                    format!(
                        "CREATE TABLE `{}.{}`, which already exists; the migration would fail",
                        key.0, key.1
                    ),
                    Vec::new(),
                );
            }
            return;
        }
        let at = self.at_line(create.name.line);
        let mut table = Table {
            schema: key.0.clone(),
            name: key.1.clone(),
            columns: Vec::new(),
            defined_at: at.clone(),
            uncertain: Vec::new(),
            removed: Vec::new(),
            parents: Vec::new(),
            partitioned: create.partitioned,
            of_type: None,
        };
        let mut uncertain: Option<String> = None;
        let mut primary_key: Vec<String> = Vec::new();
        let mut apply_elements = |this: &Self,
                                  table: &mut Table,
                                  elements: &[Element],
                                  options_only: bool,
                                  uncertain: &mut Option<String>| {
            for element in elements {
                match element {
                    Element::Column(def) if options_only => {
                        if let Some(column) = table.column_mut(&def.name) {
                            Self::constrain(column, def);
                        }
                    }
                    Element::Column(def) => {
                        let column = this.column(def);
                        match table.column_mut(&def.name) {
                            // Merged with an inherited column: defined here too.
                            Some(existing) => {
                                existing.inherited = false;
                                if !column.nullable {
                                    existing.nullable = false;
                                }
                            }
                            None => table.columns.push(column),
                        }
                    }
                    Element::PrimaryKey(columns) => primary_key.extend(columns.iter().cloned()),
                    Element::Like(source, options) => {
                        if this.is_temporary(source) {
                            *uncertain = Some(
                                "CREATE TABLE copies the columns of a temporary table".to_owned(),
                            );
                            continue;
                        }
                        let source_key = this.table_key(source);
                        match this.catalog.tables.get(&source_key) {
                            Some(source) => {
                                for column in &source.columns {
                                    let mut column = column.clone();
                                    column.inherited = false;
                                    column.defined_at = at.clone();
                                    column.changed_at = None;
                                    column.generated = match column.generated {
                                        Generated::Identity if !options.identity => Generated::No,
                                        Generated::Stored if !options.generated => Generated::No,
                                        other => other,
                                    };
                                    table.columns.push(column);
                                }
                            }
                            None => {
                                *uncertain = Some(format!(
                                    "CREATE TABLE ... LIKE copies the columns of `{}.{}`, which the catalog does not know",
                                    source_key.0, source_key.1
                                ));
                            }
                        }
                    }
                    Element::Constraint => {}
                }
            }
        };
        // Inherited columns come first, in parent order.
        for parent in &create.inherits {
            let parent_key = self.table_key(parent);
            self.inherit_columns(&mut table, &parent_key, &at, &mut uncertain);
            table.parents.push(parent_key);
        }
        match &create.body {
            Body::Elements(elements) => {
                apply_elements(self, &mut table, elements, false, &mut uncertain)
            }
            Body::PartitionOf(parent, elements) => {
                let parent_key = self.table_key(parent);
                self.inherit_columns(&mut table, &parent_key, &at, &mut uncertain);
                table.parents.push(parent_key);
                apply_elements(self, &mut table, elements, true, &mut uncertain);
            }
            Body::Of(type_name, elements) => {
                let type_key = self.type_key(type_name);
                match type_key
                    .as_ref()
                    .and_then(|k| self.catalog.types.get(k))
                    .filter(|t| matches!(t.ty.kind, TypeKind::Composite { .. }))
                {
                    Some(ty) => {
                        for attribute in &ty.attributes {
                            let mut column = attribute.clone();
                            column.defined_at = at.clone();
                            table.columns.push(column);
                        }
                        table.of_type = type_key;
                    }
                    None => {
                        uncertain = Some(format!(
                            "CREATE TABLE ... OF `{}`, a type the catalog does not know",
                            type_name.parts.join(".")
                        ));
                    }
                }
                apply_elements(self, &mut table, elements, true, &mut uncertain);
            }
            Body::As(columns, query_tokens) => {
                let query = query::parse(query_tokens);
                let (derived, reason) = self.derive_columns(&query, columns, &at);
                table.columns = derived;
                uncertain = reason;
            }
            Body::AsTable(columns, source) => {
                let query = Query {
                    items: vec![query::Item {
                        expr: Expr::Star(None),
                        alias: None,
                    }],
                    from: vec![query::FromTable {
                        table: source.clone(),
                        alias: None,
                    }],
                    into: None,
                    opaque: None,
                };
                let (derived, reason) = self.derive_columns(&query, columns, &at);
                table.columns = derived;
                uncertain = reason;
            }
            Body::AsOther => {
                uncertain = Some(
                    "CREATE TABLE ... AS VALUES/EXECUTE: its columns are not modelled".to_owned(),
                );
            }
        }
        for name in &primary_key {
            if let Some(column) = table.column_mut(name) {
                column.nullable = false;
            }
        }
        if uncertain.is_none() {
            uncertain = self.uncertain_source(&create);
        }
        self.catalog.schemas.insert(key.0.clone());
        self.catalog.tables.insert(key.clone(), table);
        if let Some(reason) = uncertain {
            self.warn(reason, vec![key]);
        }
    }

    /// A table whose columns are copied (`LIKE`, `INHERITS`, `PARTITION OF`, `AS`) and whose
    /// catalog is uncertain: the copy is uncertain too.
    fn uncertain_source(&self, create: &CreateTable<'_>) -> Option<String> {
        let mut sources: Vec<Name> = create.inherits.clone();
        match &create.body {
            Body::Elements(elements) | Body::PartitionOf(_, elements) | Body::Of(_, elements) => {
                sources.extend(elements.iter().filter_map(|e| match e {
                    Element::Like(source, _) => Some(source.clone()),
                    _ => None,
                }));
                if let Body::PartitionOf(parent, _) = &create.body {
                    sources.push(parent.clone());
                }
            }
            Body::As(_, tokens) => {
                sources.extend(query::parse(tokens).from.into_iter().map(|f| f.table));
            }
            Body::AsTable(_, source) => sources.push(source.clone()),
            Body::AsOther => {}
        }
        sources.iter().find_map(|source| {
            let key = self.table_key(source);
            let table = self.catalog.tables.get(&key)?;
            let last = table.uncertain.last()?;
            Some(format!(
                "copies the columns of `{}.{}`, whose catalog is uncertain after {} ({})",
                key.0, key.1, last.at, last.reason
            ))
        })
    }

    fn inherit_columns(
        &self,
        table: &mut Table,
        parent: &Key,
        at: &Location,
        uncertain: &mut Option<String>,
    ) {
        match self.catalog.tables.get(parent) {
            Some(parent) => {
                for column in &parent.columns {
                    match table.column_mut(&column.name) {
                        Some(existing) => {
                            if !column.nullable {
                                existing.nullable = false;
                            }
                        }
                        None => {
                            let mut column = column.clone();
                            column.inherited = true;
                            column.defined_at = at.clone();
                            column.changed_at = None;
                            if column.generated == Generated::Identity {
                                column.generated = Generated::No;
                            }
                            table.columns.push(column);
                        }
                    }
                }
            }
            None => {
                *uncertain = Some(format!(
                    "CREATE TABLE inherits the columns of `{}.{}`, which the catalog does not know",
                    parent.0, parent.1
                ));
            }
        }
    }

    fn alter_table(&mut self, key: &Key, only: bool, action: Action) {
        let here = self.here();
        let targets = if only {
            vec![key.clone()]
        } else {
            self.family(key)
        };
        match action {
            Action::AddColumn { if_not_exists, def } => {
                if self.catalog.tables[key].column(&def.name).is_some() {
                    if !if_not_exists && !self.is_uncertain(key) {
                        self.warn(
                            format!(
                                "ADD COLUMN `{}`, which exists; the migration would fail",
                                def.name
                            ),
                            Vec::new(),
                        );
                    }
                    return;
                }
                let column = self.column(&def);
                for k in targets {
                    let table = self.catalog.tables.get_mut(&k).expect("in the family");
                    match table.column_mut(&column.name) {
                        Some(existing) => {
                            // A child with a column of that name: merged.
                            if !column.nullable {
                                existing.nullable = false;
                            }
                        }
                        None => {
                            let mut column = column.clone();
                            column.inherited = k != *key;
                            if column.inherited && column.generated == Generated::Identity {
                                column.generated = Generated::No;
                            }
                            table.columns.push(column);
                        }
                    }
                }
            }
            Action::DropColumn { name, if_exists } => {
                if self.catalog.tables[key].column(&name).is_none() {
                    if !if_exists && !self.is_uncertain(key) {
                        self.warn(
                            format!("DROP COLUMN `{name}`, which does not exist; the migration would fail"),
                            Vec::new(),
                        );
                    }
                    return;
                }
                for k in targets {
                    let table = self.catalog.tables.get_mut(&k).expect("in the family");
                    let inherited = table.column(&name).is_some_and(|c| c.inherited);
                    if k == *key || inherited {
                        table.columns.retain(|c| c.name != name);
                        table.removed.push(RemovedColumn {
                            name: name.clone(),
                            renamed_to: None,
                            at: here.clone(),
                        });
                    }
                }
            }
            Action::AlterType { column, ty } => {
                let (ty, _) = self.resolve_type(&ty);
                self.change_column(key, &targets, &column, |c| c.ty = ty.clone());
            }
            Action::SetNotNull(column) => {
                self.change_column(key, &targets, &column, |c| c.nullable = false);
            }
            Action::DropNotNull(column) => {
                self.change_column(key, &targets, &column, |c| c.nullable = true);
            }
            Action::AddIdentity(column) => {
                self.change_column(key, std::slice::from_ref(key), &column, |c| {
                    c.generated = Generated::Identity;
                });
            }
            Action::DropExpression(column) => {
                self.change_column(key, &targets, &column, |c| c.generated = Generated::No);
            }
            Action::AddPrimaryKey(columns) => {
                let partitioned = self.catalog.tables[key].partitioned;
                let keys = if partitioned {
                    targets
                } else {
                    vec![key.clone()]
                };
                for column in columns {
                    self.change_column(key, &keys, &column, |c| c.nullable = false);
                }
            }
            Action::AddPrimaryKeyUsingIndex => {
                self.warn(
                    "ADD PRIMARY KEY USING INDEX: the columns it makes NOT NULL are not modelled"
                        .to_owned(),
                    vec![key.clone()],
                );
            }
            Action::Attach(child) => {
                let child_key = self.table_key(&child);
                match self.catalog.tables.get_mut(&child_key) {
                    Some(table) => {
                        table.parents = vec![key.clone()];
                        for column in &mut table.columns {
                            column.inherited = true;
                        }
                    }
                    None => self.would_fail("ATTACH PARTITION", &child_key),
                }
            }
            Action::Detach(child) => {
                let child_key = self.table_key(&child);
                if let Some(table) = self.catalog.tables.get_mut(&child_key) {
                    table.parents.retain(|p| p != key);
                    for column in &mut table.columns {
                        column.inherited = false;
                    }
                }
            }
            Action::NoInherit(parent) => {
                let parent_key = self.table_key(&parent);
                if let Some(table) = self.catalog.tables.get_mut(key) {
                    table.parents.retain(|p| *p != parent_key);
                    for column in &mut table.columns {
                        column.inherited = false;
                    }
                }
            }
            Action::Inherit(parent) => {
                let parent_key = self.table_key(&parent);
                if let Some(table) = self.catalog.tables.get_mut(key) {
                    table.parents.push(parent_key);
                }
            }
            Action::Of(type_name) => {
                let type_key = self.type_key(&type_name);
                if let Some(table) = self.catalog.tables.get_mut(key) {
                    table.of_type = type_key;
                }
            }
            Action::Harmless => {}
        }
    }

    /// Changes `column` of `key` and of the tables in `targets` that have it.
    fn change_column(
        &mut self,
        key: &Key,
        targets: &[Key],
        column: &str,
        change: impl Fn(&mut Column),
    ) {
        if self.catalog.tables[key].column(column).is_none() {
            if self.is_uncertain(key) {
                return;
            }
            self.warn(
                format!("ALTER COLUMN `{column}`, which does not exist; the migration would fail"),
                Vec::new(),
            );
            return;
        }
        let here = self.here();
        for k in targets {
            if let Some(c) = self
                .catalog
                .tables
                .get_mut(k)
                .and_then(|t| t.column_mut(column))
            {
                change(c);
                c.changed_at = Some(here.clone());
            }
        }
    }

    fn drop(&mut self, object: Object, name: &Name, if_exists: bool, cascade: bool) {
        let here = self.here();
        match object {
            Object::Table => {
                if self.is_temporary(name) {
                    self.temporary.remove(name.object());
                    return;
                }
                let key = self.table_key(name);
                if !self.catalog.tables.contains_key(&key) {
                    if !if_exists {
                        self.would_fail("DROP TABLE", &key);
                    }
                    return;
                }
                // Partitions go with their table; inheritance children only with CASCADE.
                let mut dropped = vec![key.clone()];
                for k in self.family(&key).into_iter().skip(1) {
                    let partition = self.catalog.tables[&k]
                        .parents
                        .iter()
                        .any(|p| self.catalog.tables.get(p).is_some_and(|t| t.partitioned));
                    if partition || cascade {
                        dropped.push(k);
                    }
                }
                for k in dropped {
                    self.catalog.tables.remove(&k);
                    self.catalog.removed_tables.push(RemovedTable {
                        schema: k.0,
                        name: k.1,
                        renamed_to: None,
                        at: here.clone(),
                    });
                }
            }
            Object::Type | Object::Domain => {
                let Some(key) = self.type_key(name) else {
                    return;
                };
                self.catalog.types.remove(&key);
                self.catalog.removed_types.push(RemovedType {
                    schema: key.0.clone(),
                    name: key.1.clone(),
                    renamed_to: None,
                    at: here.clone(),
                });
                if cascade {
                    for table in self.catalog.tables.values_mut() {
                        let gone: Vec<String> = table
                            .columns
                            .iter()
                            .filter(|c| uses_type(&c.ty, &key))
                            .map(|c| c.name.clone())
                            .collect();
                        table.columns.retain(|c| !gone.contains(&c.name));
                        for name in gone {
                            table.removed.push(RemovedColumn {
                                name,
                                renamed_to: None,
                                at: here.clone(),
                            });
                        }
                    }
                }
            }
            Object::Schema => {
                let schema = name.object().to_owned();
                if !self.catalog.schemas.remove(&schema) && !if_exists {
                    self.warn(
                        format!(
                            "DROP SCHEMA `{schema}`, which does not exist; the migration would fail"
                        ),
                        Vec::new(),
                    );
                }
                self.catalog.types.retain(|(s, _), _| *s != schema);
                let dropped: Vec<Key> = self
                    .catalog
                    .tables
                    .keys()
                    .filter(|(s, _)| *s == schema)
                    .cloned()
                    .collect();
                for key in dropped {
                    self.catalog.tables.remove(&key);
                    self.catalog.removed_tables.push(RemovedTable {
                        schema: key.0,
                        name: key.1,
                        renamed_to: None,
                        at: here.clone(),
                    });
                }
            }
        }
    }

    fn rename_schema(&mut self, from: &str, to: &str) {
        self.catalog.schemas.remove(from);
        self.catalog.schemas.insert(to.to_owned());
        let tables: Vec<Key> = self
            .catalog
            .tables
            .keys()
            .filter(|(s, _)| s == from)
            .cloned()
            .collect();
        for key in tables {
            let to_key = (to.to_owned(), key.1.clone());
            self.move_table(&key, to_key, false);
        }
        let types: Vec<Key> = self
            .catalog
            .types
            .keys()
            .filter(|(s, _)| s == from)
            .cloned()
            .collect();
        for key in types {
            let to_key = (to.to_owned(), key.1.clone());
            self.move_type(&key, &to_key);
        }
        for entry in &mut self.search_path {
            if entry == from {
                *entry = to.to_owned();
            }
        }
    }

    // --- CREATE TABLE ... AS -----------------------------------------------------------

    /// The columns a query produces, and why they may be wrong.
    fn derive_columns(
        &self,
        query: &Query,
        names: &[String],
        at: &Location,
    ) -> (Vec<Column>, Option<String>) {
        if let Some(reason) = query.opaque {
            return (
                Vec::new(),
                Some(format!(
                    "CREATE TABLE ... AS with {reason}: its columns are not modelled"
                )),
            );
        }
        let mut from: Vec<(Option<&str>, &str, Option<&Table>)> = Vec::new();
        for item in &query.from {
            let table = if self.is_temporary(&item.table) {
                None
            } else {
                self.catalog.tables.get(&self.table_key(&item.table))
            };
            from.push((item.alias.as_deref(), item.table.object(), table));
        }
        let mut columns = Vec::new();
        let mut unknown: Vec<String> = Vec::new();
        let column = |name: String, ty: SqlType| Column {
            name,
            ty,
            nullable: true,
            generated: Generated::No,
            defined_at: at.clone(),
            changed_at: None,
            inherited: false,
        };
        for item in &query.items {
            if let Expr::Star(qualifier) = &item.expr {
                for (alias, name, table) in &from {
                    if qualifier
                        .as_deref()
                        .is_some_and(|q| Some(q) != *alias && q != *name)
                    {
                        continue;
                    }
                    match table {
                        Some(table) => {
                            for c in &table.columns {
                                columns.push(column(c.name.clone(), c.ty.clone()));
                            }
                        }
                        None => unknown.push(format!("{name}.*")),
                    }
                }
                continue;
            }
            let (name, ty) = self.expression_type(&item.expr, &from);
            let name = item.alias.clone().unwrap_or(name);
            match ty {
                Some(ty) => columns.push(column(name, ty)),
                None => {
                    unknown.push(name.clone());
                    columns.push(column(name, SqlType::unknown()));
                }
            }
        }
        for (column, name) in columns.iter_mut().zip(names) {
            column.name = name.clone();
        }
        let reason = (!unknown.is_empty()).then(|| {
            format!(
                "CREATE TABLE ... AS: the type of {} does not follow from known tables and casts",
                unknown
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        (columns, reason)
    }

    /// A select item's name (as PostgreSQL picks it) and type, if known.
    fn expression_type(
        &self,
        expr: &Expr,
        from: &[(Option<&str>, &str, Option<&Table>)],
    ) -> (String, Option<SqlType>) {
        match expr {
            Expr::Column(parts) => {
                let column = parts.last().cloned().unwrap_or_default();
                let qualifier = parts.len().checked_sub(2).map(|i| parts[i].as_str());
                let found = from
                    .iter()
                    .filter(|(alias, name, _)| {
                        qualifier.is_none_or(|q| Some(q) == *alias || q == *name)
                    })
                    .find_map(|(_, _, table)| table.and_then(|t| t.column(&column)));
                (column, found.map(|c| c.ty.clone()))
            }
            Expr::Cast(inner, ty) => {
                let (inner_name, _) = self.expression_type(inner, from);
                let (resolved, _) = self.resolve_type(ty);
                let name = match inner.as_ref() {
                    Expr::Column(_) | Expr::Function(_) | Expr::Cast(..) => inner_name,
                    _ => match &resolved.kind {
                        TypeKind::Base | TypeKind::Array { .. } => {
                            resolved.name.trim_start_matches('_').to_owned()
                        }
                        _ => ty.name.last().cloned().unwrap_or_default(),
                    },
                };
                (name, Some(resolved))
            }
            Expr::Literal(literal) => {
                let ty = match literal {
                    Literal::Text | Literal::Null => SqlType::builtin("text", "text"),
                    Literal::Integer(true) => SqlType::builtin("int4", "integer"),
                    Literal::Integer(false) => SqlType::builtin("int8", "bigint"),
                    Literal::Numeric => SqlType::builtin("numeric", "numeric"),
                    Literal::Bool => SqlType::builtin("bool", "boolean"),
                };
                ("?column?".to_owned(), Some(ty))
            }
            Expr::TypedLiteral(ty) => {
                let (resolved, _) = self.resolve_type(ty);
                (ty.name.last().cloned().unwrap_or_default(), Some(resolved))
            }
            Expr::Function(name) => {
                let ty = match name.as_str() {
                    "count" => Some(SqlType::builtin("int8", "bigint")),
                    "now" | "clock_timestamp" | "statement_timestamp" | "transaction_timestamp" => {
                        Some(SqlType::builtin("timestamptz", "timestamp with time zone"))
                    }
                    "gen_random_uuid" | "uuid_generate_v4" => {
                        Some(SqlType::builtin("uuid", "uuid"))
                    }
                    "random" => Some(SqlType::builtin("float8", "double precision")),
                    _ => None,
                };
                (name.clone(), ty)
            }
            Expr::Keyword(keyword) => {
                let ty = match keyword.as_str() {
                    "current_date" => SqlType::builtin("date", "date"),
                    "current_timestamp" => {
                        SqlType::builtin("timestamptz", "timestamp with time zone")
                    }
                    "localtimestamp" => {
                        SqlType::builtin("timestamp", "timestamp without time zone")
                    }
                    "current_time" => SqlType::builtin("timetz", "time with time zone"),
                    "localtime" => SqlType::builtin("time", "time without time zone"),
                    _ => SqlType::builtin("name", "name"),
                };
                (keyword.clone(), Some(ty))
            }
            Expr::Star(_) | Expr::Other => ("?column?".to_owned(), None),
        }
    }

    // --- queries, calls, bodies ----------------------------------------------------------

    fn query(&mut self, text: &str, line: u32) {
        let into = contains_ignore_case(text, "into");
        let set_config = contains_ignore_case(text, "set_config");
        if !into && !set_config && self.catalog.routines.is_empty() {
            return;
        }
        let toks = tokens(text, line);
        if set_config {
            let mut calls = Vec::new();
            body::collect_calls(&toks, &mut calls);
            for call in calls.iter().filter(|c| c.name == "set_config") {
                if let [variable, value, ..] = call.literals.as_slice()
                    && variable.eq_ignore_ascii_case("search_path")
                {
                    self.search_path = super::parse::search_path_entries(value);
                }
            }
        }
        if into {
            let query = query::parse(&toks);
            if let Some((name, temporary)) = &query.into {
                if *temporary || name.schema() == Some("pg_temp") {
                    self.temporary.insert(name.object().to_owned());
                } else {
                    let key = self.create_key(name);
                    if !self.catalog.tables.contains_key(&key) {
                        let at = self.at_line(name.line);
                        let (columns, mut reason) = self.derive_columns(&query, &[], &at);
                        if reason.is_none() {
                            reason = query.from.iter().find_map(|f| {
                                let source = self.table_key(&f.table);
                                let last = self.catalog.tables.get(&source)?.uncertain.last()?;
                                Some(format!(
                                    "copies the columns of `{}.{}`, whose catalog is uncertain after {} ({})",
                                    source.0, source.1, last.at, last.reason
                                ))
                            });
                        }
                        self.catalog.schemas.insert(key.0.clone());
                        self.catalog.tables.insert(
                            key.clone(),
                            Table {
                                schema: key.0.clone(),
                                name: key.1.clone(),
                                columns,
                                defined_at: at,
                                uncertain: Vec::new(),
                                removed: Vec::new(),
                                parents: Vec::new(),
                                partitioned: false,
                                of_type: None,
                            },
                        );
                        if let Some(reason) = reason {
                            self.warn(
                                reason.replace("CREATE TABLE ... AS", "SELECT ... INTO"),
                                vec![key],
                            );
                        }
                    } else {
                        self.would_fail("SELECT ... INTO", &key);
                    }
                }
            }
        }
        self.calls_in(&toks);
    }

    fn call(&mut self, text: &str, line: u32) {
        if self.catalog.routines.is_empty() {
            return;
        }
        let toks = tokens(text, line);
        self.calls_in(&toks);
    }

    fn calls_in(&mut self, toks: &[Token<'_>]) {
        if self.catalog.routines.is_empty() {
            return;
        }
        let mut calls = Vec::new();
        body::collect_calls(toks, &mut calls);
        self.run_calls(&calls);
    }

    fn run_calls(&mut self, calls: &[body::Call]) {
        for call in calls {
            let Some(routine) = self.catalog.routines.get(&call.name).cloned() else {
                continue;
            };
            let mut tables = routine.tables.clone();
            if let Some(schema) = &routine.schema {
                let named = self.tables_named_by(&call.literals, schema);
                if named.is_empty() {
                    tables.extend(self.tables_in(schema));
                } else {
                    tables.extend(named);
                }
            }
            self.warn(
                format!(
                    "calls `{}`, defined at {}, which runs DDL the catalog cannot follow",
                    call.name, routine.defined_at
                ),
                tables,
            );
        }
    }

    /// Known tables of `schema` named by `literals` (`'t'`, `'schema.t'`).
    fn tables_named_by(&self, literals: &[String], schema: &str) -> Vec<Key> {
        let mut out = Vec::new();
        for literal in literals {
            let (s, t) = match literal.split_once('.') {
                Some((s, t)) => (
                    s.trim_matches('"').to_owned(),
                    t.trim_matches('"').to_owned(),
                ),
                None => (schema.to_owned(), literal.trim_matches('"').to_owned()),
            };
            let key = (s, t);
            if self.catalog.tables.contains_key(&key) && !out.contains(&key) {
                out.push(key);
            }
        }
        out
    }

    fn tables_in(&self, schema: &str) -> Vec<Key> {
        self.catalog
            .tables
            .keys()
            .filter(|(s, _)| s == schema)
            .cloned()
            .collect()
    }

    /// The body (a string token) and language of a `DO` block (`routine` false: its first
    /// string that does not name the language) or a `CREATE FUNCTION` (the string after
    /// `AS`).
    fn body_of<'t, 's>(toks: &'t [Token<'s>], routine: bool) -> (Option<&'t Token<'s>>, String) {
        let mut depth = 0u32;
        let mut body = None;
        let mut language = "plpgsql".to_owned();
        for (i, t) in toks.iter().enumerate() {
            if t.is_op("(") {
                depth += 1;
            } else if t.is_op(")") {
                depth = depth.saturating_sub(1);
            } else if depth == 0 {
                let previous = i.checked_sub(1).map(|p| &toks[p]);
                if t.is("language") {
                    if let Some(l) = toks.get(i + 1) {
                        language = l
                            .string()
                            .map_or_else(|| l.ident(), |s| s.to_ascii_lowercase());
                    }
                } else if t.kind == Kind::Str && body.is_none() {
                    let after_language = previous.is_some_and(|p| p.is("language"));
                    let after_as = previous.is_some_and(|p| p.is("as"));
                    if (routine && after_as) || (!routine && !after_language) {
                        body = Some(t);
                    }
                }
            }
        }
        (body, language)
    }

    fn do_block(&mut self, text: &str, line: u32) {
        let toks = tokens(text, line);
        let (Some(body), language) = Self::body_of(&toks, false) else {
            return;
        };
        let source = body.string().unwrap_or_default();
        let effects = body::analyse(&source, body.line, &language);
        self.apply_effects(&effects, "`DO` block");
    }

    fn routine(&mut self, text: &str, line: u32) {
        let toks = tokens(text, line);
        let Some(name_at) = toks
            .iter()
            .position(|t| t.is("function") || t.is("procedure"))
        else {
            return;
        };
        let Some(name) = toks.get(name_at + 1).filter(|t| t.is_ident()) else {
            return;
        };
        let mut routine_name = name.ident();
        if toks.get(name_at + 2).is_some_and(|t| t.is_op("."))
            && let Some(object) = toks.get(name_at + 3).filter(|t| t.is_ident())
        {
            routine_name = object.ident();
        }
        let (body, language) = Self::body_of(&toks, true);
        let Some(body) = body else {
            // BEGIN ATOMIC ... END or RETURN expr: SQL-standard bodies cannot hold DDL.
            self.catalog.routines.remove(&routine_name);
            return;
        };
        let source = body.string().unwrap_or_default();
        if !["alter", "create", "drop", "execute", "import"]
            .iter()
            .any(|w| contains_ignore_case(&source, w))
        {
            self.catalog.routines.remove(&routine_name);
            return;
        }
        let effects = body::analyse(&source, body.line, &language);
        let mut tables = Vec::new();
        let mut schema = None;
        let mut risky = false;
        for ddl in &effects.ddl {
            if let Some(keys) = self.static_targets(&ddl.text, ddl.line) {
                risky = true;
                tables.extend(keys);
            }
        }
        for dynamic in &effects.dynamic {
            match self.dynamic_targets(dynamic) {
                Targets::None => {}
                Targets::Tables(keys) => {
                    risky = true;
                    tables.extend(keys);
                }
                Targets::Schema(s) => {
                    risky = true;
                    schema = Some(s);
                }
                Targets::Unnamed => risky = true,
            }
        }
        if risky {
            let defined_at = self.here();
            self.catalog.routines.insert(
                routine_name,
                Routine {
                    tables,
                    schema,
                    defined_at,
                },
            );
        } else {
            self.catalog.routines.remove(&routine_name);
        }
    }

    /// The tables a DDL statement written in a routine body would change (`None` if it
    /// changes nothing the catalog models).
    fn static_targets(&self, text: &str, line: u32) -> Option<Vec<Key>> {
        if classify(text) != Class::Model {
            return None;
        }
        let toks = tokens(text, line);
        match Parser::new(&toks, line).statement() {
            Ok(ast) => self.ast_targets(&ast),
            Err(_) => Some(self.scan_tables(&toks)),
        }
    }

    /// The tables an already parsed statement changes; `None` for harmless ones.
    fn ast_targets(&self, ast: &Ast<'_>) -> Option<Vec<Key>> {
        let table = |name: &Name| -> Vec<Key> {
            let key = self.table_key(name);
            if self.catalog.tables.contains_key(&key) {
                vec![key]
            } else {
                Vec::new()
            }
        };
        match ast {
            Ast::AlterTable { name, actions, .. } => {
                if actions.iter().all(|a| matches!(a, Action::Harmless)) {
                    None
                } else {
                    Some(table(name))
                }
            }
            Ast::RenameTable { name, .. } => Some(table(name)),
            Ast::RenameColumn { table: name, .. } => Some(table(name)),
            Ast::SetSchema {
                object: Object::Table,
                name,
                ..
            } => Some(table(name)),
            Ast::Drop {
                object: Object::Table,
                names,
                ..
            } => Some(names.iter().flat_map(table).collect()),
            Ast::CreateTable(create) => Some(table(&create.name)),
            Ast::Harmless | Ast::SetSearchPath(_) | Ast::ResetSearchPath => None,
            Ast::CreateSchema { .. }
            | Ast::CreateEnum { .. }
            | Ast::CreateComposite { .. }
            | Ast::CreateDomain { .. }
            | Ast::CreateOtherType { .. }
            | Ast::AddValue { .. } => Some(Vec::new()),
            _ => Some(
                self.catalog
                    .tables
                    .keys()
                    .filter(|(s, _)| self.search_path.contains(s))
                    .cloned()
                    .collect(),
            ),
        }
    }

    /// Who a dynamic statement may change.
    fn dynamic_targets(&self, dynamic: &Dynamic) -> Targets {
        let Some(template) = &dynamic.template else {
            return Targets::Schema(self.creation_schema());
        };
        match classify(template) {
            Class::Model => {}
            Class::Do | Class::Routine | Class::Unknown | Class::Special => {
                return Targets::Schema(self.creation_schema());
            }
            _ => return Targets::None,
        }
        let toks = tokens(template, dynamic.line);
        let Ok(ast) = Parser::new(&toks, dynamic.line).statement() else {
            return Targets::Schema(self.creation_schema());
        };
        let computed = |name: &Name| name.parts.iter().any(|p| p.contains(PLACEHOLDER));
        let schema_of = |name: &Name| match name.schema() {
            Some(s) if !s.contains(PLACEHOLDER) => s.to_owned(),
            _ => self.creation_schema(),
        };
        let name = match &ast {
            Ast::AlterTable { name, actions, .. } => {
                if actions.iter().all(|a| matches!(a, Action::Harmless)) {
                    return Targets::None;
                }
                name
            }
            Ast::RenameTable { name, .. }
            | Ast::RenameColumn { table: name, .. }
            | Ast::SetSchema { name, .. } => name,
            Ast::Drop { names, .. } => match names.first() {
                Some(name) => name,
                None => return Targets::None,
            },
            Ast::CreateTable(create) => {
                return if computed(&create.name) {
                    Targets::Unnamed
                } else {
                    Targets::Tables(Vec::new())
                };
            }
            other => {
                return match self.ast_targets(other) {
                    None => Targets::None,
                    Some(keys) if keys.is_empty() => Targets::Tables(keys),
                    Some(_) => Targets::Schema(self.creation_schema()),
                };
            }
        };
        if computed(name) {
            Targets::Schema(schema_of(name))
        } else {
            let key = self.table_key(name);
            Targets::Tables(vec![key])
        }
    }

    /// Applies what a `DO` block does: its DDL as far as its guards allow, and marks the
    /// tables its dynamic SQL and calls may change.
    fn apply_effects(&mut self, effects: &Effects, what: &str) {
        let start_line = self.line;
        for ddl in &effects.ddl {
            self.line = ddl.line;
            self.guarded(&ddl.text, ddl.line, &ddl.guard, what);
        }
        for dynamic in &effects.dynamic {
            self.line = dynamic.line;
            if let Some(literal) = &dynamic.literal {
                // Every part is a literal: as if it were written in the body.
                self.guarded(literal, dynamic.line, &dynamic.guard, what);
                continue;
            }
            match self.dynamic_targets(dynamic) {
                Targets::None => {}
                Targets::Tables(keys) => {
                    let keys: Vec<Key> = keys
                        .into_iter()
                        .filter(|k| self.catalog.tables.contains_key(k))
                        .collect();
                    self.warn(
                        format!("{what} changes the tables it names with dynamic SQL the catalog cannot follow"),
                        keys,
                    );
                }
                Targets::Schema(schema) => {
                    let named = self.tables_named_by(&effects.literals, &schema);
                    let keys = if named.is_empty() {
                        self.tables_in(&schema)
                    } else {
                        named
                    };
                    self.warn(
                        format!("{what} runs dynamic SQL that may change the tables of `{schema}`"),
                        keys,
                    );
                }
                Targets::Unnamed => self.warn(
                    format!("{what} creates tables with dynamic SQL; the catalog does not know their names"),
                    Vec::new(),
                ),
            }
        }
        self.line = start_line;
        self.run_calls(&effects.calls);
    }

    /// A DDL statement of a `DO` block, under its guard.
    fn guarded(&mut self, text: &str, line: u32, guard: &Guard, what: &str) {
        if matches!(guard, Guard::Always) {
            self.statement(text, line);
            return;
        }
        if classify(text) != Class::Model {
            self.statement(text, line);
            return;
        }
        let toks = tokens(text, line);
        let Ok(ast) = Parser::new(&toks, line).statement() else {
            let tables = self.scan_tables(&toks);
            self.warn(format!("{what} runs DDL the catalog cannot parse"), tables);
            return;
        };
        // Idempotent patterns: create what is missing, change what exists.
        let creates = self.created_object(&ast);
        let changes = self.changed_object(&ast);
        let applies = match (guard, &creates, &changes) {
            (Guard::IfNotExists(names), Some((name, _)), _) if names.iter().any(|n| n == name) => {
                Some(!creates.as_ref().is_some_and(|(_, exists)| *exists))
            }
            (Guard::OnDuplicate, Some((_, exists)), _) => Some(!exists),
            (Guard::IfExists(names), _, Some((name, exists)))
                if names.iter().any(|n| n == name) =>
            {
                Some(*exists)
            }
            _ => None,
        };
        match applies {
            Some(true) => self.apply(ast, line),
            Some(false) => {}
            None => {
                let reason =
                    format!("{what} runs DDL under a condition the catalog cannot evaluate");
                if let Ast::CreateTable(create) = &ast {
                    let key = self.create_key(&create.name);
                    if !self.catalog.tables.contains_key(&key) {
                        self.apply(ast, line);
                    }
                    self.warn(reason, vec![key]);
                } else {
                    let tables = self.ast_targets(&ast).unwrap_or_default();
                    self.warn(reason, tables);
                }
            }
        }
    }

    /// What a statement creates (its name) and whether that exists already.
    fn created_object(&self, ast: &Ast<'_>) -> Option<(String, bool)> {
        match ast {
            Ast::CreateTable(create) => {
                let key = self.create_key(&create.name);
                Some((key.1.clone(), self.catalog.tables.contains_key(&key)))
            }
            Ast::AlterTable { name, actions, .. } => match actions.as_slice() {
                [Action::AddColumn { def, .. }] => {
                    let key = self.table_key(name);
                    let exists = self
                        .catalog
                        .tables
                        .get(&key)
                        .is_some_and(|t| t.column(&def.name).is_some());
                    Some((def.name.clone(), exists))
                }
                _ => None,
            },
            Ast::CreateEnum { name, .. }
            | Ast::CreateComposite { name, .. }
            | Ast::CreateDomain { name, .. }
            | Ast::CreateOtherType { name } => {
                Some((name.object().to_owned(), self.type_key(name).is_some()))
            }
            Ast::CreateSchema { name, .. } => {
                Some((name.clone(), self.catalog.schemas.contains(name)))
            }
            Ast::AddValue { name, value, .. } => {
                let exists = self
                    .type_key(name)
                    .and_then(|k| self.catalog.types.get(&k))
                    .is_some_and(|t| t.labels.iter().any(|l| &l.name == value));
                Some((value.clone(), exists))
            }
            _ => None,
        }
    }

    /// What a statement changes or removes (its name) and whether that exists.
    fn changed_object(&self, ast: &Ast<'_>) -> Option<(String, bool)> {
        match ast {
            Ast::RenameColumn { table, from, .. } => {
                let key = self.table_key(table);
                let exists = self
                    .catalog
                    .tables
                    .get(&key)
                    .is_some_and(|t| t.column(from).is_some());
                Some((from.clone(), exists))
            }
            Ast::AlterTable { name, actions, .. } => match actions.as_slice() {
                [Action::DropColumn { name: column, .. }] => {
                    let key = self.table_key(name);
                    let exists = self
                        .catalog
                        .tables
                        .get(&key)
                        .is_some_and(|t| t.column(column).is_some());
                    Some((column.clone(), exists))
                }
                _ => None,
            },
            Ast::RenameTable { name, .. } => {
                let key = self.table_key(name);
                Some((key.1.clone(), self.catalog.tables.contains_key(&key)))
            }
            Ast::RenameValue { name, from, .. } => {
                let exists = self
                    .type_key(name)
                    .and_then(|k| self.catalog.types.get(&k))
                    .is_some_and(|t| t.labels.iter().any(|l| &l.name == from));
                Some((from.clone(), exists))
            }
            Ast::RenameType { name, .. } => {
                Some((name.object().to_owned(), self.type_key(name).is_some()))
            }
            _ => None,
        }
    }

    fn special(&mut self, text: &str, line: u32) {
        let words: Vec<String> = super::lex::first_words(text, 3)
            .iter()
            .map(|w| w.to_ascii_lowercase())
            .collect();
        match words
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["discard", "all", ..] => self.search_path = vec![self.schema.clone()],
            ["drop", "extension", ..] => {
                if !contains_ignore_case(text, "cascade") {
                    return;
                }
                let tables: Vec<Key> = self
                    .catalog
                    .tables
                    .iter()
                    .filter(|(_, t)| {
                        t.columns.iter().any(|c| {
                            let ty = c.ty.storage();
                            ty.kind == TypeKind::Base
                                && types::builtin(&ty.name, &[], None, None).is_none()
                                && !self.catalog.types.values().any(|u| u.ty.name == ty.name)
                        })
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                self.warn(
                    "DROP EXTENSION ... CASCADE drops the columns of the extension's types"
                        .to_owned(),
                    tables,
                );
            }
            _ => {
                let toks = tokens(text, line);
                let mut tables = self.scan_tables(&toks);
                if words.first().map(String::as_str) == Some("drop") {
                    tables = self.catalog.tables.keys().cloned().collect();
                }
                let what = words.join(" ").to_ascii_uppercase();
                self.warn(format!("`{what}` is not modelled"), tables);
            }
        }
    }

    /// A statement of a modelled kind that does not parse: warn, and mark what it may change.
    fn unparsed(&mut self, toks: &[Token<'_>], error: &ParseError) {
        self.line = error.line.max(self.line);
        let words: Vec<String> = toks
            .iter()
            .take(3)
            .filter(|t| t.kind == Kind::Word)
            .map(|t| t.text.to_ascii_lowercase())
            .collect();
        let message = format!("cannot parse this statement ({})", error.message);
        let create_table = words.first().is_some_and(|w| w == "create")
            && toks.iter().take(6).any(|t| t.is("table"));
        if create_table {
            // The table exists afterwards, with columns the catalog does not know.
            let name_at = toks.iter().position(|t| t.is("table")).map_or(0, |p| p + 1);
            let mut at = name_at;
            while toks
                .get(at)
                .is_some_and(|t| t.is("if") || t.is("not") || t.is("exists"))
            {
                at += 1;
            }
            let mut parser = Parser::new(&toks[at.min(toks.len())..], self.line);
            if let Ok(name) = parser.name() {
                let key = self.create_key(&name);
                if !self.catalog.tables.contains_key(&key) {
                    self.catalog.schemas.insert(key.0.clone());
                    self.catalog.tables.insert(
                        key.clone(),
                        Table {
                            schema: key.0.clone(),
                            name: key.1.clone(),
                            columns: Vec::new(),
                            defined_at: self.here(),
                            uncertain: Vec::new(),
                            removed: Vec::new(),
                            parents: Vec::new(),
                            partitioned: false,
                            of_type: None,
                        },
                    );
                }
                self.warn(message, vec![key]);
                return;
            }
        }
        let tables = self.scan_tables(toks);
        self.warn(message, tables);
    }

    /// Known tables named anywhere in the statement.
    fn scan_tables(&self, toks: &[Token<'_>]) -> Vec<Key> {
        let words: BTreeSet<String> = toks
            .iter()
            .filter(|t| t.is_ident())
            .map(Token::ident)
            .chain(toks.iter().filter_map(|t| t.string()).flat_map(|s| {
                s.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .map(str::to_ascii_lowercase)
                    .collect::<Vec<_>>()
            }))
            .collect();
        self.catalog
            .tables
            .keys()
            .filter(|(schema, table)| {
                words.contains(table)
                    && (self.search_path.contains(schema) || words.contains(schema))
            })
            .cloned()
            .collect()
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
