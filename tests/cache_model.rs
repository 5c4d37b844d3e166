//! `IntegrationCache` checked against a simple model under random operation sequences, on
//! virtual (paused) tokio time, plus targeted regression tests for review findings.
//!
//! The model is a `HashMap<user, (value, expires_at)>`. An entry is fresh iff
//! `now < expires_at`; it is still kept (served by `get_or_fetch_with_fallback` when the fetch
//! fails, and counted by `len()`) iff `now < expires_at + stale_for`. The model keeps an entry
//! until it is invalidated or cleared, so `model.entries.len()` bounds `len()` from above.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration_cache::{IntegrationCache, RetryConfig, RetryLayer, CLEANUP_INTERVAL};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tokio::time::{advance, Instant};

/// The default TTL of the caches under test.
const TTL_MS: u64 = 1000;
const USERS: u64 = 8;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Lets the reaper task run after time moved.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

fn no_retries() -> RetryConfig {
    RetryConfig::default()
        .with_jitter(false)
        .with_max_retries(0)
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime")
}

#[derive(Debug, Clone)]
enum Op {
    /// `set` (default TTL) when `ttl_ms` is `None`, else `set_with_ttl`.
    Set {
        user: u64,
        value: u32,
        ttl_ms: Option<u64>,
    },
    Get {
        user: u64,
    },
    Has {
        user: u64,
    },
    Invalidate {
        user: u64,
    },
    Clear,
    Advance {
        ms: u64,
    },
    TimeToExpiry {
        user: u64,
    },
    /// `get_or_fetch` with a fetch that returns `Ok(value)`.
    GetOrFetch {
        user: u64,
        value: u32,
    },
    /// `get_or_fetch_with_fallback` with a fetch that fails with `ConnectionRefused`.
    Fallback {
        user: u64,
    },
}

/// Values are never 0, so a 0 from the fallback is always `u32::default()`.
fn value() -> impl Strategy<Value = u32> {
    1..u32::MAX
}

/// A duration in ms below `max`, half the time on a 250 ms grid so that instants land exactly on
/// expiries and stale-window ends (the default TTL and stale window are multiples of 250 ms).
fn grid_ms(min: u64, max: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        min..max,
        (min.div_ceil(250)..max.div_ceil(250)).prop_map(|n| n * 250)
    ]
}

fn ttl_ms() -> impl Strategy<Value = Option<u64>> {
    prop::option::weighted(0.6, grid_ms(1, 2000))
}

fn advance_ms() -> impl Strategy<Value = u64> {
    grid_ms(0, 3000)
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let user = || 0..USERS;
    let op = prop_oneof![
        4 => (user(), value(), ttl_ms())
            .prop_map(|(user, value, ttl_ms)| Op::Set { user, value, ttl_ms }),
        3 => user().prop_map(|user| Op::Get { user }),
        2 => user().prop_map(|user| Op::Has { user }),
        1 => user().prop_map(|user| Op::Invalidate { user }),
        1 => Just(Op::Clear),
        4 => advance_ms().prop_map(|ms| Op::Advance { ms }),
        2 => user().prop_map(|user| Op::TimeToExpiry { user }),
        3 => (user(), value()).prop_map(|(user, value)| Op::GetOrFetch { user, value }),
        2 => user().prop_map(|user| Op::Fallback { user }),
    ];
    prop::collection::vec(op, 1..60)
}

/// Sequences that exercise the stale window: writes, time, and failing fetches.
fn fallback_ops() -> impl Strategy<Value = Vec<Op>> {
    let user = || 0..4u64;
    let op = prop_oneof![
        3 => (user(), value(), ttl_ms())
            .prop_map(|(user, value, ttl_ms)| Op::Set { user, value, ttl_ms }),
        4 => advance_ms().prop_map(|ms| Op::Advance { ms }),
        5 => user().prop_map(|user| Op::Fallback { user }),
        2 => (user(), value()).prop_map(|(user, value)| Op::GetOrFetch { user, value }),
        1 => user().prop_map(|user| Op::Invalidate { user }),
        1 => Just(Op::Clear),
    ];
    prop::collection::vec(op, 1..60)
}

