//! `#[idempotent_handler(...)]` arguments, parsed with `syn::meta::parser` (as the schema
//! derive parses `#[schema(...)]`) into values that keep their tokens. A bad argument is
//! reported and skipped, and parsing goes on with the next.

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{Expr, Lit, LitInt, LitStr, Path, Token};

use crate::errors::Errors;

const ACTION: &str = "action";
const KEY: &str = "key";
const FINGERPRINT: &str = "fingerprint";
const SERVICE: &str = "service";
const PERMANENT_ERRORS: &str = "permanent_errors";
const LOCK_TIMEOUT_MS: &str = "lock_timeout_ms";
const CRATE: &str = "crate";

const EXPECTED: &str = "expected one of: `action = \"...\"`, `key = <expr>`, `fingerprint = <expr>`, `service = <expr>`, `permanent_errors`, `lock_timeout_ms = <integer>`, `crate = <path>`";

#[derive(Default)]
pub(super) struct HandlerArgs {
    pub action: Option<LitStr>,
    pub key: Option<Expr>,
    pub fingerprint: Option<Expr>,
    pub service: Option<Expr>,
    pub permanent_errors: Option<Span>,
    pub lock_timeout_ms: Option<LitInt>,
    pub krate: Option<Path>,
}

pub(super) fn parse(tokens: TokenStream, errors: &mut Errors) -> HandlerArgs {
    let mut args = HandlerArgs::default();
    let parser = syn::meta::parser(|meta| args.parse_one(&meta, errors));
    if let Err(error) = parser.parse2(tokens) {
        errors.push(error);
    }
    args
}

impl HandlerArgs {
    fn parse_one(&mut self, meta: &ParseNestedMeta, errors: &mut Errors) -> syn::Result<()> {
        if meta.path.is_ident(PERMANENT_ERRORS) {
            // #[idempotent_handler(permanent_errors)]
            if meta.input.peek(Token![=]) || meta.input.peek(syn::token::Paren) {
                skip_value(meta)?;
                errors.error(
                    &meta.path,
                    "`permanent_errors` takes no value: write `permanent_errors`",
                );
            } else {
                set(&mut self.permanent_errors, meta.path.span(), meta, errors);
            }
            return Ok(());
        }
        let known = [ACTION, KEY, FINGERPRINT, SERVICE, LOCK_TIMEOUT_MS, CRATE];
        if !known.iter().any(|name| meta.path.is_ident(name)) {
            skip_value(meta)?;
            let name = path_name(&meta.path);
            errors.error(
                &meta.path,
                format_args!("unknown argument `{name}`; {EXPECTED}"),
            );
            return Ok(());
        }
        let Some(value) = value(meta, errors)? else {
            return Ok(());
        };
        if meta.path.is_ident(ACTION) {
            // #[idempotent_handler(action = "reserve_stock")]
            match string(&value) {
                Ok(lit) => set(&mut self.action, lit, meta, errors),
                Err(other) => errors.error(
                    other,
                    "expected a string literal: `action = \"reserve_stock\"`",
                ),
            }
        } else if meta.path.is_ident(KEY) {
            // #[idempotent_handler(key = event.order_id)]
            set(&mut self.key, value, meta, errors);
        } else if meta.path.is_ident(FINGERPRINT) {
            // #[idempotent_handler(key = event.order_id, fingerprint = event.lines)]
            set(&mut self.fingerprint, value, meta, errors);
        } else if meta.path.is_ident(SERVICE) {
            // #[idempotent_handler(service = "billing")]
            set(&mut self.service, value, meta, errors);
        } else if meta.path.is_ident(LOCK_TIMEOUT_MS) {
            // #[idempotent_handler(lock_timeout_ms = 5000)]
            match value {
                Expr::Lit(syn::ExprLit {
                    lit: Lit::Int(int), ..
                }) => {
                    set(&mut self.lock_timeout_ms, int, meta, errors);
                }
                other => errors.error(
                    other,
                    "expected whole milliseconds: `lock_timeout_ms = 5000`",
                ),
            }
        } else if meta.path.is_ident(CRATE) {
            // #[idempotent_handler(crate = my_reexport::prost_db)] or (crate = "my_reexport::prost_db")
            match crate_path(&value) {
                Ok(path) => set(&mut self.krate, path, meta, errors),
                Err(other) => {
                    errors.error(other, "expected a path: `crate = my_reexport::prost_db`")
                }
            }
        }
        Ok(())
    }
}

