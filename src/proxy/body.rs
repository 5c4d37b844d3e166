//! [`RequestBody`]: what the proxy sends upstream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

pin_project! {
    /// A client's request body, streamed upstream. Empty when the request had none, which is
    /// what lets the retry layer send a request again (and what `Default` gives it).
    #[derive(Debug, Default)]
    pub struct RequestBody {
        #[pin]
        inner: Inner,
    }
}

pin_project! {
    #[project = InnerProj]
    #[derive(Debug, Default)]
    enum Inner {
        #[default]
        Empty,
        Streaming { #[pin] body: Incoming },
    }
}

impl RequestBody {
    pub(crate) fn new(body: Incoming) -> Self {
        let inner = if body.is_end_stream() {
            Inner::Empty
        } else {
            Inner::Streaming { body }
        };
        Self { inner }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project().inner.project() {
            InnerProj::Empty => Poll::Ready(None),
            InnerProj::Streaming { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::Streaming { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Streaming { body } => body.size_hint(),
        }
    }
}
