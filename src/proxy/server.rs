//! [`Proxy`]: the server loop, the per-connection service and graceful shutdown.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use pin_project_lite::pin_project;
use tokio::net::TcpListener;
use tower::util::Oneshot;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use super::admin::{self, Admin};
use super::args::{AnonymousMode, ProxyArgs};
use super::body::RequestBody;
use super::upstream::Upstream;
use crate::error::ConfigError;
use crate::http::{
    Anonymous, CacheBody, CacheHandle, IntegrationCacheLayer, IntegrationCacheService,
};
use crate::retry::{RetryBudget, RetryConfig};

/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The response body the proxy sends.
pub type ProxyBody = CacheBody<Incoming>;

/// A configured proxy, ready to serve on a listener.
///
/// ```no_run
/// use integration_cache::proxy::{Proxy, ProxyArgs};
/// use clap::Parser;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let args = ProxyArgs::parse_from(["reverse_proxy", "--upstream", "http://127.0.0.1:8080"]);
/// let proxy = Proxy::from_args(&args)?;
/// let listener = tokio::net::TcpListener::bind(args.listen).await?;
/// proxy.serve(listener, None, async { tokio::signal::ctrl_c().await.ok(); }).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Proxy {
    layer: IntegrationCacheLayer,
    upstream: Upstream,
    admin_token: Option<String>,
}

impl Proxy {
    /// Builds the proxy that `args` describe.
    ///
    /// # Errors
    ///
    /// A missing or unsupported upstream URL, or any setting the cache layer rejects.
    pub fn from_args(args: &ProxyArgs) -> Result<Self, ConfigError> {
        let upstream = args.upstream.as_deref().ok_or_else(|| {
            ConfigError::new("upstream", "--upstream is required (or run with --demo)")
        })?;
        Self::with_upstream(args, upstream)
    }

    pub(crate) fn with_upstream(args: &ProxyArgs, upstream: &str) -> Result<Self, ConfigError> {
        let default_ttl = if args.demo {
            Duration::from_secs(10)
        } else {
            crate::CACHE_TTL
        };
        let retry = RetryConfig::new(
            args.retry_max,
            args.retry_initial_delay,
            args.retry_max_delay,
            2.0,
        )?;
        let budget = RetryBudget::new(Duration::from_secs(10), 10, args.retry_budget)?;
        let max_body = usize::try_from(args.max_body)
            .map_err(|_| ConfigError::new("max_body", "too large for this platform"))?;
        let mut builder = IntegrationCacheLayer::builder()
            .ttl(args.ttl.unwrap_or(default_ttl))
            .max_entries(args.max_entries)
            .max_bytes(args.max_bytes)
            .max_body(max_body)
            .respect_cache_control(args.respect_cache_control)
            .anonymous(match args.anonymous {
                AnonymousMode::Bypass => Anonymous::Bypass,
                AnonymousMode::Reject => Anonymous::Reject,
            })
            .retry(retry)
            .retry_budget(budget)
            .deadline(args.deadline);
        if let Some(window) = args.stale_if_error {
            builder = builder.stale_if_error(window);
        }
        builder = user_source(builder, args)?;
        if args
            .admin_token
            .as_deref()
            .is_some_and(|token| token.trim().is_empty())
        {
            return Err(ConfigError::new(
                "admin_token",
                "an empty --admin-token would let anyone use the admin API; give a token, or \
                 leave the flag unset to run the admin API without one",
            ));
        }
        Ok(Self {
            layer: builder.build()?,
            upstream: Upstream::new(upstream, args.upstream_timeout)?,
            admin_token: args.admin_token.clone(),
        })
    }

    /// The cache's handle: invalidate, clear, stats.
    pub fn handle(&self) -> CacheHandle {
        self.layer.handle()
    }

