//! `IntegrationCacheLayer` over real TCP on 127.0.0.1: an axum app served by `axum::serve` and
//! driven by hyper-util's legacy client, and the layer wrapping that client in front of a hyper 1
//! upstream server.
//!
//! Real sockets mean real time: every delay here is a few milliseconds, every loop is bounded,
//! and nothing asserts on how long anything took. Each server runs on port 0 and is shut down at
//! the end of its test.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::middleware::{self, Next};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use integration_cache::http::{
    CacheBody, IntegrationCacheLayer, IntegrationCacheLayerBuilder, UserId,
};
use integration_cache::RetryConfig;
use serde_json::{json, Value};
use support::{read, Answer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tower::{Service, ServiceBuilder, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

// ---------------------------------------------------------------- the axum app

/// The per-user data behind the axum app: a version each POST bumps, and call counters.
#[derive(Clone)]
struct Backend {
    delay: Duration,
    versions: Arc<Mutex<HashMap<String, u64>>>,
    reads: Arc<AtomicU64>,
    writes: Arc<AtomicU64>,
}

impl Backend {
    fn new(delay: Duration) -> Self {
        Self {
            delay,
            versions: Arc::default(),
            reads: Arc::default(),
            writes: Arc::default(),
        }
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// A slow read: the version is taken *before* the delay, so a read that overlaps a write
    /// answers with the version from before it.
    async fn read(&self, route: &str, user: Option<UserId>, query: Option<String>) -> Json<Value> {
        let call = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        let user = user.map(|u| u.to_string());
        let version = user
            .as_ref()
            .map_or(0, |u| *self.versions.lock().unwrap().get(u).unwrap_or(&0));
        tokio::time::sleep(self.delay).await;
        Json(json!({
            "user": user, "route": route, "query": query, "version": version, "call": call,
        }))
    }
}

async fn status(State(backend): State<Backend>, user: Option<Extension<UserId>>) -> Json<Value> {
    backend.read("status", user.map(|u| u.0), None).await
}

async fn profile(
    State(backend): State<Backend>,
    user: Option<Extension<UserId>>,
    RawQuery(query): RawQuery,
) -> Json<Value> {
    backend.read("profile", user.map(|u| u.0), query).await
}

async fn connect(
    State(backend): State<Backend>,
    Extension(user): Extension<UserId>,
    Path(name): Path<String>,
) -> Json<Value> {
    backend.writes.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(backend.delay / 2).await;
    let version = {
        let mut versions = backend.versions.lock().unwrap();
        let version = versions.entry(user.to_string()).or_insert(0);
        *version += 1;
        *version
    };
    Json(json!({ "user": user.as_str(), "connected": name, "version": version }))
}

/// `Authorization: Bearer <user>` becomes a `UserId` extension (a test stand-in for real auth).
async fn bearer_auth(mut request: axum::extract::Request, next: Next) -> axum::response::Response {
    let user = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(UserId::new);
    if let Some(user) = user {
        request.extensions_mut().insert(user);
    }
    next.run(request).await
}

fn app(layer: IntegrationCacheLayer, backend: Backend) -> Router {
    Router::new()
        .route("/api/integrations/status", get(status))
        .route("/api/profile", get(profile))
        .route("/api/integrations/{name}/connect", post(connect))
        .layer(layer)
        .layer(middleware::from_fn(bearer_auth))
        .with_state(backend)
}

/// An axum app served on 127.0.0.1:0 until [`Server::stop`].
struct Server {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn serve(app: Router) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = signal.await;
            })
            .await
            .unwrap();
    });
    Server {
        addr,
        shutdown,
        task,
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Graceful shutdown: in-flight requests finish, idle connections close.
    async fn stop(self) {
        let _ = self.shutdown.send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the server shuts down")
            .unwrap();
    }
}

