//! [`IntegrationCache`]: the seed module's programmatic API.

use std::borrow::Borrow;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::coalesce::{Flights, Role};
use crate::error::{BoxError, CacheError, CacheErrorKind, ConfigError};
use crate::retry::fetch::fetch_with_retry;
use crate::retry::RetryConfig;
use crate::store::counters::{Counters, Event};
use crate::store::{check_bound, check_duration, Refused, Store, StoreConfig, DEFAULT_MAX_ENTRIES};

/// The seed's `CACHE_TTL`: entries are fresh for 5 minutes unless told otherwise.
pub const CACHE_TTL: Duration = Duration::from_secs(5 * 60);

/// The seed's cleanup period, kept as the default window in which an expired entry stays
/// available to [`IntegrationCache::get_or_fetch_with_fallback`] (in the seed, an expired entry
/// lived until the next cleanup). Reclaiming memory needs no periodic scan here: see the `store`
/// module.
pub const CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

type Outcome<V> = Result<V, CacheError>;

/// A per-user cache of values of type `V`, keyed by user ids of type `U`.
///
/// Cheap to clone; clones share the same entries.
///
/// ```
/// use integration_cache::{IntegrationCache, RetryConfig};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cache: IntegrationCache<Vec<String>> = IntegrationCache::builder()
///     .item_count(Vec::len)
///     .build()?;
///
/// // A miss runs the fetch (retried on network errors) and stores the result.
/// let integrations = cache
///     .get_or_fetch(&123, || async { Ok::<_, std::io::Error>(vec!["github".to_string()]) }, &RetryConfig::default())
///     .await?;
/// assert_eq!(integrations, ["github"]);
///
/// // A hit does not call the fetch.
/// let again = cache
///     .get_or_fetch(&123, || async { Err::<Vec<String>, _>(std::io::Error::other("not called")) }, &RetryConfig::default())
///     .await?;
/// assert_eq!(again, integrations);
/// assert_eq!(cache.stats().hits, 1);
///
/// cache.invalidate(&123);
/// assert!(!cache.has(&123));
/// # Ok(()) }
/// ```
///
/// Values are cloned out on every read: store an `Arc<...>` (or `Bytes`) when `V` is large.
pub struct IntegrationCache<V, U = u64> {
    store: Store<U, (), V>,
    flights: Arc<Flights<(U, u64), Outcome<V>>>,
    ttl: Duration,
    item_count: ItemCount<V>,
}

/// How many bytes a value takes.
type Weigher<V> = Arc<dyn Fn(&V) -> u64 + Send + Sync>;
/// How many items a value holds, for logs.
type ItemCount<V> = Arc<dyn Fn(&V) -> usize + Send + Sync>;

impl<V, U> Clone for IntegrationCache<V, U> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            flights: self.flights.clone(),
            ttl: self.ttl,
            item_count: self.item_count.clone(),
        }
    }
}

