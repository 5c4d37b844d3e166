//! HTTP layer benchmarks (issue 3): a `GET` served from the cache, through
//! [`IntegrationCacheLayer`] and through the other tower/axum response caches, side by side.
//!
//! Every variant answers the same requests: `GET /status?user=user-N` with `x-user-id: user-N`,
//! for 10 K users, each request for the next user (rotating), with the 1 KB response body
//! collected with `BodyExt::collect` inside the timed loop. The variants:
//!
//! - `a_bare_service`: a `tower::service_fn` returning the user's prebuilt response (status,
//!   `HeaderMap` clone, `Bytes` clone): the limit;
//! - `b_layer_on_bare`: [`IntegrationCacheLayer`] (`.user_header("x-user-id")`) on that service;
//! - `c_axum_router`: an `axum::Router` with one route answering the same prebuilt response,
//!   no cache;
//! - `d_layer_on_router`: our layer on that router (`Router::new().route(..).layer(layer)`),
//!   which axum applies to each route, after routing;
//! - `d2_layer_around_router`: our layer around the whole router (`layer.layer(router)`, or
//!   `ServiceBuilder::new().layer(layer).service(router)`), so a hit skips routing;
//! - `e_axum_response_cache`: `axum-response-cache` on the router, keyed by method, URI and the
//!   `x-user-id` header;
//! - `f_http_cache_tower_server`: `http-cache-tower-server` with its in-memory `MokaManager` on
//!   the router, keyed by method, URI and user, behind axum's `HandleErrorLayer` (its error type is
//!   not `Infallible`); the route sends `Cache-Control: max-age=300`, which it needs to store;
//! - `g_tower_http_cache`: `tower-http-cache` with its in-memory backend on the router, keyed by
//!   path and query (its key function sees only the method and the URI, which is why the user is
//!   in the query string too), behind `HandleErrorLayer`.
//!
//! Every router is prepared as `axum::serve` prepares it (`with_state(())`, see [`prepared`]), and
//! the upstream behind every variant answers with the same prebuilt per-user response:
//! `Content-Type`, `Content-Length`, `Cache-Control: max-age=300` and the body.
//!
//! Every cache is warmed with all 10 K users before anything is timed, then a verification pass
//! asserts that each variant serves hits: the upstream call counter stays flat, every body names
//! the right user, and `X-Cache: HIT` where the cache sets it. After the timed runs the counter
//! is checked again, so no miss can have slipped into the figures.
//!
//! Two groups:
//!
//! - `layer_hit`: one request at a time on a current-thread tokio runtime; criterion's figure is
//!   the time per hit. Timed with `iter_custom` around a whole loop of requests, the same loop
//!   (`drive`) for every variant, so the harness costs the same everywhere.
//! - `layer_throughput`: a 2-worker-thread tokio runtime, 64 concurrent tasks, each looping over
//!   rotating users for a fixed number of requests (20 000 each; 1 000 for (f) and 5 000 for (g),
//!   which are many times slower a hit, to keep the run bounded); criterion times the whole batch
//!   and reports `thrpt` in requests/second. The derived requests/second are also printed at the
//!   end.
//!
//! Run with `cargo bench --bench layer`; figures and their reading are in `BENCHMARKS.md`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::Request;
use axum::routing::get;
use axum::{BoxError, Router};
use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use http::{Response, StatusCode};
use http_body::{Frame, SizeHint};
use tower::{Layer, Service, ServiceBuilder};

mod common;

use common::*;

/// Concurrent tasks in the throughput group.
const TASKS: usize = 64;

/// Requests per task in the throughput group, for the variants at about a microsecond a hit.
const PER_TASK: u64 = 20_000;

/// (c): the router; its one route answers like the bare service.
fn router(upstream: &'static Upstream) -> Router {
    Router::new().route(
        "/status",
        get(move |request: Request| {
            let response = upstream.respond(&request).map(Body::from);
            std::future::ready(response)
        }),
    )
}

/// The router as `axum::serve` runs it: `into_make_service` calls `with_state(())`, which turns
/// every handler into a `Route` (with its layers applied) once. A `Router` called as a bare
/// `Service` without this converts the handler and re-applies every layer on each request.
fn prepared(router: Router) -> Router {
    router.with_state(())
}

/// (e): `axum-response-cache`, keyed by method, URI and user.
fn axum_response_cache_router(upstream: &'static Upstream) -> Router {
    let keyer = |request: &Request| {
        (
            request.method().clone(),
            request.uri().clone(),
            request.headers().get(&X_USER_ID).cloned(),
        )
    };
    router(upstream).layer(axum_response_cache::CacheLayer::with_lifespan_and_keyer(
        TTL, keyer,
    ))
}

