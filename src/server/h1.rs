//! Stagedoor's own HTTP/1.1 loop for the common request on plain TCP: a complete head with no
//! body, no upgrade and nothing unusual. It parses the head with httparse, hands the request
//! to the pipeline and writes the response, all in the connection's own task, with one read
//! buffer and one write buffer that an idle connection gives back.
//!
//! Anything else (a body, an upgrade, HTTP/1.0, a head that is malformed, too large or merely
//! unusual) is handed to hyper before a byte of it is acted on: hyper gets the connection
//! with the unread bytes in front and serves it from then on. So every edge of the protocol
//! keeps hyper's answer, and this loop only has to be right about the plain case.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Conn, PARK_AFTER, raised};
use crate::Body;
use crate::pipeline::{self, Heads};
use crate::wire::{self, Known, Span, has_token, put_header, put_length, span, spare};

/// How the loop left a connection.
pub(super) enum Next {
    /// Finished: closed by either side, idle too long, or shut down.
    Closed,
    /// A request this loop does not serve: hyper takes the socket, these bytes first.
    Hyper(TcpStream, Bytes),
    /// Idle for [`PARK_AFTER`]: the loop's buffers and state are gone, the socket is kept.
    Parked(TcpStream),
}

/// Most heads have a dozen headers; one with more than this goes to hyper (which allows 100).
const MAX_HEADERS: usize = 64;
/// Read-buffer growth step; a head must still fit in `server.max_header_bytes`.
const READ_CHUNK: usize = 4096;
/// Body frames at least this large are written as they are, not copied into the buffer.
const DIRECT_WRITE: usize = 16 * 1024;
/// The write buffer is flushed once it holds this much.
const FLUSH_AT: usize = 64 * 1024;

impl Conn {
    /// Serves requests on `stream` (whose first bytes, already read, are `prefix`) until the
    /// connection ends or sends a request this loop leaves to hyper.
    pub(super) async fn serve_lean(&self, mut stream: TcpStream, prefix: Bytes) -> Next {
        let server = &self.app.config.server;
        let ctx = self.ctx(false);
        let mut buf = BytesMut::from(&prefix[..]);
        let mut out = Vec::new();
        let mut stop = self.signals.stop.clone();
        // One registration for the connection's life, not one per idle wait.
        let mut stopping = pin!(async move { raised(&mut stop).await });
        let every = (server.idle_timeout / 4).clamp(Duration::from_millis(50), PARK_AFTER / 2);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When the connection was last seen busy, to the tick: a request marks it busy, and
        // the next tick stamps it, so serving a request costs no clock read.
        let mut last = tokio::time::Instant::now();
        let mut busy = false;
        loop {
            let mut deadline = None;
            let (request, keep_alive) = loop {
                if !buf.is_empty() {
                    match take_request(&mut buf, server.max_header_bytes) {
                        Ok(taken) => break taken,
                        Err(NotTaken::Hyper) => return Next::Hyper(stream, buf.freeze()),
                        // hyper answers a head too large with 431.
                        Err(NotTaken::Partial) if buf.len() >= server.max_header_bytes => {
                            return Next::Hyper(stream, buf.freeze());
                        }
                        Err(NotTaken::Partial) => {}
                    }
                }
                if buf.is_empty() {
                    // Between requests: wait for the next one, holding no buffer (as nginx
                    // does); park when idle. (`read_buf`, unlike `try_read_buf`, learns from
                    // a short read that the socket is drained: a system call less.)
                    let next = async {
                        poll_fn(|cx| stream.poll_read_ready(cx)).await?;
                        if buf.capacity() == 0 {
                            buf = spare::take(READ_CHUNK);
                        }
                        stream.read_buf(&mut buf).await
                    };
                    let read = tokio::select! {
                        // The read first: the others are for idle and stopping connections.
                        biased;
                        read = next => Ok(read),
                        _ = tick.tick() => Err(()),
                        () = &mut stopping => return Next::Closed,
                    };
                    match read {
                        Ok(Ok(0)) => return Next::Closed,
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return self.failed(&e),
                        Err(()) => {
                            // Read now, not taken from the tick: a tick missed during a long
                            // response fires late with its old time.
                            let now = tokio::time::Instant::now();
                            if std::mem::take(&mut busy) {
                                last = now;
                            }
                            let idle = now.saturating_duration_since(last);
                            if idle >= server.idle_timeout {
                                return Next::Closed;
                            }
                            if idle >= PARK_AFTER {
                                return Next::Parked(stream);
                            }
                        }
                    }
                } else {
                    buf.reserve(READ_CHUNK);
                    // Part of a head: the rest must come within the header read timeout.
                    let until = *deadline.get_or_insert_with(|| {
                        tokio::time::Instant::now() + server.header_read_timeout
                    });
                    let read = tokio::select! {
                        read = tokio::time::timeout_at(until, stream.read_buf(&mut buf)) => read,
                        () = &mut stopping => return Next::Closed,
                    };
                    match read {
                        Ok(Ok(0)) => return Next::Closed,
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return self.failed(&e),
                        Err(_) => {
                            tracing::debug!(peer = %self.peer, "request head not complete before the header read timeout");
                            return Next::Closed;
                        }
                    }
                }
            };

            let head_only = request.method() == Method::HEAD;
            let app = self.apps.load_full();
            let response = pipeline::handle(&app, &ctx, request, Heads::MayPass).await;
            let close = !keep_alive || *self.signals.stop.borrow();
            let written = write_response(&mut stream, &mut out, response, head_only, close).await;
            if buf.is_empty() {
                spare::give_back(std::mem::take(&mut buf));
            }
            match written {
                Ok(true) if !close => {}
                Ok(_) => {
                    let _ = stream.shutdown().await;
                    return Next::Closed;
                }
                Err(e) => return self.failed(&e),
            }
            busy = true;
        }
    }

