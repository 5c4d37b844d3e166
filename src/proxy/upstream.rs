//! [`Upstream`]: the pooled HTTP client the proxy forwards to, as a tower service.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_service::Service;

use super::body::RequestBody;
use crate::error::{BoxError, ConfigError};
use crate::http::strip_hop_by_hop;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Where requests go.
#[derive(Debug)]
struct Base {
    scheme: Scheme,
    authority: Authority,
    /// A path prefix from the upstream URL, without a trailing slash.
    prefix: String,
}

/// Forwards requests to one upstream over pooled keep-alive connections.
#[derive(Clone, Debug)]
pub(crate) struct Upstream {
    client: Client<HttpConnector, RequestBody>,
    base: Arc<Base>,
    timeout: Duration,
    /// The address of the client whose connection this copy serves, for `X-Forwarded-For`.
    client_addr: Option<SocketAddr>,
}

impl Upstream {
    /// A client for `url` (`http://host:port[/prefix]`) whose attempts time out after `timeout`.
    pub(crate) fn new(url: &str, timeout: Duration) -> Result<Self, ConfigError> {
        let uri: Uri = url.parse().map_err(|_| {
            ConfigError::new(
                "upstream",
                format!("{url:?} is not a URL; use e.g. http://127.0.0.1:8080"),
            )
        })?;
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        if scheme != Scheme::HTTP {
            return Err(ConfigError::new(
                "upstream",
                "only http:// upstreams are supported; run the proxy next to the upstream, or terminate TLS in front of it",
            ));
        }
        let authority = uri.authority().cloned().ok_or_else(|| {
            ConfigError::new(
                "upstream",
                format!("{url:?} has no host; use e.g. http://127.0.0.1:8080"),
            )
        })?;
        let prefix = uri.path().trim_end_matches('/').to_owned();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Ok(Self {
            client,
            base: Arc::new(Base {
                scheme,
                authority,
                prefix,
            }),
            timeout,
            client_addr: None,
        })
    }

    /// This upstream, for the connection of the client at `addr`.
    pub(crate) fn for_client(&self, addr: SocketAddr) -> Self {
        Self {
            client_addr: Some(addr),
            ..self.clone()
        }
    }

    /// Turns a client's request into the upstream's.
    fn prepare(&self, mut request: Request<RequestBody>) -> Request<RequestBody> {
        let target = request
            .uri()
            .path_and_query()
            .map_or("/", PathAndQuery::as_str);
        let joined = format!("{}{}", self.base.prefix, target);
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.base.scheme.clone());
        parts.authority = Some(self.base.authority.clone());
        parts.path_and_query = PathAndQuery::try_from(joined).ok();
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        *request.version_mut() = Version::HTTP_11;
        let headers = request.headers_mut();
        strip_hop_by_hop(headers);
        if let Some(host) = headers.remove(header::HOST) {
            headers.insert(X_FORWARDED_HOST, host);
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        if let Some(addr) = self.client_addr {
            let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
                Some(earlier) => format!("{earlier}, {}", addr.ip()),
                None => addr.ip().to_string(),
            };
            if let Ok(value) = HeaderValue::try_from(forwarded_for) {
                headers.insert(X_FORWARDED_FOR, value);
            }
        }
        request
    }
}

/// The upstream could not be asked, or did not answer in time.
#[derive(Debug)]
pub struct UpstreamError {
    message: String,
    source: BoxError,
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl Service<Request<RequestBody>> for Upstream {
    type Response = Response<Incoming>;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pooled client takes any number of requests.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let request = self.prepare(request);
        let sent = self.client.request(request);
        let timeout = self.timeout;
        Box::pin(async move {
            let result = tokio::time::timeout(timeout, sent).await;
            let mut response = match result {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => {
                    return Err(UpstreamError {
                        message: format!("upstream request failed: {error}"),
                        source: Box::new(error),
                    })
                }
                Err(_) => {
                    let timed_out = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {timeout:?}"),
                    );
                    return Err(UpstreamError {
                        message: format!("upstream timed out after {timeout:?}"),
                        source: Box::new(timed_out),
                    });
                }
            };
            strip_hop_by_hop(response.headers_mut());
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_rewritten_for_the_upstream() {
        let upstream = Upstream::new("http://127.0.0.1:9/base/", Duration::from_secs(1))
            .unwrap()
            .for_client("192.0.2.7:5555".parse().unwrap());
        let request = Request::get("/api/x?y=1")
            .header("host", "proxy.example")
            .header("connection", "keep-alive, x-secret-hop")
            .header("x-secret-hop", "1")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-user-id", "ann")
            .body(RequestBody::default())
            .unwrap();
        let prepared = upstream.prepare(request);
        assert_eq!(
            prepared.uri().to_string(),
            "http://127.0.0.1:9/base/api/x?y=1"
        );
        let headers = prepared.headers();
        assert!(headers.get("connection").is_none());
        assert!(headers.get("x-secret-hop").is_none());
        assert!(
            headers.get("host").is_none(),
            "the client sets the upstream's Host"
        );
        assert_eq!(headers["x-forwarded-host"], "proxy.example");
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-user-id"], "ann");
    }

    #[test]
    fn only_plain_http_upstreams() {
        let err = Upstream::new("https://example.com", Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.setting(), "upstream");
        assert!(Upstream::new("not a url", Duration::from_secs(1)).is_err());
    }
}