struct Model {
    ttl: Duration,
    stale_for: Duration,
    entries: HashMap<u64, (u32, Instant)>,
}

impl Model {
    fn new(ttl: Duration, stale_for: Duration) -> Self {
        Self {
            ttl,
            stale_for,
            entries: HashMap::new(),
        }
    }

    /// The value and expiry of `user`'s fresh entry.
    fn fresh(&self, user: u64, now: Instant) -> Option<(u32, Instant)> {
        self.entries
            .get(&user)
            .copied()
            .filter(|&(_, expires_at)| now < expires_at)
    }

    /// The value of `user`'s entry if it has not been reclaimed yet (fresh or stale).
    fn kept(&self, user: u64, now: Instant) -> Option<u32> {
        self.entries
            .get(&user)
            .filter(|&&(_, expires_at)| now < expires_at + self.stale_for)
            .map(|&(value, _)| value)
    }

    fn count(&self, pred: impl Fn(&(u32, Instant)) -> bool) -> usize {
        self.entries.values().filter(|e| pred(e)).count()
    }
}

/// Runs `ops` against a fresh cache and the model, checking every result and the invariants
/// after each step.
async fn check_against_model(
    ttl: Duration,
    stale_for: Duration,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let cache: IntegrationCache<u32, u64> = IntegrationCache::builder()
        .ttl(ttl)
        .stale_for(stale_for)
        .build()
        .expect("a valid configuration");
    let mut model = Model::new(ttl, stale_for);
    for (step, op) in ops.iter().enumerate() {
        let now = Instant::now();
        let at = format!("step {step}: {op:?}");
        match *op {
            Op::Set {
                user,
                value,
                ttl_ms,
            } => {
                let ttl = ttl_ms.map_or(model.ttl, ms);
                match ttl_ms {
                    None => cache.set(user, value),
                    Some(_) => cache.set_with_ttl(user, value, ttl),
                }
                .map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
                model.entries.insert(user, (value, now + ttl));
            }
            Op::Get { user } => {
                let expected = model.fresh(user, now).map(|(v, _)| v);
                prop_assert_eq!(cache.get(&user), expected, "{}", at);
            }
            Op::Has { user } => {
                prop_assert_eq!(cache.has(&user), model.fresh(user, now).is_some(), "{}", at);
            }
            Op::Invalidate { user } => {
                // After `settle`, an entry is resident exactly while the model keeps it.
                let expected = model.kept(user, now).is_some();
                model.entries.remove(&user);
                prop_assert_eq!(cache.invalidate(&user), expected, "{}", at);
            }
            Op::Clear => {
                cache.clear();
                model.entries.clear();
            }
            Op::Advance { ms: n } => {
                advance(ms(n)).await;
                settle().await;
            }
            Op::TimeToExpiry { user } => {
                let expected = model
                    .fresh(user, now)
                    .map(|(_, expires_at)| expires_at - now);
                prop_assert_eq!(cache.time_to_expiry(&user), expected, "{}", at);
            }
            Op::GetOrFetch { user, value } => {
                let got = cache
                    .get_or_fetch(
                        &user,
                        move || async move { Ok::<_, io::Error>(value) },
                        &no_retries(),
                    )
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{at}: {e}")))?;
                let expected = match model.fresh(user, now) {
                    Some((cached, _)) => cached,
                    None => {
                        model.entries.insert(user, (value, now + model.ttl));
                        value
                    }
                };
                prop_assert_eq!(got, expected, "{}", at);
            }
            Op::Fallback { user } => {
                let failing =
                    || async { Err::<u32, _>(io::Error::from(io::ErrorKind::ConnectionRefused)) };
                let got = cache
                    .get_or_fetch_with_fallback(&user, failing, &no_retries())
                    .await;
                let expected = model.kept(user, now).unwrap_or_default();
                prop_assert_eq!(got, expected, "{}", at);
            }
        }
        check_invariants(&cache, &model, &at)?;
    }
    Ok(())
}

