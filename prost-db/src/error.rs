//! The crate's error type, the one mapping from driver errors to it, and the one
//! classification of what is worth retrying.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool};

use crate::ident::IdentifierKind;

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

impl Error {
    /// Whether the same operation may succeed if retried later: the one classification
    /// that [`idempotency::HandlerError`](crate::idempotency::HandlerError) and the
    /// consumer's handler errors use.
    ///
    /// Transient: a failure to connect ([`Connect`](Self::Connect)), a pool timeout, an
    /// idempotency record purged while it was read, RabbitMQ errors and unconfirmed
    /// publishes, and these driver errors: I/O, TLS, protocol, pool closed, and the
    /// SQLSTATEs of a lost or refused connection (class `08`), a server short of resources
    /// (class `53`), shutting down or restarting (class `57P`), a serialization failure
    /// (`40001`), a deadlock (`40P01`), a statement whose completion is unknown (`40003`),
    /// a lock timeout (`55P03`), a cancelled statement or statement timeout (`57014`), and
    /// a write on a read-only server (`25006`, an old primary after a failover). Everything
    /// else (constraint violations, bad SQL, bad data, configuration) is permanent.
    ///
    /// ```
    /// use std::time::Duration;
    /// use prost_db::Error;
    ///
    /// assert!(Error::PoolTimedOut(Duration::from_secs(30)).is_transient());
    /// assert!(Error::Database(sqlx::Error::PoolClosed).is_transient());
    /// assert!(!Error::Database(sqlx::Error::RowNotFound).is_transient());
    /// assert!(!Error::Config("bad".into()).is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::PoolTimedOut(_)
            | Error::IdempotencyRecordVanished { .. }
            | Error::PublishNotConfirmed { .. } => true,
            #[cfg(feature = "amqp")]
            Error::Amqp(_) | Error::AmqpConnect { .. } => true,
            Error::Database(error) => sqlx_error_is_transient(error),
            _ => false,
        }
    }

    /// The one mapping from a driver error to the crate's error, so that the same failure
    /// is the same variant whichever part of prost-db met it.
    ///
    /// A failure to connect becomes [`Error::Connect`] naming the server: any error while
    /// opening a connection ([`Origin::Connecting`]); otherwise I/O, TLS, a closed pool, a
    /// rejected login (class `28`), a missing database (`3D000`), too many connections
    /// (`53300`), a server not accepting connections yet (`57P03`), class `08`, and a pool
    /// timeout of a pool that had room for another connection (it kept failing to open
    /// one). A timeout of a full pool is [`Error::PoolTimedOut`]; the rest is
    /// [`Error::Database`].
    pub(crate) fn from_sqlx(error: sqlx::Error, origin: Origin<'_>) -> Error {
        let (server, pool) = match origin {
            Origin::Connecting(options) => return Server::of(options).connect_error(error),
            Origin::Pool(pool) => (Server::of(&pool.connect_options()), Some(pool)),
            Origin::Connection(server) => (server.cloned().unwrap_or_default(), None),
        };
        match &error {
            sqlx::Error::PoolTimedOut => match pool {
                Some(pool) if pool.size() >= pool.options().get_max_connections() => {
                    Error::PoolTimedOut(pool.options().get_acquire_timeout())
                }
                _ => server.connect_error(error),
            },
            e if is_connect_failure(e) => server.connect_error(error),
            _ => Error::Database(error),
        }
    }
}

