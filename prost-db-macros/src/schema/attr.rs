//! `#[schema(...)]` helper attributes, parsed into values that remember their spans.

use proc_macro2::Span;
use syn::{Attribute, LitStr};

use super::Errors;

const TABLE: &str = "table";
const SCHEMA: &str = "schema";
const MIGRATIONS: &str = "migrations";
const UNCHECKED: &str = "unchecked";
const COLUMN: &str = "column";
const SKIP: &str = "skip";

const CONTAINER_KEYS: &str = "`table`, `schema`, `migrations`, `unchecked`";
const FIELD_KEYS: &str = "`column`, `skip`, `unchecked`";

/// `#[schema(...)]` on the struct.
#[derive(Default)]
pub(crate) struct ContainerAttrs {
    pub table: Option<LitStr>,
    pub schema: Option<LitStr>,
    pub migrations: Option<LitStr>,
    pub unchecked: Option<Span>,
}

/// `#[schema(...)]` on a field.
#[derive(Default)]
pub(crate) struct FieldAttrs {
    pub column: Option<LitStr>,
    pub skip: Option<Span>,
    pub unchecked: Option<Span>,
}

fn set<T>(slot: &mut Option<T>, value: T, meta: &syn::meta::ParseNestedMeta, errors: &mut Errors) {
    if slot.is_some() {
        let key = meta
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        errors.push(meta.error(format_args!("duplicate schema attribute `{key}`")));
    } else {
        *slot = Some(value);
    }
}

fn schema_attrs(attrs: &[Attribute]) -> impl Iterator<Item = &Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("schema"))
}

pub(crate) fn container(attrs: &[Attribute], errors: &mut Errors) -> ContainerAttrs {
    let mut out = ContainerAttrs::default();
    for attr in schema_attrs(attrs) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(TABLE) {
                // #[schema(table = "products")]
                let value = meta.value()?.parse()?;
                set(&mut out.table, value, &meta, errors);
            } else if meta.path.is_ident(SCHEMA) {
                // #[schema(schema = "catalog")]
                let value = meta.value()?.parse()?;
                set(&mut out.schema, value, &meta, errors);
            } else if meta.path.is_ident(MIGRATIONS) {
                // #[schema(migrations = "../migrations")], relative to this source file
                let value = meta.value()?.parse()?;
                set(&mut out.migrations, value, &meta, errors);
            } else if meta.path.is_ident(UNCHECKED) {
                // #[schema(unchecked)]
                set(&mut out.unchecked, meta.path.require_ident()?.span(), &meta, errors);
            } else if meta.path.is_ident(COLUMN) || meta.path.is_ident(SKIP) {
                let key = meta.path.require_ident()?;
                return Err(meta.error(format_args!(
                    "`{key}` belongs on a field, not on the struct; the struct takes {CONTAINER_KEYS}"
                )));
            } else {
                return Err(unknown(&meta, CONTAINER_KEYS));
            }
            Ok(())
        });
        if let Err(error) = result {
            errors.push(error);
        }
    }
    out
}

pub(crate) fn field(attrs: &[Attribute], errors: &mut Errors) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    for attr in schema_attrs(attrs) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(COLUMN) {
                // #[schema(column = "product_name")]
                let value = meta.value()?.parse()?;
                set(&mut out.column, value, &meta, errors);
            } else if meta.path.is_ident(SKIP) {
                // #[schema(skip)]
                set(
                    &mut out.skip,
                    meta.path.require_ident()?.span(),
                    &meta,
                    errors,
                );
            } else if meta.path.is_ident(UNCHECKED) {
                // #[schema(unchecked)]
                set(
                    &mut out.unchecked,
                    meta.path.require_ident()?.span(),
                    &meta,
                    errors,
                );
            } else if [TABLE, SCHEMA, MIGRATIONS]
                .iter()
                .any(|k| meta.path.is_ident(k))
            {
                let key = meta.path.require_ident()?;
                return Err(meta.error(format_args!(
                    "`{key}` belongs on the struct, not on a field; a field takes {FIELD_KEYS}"
                )));
            } else {
                return Err(unknown(&meta, FIELD_KEYS));
            }
            Ok(())
        });
        if let Err(error) = result {
            errors.push(error);
        }
    }
    out
}

fn unknown(meta: &syn::meta::ParseNestedMeta, expected: &str) -> syn::Error {
    let key = meta
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::");
    meta.error(format_args!(
        "unknown schema attribute `{key}`; expected one of {expected}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_container_and_reports_unknown_and_duplicate_keys() {
        let input: syn::DeriveInput = syn::parse_quote! {
            #[schema(table = "products", schema = "catalog")]
            #[schema(table = "again", colour = "red")]
            struct P;
        };
        let mut errors = Errors::default();
        let attrs = container(&input.attrs, &mut errors);
        assert_eq!(attrs.table.unwrap().value(), "products");
        assert_eq!(attrs.schema.unwrap().value(), "catalog");
        let messages: Vec<String> = errors.into_vec().iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert_eq!(messages[0], "duplicate schema attribute `table`");
        assert!(messages[1].starts_with("unknown schema attribute `colour`"));
    }

    #[test]
    fn parses_field_attributes() {
        let field: syn::Field = syn::parse_quote! {
            #[schema(column = "product_name", unchecked)]
            name: String
        };
        let mut errors = Errors::default();
        let attrs = super::field(&field.attrs, &mut errors);
        assert_eq!(attrs.column.unwrap().value(), "product_name");
        assert!(attrs.unchecked.is_some() && attrs.skip.is_none());
        assert!(errors.into_vec().is_empty());
    }
}
