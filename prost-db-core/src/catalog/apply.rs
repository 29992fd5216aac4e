//! PostgreSQL's rules, statement by statement.

use sqlparser::ast::{
    AlterColumnOperation, AlterSchemaOperation, AlterTableOperation, ColumnDef, ColumnOption,
    CreateTable, CreateTableLikeKind, Expr, Ident, ObjectName, ObjectNamePart, ObjectType,
    RenameTableNameKind, SchemaName, Set, Statement as Ast, TableConstraint,
    UserDefinedTypeRepresentation,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use super::split::{Statement, split_statements};
use super::types::{self, Resolved};
use super::{
    Catalog, Column, Generated, Location, RemovedColumn, RemovedTable, SqlType, Table, TypeKind,
    Uncertainty, Warning,
};

/// Identifier folding: unquoted names are stored in lower case.
pub(crate) fn fold(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

fn fold_name(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => fold(ident),
            other => other.to_string(),
        })
        .collect()
}

type Key = (String, String);

pub(crate) struct Script<'c> {
    catalog: &'c mut Catalog,
    file: String,
    search_path: Vec<String>,
    line: u64,
}

impl<'c> Script<'c> {
    pub(crate) fn new(catalog: &'c mut Catalog, schema: &str, file: &str) -> Self {
        Script {
            catalog,
            file: file.to_owned(),
            search_path: vec![schema.to_owned()],
            line: 1,
        }
    }

    pub(crate) fn run(mut self, sql: &str) {
        let statements = match split_statements(sql) {
            Ok(statements) => statements,
            Err(message) => {
                self.warn(
                    format!("cannot split the file into statements: {message}"),
                    Vec::new(),
                );
                return;
            }
        };
        for statement in statements {
            self.line = statement.line;
            let mut parser = Parser::new(&PostgreSqlDialect {})
                .with_tokens_with_locations(statement.tokens.clone());
            let parsed = parser.parse_statement().and_then(|ast| {
                if parser.peek_token().token == Token::EOF {
                    Ok(ast)
                } else {
                    parser.expected("end of statement", parser.peek_token())
                }
            });
            match parsed {
                Ok(ast) => self.apply(&ast, &statement),
                Err(error) => self.unparsed(&statement, &error.to_string()),
            }
        }
    }

    fn here(&self) -> Location {
        Location::new(self.file.clone(), self.line)
    }

    fn at(&self, ident: &Ident) -> Location {
        let line = ident.span.start.line;
        Location::new(self.file.clone(), if line == 0 { self.line } else { line })
    }

    fn warn(&mut self, message: String, tables: Vec<Key>) {
        let at = self.here();
        for key in &tables {
            if let Some(table) = self.catalog.tables.get_mut(key) {
                table.uncertain.push(Uncertainty {
                    at: at.clone(),
                    reason: message.clone(),
                });
            }
        }
        let tables = tables.iter().map(|(s, t)| format!("{s}.{t}")).collect();
        self.catalog.warnings.push(Warning {
            at,
            message,
            tables,
        });
    }

    /// Where `CREATE` puts an unqualified name: the first schema of the search path.
    fn create_key(&self, name: &ObjectName) -> Key {
        let mut parts = fold_name(name);
        let object = parts.pop().unwrap_or_default();
        let schema = parts.pop().unwrap_or_else(|| {
            self.search_path
                .iter()
                .find(|s| s.as_str() != "$user" && self.catalog.schemas.contains(*s))
                .cloned()
                .unwrap_or_else(|| "public".to_owned())
        });
        (schema, object)
    }

    /// Where an unqualified table name resolves: the first schema of the search path that
    /// has it.
    fn table_key(&self, name: &ObjectName) -> Key {
        let mut parts = fold_name(name);
        let object = parts.pop().unwrap_or_default();
        if let Some(schema) = parts.pop() {
            return (schema, object);
        }
        self.search_path
            .iter()
            .map(|s| (s.clone(), object.clone()))
            .find(|key| self.catalog.tables.contains_key(key))
            .unwrap_or_else(|| self.create_key(name))
    }

