//! [`CacheError`], [`CacheErrorKind`] and [`ConfigError`].
//!
//! Errors are opaque structs with a `kind()` accessor (the tower-http habit): callers match on the
//! kind, the message explains what happened and how to fix it, and `source()` keeps the original
//! error for logging.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::Arc;

/// A boxed error, the form fetch closures' errors are converted into.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// What went wrong, one variant per `CacheErrorType` of the seed module.
///
/// The code each kind prints ([`CacheErrorKind::code`]) is the seed's string, so logs and JSON error
/// bodies read the same as the TypeScript module's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheErrorKind {
    /// The fetch closure (or the upstream) failed. Retryable when the cause is a network error.
    FetchFailed,
    /// A value could not be stored. Not retryable.
    CacheSetFailed,
    /// A value could not be read. Not retryable.
    CacheGetFailed,
    /// Expired entries could not be reclaimed. Retryable.
    CleanupFailed,
    /// Every attempt allowed by the [`RetryConfig`](crate::RetryConfig) failed. Not retryable.
    RetryExhausted,
}

impl CacheErrorKind {
    /// The seed's code for this kind, e.g. `"RETRY_EXHAUSTED"`.
    pub const fn code(self) -> &'static str {
        match self {
            Self::FetchFailed => "FETCH_FAILED",
            Self::CacheSetFailed => "CACHE_SET_FAILED",
            Self::CacheGetFailed => "CACHE_GET_FAILED",
            Self::CleanupFailed => "CLEANUP_FAILED",
            Self::RetryExhausted => "RETRY_EXHAUSTED",
        }
    }

    /// Whether an error of this kind may succeed if tried again (the seed's table).
    pub const fn is_retryable_by_default(self) -> bool {
        matches!(self, Self::FetchFailed | Self::CleanupFailed)
    }
}

impl fmt::Display for CacheErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The error type of the programmatic API.
///
/// ```
/// use integration_cache::{CacheError, CacheErrorKind};
/// use std::error::Error as _;
///
/// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// let err = CacheError::fetch_failed(refused);
/// assert_eq!(err.kind(), CacheErrorKind::FetchFailed);
/// assert!(err.is_retryable());
/// assert!(err.source().is_some());
/// ```
#[derive(Clone)]
pub struct CacheError {
    kind: CacheErrorKind,
    retryable: bool,
    attempts: u32,
    message: Cow<'static, str>,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl CacheError {
    /// A new error of `kind`, retryable as the seed's table says.
    pub fn new(kind: CacheErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            retryable: kind.is_retryable_by_default(),
            attempts: 0,
            message: message.into(),
            source: None,
        }
    }

    /// A fetch failure caused by `source`; retryable when `source` is a network error
    /// (see [`is_transient`]).
    ///
    /// Return this from a fetch closure to mark any failure as a generic, retryable fetch failure
    /// (the seed's `fetch failed`): an error of kind `FetchFailed` found in a chain is retried.
    pub fn fetch_failed(source: impl Into<BoxError>) -> Self {
        let source: BoxError = source.into();
        Self {
            kind: CacheErrorKind::FetchFailed,
            retryable: true,
            attempts: 0,
            message: Cow::Owned(format!("fetch failed: {source}")),
            source: Some(Arc::from(source)),
        }
    }

    /// Attaches the original error.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(Arc::from(source.into()));
        self
    }

    /// Overrides whether the error is retryable.
    #[must_use]
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Records how many attempts were made before this error.
    #[must_use]
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> CacheErrorKind {
        self.kind
    }

    /// Whether the failed operation may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// How many times the fetch was attempted (0 when no fetch was involved).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The message without the code prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheError")
            .field("kind", &self.kind)
            .field("retryable", &self.retryable)
            .field("attempts", &self.attempts)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl StdError for CacheError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// Whether `error`, or any error in its `source()` chain, is a network failure worth retrying.
