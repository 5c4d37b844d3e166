//! What the layer benches share: the users and their requests, the counting upstream, the bare
//! service (a), our layer as configured for (b) and (d), and the loop every variant is timed
//! with (`drive`), with the checks that every cache serves hits before anything is timed.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use bytes::Bytes;
use http::header::{HeaderName, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use integration_cache::http::IntegrationCacheLayer;
use tower::{Service, ServiceExt};

/// Users warmed in every cache; each request goes to the next one.
pub(crate) const USERS: usize = 10_000;

/// Bytes in every response body.
pub(crate) const BODY_LEN: usize = 1024;

/// How long every cache keeps an entry: longer than any group runs.
pub(crate) const TTL: Duration = Duration::from_secs(300);

/// The identity header the caches and the upstream read.
pub(crate) const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");

/// Per-user requests and responses, built once.
pub(crate) struct Users {
    /// `/status?user=user-N`.
    uris: Vec<Uri>,
    /// `user-N`.
    ids: Vec<HeaderValue>,
    /// `{"user":"user-N","pad":"..."}`, exactly `BODY_LEN` bytes.
    bodies: Vec<Bytes>,
    /// What every response carries: JSON, 1 KB, `max-age=300`.
    headers: HeaderMap,
}

impl Users {
    fn new() -> Self {
        let bodies = (0..USERS)
            .map(|i| {
                let head = format!("{{\"user\":\"user-{i}\",\"pad\":\"");
                let pad = BODY_LEN - head.len() - 2;
                Bytes::from(format!("{head}{}\"}}", "x".repeat(pad)))
            })
            .collect::<Vec<_>>();
        assert!(bodies.iter().all(|b| b.len() == BODY_LEN));
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(BODY_LEN));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
        Self {
            uris: (0..USERS)
                .map(|i| Uri::try_from(format!("/status?user=user-{i}")).unwrap())
                .collect(),
            ids: (0..USERS)
                .map(|i| HeaderValue::try_from(format!("user-{i}")).unwrap())
                .collect(),
            bodies,
            headers,
        }
    }

    /// The request of user `i`: the same for every variant.
    pub(crate) fn request(&self, i: usize) -> Request {
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = self.uris[i].clone();
        request.headers_mut().insert(X_USER_ID, self.ids[i].clone());
        request
    }

    /// `"user":"user-N"` as it appears in user `i`'s body.
    pub(crate) fn marker(i: usize) -> String {
        format!("\"user\":\"user-{i}\"")
    }
}

/// The upstream behind every variant: answers each user with their prebuilt response and counts
/// its calls.
///
/// Leaked, so services and handlers hold a `&'static` (no reference count bounced between the
/// throughput group's threads), and counted in per-thread stripes for the same reason: the
/// harness adds no shared cache line to the uncached variants.
pub(crate) struct Upstream {
    pub(crate) users: &'static Users,
    calls: Box<[Stripe]>,
}

/// One thread's share of a counter, on its own cache line.
#[repr(align(128))]
struct Stripe(AtomicU64);

/// Stripes per counter; threads beyond that share.
const STRIPES: usize = 16;

/// This thread's stripe.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    INDEX.with(|i| *i)
}

impl Upstream {
    pub(crate) fn new(users: &'static Users) -> &'static Self {
        Box::leak(Box::new(Self {
            users,
            calls: (0..STRIPES).map(|_| Stripe(AtomicU64::new(0))).collect(),
        }))
    }

    pub(crate) fn calls(&self) -> u64 {
        self.calls.iter().map(|s| s.0.load(Ordering::SeqCst)).sum()
    }

    /// The user's response (`400` for a request without a known user), counted.
    pub(crate) fn respond<B>(&self, request: &http::Request<B>) -> Response<Bytes> {
        self.calls[stripe()].0.fetch_add(1, Ordering::Relaxed);
        let user = request
            .headers()
            .get(&X_USER_ID)
            .and_then(|id| id.as_bytes().strip_prefix(b"user-"))
            .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok())
            .filter(|&n| n < USERS);
        let Some(user) = user else {
            let mut response = Response::new(Bytes::new());
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        };
        let mut response = Response::new(self.users.bodies[user].clone());
        *response.headers_mut() = self.users.headers.clone();
        response
    }
}

/// What the bare service answers.
pub(crate) type BareResponse = Response<Full<Bytes>>;