    /// Serves on `listener` (and the admin API on `admin`, if given) until `shutdown`
    /// completes, then stops accepting and lets requests in flight finish (up to 30 s).
    ///
    /// # Errors
    ///
    /// None today: a failed `accept` is logged and retried.
    pub async fn serve(
        self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let (stop_admin, admin_stopped) = tokio::sync::watch::channel(false);
        let admin_task = admin.map(|listener| {
            let admin = Admin::new(self.layer.handle(), self.admin_token.clone());
            tokio::spawn(admin::serve(admin, listener, admin_stopped))
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .max_buf_size(64 * 1024);
        builder.http2().max_header_list_size(64 * 1024);
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        tracing::info!(listen = %listener.local_addr()?, "proxy listening");
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let handler = Handler::new(self.layer.layer(self.upstream.for_client(peer)));
            let connection = builder
                .serve_connection(TokioIo::new(stream), handler)
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
            });
        }
        drop(listener);
        tracing::info!("shutting down: draining requests in flight");
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all connections closed"),
            () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("gave up waiting for connections after {DRAIN_TIMEOUT:?}"),
        }
        let _ = stop_admin.send(true);
        if let Some(task) = admin_task {
            let _ = task.await;
        }
        Ok(())
    }
}

#[cfg(feature = "jwt")]
fn user_source(
    builder: crate::http::IntegrationCacheLayerBuilder,
    args: &ProxyArgs,
) -> Result<crate::http::IntegrationCacheLayerBuilder, ConfigError> {
    use crate::http::JwtUser;
    if let Some(secret) = &args.jwt_secret {
        return Ok(builder.user(JwtUser::hs256(secret.as_bytes())));
    }
    if let Some(path) = &args.jwt_public_key {
        let pem = std::fs::read(path).map_err(|e| {
            ConfigError::new(
                "jwt_public_key",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        return Ok(builder.user(JwtUser::public_key_pem(&pem)?));
    }
    Ok(builder.user_header(&args.user_header))
}

#[cfg(not(feature = "jwt"))]
fn user_source(
    builder: crate::http::IntegrationCacheLayerBuilder,
    args: &ProxyArgs,
) -> Result<crate::http::IntegrationCacheLayerBuilder, ConfigError> {
    Ok(builder.user_header(&args.user_header))
}

/// The service hyper calls for each request of one connection.
///
/// It owns that connection's copy of the cache service, so a request costs no clone of it:
/// hyper calls `call` from the connection's task and never re-enters it, which is what makes the
/// `RefCell` safe to borrow there.
struct Handler {
    service: RefCell<IntegrationCacheService<Upstream>>,
}

impl Handler {
    fn new(service: IntegrationCacheService<Upstream>) -> Self {
        Self {
            service: RefCell::new(service),
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for Handler {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = HandlerFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        if request.method() == Method::CONNECT {
            let refusal = crate::http::error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "this is a reverse proxy; CONNECT tunnels are not supported",
            );
            return HandlerFuture::Ready {
                response: Some(refusal),
            };
        }
        let request = request.map(RequestBody::new);
        let mut service = self.service.borrow_mut();
        // The pooled client is always ready, so readiness needs no waker; were it ever not,
        // a clone waits for it on its own.
        let mut context = Context::from_waker(std::task::Waker::noop());
        match service.poll_ready(&mut context) {
            Poll::Ready(Ok(())) => HandlerFuture::Call {
                call: service.call(request),
            },
            _ => HandlerFuture::Wait {
                call: service.clone().oneshot(request),
            },
        }
    }
}

type CacheFuture = crate::http::ResponseFuture<Upstream, RequestBody, Incoming>;

pin_project! {
    #[project = HandlerFutureProj]
    enum HandlerFuture {
        Ready { response: Option<Response<ProxyBody>> },
        Call { #[pin] call: CacheFuture },
        Wait { #[pin] call: Oneshot<IntegrationCacheService<Upstream>, Request<RequestBody>> },
    }
}

impl Future for HandlerFuture {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = match self.project() {
            HandlerFutureProj::Ready { response } => {
                return Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            HandlerFutureProj::Call { call } => std::task::ready!(call.poll(cx)),
            HandlerFutureProj::Wait { call } => std::task::ready!(call.poll(cx)),
        };
        // The cache layer turns upstream failures into responses; an error here would be the
        // client refusing readiness, which the pooled client never does.
        Poll::Ready(Ok(result.unwrap_or_else(|error| {
            crate::http::error_response(
                StatusCode::BAD_GATEWAY,
                "UPSTREAM_UNAVAILABLE",
                &error.to_string(),
            )
        })))
    }
}
