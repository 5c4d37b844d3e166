//! Store benchmarks (issue 2): the public `IntegrationCache<u64, u64>` against the structures its
//! store was chosen against — raw `quick_cache::sync::Cache`, `moka::sync::Cache` and a
//! hand-written sharded `RwLock<HashMap>` — with the same keys and the same access pattern.
//!
//! Every structure is filled once per group, on first use and outside any timing, with `N`
//! users, `N` = 1 K or 1 M, in ascending id order, and sized `N + N/4` so nothing is evicted.
//! Every operation walks precomputed shuffles of the `N` keys (see [`Keys`]), so at 1 M entries
//! consecutive operations touch unrelated memory and neither the CPU caches nor the prefetcher
//! can hide the lookup.
//!
//! Figures are per operation. The routines are timed with `iter_custom` around a whole loop (or
//! around batches of [`BATCH`] when something has to be restored outside the timing), so the
//! harness's own cost is amortised over thousands of calls.
//!
//! `get_chained_1t` makes each lookup's key depend on the previous lookup's value, so it gives
//! the latency of one lookup where `get_1t` gives the throughput of a loop of them (see
//! [`bench_get`]).
//!
//! The `*_2t` functions run the same operation on two threads at once (each thread walks its own
//! half of the users); criterion's figure is wall time / total operations, i.e. the inverse of the
//! throughput of both threads together. Each thread also times itself; the median of those
//! per-thread latencies is printed at the end of the run (`per-thread latency` lines).
//!
//! Run with `cargo bench --bench store`; figures and their reading are in `BENCHMARKS.md`.

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::hint::black_box;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use integration_cache::{IntegrationCache, RetryConfig};
use parking_lot::RwLock;
use quick_cache::DefaultHashBuilder;

/// Entry counts benchmarked, with their labels.
const SIZES: [(usize, &str); 2] = [(1_000, "1K"), (1_000_000, "1M")];

/// Operations per timed batch when the batch must be undone outside the timing.
const BATCH: usize = 1_000;

/// Threads in the `*_2t` functions.
const THREADS: usize = 2;

/// Shards of the hand-written `RwLock<HashMap>`.
const SHARDS: usize = 64;

/// Room above `n` so no structure evicts.
fn capacity(n: usize) -> usize {
    n + n / 4
}

/// The key walks over users `0..n`.
///
/// The structures are filled in ascending id order, and every walk is two independent shuffles
/// of the ids back to back. So the order of the walk is unrelated to the order the entries were
/// allocated in, and a write benchmark, which re-allocates entries in the order of its walk,
/// does not lay memory out in the order of the next pass (which uses the other shuffle). Without
/// this, allocation order would match access order and the hardware prefetcher would hide the
/// cache misses a random read pays at 1 M entries.
struct Keys {
    /// For one thread: two shuffles of all the ids.
    all: Vec<u64>,
    /// For thread `t` of [`THREADS`]: two shuffles of the ids `k` with `k % THREADS == t`.
    per_thread: Vec<Vec<u64>>,
}

impl Keys {
    fn new(n: usize) -> Self {
        let mut rng = fastrand::Rng::with_seed(0x5eed_2026);
        let mut twice = |ids: Vec<u64>| {
            let (mut a, mut b) = (ids.clone(), ids);
            rng.shuffle(&mut a);
            rng.shuffle(&mut b);
            a.extend(b);
            a
        };
        let all = twice((0..n as u64).collect());
        let per_thread = (0..THREADS as u64)
            .map(|t| twice((0..n as u64).filter(|k| k % THREADS as u64 == t).collect()))
            .collect();
        Self { all, per_thread }
    }

    /// The ids in the order the structures are filled.
    fn fill_order(&self) -> impl Iterator<Item = u64> {
        0..(self.all.len() / 2) as u64
    }
}

/// Walks a key slice made of two shuffles cyclically.
struct Walk<'a> {
    keys: &'a [u64],
    at: usize,
}

impl<'a> Walk<'a> {
    fn new(keys: &'a [u64], at: usize) -> Self {
        Self {
            keys,
            at: at % keys.len(),
        }
    }

    #[inline(always)]
    fn next_key(&mut self) -> u64 {
        let key = self.keys[self.at];
        self.at += 1;
        if self.at == self.keys.len() {
            self.at = 0;
        }
        key
    }

