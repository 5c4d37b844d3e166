//! `IntegrationCacheLayer` in process: `ServiceBuilder` + `service_fn` upstreams, `oneshot`,
//! and paused tokio time, so TTLs, backoff and deadlines are virtual and exact.

mod support;

use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use integration_cache::http::{
    Anonymous, IntegrationCacheLayer, IntegrationCacheLayerBuilder, UserId,
};
use integration_cache::retry::RetryBudget;
use integration_cache::{RetryConfig, CACHE_TTL};
use support::{read, Answer};
use tokio::time::{advance, Instant};
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

type Req = Request<Full<Bytes>>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn builder() -> IntegrationCacheLayerBuilder {
    IntegrationCacheLayer::builder()
        .user_header("x-user-id")
        .retry(RetryConfig::default().with_jitter(false))
}

/// An upstream that answers `<user>:<path?query>:<call number>` and counts its calls.
#[derive(Clone, Default)]
struct Echo {
    calls: Arc<AtomicU32>,
}

impl Echo {
    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    fn service(
        &self,
        layer: IntegrationCacheLayer,
    ) -> impl Service<
        Req,
        Response = Response<integration_cache::http::CacheBody<Full<Bytes>>>,
        Error = Infallible,
        Future: Send,
    > + Clone
           + Send
           + 'static {
        let calls = self.calls.clone();
        ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(move |req: Req| {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    let user = req
                        .headers()
                        .get("x-user-id")
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                        .unwrap_or_default();
                    let target = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    Ok::<_, Infallible>(Response::new(Full::from(format!("{user}:{target}:{n}"))))
                }
            }))
    }
}

async fn send<S, B>(service: &S, request: Req) -> Answer
where
    S: Service<Req, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    read(service.clone().oneshot(request).await.unwrap()).await
}

fn get(path: &str, user: &str) -> Req {
    Request::get(path)
        .header("x-user-id", user)
        .body(Full::default())
        .unwrap()
}

fn request(method: &str, path: &str, user: Option<&str>) -> Req {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(user) = user {
        builder = builder.header("x-user-id", user);
    }
    builder.body(Full::default()).unwrap()
}

// ---------------------------------------------------------------- user key

#[tokio::test(start_paused = true)]
async fn a_hit_is_served_from_memory_with_its_headers() {
    let echo = Echo::default();
    let layer = builder().build().unwrap();
    let service = echo.service(layer.clone());
    let first = send(&service, get("/status", "ann")).await;
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(
        first.headers["cache-status"],
        "integration-cache; fwd=miss; stored"
    );
    advance(Duration::from_secs(7)).await;
    let second = send(&service, get("/status", "ann")).await;
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.headers["cache-status"], "integration-cache; hit");
    assert_eq!(second.headers["age"], "7");
    assert_eq!(second.text(), "ann:/status:1");
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(echo.calls(), 1);
    let stats = layer.handle().stats();
    assert_eq!((stats.hits, stats.misses, stats.stored), (1, 1, 1));
}

/// A future answers once, as tower's and tower-http's do: a hit's future polled again after
/// its answer panics rather than answering twice.
#[tokio::test(start_paused = true)]
#[should_panic(expected = "polled after completion")]
async fn a_hit_future_polled_after_its_answer_panics() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    let service = Echo::default().service(builder().build().unwrap());
    assert_eq!(
        send(&service, get("/status", "ann")).await.x_cache(),
        "MISS"
    );
    let mut ready = service.clone();
    let mut hit = std::pin::pin!(ready.ready().await.unwrap().call(get("/status", "ann")));
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(Ok(answer)) = hit.as_mut().poll(&mut cx) else {
        panic!("a hit answers on its first poll");
    };
    assert_eq!(answer.headers()["x-cache"], "HIT");
    let _ = hit.as_mut().poll(&mut cx);
}

