//! The one store behind every front: the programmatic [`IntegrationCache`](crate::IntegrationCache)
//! and the HTTP [`IntegrationCacheLayer`](crate::IntegrationCacheLayer).
//!
//! # Shape
//!
//! A sharded [map](map) from user to a [`Bucket`] of that user's entries (sub-keyed: one per
//! route for the HTTP layer, a single one for the programmatic API), held by value with one entry
//! inline. The map was quick_cache until a criterion bench showed its shape cost more than the
//! rest of a hit (`BENCHMARKS.md`, "Store"); it is now a hand-written `hashbrown` table per shard
//! with CLOCK eviction weighted by bytes or entries. What the store adds (TTL, per-user grouping,
//! invalidation that races correctly with in-flight fetches) is the thin layer written here.
//!
//! - `get`: one read-locked lookup that reads the user's bucket in place, a scan of its entries,
//!   and an expiry check against the store's [`Clock`] (the CPU's counter, read without stalling
//!   the lookups around it; tokio's clock when that is paused, so `advance` in tests moves it),
//!   with times kept as 8-byte [`Tick`]s; only the value found is cloned.
//! - `invalidate(user)`: removes the bucket, dropping all of that user's entries at once.
//! - `clear`: raises the generation below which every bucket is dead: one store, whatever the
//!   size. Reads and writes treat a dead bucket as absent (and remove it when they meet it), and
//!   a [sweep](clearing) off the caller's thread reclaims the rest. Swapping in a new map would
//!   be O(1) too, but every lookup would then pay an extra pointer load to find the map.
//! - Expiry: entries are never served past `fresh_until`; the [reaper](reaper) reclaims them
//!   (after an optional stale window) from a timer wheel, one bucket at a time.
//!
//! # Read-your-writes
//!
//! A miss calls [`Store::begin`] before it fetches and passes the [`WriteToken`] to
//! [`Store::insert`]. The token is the generation of the user's bucket; invalidation removes the
//! bucket (and `set` gives it a new generation), so a fetch that started before either can never
//! store what it fetched. While a token is held the bucket is pinned: neither evicted nor
//! reclaimed, so a slow fetch still stores.

mod bucket;
mod clearing;
mod clock;
pub(crate) mod counters;
mod map;
mod reaper;

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use self::bucket::{Bucket, Delta, Plan, Slot};
use self::clearing::{off_thread, Cleared, Fence, Sweeps};
use self::clock::{Clock, Tick};
use self::counters::{Counters, Event, Gauge};
use self::map::Hooks;
use self::reaper::{Reap, Reaper};

/// How the store is bounded and how long it keeps things.
#[derive(Clone)]
pub(crate) struct StoreConfig<V> {
    /// At most this many entries (sub-keyed values) in all.
    pub(crate) max_entries: Option<u64>,
    /// At most this many bytes, as the weigher counts them.
    pub(crate) max_bytes: Option<u64>,
    /// At most this many entries for one user; the one that leaves soonest makes room.
    pub(crate) max_entries_per_user: usize,
    /// How long an entry is kept after it stops being fresh, as a stale fallback.
    pub(crate) stale_for: Duration,
    /// How long an empty bucket (a miss in progress) is kept.
    pub(crate) idle_for: Duration,
    /// The size in bytes of a value, for `max_bytes`.
    pub(crate) weigher: Arc<dyn Fn(&V) -> u64 + Send + Sync>,
}

impl<V> StoreConfig<V> {
    fn units(&self) -> Units {
        match (self.max_entries, self.max_bytes) {
            (Some(entries), None) => Units::Entries { capacity: entries },
            (entries, Some(bytes)) => Units::Bytes {
                capacity: bytes,
                // With both bounds, every entry weighs at least its share of the byte budget,
                // so neither bound can be exceeded.
                floor: entries.map_or(1, |e| bytes.div_ceil(e.max(1))),
            },
            (None, None) => Units::Entries {
                capacity: DEFAULT_MAX_ENTRIES,
            },
        }
    }
}

/// The entry bound when none is configured.
pub(crate) const DEFAULT_MAX_ENTRIES: u64 = 100_000;

#[derive(Debug, Clone, Copy)]
enum Units {
    Entries { capacity: u64 },
    Bytes { capacity: u64, floor: u64 },
}

