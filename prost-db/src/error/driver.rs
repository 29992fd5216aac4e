//! The one mapping from driver errors to [`Error`], and the server they name.

use sqlx::postgres::{PgConnectOptions, PgPool};

use super::Error;

impl Error {
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

    pub(super) fn connect_error(self, source: sqlx::Error) -> Error {
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
