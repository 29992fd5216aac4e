//! The RabbitMQ consumer against a real broker: poison messages, retries, shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost_db::amqp::lapin::options::{BasicGetOptions, QueueDeclareOptions};
use prost_db::amqp::lapin::types::{AMQPValue, FieldTable};
use prost_db::amqp::lapin::{Channel, Connection};
use prost_db::amqp::{
    self, ATTEMPT_HEADER, Consumer, DEAD_LETTER_REASON_HEADER, DeliveryError, Publisher, QueueSpec,
    Topology,
};
use prost_db::events::{Event, EventPayload};
use prost_shop::scenario::wait_until;
use tokio::sync::oneshot;
use uuid::Uuid;

/// A broker topology with names unique to one test, deleted at the end.
pub(crate) struct Broker {
    pub connection: Arc<Connection>,
    pub channel: Channel,
    pub prefix: String,
    pub topology: Topology,
}

impl Broker {
    pub async fn shop() -> Broker {
        let prefix = format!("t{}.", Uuid::new_v4().simple());
        Self::with(Topology::shop(&prefix), prefix).await
    }

    pub async fn with(topology: Topology, prefix: String) -> Broker {
        expire_unused_test_queues();
        let connection = amqp::connect(&amqp::url_from_env()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        topology.declare(&channel).await.unwrap();
        Broker {
            connection: Arc::new(connection),
            channel,
            prefix,
            topology,
        }
    }

    pub fn spec(&self, i: usize) -> QueueSpec {
        self.topology.queues()[i].clone()
    }

    /// Ready messages in `queue` (unacked ones held by a live consumer are not counted).
    pub async fn depth(&self, queue: &str) -> u32 {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count()
    }

    /// Takes every message from `queue`: (reason header, body).
    pub async fn drain(&self, queue: &str) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(msg) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            let reason = header(&msg.delivery.properties, DEAD_LETTER_REASON_HEADER);
            out.push((reason.unwrap_or_default(), msg.delivery.data.clone()));
        }
        out
    }

    /// Ready messages in all of `spec`'s retry tiers.
    pub async fn retry_depth(&self, spec: &QueueSpec) -> u32 {
        let mut depth = 0;
        for (_, queue) in spec.retry_queues() {
            depth += self.depth(&queue).await;
        }
        depth
    }

    /// Asserts that nothing reached the dead-letter queue of queue family `i`.
    pub async fn assert_no_dead_letters(&self, i: usize) {
        let dead = self.drain(&self.spec(i).dead_letter_queue()).await;
        assert!(dead.is_empty(), "dead-lettered: {dead:?}");
    }

    /// Waits until `queue` is empty, then stops the consumer task behind `stop` and returns
    /// its stats.
    pub async fn stop_once_drained(
        &self,
        queue: &str,
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<prost_db::Result<prost_db::amqp::ConsumerStats>>,
    ) -> prost_db::amqp::ConsumerStats {
        let drained = wait_until(Duration::from_secs(10), || async {
            self.depth(queue).await == 0
        })
        .await;
        let _ = stop.send(());
        let stats = task.await.unwrap().unwrap();
        assert!(drained, "{queue} is not empty: {stats:?}");
        stats
    }

    pub async fn cleanup(self) {
        self.topology.delete(&self.channel).await.unwrap();
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// The broker policy that deletes test queues (`t<32 hex digits>.*`, the prefix every test
/// topology uses) after [`TEST_QUEUE_EXPIRY_MS`] without consumers or use: those of a killed
/// run vanish by themselves. A policy, unlike an `x-expires` argument, also covers the
/// queues a test declares through the shop's own topology, and the leftovers of earlier runs.
pub(crate) const TEST_QUEUE_POLICY: &str = "prost-db-test-queues";
const TEST_QUEUE_PATTERN: &str = r"^t[0-9a-f]{32}\.";
const TEST_QUEUE_EXPIRY_MS: u64 = 30 * 60 * 1000;

/// Sets [`TEST_QUEUE_POLICY`] once per process (best effort: without `rabbitmqctl`, test
/// queues of killed runs stay until deleted by hand).
pub(crate) fn expire_unused_test_queues() {
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| {
        let definition = format!(r#"{{"expires":{TEST_QUEUE_EXPIRY_MS}}}"#);
        let set = std::process::Command::new("rabbitmqctl")
            .args(["set_policy", "--apply-to", "queues", "--priority", "0"])
            .args([TEST_QUEUE_POLICY, TEST_QUEUE_PATTERN, definition.as_str()])
            .output();
        if !set.as_ref().is_ok_and(|out| out.status.success()) {
            eprintln!("could not set the {TEST_QUEUE_POLICY} policy: {set:?}");
        }
    });
}

pub(crate) fn header(
    properties: &prost_db::amqp::lapin::BasicProperties,
    name: &str,
) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Ping {
    n: u32,
}

impl EventPayload for Ping {
    const EVENT_TYPE: &'static str = "Ping";
    const AGGREGATE_TYPE: &'static str = "ping";
    const ROUTING_KEY: &'static str = "ping.sent";
}

fn ping_topology(prefix: &str, spec: impl FnOnce(QueueSpec) -> QueueSpec) -> Topology {
    Topology::new()
        .exchange(format!("{prefix}pings"))
        .queue(spec(
            QueueSpec::new(format!("{prefix}pong")).bind(format!("{prefix}pings"), "ping.#"),
        ))
}

async fn ping_broker() -> Broker {
    ping_broker_with(|spec| spec).await
}

/// The ping topology, its queue family adjusted by `spec`.
async fn ping_broker_with(spec: impl FnOnce(QueueSpec) -> QueueSpec) -> Broker {
    let prefix = format!("t{}.", Uuid::new_v4().simple());
    Broker::with(ping_topology(&prefix, spec), prefix).await
}

/// A test database whose `catalog` schema has the outbox, and a ping topology.
async fn outbox_fixture() -> (
    prost_db::testing::TestDb,
    prost_db::Db,
    Broker,
    prost_db::outbox::Outbox,
) {
    let test_db = prost_db::testing::TestDb::new().await.unwrap();
    let db = test_db.db("catalog").await.unwrap();
    prost_db::outbox::install(&db).await.unwrap();
    let outbox = prost_db::outbox::Outbox::new(&db);
    (test_db, db, ping_broker().await, outbox)
}

/// Stages `Ping { n }` for every `n`, for `exchange`, in one transaction.
async fn stage_pings(db: &prost_db::Db, exchange: &str, ns: std::ops::Range<u32>) {
    let outbox = prost_db::outbox::Outbox::new(db);
    let mut tx = db.begin().await.unwrap();
    for n in ns {
        let event = Event::new(n.to_string(), "c", Ping { n });
        outbox.stage(&mut tx, exchange, &event).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// Takes every message from the ping queue: the distinct `n`s.
async fn pings_in_queue(broker: &Broker) -> std::collections::HashSet<u32> {
    broker
        .drain(&broker.spec(0).queue())
        .await
        .iter()
        .map(|(_, body)| {
            serde_json::from_slice::<Event<Ping>>(body)
                .unwrap()
                .payload
                .n
        })
        .collect()
}

/// Runs `consumer` until `done` holds, then shuts it down gracefully.
async fn run_until<F, Fut>(
    broker: &Broker,
    consumer: Consumer,
    done: F,
) -> prost_db::amqp::ConsumerStats
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let (stop, stopped) = oneshot::channel::<()>();
    let connection = Arc::clone(&broker.connection);
    let task = tokio::spawn(async move {
        consumer
            .run(&connection, async {
                let _ = stopped.await;
            })
            .await
    });
    assert!(wait_until(Duration::from_secs(30), done).await, "timed out");
    let _ = stop.send(());
    task.await.unwrap().unwrap()
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_with_the_reason_and_valid_ones_behind_them_processed() {
    let broker = ping_broker().await;
    let exchange = format!("{}pings", broker.prefix);
    let publisher = Publisher::new(&broker.connection).await.unwrap();

    let raw = |body: &'static [u8]| {
        let publisher = publisher.clone();
        let exchange = exchange.clone();
        async move {
            publisher
                .publish_raw(&exchange, "ping.sent", body, FieldTable::default())
                .await
                .unwrap()
        }
    };
    raw(b"this is not json").await;
    raw(br#"{"event_type":"Ping","n":1}"#).await;
    raw(br#"{"event_id":"42","event_type":"Ping","n":1}"#).await;
    // A valid envelope whose payload does not decode as `Ping`.
    let mut bad_payload = serde_json::to_value(Event::new("1", "c", Ping { n: 1 })).unwrap();
    bad_payload["n"] = serde_json::json!("not a number");
    publisher
        .publish_raw(
            &exchange,
            "ping.sent",
            &serde_json::to_vec(&bad_payload).unwrap(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // The handler rejects n = 13 permanently.
    let rejected = Event::new("13", "c", Ping { n: 13 });
    publisher.publish(&exchange, &rejected).await.unwrap();
    let valid: Vec<Event<Ping>> = (100..120)
        .map(|n| Event::new("v", "c", Ping { n }))
        .collect();
    for event in &valid {
        publisher.publish(&exchange, event).await.unwrap();
    }

    let seen = Arc::new(Mutex::new(Vec::new()));
    let consumer = Consumer::new(broker.spec(0)).prefetch(4).on({
        let seen = Arc::clone(&seen);
        move |event: Event<Ping>| {
            let seen = Arc::clone(&seen);
            async move {
                if event.payload.n == 13 {
                    return Err(DeliveryError::permanent("13 is unlucky"));
                }
                seen.lock().unwrap().push(event.payload.n);
                Ok(())
            }
        }
    });
    let stats = run_until(&broker, consumer, || {
        let seen = Arc::clone(&seen);
        async move { seen.lock().unwrap().len() == 20 }
    })
    .await;

    let mut processed = seen.lock().unwrap().clone();
    processed.sort_unstable();
    assert_eq!(processed, (100..120).collect::<Vec<_>>());
    assert!(
        wait_until(Duration::from_secs(5), || async {
            broker.depth(&broker.spec(0).dead_letter_queue()).await == 5
        })
        .await
    );
    let mut reasons: Vec<String> = broker
        .drain(&broker.spec(0).dead_letter_queue())
        .await
        .into_iter()
        .map(|(reason, _)| reason)
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    assert!(reasons[0].starts_with("invalid event_id"), "{reasons:?}");
    assert_eq!(reasons[1], "missing event_id");
    assert!(
        reasons[2].starts_with("permanent: 13 is unlucky"),
        "{reasons:?}"
    );
    assert!(
        reasons[3].starts_with("permanent: cannot decode Ping payload"),
        "{reasons:?}"
    );
    assert!(
        reasons[4].starts_with("undecodable: not JSON"),
        "{reasons:?}"
    );
    assert_eq!(stats.acked, 20);
    assert_eq!(stats.dead_lettered, 5);
    assert_eq!(broker.depth(&broker.spec(0).queue()).await, 0);
    broker.cleanup().await;
}

#[tokio::test]
async fn transient_failures_are_retried_with_delay_until_they_succeed_or_run_out_of_attempts() {
    let broker =
        ping_broker_with(|spec| spec.retry_delays([50, 100, 200].map(Duration::from_millis))).await;
    let exchange = format!("{}pings", broker.prefix);
    let publisher = Publisher::new(&broker.connection).await.unwrap();
    // n < 10: fails twice, then succeeds; n = 99: always fails.
    for n in (0..10).chain([99]) {
        publisher
            .publish(&exchange, &Event::new("p", "c", Ping { n }))
            .await
            .unwrap();
    }
    let attempts: Arc<Mutex<HashMap<u32, Vec<u32>>>> = Arc::default();
    let consumer = Consumer::new(broker.spec(0))
        .max_attempts(4)
        .handler("Ping", {
            let attempts = Arc::clone(&attempts);
            move |delivered| {
                let attempts = Arc::clone(&attempts);
                async move {
                    let n = delivered.decode::<Ping>()?.payload.n;
                    let mut map = attempts.lock().unwrap();
                    let tries = map.entry(n).or_default();
                    tries.push(delivered.attempt);
                    if n == 99 || tries.len() < 3 {
                        return Err(DeliveryError::transient("database is restarting"));
                    }
                    Ok(())
                }
            }
        });
    let stats = run_until(&broker, consumer, || {
        let broker = &broker;
        async move { broker.depth(&broker.spec(0).dead_letter_queue()).await == 1 }
    })
    .await;
    let attempts = attempts.lock().unwrap().clone();
    for n in 0..10 {
        assert_eq!(attempts[&n], vec![1, 2, 3], "event {n}");
    }
    assert_eq!(attempts[&99], vec![1, 2, 3, 4]);
    assert_eq!(stats.acked, 10);
    assert_eq!(stats.retried, 10 * 2 + 3);
    let dead = broker.drain(&broker.spec(0).dead_letter_queue()).await;
    assert!(
        dead[0]
            .0
            .starts_with("too many attempts (4): transient: database is restarting"),
        "{:?}",
        dead[0].0
    );
    assert_eq!(broker.depth(&broker.spec(0).queue()).await, 0);
    assert_eq!(broker.retry_depth(&broker.spec(0)).await, 0);
    broker.cleanup().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_deliveries_and_requeues_the_rest() {
    let broker = ping_broker().await;
    let exchange = format!("{}pings", broker.prefix);
    let publisher = Publisher::new(&broker.connection).await.unwrap();
    for n in 0..40 {
        publisher
            .publish(&exchange, &Event::new("p", "c", Ping { n }))
            .await
            .unwrap();
    }
    let started = Arc::new(Mutex::new(0u32));
    let finished = Arc::new(Mutex::new(0u32));
    let consumer = Consumer::new(broker.spec(0)).prefetch(8).on({
        let (started, finished) = (Arc::clone(&started), Arc::clone(&finished));
        move |_event: Event<Ping>| {
            let (started, finished) = (Arc::clone(&started), Arc::clone(&finished));
            async move {
                *started.lock().unwrap() += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
                *finished.lock().unwrap() += 1;
                Ok(())
            }
        }
    });
    // Stop while the first batch is in flight.
    let stats = run_until(&broker, consumer, || {
        let started = Arc::clone(&started);
        async move { *started.lock().unwrap() >= 8 }
    })
    .await;
    let finished = *finished.lock().unwrap();
    assert_eq!(
        u64::from(finished),
        stats.acked,
        "every finished handler was acked"
    );
    assert_eq!(*started.lock().unwrap(), finished, "no handler was cut off");
    assert!(finished < 40);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            broker.depth(&broker.spec(0).queue()).await == 40 - finished
        })
        .await,
        "the unprocessed messages are back in the queue"
    );
    broker.cleanup().await;
}

#[tokio::test]
async fn attempt_header_survives_the_retry_queue() {
    // The retry copy's attempt header is what bounds retries across processes.
    let broker = ping_broker().await;
    let exchange = format!("{}pings", broker.prefix);
    let publisher = Publisher::new(&broker.connection).await.unwrap();
    let mut headers = FieldTable::default();
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(3));
    let event = Event::new("p", "c", Ping { n: 1 });
    publisher
        .publish_raw(&exchange, "ping.sent", &event.to_json().unwrap(), headers)
        .await
        .unwrap();
    let consumer = Consumer::new(broker.spec(0))
        .max_attempts(3)
        .handler("Ping", |_| async {
            Err::<(), _>(DeliveryError::transient("still down"))
        });
    run_until(&broker, consumer, || async {
        broker.depth(&broker.spec(0).dead_letter_queue()).await == 1
    })
    .await;
    let dead = broker.drain(&broker.spec(0).dead_letter_queue()).await;
    assert!(
        dead[0].0.starts_with("too many attempts (3)"),
        "{:?}",
        dead[0].0
    );
    broker.cleanup().await;
}

#[tokio::test]
async fn outbox_publishes_only_committed_events_once_each_and_purges_published_rows() {
    use prost_db::outbox::{self, Outbox, Relay};
    use prost_db::testing::TestDb;

    let test_db = TestDb::new().await.unwrap();
    let db = test_db.db("catalog").await.unwrap();
    outbox::install(&db).await.unwrap();
    outbox::install(&db).await.unwrap(); // idempotent
    let broker = ping_broker().await;
    let exchange = format!("{}pings", broker.prefix);
    let outbox = Outbox::new(&db);

    let committed = Event::new("1", "c", Ping { n: 1 });
    for _ in 0..2 {
        let mut tx = db.begin().await.unwrap();
        outbox.stage(&mut tx, &exchange, &committed).await.unwrap();
        tx.commit().await.unwrap();
    }
    let mut tx = db.begin().await.unwrap();
    outbox
        .stage(&mut tx, &exchange, &Event::new("2", "c", Ping { n: 2 }))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(outbox.pending(db.pool()).await.unwrap(), 1);

    let publisher = Publisher::new(&broker.connection).await.unwrap();
    let relay = Relay::new(db.clone());
    assert_eq!(relay.publish_pending(&publisher).await.unwrap(), 1);
    assert_eq!(relay.publish_pending(&publisher).await.unwrap(), 0);
    assert_eq!(outbox.pending(db.pool()).await.unwrap(), 0);
    let queued = broker.drain(&broker.spec(0).queue()).await;
    assert_eq!(queued.len(), 1);
    let received: Event<Ping> = serde_json::from_slice(&queued[0].1).unwrap();
    assert_eq!(received, committed);

    assert_eq!(
        outbox
            .purge_published(db.pool(), Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        outbox
            .purge_published(db.pool(), Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    broker.cleanup().await;
    db.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn a_message_that_kills_its_consumer_every_time_is_dead_lettered_by_the_delivery_limit() {
    use prost_db::amqp::lapin::options::BasicNackOptions;

    let prefix = format!("t{}.", Uuid::new_v4().simple());
    let topology = Topology::new().exchange(format!("{prefix}pings")).queue(
        QueueSpec::new(format!("{prefix}pong"))
            .bind(format!("{prefix}pings"), "ping.#")
            .quorum(2),
    );
    let broker = Broker::with(topology, prefix).await;
    let publisher = Publisher::new(&broker.connection).await.unwrap();
    publisher
        .publish(
            &format!("{}pings", broker.prefix),
            &Event::new("p", "c", Ping { n: 1 }),
        )
        .await
        .unwrap();
    let queue = broker.spec(0).queue();
    // Each round is a consumer that dies before settling: the message goes back unsettled.
    let mut deliveries = 0;
    for _ in 0..5 {
        let channel = broker.connection.create_channel().await.unwrap();
        let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
        else {
            break;
        };
        deliveries += 1;
        message
            .delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await
            .unwrap();
        channel.close(200, "died".into()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(deliveries <= 3, "{deliveries} deliveries");
    assert!(
        wait_until(Duration::from_secs(5), || async {
            broker.depth(&broker.spec(0).dead_letter_queue()).await == 1
        })
        .await,
        "not dead-lettered"
    );
    broker.cleanup().await;
}

/// A TCP forwarder to the broker: `cut` drops every connection open through it, as a network
/// failure or a broker restart would, while new connections keep working.
struct Proxy {
    url: String,
    cut: tokio::sync::watch::Sender<u64>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Proxy {
        // amqp://user:password@host:port/vhost -> the upstream host:port, and the same URL
        // pointing at the proxy.
        let url = amqp::url_from_env();
        let (scheme_auth, rest) = url.rsplit_once('@').expect("AMQP_URL has user@host");
        let (upstream, vhost) = rest.split_once('/').unwrap_or((rest, ""));
        let upstream = upstream.to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_url = format!("{scheme_auth}@{}/{vhost}", listener.local_addr().unwrap());
        let (cut, _) = tokio::sync::watch::channel(0_u64);
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::spawn({
            let (cut, accepted) = (cut.clone(), Arc::clone(&accepted));
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let mut cut = cut.subscribe();
                    let upstream = upstream.clone();
                    tokio::spawn(async move {
                        let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            }
        });
        Proxy {
            url: proxy_url,
            cut,
            accepted,
            task,
        }
    }

    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// Runs `consumer.run_reconnecting(url)` on a task of its own until the sender fires.
fn reconnecting_until_stopped(
    consumer: Consumer,
    url: String,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<prost_db::Result<prost_db::amqp::ConsumerStats>>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        consumer
            .run_reconnecting(&url, async {
                let _ = stopped.await;
            })
            .await
    });
    (stop, task)
}

#[tokio::test]
async fn run_reconnecting_rides_out_cut_connections_where_run_stops() {
    let broker = ping_broker().await;
    let exchange = format!("{}pings", broker.prefix);
    let queue = broker.spec(0).queue();
    let publisher = Publisher::new(&broker.connection).await.unwrap();
    for n in 0..600 {
        publisher
            .publish(&exchange, &Event::new("p", "c", Ping { n }))
            .await
            .unwrap();
    }
    let seen: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let count = {
        let seen = Arc::clone(&seen);
        move || seen.lock().unwrap().len()
    };
    let consumer = Consumer::new(broker.spec(0)).prefetch(4).on({
        let seen = Arc::clone(&seen);
        move |event: Event<Ping>| {
            let seen = Arc::clone(&seen);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                *seen.lock().unwrap().entry(event.payload.n).or_default() += 1;
                Ok(())
            }
        }
    });
    let proxy = Proxy::start().await;
    // Waits until `connections` connections went through the proxy and the consumer made
    // progress on the last one, then cuts them all. At 4 handlers of 20 ms, a phase takes
    // well under 100 of the 600 messages, so each cut lands mid-run.
    let cut_after_progress = |connections: usize| {
        let (proxy, count) = (&proxy, count.clone());
        async move {
            assert!(
                wait_until(Duration::from_secs(30), || async {
                    proxy.accepted() == connections
                })
                .await,
                "connection {connections} came up"
            );
            let before = count();
            assert!(wait_until(Duration::from_secs(30), || async { count() >= before + 20 }).await);
            proxy.cut();
        }
    };

    // Control: `run` on a connection through the proxy ends with an error at the first cut.
    let connection = amqp::connect(&proxy.url).await.unwrap();
    let control = tokio::spawn({
        let consumer = consumer.clone();
        async move { consumer.run(&connection, std::future::pending()).await }
    });
    cut_after_progress(1).await;
    let control = tokio::time::timeout(Duration::from_secs(30), control)
        .await
        .expect("run returns once its connection is cut")
        .unwrap();
    assert!(control.is_err(), "{control:?}");
    assert!(count() < 600);

    // `run_reconnecting` through the same proxy, cut twice, still consumes everything.
    let (stop, task) = reconnecting_until_stopped(consumer, proxy.url.clone());
    cut_after_progress(2).await;
    cut_after_progress(3).await;
    assert!(
        wait_until(Duration::from_secs(60), || async { count() == 600 }).await,
        "every message is consumed despite the cuts"
    );
    let stats = broker.stop_once_drained(&queue, stop, task).await;
    assert_eq!(stats.reconnects, 2, "{stats:?}");
    assert_eq!(proxy.accepted(), 4, "the control's connection, then three");
    assert_eq!(stats.dead_lettered, 0, "{stats:?}");
    broker.assert_no_dead_letters(0).await;
    broker.cleanup().await;
}

#[tokio::test]
async fn the_outbox_relay_run_stops_at_a_cut_connection_and_run_reconnecting_rides_it_out() {
    use prost_db::outbox::Relay;

    let (test_db, db, broker, outbox) = outbox_fixture().await;
    let exchange = format!("{}pings", broker.prefix);
    stage_pings(&db, &exchange, 0..1500).await;

    let proxy = Proxy::start().await;
    let connection = amqp::connect(&proxy.url).await.unwrap();
    let relay = tokio::spawn({
        let db = db.clone();
        async move {
            Relay::new(db)
                .batch_size(20)
                .run(&connection, std::future::pending())
                .await
        }
    });
    assert!(
        wait_until(Duration::from_secs(30), || async {
            outbox.pending(db.pool()).await.unwrap() < 1400
        })
        .await
    );
    proxy.cut();
    let result = tokio::time::timeout(Duration::from_secs(30), relay)
        .await
        .expect("the relay returns once its connection is cut")
        .unwrap();
    assert!(result.is_err(), "{result:?}");
    let left = outbox.pending(db.pool()).await.unwrap();
    assert!(left > 0, "cut before the end");

    // `run_reconnecting` through the same proxy, cut once more, publishes the rest; events
    // published but not marked before a cut go out again (at least once: consumers
    // deduplicate by event id).
    let (stop, stopped) = oneshot::channel::<()>();
    let resumed = tokio::spawn({
        let (db, url) = (db.clone(), proxy.url.clone());
        async move {
            Relay::new(db)
                .batch_size(10)
                .run_reconnecting(&url, async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    assert!(
        wait_until(Duration::from_secs(30), || async {
            proxy.accepted() == 2 && outbox.pending(db.pool()).await.unwrap() < left - 50
        })
        .await
    );
    proxy.cut();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            outbox.pending(db.pool()).await.unwrap() == 0
        })
        .await
    );
    assert_eq!(proxy.accepted(), 3, "reconnected once");
    let _ = stop.send(());
    let published = resumed.await.unwrap().unwrap();
    assert!(published >= left as u64 - 50, "{published} of {left}");
    assert_eq!(
        pings_in_queue(&broker).await.len(),
        1500,
        "every staged event reached the queue"
    );

    broker.cleanup().await;
    db.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn run_reconnecting_returns_an_error_when_its_queue_is_deleted() {
    let broker = ping_broker().await;
    let queue = broker.spec(0).queue();
    let consumer = Consumer::new(broker.spec(0)).on(|_event: Event<Ping>| async { Ok(()) });
    let task = tokio::spawn(async move {
        consumer
            .run_reconnecting(&amqp::url_from_env(), std::future::pending())
            .await
    });
    // Deleting the queue cancels the consumer; subscribing again is refused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker
        .channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("run_reconnecting gives up on a deleted queue")
        .unwrap();
    let error = result.unwrap_err();
    assert!(
        error.to_string().contains("NOT_FOUND") || error.to_string().contains("404"),
        "{error}"
    );
    broker.cleanup().await;
}

#[tokio::test]
async fn outbox_rows_for_a_missing_exchange_wait_without_blocking_the_rest() {
    use prost_db::amqp::lapin::ExchangeKind;
    use prost_db::amqp::lapin::options::{ExchangeDeclareOptions, QueueBindOptions};
    use prost_db::outbox::Relay;

    let (test_db, db, broker, _) = outbox_fixture().await;
    let exchange = format!("{}pings", broker.prefix);
    let missing = format!("{}not-yet", broker.prefix);
    // The rows for the missing exchange come first, more of them than a batch holds.
    stage_pings(&db, &missing, 0..30).await;
    stage_pings(&db, &exchange, 30..130).await;
    let pending_for = |name: String| {
        let pool = db.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM outbox_events WHERE published_at IS NULL AND exchange = $1",
            )
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };

    let (stop, stopped) = oneshot::channel::<()>();
    let relay = tokio::spawn({
        let db = db.clone();
        async move {
            Relay::new(db)
                .batch_size(20)
                .poll_interval(Duration::from_millis(20))
                .run_reconnecting(&amqp::url_from_env(), async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    assert!(
        wait_until(Duration::from_secs(30), || async {
            pending_for(exchange.clone()).await == 0
        })
        .await,
        "the events for the existing exchange go out past the stuck ones"
    );
    assert!(!relay.is_finished(), "the relay keeps running");
    assert_eq!(pending_for(missing.clone()).await, 30);
    // The rows of the first batch were tried and carry the reason; the others waited.
    let (attempts, error): (i32, String) = sqlx::query_as(
        "SELECT max(publish_attempts), max(last_error) FROM outbox_events WHERE exchange = $1",
    )
    .bind(&missing)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert!(attempts >= 1, "{attempts}");
    assert!(error.contains("does not exist"), "{error}");

    // Once the exchange exists, they go out too.
    broker
        .channel
        .exchange_declare(
            missing.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    broker
        .channel
        .queue_bind(
            broker.spec(0).queue().as_str().into(),
            missing.as_str().into(),
            "ping.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            pending_for(missing.clone()).await == 0
        })
        .await,
        "the waiting events go out once their exchange exists"
    );
    let _ = stop.send(());
    assert_eq!(relay.await.unwrap().unwrap(), 130);
    assert_eq!(pings_in_queue(&broker).await.len(), 130);

    broker
        .channel
        .exchange_delete(missing.as_str().into(), Default::default())
        .await
        .unwrap();
    broker.cleanup().await;
    db.close().await;
    test_db.close().await.unwrap();
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Pong {
    n: u32,
}

/// A routing key no queue of the ping topology binds.
impl EventPayload for Pong {
    const EVENT_TYPE: &'static str = "Pong";
    const AGGREGATE_TYPE: &'static str = "ping";
    const ROUTING_KEY: &'static str = "pong.sent";
}

/// Deletes the queue family's retry queues, as a topology declared by hand without them.
async fn delete_retry_queues(broker: &Broker, spec: &QueueSpec) {
    for (_, queue) in spec.retry_queues() {
        broker
            .channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_retry_copy_that_no_queue_receives_keeps_the_delivery_and_dead_letters_it_with_the_reason()
 {
    let broker = ping_broker().await;
    let spec = broker.spec(0);
    delete_retry_queues(&broker, &spec).await;
    let publisher = Publisher::new(&broker.connection).await.unwrap();
    let event = Event::new("p", "c", Ping { n: 7 });
    publisher
        .publish(&format!("{}pings", broker.prefix), &event)
        .await
        .unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let consumer = Consumer::new(spec.clone())
        .max_attempts(5)
        .handler("Ping", {
            let calls = Arc::clone(&calls);
            move |_| {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { Err::<(), _>(DeliveryError::transient("database is restarting")) }
            }
        });
    let dlq = spec.dead_letter_queue();
    let (stop, stopped) = oneshot::channel::<()>();
    let connection = Arc::clone(&broker.connection);
    let task = tokio::spawn(async move {
        consumer
            .run(&connection, async {
                let _ = stopped.await;
            })
            .await
    });
    let dead_lettered = wait_until(Duration::from_secs(10), || async {
        broker.depth(&dlq).await == 1
    })
    .await;
    let _ = stop.send(());
    let stats = task.await.unwrap().unwrap();
    let in_queue = broker.depth(&spec.queue()).await;
    assert!(
        dead_lettered,
        "the delivery is gone: {in_queue} in the work queue, nothing in the DLQ, \
         {} handler call(s), {stats:?}",
        calls.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert_eq!(stats.retried, 0, "{stats:?}");
    assert_eq!(stats.dead_lettered, 1, "{stats:?}");
    let dead = broker.drain(&dlq).await;
    assert!(dead[0].0.contains("returned"), "{:?}", dead[0].0);
    assert_eq!(
        serde_json::from_slice::<Event<Ping>>(&dead[0].1).unwrap(),
        event
    );
    broker.cleanup().await;
}

#[tokio::test]
async fn outbox_rows_for_a_routing_key_no_queue_binds_stay_pending_with_the_reason() {
    use prost_db::outbox::Relay;

    let (test_db, db, broker, outbox) = outbox_fixture().await;
    let exchange = format!("{}pings", broker.prefix);
    {
        let mut tx = db.begin().await.unwrap();
        for n in 0..10 {
            let pong = Event::new(n.to_string(), "c", Pong { n });
            outbox.stage(&mut tx, &exchange, &pong).await.unwrap();
            let ping = Event::new(n.to_string(), "c", Ping { n });
            outbox.stage(&mut tx, &exchange, &ping).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let relay = tokio::spawn({
        let db = db.clone();
        async move {
            Relay::new(db)
                .batch_size(8)
                .poll_interval(Duration::from_millis(20))
                .run_reconnecting(&amqp::url_from_env(), async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    let pending_of = |event_type: &'static str| {
        let pool = db.pool().clone();
        async move {
            sqlx::query_as::<_, (i64, Option<String>, Option<i32>)>(
                "SELECT count(*) FILTER (WHERE published_at IS NULL), max(last_error), \
                 max(publish_attempts) FROM outbox_events WHERE event_type = $1",
            )
            .bind(event_type)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert!(
        wait_until(Duration::from_secs(20), || async {
            pending_of("Ping").await.0 == 0
        })
        .await,
        "the routable events go out"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(());
    let published = relay.await.unwrap().unwrap();
    let (pending, error, attempts) = pending_of("Pong").await;
    assert_eq!(
        pending, 10,
        "rows no queue received were marked published ({published} published)"
    );
    let error = error.unwrap_or_default();
    assert!(error.contains("returned"), "{error:?}");
    assert!(attempts.unwrap_or(0) >= 1);
    assert_eq!(published, 10);
    assert_eq!(pings_in_queue(&broker).await.len(), 10);
    broker.cleanup().await;
    db.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn publishing_to_a_routing_key_no_queue_binds_is_an_error() {
    let broker = ping_broker().await;
    let exchange = format!("{}pings", broker.prefix);
    let publisher = Publisher::new(&broker.connection).await.unwrap();
    let result = publisher
        .publish(&exchange, &Event::new("1", "c", Pong { n: 1 }))
        .await;
    let error = result.expect_err("an unroutable publish was reported as delivered");
    assert!(error.to_string().contains("pong.sent"), "{error}");
    let raw = publisher
        .publish_raw(&exchange, "nobody.listens", b"{}", FieldTable::default())
        .await;
    assert!(raw.is_err(), "{raw:?}");
    // The channel stays usable for routable messages.
    publisher
        .publish(&exchange, &Event::new("1", "c", Ping { n: 1 }))
        .await
        .unwrap();
    assert_eq!(broker.depth(&broker.spec(0).queue()).await, 1);
    broker.cleanup().await;
}

/// A RabbitMQ memory alarm, raised by setting the memory high watermark to almost nothing;
/// the original watermark is restored on drop, also when the test panics.
struct MemoryAlarm {
    original: String,
}

fn rabbitmqctl(args: &[&str]) -> String {
    let output = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl on PATH (the Debian rabbitmq-server package)");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl MemoryAlarm {
    fn raise() -> MemoryAlarm {
        let original = rabbitmqctl(&["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."]);
        let alarm = MemoryAlarm { original };
        rabbitmqctl(&["set_vm_memory_high_watermark", "0.0000001"]);
        alarm
    }

    fn active() -> bool {
        rabbitmqctl(&["eval", "rabbit_alarm:get_alarms()."]).contains("memory")
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        // `0.4`, or `{absolute,1073741824}` when set as an absolute value.
        let value = self.original.trim_matches(|c| c == '{' || c == '}');
        let args: Vec<&str> = match value.strip_prefix("absolute,") {
            Some(bytes) => vec!["set_vm_memory_high_watermark", "absolute", bytes],
            None => vec!["set_vm_memory_high_watermark", value],
        };
        rabbitmqctl(&args);
    }
}

/// Raises a real memory alarm on the shared broker, which blocks every publisher on it, so
/// it is ignored by default; `.ci/run` runs it alone after the suite:
/// `cargo test --test it amqp::relay_under_a_memory_alarm -- --ignored --test-threads=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "raises a memory alarm on the shared broker; run alone"]
async fn relay_under_a_memory_alarm_gives_up_within_its_bound_holds_no_transaction_and_publishes_everything_after()
 {
    use prost_db::outbox::Relay;

    let (test_db, db, broker, outbox) = outbox_fixture().await;
    let exchange = format!("{}pings", broker.prefix);
    stage_pings(&db, &exchange, 0..100).await;
    let bound = Duration::from_secs(2);

    let alarm = MemoryAlarm::raise();
    assert!(
        wait_until(Duration::from_secs(10), || async { MemoryAlarm::active() }).await,
        "the memory alarm did not go off"
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let relay = tokio::spawn({
        let db = db.clone();
        async move {
            Relay::new(db)
                .batch_size(20)
                .poll_interval(Duration::from_millis(20))
                .publish_timeout(bound)
                .run_reconnecting(&amqp::url_from_env(), async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    // While the alarm lasts: the oldest open transaction of the test database, sampled.
    let started = std::time::Instant::now();
    let mut longest = 0.0_f64;
    while started.elapsed() < Duration::from_secs(7) {
        let age: f64 = sqlx::query_scalar(
            "SELECT coalesce(max(extract(epoch FROM now() - xact_start)), 0)::float8 \
             FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        longest = longest.max(age);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (pending, error): (i64, Option<String>) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE published_at IS NULL), max(last_error) FROM outbox_events",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    drop(alarm);
    assert!(
        wait_until(Duration::from_secs(10), || async { !MemoryAlarm::active() }).await,
        "the memory alarm did not clear"
    );
    let drained = wait_until(Duration::from_secs(60), || async {
        outbox.pending(db.pool()).await.unwrap() == 0
    })
    .await;
    let _ = stop.send(());
    let published = relay.await.unwrap();

    eprintln!("longest transaction under the alarm: {longest:.2} s (bound {bound:?})");
    assert!(pending > 0, "the alarm blocked nothing");
    assert!(
        longest < (bound + Duration::from_secs(2)).as_secs_f64(),
        "a transaction stayed open {longest:.2} s under the alarm (bound {bound:?})"
    );
    let error = error.unwrap_or_default();
    assert!(error.contains("did not confirm"), "{error:?}");
    assert!(drained, "events left in the outbox after the alarm cleared");
    assert!(published.is_ok(), "{published:?}");
    assert_eq!(
        pings_in_queue(&broker).await.len(),
        100,
        "every staged event reached the queue"
    );
    broker.cleanup().await;
    db.close().await;
    test_db.close().await.unwrap();
}

#[tokio::test]
async fn a_short_retry_delay_holds_behind_a_long_one_queued_ahead_of_it() {
    let broker = ping_broker().await;
    let exchange = format!("{}pings", broker.prefix);
    let publisher = Publisher::new(&broker.connection).await.unwrap();
    // n = 1 is on its 9th attempt (the longest delay), n = 2 on its first (the shortest).
    for (n, attempt) in [(1, 9), (2, 1)] {
        let mut headers = FieldTable::default();
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(attempt));
        let event = Event::new("p", "c", Ping { n });
        publisher
            .publish_raw(&exchange, "ping.sent", &event.to_json().unwrap(), headers)
            .await
            .unwrap();
    }
    // Each message fails once; the time from its failure to its redelivery is measured.
    let failed_at: Arc<Mutex<HashMap<u32, std::time::Instant>>> = Arc::default();
    let waited: Arc<Mutex<HashMap<u32, Duration>>> = Arc::default();
    let consumer = Consumer::new(broker.spec(0))
        .prefetch(1)
        .max_attempts(20)
        .handler("Ping", {
            let (failed_at, waited) = (Arc::clone(&failed_at), Arc::clone(&waited));
            move |delivered| {
                let (failed_at, waited) = (Arc::clone(&failed_at), Arc::clone(&waited));
                async move {
                    let n = delivered.decode::<Ping>()?.payload.n;
                    let first = failed_at.lock().unwrap().get(&n).copied();
                    match first {
                        None => {
                            failed_at
                                .lock()
                                .unwrap()
                                .insert(n, std::time::Instant::now());
                            Err(DeliveryError::transient("try again"))
                        }
                        Some(at) => {
                            waited.lock().unwrap().insert(n, at.elapsed());
                            Ok(())
                        }
                    }
                }
            }
        });
    let (stop, stopped) = oneshot::channel::<()>();
    let connection = Arc::clone(&broker.connection);
    let task = tokio::spawn(async move {
        consumer
            .run(&connection, async {
                let _ = stopped.await;
            })
            .await
    });
    let redelivered = wait_until(Duration::from_secs(12), || async {
        waited.lock().unwrap().contains_key(&2)
    })
    .await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let order: Vec<u32> = {
        let failed_at = failed_at.lock().unwrap();
        let mut order: Vec<u32> = failed_at.keys().copied().collect();
        order.sort_by_key(|n| failed_at[n]);
        order
    };
    assert_eq!(
        order,
        [1, 2],
        "the long retry failed first, ahead of the short one"
    );
    assert!(
        redelivered,
        "the first attempt's retry (200 ms) was not redelivered within 12 s: it waits behind \
         the 9th attempt's"
    );
    let short = waited.lock().unwrap()[&2];
    eprintln!("first attempt's retry redelivered after {short:?} (its delay: 200 ms)");
    assert!(short < Duration::from_secs(5), "{short:?}");
    assert!(
        !waited.lock().unwrap().contains_key(&1),
        "the 9th attempt's long delay held"
    );
    broker.cleanup().await;
}

#[tokio::test]
async fn work_queues_are_quorum_queues_that_dead_letter_a_message_past_the_delivery_limit() {
    use prost_db::amqp::lapin::options::BasicNackOptions;

    let broker = ping_broker().await;
    let queue = broker.spec(0).queue();
    let publisher = Publisher::new(&broker.connection).await.unwrap();
    publisher
        .publish(
            &format!("{}pings", broker.prefix),
            &Event::new("p", "c", Ping { n: 1 }),
        )
        .await
        .unwrap();
    // A consumer that takes the message and gives it back, again and again.
    let mut returns = 0;
    while returns < 40 {
        let Some(message) = broker
            .channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
        else {
            break;
        };
        message
            .delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await
            .unwrap();
        returns += 1;
    }
    let dead = wait_until(Duration::from_secs(5), || async {
        broker.depth(&broker.spec(0).dead_letter_queue()).await == 1
    })
    .await;
    assert!(
        dead,
        "returned {returns} times and still not dead-lettered: no delivery limit"
    );
    assert!((20..=22).contains(&returns), "{returns} returns");
    broker.cleanup().await;
}

#[tokio::test]
async fn a_classic_queue_redeclared_as_quorum_is_an_error_that_says_what_to_do() {
    let prefix = format!("t{}.", Uuid::new_v4().simple());
    let spec = QueueSpec::new(format!("{prefix}pong")).bind(format!("{prefix}pings"), "ping.#");
    let connection = amqp::connect(&amqp::url_from_env()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    // The work queue as an older deployment declared it: classic.
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(spec.dead_letter_exchange().as_str().into()),
    );
    channel
        .queue_declare(
            spec.queue().as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .unwrap();
    let topology = Topology::new()
        .exchange(format!("{prefix}pings"))
        .queue(spec.clone().quorum(20));
    let error = topology
        .declare(&connection.create_channel().await.unwrap())
        .await
        .expect_err("a classic queue cannot become a quorum queue");
    let message = error.to_string();
    assert!(message.contains(&spec.queue()), "{message}");
    assert!(
        message.contains("delete") && message.contains("classic"),
        "{message}"
    );
    let cleanup = connection.create_channel().await.unwrap();
    topology.delete(&cleanup).await.unwrap();
    let _ = connection.close(200, "done".into()).await;
}

/// Runs on the test's one thread (`current_thread`), so the thread's local recorder sees
/// every metric the consumer's and relay's tasks emit, and no other test's.
#[tokio::test]
async fn consumer_and_relay_report_outcomes_latency_lag_and_batch_sizes_as_metrics() {
    use prost_db::idempotency::Outcome;
    use prost_db::outbox::Relay;
    use prost_shop::recorder::MemoryRecorder;

    let recorder = MemoryRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let (test_db, db, fixture_broker, outbox) = outbox_fixture().await;
    // This test's queue retries faster than the fixture's: drop the fixture's topology.
    fixture_broker.cleanup().await;
    let broker = ping_broker_with(|spec| spec.retry_delays([Duration::from_millis(50)])).await;
    let queue = broker.spec(0).queue();
    let exchange = format!("{}pings", broker.prefix);
    let publisher = Publisher::new(&broker.connection).await.unwrap();
    // 0..5 processed, 10 a duplicate, 20 fails once then is processed, 30 fails for good.
    for n in [0, 1, 2, 3, 4, 10, 20, 30] {
        publisher
            .publish(&exchange, &Event::new("p", "c", Ping { n }))
            .await
            .unwrap();
    }
    publisher
        .publish_raw(&exchange, "ping.sent", b"not json", FieldTable::default())
        .await
        .unwrap();
    let failed_once = Arc::new(Mutex::new(false));
    let consumer = Consumer::new(broker.spec(0)).on({
        let failed_once = Arc::clone(&failed_once);
        move |event: Event<Ping>| {
            let failed_once = Arc::clone(&failed_once);
            async move {
                match event.payload.n {
                    10 => Ok(Outcome::Duplicate(())),
                    20 if !std::mem::replace(&mut *failed_once.lock().unwrap(), true) => {
                        Err(DeliveryError::transient("busy"))
                    }
                    30 => Err(DeliveryError::permanent("no such ping")),
                    _ => Ok(Outcome::Processed(())),
                }
            }
        }
    });
    let stats = run_until(&broker, consumer, || async {
        broker.depth(&broker.spec(0).dead_letter_queue()).await == 2
            && recorder.counter(
                "prost_db_consumer_deliveries_total",
                &[("queue", &queue), ("outcome", "processed")],
            ) == 6
    })
    .await;
    let deliveries = |outcome: &str, reason: Option<&str>| {
        let mut labels = vec![("queue", queue.as_str()), ("outcome", outcome)];
        labels.extend(reason.map(|reason| ("reason", reason)));
        recorder.counter("prost_db_consumer_deliveries_total", &labels)
    };
    assert_eq!(deliveries("processed", None), 6, "{}", recorder.render());
    assert_eq!(deliveries("duplicate", None), 1);
    assert_eq!(deliveries("retried", None), 1);
    assert_eq!(deliveries("dead_lettered", Some("permanent")), 1);
    assert_eq!(deliveries("dead_lettered", Some("poison")), 1);
    assert_eq!((stats.acked, stats.duplicates), (7, 1), "{stats:?}");
    let latencies = recorder.histogram(
        "prost_db_consumer_handler_seconds",
        &[("queue", &queue), ("event_type", "Ping")],
    );
    assert_eq!(latencies.len(), 9, "one per handler run: {latencies:?}");

    // The relay: 25 routable events in batches of 10, and 3 that no queue receives.
    stage_pings(&db, &exchange, 100..125).await;
    {
        let mut tx = db.begin().await.unwrap();
        for n in 0..3 {
            let pong = Event::new("p", "c", Pong { n });
            outbox.stage(&mut tx, &exchange, &pong).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (stop, stopped) = oneshot::channel::<()>();
    let relay = Relay::new(db.clone())
        .batch_size(10)
        .poll_interval(Duration::from_millis(20));
    let url = amqp::url_from_env();
    let relay = relay.run_reconnecting(&url, async {
        let _ = stopped.await;
    });
    let watch = async {
        wait_until(Duration::from_secs(20), || async {
            recorder.counter("prost_db_outbox_published_total", &[("schema", "catalog")]) == 25
                && recorder.counter("prost_db_outbox_failed_total", &[("reason", "returned")]) >= 3
        })
        .await;
        // One more lag sample, with the unroutable rows still pending.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let _ = stop.send(());
    };
    let (published, ()) = tokio::join!(relay, watch);
    assert_eq!(published.unwrap(), 25);
    let mut batches = recorder.histogram("prost_db_outbox_batch_size", &[("schema", "catalog")]);
    batches.retain(|size| *size > 0.0);
    assert!(batches.iter().all(|size| *size <= 10.0), "{batches:?}");
    assert_eq!(batches.iter().sum::<f64>(), 25.0, "{batches:?}");
    assert!(
        recorder.counter(
            "prost_db_publish_returned_total",
            &[("routing_key", "pong.sent")]
        ) >= 3
    );
    let lag = recorder
        .gauge("prost_db_outbox_lag_seconds", &[("schema", "catalog")])
        .expect("the relay samples its lag");
    assert!(lag >= 1.0, "the unroutable rows are pending: lag {lag} s");
    eprintln!("{}", recorder.render());

    broker.cleanup().await;
    db.close().await;
    test_db.close().await.unwrap();
}

/// The ledger of the ordering tests: accounts with the last applied sequence number, every
/// applied event, and every event that arrived before its predecessor.
async fn ledger_db() -> (prost_db::testing::TestDb, prost_db::Db) {
    let test_db = prost_db::testing::TestDb::new().await.unwrap();
    let db = test_db.db("ledger").await.unwrap();
    prost_db::idempotency::IdempotencyStore::install(&db)
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE accounts (id INT PRIMARY KEY, last_seq INT NOT NULL DEFAULT 0);
         CREATE TABLE applied (account_id INT, seq INT, worker TEXT NOT NULL,
             at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (account_id, seq));
         CREATE TABLE violations (account_id INT, seq INT, worker TEXT);",
    )
    .execute(db.pool())
    .await
    .unwrap();
    (test_db, db)
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Sequenced {
    seq: i32,
}

impl EventPayload for Sequenced {
    const EVENT_TYPE: &'static str = "Sequenced";
    const AGGREGATE_TYPE: &'static str = "account";
    const ROUTING_KEY: &'static str = "account.sequenced";
}

/// Publishes `events` sequenced events for each of `accounts` accounts, interleaved
/// (every account's event 1, then every account's event 2, ...).
async fn publish_ledger(broker: &Broker, accounts: i32, events: i32) {
    use prost_db::amqp::Message;

    let publisher = Publisher::new(&broker.connection).await.unwrap();
    let exchange = format!("{}accounts", broker.prefix);
    for seq in 1..=events {
        let batch: Vec<(Event<Sequenced>, Vec<u8>)> = (0..accounts)
            .map(|account| {
                let event = Event::new(account.to_string(), "c", Sequenced { seq });
                let body = event.to_json().unwrap();
                (event, body)
            })
            .collect();
        let messages: Vec<Message> = batch
            .iter()
            .map(|(event, body)| Message::event(&exchange, event, body))
            .collect();
        for outcome in publisher.publish_all(&messages).await.unwrap() {
            outcome.unwrap();
        }
    }
}

fn spawn_ordered_worker(
    test_db: &prost_db::testing::TestDb,
    prefix: &str,
    worker: usize,
    mode: &str,
) -> tokio::process::Child {
    let log = std::env::temp_dir().join(format!("{prefix}ordered-w{worker}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ordered-worker"))
        .env("DATABASE_URL", test_db.url())
        .env("PROST_ORDERED_PREFIX", prefix)
        .env("PROST_ORDERED_WORKER", worker.to_string())
        .env("PROST_ORDERED_MODE", mode)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn stop_gracefully(mut child: tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let _ = child.kill().await;
}

/// What the ledger holds after a run.
#[derive(Debug)]
struct Ledger {
    applied: i64,
    violations: i64,
    accounts_complete: i64,
    workers: i64,
}

async fn ledger(db: &prost_db::Db, events: i32) -> Ledger {
    let (applied, workers): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT worker) FROM applied")
            .fetch_one(db.pool())
            .await
            .unwrap();
    let violations: i64 = sqlx::query_scalar("SELECT count(*) FROM violations")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let accounts_complete: i64 =
        sqlx::query_scalar("SELECT count(*) FROM accounts WHERE last_seq = $1")
            .bind(events)
            .fetch_one(db.pool())
            .await
            .unwrap();
    Ledger {
        applied,
        violations,
        accounts_complete,
        workers,
    }
}

/// Runs 4 ledger worker processes in `mode` over `accounts` x `events` sequenced events,
/// SIGKILLs the one that applied the latest event once `kill_after` are applied, and
/// waits for the rest.
async fn ledger_run(mode: &str, accounts: i32, events: i32, kill_after: i64) -> (Ledger, String) {
    use prost_db::amqp::OrderedQueues;

    let (test_db, db) = ledger_db().await;
    sqlx::query("INSERT INTO accounts (id) SELECT generate_series(0, $1 - 1)")
        .bind(accounts)
        .execute(db.pool())
        .await
        .unwrap();
    let prefix = format!("t{}.", Uuid::new_v4().simple());
    let exchange = format!("{prefix}accounts");
    let topology = if mode == "competing" {
        Topology::new()
            .exchange(&exchange)
            .queue(QueueSpec::new(format!("{prefix}ledger.shared")).bind(&exchange, "account.#"))
    } else {
        Topology::new()
            .exchange(&exchange)
            .ordered(OrderedQueues::new(format!("{prefix}ledger"), 8).bind(&exchange, "account.#"))
    };
    let broker = Broker::with(topology, prefix.clone()).await;
    let mut workers: Vec<Option<tokio::process::Child>> = (0..4)
        .map(|i| Some(spawn_ordered_worker(&test_db, &prefix, i, mode)))
        .collect();
    // Every worker subscribed (the standbys a second after their own partitions).
    tokio::time::sleep(Duration::from_secs(3)).await;
    publish_ledger(&broker, accounts, events).await;

    let total = i64::from(accounts * events);
    assert!(
        wait_until(Duration::from_secs(60), || async {
            ledger(&db, events).await.applied >= kill_after
        })
        .await,
        "no progress: {:?}",
        ledger(&db, events).await
    );
    let victim: String = sqlx::query_scalar("SELECT worker FROM applied ORDER BY at DESC LIMIT 1")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let index: usize = victim.trim_start_matches('w').parse().unwrap();
    let mut killed = workers[index].take().unwrap();
    killed.start_kill().unwrap();
    killed.wait().await.unwrap();
    let done = if mode == "competing" {
        // The control is only watched until it shows what it does wrong.
        wait_until(Duration::from_secs(60), || async {
            ledger(&db, events).await.violations > 0
        })
        .await
    } else {
        wait_until(Duration::from_secs(120), || async {
            let state = ledger(&db, events).await;
            state.applied == total && state.accounts_complete == i64::from(accounts)
        })
        .await
    };
    for child in workers.into_iter().flatten() {
        stop_gracefully(child).await;
    }
    let state = ledger(&db, events).await;
    if mode == "competing" {
        broker.cleanup().await;
        db.close().await;
        test_db.close().await.unwrap();
        return (state, victim);
    }
    assert!(done, "not every event was applied: {state:?}");
    let mut dead = 0;
    for spec in broker.topology.queues().iter().cloned().chain(
        broker
            .topology
            .ordered_queues()
            .iter()
            .flat_map(OrderedQueues::partitions),
    ) {
        dead += broker.depth(&spec.dead_letter_queue()).await;
    }
    assert_eq!(dead, 0, "dead-lettered: {state:?}");
    broker.cleanup().await;
    db.close().await;
    test_db.close().await.unwrap();
    (state, victim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_queues_apply_each_aggregates_events_in_order_across_four_processes_one_killed() {
    let (state, victim) = ledger_run("ordered", 200, 20, 1000).await;
    eprintln!("ordered: {state:?}, killed {victim}");
    assert_eq!(state.applied, 4000, "{state:?}");
    assert_eq!(state.accounts_complete, 200, "{state:?}");
    assert_eq!(
        state.violations, 0,
        "events applied out of order: {state:?}"
    );
    assert!(
        state.workers >= 2,
        "one process did all the work: {state:?}"
    );
}

/// The control: the same load on one queue shared by competing consumers, handlers
/// concurrent (prefetch 16) and retries through the retry queues, as before the recipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_competing_consumers_apply_an_aggregates_events_out_of_order() {
    let (state, victim) = ledger_run("competing", 50, 20, 250).await;
    eprintln!("competing: {state:?}, killed {victim}");
    assert!(state.violations > 0, "{state:?}");
}

/// lapin answers `Ok(false)` to an ack it did not send (the channel is gone): the consumer
/// counts such a delivery unsettled, not acked, and the broker delivers it again. Control:
/// counting lapin's `Ok(_)` as acked reports this run as `acked: 2, unsettled: 0`.
#[tokio::test]
async fn an_ack_lapin_did_not_send_counts_as_unsettled_and_the_delivery_comes_back() {
    let broker = ping_broker().await;
    let queue = broker.spec(0).queue();
    let publisher = Publisher::new(&broker.connection).await.unwrap();
    let event = Event::new("p-\"quoted\"-é", "c", Ping { n: 7 });
    publisher
        .publish(&format!("{}pings", broker.prefix), &event)
        .await
        .unwrap();
    // Each call's `redelivered` flag; the first call holds until the connection is cut.
    let calls: Arc<Mutex<Vec<bool>>> = Arc::default();
    let (release, released) = tokio::sync::watch::channel(false);
    let consumer = Consumer::new(broker.spec(0)).handler("Ping", {
        let calls = Arc::clone(&calls);
        move |delivered: amqp::Delivered| {
            let first = {
                let mut calls = calls.lock().unwrap();
                calls.push(delivered.redelivered);
                calls.len() == 1
            };
            let mut released = released.clone();
            async move {
                if first {
                    let _ = released.wait_for(|go| *go).await;
                }
                Ok::<(), DeliveryError>(())
            }
        }
    });
    let proxy = Proxy::start().await;
    let (stop, task) = reconnecting_until_stopped(consumer, proxy.url.clone());
    let calls_now = || calls.lock().unwrap().clone();
    assert!(wait_until(Duration::from_secs(10), || async { calls_now().len() == 1 }).await);
    proxy.cut();
    // Let lapin see the cut (it poisons the channel's ackers), then let the handler succeed
    // well inside the consumer's grace for handlers of a lost connection.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    release.send(true).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || async { calls_now().len() == 2 }).await,
        "the delivery came back after the reconnect: {:?}",
        calls_now()
    );
    let stats = broker.stop_once_drained(&queue, stop, task).await;
    assert_eq!(
        calls_now(),
        [false, true],
        "first delivery, then the redelivery"
    );
    assert_eq!(stats.reconnects, 1, "{stats:?}");
    assert_eq!((stats.acked, stats.unsettled), (1, 1), "{stats:?}");
    broker.assert_no_dead_letters(0).await;
    broker.cleanup().await;
}

/// A retry in place cut short by shutdown gives its delivery back with a nack: reported as
/// requeued (before: as unsettled, as if the broker had not been told), and the message is
/// back in the work queue, marked redelivered.
#[tokio::test]
async fn a_retry_in_place_cut_short_by_shutdown_is_reported_requeued_and_the_message_is_back() {
    let broker = ping_broker_with(|spec| spec.retry_delays([Duration::from_secs(60)])).await;
    let queue = broker.spec(0).queue();
    let publisher = Publisher::new(&broker.connection).await.unwrap();
    let big = "ü".repeat(2048);
    let event = Event::new(big.as_str(), "c", Ping { n: 3 });
    publisher
        .publish(&format!("{}pings", broker.prefix), &event)
        .await
        .unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let consumer = Consumer::new(broker.spec(0))
        .serialize_by_aggregate()
        .max_attempts(5)
        .handler("Ping", {
            let calls = Arc::clone(&calls);
            move |_| {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { Err::<(), _>(DeliveryError::transient("database is restarting")) }
            }
        });
    let stats = run_until(&broker, consumer, || {
        let calls = Arc::clone(&calls);
        async move { calls.load(std::sync::atomic::Ordering::SeqCst) == 1 }
    })
    .await;
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(stats.requeued, 1, "{stats:?}");
    assert_eq!(
        stats.retried, 1,
        "the retry in place that was started: {stats:?}"
    );
    assert_eq!(
        stats.unsettled + stats.acked + stats.dead_lettered,
        0,
        "{stats:?}"
    );
    assert_eq!(broker.retry_depth(&broker.spec(0)).await, 0);
    let back = broker
        .channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the message is back in the work queue");
    assert!(back.delivery.redelivered);
    assert_eq!(
        serde_json::from_slice::<Event<Ping>>(&back.delivery.data).unwrap(),
        event
    );
    broker.cleanup().await;
}

/// Test queues carry the expiry policy: a killed run's queues are deleted by the broker once
/// unused for 30 minutes. Control: a queue outside the test prefix does not.
#[tokio::test]
async fn test_queues_expire_when_unused_and_other_queues_do_not() {
    let broker = ping_broker().await;
    let queue = broker.spec(0).queue();
    let other = format!("not-a-test-{}", Uuid::new_v4().simple());
    broker
        .channel
        .queue_declare(
            other.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let listed = rabbitmqctl(&["list_queues", "--no-table-headers", "name", "policy"]);
    let policy_of = |name: &str| {
        listed
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('\t'))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{name} not listed: {listed}"))
            .to_owned()
    };
    assert_eq!(policy_of(&queue), TEST_QUEUE_POLICY);
    assert_eq!(
        policy_of(&broker.spec(0).dead_letter_queue()),
        TEST_QUEUE_POLICY
    );
    assert_eq!(policy_of(&other), "", "control");
    let definition = rabbitmqctl(&["list_policies", "--no-table-headers"]);
    assert!(
        definition
            .lines()
            .any(|line| line.contains(TEST_QUEUE_POLICY) && line.contains(r#""expires":1800000"#)),
        "{definition}"
    );
    broker
        .channel
        .queue_delete(other.as_str().into(), Default::default())
        .await
        .unwrap();
    broker.cleanup().await;
}