    fn type_key(&self, schema: Option<String>, name: &str) -> Option<Key> {
        match schema {
            Some(schema) => Some((schema, name.to_owned())),
            None => self
                .search_path
                .iter()
                .chain(std::iter::once(&"public".to_owned()))
                .map(|s| (s.clone(), name.to_owned()))
                .find(|key| self.catalog.types.contains_key(key)),
        }
    }

    fn sql_type(&self, data_type: &sqlparser::ast::DataType) -> (SqlType, bool) {
        match types::resolve(data_type, &fold_name) {
            Resolved::Type(ty) => (ty, false),
            Resolved::Custom(schema, name) => {
                if let (None, Some(ty)) = (&schema, types::serial(&name)) {
                    return (ty, true);
                }
                let (element, array) = match name.strip_suffix("[]") {
                    Some(element) => (element.to_owned(), true),
                    None => (name.clone(), false),
                };
                let ty = self
                    .type_key(schema, &element)
                    .and_then(|key| self.catalog.types.get(&key).cloned())
                    .unwrap_or_else(|| SqlType::builtin(&element, &element));
                if array {
                    (
                        SqlType {
                            name: format!("_{}", ty.name),
                            display: format!("{}[]", ty.display),
                            kind: TypeKind::Array {
                                element: Box::new(ty),
                            },
                        },
                        false,
                    )
                } else {
                    (ty, false)
                }
            }
        }
    }

    fn column(&self, def: &ColumnDef) -> Column {
        let (ty, serial) = self.sql_type(&def.data_type);
        let mut column = Column {
            name: fold(&def.name),
            ty,
            nullable: !serial,
            generated: if serial {
                Generated::Identity
            } else {
                Generated::No
            },
            defined_at: self.at(&def.name),
            changed_at: None,
        };
        for option in &def.options {
            match &option.option {
                ColumnOption::NotNull | ColumnOption::PrimaryKey(_) => column.nullable = false,
                ColumnOption::Generated {
                    generation_expr: None,
                    ..
                } => {
                    column.nullable = false;
                    column.generated = Generated::Identity;
                }
                ColumnOption::Generated {
                    generation_expr: Some(_),
                    ..
                } => column.generated = Generated::Stored,
                _ => {}
            }
        }
        column
    }

