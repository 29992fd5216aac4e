//! A parser for the statements that can change the catalog (PostgreSQL's grammar for
//! `CREATE`/`ALTER`/`DROP` of tables, types, domains and schemas, and `SET search_path`),
//! into a small syntax tree. Parts of a statement the catalog does not need (defaults,
//! checks, index parameters, storage options) are skipped by balanced tokens.

use super::lex::{Kind, Token};

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

    fn create_table(&mut self, temporary: bool) -> Result<CreateTable<'s>> {
        let if_not_exists = self.if_not_exists();
        let name = self.name()?;
        let mut table = CreateTable {
            name,
            temporary,
            if_not_exists,
            body: Body::Elements(Vec::new()),
            inherits: Vec::new(),
            partitioned: false,
        };
        if self.eat("of") {
            let ty = self.name()?;
            let elements = if self.at_op("(") {
                self.elements(true)?
            } else {
                Vec::new()
            };
            table.body = Body::Of(ty, elements);
        } else if self.eat_all(&["partition", "of"]) {
            let parent = self.name()?;
            let elements = if self.at_op("(") {
                self.elements(true)?
            } else {
                Vec::new()
            };
            table.body = Body::PartitionOf(parent, elements);
            if self.eat("default") {
            } else {
                self.expect("for")?;
                self.expect("values")?;
                // FROM (..) TO (..) | IN (..) | WITH (MODULUS .., REMAINDER ..)
                while !self.at_end()
                    && !self.at("partition")
                    && !self.at("using")
                    && !self.at("with")
                    && !self.at("tablespace")
                {
                    if self.at_op("(") {
                        self.skip_parens()?;
                    } else {
                        self.pos += 1;
                    }
                }
                if self.at("with") && self.peek_at(1).is_some_and(|t| t.is_op("(")) {
                    // FOR VALUES WITH (MODULUS 4, REMAINDER 0)
                    self.pos += 1;
                    self.skip_parens()?;
                }
            }
        } else if self.at_op("(") && self.is_column_name_list() {
            let columns = self.ident_list()?;
            table.body = self.create_table_as(columns)?;
            return Ok(table);
        } else if self.at_op("(") {
            table.body = Body::Elements(self.elements(false)?);
        } else {
            table.body = self.create_table_as(Vec::new())?;
            return Ok(table);
        }
        // INHERITS, PARTITION BY, USING, WITH, ON COMMIT, TABLESPACE, SERVER, OPTIONS.
        while !self.at_end() {
            if self.eat("inherits") {
                self.expect_op("(")?;
                loop {
                    table.inherits.push(self.name()?);
                    if !self.eat_op(",") {
                        break;
                    }
                }
                self.expect_op(")")?;
            } else if self.eat_all(&["partition", "by"]) {
                table.partitioned = true;
                self.pos += 1; // RANGE | LIST | HASH
                self.skip_parens()?;
            } else if self.at("as") {
                return self.error("expected no AS after a column list");
            } else if self.at_op("(") {
                self.skip_parens()?;
            } else {
                self.pos += 1;
            }
        }
        Ok(table)
    }

    /// `(a, b) AS ...`: a parenthesised list of bare names, followed by what can only come
    /// before the `AS` of `CREATE TABLE ... AS`.
    fn is_column_name_list(&self) -> bool {
        let mut i = self.pos + 1;
        loop {
            match self.tokens.get(i) {
                Some(t) if t.is_ident() => i += 1,
                _ => return false,
            }
            match self.tokens.get(i) {
                Some(t) if t.is_op(",") => i += 1,
                Some(t) if t.is_op(")") => break,
                _ => return false,
            }
        }
        self.tokens.get(i + 1).is_some_and(|t| {
            ["as", "with", "using", "tablespace", "on", "without"]
                .iter()
                .any(|k| t.is(k))
        })
    }

    fn create_table_as(&mut self, columns: Vec<String>) -> Result<Body<'s>> {
        // [USING m] [WITH (..) | WITHOUT OIDS] [ON COMMIT ..] [TABLESPACE t] AS query
        while !self.at_end() && !self.at("as") {
            if self.at_op("(") {
                self.skip_parens()?;
            } else {
                self.pos += 1;
            }
        }
        self.expect("as")?;
        if self.eat("table") {
            let source = self.name()?;
            self.skip_with_data();
            return Ok(Body::AsTable(columns, source));
        }
        if self.at("values") || self.at("execute") {
            self.pos = self.tokens.len();
            return Ok(Body::AsOther);
        }
        let start = self.pos;
        let mut end = self.tokens.len();
        // A trailing `WITH [NO] DATA` belongs to CREATE TABLE, not to the query.
        if end >= 2 && self.tokens[end - 1].is("data") {
            let with = if self.tokens[end - 2].is("no") { 3 } else { 2 };
            if end >= start + with && self.tokens[end - with].is("with") {
                end -= with;
            }
        }
        let query = self.tokens[start..end].to_vec();
        self.pos = self.tokens.len();
        Ok(Body::As(columns, query))
    }

    fn skip_with_data(&mut self) {
        if self.eat("with") {
            self.eat("no");
            self.eat("data");
        }
    }

    /// `( element, ... )`; `options_only` for `OF` / `PARTITION OF`, whose columns carry
    /// options but no type.
    fn elements(&mut self, options_only: bool) -> Result<Vec<Element>> {
        self.expect_op("(")?;
        let mut out = Vec::new();
        if self.eat_op(")") {
            return Ok(out);
        }
        loop {
            out.push(self.element(options_only)?);
            if self.eat_op(",") {
                continue;
            }
            self.expect_op(")")?;
            return Ok(out);
        }
    }

    fn element(&mut self, options_only: bool) -> Result<Element> {
        if self.eat("like") {
            let source = self.name()?;
            let mut options = LikeOptions::default();
            while self.at("including") || self.at("excluding") {
                let including = self.eat("including");
                if !including {
                    self.pos += 1;
                }
                let what = self.ident()?;
                match what.as_str() {
                    "all" => {
                        options.identity = including;
                        options.generated = including;
                    }
                    "identity" => options.identity = including,
                    "generated" => options.generated = including,
                    _ => {}
                }
            }
            return Ok(Element::Like(source, options));
        }
        if self.at("constraint") {
            self.pos += 1;
            self.ident()?;
            return self.table_constraint();
        }
        if ["primary", "unique", "check", "foreign", "exclude"]
            .iter()
            .any(|k| self.at(k))
            && !self
                .peek_at(1)
                .is_some_and(|t| t.is_ident() && !t.is("key") && !t.is("nulls") && !t.is("using"))
        {
            return self.table_constraint();
        }
        let line = self.line();
        let name = self.ident()?;
        let mut def = ColumnDef {
            name,
            line,
            ..ColumnDef::default()
        };
        if options_only {
            self.eat_all(&["with", "options"]);
        } else {
            def.ty = Some(self.type_name()?);
        }
        self.column_constraints(&mut def)?;
        Ok(Element::Column(def))
    }

    fn table_constraint(&mut self) -> Result<Element> {
        if self.eat_all(&["primary", "key"]) {
            let columns = self.ident_list()?;
            self.skip_to_comma();
            return Ok(Element::PrimaryKey(columns));
        }
        self.skip_to_comma();
        Ok(Element::Constraint)
    }

    fn column_constraints(&mut self, def: &mut ColumnDef) -> Result<()> {
        loop {
            if self.at_op(",") || self.at_op(")") || self.at_end() {
                return Ok(());
            }
            if self.eat("constraint") {
                self.ident()?;
            } else if self.eat_all(&["not", "null"]) {
                def.not_null = Some(true);
            } else if self.eat("null") {
                def.not_null = Some(false);
            } else if self.eat_all(&["primary", "key"]) {
                def.primary_key = true;
                self.index_parameters()?;
            } else if self.eat("unique") {
                if self.eat("nulls") {
                    self.eat("not");
                    self.expect("distinct")?;
                }
                self.index_parameters()?;
            } else if self.eat("check") {
                self.skip_parens()?;
                self.eat_all(&["no", "inherit"]);
            } else if self.eat("default") {
                self.skip_expression(CONSTRAINT_WORDS);
            } else if self.eat("generated") {
                if self.eat("always") {
                } else {
                    self.expect("by")?;
                    self.expect("default")?;
                }
                self.expect("as")?;
                if self.eat("identity") {
                    def.identity = true;
                    if self.at_op("(") {
                        self.skip_parens()?;
                    }
                } else {
                    self.skip_parens()?;
                    self.expect("stored")?;
                    def.stored = true;
                }
            } else if self.eat("references") {
                self.name()?;
                if self.at_op("(") {
                    self.skip_parens()?;
                }
                self.referential_actions()?;
            } else if self.eat("deferrable") || self.eat_all(&["not", "deferrable"]) {
            } else if self.eat("initially") {
                self.pos += 1;
            } else if self.eat("collate") {
                self.name()?;
            } else if self.eat("compression") || self.eat("storage") {
                self.pos += 1;
            } else {
                return self.error("expected a column constraint");
            }
        }
    }

    fn index_parameters(&mut self) -> Result<()> {
        loop {
            if self.eat("include") || self.eat("with") {
                self.skip_parens()?;
            } else if self.eat_all(&["using", "index", "tablespace"]) {
                self.ident()?;
            } else {
                return Ok(());
            }
        }
    }

    fn referential_actions(&mut self) -> Result<()> {
        loop {
            if self.eat("match") {
                self.pos += 1;
            } else if self.eat("on") {
                self.pos += 1; // DELETE | UPDATE
                if self.eat_all(&["no", "action"]) || self.eat("restrict") || self.eat("cascade") {
                } else if self.eat("set") {
                    self.pos += 1; // NULL | DEFAULT
                    if self.at_op("(") {
                        self.skip_parens()?;
                    }
                } else {
                    return self.error("expected a referential action");
                }
            } else {
                return Ok(());
            }
        }
    }

    /// A type: names (qualified, multi-word built-ins), modifiers, array bounds.
    pub fn type_name(&mut self) -> Result<TypeName> {
        let mut ty = TypeName {
            name: Vec::new(),
            modifiers: Vec::new(),
            zone: None,
            fields: None,
            array: false,
        };
        let first = match self.peek() {
            Some(t) if t.is_ident() => *t,
            _ => return self.error("expected a type"),
        };
        let word = if first.kind == Kind::Word {
            first.text.to_ascii_lowercase()
        } else {
            String::new()
        };
        match word.as_str() {
            "double" if self.peek_at(1).is_some_and(|t| t.is("precision")) => {
                self.pos += 2;
                ty.name.push("double precision".to_owned());
            }
            "character" | "char" | "national" | "nchar" => {
                self.pos += 1;
                if word == "national" {
                    self.eat("character");
                    self.eat("char");
                }
                if self.eat("varying") {
                    ty.name.push("character varying".to_owned());
                } else {
                    ty.name.push("character".to_owned());
                }
            }
            "bit" => {
                self.pos += 1;
                ty.name.push(if self.eat("varying") {
                    "bit varying".to_owned()
                } else {
                    "bit".to_owned()
                });
            }
            "time" | "timestamp" => {
                self.pos += 1;
                ty.name.push(word.clone());
                if self.at_op("(") {
                    ty.modifiers = self.modifiers()?;
                }
                if self.eat_all(&["with", "time", "zone"]) {
                    ty.zone = Some(true);
                } else if self.eat_all(&["without", "time", "zone"]) {
                    ty.zone = Some(false);
                }
            }
            "interval" => {
                self.pos += 1;
                ty.name.push(word.clone());
                ty.fields = self.interval_fields(&mut ty.modifiers)?;
            }
            _ => {
                let name = self.name()?;
                ty.name = name.parts;
            }
        }
        if ty.modifiers.is_empty() && self.at_op("(") {
            ty.modifiers = self.modifiers()?;
        }
        loop {
            if self.eat_op("[") {
                while !self.eat_op("]") {
                    if self.at_end() {
                        return self.error("expected `]`");
                    }
                    self.pos += 1;
                }
                ty.array = true;
            } else if self.eat("array") {
                ty.array = true;
                if self.eat_op("[") {
                    while !self.eat_op("]") {
                        if self.at_end() {
                            return self.error("expected `]`");
                        }
                        self.pos += 1;
                    }
                }
            } else {
                return Ok(ty);
            }
        }
    }

    fn modifiers(&mut self) -> Result<Vec<String>> {
        self.expect_op("(")?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                Some(t) if matches!(t.kind, Kind::Number | Kind::Word | Kind::Str) => {
                    out.push(t.text.to_owned());
                    self.pos += 1;
                }
                Some(t) if t.is_op("-") => {
                    self.pos += 1;
                    let n = self.peek().map(|t| t.text.to_owned()).unwrap_or_default();
                    self.pos += 1;
                    out.push(format!("-{n}"));
                }
                _ => return self.error("expected a type modifier"),
            }
            if !self.eat_op(",") {
                break;
            }
        }
        self.expect_op(")")?;
        Ok(out)
    }

    /// `YEAR`, `DAY TO SECOND(3)`...: returns the fields as `format_type` prints them.
    fn interval_fields(&mut self, modifiers: &mut Vec<String>) -> Result<Option<String>> {
        const FIELDS: [&str; 6] = ["year", "month", "day", "hour", "minute", "second"];
        let Some(first) = FIELDS.iter().find(|f| self.at(f)) else {
            return Ok(None);
        };
        self.pos += 1;
        let mut text = (*first).to_owned();
        if self.eat("to") {
            let Some(last) = FIELDS.iter().find(|f| self.at(f)) else {
                return self.error("expected an interval field");
            };
            self.pos += 1;
            text = format!("{first} to {last}");
        }
        if text.ends_with("second") && self.at_op("(") {
            *modifiers = self.modifiers()?;
        }
        Ok(Some(text))
    }

    fn create_schema(&mut self) -> Result<Ast<'s>> {
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

    fn create_type(&mut self) -> Result<Ast<'s>> {
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

    fn alter(&mut self) -> Result<Ast<'s>> {
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

    fn alter_table(&mut self) -> Result<Ast<'s>> {
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

    fn action(&mut self) -> Result<Action> {
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

    fn alter_column(&mut self, column: String) -> Result<Action> {
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

    fn alter_type(&mut self, object: Object) -> Result<Ast<'s>> {
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

    fn drop(&mut self) -> Result<Ast<'s>> {
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

    fn set(&mut self) -> Result<Ast<'s>> {
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
