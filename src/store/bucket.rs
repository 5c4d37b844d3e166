//! One user's entries: an immutable snapshot, replaced whole on every change.
//!
//! Readers clone an `Arc<Bucket>` under the shard's read lock and search it after the lock is
//! gone; writers build the next snapshot under the shard's write lock. A user holds few entries
//! (one per route they call, bounded by `max_entries_per_user`), so copying them is cheaper than
//! any finer-grained locking would be.

use std::borrow::Borrow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

/// A stored value and its clock.
#[derive(Debug, Clone)]
pub(crate) struct Slot<K, V> {
    pub(crate) key: K,
    pub(crate) value: V,
    pub(crate) stored_at: Instant,
    /// Served as a hit until then.
    pub(crate) fresh_until: Instant,
    /// Kept as a stale fallback until then, and reclaimed after.
    pub(crate) keep_until: Instant,
    pub(crate) weight: u64,
}

/// When the reaper is due, and which run of the reaper promised it (a reaper that died with
/// its runtime took its promises along).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) at: Instant,
    pub(crate) epoch: u64,
}

/// All entries of one user, and the generation that guards writes to them.
#[derive(Debug)]
pub(crate) struct Bucket<K, V> {
    /// Unique per bucket ever created in the store. A write made on behalf of a fetch that
    /// began under another generation is refused: the user was invalidated (or `set`) since.
    pub(crate) generation: u64,
    /// Fetches in flight under this generation. While any is, the bucket is neither evicted
    /// nor reclaimed, so their results can still be stored.
    pub(crate) in_flight: Arc<AtomicUsize>,
    /// An empty bucket is not reclaimed before this instant.
    pub(crate) idle_until: Instant,
    /// The reaper's next visit, if one is planned.
    pub(crate) plan: Option<Plan>,
    pub(crate) slots: Vec<Slot<K, V>>,
    /// Cached for the cache's weighter, which must be cheap and stable.
    pub(crate) weight: u64,
}

/// What a change did to the number of resident entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Delta {
    pub(crate) added: usize,
    pub(crate) removed: usize,
}

impl<K, V> Bucket<K, V> {
    pub(crate) fn has_fetches_in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }
}

impl<K: Clone + Eq, V: Clone> Bucket<K, V> {
    pub(crate) fn empty(generation: u64, idle_until: Instant) -> Self {
        Self {
            generation,
            in_flight: Arc::default(),
            idle_until,
            plan: None,
            slots: Vec::new(),
            weight: 1,
        }
    }

    pub(crate) fn find<Q>(&self, key: &Q) -> Option<&Slot<K, V>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        self.slots.iter().find(|s| s.key.borrow() == key)
    }

    /// The next snapshot, with `slot` replacing any entry under the same key. When the user
    /// already holds `max_slots` entries, the one that leaves soonest makes room.
    pub(crate) fn with_slot(&self, slot: Slot<K, V>, max_slots: usize) -> (Self, Delta) {
        let mut slots = Vec::with_capacity(self.slots.len() + 1);
        slots.extend(self.slots.iter().filter(|s| s.key != slot.key).cloned());
        let mut delta = Delta {
            added: 1,
            removed: self.slots.len() - slots.len(),
        };
        while slots.len() >= max_slots.max(1) {
            let soonest = (0..slots.len())
                .min_by_key(|&i| slots[i].keep_until)
                .expect("non-empty");
            slots.swap_remove(soonest);
            delta.removed += 1;
        }
        slots.push(slot);
        (self.derive(slots), delta)
    }

    /// The snapshot without the entries whose keep time has passed, or `None` if none had.
    pub(crate) fn without_departed(&self, now: Instant) -> Option<(Self, Delta)> {
        let kept: Vec<_> = self
            .slots
            .iter()
            .filter(|s| s.keep_until > now)
            .cloned()
            .collect();
        if kept.len() == self.slots.len() {
            return None;
        }
        let delta = Delta {
            added: 0,
            removed: self.slots.len() - kept.len(),
        };
        Some((self.derive(kept), delta))
    }

    /// The same entries with another plan.
    pub(crate) fn replanned(&self, plan: Option<Plan>) -> Self {
        let mut next = self.derive(self.slots.clone());
        next.plan = plan;
        next
    }

    fn derive(&self, slots: Vec<Slot<K, V>>) -> Self {
        Self {
            generation: self.generation,
            in_flight: self.in_flight.clone(),
            idle_until: self.idle_until,
            plan: self.plan,
            weight: slots.iter().map(|s| s.weight).sum::<u64>().max(1),
            slots,
        }
    }

    /// When the reaper has something to do here: the next entry leaves, or the empty bucket
    /// goes idle.
    pub(crate) fn next_departure(&self) -> Instant {
        self.slots
            .iter()
            .map(|s| s.keep_until)
            .min()
            .unwrap_or(self.idle_until)
    }

    /// Whether the reaper can drop the whole bucket at `now`.
    pub(crate) fn is_departed(&self, now: Instant) -> bool {
        !self.has_fetches_in_flight()
            && self.slots.iter().all(|s| s.keep_until <= now)
            && (!self.slots.is_empty() || self.idle_until <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn slot(key: &'static str, now: Instant, keep_secs: u64) -> Slot<&'static str, u32> {
        Slot {
            key,
            value: 0,
            stored_at: now,
            fresh_until: now + Duration::from_secs(keep_secs),
            keep_until: now + Duration::from_secs(keep_secs),
            weight: 10,
        }
    }

    #[test]
    fn same_key_replaces_and_bound_evicts_soonest() {
        let now = Instant::now();
        let b = Bucket::empty(1, now);
        let (b, d) = b.with_slot(slot("a", now, 5), 2);
        assert_eq!(
            d,
            Delta {
                added: 1,
                removed: 0
            }
        );
        let (b, d) = b.with_slot(slot("a", now, 9), 2);
        assert_eq!(
            d,
            Delta {
                added: 1,
                removed: 1
            }
        );
        let (b, _) = b.with_slot(slot("b", now, 3), 2);
        assert_eq!(b.weight, 20);
        let (b, d) = b.with_slot(slot("c", now, 7), 2);
        assert_eq!(d.removed, 1);
        let keys: Vec<_> = b.slots.iter().map(|s| s.key).collect();
        assert_eq!(keys, ["a", "c"], "b left soonest and made room");
        assert_eq!(b.next_departure(), now + Duration::from_secs(7));
    }

    #[test]
    fn departed_entries_are_dropped_unless_a_fetch_is_in_flight() {
        let now = Instant::now();
        let (b, _) = Bucket::empty(1, now).with_slot(slot("a", now, 1), 8);
        let (b, _) = b.with_slot(slot("b", now, 5), 8);
        assert!(b.without_departed(now).is_none());
        let later = now + Duration::from_secs(2);
        let (b, d) = b.without_departed(later).unwrap();
        assert_eq!(d.removed, 1);
        assert!(!b.is_departed(later));
        let end = now + Duration::from_secs(5);
        assert!(b.is_departed(end));
        b.in_flight.fetch_add(1, Ordering::AcqRel);
        assert!(!b.is_departed(end), "a fetch in flight keeps the bucket");
    }
}