///
/// Recognised, in order of trust:
/// - a [`CacheError`] in the chain: its own [`CacheError::is_retryable`];
/// - a [`std::io::Error`] whose kind is connection refused/reset/aborted, not connected, timed
///   out, network or host unreachable, network down, address not available or broken pipe (the
///   seed's `ECONNREFUSED`, `ETIMEDOUT`, `ENETUNREACH`);
/// - [`tokio::time::error::Elapsed`] (a timeout);
/// - with the `proxy` feature, a `hyper::Error` for a connection closed before the response
///   was complete (an upstream that hung up without answering);
/// - as a last resort, for errors that only carry text (DNS failures surface from `getaddrinfo`
///   as text): the seed's codes and their usual wording (`ENOTFOUND`, `dns error`,
///   `failed to lookup address`, `fetch failed`, ...).
pub fn is_transient(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(err) = current {
        if let Some(cache_err) = err.downcast_ref::<CacheError>() {
            return cache_err.is_retryable();
        }
        if let Some(io_err) = err.downcast_ref::<io::Error>() {
            if is_transient_io_kind(io_err.kind()) {
                return true;
            }
        }
        if err.is::<tokio::time::error::Elapsed>() {
            return true;
        }
        // An upstream that accepted the connection and closed it without an answer.
        #[cfg(feature = "proxy")]
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return true;
        }
        if mentions_network_failure(&err.to_string()) {
            return true;
        }
        current = err.source();
    }
    false
}

/// Whether `error`'s chain says it timed out (an `io::ErrorKind::TimedOut` or a tokio `Elapsed`).
pub(crate) fn is_timeout(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(err) = current {
        let io_timeout = err
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::TimedOut);
        if io_timeout || err.is::<tokio::time::error::Elapsed>() {
            return true;
        }
        current = err.source();
    }
    false
}

fn is_transient_io_kind(kind: io::ErrorKind) -> bool {
    use io::ErrorKind::*;
    matches!(
        kind,
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | TimedOut
            | NetworkUnreachable
            | HostUnreachable
            | NetworkDown
            | AddrNotAvailable
            | BrokenPipe
    )
}

fn mentions_network_failure(message: &str) -> bool {
    const CODES: [&str; 5] = [
        "ECONNREFUSED",
        "ETIMEDOUT",
        "ENOTFOUND",
        "ENETUNREACH",
        "EAI_AGAIN",
    ];
    const PHRASES: [&str; 9] = [
        "fetch failed",
        // hyper's words for a connection closed before the response came.
        "connection closed before message completed",
        "connection refused",
        "timed out",
        "dns error",
        "failed to lookup address",
        "name or service not known",
        "network is unreachable",
        "temporary failure in name resolution",
    ];
    if CODES.iter().any(|code| message.contains(code)) {
        return true;
    }
    let lower = message.to_ascii_lowercase();
    PHRASES.iter().any(|phrase| lower.contains(phrase))
}

/// A configuration value was rejected when a builder validated it.
///
/// The message names the setting and the accepted range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    setting: &'static str,
    message: Cow<'static, str>,
}

impl ConfigError {
    pub(crate) fn new(setting: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            setting,
            message: message.into(),
        }
    }

    /// The name of the rejected setting, e.g. `"backoff_factor"`.
    pub fn setting(&self) -> &'static str {
        self.setting
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.setting, self.message)
    }
}

impl StdError for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(io::Error);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("request failed")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn io_kinds_in_a_chain_are_transient() {
        let wrapped = Wrapper(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(is_transient(&wrapped));
        let wrapped = Wrapper(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(!is_transient(&wrapped));
    }

    #[test]
    fn seed_codes_are_transient_by_text() {
        for text in [
            "ECONNREFUSED",
            "ENOTFOUND",
            "fetch failed",
            "dns error: no record",
        ] {
            let err: BoxError = text.into();
            assert!(is_transient(&*err), "{text}");
        }
        let err: BoxError = "404 Not Found".into();
        assert!(!is_transient(&*err));
    }

    #[test]
    fn cache_error_in_chain_decides() {
        let not_retryable = CacheError::fetch_failed(io::Error::from(io::ErrorKind::TimedOut))
            .with_retryable(false);
        assert!(!is_transient(&not_retryable));
        let generic = CacheError::fetch_failed("upstream said no");
        assert!(is_transient(&generic));
    }

    #[test]
    fn kinds_follow_the_seed_table() {
        use CacheErrorKind::*;
        let table = [
            (FetchFailed, true),
            (CacheSetFailed, false),
            (CacheGetFailed, false),
            (CleanupFailed, true),
            (RetryExhausted, false),
        ];
        for (kind, retryable) in table {
            assert_eq!(
                CacheError::new(kind, "x").is_retryable(),
                retryable,
                "{kind}"
            );
        }
    }
}