#[tokio::test(start_paused = true)]
async fn hits_replay_each_responses_own_headers_when_heads_are_shared() {
    // Every user's answer has the same `Content-Type`, `Cache-Control` and `Link` (two lines),
    // so their heads are shared; `Date` and `ETag` are each response's own, and users 0 and 1
    // also carry a header with their name, so theirs are not shared at all. (That sharing
    // happens is shown where it is decided: `stored.rs` and `shared_head.rs` unit tests.)
    let (service, calls) = counting(builder().build().unwrap(), |req: Req| {
        let user = req.headers()["x-user-id"].to_str().unwrap().to_owned();
        async move {
            let mut response = Response::builder()
                .header("content-type", "application/json")
                .header("cache-control", "max-age=300")
                .header("link", "</a>; rel=preload")
                .header("link", "</b>; rel=preload")
                .header("date", format!("date-of-{user}"))
                .header("etag", format!("\"{user}\""));
            if user == "user-0" || user == "user-1" {
                response = response.header("x-owner", user.as_str());
            }
            response.body(Full::from(user)).unwrap()
        }
    });
    let users: Vec<String> = (0..6).map(|i| format!("user-{i}")).collect();
    for round in 0..3 {
        for user in &users {
            let answer = send(&service, get("/profile", user)).await;
            assert_eq!(answer.x_cache(), if round == 0 { "MISS" } else { "HIT" });
            let headers = &answer.headers;
            assert_eq!(answer.text(), *user);
            assert_eq!(headers["date"], format!("date-of-{user}").as_str());
            assert_eq!(headers["etag"], format!("\"{user}\"").as_str());
            assert_eq!(headers["content-type"], "application/json");
            let links: Vec<_> = headers.get_all("link").iter().collect();
            assert_eq!(links, ["</a>; rel=preload", "</b>; rel=preload"], "{user}");
            let owner = headers.get("x-owner").map(|v| v.to_str().unwrap());
            let expected = (user == "user-0" || user == "user-1").then_some(user.as_str());
            assert_eq!(owner, expected);
            if round > 0 {
                assert_eq!(headers["cache-status"], "integration-cache; hit");
                assert_eq!(headers["age"], "0");
                assert_eq!(headers.get_all("x-cache").iter().count(), 1);
            }
        }
    }
    advance(Duration::from_secs(5)).await;
    for user in &users {
        let answer = send(&service, request("HEAD", "/profile", Some(user))).await;
        assert_eq!(answer.x_cache(), "HIT");
        assert_eq!(answer.headers["age"], "5");
        assert_eq!(answer.headers["date"], format!("date-of-{user}").as_str());
        let length = user.len().to_string();
        assert_eq!(answer.headers["content-length"], length.as_str());
        assert_eq!(answer.text(), "");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 6);
}