impl Units {
    fn capacity(self) -> u64 {
        match self {
            Units::Entries { capacity } | Units::Bytes { capacity, .. } => capacity,
        }
    }

    fn weight(self, bytes: u64) -> u64 {
        match self {
            Units::Entries { .. } => 1,
            Units::Bytes { floor, .. } => bytes.max(floor),
        }
    }

    fn estimated_items(self, max_entries: Option<u64>) -> usize {
        let items = match self {
            Units::Entries { capacity } => capacity,
            Units::Bytes { capacity, floor } => max_entries.unwrap_or(capacity / floor.max(1024)),
        };
        items.clamp(16, 1 << 24) as usize
    }
}

/// A value found in the store, with its clock.
#[derive(Debug, Clone)]
pub(crate) struct Found<V> {
    pub(crate) value: V,
    stored_at: Tick,
    now: Tick,
}

impl<V> Found<V> {
    /// How long the value has been in the store (to within the clock's tick). Worked out only
    /// when asked: the programmatic `get` never asks, and a hit is counted in instructions.
    #[inline]
    pub(crate) fn resident(&self) -> Duration {
        self.now.since(self.stored_at)
    }
}

/// Held by a fetch from [`Store::begin`] until it stores its result (or gives up): names the
/// user's generation when the fetch began, and keeps the user's bucket from being evicted or
/// reclaimed meanwhile, so the result can still be stored.
#[derive(Debug)]
pub(crate) struct WriteToken {
    generation: u64,
    in_flight: Option<Arc<AtomicUsize>>,
}

impl WriteToken {
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }
}

impl Drop for WriteToken {
    fn drop(&mut self) {
        if let Some(in_flight) = &self.in_flight {
            in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Why a write did not store anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The user was invalidated (or `set`, or everything cleared) since the fetch began.
    Outdated,
    /// The user's entries would weigh more than the store admits for one user.
    TooHeavy,
}

/// Counts of resident entries by freshness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Census {
    pub(crate) fresh: usize,
    pub(crate) stale: usize,
}

type Map<U, K, V> = map::Map<U, Bucket<K, V>, Lifecycles>;

/// Weighs buckets, keeps those with fetches in flight, and keeps the counts right on eviction.
struct Lifecycles {
    counters: Arc<Counters>,
    entries: Arc<Gauge>,
    cleared: Arc<Cleared>,
}

impl<U, K, V> Hooks<U, Bucket<K, V>> for Lifecycles {
    fn weight(&self, bucket: &Bucket<K, V>) -> u64 {
        bucket.weight()
    }

    fn is_pinned(&self, bucket: &Bucket<K, V>) -> bool {
        bucket.has_fetches_in_flight()
    }

