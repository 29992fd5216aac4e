//! Validated SQL identifiers.
//!
//! Every schema, table and role name that prost-db places into SQL text goes through
//! [`Identifier`]: it is checked against a conservative grammar and then always emitted
//! double-quoted. Names that PostgreSQL would fold or that need quoting to mean what the
//! user wrote are rejected instead of silently changed.

use std::fmt;

use crate::Error;

pub use prost_db_core::ident::MAX_IDENTIFIER_LEN;

/// What an identifier names, used in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentifierKind {
    /// A schema name (`catalog`).
    Schema,
    /// A table name (`products`).
    Table,
    /// A role name (`catalog_svc`).
    Role,
    /// A service name (`catalog`).
    Service,
    /// A database name (`prost`).
    Database,
    /// A column name (`stock_quantity`).
    Column,
    /// An action name of an idempotent handler (`reserve_stock`).
    Action,
}

impl fmt::Display for IdentifierKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdentifierKind::Schema => "schema",
            IdentifierKind::Table => "table",
            IdentifierKind::Role => "role",
            IdentifierKind::Service => "service",
            IdentifierKind::Database => "database",
            IdentifierKind::Column => "column",
            IdentifierKind::Action => "action",
        })
    }
}

/// A validated identifier: 1 to 63 bytes of lower-case ASCII letters, digits and `_`,
/// not starting with a digit and not starting with `pg_`.
///
/// [`Display`](fmt::Display) writes it double-quoted, ready to be placed into SQL text.
///
/// ```
/// use prost_db::{Identifier, IdentifierKind};
///
/// let schema = Identifier::new(IdentifierKind::Schema, "catalog")?;
/// assert_eq!(schema.as_str(), "catalog");
/// assert_eq!(schema.to_string(), "\"catalog\"");
///
/// let err = Identifier::new(IdentifierKind::Schema, "catalog\"; DROP SCHEMA orders; --").unwrap_err();
/// assert!(err.to_string().contains("invalid schema name"));
/// # Ok::<(), prost_db::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identifier(String);

impl Identifier {
    /// Validates `name` as an identifier of the given kind.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidIdentifier`] naming the kind, the rejected name and the rule it broke.
    pub fn new(kind: IdentifierKind, name: &str) -> Result<Self, Error> {
        match prost_db_core::ident::check(name) {
            None => Ok(Identifier(name.to_owned())),
            Some(reason) => Err(Error::InvalidIdentifier {
                kind,
                name: name.to_owned(),
                reason,
            }),
        }
    }

    /// The bare name, without quotes (for bind parameters and messages).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name double-quoted, for SQL text (the same as its `Display`).
    pub fn quoted(&self) -> String {
        self.to_string()
    }
}

/// Whether `name` is named like a test database, the rule destructive test helpers
/// (`Migrator::reset`, the drops of `testing::TestDb`) check before they act: one
/// of its words (split at every character that is not an ASCII letter or digit) is `test`
/// or `tests`, in any case, optionally followed by digits. `prost_test_42`, `shop_test`,
/// `test`, `orders-tests-2` pass; `latest`, `contest`, `attestation`, `prod` do not.
pub(crate) fn is_test_database_name(name: &str) -> bool {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| {
            let word = word.trim_end_matches(|c: char| c.is_ascii_digit());
            word.eq_ignore_ascii_case("test") || word.eq_ignore_ascii_case("tests")
        })
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The grammar excludes `"`, so wrapping in quotes is a complete quoting.
        write!(f, "\"{}\"", self.0)
    }
}

/// `template` with every `{schema}` replaced by `schema`, quoted: how prost-db's own SQL
/// texts are put into a service's schema.
pub(crate) fn render(template: &str, schema: &Identifier) -> String {
    template.replace("{schema}", &schema.quoted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_lower_case_names() {
        for name in [
            "catalog",
            "orders",
            "_private",
            "t1",
            "a_b_c",
            &"x".repeat(63),
        ] {
            assert!(
                Identifier::new(IdentifierKind::Table, name).is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn rejects_injection_and_odd_names() {
        for name in [
            "",
            "catalog\"; DROP SCHEMA orders; --",
            "Catalog",
            "1abc",
            "pg_catalog",
            "a b",
            "a-b",
            "sch\u{e9}ma",
            "a;b",
            &"x".repeat(64),
        ] {
            let err = Identifier::new(IdentifierKind::Schema, name).unwrap_err();
            assert!(matches!(err, Error::InvalidIdentifier { .. }), "{name}");
        }
    }

    #[test]
    fn render_puts_the_quoted_schema_in_every_place() {
        let schema = Identifier::new(IdentifierKind::Schema, "svc").unwrap();
        let sql = render(
            "SELECT 1 FROM {schema}.a JOIN {schema}.b USING (id)",
            &schema,
        );
        assert_eq!(sql, "SELECT 1 FROM \"svc\".a JOIN \"svc\".b USING (id)");
    }

    #[test]
    fn only_names_with_a_test_word_are_test_databases() {
        for name in [
            "prost_test_1234_5678_0",
            "shop_test",
            "test",
            "TEST_orders",
            "orders-tests-2",
            "shop_test2",
            "ci.test.db",
        ] {
            assert!(is_test_database_name(name), "{name}");
        }
        for name in [
            "latest",
            "contest",
            "attestation",
            "testimony",
            "protest_db",
            "prod",
            "shop",
            "",
            "tst",
            "2test",
        ] {
            assert!(!is_test_database_name(name), "{name}");
        }
    }

    #[test]
    fn display_quotes() {
        let id = Identifier::new(IdentifierKind::Role, "catalog_svc").unwrap();
        assert_eq!(id.to_string(), "\"catalog_svc\"");
    }
}
