//! [`IntegrationCacheService`]: the per-request decisions.

use std::borrow::Cow;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body::Body;
use tower::retry::Policy;
use tower_service::Service;

use super::forward::Forwarding;
use super::future::{Miss, ResponseFuture, StoredHit, Trace};
use super::key::{request_target, route_key, with_target};
use super::policy::wants_refresh;
use super::respond::{Forward, Served};
use super::state::{Anonymous, LayerState};
use super::stored::StoredResponse;
use crate::retry::{RetryPolicy, RetryReport};
use crate::store::counters::Event;
use crate::store::Found;

/// The service made by [`IntegrationCacheLayer`](super::IntegrationCacheLayer).
///
/// # Clone
///
/// A miss needs the inner service inside its response future (to call it through the retry
/// policy, which calls it again on failure, or to call it later when a coalesced wait ends
/// without a shareable answer). `call` therefore clones the inner service and keeps the clone,
/// handing the future the instance that `poll_ready` reported ready (`std::mem::replace`, as
/// tower-http's `FollowRedirect` does). A hit never touches the inner service, so its readiness
/// carries over to the next call, and a clone of this service is one `Arc` plus the inner
/// service: the store, flights, retry policy and configuration are shared behind that `Arc`.
pub struct IntegrationCacheService<S> {
    pub(crate) inner: S,
    pub(crate) state: Arc<LayerState>,
}

impl<S: Clone> Clone for IntegrationCacheService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            state: self.state.clone(),
        }
    }
}

impl<S> std::fmt::Debug for IntegrationCacheService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegrationCacheService")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

enum Kind {
    Read,
    Mutation,
    Other,
}

fn kind(method: &Method) -> Kind {
    match *method {
        Method::GET | Method::HEAD => Kind::Read,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => Kind::Mutation,
        _ => Kind::Other,
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for IntegrationCacheService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: std::error::Error + 'static,
    RetryPolicy: Policy<Request<ReqBody>, Response<ResBody>, S::Error>,
    ReqBody: Body + Send + 'static,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<super::CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let state = &self.state;
        let counters = state.store.counters();
        let kind = kind(&parts.method);
        // Checked before the span is built: with tracing's `log` feature on (axum's defaults turn
        // it on), building even a disabled span formats its fields for `log`, about a seventh of
        // what this layer adds to a hit. So a span exists only when a tracing subscriber listens
        // at debug level.
        let trace = if tracing::level_enabled!(tracing::Level::DEBUG) {
            Trace::new(tracing::debug_span!(
                "integration_cache",
                method = %parts.method,
                uri = %parts.uri,
                user = tracing::field::Empty,
                outcome = tracing::field::Empty,
                status = tracing::field::Empty,
                duration_ms = tracing::field::Empty,
            ))
        } else {
            Trace::off()
        };
        let Some(user) = state.extractor.user(&parts) else {
            if state.anonymous == Anonymous::Reject {
                counters.incr(Event::Bypass);
                return ResponseFuture::rejected(trace);
            }
            return self.bypass(Request::from_parts(parts, body), None, trace);
        };
        if let Some(span) = trace.span() {
            span.record("user", user.as_str());
        }
        match kind {
            Kind::Read => {}
            Kind::Mutation => {
                let user = Some(user.to_owned_id());
                return self.bypass(Request::from_parts(parts, body), user, trace);
            }
            Kind::Other => return self.bypass(Request::from_parts(parts, body), None, trace),
        }
        if !state
            .policy
            .is_cacheable_request(&parts.uri, &parts.headers)
        {
            return self.bypass(Request::from_parts(parts, body), None, trace);
        }
        let head_only = parts.method == Method::HEAD;
        let refresh = wants_refresh(&parts.headers);
        let mut why = Forward::Request;
        // An entry is stored under its route's key and checks that key on every hit, so a target
        // sent exactly as some entry's key is that key: looked up as sent, the usual hit needs
        // no normalising. Only a target that finds nothing that way is normalised, and looked
        // up again under its key if that differs.
        let target = request_target(&parts.uri);
        if !refresh {
            match find(state, user.as_str(), target, &parts.headers) {
                Ok(found) => return self.hit(found, head_only, trace),
                Err(miss) => why = miss,
            }
        }
        let Some(key) = route_key(&parts.uri) else {
            return self.bypass(Request::from_parts(parts, body), None, trace);
        };
        let normalised = matches!(key, Cow::Owned(_));
        // The normalised target goes upstream, so what is stored under the key is the
        // upstream's answer for exactly that key; and the policy judges that target, so that
        // `//private` is no way around a rule for `/private`.
        let mut normalised_uri = None;
        if normalised {
            if let Some(uri) = with_target(&parts.uri, &key) {
                if !state.policy.is_cacheable_request(&uri, &parts.headers) {
                    return self.bypass(Request::from_parts(parts, body), None, trace);
                }
                normalised_uri = Some(uri);
            }
        }
        if !refresh && normalised {
            match find(state, user.as_str(), &key, &parts.headers) {
                Ok(found) => return self.hit(found, head_only, trace),
                Err(miss) => why = miss,
            }
        }
        counters.incr(Event::Miss);
        let user = user.to_owned_id();
        let key: Arc<str> = Arc::from(&*key);
        if let Some(uri) = normalised_uri {
            parts.uri = uri;
        }
        let miss = Miss {
            state: state.clone(),
            user,
            key,
            why,
        };
        if head_only {
            // A HEAD answer has no body to store; only GETs fill the cache.
            let forwarding = Forwarding::unstored_miss(miss.state, why);
            let deadline = forwarding.state.deadline;
            let ready = self.take_ready();
            return ResponseFuture::forward(
                ready,
                Request::from_parts(parts, body),
                forwarding,
                deadline,
                trace,
            );
        }
        let ready = self.take_ready();
        ResponseFuture::miss(ready, parts, body, miss, trace)
    }
}