impl<V, U> fmt::Debug for IntegrationCache<V, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntegrationCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Counts returned by [`IntegrationCache::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Entries in memory: `active + expired`.
    pub size: usize,
    /// Entries past their TTL, kept for the stale window and not yet reclaimed.
    pub expired: usize,
    /// Entries within their TTL.
    pub active: usize,
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that found nothing fresh.
    pub misses: u64,
    /// Entries dropped to stay within the size bound.
    pub evictions: u64,
    /// Entries reclaimed after they expired.
    pub expirations: u64,
    /// Entries dropped by `invalidate` or `clear`.
    pub invalidations: u64,
    /// Callers that waited for another caller's fetch instead of fetching.
    pub coalesced: u64,
}

impl CacheStats {
    /// `hits / (hits + misses)`, or 0 before any read.
    pub fn hit_ratio(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }
}

impl<V> IntegrationCache<V, u64>
where
    V: Clone + Send + Sync + 'static,
{
    /// A cache with the defaults: [`CACHE_TTL`], at most 100 000 entries.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("the default configuration is valid")
    }
}

impl<V> Default for IntegrationCache<V, u64>
where
    V: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<V, U> IntegrationCache<V, U>
where
    V: Clone + Send + Sync + 'static,
    U: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    /// Configures a cache.
    pub fn builder() -> IntegrationCacheBuilder<V, U> {
        IntegrationCacheBuilder::default()
    }

    /// The fresh value for `user`, or `None` on a miss or after expiry.
    pub fn get<Q>(&self, user: &Q) -> Option<V>
    where
        U: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lookup(user)
    }

    /// Stores `value` for `user` for the default TTL.
    ///
    /// # Errors
    ///
    /// `CacheSetFailed` when the value alone weighs more than the cache can hold (see
    /// [`IntegrationCacheBuilder::max_bytes`]).
    pub fn set(&self, user: U, value: V) -> Result<(), CacheError> {
        self.set_with_ttl(user, value, self.ttl)
    }

    /// Stores `value` for `user` for `ttl`.
    ///
    /// # Errors
    ///
    /// `CacheSetFailed` when `ttl` is zero or over 100 years, or the value weighs more than the
    /// cache can hold.
    pub fn set_with_ttl(&self, user: U, value: V, ttl: Duration) -> Result<(), CacheError> {
        if let Err(range) = check_duration("ttl", ttl, None) {
            return Err(CacheError::new(
                CacheErrorKind::CacheSetFailed,
                format!("cannot store the value for user {user}: {range}"),
            ));
        }
        match self.store.set(&user, (), value, ttl) {
            // An `invalidate` or `clear` of this user ran at the same time and came after:
            // the value was set and then dropped, which is what the caller asked for.
            Ok(()) | Err(Refused::Outdated) => Ok(()),
            Err(Refused::TooHeavy) => Err(CacheError::new(
                CacheErrorKind::CacheSetFailed,
                format!(
                    "the value for user {user} weighs more than the cache admits for one entry; \
                     raise max_bytes or store a smaller value"
                ),
            )),
        }
    }

    /// Whether `user` has a fresh entry. Does not count as a hit or a miss.
    pub fn has<Q>(&self, user: &Q) -> bool
    where
        U: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.store.get(user, &()).is_some()
    }

    /// Drops `user`'s entry. Returns whether there was one.
    ///
    /// A fetch for `user` already in flight will not store its (possibly outdated) result.
    pub fn invalidate<Q>(&self, user: &Q) -> bool
    where
        U: Borrow<Q>,
        Q: Hash + Eq + fmt::Display + ?Sized,
    {
        let removed = self.store.invalidate(user);
        info!(user_id = %user, item_count = removed, "Cache invalidated");
        removed > 0
    }

    /// Drops every entry.
    pub fn clear(&self) {
        let count = self.store.len();
        self.store.clear();
        info!(item_count = count, "Cache cleared");
    }

    /// Entries in memory, fresh or expired-but-not-yet-reclaimed (the seed's `size()`).
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether no entries are in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The seed's `getStats()` plus counters.
    ///
    /// `size`/`expired`/`active` are counted entry by entry, one shard read-locked at a time
    /// (readers and writers on other shards are not blocked): O(entries), meant for diagnostics,
    /// not for every request.
    pub fn stats(&self) -> CacheStats {
        let census = self.store.census();
        let counters = self.store.counters();
        CacheStats {
            size: census.fresh + census.stale,
            expired: census.stale,
            active: census.fresh,
            hits: counters.get(Event::Hit),
            misses: counters.get(Event::Miss),
            evictions: counters.get(Event::Eviction),
            expirations: counters.get(Event::Expiration),
            invalidations: counters.get(Event::Invalidation),
            coalesced: counters.get(Event::Coalesced),
        }
    }

    /// How long `user`'s entry stays fresh, or `None` if there is no fresh entry.
    pub fn time_to_expiry<Q>(&self, user: &Q) -> Option<Duration>
    where
        U: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.store.time_to_expiry(user, &())
    }

    /// The seed's `getCachedIntegrations`: the cached value, or `fetch`'s result, stored.
    ///
    /// On a miss `fetch` runs with `retry`'s backoff while its errors are network failures (see
    /// [`is_transient`](crate::is_transient)). Concurrent calls for the same user share one fetch
    /// and its outcome.
    ///
    /// # Errors
    ///
    /// - `RetryExhausted` when every attempt failed with a network error;
    /// - `FetchFailed` (not retryable) at the first error that is not a network failure.
    pub async fn get_or_fetch<F, Fut, E>(
        &self,
        user: &U,
        mut fetch: F,
        retry: &RetryConfig,
    ) -> Result<V, CacheError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Into<BoxError>,
    {
        let started = Instant::now();
        loop {
            if let Some(value) = self.lookup(user) {
                info!(
                    user_id = %user,
                    item_count = (self.item_count)(&value),
                    duration_ms = millis(started),
                    "Cache hit"
                );
                return Ok(value);
            }
            let token = self.store.begin(user);
            match self.flights.join((user.clone(), token.generation())) {
                Role::Leader(leader) => {
                    // A leader that finished between the lookup above and `join` stored its
                    // value and left: use that rather than fetch a second time.
                    if let Some(found) = self.store.get(user, &()) {
                        leader.complete(Ok(found.value.clone()));
                        return Ok(found.value);
                    }
                    info!(user_id = %user, "Cache miss, fetching fresh data");
                    let outcome = match fetch_with_retry(retry, user, &mut fetch).await {
                        Ok((value, _attempts)) => {
                            let _ = self.store.insert(token, user, (), value.clone(), self.ttl);
                            info!(
                                user_id = %user,
                                item_count = (self.item_count)(&value),
                                duration_ms = millis(started),
                                "Fresh data fetched and cached"
                            );
                            Ok(value)
                        }
                        Err(err) => {
                            error!(
                                user_id = %user,
                                duration_ms = millis(started),
                                error = %err,
                                "Failed to get cached integrations"
                            );
                            Err(err)
                        }
                    };
                    leader.complete(outcome.clone());
                    return outcome;
                }
                Role::Waiter(waiter) => {
                    self.store.counters().incr(Event::Coalesced);
                    if let Some(outcome) = waiter.wait().await {
                        return outcome;
                    }
                    // The leader was dropped mid-fetch: look again, and lead if still a miss.
                }
            }
        }
    }

    /// The seed's `getCachedIntegrationsWithFallback`: like [`get_or_fetch`](Self::get_or_fetch)
    /// but never fails. When the fetch fails it returns the expired entry if one is still kept
    /// (see [`IntegrationCacheBuilder::stale_for`]), else `V::default()`.
    pub async fn get_or_fetch_with_fallback<F, Fut, E>(
        &self,
        user: &U,
        fetch: F,
        retry: &RetryConfig,
    ) -> V
    where
        V: Default,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Into<BoxError>,
    {
        let error = match self.get_or_fetch(user, fetch, retry).await {
            Ok(value) => return value,
            Err(error) => error,
        };
        match self.store.get_stale(user, &()) {
            Some(stale) => {
                warn!(
                    user_id = %user,
                    item_count = (self.item_count)(&stale.value),
                    error = %error,
                    "Fetch failed, serving stale data"
                );
                stale.value
            }
            None => {
                warn!(user_id = %user, error = %error, "Fetch failed, serving the default value");
                V::default()
            }
        }
    }

    fn lookup<Q>(&self, user: &Q) -> Option<V>
    where
        U: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let counters = self.store.counters();
        match self.store.get(user, &()) {
            Some(found) => {
                counters.incr(Event::Hit);
                Some(found.value)
            }
            None => {
                counters.incr(Event::Miss);
                None
            }
        }
    }
}

fn millis(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// Configures an [`IntegrationCache`]; validated once, by [`build`](Self::build).
#[must_use]
pub struct IntegrationCacheBuilder<V, U = u64> {
    ttl: Duration,
    stale_for: Duration,
    max_entries: Option<u64>,
    max_bytes: Option<u64>,
    weigher: Option<Weigher<V>>,
    item_count: Option<ItemCount<V>>,
    _user: std::marker::PhantomData<fn(U)>,
}

impl<V, U> Default for IntegrationCacheBuilder<V, U> {
    fn default() -> Self {
        Self {
            ttl: CACHE_TTL,
            stale_for: CLEANUP_INTERVAL,
            max_entries: None,
            max_bytes: None,
            weigher: None,
            item_count: None,
            _user: std::marker::PhantomData,
        }
    }
}

impl<V, U> fmt::Debug for IntegrationCacheBuilder<V, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntegrationCacheBuilder")
            .field("ttl", &self.ttl)
            .field("stale_for", &self.stale_for)
            .field("max_entries", &self.max_entries)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl<V, U> IntegrationCacheBuilder<V, U>
where
    V: Clone + Send + Sync + 'static,
    U: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    /// How long an entry is fresh. Default [`CACHE_TTL`].
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long an expired entry is kept as a fallback for
    /// [`get_or_fetch_with_fallback`](IntegrationCache::get_or_fetch_with_fallback) before its
    /// memory is reclaimed. Default [`CLEANUP_INTERVAL`]; zero reclaims at expiry.
    pub fn stale_for(mut self, stale_for: Duration) -> Self {
        self.stale_for = stale_for;
        self
    }

    /// At most this many entries; the least valuable are evicted (S3-FIFO). Default 100 000
    /// when no bound is set.
    pub fn max_entries(mut self, max_entries: u64) -> Self {
        self.max_entries = Some(max_entries);
        self
    }

    /// At most this many bytes, as counted by [`weigher`](Self::weigher).
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = Some(max_bytes);
        self
    }

    /// How many bytes a value takes, for [`max_bytes`](Self::max_bytes). Default:
    /// `size_of::<V>()`, which ignores what `V` points to.
    pub fn weigher(mut self, weigher: impl Fn(&V) -> u64 + Send + Sync + 'static) -> Self {
        self.weigher = Some(Arc::new(weigher));
        self
    }

    /// How many items a value holds, for the `item_count` log field (e.g. `Vec::len`).
    /// Default 1.
    pub fn item_count(mut self, item_count: impl Fn(&V) -> usize + Send + Sync + 'static) -> Self {
        self.item_count = Some(Arc::new(item_count));
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// - `ttl` is zero or over 100 years; `stale_for` is over 100 years;
    /// - `max_entries` or `max_bytes` is zero or over 2^50.
    pub fn build(self) -> Result<IntegrationCache<V, U>, ConfigError> {
        check_duration("ttl", self.ttl, None)?;
        check_duration("stale_for", self.stale_for, Some("zero reclaims at expiry"))?;
        check_bound("max_entries", self.max_entries)?;
        check_bound("max_bytes", self.max_bytes)?;
        let weigher = self
            .weigher
            .unwrap_or_else(|| Arc::new(|_: &V| std::mem::size_of::<V>() as u64));
        let config = StoreConfig {
            max_entries: self
                .max_entries
                .or(self.max_bytes.is_none().then_some(DEFAULT_MAX_ENTRIES)),
            max_bytes: self.max_bytes,
            max_entries_per_user: 1,
            stale_for: self.stale_for,
            idle_for: self.ttl,
            weigher,
        };
        Ok(IntegrationCache {
            store: Store::new(config, Arc::new(Counters::default())),
            flights: Arc::default(),
            ttl: self.ttl,
            item_count: self.item_count.unwrap_or_else(|| Arc::new(|_: &V| 1)),
        })
    }
}
