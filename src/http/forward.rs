//! What happens when the upstream answers (or does not): the miss path's decisions, kept out of
//! the future's state machine so each reads on its own.

use std::sync::Arc;

use http::{Response, StatusCode, Uri};
use http_body::Body;

use super::body::CacheBody;
use super::record::{Pending, Recorder};
use super::respond::{json_error, stamp, Forward, Served};
use super::state::{FlightKey, LayerState, Outcome};
use super::stored::StoredResponse;
use super::user::UserId;
use crate::coalesce::Leader;
use crate::error::{is_timeout, is_transient};
use crate::retry::RetryReport;
use crate::store::counters::Event;
use crate::store::WriteToken;

/// A request sent upstream without involving the store (bypass, mutation, `HEAD` miss).
pub(crate) struct Forwarding {
    pub(crate) state: Arc<LayerState>,
    pub(crate) served: Served,
    /// A mutation by this user: drop their entries once the upstream has answered.
    pub(crate) invalidate: Option<UserId>,
    pub(crate) report: RetryReport,
}

impl Forwarding {
    /// A miss sent upstream whose answer is not stored (a `HEAD` miss, or a waiter that could
    /// not use the leader's answer).
    pub(crate) fn unstored_miss(state: Arc<LayerState>, why: Forward) -> Self {
        Self {
            state,
            served: Served::Forwarded { why, stored: false },
            invalidate: None,
            report: RetryReport::default(),
        }
    }

    pub(crate) fn finish<B, E>(self, result: Result<Response<B>, E>) -> Response<CacheBody<B>>
    where
        E: std::error::Error + 'static,
    {
        let counters = self.state.store.counters();
        counters.add(Event::Retry, u64::from(self.report.retries()));
        if let Some(user) = &self.invalidate {
            // Before the response leaves: once the client sees it, no read of this user may be
            // answered with what was stored before (read-your-writes).
            let dropped = self.state.store.invalidate(user.as_str());
            tracing::debug!(user = %user, dropped, "mutation invalidated the user's entries");
        }
        match result {
            Ok(response) => {
                let mut response = response.map(CacheBody::upstream);
                stamp(response.headers_mut(), self.served, None);
                response
            }
            Err(error) => upstream_error(&error, &self.report).render(false, 0, self.served),
        }
    }
}

impl Forwarding {
    /// No answer within the layer's deadline (a miss that is not stored).
    pub(crate) fn deadline_passed<B>(self) -> Response<CacheBody<B>> {
        let retries = self.report.retries();
        self.state
            .store
            .counters()
            .add(Event::Retry, u64::from(retries));
        deadline_error(&self.state, retries).render(false, 0, self.served)
    }
}

/// The 504 for a miss the upstream did not answer usably within the layer's deadline.
pub(crate) fn deadline_error(state: &LayerState, retries: u32) -> StoredResponse {
    let deadline = state.deadline.unwrap_or_default();
    json_error(
        StatusCode::GATEWAY_TIMEOUT,
        "RETRY_EXHAUSTED",
        &format!(
            "the upstream gave no usable answer within the {deadline:?} deadline; check its health \
             or raise the deadline"
        ),
        Some(retries),
    )
}

/// The leader of a miss: the one request that goes upstream for a key.
pub(crate) struct Lead {
    pub(crate) state: Arc<LayerState>,
    pub(crate) token: WriteToken,
    pub(crate) user: UserId,
    pub(crate) key: Arc<str>,
    pub(crate) uri: Uri,
    pub(crate) request_headers: http::HeaderMap,
    pub(crate) why: Forward,
    pub(crate) leader: Leader<FlightKey, Outcome>,
    pub(crate) report: RetryReport,
}

