//! One backoff for every retry loop: exponential, bounded and jittered.

use std::time::Duration;

use rand::Rng as _;

use crate::error::{Error, Result};

/// Delays between attempts: `base` before the first retry, doubling after each, never above
/// `max`, each drawn at random in `[d/2, d]` so that workers that failed together do not
/// retry in lockstep.
///
/// Precisely: the delay before retry `attempt` (1 for the first) is uniform in `[d/2, d]`
/// with `d` its [`ceiling`](Self::ceiling), `min(base * 2^(attempt - 1), max)`. So delays
/// grow with each attempt until `max`, and a long run of failures never waits more than `max`
/// between attempts. Each use documents its own defaults (`MasterConfig::retry`,
/// `SftpTuning::backoff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter). Must be above zero.
    pub base: Duration,
    /// Longest delay. Must be at least `base`.
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `attempt` (1 for the first retry; 0 counts as 1): drawn
    /// uniformly in `[d/2, d]` with `d` the [`ceiling`](Self::ceiling) of that attempt.
    pub fn delay(&self, attempt: u32) -> Duration {
        let full = self.ceiling(attempt);
        let half = full / 2;
        half + rand::rng().random_range(Duration::ZERO..=full - half)
    }

    /// The longest delay before retry number `attempt`: `min(base * 2^(attempt - 1), max)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        // Past 2^20 doublings any base of a millisecond or more is above a sane `max`; the cap
        // keeps the shift in range.
        self.base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max)
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

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_secs(3),
    };

    #[test]
    fn the_ceiling_doubles_from_base_up_to_max() {
        let ms = |attempt| B.ceiling(attempt).as_millis();
        assert_eq!(
            [0, 1, 2, 3, 4, 5, 6].map(ms),
            [100, 100, 200, 400, 800, 1600, 3000]
        );
        assert_eq!(B.ceiling(u32::MAX), B.max);
        let huge = Backoff {
            base: Duration::from_secs(1 << 50),
            max: Duration::MAX,
        };
        assert_eq!(huge.ceiling(40), Duration::MAX, "saturates, no overflow");
    }

    #[test]
    fn delays_stay_within_half_the_ceiling_and_the_ceiling() {
        for attempt in [1, 2, 3, 5, 8, 30, u32::MAX] {
            let d = B.ceiling(attempt);
            for _ in 0..200 {
                let got = B.delay(attempt);
                assert!(got >= d / 2 && got <= d, "attempt {attempt}: {got:?}");
                assert!(got <= B.max);
            }
        }
    }

    #[test]
    fn delays_are_jittered_across_the_range() {
        let d = B.ceiling(4);
        let draws: Vec<Duration> = (0..400).map(|_| B.delay(4)).collect();
        // 400 uniform draws land in both outer quarters of [d/2, d] (a miss has odds of 2^-166).
        assert!(draws.iter().any(|&x| x < d / 2 + d / 8), "{draws:?}");
        assert!(draws.iter().any(|&x| x > d - d / 8), "{draws:?}");
    }

    #[test]
    fn delays_grow_with_attempts_until_the_max() {
        // Below the cap, the draws of attempt n + 1 start where those of attempt n end.
        for attempt in 1..5 {
            assert!(B.delay(attempt + 1) >= B.delay(attempt));
        }
        assert!(B.delay(40) >= B.max / 2);
    }

    #[test]
    fn validate_rejects_a_zero_base_and_a_base_above_max() {
        assert!(B.validate().is_ok());
        let equal = Backoff { base: B.max, ..B };
        assert!(equal.validate().is_ok());
        for bad in [
            Backoff {
                base: Duration::ZERO,
                ..B
            },
            Backoff {
                base: Duration::from_secs(4),
                ..B
            },
        ] {
            let err = bad.validate().unwrap_err();
            assert!(err.to_string().contains("backoff"), "{err}");
        }
    }
}