fn check_invariants(
    cache: &IntegrationCache<u32, u64>,
    model: &Model,
    at: &str,
) -> Result<(), TestCaseError> {
    let now = Instant::now();
    let keep = model.stale_for;
    let fresh = model.count(|&(_, expires_at)| now < expires_at);
    let kept = model.count(|&(_, expires_at)| now < expires_at + keep);
    let len = cache.len();
    prop_assert!(
        len >= fresh,
        "{}: len {} < {} fresh entries",
        at,
        len,
        fresh
    );
    prop_assert!(
        len <= model.entries.len(),
        "{}: len {} > {} entries set and not invalidated/cleared",
        at,
        len,
        model.entries.len()
    );
    // Time only moves in `Advance`, which settles the reaper, so nothing due is left over.
    prop_assert_eq!(len, kept, "{}: len counts exactly the kept entries", at);
    for user in 0..USERS {
        prop_assert_eq!(
            cache.has(&user),
            model.fresh(user, now).is_some(),
            "{}: has({})",
            at,
            user
        );
    }
    let stats = cache.stats();
    prop_assert_eq!(
        (stats.size, stats.active, stats.expired),
        (kept, fresh, kept - fresh),
        "{}: stats",
        at
    );
    Ok(())
}

fn run(ttl: Duration, stale_for: Duration, ops: &[Op]) -> Result<(), TestCaseError> {
    paused_runtime().block_on(check_against_model(ttl, stale_for, ops))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Stale window zero: entries are reclaimed the instant they expire.
    #[test]
    fn matches_the_model_without_a_stale_window(ops in ops()) {
        run(ms(TTL_MS), Duration::ZERO, &ops)?;
    }

    /// The default stale window (`CLEANUP_INTERVAL`, 60 s): expired entries linger.
    #[test]
    fn matches_the_model_with_the_default_stale_window(ops in ops()) {
        run(ms(TTL_MS), CLEANUP_INTERVAL, &ops)?;
    }

    /// `get_or_fetch_with_fallback` with a failing fetch serves the fresh value, else the stale
    /// one while `now < expires_at + stale_for`, else the default; TTL and window are random.
    #[test]
    fn fallback_serves_stale_exactly_within_the_window(
        ttl_ms in grid_ms(1, 2000),
        stale_ms in prop_oneof![Just(0u64), grid_ms(1, 3000)],
        ops in fallback_ops(),
    ) {
        run(ms(ttl_ms), ms(stale_ms), &ops)?;
    }
}

// ----------------------------------------------------------------------------------------------
// Targeted regression tests from the review of the store: each pins a guarantee that a bug
// once broke.
// ----------------------------------------------------------------------------------------------

fn small_cache(ttl: Duration, stale_for: Duration) -> IntegrationCache<u32, u64> {
    IntegrationCache::builder()
        .ttl(ttl)
        .stale_for(stale_for)
        .build()
        .unwrap()
}

/// A fetch for `user` that sleeps `delay` of virtual time and returns `value`, spawned.
fn spawn_slow_fetch(
    cache: &IntegrationCache<u32, u64>,
    user: u64,
    delay: Duration,
    value: u32,
) -> tokio::task::JoinHandle<u32> {
    let cache = cache.clone();
    tokio::spawn(async move {
        cache
            .get_or_fetch(
                &user,
                move || async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, io::Error>(value)
                },
                &no_retries(),
            )
            .await
            .unwrap()
    })
}