async fn call(client: &HttpClient, method: Method, url: &str, user: Option<&str>) -> Answer {
    let mut request = Request::builder().method(method).uri(url);
    if let Some(user) = user {
        request = request.header(AUTHORIZATION, format!("Bearer {user}"));
    }
    let response = client
        .request(request.body(Full::default()).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{url}: {e:?}"));
    read(response).await
}

const STATUS: &str = "/api/integrations/status";

// ---------------------------------------------------------------- axum over TCP

#[tokio::test]
async fn a_miss_then_a_hit_over_tcp() {
    let backend = Backend::new(ms(50));
    let layer = IntegrationCacheLayer::new();
    let server = serve(app(layer.clone(), backend.clone())).await;
    let client = http_client();

    let started = Instant::now();
    let miss = call(&client, Method::GET, &server.url(STATUS), Some("ann")).await;
    let miss_took = started.elapsed();
    assert_eq!(miss.status, StatusCode::OK);
    assert_eq!(miss.x_cache(), "MISS");
    assert_eq!(
        miss.header("cache-status"),
        "integration-cache; fwd=miss; stored"
    );
    assert!(miss.headers.get("age").is_none(), "a miss has no Age");
    assert_eq!(miss.json()["user"], "ann");
    assert_eq!(miss.json()["call"], 1);

    let started = Instant::now();
    let hit = call(&client, Method::GET, &server.url(STATUS), Some("ann")).await;
    let hit_took = started.elapsed();
    assert_eq!(hit.status, StatusCode::OK);
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.header("cache-status"), "integration-cache; hit");
    hit.header("age")
        .parse::<u64>()
        .expect("a hit carries Age in seconds");
    assert_eq!(hit.body, miss.body, "the stored body, byte for byte");
    assert_eq!(hit.header("content-type"), "application/json");
    assert_eq!(backend.reads(), 1, "the hit never reached the handler");
    println!("miss {miss_took:?}, hit {hit_took:?}");

    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn the_layer_can_wrap_the_whole_router() {
    // As the README shows: auth, then the cache, around the router, so hits skip routing.
    let backend = Backend::new(ms(20));
    let layer = IntegrationCacheLayer::new();
    let router = Router::new()
        .route("/api/integrations/status", get(status))
        .route("/api/integrations/{name}/connect", post(connect))
        .with_state(backend.clone());
    let app = ServiceBuilder::new()
        .layer(middleware::from_fn(bearer_auth))
        .layer(layer.clone())
        .service(router);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, axum::ServiceExt::into_make_service(app))
            .await
            .unwrap();
    });
    let client = http_client();
    let url = format!("http://{addr}{STATUS}");
    assert_eq!(
        call(&client, Method::GET, &url, Some("ann"))
            .await
            .x_cache(),
        "MISS"
    );
    assert_eq!(
        call(&client, Method::GET, &url, Some("ann"))
            .await
            .x_cache(),
        "HIT"
    );
    let connect_url = format!("http://{addr}/api/integrations/slack/connect");
    call(&client, Method::POST, &connect_url, Some("ann")).await;
    assert_eq!(
        call(&client, Method::GET, &url, Some("ann"))
            .await
            .x_cache(),
        "MISS"
    );
    assert_eq!(backend.reads(), 2);
    server.abort();
}

