//! [`Tick`]: a point in time in 8 bytes, and the [`Clock`] that reads it.
//!
//! Entries carry several timestamps; as `tokio::time::Instant`s (16 bytes each) they made a
//! bucket large enough that a million users' buckets no longer fit the TLB's reach, and a
//! random lookup paid a page walk. Nanoseconds since the store was created fit in a `u64` for
//! 584 years.
//!
//! Every hit reads the clock, and how it is read matters more than it seems. `Instant::now`
//! (tokio's or std's) is a vDSO `clock_gettime`, which reads the CPU's time-stamp counter with an
//! *ordered* instruction: it waits until every earlier instruction has finished, so the CPU
//! cannot overlap one lookup's cache misses with the next one's, and at a million users a hit
//! cost 259 ns instead of 195 ns (BENCHMARKS.md). So outside tests the clock reads the counter
//! through `quanta`, unordered and calibrated against the same monotonic clock tokio uses.
//!
//! Even unordered, reading the counter is a slow, microcoded instruction on some CPUs (AMD's, in
//! a VM here): interleaved with random loads it let about a fifth as many run at once, and a hit
//! at a million users cost 811 ns where quick_cache alone took 213 ns. So a hit compares an
//! entry's deadline with the [`Ticker`]'s reading instead, a plain load of a value one thread
//! refreshes every [`TICK`], and reads the counter itself only when the deadline is within
//! [`NEAR`] of that reading. A ticker reading is never ahead of the time, and is behind it by
//! at most a tick unless its thread is kept from running for all of `NEAR`, so an entry is
//! never served past its deadline while the ticker runs at least once a second.
//!
//! Tests keep tokio's clock: a store created while tokio's clock is paused
//! (`#[tokio::test(start_paused = true)]`, `tokio::time::pause()`) reads `tokio::time::Instant`
//! on every access, so `advance` moves its entries towards expiry exactly.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
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
    #[inline]
    pub(crate) fn since(self, earlier: Tick) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// Reads the time as [`Tick`]s, and turns a future tick into a deadline for tokio's timers.
#[derive(Debug)]
pub(crate) struct Clock {
    start: Instant,
    /// The CPU's counter (or, where it is unreliable, the OS's monotonic clock), read through
    /// `quanta` as nanoseconds since the process-wide [`Origin`].
    origin: &'static Origin,
    /// The origin's reading at `start`: a tick is an origin reading minus this.
    origin_at_start: u64,
    /// A recent origin reading, if the ticker thread could be started.
    ticker: Option<Arc<Ticker>>,
    /// Set once tokio's clock was seen paused, and never cleared: from then on the store reads
    /// tokio's clock, which is always right, only slower.
    follows_tokio: AtomicBool,
}

impl Clock {
    /// A clock starting now: tokio's if tokio's clock is paused, else the CPU's counter.
    pub(crate) fn new() -> Self {
        let origin = Origin::get();
        let clock = Self {
            start: Instant::now(),
            origin_at_start: origin.now(),
            ticker: Ticker::shared(origin),
            origin,
            follows_tokio: AtomicBool::new(false),
        };
        clock.follow_runtime();
        clock
    }

    /// Switches to tokio's clock if it is paused in the runtime we are in. Called when the
    /// store is created and whenever it starts its reaper in a new runtime, which its first
    /// write there does; so a store created outside a paused test runtime follows it too.
    pub(crate) fn follow_runtime(&self) {
        if !self.follows_tokio() && tokio_clock_is_paused() {
            self.follows_tokio.store(true, Ordering::Relaxed);
        }
    }

    #[inline]
    fn follows_tokio(&self) -> bool {
        self.follows_tokio.load(Ordering::Relaxed)
    }

