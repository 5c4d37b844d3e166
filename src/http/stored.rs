//! A response as it is kept in the store, and how it is played back.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{response, Response, StatusCode, Version};

use super::body::CacheBody;
use super::hop_by_hop::strip_hop_by_hop;
use super::packed::{Packer, Piece};
use super::policy::{age_header, vary_names};
use super::respond::{stamp, Served, CACHE_STATUS};
use super::shared_head::StoredHeaders;

/// Headers that are per-recipient or recomputed, never replayed from the store (besides the
/// hop-by-hop ones).
const NOT_STORED: [HeaderName; 3] = [header::SET_COOKIE, header::PROXY_AUTHENTICATE, header::AGE];

/// A stored response: status, headers without anything per-connection or per-recipient, the
/// whole body, and the request header values its `Vary` names.
///
/// `repr(C)` keeps what every hit reads (headers, body, route, `Vary`, age, status) together
/// at the start, next to the `Arc`'s counts, and what only other outcomes read at the end, so a
/// hit on a response no recent request touched waits for as few cache lines of it as can be.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct StoredResponse {
    /// The headers exactly as a hit sends them (but for `Age`'s value), often partly shared
    /// with other responses (see [`shared_head`](super::shared_head)).
    headers: StoredHeaders,
    body: Bytes,
    /// The route key it was stored under.
    route: Box<str>,
    /// The request's value of each header `Vary` names, all its field lines combined.
    vary: Box<[(HeaderName, Option<Bytes>)]>,
    upstream_age: u64,
    status: StatusCode,
    version: Version,
    /// The `Cache-Status` members of caches behind this one, which ours must follow.
    upstream_cache_status: Option<String>,
}

