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

/// Errors collected across phases, reported together.
#[derive(Default)]
pub(crate) struct Errors(Vec<syn::Error>);

impl Errors {
    pub fn push(&mut self, error: syn::Error) {
        self.0.push(error);
    }

    #[cfg(test)]
    pub fn into_vec(self) -> Vec<syn::Error> {
        self.0
    }

    fn to_compile_errors(&self) -> TokenStream {
        self.0.iter().map(syn::Error::to_compile_error).collect()
    }
}

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
        let source_dir = lit
            .span()
            .unwrap()
            .local_file()
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
    let def = valid::check(&container, &loaded.catalog, &root_name, errors)?;
    Some(expand::expand(input, &def, &loaded.files))
}
