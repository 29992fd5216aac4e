//! Checks the struct against the catalog and builds the immutable definition that
//! `expand` turns into code.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::Type;

use prost_db_core::catalog::{Catalog, Column, SqlType, Table, TypeKind, did_you_mean};

use super::Errors;
use super::ast::Container;

/// What the expansion needs.
pub(crate) struct SchemaDef<'a> {
    pub schema: String,
    pub table: String,
    pub columns: Vec<ColumnDef<'a>>,
    /// Warnings shown with the `#[deprecated]` trick, on the struct's name.
    pub warnings: Vec<String>,
}

pub(crate) struct ColumnDef<'a> {
    pub name: String,
    pub sql_type: Option<String>,
    pub nullable: Option<bool>,
    /// `(field type, marker type)` for the compatibility assertion.
    pub check: Option<(&'a Type, TokenStream)>,
}

/// Without a catalog: `#[schema(unchecked)]` on the struct.
pub(crate) fn unchecked<'a>(
    container: &Container<'a>,
    errors: &mut Errors,
) -> Option<SchemaDef<'a>> {
    let ident = &container.original.ident;
    let (Some(schema), Some(table)) = (&container.attrs.schema, &container.attrs.table) else {
        errors.push(syn::Error::new_spanned(
            ident,
            "#[schema(unchecked)] on the struct needs both `table = \"...\"` and `schema = \"...\"`, since the migrations are not read",
        ));
        return None;
    };
    Some(SchemaDef {
        schema: schema.value(),
        table: table.value(),
        columns: container
            .fields
            .iter()
            .filter(|f| f.attrs.skip.is_none())
            .map(|f| ColumnDef {
                name: f.column(),
                sql_type: None,
                nullable: None,
                check: None,
            })
            .collect(),
        warnings: Vec::new(),
    })
}

/// The default table name: the struct's name in snake case.
fn default_table(ident: &syn::Ident) -> String {
    let mut out = String::new();
    for (i, c) in ident
        .to_string()
        .trim_start_matches("r#")
        .chars()
        .enumerate()
    {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn find_table<'c>(
    container: &Container<'_>,
    catalog: &'c Catalog,
    root_name: &str,
    errors: &mut Errors,
) -> Option<&'c Table> {
    let attrs = &container.attrs;
    let table_span = attrs
        .table
        .as_ref()
        .map_or_else(|| container.original.ident.span(), syn::LitStr::span);
    let name = attrs.table.as_ref().map_or_else(
        || default_table(&container.original.ident),
        syn::LitStr::value,
    );
    if let Some(schema) = &attrs.schema {
        let schema = schema.value();
        if let Some(table) = catalog.table(&schema, &name) {
            return Some(table);
        }
        let mut message =
            format!("table `{schema}.{name}` is not created by the migrations in `{root_name}`");
        if let Some(removed) = catalog.removed_table(&schema, &name) {
            match &removed.renamed_to {
                Some(new) => message += &format!("; it was renamed to `{new}` by {}", removed.at),
                None => message += &format!("; it was dropped by {}", removed.at),
            }
        } else {
            let qualified: Vec<String> = catalog
                .tables()
                .map(|t| format!("{}.{}", t.schema, t.name))
                .collect();
            let wanted = format!("{schema}.{name}");
            if let Some(near) = did_you_mean(&wanted, qualified.iter().map(String::as_str)) {
                message += &format!("; did you mean `{near}`?");
            }
        }
        errors.push(syn::Error::new(table_span, message));
        return None;
    }
    match catalog.tables_named(&name).as_slice() {
        [table] => Some(table),
        [] => {
            let mut message =
                format!("table `{name}` is not created by the migrations in `{root_name}`");
            let names: Vec<&str> = catalog.tables().map(|t| t.name.as_str()).collect();
            if let Some(near) = did_you_mean(&name, names) {
                message += &format!("; did you mean `{near}`?");
            }
            if attrs.table.is_none() {
                message += "; the table name defaults to the struct's name in snake case, set it with #[schema(table = \"...\")]";
            }
            errors.push(syn::Error::new(table_span, message));
            None
        }
        several => {
            let schemas: Vec<String> = several.iter().map(|t| format!("`{}`", t.schema)).collect();
            errors.push(syn::Error::new(
                table_span,
                format!(
                    "table `{name}` exists in schemas {}; say which with #[schema(schema = \"...\")]",
                    schemas.join(" and ")
                ),
            ));
            None
        }
    }
}

