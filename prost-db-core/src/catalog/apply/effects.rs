//! Which tables a body's statements change, and applying them under their guards.

use crate::catalog::body::{Dynamic, Effects, Guard, PLACEHOLDER};
use crate::catalog::classify::{Class, classify};
use crate::catalog::lex::tokens;
use crate::catalog::parse::{Action, Ast, Name, Object, Parser};

use super::{Key, Script, Targets};

impl Script<'_> {
    /// The tables a DDL statement written in a routine body would change (`None` if it
    /// changes nothing the catalog models).
    pub(super) fn static_targets(&self, text: &str, line: u32) -> Option<Vec<Key>> {
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
    pub(super) fn ast_targets(&self, ast: &Ast<'_>) -> Option<Vec<Key>> {
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
    pub(super) fn dynamic_targets(&self, dynamic: &Dynamic) -> Targets {
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
    pub(super) fn apply_effects(&mut self, effects: &Effects, what: &str) {
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
    pub(super) fn guarded(&mut self, text: &str, line: u32, guard: &Guard, what: &str) {
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
    pub(super) fn created_object(&self, ast: &Ast<'_>) -> Option<(String, bool)> {
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
    pub(super) fn changed_object(&self, ast: &Ast<'_>) -> Option<(String, bool)> {
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
}
