use std::time::Duration;

use crate::error::ConfigError;

/// The seed's `DEFAULT_RETRY_CONFIG`: 3 retries, 100 ms first delay, 2 s cap, doubling, with
/// jitter.
pub const DEFAULT_RETRY_CONFIG: RetryConfig = RetryConfig {
    max_retries: 3,
    initial_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(2),
    backoff_factor: 2.0,
    jitter: true,
};

/// How often and how patiently a failed fetch is tried again.
///
/// Attempt 1 runs at once; retry `n` (attempt `n + 1`) waits
/// `min(initial_delay * backoff_factor^(n-1), max_delay)`. With jitter on (the default) each wait
/// is drawn uniformly from the upper half of that delay, `[d/2, d]`, so a crowd of clients that
/// failed together does not retry together, and no wait ever exceeds `max_delay`.
///
/// ```
/// use integration_cache::RetryConfig;
/// use std::time::Duration;
///
/// let config = RetryConfig::new(5, Duration::from_millis(200), Duration::from_secs(5), 2.0)?
///     .with_jitter(false);
/// assert_eq!(config.delay_before_retry(1), Duration::from_millis(200));
/// assert_eq!(config.delay_before_retry(3), Duration::from_millis(800));
/// assert_eq!(config.delay_before_retry(9), Duration::from_secs(5)); // capped
/// # Ok::<(), integration_cache::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    max_retries: u32,
    initial_delay: Duration,
    max_delay: Duration,
    backoff_factor: f64,
    jitter: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        DEFAULT_RETRY_CONFIG
    }
}

impl RetryConfig {
    /// A validated configuration, with jitter on.
    ///
    /// # Errors
    ///
    /// - `backoff_factor` is not a finite number of at least 1.0;
    /// - `initial_delay` is longer than `max_delay`.
    pub fn new(
        max_retries: u32,
        initial_delay: Duration,
        max_delay: Duration,
        backoff_factor: f64,
    ) -> Result<Self, ConfigError> {
        if !backoff_factor.is_finite() || backoff_factor < 1.0 {
            return Err(ConfigError::new(
                "backoff_factor",
                format!("got {backoff_factor}; use a finite factor of at least 1.0 (2.0 doubles each delay)"),
            ));
        }
        if initial_delay > max_delay {
            return Err(ConfigError::new(
                "initial_delay",
                format!(
                    "{initial_delay:?} is longer than max_delay {max_delay:?}; raise max_delay or lower initial_delay"
                ),
            ));
        }
        Ok(Self {
            max_retries,
            initial_delay,
            max_delay,
            backoff_factor,
            jitter: true,
        })
    }

    /// Turns jitter on or off. Off gives the exact schedule, for tests and demos.
    #[must_use]
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// Changes the number of retries after the first attempt (0 = no retries).
    #[must_use]
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Retries after the first attempt.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The wait before the first retry.
    pub fn initial_delay(&self) -> Duration {
        self.initial_delay
    }

    /// The longest wait between two attempts.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// How much each wait grows over the previous one.
    pub fn backoff_factor(&self) -> f64 {
        self.backoff_factor
    }

    /// Whether waits are randomised.
    pub fn jitter(&self) -> bool {
        self.jitter
    }

    /// The wait before retry number `retry` (1-based), jitter applied if on.
    pub fn delay_before_retry(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(i32::MAX as u32) as i32;
        let scaled = self.initial_delay.as_secs_f64() * self.backoff_factor.powi(exponent);
        let base = if scaled.is_finite() && scaled < self.max_delay.as_secs_f64() {
            Duration::from_secs_f64(scaled)
        } else {
            self.max_delay
        };
        if self.jitter {
            let half = base / 2;
            half + half.mul_f64(fastrand::f64())
        } else {
            base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_matches_the_seed() {
        let config = DEFAULT_RETRY_CONFIG.with_jitter(false);
        let delays: Vec<_> = (1..=6).map(|n| config.delay_before_retry(n)).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1600), ms(2000)]
        );
    }

    #[test]
    fn jitter_stays_in_the_upper_half_and_under_the_cap() {
        let config = DEFAULT_RETRY_CONFIG;
        for retry in 1..=40 {
            let unjittered = config.with_jitter(false).delay_before_retry(retry);
            let d = config.delay_before_retry(retry);
            assert!(d <= unjittered && d >= unjittered / 2, "{retry}: {d:?}");
            assert!(d <= config.max_delay());
        }
    }

    #[test]
    fn invalid_values_are_rejected_with_the_setting_named() {
        let ms = Duration::from_millis;
        let err = RetryConfig::new(3, ms(10), ms(100), 0.5).unwrap_err();
        assert_eq!(err.setting(), "backoff_factor");
        assert!(RetryConfig::new(3, ms(10), ms(100), f64::NAN).is_err());
        let err = RetryConfig::new(3, ms(500), ms(100), 2.0).unwrap_err();
        assert_eq!(err.setting(), "initial_delay");
        assert!(err.to_string().contains("max_delay"));
    }

    #[test]
    fn huge_retry_numbers_do_not_overflow() {
        let config = DEFAULT_RETRY_CONFIG.with_jitter(false);
        assert_eq!(config.delay_before_retry(u32::MAX), config.max_delay());
    }
}
