//! The error accumulator both macros use: every independent error of an input is
//! collected, each on its own tokens, and reported at once.

use std::fmt::Display;

use proc_macro2::TokenStream;
use quote::ToTokens;

/// Errors collected across the phases of one macro call.
#[derive(Default)]
pub(crate) struct Errors(Vec<syn::Error>);

impl Errors {
    pub fn push(&mut self, error: syn::Error) {
        self.0.push(error);
    }

    /// An error spanning `tokens`.
    pub fn error(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many errors so far: a phase compares it before and after to tell whether it
    /// added any.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[cfg(test)]
    pub fn into_vec(self) -> Vec<syn::Error> {
        self.0
    }

    /// One `compile_error!` per error.
    pub fn to_compile_errors(&self) -> TokenStream {
        self.0.iter().map(syn::Error::to_compile_error).collect()
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::Span;

    use super::Errors;

    #[test]
    fn every_error_becomes_its_own_compile_error() {
        let mut errors = Errors::default();
        assert!(errors.is_empty());
        errors.push(syn::Error::new(Span::call_site(), "first"));
        errors.error(quote::quote!(x), "second");
        let tokens = errors.to_compile_errors().to_string();
        assert_eq!(tokens.matches("compile_error").count(), 2, "{tokens}");
        assert_eq!(errors.into_vec().len(), 2);
    }
}