#[tokio::test(start_paused = true)]
async fn hits_share_the_stored_body_without_copying_it() {
    let echo = Echo::default();
    let service = echo.service(builder().build().unwrap());
    send(&service, get("/status", "ann")).await;
    let body_ptr = |response: Response<integration_cache::http::CacheBody<Full<Bytes>>>| async move {
        let frame = response.into_body().frame().await.unwrap().unwrap();
        frame.into_data().unwrap().as_ptr() as usize
    };
    let a = body_ptr(
        service
            .clone()
            .oneshot(get("/status", "ann"))
            .await
            .unwrap(),
    )
    .await;
    let b = body_ptr(
        service
            .clone()
            .oneshot(get("/status", "ann"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a, b, "both hits point at the one stored buffer");
}

#[tokio::test(start_paused = true)]
async fn users_never_see_each_others_entries() {
    let echo = Echo::default();
    let service = echo.service(builder().build().unwrap());
    assert_eq!(
        send(&service, get("/status", "ann")).await.text(),
        "ann:/status:1"
    );
    let bob = send(&service, get("/status", "bob")).await;
    assert_eq!(bob.x_cache(), "MISS");
    assert_eq!(bob.text(), "bob:/status:2");
    assert_eq!(
        send(&service, get("/status", "ann")).await.text(),
        "ann:/status:1"
    );
    assert_eq!(
        send(&service, get("/status", "bob")).await.text(),
        "bob:/status:2"
    );
}

#[tokio::test(start_paused = true)]
async fn anonymous_requests_bypass_the_cache() {
    let echo = Echo::default();
    let layer = builder().build().unwrap();
    let service = echo.service(layer.clone());
    for n in 1..=2 {
        let answer = send(&service, request("GET", "/status", None)).await;
        assert_eq!(answer.x_cache(), "BYPASS");
        assert_eq!(
            answer.text(),
            format!(":/status:{n}"),
            "never served from the cache"
        );
    }
    assert_eq!(layer.handle().stats().entries, 0, "never stored");
    assert_eq!(layer.handle().stats().bypasses, 2);
}

#[tokio::test(start_paused = true)]
async fn invalid_user_ids_are_no_user() {
    let echo = Echo::default();
    let service = echo.service(builder().build().unwrap());
    let long = "u".repeat(UserId::MAX_LEN + 1);
    for (i, raw) in [&b""[..], b"  ", b"\xc3\x28", long.as_bytes()]
        .into_iter()
        .enumerate()
    {
        let mut req = request("GET", "/status", None);
        req.headers_mut()
            .insert("x-user-id", http::HeaderValue::from_bytes(raw).unwrap());
        let first = send(&service, req).await;
        assert_eq!(first.x_cache(), "BYPASS", "case {i}");
    }
    assert_eq!(echo.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn anonymous_requests_can_be_rejected() {
    let echo = Echo::default();
    let service = echo.service(builder().anonymous(Anonymous::Reject).build().unwrap());
    let answer = send(&service, request("GET", "/status", None)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(answer.headers["www-authenticate"], "Bearer");
    assert_eq!(answer.x_cache(), "BYPASS");
    assert_eq!(
        answer.headers["cache-status"],
        "integration-cache; fwd=bypass; detail=anonymous"
    );
    assert!(answer.headers.get("age").is_none());
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(json["error"]["code"], "UNAUTHENTICATED");
    let head = send(&service, request("HEAD", "/status", None)).await;
    assert_eq!(head.status, StatusCode::UNAUTHORIZED);
    assert_eq!(echo.calls(), 0, "nothing reached the upstream");
}

#[tokio::test(start_paused = true)]
async fn the_user_can_come_from_an_extension_or_a_closure() {
    let echo = Echo::default();
    // The default extractor reads a `UserId` extension set by the app's auth middleware.
    let service = echo.service(IntegrationCacheLayer::new());
    let with_extension = |id: &str| {
        let mut req = request("GET", "/status", None);
        req.extensions_mut().insert(UserId::new(id).unwrap());
        req
    };
    assert_eq!(
        send(&service, with_extension("ann")).await.x_cache(),
        "MISS"
    );
    assert_eq!(send(&service, with_extension("ann")).await.x_cache(), "HIT");
    assert_eq!(
        send(&service, get("/status", "ann")).await.x_cache(),
        "BYPASS",
        "the header is not trusted by default"
    );

    let by_query = builder()
        .user(|parts: &http::request::Parts| {
            parts.uri.query()?.strip_prefix("as=").and_then(UserId::new)
        })
        .build()
        .unwrap();
    let service = echo.service(by_query);
    assert_eq!(
        send(&service, request("GET", "/s?as=zed", None))
            .await
            .x_cache(),
        "MISS"
    );
    assert_eq!(
        send(&service, request("GET", "/s?as=zed", None))
            .await
            .x_cache(),
        "HIT"
    );
}

// ---------------------------------------------------------------- cache key

#[tokio::test(start_paused = true)]
async fn equivalent_targets_share_an_entry_and_go_upstream_normalised() {
    let echo = Echo::default();
    let service = echo.service(builder().build().unwrap());
    let first = send(&service, get("/a/../api//status?b=2&a=1", "ann")).await;
    assert_eq!(
        first.text(),
        "ann:/api/status?a=1&b=2:1",
        "the upstream saw the normalised target"
    );
    for same in [
        "/api/status?a=1&b=2",
        "/api/%73tatus?b=2&a=1&",
        "/api/./status?a=1&b=2",
    ] {
        let answer = send(&service, get(same, "ann")).await;
        assert_eq!(answer.x_cache(), "HIT", "{same}");
    }
    assert_eq!(
        send(&service, get("/api/status/", "ann")).await.x_cache(),
        "MISS",
        "trailing slash differs"
    );
    assert_eq!(
        send(&service, get("/a/../api/status?a=1&b=2", "bob"))
            .await
            .x_cache(),
        "MISS"
    );
    assert_eq!(
        send(&service, get("/api/status?a=1&b=2", "bob"))
            .await
            .text(),
        "bob:/api/status?a=1&b=2:3"
    );
}

#[tokio::test(start_paused = true)]
async fn path_tricks_cannot_reach_another_users_entry() {
    let echo = Echo::default();
    let service = echo.service(builder().build().unwrap());
    send(&service, get("/users/ann/profile", "ann")).await;
    for trick in [
        "/users/bob/../ann/profile",
        "//users/ann/profile",
        "/users/ann%2Fprofile",
        "/users/ann/profile?",
        "/USERS/ann/profile",
        "/users/%61nn/profile",
    ] {
        // Bob may hit his own entries, never ann's.
        let answer = send(&service, get(trick, "bob")).await;
        assert!(
            answer.text().starts_with("bob:"),
            "{trick}: {}",
            answer.text()
        );
    }
    assert_eq!(
        send(&service, get("/users/ann/profile", "ann"))
            .await
            .text(),
        "ann:/users/ann/profile:1"
    );
}

#[tokio::test(start_paused = true)]
async fn vary_headers_select_the_entry() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let service = ServiceBuilder::new()
        .layer(builder().build().unwrap())
        .service(service_fn(move |req: Req| {
            counted.fetch_add(1, Ordering::SeqCst);
            let lang = req.headers().get("accept-language").cloned();
            async move {
                let body = format!("{lang:?}");
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("vary", "Accept-Language")
                        .body(Full::from(body))
                        .unwrap(),
                )
            }
        }));
    let with_lang = |lang: &str| {
        let mut req = get("/greeting", "ann");
        req.headers_mut()
            .insert("accept-language", lang.parse().unwrap());
        req
    };
    assert_eq!(send(&service, with_lang("fr")).await.x_cache(), "MISS");
    assert_eq!(send(&service, with_lang("fr")).await.x_cache(), "HIT");
    let german = send(&service, with_lang("de")).await;
    assert_eq!(german.x_cache(), "MISS");
    assert_eq!(
        german.headers["cache-status"],
        "integration-cache; fwd=vary-miss; stored"
    );
    assert!(german.text().contains("de"));
    assert_eq!(send(&service, with_lang("de")).await.x_cache(), "HIT");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------- what is stored

/// The layer on an upstream that answers with `answer(request)` and counts its calls.
fn counting<F, Fut>(
    layer: IntegrationCacheLayer,
    answer: F,
) -> (
    impl Service<
            Req,
            Response = Response<integration_cache::http::CacheBody<Full<Bytes>>>,
            Error = Infallible,
            Future: Send,
        > + Clone
        + Send
        + 'static,
    Arc<AtomicU32>,
)
where
    F: Fn(Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(move |req: Req| {
            counted.fetch_add(1, Ordering::SeqCst);
            let answer = answer(req);
            async move { Ok::<_, Infallible>(answer.await) }
        }));
    (service, calls)
}

/// An upstream whose answer the test chooses.
fn fixed(
    layer: IntegrationCacheLayer,
    make: impl Fn() -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
) -> (
    impl Service<
            Req,
            Response = Response<integration_cache::http::CacheBody<Full<Bytes>>>,
            Error = Infallible,
            Future: Send,
        > + Clone
        + Send
        + 'static,
    Arc<AtomicU32>,
) {
    counting(layer, move |_req| std::future::ready(make()))
}

#[tokio::test(start_paused = true)]
async fn only_cacheable_statuses_are_stored() {
    for (status, stored) in [
        (200, true),
        (404, true),
        (410, true),
        (500, false),
        (201, false),
        (302, false),
    ] {
        let (service, calls) = fixed(builder().build().unwrap(), move || {
            Response::builder()
                .status(status)
                .body(Full::from("x"))
                .unwrap()
        });
        send(&service, get("/s", "ann")).await;
        let second = send(&service, get("/s", "ann")).await;
        assert_eq!(second.x_cache() == "HIT", stored, "status {status}");
        assert_eq!(calls.load(Ordering::SeqCst), if stored { 1 } else { 2 });
    }
}

#[tokio::test(start_paused = true)]
async fn no_store_is_obeyed_and_set_cookie_never_replayed() {
    let (service, _) = fixed(builder().build().unwrap(), || {
        Response::builder()
            .header("cache-control", "no-store")
            .body(Full::from("x"))
            .unwrap()
    });
    send(&service, get("/s", "ann")).await;
    assert_eq!(send(&service, get("/s", "ann")).await.x_cache(), "MISS");

    let (service, _) = fixed(builder().build().unwrap(), || {
        Response::builder()
            .header("set-cookie", "session=ann-secret")
            .body(Full::from("x"))
            .unwrap()
    });
    let first = send(&service, get("/s", "ann")).await;
    assert_eq!(
        first.headers["set-cookie"], "session=ann-secret",
        "the fetching client gets its cookie"
    );
    let hit = send(&service, get("/s", "ann")).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert!(
        hit.headers.get("set-cookie").is_none(),
        "a stored response never replays a cookie"
    );
}

#[tokio::test(start_paused = true)]
async fn head_is_answered_from_the_get_entry() {
    let echo = Echo::default();
    let service = echo.service(builder().build().unwrap());
    let head_miss = send(&service, request("HEAD", "/s", Some("ann"))).await;
    assert_eq!(head_miss.x_cache(), "MISS");
    let got = send(&service, get("/s", "ann")).await;
    let head = send(&service, request("HEAD", "/s", Some("ann"))).await;
    assert_eq!(head.x_cache(), "HIT");
    assert!(head.body.is_empty());
    assert_eq!(head.headers["content-length"], got.body.len().to_string());
    assert_eq!(
        echo.calls(),
        2,
        "the HEAD miss went upstream, the HEAD hit did not"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_cap_streams_through_uncached() {
    let big = Bytes::from(vec![b'x'; 64 * 1024]);
    let chunks = big.clone();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let layer = builder().max_body(16 * 1024).build().unwrap();
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(move |_req: Req| {
            counted.fetch_add(1, Ordering::SeqCst);
            // No Content-Length: the cap is found while streaming.
            let frames = chunks
                .chunks(4096)
                .map(|c| Ok::<_, Infallible>(http_body::Frame::data(Bytes::copy_from_slice(c))))
                .collect::<Vec<_>>();
            async move {
                Ok::<_, Infallible>(Response::new(StreamBody::new(futures_util::stream::iter(
                    frames,
                ))))
            }
        }));
    for _ in 0..2 {
        let answer = send(&service, get("/big", "ann")).await;
        assert_eq!(answer.body, big, "the whole body arrives intact");
        assert_eq!(answer.x_cache(), "MISS");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(layer.handle().stats().entries, 0);
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_the_ttl() {
    let echo = Echo::default();
    let service = echo.service(builder().build().unwrap());
    send(&service, get("/s", "ann")).await;
    advance(CACHE_TTL - ms(1)).await;
    assert_eq!(send(&service, get("/s", "ann")).await.x_cache(), "HIT");
    advance(ms(1)).await;
    let after = send(&service, get("/s", "ann")).await;
    assert_eq!(after.x_cache(), "MISS");
    assert_eq!(after.text(), "ann:/s:2");
}

#[tokio::test(start_paused = true)]
async fn upstream_max_age_shortens_the_ttl_when_respected() {
    let (service, _) = fixed(
        builder().respect_cache_control(true).build().unwrap(),
        || {
            Response::builder()
                .header("cache-control", "private, max-age=10")
                .body(Full::from("x"))
                .unwrap()
        },
    );
    send(&service, get("/s", "ann")).await;
    advance(Duration::from_secs(9)).await;
    assert_eq!(send(&service, get("/s", "ann")).await.x_cache(), "HIT");
    advance(Duration::from_secs(1)).await;
    assert_eq!(send(&service, get("/s", "ann")).await.x_cache(), "MISS");
}

#[tokio::test(start_paused = true)]
async fn request_no_cache_refreshes_the_entry() {
    let echo = Echo::default();
    let service = echo.service(builder().build().unwrap());
    send(&service, get("/s", "ann")).await;
    let mut refresh = get("/s", "ann");
    refresh
        .headers_mut()
        .insert("cache-control", "no-cache".parse().unwrap());
    let refreshed = send(&service, refresh).await;
    assert_eq!(
        refreshed.headers["cache-status"],
        "integration-cache; fwd=request; stored"
    );
    assert_eq!(refreshed.text(), "ann:/s:2");
    let hit = send(&service, get("/s", "ann")).await;
    assert_eq!((hit.x_cache(), hit.text().as_str()), ("HIT", "ann:/s:2"));
}

// ---------------------------------------------------------------- misses

#[tokio::test(start_paused = true)]
async fn concurrent_misses_make_one_upstream_call() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let layer = builder().build().unwrap();
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(move |req: Req| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(ms(200)).await;
                let user = req.headers()["x-user-id"].to_str().unwrap().to_owned();
                Ok::<_, Infallible>(Response::new(Full::from(format!("slow answer for {user}"))))
            }
        }));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move { send(&service, get("/slow", "ann")).await })
        })
        .collect();
    let mut collapsed = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.text(), "slow answer for ann");
        if answer.headers["cache-status"] == "integration-cache; fwd=miss; collapsed" {
            collapsed += 1;
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(collapsed, 199);
    assert_eq!(layer.handle().stats().coalesced, 199);
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_are_retried_with_backoff() {
    let times = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let seen = times.clone();
    let start = Instant::now();
    let layer = builder().build().unwrap();
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(move |_req: Req| {
            let attempt = {
                let mut seen = seen.lock();
                seen.push(start.elapsed());
                seen.len()
            };
            async move {
                match attempt {
                    1 => Err(io::Error::from(io::ErrorKind::ConnectionRefused)),
                    2 => Ok(Response::builder()
                        .status(503)
                        .body(Full::from("busy"))
                        .unwrap()),
                    _ => Ok(Response::new(Full::from("finally"))),
                }
            }
        }));
    let answer = send(&service, get("/s", "ann")).await;
    assert_eq!(answer.text(), "finally");
    assert_eq!(*times.lock(), [ms(0), ms(100), ms(300)]);
    assert_eq!(layer.handle().stats().retries, 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_up_to_max_delay() {
    let times = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let seen = times.clone();
    let start = Instant::now();
    let config = RetryConfig::new(3, ms(100), Duration::from_secs(2), 2.0)
        .unwrap()
        .with_jitter(false);
    let service = ServiceBuilder::new()
        .layer(builder().retry(config).build().unwrap())
        .service(service_fn(move |_req: Req| {
            let attempt = {
                let mut seen = seen.lock();
                seen.push(start.elapsed());
                seen.len()
            };
            async move {
                let retry_after = if attempt == 1 { "1" } else { "3600" };
                let response = match attempt {
                    1 | 2 => Response::builder()
                        .status(503)
                        .header("retry-after", retry_after)
                        .body(Full::default())
                        .unwrap(),
                    _ => Response::new(Full::from("ok")),
                };
                Ok::<_, Infallible>(response)
            }
        }));
    assert_eq!(send(&service, get("/s", "ann")).await.text(), "ok");
    // 1 s as asked, then 2 s (max_delay) instead of an hour.
    assert_eq!(*times.lock(), [ms(0), ms(1000), ms(3000)]);
}

#[tokio::test(start_paused = true)]
async fn mutations_are_not_retried() {
    let (service, calls) = fixed(builder().build().unwrap(), || {
        Response::builder()
            .status(503)
            .body(Full::default())
            .unwrap()
    });
    let answer = send(&service, request("POST", "/s", Some("ann"))).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_pass_the_last_response() {
    let (service, calls) = fixed(builder().build().unwrap(), || {
        Response::builder()
            .status(502)
            .body(Full::from("bad gateway upstream"))
            .unwrap()
    });
    let answer = send(&service, get("/s", "ann")).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.text(), "bad gateway upstream");
    assert_eq!(calls.load(Ordering::SeqCst), 4, "1 attempt + 3 retries");
}

#[tokio::test(start_paused = true)]
async fn no_response_at_all_becomes_a_json_502() {
    let layer = builder().build().unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(move |_req: Req| {
            counted.fetch_add(1, Ordering::SeqCst);
            async {
                Err::<Response<Full<Bytes>>, _>(io::Error::from(io::ErrorKind::ConnectionRefused))
            }
        }));
    let answer = send(&service, get("/s", "ann")).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(json["error"]["code"], "RETRY_EXHAUSTED");
    assert_eq!(json["error"]["retries"], 3);
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    // A timeout says 504.
    let timed_out = ServiceBuilder::new()
        .layer(builder().build().unwrap())
        .service(service_fn(|_req: Req| async {
            Err::<Response<Full<Bytes>>, _>(io::Error::from(io::ErrorKind::TimedOut))
        }));
    assert_eq!(
        send(&timed_out, get("/s", "ann")).await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
}

#[tokio::test(start_paused = true)]
async fn stale_is_served_when_the_upstream_fails() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fail = failing.clone();
    let layer = builder()
        .stale_if_error(Duration::from_secs(600))
        .build()
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(move |_req: Req| {
            let fail = fail.load(Ordering::SeqCst);
            async move {
                if fail {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(503)
                            .body(Full::from("down"))
                            .unwrap(),
                    )
                } else {
                    Ok(Response::new(Full::from("good data")))
                }
            }
        }));
    send(&service, get("/s", "ann")).await;
    advance(CACHE_TTL + Duration::from_secs(1)).await;
    failing.store(true, Ordering::SeqCst);
    let answer = send(&service, get("/s", "ann")).await;
    assert_eq!(answer.x_cache(), "STALE");
    assert_eq!(answer.text(), "good data");
    assert_eq!(
        answer.headers["cache-status"],
        "integration-cache; fwd=miss; fwd-status=503; detail=stale-if-error"
    );
    assert_eq!(layer.handle().stats().stale, 1);
    // Past the stale window, the failure itself is passed on.
    advance(Duration::from_secs(600)).await;
    assert_eq!(
        send(&service, get("/s", "ann")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_a_miss() {
    let layer = builder().deadline(Duration::from_secs(2)).build().unwrap();
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_req: Req| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, Infallible>(Response::new(Full::from("too late")))
        }));
    let start = Instant::now();
    let answer = send(&service, get("/s", "ann")).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(json["error"]["code"], "RETRY_EXHAUSTED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_call_on_a_multi_threaded_runtime() {
    // An instant upstream, so a leader often finishes while other requests are between their
    // lookup and joining its flight: they must find its answer, not call again.
    let echo = Echo::default();
    let service = echo.service(builder().build().unwrap());
    for round in 0..200 {
        let before = echo.calls();
        let barrier = Arc::new(tokio::sync::Barrier::new(32));
        let requests: Vec<_> = (0..32)
            .map(|_| {
                let (service, barrier) = (service.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    send(&service, get(&format!("/r{round}"), "ann")).await
                })
            })
            .collect();
        for request in requests {
            assert_eq!(request.await.unwrap().status, StatusCode::OK);
        }
        assert_eq!(echo.calls() - before, 1, "round {round}");
    }
}