/// The value after `=`; a key written without one is reported, and parsing goes on.
fn value(meta: &ParseNestedMeta, errors: &mut Errors) -> syn::Result<Option<Expr>> {
    if meta.input.peek(Token![=]) {
        return meta.value()?.parse().map(Some);
    }
    skip_value(meta)?;
    let name = path_name(&meta.path);
    errors.error(
        &meta.path,
        format_args!("`{name}` needs a value: `{name} = ...`"),
    );
    Ok(None)
}

fn path_name(path: &Path) -> String {
    let names: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    names.join("::")
}

/// Consumes what follows an argument's name, so that the next argument parses.
fn skip_value(meta: &ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|nested| skip_value(&nested))?;
    }
    Ok(())
}

fn set<T>(slot: &mut Option<T>, value: T, meta: &ParseNestedMeta, errors: &mut Errors) {
    if slot.is_some() {
        let name = path_name(&meta.path);
        errors.error(
            &meta.path,
            format_args!("duplicate argument `{name}`; give it once"),
        );
    } else {
        *slot = Some(value);
    }
}

fn string(value: &Expr) -> Result<LitStr, &Expr> {
    match value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(lit.clone()),
        other => Err(other),
    }
}

fn crate_path(value: &Expr) -> Result<Path, &Expr> {
    match value {
        Expr::Path(path) if path.qself.is_none() => Ok(path.path.clone()),
        other => string(other)
            .ok()
            .and_then(|lit| lit.parse().ok())
            .ok_or(other),
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::parse;
    use crate::errors::Errors;

    fn messages(errors: Errors) -> Vec<String> {
        errors.into_vec().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn parses_every_argument() {
        let mut errors = Errors::default();
        let args = parse(
            quote!(
                action = "reserve",
                key = event.order_id,
                fingerprint = event.lines,
                service = "billing",
                permanent_errors,
                lock_timeout_ms = 5000,
                crate = ::my::db
            ),
            &mut errors,
        );
        assert!(errors.is_empty());
        assert_eq!(args.action.unwrap().value(), "reserve");
        assert!(args.key.is_some() && args.fingerprint.is_some() && args.service.is_some());
        assert!(args.permanent_errors.is_some());
        assert_eq!(
            args.lock_timeout_ms.unwrap().base10_parse::<u64>().unwrap(),
            5000
        );
        let krate = args.krate.unwrap();
        assert_eq!(quote!(#krate).to_string(), ":: my :: db");
    }

    #[test]
    fn crate_may_be_a_string() {
        let mut errors = Errors::default();
        let args = parse(quote!(crate = "my::db"), &mut errors);
        assert!(errors.is_empty());
        assert!(args.krate.is_some());
    }

    #[test]
    fn every_bad_argument_is_reported_and_the_rest_still_parse() {
        let mut errors = Errors::default();
        let args = parse(
            quote!(
                actoin = "x",
                action = "a",
                colour(red),
                action = "b",
                permanent_errors = true,
                key,
                service = "s"
            ),
            &mut errors,
        );
        let messages = messages(errors);
        assert_eq!(messages.len(), 5, "{messages:?}");
        assert!(messages[0].starts_with("unknown argument `actoin`; expected one of"));
        assert!(messages[1].starts_with("unknown argument `colour`"));
        assert_eq!(messages[2], "duplicate argument `action`; give it once");
        assert_eq!(
            messages[3],
            "`permanent_errors` takes no value: write `permanent_errors`"
        );
        assert_eq!(messages[4], "`key` needs a value: `key = ...`");
        assert_eq!(args.action.unwrap().value(), "a");
        assert!(args.permanent_errors.is_none() && args.key.is_none());
    }

    #[test]
    fn values_of_the_wrong_kind_are_errors() {
        let mut errors = Errors::default();
        parse(
            quote!(action = reserve, lock_timeout_ms = "5s", crate = 3),
            &mut errors,
        );
        let messages = messages(errors);
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].starts_with("expected a string literal"));
        assert!(messages[1].starts_with("expected whole milliseconds"));
        assert!(messages[2].starts_with("expected a path"));
    }

    #[test]
    fn empty_arguments_are_fine() {
        let mut errors = Errors::default();
        let args = parse(quote!(), &mut errors);
        assert!(errors.is_empty() && args.action.is_none());
    }
}
