//! The retry loop for fetch closures (the programmatic API's miss path).

use std::fmt;
use std::future::Future;

use tracing::{info, warn};

use super::RetryConfig;
use crate::error::{is_transient, BoxError, CacheError, CacheErrorKind};

/// Runs `fetch` until it succeeds, a non-retryable error occurs, or `config` allows no more
/// attempts. Returns the value and the number of attempts it took.
pub(crate) async fn fetch_with_retry<V, E, F, Fut, U>(
    config: &RetryConfig,
    user: &U,
    mut fetch: F,
) -> Result<(V, u32), CacheError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<V, E>>,
    E: Into<BoxError>,
    U: fmt::Display + ?Sized,
{
    let max_retries = config.max_retries();
    let mut attempt: u32 = 1;
    loop {
        if attempt > 1 {
            info!(attempt, max_retries, user_id = %user, "Retry attempt");
        }
        let error: BoxError = match fetch().await {
            Ok(value) => return Ok((value, attempt)),
            Err(error) => error.into(),
        };
        if !is_transient(&*error) {
            warn!(user_id = %user, attempt, error = %error, "Non-retryable error, not retrying");
            let message = format!(
                "fetch for user {user} failed with an error that is not a network failure \
                 ({error}); retrying would not help, fix the fetch or the data it reads"
            );
            return Err(CacheError::new(CacheErrorKind::FetchFailed, message)
                .with_retryable(false)
                .with_attempts(attempt)
                .with_source(error));
        }
        if attempt > max_retries {
            warn!(user_id = %user, attempts = attempt, error = %error, "Retry exhausted");
            let message = format!(
                "fetch for user {user} failed {attempt} times, last with: {error}; \
                 check that the upstream is reachable, or allow more retries in RetryConfig"
            );
            return Err(CacheError::new(CacheErrorKind::RetryExhausted, message)
                .with_attempts(attempt)
                .with_source(error));
        }
        tokio::time::sleep(config.delay_before_retry(attempt)).await;
        attempt += 1;
    }
}
