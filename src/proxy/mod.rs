//! The reverse proxy (feature `proxy`): a per-user caching proxy an operator runs with no code.
//!
//! ```text
//! client ─▶ hyper server (HTTP/1.1 keep-alive, h2c) ─▶ IntegrationCacheLayer ─▶ RetryLayer
//!                                                         ─▶ pooled hyper-util client ─▶ upstream
//! ```
//!
//! The server logic lives here and takes a listener and a shutdown future, so tests run it in
//! process; `examples/reverse_proxy.rs` only parses flags, sets up logging and calls
//! [`Proxy::serve`] (or [`run_demo`]).
//!
//! What the proxy does beyond the cache layer:
//! - forwards with hop-by-hop headers removed, `Host` set to the upstream's, the client's
//!   `Host` in `X-Forwarded-Host`, its address appended to `X-Forwarded-For`, and
//!   `X-Forwarded-Proto: http`; request and response bodies stream through;
//! - leaves malformed requests, conflicting `Content-Length`/`Transfer-Encoding` and oversized
//!   headers (over 64 KiB) to hyper, which answers them with a 4xx before anything reaches the
//!   cache;
//! - shuts down gracefully: stops accepting, lets requests in flight finish (up to 30 s);
//! - optionally serves an admin API (see [`ProxyArgs::admin_listen`]).

mod admin;
mod args;
mod body;
mod demo;
mod server;
mod upstream;

pub use self::args::{AnonymousMode, LogFormat, ProxyArgs};
pub use self::body::RequestBody;
pub use self::demo::{run_demo, spawn_demo_upstream, DEMO_DELAY, FLAKY_USER};
pub use self::server::{Proxy, ProxyBody};
pub use self::upstream::UpstreamError;

/// Sets up `tracing` output as `--log-level` and `--log-format` say.
///
/// # Errors
///
/// An invalid log filter, or a global subscriber already set.
pub fn init_logging(level: &str, format: LogFormat) -> Result<(), crate::BoxError> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
