//! The programmatic API (`IntegrationCache`), on paused tokio time: every TTL and backoff below
//! is virtual, so these tests take milliseconds and cannot flake on a loaded machine.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration_cache::{
    CacheErrorKind, IntegrationCache, RetryConfig, CACHE_TTL, CLEANUP_INTERVAL,
};
use tokio::time::{advance, Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cache() -> IntegrationCache<Vec<&'static str>> {
    IntegrationCache::builder()
        .item_count(Vec::len)
        .build()
        .unwrap()
}

fn exact(max_retries: u32) -> RetryConfig {
    RetryConfig::default()
        .with_jitter(false)
        .with_max_retries(max_retries)
}

/// Lets the reaper task finish what is due: with paused time the runtime only moves the clock
/// (by this 1 ms) once every task is idle, so the sleep ends after the reaper's work.
async fn settle() {
    tokio::time::sleep(ms(1)).await;
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_the_default_ttl() {
    let cache = cache();
    cache.set(123, vec!["github"]).unwrap();
    advance(CACHE_TTL - ms(1)).await;
    assert_eq!(cache.get(&123), Some(vec!["github"]));
    assert!(cache.has(&123));
    advance(ms(1)).await;
    assert_eq!(cache.get(&123), None, "an expired entry is never returned");
    assert!(!cache.has(&123));
}

#[tokio::test(start_paused = true)]
async fn a_custom_ttl_overrides_the_default() {
    let cache = cache();
    cache.set_with_ttl(1, vec!["short"], ms(100)).unwrap();
    cache
        .set_with_ttl(2, vec!["long"], Duration::from_secs(600))
        .unwrap();
    advance(ms(150)).await;
    assert_eq!(cache.get(&1), None);
    advance(CACHE_TTL).await;
    assert_eq!(cache.get(&2), Some(vec!["long"]));
}

#[tokio::test(start_paused = true)]
async fn invalid_ttls_are_typed_errors() {
    let cache = cache();
    let err = cache.set_with_ttl(1, vec![], Duration::ZERO).unwrap_err();
    assert_eq!(err.kind(), CacheErrorKind::CacheSetFailed);
    assert!(!err.is_retryable());
    assert!(
        cache.set_with_ttl(1, vec![], Duration::MAX).is_err(),
        "no Instant overflow panic"
    );
    assert!(cache.is_empty());
}

#[tokio::test(start_paused = true)]
async fn invalidate_drops_one_user_only() {
    let cache = cache();
    cache.set(1, vec!["a"]).unwrap();
    cache.set(2, vec!["b"]).unwrap();
    assert!(cache.invalidate(&1));
    assert!(!cache.invalidate(&1), "nothing left to drop");
    assert_eq!(cache.get(&1), None);
    assert_eq!(cache.get(&2), Some(vec!["b"]));
    assert_eq!(cache.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn clear_drops_everyone() {
    let cache = cache();
    for user in 0..50 {
        cache.set(user, vec!["x"]).unwrap();
    }
    assert_eq!(cache.len(), 50);
    cache.clear();
    assert_eq!(cache.len(), 0);
    assert!((0..50).all(|user| cache.get(&user).is_none()));
    cache.set(7, vec!["after"]).unwrap();
    assert_eq!(
        cache.get(&7),
        Some(vec!["after"]),
        "the cache works after a clear"
    );
}

#[tokio::test(start_paused = true)]
async fn stats_count_fresh_expired_hits_and_misses() {
    let cache = cache();
    cache.set_with_ttl(1, vec!["a"], ms(100)).unwrap();
    cache.set(2, vec!["b", "c"]).unwrap();
    assert!(cache.get(&2).is_some());
    assert!(cache.get(&3).is_none());
    advance(ms(150)).await;
    let stats = cache.stats();
    assert_eq!((stats.size, stats.expired, stats.active), (2, 1, 1));
    assert_eq!((stats.hits, stats.misses), (1, 1));
    assert_eq!(stats.hit_ratio(), 0.5);

    // After the stale window the reaper reclaims the expired entry on its own.
    advance(CLEANUP_INTERVAL).await;
    settle().await;
    let stats = cache.stats();
    assert_eq!((stats.size, stats.expired, stats.active), (1, 0, 1));
    assert_eq!(stats.expirations, 1);
    assert_eq!(cache.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn expired_memory_is_reclaimed_in_the_background() {
    let cache: IntegrationCache<u64> = IntegrationCache::builder()
        .ttl(Duration::from_secs(1))
        .stale_for(Duration::ZERO)
        .build()
        .unwrap();
    for user in 0..1_000 {
        cache.set(user, user).unwrap();
    }
    // Half of them are refreshed later, so they leave later.
    advance(ms(500)).await;
    for user in 0..500 {
        cache.set(user, user).unwrap();
    }
    advance(ms(600)).await;
    settle().await;
    assert_eq!(
        cache.len(),
        500,
        "the first-written half is gone without any read"
    );
    advance(ms(500)).await;
    settle().await;
    assert_eq!(cache.len(), 0);
    assert_eq!(cache.stats().expirations, 1_000);
}

#[tokio::test(start_paused = true)]
async fn time_to_expiry_counts_down() {
    let cache = cache();
    assert_eq!(cache.time_to_expiry(&1), None);
    cache.set(1, vec![]).unwrap();
    advance(Duration::from_secs(60)).await;
    assert_eq!(cache.time_to_expiry(&1), Some(Duration::from_secs(240)));
    advance(Duration::from_secs(240)).await;
    assert_eq!(cache.time_to_expiry(&1), None);
}

#[tokio::test(start_paused = true)]
async fn retries_follow_the_exact_backoff_schedule() {
    let cache = cache();
    let calls = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let start = Instant::now();
    let seen = calls.clone();
    let value = cache
        .get_or_fetch(
            &1,
            move || {
                let seen = seen.clone();
                async move {
                    let mut seen = seen.lock();
                    seen.push(start.elapsed());
                    if seen.len() < 4 {
                        Err(io::Error::from(io::ErrorKind::ConnectionRefused))
                    } else {
                        Ok(vec!["ok"])
                    }
                }
            },
            &exact(3),
        )
        .await
        .unwrap();
    assert_eq!(value, ["ok"]);
    // Attempt 1 at once, then 100, 200, 400 ms later (the seed's schedule).
    assert_eq!(*calls.lock(), [ms(0), ms(100), ms(300), ms(700)]);
    assert_eq!(
        cache.get(&1),
        Some(vec!["ok"]),
        "the fetched value was stored"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_delays_are_capped_at_max_delay() {
    let cache = cache();
    let config = RetryConfig::new(6, ms(500), ms(1_000), 3.0)
        .unwrap()
        .with_jitter(false);
    let start = Instant::now();
    let err = cache
        .get_or_fetch(
            &1,
            || async { Err::<Vec<&str>, _>(io::Error::from(io::ErrorKind::TimedOut)) },
            &config,
        )
        .await
        .unwrap_err();
    assert_eq!(err.attempts(), 7);
    // 500 + 1000 * 5 (capped), not 500 + 1500 + 4500 + ...
    assert_eq!(start.elapsed(), ms(5_500));
}

#[tokio::test(start_paused = true)]
async fn a_non_retryable_error_stops_at_once() {
    let cache = cache();
    let calls = AtomicU32::new(0);
    let err = cache
        .get_or_fetch(
            &1,
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async {
                    Err::<Vec<&str>, _>(io::Error::new(io::ErrorKind::InvalidData, "bad json"))
                }
            },
            &exact(3),
        )
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(err.kind(), CacheErrorKind::FetchFailed);
    assert!(!err.is_retryable());
    assert_eq!(err.attempts(), 1);
    assert!(cache.get(&1).is_none(), "nothing stored on failure");
}

#[tokio::test(start_paused = true)]
async fn retry_exhausted_after_max_retries_plus_one_attempts() {
    let cache = cache();
    let calls = AtomicU32::new(0);
    let err = cache
        .get_or_fetch(
            &1,
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<Vec<&str>, _>(io::Error::from(io::ErrorKind::ConnectionRefused)) }
            },
            &exact(3),
        )
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(err.kind(), CacheErrorKind::RetryExhausted);
    assert_eq!(err.kind().code(), "RETRY_EXHAUSTED");
    assert!(!err.is_retryable());
    assert_eq!(err.attempts(), 4);
    let source = std::error::Error::source(&err).expect("the original error is kept");
    let io = source.downcast_ref::<io::Error>().expect("as an io::Error");
    assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
}

#[tokio::test(start_paused = true)]
async fn seed_style_text_errors_are_retried() {
    let cache = cache();
    let calls = AtomicU32::new(0);
    let value = cache
        .get_or_fetch(
            &1,
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        Err(integration_cache::BoxError::from("ECONNREFUSED"))
                    } else {
                        Ok(vec!["x"])
                    }
                }
            },
            &exact(3),
        )
        .await
        .unwrap();
    assert_eq!(value, ["x"]);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn fallback_serves_stale_then_default() {
    let cache = cache();
    let failing =
        || async { Err::<Vec<&'static str>, _>(io::Error::from(io::ErrorKind::ConnectionRefused)) };
    // Nothing cached: the default value.
    let value = cache
        .get_or_fetch_with_fallback(&1, failing, &exact(1))
        .await;
    assert_eq!(value, Vec::<&str>::new());

    cache.set(1, vec!["stale but useful"]).unwrap();
    advance(CACHE_TTL + ms(1)).await;
    assert_eq!(cache.get(&1), None, "expired for normal reads");
    let value = cache
        .get_or_fetch_with_fallback(&1, failing, &exact(1))
        .await;
    assert_eq!(value, ["stale but useful"]);

    // Past the stale window the entry is gone and the default comes back.
    advance(CLEANUP_INTERVAL).await;
    settle().await;
    let value = cache
        .get_or_fetch_with_fallback(&1, failing, &exact(1))
        .await;
    assert_eq!(value, Vec::<&str>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_fetch_on_a_multi_threaded_runtime() {
    // An instant fetch, so a leader often finishes while other callers are between their
    // lookup and joining the flight: they must find its value, not fetch again.
    for round in 0..200 {
        let cache: IntegrationCache<u32> = IntegrationCache::new();
        let fetches = Arc::new(AtomicU32::new(0));
        let barrier = Arc::new(tokio::sync::Barrier::new(32));
        let callers: Vec<_> = (0..32)
            .map(|_| {
                let (cache, fetches, barrier) = (cache.clone(), fetches.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let fetch = || {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        async { Ok::<_, io::Error>(1) }
                    };
                    cache.get_or_fetch(&7, fetch, &RetryConfig::default()).await
                })
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.unwrap().unwrap(), 1);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "round {round}");
    }
}

#[test]
fn a_set_racing_an_invalidate_never_fails() {
    // A set that grows the user's bucket swaps it out for a moment; an invalidate landing then
    // wins, and the set must not report that as a value too heavy to store.
    let cache: IntegrationCache<Vec<u8>> = IntegrationCache::builder()
        .max_bytes(1 << 20)
        .weigher(|v: &Vec<u8>| v.len() as u64)
        .build()
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let invalidator = {
        let (cache, stop) = (cache.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                cache.invalidate(&1);
            }
        })
    };
    let failures = (0..20_000)
        .filter(|_| {
            let _ = cache.set(1, vec![0; 1]);
            cache.set(1, vec![0; 100]).is_err()
        })
        .count();
    stop.store(true, Ordering::Relaxed);
    invalidator.join().unwrap();
    assert_eq!(failures, 0);
}

#[test]
fn one_entry_with_a_byte_bound_is_stored() {
    let cache: IntegrationCache<u64> = IntegrationCache::builder()
        .max_entries(1)
        .max_bytes(1 << 20)
        .build()
        .unwrap();
    cache.set(1, 1).unwrap();
    assert_eq!(cache.get(&1), Some(1));
    cache.set(2, 2).unwrap();
    assert_eq!(cache.len(), 1, "the entry bound holds");
}

#[test]
fn bounds_beyond_what_can_be_summed_are_config_errors() {
    let error = IntegrationCache::<u64>::builder()
        .max_entries(2)
        .max_bytes(u64::MAX)
        .build()
        .unwrap_err();
    assert_eq!(error.setting(), "max_bytes");
    let cache: IntegrationCache<u64> = IntegrationCache::builder()
        .max_entries(2)
        .max_bytes(1 << 50)
        .build()
        .unwrap();
    for user in 1..=3 {
        cache.set(user, user).unwrap();
    }
    assert!(cache.len() <= 2);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_misses_run_one_fetch() {
    let cache = cache();
    let fetches = Arc::new(AtomicU32::new(0));
    let callers: Vec<_> = (0..1_000)
        .map(|_| {
            let cache = cache.clone();
            let fetches = fetches.clone();
            tokio::spawn(async move {
                cache
                    .get_or_fetch(
                        &42,
                        || {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            async {
                                tokio::time::sleep(ms(200)).await;
                                Ok::<_, io::Error>(vec!["shared"])
                            }
                        },
                        &RetryConfig::default(),
                    )
                    .await
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), ["shared"]);
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    assert!(cache.stats().coalesced >= 999 - 1, "{:?}", cache.stats());
}

#[tokio::test(start_paused = true)]
async fn waiters_share_the_leaders_error_too() {
    let cache = cache();
    let fetches = Arc::new(AtomicU32::new(0));
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let cache = cache.clone();
            let fetches = fetches.clone();
            tokio::spawn(async move {
                cache
                    .get_or_fetch(
                        &7,
                        || {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            async {
                                Err::<Vec<&str>, _>(io::Error::from(
                                    io::ErrorKind::ConnectionRefused,
                                ))
                            }
                        },
                        &exact(2),
                    )
                    .await
            })
        })
        .collect();
    for caller in callers {
        let err = caller.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), CacheErrorKind::RetryExhausted);
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        3,
        "one caller's 3 attempts, nobody else's"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_leader_does_not_strand_its_waiters() {
    let cache = cache();
    let slow_leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_fetch(
                    &9,
                    || async {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok::<_, io::Error>(vec!["never"])
                    },
                    &RetryConfig::default(),
                )
                .await
        })
    };
    tokio::task::yield_now().await;
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_fetch(
                    &9,
                    || async { Ok::<_, io::Error>(vec!["second"]) },
                    &RetryConfig::default(),
                )
                .await
        })
    };
    tokio::task::yield_now().await;
    slow_leader.abort();
    assert_eq!(waiter.await.unwrap().unwrap(), ["second"]);
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_during_a_fetch_keeps_its_result_out() {
    let cache = cache();
    let fetch = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_fetch(
                    &5,
                    || async {
                        tokio::time::sleep(ms(100)).await;
                        Ok::<_, io::Error>(vec!["read before the write"])
                    },
                    &RetryConfig::default(),
                )
                .await
        })
    };
    advance(ms(50)).await;
    cache.invalidate(&5);
    assert_eq!(fetch.await.unwrap().unwrap(), ["read before the write"]);
    assert_eq!(
        cache.get(&5),
        None,
        "a value fetched before the invalidation is not stored"
    );
}

