//! `--demo`: a slow, flaky per-user upstream, the proxy in front of it, and a guided tour.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::TcpListener;

use super::args::ProxyArgs;
use super::server::Proxy;

/// How slow the demo upstream is.
pub const DEMO_DELAY: Duration = Duration::from_millis(200);
/// The demo user whose requests fail twice out of three.
pub const FLAKY_USER: &str = "flaky";

#[derive(Default)]
struct DemoState {
    users: Mutex<HashMap<String, (u64, bool)>>,
    calls: AtomicU64,
    flaky: AtomicU64,
    down: AtomicBool,
}

/// Serves the demo upstream on `listener` until the returned sender is dropped or fired.
///
/// `GET /api/integrations/status` (200 ms, per `x-user-id`; user `flaky` fails 2 times in 3),
/// `POST /api/integrations/github/toggle`, `POST /__down`, `POST /__up`, `GET /__count`.
pub fn spawn_demo_upstream(listener: TcpListener) -> tokio::sync::oneshot::Sender<()> {
    let state = Arc::new(DemoState::default());
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
                _ = &mut stopped => return,
            };
            let state = state.clone();
            let service = hyper::service::service_fn(move |request| answer(state.clone(), request));
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    stop
}

async fn answer(
    state: Arc<DemoState>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let user = request
        .headers()
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_owned();
    let reply = |status: StatusCode, body: serde_json::Value| {
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        Ok(response)
    };
    match (request.method(), request.uri().path()) {
        (&Method::POST, "/__down") => {
            state.down.store(true, Ordering::SeqCst);
            reply(StatusCode::OK, serde_json::json!({ "down": true }))
        }
        (&Method::POST, "/__up") => {
            state.down.store(false, Ordering::SeqCst);
            reply(StatusCode::OK, serde_json::json!({ "down": false }))
        }
        (&Method::GET, "/__count") => {
            reply(StatusCode::OK, state.calls.load(Ordering::SeqCst).into())
        }
        (&Method::GET, "/api/integrations/status") => {
            state.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(DEMO_DELAY).await;
            let flaky = user == FLAKY_USER && state.flaky.fetch_add(1, Ordering::SeqCst) % 3 != 2;
            if state.down.load(Ordering::SeqCst) || flaky {
                return reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({ "error": "try again" }),
                );
            }
            let (version, github) = *state.users.lock().entry(user.clone()).or_insert((1, true));
            reply(
                StatusCode::OK,
                serde_json::json!({
                    "user_id": user,
                    "version": version,
                    "integrations": [
                        { "name": "github", "connected": github },
                        { "name": "slack", "connected": true },
                    ],
                }),
            )
        }
        (&Method::POST, "/api/integrations/github/toggle") => {
            state.calls.fetch_add(1, Ordering::SeqCst);
            let mut users = state.users.lock();
            let entry = users.entry(user.clone()).or_insert((1, true));
            *entry = (entry.0 + 1, !entry.1);
            reply(
                StatusCode::OK,
                serde_json::json!({ "user_id": user, "version": entry.0, "github": entry.1 }),
            )
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "not found" }),
        ),
    }
}

/// Runs the demo: upstream, proxy (on `args.listen`, or any free port if that is taken) and
/// admin API, then the tour, then serves until `shutdown`.
///
/// # Errors
///
/// A listener could not be bound, or the configuration is invalid.
pub async fn run_demo(
    mut args: ProxyArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let upstream_listener = TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream_listener.local_addr()?;
    let stop_upstream = spawn_demo_upstream(upstream_listener);
    args.stale_if_error = args.stale_if_error.or(Some(Duration::from_secs(300)));
    let ttl = args.ttl.unwrap_or(Duration::from_secs(10));
    args.ttl = Some(ttl);
    let proxy = Proxy::with_upstream(&args, &format!("http://{upstream_addr}"))
        .map_err(std::io::Error::other)?;
    let handle = proxy.handle();
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            println!("({} is taken: {error}; using a free port)", args.listen);
            TcpListener::bind("127.0.0.1:0").await?
        }
    };
    let proxy_addr = listener.local_addr()?;
    let admin = TcpListener::bind(
        args.admin_listen
            .unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
    )
    .await?;
    let admin_addr = admin.local_addr()?;
    let (stop_proxy, proxy_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(proxy.serve(listener, Some(admin), async {
        let _ = proxy_stopped.await;
    }));

    println!("\nintegration-cache demo");
    println!("  upstream  http://{upstream_addr}   (slow: {DEMO_DELAY:?} per request; user `{FLAKY_USER}` fails 2 times in 3)");
    println!("  proxy     http://{proxy_addr}   (TTL {ttl:?}, stale-if-error on)");
    println!("  admin     http://{admin_addr}\n");
    tour(proxy_addr, upstream_addr, admin_addr, ttl).await;
    let stats = handle.stats();
    println!(
        "\nstats: {} hits, {} misses, {} bypasses, {} stale, {} retries, {} coalesced, {} entries\n",
        stats.hits, stats.misses, stats.bypasses, stats.stale, stats.retries, stats.coalesced, stats.entries
    );
    print_try_it(proxy_addr, upstream_addr, admin_addr);
    shutdown.await;
    let _ = stop_proxy.send(());
    let _ = server.await;
    let _ = stop_upstream.send(());
    Ok(())
}

