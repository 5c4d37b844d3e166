//! One user's entries, held by value in the map and replaced whole on every change.
//!
//! A lookup reads the user's bucket in place under the shard's read lock: a bucket is small, its
//! one entry lives inline (the programmatic API, and most HTTP users, who call one route), and
//! more entries sit behind one `Arc`. So a hit on a one-entry user touches no allocation besides
//! the map's own, which is most of the cost of a random lookup among a million users. Writers
//! build the next bucket under the shard's write lock; a user holds few entries (bounded by
//! `max_entries_per_user`), so copying them is cheaper than finer-grained locking would be.

use std::borrow::Borrow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::clock::Tick;

/// A stored value and its clock.
#[derive(Debug, Clone)]
pub(crate) struct Slot<K, V> {
    pub(crate) key: K,
    pub(crate) value: V,
    pub(crate) stored_at: Tick,
    /// Served as a hit until then.
    pub(crate) fresh_until: Tick,
    /// Kept as a stale fallback until then, and reclaimed after.
    pub(crate) keep_until: Tick,
    pub(crate) weight: u64,
}

/// A user's entries: none (a fetch in progress, kept until `idle_until`), one inline, or several
/// shared.
#[derive(Debug, Clone)]
pub(crate) enum Slots<K, V> {
    Empty { idle_until: Tick },
    One(Slot<K, V>),
    Many(Arc<[Slot<K, V>]>),
}

impl<K, V> Slots<K, V> {
    pub(crate) fn as_slice(&self) -> &[Slot<K, V>] {
        match self {
            Slots::Empty { .. } => &[],
            Slots::One(slot) => std::slice::from_ref(slot),
            Slots::Many(slots) => slots,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn from_vec(mut slots: Vec<Slot<K, V>>, idle_until: Tick) -> Self {
        match slots.len() {
            0 => Slots::Empty { idle_until },
            1 => Slots::One(slots.pop().expect("one")),
            _ => Slots::Many(slots.into()),
        }
    }

    /// The slot under `key`.
    #[inline]
    pub(crate) fn find<Q>(&self, key: &Q) -> Option<&Slot<K, V>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        match self {
            Slots::Empty { .. } => None,
            Slots::One(slot) => (slot.key.borrow() == key).then_some(slot),
            Slots::Many(slots) => slots.iter().find(|s| s.key.borrow() == key),
        }
    }
}

/// When the reaper is due, and which run of the reaper promised it (a reaper that died with
/// its runtime took its promises along). Epoch 0 is no plan: reapers count from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Plan {
    pub(crate) at: Tick,
    pub(crate) epoch: u32,
}

impl Plan {
    /// No visit planned.
    pub(crate) const NONE: Plan = Plan {
        at: Tick::ZERO,
        epoch: 0,
    };

    pub(crate) fn is_some(self) -> bool {
        self.epoch != 0
    }
}

/// All entries of one user, and the generation that guards writes to them.
///
/// Kept small (80 bytes for the programmatic API's `u64` values): the map holds buckets by
/// value, and at a million users the size of an entry decides how many lookups miss the TLB.
#[derive(Debug, Clone)]
pub(crate) struct Bucket<K, V> {
    pub(crate) slots: Slots<K, V>,
    /// Unique per bucket ever created in the store. A write made on behalf of a fetch that
    /// began under another generation is refused: the user was invalidated (or `set`) since.
    pub(crate) generation: u64,
    /// Fetches in flight under this generation, once there has been one. While any is, the
    /// bucket is neither evicted nor reclaimed, so their results can still be stored.
    pub(crate) in_flight: Option<Arc<AtomicUsize>>,
    /// The reaper's next visit.
    pub(crate) plan: Plan,
}

/// What a change did to the number of resident entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Delta {
    pub(crate) added: usize,
    pub(crate) removed: usize,
}

impl<K, V> Bucket<K, V> {
    /// The weight of the entries, for the cache's bound (at least 1).
    pub(crate) fn weight(&self) -> u64 {
        self.slots
            .as_slice()
            .iter()
            .fold(0u64, |sum, s| sum.saturating_add(s.weight))
            .max(1)
    }

    pub(crate) fn has_fetches_in_flight(&self) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|n| n.load(Ordering::Acquire) > 0)
    }

    /// Counts one more fetch in flight; returns the counter the fetch releases.
    pub(crate) fn enter_flight(&mut self) -> Arc<AtomicUsize> {
        let counter = self.in_flight.get_or_insert_with(Arc::default);
        counter.fetch_add(1, Ordering::AcqRel);
        counter.clone()
    }
}

impl<K: Clone + Eq, V: Clone> Bucket<K, V> {
    pub(crate) fn empty(generation: u64, idle_until: Tick) -> Self {
        Self {
            slots: Slots::Empty { idle_until },
            generation,
            in_flight: None,
            plan: Plan::NONE,
        }
    }

