//! Saying what the cache did: `X-Cache`, RFC 9211 `Cache-Status`, and JSON error responses.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use super::stored::StoredResponse;

/// `X-Cache: HIT | MISS | BYPASS | STALE`.
pub(crate) const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// RFC 9211 `Cache-Status`.
pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// This cache's name in `Cache-Status`.
const NAME: &str = "integration-cache";

/// What the cache did for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    /// Answered from the store.
    Hit,
    /// Sent upstream; `stored` says whether the answer was kept.
    Forwarded { why: Forward, stored: bool },
    /// Answered with another request's upstream response (single-flight).
    Collapsed,
    /// The upstream failed and an expired entry was served instead.
    Stale { upstream_status: Option<StatusCode> },
    /// Not the cache's business: anonymous, not cacheable, a mutation, a method it ignores.
    Bypass,
    /// Anonymous and rejected.
    Rejected,
}

/// Why a request went upstream (RFC 9211 `fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forward {
    /// Nothing fresh was stored.
    Miss,
    /// The request asked for a fresh answer (`Cache-Control: no-cache`).
    Request,
    /// A response was stored, for other values of the headers its `Vary` names.
    VaryMiss,
}

impl Served {
    pub(crate) fn is_from_store(self) -> bool {
        matches!(self, Served::Hit | Served::Stale { .. })
    }

    /// The `X-Cache` value.
    pub(crate) fn x_cache(self) -> &'static str {
        match self {
            Served::Hit => "HIT",
            Served::Forwarded { .. } | Served::Collapsed => "MISS",
            Served::Stale { .. } => "STALE",
            Served::Bypass | Served::Rejected => "BYPASS",
        }
    }

    fn cache_status(self) -> HeaderValue {
        let text = match self {
            // The hot path: a static value, no formatting, no allocation.
            Served::Hit => return HeaderValue::from_static("integration-cache; hit"),
            Served::Bypass => return HeaderValue::from_static("integration-cache; fwd=bypass"),
            Served::Rejected => {
                return HeaderValue::from_static("integration-cache; fwd=bypass; detail=anonymous")
            }
            Served::Collapsed => {
                return HeaderValue::from_static("integration-cache; fwd=miss; collapsed")
            }
            Served::Forwarded { why, stored } => {
                let fwd = match why {
                    Forward::Miss => "miss",
                    Forward::Request => "request",
                    Forward::VaryMiss => "vary-miss",
                };
                format!("{NAME}; fwd={fwd}{}", if stored { "; stored" } else { "" })
            }
            Served::Stale { upstream_status } => match upstream_status {
                Some(status) => format!(
                    "{NAME}; fwd=miss; fwd-status={}; detail=stale-if-error",
                    status.as_u16()
                ),
                None => format!("{NAME}; fwd=miss; detail=stale-if-error"),
            },
        };
        HeaderValue::try_from(text).expect("ASCII")
    }
}

/// Sets `X-Cache` and `Cache-Status` (after the members of caches further upstream).
pub(crate) fn stamp(headers: &mut HeaderMap, served: Served, upstream_cache_status: Option<&str>) {
    headers.insert(X_CACHE, HeaderValue::from_static(served.x_cache()));
    let ours = served.cache_status();
    let value = match upstream_cache_status {
        None => ours,
        Some(upstream) => {
            let ours = ours.to_str().unwrap_or_default();
            HeaderValue::try_from(format!("{upstream}, {ours}"))
                .unwrap_or_else(|_| HeaderValue::from_static(""))
        }
    };
    headers.insert(CACHE_STATUS, value);
}

/// A JSON error the layer answers with itself, e.g. when the upstream cannot be reached.
///
/// `{"error":{"code":"RETRY_EXHAUSTED","status":502,"message":"...","retries":3}}`
pub(crate) fn json_error(
    status: StatusCode,
    code: &str,
    message: &str,
    retries: Option<u32>,
) -> StoredResponse {
    let mut error = serde_json::json!({
        "code": code,
        "status": status.as_u16(),
        "message": message,
    });
    if let Some(retries) = retries {
        error["retries"] = retries.into();
    }
    let body = Bytes::from(serde_json::json!({ "error": error }).to_string());
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    StoredResponse::synthetic(status, headers, body)
}

/// The answer to an anonymous request when the layer is set to reject those: 401 with a JSON
/// error.
pub(crate) fn unauthorized<B>() -> http::Response<super::CacheBody<B>> {
    let error = json_error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        "this endpoint is cached per user and needs an authenticated user; send the credentials \
         the cache's user extractor reads",
        None,
    );
    let mut response = error.render(false, 0, Served::Rejected);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// A JSON error response made by this crate itself (not by the upstream).
#[cfg(feature = "proxy")]
pub(crate) fn error_response<B>(
    status: StatusCode,
    code: &str,
    message: &str,
) -> http::Response<super::CacheBody<B>> {
    json_error(status, code, message, None).render(false, 0, Served::Bypass)
}
