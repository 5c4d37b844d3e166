//! Retries with exponential backoff: [`RetryConfig`] for fetch closures, [`RetryLayer`] for HTTP.
//!
//! Both follow the same schedule (see [`RetryConfig`]). The HTTP layer adds what an HTTP client
//! needs on top: it retries only idempotent requests with an empty body, on connection errors and
//! `502`/`503`/`504` (and `429` with `Retry-After`), honours `Retry-After` up to `max_delay`,
//! and draws every retry from a shared [`RetryBudget`] so a failing upstream is not hammered.

mod config;
pub(crate) mod fetch;
mod http;

pub use self::config::{RetryConfig, DEFAULT_RETRY_CONFIG};
pub use self::http::{
    RetryBudget, RetryLayer, RetryPolicy, RetryReport, RetryService, TransientError,
};
