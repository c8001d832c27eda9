//! The body of every response Stagedoor sends and every request it forwards: an upstream's
//! body and the small ones Stagedoor makes itself are held as they are, anything else boxed.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

use crate::BoxError;
use crate::upstream::{PassedHead, PooledBody};

/// A request or response body.
pub struct Body(Kind);

enum Kind {
    Empty,
    /// One frame, until it is sent.
    Full(Option<Bytes>),
    /// An upstream's response body: the common case, not boxed.
    Upstream(PooledBody),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    /// Wraps any body.
    pub fn new<B>(body: B) -> Self
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self(Kind::Boxed(body.map_err(Into::into).boxed_unsync()))
    }

    /// A body holding `data`, sent in one frame.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Self(Kind::Full((!data.is_empty()).then_some(data)))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self(Kind::Empty)
    }

    /// The upstream response header lines this body carries instead of the response's map
    /// (see [`PassedHead`]); the caller must send them or move them into the map.
    pub fn take_passed_head(&mut self) -> Option<Box<PassedHead>> {
        match &mut self.0 {
            Kind::Upstream(body) => body.take_passed_head(),
            _ => None,
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<PooledBody> for Body {
    fn from(body: PooledBody) -> Self {
        Self(Kind::Upstream(body))
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.0 {
            Kind::Empty => "empty",
            Kind::Full(_) => "full",
            Kind::Upstream(_) => "upstream",
            Kind::Boxed(_) => "boxed",
        };
        f.debug_tuple("Body").field(&kind).finish()
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx),
            Kind::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Empty => true,
            Kind::Full(data) => data.is_none(),
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Upstream(body) => body.size_hint(),
            Kind::Boxed(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_and_empty_bodies_frame_and_size_themselves() {
        let body = Body::full("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        let body = Body::full("");
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(Body::empty().is_end_stream());
        let boxed = Body::new(http_body_util::Full::new(Bytes::from_static(b"x")));
        assert_eq!(boxed.collect().await.unwrap().to_bytes(), "x");
    }
}
