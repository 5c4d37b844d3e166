//! [`ResponseFuture`]: a hit is ready at once; everything else waits on the upstream or on
//! another request's flight.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{request, Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::retry::Policy;
use tower_service::Service;

use super::body::CacheBody;
use super::forward::{Forwarding, Lead};
use super::respond::{Forward, Served};
use super::state::{LayerState, Outcome};
use super::user::UserId;
use crate::coalesce::Role;
use crate::retry::{RetryPolicy, RetryReport, RetryService};
use crate::store::counters::Event;

type Upstream<S, B> = tower::retry::future::ResponseFuture<RetryPolicy, S, Request<B>>;
type Wait = Pin<Box<dyn Future<Output = Option<Outcome>> + Send>>;

pin_project! {
    /// Response future of [`IntegrationCacheService`](super::IntegrationCacheService).
    ///
    /// A hit is the `Ready` state: the response was built in `call`, nothing is boxed. A miss
    /// either leads (calls the upstream through the retry layer, with the deadline) or waits
    /// for the request that leads.
    pub struct ResponseFuture<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        RetryPolicy: Policy<Request<ReqBody>, Response<ResBody>, S::Error>,
    {
        #[pin]
        state: State<S, ReqBody, ResBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        RetryPolicy: Policy<Request<ReqBody>, Response<ResBody>, S::Error>,
    {
        Ready { response: Option<Response<CacheBody<ResBody>>> },
        Forwarding { #[pin] future: Upstream<S, ReqBody>, forwarding: Option<Forwarding> },
        Leading { #[pin] future: Upstream<S, ReqBody>, lead: Option<Box<Lead>>, deadline: Option<Pin<Box<Sleep>>> },
        Waiting { wait: Wait, queued: Option<Box<Queued<S, ReqBody>>> },
    }
}

/// A miss: who, which entry, and why the store could not answer.
pub(crate) struct Miss {
    pub(crate) state: Arc<LayerState>,
    pub(crate) user: UserId,
    pub(crate) key: Box<str>,
    pub(crate) why: Forward,
}

/// A waiter's request, kept (with the service that was polled ready for it) in case it must
/// go upstream itself after all.
pub(crate) struct Queued<S, B> {
    service: RetryService<S>,
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
    pub(crate) fn ready(response: Response<CacheBody<ResBody>>) -> Self {
        Self {
            state: State::Ready {
                response: Some(response),
            },
        }
    }

    /// Sends the request upstream past the store.
    pub(crate) fn forward(service: &mut RetryService<S>, request: Request<ReqBody>, forwarding: Forwarding) -> Self {
        Self {
            state: forward(service, request, forwarding),
        }
    }

    /// Leads or joins the flight for this miss.
    pub(crate) fn miss(service: RetryService<S>, parts: request::Parts, body: ReqBody, miss: Miss) -> Self {
        Self {
            state: start_miss(service, parts, body, miss),
        }
    }
}

fn forward<S, ReqBody, ResBody>(
    service: &mut RetryService<S>,
    mut request: Request<ReqBody>,
    mut forwarding: Forwarding,
) -> State<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    RetryPolicy: Policy<Request<ReqBody>, Response<ResBody>, S::Error>,
{
    forwarding.report = RetryReport::default();
    request.extensions_mut().insert(forwarding.report.clone());
    State::Forwarding {
        future: service.call(request),
        forwarding: Some(forwarding),
    }
}

fn start_miss<S, ReqBody, ResBody>(
    mut service: RetryService<S>,
    mut parts: request::Parts,
    body: ReqBody,
    miss: Miss,
) -> State<S, ReqBody, ResBody>
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
            let report = RetryReport::default();
            parts.extensions.insert(report.clone());
            let uri = parts.uri.clone();
            let request_headers = parts.headers.clone();
            let future = service.call(Request::from_parts(parts, body));
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
            State::Leading {
                future,
                lead: Some(Box::new(lead)),
                deadline: state.deadline.map(|d| Box::pin(tokio::time::sleep(d))),
            }
        }
        Role::Waiter(waiter) => {
            state.store.counters().incr(Event::Coalesced);
            State::Waiting {
                wait: Box::pin(waiter.wait()),
                queued: Some(Box::new(Queued {
                    service,
                    parts,
                    body,
                    miss,
                })),
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
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Ready { response } => {
                    return Poll::Ready(Ok(response.take().expect("polled after completion")));
                }
                StateProj::Forwarding { future, forwarding } => {
                    let result = ready!(future.poll(cx));
                    let forwarding = forwarding.take().expect("polled after completion");
                    return Poll::Ready(Ok(forwarding.finish(result)));
                }
                StateProj::Leading { future, lead, deadline } => match future.poll(cx) {
                    Poll::Ready(result) => {
                        let lead = lead.take().expect("polled after completion");
                        return Poll::Ready(Ok(lead.finish(result)));
                    }
                    Poll::Pending => {
                        let Some(deadline) = deadline else { return Poll::Pending };
                        ready!(deadline.as_mut().poll(cx));
                        // Dropping the upstream future (by leaving this state) cancels it.
                        let lead = lead.take().expect("polled after completion");
                        State::Ready {
                            response: Some(lead.deadline_passed()),
                        }
                    }
                },
                StateProj::Waiting { wait, queued } => {
                    let outcome = ready!(wait.as_mut().poll(cx));
                    let Queued {
                        mut service,
                        parts,
                        body,
                        miss,
                    } = *queued.take().expect("polled after completion");
                    match outcome {
                        Some(Outcome::Response(stored, served)) => {
                            let served = match served {
                                Served::Stale { .. } => served,
                                _ => Served::Collapsed,
                            };
                            State::Ready {
                                response: Some(stored.render(false, 0, served)),
                            }
                        }
                        Some(Outcome::FetchYourself) => {
                            let forwarding = Forwarding {
                                state: miss.state,
                                served: Served::Forwarded {
                                    why: miss.why,
                                    stored: false,
                                },
                                invalidate: None,
                                report: RetryReport::default(),
                            };
                            forward(&mut service, Request::from_parts(parts, body), forwarding)
                        }
                        // The leader went away: this request leads, or waits for the new leader.
                        None => start_miss(service, parts, body, miss),
                    }
                }
            };
            this.state.set(next);
        }
    }
}
