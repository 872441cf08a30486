//! Jittered exponential backoff between attempts to reach the server.
//!
//! The delay doubles from [`MIN`] to [`MAX`]; each wait is drawn from the
//! upper half of the current delay ("equal jitter"), so a fleet of agents
//! cut off together does not come back in lockstep and hammer a server
//! that has just restarted, while no wait is shorter than half the step.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

pub(crate) const MIN: Duration = Duration::from_millis(100);
pub(crate) const MAX: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct Backoff {
    step: Duration,
    max: Duration,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff::up_to(MAX)
    }

    /// A backoff whose steps stop growing at `max` (but not below [`MIN`]).
    pub(crate) fn up_to(max: Duration) -> Backoff {
        Backoff {
            step: MIN,
            max: max.max(MIN),
            rng: seed(),
        }
    }

    /// The next wait, and the step doubles for the one after.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.step.min(self.max);
        self.step = step.saturating_mul(2).min(self.max);
        let half = step / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = match nanos.checked_add(1) {
            Some(span) => self.random() % span,
            None => self.random(),
        };
        half + Duration::from_nanos(jitter)
    }

    /// Back to the shortest wait: the server answered.
    pub(crate) fn reset(&mut self) {
        self.step = MIN;
    }

    /// xorshift64*: jitter needs spread, not cryptographic quality.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A per-process random seed without a dependency: the standard library
/// seeds every `RandomState` from the OS. Never zero (xorshift's fixed point).
fn seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish() | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_from_the_minimum_to_the_maximum_and_stay_there() {
        let mut b = Backoff::new();
        let mut step = MIN;
        for _ in 0..40 {
            let d = b.next_delay();
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
            step = (step * 2).min(MAX);
        }
        // After enough failures every wait is between half the cap and the cap.
        for _ in 0..1000 {
            let d = b.next_delay();
            assert!(d >= MAX / 2 && d <= MAX, "{d:?}");
        }
    }

    #[test]
    fn reset_starts_over_at_the_minimum() {
        let mut b = Backoff::new();
        for _ in 0..20 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= MIN);
    }

    #[test]
    fn a_lower_cap_bounds_every_wait() {
        let mut b = Backoff::up_to(Duration::from_secs(1));
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        // A cap below the minimum is raised to it, never to zero waits.
        let mut b = Backoff::up_to(Duration::ZERO);
        assert!(b.next_delay() >= MIN / 2);
    }

    #[test]
    fn waits_are_spread_not_fixed() {
        let mut b = Backoff::up_to(MIN);
        let waits: std::collections::HashSet<Duration> = (0..50).map(|_| b.next_delay()).collect();
        assert!(waits.len() > 10, "jitter should vary the waits: {waits:?}");
    }
}