    // The map evicts only in a write, which the store makes under its fence, so the liveness
    // seen here holds until the count is changed.
    fn on_evict(&self, _user: U, bucket: Bucket<K, V>) {
        if self.cleared.is_live(bucket.generation) {
            self.entries.sub(bucket.slots.len());
            self.counters
                .add(Event::Eviction, bucket.slots.len() as u64);
        }
    }
}

struct Shared<U, K, V> {
    map: Map<U, K, V>,
    /// Entries resident in live (not cleared) buckets.
    entries: Arc<Gauge>,
    cleared: Arc<Cleared>,
    fence: Fence,
    sweeps: Sweeps,
    clock: Clock,
    config: StoreConfig<V>,
    units: Units,
    next_generation: AtomicU64,
    counters: Arc<Counters>,
    reaper: Reaper<U>,
}

/// The per-user TTL store. Cheap to clone: clones share one map.
pub(crate) struct Store<U, K, V> {
    shared: Arc<Shared<U, K, V>>,
}

impl<U, K, V> Clone for Store<U, K, V> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

/// The longest time anything is kept; longer TTLs are clamped (and a `Tick` never overflows).
pub(crate) const LONGEST_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Whether a write is conditional on the user's generation.
#[derive(Clone, Copy)]
enum Mode {
    /// A fetch's result: only under the generation the fetch began with.
    Fetched(u64),
    /// An explicit `set`: always, and it outdates fetches already in flight.
    Set,
}

impl<U, K, V> Store<U, K, V>
where
    U: Hash + Eq + Clone + Send + Sync + 'static,
    K: Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(config: StoreConfig<V>, counters: Arc<Counters>) -> Self {
        let mut units = config.units();
        let entries = Arc::new(Gauge::default());
        let cleared = Arc::new(Cleared::default());
        let lifecycle = Lifecycles {
            counters: counters.clone(),
            entries: entries.clone(),
            cleared: cleared.clone(),
        };
        let map = Map::new(
            units.estimated_items(config.max_entries) as u64,
            units.capacity(),
            lifecycle,
        );
        // An entry weighing the floor must be admitted: with one entry allowed (or few, over
        // many shards), a full share of the bytes would be more than one shard takes.
        if let Units::Bytes { floor, .. } = &mut units {
            *floor = (*floor).min(map.shard_capacity());
        }
        Self {
            shared: Arc::new(Shared {
                map,
                entries,
                cleared,
                fence: Fence::default(),
                sweeps: Sweeps::default(),
                clock: Clock::new(),
                config,
                units,
                next_generation: AtomicU64::new(1),
                counters,
                reaper: Reaper::default(),
            }),
        }
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// The fresh entry under `user`/`key`, if any.
    #[inline]
    pub(crate) fn get<Q, KQ>(&self, user: &Q, key: &KQ) -> Option<Found<V>>
    where
        U: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        K: Borrow<KQ>,
        KQ: Eq + ?Sized,
    {
        let clock = &self.shared.clock;
        self.find(user, key, |slot| {
            let now = clock.now_against(slot.fresh_until);
            (now < slot.fresh_until).then(|| found(slot, now))
        })
    }

    /// The entry under `user`/`key` even if it is no longer fresh, as long as it is still kept.
    pub(crate) fn get_stale<Q, KQ>(&self, user: &Q, key: &KQ) -> Option<Found<V>>
    where
        U: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        K: Borrow<KQ>,
        KQ: Eq + ?Sized,
    {
        let clock = &self.shared.clock;
        self.find(user, key, |slot| {
            let now = clock.now_against(slot.keep_until);
            (now < slot.keep_until).then(|| found(slot, now))
        })
    }

    /// What `pick` makes of the entry under `user`/`key`, read in place under the shard's read
    /// lock, unless the user's bucket was cleared (then the bucket is removed, as nothing
    /// counts it).
    #[inline]
    fn find<Q, KQ, R>(
        &self,
        user: &Q,
        key: &KQ,
        pick: impl FnOnce(&Slot<K, V>) -> Option<R>,
    ) -> Option<R>
    where
        U: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        K: Borrow<KQ>,
        KQ: Eq + ?Sized,
    {
        let shared = &*self.shared;
        // A flag beside the result rather than a result nested in options: the nesting gave the
        // value a layout that was copied through the stack in misaligned pieces, and reading
        // them back waited on the stores (sampled, a sixth of this lookup's time).
        let mut cleared = false;
        let picked = shared.map.read(user, |bucket| {
            if shared.cleared.is_live(bucket.generation) {
                bucket.slots.find(key).and_then(pick)
            } else {
                cleared = true;
                None
            }
        });
        if cleared {
            shared
                .map
                .remove_if(user, |bucket| !shared.cleared.is_live(bucket.generation));
        }
        picked
    }

    /// Marks the start of a fetch for `user`; pass the token to [`Store::insert`].
    pub(crate) fn begin(&self, user: &U) -> WriteToken {
        let shared = &*self.shared;
        let _fence = shared.fence.hold();
        // Outside the shard's lock: starting the reaper may switch the clock to tokio's.
        let epoch = self.reaper_epoch();
        let (token, visit) = shared.map.update(user, |slot| {
            if let Some(bucket) = slot.as_mut() {
                if shared.cleared.is_live(bucket.generation) {
                    let token = WriteToken {
                        generation: bucket.generation,
                        in_flight: Some(bucket.enter_flight()),
                    };
                    return (token, None);
                }
            }
            // No bucket, or a cleared one, counted nowhere, which this one replaces.
            let generation = self.next_generation();
            let idle_until = far(shared.clock.now(), shared.config.idle_for);
            let mut bucket = Bucket::empty(generation, idle_until);
            let token = WriteToken {
                generation,
                in_flight: Some(bucket.enter_flight()),
            };
            let visit = plan(&mut bucket, epoch);
            *slot = Some(bucket);
            (token, visit)
        });
        if let Some(at) = visit {
            let deadline = shared.clock.deadline(at);
            shared.reaper.schedule(user.clone(), at, deadline);
        }
        token
    }

    /// Stores a fetch's `value` unless `user` was invalidated since `token` was taken.
    pub(crate) fn insert(
        &self,
        mut token: WriteToken,
        user: &U,
        key: K,
        value: V,
        ttl: Duration,
    ) -> Result<(), Refused> {
        let mode = Mode::Fetched(token.generation);
        let result = self.write(user, (key, value, ttl), mode, &mut token.in_flight);
        if result.is_err() {
            self.shared.counters.incr(Event::StoreRejected);
        }
        result
    }

    /// Stores `value` whatever is in flight (the programmatic `set`); fetches that began
    /// before will not overwrite it.
    pub(crate) fn set(&self, user: &U, key: K, value: V, ttl: Duration) -> Result<(), Refused> {
        self.write(user, (key, value, ttl), Mode::Set, &mut None)
    }

    /// Writes `value`; a fetch's write also ends its flight (`in_flight`, taken once stored).
    fn write(
        &self,
        user: &U,
        (key, value, ttl): (K, V, Duration),
        mode: Mode,
        in_flight: &mut Option<Arc<AtomicUsize>>,
    ) -> Result<(), Refused> {
        let shared = &*self.shared;
        let _fence = shared.fence.hold();
        if let Mode::Fetched(generation) = mode {
            if !shared.cleared.is_live(generation) {
                return Err(Refused::Outdated);
            }
        }
        // First, as starting the reaper in a new runtime may switch the clock to tokio's.
        let epoch = self.reaper_epoch();
        let slot = self.slot(key, value, ttl);
        let max_slots = shared.config.max_entries_per_user;
        let admitted = shared.map.shard_capacity();
        let change = shared.map.update(user, |entry| {
            if entry
                .as_ref()
                .is_some_and(|bucket| !shared.cleared.is_live(bucket.generation))
            {
                // A cleared bucket, counted nowhere: as if there were none.
                *entry = None;
            }
            let (mut next, delta) = match entry.as_ref() {
                Some(bucket) => {
                    if let Mode::Fetched(generation) = mode {
                        if bucket.generation != generation {
                            return Err(Refused::Outdated);
                        }
                    }
                    bucket.with_slot(slot, max_slots)
                }
                // A bucket with a fetch in flight is never evicted or reclaimed, so a fetch
                // that finds none was invalidated.
                None if matches!(mode, Mode::Fetched(_)) => return Err(Refused::Outdated),
                None => Bucket::empty(0, slot.stored_at).with_slot(slot, max_slots),
            };
            if next.weight() > admitted {
                return Err(Refused::TooHeavy);
            }
            if let Mode::Set = mode {
                next.generation = self.next_generation();
                next.in_flight = None;
                // The plan stays: the visit already queued is still this bucket's, so a user
                // written over and over queues no more visits.
            }
            if let Some(ended) = in_flight.take() {
                ended.fetch_sub(1, Ordering::AcqRel);
            }
            // Once no fetch is in flight, stop carrying the counter.
            if next
                .in_flight
                .as_ref()
                .is_some_and(|n| n.load(Ordering::Acquire) == 0)
            {
                next.in_flight = None;
            }
            let change = Change {
                delta,
                visit: plan(&mut next, epoch),
            };
            *entry = Some(next);
            Ok(change)
        })?;
        shared.entries.add(change.delta.added);
        shared.entries.sub(change.delta.removed);
        shared.counters.incr(Event::Stored);
        if let Some(at) = change.visit {
            let deadline = shared.clock.deadline(at);
            shared.reaper.schedule(user.clone(), at, deadline);
        }
        Ok(())
    }

    /// Drops every entry of `user`. Returns how many there were.
    pub(crate) fn invalidate<Q>(&self, user: &Q) -> usize
    where
        U: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shared = &*self.shared;
        let _fence = shared.fence.hold();
        let Some((_, bucket)) = shared.map.remove(user) else {
            return 0;
        };
        if !shared.cleared.is_live(bucket.generation) {
            return 0;
        }
        let removed = bucket.slots.len();
        shared.entries.sub(removed);
        self.shared
            .counters
            .add(Event::Invalidation, removed as u64);
        removed
    }

