//! The layer's hit path counted in instructions, for callgrind: (a) the bare service and (b)
//! [`IntegrationCacheLayer`](integration_cache::http::IntegrationCacheLayer) on it, set up
//! exactly as in `benches/layer.rs` (the shared `common` module), one request at a time on a
//! current-thread runtime, each body collected.
//!
//! Wall time on this shared VM drifts by 2–4× from one hour to the next; instruction counts,
//! and callgrind's simulated cache misses, repeat. `benches/callgrind.sh` builds this, runs it
//! under callgrind for (a) and (b) at two request counts and prints the difference per request,
//! so set-up and warming cancel out:
//!
//! ```text
//! benches/callgrind.sh               # instructions per hit
//! benches/callgrind.sh --cache-sim   # and first-level data read misses per hit
//! ```
//!
//! By hand: `hit_instructions <a|b> <requests>` warms and verifies every user, then sends
//! `<requests>` requests between calls to `measure_start` and `measure_end` (the names given to
//! callgrind's `--zero-before` and `--dump-before`), and checks that (b) served them all from the
//! cache. Run by `cargo bench` (which passes `--bench`), it runs both briefly as a check.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use http::Response;
use tower::{Layer, Service};

mod common;

use common::*;

/// Written by the markers, so they are calls with an effect that cannot be merged or removed.
static MARK: AtomicU64 = AtomicU64::new(0);

/// Callgrind zeroes its counts when this is entered.
#[inline(never)]
fn measure_start(requests: u64) {
    MARK.store(black_box(requests), Ordering::Relaxed);
}

/// Callgrind dumps its counts when this is entered: the dump holds the measured loop alone.
#[inline(never)]
fn measure_end(bytes: usize) {
    MARK.fetch_add(black_box(bytes) as u64, Ordering::SeqCst);
}

/// Warms and verifies every user, then sends `requests` requests between the markers.
async fn measure<S, B>(
    name: &str,
    mut service: S,
    upstream: &Upstream,
    expect: Expect,
    requests: u64,
) where
    S: Service<Request, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let users = upstream.users;
    warm_and_verify(name, &mut service, users, upstream, expect).await;
    let before = upstream.calls();
    measure_start(requests);
    let bytes = drive(&mut service, users, 0, requests, 1).await;
    measure_end(bytes);
    assert_eq!(bytes as u64, requests * BODY_LEN as u64, "{name}");
    let upstream_calls = upstream.calls() - before;
    match expect {
        Expect::Uncached => assert_eq!(upstream_calls, requests, "{name}"),
        Expect::Hits(_) => assert_eq!(upstream_calls, 0, "{name}: not all hits"),
    }
    println!("ok: {name}, {requests} requests, {upstream_calls} upstream calls");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (modes, requests) = match args.as_slice() {
        [mode, requests] if mode == "a" || mode == "b" => {
            let requests = requests.parse().expect("the number of requests");
            (vec![mode.as_str()], requests)
        }
        _ => {
            println!("a short check of both modes; benches/callgrind.sh counts instructions");
            (vec!["a", "b"], 1_000)
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for mode in modes {
        let upstream = Upstream::new(users());
        runtime.block_on(async {
            if mode == "a" {
                let service = bare_service(upstream);
                measure(
                    "a_bare_service",
                    service,
                    upstream,
                    Expect::Uncached,
                    requests,
                )
                .await;
            } else {
                let service = our_layer().layer(bare_service(upstream));
                let expect = Expect::Hits(Some("HIT"));
                measure("b_layer_on_bare", service, upstream, expect, requests).await;
            }
        });
    }
}
