//! [`ResponseFuture`]: a hit is ready at once; everything else waits on the upstream or on
//! another request's flight.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{request, Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::retry::{Policy, Retry};
use tower_service::Service;

use super::body::CacheBody;
use super::forward::{deadline_error, Forwarding, Lead};
use super::respond::{Forward, Served};
use super::state::{LayerState, Outcome};
use super::stored::StoredResponse;
use super::user::UserId;
use crate::coalesce::Role;
use crate::retry::{RetryPolicy, RetryReport};
use crate::store::counters::Event;

type Upstream<S, B> = tower::retry::future::ResponseFuture<RetryPolicy, S, Request<B>>;
type Wait = Pin<Box<dyn Future<Output = Option<Outcome>> + Send>>;
/// When a miss must have been answered (the layer's deadline), in whichever state it is.
type Deadline = Option<Pin<Box<Sleep>>>;

pin_project! {
    /// Response future of [`IntegrationCacheService`](super::IntegrationCacheService).
    ///
    /// A hit is the `Hit` arm: it holds the stored response and builds the answer when polled,
    /// nothing is boxed, and the future stays small. Everything that waits (on the upstream
    /// through the retry policy, or on another request's flight) runs in a boxed state machine.
    pub struct ResponseFuture<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        RetryPolicy: Policy<Request<ReqBody>, Response<ResBody>, S::Error>,
    {
        #[pin]
        kind: Kind<S, ReqBody, ResBody>,
        trace: Trace,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        RetryPolicy: Policy<Request<ReqBody>, Response<ResBody>, S::Error>,
    {
        Hit { hit: Option<StoredHit> },
        Rejected { answered: bool },
        Upstream { machine: Pin<Box<Machine<S, ReqBody, ResBody>>> },
    }
}

pin_project! {
    #[project = MachineProj]
    enum Machine<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        RetryPolicy: Policy<Request<ReqBody>, Response<ResBody>, S::Error>,
    {
        Done { response: Option<Response<CacheBody<ResBody>>> },
        Passthrough { #[pin] future: Upstream<S, ReqBody>, forwarding: Option<Forwarding>, deadline: Deadline },
        Miss { #[pin] future: Upstream<S, ReqBody>, lead: Option<Box<Lead>>, deadline: Deadline },
        Waiting { wait: Wait, queued: Option<Box<Queued<S, ReqBody>>>, deadline: Deadline },
    }
}

/// The request's span and when it started, kept only when the span is recorded at all: most
/// requests have nobody listening at debug level, and for them this is one null pointer in the
/// future (which every poll and every move of the future carries) and no clock read.
pub(crate) struct Trace(Option<Box<Recorded>>);

struct Recorded {
    span: tracing::Span,
    started: tokio::time::Instant,
}

impl Trace {
    /// Nothing recorded.
    pub(crate) fn off() -> Self {
        Self(None)
    }

    pub(crate) fn new(span: tracing::Span) -> Self {
        if span.is_disabled() {
            return Self::off();
        }
        Self(Some(Box::new(Recorded {
            span,
            started: tokio::time::Instant::now(),
        })))
    }

    /// The span, if it is recorded.
    pub(crate) fn span(&self) -> Option<&tracing::Span> {
        self.0.as_ref().map(|recorded| &recorded.span)
    }

    /// Records the outcome; inline, so the usual case (nothing recorded) costs one test.
    #[inline]
    fn finish<B>(&self, response: &Response<B>) {
        if let Some(recorded) = &self.0 {
            recorded.finish(response);
        }
    }
}

impl Recorded {
    #[cold]
    fn finish<B>(&self, response: &Response<B>) {
        let outcome = response
            .headers()
            .get(super::respond::X_CACHE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let span = &self.span;
        span.record("outcome", outcome);
        span.record("status", response.status().as_u16());
        span.record("duration_ms", duration_ms);
        tracing::debug!(parent: span, "request served");
    }
}

/// A hit, answered when the future is polled: the response is built there and moved once, into
/// `poll`'s output, and the future stays small (BENCHMARKS.md, "Seventh 2026-12-02 round").
pub(crate) struct StoredHit {
    pub(crate) stored: Arc<StoredResponse>,
    pub(crate) head_only: bool,
    pub(crate) resident_secs: u64,
}

/// A miss: who, which entry, and why the store could not answer.
pub(crate) struct Miss {
    pub(crate) state: Arc<LayerState>,
    pub(crate) user: UserId,
    pub(crate) key: Arc<str>,
    pub(crate) why: Forward,
}

/// A waiter's request, kept (with the service that was polled ready for it) in case it must
/// go upstream itself after all.
pub(crate) struct Queued<S, B> {
    service: S,
    parts: request::Parts,
    body: B,
    miss: Miss,
}

impl<S, ReqBody, ResBody> ResponseFuture<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    RetryPolicy: Policy<Request<ReqBody>, Response<ResBody>, S::Error>,
    ReqBody: Send + 'static,
{
    pub(crate) fn hit(hit: StoredHit, trace: Trace) -> Self {
        Self {
            kind: Kind::Hit { hit: Some(hit) },
            trace,
        }
    }

    /// Answers 401: an anonymous request, which the layer is configured to reject.
    pub(crate) fn rejected(trace: Trace) -> Self {
        Self {
            kind: Kind::Rejected { answered: false },
            trace,
        }
    }

    /// Sends the request upstream past the store, through `service` (polled ready), answering
    /// 504 if `deadline` passes first (a miss that is not stored, like a `HEAD` miss, has one;
    /// a bypass has none).
    pub(crate) fn forward(
        service: S,
        request: Request<ReqBody>,
        forwarding: Forwarding,
        deadline: Option<Duration>,
        trace: Trace,
    ) -> Self {
        let deadline = deadline.map(|d| Box::pin(tokio::time::sleep(d)));
        Self::upstream(forward(service, request, forwarding, deadline), trace)
    }

    /// Leads or joins the flight for this miss.
    pub(crate) fn miss(
        service: S,
        parts: request::Parts,
        body: ReqBody,
        miss: Miss,
        trace: Trace,
    ) -> Self {
        let deadline = miss.state.deadline.map(|d| Box::pin(tokio::time::sleep(d)));
        Self::upstream(start_miss(service, parts, body, miss, deadline), trace)
    }

    fn upstream(machine: Machine<S, ReqBody, ResBody>, trace: Trace) -> Self {
        Self {
            kind: Kind::Upstream {
                machine: Box::pin(machine),
            },
            trace,
        }
    }
}

/// Calls `service` through the retry policy of the layer.
fn through_retry<S, ReqBody, ResBody>(
    service: S,
    policy: &RetryPolicy,
    request: Request<ReqBody>,
) -> Upstream<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    RetryPolicy: Policy<Request<ReqBody>, Response<ResBody>, S::Error>,
{
    Retry::new(policy.clone(), service).call(request)
}

fn forward<S, ReqBody, ResBody>(
    service: S,
    mut request: Request<ReqBody>,
    mut forwarding: Forwarding,
    deadline: Deadline,
) -> Machine<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    RetryPolicy: Policy<Request<ReqBody>, Response<ResBody>, S::Error>,
{
    forwarding.report = RetryReport::default();
    request.extensions_mut().insert(forwarding.report.clone());
    Machine::Passthrough {
        future: through_retry(service, &forwarding.state.retry, request),
        forwarding: Some(forwarding),
        deadline,
    }
}

fn start_miss<S, ReqBody, ResBody>(
    service: S,
    mut parts: request::Parts,
    body: ReqBody,
    miss: Miss,
    deadline: Deadline,
) -> Machine<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    RetryPolicy: Policy<Request<ReqBody>, Response<ResBody>, S::Error>,
    ReqBody: Send + 'static,
{
    let state = miss.state.clone();
    let token = state.store.begin(&miss.user);
    let flight = (miss.user.clone(), miss.key.clone(), token.generation());
    match state.flights.join(flight) {
        Role::Leader(leader) => {
            // A flight that ended between this request's lookup and `join` has stored its
            // answer: use it rather than call the upstream again (unless asked for a new one).
            let stored = (miss.why != Forward::Request)
                .then(|| {
                    state
                        .store
                        .get(miss.user.as_str(), &state.route_hash(&miss.key))
                })
                .flatten()
                .filter(|found| found.value.is_for(&miss.key, &parts.headers));
            if let Some(found) = stored {
                state.store.counters().incr(Event::Coalesced);
                let response = found.value.render(false, 0, Served::Collapsed);
                leader.complete(Outcome::Response(found.value, Served::Collapsed));
                return Machine::Done {
                    response: Some(response),
                };
            }
            let report = RetryReport::default();
            parts.extensions.insert(report.clone());
            let uri = parts.uri.clone();
            let request_headers = parts.headers.clone();
            let future = through_retry(service, &state.retry, Request::from_parts(parts, body));
            let lead = Lead {
                state: miss.state,
                token,
                user: miss.user,
                key: miss.key,
                uri,
                request_headers,
                why: miss.why,
                leader,
                report,
            };
            Machine::Miss {
                future,
                lead: Some(Box::new(lead)),
                deadline,
            }
        }
        Role::Waiter(waiter) => {
            state.store.counters().incr(Event::Coalesced);
            Machine::Waiting {
                wait: Box::pin(waiter.wait()),
                queued: Some(Box::new(Queued {
                    service,
                    parts,
                    body,
                    miss,
                })),
                deadline,
            }
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: std::error::Error + 'static,
    RetryPolicy: Policy<Request<ReqBody>, Response<ResBody>, S::Error>,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes>,
{
    type Output = Result<Response<CacheBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.kind.project() {
            KindProj::Hit { hit } => {
                // Read in place, then cleared: moved out first, the hit was read back in pieces
                // wider than `call` wrote it in, and the read waited on those writes (sampled).
                let StoredHit {
                    stored,
                    head_only,
                    resident_secs,
                } = hit.as_ref().expect("polled after completion");
                let mut response = Response::new(stored.body(*head_only));
                stored.hit_into(&mut response, *head_only, *resident_secs);
                *hit = None;
                // Returned from here, not from the `match`, which would copy it once more.
                this.trace.finish(&response);
                return Poll::Ready(Ok(response));
            }
            KindProj::Rejected { answered } => {
                assert!(
                    !std::mem::replace(answered, true),
                    "polled after completion"
                );
                super::respond::unauthorized()
            }
            KindProj::Upstream { machine } => ready!(machine.as_mut().poll(cx)),
        };
        this.trace.finish(&response);
        Poll::Ready(Ok(response))
    }
}

impl<S, ReqBody, ResBody> Future for Machine<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: std::error::Error + 'static,
    RetryPolicy: Policy<Request<ReqBody>, Response<ResBody>, S::Error>,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes>,
{
    type Output = Response<CacheBody<ResBody>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project() {
                MachineProj::Done { response } => {
                    return Poll::Ready(response.take().expect("polled after completion"));
                }
                MachineProj::Passthrough {
                    future,
                    forwarding,
                    deadline,
                } => match future.poll(cx) {
                    Poll::Ready(result) => {
                        let forwarding = forwarding.take().expect("polled after completion");
                        return Poll::Ready(forwarding.finish(result));
                    }
                    Poll::Pending => {
                        ready!(poll_deadline(deadline, cx));
                        // Leaving this state drops the upstream future, which cancels it.
                        let forwarding = forwarding.take().expect("polled after completion");
                        Machine::Done {
                            response: Some(forwarding.deadline_passed()),
                        }
                    }
                },
                MachineProj::Miss {
                    future,
                    lead,
                    deadline,
                } => match future.poll(cx) {
                    Poll::Ready(result) => {
                        let lead = lead.take().expect("polled after completion");
                        return Poll::Ready(lead.finish(result));
                    }
                    Poll::Pending => {
                        ready!(poll_deadline(deadline, cx));
                        let lead = lead.take().expect("polled after completion");
                        Machine::Done {
                            response: Some(lead.deadline_passed()),
                        }
                    }
                },
                MachineProj::Waiting {
                    wait,
                    queued,
                    deadline,
                } => match wait.as_mut().poll(cx) {
                    Poll::Pending => {
                        ready!(poll_deadline(deadline, cx));
                        let queued = queued.take().expect("polled after completion");
                        let miss = &queued.miss;
                        let served = Served::Forwarded {
                            why: miss.why,
                            stored: false,
                        };
                        let failure = deadline_error(&miss.state, 0);
                        Machine::Done {
                            response: Some(failure.render(false, 0, served)),
                        }
                    }
                    Poll::Ready(outcome) => {
                        let Queued {
                            service,
                            parts,
                            body,
                            miss,
                        } = *queued.take().expect("polled after completion");
                        let deadline = deadline.take();
                        waited(outcome, service, parts, body, miss, deadline)
                    }
                },
            };
            self.set(next);
        }
    }
}

/// Ready once the deadline has passed; never, when there is none.
fn poll_deadline(deadline: &mut Deadline, cx: &mut Context<'_>) -> Poll<()> {
    match deadline {
        Some(deadline) => deadline.as_mut().poll(cx),
        None => Poll::Pending,
    }
}

/// What a waiter does with the flight's outcome.
fn waited<S, ReqBody, ResBody>(
    outcome: Option<Outcome>,
    service: S,
    parts: request::Parts,
    body: ReqBody,
    miss: Miss,
    deadline: Deadline,
) -> Machine<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    RetryPolicy: Policy<Request<ReqBody>, Response<ResBody>, S::Error>,
    ReqBody: Send + 'static,
{
    match outcome {
        // The leader's response answers this request only if its `Vary` headers agree.
        Some(Outcome::Response(stored, served)) if stored.matches(&parts.headers) => {
            let served = match served {
                Served::Stale { .. } => served,
                _ => Served::Collapsed,
            };
            Machine::Done {
                response: Some(stored.render(false, 0, served)),
            }
        }
        Some(Outcome::FetchYourself) => {
            let forwarding = Forwarding::unstored_miss(miss.state, miss.why);
            forward(
                service,
                Request::from_parts(parts, body),
                forwarding,
                deadline,
            )
        }
        // Another variant: this request leads (or joins) a flight of its own. Or the leader
        // went away: this request leads, or waits for the new leader.
        Some(Outcome::Response(..)) | None => start_miss(service, parts, body, miss, deadline),
    }
}
