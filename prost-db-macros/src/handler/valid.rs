//! Checks the handler's shape and builds the immutable configuration `expand` consumes.

use proc_macro2::TokenStream;
use quote::quote;
use syn::spanned::Spanned;
use syn::{Expr, FnArg, Ident, LitInt, LitStr, Pat, ReturnType, Type};

use super::args::HandlerArgs;
use super::item::HandlerFn;

pub(super) struct HandlerConfig {
    pub krate: TokenStream,
    pub action: LitStr,
    pub key: Option<Expr>,
    pub service: Option<Expr>,
    pub permanent_errors: bool,
    pub lock_timeout_ms: Option<LitInt>,
    /// Position of the transaction parameter in `sig.inputs`.
    pub tx_index: usize,
    pub tx_pat: Pat,
    pub tx_ty: Type,
    pub event: Ident,
    pub ret: Type,
}

pub(super) fn validate(args: HandlerArgs, handler: &HandlerFn) -> syn::Result<HandlerConfig> {
    let sig = &handler.item.sig;
    let mut errors: Vec<syn::Error> = Vec::new();

    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span,
            "the `async` keyword is missing from the function declaration; #[idempotent_handler] wraps an `async fn`",
        ));
    }

    let mut typed = sig
        .inputs
        .iter()
        .enumerate()
        .filter_map(|(index, arg)| match arg {
            FnArg::Typed(arg) => Some((index, arg)),
            FnArg::Receiver(_) => None,
        });
    let tx = match typed.next() {
        Some((index, arg)) if matches!(&*arg.ty, Type::Reference(r) if r.mutability.is_some()) => {
            Some((index, arg))
        }
        Some((_, arg)) => {
            errors.push(syn::Error::new_spanned(
                &arg.ty,
                "the first parameter must be the transaction the body writes through: `tx: &mut prost_db::idempotency::Tx`",
            ));
            None
        }
        None => {
            errors.push(syn::Error::new(
                sig.paren_token.span.join(),
                "missing the transaction parameter: write `(tx: &mut prost_db::idempotency::Tx, event: &Event)`",
            ));
            None
        }
    };
    let event = match typed.next() {
        Some((_, arg)) => match &*arg.pat {
            Pat::Ident(pat) if pat.subpat.is_none() => Some(pat.ident.clone()),
            other => {
                errors.push(syn::Error::new_spanned(
                    other,
                    "the event parameter must be a plain name, e.g. `event: &OrderCreated`",
                ));
                None
            }
        },
        None if tx.is_some() => {
            errors.push(syn::Error::new(
                sig.paren_token.span.join(),
                "missing the event parameter: write `(tx: &mut prost_db::idempotency::Tx, event: &Event)`",
            ));
            None
        }
        None => None,
    };

    let ret = match &sig.output {
        ReturnType::Type(_, ty) if returns_result(ty) => Some((**ty).clone()),
        ReturnType::Type(_, ty) => {
            errors.push(syn::Error::new_spanned(
                ty,
                "the handler must return `Result<T, E>`: `T` is stored and replayed, `E` rolls the transaction back",
            ));
            None
        }
        ReturnType::Default => {
            errors.push(syn::Error::new(
                sig.paren_token.span.close(),
                "the handler must return `Result<T, E>`: add `-> Result<T, E>`",
            ));
            None
        }
    };

    let mut errors = errors.into_iter();
    if let Some(mut first) = errors.next() {
        errors.for_each(|error| first.combine(error));
        return Err(first);
    }
    let (Some((tx_index, tx)), Some(event), Some(ret)) = (tx, event, ret) else {
        unreachable!("every missing part pushed an error");
    };

    let mut tx_ty = (*tx.ty).clone();
    elide_lifetimes(&mut tx_ty);
    Ok(HandlerConfig {
        krate: match &args.krate {
            Some(path) => quote!(#path),
            None => quote!(::prost_db),
        },
        action: args
            .action
            .unwrap_or_else(|| LitStr::new(&sig.ident.to_string(), sig.ident.span())),
        key: args.key,
        service: args.service,
        permanent_errors: args.permanent_errors.is_some(),
        lock_timeout_ms: args.lock_timeout_ms,
        tx_index,
        tx_pat: (*tx.pat).clone(),
        tx_ty,
        event,
        ret,
    })
}

fn returns_result(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident.to_string().ends_with("Result")),
        Type::Group(group) => returns_result(&group.elem),
        Type::Paren(paren) => returns_result(&paren.elem),
        _ => false,
    }
}

/// The transaction is a local of the generated closure, so the lifetimes the user named
/// for the parameter cannot apply; `'_` lets the compiler infer them.
fn elide_lifetimes(ty: &mut Type) {
    struct Elide;
    impl syn::visit_mut::VisitMut for Elide {
        fn visit_lifetime_mut(&mut self, lifetime: &mut syn::Lifetime) {
            if lifetime.ident != "static" {
                *lifetime = syn::Lifetime::new("'_", lifetime.span());
            }
        }
    }
    syn::visit_mut::VisitMut::visit_type_mut(&mut Elide, ty);
}

#[cfg(test)]
mod tests {
    use quote::quote;
    use syn::parse_quote;

    use super::validate;
    use crate::handler::args::parse;
    use crate::handler::item::HandlerFn;

    fn check(item: syn::ItemFn) -> Result<super::HandlerConfig, Vec<String>> {
        validate(parse(quote!()).0, &HandlerFn { item })
            .map_err(|e| e.into_iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn a_handler_defaults_to_its_name_and_the_event_id() {
        let config = check(parse_quote! {
            async fn reserve(tx: &'t mut Tx<'t>, event: &Event) -> Result<u32, Error> { todo!() }
        })
        .ok()
        .unwrap();
        assert_eq!(config.action.value(), "reserve");
        assert_eq!(config.event, "event");
        assert_eq!(config.tx_index, 0);
        let ty = &config.tx_ty;
        assert_eq!(quote!(#ty).to_string(), "& '_ mut Tx < '_ >");
        assert!(config.key.is_none() && !config.permanent_errors);
    }

    #[test]
    fn methods_skip_the_receiver() {
        let config = check(parse_quote! {
            async fn handle(&self, tx: &mut Tx, event: E) -> io::Result<()> { todo!() }
        })
        .ok()
        .unwrap();
        assert_eq!(config.tx_index, 1);
    }

    #[test]
    fn every_shape_error_is_reported_at_once() {
        let errors = check(parse_quote! { fn reserve(event: &Event) -> u32 { 0 } })
            .err()
            .unwrap();
        assert_eq!(errors.len(), 3);
        assert!(errors[0].starts_with("the `async` keyword is missing"));
        assert!(errors[1].starts_with("the first parameter must be the transaction"));
        assert!(errors[2].starts_with("the handler must return `Result<T, E>`"));
    }

    #[test]
    fn no_parameters_means_no_transaction() {
        let errors = check(parse_quote! { async fn f() -> Result<(), E> { todo!() } })
            .err()
            .unwrap();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("missing the transaction parameter"));
    }

    #[test]
    fn the_event_must_follow_the_transaction() {
        let errors = check(parse_quote! { async fn f(tx: &mut Tx) -> Result<(), E> { todo!() } })
            .err()
            .unwrap();
        assert!(errors[0].starts_with("missing the event parameter"));
    }
}
