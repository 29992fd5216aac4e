//! Checks the arguments against the fn and builds the immutable configuration `expand`
//! consumes. Every problem is reported, each on its own tokens.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Expr, Ident, LitInt, LitStr, Pat, Type};

use super::args::HandlerArgs;
use super::ast::{HandlerFn, Param};
use crate::errors::Errors;

/// PostgreSQL's `lock_timeout` is an `int` of milliseconds.
const MAX_LOCK_TIMEOUT_MS: u64 = i32::MAX as u64;

pub(super) struct HandlerConfig<'a> {
    pub krate: TokenStream,
    pub action: Action,
    pub key: Key<'a>,
    pub fingerprint: Option<Expr>,
    pub service: Option<Expr>,
    pub permanent_errors: bool,
    pub lock_timeout_ms: Option<LitInt>,
    pub tx: Param<'a>,
    pub ret: &'a Type,
}

pub(super) enum Action {
    /// `action = "..."`.
    Named(LitStr),
    /// A free fn: `module::name`.
    Free(LitStr),
    /// A method: `module::Type::name`, with the type from `Self`.
    Method(LitStr),
}

pub(super) enum Key<'a> {
    /// The event's `EventId`.
    Event { ident: &'a Ident, ty: &'a Type },
    /// `key = <expr>`.
    Expr(Expr),
}

/// The crate path the expansion names: `crate = ...`, or `::prost_db`.
pub(super) fn krate(args: &HandlerArgs) -> TokenStream {
    match &args.krate {
        Some(path) => quote!(#path),
        None => quote!(::prost_db),
    }
}

pub(super) fn validate<'a>(
    args: HandlerArgs,
    handler: &HandlerFn<'a>,
    errors: &mut Errors,
) -> Option<HandlerConfig<'a>> {
    let sig = &handler.item.sig;
    let krate = krate(&args);
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span,
            "the `async` keyword is missing from the function declaration; #[idempotent_handler] wraps an `async fn`",
        ));
    }

    let tx = handler.tx;
    if tx.is_none() {
        match handler.params.first() {
            Some(first) => errors.error(
                &first.arg.ty,
                "the first parameter must be the transaction the body writes through: `tx: &mut prost_db::idempotency::Tx`",
            ),
            None => errors.push(syn::Error::new(
                sig.paren_token.span.join(),
                "missing the transaction parameter: write `(tx: &mut prost_db::idempotency::Tx, event: &Event)`",
            )),
        }
    }

    for param in &handler.params {
        if Some(param.index) != tx.map(|tx| tx.index)
            && let Pat::Ident(pat) = &*param.arg.pat
            && pat.ident == "db"
        {
            errors.error(
                &pat.ident,
                "a parameter named `db` would clash with the `db: &Db` the handler takes in place of the transaction; rename it",
            );
        }
    }

    let key = match args.key {
        Some(expr) => Some(Key::Expr(expr)),
        None => event_key(handler, errors),
    };

    let ret = handler.output.ty();
    match (ret, &handler.output) {
        (Some(ty), super::ast::Output::Other(_)) => errors.error(
            ty,
            "the handler must return `Result<T, E>`: `T` is stored and replayed, `E` rolls the transaction back",
        ),
        (None, _) => errors.push(syn::Error::new(
            sig.paren_token.span.close(),
            "the handler must return `Result<T, E>`: add `-> Result<T, E>`",
        )),
        _ => {}
    }

    if let Some(lit) = &args.action
        && lit.value().is_empty()
    {
        errors.error(
            lit,
            "`action` must not be empty: it names the handler's records, e.g. `action = \"reserve_stock\"`",
        );
    }
    let lock_timeout_ms = args.lock_timeout_ms.and_then(|lit| {
        match lit.base10_parse::<u64>() {
            Ok(ms @ 1..=MAX_LOCK_TIMEOUT_MS) => Some(LitInt::new(&ms.to_string(), lit.span())),
            _ => {
                errors.error(
                    &lit,
                    format_args!(
                        "`lock_timeout_ms` must be between 1 and {MAX_LOCK_TIMEOUT_MS} (PostgreSQL's limit, about 24.8 days)"
                    ),
                );
                None
            }
        }
    });

    let action = match args.action {
        Some(lit) => Action::Named(lit),
        None if handler.has_receiver => {
            Action::Method(LitStr::new(&sig.ident.to_string(), sig.ident.span()))
        }
        None => Action::Free(LitStr::new(&sig.ident.to_string(), sig.ident.span())),
    };
    Some(HandlerConfig {
        krate,
        action,
        key: key?,
        fingerprint: args.fingerprint,
        service: args.service,
        permanent_errors: args.permanent_errors.is_some(),
        lock_timeout_ms,
        tx: tx?,
        ret: ret?,
    })
}

