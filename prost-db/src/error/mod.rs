//! The crate's error type: [`Error`], its messages, and [`Result`].

use std::time::Duration;

use crate::ident::IdentifierKind;

mod driver;
mod timeout;
mod transient;

pub(crate) use driver::{Origin, Server};
pub(crate) use timeout::pg_timeout_millis;
#[cfg(feature = "amqp")]
pub(crate) use transient::sqlx_error_is_transient;

/// Everything that can go wrong in prost-db.
///
/// Messages say what was wrong and what to do about it. No variant ever carries a password:
/// connection errors name host, port, database and user only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A schema, table, role or other name was rejected before any SQL ran.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidIdentifier {
        /// What the name was for.
        kind: IdentifierKind,
        /// The rejected name, as given.
        name: String,
        /// The rule it broke.
        reason: &'static str,
    },

    /// The configuration is incomplete or a value could not be parsed.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A timeout is longer than the PostgreSQL setting it becomes can hold; rejected when
    /// the configuration is built instead of failing every statement that would send it.
    #[error(
        "{setting} of {value:?} is beyond what PostgreSQL accepts ({max:?}, 2147483647 ms); use a shorter one"
    )]
    SettingOutOfRange {
        /// The PostgreSQL setting (`lock_timeout`, `statement_timeout`).
        setting: &'static str,
        /// The value given.
        value: Duration,
        /// The longest value the setting holds.
        max: Duration,
    },

    /// The database server could not be reached or refused the connection: what any part of
    /// prost-db (pool, migrator, outbox, roles, test databases) reports when it cannot
    /// connect, including a pool that could not open a connection within its acquire timeout.
    /// The message ends with the server's own words (or the network error) and what to check.
    #[error(
        "cannot connect to PostgreSQL at {host}:{port} (database {database:?}, user {user:?}): {}",
        connect_failure(source)
    )]
    Connect {
        /// Host name or socket directory.
        host: String,
        /// TCP port.
        port: u16,
        /// Database name.
        database: String,
        /// User name.
        user: String,
        /// The driver's error (never includes the password).
        #[source]
        source: sqlx::Error,
    },

    /// Every connection of a full pool stayed busy for the whole acquire timeout. (A pool
    /// with room to grow that could not open a connection in time is [`Error::Connect`].)
    #[error(
        "no database connection became available within {0:?}; raise max_connections or acquire_timeout, or look for long transactions"
    )]
    PoolTimedOut(Duration),

    /// The service's schema does not exist in the database.
    #[error(
        "schema {schema:?} does not exist in database {database:?}; run the migrations \
         (`prost-db migrate up`), create it with `CREATE SCHEMA {schema}`, or set \
         `DbConfig::create_schema(true)` / PROST_DB_CREATE_SCHEMA=true"
    )]
    SchemaMissing {
        /// The configured schema.
        schema: String,
        /// The database connected to.
        database: String,
    },

    /// [`Db::connect`](crate::Db::connect) found a connection pooler in transaction mode
    /// (PgBouncer) between the service and PostgreSQL while configured for a direct
    /// connection ([`Pooler::None`](crate::Pooler::None)), or, with
    /// [`Pooler::Auto`](crate::Pooler::Auto), found one that cannot bind the service to its
    /// schema. `evidence` is what gave it away: the startup parameter `options` refused
    /// (`unsupported startup parameter: options`) or dropped (the pooler's
    /// `ignore_startup_parameters = options`: `search_path` does not come from the client).
    #[error(
        "a transaction pooler is in the way at {host}:{port} (user {user:?}): {evidence}; {setting}"
    )]
    PoolerDetected {
        /// The host connected to.
        host: String,
        /// The port connected to.
        port: u16,
        /// The login role.
        user: String,
        /// What showed the pooler.
        evidence: String,
        /// What to set.
        setting: String,
    },

    /// A pooled connection reported a different `current_schema()` than configured.
    #[error(
        "connection is in schema {actual:?} but service {service:?} is configured for {expected:?}"
    )]
    SchemaMismatch {
        /// The service name.
        service: String,
        /// The configured schema.
        expected: String,
        /// What `current_schema()` returned.
        actual: String,
    },

    /// Tables the service needs are missing; lists all of them at once.
    #[error("schema {schema:?} is missing {} table(s): {}; run the migrations for this schema", missing.len(), missing.join(", "))]
    MissingTables {
        /// The schema searched.
        schema: String,
        /// Every missing table.
        missing: Vec<String>,
    },

    /// RabbitMQ could not be reached.
    #[cfg(feature = "amqp")]
    #[error(
        "cannot connect to RabbitMQ at {address}: {source}; check that the broker is running \
         (`rabbitmq-server -detached`, or `docker run -d -p 5672:5672 rabbitmq:4`) and that \
         AMQP_URL is right"
    )]
    AmqpConnect {
        /// The broker URL without its password.
        address: String,
        /// The client's error.
        #[source]
        source: Box<lapin::Error>,
    },

    /// A RabbitMQ channel or connection failed.
    #[cfg(feature = "amqp")]
    #[error("RabbitMQ error: {0}")]
    Amqp(#[source] Box<lapin::Error>),

    /// The broker refused (nacked) a published message.
    #[error(
        "RabbitMQ did not confirm the message published to {exchange:?} with routing key {routing_key:?}"
    )]
    PublishNotConfirmed {
        /// The exchange published to.
        exchange: String,
        /// The routing key.
        routing_key: String,
    },

    /// The broker returned a mandatory message: no queue is bound for its routing key (or,
    /// on the default exchange, no queue has that name). Nothing received it.
    #[error(
        "RabbitMQ returned the message published to {exchange:?} with routing key {routing_key:?} \
         ({reply}): no queue is bound for it; declare the queue and its binding \
         (`Topology::declare`) before publishing"
    )]
    PublishReturned {
        /// The exchange published to.
        exchange: String,
        /// The routing key.
        routing_key: String,
        /// The broker's reply code and text, e.g. `312 NO_ROUTE`.
        reply: String,
    },

    /// The broker did not take a publish within the publisher's confirm timeout (a memory
    /// or disk alarm blocks publishers; `rabbitmqctl status` lists alarms). The publisher's
    /// channel is abandoned: open a new one (the relay and consumer reconnect by
    /// themselves).
    #[error(
        "RabbitMQ did not confirm the message published to {exchange:?} with routing key \
         {routing_key:?} within {after:?}; a memory or disk alarm blocks publishers \
         (`rabbitmqctl status` lists alarms); this publisher's channel is abandoned, open a new one"
    )]
    PublishTimedOut {
        /// The exchange published to.
        exchange: String,
        /// The routing key.
        routing_key: String,
        /// The timeout that elapsed.
        after: Duration,
    },

    /// A queue exists on the broker with other arguments than the topology declares.
    #[error(
        "queue {queue:?} already exists with other arguments ({reason}); a queue's type \
         (quorum or classic), delivery limit, dead-letter exchange, TTL and single active \
         consumer cannot change in place: drain it and delete it (`rabbitmqctl delete_queue \
         {queue}`) so that it is declared anew, or declare it as it is (`QueueSpec::classic()` \
         for a classic work queue)"
    )]
    QueueInequivalent {
        /// The queue.
        queue: String,
        /// The broker's reason, naming the argument that differs.
        reason: String,
    },

    /// An event could not be serialized to JSON.
    #[error("cannot encode event: {0}")]
    EventEncode(#[source] serde_json::Error),
    /// The live database differs from the tables the code was compiled against
    /// ([`Db::check_tables`](crate::Db::check_tables)); lists every difference.
    #[error("the database differs from the schema the code expects:{0}")]
    SchemaDrift(crate::schema::SchemaDrift),

    /// A migration could not be loaded, checked or applied; see
    /// [`MigrateError`](crate::migrate::MigrateError).
    #[error(transparent)]
    Migrate(Box<crate::migrate::MigrateError>),

    /// An idempotency record that blocked this delivery was deleted before it could be read
    /// (a purge with a horizon shorter than the handler's run time). Retry the delivery.
    #[error(
        "the idempotency record of event {event_id:?} for {action:?} disappeared while it was being read; \
         retry the delivery, and keep the purge horizon longer than the broker's redelivery horizon"
    )]
    IdempotencyRecordVanished {
        /// The idempotency key.
        event_id: String,
        /// The handler's action.
        action: String,
    },

    /// A delivery's UUIDv7 key is older than the window of the partitioned idempotency
    /// records ([`PartitionedRecords`](crate::idempotency::PartitionedRecords) with
    /// [`ExpiredKeys::Reject`](crate::idempotency::ExpiredKeys::Reject)): its record was
    /// dropped with its day, so whether it ran before is no longer known. The body did not
    /// run. Not transient: dead-letter the delivery.
    #[error(
        "event {event_id:?} for {action:?} carries the time {key_time}, older than the window of the \
         idempotency records: its record expired, so it is rejected instead of processed again; \
         dead-letter it, or use ExpiredKeys::Reprocess to process such events anew"
    )]
    IdempotencyKeyExpired {
        /// The idempotency key.
        event_id: String,
        /// The handler's action.
        action: String,
        /// The time the key carries.
        key_time: chrono::DateTime<chrono::Utc>,
    },

    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Why a connection failed and what to do, for [`Error::Connect`]: the server's message and
