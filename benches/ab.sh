#!/usr/bin/env bash
# The layer's hit at two versions of the crate, in one process: (a) the bare service, (old) the
# layer as of a git revision, (new) the layer in this working tree, set up as in
# benches/layer.rs (benches/common), taking turns in batches. Each round's new/old ratio is
# taken before the median, so the machine's drift (this VM's speed moves by 2x within a
# minute) cancels: separate runs of `hit_ratio` for two builds differ by more than most
# changes are worth. A build against itself has read 0.97 to 1.08 here (most likely where the
# two copies' code lands; the order they are warmed in did not matter), so a change smaller
# than that needs counting (benches/callgrind.sh).
#
# Usage: benches/ab.sh <git revision> [rounds] [requests per batch] [user step]
#   defaults: 30 rounds of 20 000 requests, users scattered (step 7919; see common::drive)
# Builds in a scratch crate under ${AB_DIR:-/tmp/integration-cache-ab} (about two minutes the
# first time). The revision's layer must have the builder calls `our_layer` makes.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rev=${1:?usage: benches/ab.sh <git revision> [rounds] [batch] [step]}
shift
dir=${AB_DIR:-/tmp/integration-cache-ab}

rm -rf "$dir/base" "$dir/src"
mkdir -p "$dir/base" "$dir/src/common"
git -C "$repo" archive "$rev" Cargo.toml src | tar -x -C "$dir/base"
# The two versions must be two packages to link into one binary.
sed -i 's/^name = "integration-cache"$/name = "integration-cache-base"/' "$dir/base/Cargo.toml"
cp "$repo/Cargo.lock" "$dir/Cargo.lock"
cat >"$dir/Cargo.toml" <<EOF
[package]
name = "integration-cache-ab"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
new = { package = "integration-cache", path = "$repo", default-features = false }
base = { package = "integration-cache-base", path = "base", default-features = false }
axum = "0.8"
bytes = "1"
http = "1"
http-body = "1"
http-body-util = "0.1"
tokio = { version = "1", features = ["rt", "time", "macros"] }
tower = { version = "0.5", features = ["util"] }
EOF
sed 's/integration_cache::/new::/g' "$repo/benches/common/mod.rs" >"$dir/src/common/mod.rs"
cat >>"$dir/src/common/mod.rs" <<'EOF'

/// The layer at the base revision, configured as `our_layer`.
pub(crate) fn base_layer() -> base::http::IntegrationCacheLayer {
    base::http::IntegrationCacheLayer::builder()
        .user_header("x-user-id")
        .ttl(TTL)
        .build()
        .unwrap()
}
EOF
cat >"$dir/src/main.rs" <<'EOF'
#![allow(dead_code)]
use std::time::Instant;

use tower::Layer;

mod common;
use common::*;

fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let rounds = args.first().copied().unwrap_or(30).max(1);
    let batch = args.get(1).copied().unwrap_or(20_000) as u64;
    let step = args.get(2).copied().unwrap_or(7919);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let users = users();
        let bare_upstream = Upstream::new(users);
        let mut bare = bare_service(bare_upstream);
        warm_and_verify("a", &mut bare, users, bare_upstream, Expect::Uncached).await;
        let old_upstream = Upstream::new(users);
        let mut old = base_layer().layer(bare_service(old_upstream));
        let hits = Expect::Hits(Some("HIT"));
        warm_and_verify("old", &mut old, users, old_upstream, hits).await;
        let new_upstream = Upstream::new(users);
        let mut new = our_layer().layer(bare_service(new_upstream));
        warm_and_verify("new", &mut new, users, new_upstream, hits).await;
        let mut ns = [Vec::new(), Vec::new(), Vec::new()];
        let mut first = 0;
        for round in 0..rounds {
            // Rotate who goes first, so none always follows another.
            for turn in 0..3 {
                let which = (turn + round) % 3;
                let start = Instant::now();
                let bytes = match which {
                    0 => drive(&mut bare, users, first, batch, step).await,
                    1 => drive(&mut old, users, first, batch, step).await,
                    _ => drive(&mut new, users, first, batch, step).await,
                };
                assert_eq!(bytes as u64, batch * BODY_LEN as u64);
                ns[which].push(start.elapsed().as_nanos() as f64 / batch as f64);
            }
            first = (first + batch as usize) % USERS;
        }
        let ratio = |x: usize, y: usize| -> Vec<f64> {
            ns[x].iter().zip(&ns[y]).map(|(x, y)| x / y).collect()
        };
        let (mut old_a, mut new_a, mut new_old) = (ratio(1, 0), ratio(2, 0), ratio(2, 1));
        let [mut a, mut o, mut n] = ns;
        println!(
            "{rounds} rounds of {batch} requests, user step {step}; medians: (a) {:.0} ns, old {:.0} ns, new {:.0} ns",
            quantile(&mut a, 0.5),
            quantile(&mut o, 0.5),
            quantile(&mut n, 0.5),
        );
        println!(
            "per-round ratios, medians: old/(a) {:.3}, new/(a) {:.3}, new/old {:.3} (quartiles {:.3}..{:.3})",
            quantile(&mut old_a, 0.5),
            quantile(&mut new_a, 0.5),
            quantile(&mut new_old, 0.5),
            quantile(&mut new_old, 0.25),
            quantile(&mut new_old, 0.75),
        );
    });
}
EOF
cd "$dir"
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$dir/target} cargo build --release --quiet
"${CARGO_TARGET_DIR:-$dir/target}/release/integration-cache-ab" "$@"
