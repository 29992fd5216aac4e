//! The derive's attributes, parsed into values that remember their spans:
//!
//! - `#[schema(...)]`: what only this derive needs (the table, the migrations, opt-outs);
//! - `#[sqlx(...)]`: how `sqlx::FromRow` and `sqlx::Type` name columns and labels
//!   (`rename`, `rename_all`, `skip`, `flatten`, `json`, `try_from`, `type_name`), read so
//!   that both derives always agree. Keys this derive does not need are left to sqlx.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Attribute, LitStr, Type};

use prost_db_core::catalog::did_you_mean;

use super::Errors;
use super::case::{self, RenameAll};

const TABLE: &str = "table";
const SCHEMA: &str = "schema";
const MIGRATIONS: &str = "migrations";
const UNCHECKED: &str = "unchecked";
const UNCHECKED_TYPE: &str = "unchecked_type";

const STRUCT_KEYS: &[&str] = &[TABLE, SCHEMA, MIGRATIONS, UNCHECKED];
const FIELD_KEYS: &[&str] = &[UNCHECKED, UNCHECKED_TYPE];
const ENUM_KEYS: &[&str] = &[SCHEMA, MIGRATIONS, UNCHECKED];

/// `#[schema(...)]` and `#[sqlx(...)]` on the struct or enum.
#[derive(Default)]
pub(crate) struct ContainerAttrs {
    pub table: Option<LitStr>,
    pub schema: Option<LitStr>,
    pub migrations: Option<LitStr>,
    pub unchecked: Option<Span>,
    /// `#[sqlx(rename_all = "...")]`.
    pub rename_all: Option<RenameAll>,
    /// `#[sqlx(type_name = "...")]` (enums).
    pub type_name: Option<LitStr>,
    /// `#[repr(...)]` or `#[sqlx(transparent)]`: not a PostgreSQL enum.
    pub not_an_enum: Option<Span>,
    /// One of its attributes was wrong (and reported).
    pub invalid: bool,
}

/// `#[schema(...)]` and `#[sqlx(...)]` on a field or variant.
#[derive(Default)]
pub(crate) struct FieldAttrs {
    pub unchecked: Option<Span>,
    pub unchecked_type: Option<Span>,
    /// `#[sqlx(rename = "...")]`.
    pub rename: Option<LitStr>,
    /// `#[sqlx(skip)]` or `#[sqlx(flatten)]`: not a column.
    pub not_a_column: Option<Span>,
    /// `#[sqlx(json)]`: any Rust type, in a `json` or `jsonb` column.
    pub json: Option<Span>,
    /// `#[sqlx(try_from = "T")]`: the column holds a `T`.
    pub try_from: Option<Type>,
    /// One of its attributes was wrong (and reported): the field is not checked further.
    pub invalid: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    Struct,
    Enum,
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

fn list(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Consumes whatever follows an unknown key (`= value` or `(...)`), so that the keys after
/// it are still read.
fn skip_value(meta: &syn::meta::ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        let _content;
        syn::parenthesized!(_content in meta.input);
    }
    Ok(())
}

fn unknown(
    meta: &syn::meta::ParseNestedMeta,
    expected: &[&str],
    errors: &mut Errors,
) -> syn::Result<()> {
    let key = meta
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::");
    let hint = did_you_mean(&key, expected.iter().copied())
        .map(|near| format!("did you mean `{near}`? "))
        .unwrap_or_default();
    errors.push(meta.error(format_args!(
        "unknown schema attribute `{key}`; {hint}expected one of {}",
        list(expected)
    )));
    skip_value(meta)
}

fn sqlx_attrs(attrs: &[Attribute]) -> impl Iterator<Item = &Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("sqlx"))
}

fn schema_attrs(attrs: &[Attribute]) -> impl Iterator<Item = &Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("schema"))
}

pub(crate) fn container(attrs: &[Attribute], place: Place, errors: &mut Errors) -> ContainerAttrs {
    let before = errors.len();
    let mut out = container_attrs(attrs, place, errors);
    out.invalid = errors.len() > before;
    out
}

fn container_attrs(attrs: &[Attribute], place: Place, errors: &mut Errors) -> ContainerAttrs {
    let mut out = ContainerAttrs::default();
    let keys = match place {
        Place::Struct => STRUCT_KEYS,
        Place::Enum => ENUM_KEYS,
    };
    for attr in schema_attrs(attrs) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(TABLE) && place == Place::Struct {
                // #[schema(table = "products")] or "catalog.products"
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
                set(
                    &mut out.unchecked,
                    meta.path.require_ident()?.span(),
                    &meta,
                    errors,
                );
            } else if ["column", "skip", UNCHECKED_TYPE]
                .iter()
                .any(|k| meta.path.is_ident(k))
            {
                let key = meta.path.require_ident()?.to_string();
                let place = if place == Place::Struct {
                    "struct"
                } else {
                    "enum"
                };
                errors.push(meta.error(format_args!(
                    "`{key}` belongs on a field, not on the {place}; the {place} takes {}",
                    list(keys)
                )));
                skip_value(&meta)?;
            } else {
                unknown(&meta, keys, errors)?;
            }
            Ok(())
        });
        if let Err(error) = result {
            errors.push(error);
        }
    }
    for attr in sqlx_attrs(attrs) {
        // Only what names columns and labels; sqlx's own derives check the rest.
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename_all") {
                let lit: LitStr = meta.value()?.parse()?;
                match RenameAll::parse(&lit.value()) {
                    Some(rule) => out.rename_all = Some(rule),
                    None => errors.push(syn::Error::new(
                        lit.span(),
                        format!(
                            "unknown rename_all rule `{}`; sqlx accepts {}",
                            lit.value(),
                            list(case::RULES)
                        ),
                    )),
                }
            } else if meta.path.is_ident("type_name") {
                out.type_name = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("transparent") {
                out.not_an_enum = Some(meta.path.require_ident()?.span());
            } else {
                skip_value(&meta)?;
            }
            Ok(())
        });
    }
    if let Some(repr) = attrs.iter().find(|a| a.path().is_ident("repr")) {
        out.not_an_enum = Some(
            repr.path()
                .require_ident()
                .map_or_else(|_| Span::call_site(), |i| i.span()),
        );
    }
    out
}