#[tokio::test]
async fn users_are_isolated_and_a_post_invalidates_only_its_user() {
    let backend = Backend::new(ms(50));
    let layer = IntegrationCacheLayer::new();
    let server = serve(app(layer.clone(), backend.clone())).await;
    let client = http_client();
    let url = server.url(STATUS);
    let get = |user: &'static str| call(&client, Method::GET, &url, Some(user));

    let ann = get("ann").await;
    let bob = get("bob").await;
    assert_eq!((ann.x_cache(), bob.x_cache()), ("MISS", "MISS"));
    assert_eq!(ann.json()["user"], "ann");
    assert_eq!(bob.json()["user"], "bob");
    for _ in 0..3 {
        let (ann_hit, bob_hit) = (get("ann").await, get("bob").await);
        assert_eq!((ann_hit.x_cache(), bob_hit.x_cache()), ("HIT", "HIT"));
        assert_eq!(ann_hit.body, ann.body);
        assert_eq!(bob_hit.body, bob.body);
    }
    assert_eq!(backend.reads(), 2);

    let connect = server.url("/api/integrations/github/connect");
    let write = call(&client, Method::POST, &connect, Some("ann")).await;
    assert_eq!(write.x_cache(), "BYPASS");
    assert_eq!(write.json()["version"], 1);

    let ann_after = get("ann").await;
    assert_eq!(ann_after.x_cache(), "MISS", "ann's entry was dropped");
    assert_eq!(ann_after.json()["version"], 1, "ann reads her own write");
    let bob_after = get("bob").await;
    assert_eq!(bob_after.x_cache(), "HIT", "bob's entry was kept");
    assert_eq!(bob_after.body, bob.body);
    assert_eq!(layer.handle().stats().invalidations, 1);

    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn head_is_served_from_the_get_entry() {
    let backend = Backend::new(ms(50));
    let server = serve(app(IntegrationCacheLayer::new(), backend.clone())).await;
    let client = http_client();

    let got = call(&client, Method::GET, &server.url(STATUS), Some("ann")).await;
    assert_eq!(got.x_cache(), "MISS");
    let head = call(&client, Method::HEAD, &server.url(STATUS), Some("ann")).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.x_cache(), "HIT");
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), got.body.len().to_string());
    assert_eq!(head.header("content-type"), "application/json");
    assert_eq!(backend.reads(), 1, "HEAD never reached the handler");

    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn anonymous_requests_bypass_the_cache() {
    let backend = Backend::new(ms(50));
    let layer = IntegrationCacheLayer::new();
    let server = serve(app(layer.clone(), backend.clone())).await;
    let client = http_client();

    for (n, auth) in [None, Some(""), None].into_iter().enumerate() {
        // No header, or a bearer token that is no valid user id.
        let answer = call(&client, Method::GET, &server.url(STATUS), auth).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.x_cache(), "BYPASS");
        assert_eq!(
            answer.header("cache-status"),
            "integration-cache; fwd=bypass"
        );
        assert_eq!(answer.json()["user"], Value::Null);
        assert_eq!(answer.json()["call"], n + 1, "never served from the cache");
    }
    let stats = layer.handle().stats();
    assert_eq!((stats.bypasses, stats.entries, stats.stored), (3, 0, 0));

    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn the_stats_match_what_happened() {
    let backend = Backend::new(ms(50));
    let layer = IntegrationCacheLayer::new();
    let server = serve(app(layer.clone(), backend.clone())).await;
    let client = http_client();
    let url = server.url(STATUS);
    let connect = server.url("/api/integrations/slack/connect");

    let script: [(Method, &str, Option<&str>, &str); 9] = [
        (Method::GET, &url, Some("ann"), "MISS"),
        (Method::GET, &url, Some("ann"), "HIT"),
        (Method::HEAD, &url, Some("ann"), "HIT"),
        (Method::GET, &url, Some("bob"), "MISS"),
        (Method::GET, &url, None, "BYPASS"),
        (Method::POST, &connect, Some("ann"), "BYPASS"),
        (Method::GET, &url, Some("ann"), "MISS"),
        (Method::GET, &url, Some("bob"), "HIT"),
        (Method::GET, &url, Some("ann"), "HIT"),
    ];
    for (step, (method, url, user, expected)) in script.into_iter().enumerate() {
        let answer = call(&client, method.clone(), url, user).await;
        assert_eq!(answer.x_cache(), expected, "step {step}: {method} {user:?}");
    }

    let stats = layer.handle().stats();
    assert_eq!(stats.hits, 4, "{stats:?}");
    assert_eq!(stats.misses, 3, "{stats:?}");
    assert_eq!(stats.bypasses, 2, "{stats:?}");
    assert_eq!(stats.stored, 3, "{stats:?}");
    assert_eq!(stats.invalidations, 1, "{stats:?}");
    assert_eq!(stats.entries, 2, "{stats:?}");
    assert_eq!(
        (stats.stale, stats.coalesced, stats.retries, stats.evictions),
        (0, 0, 0, 0),
        "{stats:?}"
    );
    assert!(
        stats.weight > 0 && stats.weight <= stats.capacity,
        "{stats:?}"
    );
    assert!((stats.hit_ratio() - 4.0 / 7.0).abs() < 1e-9);
    assert_eq!(backend.reads(), 4, "3 misses + 1 anonymous read");

    drop(client);
    server.stop().await;
}

// ---------------------------------------------------------------- a hyper upstream

type UpstreamBody = BoxBody<Bytes, Infallible>;

fn full(body: impl Into<Bytes>) -> UpstreamBody {
    Full::new(body.into()).boxed()
}

