//! Where the relay's rows go: which exchanges exist, and which routing keys no queue
//! receives, so that their rows wait instead of failing every batch.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ExchangeKind};

use crate::error::Result;

/// How long the events of an exchange found missing, or of a routing key no queue
/// received, are left out of the batches before they are tried again.
const UNDELIVERABLE_RECHECK: Duration = Duration::from_secs(2);

/// What the relay knows about where its rows go, for one connection. Publishing to a
/// missing exchange makes the broker close the channel (404), which would fail every batch
/// holding such a row, so a passive declare on a channel of its own finds them first. A
/// routing key no queue is bound for comes back from the broker; its rows wait too.
pub(super) struct Destinations<'c> {
    connection: &'c Connection,
    present: HashSet<String>,
    missing: HashMap<String, Instant>,
    unroutable: HashMap<(String, String), Instant>,
}

impl<'c> Destinations<'c> {
    pub(super) fn new(connection: &'c Connection) -> Self {
        Destinations {
            connection,
            present: HashSet::new(),
            missing: HashMap::new(),
            unroutable: HashMap::new(),
        }
    }

    /// The exchanges and the (exchange, routing key) pairs found undeliverable within the
    /// recheck interval: their rows stay out of the batches, so they cannot fill them and
    /// hold the others back.
    pub(super) fn waiting(&self) -> (Vec<String>, Vec<(String, String)>) {
        let recent = |checked: &Instant| checked.elapsed() < UNDELIVERABLE_RECHECK;
        let exchanges = self
            .missing
            .iter()
            .filter(|(_, checked)| recent(checked))
            .map(|(name, _)| name.clone())
            .collect();
        let keys = self
            .unroutable
            .iter()
            .filter(|(_, checked)| recent(checked))
            .map(|(pair, _)| pair.clone())
            .collect();
        (exchanges, keys)
    }

    pub(super) fn unroutable(&mut self, exchange: &str, routing_key: &str) {
        self.unroutable.insert(
            (exchange.to_owned(), routing_key.to_owned()),
            Instant::now(),
        );
    }

    pub(super) async fn exists(&mut self, name: &str) -> Result<bool> {
        // The default exchange always exists and cannot be declared.
        if name.is_empty() || self.present.contains(name) {
            return Ok(true);
        }
        let channel = self.connection.create_channel().await?;
        let declared = channel
            .exchange_declare(
                name.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(()) => {
                let _ = channel.close(200, "checked".into()).await;
                self.missing.remove(name);
                self.present.insert(name.to_owned());
                Ok(true)
            }
            // The broker closed the probe channel, and only that one.
            Err(error) if matches!(error.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404) =>
            {
                self.missing.insert(name.to_owned(), Instant::now());
                Ok(false)
            }
            Err(error) => Err(error.into()),
        }
    }
}