/// Read-your-writes holds for `invalidate` and `clear`, whether the fetch began on a vacant user
/// or on one with a stale entry.
#[tokio::test(start_paused = true)]
async fn invalidate_or_clear_during_a_fetch_keeps_its_result_out() {
    let cache = small_cache(ms(1000), CLEANUP_INTERVAL);
    cache.set(2, 20).unwrap();
    advance(ms(1500)).await; // user 2 is stale but kept
    for user in [1, 2] {
        let fetch = spawn_slow_fetch(&cache, user, ms(100), 99);
        advance(ms(50)).await;
        cache.invalidate(&user);
        assert_eq!(fetch.await.unwrap(), 99);
        assert_eq!(cache.get(&user), None, "user {user}");
    }
    let fetch = spawn_slow_fetch(&cache, 3, ms(100), 99);
    advance(ms(50)).await;
    cache.clear();
    assert_eq!(fetch.await.unwrap(), 99);
    assert_eq!(cache.get(&3), None);
    assert_eq!(cache.len(), 0);
}

/// BUG (lost update): `set` keeps the bucket's generation, so a fetch that began before the
/// `set` still holds a valid token and overwrites the newer value with what it read earlier.
/// `invalidate` + `set` is protected; `set` alone is not. src/store/mod.rs:278-288 (insert
/// checks only the generation), src/store/bucket.rs:84 (with_slot keeps it).
#[tokio::test(start_paused = true)]
async fn a_set_during_a_fetch_is_not_overwritten_by_the_older_fetch() {
    let cache = small_cache(ms(1000), Duration::ZERO);
    let fetch = spawn_slow_fetch(&cache, 1, ms(100), 1);
    advance(ms(50)).await;
    cache.set(1, 2).unwrap(); // e.g. a write-through after the upstream changed
    assert_eq!(fetch.await.unwrap(), 1);
    assert_eq!(
        cache.get(&1),
        Some(2),
        "the older fetch clobbered the newer set"
    );
}

/// BUG (lost write): the write token is the bucket's generation, and the reaper removes the
/// empty "miss in progress" bucket after `idle_for` = TTL (src/store/mod.rs:263, cache.rs:500).
/// A fetch that takes longer than the TTL (slow upstream, or retries) is never cached.
#[tokio::test(start_paused = true)]
async fn a_fetch_slower_than_the_ttl_is_still_stored() {
    let cache = small_cache(ms(100), Duration::ZERO);
    let fetch = spawn_slow_fetch(&cache, 1, ms(150), 7);
    advance(ms(150)).await;
    assert_eq!(fetch.await.unwrap(), 7);
    assert_eq!(
        cache.get(&1),
        Some(7),
        "the fetched value should be fresh for 100 ms"
    );
}

/// BUG (lost write), same root cause: a miss that begins while the expired entry is still
/// resident gets that bucket's token; if the reaper reclaims the bucket during the fetch, the
/// result is refused as if the user had been invalidated.
#[tokio::test(start_paused = true)]
async fn a_fetch_that_outlives_the_old_entrys_stale_window_is_still_stored() {
    let cache = small_cache(ms(1000), ms(500));
    cache.set(1, 1).unwrap();
    advance(ms(1400)).await; // expired, kept until 1500
    let fetch = spawn_slow_fetch(&cache, 1, ms(200), 2);
    advance(ms(200)).await;
    assert_eq!(fetch.await.unwrap(), 2);
    assert_eq!(cache.get(&1), Some(2));
}

/// BUG (panic + leak): TTLs and stale windows up to 100 years are accepted (cache.rs:56), but
/// the reaper's `DelayQueue::insert_at` (src/store/reaper.rs:84, 92) panics for deadlines over
/// 2^36 ms (~2.2 years). The reaper task dies, every visit it had queued is lost, and those
/// entries are never reclaimed: a later `set` does not reschedule because the bucket's `reap_at`
/// still names the lost visit (src/store/mod.rs:423-429).
#[tokio::test(start_paused = true)]
async fn a_long_ttl_does_not_kill_the_reaper() {
    let cache = small_cache(ms(1000), Duration::ZERO);
    cache.set(1, 1).unwrap();
    cache
        .set_with_ttl(2, 2, Duration::from_secs(3 * 365 * 24 * 3600))
        .unwrap();
    settle().await; // the reaper panics on user 2's visit ("invalid deadline")
    advance(ms(2000)).await;
    settle().await;
    assert_eq!(
        cache.len(),
        1,
        "user 1 expired 1 s ago and should be reclaimed"
    );
}