/// A hyper 1 server on 127.0.0.1:0 that counts the requests it receives.
struct Upstream {
    addr: SocketAddr,
    attempts: Arc<AtomicU32>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Serves `answer(attempt number, request)` until stopped.
    async fn start(
        answer: impl Fn(u32, &Request<Incoming>) -> Response<UpstreamBody> + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let attempts = Arc::new(AtomicU32::new(0));
        let counted = attempts.clone();
        let answer = Arc::new(answer);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let stream = tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                while connections.try_join_next().is_some() {}
                let (answer, counted) = (answer.clone(), counted.clone());
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let attempt = counted.fetch_add(1, Ordering::SeqCst) + 1;
                    let response = answer(attempt, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            // Down for good: no listener, and every open connection closed.
            drop(listener);
            connections.shutdown().await;
        });
        Self {
            addr,
            attempts,
            stop,
            task,
        }
    }

    fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::SeqCst)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the upstream stops")
            .unwrap();
    }
}

/// The layer wrapping a hyper-util client, each request's target sent to `upstream`.
fn through_client(
    layer: IntegrationCacheLayer,
    upstream: SocketAddr,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<CacheBody<Incoming>>,
    Error = hyper_util::client::legacy::Error,
> + Clone {
    ServiceBuilder::new()
        .layer(layer)
        .map_request(move |mut request: Request<Full<Bytes>>| {
            let target = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            *request.uri_mut() = http::Uri::builder()
                .scheme("http")
                .authority(upstream.to_string())
                .path_and_query(target)
                .build()
                .unwrap();
            request
        })
        .service(http_client())
}

/// The user comes from `x-user-id` (the upstream sees it too); retries are quick and exact.
fn proxy_layer() -> IntegrationCacheLayerBuilder {
    let quick = RetryConfig::new(3, ms(5), ms(20), 2.0)
        .unwrap()
        .with_jitter(false);
    IntegrationCacheLayer::builder()
        .user_header("x-user-id")
        .retry(quick)
}

fn user_of(request: &Request<Incoming>) -> String {
    request
        .headers()
        .get("x-user-id")
        .map_or_else(String::new, |v| {
            String::from_utf8_lossy(v.as_bytes()).into_owned()
        })
}

async fn send<S>(service: &S, path: &str, user: &str) -> Answer
where
    S: Service<Request<Full<Bytes>>, Response = Response<CacheBody<Incoming>>> + Clone,
    S::Error: std::fmt::Debug,
{
    let request = Request::get(path)
        .header("x-user-id", user)
        .body(Full::default())
        .unwrap();
    read(service.clone().oneshot(request).await.unwrap()).await
}

#[tokio::test]
async fn a_flaky_upstream_is_retried_over_tcp() {
    let upstream = Upstream::start(|attempt, request| {
        if attempt <= 2 {
            return Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .body(full("warming up"))
                .unwrap();
        }
        Response::new(full(format!(
            "hello {} (attempt {attempt})",
            user_of(request)
        )))
    })
    .await;
    let layer = proxy_layer().build().unwrap();
    let service = through_client(layer.clone(), upstream.addr);

    let answer = send(&service, "/status", "ann").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.x_cache(), "MISS");
    assert_eq!(answer.body, "hello ann (attempt 3)");
    assert_eq!(upstream.attempts(), 3, "two 503s, then the answer");
    assert_eq!(layer.handle().stats().retries, 2);

    let again = send(&service, "/status", "ann").await;
    assert_eq!(again.x_cache(), "HIT");
    assert_eq!(again.body, "hello ann (attempt 3)");
    assert_eq!(upstream.attempts(), 3);
    upstream.stop().await;
}

#[tokio::test]
async fn a_closed_port_becomes_a_json_502() {
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let layer = proxy_layer().build().unwrap();
    let service = through_client(layer.clone(), dead);

    let answer = send(&service, "/status", "ann").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.header("content-type"), "application/json");
    let json = answer.json();
    assert_eq!(json["error"]["code"], "RETRY_EXHAUSTED", "{json}");
    assert_eq!(json["error"]["status"], 502);
    assert_eq!(json["error"]["retries"], 3);
    let stats = layer.handle().stats();
    assert_eq!((stats.retries, stats.entries), (3, 0), "{stats:?}");
}

