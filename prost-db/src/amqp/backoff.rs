//! One backoff with full jitter for every reconnect and retry loop, so that replicas which
//! lost the broker at the same moment do not come back in lockstep.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Exponential backoff with full jitter: wait `n` (0-based) is uniform in
/// `[0, min(max, base * 2^n)]`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The longest the next wait can be.
    pub(crate) fn ceiling(&self) -> Duration {
        let factor = 1u32 << self.attempt.min(16);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next wait, and one step up.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(unit_random())
    }

    /// Back to the first step, after a success.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Sleeps the next wait; `false` if `shutdown` completed first.
    pub(crate) async fn wait<S: Future<Output = ()>>(&mut self, shutdown: Pin<&mut S>) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            biased;
            () = shutdown => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

/// Uniform in `[0, 1)`: the top 48 bits of a v4 UUID are random (its version and variant
/// bits are lower down), which is plenty for spreading waits.
fn unit_random() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() >> 80;
    bits as f64 / (1u64 << 48) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_from_the_base_and_stop_at_the_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(backoff.ceiling().as_millis());
            backoff.next_delay();
        }
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
        );
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_millis(100));
        for _ in 0..1000 {
            backoff.next_delay();
        }
        assert_eq!(backoff.ceiling(), Duration::from_secs(5));
    }

    #[test]
    fn every_wait_lies_between_zero_and_its_ceiling_and_they_spread() {
        let mut waits = Vec::new();
        for _ in 0..2000 {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            for step in 0..8 {
                let ceiling = backoff.ceiling();
                let wait = backoff.next_delay();
                assert!(wait <= ceiling, "step {step}: {wait:?} > {ceiling:?}");
                if step == 6 {
                    waits.push(wait);
                }
            }
        }
        // Full jitter: replicas at the same step wait anywhere from 0 to the ceiling (5 s),
        // not the same time.
        let min = waits.iter().min().unwrap();
        let max = waits.iter().max().unwrap();
        assert!(*min < Duration::from_millis(250), "{min:?}");
        assert!(*max > Duration::from_millis(4750), "{max:?}");
        let mean = waits.iter().sum::<Duration>() / waits.len() as u32;
        assert!(
            (Duration::from_millis(2200)..Duration::from_millis(2800)).contains(&mean),
            "{mean:?}"
        );
    }
}