/// BUG (reaper work grows without bound): every write that lowers a bucket's next departure
/// queues one more visit (src/store/mod.rs:423-429, 443-445) and no visit is ever cancelled;
/// each visit to a live bucket re-queues itself (`Later`/`Pruned`, src/store/mod.rs:540-545,
/// reaper.rs:91-92). So the visits for one user pile up for as long as the user stays active and
/// all fire at every departure, each taking the shard's write lock and cloning the bucket. Here
/// 2000 earlier writes make the reaper visit user 1 ~2000 times at 60 s, and user 2, due 1 ms
/// later, is still not reclaimed after `settle()`. With one visit per bucket it would be.
#[tokio::test(start_paused = true)]
async fn reaper_visits_do_not_pile_up_for_a_live_user() {
    let cache = small_cache(ms(1000), Duration::ZERO);
    cache.set_with_ttl(1, 1, ms(10_000)).unwrap();
    for ttl in (1..=2000).rev() {
        cache.set_with_ttl(1, 1, ms(ttl)).unwrap(); // each departure earlier: one more visit
    }
    cache.set_with_ttl(1, 1, ms(60_000)).unwrap();
    advance(ms(2000)).await;
    for _ in 0..1000 {
        tokio::task::yield_now().await; // all ~2000 visits run and re-queue at 60 s
    }
    cache.set_with_ttl(2, 2, ms(58_001)).unwrap(); // leaves at 60.001 s
    cache.set_with_ttl(1, 1, ms(100_000)).unwrap(); // user 1 stays active
    advance(ms(58_001)).await;
    settle().await;
    assert_eq!(cache.len(), 1, "user 2 is reclaimed on time");
}

/// BUG (leak): visits scheduled outside the reaper's runtime are lost (no runtime, or the runtime
/// that ran the reaper shut down). `replace` treats the bucket's `reap_at` as a visit still
/// pending and never schedules another unless the new departure is earlier, so the entry is
/// never reclaimed even when it is written again inside a runtime (src/store/mod.rs:423-429).
#[test]
fn an_entry_written_outside_a_runtime_is_reclaimed_once_written_inside_one() {
    let cache = small_cache(ms(1000), Duration::ZERO);
    cache.set(1, 1).unwrap(); // no runtime: no reaper, reap_at = +1 s
    paused_runtime().block_on(async {
        cache.set(1, 2).unwrap(); // departure later than reap_at: no visit scheduled
        advance(ms(2000)).await;
        settle().await;
        assert_eq!(cache.stats().size, 0, "expired for reads");
        assert_eq!(cache.len(), 0, "but never reclaimed: len counts it forever");
    });
}

/// BUG (bound not enforced): a bucket replaced through `entry(.., Retain)` changes weight without
/// any eviction (quick_cache's WeightGuard only adjusts the shard's weight), and `insert` (the
/// `get_or_fetch` path) never calls `fits`. So `max_bytes` is exceeded without limit by values
/// that grow on rewrite or arrive through `get_or_fetch` (src/store/mod.rs:278-299, 302-312).
#[tokio::test(start_paused = true)]
async fn max_bytes_holds_when_existing_values_grow() {
    let cache: IntegrationCache<Vec<u8>> = IntegrationCache::builder()
        .max_bytes(64 * 1024)
        .weigher(|v: &Vec<u8>| v.len() as u64)
        .build()
        .unwrap();
    for user in 0..1000 {
        cache.set(user, vec![0; 1]).unwrap();
    }
    for user in 0..1000 {
        cache.set(user, vec![0; 1024]).unwrap();
    }
    // 1000 entries of 1 KiB resident under a 64 KiB bound.
    assert!(cache.len() * 1024 <= 64 * 1024, "len {} KiB", cache.len());
}