/// An upstream that sleeps an hour: only the deadline can answer.
fn hung() -> impl Service<
    Req,
    Response = Response<integration_cache::http::CacheBody<Full<Bytes>>>,
    Error = Infallible,
> + Clone {
    let layer = builder().deadline(Duration::from_secs(2)).build().unwrap();
    ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_req: Req| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, Infallible>(Response::new(Full::from("too late")))
        }))
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_a_head_miss() {
    let head = request("HEAD", "/s", Some("ann"));
    let start = Instant::now();
    let answer = send(&hung(), head).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_a_waiter_that_fetches_for_itself() {
    // The leader's answer may not be shared (`no-store`), so the waiter goes upstream itself,
    // where it hangs: the deadline, counted from the waiter's start, still answers it.
    let layer = builder().deadline(Duration::from_secs(2)).build().unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(move |_req: Req| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                let delay = if n == 0 { 1 } else { 3600 };
                tokio::time::sleep(Duration::from_secs(delay)).await;
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("cache-control", "no-store")
                        .body(Full::from("private"))
                        .unwrap(),
                )
            }
        }));
    let leader = tokio::spawn({
        let service = service.clone();
        async move { send(&service, get("/s", "ann")).await }
    });
    tokio::task::yield_now().await;
    let start = Instant::now();
    let waiter = send(&service, get("/s", "ann")).await;
    assert_eq!(leader.await.unwrap().text(), "private");
    assert_eq!(waiter.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the waiter went upstream itself"
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_a_waiter_while_the_leader_body_streams() {
    let layer = builder().deadline(Duration::from_secs(2)).build().unwrap();
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_req: Req| async {
            // A head at once, then a body that never ends.
            let body =
                futures_util::stream::pending::<Result<http_body::Frame<Bytes>, Infallible>>();
            Ok::<_, Infallible>(Response::new(StreamBody::new(body)))
        }));
    let leader = service.clone().oneshot(get("/s", "ann")).await.unwrap();
    assert_eq!(leader.status(), StatusCode::OK);
    let start = Instant::now();
    let waiter = tokio::time::timeout(Duration::from_secs(60), send(&service, get("/s", "ann")))
        .await
        .expect("the waiter is answered");
    assert_eq!(waiter.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    drop(leader);
}

