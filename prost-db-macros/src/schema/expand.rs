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
//!         // type checks, spanned at each field's type, in a function that is never called
//!         fn __prost_db_checks() {
//!             ::prost_db::__private::assert_compatible::<i64, ::prost_db::schema::pg::int8>();
//!         }
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
    let checks = (!def.checks.is_empty()).then(|| {
        let checks = &def.checks;
        quote! {
            // Type-checked, never called: one function per struct, no constant evaluation.
            #[allow(dead_code)]
            fn __prost_db_checks() {
                #(#checks)*
            }
        }
    });
    let const_checks = &def.const_checks;
    let includes = includes(files);
    let warnings = warnings(ident, &format!("{schema}.{table}"), &def.warnings);
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
            #checks
            #(#const_checks)*
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

/// One warning naming every statement after which the table is uncertain.
fn warnings(ident: &syn::Ident, table: &str, notes: &[(String, String)]) -> TokenStream {
    if notes.is_empty() {
        return TokenStream::new();
    }
    let statements: Vec<&str> = notes.iter().map(|(_, n)| n.as_str()).collect();
    let note = format!(
        "the catalog of `{table}` is uncertain after {}; fields are checked against the columns it knows",
        statements.join("; and after ")
    );
    let name = quote::format_ident!("prost_db_schema_warning", span = ident.span());
    quote_spanned! {ident.span()=>
        #[deprecated(note = #note)]
        #[allow(non_camel_case_types)]
        struct #name;
        let _ = #name;
    }
}

fn option(value: Option<TokenStream>) -> TokenStream {
    match value {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    }
}