/// `http-cache-tower-server`'s key: method, URI and user.
#[derive(Clone)]
struct UserKeyer;

impl http_cache_tower_server::Keyer for UserKeyer {
    fn cache_key<B>(&self, request: &http::Request<B>) -> String {
        let user = request
            .headers()
            .get(&X_USER_ID)
            .and_then(|id| id.to_str().ok())
            .unwrap_or("");
        format!("{} {} user:{user}", request.method(), request.uri())
    }
}

async fn cache_error(error: BoxError) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

/// (f): `http-cache-tower-server` with its in-memory manager.
fn http_cache_tower_server_router(upstream: &'static Upstream) -> Router {
    let manager = http_cache::MokaManager::new(http_cache::MokaCache::new(4 * USERS as u64));
    let cache = http_cache_tower_server::ServerCacheLayer::with_keyer(manager, UserKeyer);
    router(upstream).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(cache_error))
            .layer(cache),
    )
}

/// (g): `tower-http-cache` with its in-memory backend, keyed by path and query.
fn tower_http_cache_router(upstream: &'static Upstream) -> Router {
    let backend = tower_http_cache::prelude::InMemoryBackend::new(4 * USERS as u64);
    let cache = tower_http_cache::CacheLayer::builder(backend)
        .ttl(TTL)
        .key_extractor(tower_http_cache::KeyExtractor::path_and_query())
        .build();
    router(upstream).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(cache_error))
            .layer(cache)
            // It stores only `Sync` bodies; axum's is not. Runs on misses only.
            .map_response(|response: Response<Body>| response.map(SyncBody::new)),
    )
}

/// An axum body made `Sync` for `tower-http-cache` (only the miss path sees it).
struct SyncBody(Mutex<Body>);

impl SyncBody {
    fn new(body: Body) -> Self {
        Self(Mutex::new(body))
    }
}

impl http_body::Body for SyncBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(self.get_mut().0.get_mut().unwrap()).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().unwrap().is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.lock().unwrap().size_hint()
    }
}

/// A variant under test: a service to clone per timed loop and its upstream's counter.
struct Variant<S> {
    name: &'static str,
    service: S,
    upstream: &'static Upstream,
    expect: Expect,
    /// Upstream calls after warming; must not move while timing a cache.
    warmed: u64,
}

impl<S, B> Variant<S>
where
    S: Service<Request, Response = Response<B>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
    B: http_body::Body + Send + 'static,
    B::Error: std::fmt::Debug,
    B::Data: Send,
{
    fn new(
        runtime: &tokio::runtime::Runtime,
        name: &'static str,
        mut service: S,
        upstream: &'static Upstream,
        expect: Expect,
    ) -> Self {
        let users = upstream.users;
        runtime.block_on(warm_and_verify(name, &mut service, users, upstream, expect));
        let warmed = upstream.calls();
        Self {
            name,
            service,
            upstream,
            expect,
            warmed,
        }
    }

    /// For a cache: the timed runs made no upstream call.
    fn assert_only_hits(&self) {
        if let Expect::Uncached = self.expect {
            return;
        }
        assert_eq!(
            self.upstream.calls(),
            self.warmed,
            "{}: the timed run reached the upstream",
            self.name
        );
    }

    /// One hit at a time on `runtime` (current-thread).
    fn bench_hit(
        &self,
        group: &mut BenchmarkGroup<'_, WallTime>,
        runtime: &tokio::runtime::Runtime,
    ) {
        let users = self.upstream.users;
        let mut next = 0;
        group.bench_function(self.name, |b| {
            b.to_async(runtime).iter_custom(|iters| {
                let mut service = self.service.clone();
                let first = next;
                next = (next + (iters % USERS as u64) as usize) % USERS;
                async move {
                    let start = Instant::now();
                    black_box(drive(&mut service, users, first, iters, 1).await);
                    start.elapsed()
                }
            })
        });
        self.assert_only_hits();
    }

    /// `TASKS` tasks × `per_task` hits on `runtime` (2 workers); records the batches' times.
    fn bench_throughput(
        &self,
        group: &mut BenchmarkGroup<'_, WallTime>,
        runtime: &tokio::runtime::Runtime,
        per_task: u64,
        batches: &Mutex<BTreeMap<&'static str, (u64, Vec<Duration>)>>,
    ) {
        let users = self.upstream.users;
        let requests = TASKS as u64 * per_task;
        group.throughput(Throughput::Elements(requests));
        group.bench_function(self.name, |b| {
            b.to_async(runtime).iter_custom(|iters| {
                let service = self.service.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let tasks: Vec<_> = (0..TASKS)
                            .map(|t| {
                                let mut service = service.clone();
                                tokio::spawn(async move {
                                    drive(&mut service, users, t * (USERS / TASKS), per_task, 1)
                                        .await
                                })
                            })
                            .collect();
                        for task in tasks {
                            black_box(task.await.unwrap());
                        }
                        let elapsed = start.elapsed();
                        batches
                            .lock()
                            .unwrap()
                            .entry(self.name)
                            .or_insert_with(|| (requests, Vec::new()))
                            .1
                            .push(elapsed);
                        total += elapsed;
                    }
                    total
                }
            })
        });
        self.assert_only_hits();
    }
}

