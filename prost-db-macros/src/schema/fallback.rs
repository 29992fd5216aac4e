//! What a failed derive emits: the errors, plus an impl with an empty description (or, for
//! an enum, one that accepts any enum column) so the rest of the crate does not fail a
//! second time with "trait `Schema` not implemented".

use proc_macro2::TokenStream;
use quote::quote;

pub(crate) fn expand(input: &syn::DeriveInput, errors: TokenStream) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    if let syn::Data::Enum(_) = input.data {
        return quote! {
            #errors
            #[automatically_derived]
            impl #impl_generics ::prost_db::schema::EnumColumn<::prost_db::schema::pg::Enum> for #ident #ty_generics #where_clause {
                const SQL_ENUM: ::core::option::Option<(&'static str, &'static str)> = ::core::option::Option::None;
            }
        };
    }
    quote! {
        #errors
        #[automatically_derived]
        impl #impl_generics ::prost_db::schema::Schema for #ident #ty_generics #where_clause {
            const TABLE: &'static ::prost_db::schema::TableDescription = &::prost_db::schema::TableDescription {
                schema: "",
                name: "",
                columns: &[],
            };
        }
    }
}
