//! [`RetryLayer`]: tower's `Retry` driven by an HTTP-aware [`RetryPolicy`].

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};
use tower_layer::Layer;

use super::RetryConfig;
use crate::error::{is_transient, ConfigError};

/// A service wrapped by [`RetryLayer`].
pub type RetryService<S> = tower::retry::Retry<RetryPolicy, S>;

/// Retries failed HTTP requests with exponential backoff.
///
/// A request is retried when all of these hold:
/// - its method is idempotent (`GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`) and its body is
///   empty, so it can be sent again as it was;
/// - the attempt failed with a connection-level error (refused, reset, timed out, DNS, see
///   [`is_transient`]) or a `502`/`503`/`504`, or a `429` that carries `Retry-After`;
/// - fewer than `max_retries` retries were made, the deadline (if set) leaves room for the next
///   wait, and the shared [`RetryBudget`] has a token.
///
/// The wait is the [`RetryConfig`] backoff, or the upstream's `Retry-After` when that is longer,
/// never more than `max_delay`.
///
/// ```
/// use integration_cache::{RetryConfig, RetryLayer};
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let calls = Arc::new(AtomicU32::new(0));
/// let counted = calls.clone();
/// let service = ServiceBuilder::new()
///     .layer(RetryLayer::new(RetryConfig::default()))
///     .service(service_fn(move |_req: http::Request<String>| {
///         // Fails twice with 503, then succeeds.
///         let status = if counted.fetch_add(1, Ordering::SeqCst) < 2 { 503 } else { 200 };
///         async move { Ok::<_, std::convert::Infallible>(http::Response::builder().status(status).body(String::new()).unwrap()) }
///     }));
/// let response = service.oneshot(http::Request::new(String::new())).await.unwrap();
/// assert_eq!(response.status(), 200);
/// assert_eq!(calls.load(Ordering::SeqCst), 3);
/// # }
/// ```
///
/// # Clone
///
/// tower's `Retry` clones the wrapped service and this policy into every response future, so
/// both must be `Clone`. The policy's per-request state (the attempt count) lives in that clone;
/// the budget is shared behind an `Arc` by every clone.
#[derive(Debug, Clone)]
#[must_use]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    /// Retries as `config` says, with the default budget and no deadline.
    pub fn new(config: RetryConfig) -> Self {
        Self {
            policy: RetryPolicy {
                config,
                budget: RetryBudget::default(),
                deadline: None,
                attempts: 0,
                started: None,
            },
        }
    }

    /// Shares `budget` between the requests of this layer (and of any other layer given a clone).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.policy.budget = budget;
        self
    }

    /// Starts no retry whose wait would end more than `deadline` after the first attempt began.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.policy.deadline = Some(deadline);
        self
    }

    /// The policy, for `tower::retry::Retry::new`.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = RetryService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        tower::retry::Retry::new(self.policy.clone(), inner)
    }
}

/// A budget of retries shared by many requests: retries may add at most a set fraction of the
/// requests seen over a sliding window (plus a small floor), so an upstream that is down gets
/// roughly its normal load, not `max_retries + 1` times it.
///
/// A thin wrapper over tower's [`TpsBudget`], which checks its arguments by panicking; this one
/// returns a [`ConfigError`] instead.
#[derive(Clone)]
pub struct RetryBudget(Arc<TpsBudget>);

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RetryBudget").finish()
    }
}

impl Default for RetryBudget {
    /// Retries up to 20% of requests over 10 s, and always at least 10 per second.
    fn default() -> Self {
        Self(Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)))
    }
}

impl RetryBudget {
    /// Retries may add `ratio` of the requests seen over `window`, plus `min_per_sec` per second.
    ///
    /// # Errors
    ///
    /// `window` outside 1..=60 s, `min_per_sec` of `i32::MAX` or more, or `ratio` outside
    /// 0.0..=1000.0.
    pub fn new(window: Duration, min_per_sec: u32, ratio: f32) -> Result<Self, ConfigError> {
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&window) {
            return Err(ConfigError::new(
                "retry_budget.window",
                "use a window between 1 s and 60 s",
            ));
        }
        // tower asserts this; a floor that high means no budget at all.
        if min_per_sec >= i32::MAX as u32 {
            return Err(ConfigError::new(
                "retry_budget.min_per_sec",
                "use a floor below 2147483647 retries per second; for no budget at all, use a large ratio",
            ));
        }
        if !(0.0..=1000.0).contains(&ratio) {
            return Err(ConfigError::new(
                "retry_budget.ratio",
                "use a ratio between 0.0 (no retries beyond the floor) and 1000.0; 0.2 allows 20% extra load",
            ));
        }
        Ok(Self(Arc::new(TpsBudget::new(window, min_per_sec, ratio))))
    }

    fn deposit(&self) {
        self.0.deposit();
    }

    fn withdraw(&self) -> bool {
        self.0.withdraw()
    }
}

/// What the retries of one request came to; put one in the request's extensions to read it
/// after the response (the cache layer does).
#[derive(Debug, Clone, Default)]
pub struct RetryReport(Arc<ReportCells>);