    pub(crate) fn now(&self) -> Tick {
        if self.follows_tokio() {
            Tick(
                u64::try_from(
                    Instant::now()
                        .saturating_duration_since(self.start)
                        .as_nanos(),
                )
                .unwrap_or(u64::MAX),
            )
        } else {
            // 0 if the counter reads below its start (another core's may lag by a few
            // cycles), so ticks never wrap.
            Tick(self.origin.now().saturating_sub(self.origin_at_start))
        }
    }

    /// The time, to compare with `deadline`: exact within [`NEAR`] of it, else possibly up to a
    /// [`TICK`] behind (never ahead), which is all a freshness check far from its deadline
    /// needs, without reading the counter.
    #[inline]
    pub(crate) fn now_against(&self, deadline: Tick) -> Tick {
        if let (false, Some(ticker)) = (self.follows_tokio(), &self.ticker) {
            let recent = ticker.recent().saturating_sub(self.origin_at_start);
            if deadline.0.saturating_sub(recent) > NEAR_NANOS {
                return Tick(recent);
            }
        }
        self.now()
    }

    /// The tokio instant at which this clock will read `tick`, for a timer.
    ///
    /// The counter and tokio's clock may drift apart by a few parts per million, so for the
    /// counter this is measured from now rather than from the start: a timer set this way
    /// never fires early by more than the drift over the wait, and is never long overdue.
    pub(crate) fn deadline(&self, tick: Tick) -> Instant {
        if self.follows_tokio() {
            self.start + Duration::from_nanos(tick.0)
        } else {
            Instant::now() + tick.since(self.now())
        }
    }
}

/// How often the [`Ticker`] refreshes its reading.
const TICK: Duration = Duration::from_millis(10);

/// How close to a deadline a check reads the counter itself rather than the [`Ticker`]'s
/// reading: the longest the ticker's thread may go unscheduled without an entry being served
/// late.
const NEAR: Duration = Duration::from_secs(1);
const NEAR_NANOS: u64 = NEAR.as_nanos() as u64;

/// The counter reading every clock in the process measures from, so that one [`Ticker`] can
/// publish a reading every store uses as it is, with one subtraction: converting a raw counter
/// value to nanoseconds (a 128-bit multiply and shift) on every hit cost a tenth of a hit's
/// instructions.
#[derive(Debug)]
struct Origin {
    counter: quanta::Clock,
    raw: u64,
}

impl Origin {
    fn get() -> &'static Origin {
        static ORIGIN: OnceLock<Origin> = OnceLock::new();
        ORIGIN.get_or_init(|| {
            // The first `quanta::Clock` in a process calibrates the counter (a few
            // milliseconds).
            let counter = quanta::Clock::new();
            let raw = counter.raw();
            Origin { counter, raw }
        })
    }

    /// Nanoseconds since the origin (0 if the counter reads below it).
    fn now(&self) -> u64 {
        self.counter.delta_as_nanos(self.raw, self.counter.raw())
    }
}

/// An [`Origin`] reading refreshed every [`TICK`] by one thread for the whole process, which
/// runs while some store's [`Clock`] holds the ticker and ends within a tick of the last one's
/// drop.
///
/// quanta has the same thing (`Upkeep` and `Clock::recent`), but as a single global that only
/// one owner may start and stop, so two libraries in one process could not both rely on it.
///
/// Every hit on every core reads it, so it has its cache lines to itself: a neighbour written
/// often would make each of those reads a miss.
#[derive(Debug)]
#[repr(align(128))]
struct Ticker {
    recent: AtomicU64,
}

impl Ticker {
    /// The running ticker, started if none is; `None` if no thread could be started (the clock
    /// then reads the counter on every check).
    fn shared(origin: &'static Origin) -> Option<Arc<Ticker>> {
        static RUNNING: Mutex<Weak<Ticker>> = Mutex::new(Weak::new());
        let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ticker) = running.upgrade() {
            return Some(ticker);
        }
        let ticker = Arc::new(Ticker {
            recent: AtomicU64::new(origin.now()),
        });
        let weak = Arc::downgrade(&ticker);
        std::thread::Builder::new()
            .name("integration-cache-clock".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                let Some(ticker) = weak.upgrade() else {
                    return;
                };
                ticker.recent.fetch_max(origin.now(), Ordering::Relaxed);
            })
            .ok()?;
        *running = Arc::downgrade(&ticker);
        Some(ticker)
    }

    /// Nanoseconds since the [`Origin`], at most a [`TICK`] ago while the thread runs.
    #[inline]
    fn recent(&self) -> u64 {
        self.recent.load(Ordering::Relaxed)
    }
}