/// Same bug through `get_or_fetch`: a value `set` rejects as too heavy is stored by a fetch.
#[tokio::test(start_paused = true)]
async fn get_or_fetch_does_not_store_what_set_rejects() {
    let cache: IntegrationCache<Vec<u8>> = IntegrationCache::builder()
        .max_bytes(64 * 1024)
        .weigher(|v: &Vec<u8>| v.len() as u64)
        .build()
        .unwrap();
    assert!(cache.set(1, vec![0; 1 << 20]).is_err(), "set refuses 1 MiB");
    let got = cache
        .get_or_fetch(
            &2,
            || async { Ok::<_, io::Error>(vec![0u8; 1 << 20]) },
            &no_retries(),
        )
        .await
        .unwrap();
    assert_eq!(got.len(), 1 << 20);
    assert!(cache.get(&2).is_none(), "1 MiB stored in a 64 KiB cache");
}

/// BUG (silent drop): `fits` admits values up to one shard's capacity, but quick_cache admits at
/// most `hot_allocation` (97%) of it and evicts anything heavier on insert. A value in between is
/// accepted by `set` (Ok) and immediately dropped (counted as an eviction) (src/store/mod.rs:379).
#[tokio::test(start_paused = true)]
async fn a_value_that_set_accepts_is_stored() {
    let cache = || -> IntegrationCache<Vec<u8>> {
        IntegrationCache::builder()
            .max_bytes(1 << 20)
            .weigher(|v: &Vec<u8>| v.len() as u64)
            .build()
            .unwrap()
    };
    // The heaviest value `set` accepts (binary search on fresh caches).
    let (mut lo, mut hi) = (1usize, 1 << 20);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if cache().set(0, vec![0; mid]).is_ok() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let cache = cache();
    cache.set(1, vec![0; lo]).unwrap();
    assert!(
        cache.get(&1).is_some(),
        "a {lo}-byte value was accepted and dropped"
    );
}

/// BUG (src/retry/http.rs:244-247): tower's `Retry::call` runs `clone_request` on the service's
/// own policy, so `started` is set once per service instance, not per request. The deadline is
/// then measured from the first request ever made through that instance (and
/// `budget.deposit()` runs only once per instance, so the budget sees one request in all). A
/// request made after `deadline` has passed gets no retries at all.
#[tokio::test(start_paused = true)]
async fn retry_deadline_is_per_request() {
    use tower::{Layer, Service, ServiceExt};

    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let inner = tower::service_fn(move |_req: http::Request<String>| {
        // Every odd call fails with 503: each request needs exactly one retry.
        let status = if counted.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
            503
        } else {
            200
        };
        async move {
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(status)
                    .body(String::new())
                    .unwrap(),
            )
        }
    });
    let config = RetryConfig::default().with_jitter(false);
    let mut service = RetryLayer::new(config)
        .deadline(Duration::from_secs(1))
        .layer(inner);
    let first = service
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    advance(Duration::from_secs(5)).await;
    let second = service
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(
        second.status(),
        200,
        "the second request's own deadline leaves room for a retry"
    );
}

/// BUG (panic from public input, src/retry/http.rs:227): `started + deadline` is unchecked
/// `Instant` arithmetic, so `RetryLayer::deadline(Duration::MAX)` ("no deadline, really") panics
/// with "overflow when adding duration to instant" on the first retry.
#[tokio::test(start_paused = true)]
async fn a_huge_retry_deadline_does_not_panic() {
    use tower::{Layer, ServiceExt};

    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let inner = tower::service_fn(move |_req: http::Request<String>| {
        let status = if counted.fetch_add(1, Ordering::SeqCst) == 0 {
            503
        } else {
            200
        };
        async move {
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(status)
                    .body(String::new())
                    .unwrap(),
            )
        }
    });
    let service = RetryLayer::new(RetryConfig::default())
        .deadline(Duration::MAX)
        .layer(inner);
    let response = service
        .oneshot(http::Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
