//! Per-aggregate lanes: with `serialize_by_aggregate`, the deliveries of one aggregate run
//! one after another in delivery order, while different aggregates run concurrently.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use lapin::message::Delivery;
use tokio::task::{Id, JoinSet};

use super::delivery::aggregate_key;
use super::settle::{Context, Finished};

pub(super) struct Lanes {
    enabled: bool,
    /// Per aggregate with a delivery running: the ones waiting behind it.
    waiting: HashMap<String, VecDeque<Delivery>>,
    /// The aggregate of each running task that holds a lane.
    running: HashMap<Id, String>,
}

impl Lanes {
    pub(super) fn new(enabled: bool) -> Self {
        Lanes {
            enabled,
            waiting: HashMap::new(),
            running: HashMap::new(),
        }
    }

    /// Starts `delivery` now, or queues it behind the running delivery of its aggregate.
    /// Deliveries without a readable aggregate (poison) start at once.
    pub(super) fn dispatch(
        &mut self,
        delivery: Delivery,
        in_flight: &mut JoinSet<Finished>,
        ctx: &Arc<Context>,
    ) {
        let key = if self.enabled {
            aggregate_key(&delivery.data)
        } else {
            None
        };
        let Some(key) = key else {
            in_flight.spawn(Arc::clone(ctx).process(delivery));
            return;
        };
        if let Some(queue) = self.waiting.get_mut(&key) {
            queue.push_back(delivery);
            return;
        }
        self.waiting.insert(key.clone(), VecDeque::new());
        let task = in_flight.spawn(Arc::clone(ctx).process(delivery));
        self.running.insert(task.id(), key);
    }

    /// Task `id` finished: starts the next delivery of its aggregate, if any, unless the
    /// session is stopping (what waits is then given back to the broker, in order, when
    /// the channel closes).
    pub(super) fn finished(
        &mut self,
        id: Id,
        in_flight: &mut JoinSet<Finished>,
        ctx: &Arc<Context>,
        start_next: bool,
    ) {
        let Some(key) = self.running.remove(&id) else {
            return;
        };
        let next = self.waiting.get_mut(&key).and_then(VecDeque::pop_front);
        match next {
            Some(delivery) if start_next => {
                let task = in_flight.spawn(Arc::clone(ctx).process(delivery));
                self.running.insert(task.id(), key);
            }
            Some(delivery) => {
                // Not started: put back in front so that nothing of this aggregate starts.
                if let Some(queue) = self.waiting.get_mut(&key) {
                    queue.push_front(delivery);
                }
            }
            None => {
                self.waiting.remove(&key);
            }
        }
    }
}
