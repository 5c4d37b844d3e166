//! What every clone of the layer and its services shares.

use std::sync::Arc;
use std::time::Duration;

use super::policy::{CachePolicy, Rules};
use super::respond::Served;
use super::stored::StoredResponse;
use super::user::{Extractor, UserId};
use crate::coalesce::Flights;
use crate::retry::RetryPolicy;
use crate::store::Store;

/// What to do with a request that has no (valid) user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Anonymous {
    /// Pass it through uncached, marked `X-Cache: BYPASS` (the default).
    #[default]
    Bypass,
    /// Answer `401 Unauthorized` with a JSON error; nothing reaches the upstream.
    Reject,
}

/// The store of the HTTP layer: per user, per route, a stored response. The route is keyed by
/// its 64-bit hash, so a user's one entry, kept inline in the store's table, holds 8 bytes for
/// it rather than a string; the stored response carries the route key itself and every hit
/// checks it.
pub(crate) type ResponseStore = Store<UserId, u64, Arc<StoredResponse>>;

/// One flight per user, route key and user generation: a request that begins after an
/// invalidation never joins a fetch that began before it.
pub(crate) type FlightKey = (UserId, Arc<str>, u64);

/// What a leader hands its waiters.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Answer with this response.
    Response(Arc<StoredResponse>, Served),
    /// The leader's response cannot be shared (too large, `no-store`): ask the upstream yourself.
    FetchYourself,
}

pub(crate) struct LayerState {
    pub(crate) store: ResponseStore,
    pub(crate) flights: Arc<Flights<FlightKey, Outcome>>,
    pub(crate) extractor: Extractor,
    pub(crate) policy: Box<dyn CachePolicy>,
    pub(crate) rules: Rules,
    pub(crate) max_body: usize,
    pub(crate) stale_if_error: bool,
    pub(crate) anonymous: Anonymous,
    pub(crate) deadline: Option<Duration>,
    /// The policy every upstream call goes through (a template: tower clones it per request).
    pub(crate) retry: RetryPolicy,
    pub(crate) route_hasher: foldhash::fast::RandomState,
}

impl LayerState {
    /// The store key of a route key.
    pub(crate) fn route_hash(&self, key: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.route_hasher, key)
    }
}

impl std::fmt::Debug for LayerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerState")
            .field("rules", &self.rules)
            .field("max_body", &self.max_body)
            .field("stale_if_error", &self.stale_if_error)
            .field("anonymous", &self.anonymous)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
