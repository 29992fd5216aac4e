//! `embed_migrations!("migrations/shop")`: reads a migrations root at compile time, through
//! the same discovery as the runtime, and expands to a `prost_db::migrate::Migrations`
//! built from `include_str!`s (so editing a file rebuilds the crate).

use std::path::{Path, PathBuf};

use proc_macro2::{Span, TokenStream};
use prost_db_core::source::{SchemaMigrations, Script, load_root};
use quote::quote;
use syn::LitStr;

/// Parses the argument, loads the directory and expands; a problem becomes one
/// `compile_error!` on the argument.
pub fn expand(input: TokenStream) -> TokenStream {
    match try_expand(input) {
        Ok(tokens) => tokens,
        Err(error) => {
            let error = error.to_compile_error();
            // Keep the expression's type so the caller's code still type-checks.
            quote! {{
                #error;
                ::prost_db::migrate::Migrations::from_embedded(::std::vec::Vec::new())
            }}
        }
    }
}

fn try_expand(input: TokenStream) -> syn::Result<TokenStream> {
    let literal: LitStr = syn::parse2(input).map_err(|e| {
        syn::Error::new(
            e.span(),
            "expected the migrations root as a string literal, relative to the crate's Cargo.toml: `embed_migrations!(\"migrations/shop\")`",
        )
    })?;
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").map_err(|_| {
        syn::Error::new(
            literal.span(),
            "CARGO_MANIFEST_DIR is not set; build with cargo",
        )
    })?;
    let root = Path::new(&manifest_dir).join(literal.value());
    if !root.is_dir() {
        return Err(syn::Error::new(
            literal.span(),
            format!("migrations root {} is not a directory", root.display()),
        ));
    }
    let schemas = load_root(&root).map_err(|e| syn::Error::new(literal.span(), e.to_string()))?;
    Ok(tokens(&schemas, Path::new(&manifest_dir), literal.span()))
}

/// The expansion for already loaded migrations; paths in messages are shown relative to
/// `base`.
pub fn tokens(schemas: &[SchemaMigrations], base: &Path, span: Span) -> TokenStream {
    let relative = |path: &str| -> String {
        Path::new(path)
            .strip_prefix(base)
            .map_or_else(|_| path.to_owned(), |p| p.display().to_string())
    };
    let script = |script: &Script| {
        let shown = relative(&script.path);
        let absolute = PathBuf::from(&*script.path).display().to_string();
        let absolute = LitStr::new(&absolute, span);
        quote! {
            ::prost_db::__private::Script {
                path: ::std::borrow::Cow::Borrowed(#shown),
                sql: ::std::borrow::Cow::Borrowed(::core::include_str!(#absolute)),
            }
        }
    };
    let schemas = schemas.iter().map(|schema| {
        let name = &*schema.schema;
        let dir = schema
            .migrations
            .first()
            .and_then(|m| {
                Path::new(&*m.up.path)
                    .parent()
                    .map(|p| relative(&p.display().to_string()))
            })
            .unwrap_or_else(|| name.to_owned());
        let migrations = schema.migrations.iter().map(|m| {
            let version = m.version;
            let migration_name = &*m.name;
            let no_transaction = m.no_transaction;
            let up = script(&m.up);
            let down = match &m.down {
                Some(down) => {
                    let down = script(down);
                    quote! { ::core::option::Option::Some(#down) }
                }
                None => quote! { ::core::option::Option::None },
            };
            quote! {
                ::prost_db::__private::Migration {
                    version: #version,
                    name: ::std::borrow::Cow::Borrowed(#migration_name),
                    up: #up,
                    down: #down,
                    no_transaction: #no_transaction,
                }
            }
        });
        quote! {
            (#dir, ::prost_db::__private::SchemaMigrations {
                schema: ::std::borrow::Cow::Borrowed(#name),
                migrations: ::std::vec![#(#migrations),*],
            })
        }
    });
    quote! {
        ::prost_db::migrate::Migrations::from_embedded(::std::vec![#(#schemas),*])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_to_include_str_with_relative_paths_in_messages() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/shop");
        let schemas = load_root(&root).unwrap();
        let base = root.parent().unwrap();
        let out = tokens(&schemas, base, Span::call_site()).to_string();
        assert!(out.contains("include_str !"), "{out}");
        assert!(
            out.contains("\"shop/catalog/0001_create_categories.up.sql\""),
            "{out}"
        );
        assert!(out.contains("from_embedded"));
    }

    #[test]
    fn a_bad_argument_is_one_compile_error() {
        let out = expand(quote! { 42 }).to_string();
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("string literal"), "{out}");
    }
}
