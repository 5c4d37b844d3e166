//! [`Tick`]: a point in time in 8 bytes.
//!
//! Entries carry several timestamps; as `tokio::time::Instant`s (16 bytes each) they made a
//! bucket large enough that a million users' buckets no longer fit the TLB's reach, and a
//! random lookup paid a page walk. Nanoseconds since the store was created fit in a `u64` for
//! 584 years. The clock is still tokio's, so paused time in tests moves it.

use std::time::Duration;

use tokio::time::Instant;

/// Nanoseconds since the store's [`Clock`] started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct Tick(u64);

impl Tick {
    /// The clock's start.
    pub(crate) const ZERO: Tick = Tick(0);

    /// `self + by`, saturating.
    pub(crate) fn after(self, by: Duration) -> Tick {
        Tick(
            self.0
                .saturating_add(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX)),
        )
    }

    /// How long from `earlier` to `self` (zero if `earlier` is later).
    pub(crate) fn since(self, earlier: Tick) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// Reads tokio's clock as [`Tick`]s.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    start: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> Tick {
        self.tick(Instant::now())
    }

    pub(crate) fn tick(&self, instant: Instant) -> Tick {
        Tick(
            u64::try_from(instant.saturating_duration_since(self.start).as_nanos())
                .unwrap_or(u64::MAX),
        )
    }

    pub(crate) fn instant(&self, tick: Tick) -> Instant {
        self.start + Duration::from_nanos(tick.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ticks_follow_paused_time() {
        let clock = Clock::new();
        let start = clock.now();
        tokio::time::advance(Duration::from_millis(1500)).await;
        let later = clock.now();
        assert_eq!(later.since(start), Duration::from_millis(1500));
        assert_eq!(start.since(later), Duration::ZERO);
        assert_eq!(clock.tick(clock.instant(later)), later);
        assert_eq!(
            Tick(u64::MAX - 1).after(Duration::from_secs(1)),
            Tick(u64::MAX)
        );
    }
}
