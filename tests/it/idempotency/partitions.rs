//! The partitioned layout of the idempotency records: dedup across partitions, the
//! expired-key policy, and expiry of a day by dropping its partition.

use chrono::{DateTime, Days, NaiveDate, Utc};
use prost_db::Db;
use prost_db::idempotency::{
    ExpiredKeys, HandlerError, IdempotencyStore, OTHER_PARTITION, Outcome, PartitionedRecords,
};
use prost_db::testing::TestDb;
use uuid::{NoContext, Timestamp, Uuid};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn v7_at(at: DateTime<Utc>) -> String {
    let secs = u64::try_from(at.timestamp()).expect("after 1970");
    Uuid::new_v7(Timestamp::from_unix(
        NoContext,
        secs,
        at.timestamp_subsec_nanos(),
    ))
    .to_string()
}

fn day_partition(day: NaiveDate) -> String {
    format!("idempotency_records_p{}", day.format("%Y%m%d"))
}

async fn setup(test_db: &TestDb, service: &str) -> prost_db::Result<Db> {
    let db = test_db.db(service).await?;
    IdempotencyStore::install(&db).await?;
    sqlx::raw_sql("CREATE TABLE applied (key TEXT NOT NULL)")
        .execute(db.pool())
        .await?;
    Ok(db)
}

/// One delivery: the body appends the key to `applied`.
async fn deliver(
    store: &IdempotencyStore,
    key: &str,
) -> Result<Outcome<i64>, HandlerError<sqlx::Error>> {
    let owned = key.to_owned();
    store
        .run("apply", key, &key, |mut tx| async move {
            sqlx::query("INSERT INTO applied (key) VALUES ($1)")
                .bind(owned)
                .execute(&mut **tx)
                .await?;
            Ok(1_i64)
        })
        .await
}

async fn applied(db: &Db, key: &str) -> prost_db::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM applied WHERE key = $1")
            .bind(key)
            .fetch_one(db.pool())
            .await?,
    )
}

async fn partition_of(db: &Db, key: &str) -> prost_db::Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT tableoid::regclass::text FROM idempotency_records WHERE event_id = $1",
    )
    .bind(key)
    .fetch_optional(db.pool())
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_records_dedup_exactly_across_partitions_and_a_move() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = setup(&test_db, "billing").await?;
    let now = Utc::now();
    let records = PartitionedRecords::new(7)?.days_ahead(1);
    // Installed two days ago: partitions for then and the day after, none for today.
    let installed = records.install_at(&db, now - Days::new(2)).await?;
    let two_days_ago = (now - Days::new(2)).date_naive();
    assert_eq!(
        installed.created,
        vec![two_days_ago, two_days_ago + Days::new(1)]
    );

    let old = v7_at(now - Days::new(2));
    let today = v7_at(now);
    let keys = [
        old.clone(),
        today.clone(),
        "order-7".to_owned(),
        Uuid::new_v4().to_string(),
    ];
    let store = IdempotencyStore::new(&db);
    for key in &keys {
        // Four concurrent deliveries of each key: exactly one runs the body.
        let runs = futures_join4(&store, key).await;
        let processed = runs.iter().filter(|o| !o.is_duplicate()).count();
        assert_eq!(processed, 1, "{key}: {runs:?}");
    }
    assert_eq!(
        partition_of(&db, &old).await?,
        Some(day_partition(two_days_ago))
    );
    assert_eq!(
        partition_of(&db, &today).await?,
        Some(OTHER_PARTITION.to_owned())
    );

    // Maintenance creates today's partition and moves today's record into it.
    let done = records.maintain_at(&db, now).await?;
    assert_eq!(
        done.created,
        vec![now.date_naive(), now.date_naive() + Days::new(1)]
    );
    assert_eq!(done.moved, 1);
    assert!(done.dropped.is_empty());
    assert_eq!(
        partition_of(&db, &today).await?,
        Some(day_partition(now.date_naive()))
    );

    for key in &keys {
        let again = deliver(&store, key).await?;
        assert_eq!(again, Outcome::Duplicate(1), "{key}");
        assert_eq!(applied(&db, key).await?, 1, "{key} applied once");
    }
    db.close().await;
    test_db.close().await?;
    Ok(())
}