/// Where a driver error happened, for [`Error::from_sqlx`].
#[derive(Clone, Copy)]
pub(crate) enum Origin<'a> {
    /// Opening a connection with these options: every failure is a failure to connect.
    Connecting(&'a PgConnectOptions),
    /// Acquiring from this pool, or a statement on one of its connections.
    Pool(&'a PgPool),
    /// A statement on an established connection to this server (`None`: not known).
    Connection(Option<&'a Server>),
}

/// The server a connection goes to, as errors name it: never the password.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) database: String,
    pub(crate) user: String,
}

impl Server {
    pub(crate) fn of(options: &PgConnectOptions) -> Server {
        Server {
            host: options.get_host().to_owned(),
            port: options.get_port(),
            database: options
                .get_database()
                .unwrap_or(options.get_username())
                .to_owned(),
            user: options.get_username().to_owned(),
        }
    }

    fn connect_error(self, source: sqlx::Error) -> Error {
        Error::Connect {
            host: self.host,
            port: self.port,
            database: self.database,
            user: self.user,
            source,
        }
    }
}

impl Default for Server {
    /// For connections whose options are not at hand.
    fn default() -> Self {
        Server {
            host: "(unknown host)".into(),
            port: 0,
            database: "(unknown)".into(),
            user: "(unknown)".into(),
        }
    }
}

/// A driver error that says the server cannot be reached or refused the session.
fn is_connect_failure(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Configuration(_) => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            code.starts_with("08")
                || code.starts_with("28")
                || matches!(code.as_ref(), "3D000" | "53300" | "57P03")
        }),
        _ => false,
    }
}

/// Whether a driver error may go away on retry; see [`Error::is_transient`].
pub(crate) fn sqlx_error_is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| sqlstate_is_transient(&code)),
        _ => false,
    }
}

/// Whether a SQLSTATE names a condition that may clear by itself.
pub(crate) fn sqlstate_is_transient(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources: too many connections, disk full, out of memory
        || code.starts_with("57P") // admin or crash shutdown, cannot connect now, ...
        || matches!(
            code,
            "25006" // read_only_sql_transaction: a write reached a standby (after a failover)
            | "40001" // serialization_failure
            | "40003" // statement_completion_unknown
            | "40P01" // deadlock_detected
            | "55P03" // lock_not_available: lock_timeout
            | "57014" // query_canceled: statement_timeout
        )
}