impl StoredResponse {
    /// What to store of an upstream response with `head` and the body in `chunks`, requested
    /// with `request_headers`. Everything kept of the upstream's and the request's bytes is
    /// copied into one allocation of exactly their size (see [`packed`](super::packed)).
    /// `stored_for` names the user when the response goes into the store; only then may its
    /// headers be shared with other stored responses (see [`shared_head`](super::shared_head)).
    pub(crate) fn new(
        head: &response::Parts,
        chunks: &[Bytes],
        request_headers: &HeaderMap,
        route: &str,
        stored_for: Option<&str>,
    ) -> Self {
        let parts = head;
        let mut headers = parts.headers.clone();
        strip_hop_by_hop(&mut headers);
        for name in &NOT_STORED {
            headers.remove(name);
        }
        let upstream_cache_status = joined(&headers, &CACHE_STATUS);
        // A chunked upstream answer is now a body of known length: the server computes
        // `Content-Length` from it (one header less to clone on every hit), and `hit_into` adds
        // it for `HEAD`, whose body is empty.
        headers.remove(header::CONTENT_LENGTH);
        let vary: Vec<(HeaderName, Option<Cow<'_, [u8]>>)> = vary_names(&parts.headers)
            .unwrap_or_default()
            .into_iter()
            .map(|name| {
                let value = combined(request_headers, &name);
                (name, value)
            })
            .collect();

        let vary_values = vary.iter().filter_map(|(_, value)| value.as_deref());
        let len = headers.values().map(HeaderValue::len).sum::<usize>()
            + vary_values.clone().map(<[u8]>::len).sum::<usize>()
            + chunks.iter().map(Bytes::len).sum::<usize>();
        let mut packer = Packer::with_capacity(len);
        let header_pieces: Vec<Piece> = headers
            .values()
            .map(|v| packer.push(v.as_bytes()))
            .collect();
        let mut vary_pieces: Vec<Piece> = vary_values.map(|v| packer.push(v)).collect();
        let body_start = packer.push(&[]);
        let body_end = chunks
            .iter()
            .fold(body_start, |_, chunk| packer.push(chunk));
        let packed = packer.finish();
        // The same iteration order as above: the map is not changed in between.
        for (value, piece) in headers.values_mut().zip(header_pieces) {
            *value = packed.value(piece, value);
        }
        vary_pieces.reverse();
        let vary = vary
            .into_iter()
            .map(|(name, value)| {
                let value = value
                    .and_then(|_| vary_pieces.pop())
                    .map(|p| packed.bytes(p));
                (name, value)
            })
            .collect();
        let body = packed.bytes(body_start.to(body_end));

        Self {
            status: parts.status,
            version: parts.version,
            headers: {
                let headers = headers_for_hits(headers, upstream_cache_status.as_deref());
                match stored_for {
                    Some(user) => StoredHeaders::new(headers, user),
                    None => StoredHeaders::Own(Box::new(headers)),
                }
            },
            body,
            vary,
            route: route.into(),
            upstream_age: age_header(&parts.headers),
            upstream_cache_status,
        }
    }

    /// A response made by this layer (an error), shared with coalesced waiters like any other.
    pub(crate) fn synthetic(status: StatusCode, headers: HeaderMap, body: Bytes) -> Self {
        Self {
            status,
            version: Version::HTTP_11,
            headers: StoredHeaders::Own(Box::new(headers_for_hits(headers, None))),
            body,
            vary: Box::new([]),
            route: Box::default(),
            upstream_age: 0,
            upstream_cache_status: None,
        }
    }

    /// Whether this answers a request for `route` with these headers (`Vary`).
    pub(crate) fn is_for(&self, route: &str, request_headers: &HeaderMap) -> bool {
        *self.route == *route && self.matches(request_headers)
    }

    /// Whether a request with these headers may be answered by this response (`Vary`).
    #[inline]
    pub(crate) fn matches(&self, request_headers: &HeaderMap) -> bool {
        // Most responses vary on nothing: every hit asks, so say so without a call.
        self.vary.is_empty() || self.matches_vary(request_headers)
    }

    fn matches_vary(&self, request_headers: &HeaderMap) -> bool {
        self.vary.iter().all(|(name, value)| {
            combined(request_headers, name).as_deref() == value.as_ref().map(|v| &v[..])
        })
    }

    /// Bytes of memory this response holds, roughly, for the byte bound: its packed values and
    /// body, a map entry per header, and what every stored response costs besides
    /// (`tests/memory.rs` checks this against what the allocator sees).
    pub(crate) fn weight(&self) -> u64 {
        /// http's map entry for one header (104 bytes) and its share of the index.
        const PER_HEADER: usize = 112;
        /// The response and its `Arc`, the map's index, the buffer's reference count, the
        /// store's slot and the user's key, the reaper's visit, and the allocator's overhead on
        /// each: about 1.5 KiB held per response besides headers and body in `tests/memory.rs`,
        /// of which this counts two thirds.
        const PER_RESPONSE: usize = 1024;
        let mut headers = 0;
        self.headers.for_each_own(|name, value| {
            headers += name.as_str().len() + value.len() + PER_HEADER;
        });
        let vary: usize = self
            .vary
            .iter()
            .map(|(name, value)| name.as_str().len() + value.as_ref().map_or(0, Bytes::len) + 80)
            .sum();
        (self.body.len() + headers + vary + self.route.len() + PER_RESPONSE) as u64
    }

    /// The response to send: the stored one, with `Age` and the cache outcome stamped on it.
    /// `head_only` answers a `HEAD` with the `GET`'s headers and no body.
    pub(crate) fn render<B>(
        &self,
        head_only: bool,
        resident_secs: u64,
        served: Served,
    ) -> Response<CacheBody<B>> {
        let mut response = Response::new(self.body(head_only));
        self.hit_into(&mut response, head_only, resident_secs);
        if served != Served::Hit {
            // The stored headers are stamped for a hit, with `Age`; other outcomes restamp.
            let headers = response.headers_mut();
            if !served.is_from_store() {
                headers.remove(header::AGE);
            }
            stamp(headers, served, self.upstream_cache_status.as_deref());
        }
        response
    }

    /// The body to send: the stored one, none for a `HEAD`.
    #[inline]
    pub(crate) fn body<B>(&self, head_only: bool) -> CacheBody<B> {
        CacheBody::full(if head_only {
            Bytes::new()
        } else {
            self.body.clone()
        })
    }

    /// A hit's response, `resident_secs` after the entry was stored, made in `response`: a
    /// `Response::new` of [`body`](Self::body) with the same `head_only`. A hit's `poll` makes
    /// it in the response it returns: made here and returned, it would be copied once more
    /// (about 160 bytes; `benches/callgrind.sh` counts the `memcpy`s).
    pub(crate) fn hit_into<B>(
        &self,
        response: &mut Response<CacheBody<B>>,
        head_only: bool,
        resident_secs: u64,
    ) {
        debug_assert_eq!(
            response.body().full_len(),
            Some(if head_only { 0 } else { self.body.len() }),
            "the body must be `body(head_only)`"
        );
        *response.status_mut() = self.status;
        *response.version_mut() = self.version;
        let replaced = std::mem::replace(response.headers_mut(), self.headers.to_map());
        // The map `Response::new` made holds no allocation, as `HeaderMap::new` documents: so
        // forgetting it skips a drop of about 60 instructions and leaks nothing. The check
        // rests on http's internals (no capacity, no allocation); were they to change, a small
        // leak would follow, nothing unsound.
        if replaced.capacity() == 0 {
            std::mem::forget(replaced);
        }
        let headers = response.headers_mut();
        // The stored headers are already stamped for a hit and hold an `Age` placeholder, which
        // is the first entry (see `headers_for_hits`): found at once, without hashing the name
        // as `get_mut` would.
        if let Some((_, age)) = headers.iter_mut().find(|(name, _)| **name == header::AGE) {
            *age = age_value(self.upstream_age.saturating_add(resident_secs));
        }
        if head_only {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(self.body.len()));
        }
    }
}

