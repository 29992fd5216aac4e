//! `#[idempotent_handler(...)]` arguments, parsed into spanned options. A bad argument is
//! reported and skipped, so the handler still expands with the others.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Lit, LitInt, LitStr, Meta, Path, Token};

const EXPECTED: &str = "expected one of: `action = \"...\"`, `key = <expr>`, `service = <expr>`, `permanent_errors`, `lock_timeout_ms = <integer>`, `crate = <path>`";

#[derive(Default)]
pub(super) struct HandlerArgs {
    pub action: Option<LitStr>,
    pub key: Option<Expr>,
    pub service: Option<Expr>,
    pub permanent_errors: Option<Span>,
    pub lock_timeout_ms: Option<LitInt>,
    pub krate: Option<Path>,
}

pub(super) fn parse(tokens: TokenStream) -> (HandlerArgs, Option<syn::Error>) {
    let mut args = HandlerArgs::default();
    let mut errors = Errors::default();
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens) {
        Ok(metas) => metas,
        Err(error) => {
            errors.push(error);
            return (args, errors.finish());
        }
    };
    for meta in metas {
        let name = meta.path().get_ident().map(ToString::to_string);
        match (name.as_deref(), meta) {
            // #[idempotent_handler(action = "reserve_stock")]
            (Some("action"), Meta::NameValue(nv)) => match string(&nv.value) {
                Some(lit) => set(&mut args.action, lit, &nv.path, &mut errors),
                None => errors.error(
                    &nv.value,
                    "expected a string literal: `action = \"reserve_stock\"`",
                ),
            },
            // #[idempotent_handler(key = event.order_id)]
            (Some("key"), Meta::NameValue(nv)) => {
                set(&mut args.key, nv.value, &nv.path, &mut errors)
            }
            // #[idempotent_handler(service = "billing")]
            (Some("service"), Meta::NameValue(nv)) => {
                set(&mut args.service, nv.value, &nv.path, &mut errors);
            }
            // #[idempotent_handler(permanent_errors)]
            (Some("permanent_errors"), Meta::Path(path)) => {
                set(&mut args.permanent_errors, path.span(), &path, &mut errors);
            }
            // #[idempotent_handler(lock_timeout_ms = 5000)]
            (Some("lock_timeout_ms"), Meta::NameValue(nv)) => match &nv.value {
                Expr::Lit(syn::ExprLit {
                    lit: Lit::Int(int), ..
                }) if int.base10_parse::<u64>().is_ok() => {
                    set(
                        &mut args.lock_timeout_ms,
                        int.clone(),
                        &nv.path,
                        &mut errors,
                    );
                }
                other => errors.error(
                    other,
                    "expected whole milliseconds: `lock_timeout_ms = 5000`",
                ),
            },
            // #[idempotent_handler(crate = my_reexport::prost_db)] or (crate = "my_reexport::prost_db")
            (Some("crate"), Meta::NameValue(nv)) => match crate_path(&nv.value) {
                Some(path) => set(&mut args.krate, path, &nv.path, &mut errors),
                None => errors.error(
                    &nv.value,
                    "expected a path: `crate = my_reexport::prost_db`",
                ),
            },
            (Some(known @ ("action" | "key" | "service" | "lock_timeout_ms" | "crate")), meta) => {
                errors.error(&meta, format!("`{known}` needs a value: `{known} = ...`"));
            }
            (Some("permanent_errors"), meta) => {
                errors.error(
                    &meta,
                    "`permanent_errors` takes no value: write `permanent_errors`",
                );
            }
            (_, meta) => {
                let path = meta.path();
                let name = quote::quote!(#path).to_string().replace(' ', "");
                errors.error(path, format!("unknown argument `{name}`; {EXPECTED}"));
            }
        }
    }
    (args, errors.finish())
}

fn set<T>(slot: &mut Option<T>, value: T, path: &Path, errors: &mut Errors) {
    if slot.is_some() {
        let name = path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        errors.error(path, format!("duplicate argument `{name}`; give it once"));
    } else {
        *slot = Some(value);
    }
}

fn string(value: &Expr) -> Option<LitStr> {
    match value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => Some(lit.clone()),
        _ => None,
    }
}

fn crate_path(value: &Expr) -> Option<Path> {
    match value {
        Expr::Path(path) if path.qself.is_none() => Some(path.path.clone()),
        _ => string(value).and_then(|lit| lit.parse().ok()),
    }
}

#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn error(&mut self, tokens: impl quote::ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    fn finish(self) -> Option<syn::Error> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::parse;

    #[test]
    fn parses_every_argument() {
        let (args, errors) = parse(quote!(
            action = "reserve",
            key = event.order_id,
            service = "billing",
            permanent_errors,
            lock_timeout_ms = 5000,
            crate = ::my::db
        ));
        assert!(errors.is_none());
        assert_eq!(args.action.unwrap().value(), "reserve");
        assert!(args.key.is_some() && args.service.is_some() && args.permanent_errors.is_some());
        assert_eq!(
            args.lock_timeout_ms.unwrap().base10_parse::<u64>().unwrap(),
            5000
        );
        let krate = args.krate.unwrap();
        assert_eq!(quote!(#krate).to_string(), ":: my :: db");
    }

    #[test]
    fn crate_may_be_a_string() {
        let (args, errors) = parse(quote!(crate = "my::db"));
        assert!(errors.is_none());
        assert!(args.krate.is_some());
    }

    #[test]
    fn unknown_and_duplicate_arguments_are_all_reported_and_skipped() {
        let (args, errors) = parse(quote!(actoin = "x", action = "a", action = "b"));
        let messages: Vec<String> = errors.unwrap().into_iter().map(|e| e.to_string()).collect();
        assert_eq!(messages.len(), 2);
        assert!(messages[0].starts_with("unknown argument `actoin`; expected one of"));
        assert_eq!(messages[1], "duplicate argument `action`; give it once");
        assert_eq!(args.action.unwrap().value(), "a");
    }

    #[test]
    fn action_must_be_a_string() {
        let (_, errors) = parse(quote!(action = reserve));
        assert!(
            errors
                .unwrap()
                .to_string()
                .contains("expected a string literal")
        );
    }

    #[test]
    fn empty_arguments_are_fine() {
        let (args, errors) = parse(quote!());
        assert!(errors.is_none() && args.action.is_none());
    }
}