#[tokio::test]
async fn stale_is_served_after_the_upstream_goes_down() {
    let upstream = Upstream::start(|attempt, request| {
        Response::new(full(format!("data for {} #{attempt}", user_of(request))))
    })
    .await;
    let layer = proxy_layer()
        .ttl(ms(200))
        .stale_if_error(Duration::from_secs(30))
        .build()
        .unwrap();
    let service = through_client(layer.clone(), upstream.addr);

    let fresh = send(&service, "/status", "ann").await;
    assert_eq!(fresh.x_cache(), "MISS");
    assert_eq!(fresh.body, "data for ann #1");
    // Real time: the entry expires (200 ms TTL), then the upstream goes away.
    tokio::time::sleep(ms(250)).await;
    upstream.stop().await;

    let stale = send(&service, "/status", "ann").await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.x_cache(), "STALE");
    assert_eq!(stale.body, "data for ann #1");
    assert_eq!(
        stale.header("cache-status"),
        "integration-cache; fwd=miss; detail=stale-if-error"
    );
    // Nothing stored for bob: his failure is passed on.
    let bob = send(&service, "/status", "bob").await;
    assert_eq!(bob.status, StatusCode::BAD_GATEWAY);
    assert_eq!(bob.json()["error"]["code"], "RETRY_EXHAUSTED");
    assert_eq!(layer.handle().stats().stale, 1);
}

#[tokio::test]
async fn a_body_over_max_body_streams_intact_and_is_not_cached() {
    const SIZE: usize = 3 << 20;
    let big: Bytes = (0..SIZE)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let chunks = big.clone();
    let upstream = Upstream::start(move |_, _| {
        // No Content-Length: sent chunked, the cap is found while streaming.
        let frames = (0..SIZE)
            .step_by(64 << 10)
            .map(|at| {
                Ok(hyper::body::Frame::data(
                    chunks.slice(at..SIZE.min(at + (64 << 10))),
                ))
            })
            .collect::<Vec<_>>();
        Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed())
    })
    .await;
    let layer = proxy_layer().max_body(1 << 20).build().unwrap();
    let service = through_client(layer.clone(), upstream.addr);

    for n in 1..=2 {
        let answer = send(&service, "/export", "ann").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.x_cache(), "MISS", "request {n}");
        assert_eq!(answer.header("transfer-encoding"), "chunked");
        assert_eq!(answer.body.len(), SIZE);
        assert!(answer.body == big, "request {n}: the body arrived intact");
    }
    assert_eq!(upstream.attempts(), 2, "never served from the cache");
    let stats = layer.handle().stats();
    assert_eq!((stats.entries, stats.stored), (0, 0), "{stats:?}");
    upstream.stop().await;
}

// ---------------------------------------------------------------- isolation under load

/// What one user's lane saw.
#[derive(Default)]
struct Tally {
    gets: u64,
    posts: u64,
    hits: u64,
    misses: u64,
    /// A body naming another user.
    leaks: Vec<String>,
    /// A body from another route or query.
    misroutes: Vec<String>,
    /// A read older than a write whose response had already arrived.
    stale_reads: Vec<String>,
    /// Anything but a 200.
    failures: Vec<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.gets += other.gets;
        self.posts += other.posts;
        self.hits += other.hits;
        self.misses += other.misses;
        self.leaks.extend(other.leaks);
        self.misroutes.extend(other.misroutes);
        self.stale_reads.extend(other.stale_reads);
        self.failures.extend(other.failures);
    }
}

const ROUTES: [(&str, &str, Option<&str>); 3] = [
    ("/api/integrations/status", "status", None),
    ("/api/profile?x=1", "profile", Some("x=1")),
    ("/api/profile?x=2", "profile", Some("x=2")),
];

/// One lane of one user: `requests` requests, 80% GET over [`ROUTES`], 20% POST. `written` is
/// the highest version one of this user's POSTs has returned so far, shared by their lanes.
async fn lane(
    client: HttpClient,
    base: String,
    user: String,
    seed: u64,
    requests: u64,
    written: Arc<AtomicU64>,
) -> Tally {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tally = Tally::default();
    for n in 0..requests {
        if rng.u8(0..100) < 20 {
            let url = format!("{base}/api/integrations/app-{n}/connect");
            let answer = call(&client, Method::POST, &url, Some(&user)).await;
            tally.posts += 1;
            if answer.status != StatusCode::OK {
                tally
                    .failures
                    .push(format!("{user} POST: {}", answer.status));
                continue;
            }
            let json = answer.json();
            if json["user"] != user.as_str() {
                tally.leaks.push(format!("{user} POST got {json}"));
            }
            let version = json["version"].as_u64().expect("a version");
            written.fetch_max(version, Ordering::SeqCst);
            continue;
        }
        let (path, route, query) = ROUTES[rng.usize(..ROUTES.len())];
        // Every write acknowledged before this read was sent must be visible to it.
        let floor = written.load(Ordering::SeqCst);
        let url = format!("{base}{path}");
        let answer = call(&client, Method::GET, &url, Some(&user)).await;
        tally.gets += 1;
        match answer.x_cache() {
            "HIT" => tally.hits += 1,
            "MISS" => tally.misses += 1,
            other => tally
                .failures
                .push(format!("{user} GET {path}: X-Cache {other:?}")),
        }
        if answer.status != StatusCode::OK {
            tally
                .failures
                .push(format!("{user} GET {path}: {}", answer.status));
            continue;
        }
        let json = answer.json();
        if json["user"] != user.as_str() {
            tally.leaks.push(format!("{user} GET {path} got {json}"));
        }
        if json["route"] != route || json["query"] != json!(query) {
            tally
                .misroutes
                .push(format!("{user} GET {path} got {json}"));
        }
        let version = json["version"].as_u64().expect("a version");
        if version < floor {
            let x_cache = answer.x_cache();
            tally.stale_reads.push(format!(
                "{user} GET {path} ({x_cache}): version {version} after a write returned {floor}"
            ));
        }
    }
    tally
}