    /// Drops every entry of every user, in O(1): every bucket that exists now is marked
    /// cleared, and its memory comes back as it is met (see [`clearing`]).
    pub(crate) fn clear(&self) {
        let shared = &*self.shared;
        let closed = shared.fence.close();
        let next = shared.next_generation.load(Ordering::Acquire);
        shared.cleared.drop_below(next, &closed);
        let dropped = shared.entries.get();
        shared.entries.sub(dropped);
        drop(closed);
        shared.counters.add(Event::Invalidation, dropped as u64);
        if shared.sweeps.begin() {
            let store = Arc::downgrade(&self.shared);
            if !off_thread(move || sweep(&store)) {
                // Cleared buckets still go as they are met; the next `clear` tries again.
                shared.sweeps.finish(&shared.cleared, next);
            }
        }
    }

    /// Entries resident, fresh or stale.
    pub(crate) fn len(&self) -> usize {
        self.shared.entries.get()
    }

    /// Fresh and stale entries counted one by one: O(entries), one shard read-locked at a time.
    pub(crate) fn census(&self) -> Census {
        let shared = &*self.shared;
        let now = shared.clock.now();
        let mut census = Census::default();
        shared.map.for_each(|_, bucket| {
            if !shared.cleared.is_live(bucket.generation) {
                return;
            }
            for slot in bucket.slots.as_slice() {
                if now < slot.fresh_until {
                    census.fresh += 1;
                } else if now < slot.keep_until {
                    census.stale += 1;
                }
            }
        });
        census
    }