/// (a): the bare service.
pub(crate) fn bare_service(
    upstream: &'static Upstream,
) -> impl Service<
    Request,
    Response = BareResponse,
    Error = Infallible,
    Future = std::future::Ready<Result<BareResponse, Infallible>>,
> + Clone
       + Send
       + Sync
       + 'static {
    tower::service_fn(move |request: Request| {
        std::future::ready(Ok(upstream.respond(&request).map(Full::new)))
    })
}

/// Our layer, as the module docs configure it.
pub(crate) fn our_layer() -> IntegrationCacheLayer {
    IntegrationCacheLayer::builder()
        .user_header("x-user-id")
        .ttl(TTL)
        .build()
        .unwrap()
}

/// Sends `n` requests through `service`, for users `first`, `first + step`, ... (wrapping), and
/// collects every body. The timed loop of every variant. A `step` of 1 takes users in the order
/// their entries were stored, which a store that keeps entries in that order (quick_cache's
/// slab) walks with the hardware prefetcher's help; a `step` coprime with [`USERS`] (7919, say)
/// still visits every user once per turn, scattered as real traffic would be.
pub(crate) async fn drive<S, B>(
    service: &mut S,
    users: &Users,
    first: usize,
    n: u64,
    step: usize,
) -> usize
where
    S: Service<Request, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let mut bytes = 0;
    let mut user = first;
    for _ in 0..n {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(users.request(user))
            .await
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        bytes += black_box(body).len();
        user = (user + step) % USERS;
    }
    bytes
}

/// One request for user `i`, checked: `200`, the user's body, and `X-Cache` if given.
pub(crate) async fn checked<S, B>(
    name: &str,
    service: &mut S,
    users: &Users,
    i: usize,
    x_cache: Option<&str>,
) where
    S: Service<Request, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let response = service
        .ready()
        .await
        .unwrap()
        .call(users.request(i))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{name}: user {i}");
    if let Some(expected) = x_cache {
        assert_eq!(
            response
                .headers()
                .get("x-cache")
                .map(|v| v.to_str().unwrap()),
            Some(expected),
            "{name}: user {i}"
        );
    }
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), BODY_LEN, "{name}: user {i}");
    let body = std::str::from_utf8(&body).unwrap();
    assert!(
        body.contains(&Users::marker(i)),
        "{name}: user {i} got {body:.40}"
    );
}

/// Whether a variant caches, and what its hits carry, if anything, to tell them from misses.
#[derive(Clone, Copy)]
pub(crate) enum Expect {
    /// No cache: every request reaches the upstream.
    Uncached,
    /// Every request after warming is a hit, marked with this `X-Cache` value if any.
    Hits(Option<&'static str>),
}

/// Fills the cache with every user, then asserts that a full pass is served without one upstream
/// call and with every user's own body.
pub(crate) async fn warm_and_verify<S, B>(
    name: &str,
    service: &mut S,
    users: &Users,
    upstream: &Upstream,
    expect: Expect,
) where
    S: Service<Request, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let before = upstream.calls();
    for i in 0..USERS {
        checked(name, service, users, i, None).await;
    }
    // `http-cache-tower-server` stores from spawned tasks: let them all finish (10 K of them
    // took over 100 ms on a slow day), for at most 10 s. Tasks that live on (our store's
    // reaper) stop the wait once the count stops falling; a store left unfinished would fail
    // the verification below.
    let metrics = tokio::runtime::Handle::current().metrics();
    let mut alive = metrics.num_alive_tasks();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = metrics.num_alive_tasks();
        if now == 0 || now >= alive {
            break;
        }
        alive = now;
    }
    let warmed = upstream.calls();
    assert_eq!(
        warmed,
        before + USERS as u64,
        "{name}: warming must reach the upstream once per user"
    );
    for pass in 0..2 {
        let before = upstream.calls();
        match expect {
            Expect::Uncached => {
                for i in 0..USERS {
                    checked(name, service, users, i, None).await;
                }
                assert_eq!(upstream.calls(), before + USERS as u64, "{name}");
            }
            Expect::Hits(x_cache) => {
                for i in 0..USERS {
                    checked(name, service, users, i, x_cache).await;
                }
                assert_eq!(
                    upstream.calls(),
                    warmed,
                    "{name}: verification pass {pass} reached the upstream: not all hits"
                );
            }
        }
    }
}

pub(crate) fn users() -> &'static Users {
    static USERS_DATA: std::sync::OnceLock<Users> = std::sync::OnceLock::new();
    USERS_DATA.get_or_init(Users::new)
}