/// 200 users, each with 2 concurrent lanes of 15 requests: 6 000 requests over real TCP against
/// the axum app. A user's two lanes overlap, so their reads are in flight while their own writes
/// complete. Every body must name its requester and route, and no read may miss a write whose
/// response had arrived before the read was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_users_never_see_each_others_data() {
    const USERS: u64 = 200;
    const LANES: u64 = 2;
    const REQUESTS_PER_LANE: u64 = 15;

    let backend = Backend::new(ms(3));
    let layer = IntegrationCacheLayer::new();
    let server = serve(app(layer.clone(), backend.clone())).await;
    let base = server.url("");
    let client = http_client();
    let started = Instant::now();

    let mut lanes = JoinSet::new();
    for u in 0..USERS {
        let user = format!("user-{u:03}");
        let written = Arc::new(AtomicU64::new(0));
        for n in 0..LANES {
            lanes.spawn(lane(
                client.clone(),
                base.clone(),
                user.clone(),
                u * LANES + n,
                REQUESTS_PER_LANE,
                written.clone(),
            ));
        }
    }
    let mut total = Tally::default();
    while let Some(lane) = lanes.join_next().await {
        total.merge(lane.unwrap());
    }
    let took = started.elapsed();
    let stats = layer.handle().stats();
    println!(
        "{} GETs ({} hits, {} misses), {} POSTs in {took:?}; leaks {}, misroutes {}, \
         stale reads {}, failures {}; {stats:?}",
        total.gets,
        total.hits,
        total.misses,
        total.posts,
        total.leaks.len(),
        total.misroutes.len(),
        total.stale_reads.len(),
        total.failures.len(),
    );

    let first = |v: &[String]| v.iter().take(5).cloned().collect::<Vec<_>>();
    assert!(
        total.leaks.is_empty(),
        "{} responses named another user: {:?}",
        total.leaks.len(),
        first(&total.leaks)
    );
    assert!(
        total.misroutes.is_empty(),
        "{} responses came from another route: {:?}",
        total.misroutes.len(),
        first(&total.misroutes)
    );
    assert!(
        total.stale_reads.is_empty(),
        "{} reads missed the user's own acknowledged write: {:?}",
        total.stale_reads.len(),
        first(&total.stale_reads)
    );
    assert!(
        total.failures.is_empty(),
        "{} failures: {:?}",
        total.failures.len(),
        first(&total.failures)
    );
    assert_eq!(total.gets + total.posts, USERS * LANES * REQUESTS_PER_LANE);
    assert!(total.hits > 0, "the cache served some reads");

    // The stats agree with what the clients saw.
    assert_eq!(stats.hits, total.hits, "{stats:?}");
    assert_eq!(stats.misses, total.misses, "{stats:?}");
    assert_eq!(stats.bypasses, total.posts, "{stats:?}");
    assert_eq!(backend.writes.load(Ordering::SeqCst), total.posts);
    let reads = backend.reads();
    assert!(
        reads <= stats.misses && reads >= stats.misses - stats.coalesced,
        "{reads} upstream reads for {stats:?}"
    );
    assert!(
        stats.entries <= (USERS as usize) * ROUTES.len(),
        "{stats:?}"
    );

    drop(client);
    server.stop().await;
}