/// `user`'s fresh entry under `route` if it answers a request with these headers, or why not.
fn find(
    state: &LayerState,
    user: &str,
    route: &str,
    request_headers: &HeaderMap,
) -> Result<Found<Arc<StoredResponse>>, Forward> {
    let found = state
        .store
        .get(user, &state.route_hash(route))
        .ok_or(Forward::Miss)?;
    if found.value.is_for(route, request_headers) {
        Ok(found)
    } else {
        Err(Forward::VaryMiss)
    }
}

impl<S: Clone> IntegrationCacheService<S> {
    /// The instance `poll_ready` made ready; a clone takes its place.
    fn take_ready(&mut self) -> S {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }

    /// Answers from the store.
    fn hit<ReqBody, ResBody>(
        &self,
        found: Found<Arc<StoredResponse>>,
        head_only: bool,
        trace: Trace,
    ) -> ResponseFuture<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
        RetryPolicy: Policy<Request<ReqBody>, Response<ResBody>, S::Error>,
        ReqBody: Send + 'static,
    {
        self.state.store.counters().incr(Event::Hit);
        let resident_secs = found.resident().as_secs();
        let hit = StoredHit {
            stored: found.value,
            head_only,
            resident_secs,
        };
        ResponseFuture::hit(hit, trace)
    }

    fn bypass<ReqBody, ResBody>(
        &mut self,
        request: Request<ReqBody>,
        invalidate: Option<super::UserId>,
        trace: Trace,
    ) -> ResponseFuture<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
        RetryPolicy: Policy<Request<ReqBody>, Response<ResBody>, S::Error>,
        ReqBody: Send + 'static,
    {
        self.state.store.counters().incr(Event::Bypass);
        let forwarding = Forwarding {
            state: self.state.clone(),
            served: Served::Bypass,
            invalidate,
            report: RetryReport::default(),
        };
        let ready = self.take_ready();
        ResponseFuture::forward(ready, request, forwarding, None, trace)
    }
}
