//! A body returning data in both handler modes: the result as stored and replayed equals the
//! one returned, whatever its strings hold (chained mode sends it hex-encoded in one simple
//! query with the commit); a result the database refuses, or a record the body deleted,
//! commits nothing, and a chained slot serves its next event.

use prost_db::idempotency::{HandlerError, HandlerMode, IdempotencyStore, Outcome, TxLease};
use prost_db::testing::TestDb;
use prost_db::{Db, Error};
use serde_json::{Value, json};

use super::TestResult;

const MODES: [HandlerMode; 2] = [HandlerMode::Transaction, HandlerMode::Chained];

async fn connect(test_db: &TestDb, mode: HandlerMode) -> prost_db::Result<Db> {
    let db = Db::connect(test_db.config("catalog").handler_mode(mode)).await?;
    IdempotencyStore::install(&db).await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS effects (mode TEXT NOT NULL, key TEXT NOT NULL, \
         action TEXT NOT NULL)",
    )
    .execute(db.pool())
    .await?;
    Ok(db)
}

/// Strings that end a naive literal or look like SQL, placeholders or escapes.
const HOSTILE: &[&str] = &[
    "it's",
    "''",
    r"a\b \\ \'",
    "$$ $tag$ $$",
    "'; DROP TABLE idempotency_records; --",
    "E'\\x41' U&'\\0041'",
    "{schema} {result} {key}",
    "ünïcödé 中文 עברית",
    "🦀👨‍👩‍👧",
    "\n\t\r\"",
    "",
];

/// A result with every hostile string as a value and as a key, nested maps, and 1 MB.
fn result_for(round: usize) -> Value {
    let mut nested = serde_json::Map::new();
    for (i, text) in HOSTILE.iter().enumerate() {
        nested.insert(
            (*text).to_owned(),
            json!({ "value": text, "deeper": { "i'": i, "list": [text, null, 2.5, true] } }),
        );
    }
    json!({
        "round": round,
        "strings": HOSTILE,
        "nested": nested,
        "big": "'\\$é🦀 ".repeat(1 << 17),
    })
}

/// The effect rows of one key of one action in one mode.
async fn effects(db: &Db, mode: HandlerMode, key: &str, action: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM effects WHERE mode = $1 AND key = $2 AND action = $3")
        .bind(mode.as_str())
        .bind(key)
        .bind(action)
        .fetch_one(db.pool())
        .await
}

/// The stored result of a key: `None` without a record, `Some(None)` for a `NULL` result.
async fn stored(db: &Db, key: &str, action: &str) -> sqlx::Result<Option<Option<Value>>> {
    let row: Option<(Option<sqlx::types::Json<Value>>,)> = sqlx::query_as(
        "SELECT result FROM idempotency_records WHERE event_id = $1 AND action = $2",
    )
    .bind(key)
    .bind(action)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(|(result,)| result.map(|json| json.0)))
}

/// Runs the body that writes one effect row, then runs `then` on its transaction and
/// returns `result`.
async fn run(
    db: &Db,
    action: &str,
    key: &str,
    result: Value,
    then: &'static str,
) -> Result<Outcome<Value>, HandlerError<sqlx::Error>> {
    let (mode, key_owned, action_owned) = (db.handler_mode(), key.to_owned(), action.to_owned());
    IdempotencyStore::new(db)
        .run(action, key, &(), async move |mut tx: TxLease| {
            sqlx::query("INSERT INTO effects (mode, key, action) VALUES ($1, $2, $3)")
                .bind(mode.as_str())
                .bind(&key_owned)
                .bind(&action_owned)
                .execute(&mut **tx)
                .await?;
            if !then.is_empty() {
                sqlx::query(then)
                    .bind(&key_owned)
                    .bind(&action_owned)
                    .execute(&mut **tx)
                    .await?;
            }
            Ok(result)
        })
        .await
}

async fn backend_pid(db: &Db, key: &str) -> Result<i32, Box<dyn std::error::Error + Send + Sync>> {
    let pid = IdempotencyStore::new(db)
        .run("pid", key, &(), async move |mut tx: TxLease| {
            sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
                .fetch_one(&mut **tx)
                .await
        })
        .await?;
    Ok(pid.into_inner())
}

