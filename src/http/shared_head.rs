//! Stored heads that many responses have in common, kept once.
//!
//! A hit clones its stored response's headers. When each response keeps its own `HeaderMap`,
//! that clone reads the map's entries from memory no recent request touched. Measured with
//! 10 K users (`benches/hit_ratio.rs`, BENCHMARKS.md), sharing took about a fifth off a hit's
//! time.
//! Responses of one API to different users mostly carry the same headers (`Content-Type`,
//! `Cache-Control`, and the hit's own `Age`, `X-Cache` and `Cache-Status`), so they can share
//! one map, which stays in cache because every hit reads it.
//!
//! - A header that differs per response by nature (`Date`, `ETag`, ...) stays with the response
//!   and is appended after the shared ones on each hit.
//! - A set of headers is shared only once it has been seen twice, so one-off heads are never
//!   kept, and never when a value is marked sensitive.
//! - A shared map's names and values are `'static` (copied once, never freed). A clone then
//!   touches no reference count, which would otherwise bounce between cores on every hit. The
//!   cost is bounded memory for the life of the process: at most [`MAX_SHARED`] maps of at
//!   most [`MAX_SHARED_BYTES`] bytes of names and values each. Past that, responses keep maps
//!   of their own, as before.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use parking_lot::Mutex;

/// Most shared heads kept by the process.
pub(crate) const MAX_SHARED: usize = 256;

/// Most bytes of names and values in one shared head.
pub(crate) const MAX_SHARED_BYTES: usize = 4096;

/// Heads seen once that are remembered, waiting for a second sighting; forgotten all at once
/// when full, so one-off heads cost a bounded set and nothing for good.
const MAX_CANDIDATES: usize = 1024;

/// Headers that differ from one response to the next by nature, so sharing heads that hold
/// them would share nothing (and `Date` would make a new head every second).
const PER_RESPONSE: [HeaderName; 5] = [
    header::DATE,
    header::EXPIRES,
    header::ETAG,
    header::LAST_MODIFIED,
    HeaderName::from_static("x-request-id"),
];

/// A stored response's headers as a hit sends them: a shared head and the response's own
/// headers after it, or a map of its own.
#[derive(Debug)]
pub(crate) enum StoredHeaders {
    Shared {
        head: &'static HeaderMap,
        own: Box<[(HeaderName, HeaderValue)]>,
    },
    /// Boxed, so the common case (shared) keeps the stored response small.
    Own(Box<HeaderMap>),
}

impl StoredHeaders {
    /// `headers`, with their shareable part shared when the process shares (or now starts
    /// sharing) it.
    pub(crate) fn new(headers: HeaderMap) -> Self {
        shared_heads().share(headers)
    }

    /// The headers to send, in a map of the caller's own.
    #[inline]
    pub(crate) fn to_map(&self) -> HeaderMap {
        match self {
            StoredHeaders::Shared { head, own } => {
                let mut map = (*head).clone();
                for (name, value) in own.iter() {
                    map.append(name.clone(), value.clone());
                }
                map
            }
            StoredHeaders::Own(map) => HeaderMap::clone(map),
        }
    }

    /// Calls `f` with each header this response pays for alone (a shared head is paid for once,
    /// by the process).
    pub(crate) fn for_each_own(&self, mut f: impl FnMut(&HeaderName, &HeaderValue)) {
        match self {
            StoredHeaders::Shared { own, .. } => own.iter().for_each(|(n, v)| f(n, v)),
            StoredHeaders::Own(map) => map.iter().for_each(|(n, v)| f(n, v)),
        }
    }
}

fn shared_heads() -> &'static SharedHeads {
    static SHARED_HEADS: OnceLock<SharedHeads> = OnceLock::new();
    SHARED_HEADS.get_or_init(SharedHeads::default)
}

/// The heads shared so far, keyed by their names and values.
#[derive(Default)]
pub(crate) struct SharedHeads(Mutex<Heads>);

#[derive(Default)]
struct Heads {
    shared: HashMap<Box<[u8]>, &'static HeaderMap>,
    seen_once: HashSet<Box<[u8]>>,
}

