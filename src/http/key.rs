//! The request-target part of the cache key.
//!
//! The key is the normalised path plus the query with its parameters in canonical order. The
//! user is not part of this string: entries live in per-user buckets, so no path trick can reach
//! another user's entries. Normalisation makes equivalent targets share an entry:
//!
//! - percent-encoded unreserved characters are decoded (`%7E` → `~`), other escapes get
//!   upper-case hex (`%2f` → `%2F`, never decoded: it would change the path's segments);
//! - empty segments are merged (`//b` → `/b`) and dot segments removed (`/a/../b` → `/b`);
//! - the query's `&`-separated parameters are stably sorted by name, empty ones and a bare
//!   trailing `?` dropped (`?b=2&a=1` → `?a=1&b=2`, while `?a=2&a=1` keeps its order).
//!
//! So that the stored response is the upstream's answer for exactly that key, the layer forwards
//! the *normalised* target upstream (what nginx does with `$uri`). A target that cannot be
//! normalised (a malformed escape) is not cached at all.

use std::borrow::Cow;

use http::uri::{PathAndQuery, Uri};

/// The target of a request to `uri` as sent: its path and query (`/` if it has none).
pub(crate) fn request_target(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", PathAndQuery::as_str)
}

/// The key for `uri`, borrowed when the target is already canonical (the common case).
pub(crate) fn route_key(uri: &Uri) -> Option<Cow<'_, str>> {
    let target = request_target(uri);
    if is_canonical(target) {
        return Some(Cow::Borrowed(target));
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    let mut key = normalize_path(path)?;
    if let Some(query) = query {
        let query = normalize_query(query)?;
        if !query.is_empty() {
            key.push('?');
            key.push_str(&query);
        }
    }
    Some(Cow::Owned(key))
}

/// `uri` with its target replaced by `key` (scheme and authority kept).
pub(crate) fn with_target(uri: &Uri, key: &str) -> Option<Uri> {
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(key).ok()?);
    Uri::from_parts(parts).ok()
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

/// Decodes escaped unreserved bytes and upper-cases the hex of the others.
fn normalize_escapes(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            let run = bytes[i..]
                .iter()
                .position(|&b| b == b'%')
                .unwrap_or(bytes.len() - i);
            out.push_str(&text[i..i + run]);
            i += run;
            continue;
        }
        let hi = hex_value(*bytes.get(i + 1)?)?;
        let lo = hex_value(*bytes.get(i + 2)?)?;
        let byte = hi << 4 | lo;
        if is_unreserved(byte) {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[hi as usize]));
            out.push(char::from(b"0123456789ABCDEF"[lo as usize]));
        }
        i += 3;
    }
    Some(out)
}

/// Whether `target` is already its own key. This runs on every request, hits included, so it is
/// one pass over the bytes, path and query alike, with no `str` searching or splitting.
fn is_canonical(target: &str) -> bool {
    let bytes = target.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let dot_segment = |segment: &[u8]| segment == b"." || segment == b"..";
    let mut segment_start = 1;
    for (i, &byte) in bytes.iter().enumerate().skip(1) {
        match byte {
            b'/' => {
                if i == segment_start || dot_segment(&bytes[segment_start..i]) {
                    return false;
                }
                segment_start = i + 1;
            }
            // A canonical escape's hex digits are ordinary path bytes to the rest of the loop.
            b'%' if !is_canonical_escape(bytes, i) => return false,
            b'?' => {
                return !dot_segment(&bytes[segment_start..i])
                    && is_canonical_query(&bytes[i + 1..]);
            }
            _ => {}
        }
    }
    !dot_segment(&bytes[segment_start..])
}

/// Whether the escape at `bytes[at]` (a `%`) is well-formed, upper-case, and not of an
/// unreserved byte.
fn is_canonical_escape(bytes: &[u8], at: usize) -> bool {
    let upper_hex = |byte: Option<&u8>| match byte {
        Some(&b) if !b.is_ascii_lowercase() => hex_value(b),
        _ => None,
    };
    match (upper_hex(bytes.get(at + 1)), upper_hex(bytes.get(at + 2))) {
        (Some(hi), Some(lo)) => !is_unreserved(hi << 4 | lo),
        _ => false,
    }
}

/// Whether `query` (what follows the `?`) is canonical: not empty, no empty parameter, escapes
/// canonical, and parameters in order of name. One pass, like [`is_canonical`].
fn is_canonical_query(query: &[u8]) -> bool {
    // Names compare byte-wise, as `str`s do; no name sorts before the empty one.
    let mut previous_name: &[u8] = b"";
    let mut param_start = 0;
    // The current parameter's first `=`, once seen.
    let mut name_end = None;
    for (i, &byte) in query.iter().enumerate() {
        match byte {
            b'&' => {
                let Some(name) = param_name(query, param_start, name_end, i) else {
                    return false;
                };
                if previous_name > name {
                    return false;
                }
                previous_name = name;
                param_start = i + 1;
                name_end = None;
            }
            b'=' if name_end.is_none() => name_end = Some(i),
            // As in the path; hex digits are neither `&` nor `=`.
            b'%' if !is_canonical_escape(query, i) => return false,
            _ => {}
        }
    }
    // The last parameter; an empty one here is also a bare trailing `?`.
    param_name(query, param_start, name_end, query.len()).is_some_and(|name| previous_name <= name)
}

