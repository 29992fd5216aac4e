//! `CREATE TABLE` and the column, constraint and type syntax it shares with `ALTER`.

use crate::catalog::lex::Kind;

use super::{
    Body, CONSTRAINT_WORDS, ColumnDef, CreateTable, Element, LikeOptions, Parser, Result, TypeName,
};

impl<'t, 's> Parser<'t, 's> {
    pub(super) fn create_table(&mut self, temporary: bool) -> Result<CreateTable<'s>> {
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
    pub(super) fn is_column_name_list(&self) -> bool {
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

    pub(super) fn create_table_as(&mut self, columns: Vec<String>) -> Result<Body<'s>> {
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

    pub(super) fn skip_with_data(&mut self) {
        if self.eat("with") {
            self.eat("no");
            self.eat("data");
        }
    }

    /// `( element, ... )`; `options_only` for `OF` / `PARTITION OF`, whose columns carry
    /// options but no type.
    pub(super) fn elements(&mut self, options_only: bool) -> Result<Vec<Element>> {
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

    pub(super) fn element(&mut self, options_only: bool) -> Result<Element> {
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

    pub(super) fn table_constraint(&mut self) -> Result<Element> {
        if self.eat_all(&["primary", "key"]) {
            let columns = self.ident_list()?;
            self.skip_to_comma();
            return Ok(Element::PrimaryKey(columns));
        }
        self.skip_to_comma();
        Ok(Element::Constraint)
    }

    pub(super) fn column_constraints(&mut self, def: &mut ColumnDef) -> Result<()> {
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

    pub(super) fn index_parameters(&mut self) -> Result<()> {
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

    pub(super) fn referential_actions(&mut self) -> Result<()> {
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

    pub(super) fn modifiers(&mut self) -> Result<Vec<String>> {
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
    pub(super) fn interval_fields(
        &mut self,
        modifiers: &mut Vec<String>,
    ) -> Result<Option<String>> {
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
}
