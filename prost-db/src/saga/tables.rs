//! Where a saga store keeps its rows: the schema, the two tables and the link columns.

use crate::ident::{Identifier, IdentifierKind};

use super::{DEFAULT_COMPENSATIONS_TABLE, DEFAULT_STATES_TABLE};

/// Where a [`SagaStore`](super::SagaStore) keeps its rows: a schema, the states and
/// compensation tables, and the link columns both tables share.
///
/// ```
/// use prost_db::saga::SagaTables;
///
/// let tables = SagaTables::new("orders")?.link("order_id")?;
/// assert_eq!(tables.states_name(), "\"orders\".\"saga_states\"");
/// assert!(SagaTables::new("orders")?.states("saga states").is_err());
/// # Ok::<(), prost_db::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaTables {
    pub(super) schema: Identifier,
    pub(super) states: Identifier,
    pub(super) compensations: Identifier,
    pub(super) links: Vec<Identifier>,
}

impl SagaTables {
    /// `saga_states` and `compensation_log` in `schema`, without link columns.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidIdentifier`](crate::Error::InvalidIdentifier) for a bad schema name.
    ///
    /// ```
    /// let tables = prost_db::saga::SagaTables::new("orders")?;
    /// assert_eq!(tables.compensations_name(), "\"orders\".\"compensation_log\"");
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn new(schema: &str) -> crate::Result<Self> {
        Ok(SagaTables {
            schema: Identifier::new(IdentifierKind::Schema, schema)?,
            states: Identifier::new(IdentifierKind::Table, DEFAULT_STATES_TABLE)?,
            compensations: Identifier::new(IdentifierKind::Table, DEFAULT_COMPENSATIONS_TABLE)?,
            links: Vec::new(),
        })
    }

    /// Another name for the states table.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidIdentifier`](crate::Error::InvalidIdentifier) for a bad name.
    ///
    /// ```
    /// let tables = prost_db::saga::SagaTables::new("billing")?.states("payment_sagas")?;
    /// assert_eq!(tables.states_name(), "\"billing\".\"payment_sagas\"");
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn states(mut self, table: &str) -> crate::Result<Self> {
        self.states = Identifier::new(IdentifierKind::Table, table)?;
        Ok(self)
    }

    /// Another name for the compensation table.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidIdentifier`](crate::Error::InvalidIdentifier) for a bad name.
    ///
    /// ```
    /// let tables = prost_db::saga::SagaTables::new("billing")?.compensations("payment_undo")?;
    /// assert_eq!(tables.compensations_name(), "\"billing\".\"payment_undo\"");
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn compensations(mut self, table: &str) -> crate::Result<Self> {
        self.compensations = Identifier::new(IdentifierKind::Table, table)?;
        Ok(self)
    }

    /// A column of both tables that ties a saga to the service's own entity (`order_id`):
    /// [`NewSaga::link`](super::NewSaga::link) sets it on the saga, and every compensation row
    /// gets the saga's value.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidIdentifier`](crate::Error::InvalidIdentifier) for a bad name.
    ///
    /// ```
    /// let tables = prost_db::saga::SagaTables::new("orders")?.link("order_id")?;
    /// assert_eq!(tables.links(), ["order_id"]);
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn link(mut self, column: &str) -> crate::Result<Self> {
        let column = Identifier::new(IdentifierKind::Column, column)?;
        if !self.links.contains(&column) {
            self.links.push(column);
        }
        Ok(self)
    }

    /// The link columns.
    ///
    /// ```
    /// assert!(prost_db::saga::SagaTables::new("orders")?.links().is_empty());
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn links(&self) -> Vec<&str> {
        self.links.iter().map(Identifier::as_str).collect()
    }

    /// The states table, quoted and schema-qualified.
    ///
    /// ```
    /// let tables = prost_db::saga::SagaTables::new("orders")?;
    /// assert_eq!(tables.states_name(), "\"orders\".\"saga_states\"");
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn states_name(&self) -> String {
        format!("{}.{}", self.schema, self.states)
    }

    /// The compensation table, quoted and schema-qualified.
    ///
    /// ```
    /// let tables = prost_db::saga::SagaTables::new("orders")?;
    /// assert_eq!(tables.compensations_name(), "\"orders\".\"compensation_log\"");
    /// # Ok::<(), prost_db::Error>(())
    /// ```
    pub fn compensations_name(&self) -> String {
        format!("{}.{}", self.schema, self.compensations)
    }
}
