//! Where a step's events go: into its service's outbox on the step's transaction (prost-db),
//! or published straight to the broker after COMMIT (the seed's shape, for the controls).

use prost_db::amqp::{Message, Publisher};
use prost_db::events::{Event, EventPayload};
use prost_db::outbox::Outbox;
use sqlx::PgConnection;

/// An event serialized for publishing after COMMIT.
#[derive(Debug, Clone)]
pub struct Pending {
    exchange: String,
    routing_key: &'static str,
    event_type: &'static str,
    event_id: String,
    body: Vec<u8>,
}

/// The events of one step.
///
/// ```
/// let mut emit = prost_shop::emit::Emitter::after_commit();
/// assert!(emit.take_pending().is_empty());
/// ```
#[derive(Debug)]
pub struct Emitter {
    outbox: Option<Outbox>,
    pending: Vec<Pending>,
}

impl Emitter {
    /// Stages every event in `outbox`, on the step's transaction: published if and only if
    /// the step commits.
    ///
    /// ```no_run
    /// # fn run(db: prost_db::Db) {
    /// let emit = prost_shop::emit::Emitter::outbox(prost_db::outbox::Outbox::new(&db));
    /// # }
    /// ```
    pub fn outbox(outbox: Outbox) -> Self {
        Emitter {
            outbox: Some(outbox),
            pending: Vec::new(),
        }
    }

    /// Keeps the events for [`publish_after_commit`]: the seed's shape, where a crash
    /// between COMMIT and publish loses them.
    ///
    /// ```
    /// let emit = prost_shop::emit::Emitter::after_commit();
    /// # let _ = emit;
    /// ```
    pub fn after_commit() -> Self {
        Emitter {
            outbox: None,
            pending: Vec::new(),
        }
    }

    /// Emits `event` to `exchange`.
    ///
    /// # Errors
    ///
    /// The outbox's database error, or the event's encoding error.
    pub async fn emit<P: EventPayload>(
        &mut self,
        conn: &mut PgConnection,
        exchange: &str,
        event: &Event<P>,
    ) -> Result<(), prost_db::Error> {
        self.emit_all(conn, exchange, std::slice::from_ref(event))
            .await
    }

    /// Emits every event of `events` to `exchange` (staged in one statement).
    ///
    /// # Errors
    ///
    /// As [`emit`](Self::emit).
    pub async fn emit_all<P: EventPayload>(
        &mut self,
        conn: &mut PgConnection,
        exchange: &str,
        events: &[Event<P>],
    ) -> Result<(), prost_db::Error> {
        match &self.outbox {
            Some(outbox) if events.len() == 1 => outbox.stage(conn, exchange, &events[0]).await,
            Some(outbox) => outbox.stage_all(conn, exchange, events).await,
            None => {
                for event in events {
                    self.pending.push(Pending {
                        exchange: exchange.to_owned(),
                        routing_key: P::ROUTING_KEY,
                        event_type: P::EVENT_TYPE,
                        event_id: event.envelope.event_id.to_string(),
                        body: event.to_json().map_err(prost_db::Error::EventEncode)?,
                    });
                }
                Ok(())
            }
        }
    }

    /// The events kept for after COMMIT.
    pub fn take_pending(&mut self) -> Vec<Pending> {
        std::mem::take(&mut self.pending)
    }
}

/// Publishes events kept by [`Emitter::after_commit`], with confirms.
///
/// # Errors
///
/// The broker error; the events not yet confirmed are lost (the step has committed).
///
/// ```no_run
/// # async fn run(publisher: prost_db::amqp::Publisher) -> Result<(), prost_db::Error> {
/// let mut emit = prost_shop::emit::Emitter::after_commit();
/// // ... the step, then COMMIT ...
/// prost_shop::emit::publish_after_commit(&publisher, emit.take_pending()).await?;
/// # Ok(()) }
/// ```
pub async fn publish_after_commit(
    publisher: &Publisher,
    pending: Vec<Pending>,
) -> Result<(), prost_db::Error> {
    let messages: Vec<Message<'_>> = pending
        .iter()
        .map(|event| {
            Message::new(&event.exchange, event.routing_key, &event.body)
                .message_id(&event.event_id)
                .event_type(event.event_type)
        })
        .collect();
    for outcome in publisher.publish_all(&messages).await? {
        outcome?;
    }
    Ok(())
}
