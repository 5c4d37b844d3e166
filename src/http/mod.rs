//! [`IntegrationCacheLayer`]: a tower middleware that caches HTTP responses per authenticated
//! user.
//!
//! ```text
//! request ─▶ user? ──no──▶ BYPASS (or 401) ─────────────────────────────▶ inner service
//!              │yes
//!              ├─ POST/PUT/PATCH/DELETE ─▶ inner, then drop the user's entries
//!              ├─ GET/HEAD, fresh entry (key: user, path, query, Vary) ─▶ HIT from memory
//!              └─ GET miss ─▶ one coalesced call through RetryLayer ─▶ stored, MISS
//! ```
//!
//! Every response carries `X-Cache` (`HIT`, `MISS`, `BYPASS` or `STALE`) and an RFC 9211
//! `Cache-Status`; hits carry `Age`. Failures of the upstream become responses (`502`/`504`
//! with a JSON body naming `RETRY_EXHAUSTED`, or a stale entry), never errors, so axum needs no
//! `HandleErrorLayer`.
//!
//! # Example
//!
//! ```
//! use axum::{routing::get, Router};
//! use integration_cache::http::{IntegrationCacheLayer, UserId};
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let upstream_calls = Arc::new(AtomicU32::new(0));
//! let calls = upstream_calls.clone();
//! let layer = IntegrationCacheLayer::builder().user_header("x-user-id").build().unwrap();
//! let app = Router::new()
//!     .route("/api/integrations/status", get(move || {
//!         calls.fetch_add(1, Ordering::SeqCst);
//!         async { "[\"github\"]" }
//!     }))
//!     .layer(layer.clone());
//!
//! let request = || {
//!     http::Request::get("/api/integrations/status")
//!         .header("x-user-id", "user-1")
//!         .body(axum::body::Body::empty())
//!         .unwrap()
//! };
//! let first = app.clone().oneshot(request()).await.unwrap();
//! assert_eq!(first.headers()["x-cache"], "MISS");
//! axum::body::to_bytes(first.into_body(), usize::MAX).await.unwrap(); // the body completes the entry
//!
//! let second = app.clone().oneshot(request()).await.unwrap();
//! assert_eq!(second.headers()["x-cache"], "HIT");
//! assert_eq!(upstream_calls.load(Ordering::SeqCst), 1);
//! assert_eq!(layer.handle().stats().hits, 1);
//! # }
//! ```
//!
//! # Request bodies
//!
//! Retrying a request means sending it again, so the request body type must implement
//! `Default` (an empty body): axum's `Body`, `Full`, `Empty` and boxed bodies do. Only requests
//! with an empty body are retried. To use the layer directly on hyper's `Incoming`, map the
//! body first (`req.map(axum::body::Body::new)` or `BodyExt::boxed`).

mod body;
mod forward;
mod future;
mod handle;
mod hop_by_hop;
#[cfg(feature = "jwt")]
mod jwt;
mod key;
mod layer;
mod packed;
mod policy;
mod record;
mod respond;
mod service;
mod shared_head;
mod state;
mod stored;
mod user;

pub use self::body::CacheBody;
pub use self::future::ResponseFuture;
pub use self::handle::{CacheHandle, LayerStats};
// The proxy strips hop-by-hop headers from what it forwards, as the layer does from what it stores.
#[cfg(feature = "proxy")]
pub(crate) use self::hop_by_hop::strip_hop_by_hop;
#[cfg(feature = "jwt")]
pub use self::jwt::JwtUser;
pub use self::layer::{
    IntegrationCacheLayer, IntegrationCacheLayerBuilder, DEFAULT_MAX_BODY, DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ENTRIES, DEFAULT_MAX_ENTRIES_PER_USER,
};
pub use self::policy::{CachePolicy, DefaultPolicy};
#[cfg(feature = "proxy")]
pub(crate) use self::respond::error_response;
pub use self::service::IntegrationCacheService;
pub use self::state::Anonymous;
pub use self::user::{ExtensionUser, HeaderUser, UserExtractor, UserId, UserRef};
