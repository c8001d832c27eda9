//! The access log: one line per request, written when its response body has been sent
//! (or abandoned), so it carries the real byte count and duration of streamed responses.

use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::BoxError;

/// What is known about a request by the time its response starts.
#[derive(Debug)]
pub struct Entry {
    /// Request method.
    pub method: Method,
    /// Host the client asked for.
    pub host: String,
    /// Path, never the query string (it may carry tokens).
    pub path: String,
    /// HTTP version of the client's request.
    pub version: Version,
    /// Client address (see `forwarded::apply`).
    pub client: IpAddr,
    /// Status sent to the client.
    pub status: u16,
    /// Upstream that served the request, if any.
    pub upstream: Option<String>,
    /// Signed-in user, if any.
    pub user: Option<String>,
    /// When the request arrived.
    pub start: Instant,
}

impl Entry {
    fn emit(&self, bytes: u64, complete: bool) {
        tracing::info!(
            target: "stagedoor::access",
            method = %self.method,
            host = %self.host,
            path = %self.path,
            version = ?self.version,
            client = %self.client,
            status = self.status,
            bytes,
            duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
            upstream = self.upstream.as_deref().unwrap_or("-"),
            user = self.user.as_deref().unwrap_or("-"),
            complete,
            "request"
        );
    }
}

pin_project_lite::pin_project! {
    /// A response body that writes the access-log entry when it ends or is dropped.
    pub struct Logged<B: HttpBody> {
        #[pin]
        inner: B,
        bytes: u64,
        entry: Option<Entry>,
    }

    impl<B: HttpBody> PinnedDrop for Logged<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(entry) = this.entry.take() {
                // Not read to its end: either it was empty (hyper need not poll it) or the
                // client went away or the upstream broke off.
                let complete = this.inner.is_end_stream();
                entry.emit(*this.bytes, complete);
            }
        }
    }
}

impl<B: HttpBody> Logged<B> {
    /// Wraps `inner`; `entry` is written once, at the end.
    pub fn new(inner: B, entry: Entry) -> Self {
        Self {
            inner,
            bytes: 0,
            entry: Some(entry),
        }
    }
}

impl<B> HttpBody for Logged<B>
where
    B: HttpBody<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => {
                if let Some(entry) = this.entry.take() {
                    entry.emit(*this.bytes, true);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
