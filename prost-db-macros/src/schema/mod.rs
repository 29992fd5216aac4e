//! `#[derive(Schema)]`: parse (`attr`, `ast`), find and parse the migrations once
//! (`catalog`), check the struct against them (`valid`), generate (`expand`), or emit the
//! errors with a stub impl (`fallback`).

mod ast;
mod attr;
mod catalog;
mod expand;
mod fallback;
mod valid;

use std::path::PathBuf;

use proc_macro2::TokenStream;
use syn::DeriveInput;

pub(crate) use crate::errors::Errors;

pub(crate) fn derive(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    let mut errors = Errors::default();
    match try_expand(&input, &mut errors) {
        Some(tokens) => {
            let errors = errors.to_compile_errors();
            quote::quote!(#tokens #errors)
        }
        None => fallback::expand(&input, errors.to_compile_errors()),
    }
}

/// `None` when the errors leave nothing to generate.
fn try_expand(input: &DeriveInput, errors: &mut Errors) -> Option<TokenStream> {
    let container = match ast::Container::from_syn(input, errors) {
        Ok(container) => container,
        Err(error) => {
            errors.push(error);
            return None;
        }
    };
    if container.attrs.unchecked.is_some() {
        let def = valid::unchecked(&container, errors)?;
        return Some(expand::expand(input, &def, &[]));
    }
    let attribute = container.attrs.migrations.as_ref().map(|lit| {
        // Like `include_str!`, relative to the file that holds the attribute.
        let source_dir = proc_macro::is_available()
            .then(|| lit.span().unwrap().local_file())
            .flatten()
            .and_then(|file| file.parent().map(PathBuf::from));
        (lit.value(), source_dir)
    });
    let root = catalog::root(
        attribute
            .as_ref()
            .map(|(path, dir)| (path.as_str(), dir.clone())),
    );
    let loaded = match catalog::load(&root) {
        Ok(loaded) => loaded,
        Err(message) => {
            let span = container
                .attrs
                .migrations
                .as_ref()
                .map_or_else(|| input.ident.span(), syn::LitStr::span);
            errors.push(syn::Error::new(span, message));
            return None;
        }
    };
    let root_name = catalog::display_root(&root);
    let mut def = valid::check(&container, &loaded.catalog, &root_name, errors)?;
    let first = catalog::first_use_in_crate(&root);
    if first {
        // Statements that touch no known table are reported once per crate.
        def.warnings.extend(
            loaded
                .catalog
                .warnings()
                .iter()
                .filter(|w| w.tables.is_empty())
                .map(|w| format!("migration statement not modelled: {w}")),
        );
    }
    let files: &[PathBuf] = if first { &loaded.files } else { &[] };
    Some(expand::expand(input, &def, files))
}

#[cfg(test)]
mod tests {
    use quote::quote;

    fn fixture() -> String {
        let root =
            std::env::temp_dir().join(format!("prost-db-macros-derive-{}", std::process::id()));
        std::fs::create_dir_all(root.join("app")).unwrap();
        std::fs::write(
            root.join("app/0001_a.up.sql"),
            "CREATE TABLE accounts (id BIGINT PRIMARY KEY, login TEXT);",
        )
        .unwrap();
        root.to_string_lossy().into_owned()
    }

    #[test]
    fn reports_every_field_problem_and_still_implements_the_trait() {
        let root = fixture();
        let output = super::derive(quote! {
            #[schema(migrations = #root, table = "accounts")]
            struct Account { id: i64, login: String, logn: String }
        })
        .to_string();
        assert!(
            output.contains("column `login` of `app.accounts` is nullable"),
            "{output}"
        );
        assert!(output.contains("did you mean `login`"), "{output}");
        assert!(
            output.contains("assert_compatible :: < i64 , :: prost_db :: schema :: pg :: int8 >"),
            "{output}"
        );
        assert!(
            output.contains("impl :: prost_db :: schema :: Schema for Account"),
            "{output}"
        );
    }

    #[test]
    fn unattributed_catalog_warnings_show_once_per_crate() {
        let root =
            std::env::temp_dir().join(format!("prost-db-macros-warn-{}", std::process::id()));
        std::fs::create_dir_all(root.join("app")).unwrap();
        std::fs::write(
            root.join("app/0001_a.up.sql"),
            "CREATE TABLE a (id INT);\nALTER TABLE missing ADD COLUMN x INT;",
        )
        .unwrap();
        let root = root.to_string_lossy().into_owned();
        let derive = || {
            super::derive(quote! {
                #[schema(migrations = #root, table = "a")]
                struct A { id: Option<i32> }
            })
            .to_string()
        };
        let first = derive();
        assert!(
            first.contains("app/0001_a.up.sql:2: ALTER TABLE on `app.missing`"),
            "{first}"
        );
        assert!(first.contains("include_bytes"), "{first}");
        let second = derive();
        assert!(
            !second.contains("deprecated") && !second.contains("include_bytes"),
            "{second}"
        );
    }

    #[test]
    fn an_unknown_table_gives_one_error_and_a_stub_impl() {
        let root = fixture();
        let output = super::derive(quote! {
            #[schema(migrations = #root, table = "acounts")]
            struct Account { id: i64 }
        })
        .to_string();
        assert!(output.contains("did you mean `accounts`"), "{output}");
        assert_eq!(output.matches("compile_error").count(), 1, "{output}");
        assert!(output.contains("schema : \"\""), "{output}");
    }
}
