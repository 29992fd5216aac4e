//! The identifier grammar shared by the runtime and the macros.

/// PostgreSQL truncates identifiers longer than `NAMEDATALEN - 1` bytes.
pub const MAX_IDENTIFIER_LEN: usize = 63;

/// Checks `name` against prost-db's identifier grammar: 1 to 63 bytes of lower-case ASCII
/// letters, digits and `_`, not starting with a digit or `pg_`. Returns the broken rule.
///
/// ```
/// assert_eq!(prost_db_core::ident::check("catalog"), None);
/// assert!(prost_db_core::ident::check("Catalog").is_some());
/// ```
pub fn check(name: &str) -> Option<&'static str> {
    let Some(first) = name.bytes().next() else {
        return Some("it is empty");
    };
    if name.len() > MAX_IDENTIFIER_LEN {
        return Some("it is longer than 63 bytes, which PostgreSQL would silently truncate");
    }
    if first.is_ascii_digit() {
        return Some("it starts with a digit");
    }
    if name.starts_with("pg_") {
        return Some("names starting with `pg_` are reserved by PostgreSQL");
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(
            "it contains upper-case letters; use lower case (PostgreSQL folds unquoted names)",
        );
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Some("only lower-case ASCII letters, digits and `_` are allowed");
    }
    None
}