async fn futures_join4(store: &IdempotencyStore, key: &str) -> Vec<Outcome<i64>> {
    let (a, b, c, d) = tokio::join!(
        deliver(store, key),
        deliver(store, key),
        deliver(store, key),
        deliver(store, key)
    );
    [a, b, c, d]
        .into_iter()
        .map(|r| r.expect("delivery"))
        .collect()
}

#[tokio::test]
async fn a_duplicate_after_expiry_is_rejected_or_reprocessed_as_configured() -> TestResult {
    let test_db = TestDb::new().await?;
    let now = Utc::now();
    for (service, policy) in [
        ("rejecting", ExpiredKeys::Reject),
        ("reprocessing", ExpiredKeys::Reprocess),
    ] {
        let db = setup(&test_db, service).await?;
        let records = PartitionedRecords::new(3)?
            .days_ahead(0)
            .expired_keys(policy);
        records.install_at(&db, now - Days::new(5)).await?;
        let store = IdempotencyStore::new(&db);
        let key = v7_at(now - Days::new(5));
        assert_eq!(deliver(&store, &key).await?, Outcome::Processed(1));

        let done = records.maintain_at(&db, now).await?;
        assert_eq!(done.dropped, vec![(now - Days::new(5)).date_naive()]);
        assert_eq!(partition_of(&db, &key).await?, None, "the record expired");

        let late = deliver(&store, &key).await;
        match policy {
            ExpiredKeys::Reject => {
                let error = late.expect_err("an expired key is rejected");
                assert!(
                    matches!(
                        &error,
                        HandlerError::Database(prost_db::Error::IdempotencyKeyExpired { event_id, .. })
                            if *event_id == key
                    ),
                    "{error:?}"
                );
                assert!(!error.should_retry());
                assert!(
                    error.to_string().contains("ExpiredKeys::Reprocess"),
                    "{error}"
                );
                assert_eq!(applied(&db, &key).await?, 1, "rejected: not applied again");
                assert_eq!(partition_of(&db, &key).await?, None);
            }
            _ => {
                assert_eq!(late?, Outcome::Processed(1));
                assert_eq!(applied(&db, &key).await?, 2, "reprocessed");
                assert_eq!(
                    partition_of(&db, &key).await?,
                    Some(OTHER_PARTITION.to_owned())
                );
            }
        }
        // Keys inside the window, with or without a day partition, are processed either
        // way; the policy only looks at UUIDv7 keys older than the window.
        for fresh in [v7_at(now), v7_at(now - Days::new(2)), "order-9".to_owned()] {
            assert_eq!(
                deliver(&store, &fresh).await?,
                Outcome::Processed(1),
                "{fresh}"
            );
            assert_eq!(
                deliver(&store, &fresh).await?,
                Outcome::Duplicate(1),
                "{fresh}"
            );
        }
        db.close().await;
    }
    test_db.close().await?;
    Ok(())
}

/// Inserts `rows` records keyed by UUIDv7 ids of `day`, in one statement.
async fn load_day(db: &Db, day: NaiveDate, rows: i64) -> prost_db::Result<()> {
    let start = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    sqlx::query(
        "INSERT INTO idempotency_records (event_id, service_name, action) \
         SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-7000-8000-' || lpad(to_hex(g), 12, '0'), \
                'billing', 'apply' \
         FROM (SELECT g, lpad(to_hex($1 + g * (86400000 / $2)), 12, '0') AS h \
               FROM generate_series(0, $2 - 1) g) ids",
    )
    .bind(start.timestamp_millis())
    .bind(rows)
    .execute(db.pool())
    .await?;
    Ok(())
}

