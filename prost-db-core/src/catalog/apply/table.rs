//! `CREATE TABLE` and `ALTER TABLE`: columns, constraints, partitions and inheritance.

use crate::catalog::parse::{Action, Body, CreateTable, Element, Name};
use crate::catalog::query::{self, Expr, Query};
use crate::catalog::types::TypeKind;
use crate::catalog::{Column, Generated, Location, RemovedColumn, Table};

use super::{Key, Script};

impl Script<'_> {
    pub(super) fn create_table(&mut self, create: CreateTable<'_>) {
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
    pub(super) fn uncertain_source(&self, create: &CreateTable<'_>) -> Option<String> {
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

    pub(super) fn inherit_columns(
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

    pub(super) fn alter_table(&mut self, key: &Key, only: bool, action: Action) {
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
    pub(super) fn change_column(
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
}