/// SQLSTATE without the driver's decoration (sqlx's `Display` adds the line of the
/// server's C source that raised it), then a hint for the usual causes.
fn connect_failure(source: &sqlx::Error) -> String {
    let sqlx::Error::Database(e) = source else {
        return format!(
            "{source}; check that the server is running and that DATABASE_URL is right"
        );
    };
    let code = e.code().unwrap_or_default();
    let hint = match &*code {
        "3D000" => "create the database, or fix the database name in DATABASE_URL",
        "28P01" | "28000" => {
            "check the user and password in DATABASE_URL and the server's pg_hba.conf"
        }
        "42501" => "grant the user CONNECT on the database, or connect as another user",
        "53300" => {
            "the server has no free connection slot: lower the pools' max_connections or raise the server's"
        }
        "57P03" => "the server is starting up or shutting down: retry in a moment",
        _ if e.message().contains("unsupported startup parameter") => {
            "a connection pooler (PgBouncer) refuses startup parameters such as the schema's \
             search_path: set DbConfig::pooler(Pooler::Transaction) (PROST_DB_POOLER=transaction) \
             and give the service's role its schema as default search_path (provision_service_role)"
        }
        _ => "check DATABASE_URL and the server's log",
    };
    format!("the server said: {} (SQLSTATE {code}); {hint}", e.message())
}

#[cfg(feature = "amqp")]
impl From<lapin::Error> for Error {
    fn from(error: lapin::Error) -> Self {
        Error::Amqp(Box::new(error))
    }
}

/// `Result` with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