#[tokio::test(start_paused = true)]
async fn eviction_keeps_the_cache_within_its_bound() {
    let cache: IntegrationCache<u64> = IntegrationCache::builder()
        .max_entries(1_000)
        .build()
        .unwrap();
    for user in 0..10_000u64 {
        cache.set(user, user).unwrap();
    }
    assert!(cache.len() <= 1_000, "len {}", cache.len());
    assert!(cache.len() >= 500, "the bound is used, len {}", cache.len());
    let stats = cache.stats();
    assert_eq!(stats.evictions as usize + cache.len(), 10_000, "{stats:?}");
    assert!(cache.get(&9_999).is_some(), "the newest entry is kept");
}

#[tokio::test(start_paused = true)]
async fn a_byte_bound_counts_bytes() {
    let cache: IntegrationCache<Vec<u8>> = IntegrationCache::builder()
        .max_bytes(64 * 1024)
        .weigher(|v: &Vec<u8>| v.len() as u64)
        .build()
        .unwrap();
    for user in 0..1_000 {
        cache.set(user, vec![0; 1024]).unwrap();
    }
    assert!(cache.len() <= 64, "len {}", cache.len());
    let err = cache.set(1, vec![0; 1 << 20]).unwrap_err();
    assert_eq!(err.kind(), CacheErrorKind::CacheSetFailed, "{err}");
}

#[test]
fn invalid_configuration_is_a_typed_error() {
    let err = IntegrationCache::<u8>::builder()
        .ttl(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "ttl");
    let err = IntegrationCache::<u8>::builder()
        .max_entries(0)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "max_entries");
}

#[test]
fn works_outside_a_runtime() {
    let cache: IntegrationCache<u8> = IntegrationCache::new();
    cache.set(1, 1).unwrap();
    assert_eq!(cache.get(&1), Some(1));
    cache.clear();
    assert!(cache.is_empty());
}

#[tokio::test(start_paused = true)]
async fn string_user_ids_work_too() {
    let cache: IntegrationCache<u8, String> = IntegrationCache::builder().build().unwrap();
    cache.set("alice".to_string(), 1).unwrap();
    assert_eq!(cache.get("alice"), Some(1));
    assert!(cache.invalidate("alice"));
}