    fn apply(&mut self, ast: &Ast, statement: &Statement) {
        match ast {
            Ast::CreateSchema {
                schema_name: SchemaName::Simple(name) | SchemaName::NamedAuthorization(name, _),
                ..
            } => {
                let name = fold_name(name).pop().unwrap_or_default();
                self.catalog.schemas.insert(name);
            }
            Ast::CreateTable(create) => self.create_table(create),
            Ast::AlterTable(alter) => {
                let key = self.table_key(&alter.name);
                if !self.catalog.tables.contains_key(&key) {
                    if !alter.if_exists {
                        self.warn(
                            format!("ALTER TABLE on `{}.{}`, which does not exist at this point; the migration would fail", key.0, key.1),
                            Vec::new(),
                        );
                    }
                    return;
                }
                for operation in &alter.operations {
                    self.alter_table(&key, operation);
                }
            }
            Ast::Drop {
                object_type,
                names,
                if_exists,
                ..
            } => {
                for name in names {
                    self.drop(*object_type, name, *if_exists);
                }
            }
            Ast::DropDomain(drop) => self.drop(ObjectType::Type, &drop.name, drop.if_exists),
            Ast::CreateType {
                name,
                representation,
            } => {
                let key = self.create_key(name);
                let kind = match representation {
                    Some(UserDefinedTypeRepresentation::Enum { .. }) => TypeKind::Enum {
                        schema: key.0.clone(),
                    },
                    _ => TypeKind::Base,
                };
                let ty = SqlType {
                    name: key.1.clone(),
                    display: key.1.clone(),
                    kind,
                };
                self.catalog.types.insert(key, ty);
            }
            Ast::CreateDomain(domain) => {
                let key = self.create_key(&domain.name);
                let (base, _) = self.sql_type(&domain.data_type);
                let ty = SqlType {
                    name: key.1.clone(),
                    display: key.1.clone(),
                    kind: TypeKind::Domain {
                        schema: key.0.clone(),
                        base: Box::new(base),
                    },
                };
                self.catalog.types.insert(key, ty);
            }
            Ast::Set(Set::SingleAssignment {
                variable, values, ..
            }) if fold_name(variable) == ["search_path"] => {
                self.search_path = values.iter().map(search_path_entry).collect();
            }
            Ast::AlterSchema(alter) => {
                for operation in &alter.operations {
                    if let AlterSchemaOperation::Rename { name } = operation {
                        let from = fold_name(&alter.name).pop().unwrap_or_default();
                        let to = fold_name(name).pop().unwrap_or_default();
                        self.rename_schema(&from, &to);
                    }
                }
            }
            Ast::AlterType(alter) => {
                if let sqlparser::ast::AlterTypeOperation::Rename(_) = &alter.operation {
                    let key = self.create_key(&alter.name);
                    let tables = self.tables_using_type(&key.1);
                    self.warn(
                        format!("ALTER TYPE ... RENAME TO is not modelled; columns of type `{}` are uncertain", key.1),
                        tables,
                    );
                }
            }
            Ast::CreateIndex(_)
            | Ast::CreateFunction(_)
            | Ast::CreateTrigger(_)
            | Ast::CreateView(_)
            | Ast::CreateExtension(_)
            | Ast::CreateSequence { .. }
            | Ast::CreatePolicy(_)
            | Ast::CreateRole(_)
            | Ast::Comment { .. }
            | Ast::Grant(_)
            | Ast::Revoke(_)
            | Ast::Insert(_)
            | Ast::Update(_)
            | Ast::Delete(_)
            | Ast::Query(_)
            | Ast::Truncate(_)
            | Ast::StartTransaction { .. }
            | Ast::Commit { .. }
            | Ast::Rollback { .. }
            | Ast::Set(_)
            | Ast::DropFunction(_)
            | Ast::DropTrigger(_)
            | Ast::AlterIndex { .. }
            | Ast::AlterView { .. }
            | Ast::AlterRole { .. }
            | Ast::AlterPolicy(_)
            | Ast::Analyze(_)
            | Ast::Call(_) => {}
            other => {
                let tables = self.scan_tables(statement);
                let kind = other
                    .to_string()
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                self.warn(format!("`{kind}` statement is not modelled"), tables);
            }
        }
    }

    fn create_table(&mut self, create: &CreateTable) {
        let key = self.create_key(&create.name);
        let at = self.at(create
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .unwrap_or(&Ident::new("")));
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
        self.catalog.schemas.insert(key.0.clone());
        let mut table = Table {
            schema: key.0.clone(),
            name: key.1.clone(),
            columns: Vec::new(),
            defined_at: at.clone(),
            uncertain: Vec::new(),
            removed: Vec::new(),
        };
        let mut uncertain = None;
        let parents: Vec<&ObjectName> = match (&create.like, &create.partition_of) {
            (
                Some(CreateTableLikeKind::Parenthesized(like) | CreateTableLikeKind::Plain(like)),
                _,
            ) => {
                vec![&like.name]
            }
            (None, Some(parent)) => vec![parent],
            _ => create.inherits.iter().flatten().collect(),
        };
        for parent in parents {
            let parent_key = self.table_key(parent);
            match self.catalog.tables.get(&parent_key) {
                Some(parent) => {
                    table
                        .columns
                        .extend(parent.columns.iter().cloned().map(|mut c| {
                            if c.generated == Generated::Identity && create.like.is_some() {
                                c.generated = Generated::No;
                            }
                            c.defined_at = at.clone();
                            c.changed_at = None;
                            c
                        }))
                }
                None => {
                    uncertain = Some(format!(
                        "CREATE TABLE copies the columns of `{}.{}`, which the catalog does not know",
                        parent_key.0, parent_key.1
                    ));
                }
            }
        }
        if create.query.is_some() {
            uncertain =
                Some("CREATE TABLE ... AS is not modelled: its columns are unknown".to_owned());
        }
        for def in &create.columns {
            let column = self.column(def);
            if let Some(existing) = table.column_mut(&column.name) {
                // Inherited or partition columns: local options add to the parent's.
                existing.nullable &= column.nullable;
            } else {
                table.columns.push(column);
            }
        }
        for constraint in &create.constraints {
            if let TableConstraint::PrimaryKey(pk) = constraint {
                for column in pk.columns.iter().filter_map(|c| expr_ident(&c.column.expr)) {
                    if let Some(column) = table.column_mut(&column) {
                        column.nullable = false;
                    }
                }
            }
        }
        self.catalog.tables.insert(key.clone(), table);
        if let Some(reason) = uncertain {
            self.warn(reason, vec![key]);
        }
    }