    /// The weight the map holds and its capacity (bytes or entries).
    pub(crate) fn weight(&self) -> (u64, u64) {
        (self.shared.map.weight(), self.shared.map.capacity())
    }

    /// The entry's remaining freshness.
    pub(crate) fn time_to_expiry<Q, KQ>(&self, user: &Q, key: &KQ) -> Option<Duration>
    where
        U: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        K: Borrow<KQ>,
        KQ: Eq + ?Sized,
    {
        let clock = &self.shared.clock;
        self.find(user, key, |slot| {
            let now = clock.now();
            (now < slot.fresh_until).then(|| slot.fresh_until.since(now))
        })
    }

    fn next_generation(&self) -> u64 {
        self.shared.next_generation.fetch_add(1, Ordering::Relaxed)
    }

    fn reaper_epoch(&self) -> Option<u32> {
        let owner: Arc<dyn Reap<U>> = self.shared.clone();
        self.shared.reaper.running(&owner)
    }

    fn slot(&self, key: K, value: V, ttl: Duration) -> Slot<K, V> {
        let now = self.shared.clock.now();
        let fresh_until = far(now, ttl);
        let weight = self
            .shared
            .units
            .weight((self.shared.config.weigher)(&value));
        Slot {
            key,
            value,
            stored_at: now,
            fresh_until,
            keep_until: far(fresh_until, self.shared.config.stale_for),
            weight,
        }
    }
}

/// Checks a configured duration: at most [`LONGEST_TTL`], and not zero unless `zero_means` says
/// what zero does.
pub(crate) fn check_duration(
    setting: &'static str,
    duration: Duration,
    zero_means: Option<&str>,
) -> Result<(), crate::ConfigError> {
    if duration > LONGEST_TTL || (duration.is_zero() && zero_means.is_none()) {
        let range = match zero_means {
            Some(zero) => format!("use at most 100 years ({zero})"),
            None => "use a duration between 1 ns and 100 years".to_owned(),
        };
        return Err(crate::ConfigError::new(
            setting,
            format!("{duration:?} is out of range; {range}"),
        ));
    }
    Ok(())
}

/// Checks a configured bound: unset, or at least 1.
pub(crate) fn check_bound(
    setting: &'static str,
    bound: Option<u64>,
) -> Result<(), crate::ConfigError> {
    if bound == Some(0) {
        return Err(crate::ConfigError::new(
            setting,
            "must be at least 1, or left unset",
        ));
    }
    // The map sums weights in a u64; far below that, no bound is a real limit anyway.
    if bound.is_some_and(|bound| bound > LARGEST_BOUND) {
        return Err(crate::ConfigError::new(
            setting,
            "must be at most 2^50 (1 PiB, or that many entries), or left unset",
        ));
    }
    Ok(())
}

