//! A typed view of the derive input.

use syn::{Data, DeriveInput, Fields, Ident, LitStr, Type};

use super::Errors;
use super::attr::{self, ContainerAttrs, FieldAttrs};

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

impl Field<'_> {
    /// The column name: `#[schema(column = "...")]` or the field name without `r#`.
    pub fn column(&self) -> String {
        match &self.attrs.column {
            Some(lit) => lit.value(),
            None => {
                let name = self.ident.to_string();
                name.strip_prefix("r#").map(str::to_owned).unwrap_or(name)
            }
        }
    }

    /// Where to report a problem with the column name.
    pub fn column_span(&self) -> proc_macro2::Span {
        self.attrs
            .column
            .as_ref()
            .map_or_else(|| self.ident.span(), LitStr::span)
    }
}

impl<'a> Container<'a> {
    /// Fails (fatally) on anything but a struct with named fields.
    pub fn from_syn(input: &'a DeriveInput, errors: &mut Errors) -> syn::Result<Self> {
        let attrs = attr::container(&input.attrs, errors);
        let named = match &input.data {
            Data::Struct(data) => match &data.fields {
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
            },
            Data::Enum(data) => {
                return Err(syn::Error::new_spanned(
                    data.enum_token,
                    "#[derive(Schema)] needs a struct with named fields, one per column; an enum cannot describe a table row",
                ));
            }
            Data::Union(data) => {
                return Err(syn::Error::new_spanned(
                    data.union_token,
                    "#[derive(Schema)] needs a struct with named fields, one per column",
                ));
            }
        };
        let fields = named
            .named
            .iter()
            .map(|field| Field {
                ident: field.ident.as_ref().expect("named field"),
                ty: &field.ty,
                attrs: attr::field(&field.attrs, errors),
            })
            .collect();
        Ok(Container {
            original: input,
            attrs,
            fields,
        })
    }
}