    /// The next bucket, with `slot` replacing any entry under the same key. When the user
    /// already holds `max_slots` entries, the one that leaves soonest makes room.
    pub(crate) fn with_slot(&self, slot: Slot<K, V>, max_slots: usize) -> (Self, Delta) {
        let current = self.slots.as_slice();
        let mut slots = Vec::with_capacity(current.len() + 1);
        slots.extend(current.iter().filter(|s| s.key != slot.key).cloned());
        let mut delta = Delta {
            added: 1,
            removed: current.len() - slots.len(),
        };
        while slots.len() >= max_slots.max(1) {
            let soonest = (0..slots.len())
                .min_by_key(|&i| slots[i].keep_until)
                .expect("non-empty");
            slots.swap_remove(soonest);
            delta.removed += 1;
        }
        slots.push(slot);
        (self.with_slots(slots), delta)
    }

    /// The bucket without the entries whose keep time has passed, or `None` if none had.
    pub(crate) fn without_departed(&self, now: Tick) -> Option<(Self, Delta)> {
        let current = self.slots.as_slice();
        let kept: Vec<_> = current
            .iter()
            .filter(|s| s.keep_until > now)
            .cloned()
            .collect();
        if kept.len() == current.len() {
            return None;
        }
        let delta = Delta {
            added: 0,
            removed: current.len() - kept.len(),
        };
        Some((self.with_slots(kept), delta))
    }

    fn with_slots(&self, slots: Vec<Slot<K, V>>) -> Self {
        let idle_until = match self.slots {
            Slots::Empty { idle_until } => idle_until,
            _ => Tick::ZERO,
        };
        Self {
            slots: Slots::from_vec(slots, idle_until),
            generation: self.generation,
            in_flight: self.in_flight.clone(),
            plan: self.plan,
        }
    }

    /// The same bucket, empty, kept until `idle_until` (a fetch is in flight).
    pub(crate) fn emptied(&self, idle_until: Tick) -> Self {
        Self {
            slots: Slots::Empty { idle_until },
            generation: self.generation,
            in_flight: self.in_flight.clone(),
            plan: self.plan,
        }
    }

    /// When the reaper has something to do here: the next entry leaves, or the empty bucket
    /// goes idle.
    pub(crate) fn next_departure(&self) -> Tick {
        match &self.slots {
            Slots::Empty { idle_until } => *idle_until,
            slots => slots
                .as_slice()
                .iter()
                .map(|s| s.keep_until)
                .min()
                .unwrap_or(Tick::ZERO),
        }
    }

    /// Whether the reaper can drop the whole bucket at `now`.
    pub(crate) fn is_departed(&self, now: Tick) -> bool {
        !self.has_fetches_in_flight()
            && self.next_departure() <= now
            && self.slots.as_slice().iter().all(|s| s.keep_until <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn slot(key: &'static str, now: Tick, keep_secs: u64) -> Slot<&'static str, u32> {
        Slot {
            key,
            value: 0,
            stored_at: now,
            fresh_until: now.after(Duration::from_secs(keep_secs)),
            keep_until: now.after(Duration::from_secs(keep_secs)),
            weight: 10,
        }
    }

    fn keys(bucket: &Bucket<&'static str, u32>) -> Vec<&'static str> {
        bucket.slots.as_slice().iter().map(|s| s.key).collect()
    }

    #[test]
    fn same_key_replaces_and_bound_evicts_soonest() {
        let now = Tick::default();
        let b = Bucket::empty(1, now);
        let (b, d) = b.with_slot(slot("a", now, 5), 2);
        assert_eq!(
            d,
            Delta {
                added: 1,
                removed: 0
            }
        );
        assert!(matches!(b.slots, Slots::One(_)), "one entry is held inline");
        let (b, d) = b.with_slot(slot("a", now, 9), 2);
        assert_eq!(
            d,
            Delta {
                added: 1,
                removed: 1
            }
        );
        let (b, _) = b.with_slot(slot("b", now, 3), 2);
        assert_eq!(b.weight(), 20);
        assert!(matches!(b.slots, Slots::Many(_)));
        let (b, d) = b.with_slot(slot("c", now, 7), 2);
        assert_eq!(d.removed, 1);
        assert_eq!(keys(&b), ["a", "c"], "b left soonest and made room");
        assert_eq!(b.next_departure(), now.after(Duration::from_secs(7)));
        assert_eq!(b.slots.find("c").map(|s| s.key), Some("c"));
        assert!(b.slots.find("b").is_none());
    }

    #[test]
    fn departed_entries_are_dropped_unless_a_fetch_is_in_flight() {
        let now = Tick::default();
        let (b, _) = Bucket::empty(1, now).with_slot(slot("a", now, 1), 8);
        let (b, _) = b.with_slot(slot("b", now, 5), 8);
        assert!(b.without_departed(now).is_none());
        let later = now.after(Duration::from_secs(2));
        let (mut b, d) = b.without_departed(later).unwrap();
        assert_eq!(d.removed, 1);
        assert!(!b.is_departed(later));
        let end = now.after(Duration::from_secs(5));
        assert!(b.is_departed(end));
        let _flight = b.enter_flight();
        assert!(!b.is_departed(end), "a fetch in flight keeps the bucket");
    }
}
