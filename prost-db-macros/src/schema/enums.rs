//! `#[derive(Schema)]` on a Rust enum that derives `sqlx::Type`: checks its
//! `#[sqlx(type_name)]` and its variants' labels (after `rename_all` / `rename`) against the
//! PostgreSQL enum the migrations leave behind.

use std::collections::HashMap;

use prost_db_core::catalog::{Catalog, TypeKind, UserType, did_you_mean};

use super::Errors;
use super::ast::EnumContainer;

/// What the expansion needs: the enum's PostgreSQL type, or `None` when unchecked.
pub(crate) struct EnumDef {
    pub sql_enum: Option<(String, String)>,
}

/// `type_name` as PostgreSQL reads it (sqlx passes it to `to_regtype`): `schema.name`,
/// unquoted parts folded to lower case. Without one, sqlx uses the enum's name.
fn type_name(container: &EnumContainer<'_>) -> (Option<String>, String) {
    let written = container
        .attrs
        .type_name
        .as_ref()
        .map_or_else(|| container.original.ident.to_string(), syn::LitStr::value);
    let fold = |part: &str| match part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => part.to_ascii_lowercase(),
    };
    match written.split_once('.') {
        Some((schema, name)) if !written.starts_with('"') || schema.ends_with('"') => {
            (Some(fold(schema)), fold(name))
        }
        _ => (None, fold(&written)),
    }
}

pub(crate) fn unchecked(container: &EnumContainer<'_>, errors: &mut Errors) -> Option<EnumDef> {
    not_an_enum(container, errors)?;
    Some(EnumDef { sql_enum: None })
}

fn not_an_enum(container: &EnumContainer<'_>, errors: &mut Errors) -> Option<()> {
    if let Some(span) = container.attrs.not_an_enum {
        errors.push(syn::Error::new(
            span,
            "an enum with #[repr] or #[sqlx(transparent)] is stored as its integer or inner type, not as a PostgreSQL enum; #[derive(Schema)] checks enums that map to `CREATE TYPE ... AS ENUM`",
        ));
        return None;
    }
    Some(())
}

fn find_type<'c>(
    container: &EnumContainer<'_>,
    catalog: &'c Catalog,
    root_name: &str,
    errors: &mut Errors,
) -> Option<&'c UserType> {
    let span = container
        .attrs
        .type_name
        .as_ref()
        .map_or_else(|| container.original.ident.span(), syn::LitStr::span);
    let (qualified_schema, name) = type_name(container);
    let schema = container
        .attrs
        .schema
        .as_ref()
        .map(syn::LitStr::value)
        .or(qualified_schema);
    let candidates: Vec<&UserType> = match &schema {
        Some(schema) => catalog.user_type(schema, &name).into_iter().collect(),
        None => catalog.user_types_named(&name),
    };
    let hint = if container.attrs.type_name.is_none() {
        "; without #[sqlx(type_name = \"...\")], sqlx uses the enum's name"
    } else {
        ""
    };
    match candidates.as_slice() {
        [found] => Some(found),
        [] => {
            let shown = schema
                .as_ref()
                .map_or_else(|| name.clone(), |s| format!("{s}.{name}"));
            let mut message =
                format!("enum type `{shown}` is not created by the migrations in `{root_name}`");
            let removed = schema
                .as_ref()
                .and_then(|s| catalog.removed_type(s, &name))
                .or_else(|| {
                    catalog
                        .schemas()
                        .find_map(|s| catalog.removed_type(s, &name))
                });
            match removed {
                Some(removed) => match &removed.renamed_to {
                    Some(new) => {
                        message += &format!(
                            "; it was renamed to `{new}` by {}: write #[sqlx(type_name = \"{new}\")]",
                            removed.at
                        );
                    }
                    None => message += &format!("; it was dropped by {}", removed.at),
                },
                None => {
                    let enums: Vec<&str> = catalog
                        .user_types()
                        .filter(|t| matches!(t.ty.kind, TypeKind::Enum { .. }))
                        .map(|t| t.name.as_str())
                        .collect();
                    if let Some(near) = did_you_mean(&name, enums) {
                        message += &format!("; did you mean `{near}`?");
                    }
                }
            }
            message += hint;
            errors.push(syn::Error::new(span, message));
            None
        }
        several => {
            let schemas: Vec<String> = several.iter().map(|t| format!("`{}`", t.schema)).collect();
            errors.push(syn::Error::new(
                span,
                format!(
                    "enum type `{name}` exists in schemas {}; say which with #[schema(schema = \"...\")] or #[sqlx(type_name = \"schema.{name}\")]",
                    schemas.join(" and ")
                ),
            ));
            None
        }
    }
}

pub(crate) fn check(
    container: &EnumContainer<'_>,
    catalog: &Catalog,
    root_name: &str,
    errors: &mut Errors,
) -> Option<EnumDef> {
    not_an_enum(container, errors)?;
    let user = find_type(container, catalog, root_name, errors)?;
    let qualified = format!("{}.{}", user.schema, user.name);
    if !matches!(user.ty.kind, TypeKind::Enum { .. }) {
        let span = container
            .attrs
            .type_name
            .as_ref()
            .map_or_else(|| container.original.ident.span(), syn::LitStr::span);
        errors.push(syn::Error::new(
            span,
            format!(
                "type `{qualified}` (created at {}) is not an enum, so a Rust enum cannot hold it",
                user.defined_at
            ),
        ));
        return None;
    }
    let labels: Vec<&str> = user.labels.iter().map(|l| l.name.as_str()).collect();
    let mut mapped: HashMap<String, &syn::Ident> = HashMap::new();
    // Labels offered as a did-you-mean: not reported again as labels without a variant.
    let mut suggested: Vec<&str> = Vec::new();
    for variant in &container.variants {
        let label = variant.label(&container.attrs);
        if let Some(first) = mapped.get(&label) {
            errors.push(syn::Error::new(
                variant.span(),
                format!(
                    "variants `{first}` and `{}` both map to label `{label}`",
                    variant.ident
                ),
            ));
            continue;
        }
        if !labels.contains(&label.as_str()) {
            let mut message = format!(
                "variant `{}` maps to label `{label}`, which `{qualified}` does not have (its labels: {})",
                variant.ident,
                labels
                    .iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if let Some(near) = did_you_mean(&label, labels.iter().copied()) {
                message += &format!("; did you mean `{near}`?");
                suggested.push(near);
            }
            if variant.attrs.rename.is_none() {
                message += " Name the label with #[sqlx(rename = \"...\")] or the enum's #[sqlx(rename_all = \"...\")]";
            }
            errors.push(syn::Error::new(variant.span(), message));
        }
        mapped.insert(label, variant.ident);
    }
    for label in &user.labels {
        if !mapped.contains_key(&label.name) && !suggested.contains(&label.name.as_str()) {
            errors.push(syn::Error::new_spanned(
                &container.original.ident,
                format!(
                    "`{qualified}` has label `{}` ({}) that no variant of `{}` maps to: a row with it would fail to decode; add a variant for it",
                    label.name, label.at, container.original.ident
                ),
            ));
        }
    }
    Some(EnumDef {
        sql_enum: Some((user.schema.clone(), user.name.clone())),
    })
}
