//! [`IntegrationCacheLayer`] and its builder.

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::StatusCode;
use tower_layer::Layer;

use super::handle::CacheHandle;
use super::policy::{CachePolicy, DefaultPolicy, Rules, DEFAULT_STATUSES};
use super::service::IntegrationCacheService;
use super::state::{Anonymous, LayerState};
use super::stored::StoredResponse;
use super::user::{ExtensionUser, Extractor, HeaderUser, UserExtractor};
use crate::cache::CACHE_TTL;
use crate::error::ConfigError;
use crate::retry::{RetryBudget, RetryConfig, RetryLayer};
use crate::store::counters::Counters;
use crate::store::{check_bound, check_duration, Store, StoreConfig};

/// The largest body stored by default (1 MiB); larger ones stream through uncached.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// The default bound on stored responses.
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;
/// The default bound on the bytes of stored responses (256 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
/// The default bound on one user's stored responses (one per route they call).
pub const DEFAULT_MAX_ENTRIES_PER_USER: usize = 64;

/// A tower layer that caches responses per authenticated user; see the [module docs](super).
///
/// Cheap to clone: clones share one store. Every service it makes shares it too, so one layer
/// can sit on many routes.
#[derive(Clone, Debug)]
pub struct IntegrationCacheLayer {
    state: Arc<LayerState>,
}

impl IntegrationCacheLayer {
    /// Configures a layer.
    pub fn builder() -> IntegrationCacheLayerBuilder {
        IntegrationCacheLayerBuilder::default()
    }

    /// A layer with every default, reading the user from a [`UserId`](super::UserId) request
    /// extension.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("the default configuration is valid")
    }

    /// A handle to invalidate, clear and read stats from the app.
    pub fn handle(&self) -> CacheHandle {
        CacheHandle::new(self.state.clone())
    }
}

impl Default for IntegrationCacheLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for IntegrationCacheLayer {
    type Service = IntegrationCacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IntegrationCacheService {
            inner,
            state: self.state.clone(),
        }
    }
}

/// Configures an [`IntegrationCacheLayer`]. Every setting has a default; [`build`](Self::build)
/// checks them all at once.
#[must_use]
pub struct IntegrationCacheLayerBuilder {
    extractor: Result<Extractor, ConfigError>,
    policy: Box<dyn CachePolicy>,
    ttl: Duration,
    max_entries: Option<u64>,
    max_bytes: Option<u64>,
    max_entries_per_user: usize,
    max_body: usize,
    statuses: Vec<u16>,
    respect_cache_control: bool,
    stale_if_error: Duration,
    anonymous: Anonymous,
    retry: RetryConfig,
    budget: RetryBudget,
    deadline: Option<Duration>,
}

impl Default for IntegrationCacheLayerBuilder {
    fn default() -> Self {
        Self {
            extractor: Ok(Extractor::Extension(ExtensionUser::new())),
            policy: Box::new(DefaultPolicy),
            ttl: CACHE_TTL,
            max_entries: Some(DEFAULT_MAX_ENTRIES),
            max_bytes: Some(DEFAULT_MAX_BYTES),
            max_entries_per_user: DEFAULT_MAX_ENTRIES_PER_USER,
            max_body: DEFAULT_MAX_BODY,
            statuses: DEFAULT_STATUSES.to_vec(),
            respect_cache_control: false,
            stale_if_error: Duration::ZERO,
            anonymous: Anonymous::Bypass,
            retry: RetryConfig::default(),
            budget: RetryBudget::default(),
            deadline: None,
        }
    }
}

