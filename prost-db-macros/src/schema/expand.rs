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
//!         // rebuild when a migration changes (first derive of the crate only)
//!         const _: &[u8] = ::core::include_bytes!("/abs/migrations/catalog/0001_x.up.sql");
//!         // type checks, spanned at each field's type
//!         const _: () = ::prost_db::__private::assert_compatible::<i64, ::prost_db::schema::pg::int8>();
//!     };
//!
//! Input:
//!     #[derive(sqlx::Type, Schema)]
//!     #[sqlx(type_name = "order_status", rename_all = "snake_case")]
//!     enum OrderStatus { Pending, Paid }
//!
//! Output:
//!     impl ::prost_db::schema::EnumColumn<::prost_db::schema::pg::Enum> for OrderStatus {
//!         const SQL_ENUM: Option<(&str, &str)> = Some(("orders", "order_status"));
//!     }
//! ```

use std::path::PathBuf;

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};

use super::enums::EnumDef;
use super::valid::SchemaDef;

pub(crate) fn expand(input: &syn::DeriveInput, def: &SchemaDef, files: &[PathBuf]) -> TokenStream {
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
    let checks = &def.checks;
    let includes = includes(files);
    let warnings = warnings(ident, &def.warnings);
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
            #includes
            #(#checks)*
            #warnings
        };
    }
}

pub(crate) fn expand_enum(
    input: &syn::DeriveInput,
    def: &EnumDef,
    files: &[PathBuf],
) -> TokenStream {
    let ident = &input.ident;
    let sql_enum = option(
        def.sql_enum
            .as_ref()
            .map(|(schema, name)| quote!((#schema, #name))),
    );
    let includes = includes(files);
    quote! {
        #[automatically_derived]
        impl ::prost_db::schema::EnumColumn<::prost_db::schema::pg::Enum> for #ident {
            const SQL_ENUM: ::core::option::Option<(&'static str, &'static str)> = #sql_enum;
        }
        const _: () = {
            #includes
        };
    }
}

fn includes(files: &[PathBuf]) -> TokenStream {
    let files = files.iter().map(|f| f.to_string_lossy().into_owned());
    quote!(#(const _: &[u8] = ::core::include_bytes!(#files);)*)
}

fn warnings(ident: &syn::Ident, notes: &[(String, String)]) -> TokenStream {
    let warnings = notes.iter().enumerate().map(|(i, (_, note))| {
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
    quote!(#(#warnings)*)
}

fn option(value: Option<TokenStream>) -> TokenStream {
    match value {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    }
}
