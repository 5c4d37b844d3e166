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
//! - A header that differs per response by nature (`Date`, `ETag`, trace and rate-limit
//!   headers, ...) stays with the response and is appended after the shared ones on each hit.
//! - A set of headers is shared only once responses to two different users have carried it, and
//!   only for responses that are stored: so neither one user's repeated answers nor one-off
//!   heads are kept, nor a head holding a value marked sensitive.
//! - A shared map's names and values are `'static` (copied once, never freed). A clone then
//!   touches no reference count, which would otherwise bounce between cores on every hit. The
//!   cost is bounded memory for the life of the process: at most [`MAX_SHARED`] maps, each of at
//!   most [`MAX_SHARED_BYTES`] (names, values and about 112 bytes per entry). Past that,
//!   responses keep maps of their own, as before.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use parking_lot::Mutex;

/// Most shared heads kept by the process.
pub(crate) const MAX_SHARED: usize = 256;

/// Most bytes one shared head may hold: its names and values, and [`PER_ENTRY`] for each.
pub(crate) const MAX_SHARED_BYTES: usize = 4096;

/// What a map entry costs besides its name and value (http's entry and its share of the index).
const PER_ENTRY: usize = 112;

/// Heads seen once that are remembered, waiting for a sighting from another user; forgotten all
/// at once when full, so one-off heads cost a bounded set and nothing for good.
const MAX_CANDIDATES: usize = 256;

/// Headers that differ from one response to the next by nature, so sharing heads that hold
/// them would share nothing (and `Date` would make a new head every second).
const PER_RESPONSE: [&str; 10] = [
    "date",
    "expires",
    "etag",
    "last-modified",
    "x-request-id",
    "x-correlation-id",
    "traceparent",
    "tracestate",
    "server-timing",
    "content-location",
];

/// Name prefixes of headers that differ per response (rate-limit counters).
const PER_RESPONSE_PREFIXES: [&str; 2] = ["x-ratelimit-", "ratelimit"];

fn is_per_response(name: &HeaderName) -> bool {
    let name = name.as_str();
    PER_RESPONSE.contains(&name) || PER_RESPONSE_PREFIXES.iter().any(|p| name.starts_with(p))
}

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
    /// `headers` of a response stored for `user`, with their shareable part shared when the
    /// process shares (or now starts sharing) it.
    pub(crate) fn new(headers: HeaderMap, user: &str) -> Self {
        shared_heads().share(headers, user)
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
    /// Heads seen once, with a hash of the user whose response carried them.
    seen_once: HashMap<Box<[u8]>, u64>,
    /// Each name's `'static` copy, made once.
    names: HashMap<HeaderName, HeaderName>,
    users: RandomState,
}

