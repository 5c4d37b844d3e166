//! Who is asking: [`UserId`] and the [`UserExtractor`]s that find it in a request.
//!
//! The user id is the cache's partition key, so it must come from an *authenticated* identity:
//! a request extension set by the app's auth middleware ([`ExtensionUser`], the default), a
//! header set by a trusted auth gateway ([`HeaderUser`]), or a verified JWT (`JwtUser`, feature
//! `jwt`). Anything that fails validation (empty, longer than [`UserId::MAX_LEN`] bytes, not
//! UTF-8, control characters) is treated as *no user*: never as a shared key.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;

/// A validated user id. Cheap to clone.
///
/// ```
/// use integration_cache::http::UserId;
///
/// assert_eq!(UserId::new("user-42").unwrap().as_str(), "user-42");
/// assert!(UserId::new("").is_none());
/// assert!(UserId::new("a\nb").is_none());
/// assert!(UserId::new(&"x".repeat(300)).is_none());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

impl UserId {
    /// The longest id accepted, in bytes.
    pub const MAX_LEN: usize = 256;

    /// `id` if it is a valid user id.
    pub fn new(id: &str) -> Option<Self> {
        is_valid(id).then(|| Self(Arc::from(id)))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for UserId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

fn is_valid(id: &str) -> bool {
    if id.is_empty() || id.len() > UserId::MAX_LEN {
        return false;
    }
    if id.is_ascii() {
        return !id.bytes().any(|b| b.is_ascii_control());
    }
    !id.chars().any(char::is_control)
}

/// A validated user id borrowed from the request when possible, so a cache hit allocates
/// nothing for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef<'r>(Repr<'r>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr<'r> {
    Borrowed(&'r str),
    Owned(UserId),
}

impl<'r> UserRef<'r> {
    /// `id` if it is a valid user id.
    pub fn borrowed(id: &'r str) -> Option<Self> {
        is_valid(id).then_some(Self(Repr::Borrowed(id)))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Borrowed(id) => id,
            Repr::Owned(id) => id.as_str(),
        }
    }

    /// An owned copy.
    pub fn to_owned_id(&self) -> UserId {
        match &self.0 {
            Repr::Borrowed(id) => UserId(Arc::from(*id)),
            Repr::Owned(id) => id.clone(),
        }
    }
}

impl From<UserId> for UserRef<'_> {
    fn from(id: UserId) -> Self {
        Self(Repr::Owned(id))
    }
}

/// Finds the authenticated user of a request.
///
/// Implemented for closures `Fn(&Parts) -> Option<UserId>`:
///
/// ```
/// use integration_cache::http::{UserExtractor, UserId};
///
/// let from_query = |parts: &http::request::Parts| {
///     parts.uri.query()?.strip_prefix("user=").and_then(UserId::new)
/// };
/// let (parts, _) = http::Request::get("/x?user=ann").body(()).unwrap().into_parts();
/// assert_eq!(from_query.user(&parts).unwrap().as_str(), "ann");
/// ```
pub trait UserExtractor: Send + Sync + 'static {
    /// The user, or `None` for an anonymous (or unverifiable) request.
    fn user<'r>(&self, request: &'r Parts) -> Option<UserRef<'r>>;
}

impl<F> UserExtractor for F
where
    F: Fn(&Parts) -> Option<UserId> + Send + Sync + 'static,
{
    fn user<'r>(&self, request: &'r Parts) -> Option<UserRef<'r>> {
        self(request).map(UserRef::from)
    }
}

/// The user named by a request header, e.g. `x-user-id`.
///
/// Trust this only behind a gateway that authenticates the caller and overwrites the header:
/// anyone who can reach the service directly can claim to be anyone.
#[derive(Debug, Clone)]
pub struct HeaderUser {
    name: HeaderName,
}

impl HeaderUser {
    /// Reads the header `name`.
    pub fn new(name: HeaderName) -> Self {
        Self { name }
    }
}

impl UserExtractor for HeaderUser {
    #[inline]
    fn user<'r>(&self, request: &'r Parts) -> Option<UserRef<'r>> {
        let value = single_value(&request.headers, &self.name)?;
        // This runs on every request. `to_str` accepts only visible ASCII, spaces and tabs, in
        // one pass, and needs no UTF-8 check after it: it replaced a graphic-ASCII pass followed
        // by `str::from_utf8`, which cost about 40 instructions more a hit with a 9-byte id
        // (`benches/callgrind.sh`). On that alphabet `trim_ascii` trims what `trim` does, and a
        // tab is the only control character left to reject.
        if let Ok(id) = value.to_str() {
            let id = id.trim_ascii();
            let valid =
                !id.is_empty() && id.len() <= UserId::MAX_LEN && !id.as_bytes().contains(&b'\t');
            return valid.then_some(UserRef(Repr::Borrowed(id)));
        }
        UserRef::borrowed(std::str::from_utf8(value.as_bytes()).ok()?.trim())
    }
}

/// Where the layer takes the user from.
///
/// The builder's own two (the header, and the default `UserId` extension) are called directly,
/// not through the trait object: behind the object's call, the answer came back through memory
/// in pieces of other sizes than those it was read in, and the read waited on the writes
/// (sampled with the header: about a quarter of `call`'s time on a hit, besides the call itself).
pub(crate) enum Extractor {
    Header(HeaderUser),
    Extension(ExtensionUser<UserId>),
    Other(Box<dyn UserExtractor>),
}

