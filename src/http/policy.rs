//! What may be stored, and for how long.
//!
//! The built-in rules, applied to every response before [`CachePolicy`] is asked:
//! - only `GET` responses are stored (`HEAD` is answered from them);
//! - the status is one of the cacheable statuses (default 200, 203, 204, 300, 301, 404, 410);
//! - the response has no `Cache-Control: no-store` and no `Vary: *`;
//! - with `respect_cache_control`, `no-cache`, `s-maxage`, `max-age` (minus `Age`) and
//!   `Expires` can only shorten the configured TTL;
//! - `Set-Cookie` is never stored (the response is stored without it).

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName};
use http::{response, StatusCode, Uri};

/// Extension point: narrows what the built-in rules would store.
///
/// Every method has a default, so an implementation overrides only what it needs. Closures
/// `Fn(&Uri, &response::Parts, Duration) -> Option<Duration>` implement [`CachePolicy::ttl`]:
///
/// ```
/// use integration_cache::http::CachePolicy;
/// use std::time::Duration;
///
/// // Permissions change often: keep them 30 s, everything else as configured.
/// let policy = |uri: &http::Uri, _: &http::response::Parts, ttl: Duration| {
///     Some(if uri.path().starts_with("/api/permissions") { Duration::from_secs(30) } else { ttl })
/// };
/// let (parts, _) = http::Response::new(()).into_parts();
/// let uri = http::Uri::from_static("/api/permissions");
/// assert_eq!(policy.ttl(&uri, &parts, Duration::from_secs(300)), Some(Duration::from_secs(30)));
/// ```
pub trait CachePolicy: Send + Sync + 'static {
    /// Whether a `GET`/`HEAD` request to `uri` may be answered from, and stored into, the cache.
    /// Default: yes.
    fn is_cacheable_request(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        let _ = (uri, headers);
        true
    }

    /// The TTL for a response the built-in rules would store for `ttl`; `None` stores nothing.
    /// Default: `Some(ttl)`.
    fn ttl(&self, uri: &Uri, response: &response::Parts, ttl: Duration) -> Option<Duration> {
        let _ = (uri, response);
        Some(ttl)
    }
}

impl<F> CachePolicy for F
where
    F: Fn(&Uri, &response::Parts, Duration) -> Option<Duration> + Send + Sync + 'static,
{
    fn ttl(&self, uri: &Uri, response: &response::Parts, ttl: Duration) -> Option<Duration> {
        self(uri, response, ttl)
    }
}

/// The policy that adds nothing to the built-in rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPolicy;

impl CachePolicy for DefaultPolicy {}

/// The built-in rules, configured by the layer's builder.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) ttl: Duration,
    pub(crate) statuses: Vec<StatusCode>,
    pub(crate) respect_cache_control: bool,
}

/// The statuses stored by default.
pub(crate) const DEFAULT_STATUSES: [u16; 7] = [200, 203, 204, 300, 301, 404, 410];

impl Rules {
    /// The TTL the rules allow for `response`, or `None` if it must not be stored.
    pub(crate) fn ttl(&self, response: &response::Parts) -> Option<Duration> {
        if !self.statuses.contains(&response.status) {
            return None;
        }
        let headers = &response.headers;
        if directives(headers, header::CACHE_CONTROL)
            .any(|(name, _)| name.eq_ignore_ascii_case(b"no-store"))
        {
            return None;
        }
        // `Vary: *` can never be matched.
        vary_names(headers)?;
        let ttl = if self.respect_cache_control {
            self.ttl.min(upstream_freshness(headers)?)
        } else {
            self.ttl
        };
        (!ttl.is_zero()).then_some(ttl)
    }
}

impl Rules {
    /// Whether the response forbids any reuse, even by requests waiting for it right now.
    pub(crate) fn forbids_sharing(&self, response: &response::Parts) -> bool {
        directives(&response.headers, header::CACHE_CONTROL)
            .any(|(name, _)| name.eq_ignore_ascii_case(b"no-store"))
            // `Vary: *`: no other request, not even one waiting for this answer, may reuse it.
            || vary_names(&response.headers).is_none()
    }
}

/// How long the upstream says the response stays fresh (`None`: do not store).
fn upstream_freshness(headers: &HeaderMap) -> Option<Duration> {
    let mut max_age = None;
    let mut s_maxage = None;
    for (name, value) in directives(headers, header::CACHE_CONTROL) {
        let seconds = || value.and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
        if name.eq_ignore_ascii_case(b"no-cache") {
            return None;
        } else if name.eq_ignore_ascii_case(b"s-maxage") {
            s_maxage = seconds();
        } else if name.eq_ignore_ascii_case(b"max-age") {
            max_age = seconds();
        }
    }
    let age = Duration::from_secs(age_header(headers));
    if let Some(seconds) = s_maxage.or(max_age) {
        return Some(Duration::from_secs(seconds).saturating_sub(age));
    }
    let expires = headers.get(header::EXPIRES)?.to_str().ok()?;
    let Ok(expires) = httpdate::parse_http_date(expires) else {
        // An invalid Expires means "already expired" (RFC 9111 §5.3).
        return Some(Duration::ZERO);
    };
    let date = headers
        .get(header::DATE)
        .and_then(|d| httpdate::parse_http_date(d.to_str().ok()?).ok())
        .unwrap_or_else(SystemTime::now);
    Some(
        expires
            .duration_since(date)
            .unwrap_or_default()
            .saturating_sub(age),
    )
}

/// The upstream's `Age`, in seconds (0 if absent or malformed).
pub(crate) fn age_header(headers: &HeaderMap) -> u64 {
    headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok()?.trim().parse().ok())
        .unwrap_or(0)
}