/// Whether tokio's clock, in the runtime we are in, stands still.
///
/// tokio offers no query for this. A paused clock only moves when told to (or, with
/// auto-advance, when the runtime is idle, which it is not while this function runs), so it
/// reads the same before and after a short wait in real time; a running clock does not.
fn tokio_clock_is_paused() -> bool {
    if tokio::runtime::Handle::try_current().is_err() {
        return false;
    }
    let before = Instant::now();
    let real = std::time::Instant::now();
    while real.elapsed() < Duration::from_micros(2) {
        std::hint::spin_loop();
    }
    Instant::now() == before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ticks_follow_paused_time() {
        let clock = Clock::new();
        assert!(clock.follows_tokio());
        let start = clock.now();
        tokio::time::advance(Duration::from_millis(1500)).await;
        let later = clock.now();
        assert_eq!(later.since(start), Duration::from_millis(1500));
        assert_eq!(start.since(later), Duration::ZERO);
        assert_eq!(
            clock.deadline(later),
            clock.start + Duration::from_millis(1500)
        );
        assert_eq!(
            Tick(u64::MAX - 1).after(Duration::from_secs(1)),
            Tick(u64::MAX)
        );
    }

    #[tokio::test]
    async fn running_time_reads_the_counter() {
        let clock = Clock::new();
        assert!(!clock.follows_tokio());
        let (tokio_start, start) = (Instant::now(), clock.now());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (tokio_elapsed, elapsed) = (tokio_start.elapsed(), clock.now().since(start));
        // Both clocks measured the same wait; allow for scheduling between the two reads.
        assert!(elapsed >= Duration::from_millis(20), "{elapsed:?}");
        assert!(
            elapsed.abs_diff(tokio_elapsed) < Duration::from_millis(5),
            "{elapsed:?} vs {tokio_elapsed:?}"
        );
        let due = clock.now().after(Duration::from_millis(50));
        let deadline = clock.deadline(due);
        let wait = deadline - Instant::now();
        assert!(
            wait <= Duration::from_millis(50) && wait > Duration::from_millis(40),
            "{wait:?}"
        );
    }

    #[test]
    fn far_from_a_deadline_the_ticker_answers_near_it_the_counter() {
        let clock = Clock::new();
        let recent = || {
            let ticker = clock.ticker.as_ref().expect("a ticker thread");
            Tick(ticker.recent().saturating_sub(clock.origin_at_start))
        };
        // The ticker moves on its own, within a few ticks (the machine may be busy).
        let first = recent();
        let waited = std::time::Instant::now();
        while recent() == first {
            assert!(
                waited.elapsed() < Duration::from_secs(5),
                "the ticker stopped"
            );
            std::thread::sleep(TICK / 2);
        }
        // Far from the deadline: the ticker's reading, which is never ahead of the time.
        let far = clock.now().after(Duration::from_secs(60));
        let before = recent();
        let answer = clock.now_against(far);
        assert!(answer >= before && answer <= clock.now(), "{answer:?}");
        // Near it: the counter itself, so an entry a tick from its deadline is not served late.
        let soon = clock.now().after(Duration::from_millis(1));
        let exact = clock.now_against(soon);
        std::thread::sleep(Duration::from_millis(2));
        assert!(clock.now_against(soon) >= soon, "the deadline passed");
        assert!(exact < soon);
    }

    #[test]
    fn outside_a_runtime_reads_the_counter() {
        assert!(!Clock::new().follows_tokio());
    }
}