    fn alter_table(&mut self, key: &Key, operation: &AlterTableOperation) {
        let here = self.here();
        match operation {
            AlterTableOperation::AddColumn {
                if_not_exists,
                column_def,
                ..
            } => {
                let column = self.column(column_def);
                let table = self
                    .catalog
                    .tables
                    .get_mut(key)
                    .expect("checked by the caller");
                if table.column(&column.name).is_some() {
                    if !if_not_exists {
                        let message = format!(
                            "ADD COLUMN `{}`, which already exists; the migration would fail",
                            column.name
                        );
                        self.warn(message, Vec::new());
                    }
                } else {
                    table.columns.push(column);
                }
            }
            AlterTableOperation::DropColumn {
                column_names,
                if_exists,
                ..
            } => {
                for ident in column_names {
                    let name = fold(ident);
                    let table = self
                        .catalog
                        .tables
                        .get_mut(key)
                        .expect("checked by the caller");
                    let before = table.columns.len();
                    table.columns.retain(|c| c.name != name);
                    if table.columns.len() < before {
                        table.removed.push(RemovedColumn {
                            name,
                            renamed_to: None,
                            at: here.clone(),
                        });
                    } else if !if_exists {
                        self.warn(format!("DROP COLUMN `{name}`, which does not exist; the migration would fail"), Vec::new());
                    }
                }
            }
            AlterTableOperation::RenameColumn {
                old_column_name,
                new_column_name,
            } => {
                let (old, new) = (fold(old_column_name), fold(new_column_name));
                let table = self
                    .catalog
                    .tables
                    .get_mut(key)
                    .expect("checked by the caller");
                if let Some(column) = table.column_mut(&old) {
                    column.name = new.clone();
                    column.changed_at = Some(here.clone());
                    table.removed.push(RemovedColumn {
                        name: old,
                        renamed_to: Some(new),
                        at: here,
                    });
                } else {
                    self.warn(
                        format!(
                            "RENAME COLUMN `{old}`, which does not exist; the migration would fail"
                        ),
                        Vec::new(),
                    );
                }
            }
            AlterTableOperation::RenameTable { table_name } => {
                let (RenameTableNameKind::To(name) | RenameTableNameKind::As(name)) = table_name;
                let new = fold_name(name).pop().unwrap_or_default();
                if let Some(mut table) = self.catalog.tables.remove(key) {
                    table.name = new.clone();
                    self.catalog
                        .tables
                        .insert((key.0.clone(), new.clone()), table);
                    self.catalog.removed_tables.push(RemovedTable {
                        schema: key.0.clone(),
                        name: key.1.clone(),
                        renamed_to: Some(new),
                        at: here,
                    });
                }
            }
            AlterTableOperation::AlterColumn { column_name, op } => {
                let name = fold(column_name);
                let new_type = match op {
                    AlterColumnOperation::SetDataType { data_type, .. } => {
                        Some(self.sql_type(data_type).0)
                    }
                    _ => None,
                };
                let table = self
                    .catalog
                    .tables
                    .get_mut(key)
                    .expect("checked by the caller");
                let Some(column) = table.column_mut(&name) else {
                    self.warn(
                        format!(
                            "ALTER COLUMN `{name}`, which does not exist; the migration would fail"
                        ),
                        Vec::new(),
                    );
                    return;
                };
                match op {
                    AlterColumnOperation::SetNotNull => column.nullable = false,
                    AlterColumnOperation::DropNotNull => column.nullable = true,
                    AlterColumnOperation::SetDataType { .. } => {
                        column.ty = new_type.expect("set above");
                    }
                    _ => return,
                }
                column.changed_at = Some(here);
            }
            AlterTableOperation::AddConstraint {
                constraint: TableConstraint::PrimaryKey(pk),
                ..
            } => {
                let table = self
                    .catalog
                    .tables
                    .get_mut(key)
                    .expect("checked by the caller");
                for name in pk.columns.iter().filter_map(|c| expr_ident(&c.column.expr)) {
                    if let Some(column) = table.column_mut(&name) {
                        column.nullable = false;
                        column.changed_at = Some(here.clone());
                    }
                }
            }
            AlterTableOperation::ChangeColumn { .. } | AlterTableOperation::ModifyColumn { .. } => {
                self.warn(
                    "CHANGE/MODIFY COLUMN is MySQL syntax and is not modelled".to_owned(),
                    vec![key.clone()],
                );
            }
            _ => {}
        }
    }

