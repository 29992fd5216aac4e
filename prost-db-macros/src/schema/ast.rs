//! A typed view of the derive input: a struct (one field per column) or an enum (one unit
//! variant per label of a PostgreSQL enum).

use syn::{Data, DeriveInput, Fields, Ident, LitStr, Type};

use super::Errors;
use super::attr::{self, ContainerAttrs, FieldAttrs, Place};

pub(crate) enum Input<'a> {
    Struct(Container<'a>),
    Enum(EnumContainer<'a>),
}

pub(crate) struct Container<'a> {
    pub original: &'a DeriveInput,
    pub attrs: ContainerAttrs,
    pub fields: Vec<Field<'a>>,
}

pub(crate) struct Field<'a> {
    pub ident: &'a Ident,
    pub ty: &'a Type,
    pub attrs: FieldAttrs,
}

pub(crate) struct EnumContainer<'a> {
    pub original: &'a DeriveInput,
    pub attrs: ContainerAttrs,
    pub variants: Vec<Variant<'a>>,
}

pub(crate) struct Variant<'a> {
    pub ident: &'a Ident,
    pub attrs: FieldAttrs,
}

impl Field<'_> {
    /// The column name, as `sqlx::FromRow` reads it: `#[sqlx(rename)]`, else the field's
    /// name (without `r#`) under the struct's `#[sqlx(rename_all)]`.
    pub fn column(&self, container: &ContainerAttrs) -> String {
        match &self.attrs.rename {
            Some(lit) => lit.value(),
            None => {
                let name = self.ident.to_string();
                let name = name.strip_prefix("r#").map_or(name.clone(), str::to_owned);
                match container.rename_all {
                    Some(rule) => rule.apply(&name),
                    None => name,
                }
            }
        }
    }

    /// Where to report a problem with the column name.
    pub fn column_span(&self) -> proc_macro2::Span {
        self.attrs
            .rename
            .as_ref()
            .map_or_else(|| self.ident.span(), LitStr::span)
    }

    /// Whether the field is a column (not `#[sqlx(skip)]` or `#[sqlx(flatten)]`).
    pub fn is_column(&self) -> bool {
        self.attrs.not_a_column.is_none()
    }
}

impl Variant<'_> {
    /// The label, as `sqlx::Type` writes it: `#[sqlx(rename)]`, else the variant's name under
    /// the enum's `#[sqlx(rename_all)]`.
    pub fn label(&self, container: &ContainerAttrs) -> String {
        match &self.attrs.rename {
            Some(lit) => lit.value(),
            None => {
                let name = self.ident.to_string();
                match container.rename_all {
                    Some(rule) => rule.apply(&name),
                    None => name,
                }
            }
        }
    }

    pub fn span(&self) -> proc_macro2::Span {
        self.attrs
            .rename
            .as_ref()
            .map_or_else(|| self.ident.span(), LitStr::span)
    }
}

impl<'a> Input<'a> {
    /// Fails (fatally) on a tuple or unit struct, a union, or an enum with data.
    pub fn from_syn(input: &'a DeriveInput, errors: &mut Errors) -> syn::Result<Self> {
        match &input.data {
            Data::Struct(data) => {
                let named = match &data.fields {
                    Fields::Named(named) => named,
                    Fields::Unnamed(fields) => {
                        return Err(syn::Error::new_spanned(
                            fields,
                            "#[derive(Schema)] needs a struct with named fields, one per column; a tuple struct has no column names",
                        ));
                    }
                    Fields::Unit => {
                        return Err(syn::Error::new_spanned(
                            &input.ident,
                            "#[derive(Schema)] needs a struct with named fields, one per column",
                        ));
                    }
                };
                let attrs = attr::container(&input.attrs, Place::Struct, errors);
                let fields = named
                    .named
                    .iter()
                    .map(|field| Field {
                        ident: field.ident.as_ref().expect("named field"),
                        ty: &field.ty,
                        attrs: attr::field(&field.attrs, Place::Struct, errors),
                    })
                    .collect();
                Ok(Input::Struct(Container {
                    original: input,
                    attrs,
                    fields,
                }))
            }
            Data::Enum(data) => {
                if let Some(variant) = data
                    .variants
                    .iter()
                    .find(|v| !matches!(v.fields, Fields::Unit))
                {
                    return Err(syn::Error::new_spanned(
                        &variant.fields,
                        "#[derive(Schema)] on an enum checks it against a PostgreSQL enum type, whose labels carry no data: every variant must be a unit variant",
                    ));
                }
                let attrs = attr::container(&input.attrs, Place::Enum, errors);
                let variants = data
                    .variants
                    .iter()
                    .map(|variant| Variant {
                        ident: &variant.ident,
                        attrs: attr::field(&variant.attrs, Place::Enum, errors),
                    })
                    .collect();
                Ok(Input::Enum(EnumContainer {
                    original: input,
                    attrs,
                    variants,
                }))
            }
            Data::Union(data) => Err(syn::Error::new_spanned(
                data.union_token,
                "#[derive(Schema)] needs a struct with named fields, one per column",
            )),
        }
    }
}