    /// How many distinct keys can be taken before the walk enters the other shuffle.
    fn distinct_left(&self) -> usize {
        let half = self.keys.len() / 2;
        half - self.at % half
    }
}

// ---------------------------------------------------------------------------------------------
// Per-thread latencies of the two-thread runs, printed at the end.

static PER_THREAD: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

/// Records one thread's own ns/op for one sample (samples under 1000 ops are warm-up noise).
fn record_per_thread(id: &str, busy: Duration, ops: u64) {
    if ops >= 1_000 {
        let ns = busy.as_nanos() as f64 / ops as f64;
        let mut all = PER_THREAD.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(id.to_string()).or_default().push(ns);
    }
}

fn print_per_thread(_: &mut Criterion) {
    let all = PER_THREAD.lock().unwrap_or_else(|e| e.into_inner());
    println!("\nper-thread latency of the 2-thread runs (median over samples of each thread's own ns/op):");
    for (id, samples) in all.iter() {
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        println!(
            "per-thread latency {id}: {median:.1} ns/op ({} samples)",
            sorted.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Timing loops.

/// `op` on `iters` keys, one thread, timed as a whole.
fn single(iters: u64, walk: &mut Walk<'_>, mut op: impl FnMut(u64)) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        op(walk.next_key());
    }
    start.elapsed()
}

/// `op` on `iters` keys, one thread, in batches of distinct keys, each followed (untimed) by
/// `undo` on the same keys.
fn single_batched(
    iters: u64,
    walk: &mut Walk<'_>,
    mut op: impl FnMut(u64),
    mut undo: impl FnMut(u64),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(BATCH.min(walk.distinct_left()) as u64);
        let from = walk.at;
        let start = Instant::now();
        for _ in 0..n {
            op(walk.next_key());
        }
        total += start.elapsed();
        let mut again = Walk::new(walk.keys, from);
        for _ in 0..n {
            undo(again.next_key());
        }
        left -= n;
    }
    total
}

/// Scales the wall time of `THREADS * per_thread` operations to `iters` of them.
fn scaled(wall: Duration, iters: u64, per_thread: u64) -> Duration {
    let done = (THREADS as u64 * per_thread).max(1);
    Duration::from_secs_f64(wall.as_secs_f64() * iters as f64 / done as f64)
}

/// `op` on `iters` keys split over two threads, each on its own share of the keys from its
/// cursor. Returns the wall time from the first thread's start to the last thread's end.
fn threads<F>(id: &str, iters: u64, keys: &Keys, cursors: &mut [usize; THREADS], op: F) -> Duration
where
    F: Fn(u64) + Sync,
{
    let per_thread = iters.div_ceil(THREADS as u64);
    let barrier = Barrier::new(THREADS);
    let spans: Vec<(Instant, Instant, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (op, barrier, at) = (&op, &barrier, cursors[t]);
                s.spawn(move || {
                    let mut walk = Walk::new(&keys.per_thread[t], at);
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..per_thread {
                        op(walk.next_key());
                    }
                    let end = Instant::now();
                    record_per_thread(id, end - start, per_thread);
                    (start, end, walk.at)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    for (t, span) in spans.iter().enumerate() {
        cursors[t] = span.2;
    }
    let first = spans.iter().map(|s| s.0).min().expect("threads");
    let last = spans.iter().map(|s| s.1).max().expect("threads");
    scaled(last - first, iters, per_thread)
}

/// Like [`threads`], in batches of distinct keys, each followed (untimed) by `undo` on the same
/// keys. Both threads run each timed batch together (between two barriers); the wall time is the
/// sum over batches of first start to last end.
fn threads_batched<F, U>(
    id: &str,
    iters: u64,
    keys: &Keys,
    cursors: &mut [usize; THREADS],
    op: F,
    undo: U,
) -> Duration
where
    F: Fn(u64) + Sync,
    U: Fn(u64) + Sync,
{
    let per_thread = iters.div_ceil(THREADS as u64);
    let barrier = Barrier::new(THREADS);
    let runs: Vec<(Vec<(Instant, Instant)>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (op, undo, barrier, at) = (&op, &undo, &barrier, cursors[t]);
                s.spawn(move || {
                    let mut walk = Walk::new(&keys.per_thread[t], at);
                    let mut spans = Vec::new();
                    let mut busy = Duration::ZERO;
                    let mut left = per_thread;
                    while left > 0 {
                        // Both threads' shares are the same size, so they agree on `n` and meet
                        // at every barrier.
                        let n = left.min(BATCH.min(walk.distinct_left()) as u64);
                        let from = walk.at;
                        barrier.wait();
                        let start = Instant::now();
                        for _ in 0..n {
                            op(walk.next_key());
                        }
                        let end = Instant::now();
                        busy += end - start;
                        spans.push((start, end));
                        barrier.wait();
                        let mut again = Walk::new(walk.keys, from);
                        for _ in 0..n {
                            undo(again.next_key());
                        }
                        left -= n;
                    }
                    record_per_thread(id, busy, per_thread);
                    (spans, walk.at)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    let mut wall = Duration::ZERO;
    for b in 0..runs[0].0.len() {
        let first = runs.iter().map(|r| r.0[b].0).min().expect("threads");
        let last = runs.iter().map(|r| r.0[b].1).max().expect("threads");
        wall += last - first;
    }
    for (t, run) in runs.iter().enumerate() {
        cursors[t] = run.1;
    }
    scaled(wall, iters, per_thread)
}

/// `get_or_fetch` hits on `iters` keys inside one current-thread runtime; only the loop inside
/// `block_on` is timed.
fn get_or_fetch_loop(
    cache: &IntegrationCache<u64, u64>,
    iters: u64,
    walk: &mut Walk<'_>,
) -> (Instant, Instant) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let retry = RetryConfig::default();
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let user = walk.next_key();
            let value = cache
                .get_or_fetch(
                    &user,
                    || async { Ok::<u64, std::io::Error>(u64::MAX) },
                    &retry,
                )
                .await;
            black_box(value.is_ok());
        }
        (start, Instant::now())
    })
}

// ---------------------------------------------------------------------------------------------
// The structures compared on `get` hits.

trait GetHit: Sync {
    fn get_hit(&self, key: u64) -> Option<u64>;
}

impl GetHit for IntegrationCache<u64, u64> {
    #[inline]
    fn get_hit(&self, key: u64) -> Option<u64> {
        self.get(&key)
    }
}

impl GetHit for quick_cache::sync::Cache<u64, u64> {
    #[inline]
    fn get_hit(&self, key: u64) -> Option<u64> {
        self.get(&key)
    }
}

impl GetHit for moka::sync::Cache<u64, u64> {
    #[inline]
    fn get_hit(&self, key: u64) -> Option<u64> {
        self.get(&key)
    }
}

/// A hand-written sharded map: 64 `parking_lot::RwLock<HashMap>` shards, the shard picked by the
/// top bits of the key's hash. Same hasher as quick_cache's (`DefaultHashBuilder`, foldhash).
struct ShardedRwLock {
    hasher: DefaultHashBuilder,
    shards: Box<[RwLock<HashMap<u64, u64, DefaultHashBuilder>>]>,
}

impl ShardedRwLock {
    fn new(capacity: usize) -> Self {
        let hasher = DefaultHashBuilder::default();
        let shards = (0..SHARDS)
            .map(|_| {
                RwLock::new(HashMap::with_capacity_and_hasher(
                    capacity / SHARDS,
                    hasher.clone(),
                ))
            })
            .collect();
        Self { hasher, shards }
    }

    #[inline]
    fn shard(&self, key: u64) -> &RwLock<HashMap<u64, u64, DefaultHashBuilder>> {
        let hash = self.hasher.hash_one(key);
        &self.shards[(hash >> (64 - SHARDS.trailing_zeros())) as usize]
    }

    fn insert(&self, key: u64, value: u64) {
        self.shard(key).write().insert(key, value);
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }
}

impl GetHit for ShardedRwLock {
    #[inline]
    fn get_hit(&self, key: u64) -> Option<u64> {
        self.shard(key).read().get(&key).copied()
    }
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
}

/// A structure filled with `n` users, and the keys to walk it.
struct Fixture<M> {
    keys: Keys,
    map: M,
}

/// A [`Fixture`] built on first use: outside any timed region, and only for groups a filtered
/// run (`cargo bench --bench store -- ours_1M`) actually measures.
struct Lazy<'a, M> {
    cell: OnceCell<Fixture<M>>,
    build: Box<dyn Fn() -> Fixture<M> + 'a>,
}

impl<'a, M> Lazy<'a, M> {
    fn new(n: usize, fill: impl Fn(&Keys) -> M + 'a) -> Self {
        Self {
            cell: OnceCell::new(),
            build: Box::new(move || {
                let keys = Keys::new(n);
                let map = fill(&keys);
                Fixture { keys, map }
            }),
        }
    }

    fn get(&self) -> &Fixture<M> {
        self.cell.get_or_init(&self.build)
    }

    /// The fixture, if a benchmark used it.
    fn used(&self) -> Option<&Fixture<M>> {
        self.cell.get()
    }
}

/// Runs `body` on a walk of `keys` from `*at`, and keeps where it stopped for the next sample.
fn resume<R>(keys: &[u64], at: &mut usize, body: impl FnOnce(&mut Walk<'_>) -> R) -> R {
    let mut walk = Walk::new(keys, *at);
    let result = body(&mut walk);
    *at = walk.at;
    result
}

/// `get` hits: single thread (independent lookups, then a dependent chain) and two threads.
///
/// In `get_1t` consecutive lookups are independent, so an out-of-order CPU overlaps the cache
/// misses of several of them: the figure is the inverse of a throughput. In `get_chained_1t`
/// each key depends on the value the previous lookup returned (XOR with an opaque zero), so
/// lookups cannot overlap: the figure is the latency of one lookup. A structure whose hit path
/// serialises execution (e.g. by reading the clock, which is `rdtscp` in the vDSO) shows about
/// the same figure in both.
fn bench_get<M: GetHit>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    fixture: &Lazy<'_, M>,
) {
    let mut at = 0;
    group.bench_function("get_1t", |b| {
        let f = fixture.get();
        b.iter_custom(|iters| {
            resume(&f.keys.all, &mut at, |walk| {
                single(iters, walk, |k| {
                    black_box(f.map.get_hit(k));
                })
            })
        })
    });
    let mut at = 0;
    let zero = black_box(0u64);
    let mut last = 0u64;
    group.bench_function("get_chained_1t", |b| {
        let f = fixture.get();
        b.iter_custom(|iters| {
            resume(&f.keys.all, &mut at, |walk| {
                single(iters, walk, |k| {
                    last = black_box(f.map.get_hit(k ^ (last & zero)).unwrap_or(0));
                })
            })
        })
    });
    let mut cursors = [0; THREADS];
    let id = format!("{name}/get_2t");
    group.bench_function("get_2t", |b| {
        let f = fixture.get();
        b.iter_custom(|iters| {
            threads(&id, iters, &f.keys, &mut cursors, |k| {
                black_box(f.map.get_hit(k));
            })
        })
    });
}

// ---------------------------------------------------------------------------------------------
// Benchmarks.

fn ours(c: &mut Criterion) {
    for (n, label) in SIZES {
        let fixture = Lazy::new(n, |keys| {
            let cache: IntegrationCache<u64, u64> = IntegrationCache::builder()
                .max_entries(capacity(n) as u64)
                .build()
                .expect("valid configuration");
            for k in keys.fill_order() {
                cache.set(k, k).expect("set");
            }
            cache
        });
        let name = format!("ours_{label}");
        let mut group = c.benchmark_group(&name);
        configure(&mut group);

        bench_get(&mut group, &name, &fixture);

        let mut at = 0;
        group.bench_function("set_1t", |b| {
            let f = fixture.get();
            b.iter_custom(|iters| {
                resume(&f.keys.all, &mut at, |walk| {
                    single(iters, walk, |k| {
                        black_box(f.map.set(k, k ^ 1).is_ok());
                    })
                })
            })
        });
        let mut cursors = [0; THREADS];
        let id = format!("{name}/set_2t");
        group.bench_function("set_2t", |b| {
            let f = fixture.get();
            b.iter_custom(|iters| {
                threads(&id, iters, &f.keys, &mut cursors, |k| {
                    black_box(f.map.set(k, k ^ 2).is_ok());
                })
            })
        });

        let mut at = 0;
        group.bench_function("invalidate_1t", |b| {
            let f = fixture.get();
            b.iter_custom(|iters| {
                resume(&f.keys.all, &mut at, |walk| {
                    single_batched(
                        iters,
                        walk,
                        |k| {
                            black_box(f.map.invalidate(&k));
                        },
                        |k| f.map.set(k, k).expect("set"),
                    )
                })
            })
        });
        let mut cursors = [0; THREADS];
        let id = format!("{name}/invalidate_2t");
        group.bench_function("invalidate_2t", |b| {
            let f = fixture.get();
            b.iter_custom(|iters| {
                threads_batched(
                    &id,
                    iters,
                    &f.keys,
                    &mut cursors,
                    |k| {
                        black_box(f.map.invalidate(&k));
                    },
                    |k| f.map.set(k, k).expect("set"),
                )
            })
        });

        let mut at = 0;
        group.bench_function("get_or_fetch_1t", |b| {
            let f = fixture.get();
            b.iter_custom(|iters| {
                resume(&f.keys.all, &mut at, |walk| {
                    let (start, end) = get_or_fetch_loop(&f.map, iters, walk);
                    end - start
                })
            })
        });
        let mut cursors = [0; THREADS];
        let id = format!("{name}/get_or_fetch_2t");
        group.bench_function("get_or_fetch_2t", |b| {
            let f = fixture.get();
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(THREADS as u64);
                let barrier = Barrier::new(THREADS);
                let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
                    let handles: Vec<_> = (0..THREADS)
                        .map(|t| {
                            let (cache, barrier, at, id) = (&f.map, &barrier, cursors[t], &id);
                            let keys = &f.keys.per_thread[t];
                            s.spawn(move || {
                                let mut walk = Walk::new(keys, at);
                                barrier.wait();
                                let (start, end) = get_or_fetch_loop(cache, per_thread, &mut walk);
                                record_per_thread(id, end - start, per_thread);
                                (start, end, walk.at)
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .enumerate()
                        .map(|(t, h)| {
                            let (start, end, at) = h.join().expect("bench thread");
                            cursors[t] = at;
                            (start, end)
                        })
                        .collect()
                });
                let first = spans.iter().map(|s| s.0).min().expect("threads");
                let last = spans.iter().map(|s| s.1).max().expect("threads");
                scaled(last - first, iters, per_thread)
            })
        });
        group.finish();

        // Every timed read was a hit and nothing was evicted: the figures are what they say.
        if let Some(f) = fixture.used() {
            let stats = f.map.stats();
            assert_eq!(stats.misses, 0, "{name}: a read missed");
            assert_eq!(stats.evictions, 0, "{name}: entries were evicted");
            assert_eq!(stats.size, n, "{name}: entries lost");
        }
    }
}

fn raw_quick_cache(c: &mut Criterion) {
    for (n, label) in SIZES {
        let fixture = Lazy::new(n, |keys| {
            let cache = quick_cache::sync::Cache::<u64, u64>::new(capacity(n));
            for k in keys.fill_order() {
                cache.insert(k, k);
            }
            cache
        });
        let name = format!("quick_cache_{label}");
        let mut group = c.benchmark_group(&name);
        configure(&mut group);
        bench_get(&mut group, &name, &fixture);
        group.finish();
        if let Some(f) = fixture.used() {
            assert_eq!(f.map.len(), n, "{name}: entries were evicted");
        }
    }
}

fn moka(c: &mut Criterion) {
    for (n, label) in SIZES {
        let fixture = Lazy::new(n, |keys| {
            let cache = moka::sync::Cache::<u64, u64>::new(capacity(n) as u64);
            for k in keys.fill_order() {
                cache.insert(k, k);
            }
            cache.run_pending_tasks();
            cache
        });
        let name = format!("moka_{label}");
        let mut group = c.benchmark_group(&name);
        configure(&mut group);
        bench_get(&mut group, &name, &fixture);
        group.finish();
        if let Some(f) = fixture.used() {
            f.map.run_pending_tasks();
            assert_eq!(
                f.map.entry_count(),
                n as u64,
                "{name}: entries were evicted"
            );
        }
    }
}

fn rwlock_hashmap(c: &mut Criterion) {
    for (n, label) in SIZES {
        let fixture = Lazy::new(n, |keys| {
            let map = ShardedRwLock::new(capacity(n));
            for k in keys.fill_order() {
                map.insert(k, k);
            }
            map
        });
        let name = format!("rwlock_hashmap_{label}");
        let mut group = c.benchmark_group(&name);
        configure(&mut group);
        bench_get(&mut group, &name, &fixture);
        group.finish();
        if let Some(f) = fixture.used() {
            assert_eq!(f.map.len(), n, "{name}: entries lost");
        }
    }
}

criterion_group!(
    benches,
    ours,
    raw_quick_cache,
    moka,
    rwlock_hashmap,
    print_per_thread
);
criterion_main!(benches);
