//! One backoff for every retry loop: exponential, bounded and jittered.

use std::time::Duration;

use crate::error::{Error, Result};

/// Delays between attempts: `base` before the first retry, doubling after each, never above
/// `max`, each drawn at random in `[d/2, d]` so that workers that failed together do not
/// retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `attempt` (1 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        use rand::Rng as _;
        let full = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max);
        let half = full / 2;
        half + rand::rng().random_range(Duration::ZERO..=full - half)
    }

    /// Checks that `base` is above zero and not above `max`.
    pub fn validate(&self) -> Result<()> {
        if self.base.is_zero() || self.base > self.max {
            return Err(Error::invalid(
                "backoff",
                format!(
                    "the first delay {:?} must be above zero and at most the longest {:?}",
                    self.base, self.max
                ),
            ));
        }
        Ok(())
    }
}