    fn failed(&self, error: &io::Error) -> Next {
        tracing::debug!(peer = %self.peer, %error, "connection ended with an error");
        Next::Closed
    }
}

/// Why the buffered bytes are not a request for this loop.
enum NotTaken {
    /// Part of a head.
    Partial,
    /// Something for hyper; the buffer is as it was.
    Hyper,
}

/// Parses the head at the start of `buf` and, if this loop serves it, takes it out of `buf`
/// as a request whose header values share the buffer's memory, and whether the connection
/// stays open after it.
fn take_request(
    buf: &mut BytesMut,
    max_head: usize,
) -> Result<(Request<Empty<Bytes>>, bool), NotTaken> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut headers) {
        // A head over the limit is hyper's to refuse (431), even when it came in one read.
        Ok(httparse::Status::Complete(len)) if len > max_head => return Err(NotTaken::Hyper),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(NotTaken::Partial),
        Err(_) => return Err(NotTaken::Hyper),
    };
    let (Some(1), Some(method), Some(path)) = (parsed.version, parsed.method, parsed.path) else {
        return Err(NotTaken::Hyper);
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Err(NotTaken::Hyper);
    };
    // Origin form only: absolute form, `*` and CONNECT's authority form are hyper's.
    if method == Method::CONNECT || !path.starts_with('/') {
        return Err(NotTaken::Hyper);
    }
    let target = span(buf, path.as_bytes());
    let mut spans = wire::Spans::new();
    let mut keep_alive = true;
    let mut hosts = 0;
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        match wire::known(name) {
            // A body (or the question of one), or another protocol: hyper frames those.
            Known::ContentLength | Known::TransferEncoding | Known::Upgrade | Known::Expect => {
                return Err(NotTaken::Hyper);
            }
            Known::Host => hosts += 1,
            Known::Connection if has_token(h.value, b"close") => keep_alive = false,
            _ => {}
        }
        spans.push((span(buf, name), span(buf, h.value)));
    }
    if hosts > 1 {
        return Err(NotTaken::Hyper);
    }
    let head = buf.split_to(len).freeze();
    match build(&head, method, target, &spans) {
        Some(request) => Ok((request, keep_alive)),
        None => {
            // Rare (a name or value `http` refuses): put the head back for hyper to answer.
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            Err(NotTaken::Hyper)
        }
    }
}

