//! The generated code.
//!
//! ```text
//! Input:
//!     #[derive(Schema)]
//!     #[schema(schema = "catalog", table = "categories")]
//!     struct Category { id: i64, description: Option<String> }
//!
//! Output:
//!     #[automatically_derived]
//!     impl ::prost_db::schema::Schema for Category {
//!         const TABLE: &'static ::prost_db::schema::TableDescription = &TableDescription {
//!             schema: "catalog", name: "categories",
//!             columns: &[ColumnDescription { name: "id", sql_type: Some("int8"), nullable: Some(false) }, ...],
//!         };
//!     }
//!     const _: () = {
//!         // rebuild when a migration changes
//!         const _: &[u8] = ::core::include_bytes!("/abs/migrations/catalog/0001_x.up.sql");
//!         // type checks, spanned at each field's type
//!         const _: () = ::prost_db::__private::assert_compatible::<i64, ::prost_db::schema::pg::int8>();
//!     };
//! ```

use std::path::PathBuf;

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::valid::SchemaDef;

pub(crate) fn expand(
    input: &syn::DeriveInput,
    def: &SchemaDef<'_>,
    files: &[PathBuf],
) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let (schema, table) = (&def.schema, &def.table);
    let columns = def.columns.iter().map(|c| {
        let name = &c.name;
        let sql_type = option(c.sql_type.as_ref().map(|t| quote!(#t)));
        let nullable = option(c.nullable.map(|n| quote!(#n)));
        quote! {
            ::prost_db::schema::ColumnDescription { name: #name, sql_type: #sql_type, nullable: #nullable }
        }
    });
    let generic = !input.generics.params.is_empty();
    let checks = def
        .columns
        .iter()
        .filter(|_| !generic)
        .filter_map(|c| c.check.as_ref())
        .map(|(ty, marker)| {
            quote_spanned! {ty.span()=>
                const _: () = ::prost_db::__private::assert_compatible::<#ty, #marker>();
            }
        });
    let files = files.iter().map(|f| f.to_string_lossy().into_owned());
    let warnings = def.warnings.iter().enumerate().map(|(i, note)| {
        let name = match i {
            0 => quote::format_ident!("prost_db_schema_warning", span = ident.span()),
            i => quote::format_ident!("prost_db_schema_warning_{}", i + 1, span = ident.span()),
        };
        quote_spanned! {ident.span()=>
            #[deprecated(note = #note)]
            #[allow(non_camel_case_types)]
            struct #name;
            let _ = #name;
        }
    });
    quote! {
        #[automatically_derived]
        impl #impl_generics ::prost_db::schema::Schema for #ident #ty_generics #where_clause {
            const TABLE: &'static ::prost_db::schema::TableDescription = &::prost_db::schema::TableDescription {
                schema: #schema,
                name: #table,
                columns: &[#(#columns),*],
            };
        }
        const _: () = {
            #(const _: &[u8] = ::core::include_bytes!(#files);)*
            #(#checks)*
            #(#warnings)*
        };
    }
}

fn option(value: Option<TokenStream>) -> TokenStream {
    match value {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    }
}