/// PostgreSQL's timeout settings are whole milliseconds in a 32-bit integer.
pub(crate) const MAX_PG_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// `timeout` in whole milliseconds for a PostgreSQL setting, rounded up (a non-zero
/// timeout never becomes `0`, which would mean "no timeout").
///
/// # Errors
///
/// [`Error::SettingOutOfRange`] beyond 2147483647 ms.
pub(crate) fn pg_timeout_millis(setting: &'static str, timeout: Duration) -> Result<u32> {
    if timeout > MAX_PG_TIMEOUT {
        return Err(Error::SettingOutOfRange {
            setting,
            value: timeout,
            max: MAX_PG_TIMEOUT,
        });
    }
    let millis = timeout.as_nanos().div_ceil(1_000_000);
    Ok(u32::try_from(millis).unwrap_or(i32::MAX as u32))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::Duration;

    use super::*;

    /// A server error with a given SQLSTATE, as the driver would report it.
    #[derive(Debug)]
    struct ServerError(&'static str);

    impl std::fmt::Display for ServerError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for ServerError {}

    impl sqlx::error::DatabaseError for ServerError {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn with_code(code: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(ServerError(code)))
    }

    #[test]
    fn sqlstates_are_transient_by_class_and_by_code() {
        let transient = [
            // class 08: connection exception
            "08000", "08001", "08003", "08004", "08006", "08P01",
            // class 53: insufficient resources
            "53000", "53100", "53200", "53300", "53400",
            // class 57P: operator intervention, shutting down
            "57P01", "57P02", "57P03", "57P04", "57P05", // one by one
            "25006", "40001", "40003", "40P01", "55P03", "57014",
        ];
        let permanent = [
            "23505", "23503", "23502", "23514", "22P02", "22012", "42P01", "42703", "42501",
            "2BP01", "25001", "25P02", "40002", "55000", "55006", "57000", "0A000", "XX000",
        ];
        for code in transient {
            assert!(sqlstate_is_transient(code), "{code}");
            assert!(Error::Database(with_code(code)).is_transient(), "{code}");
        }
        for code in permanent {
            assert!(!sqlstate_is_transient(code), "{code}");
            assert!(!Error::Database(with_code(code)).is_transient(), "{code}");
        }
    }

    #[test]
    fn error_kinds_are_transient_or_permanent() {
        let io = || sqlx::Error::Io(std::io::Error::other("reset"));
        let transient = [
            Error::Database(io()),
            Error::Database(sqlx::Error::Tls("handshake".into())),
            Error::Database(sqlx::Error::Protocol("garbled".into())),
            Error::Database(sqlx::Error::PoolTimedOut),
            Error::Database(sqlx::Error::PoolClosed),
            Error::Database(sqlx::Error::WorkerCrashed),
            Error::PoolTimedOut(Duration::from_secs(1)),
            Server::default().connect_error(io()),
            Error::IdempotencyRecordVanished {
                event_id: "e".into(),
                action: "a".into(),
            },
            Error::PublishNotConfirmed {
                exchange: "x".into(),
                routing_key: "k".into(),
            },
            #[cfg(feature = "amqp")]
            Error::from(lapin::Error::from(std::io::Error::other("reset"))),
        ];
        let permanent = [
            Error::Database(sqlx::Error::RowNotFound),
            Error::Database(sqlx::Error::ColumnNotFound("c".into())),
            Error::Database(sqlx::Error::Decode("bad".into())),
            Error::Config("bad".into()),
            Error::SchemaMissing {
                schema: "s".into(),
                database: "d".into(),
            },
            Error::EventEncode(serde_json::from_str::<u8>("x").unwrap_err()),
        ];
        for error in &transient {
            assert!(error.is_transient(), "{error:?}");
        }
        for error in &permanent {
            assert!(!error.is_transient(), "{error:?}");
        }
    }

    #[test]
    fn connection_failures_map_to_connect_naming_the_server() {
        let options = PgConnectOptions::new()
            .host("db.internal")
            .port(6543)
            .username("app")
            .password("hunter2")
            .database("shop");
        let server = Server::of(&options);
        for error in [
            sqlx::Error::Io(std::io::Error::other("reset")),
            sqlx::Error::PoolClosed,
            with_code("08006"),
            with_code("28P01"),
            with_code("3D000"),
            with_code("57P03"),
        ] {
            let mapped = Error::from_sqlx(error, Origin::Connection(Some(&server)));
            let shown = format!("{mapped} {mapped:?}");
            assert!(matches!(mapped, Error::Connect { .. }), "{shown}");
            assert!(shown.contains("db.internal:6543"), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        for error in [
            with_code("23505"),
            with_code("40001"),
            sqlx::Error::RowNotFound,
        ] {
            let mapped = Error::from_sqlx(error, Origin::Connection(Some(&server)));
            assert!(matches!(mapped, Error::Database(_)), "{mapped}");
        }
        let opening = Error::from_sqlx(with_code("23505"), Origin::Connecting(&options));
        assert!(matches!(opening, Error::Connect { .. }), "{opening}");
    }

    #[test]
    fn timeouts_round_up_to_whole_milliseconds_within_range() {
        let ms = |d| pg_timeout_millis("lock_timeout", d).unwrap();
        assert_eq!(ms(Duration::from_micros(1)), 1);
        assert_eq!(ms(Duration::from_micros(1500)), 2);
        assert_eq!(ms(Duration::from_secs(30)), 30_000);
        assert_eq!(ms(MAX_PG_TIMEOUT), 2_147_483_647);
        let err = pg_timeout_millis("lock_timeout", MAX_PG_TIMEOUT + Duration::from_millis(1))
            .unwrap_err();
        assert!(matches!(err, Error::SettingOutOfRange { .. }), "{err}");
        assert!(err.to_string().contains("lock_timeout"), "{err}");
    }
}