#[tokio::test]
async fn a_result_with_hostile_strings_is_stored_and_replayed_equal_in_both_modes() -> TestResult {
    let test_db = TestDb::new().await?;
    for mode in MODES {
        let db = connect(&test_db, mode).await?;
        for (round, action) in ["reserve'; DROP TABLE effects; --", "ship $$ 🦀 \\"]
            .into_iter()
            .enumerate()
        {
            let key = format!("{mode} order '{round}' \\' $$ 🦀");
            let result = result_for(round);
            let first = run(&db, action, &key, result.clone(), "").await?;
            assert!(first == Outcome::Processed(result.clone()), "{mode}");
            assert!(
                stored(&db, &key, action).await? == Some(Some(result.clone())),
                "{mode}: the row holds the result"
            );
            // A redelivery replays the stored result, not the one its body would return.
            let again = run(&db, action, &key, json!("other"), "").await?;
            assert!(again == Outcome::Duplicate(result), "{mode}");
            assert_eq!(effects(&db, mode, &key, action).await?, 1, "{mode}");
        }
        if mode == HandlerMode::Chained {
            assert_eq!(db.chained_idle(), 1, "the slot is kept");
        }
        db.close().await;
    }
    test_db.close().await?;
    Ok(())
}

/// The SQLSTATE of a handler's database error.
fn sqlstate(error: &HandlerError<sqlx::Error>) -> Option<String> {
    match error {
        HandlerError::Database(Error::Database(sqlx::Error::Database(e))) => {
            e.code().map(|code| code.into_owned())
        }
        _ => None,
    }
}

#[tokio::test]
async fn a_result_write_that_fails_commits_nothing_and_the_slot_serves_the_next_event() -> TestResult
{
    let test_db = TestDb::new().await?;
    for mode in MODES {
        let db = connect(&test_db, mode).await?;
        let before = backend_pid(&db, &format!("{mode}-before")).await?;

        // jsonb refuses the escape \u0000 in a string: the result UPDATE fails.
        let key = format!("{mode}-nul");
        let refused = run(&db, "nul", &key, json!({"text": "a\u{0}b"}), "").await;
        let error = refused.expect_err("jsonb refuses \\u0000");
        assert_eq!(
            sqlstate(&error).as_deref(),
            Some("22P05"),
            "{mode}: {error:?}"
        );
        assert!(!error.is_transient(), "{mode}: {error:?}");
        assert_eq!(stored(&db, &key, "nul").await?, None, "{mode}: no record");
        assert_eq!(
            effects(&db, mode, &key, "nul").await?,
            0,
            "{mode}: no effect"
        );

        // A body that deletes its own claim: the UPDATE finds no record, and nothing commits.
        let key = format!("{mode}-deleted");
        let deleted = run(
            &db,
            "deleted",
            &key,
            json!({"left": 1}),
            "DELETE FROM idempotency_records WHERE event_id = $1 AND action = $2",
        )
        .await;
        let error = deleted.expect_err("the record is gone");
        assert!(
            matches!(
                &error,
                HandlerError::Database(Error::IdempotencyRecordVanished { event_id, action })
                    if *event_id == key && action == "deleted"
            ),
            "{mode}: {error:?}"
        );
        assert_eq!(
            stored(&db, &key, "deleted").await?,
            None,
            "{mode}: no record"
        );
        assert_eq!(
            effects(&db, mode, &key, "deleted").await?,
            0,
            "{mode}: no effect"
        );

        // The next events work; chained, on the same kept connection.
        let after = backend_pid(&db, &format!("{mode}-after")).await?;
        let retried = run(
            &db,
            "nul",
            &format!("{mode}-nul"),
            json!({"text": "ab"}),
            "",
        )
        .await?;
        assert_eq!(retried, Outcome::Processed(json!({"text": "ab"})), "{mode}");
        if mode == HandlerMode::Chained {
            assert_eq!(after, before, "the slot was rolled back and kept");
            assert_eq!(db.chained_idle(), 1);
        }
        db.close().await;
    }
    test_db.close().await?;
    Ok(())
}
