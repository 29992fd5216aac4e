//! What the benchmarks share: their settings from the environment, and the loop that
//! runs a number of events on a number of concurrent workers. Included by each benchmark
//! with `#[path = "support.rs"] mod support;` (not a benchmark of its own).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The number in the environment variable `name`, or `default` if it is unset or not a
/// number.
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `work(i)` for `i` in `0..events`, stepping by `step` (a batch takes `step` events
/// at once), on `workers` tasks that take the next index as each finishes its last, and
/// returns the wall time of the whole.
pub async fn run_workers<F, Fut>(workers: usize, events: usize, step: usize, work: F) -> Duration
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (work, next) = (work.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(step, Ordering::Relaxed);
                    if i >= events {
                        break;
                    }
                    work(i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("worker");
    }
    started.elapsed()
}

/// The machine's load average over the last minute, as `/proc/loadavg` gives it (`?` where
/// there is none): every figure is printed with it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}
