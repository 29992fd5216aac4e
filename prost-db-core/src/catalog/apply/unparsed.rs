//! Statements the parser does not model: special cases and the warnings for the rest.

use std::collections::BTreeSet;

use crate::catalog::Table;
use crate::catalog::lex::{Kind, Token, tokens};
use crate::catalog::parse::{ParseError, Parser};
use crate::catalog::types::{self, TypeKind};

use super::{Key, Script, contains_ignore_case};

impl Script<'_> {
    pub(super) fn special(&mut self, text: &str, line: u32) {
        let words: Vec<String> = crate::catalog::lex::first_words(text, 3)
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
    pub(super) fn unparsed(&mut self, toks: &[Token<'_>], error: &ParseError) {
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
    pub(super) fn scan_tables(&self, toks: &[Token<'_>]) -> Vec<Key> {
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