pub(crate) fn check<'a>(
    container: &Container<'a>,
    catalog: &Catalog,
    root_name: &str,
    errors: &mut Errors,
) -> Option<SchemaDef<'a>> {
    let table = find_table(container, catalog, root_name, errors)?;
    let qualified = format!("{}.{}", table.schema, table.name);
    let mut columns = Vec::new();
    for field in container.fields.iter().filter(|f| f.attrs.skip.is_none()) {
        let name = field.column();
        if field.attrs.unchecked.is_some() {
            columns.push(ColumnDef {
                name,
                sql_type: None,
                nullable: None,
                check: None,
            });
            continue;
        }
        let Some(column) = table.column(&name) else {
            errors.push(syn::Error::new(
                field.column_span(),
                missing_column(table, &qualified, &name),
            ));
            continue;
        };
        if column.nullable && !is_option(field.ty) {
            errors.push(syn::Error::new_spanned(
                field.ty,
                format!(
                    "column `{name}` of `{qualified}` is nullable ({}), so the field must be an `Option<_>`",
                    column.last_defined_at()
                ),
            ));
        }
        columns.push(ColumnDef {
            check: marker(&column.ty).map(|m| (field.ty, m)),
            sql_type: Some(column.ty.name.clone()),
            nullable: Some(column.nullable),
            name,
        });
    }
    let warnings = table
        .uncertain
        .iter()
        .map(|u| {
            format!(
                "the catalog of `{qualified}` is uncertain after {}: {}; fields are checked against the columns it knows",
                u.at, u.reason
            )
        })
        .collect();
    Some(SchemaDef {
        schema: table.schema.clone(),
        table: table.name.clone(),
        columns,
        warnings,
    })
}

fn missing_column(table: &Table, qualified: &str, name: &str) -> String {
    let mut message = format!(
        "column `{name}` does not exist in `{qualified}` (created at {})",
        table.defined_at
    );
    if let Some(removed) = table.removed_column(name) {
        match &removed.renamed_to {
            Some(new) => {
                message = format!(
                    "column `{name}` of `{qualified}` was renamed to `{new}` by {}; rename the field or add #[schema(column = \"{new}\")]",
                    removed.at
                );
            }
            None => {
                message = format!(
                    "column `{name}` of `{qualified}` was dropped by {}; remove the field or mark it #[schema(skip)]",
                    removed.at
                );
            }
        }
    } else if let Some(near) =
        did_you_mean(name, table.columns.iter().map(|c: &Column| c.name.as_str()))
    {
        let column = table.column(near).expect("a candidate");
        message += &format!("; did you mean `{near}` ({})?", column.defined_at);
    }
    if let Some(uncertain) = table.uncertain.last() {
        message += &format!(
            "; note: the catalog of `{qualified}` is uncertain after {} ({}), if the column is made there mark the field #[schema(unchecked)]",
            uncertain.at, uncertain.reason
        );
    }
    message
}

/// Whether the field's type is spelled `Option<_>` (any path ending in `Option`).
fn is_option(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path.path.segments.last().is_some_and(|s| {
            s.ident == "Option" && matches!(s.arguments, syn::PathArguments::AngleBracketed(_))
        }),
        Type::Group(group) => is_option(&group.elem),
        Type::Paren(paren) => is_option(&paren.elem),
        _ => false,
    }
}

const MARKERS: &[&str] = &[
    "int2",
    "int4",
    "int8",
    "float4",
    "float8",
    "numeric",
    "varchar",
    "bpchar",
    "text",
    "citext",
    "name",
    "bool",
    "uuid",
    "date",
    "time",
    "timestamp",
    "timestamptz",
    "interval",
    "json",
    "jsonb",
    "bytea",
];

/// The `::prost_db::schema::pg` marker for a column type, if the vocabulary has one.
fn marker(ty: &SqlType) -> Option<TokenStream> {
    let ty = ty.storage();
    match &ty.kind {
        TypeKind::Enum { .. } => Some(quote!(::prost_db::schema::pg::Enum)),
        TypeKind::Array { element } => {
            let element = marker(element)?;
            Some(quote!(::prost_db::schema::pg::Array<#element>))
        }
        _ => MARKERS.contains(&ty.name.as_str()).then(|| {
            let ident = syn::Ident::new(&ty.name, Span::call_site());
            quote!(::prost_db::schema::pg::#ident)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_is_snake_case() {
        let ident: syn::Ident = syn::parse_quote!(OrderItems);
        assert_eq!(default_table(&ident), "order_items");
    }

    #[test]
    fn option_detection_is_syntactic() {
        assert!(is_option(&syn::parse_quote!(Option<String>)));
        assert!(is_option(&syn::parse_quote!(::core::option::Option<i64>)));
        assert!(!is_option(&syn::parse_quote!(String)));
    }
}
