//! A parser for the statements that can change the catalog (PostgreSQL's grammar for
//! `CREATE`/`ALTER`/`DROP` of tables, types, domains and schemas, and `SET search_path`),
//! into a small syntax tree. Parts of a statement the catalog does not need (defaults,
//! checks, index parameters, storage options) are skipped by balanced tokens.

use super::lex::{Kind, Token};

mod alter;
mod table;

/// A possibly qualified object name, folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name {
    pub parts: Vec<String>,
    pub line: u32,
}

impl Name {
    pub fn object(&self) -> &str {
        self.parts.last().map_or("", String::as_str)
    }

    pub fn schema(&self) -> Option<&str> {
        (self.parts.len() >= 2).then(|| self.parts[self.parts.len() - 2].as_str())
    }
}

/// A type as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeName {
    /// Folded parts; multi-word built-ins joined (`double precision`, `character varying`).
    pub name: Vec<String>,
    pub modifiers: Vec<String>,
    /// `WITH TIME ZONE` (`Some(true)`), `WITHOUT TIME ZONE` (`Some(false)`).
    pub zone: Option<bool>,
    /// An interval's fields (`day to second`).
    pub fields: Option<String>,
    pub array: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ColumnDef {
    pub name: String,
    pub line: u32,
    /// `None` in `CREATE TABLE ... OF` / `PARTITION OF` option lists.
    pub ty: Option<TypeName>,
    /// `NOT NULL` (`Some(true)`) or `NULL` (`Some(false)`).
    pub not_null: Option<bool>,
    pub primary_key: bool,
    pub identity: bool,
    pub stored: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LikeOptions {
    pub identity: bool,
    pub generated: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum Element {
    Column(ColumnDef),
    PrimaryKey(Vec<String>),
    Like(Name, LikeOptions),
    Constraint,
}

#[derive(Debug, Clone)]
pub(crate) enum Body<'s> {
    Elements(Vec<Element>),
    PartitionOf(Name, Vec<Element>),
    Of(Name, Vec<Element>),
    /// `AS query` (the query's tokens), with an optional column name list.
    As(Vec<String>, Vec<Token<'s>>),
    AsTable(Vec<String>, Name),
    /// `AS VALUES`, `AS EXECUTE`: columns not modelled.
    AsOther,
}

#[derive(Debug, Clone)]
pub(crate) struct CreateTable<'s> {
    pub name: Name,
    pub temporary: bool,
    pub if_not_exists: bool,
    pub body: Body<'s>,
    pub inherits: Vec<Name>,
    pub partitioned: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum Action {
    AddColumn {
        if_not_exists: bool,
        def: ColumnDef,
    },
    DropColumn {
        name: String,
        if_exists: bool,
    },
    AlterType {
        column: String,
        ty: TypeName,
    },
    SetNotNull(String),
    DropNotNull(String),
    AddIdentity(String),
    DropExpression(String),
    AddPrimaryKey(Vec<String>),
    /// `ADD PRIMARY KEY USING INDEX`: columns not known.
    AddPrimaryKeyUsingIndex,
    Attach(Name),
    Detach(Name),
    Inherit(Name),
    NoInherit(Name),
    Of(Name),
    /// Changes nothing the catalog models (defaults, constraints, storage, triggers...).
    Harmless,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Object {
    Table,
    Type,
    Domain,
    Schema,
}

#[derive(Debug, Clone)]
pub(crate) enum Ast<'s> {
    CreateTable(CreateTable<'s>),
    AlterTable {
        name: Name,
        if_exists: bool,
        only: bool,
        actions: Vec<Action>,
    },
    RenameTable {
        name: Name,
        if_exists: bool,
        to: String,
    },
    RenameColumn {
        table: Name,
        if_exists: bool,
        from: String,
        to: String,
    },
    SetSchema {
        object: Object,
        name: Name,
        if_exists: bool,
        schema: String,
    },
    Drop {
        object: Object,
        names: Vec<Name>,
        if_exists: bool,
        cascade: bool,
    },
    CreateSchema {
        name: String,
        elements: bool,
    },
    RenameSchema {
        from: String,
        to: String,
    },
    CreateEnum {
        name: Name,
        labels: Vec<String>,
    },
    CreateComposite {
        name: Name,
        attributes: Vec<(String, TypeName)>,
    },
    /// A base, range or shell type: a name the catalog knows, nothing more.
    CreateOtherType {
        name: Name,
    },
    CreateDomain {
        name: Name,
        base: TypeName,
    },
    RenameType {
        name: Name,
        to: String,
    },
    RenameValue {
        name: Name,
        from: String,
        to: String,
    },
    AddValue {
        name: Name,
        value: String,
        if_not_exists: bool,
        /// `(before, neighbour)`.
        place: Option<(bool, String)>,
    },
    /// `ALTER TYPE ... ADD/DROP/ALTER/RENAME ATTRIBUTE`: tables of the type change.
    AlterComposite {
        name: Name,
    },
    SetSearchPath(Vec<String>),
    ResetSearchPath,
    /// A statement of a recognised kind that changes nothing the catalog models.
    Harmless,
}

#[derive(Debug, Clone)]
pub(crate) struct ParseError {
    pub line: u32,
    pub message: String,
}

pub(crate) type Result<T> = std::result::Result<T, ParseError>;

pub(crate) struct Parser<'t, 's> {
    tokens: &'t [Token<'s>],
    pos: usize,
    end_line: u32,
}

/// Words that start a column constraint: where a `DEFAULT` expression ends.
const CONSTRAINT_WORDS: &[&str] = &[
    "constraint",
    "not",
    "null",
    "check",
    "default",
    "generated",
    "unique",
    "primary",
    "references",
    "collate",
    "deferrable",
    "initially",
    "compression",
    "storage",
];

impl<'t, 's> Parser<'t, 's> {
    pub fn new(tokens: &'t [Token<'s>], end_line: u32) -> Self {
        Parser {
            tokens,
            pos: 0,
            end_line,
        }
    }

    /// How many tokens have been read.
    pub fn position(&self) -> usize {
        self.pos
    }

    // --- token helpers --------------------------------------------------------------

    fn peek(&self) -> Option<&Token<'s>> {
        self.tokens.get(self.pos)
    }

    fn peek_at(&self, ahead: usize) -> Option<&Token<'s>> {
        self.tokens.get(self.pos + ahead)
    }

    fn at(&self, keyword: &str) -> bool {
        self.peek().is_some_and(|t| t.is(keyword))
    }

    fn at_op(&self, op: &str) -> bool {
        self.peek().is_some_and(|t| t.is_op(op))
    }

    fn at_end(&self) -> bool {
        self.pos >= self.tokens.len() || self.at_op(";")
    }

    fn eat(&mut self, keyword: &str) -> bool {
        let hit = self.at(keyword);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn eat_all(&mut self, keywords: &[&str]) -> bool {
        let hit = keywords
            .iter()
            .enumerate()
            .all(|(i, k)| self.peek_at(i).is_some_and(|t| t.is(k)));
        if hit {
            self.pos += keywords.len();
        }
        hit
    }

    fn eat_op(&mut self, op: &str) -> bool {
        let hit = self.at_op(op);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn line(&self) -> u32 {
        self.peek().map_or(self.end_line, |t| t.line)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T> {
        let found = self.peek().map_or_else(
            || "the end of the statement".to_owned(),
            |t| format!("`{}`", t.text),
        );
        Err(ParseError {
            line: self.line(),
            message: format!("{}, found {found}", message.into()),
        })
    }

    fn expect(&mut self, keyword: &str) -> Result<()> {
        if self.eat(keyword) {
            Ok(())
        } else {
            self.error(format!("expected `{}`", keyword.to_ascii_uppercase()))
        }
    }

    fn expect_op(&mut self, op: &str) -> Result<()> {
        if self.eat_op(op) {
            Ok(())
        } else {
            self.error(format!("expected `{op}`"))
        }
    }

    fn ident(&mut self) -> Result<String> {
        match self.peek() {
            Some(t) if t.is_ident() => {
                let name = t.ident();
                self.pos += 1;
                Ok(name)
            }
            _ => self.error("expected a name"),
        }
    }

    fn string(&mut self) -> Result<String> {
        match self.peek().and_then(Token::string) {
            Some(value) => {
                let value = value.into_owned();
                self.pos += 1;
                Ok(value)
            }
            None => self.error("expected a quoted string"),
        }
    }

    pub fn name(&mut self) -> Result<Name> {
        let line = self.line();
        let mut parts = vec![self.ident()?];
        while self.at_op(".") && self.peek_at(1).is_some_and(Token::is_ident) {
            self.pos += 1;
            parts.push(self.ident()?);
        }
        Ok(Name { parts, line })
    }

    fn if_exists(&mut self) -> bool {
        self.eat_all(&["if", "exists"])
    }

    fn if_not_exists(&mut self) -> bool {
        self.eat_all(&["if", "not", "exists"])
    }

    /// Skips a balanced `( ... )` starting here.
    fn skip_parens(&mut self) -> Result<()> {
        self.expect_op("(")?;
        let mut depth = 1u32;
        while depth > 0 {
            let Some(t) = self.peek() else {
                return self.error("expected `)`");
            };
            if t.is_op("(") || t.is_op("[") {
                depth += 1;
            } else if t.is_op(")") || t.is_op("]") {
                depth -= 1;
            }
            self.pos += 1;
        }
        Ok(())
    }

    /// Skips to the next `,` or `)` at this depth (not consuming it), or the end.
    fn skip_to_comma(&mut self) {
        let mut depth = 0u32;
        while let Some(t) = self.peek() {
            if depth == 0 && (t.is_op(",") || t.is_op(")") || t.is_op(";")) {
                return;
            }
            if t.is_op("(") || t.is_op("[") {
                depth += 1;
            } else if t.is_op(")") || t.is_op("]") {
                depth = depth.saturating_sub(1);
            }
            self.pos += 1;
        }
    }

    /// Skips an expression: at least one token, then up to a `,`/`)` at this depth or a
    /// word in `stop`.
    fn skip_expression(&mut self, stop: &[&str]) {
        let mut depth = 0u32;
        let mut first = true;
        while let Some(t) = self.peek() {
            if depth == 0 && !first {
                if t.is_op(",") || t.is_op(")") || t.is_op(";") {
                    return;
                }
                if t.kind == Kind::Word && stop.iter().any(|s| t.text.eq_ignore_ascii_case(s)) {
                    // `NOT` ends the expression only as `NOT NULL` / `NOT DEFERRABLE`.
                    let not_alone = t.is("not")
                        && !self
                            .peek_at(1)
                            .is_some_and(|n| n.is("null") || n.is("deferrable"));
                    if !not_alone {
                        return;
                    }
                }
            } else if depth == 0 && first && (t.is_op(",") || t.is_op(")")) {
                return;
            }
            if t.is_op("(") || t.is_op("[") {
                depth += 1;
            } else if t.is_op(")") || t.is_op("]") {
                depth = depth.saturating_sub(1);
            }
            first = false;
            self.pos += 1;
        }
    }

    fn ident_list(&mut self) -> Result<Vec<String>> {
        self.expect_op("(")?;
        let mut out = Vec::new();
        loop {
            out.push(self.ident()?);
            // Index elements may carry opclasses, ordering: `(a text_pattern_ops DESC)`.
            self.skip_to_comma();
            if !self.eat_op(",") {
                break;
            }
        }
        self.expect_op(")")?;
        Ok(out)
    }

    fn rest_is_harmless(&mut self) -> Ast<'s> {
        self.pos = self.tokens.len();
        Ast::Harmless
    }

    // --- statements ------------------------------------------------------------------

    pub fn statement(&mut self) -> Result<Ast<'s>> {
        let ast = if self.eat("create") {
            self.create()?
        } else if self.eat("alter") {
            self.alter()?
        } else if self.eat("drop") {
            self.drop()?
        } else if self.at("set") {
            self.set()?
        } else if self.eat("reset") {
            if self.eat("search_path") || self.eat("all") {
                Ast::ResetSearchPath
            } else {
                self.rest_is_harmless()
            }
        } else {
            return self.error("expected a statement the catalog models");
        };
        if !self.at_end() {
            return self.error("expected the end of the statement");
        }
        Ok(ast)
    }

    fn create(&mut self) -> Result<Ast<'s>> {
        self.eat_all(&["or", "replace"]);
        let mut temporary = false;
        if self.eat("global") || self.eat("local") {
            temporary = true;
        }
        if self.eat("temp") || self.eat("temporary") {
            temporary = true;
        }
        self.eat("unlogged");
        if self.eat("table") || self.eat_all(&["foreign", "table"]) {
            return Ok(Ast::CreateTable(self.create_table(temporary)?));
        }
        if self.eat("schema") {
            return self.create_schema();
        }
        if self.eat("type") {
            return self.create_type();
        }
        if self.eat("domain") {
            let name = self.name()?;
            self.eat("as");
            let base = self.type_name()?;
            return Ok(self.finish_harmless_tail(Ast::CreateDomain { name, base }));
        }
        self.error("expected TABLE, SCHEMA, TYPE or DOMAIN")
    }

    /// The rest of the statement does not matter (a domain's constraints, say).
    fn finish_harmless_tail(&mut self, ast: Ast<'s>) -> Ast<'s> {
        self.pos = self.tokens.len();
        ast
    }
}

/// The schemas of a `search_path` value written as one string (`'a, "B", public'`).
pub(crate) fn search_path_entries(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(
            |s| match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                Some(quoted) => quoted.replace("\"\"", "\""),
                None => s.to_ascii_lowercase(),
            },
        )
        .collect()
}