/// The name of the parameter `query[start..end]` whose first `=` is at `name_end`, unless the
/// parameter is empty.
fn param_name(query: &[u8], start: usize, name_end: Option<usize>, end: usize) -> Option<&[u8]> {
    (end > start).then(|| &query[start..name_end.unwrap_or(end)])
}

fn normalize_path(path: &str) -> Option<String> {
    let decoded = normalize_escapes(path)?;
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = decoded.ends_with('/');
    for segment in decoded.split('/') {
        match segment {
            "" => {}
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            _ => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    if decoded.ends_with('/') {
        trailing_slash = true;
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Some(out)
}

fn name_of(param: &str) -> &str {
    param.split_once('=').map_or(param, |(name, _)| name)
}

fn normalize_query(query: &str) -> Option<String> {
    let mut params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(normalize_escapes)
        .collect::<Option<Vec<_>>>()?;
    params.sort_by(|a, b| name_of(a).cmp(name_of(b)));
    Some(params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(target: &str) -> Option<String> {
        let uri: Uri = target.parse().unwrap();
        route_key(&uri).map(Cow::into_owned)
    }

    #[test]
    fn canonical_targets_are_borrowed() {
        let uri: Uri = "/api/integrations/status?a=1&b=%2F".parse().unwrap();
        assert!(matches!(route_key(&uri), Some(Cow::Borrowed(_))));
    }

    #[test]
    fn equivalent_targets_share_a_key() {
        for (raw, want) in [
            ("/a/../b", "/b"),
            ("//b", "/b"),
            ("/./b", "/b"),
            ("/a/./b/.", "/a/b/"),
            ("/../../b", "/b"),
            ("/..", "/"),
            ("/%62", "/b"),
            ("/%2e%2e/b", "/b"),
            ("/a%2fb", "/a%2Fb"),
            ("/b?", "/b"),
            ("/b?&&", "/b"),
            ("/b?b=2&a=1", "/b?a=1&b=2"),
            ("/b?a=2&a=1", "/b?a=2&a=1"),
            ("/b?z=%7e&a", "/b?a&z=~"),
            ("http://example.com/x/../y", "/y"),
        ] {
            assert_eq!(key(raw).as_deref(), Some(want), "{raw}");
        }
    }

    #[test]
    fn different_targets_keep_different_keys() {
        assert_ne!(key("/b"), key("/b/"), "trailing slash matters");
        assert_ne!(key("/B"), key("/b"), "paths are case-sensitive");
        assert_ne!(
            key("/a%2Fb"),
            key("/a/b"),
            "an encoded slash is not a separator"
        );
        assert_ne!(key("/b?a=1&a=2"), key("/b?a=2&a=1"));
    }

    /// `target` normalised the slow way, without the fast check.
    fn normalised(target: &str) -> Option<String> {
        let (path, query) = target
            .split_once('?')
            .map_or((target, None), |(p, q)| (p, Some(q)));
        let mut key = normalize_path(path)?;
        if let Some(query) = query.map(normalize_query) {
            let query = query?;
            if !query.is_empty() {
                key.push('?');
                key.push_str(&query);
            }
        }
        Some(key)
    }

    #[test]
    fn the_fast_check_agrees_with_normalisation() {
        for target in [
            "/",
            "/a",
            "/a/",
            "//a",
            "/a//b",
            "/./a",
            "/a/.",
            "/a/..",
            "/.a",
            "/a.",
            "/..a/b",
            "/a/b?",
            "/a?x=1",
            "/a?b=1&a=2",
            "/a?a=1&a=1",
            "/a?a&b",
            "/a?&a",
            "/%41",
            "/%2F",
            "/%2f",
            "/%E2%82%AC",
            "/a?q=%7e",
            "/a?q=%7E",
            "/a?q=%C3",
            "/a%",
            "/a%2",
            "/a?%",
            "/a?q=%4",
            "/a?q=%4&r",
            "/a%4?b",
            "/a?b=%3D&a",
            "/a?a=%26&a=",
            "/a?b&a=1",
            "/a?a=2&a",
            "/a?ab&a",
            "/a?a&ab",
            "/a?a=1&&b",
            "/a?a&",
        ] {
            let canonical = is_canonical(target);
            assert_eq!(
                canonical,
                normalised(target).as_deref() == Some(target),
                "{target}"
            );
        }
    }

    #[test]
    fn malformed_escapes_are_not_cached() {
        assert_eq!(key("/a%zz"), None);
        assert_eq!(key("/a%2"), None);
        assert_eq!(key("/a?q=%"), None);
    }

    #[test]
    fn the_forwarded_target_can_be_rewritten() {
        let uri: Uri = "http://up:8080/a/../b?y=1&x=2".parse().unwrap();
        let key = route_key(&uri).unwrap();
        let rewritten = with_target(&uri, &key).unwrap();
        assert_eq!(rewritten.to_string(), "http://up:8080/b?x=2&y=1");
    }

    proptest::proptest! {
        /// Any target over the characters that matter to normalisation.
        #[test]
        fn the_fast_check_agrees_with_normalisation_on_any_target(
            target in "/[/.%?&=aAbBfF029~-]{0,14}",
        ) {
            proptest::prop_assert_eq!(
                is_canonical(&target),
                normalised(&target).as_deref() == Some(target.as_str()),
            );
        }
    }
}
