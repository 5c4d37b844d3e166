//! The layer's hit against the bare service in wall time, measured so that the machine's drift
//! cancels: (a) the bare service and (b)
//! [`IntegrationCacheLayer`](integration_cache::http::IntegrationCacheLayer) on it, set up
//! exactly as in `benches/layer.rs` (the shared `common` module), take turns in batches in one
//! process, and each round's ratio is taken before the median.
//!
//! On this shared VM, criterion's back-to-back groups for (a) and (b) land minutes apart, and
//! the machine's speed moves by 1.5× over minutes, so their ratio moved between 1.1 and 2.8 from
//! run to run of the same binary. Batches alternated within a second see the same machine.
//!
//! A batch must still be long: 100 000 requests by default, every user ten times over, so each
//! variant runs mostly in the cache state it leaves itself, as it does under criterion. With
//! short batches (2 000 requests), each variant finds the caches as the other left them; (a)
//! then runs slower and the ratio reads about 0.1 lower than it should.
//!
//! ```text
//! cargo bench --bench hit_ratio -- <rounds> <requests per batch> <user step>
//! # defaults: 30 100000 1
//! ```
//!
//! With a user step of 1, users come in the order their entries were stored, as in
//! `benches/layer.rs`; a step coprime with 10 000 (7919) visits them scattered, as real traffic
//! would (see `common::drive`).
//!
//! Prints the median time per request of each, the median of the rounds' (b)/(a), and its
//! quartiles, then each variant's tenth percentile (noise only adds time). Run by `cargo bench` without arguments (which passes `--bench`), it runs a few
//! rounds as a check.

use std::time::{Duration, Instant};

use tower::Layer;

mod common;

use common::*;

fn median(values: &mut [f64]) -> f64 {
    quantile(values, 0.5)
}

fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let numbers: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (rounds, batch, step) = match numbers.as_slice() {
        [rounds, batch, step, ..] => (*rounds as usize, *batch, *step as usize),
        [rounds, batch] => (*rounds as usize, *batch, 1),
        [rounds] => (*rounds as usize, 100_000, 1),
        _ => (30, 100_000, 1),
    };
    let check_only = std::env::args().any(|a| a == "--bench") && numbers.is_empty();
    let rounds = if check_only { 3 } else { rounds.max(1) };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let users = users();
        let bare_upstream = Upstream::new(users);
        let mut bare = bare_service(bare_upstream);
        warm_and_verify(
            "a_bare_service",
            &mut bare,
            users,
            bare_upstream,
            Expect::Uncached,
        )
        .await;
        let layer_upstream = Upstream::new(users);
        let mut layered = our_layer().layer(bare_service(layer_upstream));
        let hits = Expect::Hits(Some("HIT"));
        warm_and_verify("b_layer_on_bare", &mut layered, users, layer_upstream, hits).await;
        let layer_calls = layer_upstream.calls();

        let per_request = |elapsed: Duration| elapsed.as_nanos() as f64 / batch as f64;
        let (mut a_ns, mut b_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let mut first = 0;
        for round in 0..rounds {
            // Alternate which goes first, so neither always follows the other.
            let mut times = [0.0; 2];
            for turn in 0..2 {
                let which = (turn + round) % 2;
                let start = Instant::now();
                let bytes = if which == 0 {
                    drive(&mut bare, users, first, batch, step).await
                } else {
                    drive(&mut layered, users, first, batch, step).await
                };
                times[which] = per_request(start.elapsed());
                assert_eq!(bytes as u64, batch * BODY_LEN as u64);
            }
            first = (first + batch as usize) % USERS;
            a_ns.push(times[0]);
            b_ns.push(times[1]);
            ratios.push(times[1] / times[0]);
        }
        assert_eq!(layer_upstream.calls(), layer_calls, "(b) served a miss");
        let (q1, q3) = (quantile(&mut ratios, 0.25), quantile(&mut ratios, 0.75));
        // Noise only ever adds time: each variant's fastest tenth is the figure the host's other
        // tenants moved least.
        let (a_fast, b_fast) = (quantile(&mut a_ns, 0.1), quantile(&mut b_ns, 0.1));
        println!(
            "{rounds} rounds of {batch} requests each, user step {step}: (a) {:.0} ns, (b) {:.0} ns per request \
             (medians); (b)/(a) median {:.3}, quartiles {q1:.3}..{q3:.3}; \
             tenth percentiles (a) {a_fast:.0} ns, (b) {b_fast:.0} ns, ratio {:.3}",
            median(&mut a_ns),
            median(&mut b_ns),
            median(&mut ratios),
            b_fast / a_fast,
        );
    });
}
