//! Checks a struct against the catalog and builds the immutable definition that
//! `expand` turns into code.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{GenericParam, Ident, Lifetime, Type};

use prost_db_core::catalog::{Catalog, Column, SqlType, Table, TypeKind, did_you_mean};
use prost_db_core::sql_types;

use super::Errors;
use super::ast::{Container, Field};

/// What the expansion needs.
pub(crate) struct SchemaDef {
    pub schema: String,
    pub table: String,
    pub columns: Vec<ColumnDef>,
    /// Compile-time checks, each spanned at its field's type: statements of a function that
    /// is type-checked and never called.
    pub checks: Vec<TokenStream>,
    /// Checks that need constant evaluation (an enum's type name): `const` items.
    pub const_checks: Vec<TokenStream>,
    /// What makes the table uncertain, shown with the `#[deprecated]` trick on the struct's
    /// name: `(the statement and reason, to show each once per crate; how it reads)`.
    pub warnings: Vec<(String, String)>,
}

pub(crate) struct ColumnDef {
    pub name: String,
    pub sql_type: Option<String>,
    pub nullable: Option<bool>,
}

/// Without a catalog: `#[schema(unchecked)]` on the struct.
pub(crate) fn unchecked(container: &Container<'_>, errors: &mut Errors) -> Option<SchemaDef> {
    let ident = &container.original.ident;
    let (schema, table) = split_table(container, errors)?;
    let Some(schema) = schema else {
        errors.push(syn::Error::new_spanned(
            ident,
            "#[schema(unchecked)] on the struct needs the schema, since the migrations are not read: `schema = \"...\"` with `table = \"...\"`, or `table = \"schema.table\"`",
        ));
        return None;
    };
    let columns = column_names(container, errors)
        .into_iter()
        .map(|(name, _)| ColumnDef {
            name,
            sql_type: None,
            nullable: None,
        })
        .collect();
    Some(SchemaDef {
        schema,
        table: table.unwrap_or_else(|| default_table(ident)),
        columns,
        checks: Vec::new(),
        const_checks: Vec::new(),
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

/// `(schema, table)` from `schema = ".."` and `table = ".."` (which may be `schema.table`).
fn split_table(
    container: &Container<'_>,
    errors: &mut Errors,
) -> Option<(Option<String>, Option<String>)> {
    let attrs = &container.attrs;
    let schema = attrs.schema.as_ref().map(syn::LitStr::value);
    let Some(table) = &attrs.table else {
        return Some((schema, None));
    };
    match table.value().split_once('.') {
        Some((in_table, name)) => match &schema {
            Some(schema) if schema != in_table => {
                errors.push(syn::Error::new(
                    table.span(),
                    format!(
                        "`table = \"{}\"` names schema `{in_table}`, and `schema = \"{schema}\"` another; write `table = \"{name}\"` with the schema you mean",
                        table.value()
                    ),
                ));
                None
            }
            _ => Some((Some(in_table.to_owned()), Some(name.to_owned()))),
        },
        None => Some((schema, Some(table.value()))),
    }
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
    let (schema, name) = split_table(container, errors)?;
    let name = name.unwrap_or_else(|| default_table(&container.original.ident));
    let elsewhere = |message: &mut String| {
        let found: Vec<String> = catalog
            .tables_named(&name)
            .iter()
            .map(|t| format!("`{}` (created at {})", t.schema, t.defined_at))
            .collect();
        if !found.is_empty() {
            *message += &format!(
                "; a table `{name}` exists in schema {}: set `schema = \"...\"` to it",
                found.join(" and ")
            );
            return true;
        }
        false
    };
    let no_tables = || {
        if catalog.tables().next().is_none() {
            return format!(
                "; the migrations in `{root_name}` create no table at all: is `migrations` the right directory?"
            );
        }
        // Tables made by dynamic SQL: the catalog cannot know their names.
        let dynamic: Vec<String> = catalog
            .warnings()
            .iter()
            .filter(|w| w.message.contains("creates tables with dynamic SQL"))
            .map(|w| w.at.to_string())
            .collect();
        if dynamic.is_empty() {
            String::new()
        } else {
            format!(
                "; note: {} creates tables with dynamic SQL, whose names the catalog cannot know: if this table is one of them, mark the struct #[schema(unchecked)]",
                dynamic.join(" and ")
            )
        }
    };
    if let Some(schema) = schema {
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
        } else if !elsewhere(&mut message) {
            let qualified: Vec<String> = catalog
                .tables()
                .map(|t| format!("{}.{}", t.schema, t.name))
                .collect();
            let wanted = format!("{schema}.{name}");
            if let Some(near) = did_you_mean(&wanted, qualified.iter().map(String::as_str)) {
                message += &format!("; did you mean `{near}`?");
            } else if !catalog.schemas().any(|s| s == schema) {
                message += &format!("; no migration creates schema `{schema}`");
            }
            message += &no_tables();
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
            message += &no_tables();
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

/// The columns of the fields that are columns, with their fields; two fields mapped to one
/// column are an error.
fn column_names<'f, 'a>(
    container: &'f Container<'a>,
    errors: &mut Errors,
) -> Vec<(String, &'f Field<'a>)> {
    let mut seen: HashMap<String, &Field<'_>> = HashMap::new();
    let mut out = Vec::new();
    for field in container.fields.iter().filter(|f| f.is_column()) {
        let name = field.column(&container.attrs);
        if let Some(first) = seen.get(&name) {
            errors.push(syn::Error::new(
                field.column_span(),
                format!(
                    "fields `{}` and `{}` both map to column `{name}`; rename one with #[sqlx(rename = \"...\")], or mark one #[sqlx(skip)]",
                    first.ident, field.ident
                ),
            ));
            continue;
        }
        seen.insert(name.clone(), field);
        out.push((name, field));
    }
    out
}

/// Generic parameters: lifetimes are checked as `'static` (impls are lifetime-generic);
/// fields whose types name a type or const parameter are not type-checked.
struct Generics {
    lifetimes: Vec<Lifetime>,
    params: Vec<Ident>,
}

impl Generics {
    fn of(input: &syn::DeriveInput) -> Generics {
        let mut lifetimes = Vec::new();
        let mut params = Vec::new();
        for param in &input.generics.params {
            match param {
                GenericParam::Lifetime(l) => lifetimes.push(l.lifetime.clone()),
                GenericParam::Type(t) => params.push(t.ident.clone()),
                GenericParam::Const(c) => params.push(c.ident.clone()),
            }
        }
        Generics { lifetimes, params }
    }

    /// The type to check, or `None` if it names a type or const parameter.
    fn checkable(&self, ty: &Type) -> Option<Type> {
        struct Rewrite<'g> {
            generics: &'g Generics,
            generic: bool,
        }
        impl VisitMut for Rewrite<'_> {
            fn visit_lifetime_mut(&mut self, lifetime: &mut Lifetime) {
                if self.generics.lifetimes.contains(lifetime) {
                    *lifetime = Lifetime::new("'static", lifetime.span());
                }
            }
            fn visit_path_mut(&mut self, path: &mut syn::Path) {
                if path
                    .segments
                    .first()
                    .is_some_and(|s| self.generics.params.contains(&s.ident))
                {
                    self.generic = true;
                }
                syn::visit_mut::visit_path_mut(self, path);
            }
        }
        let mut ty = ty.clone();
        let mut rewrite = Rewrite {
            generics: self,
            generic: false,
        };
        rewrite.visit_type_mut(&mut ty);
        (!rewrite.generic).then_some(ty)
    }
}

pub(crate) fn check(
    container: &Container<'_>,
    catalog: &Catalog,
    root_name: &str,
    errors: &mut Errors,
) -> Option<SchemaDef> {
    let table = find_table(container, catalog, root_name, errors)?;
    let qualified = format!("{}.{}", table.schema, table.name);
    let generics = Generics::of(container.original);
    let mut columns = Vec::new();
    let mut checks = Vec::new();
    let mut const_checks = Vec::new();
    for (name, field) in column_names(container, errors) {
        if field.attrs.unchecked.is_some() || field.attrs.invalid {
            columns.push(ColumnDef {
                name,
                sql_type: None,
                nullable: None,
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
        if field.attrs.unchecked_type.is_none() {
            match type_checks(field, column, &qualified, &generics) {
                Ok(Check::Statement(check)) => checks.push(check),
                Ok(Check::Const(check)) => const_checks.push(check),
                Ok(Check::None) => {}
                Err(message) => errors.push(syn::Error::new_spanned(field.ty, message)),
            }
        }
        columns.push(ColumnDef {
            sql_type: (column.ty.kind != TypeKind::Unknown).then(|| column.ty.name.clone()),
            nullable: Some(column.nullable),
            name,
        });
    }
    let warnings = table
        .uncertain
        .iter()
        .map(|u| {
            (
                format!("{}: {}", u.at, u.reason),
                format!("{} ({})", u.at, u.reason),
            )
        })
        .collect();
    Some(SchemaDef {
        schema: table.schema.clone(),
        table: table.name.clone(),
        columns,
        checks,
        const_checks,
        warnings,
    })
}

enum Check {
    /// `assert_compatible::<T, M>();`: type-checked only.
    Statement(TokenStream),
    /// `const _: () = assert_enum::<T, S>(..);`: evaluated.
    Const(TokenStream),
    None,
}

/// The compile-time check of one field against its column's type.
fn type_checks(
    field: &Field<'_>,
    column: &Column,
    qualified: &str,
    generics: &Generics,
) -> Result<Check, String> {
    let name = &column.name;
    let ty = column.ty.storage();
    if field.attrs.json.is_some() {
        return if ["json", "jsonb"].contains(&ty.name.as_str()) {
            Ok(Check::None)
        } else {
            Err(format!(
                "#[sqlx(json)] needs a `json` or `jsonb` column; column `{name}` of `{qualified}` is `{}` ({})",
                ty.display,
                column.last_defined_at()
            ))
        };
    }
    let rust = field.attrs.try_from.as_ref().unwrap_or(field.ty);
    let Some(rust) = generics.checkable(rust) else {
        return Ok(Check::None);
    };
    let span = field.ty.span();
    let unknown = |what: &str| {
        format!(
            "column `{name}` of `{qualified}` ({}) is {what}, which #[derive(Schema)] cannot check against a Rust type; mark the field #[schema(unchecked_type)] to accept it as written",
            column.last_defined_at()
        )
    };
    match &ty.kind {
        TypeKind::Enum { schema } => Ok(Check::Const(enum_check(
            &rust,
            span,
            &quote!(::prost_db::schema::pg::Enum),
            (schema, &ty.name),
            name,
            qualified,
        ))),
        TypeKind::Array { element } => {
            let element = element.storage();
            if let TypeKind::Enum { schema } = &element.kind {
                return Ok(Check::Const(enum_check(
                    &rust,
                    span,
                    &quote!(::prost_db::schema::pg::Array<::prost_db::schema::pg::Enum>),
                    (schema, &element.name),
                    name,
                    qualified,
                )));
            }
            let Some(marker) = marker(element) else {
                return Err(unknown(&format!("an array of `{}`", element.display)));
            };
            Ok(Check::Statement(quote_spanned! {span=>
                ::prost_db::__private::assert_compatible::<#rust, ::prost_db::schema::pg::Array<#marker>>();
            }))
        }
        TypeKind::Unknown => Err(unknown(
            "of a type the catalog does not know (see the warning on the struct)",
        )),
        TypeKind::Composite { .. } => {
            Err(unknown(&format!("of the composite type `{}`", ty.display)))
        }
        TypeKind::Base | TypeKind::Domain { .. } => match marker(ty) {
            Some(marker) => Ok(Check::Statement(quote_spanned! {span=>
                ::prost_db::__private::assert_compatible::<#rust, #marker>();
            })),
            None => Err(unknown(&format!("of type `{}`", ty.display))),
        },
    }
}

/// One check for an enum column: the field's type holds an enum of this shape (scalar or
/// array) and, if it is a Rust enum, maps to this very PostgreSQL enum.
fn enum_check(
    rust: &Type,
    span: Span,
    shape: &TokenStream,
    (schema, type_name): (&str, &str),
    column: &str,
    qualified: &str,
) -> TokenStream {
    let message = format!(
        "column `{column}` of `{qualified}` has the enum type `{schema}.{type_name}`, and the field's Rust enum maps to another PostgreSQL type: check its #[sqlx(type_name)]"
    );
    quote_spanned! {span=>
        const _: () = ::prost_db::__private::assert_enum::<#rust, #shape>(#schema, #type_name, #message);
    }
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
                    "column `{name}` of `{qualified}` was renamed to `{new}` by {}; rename the field or add #[sqlx(rename = \"{new}\")]",
                    removed.at
                );
            }
            None => {
                message = format!(
                    "column `{name}` of `{qualified}` was dropped by {}; remove the field or mark it #[sqlx(skip)]",
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

/// The `::prost_db::schema::pg` marker for a column type, if the vocabulary has one.
fn marker(ty: &SqlType) -> Option<TokenStream> {
    let ty = ty.storage();
    match &ty.kind {
        TypeKind::Base if sql_types::is_marked(&ty.name) => {
            let ident = if ty.name == "box" {
                syn::Ident::new_raw("box", Span::call_site())
            } else {
                syn::Ident::new(&ty.name, Span::call_site())
            };
            Some(quote!(::prost_db::schema::pg::#ident))
        }
        _ => None,
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

    #[test]
    fn lifetimes_are_checked_as_static_and_type_parameters_are_not_checked() {
        let input: syn::DeriveInput = syn::parse_quote! {
            struct Account<'a, T> { name: &'a str, extra: T, tags: Vec<std::borrow::Cow<'a, str>> }
        };
        let generics = Generics::of(&input);
        let checked = |ty: Type| generics.checkable(&ty).map(|t| quote!(#t).to_string());
        assert_eq!(
            checked(syn::parse_quote!(&'a str)).as_deref(),
            Some("& 'static str")
        );
        assert_eq!(checked(syn::parse_quote!(Option<T>)), None);
        assert_eq!(
            checked(syn::parse_quote!(Vec<std::borrow::Cow<'a, str>>)).as_deref(),
            Some("Vec < std :: borrow :: Cow < 'static , str > >")
        );
    }
}