/// Builds every variant on `runtime` (warmed and verified), then runs `each` on them in order.
/// Variants whose `per_task` is `None` are left out of the throughput group.
macro_rules! for_each_variant {
    ($runtime:expr, |$variant:ident, $per_task:ident| $body:expr) => {{
        let users = users();
        let runtime: &tokio::runtime::Runtime = $runtime;
        {
            let upstream = Upstream::new(users);
            let $variant = Variant::new(
                runtime,
                "a_bare_service",
                bare_service(upstream),
                upstream,
                Expect::Uncached,
            );
            let $per_task = PER_TASK;
            $body;
        }
        {
            let upstream = Upstream::new(users);
            let $variant = Variant::new(
                runtime,
                "b_layer_on_bare",
                our_layer().layer(bare_service(upstream)),
                upstream,
                Expect::Hits(Some("HIT")),
            );
            let $per_task = PER_TASK;
            $body;
        }
        {
            let upstream = Upstream::new(users);
            let $variant = Variant::new(
                runtime,
                "c_axum_router",
                prepared(router(upstream)),
                upstream,
                Expect::Uncached,
            );
            let $per_task = PER_TASK;
            $body;
        }
        {
            let upstream = Upstream::new(users);
            let $variant = Variant::new(
                runtime,
                "d_layer_on_router",
                prepared(router(upstream).layer(our_layer())),
                upstream,
                Expect::Hits(Some("HIT")),
            );
            let $per_task = PER_TASK;
            $body;
        }
        {
            let upstream = Upstream::new(users);
            let $variant = Variant::new(
                runtime,
                "d2_layer_around_router",
                our_layer().layer(prepared(router(upstream))),
                upstream,
                Expect::Hits(Some("HIT")),
            );
            let $per_task = PER_TASK;
            $body;
        }
        {
            let upstream = Upstream::new(users);
            let $variant = Variant::new(
                runtime,
                "e_axum_response_cache",
                prepared(axum_response_cache_router(upstream)),
                upstream,
                Expect::Hits(None),
            );
            let $per_task = PER_TASK;
            $body;
        }
        {
            let upstream = Upstream::new(users);
            let $variant = Variant::new(
                runtime,
                "f_http_cache_tower_server",
                prepared(http_cache_tower_server_router(upstream)),
                upstream,
                Expect::Hits(Some("HIT")),
            );
            // About 20x slower a hit: a smaller batch keeps the group bounded.
            let $per_task = PER_TASK / 20;
            $body;
        }
        {
            let upstream = Upstream::new(users);
            let $variant = Variant::new(
                runtime,
                "g_tower_http_cache",
                prepared(tower_http_cache_router(upstream)),
                upstream,
                Expect::Hits(None),
            );
            let $per_task = PER_TASK / 4;
            $body;
        }
    }};
}

fn layer_hit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("layer_hit");
    for_each_variant!(&runtime, |variant, _per_task| variant
        .bench_hit(&mut group, &runtime));
    group.finish();
}

fn layer_throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let batches = Mutex::new(BTreeMap::new());
    let mut group = c.benchmark_group("layer_throughput");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    for_each_variant!(&runtime, |variant, per_task| variant
        .bench_throughput(&mut group, &runtime, per_task, &batches));
    group.finish();
    println!("\nlayer_throughput: {TASKS} tasks on 2 worker threads, median of the timed batches");
    for (name, (requests, mut times)) in batches.into_inner().unwrap() {
        times.sort();
        let median = times[times.len() / 2];
        println!(
            "  {name:<28} {requests:>8} requests in {:>8.1} ms = {:>10.0} requests/s",
            median.as_secs_f64() * 1e3,
            requests as f64 / median.as_secs_f64()
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(2));
    targets = layer_hit, layer_throughput
}
criterion_main!(benches);