impl SharedHeads {
    /// `headers` split into the part a shared head holds (if one does, or now will) and the
    /// response's own; `user` is whom the response answered.
    pub(crate) fn share(&self, headers: HeaderMap, user: &str) -> StoredHeaders {
        let shareable = || headers.iter().filter(|(name, _)| !is_per_response(name));
        let Some(key) = key_of(shareable()) else {
            return StoredHeaders::Own(Box::new(headers));
        };
        let mut guard = self.0.lock();
        let heads = &mut *guard;
        let head = if let Some(head) = heads.shared.get(&key) {
            *head
        } else {
            let user = heads.users.hash_one(user);
            match heads.seen_once.get(&key) {
                Some(first) if *first != user && heads.shared.len() < MAX_SHARED => {
                    let Some(head) = leaked(shareable(), &mut heads.names) else {
                        return StoredHeaders::Own(Box::new(headers));
                    };
                    heads.seen_once.remove(&key);
                    heads.shared.insert(key, head);
                    head
                }
                Some(_) => return StoredHeaders::Own(Box::new(headers)),
                None => {
                    if heads.shared.len() < MAX_SHARED {
                        if heads.seen_once.len() >= MAX_CANDIDATES {
                            heads.seen_once.clear();
                        }
                        heads.seen_once.insert(key, user);
                    }
                    return StoredHeaders::Own(Box::new(headers));
                }
            }
        };
        let own = headers
            .iter()
            .filter(|(name, _)| is_per_response(name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        StoredHeaders::Shared { head, own }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().shared.len()
    }
}

/// Each name's and value's length and bytes, in order, as one key; `None` past
/// [`MAX_SHARED_BYTES`] or when a value is marked sensitive (a shared head outlives the
/// entries that use it, so what is known to be secret is not kept for good).
fn key_of<'h>(
    headers: impl Iterator<Item = (&'h HeaderName, &'h HeaderValue)>,
) -> Option<Box<[u8]>> {
    let mut key = Vec::new();
    let mut cost = 0;
    for (name, value) in headers {
        if value.is_sensitive() {
            return None;
        }
        cost += name.as_str().len() + value.len() + PER_ENTRY;
        if cost > MAX_SHARED_BYTES {
            return None;
        }
        for part in [name.as_str().as_bytes(), value.as_bytes()] {
            // Lengths first, so no two sets of headers make the same key.
            key.extend_from_slice(&(part.len() as u32).to_le_bytes());
            key.extend_from_slice(part);
        }
    }
    Some(key.into_boxed_slice())
}

/// A copy of `headers` whose names and values are `'static`, kept for the life of the process;
/// `names` holds the `'static` names made so far.
fn leaked<'h>(
    headers: impl Iterator<Item = (&'h HeaderName, &'h HeaderValue)>,
    names: &mut HashMap<HeaderName, HeaderName>,
) -> Option<&'static HeaderMap> {
    // Room for the `Content-Length` of a `HEAD` hit and one own header: a clone keeps the
    // index's size, so neither rebuilds it.
    let headers: Vec<_> = headers.collect();
    let mut map = HeaderMap::with_capacity(headers.len() + 2);
    for (name, value) in headers {
        let bytes: &'static [u8] = Box::leak(value.as_bytes().into());
        // Cannot fail (the bytes were a valid value); were it to, nothing is shared rather than
        // keeping the original, whose buffer holds the first response's body.
        let copy = HeaderValue::from_maybe_shared(Bytes::from_static(bytes)).ok()?;
        let name = names
            .entry(name.clone())
            .or_insert_with(|| static_name(name))
            .clone();
        map.append(name, copy);
    }
    Some(Box::leak(Box::new(map)))
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
    fn a_head_two_users_got_is_shared_and_per_response_headers_stay_with_each_response() {
        let heads = SharedHeads::default();
        let answer = |date: &'static str| {
            head(&[
                ("content-type", "application/json"),
                ("date", date),
                ("x-custom", "yes"),
                ("x-ratelimit-remaining", "41"),
            ])
        };
        let first = heads.share(answer("Mon, 30 Nov 2026 10:00:00 GMT"), "ann");
        assert!(matches!(first, StoredHeaders::Own(_)), "seen once");
        let again = heads.share(answer("Mon, 30 Nov 2026 10:05:00 GMT"), "ann");
        assert!(
            matches!(again, StoredHeaders::Own(_)),
            "one user's answers, however often, are not shared"
        );
        let second = heads.share(answer("Mon, 30 Nov 2026 10:00:01 GMT"), "bob");
        let third = heads.share(answer("Mon, 30 Nov 2026 10:00:02 GMT"), "cy");
        let (StoredHeaders::Shared { head: a, .. }, StoredHeaders::Shared { head: b, .. }) =
            (&second, &third)
        else {
            panic!("a second user's sighting shares: {second:?} {third:?}");
        };
        assert!(std::ptr::eq(*a, *b));
        assert_eq!(heads.len(), 1);
        let mut third_sent = sent(&third);
        third_sent.sort();
        let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        assert_eq!(
            third_sent,
            [
                pair("content-type", "application/json"),
                pair("date", "Mon, 30 Nov 2026 10:00:02 GMT"),
                pair("x-custom", "yes"),
                pair("x-ratelimit-remaining", "41"),
            ],
            "each response keeps its own date"
        );
        assert_eq!(sent(&first)[1].1, "Mon, 30 Nov 2026 10:00:00 GMT");
    }

    #[test]
    fn heads_that_differ_in_a_value_or_hold_a_sensitive_one_are_not_shared() {
        let heads = SharedHeads::default();
        for user in ["ann", "bob"] {
            heads.share(head(&[("x-plan", "free")]), user);
        }
        let other = heads.share(head(&[("x-plan", "pro")]), "cy");
        assert!(matches!(other, StoredHeaders::Own(_)));
        for user in ["ann", "bob", "cy"] {
            let mut secret = head(&[("x-plan", "free"), ("x-token", "t0k3n")]);
            secret.get_mut("x-token").unwrap().set_sensitive(true);
            let secret = heads.share(secret, user);
            assert!(matches!(secret, StoredHeaders::Own(_)), "{secret:?}");
        }
        assert_eq!(heads.len(), 1);
        let free = heads.share(head(&[("x-plan", "free")]), "dee");
        assert!(matches!(free, StoredHeaders::Shared { .. }));
        assert_eq!(sent(&free), [("x-plan".to_owned(), "free".to_owned())]);
    }

    #[test]
    fn one_off_and_oversized_heads_are_never_kept_and_the_number_kept_is_bounded() {
        let heads = SharedHeads::default();
        for i in 0..3 * MAX_CANDIDATES {
            let value = HeaderValue::try_from(format!("user-{i}")).unwrap();
            let mut map = HeaderMap::new();
            map.insert("x-user", value);
            assert!(matches!(
                heads.share(map, &i.to_string()),
                StoredHeaders::Own(_)
            ));
        }
        assert_eq!(heads.len(), 0);
        let big = HeaderValue::try_from("x".repeat(MAX_SHARED_BYTES - 100)).unwrap();
        for user in ["ann", "bob", "cy"] {
            let mut map = HeaderMap::new();
            map.insert("x-big", big.clone());
            assert!(
                matches!(heads.share(map, user), StoredHeaders::Own(_)),
                "its entry's cost counts too"
            );
        }
        for i in 0..MAX_SHARED + 10 {
            for user in ["ann", "bob"] {
                let mut map = HeaderMap::new();
                map.insert("x-n", HeaderValue::from(i));
                heads.share(map, user);
            }
        }
        assert_eq!(heads.len(), MAX_SHARED);
    }

    #[test]
    fn keys_hold_lengths_so_different_headers_never_make_the_same_key() {
        let one = head(&[("x-a", "1x-b1")]);
        let two = head(&[("x-a", "1"), ("x-b", "1")]);
        assert_ne!(key_of(one.iter()), key_of(two.iter()));
    }
}
