//! The map under the store: shards of a [`hashbrown::HashTable`], each behind a
//! `parking_lot::RwLock`, with entries held inline and a weight bound kept by CLOCK eviction.
//!
//! # Why by hand
//!
//! The store first sat on quick_cache (BENCHMARKS.md, "Store"). Two things of its shape cost a
//! random-key hit at a million users more than the rest of the store's work: its index points
//! into a separate slab of entries, one more dependent cache miss per lookup than a table that
//! holds entries inline, and its `get` can only clone the whole value, where a hit needs one
//! field of the user's bucket. A sharded `RwLock<HashMap>` was 1.7× faster than quick_cache on
//! the same lookups, but has no eviction. This map is that table plus the smallest policy that
//! keeps a weight bound: what the store needs of it is `read` (a closure under the read lock),
//! `update` (a closure under the write lock, then eviction), removal and a walk.
//!
//! # Eviction
//!
//! CLOCK (second chance), per shard: a read sets the entry's `referenced` bit (a plain load
//! when it is already set, so hits do not dirty the line), and a write over the shard's share of
//! the bound sweeps a hand over the table's buckets, clearing set bits and evicting the first
//! entry found clear. So an entry read since the hand last passed stays, and one written once
//! and never read goes first (new entries start clear). The entry just written is never its own
//! victim, and a pinned one (a fetch in flight) is passed over. A sweep stops after two turns
//! of the table; what it could not free (everything pinned) waits for the next write that adds
//! weight. The cost is amortised O(1) per eviction, as CLOCK's is: the hand clears a bit only
//! where a read set it since the hand last passed, so one write sweeps far only after many
//! reads (at worst two turns of its shard's table).

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, Ordering};

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use parking_lot::RwLock;

/// What the map asks of its values.
pub(crate) trait Hooks<U, B>: Send + Sync {
    /// The value's weight against the bound. Asked again whenever the map needs it, so it must
    /// not change while the value is in the map (only through `update`).
    fn weight(&self, value: &B) -> u64;

    /// Whether the value must not be evicted now.
    fn is_pinned(&self, value: &B) -> bool;

    /// Called with each evicted entry, after the shard's lock is released.
    fn on_evict(&self, key: U, value: B);
}

struct Entry<U, B> {
    key: U,
    /// `Some` while in the table; `update` hands it out as an `Option` so a change can remove it.
    value: Option<B>,
    referenced: AtomicBool,
}

struct Shard<U, B> {
    table: HashTable<Entry<U, B>>,
    weight: u64,
    /// The CLOCK hand: the next bucket index a sweep looks at.
    hand: usize,
}

/// A shard's lock on a cache line of its own, so readers of neighbouring shards on other cores
/// do not contend for one line.
#[repr(align(64))]
struct Padded<U, B>(RwLock<Shard<U, B>>);

/// A sharded, weight-bounded hash map (see the module docs).
///
/// Values are cloned under a shard's read lock and dropped under its write lock, so a value
/// whose `Clone` or `Drop` used the same map would deadlock; the store's values never do.
pub(crate) struct Map<U, B, H> {
    shards: Box<[Padded<U, B>]>,
    shard_mask: u64,
    shard_capacity: u64,
    hasher: RandomState,
    hooks: H,
}

/// Shards hold at least this many entries, estimated, so a small bound is not cut too fine.
const MIN_SHARD_ITEMS: u64 = 32;