/// The largest `max_entries` or `max_bytes` accepted.
const LARGEST_BOUND: u64 = 1 << 50;

/// `from + by`, with `by` clamped to [`LONGEST_TTL`].
fn far(from: Tick, by: Duration) -> Tick {
    from.after(by.min(LONGEST_TTL))
}

/// Plans the reaper's visit for `bucket`'s next departure, unless a visit by the running reaper
/// already comes early enough. Returns the visit to queue. Without a running reaper nothing is
/// planned, so the first write inside a runtime plans it.
fn plan<K: Clone + Eq, V: Clone>(bucket: &mut Bucket<K, V>, epoch: Option<u32>) -> Option<Tick> {
    let Some(epoch) = epoch else {
        bucket.plan = Plan::NONE;
        return None;
    };
    let due = bucket.next_departure();
    let planned = bucket.plan;
    if planned.epoch == epoch && planned.at <= due {
        return None;
    }
    bucket.plan = Plan { at: due, epoch };
    Some(due)
}

struct Change {
    delta: Delta,
    visit: Option<Tick>,
}

/// Removes cleared buckets until none is left (see [`clearing`]).
fn sweep<U, K, V>(store: &Weak<Shared<U, K, V>>)
where
    U: Hash + Eq + Clone,
    K: Clone,
    V: Clone,
{
    loop {
        let Some(shared) = store.upgrade() else {
            return;
        };
        let below = shared.cleared.below();
        // Collected first: removing takes the shard's write lock, which the walk holds for reading.
        let mut cleared: Vec<U> = Vec::new();
        shared.map.for_each(|user, bucket| {
            if bucket.generation < below {
                cleared.push(user.clone());
            }
        });
        for user in &cleared {
            shared
                .map
                .remove_if(user, |bucket| bucket.generation < below);
        }
        if !shared.sweeps.finish(&shared.cleared, below) {
            return;
        }
    }
}

#[inline]
fn found<K, V: Clone>(slot: &Slot<K, V>, now: Tick) -> Found<V> {
    Found {
        value: slot.value.clone(),
        stored_at: slot.stored_at,
        now,
    }
}

enum Visit {
    Obsolete,
    Removed(usize),
    Replanned(Delta, Tick),
}

impl<U, K, V> Reap<U> for Shared<U, K, V>
where
    U: Hash + Eq + Clone + Send + Sync + 'static,
    K: Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn entered_runtime(&self) {
        self.clock.follow_runtime();
    }

    fn reap(&self, user: &U, planned: Tick) -> Option<(Tick, Instant)> {
        let _fence = self.fence.hold();
        let now = self.clock.now();
        let epoch = self.reaper.epoch();
        let visit = self.map.update(user, |entry| {
            let Some(bucket) = entry.as_mut() else {
                return Visit::Obsolete;
            };
            let expected = bucket.plan.is_some() && bucket.plan.at == planned;
            if !expected {
                return Visit::Obsolete;
            }
            if bucket.is_departed(now) || !self.cleared.is_live(bucket.generation) {
                let live = self.cleared.is_live(bucket.generation);
                let removed = bucket.slots.len();
                *entry = None;
                return if live {
                    Visit::Removed(removed)
                } else {
                    Visit::Obsolete
                };
            }
            let (mut next, delta) = match bucket.without_departed(now) {
                Some(pruned) => pruned,
                None => (bucket.clone(), Delta::default()),
            };
            let mut due = next.next_departure();
            if due <= now {
                // Nothing left but a fetch in flight: keep the bucket, look again later.
                due = far(now, self.config.idle_for.max(Duration::from_secs(1)));
                next = next.emptied(due);
            }
            next.plan = epoch.map_or(Plan::NONE, |epoch| Plan { at: due, epoch });
            *bucket = next;
            Visit::Replanned(delta, due)
        });
        match visit {
            Visit::Obsolete => None,
            Visit::Removed(n) => {
                self.entries.sub(n);
                self.counters.add(Event::Expiration, n as u64);
                None
            }
            Visit::Replanned(delta, due) => {
                self.entries.sub(delta.removed);
                self.counters.add(Event::Expiration, delta.removed as u64);
                Some((due, self.clock.deadline(due)))
            }
        }
    }
}
