//! [`CacheBody`]: the response body of the cache service.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::record::Recorder;

pin_project! {
    /// The body of a response from [`IntegrationCacheService`](super::IntegrationCacheService):
    /// a stored body (a `Bytes` clone, no copy), or the upstream's body streamed through, while
    /// being recorded for the cache when it may be stored.
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Full { data: Option<Bytes> },
        Upstream { #[pin] body: B },
        Recording { #[pin] body: B, recorder: Box<Recorder> },
    }
}

impl<B> CacheBody<B> {
    pub(crate) fn full(data: Bytes) -> Self {
        let data = (!data.is_empty()).then_some(data);
        Self {
            kind: Kind::Full { data },
        }
    }

    /// The length of a body made by [`full`](Self::full); `None` for a streamed one.
    pub(crate) fn full_len(&self) -> Option<usize> {
        match &self.kind {
            Kind::Full { data } => Some(data.as_ref().map_or(0, Bytes::len)),
            Kind::Upstream { .. } | Kind::Recording { .. } => None,
        }
    }

    pub(crate) fn upstream(body: B) -> Self {
        Self {
            kind: Kind::Upstream { body },
        }
    }

    pub(crate) fn recording(body: B, recorder: Recorder) -> Self {
        Self {
            kind: Kind::Recording {
                body,
                recorder: Box::new(recorder),
            },
        }
    }
}

impl<B> std::fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Full { .. } => "Full",
            Kind::Upstream { .. } => "Upstream",
            Kind::Recording { .. } => "Recording",
        };
        f.debug_tuple("CacheBody").field(&kind).finish()
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Upstream { body } => body.poll_frame(cx),
            KindProj::Recording { mut body, recorder } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                match &frame {
                    Some(Ok(frame)) => match frame.data_ref() {
                        Some(data) => {
                            recorder.record(data);
                            // hyper stops polling once a body says it has ended, so the
                            // last data frame must finish the recording itself.
                            if body.is_end_stream() {
                                recorder.finish();
                            }
                        }
                        None => recorder.abandon(),
                    },
                    Some(Err(_)) => recorder.abandon(),
                    None => recorder.finish(),
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Upstream { body } | Kind::Recording { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Upstream { body } | Kind::Recording { body, .. } => body.size_hint(),
        }
    }
}