fn build(
    head: &Bytes,
    method: Method,
    target: Span,
    spans: &[(Span, Span)],
) -> Option<Request<Empty<Bytes>>> {
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.1)).ok()?;
    let mut request = Request::new(Empty::new());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    // Room for what the proxy adds: forwarding headers, `Host`, the identity and its tokens.
    *request.headers_mut() = wire::header_map(head, spans, 16)?;
    Some(request)
}

/// How the response body is delimited on the wire.
enum Framing {
    /// No body at all (HEAD, 1xx, 204, 304).
    None,
    /// `Content-Length`: the bytes still to send.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Writes `response`; true if it was sent whole and the connection can take another request.
async fn write_response(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    response: Response<Body>,
    head_only: bool,
    close: bool,
) -> io::Result<bool> {
    let (mut parts, mut body) = response.into_parts();
    let passed = body.take_passed_head();
    let status = parts.status;
    let bodiless = head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(passed) = &passed {
        passed.write_to(out);
    }
    let mut declared = None;
    for (name, value) in &parts.headers {
        if name == header::TRANSFER_ENCODING || name == header::CONNECTION {
            continue;
        }
        if name == header::CONTENT_LENGTH {
            let no_length = status.is_informational() || status == StatusCode::NO_CONTENT;
            if no_length || declared.is_some() {
                continue;
            }
            // A list of equal lengths (RFC 9110 §8.6) is written as one; a value that is
            // not a length is dropped, and the body's own framing used instead.
            let Some(length) = wire::content_length(value.as_bytes()) else {
                continue;
            };
            declared = Some(length);
            put_length(out, b"content-length", length);
            continue;
        }
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let mut framing = if bodiless {
        Framing::None
    } else if let Some(length) = declared {
        Framing::Length(length)
    } else if let Some(length) = body.size_hint().exact() {
        put_length(out, b"content-length", length);
        Framing::Length(length)
    } else {
        put_header(out, b"transfer-encoding", b"chunked");
        Framing::Chunked
    };
    if !passed.as_ref().is_some_and(|p| p.has_date()) && !parts.headers.contains_key(header::DATE) {
        put_date(out);
    }
    spare::give_back_map(std::mem::take(&mut parts.headers));
    if close {
        put_header(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    if let Framing::None = framing {
        stream.write_all(out).await?;
        return Ok(true);
    }

    loop {
        // Buffered bytes go out before waiting for more: a stream must not stall here.
        let next = poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        let frame = match next {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                flush(stream, out).await?;
                body.frame().await
            }
        };
        let Some(frame) = frame else { break };
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                // What was received goes out; the closed connection then tells the client
                // that the body is short.
                let _ = flush(stream, out).await;
                return Err(io::Error::other(e));
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not forwarded
        };
        if data.is_empty() {
            continue;
        }
        match &mut framing {
            Framing::Length(left) => {
                *left = left
                    .checked_sub(data.len() as u64)
                    .ok_or_else(|| io::Error::other("response body longer than its length"))?;
            }
            Framing::Chunked => put_chunk_size(out, data.len()),
            Framing::None => {}
        }
        if data.len() >= DIRECT_WRITE {
            flush(stream, out).await?;
            stream.write_all(&data).await?;
        } else {
            out.extend_from_slice(&data);
        }
        if let Framing::Chunked = framing {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= FLUSH_AT {
            flush(stream, out).await?;
        }
    }
    let whole = match framing {
        Framing::Length(left) => left == 0,
        Framing::Chunked => {
            out.extend_from_slice(b"0\r\n\r\n");
            true
        }
        Framing::None => true,
    };
    flush(stream, out).await?;
    // A body shorter than its length cannot be completed: the connection must end.
    Ok(whole)
}

/// Appends a chunk-size line (hex, CRLF) without allocating.
fn put_chunk_size(out: &mut Vec<u8>, size: usize) {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{size:x}\r\n");
}

async fn flush(stream: &mut TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

thread_local! {
    /// The `Date` value and the second it was formatted for, per thread.
    static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

/// Adds a `Date` header; the value is formatted at most once a second per thread.
fn put_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, value)| {
        if *at != second || value.is_empty() {
            *value = httpdate::fmt_http_date(now);
            *at = second;
        }
        put_header(out, b"date", value.as_bytes());
    });
}
