//! Applying one parsed statement: the dispatch, types, drops and schema renames.

use crate::catalog::parse::{Ast, Name, Object};
use crate::catalog::types::{SqlType, TypeKind};
use crate::catalog::{
    Column, EnumLabel, Generated, RemovedColumn, RemovedTable, RemovedType, UserType,
};

use super::{Key, Script, retype, uses_type};

impl Script<'_> {
    pub(super) fn apply(&mut self, ast: Ast<'_>, line: u32) {
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
    pub(super) fn is_uncertain(&self, key: &Key) -> bool {
        self.catalog
            .tables
            .get(key)
            .is_some_and(|t| !t.uncertain.is_empty())
    }

    pub(super) fn would_fail(&mut self, what: &str, key: &Key) {
        self.warn(
            format!(
                "{what} on `{}.{}`, which does not exist at this point; the migration would fail",
                key.0, key.1
            ),
            Vec::new(),
        );
    }

    pub(super) fn insert_type(
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
    pub(super) fn move_type(&mut self, from: &Key, to: &Key) {
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

    pub(super) fn drop(&mut self, object: Object, name: &Name, if_exists: bool, cascade: bool) {
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

    pub(super) fn rename_schema(&mut self, from: &str, to: &str) {
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
}