/// The default key: the event parameter's `EventId`.
fn event_key<'a>(handler: &HandlerFn<'a>, errors: &mut Errors) -> Option<Key<'a>> {
    let Some(event) = handler.event else {
        if handler.tx.is_some() {
            errors.push(syn::Error::new(
                handler.item.sig.paren_token.span.join(),
                "missing the event parameter: write `(tx: &mut prost_db::idempotency::Tx, event: &Event)`, or name the key with `key = ...`",
            ));
        }
        return None;
    };
    match &*event.arg.pat {
        Pat::Ident(pat) if pat.subpat.is_none() => Some(Key::Event {
            ident: &pat.ident,
            ty: &event.arg.ty,
        }),
        other => {
            errors.error(
                other,
                "the event parameter must be a plain name, e.g. `event: &OrderCreated`, or name the key with `key = ...`",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::quote;
    use syn::parse_quote;

    use super::{Action, HandlerConfig, Key, validate};
    use crate::errors::Errors;
    use crate::handler::args::parse;
    use crate::handler::ast::HandlerFn;

    fn check(args: TokenStream, item: &syn::ItemFn) -> Result<HandlerConfig<'_>, Vec<String>> {
        let mut errors = Errors::default();
        let args = parse(args, &mut errors);
        let config = validate(args, &HandlerFn::from_syn(item), &mut errors);
        let messages: Vec<String> = errors.into_vec().iter().map(ToString::to_string).collect();
        match config {
            Some(config) if messages.is_empty() => Ok(config),
            _ => Err(messages),
        }
    }

    #[test]
    fn a_free_fn_is_named_by_its_module_path_and_keyed_by_its_event() {
        let item = parse_quote! {
            async fn reserve(tx: &mut Tx, event: &Event) -> Result<u32, Error> { todo!() }
        };
        let config = check(quote!(), &item).ok().unwrap();
        assert!(matches!(&config.action, Action::Free(name) if name.value() == "reserve"));
        assert!(matches!(config.key, Key::Event { ident, .. } if ident == "event"));
        assert_eq!(config.tx.index, 0);
        assert!(!config.permanent_errors && config.fingerprint.is_none());
    }

    #[test]
    fn a_method_is_named_by_its_type_too() {
        let item = parse_quote! {
            async fn handle(&self, tx: &mut Tx, event: E) -> io::Result<()> { todo!() }
        };
        let config = check(quote!(), &item).ok().unwrap();
        assert!(matches!(&config.action, Action::Method(name) if name.value() == "handle"));
        assert_eq!(config.tx.index, 1);
    }

    #[test]
    fn a_business_key_needs_no_event_parameter() {
        let item = parse_quote! {
            async fn confirm(tx: &mut Tx, order_id: i64) -> Result<(), E> { todo!() }
        };
        let config = check(quote!(key = order_id, fingerprint = order_id), &item)
            .ok()
            .unwrap();
        assert!(matches!(config.key, Key::Expr(_)) && config.fingerprint.is_some());
        let item = parse_quote! {
            async fn confirm(tx: &mut Tx) -> Result<(), E> { todo!() }
        };
        assert!(check(quote!(key = 7), &item).is_ok());
        let errors = check(quote!(), &item).err().unwrap();
        assert!(
            errors[0].starts_with("missing the event parameter"),
            "{errors:?}"
        );
    }

    #[test]
    fn every_shape_error_is_reported_at_once() {
        let item = parse_quote! { fn reserve(event: &Event, db: &Db) -> u32 { 0 } };
        let errors = check(quote!(), &item).err().unwrap();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("the `async` keyword is missing"));
        assert!(errors[1].starts_with("the first parameter must be the transaction"));
        assert!(errors[2].starts_with("a parameter named `db` would clash"));
        assert!(errors[3].starts_with("the handler must return `Result<T, E>`"));
    }

    #[test]
    fn no_parameters_means_no_transaction() {
        let item = parse_quote! { async fn f() -> Result<(), E> { todo!() } };
        let errors = check(quote!(), &item).err().unwrap();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("missing the transaction parameter"));
    }

    #[test]
    fn the_transaction_may_be_called_db() {
        let item = parse_quote! { async fn f(db: &mut Tx, e: &E) -> Result<(), X> { todo!() } };
        assert!(check(quote!(), &item).is_ok());
    }

    #[test]
    fn literals_out_of_range_are_errors() {
        let item = parse_quote! { async fn f(tx: &mut Tx, e: &E) -> Result<(), X> { todo!() } };
        let errors = check(quote!(action = "", lock_timeout_ms = 2147483648), &item)
            .err()
            .unwrap();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("`action` must not be empty"));
        assert!(errors[1].starts_with("`lock_timeout_ms` must be between 1 and 2147483647"));
        assert!(check(quote!(lock_timeout_ms = 0), &item).is_err());
        let config = check(quote!(lock_timeout_ms = 2147483647u64), &item)
            .ok()
            .unwrap();
        assert_eq!(config.lock_timeout_ms.unwrap().to_string(), "2147483647");
    }
}