/// `Age` values of up to an hour are built once and shared; `from_static` values are cloned
/// without touching a reference count, so concurrent hits do not contend on them.
fn age_value(seconds: u64) -> HeaderValue {
    const PRECOMPUTED: u64 = 3600;
    static AGES: std::sync::OnceLock<Box<[HeaderValue]>> = std::sync::OnceLock::new();
    if seconds > PRECOMPUTED {
        return HeaderValue::from(seconds);
    }
    let ages = AGES.get_or_init(|| {
        (0..=PRECOMPUTED)
            .map(|n| HeaderValue::from_static(Box::leak(n.to_string().into_boxed_str())))
            .collect()
    });
    ages[seconds as usize].clone()
}

/// `headers` as a hit sends them: stamped for a hit, with an `Age` placeholder inserted first
/// (`hit_into` finds it by a scan of one entry), in a map whose index has room to spare (a clone
/// keeps the index's size, so a `HEAD` hit's `Content-Length` does not rebuild it).
fn headers_for_hits(headers: HeaderMap, upstream_cache_status: Option<&str>) -> HeaderMap {
    let mut hit = HeaderMap::with_capacity(headers.len() + 4);
    hit.insert(header::AGE, HeaderValue::from_static("0"));
    hit.extend(headers);
    stamp(&mut hit, Served::Hit, upstream_cache_status);
    // A clone keeps the index's size but allocates only the entries in use, so the stored map
    // does not keep the spare room (about a hundred bytes per header) for good.
    hit.clone()
}

/// A request header's field lines combined into one value (RFC 9110 §5.3), as `Vary` compares
/// them; borrowed when there is one line, as there almost always is.
fn combined<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<Cow<'h, [u8]>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first.as_bytes()));
    };
    let mut joined = first.as_bytes().to_vec();
    for value in std::iter::once(second).chain(values) {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(value.as_bytes());
    }
    Some(Cow::Owned(joined))
}