async fn records_of(db: &Db, day: NaiveDate) -> prost_db::Result<i64> {
    let key = |d: NaiveDate| v7_at(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM idempotency_records WHERE event_id >= left($1, 13) AND event_id < left($2, 13)",
    )
    .bind(key(day))
    .bind(key(day + Days::new(1)))
    .fetch_one(db.pool())
    .await?)
}

#[tokio::test]
async fn maintenance_drops_each_expired_day_whole_and_keeps_the_window() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = setup(&test_db, "billing").await?;
    let now = Utc::now();
    let day = |back: u64| (now - Days::new(back)).date_naive();
    let records = PartitionedRecords::new(2)?.days_ahead(4);
    records.install_at(&db, now - Days::new(4)).await?;
    for back in 0..=4 {
        load_day(&db, day(back), 5_000).await?;
    }
    assert_eq!(records_of(&db, day(4)).await?, 5_000);
    let other: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_records_other")
        .fetch_one(db.pool())
        .await?;
    assert_eq!(other, 0, "every loaded day has its partition");

    let done = records.maintain_at(&db, now).await?;
    assert_eq!(done.dropped, vec![day(4), day(3)]);
    assert_eq!(done.purged_other, 0, "nothing deleted row by row");
    for back in [4, 3] {
        let gone: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(day_partition(day(back)))
            .fetch_one(db.pool())
            .await?;
        assert_eq!(gone, None, "the partition of {} is dropped", day(back));
        assert_eq!(records_of(&db, day(back)).await?, 0);
    }
    for back in 0..=2 {
        assert_eq!(
            records_of(&db, day(back)).await?,
            5_000,
            "{} kept",
            day(back)
        );
    }

    // The plain layout's purge finds rows by ctid, unique only within a partition: refused.
    let purge = IdempotencyStore::new(&db)
        .purge_older_than(std::time::Duration::from_secs(86_400))
        .await;
    assert!(
        matches!(&purge, Err(prost_db::Error::Config(m)) if m.contains("PartitionedRecords::maintain")),
        "{purge:?}"
    );

    let again = records.maintain_at(&db, now).await?;
    assert!(
        again.dropped.is_empty() && again.created.is_empty(),
        "{again:?}"
    );
    db.close().await;
    test_db.close().await?;
    Ok(())
}

/// Expiry detaches a day, then drops it in a transaction of its own (so that handlers never
/// wait on the removal of its files). A run stopped in between leaves the day's table
/// detached: the next run drops it, and keeps the days of the window.
#[tokio::test]
async fn a_day_left_detached_by_an_interrupted_maintenance_is_dropped_by_the_next() -> TestResult {
    let test_db = TestDb::new().await?;
    let db = setup(&test_db, "billing").await?;
    let now = Utc::now();
    let day = |back: u64| (now - Days::new(back)).date_naive();
    let records = PartitionedRecords::new(2)?.days_ahead(3);
    records.install_at(&db, now - Days::new(3)).await?;
    for back in 0..=3 {
        load_day(&db, day(back), 1_000).await?;
    }
    // What a run stopped after its detach leaves: the day's table, outside the parent.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE idempotency_records DETACH PARTITION {}",
        day_partition(day(3))
    )))
    .execute(db.pool())
    .await?;
    assert_eq!(
        records_of(&db, day(3)).await?,
        0,
        "detached: out of the table"
    );

    let done = records.maintain_at(&db, now).await?;
    assert_eq!(done.dropped, vec![day(3)], "{done:?}");
    let left: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(day_partition(day(3)))
        .fetch_one(db.pool())
        .await?;
    assert_eq!(left, None, "the detached day's table is dropped");
    for back in 0..=2 {
        assert_eq!(
            records_of(&db, day(back)).await?,
            1_000,
            "{} kept",
            day(back)
        );
    }
    let again = records.maintain_at(&db, now).await?;
    assert!(again.dropped.is_empty(), "{again:?}");
    db.close().await;
    test_db.close().await?;
    Ok(())
}