#[derive(Debug, Default)]
struct ReportCells {
    retries: AtomicU32,
    exhausted: AtomicBool,
}

impl RetryReport {
    /// Retries made after the first attempt.
    pub fn retries(&self) -> u32 {
        self.0.retries.load(Ordering::Relaxed)
    }

    /// Whether the last attempt failed in a retryable way and no retry was allowed (count,
    /// deadline or budget).
    pub fn exhausted(&self) -> bool {
        self.0.exhausted.load(Ordering::Relaxed)
    }
}

/// The policy behind [`RetryLayer`]; see there for the rules.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    config: RetryConfig,
    budget: RetryBudget,
    deadline: Option<Duration>,
    attempts: u32,
    started: Option<Instant>,
}

/// Errors the policy can judge: anything that is a `std::error::Error` (hyper-util's client
/// error, `std::io::Error`, `Infallible`, ...).
pub trait TransientError {
    /// Whether a new attempt might succeed.
    fn is_transient(&self) -> bool;
}

impl<E: std::error::Error + 'static> TransientError for E {
    fn is_transient(&self) -> bool {
        is_transient(self)
    }
}

impl<B, ResB, E> tower::retry::Policy<Request<B>, Response<ResB>, E> for RetryPolicy
where
    B: Body + Default,
    E: TransientError,
{
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        req: &mut Request<B>,
        result: &mut Result<Response<ResB>, E>,
    ) -> Option<Self::Future> {
        self.attempts += 1;
        let report = req.extensions().get::<RetryReport>();
        let retry_after = match result {
            Ok(response) => retryable_status(response)?,
            Err(error) if error.is_transient() => None,
            Err(_) => return None,
        };
        let retry = self.attempts;
        let backoff = self.config.delay_before_retry(retry);
        let wait = retry_after
            .map_or(backoff, |after| after.max(backoff))
            .min(self.config.max_delay());
        let past_deadline = match (self.deadline, self.started) {
            (Some(deadline), Some(started)) => match (
                Instant::now().checked_add(wait),
                started.checked_add(deadline),
            ) {
                (Some(next_attempt), Some(deadline)) => next_attempt > deadline,
                _ => false,
            },
            _ => false,
        };
        if retry > self.config.max_retries() || past_deadline || !self.budget.withdraw() {
            if let Some(report) = report {
                report.0.exhausted.store(true, Ordering::Relaxed);
            }
            tracing::debug!(attempts = self.attempts, past_deadline, "retries exhausted");
            return None;
        }
        if let Some(report) = report {
            report.0.retries.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(retry, wait_ms = wait.as_millis() as u64, "retrying request");
        Some(tokio::time::sleep(wait))
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        // tower calls this on the service's own policy for each new request (whose attempt
        // count stays 0) and on the response future's copy before each retry: so this is
        // once per request.
        if self.attempts == 0 {
            self.started = Some(Instant::now());
            self.budget.deposit();
        }
        if !is_idempotent(req.method()) || !req.body().is_end_stream() {
            return None;
        }
        let mut clone = Request::new(B::default());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.version_mut() = req.version();
        *clone.headers_mut() = req.headers().clone();
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// `Some(retry_after)` when the response is worth retrying.
fn retryable_status<B>(response: &Response<B>) -> Option<Option<Duration>> {
    let retry_after = || parse_retry_after(response.headers().get(http::header::RETRY_AFTER)?);
    match response.status() {
        StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => Some(None),
        StatusCode::SERVICE_UNAVAILABLE => Some(retry_after()),
        StatusCode::TOO_MANY_REQUESTS => retry_after().map(Some),
        _ => None,
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date.
pub(crate) fn parse_retry_after(value: &http::HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("3")),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }

    #[test]
    fn statuses_worth_retrying() {
        let with = |status: u16, retry_after: Option<&'static str>| {
            let mut builder = Response::builder().status(status);
            if let Some(v) = retry_after {
                builder = builder.header("retry-after", v);
            }
            retryable_status(&builder.body(()).unwrap())
        };
        assert_eq!(with(502, None), Some(None));
        assert_eq!(with(503, Some("1")), Some(Some(Duration::from_secs(1))));
        assert_eq!(
            with(429, None),
            None,
            "429 without Retry-After is the client's problem"
        );
        assert_eq!(with(429, Some("2")), Some(Some(Duration::from_secs(2))));
        assert_eq!(with(500, None), None);
        assert_eq!(with(200, None), None);
    }

    #[test]
    fn invalid_budgets_are_rejected() {
        assert!(RetryBudget::new(Duration::from_millis(10), 1, 0.2).is_err());
        assert!(RetryBudget::new(Duration::from_secs(10), 1, -1.0).is_err());
        assert!(RetryBudget::new(Duration::from_secs(10), 1, 0.2).is_ok());
        // tower would panic on these.
        let floor = RetryBudget::new(Duration::from_secs(10), u32::MAX, 0.2).unwrap_err();
        assert_eq!(floor.setting(), "retry_budget.min_per_sec");
        assert!(RetryBudget::new(Duration::from_secs(10), 1, f32::NAN).is_err());
    }
}