pub(crate) fn field(attrs: &[Attribute], place: Place, errors: &mut Errors) -> FieldAttrs {
    let before = errors.len();
    let mut out = field_attrs(attrs, place, errors);
    out.invalid = errors.len() > before;
    out
}

fn field_attrs(attrs: &[Attribute], place: Place, errors: &mut Errors) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    for attr in schema_attrs(attrs) {
        let result = attr.parse_nested_meta(|meta| {
            if place == Place::Enum {
                errors.push(meta.error(
                    "a variant takes no schema attribute; name its label with #[sqlx(rename = \"...\")]",
                ));
                return skip_value(&meta);
            }
            if meta.path.is_ident(UNCHECKED) {
                // #[schema(unchecked)]
                set(&mut out.unchecked, meta.path.require_ident()?.span(), &meta, errors);
            } else if meta.path.is_ident(UNCHECKED_TYPE) {
                // #[schema(unchecked_type)]
                set(&mut out.unchecked_type, meta.path.require_ident()?.span(), &meta, errors);
            } else if meta.path.is_ident("column") {
                let value: LitStr = meta.value()?.parse()?;
                errors.push(syn::Error::new(
                    meta.path.span(),
                    format!(
                        "`#[schema(column)]` is not read by `sqlx::FromRow`, so a row would fail with ColumnNotFound; write #[sqlx(rename = \"{}\")], which both derives read",
                        value.value()
                    ),
                ));
            } else if meta.path.is_ident("skip") {
                errors.push(meta.error(
                    "`#[schema(skip)]` is not read by `sqlx::FromRow`, which would still read the column; write #[sqlx(skip)], which both derives read",
                ));
            } else if [TABLE, SCHEMA, MIGRATIONS].iter().any(|k| meta.path.is_ident(k)) {
                let key = meta.path.require_ident()?.to_string();
                errors.push(meta.error(format_args!(
                    "`{key}` belongs on the struct, not on a field; a field takes {}",
                    list(FIELD_KEYS)
                )));
                skip_value(&meta)?;
            } else {
                unknown(&meta, FIELD_KEYS, errors)?;
            }
            Ok(())
        });
        if let Err(error) = result {
            errors.push(error);
        }
    }
    for attr in sqlx_attrs(attrs) {
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                out.rename = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("skip") || meta.path.is_ident("flatten") {
                out.not_a_column = Some(meta.path.require_ident()?.span());
            } else if meta.path.is_ident("json") {
                out.json = Some(meta.path.require_ident()?.span());
                skip_value(&meta)?;
            } else if meta.path.is_ident("try_from") {
                let lit: LitStr = meta.value()?.parse()?;
                match lit.parse::<Type>() {
                    Ok(ty) => out.try_from = Some(ty),
                    Err(error) => errors.push(error),
                }
            } else {
                skip_value(&meta)?;
            }
            Ok(())
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_container_and_reports_unknown_and_duplicate_keys() {
        let input: syn::DeriveInput = syn::parse_quote! {
            #[schema(table = "products", schema = "catalog")]
            #[schema(table = "again", colour = "red", migrations = "m")]
            #[sqlx(rename_all = "camelCase")]
            struct P;
        };
        let mut errors = Errors::default();
        let attrs = container(&input.attrs, Place::Struct, &mut errors);
        assert_eq!(attrs.table.unwrap().value(), "products");
        assert_eq!(attrs.schema.unwrap().value(), "catalog");
        assert_eq!(
            attrs.migrations.unwrap().value(),
            "m",
            "keys after an unknown one are read"
        );
        assert_eq!(attrs.rename_all, Some(RenameAll::Camel));
        let messages: Vec<String> = errors.into_vec().iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert_eq!(messages[0], "duplicate schema attribute `table`");
        assert!(messages[1].starts_with("unknown schema attribute `colour`"));
    }

    #[test]
    fn a_misspelled_key_gets_a_did_you_mean() {
        let input: syn::DeriveInput = syn::parse_quote! {
            #[schema(tabel = "products")]
            struct P;
        };
        let mut errors = Errors::default();
        container(&input.attrs, Place::Struct, &mut errors);
        let message = errors.into_vec()[0].to_string();
        assert!(message.contains("did you mean `table`?"), "{message}");
    }

    #[test]
    fn sqlx_names_columns_and_schema_column_is_an_error() {
        let field: syn::Field = syn::parse_quote! {
            #[sqlx(rename = "product_name", default)]
            #[schema(unchecked_type)]
            name: String
        };
        let mut errors = Errors::default();
        let attrs = super::field(&field.attrs, Place::Struct, &mut errors);
        assert_eq!(attrs.rename.unwrap().value(), "product_name");
        assert!(attrs.unchecked_type.is_some() && attrs.not_a_column.is_none());
        assert!(errors.into_vec().is_empty());

        let field: syn::Field = syn::parse_quote! {
            #[schema(column = "product_name")]
            name: String
        };
        let mut errors = Errors::default();
        super::field(&field.attrs, Place::Struct, &mut errors);
        let message = errors.into_vec()[0].to_string();
        assert!(
            message.contains("#[sqlx(rename = \"product_name\")]"),
            "{message}"
        );
    }
}