impl Extractor {
    #[inline]
    pub(crate) fn user<'r>(&self, request: &'r Parts) -> Option<UserRef<'r>> {
        match self {
            Extractor::Header(header) => header.user(request),
            Extractor::Extension(extension) => extension.user(request),
            Extractor::Other(other) => other.user(request),
        }
    }
}

/// The one value of `name` in `headers`; none if absent or repeated (two values for the
/// identity header are ambiguous, so nobody).
fn single_value<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    /// Up to this many values, a scan comparing names is cheaper than hashing `name` for a
    /// lookup. Measured with the id last among typical request headers: one or four headers,
    /// scan 9–19 ns against 17–27 ns; eight, about even; sixteen, 46–51 ns against 15–16 ns.
    const SCAN_UP_TO: usize = 4;
    if headers.len() > SCAN_UP_TO {
        let mut values = headers.get_all(name).iter();
        let value = values.next()?;
        return values.next().is_none().then_some(value);
    }
    let mut found = None;
    for (candidate, value) in headers {
        if candidate == name {
            if found.is_some() {
                return None;
            }
            found = Some(value);
        }
    }
    found
}

/// The user an auth middleware put in the request's extensions as a `T` (default [`UserId`]).
///
/// ```
/// use integration_cache::http::{ExtensionUser, UserExtractor, UserId};
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(UserId::new("ann").unwrap());
/// let (parts, _) = request.into_parts();
/// assert_eq!(ExtensionUser::<UserId>::new().user(&parts).unwrap().as_str(), "ann");
/// ```
pub struct ExtensionUser<T = UserId> {
    _type: std::marker::PhantomData<fn() -> T>,
}

impl<T> ExtensionUser<T> {
    /// Reads the `T` extension.
    pub fn new() -> Self {
        Self {
            _type: std::marker::PhantomData,
        }
    }
}

impl<T> Default for ExtensionUser<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for ExtensionUser<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for ExtensionUser<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtensionUser")
            .field("type", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T> UserExtractor for ExtensionUser<T>
where
    T: AsRef<str> + Send + Sync + 'static,
{
    #[inline]
    fn user<'r>(&self, request: &'r Parts) -> Option<UserRef<'r>> {
        UserRef::borrowed(request.extensions.get::<T>()?.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &[u8])]) -> Parts {
        let mut builder = http::Request::get("/");
        for (name, value) in headers {
            builder = builder.header(*name, http::HeaderValue::from_bytes(value).unwrap());
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn header_user_validates() {
        let extractor = HeaderUser::new(HeaderName::from_static("x-user-id"));
        let id = |h: &[(&str, &[u8])]| extractor.user(&parts(h)).map(|u| u.as_str().to_owned());
        assert_eq!(id(&[("x-user-id", b"alice")]).as_deref(), Some("alice"));
        assert_eq!(
            id(&[("x-user-id", "zoë".as_bytes())]).as_deref(),
            Some("zoë")
        );
        assert_eq!(id(&[]), None);
        assert_eq!(id(&[("x-user-id", b"")]), None);
        assert_eq!(id(&[("x-user-id", b"   ")]), None);
        assert_eq!(
            id(&[("x-user-id", b" \tann b\t ")]).as_deref(),
            Some("ann b")
        );
        assert_eq!(id(&[("x-user-id", b"ann\tb")]), None, "a tab inside");
        assert_eq!(
            id(&[("x-user-id", b" zo\xc3\xab ")]).as_deref(),
            Some("zo\u{eb}")
        );
        assert_eq!(id(&[("x-user-id", b"\xff\xfe")]), None, "not UTF-8");
        assert_eq!(id(&[("x-user-id", "x".repeat(257).as_bytes())]), None);
        assert_eq!(
            id(&[("x-user-id", format!(" {} ", "x".repeat(256)).as_bytes())]).map(|u| u.len()),
            Some(256),
            "the length is checked after trimming"
        );
        assert_eq!(
            id(&[("x-user-id", b"a"), ("x-user-id", b"b")]),
            None,
            "ambiguous"
        );
    }

    #[test]
    fn header_user_is_found_among_few_and_many_headers() {
        let extractor = HeaderUser::new(HeaderName::from_static("x-user-id"));
        let others: Vec<(String, &[u8])> = (0..20)
            .map(|i| (format!("x-other-{i}"), b"v".as_slice()))
            .collect();
        // Up to 4 headers the extractor scans, beyond it looks the name up.
        for count in [0, 1, 2, 20] {
            let mut headers: Vec<(&str, &[u8])> = others[..count]
                .iter()
                .map(|(name, value)| (name.as_str(), *value))
                .collect();
            headers.push(("accept", b"*/*"));
            headers.push(("x-user-id", b"alice"));
            headers.push(("x-user", b"mallory"));
            let id = extractor
                .user(&parts(&headers))
                .map(|u| u.as_str().to_owned());
            assert_eq!(id.as_deref(), Some("alice"), "with {count} other headers");
            headers.insert(0, ("x-user-id", b"bob"));
            let id = extractor
                .user(&parts(&headers))
                .map(|u| u.as_str().to_owned());
            assert_eq!(
                id, None,
                "two values among {count} other headers: ambiguous"
            );
        }
    }
}
