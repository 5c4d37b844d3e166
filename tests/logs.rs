//! Assertions on captured `tracing` output.
//!
//! They live in their own test binary: tracing caches each call site's interest process-wide,
//! and a test thread that logs with no subscriber can make a call site look disabled to a
//! capturing test running beside it.

mod support;

use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use integration_cache::http::{Anonymous, IntegrationCacheLayer};
use integration_cache::{IntegrationCache, RetryConfig};
use tower::{service_fn, ServiceBuilder, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn exact(max_retries: u32) -> RetryConfig {
    RetryConfig::default()
        .with_jitter(false)
        .with_max_retries(max_retries)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_programmatic_api_logs_the_seed_messages_and_fields() {
    let logs = support::capture_logs();
    let cache: IntegrationCache<Vec<&'static str>> = IntegrationCache::builder()
        .item_count(Vec::len)
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let fetch = || {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(ms(245)).await;
            if n == 0 {
                Err(io::Error::from(io::ErrorKind::ConnectionRefused))
            } else {
                Ok(vec!["a", "b", "c"])
            }
        }
    };
    cache.get_or_fetch(&123, fetch, &exact(3)).await.unwrap();
    cache.get_or_fetch(&123, fetch, &exact(3)).await.unwrap();
    let _ = cache
        .get_or_fetch(
            &456,
            || async { Err::<Vec<&str>, _>(io::Error::other("Network error")) },
            &exact(0),
        )
        .await;
    let text = logs.text();
    for expected in [
        "INFO integration_cache::cache: Cache miss, fetching fresh data user_id=123",
        "INFO integration_cache::retry::fetch: Retry attempt attempt=2 max_retries=3 user_id=123",
        "INFO integration_cache::cache: Fresh data fetched and cached user_id=123 item_count=3 duration_ms=590",
        "INFO integration_cache::cache: Cache hit user_id=123 item_count=3 duration_ms=0",
        "WARN integration_cache::retry::fetch: Non-retryable error, not retrying user_id=456 attempt=1 error=Network error",
        "ERROR integration_cache::cache: Failed to get cached integrations user_id=456 duration_ms=0 error=FETCH_FAILED",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn each_request_gets_a_span_with_user_outcome_and_duration() {
    let logs = support::capture_logs();
    let layer = IntegrationCacheLayer::builder()
        .user_header("x-user-id")
        .build()
        .unwrap();
    let service = ServiceBuilder::new().layer(layer).service(service_fn(
        |_req: Request<Full<Bytes>>| async {
            tokio::time::sleep(ms(40)).await;
            Ok::<_, Infallible>(Response::new(Full::from("status")))
        },
    ));
    for _ in 0..2 {
        let request = Request::get("/s")
            .header("x-user-id", "ann")
            .body(Full::default())
            .unwrap();
        let response = service.clone().oneshot(request).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    let text = logs.text();
    let lines = served(&text);
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with(
            "DEBUG integration_cache{method=GET uri=/s user=\"ann\" outcome=\"MISS\" status=200 duration_ms=40.0}"
        ),
        "{text}"
    );
    assert!(
        lines[1].contains("outcome=\"HIT\" status=200 duration_ms=0.0"),
        "{text}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_rejected_anonymous_request_gets_its_span_too() {
    let logs = support::capture_logs();
    let layer = IntegrationCacheLayer::builder()
        .user_header("x-user-id")
        .anonymous(Anonymous::Reject)
        .build()
        .unwrap();
    let service = ServiceBuilder::new().layer(layer).service(service_fn(
        |_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::from("status")))
        },
    ));
    let request = Request::get("/s").body(Full::default()).unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 401);
    let text = logs.text();
    let lines = served(&text);
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("outcome=\"BYPASS\" status=401"), "{text}");
}

/// The layer's per-request log lines.
fn served(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.contains("request served"))
        .collect()
}
