//! A per-user response cache with retries for slow per-user HTTP APIs.
//!
//! Three fronts over one store:
//! - [`IntegrationCache`]: the programmatic API (`get`, `set`, `get_or_fetch`, ...);
//! - [`IntegrationCacheLayer`]: the tower middleware, for axum and hyper apps and proxies;
//! - [`RetryLayer`]: retries with backoff and a budget for any tower HTTP service;
//! - `proxy` (feature `proxy`, on by default): the reverse proxy behind
//!   `examples/reverse_proxy.rs`.
//!
//! Time is read from `tokio::time`, so tests can pause and advance it.

mod cache;
mod coalesce;
mod error;
pub mod http;
#[cfg(feature = "proxy")]
pub mod proxy;
pub mod retry;
mod store;

pub use crate::cache::{
    CacheStats, IntegrationCache, IntegrationCacheBuilder, CACHE_TTL, CLEANUP_INTERVAL,
};
pub use crate::error::{is_transient, BoxError, CacheError, CacheErrorKind, ConfigError};
pub use crate::http::{CacheHandle, IntegrationCacheLayer, IntegrationCacheService, LayerStats};
pub use crate::retry::{RetryConfig, RetryLayer, DEFAULT_RETRY_CONFIG};