    fn drop(&mut self, object_type: ObjectType, name: &ObjectName, if_exists: bool) {
        let here = self.here();
        match object_type {
            ObjectType::Table => {
                let key = self.table_key(name);
                if self.catalog.tables.remove(&key).is_some() {
                    self.catalog.removed_tables.push(RemovedTable {
                        schema: key.0,
                        name: key.1,
                        renamed_to: None,
                        at: here,
                    });
                } else if !if_exists {
                    self.warn(
                        format!(
                            "DROP TABLE `{}.{}`, which does not exist; the migration would fail",
                            key.0, key.1
                        ),
                        Vec::new(),
                    );
                }
            }
            ObjectType::Schema => {
                let schema = fold_name(name).pop().unwrap_or_default();
                self.catalog.schemas.remove(&schema);
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
            ObjectType::Type => {
                let mut parts = fold_name(name);
                let object = parts.pop().unwrap_or_default();
                if let Some(key) = self.type_key(parts.pop(), &object) {
                    self.catalog.types.remove(&key);
                }
            }
            _ => {}
        }
    }

    fn rename_schema(&mut self, from: &str, to: &str) {
        self.catalog.schemas.remove(from);
        self.catalog.schemas.insert(to.to_owned());
        let moved: Vec<Key> = self
            .catalog
            .tables
            .keys()
            .filter(|(s, _)| s == from)
            .cloned()
            .collect();
        for key in moved {
            let mut table = self.catalog.tables.remove(&key).expect("listed above");
            table.schema = to.to_owned();
            self.catalog.tables.insert((to.to_owned(), key.1), table);
        }
        for entry in &mut self.search_path {
            if entry == from {
                *entry = to.to_owned();
            }
        }
    }

    fn tables_using_type(&self, type_name: &str) -> Vec<Key> {
        self.catalog
            .tables
            .iter()
            .filter(|(_, t)| {
                t.columns
                    .iter()
                    .any(|c| c.ty.name.trim_start_matches('_') == type_name)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// A statement that does not parse: warn, and mark the tables it may touch.
    fn unparsed(&mut self, statement: &Statement, error: &str) {
        let words: Vec<String> = statement
            .words()
            .take(6)
            .map(|t| match t {
                Token::Word(w) => w.value.to_ascii_uppercase(),
                other => other.to_string(),
            })
            .collect();
        let starts = |prefix: &[&str]| {
            words.len() >= prefix.len() && words.iter().zip(prefix).all(|(w, p)| w == p)
        };
        let harmless = [
            &["DROP", "INDEX"][..],
            &["CREATE", "PROCEDURE"],
            &["CREATE", "OR", "REPLACE", "PROCEDURE"],
            &["CREATE", "MATERIALIZED", "VIEW"],
            &["REFRESH", "MATERIALIZED"],
            &["ALTER", "INDEX"],
            &["CREATE", "RULE"],
            &["CREATE", "OR", "REPLACE", "RULE"],
        ];
        if harmless.iter().any(|p| starts(p)) {
            return;
        }
        if starts(&["DO"]) {
            let tables = self.scan_tables(statement);
            self.warn(
                "`DO` block cannot be modelled; the tables it names are uncertain".to_owned(),
                tables,
            );
        } else if starts(&["ALTER", "TABLE"]) {
            let name = self.name_after(statement, 2);
            let what = if words.iter().any(|w| w == "SCHEMA")
                && statement_has(statement, &["SET", "SCHEMA"])
            {
                "ALTER TABLE ... SET SCHEMA is not modelled".to_owned()
            } else {
                format!("cannot parse ALTER TABLE: {error}")
            };
            let tables = name
                .into_iter()
                .filter(|k| self.catalog.tables.contains_key(k))
                .collect();
            self.warn(what, tables);
        } else if starts(&["CREATE", "TABLE"]) || starts(&["CREATE", "UNLOGGED", "TABLE"]) {
            if let Some(key) = self.name_after(statement, if words[1] == "TABLE" { 2 } else { 3 }) {
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
                        },
                    );
                }
                self.warn(
                    format!("cannot parse CREATE TABLE, its columns are unknown: {error}"),
                    vec![key],
                );
            }
        } else {
            let tables = self.scan_tables(statement);
            self.warn(format!("cannot parse statement: {error}"), tables);
        }
    }

    /// The table named after the first `skip` words (skipping `IF [NOT] EXISTS`, `ONLY`).
    fn name_after(&self, statement: &Statement, skip: usize) -> Option<Key> {
        let mut parts: Vec<Ident> = Vec::new();
        let mut expect_name = true;
        for token in statement.words().skip(skip) {
            match token {
                Token::Word(w)
                    if parts.is_empty()
                        && ["IF", "NOT", "EXISTS", "ONLY"]
                            .contains(&w.value.to_ascii_uppercase().as_str())
                        && w.quote_style.is_none() => {}
                Token::Word(w) if expect_name => {
                    parts.push(Ident {
                        value: w.value.clone(),
                        quote_style: w.quote_style,
                        span: sqlparser::tokenizer::Span::empty(),
                    });
                    expect_name = false;
                }
                Token::Period if !expect_name => expect_name = true,
                _ => break,
            }
        }
        (!parts.is_empty()).then(|| self.table_key(&ObjectName::from(parts)))
    }

    /// Known tables named anywhere in the statement, including inside dollar-quoted bodies.
    fn scan_tables(&self, statement: &Statement) -> Vec<Key> {
        let mut words: Vec<String> = Vec::new();
        for token in statement.words() {
            match token {
                Token::Word(w) => words.push(fold(&Ident {
                    value: w.value.clone(),
                    quote_style: w.quote_style,
                    span: sqlparser::tokenizer::Span::empty(),
                })),
                Token::DollarQuotedString(body) => {
                    if let Ok(inner) = split_statements(&body.value) {
                        for inner in inner {
                            for token in inner.words() {
                                if let Token::Word(w) = token {
                                    words.push(if w.quote_style.is_some() {
                                        w.value.clone()
                                    } else {
                                        w.value.to_ascii_lowercase()
                                    });
                                }
                            }
                        }
                    }
                }
                Token::SingleQuotedString(body) => {
                    words.extend(
                        body.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                            .map(str::to_ascii_lowercase),
                    );
                }
                _ => {}
            }
        }
        self.catalog
            .tables
            .keys()
            .filter(|(schema, table)| {
                words.iter().any(|w| w == table)
                    && (self.search_path.contains(schema) || words.iter().any(|w| w == schema))
            })
            .cloned()
            .collect()
    }
}

fn statement_has(statement: &Statement, sequence: &[&str]) -> bool {
    let words: Vec<String> = statement
        .words()
        .map(|t| t.to_string().to_ascii_uppercase())
        .collect();
    words
        .windows(sequence.len())
        .any(|w| w.iter().zip(sequence).all(|(a, b)| a == b))
}

fn expr_ident(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(ident) => Some(fold(ident)),
        _ => None,
    }
}

fn search_path_entry(value: &Expr) -> String {
    match value {
        Expr::Identifier(ident) => fold(ident),
        Expr::Value(v) => {
            let text = v.to_string();
            text.trim_matches('\'').to_owned()
        }
        other => other.to_string().trim_matches('"').to_owned(),
    }
}