async fn tour(proxy: SocketAddr, upstream: SocketAddr, admin: SocketAddr, ttl: Duration) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let status = "/api/integrations/status";
    let step = |n: u32, what: &str| print!("  {n}. {what:<52}");
    step(1, "GET  as alice (cold)");
    send(&client, Method::GET, proxy, status, Some("alice")).await;
    step(2, "GET  as alice again");
    send(&client, Method::GET, proxy, status, Some("alice")).await;
    step(3, "GET  as bob (his own entry, never alice's)");
    send(&client, Method::GET, proxy, status, Some("bob")).await;
    step(4, "POST as alice: toggle github (drops her entries)");
    send(
        &client,
        Method::POST,
        proxy,
        "/api/integrations/github/toggle",
        Some("alice"),
    )
    .await;
    step(5, "GET  as alice (fresh data after her write)");
    send(&client, Method::GET, proxy, status, Some("alice")).await;
    step(
        6,
        &format!("GET  as {FLAKY_USER} (upstream fails twice, retried)"),
    );
    send(&client, Method::GET, proxy, status, Some(FLAKY_USER)).await;
    step(7, "GET  without a user");
    send(&client, Method::GET, proxy, status, None).await;
    println!("     ... the upstream goes down; waiting {ttl:?} for alice's entry to expire");
    send_quiet(&client, Method::POST, upstream, "/__down").await;
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    step(8, "GET  as alice (expired, upstream down)");
    send(&client, Method::GET, proxy, status, Some("alice")).await;
    send_quiet(&client, Method::POST, upstream, "/__up").await;
    step(9, "POST admin /invalidate/bob");
    send(&client, Method::POST, admin, "/invalidate/bob", None).await;
}

async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    method: Method,
    to: SocketAddr,
    path: &str,
    user: Option<&str>,
) {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{to}{path}"));
    if let Some(user) = user {
        request = request.header("x-user-id", user);
    }
    let request = request.body(Full::default()).expect("valid request");
    let started = std::time::Instant::now();
    match client.request(request).await {
        Ok(response) => {
            let status = response.status();
            let cache = response
                .headers()
                .get("x-cache")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let elapsed = started.elapsed();
            println!(
                "{} {cache:<6} {:>8.1} ms  {}",
                status.as_u16(),
                elapsed.as_secs_f64() * 1000.0,
                summarize(&body)
            );
        }
        Err(error) => println!("failed: {error}"),
    }
}

/// The interesting part of a demo answer, e.g. `alice v2 github:off`.
fn summarize(body: &[u8]) -> String {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::from_utf8_lossy(body).chars().take(60).collect();
    };
    if let (Some(user), Some(version)) = (json["user_id"].as_str(), json["version"].as_u64()) {
        let github = match json["integrations"][0]["connected"]
            .as_bool()
            .or(json["github"].as_bool())
        {
            Some(true) => "github:on",
            Some(false) => "github:off",
            None => "",
        };
        return format!("{user} v{version} {github}");
    }
    json.to_string().chars().take(60).collect()
}

async fn send_quiet(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    method: Method,
    to: SocketAddr,
    path: &str,
) {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{to}{path}"))
        .body(Full::default())
        .expect("valid request");
    let _ = client.request(request).await;
}

fn print_try_it(proxy: SocketAddr, upstream: SocketAddr, admin: SocketAddr) {
    println!("Try it yourself (Ctrl-C to stop):");
    println!("  curl -si -H 'x-user-id: carol' http://{proxy}/api/integrations/status    # MISS, then HIT");
    println!(
        "  curl -si -X POST -H 'x-user-id: carol' http://{proxy}/api/integrations/github/toggle"
    );
    println!("  curl -si -H 'x-user-id: {FLAKY_USER}' http://{proxy}/api/integrations/status   # retried");
    println!(
        "  curl -s -X POST http://{upstream}/__down    # then wait for the TTL: X-Cache: STALE"
    );
    println!("  curl -s -X POST http://{upstream}/__up");
    println!("  curl -s http://{admin}/stats ; curl -s http://{admin}/metrics");
}
