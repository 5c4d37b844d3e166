//! The reverse proxy over real TCP, against real upstream servers started here.
//!
//! Real sockets mean real time: every delay below is a few milliseconds, every loop is bounded,
//! and no assertion depends on how fast the machine is.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use integration_cache::proxy::{Proxy, ProxyArgs};
use integration_cache::CacheHandle;
use support::{read, Answer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type UpstreamBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A real HTTP/1.1 server on a free port, answering with `handler`, counting requests.
struct Upstream {
    addr: SocketAddr,
    calls: Arc<AtomicU32>,
}

impl Upstream {
    async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>, u32) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<UpstreamBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let counted = counted.clone();
                let service = hyper::service::service_fn(move |request| {
                    let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                    let answer = handler(request, n);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self { addr, calls }
    }

    /// Answers `<user>:<path>:<n>`.
    async fn echo() -> Self {
        Self::start(|request: Request<Incoming>, n| async move {
            let user = request
                .headers()
                .get("x-user-id")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let path = request.uri().path_and_query().unwrap().to_string();
            body(StatusCode::OK, format!("{user}:{path}:{n}"))
        })
        .await
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn body(status: StatusCode, text: String) -> Response<UpstreamBody> {
    let mut response = Response::new(Full::new(Bytes::from(text)).boxed());
    *response.status_mut() = status;
    response
}

/// A proxy serving on a free port until dropped.
struct Running {
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    handle: CacheHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(upstream: &str, flags: &[&str]) -> Self {
        let mut argv = vec![
            "reverse_proxy",
            "--upstream",
            upstream,
            "--retry-initial-delay",
            "5ms",
            "--retry-max-delay",
            "20ms",
        ];
        argv.extend_from_slice(flags);
        let args = ProxyArgs::try_parse_from(argv).unwrap();
        let proxy = Proxy::from_args(&args).unwrap();
        let handle = proxy.handle();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (admin_listener, admin) = if args.admin_listen.is_some() {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            (Some(listener), Some(addr))
        } else {
            (None, None)
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(proxy.serve(listener, admin_listener, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            admin,
            handle,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) -> std::io::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap()
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(to: SocketAddr, method: Method, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{to}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client()
        .request(request.body(Full::default()).unwrap())
        .await
        .unwrap();
    read(response).await
}

async fn get(to: SocketAddr, path: &str, user: &str) -> Answer {
    send(to, Method::GET, path, &[("x-user-id", user)]).await
}

#[tokio::test]
async fn miss_then_hit_per_user_and_bypass_without_one() {
    let upstream = Upstream::echo().await;
    let proxy = Running::start(&upstream.url(), &[]).await;
    let first = get(proxy.addr, "/api/integrations/status", "ann").await;
    assert_eq!((first.status, first.x_cache()), (StatusCode::OK, "MISS"));
    assert_eq!(first.text(), "ann:/api/integrations/status:1");
    let second = get(proxy.addr, "/api/integrations/status", "ann").await;
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.text(), first.text());
    assert!(second.headers.contains_key("age"));
    assert_eq!(second.headers["cache-status"], "integration-cache; hit");
    let bob = get(proxy.addr, "/api/integrations/status", "bob").await;
    assert_eq!(
        (bob.x_cache(), bob.text().as_str()),
        ("MISS", "bob:/api/integrations/status:2")
    );
    let anonymous = send(proxy.addr, Method::GET, "/api/integrations/status", &[]).await;
    assert_eq!(anonymous.x_cache(), "BYPASS");
    assert_eq!(upstream.calls(), 3);
    assert_eq!(proxy.handle.stats().hits, 1);
    proxy.shutdown().await.unwrap();
}

#[tokio::test]
async fn forwarding_headers_are_set_as_a_reverse_proxy_should() {
    let upstream = Upstream::start(|request: Request<Incoming>, _| async move {
        let h = request.headers();
        let seen = |name: &str| {
            h.get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        body(
            StatusCode::OK,
            serde_json::json!({
                "host": seen("host"),
                "x-forwarded-host": seen("x-forwarded-host"),
                "x-forwarded-for": seen("x-forwarded-for"),
                "x-forwarded-proto": seen("x-forwarded-proto"),
                "x-hop": seen("x-hop"),
            })
            .to_string(),
        )
    })
    .await;
    let proxy = Running::start(&upstream.url(), &[]).await;
    let answer = send(
        proxy.addr,
        Method::GET,
        "/h",
        &[
            ("x-user-id", "ann"),
            ("host", "public.example"),
            ("connection", "x-hop"),
            ("x-hop", "secret"),
        ],
    )
    .await;
    let seen = answer.json();
    assert_eq!(seen["host"], upstream.addr.to_string());
    assert_eq!(seen["x-forwarded-host"], "public.example");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-hop"], "", "hop-by-hop headers are not forwarded");
}

#[tokio::test]
async fn a_users_post_invalidates_only_their_entries() {
    let upstream = Upstream::echo().await;
    let proxy = Running::start(&upstream.url(), &[]).await;
    get(proxy.addr, "/s", "ann").await;
    get(proxy.addr, "/s", "bob").await;
    let post = send(proxy.addr, Method::POST, "/s", &[("x-user-id", "ann")]).await;
    assert_eq!(post.x_cache(), "BYPASS");
    assert_eq!(get(proxy.addr, "/s", "ann").await.x_cache(), "MISS");
    assert_eq!(get(proxy.addr, "/s", "bob").await.x_cache(), "HIT");
}

#[tokio::test]
async fn the_admin_api_reports_invalidates_and_checks_its_token() {
    let upstream = Upstream::echo().await;
    let proxy = Running::start(
        &upstream.url(),
        &["--admin-listen", "127.0.0.1:0", "--admin-token", "s3cret"],
    )
    .await;
    let admin = proxy.admin.unwrap();
    get(proxy.addr, "/s", "ann").await;
    get(proxy.addr, "/s", "ann").await;

    let health = send(admin, Method::GET, "/healthz", &[]).await;
    assert_eq!(
        (health.status, health.text().as_str()),
        (StatusCode::OK, "ok\n")
    );
    let stats = send(admin, Method::GET, "/stats", &[]).await.json();
    assert_eq!(
        (stats["hits"].as_u64(), stats["misses"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(stats["entries"], 1);
    let metrics = send(admin, Method::GET, "/metrics", &[]).await.text();
    assert!(
        metrics.contains("integration_cache_hits_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# HELP integration_cache_hits_total"),
        "{metrics}"
    );

    for auth in [None, Some("Bearer wrong"), Some("s3cret")] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let refused = send(admin, Method::POST, "/invalidate/ann", &headers).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(refused.json()["error"]["code"], "UNAUTHORIZED");
    }
    assert_eq!(
        get(proxy.addr, "/s", "ann").await.x_cache(),
        "HIT",
        "nothing was invalidated"
    );
    let done = send(
        admin,
        Method::POST,
        "/invalidate/ann",
        &[("authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(done.json()["invalidated"], 1);
    assert_eq!(get(proxy.addr, "/s", "ann").await.x_cache(), "MISS");
    let cleared = send(
        admin,
        Method::POST,
        "/clear",
        &[("authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(cleared.status, StatusCode::OK);
    assert_eq!(get(proxy.addr, "/s", "ann").await.x_cache(), "MISS");
    assert_eq!(
        send(admin, Method::GET, "/invalidate/ann", &[])
            .await
            .status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        send(admin, Method::GET, "/nope", &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_flaky_upstream_is_retried() {
    // Fails the first two attempts, then answers.
    let upstream = Upstream::start(|_request, n| async move {
        if n <= 2 {
            body(StatusCode::SERVICE_UNAVAILABLE, "busy".into())
        } else {
            body(StatusCode::OK, format!("answer after {n} attempts"))
        }
    })
    .await;
    let proxy = Running::start(&upstream.url(), &[]).await;
    let answer = get(proxy.addr, "/s", "ann").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "answer after 3 attempts");
    assert_eq!(upstream.calls(), 3);
    assert_eq!(proxy.handle.stats().retries, 2);
    assert_eq!(get(proxy.addr, "/s", "ann").await.x_cache(), "HIT");
}

#[tokio::test]
async fn stale_is_served_when_the_upstream_fails() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fail = failing.clone();
    let upstream = Upstream::start(move |_request, _| {
        let fail = fail.load(Ordering::SeqCst);
        async move {
            if fail {
                body(StatusCode::BAD_GATEWAY, "down".into())
            } else {
                body(StatusCode::OK, "good".into())
            }
        }
    })
    .await;
    let proxy = Running::start(
        &upstream.url(),
        &["--ttl", "150ms", "--stale-if-error", "1m"],
    )
    .await;
    assert_eq!(get(proxy.addr, "/s", "ann").await.text(), "good");
    failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stale = get(proxy.addr, "/s", "ann").await;
    assert_eq!(
        (stale.status, stale.x_cache(), stale.text().as_str()),
        (StatusCode::OK, "STALE", "good")
    );
    // Without a stale entry the failure itself is passed on.
    let fresh_user = get(proxy.addr, "/s", "bob").await;
    assert_eq!(
        (fresh_user.status, fresh_user.x_cache()),
        (StatusCode::BAD_GATEWAY, "MISS")
    );
}

#[tokio::test]
async fn a_dead_upstream_gets_a_json_502() {
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let proxy = Running::start(&format!("http://{dead}"), &["--retry-max", "2"]).await;
    let answer = get(proxy.addr, "/s", "ann").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.headers["content-type"], "application/json");
    let json = answer.json();
    assert_eq!(json["error"]["code"], "RETRY_EXHAUSTED");
    assert_eq!(json["error"]["retries"], 2);
    // Mutations too get a JSON 502 (they are not retried).
    let post = send(proxy.addr, Method::POST, "/s", &[("x-user-id", "ann")]).await;
    assert_eq!(post.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn an_upstream_that_hangs_up_without_answering_is_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU32::new(0));
    let counted = accepted.clone();
    let server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            // Read the request, answer nothing, close.
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
        }
    });
    let proxy = Running::start(&format!("http://{addr}"), &["--retry-max", "2"]).await;
    let answer = get(proxy.addr, "/s", "ann").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    let json = answer.json();
    assert_eq!(json["error"]["code"], "RETRY_EXHAUSTED", "{json}");
    assert_eq!(json["error"]["retries"], 2);
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    server.abort();
}

#[tokio::test]
async fn a_hung_upstream_is_answered_at_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            // Accept and never answer.
            open.push(stream);
        }
    });
    let proxy = Running::start(&format!("http://{addr}"), &["--deadline", "300ms"]).await;
    let started = std::time::Instant::now();
    let answer = get(proxy.addr, "/s", "ann").await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.json()["error"]["code"], "RETRY_EXHAUSTED");
    // Well before the 10 s upstream timeout; no tighter bound on a shared machine.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    server.abort();
}

#[test]
fn an_empty_admin_token_is_refused() {
    for token in ["", "  "] {
        let args = ProxyArgs::try_parse_from([
            "reverse_proxy",
            "--upstream",
            "http://127.0.0.1:1",
            "--admin-listen",
            "127.0.0.1:0",
            "--admin-token",
            token,
        ])
        .unwrap();
        let Err(error) = Proxy::from_args(&args) else {
            panic!("an admin token of {token:?} was accepted");
        };
        assert_eq!(error.setting(), "admin_token");
    }
}

#[tokio::test]
async fn a_body_larger_than_max_body_streams_through_uncached() {
    const SIZE: usize = 3 << 20;
    let upstream = Upstream::start(|_request, _| async {
        // Chunked (no Content-Length), so the cap is found while streaming.
        let chunks = (0..SIZE / 65536).map(|i| {
            Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(vec![
                b'a' + (i % 26)
                    as u8;
                65536
            ])))
        });
        Response::new(StreamBody::new(futures_util::stream::iter(chunks)).boxed())
    })
    .await;
    let proxy = Running::start(&upstream.url(), &["--max-body", "1MiB"]).await;
    for _ in 0..2 {
        let answer = get(proxy.addr, "/big", "ann").await;
        assert_eq!(answer.body.len(), SIZE);
        assert!(answer
            .body
            .chunks(65536)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&b| b == b'a' + (i % 26) as u8)));
        assert_eq!(answer.x_cache(), "MISS");
    }
    assert_eq!(upstream.calls(), 2, "not cached");
    assert_eq!(proxy.handle.stats().entries, 0);
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let upstream = Upstream::start(|_request, _| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        body(StatusCode::OK, "worth the wait".into())
    })
    .await;
    let proxy = Running::start(&upstream.url(), &[]).await;
    let addr = proxy.addr;
    let in_flight = tokio::spawn(async move { get(addr, "/slow", "ann").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = tokio::spawn(proxy.shutdown());
    let answer = in_flight.await.unwrap();
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (StatusCode::OK, "worth the wait")
    );
    stopped.await.unwrap().unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// Writes `raw` on a fresh connection and returns the status line of the answer.
async fn raw_status(to: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(to).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn bad_input_gets_a_4xx_and_never_reaches_the_cache_or_upstream() {
    let upstream = Upstream::echo().await;
    let proxy = Running::start(&upstream.url(), &[]).await;
    let garbage = raw_status(proxy.addr, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    let smuggling = raw_status(
        proxy.addr,
        b"POST /s HTTP/1.1\r\nHost: x\r\nx-user-id: ann\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    )
    .await;
    assert!(smuggling.starts_with("HTTP/1.1 400"), "{smuggling}");
    let huge = format!(
        "GET /s HTTP/1.1\r\nHost: x\r\nx-user-id: ann\r\nx-big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let too_large = raw_status(proxy.addr, huge.as_bytes()).await;
    assert!(too_large.starts_with("HTTP/1.1 431"), "{too_large}");
    let connect = raw_status(
        proxy.addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");
    assert_eq!(upstream.calls(), 0);
    assert_eq!(proxy.handle.stats().entries, 0);
}

#[tokio::test]
async fn conflicting_transfer_encoding_and_content_length_never_smuggle_a_request() {
    let upstream = Upstream::echo().await;
    let proxy = Running::start(&upstream.url(), &[]).await;
    let status = raw_status(
        proxy.addr,
        b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    // hyper either refuses the message (400) or lets chunked framing win; either way the
    // bytes after the chunked body must not become a second request upstream.
    assert!(
        status.starts_with("HTTP/1.1 400") || status.starts_with("HTTP/1.1 200"),
        "{status}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        upstream.calls() <= 1,
        "a smuggled request reached the upstream"
    );
}

#[tokio::test]
async fn http2_cleartext_is_served_too() {
    let upstream = Upstream::echo().await;
    let proxy = Running::start(&upstream.url(), &[]).await;
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for expected in ["MISS", "HIT"] {
        let request = Request::get(format!("http://{}/h2", proxy.addr))
            .header("x-user-id", "ann")
            .body(Full::default())
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.headers()["x-cache"], expected);
        response.into_body().collect().await.unwrap();
    }
}

#[tokio::test]
async fn anonymous_requests_can_be_rejected() {
    let upstream = Upstream::echo().await;
    let proxy = Running::start(&upstream.url(), &["--anonymous", "reject"]).await;
    let answer = send(proxy.addr, Method::GET, "/s", &[]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json()["error"]["code"], "UNAUTHENTICATED");
    assert_eq!(upstream.calls(), 0);
}

#[cfg(feature = "jwt")]
#[tokio::test]
async fn users_can_come_from_verified_jwts() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let upstream = Upstream::echo().await;
    let proxy = Running::start(&upstream.url(), &["--jwt-secret", "jwt-s3cret"]).await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = |sub: &str, key: &[u8]| {
        let claims = serde_json::json!({ "sub": sub, "exp": exp });
        format!(
            "Bearer {}",
            encode(&Header::default(), &claims, &EncodingKey::from_secret(key)).unwrap()
        )
    };
    let ann = token("ann", b"jwt-s3cret");
    assert_eq!(
        send(proxy.addr, Method::GET, "/s", &[("authorization", &ann)])
            .await
            .x_cache(),
        "MISS"
    );
    assert_eq!(
        send(proxy.addr, Method::GET, "/s", &[("authorization", &ann)])
            .await
            .x_cache(),
        "HIT"
    );
    let forged = token("ann", b"guessed");
    assert_eq!(
        send(proxy.addr, Method::GET, "/s", &[("authorization", &forged)])
            .await
            .x_cache(),
        "BYPASS"
    );
    // The header is ignored once JWTs are on.
    assert_eq!(get(proxy.addr, "/s", "ann").await.x_cache(), "BYPASS");
}

#[test]
fn every_flag_is_documented_and_readable_from_the_environment() {
    use clap::CommandFactory;
    let command = ProxyArgs::command();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "version") {
            continue;
        }
        assert!(arg.get_help().is_some(), "--{id} has no help");
        let env = arg
            .get_env()
            .unwrap_or_else(|| panic!("--{id} has no env var"));
        assert_eq!(
            env.to_str().unwrap(),
            format!("IC_{}", id.to_uppercase()),
            "--{id}"
        );
    }
}
