//! `CREATE SCHEMA`/`TYPE`, `ALTER`, `DROP` and `SET search_path`.

use crate::catalog::lex::Kind;

use super::{Action, Ast, ColumnDef, Object, Parser, Result, search_path_entries};

impl<'t, 's> Parser<'t, 's> {
    pub(super) fn create_schema(&mut self) -> Result<Ast<'s>> {
        self.if_not_exists();
        let name = if self.eat("authorization") {
            self.ident()?
        } else {
            let name = self.ident()?;
            if self.eat("authorization") {
                self.ident()?;
            }
            name
        };
        let elements = !self.at_end();
        self.pos = self.tokens.len();
        Ok(Ast::CreateSchema { name, elements })
    }

    pub(super) fn create_type(&mut self) -> Result<Ast<'s>> {
        let name = self.name()?;
        if self.at_end() {
            return Ok(Ast::CreateOtherType { name });
        }
        if !self.eat("as") {
            // CREATE TYPE name (INPUT = ..., OUTPUT = ...): a base type.
            return Ok(self.finish_harmless_tail(Ast::CreateOtherType { name }));
        }
        if self.eat("enum") {
            self.expect_op("(")?;
            let mut labels = Vec::new();
            if !self.at_op(")") {
                loop {
                    labels.push(self.string()?);
                    if !self.eat_op(",") {
                        break;
                    }
                }
            }
            self.expect_op(")")?;
            return Ok(Ast::CreateEnum { name, labels });
        }
        if self.eat("range") {
            return Ok(self.finish_harmless_tail(Ast::CreateOtherType { name }));
        }
        self.expect_op("(")?;
        let mut attributes = Vec::new();
        if !self.at_op(")") {
            loop {
                let attribute = self.ident()?;
                let ty = self.type_name()?;
                if self.eat("collate") {
                    self.name()?;
                }
                attributes.push((attribute, ty));
                if !self.eat_op(",") {
                    break;
                }
            }
        }
        self.expect_op(")")?;
        Ok(Ast::CreateComposite { name, attributes })
    }

    pub(super) fn alter(&mut self) -> Result<Ast<'s>> {
        if self.eat("table") || self.eat_all(&["foreign", "table"]) {
            return self.alter_table();
        }
        if self.eat("type") {
            return self.alter_type(Object::Type);
        }
        if self.eat("domain") {
            return self.alter_type(Object::Domain);
        }
        if self.eat("schema") {
            let from = self.ident()?;
            if self.eat_all(&["rename", "to"]) {
                let to = self.ident()?;
                return Ok(Ast::RenameSchema { from, to });
            }
            return Ok(self.rest_is_harmless());
        }
        self.error("expected TABLE, TYPE, DOMAIN or SCHEMA")
    }

    pub(super) fn alter_table(&mut self) -> Result<Ast<'s>> {
        if self.at("all") && self.peek_at(1).is_some_and(|t| t.is("in")) {
            // ALTER TABLE ALL IN TABLESPACE ... SET TABLESPACE ...
            return Ok(self.rest_is_harmless());
        }
        let if_exists = self.if_exists();
        let only = self.eat("only");
        let name = self.name()?;
        self.eat_op("*");
        if self.eat("rename") {
            if self.eat("to") {
                let to = self.ident()?;
                return Ok(Ast::RenameTable {
                    name,
                    if_exists,
                    to,
                });
            }
            if self.eat("constraint") {
                return Ok(self.rest_is_harmless());
            }
            self.eat("column");
            let from = self.ident()?;
            self.expect("to")?;
            let to = self.ident()?;
            return Ok(Ast::RenameColumn {
                table: name,
                if_exists,
                from,
                to,
            });
        }
        if self.eat_all(&["set", "schema"]) {
            let schema = self.ident()?;
            return Ok(Ast::SetSchema {
                object: Object::Table,
                name,
                if_exists,
                schema,
            });
        }
        let mut actions = Vec::new();
        loop {
            actions.push(self.action()?);
            if !self.eat_op(",") {
                break;
            }
        }
        Ok(Ast::AlterTable {
            name,
            if_exists,
            only,
            actions,
        })
    }

    pub(super) fn action(&mut self) -> Result<Action> {
        if self.eat("add") {
            let constraint = self.at("constraint")
                || ["primary", "unique", "check", "foreign", "exclude"]
                    .iter()
                    .any(|k| self.at(k))
                    && !self.peek_at(1).is_some_and(|t| {
                        t.is_ident() && !t.is("key") && !t.is("nulls") && !t.is("using")
                    });
            if constraint {
                if self.eat("constraint") {
                    self.ident()?;
                }
                if self.eat_all(&["primary", "key"]) {
                    if self.eat_all(&["using", "index"]) {
                        self.skip_to_comma();
                        return Ok(Action::AddPrimaryKeyUsingIndex);
                    }
                    let columns = self.ident_list()?;
                    self.skip_to_comma();
                    return Ok(Action::AddPrimaryKey(columns));
                }
                self.skip_to_comma();
                return Ok(Action::Harmless);
            }
            self.eat("column");
            let if_not_exists = self.if_not_exists();
            let line = self.line();
            let name = self.ident()?;
            let mut def = ColumnDef {
                name,
                line,
                ty: Some(self.type_name()?),
                ..ColumnDef::default()
            };
            self.column_constraints(&mut def)?;
            return Ok(Action::AddColumn { if_not_exists, def });
        }
        if self.eat("drop") {
            if self.eat("constraint") {
                self.skip_to_comma();
                return Ok(Action::Harmless);
            }
            self.eat("column");
            let if_exists = self.if_exists();
            let name = self.ident()?;
            self.eat("cascade");
            self.eat("restrict");
            return Ok(Action::DropColumn { name, if_exists });
        }
        if self.at("alter") {
            self.pos += 1;
            if self.eat("constraint") {
                self.skip_to_comma();
                return Ok(Action::Harmless);
            }
            self.eat("column");
            let column = self.ident()?;
            return self.alter_column(column);
        }
        if self.eat("inherit") {
            return Ok(Action::Inherit(self.name()?));
        }
        if self.eat_all(&["no", "inherit"]) {
            return Ok(Action::NoInherit(self.name()?));
        }
        if self.eat_all(&["attach", "partition"]) {
            let child = self.name()?;
            self.skip_to_comma();
            return Ok(Action::Attach(child));
        }
        if self.eat_all(&["detach", "partition"]) {
            let child = self.name()?;
            self.skip_to_comma();
            return Ok(Action::Detach(child));
        }
        if self.eat("of") {
            return Ok(Action::Of(self.name()?));
        }
        const HARMLESS: &[&[&str]] = &[
            &["validate", "constraint"],
            &["enable"],
            &["disable"],
            &["force"],
            &["no", "force"],
            &["cluster", "on"],
            &["set", "without"],
            &["set", "access"],
            &["set", "tablespace"],
            &["set", "logged"],
            &["set", "unlogged"],
            &["set"],
            &["reset"],
            &["replica", "identity"],
            &["owner", "to"],
            &["options"],
            &["not", "of"],
        ];
        for words in HARMLESS {
            if self.eat_all(words) {
                self.skip_to_comma();
                return Ok(Action::Harmless);
            }
        }
        self.error("expected an ALTER TABLE action")
    }

    pub(super) fn alter_column(&mut self, column: String) -> Result<Action> {
        if self.eat("type") || self.eat_all(&["set", "data", "type"]) {
            let ty = self.type_name()?;
            self.skip_to_comma();
            return Ok(Action::AlterType { column, ty });
        }
        if self.eat_all(&["set", "not", "null"]) {
            return Ok(Action::SetNotNull(column));
        }
        if self.eat_all(&["drop", "not", "null"]) {
            return Ok(Action::DropNotNull(column));
        }
        if self.eat_all(&["drop", "expression"]) {
            self.if_exists();
            return Ok(Action::DropExpression(column));
        }
        if self.eat("add") {
            self.expect("generated")?;
            self.skip_to_comma();
            return Ok(Action::AddIdentity(column));
        }
        // SET/DROP DEFAULT, DROP IDENTITY, SET GENERATED, SET/RESTART sequence options,
        // SET STATISTICS, SET (...), RESET (...), SET STORAGE, SET COMPRESSION, OPTIONS.
        const HARMLESS: &[&str] = &["set", "drop", "reset", "restart", "options"];
        if HARMLESS.iter().any(|k| self.at(k)) {
            self.skip_to_comma();
            return Ok(Action::Harmless);
        }
        self.error("expected an ALTER COLUMN action")
    }

    pub(super) fn alter_type(&mut self, object: Object) -> Result<Ast<'s>> {
        let name = self.name()?;
        if self.eat_all(&["rename", "to"]) {
            let to = self.ident()?;
            return Ok(Ast::RenameType { name, to });
        }
        if self.eat_all(&["set", "schema"]) {
            let schema = self.ident()?;
            return Ok(Ast::SetSchema {
                object,
                name,
                if_exists: false,
                schema,
            });
        }
        if object == Object::Type {
            if self.eat_all(&["rename", "value"]) {
                let from = self.string()?;
                self.expect("to")?;
                let to = self.string()?;
                return Ok(Ast::RenameValue { name, from, to });
            }
            if self.eat_all(&["add", "value"]) {
                let if_not_exists = self.if_not_exists();
                let value = self.string()?;
                let place = if self.eat("before") {
                    Some((true, self.string()?))
                } else if self.eat("after") {
                    Some((false, self.string()?))
                } else {
                    None
                };
                return Ok(Ast::AddValue {
                    name,
                    value,
                    if_not_exists,
                    place,
                });
            }
            if self.eat_all(&["rename", "attribute"])
                || ["add", "drop", "alter"]
                    .iter()
                    .any(|k| self.at(k) && self.peek_at(1).is_some_and(|t| t.is("attribute")))
            {
                self.pos = self.tokens.len();
                return Ok(Ast::AlterComposite { name });
            }
        }
        // OWNER TO, SET (...), RENAME CONSTRAINT, SET DEFAULT, ADD/DROP CONSTRAINT...
        Ok(self.rest_is_harmless())
    }

    pub(super) fn drop(&mut self) -> Result<Ast<'s>> {
        let object = if self.eat("table") || self.eat_all(&["foreign", "table"]) {
            Object::Table
        } else if self.eat("type") {
            Object::Type
        } else if self.eat("domain") {
            Object::Domain
        } else if self.eat("schema") {
            Object::Schema
        } else {
            return self.error("expected TABLE, TYPE, DOMAIN or SCHEMA");
        };
        let if_exists = self.if_exists();
        let mut names = Vec::new();
        loop {
            names.push(self.name()?);
            if !self.eat_op(",") {
                break;
            }
        }
        let cascade = self.eat("cascade");
        self.eat("restrict");
        Ok(Ast::Drop {
            object,
            names,
            if_exists,
            cascade,
        })
    }

    pub(super) fn set(&mut self) -> Result<Ast<'s>> {
        self.expect("set")?;
        let _ = self.eat("session") || self.eat("local");
        if !self.eat("search_path") {
            return Ok(self.rest_is_harmless());
        }
        if !(self.eat("to") || self.eat_op("=")) {
            return self.error("expected TO or =");
        }
        if self.eat("default") {
            return Ok(Ast::ResetSearchPath);
        }
        let mut path = Vec::new();
        loop {
            match self.peek() {
                Some(t) if t.kind == Kind::Str => {
                    let value = t.string().unwrap_or_default();
                    path.extend(search_path_entries(&value));
                    self.pos += 1;
                }
                Some(t) if t.is_ident() => {
                    path.push(t.ident());
                    self.pos += 1;
                }
                _ => return self.error("expected a schema name"),
            }
            if !self.eat_op(",") {
                break;
            }
        }
        Ok(Ast::SetSearchPath(path))
    }
}
