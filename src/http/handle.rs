//! [`CacheHandle`]: the app's view of a layer's store.

use std::sync::Arc;

use super::state::LayerState;
use crate::store::counters::Event;

/// Invalidates, clears and reports on the store of an
/// [`IntegrationCacheLayer`](super::IntegrationCacheLayer). Cheap to clone.
#[derive(Clone, Debug)]
pub struct CacheHandle {
    state: Arc<LayerState>,
}

/// What the layer has done since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct LayerStats {
    /// Stored responses in memory (fresh, or expired and kept for stale-if-error).
    pub entries: usize,
    /// Responses served from the store.
    pub hits: u64,
    /// Cacheable requests that went upstream.
    pub misses: u64,
    /// Requests the cache stayed out of (anonymous, mutations, other methods, uncacheable).
    pub bypasses: u64,
    /// Expired responses served because the upstream failed.
    pub stale: u64,
    /// Misses that waited for another request's upstream call instead of making their own.
    pub coalesced: u64,
    /// Retries made by the retry layer.
    pub retries: u64,
    /// Responses stored.
    pub stored: u64,
    /// Responses dropped to stay within the bounds.
    pub evictions: u64,
    /// Responses reclaimed after they expired.
    pub expirations: u64,
    /// Responses dropped by invalidation (mutations, `invalidate`, `clear`).
    pub invalidations: u64,
    /// Weight held by the store, in the unit of its bound (bytes when a byte bound is set).
    pub weight: u64,
    /// The store's capacity in the same unit.
    pub capacity: u64,
}

impl LayerStats {
    /// `hits / (hits + misses)`, or 0 before any cacheable request.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

impl CacheHandle {
    pub(crate) fn new(state: Arc<LayerState>) -> Self {
        Self { state }
    }

    /// Drops every stored response of `user`; a response being fetched for them right now
    /// will not be stored. Returns how many were dropped.
    pub fn invalidate(&self, user: &str) -> usize {
        let dropped = self.state.store.invalidate(user);
        tracing::info!(user_id = user, item_count = dropped, "Cache invalidated");
        dropped
    }

    /// Drops every stored response.
    pub fn clear(&self) {
        let count = self.state.store.len();
        self.state.store.clear();
        tracing::info!(item_count = count, "Cache cleared");
    }

    /// Counters and sizes. O(1): reads striped counters.
    pub fn stats(&self) -> LayerStats {
        let store = &self.state.store;
        let counters = store.counters();
        let (weight, capacity) = store.weight();
        LayerStats {
            entries: store.len(),
            hits: counters.get(Event::Hit),
            misses: counters.get(Event::Miss),
            bypasses: counters.get(Event::Bypass),
            stale: counters.get(Event::StaleServed),
            coalesced: counters.get(Event::Coalesced),
            retries: counters.get(Event::Retry),
            stored: counters.get(Event::Stored),
            evictions: counters.get(Event::Eviction),
            expirations: counters.get(Event::Expiration),
            invalidations: counters.get(Event::Invalidation),
            weight,
            capacity,
        }
    }
}