/// All values of `name`, comma-joined, if any.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_connection_and_per_recipient_headers_are_not_stored() {
        let (parts, _) = Response::builder()
            .header("set-cookie", "session=secret")
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .header("x-kept", "yes")
            .header("age", "7")
            .header("vary", "accept-language")
            .body(())
            .unwrap()
            .into_parts();
        let mut request = HeaderMap::new();
        request.insert("accept-language", HeaderValue::from_static("fr"));
        let stored = StoredResponse::new(
            &parts,
            &[Bytes::from_static(b"hello")],
            &request,
            "/hello",
            None,
        );
        let rendered = stored.render::<http_body_util::Empty<Bytes>>(false, 3, Served::Hit);
        let headers = rendered.headers();
        assert!(headers.get("set-cookie").is_none());
        assert!(headers.get("x-hop").is_none());
        assert_eq!(headers["x-kept"], "yes");
        assert_eq!(headers["age"], "10", "upstream age plus time in the cache");
        assert_eq!(headers["x-cache"], "HIT");
        assert!(stored.matches(&request));
        request.insert("accept-language", HeaderValue::from_static("de"));
        assert!(!stored.matches(&request));
    }

    #[test]
    fn vary_compares_every_field_line_of_the_request_header() {
        let (parts, _) = Response::builder()
            .header("vary", "accept-language")
            .body(())
            .unwrap()
            .into_parts();
        let lines = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append("accept-language", HeaderValue::from_static(value));
            }
            headers
        };
        let stored = StoredResponse::new(&parts, &[], &lines(&["fr", "de"]), "/", None);
        assert!(stored.matches(&lines(&["fr", "de"])));
        assert!(
            stored.matches(&lines(&["fr, de"])),
            "one line or two, the same value"
        );
        assert!(
            !stored.matches(&lines(&["fr", "en"])),
            "the first line alone is not enough"
        );
        assert!(!stored.matches(&lines(&["fr"])));
        assert!(!stored.matches(&lines(&[])));
        let absent = StoredResponse::new(&parts, &[], &lines(&[]), "/", None);
        assert!(absent.matches(&lines(&[])));
        assert!(!absent.matches(&lines(&["fr"])));
    }

    #[test]
    fn stored_responses_to_different_users_share_their_head_and_unstored_ones_never_do() {
        let (parts, _) = Response::builder()
            .header("content-type", "application/json")
            .header("x-test", "stored-rs-sharing")
            .header("date", "Mon, 30 Nov 2026 10:00:00 GMT")
            .body(())
            .unwrap()
            .into_parts();
        let store = |user| StoredResponse::new(&parts, &[], &HeaderMap::new(), "/s", user);
        let shared = |stored: &StoredResponse| match &stored.headers {
            StoredHeaders::Shared { head, .. } => Some(*head as *const HeaderMap),
            StoredHeaders::Own(_) => None,
        };
        for _ in 0..3 {
            assert_eq!(shared(&store(None)), None, "not stored, never shared");
        }
        assert_eq!(shared(&store(Some("ann"))), None, "first sighting");
        let bob = store(Some("bob"));
        let cy = store(Some("cy"));
        assert!(shared(&bob).is_some());
        assert_eq!(shared(&bob), shared(&cy));
        let rendered = cy.render::<http_body_util::Empty<Bytes>>(false, 4, Served::Hit);
        let headers = rendered.headers();
        assert_eq!(headers.keys().next(), Some(&header::AGE), "Age comes first");
        assert_eq!(headers["age"], "4");
        assert_eq!(headers["x-cache"], "HIT");
        assert_eq!(headers["date"], "Mon, 30 Nov 2026 10:00:00 GMT");
        let stale = cy.render::<http_body_util::Empty<Bytes>>(
            true,
            9,
            Served::Stale {
                upstream_status: None,
            },
        );
        assert_eq!(stale.headers()["x-cache"], "STALE");
        assert_eq!(stale.headers().get_all("x-cache").iter().count(), 1);
        assert_eq!(stale.headers()["content-length"], "0");
    }

    #[test]
    fn a_huge_upstream_age_saturates() {
        let (parts, _) = Response::builder()
            .header("age", u64::MAX.to_string())
            .body(())
            .unwrap()
            .into_parts();
        let stored = StoredResponse::new(&parts, &[], &HeaderMap::new(), "/", None);
        let rendered = stored.render::<http_body_util::Empty<Bytes>>(false, 2, Served::Hit);
        assert_eq!(rendered.headers()["age"], u64::MAX.to_string().as_str());
    }
}
