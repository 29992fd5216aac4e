//! `CREATE TABLE ... AS`: the columns a query produces and their types.

use crate::catalog::query::{Expr, Literal, Query};
use crate::catalog::types::{SqlType, TypeKind};
use crate::catalog::{Column, Generated, Location, Table};

use super::Script;

impl Script<'_> {
    /// The columns a query produces, and why they may be wrong.
    pub(super) fn derive_columns(
        &self,
        query: &Query,
        names: &[String],
        at: &Location,
    ) -> (Vec<Column>, Option<String>) {
        if let Some(reason) = query.opaque {
            return (
                Vec::new(),
                Some(format!(
                    "CREATE TABLE ... AS with {reason}: its columns are not modelled"
                )),
            );
        }
        let mut from: Vec<(Option<&str>, &str, Option<&Table>)> = Vec::new();
        for item in &query.from {
            let table = if self.is_temporary(&item.table) {
                None
            } else {
                self.catalog.tables.get(&self.table_key(&item.table))
            };
            from.push((item.alias.as_deref(), item.table.object(), table));
        }
        let mut columns = Vec::new();
        let mut unknown: Vec<String> = Vec::new();
        let column = |name: String, ty: SqlType| Column {
            name,
            ty,
            nullable: true,
            generated: Generated::No,
            defined_at: at.clone(),
            changed_at: None,
            inherited: false,
        };
        for item in &query.items {
            if let Expr::Star(qualifier) = &item.expr {
                for (alias, name, table) in &from {
                    if qualifier
                        .as_deref()
                        .is_some_and(|q| Some(q) != *alias && q != *name)
                    {
                        continue;
                    }
                    match table {
                        Some(table) => {
                            for c in &table.columns {
                                columns.push(column(c.name.clone(), c.ty.clone()));
                            }
                        }
                        None => unknown.push(format!("{name}.*")),
                    }
                }
                continue;
            }
            let (name, ty) = self.expression_type(&item.expr, &from);
            let name = item.alias.clone().unwrap_or(name);
            match ty {
                Some(ty) => columns.push(column(name, ty)),
                None => {
                    unknown.push(name.clone());
                    columns.push(column(name, SqlType::unknown()));
                }
            }
        }
        for (column, name) in columns.iter_mut().zip(names) {
            column.name = name.clone();
        }
        let reason = (!unknown.is_empty()).then(|| {
            format!(
                "CREATE TABLE ... AS: the type of {} does not follow from known tables and casts",
                unknown
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        (columns, reason)
    }

    /// A select item's name (as PostgreSQL picks it) and type, if known.
    pub(super) fn expression_type(
        &self,
        expr: &Expr,
        from: &[(Option<&str>, &str, Option<&Table>)],
    ) -> (String, Option<SqlType>) {
        match expr {
            Expr::Column(parts) => {
                let column = parts.last().cloned().unwrap_or_default();
                let qualifier = parts.len().checked_sub(2).map(|i| parts[i].as_str());
                let found = from
                    .iter()
                    .filter(|(alias, name, _)| {
                        qualifier.is_none_or(|q| Some(q) == *alias || q == *name)
                    })
                    .find_map(|(_, _, table)| table.and_then(|t| t.column(&column)));
                (column, found.map(|c| c.ty.clone()))
            }
            Expr::Cast(inner, ty) => {
                let (inner_name, _) = self.expression_type(inner, from);
                let (resolved, _) = self.resolve_type(ty);
                let name = match inner.as_ref() {
                    Expr::Column(_) | Expr::Function(_) | Expr::Cast(..) => inner_name,
                    _ => match &resolved.kind {
                        TypeKind::Base | TypeKind::Array { .. } => {
                            resolved.name.trim_start_matches('_').to_owned()
                        }
                        _ => ty.name.last().cloned().unwrap_or_default(),
                    },
                };
                (name, Some(resolved))
            }
            Expr::Literal(literal) => {
                let ty = match literal {
                    Literal::Text | Literal::Null => SqlType::builtin("text", "text"),
                    Literal::Integer(true) => SqlType::builtin("int4", "integer"),
                    Literal::Integer(false) => SqlType::builtin("int8", "bigint"),
                    Literal::Numeric => SqlType::builtin("numeric", "numeric"),
                    Literal::Bool => SqlType::builtin("bool", "boolean"),
                };
                ("?column?".to_owned(), Some(ty))
            }
            Expr::TypedLiteral(ty) => {
                let (resolved, _) = self.resolve_type(ty);
                (ty.name.last().cloned().unwrap_or_default(), Some(resolved))
            }
            Expr::Function(name) => {
                let ty = match name.as_str() {
                    "count" => Some(SqlType::builtin("int8", "bigint")),
                    "now" | "clock_timestamp" | "statement_timestamp" | "transaction_timestamp" => {
                        Some(SqlType::builtin("timestamptz", "timestamp with time zone"))
                    }
                    "gen_random_uuid" | "uuid_generate_v4" => {
                        Some(SqlType::builtin("uuid", "uuid"))
                    }
                    "random" => Some(SqlType::builtin("float8", "double precision")),
                    _ => None,
                };
                (name.clone(), ty)
            }
            Expr::Keyword(keyword) => {
                let ty = match keyword.as_str() {
                    "current_date" => SqlType::builtin("date", "date"),
                    "current_timestamp" => {
                        SqlType::builtin("timestamptz", "timestamp with time zone")
                    }
                    "localtimestamp" => {
                        SqlType::builtin("timestamp", "timestamp without time zone")
                    }
                    "current_time" => SqlType::builtin("timetz", "time with time zone"),
                    "localtime" => SqlType::builtin("time", "time without time zone"),
                    _ => SqlType::builtin("name", "name"),
                };
                (keyword.clone(), Some(ty))
            }
            Expr::Star(_) | Expr::Other => ("?column?".to_owned(), None),
        }
    }
}