impl<U, B, H> Map<U, B, H>
where
    U: Hash + Eq + Clone,
    H: Hooks<U, B>,
{
    /// A map bounded at `capacity` in weight, for about `estimated_items` entries.
    pub(crate) fn new(estimated_items: u64, capacity: u64, hooks: H) -> Self {
        let parallelism = std::thread::available_parallelism().map_or(4, |n| n.get()) as u64;
        let mut shards = (parallelism * 4).next_power_of_two();
        while shards > 1 && estimated_items / shards < MIN_SHARD_ITEMS {
            shards /= 2;
        }
        let shard_capacity = capacity.div_ceil(shards).max(1);
        Self {
            shards: (0..shards)
                .map(|_| {
                    Padded(RwLock::new(Shard {
                        // A little room, not the bound's worth: entries are inline, so room for a
                        // bound never reached spreads the entries there are over memory no cache
                        // holds (reserving 8 K entries a shard made a 10 K-user layer's hits a
                        // third slower). Yet a table grown from nothing measured a 1 M-entry
                        // loop of hits at 2-3x the time of one grown from 64 (BENCHMARKS.md);
                        // why is not understood.
                        table: HashTable::with_capacity(64),
                        weight: 0,
                        hand: 0,
                    }))
                })
                .collect(),
            shard_mask: shards - 1,
            shard_capacity,
            hasher: RandomState::default(),
            hooks,
        }
    }

    /// The bound of one shard: no single value heavier than this can be kept.
    pub(crate) fn shard_capacity(&self) -> u64 {
        self.shard_capacity
    }

    /// The bound of the whole map.
    pub(crate) fn capacity(&self) -> u64 {
        self.shard_capacity.saturating_mul(self.shards.len() as u64)
    }

    /// The weight held now.
    pub(crate) fn weight(&self) -> u64 {
        self.shards.iter().map(|shard| shard.0.read().weight).sum()
    }

    #[inline]
    fn locate<Q: Hash + ?Sized>(&self, key: &Q) -> (u64, &RwLock<Shard<U, B>>) {
        let hash = self.hasher.hash_one(key);
        // hashbrown places entries by the hash's low bits and tags them with its top seven:
        // the shard takes bits from the middle.
        let shard = (hash.rotate_right(32) & self.shard_mask) as usize;
        (hash, &self.shards[shard].0)
    }

    /// `read` of the value under `key`, under the shard's read lock; marks the entry used.
    /// `read` may find nothing in the value, so its answer is returned as it is rather than
    /// nested in the option of a missing entry (see `Store::find`).
    #[inline]
    pub(crate) fn read<Q, R>(&self, key: &Q, read: impl FnOnce(&B) -> Option<R>) -> Option<R>
    where
        U: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (hash, shard) = self.locate(key);
        let shard = shard.read();
        let entry = shard.table.find(hash, |e| e.key.borrow() == key)?;
        if !entry.referenced.load(Ordering::Relaxed) {
            entry.referenced.store(true, Ordering::Relaxed);
        }
        entry.value.as_ref().and_then(read)
    }

    /// Runs `change` on the value under `key` (`None` if there is none) under the shard's write
    /// lock, and keeps what it leaves: a value is stored (under a clone of `key` if it is new),
    /// `None` removes the entry. If that added weight, evicts other entries while the shard is
    /// over its bound: a write that adds nothing (a fetch beginning on a user already there)
    /// would only sweep again a shard that pinned entries keep over its bound.
    pub(crate) fn update<R>(&self, key: &U, change: impl FnOnce(&mut Option<B>) -> R) -> R {
        let (hash, shard) = self.locate(key);
        let mut evicted = Vec::new();
        let result = {
            let mut guard = shard.write();
            let shard = &mut *guard;
            let (result, grew) = match shard.table.find_entry(hash, |e| e.key == *key) {
                Ok(mut occupied) => {
                    let entry = occupied.get_mut();
                    let before = self.weight_of(&entry.value);
                    let result = change(&mut entry.value);
                    let after = self.weight_of(&entry.value);
                    shard.weight = shard.weight - before + after;
                    if entry.value.is_some() {
                        (result, after > before)
                    } else {
                        occupied.remove();
                        (result, false)
                    }
                }
                Err(_) => {
                    let mut value = None;
                    let result = change(&mut value);
                    let kept = value.is_some();
                    if let Some(value) = value {
                        shard.weight += self.hooks.weight(&value);
                        let entry = Entry {
                            key: key.clone(),
                            value: Some(value),
                            referenced: AtomicBool::new(false),
                        };
                        shard
                            .table
                            .insert_unique(hash, entry, |e| self.hasher.hash_one(&e.key));
                    }
                    (result, kept)
                }
            };
            if grew && shard.weight > self.shard_capacity {
                let written = shard.table.find_bucket_index(hash, |e| e.key == *key);
                self.evict(shard, written, &mut evicted);
            }
            result
        };
        for (key, value) in evicted {
            self.hooks.on_evict(key, value);
        }
        result
    }

    fn weight_of(&self, value: &Option<B>) -> u64 {
        value.as_ref().map_or(0, |value| self.hooks.weight(value))
    }

    /// Sweeps the CLOCK hand until `shard` is within its bound, sparing bucket `spared`.
    fn evict(&self, shard: &mut Shard<U, B>, spared: Option<usize>, out: &mut Vec<(U, B)>) {
        let buckets = shard.table.num_buckets();
        let mut left = buckets.saturating_mul(2);
        while shard.weight > self.shard_capacity && left > 0 {
            left -= 1;
            let at = if shard.hand < buckets { shard.hand } else { 0 };
            shard.hand = at + 1;
            if Some(at) == spared {
                continue;
            }
            let Some(entry) = shard.table.get_bucket_mut(at) else {
                continue;
            };
            let pinned = entry
                .value
                .as_ref()
                .is_some_and(|v| self.hooks.is_pinned(v));
            if std::mem::take(entry.referenced.get_mut()) || pinned {
                continue;
            }
            if let Ok(occupied) = shard.table.get_bucket_entry(at) {
                let (entry, _) = occupied.remove();
                shard.weight -= self.weight_of(&entry.value);
                if let Some(value) = entry.value {
                    out.push((entry.key, value));
                }
            }
        }
    }

    /// Removes the entry under `key`.
    pub(crate) fn remove<Q>(&self, key: &Q) -> Option<(U, B)>
    where
        U: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.remove_if(key, |_| true)
    }

    /// Removes the entry under `key` if `remove` says so.
    pub(crate) fn remove_if<Q>(&self, key: &Q, remove: impl FnOnce(&B) -> bool) -> Option<(U, B)>
    where
        U: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (hash, shard) = self.locate(key);
        let mut shard = shard.write();
        let occupied = shard
            .table
            .find_entry(hash, |e| e.key.borrow() == key)
            .ok()?;
        if !occupied.get().value.as_ref().is_some_and(remove) {
            return None;
        }
        let (entry, _) = occupied.remove();
        shard.weight -= self.weight_of(&entry.value);
        entry.value.map(|value| (entry.key, value))
    }

    /// Calls `visit` with every entry, one shard read-locked at a time.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(&U, &B)) {
        for shard in self.shards.iter() {
            let shard = shard.0.read();
            for entry in shard.table.iter() {
                if let Some(value) = &entry.value {
                    visit(&entry.key, value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Values are `(weight, pinned)`; evictions are recorded.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<u32>>);

    impl Hooks<u32, (u64, bool)> for Recorded {
        fn weight(&self, value: &(u64, bool)) -> u64 {
            value.0
        }
        fn is_pinned(&self, value: &(u64, bool)) -> bool {
            value.1
        }
        fn on_evict(&self, key: u32, _: (u64, bool)) {
            self.0.lock().unwrap().push(key);
        }
    }

    fn put(map: &Map<u32, (u64, bool), Recorded>, key: u32, value: (u64, bool)) {
        map.update(&key, |slot| *slot = Some(value));
    }

    fn one_shard(capacity: u64) -> Map<u32, (u64, bool), Recorded> {
        // Few estimated items: one shard, so the bound is exact.
        let map = Map::new(1, capacity, Recorded::default());
        assert_eq!(map.shards.len(), 1);
        map
    }

    #[test]
    fn entries_read_since_the_last_sweep_outlive_those_never_read() {
        let map = one_shard(8);
        for key in 0..8 {
            put(&map, key, (1, false));
        }
        for key in 0..4 {
            assert_eq!(map.read(&key, |v| Some(v.0)), Some(1));
        }
        for key in 100..104 {
            put(&map, key, (1, false));
        }
        let evicted = map.hooks.0.lock().unwrap().clone();
        assert_eq!(evicted.len(), 4, "{evicted:?}");
        assert!(
            evicted.iter().all(|key| !(0..4).contains(key)),
            "only entries never read made room: {evicted:?}"
        );
        assert_eq!(map.weight(), 8);
        for key in 0..4 {
            assert!(map.read(&key, |_| Some(())).is_some(), "{key} was kept");
        }
    }

    #[test]
    fn a_value_that_grows_in_place_is_bounded_and_never_its_own_victim() {
        let map = one_shard(10);
        for key in 0..5 {
            put(&map, key, (2, false));
        }
        put(&map, 0, (9, false));
        assert!(map.weight() <= 10, "weight {}", map.weight());
        assert_eq!(
            map.read(&0, |v| Some(v.0)),
            Some(9),
            "the written entry stays"
        );
        assert_eq!(map.hooks.0.lock().unwrap().len(), 4);
    }

    #[test]
    fn pinned_entries_are_passed_over_and_an_all_pinned_shard_waits() {
        let map = one_shard(3);
        put(&map, 1, (1, true));
        put(&map, 2, (1, false));
        put(&map, 3, (1, true));
        put(&map, 4, (1, false));
        assert_eq!(*map.hooks.0.lock().unwrap(), [2]);
        map.update(&4, |slot| *slot = Some((1, true)));
        put(&map, 5, (1, true));
        assert_eq!(
            map.weight(),
            4,
            "nothing unpinned to evict: over the bound until a write"
        );
        map.update(&1, |slot| *slot = Some((1, false)));
        put(&map, 3, (1, true));
        assert_eq!(
            map.weight(),
            4,
            "writes that added no weight evicted nothing"
        );
        put(&map, 6, (1, true));
        assert!(
            map.read(&1, |_| Some(())).is_none(),
            "unpinned, then evicted"
        );
    }

    #[test]
    fn update_removes_and_remove_if_asks() {
        let map = one_shard(100);
        put(&map, 1, (5, false));
        let taken = map.update(&1, Option::take);
        assert_eq!(taken, Some((5, false)));
        assert_eq!(map.weight(), 0);
        put(&map, 2, (5, false));
        assert!(map.remove_if(&2, |v| v.0 == 6).is_none());
        assert_eq!(map.remove_if(&2, |v| v.0 == 5), Some((2, (5, false))));
        assert!(map.remove(&2).is_none());
        let mut seen = 0;
        map.for_each(|_, _| seen += 1);
        assert_eq!(seen, 0);
    }
}
