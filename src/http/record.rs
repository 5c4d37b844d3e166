//! Keeps a copy of the leader's response body as it streams to its client, then stores it and
//! hands it to the waiters.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{response, HeaderMap, Uri};

use super::respond::Served;
use super::state::{FlightKey, LayerState, Outcome};
use super::stored::StoredResponse;
use super::user::UserId;
use crate::coalesce::Leader;
use crate::store::WriteToken;

/// Everything needed to store a response once its body is complete.
pub(crate) struct Pending {
    pub(crate) state: Arc<LayerState>,
    pub(crate) token: WriteToken,
    pub(crate) user: UserId,
    pub(crate) key: Arc<str>,
    pub(crate) uri: Uri,
    pub(crate) head: response::Parts,
    pub(crate) request_headers: HeaderMap,
    /// `None`: share with the waiters, but do not store.
    pub(crate) ttl: Option<Duration>,
    pub(crate) leader: Leader<FlightKey, Outcome>,
}

impl Pending {
    /// Stores the body made of `chunks` (if a TTL allows) and gives the waiters the response.
    pub(crate) fn commit(self, chunks: &[Bytes]) {
        let stored = Arc::new(StoredResponse::new(
            &self.head,
            chunks,
            &self.request_headers,
            &self.key,
            self.ttl.map(|_| self.user.as_str()),
        ));
        let state = &self.state;
        if let Some(ttl) = self.ttl {
            let route = state.route_hash(&self.key);
            let outcome = state
                .store
                .insert(self.token, &self.user, route, stored.clone(), ttl);
            tracing::trace!(user = %self.user, uri = %self.uri, ?outcome, "response recorded");
        }
        self.leader
            .complete(Outcome::Response(stored, Served::Collapsed));
    }

    /// Tells the waiters to fetch for themselves.
    pub(crate) fn give_up(self) {
        self.leader.complete(Outcome::FetchYourself);
    }
}

/// The copy being made, bounded by `limit` bytes.
pub(crate) struct Recorder {
    chunks: Vec<Bytes>,
    len: usize,
    limit: usize,
    pending: Option<Pending>,
}

impl Recorder {
    pub(crate) fn new(pending: Pending, limit: usize) -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
            limit,
            pending: Some(pending),
        }
    }

    /// Copies `data` unless the body has grown past the limit, in which case recording stops
    /// and the rest of the body streams through untouched.
    pub(crate) fn record(&mut self, data: &Bytes) {
        if self.pending.is_none() {
            return;
        }
        self.len += data.len();
        if self.len > self.limit {
            self.chunks = Vec::new();
            if let Some(pending) = self.pending.take() {
                pending.give_up();
            }
            return;
        }
        self.chunks.push(data.clone());
    }

    /// The body ended: store it (copied, with the head's values, into one exact-sized
    /// allocation, so the store never pins a larger read buffer the chunks were sliced from).
    pub(crate) fn finish(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        pending.commit(&std::mem::take(&mut self.chunks));
    }

    /// The body cannot be stored (it carried trailers, or failed): waiters fetch for themselves.
    pub(crate) fn abandon(&mut self) {
        self.chunks = Vec::new();
        if let Some(pending) = self.pending.take() {
            pending.give_up();
        }
    }
}