/// The header names listed in `Vary`, or `None` for `Vary: *` (never storable).
pub(crate) fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        for name in value.to_str().unwrap_or("*").split(',').map(str::trim) {
            if name == "*" {
                return None;
            }
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    Some(names)
}

/// Whether the request asks for a fresh answer (`Cache-Control: no-cache` or `max-age=0`, or
/// `Pragma: no-cache` without `Cache-Control`).
pub(crate) fn wants_refresh(headers: &HeaderMap) -> bool {
    // Every request asks this, and most carry neither header. Comparing each name with these
    // two (standard names compare as small integers) is cheaper than hashing them for two
    // lookups, for requests of up to about three dozen headers.
    if !headers
        .keys()
        .any(|name| name == header::CACHE_CONTROL || name == header::PRAGMA)
    {
        return false;
    }
    if headers.contains_key(header::CACHE_CONTROL) {
        return directives(headers, header::CACHE_CONTROL).any(|(name, value)| {
            name.eq_ignore_ascii_case(b"no-cache")
                || (name.eq_ignore_ascii_case(b"max-age") && value == Some(b"0".as_slice()))
        });
    }
    directives(headers, header::PRAGMA).any(|(name, _)| name.eq_ignore_ascii_case(b"no-cache"))
}

/// `name[=value]` directives of a comma-separated header, values unquoted.
///
/// Bytes, not text: a value with one non-ASCII byte (in a quoted extension, say) must not hide
/// the `no-store` next to it.
fn directives(
    headers: &HeaderMap,
    header: HeaderName,
) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
    headers
        .get_all(header)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|directive| {
            let directive = directive.trim_ascii();
            if directive.is_empty() {
                return None;
            }
            Some(match directive.iter().position(|&b| b == b'=') {
                Some(at) => {
                    let value = directive[at + 1..].trim_ascii();
                    let value = value
                        .strip_prefix(b"\"")
                        .and_then(|v| v.strip_suffix(b"\""))
                        .unwrap_or(value);
                    (directive[..at].trim_ascii(), Some(value))
                }
                None => (directive, None),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn rules(respect: bool) -> Rules {
        Rules {
            ttl: Duration::from_secs(300),
            statuses: DEFAULT_STATUSES
                .iter()
                .map(|&s| StatusCode::from_u16(s).unwrap())
                .collect(),
            respect_cache_control: respect,
        }
    }

    fn parts(status: u16, headers: &[(&str, &str)]) -> response::Parts {
        let mut builder = http::Response::builder().status(status);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn statuses_and_no_store() {
        let r = rules(false);
        assert_eq!(r.ttl(&parts(200, &[])), Some(Duration::from_secs(300)));
        assert_eq!(r.ttl(&parts(404, &[])), Some(Duration::from_secs(300)));
        assert_eq!(r.ttl(&parts(500, &[])), None);
        assert_eq!(r.ttl(&parts(206, &[])), None);
        assert_eq!(
            r.ttl(&parts(200, &[("cache-control", "private, no-store")])),
            None
        );
        assert_eq!(r.ttl(&parts(200, &[("vary", "accept, *")])), None);
    }

    #[test]
    fn a_non_ascii_byte_does_not_hide_no_store() {
        let mut head = parts(200, &[]);
        head.headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_bytes("no-store, x=\"\u{e9}\"".as_bytes()).unwrap(),
        );
        assert_eq!(rules(false).ttl(&head), None);
        assert!(rules(false).forbids_sharing(&head));
        head.headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_bytes(b"max-age=60, x=\"\xe9\"").unwrap(),
        );
        assert_eq!(rules(true).ttl(&head), Some(Duration::from_secs(60)));
    }

    #[test]
    fn nothing_is_shared_under_no_store_or_vary_star() {
        let r = rules(false);
        assert!(r.forbids_sharing(&parts(200, &[("cache-control", "no-store")])));
        assert!(r.forbids_sharing(&parts(200, &[("vary", "*")])));
        assert!(!r.forbids_sharing(&parts(200, &[("vary", "accept")])));
        assert!(!r.forbids_sharing(&parts(200, &[("cache-control", "private")])));
    }

    #[test]
    fn upstream_freshness_only_shortens_when_respected() {
        let short = [("cache-control", "max-age=60")];
        assert_eq!(
            rules(false).ttl(&parts(200, &short)),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            rules(true).ttl(&parts(200, &short)),
            Some(Duration::from_secs(60))
        );
        let long = [("cache-control", "max-age=6000")];
        assert_eq!(
            rules(true).ttl(&parts(200, &long)),
            Some(Duration::from_secs(300))
        );
        let shared = [("cache-control", "max-age=60, s-maxage=30"), ("age", "10")];
        assert_eq!(
            rules(true).ttl(&parts(200, &shared)),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            rules(true).ttl(&parts(200, &[("cache-control", "no-cache")])),
            None
        );
        assert_eq!(
            rules(true).ttl(&parts(200, &[("cache-control", "max-age=0")])),
            None
        );
        let expires = [
            ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("expires", "Wed, 21 Oct 2015 07:29:00 GMT"),
        ];
        assert_eq!(
            rules(true).ttl(&parts(200, &expires)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(rules(true).ttl(&parts(200, &[("expires", "0")])), None);
    }

    #[test]
    fn refresh_requests() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut map = HeaderMap::new();
            for (n, v) in pairs {
                map.append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            map
        };
        assert!(wants_refresh(&headers(&[("cache-control", "no-cache")])));
        assert!(wants_refresh(&headers(&[("cache-control", "max-age=0")])));
        assert!(wants_refresh(&headers(&[("pragma", "no-cache")])));
        assert!(!wants_refresh(&headers(&[
            ("cache-control", "max-age=10"),
            ("pragma", "no-cache")
        ])));
        assert!(!wants_refresh(&headers(&[])));
    }
}
