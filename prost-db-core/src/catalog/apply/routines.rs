//! Queries, calls, `DO` blocks and routines: what running them may change.

use crate::catalog::body::{self};
use crate::catalog::lex::{Kind, Token, tokens};
use crate::catalog::query::{self};
use crate::catalog::{Routine, Table};

use super::{Key, Script, Targets, contains_ignore_case};

impl Script<'_> {
    pub(super) fn query(&mut self, text: &str, line: u32) {
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
                    self.search_path = crate::catalog::parse::search_path_entries(value);
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

    pub(super) fn call(&mut self, text: &str, line: u32) {
        if self.catalog.routines.is_empty() {
            return;
        }
        let toks = tokens(text, line);
        self.calls_in(&toks);
    }

    pub(super) fn calls_in(&mut self, toks: &[Token<'_>]) {
        if self.catalog.routines.is_empty() {
            return;
        }
        let mut calls = Vec::new();
        body::collect_calls(toks, &mut calls);
        self.run_calls(&calls);
    }

    pub(super) fn run_calls(&mut self, calls: &[body::Call]) {
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
    pub(super) fn tables_named_by(&self, literals: &[String], schema: &str) -> Vec<Key> {
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

    pub(super) fn tables_in(&self, schema: &str) -> Vec<Key> {
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
    pub(super) fn body_of<'t, 's>(
        toks: &'t [Token<'s>],
        routine: bool,
    ) -> (Option<&'t Token<'s>>, String) {
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

    pub(super) fn do_block(&mut self, text: &str, line: u32) {
        let toks = tokens(text, line);
        let (Some(body), language) = Self::body_of(&toks, false) else {
            return;
        };
        let source = body.string().unwrap_or_default();
        let effects = body::analyse(&source, body.line, &language);
        self.apply_effects(&effects, "`DO` block");
    }

    pub(super) fn routine(&mut self, text: &str, line: u32) {
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
}
