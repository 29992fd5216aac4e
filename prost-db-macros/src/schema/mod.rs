//! `#[derive(Schema)]`: parse (`attr`, `ast`), find and parse the migrations once
//! (`catalog`), check a struct (`valid`) or an enum (`enums`) against them, generate
//! (`expand`), or emit the errors with a stub impl (`fallback`).

mod ast;
mod attr;
mod case;
mod catalog;
mod enums;
mod expand;
mod fallback;
mod valid;

use std::path::PathBuf;

use proc_macro2::TokenStream;
use syn::DeriveInput;

use ast::Input;
use attr::ContainerAttrs;

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

/// The migrations: their catalog, the root as shown in messages, and the files to
/// `include_bytes!` (only in the first derive of the crate).
struct Migrations {
    loaded: catalog::Loaded,
    root: PathBuf,
    root_name: String,
}

fn migrations(
    input: &DeriveInput,
    attrs: &ContainerAttrs,
    errors: &mut Errors,
) -> Option<Migrations> {
    let attribute = attrs.migrations.as_ref().map(|lit| {
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
    // Messages name the root as the user wrote it.
    let root_name = attrs
        .migrations
        .as_ref()
        .map_or_else(|| catalog::display_root(&root), syn::LitStr::value);
    match catalog::load(&root, &root_name) {
        Ok(loaded) => Some(Migrations {
            root_name,
            loaded,
            root,
        }),
        Err(message) => {
            let span = attrs
                .migrations
                .as_ref()
                .map_or_else(|| input.ident.span(), syn::LitStr::span);
            errors.push(syn::Error::new(span, message));
            None
        }
    }
}

/// `None` when the errors leave nothing to generate.
fn try_expand(input: &DeriveInput, errors: &mut Errors) -> Option<TokenStream> {
    let parsed = match Input::from_syn(input, errors) {
        Ok(parsed) => parsed,
        Err(error) => {
            errors.push(error);
            return None;
        }
    };
    let container_invalid = match &parsed {
        Input::Struct(c) => c.attrs.invalid,
        Input::Enum(c) => c.attrs.invalid,
    };
    if container_invalid {
        // A misspelled or misplaced attribute on the struct: checking the table it names
        // as it stands would only add a second, misleading error. (A field's bad attribute
        // leaves that field unchecked, and the others checked.)
        return None;
    }
    match parsed {
        Input::Struct(container) => {
            if container.attrs.unchecked.is_some() {
                let def = valid::unchecked(&container, errors)?;
                return Some(expand::expand(input, &def, &[]));
            }
            let migrations = migrations(input, &container.attrs, errors)?;
            let catalog = &migrations.loaded.catalog;
            let mut def = valid::check(&container, catalog, &migrations.root_name, errors)?;
            // Each warning once per crate, on the first struct of a table it concerns.
            def.warnings
                .retain(|(key, _)| catalog::first_warning_in_crate(&migrations.root, key));
            Some(expand::expand(input, &def, include(&migrations)))
        }
        Input::Enum(container) => {
            if container.attrs.unchecked.is_some() {
                let def = enums::unchecked(&container, errors)?;
                return Some(expand::expand_enum(input, &def, &[]));
            }
            let migrations = migrations(input, &container.attrs, errors)?;
            let def = enums::check(
                &container,
                &migrations.loaded.catalog,
                &migrations.root_name,
                errors,
            )?;
            Some(expand::expand_enum(input, &def, include(&migrations)))
        }
    }
}

fn include(migrations: &Migrations) -> &[PathBuf] {
    if catalog::first_use_in_crate(&migrations.root) {
        &migrations.loaded.files
    } else {
        &[]
    }
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
    fn a_warning_shows_once_per_crate_on_a_struct_of_its_table_only() {
        let root =
            std::env::temp_dir().join(format!("prost-db-macros-warn-{}", std::process::id()));
        std::fs::create_dir_all(root.join("app")).unwrap();
        std::fs::write(
            root.join("app/0001_a.up.sql"),
            "CREATE TABLE a (id INT);\nCREATE TABLE b (id INT);\n\
             ALTER TABLE missing ADD COLUMN x INT;\n\
             DO $$ BEGIN IF random() > 2 THEN ALTER TABLE a ADD COLUMN y INT; END IF; END $$;",
        )
        .unwrap();
        let root = root.to_string_lossy().into_owned();
        let derive = |table: &str| {
            super::derive(quote! {
                #[schema(migrations = #root, table = #table)]
                struct S { id: Option<i32> }
            })
            .to_string()
        };
        let b = derive("b");
        assert!(b.contains("include_bytes"), "{b}");
        assert!(
            !b.contains("deprecated"),
            "a warning about another table: {b}"
        );
        let a = derive("a");
        assert!(a.contains("uncertain after app/0001_a.up.sql:4"), "{a}");
        assert!(
            !a.contains("app.missing"),
            "a migration that would fail is no warning here: {a}"
        );
        let again = derive("a");
        assert!(
            !again.contains("deprecated") && !again.contains("include_bytes"),
            "{again}"
        );
    }

    #[test]
    fn a_table_made_by_dynamic_sql_is_named_in_the_error() {
        let root =
            std::env::temp_dir().join(format!("prost-db-macros-dynamic-{}", std::process::id()));
        std::fs::create_dir_all(root.join("app")).unwrap();
        std::fs::write(
            root.join("app/0001_a.up.sql"),
            "CREATE TABLE log (at DATE NOT NULL) PARTITION BY RANGE (at);\n\
             DO $$ DECLARE y int := 2030; BEGIN\n\
             EXECUTE format('CREATE TABLE %I PARTITION OF log FOR VALUES FROM (%L) TO (%L)', 'log_' || y, y || '-01-01', y + 1 || '-01-01');\n\
             END $$;",
        )
        .unwrap();
        let root = root.to_string_lossy().into_owned();
        let output = super::derive(quote! {
            #[schema(migrations = #root, schema = "app", table = "log_2030")]
            struct Log { at: chrono::NaiveDate }
        })
        .to_string();
        assert!(
            output.contains("app/0001_a.up.sql:3 creates tables with dynamic SQL"),
            "{output}"
        );
    }

    #[test]
    fn a_misspelled_attribute_is_the_only_error() {
        let root = fixture();
        let output = super::derive(quote! {
            #[schema(migrations = #root, tabel = "accounts")]
            struct Account { id: i64 }
        })
        .to_string();
        assert!(output.contains("did you mean `table`?"), "{output}");
        assert_eq!(output.matches("compile_error").count(), 1, "{output}");
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