impl std::fmt::Debug for IntegrationCacheLayerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegrationCacheLayerBuilder")
            .field("ttl", &self.ttl)
            .field("max_entries", &self.max_entries)
            .field("max_bytes", &self.max_bytes)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl IntegrationCacheLayerBuilder {
    /// Where the user comes from. Default: a [`UserId`](super::UserId) request extension, set by
    /// the app's auth middleware.
    pub fn user(mut self, extractor: impl UserExtractor) -> Self {
        self.extractor = Ok(Extractor::Other(Box::new(extractor)));
        self
    }

    /// Takes the user from the header `name` (see [`HeaderUser`]: only behind a gateway that
    /// sets it).
    pub fn user_header(mut self, name: &str) -> Self {
        self.extractor = HeaderName::from_bytes(name.as_bytes())
            .map(|name| Extractor::Header(HeaderUser::new(name)))
            .map_err(|_| {
                ConfigError::new(
                    "user_header",
                    format!("{name:?} is not a valid header name; use e.g. \"x-user-id\""),
                )
            });
        self
    }

    /// Narrows what is stored; see [`CachePolicy`].
    pub fn policy(mut self, policy: impl CachePolicy) -> Self {
        self.policy = Box::new(policy);
        self
    }

    /// How long a stored response is served. Default [`CACHE_TTL`] (5 minutes).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// At most this many stored responses. Default 100 000.
    pub fn max_entries(mut self, max_entries: u64) -> Self {
        self.max_entries = Some(max_entries);
        self
    }

    /// At most this many bytes of stored responses. Default 256 MiB.
    ///
    /// A response counts its body, its header text, about 112 bytes per header (the map's
    /// entry) and about 640 bytes for the rest of its entry, which is close to what the
    /// allocator holds for it. With `max_entries` set too, a response counts at least
    /// `max_bytes / max_entries`, so both bounds hold.
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = Some(max_bytes);
        self
    }

    /// At most this many stored responses for one user. Default 64.
    pub fn max_entries_per_user(mut self, max: usize) -> Self {
        self.max_entries_per_user = max;
        self
    }

    /// Bodies larger than this stream through without being stored. Default 1 MiB.
    pub fn max_body(mut self, max_body: usize) -> Self {
        self.max_body = max_body;
        self
    }

    /// The statuses that may be stored. Default 200, 203, 204, 300, 301, 404, 410.
    pub fn cacheable_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.statuses = statuses.into_iter().collect();
        self
    }

    /// Lets the upstream's `Cache-Control` (`no-cache`, `max-age`, `s-maxage`) and `Expires`
    /// shorten the TTL. Default off: the configured TTL applies (`no-store` is always obeyed).
    pub fn respect_cache_control(mut self, respect: bool) -> Self {
        self.respect_cache_control = respect;
        self
    }

    /// When the upstream fails (no response, or 500/502/503/504 after retries), serve an entry
    /// that expired less than `window` ago, marked `X-Cache: STALE`. Default off (zero).
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = window;
        self
    }

    /// What to do with requests that have no valid user. Default [`Anonymous::Bypass`].
    pub fn anonymous(mut self, anonymous: Anonymous) -> Self {
        self.anonymous = anonymous;
        self
    }

    /// The retry schedule for upstream calls. Default [`RetryConfig::default`].
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// The budget retries draw from. Default: 20% of requests over 10 s.
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = budget;
        self
    }

    /// The longest a miss may take, retries included, before the layer answers `504`
    /// (or serves stale). Default none.
    ///
    /// It counts from the request's start whatever the miss does: fetch for everyone, wait for
    /// another request's answer (its body included), or fetch for itself when that answer could
    /// not be shared (`no-store`, `Vary: *`, a body over `max_body`) or was for other `Vary`
    /// headers. A `HEAD` miss has it too. Requests the cache does not handle (mutations,
    /// anonymous ones, those the policy rules out) are not bounded by it.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Checks the configuration and makes the layer.
    ///
    /// # Errors
    ///
    /// An invalid user header name; a zero or over-long TTL; bounds of zero or over 2^50; a
    /// cacheable status that is not a valid status code; a zero deadline.
    pub fn build(self) -> Result<IntegrationCacheLayer, ConfigError> {
        let extractor = self.extractor?;
        check_duration("ttl", self.ttl, None)?;
        check_duration(
            "stale_if_error",
            self.stale_if_error,
            Some("zero turns it off"),
        )?;
        check_bound("max_entries", self.max_entries)?;
        check_bound("max_bytes", self.max_bytes)?;
        if self.max_entries_per_user == 0 {
            return Err(ConfigError::new(
                "max_entries_per_user",
                "must be at least 1 (default 64)",
            ));
        }
        let statuses = self
            .statuses
            .iter()
            .map(|&code| {
                StatusCode::from_u16(code).map_err(|_| {
                    ConfigError::new(
                        "cacheable_statuses",
                        format!("{code} is not an HTTP status (100-999)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.deadline.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "deadline",
                "a zero deadline would fail every miss; leave it unset for none",
            ));
        }
        let config = StoreConfig {
            max_entries: self.max_entries,
            max_bytes: self.max_bytes,
            max_entries_per_user: self.max_entries_per_user,
            stale_for: self.stale_if_error,
            idle_for: self.ttl.max(self.deadline.unwrap_or_default()),
            weigher: Arc::new(|stored: &Arc<StoredResponse>| stored.weight()),
        };
        let mut retry = RetryLayer::new(self.retry).budget(self.budget);
        if let Some(deadline) = self.deadline {
            retry = retry.deadline(deadline);
        }
        let state = LayerState {
            store: Store::new(config, Arc::new(Counters::default())),
            flights: Arc::default(),
            extractor,
            policy: self.policy,
            rules: Rules {
                ttl: self.ttl,
                statuses,
                respect_cache_control: self.respect_cache_control,
            },
            max_body: self.max_body,
            stale_if_error: !self.stale_if_error.is_zero(),
            anonymous: self.anonymous,
            deadline: self.deadline,
            retry: retry.policy().clone(),
            route_hasher: foldhash::fast::RandomState::default(),
        };
        Ok(IntegrationCacheLayer {
            state: Arc::new(state),
        })
    }
}
