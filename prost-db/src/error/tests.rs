//! Unit tests of the error mapping and classification.

use std::borrow::Cow;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use super::timeout::MAX_PG_TIMEOUT;
use super::transient::sqlstate_is_transient;
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
        "23505", "23503", "23502", "23514", "22P02", "22012", "42P01", "42703", "42501", "2BP01",
        "25001", "25P02", "40002", "55000", "55006", "57000", "0A000", "XX000",
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
    let err =
        pg_timeout_millis("lock_timeout", MAX_PG_TIMEOUT + Duration::from_millis(1)).unwrap_err();
    assert!(matches!(err, Error::SettingOutOfRange { .. }), "{err}");
    assert!(err.to_string().contains("lock_timeout"), "{err}");
}