/// An upstream that answers with the `Accept-Language` it was sent, after 200 ms, varying on it.
fn by_language(
    layer: IntegrationCacheLayer,
    vary: &'static str,
) -> (
    impl Service<
            Req,
            Response = Response<integration_cache::http::CacheBody<Full<Bytes>>>,
            Error = Infallible,
            Future: Send,
        > + Clone
        + Send
        + 'static,
    Arc<AtomicU32>,
) {
    counting(layer, move |req: Req| async move {
        tokio::time::sleep(ms(200)).await;
        let language = req
            .headers()
            .get("accept-language")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        Response::builder()
            .header("vary", vary)
            .body(Full::from(language))
            .unwrap()
    })
}

fn in_language(language: &str) -> Req {
    Request::get("/s")
        .header("x-user-id", "ann")
        .header("accept-language", language)
        .body(Full::default())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_waiter_with_other_vary_headers_gets_its_own_answer() {
    let (service, calls) = by_language(builder().build().unwrap(), "accept-language");
    let french = tokio::spawn({
        let service = service.clone();
        async move { send(&service, in_language("fr")).await }
    });
    tokio::task::yield_now().await;
    let german = send(&service, in_language("de")).await;
    assert_eq!(french.await.unwrap().text(), "fr");
    assert_eq!(german.text(), "de", "{:?}", german.headers);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // A waiter with the same headers still shares the leader's answer.
    let first = tokio::spawn({
        let service = service.clone();
        async move { send(&service, in_language("it")).await }
    });
    tokio::task::yield_now().await;
    let second = send(&service, in_language("it")).await;
    assert_eq!(first.await.unwrap().text(), "it");
    assert_eq!(second.text(), "it");
    assert_eq!(
        second.header("cache-status"),
        "integration-cache; fwd=miss; collapsed"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_vary_star_answer_is_not_shared_with_waiters() {
    let (service, calls) = by_language(builder().build().unwrap(), "*");
    let first = tokio::spawn({
        let service = service.clone();
        async move { send(&service, in_language("fr")).await }
    });
    tokio::task::yield_now().await;
    let second = send(&service, in_language("fr")).await;
    assert_eq!(first.await.unwrap().text(), "fr");
    assert_eq!(second.text(), "fr");
    assert_ne!(
        second.header("cache-status"),
        "integration-cache; fwd=miss; collapsed"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2, "each went upstream");
}

#[tokio::test(start_paused = true)]
async fn the_policy_judges_the_normalised_target() {
    struct NoPrivate;
    impl integration_cache::http::CachePolicy for NoPrivate {
        fn is_cacheable_request(&self, uri: &http::Uri, _: &http::HeaderMap) -> bool {
            uri.path() != "/private"
        }
    }
    let echo = Echo::default();
    let service = echo.service(builder().policy(NoPrivate).build().unwrap());
    for target in ["//private", "/./private", "/%70rivate", "/private"] {
        let answer = send(&service, get(target, "ann")).await;
        assert_eq!(answer.x_cache(), "BYPASS", "{target}");
    }
    assert_eq!(echo.calls(), 4);
    assert_eq!(
        send(&service, get("//public", "ann")).await.x_cache(),
        "MISS"
    );
    assert_eq!(send(&service, get("/public", "ann")).await.x_cache(), "HIT");
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_limits_retries_under_sustained_failure() {
    // No per-second floor, so only the 20% ratio applies.
    let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.2).unwrap();
    let (service, calls) = fixed(builder().retry_budget(budget).build().unwrap(), || {
        Response::builder()
            .status(503)
            .body(Full::default())
            .unwrap()
    });
    let requests: Vec<_> = (0..200)
        .map(|n| {
            let service = service.clone();
            tokio::spawn(async move { send(&service, get(&format!("/s{n}"), "ann")).await })
        })
        .collect();
    for request in requests {
        assert_eq!(
            request.await.unwrap().status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let calls = calls.load(Ordering::SeqCst);
    // Without a budget: 800 calls (4 attempts each).
    assert!(calls <= 200 + 45, "{calls} upstream calls for 200 requests");
    assert!(calls > 200, "some retries are still allowed: {calls}");
}

// ---------------------------------------------------------------- invalidation

#[tokio::test(start_paused = true)]
async fn a_mutation_drops_only_that_users_entries() {
    let echo = Echo::default();
    let service = echo.service(builder().build().unwrap());
    for path in ["/a", "/b"] {
        send(&service, get(path, "ann")).await;
        send(&service, get(path, "bob")).await;
    }
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        send(&service, request(method, "/a", Some("ann"))).await;
        assert_eq!(
            send(&service, get("/a", "ann")).await.x_cache(),
            "MISS",
            "{method}"
        );
        assert_eq!(
            send(&service, get("/b", "ann")).await.x_cache(),
            "MISS",
            "{method}"
        );
        assert_eq!(
            send(&service, get("/a", "bob")).await.x_cache(),
            "HIT",
            "{method}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn reads_after_a_write_never_see_data_from_before_it() {
    // The upstream answers with a version; a POST bumps it. GETs take 100 ms.
    let version = Arc::new(AtomicU32::new(1));
    let v = version.clone();
    let service = ServiceBuilder::new()
        .layer(builder().build().unwrap())
        .service(service_fn(move |req: Req| {
            let v = v.clone();
            async move {
                if req.method() == http::Method::POST {
                    tokio::time::sleep(ms(20)).await;
                    v.fetch_add(1, Ordering::SeqCst);
                    return Ok::<_, Infallible>(Response::new(Full::from("written")));
                }
                let seen = v.load(Ordering::SeqCst);
                tokio::time::sleep(ms(100)).await;
                Ok(Response::new(Full::from(format!("v{seen}"))))
            }
        }));
    // A GET reads v1 and is still in flight when the POST completes.
    let in_flight = {
        let service = service.clone();
        tokio::spawn(async move { send(&service, get("/s", "ann")).await })
    };
    tokio::task::yield_now().await;
    let write = send(&service, request("POST", "/s", Some("ann"))).await;
    assert_eq!(write.text(), "written");
    assert_eq!(in_flight.await.unwrap().text(), "v1");
    // After the write's response: never v1 again.
    for _ in 0..3 {
        let after = send(&service, get("/s", "ann")).await;
        assert_eq!(after.text(), "v2");
    }
}

#[tokio::test(start_paused = true)]
async fn the_handle_invalidates_clears_and_reports() {
    let echo = Echo::default();
    let layer = builder().build().unwrap();
    let handle = layer.handle();
    let service = echo.service(layer);
    send(&service, get("/a", "ann")).await;
    send(&service, get("/a", "bob")).await;
    assert_eq!(handle.stats().entries, 2);
    assert_eq!(handle.invalidate("ann"), 1);
    assert_eq!(send(&service, get("/a", "ann")).await.x_cache(), "MISS");
    assert_eq!(send(&service, get("/a", "bob")).await.x_cache(), "HIT");
    handle.clear();
    assert_eq!(handle.stats().entries, 0);
    assert_eq!(send(&service, get("/a", "bob")).await.x_cache(), "MISS");
}

#[tokio::test(start_paused = true)]
async fn the_store_stays_within_its_entry_bound() {
    let echo = Echo::default();
    let layer = builder().max_entries(100).build().unwrap();
    let service = echo.service(layer.clone());
    for user in 0..1_000 {
        send(&service, get("/s", &format!("user-{user}"))).await;
    }
    let stats = layer.handle().stats();
    assert!(stats.entries <= 100, "{stats:?}");
    assert!(stats.evictions >= 900, "{stats:?}");
}

#[test]
fn configuration_errors_name_the_setting() {
    let err = IntegrationCacheLayer::builder()
        .user_header("bad header")
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "user_header");
    let err = IntegrationCacheLayer::builder()
        .cacheable_statuses([2000])
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "cacheable_statuses");
    let err = IntegrationCacheLayer::builder()
        .ttl(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "ttl");
    let err = IntegrationCacheLayer::builder()
        .deadline(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "deadline");
}
