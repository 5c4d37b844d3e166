//! Event counters that many threads bump without sharing a cache line.
//!
//! A single `AtomicU64` bumped on every hit by every core turns the hit path into a cache-line
//! ping-pong; each thread here bumps its own stripe and readers sum the stripes.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Something that happened, counted for `stats()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Hit,
    Miss,
    Bypass,
    StaleServed,
    Coalesced,
    Retry,
    Eviction,
    Expiration,
    Invalidation,
    Stored,
    StoreRejected,
}

const EVENTS: usize = Event::StoreRejected as usize + 1;
/// A power of two (see [`stripe_index`]).
const STRIPES: usize = 16;

#[repr(align(128))]
struct Padded<const N: usize>([AtomicU64; N]);

/// `N` wrapping counters, one copy per stripe; a value is the wrapping sum of its copies.
struct Striped<const N: usize> {
    stripes: [Padded<N>; STRIPES],
}

impl<const N: usize> Default for Striped<N> {
    fn default() -> Self {
        Self {
            stripes: std::array::from_fn(|_| Padded(std::array::from_fn(|_| AtomicU64::new(0)))),
        }
    }
}

impl<const N: usize> Striped<N> {
    #[inline]
    fn cell(&self, index: usize) -> &AtomicU64 {
        &self.stripes[stripe_index()].0[index]
    }

    fn sum(&self, index: usize) -> u64 {
        self.stripes.iter().fold(0u64, |acc, s| {
            acc.wrapping_add(s.0[index].load(Ordering::Relaxed))
        })
    }
}

/// This thread's stripe, below [`STRIPES`].
///
/// Every hit asks, so the thread-local is `const`-initialised (a lazily initialised one checks
/// and registers its state on each access) and the index is masked into range, which also
/// spares the bounds check where it is used.
#[inline]
pub(crate) fn stripe_index() -> usize {
    const UNSET: usize = usize::MAX;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(UNSET) };
    }
    INDEX.with(|index| {
        let mut i = index.get();
        if i == UNSET {
            i = NEXT.fetch_add(1, Ordering::Relaxed);
            index.set(i);
        }
        i & (STRIPES - 1)
    })
}

/// Per-event counters, striped by thread.
#[derive(Default)]
pub(crate) struct Counters(Striped<EVENTS>);

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters").finish_non_exhaustive()
    }
}

impl Counters {
    #[inline]
    pub(crate) fn incr(&self, event: Event) {
        self.add(event, 1);
    }

    #[inline]
    pub(crate) fn add(&self, event: Event, n: u64) {
        if n != 0 {
            self.0.cell(event as usize).fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self, event: Event) -> u64 {
        self.0.sum(event as usize)
    }
}

/// A striped up/down count (entries resident). Stripes wrap; their sum is exact.
#[derive(Default)]
pub(crate) struct Gauge(Striped<1>);

impl Gauge {
    pub(crate) fn add(&self, n: usize) {
        self.0.cell(0).fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, n: usize) {
        self.0.cell(0).fetch_sub(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> usize {
        (self.0.sum(0) as i64).max(0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sum_across_threads() {
        let counters = std::sync::Arc::new(Counters::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = counters.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.incr(Event::Hit)))
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(counters.get(Event::Hit), 4000);
        assert_eq!(counters.get(Event::Miss), 0);
    }

    #[test]
    fn gauge_goes_up_and_down_across_threads() {
        let gauge = std::sync::Arc::new(Gauge::default());
        gauge.add(10);
        let g = gauge.clone();
        std::thread::spawn(move || g.sub(4)).join().unwrap();
        assert_eq!(gauge.get(), 6);
    }
}
