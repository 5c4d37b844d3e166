//! The proxy's command line: every flag also reads an `IC_<NAME>` environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// A per-user caching reverse proxy: put it in front of a slow per-user HTTP API.
///
/// The user is taken from a header set by your auth gateway (default `x-user-id`), or from a
/// verified JWT. Each user's GET responses are cached for the TTL; their POST/PUT/PATCH/DELETE
/// requests drop their entries; misses are retried with backoff and coalesced.
#[derive(Debug, Clone, Parser)]
#[command(name = "reverse_proxy", version, about, long_about = None)]
pub struct ProxyArgs {
    /// Address to serve on.
    #[arg(long, env = "IC_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// The upstream to forward to, e.g. http://127.0.0.1:8080 (plain HTTP; a path is a prefix).
    #[arg(long, env = "IC_UPSTREAM", required_unless_present = "demo")]
    pub upstream: Option<String>,

    /// The header that names the user. The proxy trusts it: run it behind a gateway that
    /// authenticates callers and sets this header, never directly on the internet.
    #[arg(long, env = "IC_USER_HEADER", default_value = "x-user-id")]
    pub user_header: String,

    /// Take the user from the `sub` of a bearer JWT signed with this HMAC secret (HS256),
    /// instead of the header.
    #[cfg(feature = "jwt")]
    #[arg(
        long,
        env = "IC_JWT_SECRET",
        conflicts_with = "jwt_public_key",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,

    /// Take the user from the `sub` of a bearer JWT signed with the key in this PEM file
    /// (RS256 or ES256), instead of the header.
    #[cfg(feature = "jwt")]
    #[arg(long, env = "IC_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<std::path::PathBuf>,

    /// What to do with requests without a (valid) user: pass them through uncached, or answer
    /// 401.
    #[arg(long, env = "IC_ANONYMOUS", value_enum, default_value_t = AnonymousMode::Bypass)]
    pub anonymous: AnonymousMode,

    /// How long a response is served from the cache, e.g. 100ms, 3s, 5m [default: 5m; 10s with
    /// --demo].
    #[arg(long, env = "IC_TTL", value_parser = parse_duration)]
    pub ttl: Option<Duration>,

    /// At most this many cached responses.
    #[arg(long, env = "IC_MAX_ENTRIES", default_value_t = 100_000)]
    pub max_entries: u64,

    /// At most this many bytes of cached responses, e.g. 512MiB.
    #[arg(long, env = "IC_MAX_BYTES", default_value = "256MiB", value_parser = parse_size)]
    pub max_bytes: u64,

    /// Larger bodies are streamed through without being cached, e.g. 512KiB.
    #[arg(long, env = "IC_MAX_BODY", default_value = "1MiB", value_parser = parse_size)]
    pub max_body: u64,

    /// When the upstream fails, serve a response that expired less than this long ago (marked
    /// X-Cache: STALE). Given without a value: 5m.
    #[arg(long, env = "IC_STALE_IF_ERROR", value_parser = parse_duration, num_args = 0..=1, default_missing_value = "5m")]
    pub stale_if_error: Option<Duration>,

    /// Let the upstream's Cache-Control max-age / s-maxage / no-cache and Expires shorten the
    /// TTL (no-store is always obeyed).
    #[arg(long, env = "IC_RESPECT_CACHE_CONTROL")]
    pub respect_cache_control: bool,

    /// Retries after a failed upstream attempt (connection errors, 502/503/504).
    #[arg(long, env = "IC_RETRY_MAX", default_value_t = 3)]
    pub retry_max: u32,

    /// Wait before the first retry; each next wait doubles.
    #[arg(long, env = "IC_RETRY_INITIAL_DELAY", default_value = "100ms", value_parser = parse_duration)]
    pub retry_initial_delay: Duration,

    /// The longest wait between two attempts.
    #[arg(long, env = "IC_RETRY_MAX_DELAY", default_value = "2s", value_parser = parse_duration)]
    pub retry_max_delay: Duration,

    /// Retries may add at most this fraction of the request rate (over 10 s).
    #[arg(long, env = "IC_RETRY_BUDGET", default_value_t = 0.2)]
    pub retry_budget: f32,

    /// One upstream attempt (connect + response headers) may take this long.
    #[arg(long, env = "IC_UPSTREAM_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,

    /// The longest a cacheable request may wait for the upstream, retries included, before
    /// it is answered 504 (or stale, with --stale-if-error).
    #[arg(long, env = "IC_DEADLINE", default_value = "30s", value_parser = parse_duration)]
    pub deadline: Duration,

    /// Serve the admin API (GET /stats, GET /metrics, POST /invalidate/{user}, POST /clear,
    /// GET /healthz) on this address. Off by default.
    #[arg(long, env = "IC_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Require `Authorization: Bearer <token>` for the admin POSTs (not empty).
    #[arg(long, env = "IC_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Log filter, e.g. info, debug, integration_cache=debug [default: info; warn with --demo,
    /// which prints its own tour].
    #[arg(long, env = "IC_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// Log as text or as JSON lines.
    #[arg(long, env = "IC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Run a demo on this machine: a built-in slow, flaky per-user upstream behind the proxy,
    /// a guided tour of MISS, HIT, invalidation, retry and stale, then keep serving.
    #[arg(long, env = "IC_DEMO")]
    pub demo: bool,
}

/// `--anonymous`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AnonymousMode {
    /// Pass through uncached (X-Cache: BYPASS).
    Bypass,
    /// Answer 401 with a JSON error.
    Reject,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `100ms`, `3s`, `5m`, `1h30m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e}; write durations like 100ms, 3s, 5m"))
}

/// `512KiB`, `1MiB`, `1048576`.
fn parse_size(text: &str) -> Result<u64, String> {
    text.parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("{e}; write sizes like 512KiB, 1MiB or a number of bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse_as_documented() {
        let args = ProxyArgs::try_parse_from([
            "reverse_proxy",
            "--upstream",
            "http://127.0.0.1:1",
            "--ttl",
            "3s",
            "--max-body",
            "512KiB",
            "--max-bytes",
            "1048576",
            "--stale-if-error",
        ])
        .unwrap();
        assert_eq!(args.ttl, Some(Duration::from_secs(3)));
        assert_eq!(args.max_body, 512 * 1024);
        assert_eq!(args.max_bytes, 1 << 20);
        assert_eq!(args.stale_if_error, Some(Duration::from_secs(300)));
        assert_eq!(args.retry_initial_delay, Duration::from_millis(100));
    }

    #[test]
    fn bad_values_are_explained() {
        let err =
            ProxyArgs::try_parse_from(["reverse_proxy", "--upstream", "http://x", "--ttl", "soon"])
                .unwrap_err();
        assert!(err.to_string().contains("100ms, 3s, 5m"), "{err}");
        let err = ProxyArgs::try_parse_from(["reverse_proxy"]).unwrap_err();
        assert!(err.to_string().contains("--upstream"), "{err}");
    }

    #[test]
    fn the_demo_needs_no_upstream() {
        assert!(ProxyArgs::try_parse_from(["reverse_proxy", "--demo"]).is_ok());
    }
}