impl SharedHeads {
    /// `headers` split into the part a shared head holds (if one does, or now will) and the
    /// response's own.
    pub(crate) fn share(&self, headers: HeaderMap) -> StoredHeaders {
        let mut shareable = HeaderMap::with_capacity(headers.len());
        let mut own = Vec::new();
        for (name, value) in &headers {
            if PER_RESPONSE.contains(name) {
                own.push((name.clone(), value.clone()));
            } else {
                shareable.append(name.clone(), value.clone());
            }
        }
        let Some(key) = key_of(&shareable) else {
            return StoredHeaders::Own(Box::new(headers));
        };
        let mut guard = self.0.lock();
        let heads = &mut *guard;
        let head = match heads.shared.get(&key) {
            Some(head) => *head,
            None if heads.shared.len() >= MAX_SHARED => {
                return StoredHeaders::Own(Box::new(headers))
            }
            None if heads.seen_once.remove(&key) => {
                let head = leaked(&shareable);
                heads.shared.insert(key, head);
                head
            }
            None => {
                if heads.seen_once.len() >= MAX_CANDIDATES {
                    heads.seen_once.clear();
                }
                heads.seen_once.insert(key);
                return StoredHeaders::Own(Box::new(headers));
            }
        };
        StoredHeaders::Shared {
            head,
            own: own.into_boxed_slice(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().shared.len()
    }
}

/// The names and values of `headers` in order, as one key; `None` past [`MAX_SHARED_BYTES`] or
/// when a value is marked sensitive (a shared head outlives the entries that use it, so what
/// is known to be secret is not kept for good).
fn key_of(headers: &HeaderMap) -> Option<Box<[u8]>> {
    let mut key = Vec::new();
    for (name, value) in headers {
        if value.is_sensitive() {
            return None;
        }
        // A name never holds `:` and a value never holds `\n`, so the key reads one way only.
        key.extend_from_slice(name.as_str().as_bytes());
        key.push(b':');
        key.extend_from_slice(value.as_bytes());
        key.push(b'\n');
        if key.len() > MAX_SHARED_BYTES {
            return None;
        }
    }
    Some(key.into_boxed_slice())
}

/// A copy of `headers` whose names and values are `'static`, kept for the life of the process.
fn leaked(headers: &HeaderMap) -> &'static HeaderMap {
    // Room for the `Content-Length` of a `HEAD` hit and one own header: a clone keeps the
    // index's size, so neither rebuilds it.
    let mut map = HeaderMap::with_capacity(headers.len() + 2);
    for (name, value) in headers {
        let bytes: &'static [u8] = Box::leak(value.as_bytes().into());
        let copy = HeaderValue::from_maybe_shared(Bytes::from_static(bytes))
            .unwrap_or_else(|_| value.clone());
        map.append(static_name(name), copy);
    }
    Box::leak(Box::new(map))
}

/// `name` with `'static` bytes, so cloning it touches no reference count.
fn static_name(name: &HeaderName) -> HeaderName {
    // A name's text is lowercase and valid by construction, which is all `from_static` checks.
    let text: &'static str = Box::leak(name.as_str().into());
    HeaderName::from_static(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn sent(headers: &StoredHeaders) -> Vec<(String, String)> {
        headers
            .to_map()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn a_head_seen_twice_is_shared_and_per_response_headers_stay_with_each_response() {
        let heads = SharedHeads::default();
        let first = heads.share(head(&[
            ("content-type", "application/json"),
            ("date", "Mon, 30 Nov 2026 10:00:00 GMT"),
            ("x-custom", "yes"),
        ]));
        assert!(matches!(first, StoredHeaders::Own(_)), "seen once");
        let second = heads.share(head(&[
            ("content-type", "application/json"),
            ("date", "Mon, 30 Nov 2026 10:00:01 GMT"),
            ("x-custom", "yes"),
        ]));
        let third = heads.share(head(&[
            ("content-type", "application/json"),
            ("x-custom", "yes"),
            ("date", "Mon, 30 Nov 2026 10:00:02 GMT"),
        ]));
        let (StoredHeaders::Shared { head: a, .. }, StoredHeaders::Shared { head: b, .. }) =
            (&second, &third)
        else {
            panic!("the second and third sightings share: {second:?} {third:?}");
        };
        assert!(std::ptr::eq(*a, *b));
        assert_eq!(heads.len(), 1);
        let mut third_sent = sent(&third);
        third_sent.sort();
        assert_eq!(
            third_sent,
            [
                ("content-type".to_owned(), "application/json".to_owned()),
                (
                    "date".to_owned(),
                    "Mon, 30 Nov 2026 10:00:02 GMT".to_owned()
                ),
                ("x-custom".to_owned(), "yes".to_owned()),
            ],
            "each response keeps its own date"
        );
        assert_eq!(sent(&first)[1].1, "Mon, 30 Nov 2026 10:00:00 GMT");
    }

    #[test]
    fn heads_that_differ_in_a_value_or_hold_a_sensitive_one_are_not_shared() {
        let heads = SharedHeads::default();
        for _ in 0..2 {
            heads.share(head(&[("x-plan", "free")]));
        }
        let other = heads.share(head(&[("x-plan", "pro")]));
        assert!(matches!(other, StoredHeaders::Own(_)));
        for _ in 0..3 {
            let mut secret = head(&[("x-plan", "free"), ("x-token", "t0k3n")]);
            secret.get_mut("x-token").unwrap().set_sensitive(true);
            let secret = heads.share(secret);
            assert!(matches!(secret, StoredHeaders::Own(_)), "{secret:?}");
        }
        assert_eq!(heads.len(), 1);
        let free = heads.share(head(&[("x-plan", "free")]));
        assert_eq!(sent(&free), [("x-plan".to_owned(), "free".to_owned())]);
    }

    #[test]
    fn one_off_and_oversized_heads_are_never_kept_and_the_number_kept_is_bounded() {
        let heads = SharedHeads::default();
        for i in 0..3 * MAX_CANDIDATES {
            let value = HeaderValue::try_from(format!("user-{i}")).unwrap();
            let mut map = HeaderMap::new();
            map.insert("x-user", value);
            assert!(matches!(heads.share(map), StoredHeaders::Own(_)));
        }
        assert_eq!(heads.len(), 0);
        let big = HeaderValue::try_from("x".repeat(MAX_SHARED_BYTES)).unwrap();
        for _ in 0..3 {
            let mut map = HeaderMap::new();
            map.insert("x-big", big.clone());
            assert!(matches!(heads.share(map), StoredHeaders::Own(_)));
        }
        for i in 0..MAX_SHARED + 10 {
            for _ in 0..2 {
                let mut map = HeaderMap::new();
                map.insert("x-n", HeaderValue::from(i));
                heads.share(map);
            }
        }
        assert_eq!(heads.len(), MAX_SHARED);
    }
}