impl Lead {
    /// The upstream answered, or failed after its retries.
    pub(crate) fn finish<B, E>(
        self: Box<Self>,
        result: Result<Response<B>, E>,
    ) -> Response<CacheBody<B>>
    where
        B: Body<Data = bytes::Bytes>,
        E: std::error::Error + 'static,
    {
        let counters = self.state.store.counters();
        counters.add(Event::Retry, u64::from(self.report.retries()));
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                let failure = upstream_error(&error, &self.report);
                return self.answer_failure(failure);
            }
        };
        let status = response.status();
        if self.state.stale_if_error && is_server_error(status) {
            return match self.serve_stale(Some(status)) {
                Ok(stale) => stale,
                Err(lead) => lead.pass(response),
            };
        }
        self.pass(response)
    }

    /// No answer within the layer's deadline.
    pub(crate) fn deadline_passed<B>(self: Box<Self>) -> Response<CacheBody<B>> {
        let retries = self.report.retries();
        self.state
            .store
            .counters()
            .add(Event::Retry, u64::from(retries));
        let failure = deadline_error(&self.state, retries);
        self.answer_failure(failure)
    }

    /// The upstream failed without a response: stale if allowed, else `failure`.
    fn answer_failure<B>(self: Box<Self>, failure: StoredResponse) -> Response<CacheBody<B>> {
        let lead = if self.state.stale_if_error {
            match self.serve_stale(None) {
                Ok(stale) => return stale,
                Err(lead) => lead,
            }
        } else {
            self
        };
        let failure = Arc::new(failure);
        let served = Served::Forwarded {
            why: lead.why,
            stored: false,
        };
        let response = failure.render(false, 0, served);
        lead.leader.complete(Outcome::Response(failure, served));
        response
    }

    /// Answers with the expired entry, if one is still kept; gives the lead back otherwise.
    fn serve_stale<B>(
        self: Box<Self>,
        upstream_status: Option<StatusCode>,
    ) -> Result<Response<CacheBody<B>>, Box<Self>> {
        let stale = self
            .state
            .store
            .get_stale(self.user.as_str(), &self.state.route_hash(&self.key))
            .filter(|found| found.value.is_for(&self.key, &self.request_headers));
        let Some(found) = stale else {
            return Err(self);
        };
        self.state.store.counters().incr(Event::StaleServed);
        let served = Served::Stale { upstream_status };
        let response = found
            .value
            .render(false, found.resident().as_secs(), served);
        self.leader.complete(Outcome::Response(found.value, served));
        Ok(response)
    }

    /// Streams the upstream's response to the client, recording it for the store and the
    /// waiters when it may be kept.
    fn pass<B>(self: Box<Self>, response: Response<B>) -> Response<CacheBody<B>>
    where
        B: Body<Data = bytes::Bytes>,
    {
        let (mut head, body) = response.into_parts();
        let state = &self.state;
        let ttl = state
            .rules
            .ttl(&head)
            .and_then(|ttl| state.policy.ttl(&self.uri, &head, ttl));
        let declared_len = body
            .size_hint()
            .exact()
            .or_else(|| content_length(&head.headers));
        let too_large = declared_len.is_some_and(|len| len > state.max_body as u64);
        let no_store = ttl.is_none() && state.rules.forbids_sharing(&head);
        if too_large || no_store {
            stamp(
                &mut head.headers,
                Served::Forwarded {
                    why: self.why,
                    stored: false,
                },
                None,
            );
            self.leader.complete(Outcome::FetchYourself);
            return Response::from_parts(head, CacheBody::upstream(body));
        }
        let recorded_head = copy_head(&head);
        // Only a body of known, admissible length is sure to be stored; a streamed one may yet
        // outgrow the cap after these headers have left.
        let stored = ttl.is_some() && declared_len.is_some();
        stamp(
            &mut head.headers,
            Served::Forwarded {
                why: self.why,
                stored,
            },
            None,
        );
        let pending = Pending {
            state: self.state.clone(),
            token: self.token,
            user: self.user,
            key: self.key,
            uri: self.uri,
            head: recorded_head,
            request_headers: self.request_headers,
            ttl,
            leader: self.leader,
        };
        if body.is_end_stream() {
            pending.commit(&[]);
            return Response::from_parts(head, CacheBody::full(bytes::Bytes::new()));
        }
        let recorder = Recorder::new(pending, state.max_body);
        Response::from_parts(head, CacheBody::recording(body, recorder))
    }
}

fn is_server_error(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The parts of a response head the store keeps (extensions are per-request).
fn copy_head(head: &http::response::Parts) -> http::response::Parts {
    let (mut copy, ()) = Response::new(()).into_parts();
    copy.status = head.status;
    copy.version = head.version;
    copy.headers = head.headers.clone();
    copy
}

/// The JSON answer for an upstream that gave no response at all.
fn upstream_error(
    error: &(dyn std::error::Error + 'static),
    report: &RetryReport,
) -> StoredResponse {
    let timed_out = is_timeout(error);
    let status = if timed_out {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    let (code, advice) = if is_transient(error) {
        (
            "RETRY_EXHAUSTED",
            "check that the upstream is up and reachable",
        )
    } else {
        (
            "FETCH_FAILED",
            "the request could not be sent; check the upstream address",
        )
    };
    let message = format!(
        "no response from the upstream after {} retries ({error}); {advice}",
        report.retries()
    );
    json_error(status, code, &message, Some(report.retries()))
}
