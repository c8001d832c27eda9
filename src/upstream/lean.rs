//! The upstream client for the common request: no body, no upgrade, plain TCP. It writes the
//! head and reads the response on a pooled socket, in the task of the request that uses it,
//! so a request costs no channel, no extra task and no wake-up beyond the socket's own.
//! Requests with a body, upgrades and TLS upstreams go through hyper's client instead.

use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use smallvec::SmallVec;
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::{Added, Pool};
use crate::BoxError;
use crate::identity::Injected;
use crate::wire::{self, Chunked, Decoded, Known, has_token, put_header, span, spare};

/// A response head larger than this is refused (502).
const MAX_HEAD: usize = 256 * 1024;
const MAX_HEADERS: usize = 128;
const READ_CHUNK: usize = 8 * 1024;

/// An open upstream connection with the bytes read from it and not yet used.
#[derive(Debug)]
pub(super) struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// The response deadline, kept for the connection's life: moving a registered timer's
    /// deadline later costs one atomic exchange, where a new timer per request would be
    /// added to the timer wheel and taken out again.
    timer: Pin<Box<Sleep>>,
}

/// Why an exchange failed.
pub(super) enum Failed {
    /// Nothing came back and the connection ended: a pooled connection the upstream had
    /// closed. The request may be sent again on a new one if it is idempotent.
    Stale(io::Error),
    /// The response head did not come before the deadline.
    TimedOut,
    /// Anything else.
    Other(BoxError),
}

impl Conn {
    pub(super) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
        }
    }

    /// Gives the (empty) read buffer back while the connection idles in the pool.
    pub(super) fn free_buffer(&mut self) {
        spare::give_back(std::mem::take(&mut self.buf));
    }

    /// True if the connection can take a request: the upstream has neither closed it nor
    /// sent anything unasked. Costs no system call while the socket has nothing to read.
    pub(super) fn is_usable(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Writes `head` and reads the response head, until `deadline` if there is one.
    ///
    /// One hand-written poll loop rather than nested futures: each future level of the
    /// common request's path is copied into place when it starts.
    pub(super) async fn exchange(
        &mut self,
        head: &[u8],
        head_request: bool,
        deadline: Option<Instant>,
    ) -> Result<(Response<()>, Framing, Option<Box<PassedHead>>), Failed> {
        let Self { stream, buf, timer } = self;
        if let Some(deadline) = deadline {
            timer.as_mut().reset(deadline);
        }
        let mut written = 0;
        let mut received = false;
        poll_fn(|cx| {
            let progress = loop {
                if written < head.len() {
                    match Pin::new(&mut *stream).poll_write(cx, &head[written..]) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(Failed::Stale(
                                io::ErrorKind::WriteZero.into(),
                            )));
                        }
                        Poll::Ready(Ok(n)) => written += n,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(Failed::Stale(e))),
                        Poll::Pending => break Poll::Pending,
                    }
                    continue;
                }
                if !buf.is_empty() {
                    received = true;
                    match parse_response(buf, head_request) {
                        Err(e) => return Poll::Ready(Err(Failed::Other(e))),
                        Ok(Parsed::Response(response, framing, passed)) => {
                            return Poll::Ready(Ok((response, framing, passed)));
                        }
                        Ok(Parsed::Interim) => continue,
                        Ok(Parsed::Partial) if buf.len() >= MAX_HEAD => {
                            let e = "upstream response head too large".into();
                            return Poll::Ready(Err(Failed::Other(e)));
                        }
                        Ok(Parsed::Partial) => {}
                    }
                }
                if buf.capacity() == 0 {
                    *buf = spare::take(READ_CHUNK);
                }
                buf.reserve(READ_CHUNK);
                // `read_buf` rather than `try_read_buf`: it learns from a short read that the
                // socket is drained, which saves the next request a system call.
                match pin!(stream.read_buf(&mut *buf)).poll(cx) {
                    Poll::Ready(Ok(0)) if !received => {
                        let e = io::ErrorKind::UnexpectedEof.into();
                        return Poll::Ready(Err(Failed::Stale(e)));
                    }
                    Poll::Ready(Ok(0)) => {
                        let e = "upstream closed mid-response".into();
                        return Poll::Ready(Err(Failed::Other(e)));
                    }
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(e)) if !received => return Poll::Ready(Err(Failed::Stale(e))),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Failed::Other(Box::new(e)))),
                    Poll::Pending => break Poll::Pending,
                }
            };
            match deadline {
                Some(_) => timer.as_mut().poll(cx).map(|()| Err(Failed::TimedOut)),
                None => progress,
            }
        })
        .await
    }
}

/// The request head, in origin form, for a request without a body, with the `added`
/// headers after the others, in a buffer that [`spare::give_back`] can keep.
pub(super) fn request_head(parts: &Parts, added: Added<'_>) -> BytesMut {
    // Sized once: a signed-in request's head, with its tokens, is a few KiB.
    let size = parts
        .headers
        .iter()
        .map(|(name, value)| wire::header_line_len(name.as_str().len(), value.len()))
        .sum::<usize>()
        + added.forwarding.head_len()
        + added.identity.map_or(0, Injected::head_len);
    let mut out = spare::take(size + parts.uri.path().len() + 64);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.put_u8(b' ');
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        put_header(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    added.forwarding.write_to(&mut out);
    if let Some(identity) = added.identity {
        identity.write_to(&mut out);
    }
    // An empty body is still a body for these methods: say so.
    let expects_body = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
    if expects_body && !parts.headers.contains_key(header::CONTENT_LENGTH) {
        put_header(&mut out, b"content-length", b"0");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// How the upstream delimits the response body.
#[derive(Debug)]
pub(super) enum Framing {
    /// No body follows the head; the connection can be reused after it if `reuse`.
    Empty(bool),
    /// This many bytes; the connection can be reused after them if `reuse`.
    Length(u64, bool),
    /// Chunked; the connection can be reused after it if `reuse`.
    Chunked(Chunked, bool),
    /// Until the upstream closes the connection.
    Close,
}

enum Parsed {
    /// A response; its headers are in its map, or in the [`PassedHead`] if there is one.
    Response(Response<()>, Framing, Option<Box<PassedHead>>),
    /// A 1xx response, consumed; the real one follows.
    Interim,
    Partial,
}

/// Parses a response head at the front of `buf`, taking it out when complete.
fn parse_response(buf: &mut BytesMut, head_request: bool) -> Result<Parsed, BoxError> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(format!("invalid upstream response: {e}").into()),
    };
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or("invalid upstream status")?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err("upstream switched protocols without being asked".into());
    }
    if status.is_informational() {
        buf.advance(len);
        return Ok(Parsed::Interim);
    }
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let bodiless =
        head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let mut spans = wire::Spans::new();
    // The lines a client may get as they are: none if the response has no body (its
    // `Content-Length` is passed on as it came) or carries a header that must be rewritten.
    let mut passed = (!bodiless).then(Box::<PassedHead>::default);
    let mut keep_alive = version == Version::HTTP_11;
    let (mut chunked, mut coded, mut length) = (false, false, None::<u64>);
    // The same length listed twice (RFC 9110 §8.6) is passed on once.
    let mut repeated = false;
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        let known = wire::known(name);
        // Hop-by-hop headers that `strip_hop_by_hop` would remove anyway are left out here.
        let hop = match known {
            Known::Connection => {
                if has_token(h.value, b"close") {
                    keep_alive = false;
                }
                // Kept when it names other headers: those must be stripped too.
                h.value.split(|&b| b == b',').all(|t| {
                    let t = t.trim_ascii();
                    t.is_empty()
                        || t.eq_ignore_ascii_case(b"keep-alive")
                        || t.eq_ignore_ascii_case(b"close")
                })
            }
            Known::TransferEncoding => {
                coded = true;
                // Only a final `chunked` delimits the body; anything else runs to the close.
                chunked = h
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                true
            }
            Known::ContentLength => {
                let n = wire::content_length(h.value).ok_or("invalid upstream content-length")?;
                if length.is_some_and(|l| l != n) {
                    return Err("conflicting upstream content-lengths".into());
                }
                repeated |= length.is_some() || h.value.contains(&b',');
                length = Some(n);
                false
            }
            Known::KeepAlive => true,
            _ => false,
        };
        if hop {
            continue;
        }
        let (name_at, value_at) = (span(buf, name), span(buf, h.value));
        spans.push((name_at, value_at));
        if let Some(lines) = &mut passed {
            match known {
                // The body's own framing sets the length: the writer adds it.
                Known::ContentLength => {}
                // Hop-by-hop headers left for `strip_hop_by_hop` (a `Connection` here names
                // other headers), and names too long for `http`: the head is rewritten.
                known if known.is_hop_by_hop() => passed = None,
                _ if name.len() > usize::from(u16::MAX) => passed = None,
                _ => {
                    if !lines.keep(name_at.0, value_at.1, known == Known::Date) {
                        passed = None;
                    }
                }
            }
        }
    }
    let framing = if bodiless {
        Framing::Empty(keep_alive)
    } else if coded {
        // A length next to a transfer coding is ignored, removed, and the connection not
        // reused (RFC 9112 §6.3).
        if length.is_some() {
            keep_alive = false;
        }
        if chunked {
            Framing::Chunked(Chunked::Size, keep_alive)
        } else {
            Framing::Close
        }
    } else if let Some(length) = length {
        Framing::Length(length, keep_alive)
    } else {
        Framing::Close
    };
    let head = buf.split_to(len).freeze();
    let headers = match &mut passed {
        Some(lines) => {
            lines.head = head;
            HeaderMap::new()
        }
        None => {
            let mut headers =
                wire::header_map(&head, &spans, 0).ok_or("invalid header in upstream response")?;
            match framing {
                Framing::Chunked(..) | Framing::Close if coded => {
                    headers.remove(header::CONTENT_LENGTH);
                }
                Framing::Length(length, _) if repeated => {
                    headers.insert(header::CONTENT_LENGTH, length.into());
                }
                _ => {}
            }
            headers
        }
    };
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Parsed::Response(response, framing, passed))
}

/// An upstream response's header lines, passed to the client as the upstream sent them
/// (names in their own case, in their own order), so that the common response costs no
/// header map. Only for a response with a body whose headers need no rewriting; hop-by-hop
/// and framing headers are left out, as the writer frames the body itself.
#[derive(Debug, Default)]
pub struct PassedHead {
    head: Bytes,
    /// Each kept header's `name: value` (without its line end), as offsets into `head`.
    lines: SmallVec<[(u32, u32); 16]>,
    date: bool,
}

impl PassedHead {
    /// Keeps the header line that runs from `start` to `end`; false if it is out of reach.
    fn keep(&mut self, start: usize, end: usize, date: bool) -> bool {
        let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(end)) else {
            return false;
        };
        self.date |= date;
        self.lines.push((start, end));
        true
    }

    /// True if the upstream sent a `Date`.
    pub fn has_date(&self) -> bool {
        self.date
    }

    /// Appends the header lines, each with its line end.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for &(start, end) in &self.lines {
            if let Some(line) = self.head.get(start as usize..end as usize) {
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// Appends the headers to `headers`: for a response that leaves through hyper, or whose
    /// headers Stagedoor changes.
    pub fn append_to(self, headers: &mut HeaderMap) {
        for &(start, end) in &self.lines {
            let line = self.head.slice(start as usize..end as usize);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let value_at = line[colon + 1..]
                .iter()
                .position(|&b| b != b' ' && b != b'\t')
                .map_or(line.len(), |i| colon + 1 + i);
            // httparse has checked both the way `http` does: these do not fail.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&line[..colon]),
                HeaderValue::from_maybe_shared(line.slice(value_at..)),
            ) {
                headers.append(name, value);
            }
        }
    }
}

/// A response body read straight from its upstream connection, which goes back to the pool
/// once the body has been read to its end.
#[derive(Debug)]
pub struct LeanBody {
    conn: Option<Conn>,
    framing: Framing,
    home: Weak<Pool>,
    passed: Option<Box<PassedHead>>,
}

impl LeanBody {
    pub(super) fn new(
        conn: Conn,
        framing: Framing,
        passed: Option<Box<PassedHead>>,
        home: &Arc<Pool>,
    ) -> Self {
        let mut body = Self {
            conn: Some(conn),
            framing,
            home: Arc::downgrade(home),
            passed,
        };
        if body.is_done() {
            body.release();
        }
        body
    }

    /// The response's header lines, if they were kept out of its map (see [`PassedHead`]).
    pub(super) fn take_passed_head(&mut self) -> Option<Box<PassedHead>> {
        self.passed.take()
    }

    fn is_done(&self) -> bool {
        match &self.framing {
            Framing::Empty(_) => true,
            Framing::Length(left, _) => *left == 0,
            Framing::Chunked(state, _) => *state == Chunked::Done,
            Framing::Close => false,
        }
    }

    /// Hands the connection back if the body is complete and nothing follows it.
    fn release(&mut self) {
        let reuse = match &self.framing {
            Framing::Empty(reuse) | Framing::Length(_, reuse) | Framing::Chunked(_, reuse) => {
                *reuse
            }
            Framing::Close => false,
        };
        if let Some(conn) = self.conn.take()
            && reuse
            && conn.buf.is_empty()
            && let Some(pool) = self.home.upgrade()
        {
            pool.put_lean(conn);
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let data = match &mut self.framing {
                Framing::Empty(_) => None,
                Framing::Length(0, _) => None,
                Framing::Length(left, _) => {
                    if conn.buf.is_empty() {
                        Some(None)
                    } else {
                        let take = usize::try_from(*left)
                            .map_or(conn.buf.len(), |l| l.min(conn.buf.len()));
                        *left -= take as u64;
                        Some(Some(conn.buf.split_to(take).freeze()))
                    }
                }
                Framing::Chunked(state, _) => match state.decode(&mut conn.buf)? {
                    Decoded::Data(data) => Some(Some(data)),
                    Decoded::More => Some(None),
                    Decoded::Done => None,
                },
                Framing::Close => Some((!conn.buf.is_empty()).then(|| conn.buf.split().freeze())),
            };
            match data {
                // The end: the connection goes home (or is closed).
                None => {
                    self.release();
                    return Poll::Ready(None);
                }
                Some(Some(data)) => return Poll::Ready(Some(Ok(data))),
                Some(None) => {}
            }
            // More bytes needed.
            std::task::ready!(conn.stream.poll_read_ready(cx))?;
            conn.buf.reserve(READ_CHUNK);
            match conn.stream.try_read_buf(&mut conn.buf) {
                Ok(0) if matches!(self.framing, Framing::Close) => {
                    self.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err("upstream closed mid-body".into()))),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Some(Err(Box::new(e)))),
            }
        }
    }
}

impl HttpBody for LeanBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let next = std::task::ready!(this.poll_next(cx));
        if next.as_ref().is_some_and(Result::is_err) {
            // A broken body never goes back to the pool.
            this.conn = None;
        }
        Poll::Ready(next.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.framing {
            Framing::Empty(_) => SizeHint::with_exact(0),
            Framing::Length(left, _) => SizeHint::with_exact(*left),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for LeanBody {
    fn drop(&mut self) {
        // Read to the end but not polled past it (a server that knew the length): still home.
        if self.is_done() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &[u8], head_request: bool) -> (Response<()>, Framing, Option<Box<PassedHead>>) {
        let mut buf = BytesMut::from(head);
        match parse_response(&mut buf, head_request) {
            Ok(Parsed::Response(response, framing, passed)) => (response, framing, passed),
            Ok(_) => panic!("not a complete response: {head:?}"),
            Err(e) => panic!("refused: {e}"),
        }
    }

    fn pairs(headers: &HeaderMap) -> Vec<(String, String)> {
        let mut pairs: Vec<_> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        pairs.sort();
        pairs
    }

    #[test]
    fn plain_heads_pass_as_they_came() {
        let head = b"HTTP/1.1 200 OK\r\nServer: up\r\nSet-Cookie: a=1\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\nx-tight:v\r\nX-Tabbed:\tv w \t\r\nConnection: keep-alive\r\nSet-Cookie: b=2\r\nX-Empty:\r\n\r\n";
        let (response, framing, passed) = parse(head, false);
        assert!(response.headers().is_empty());
        assert!(matches!(framing, Framing::Length(2, true)));
        let passed = passed.expect("passed as it came");
        assert!(passed.has_date());
        let mut out = Vec::new();
        passed.write_to(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Server: up\r\nSet-Cookie: a=1\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nx-tight:v\r\nX-Tabbed:\tv w\r\nSet-Cookie: b=2\r\nX-Empty:\r\n"
        );
        let mut map = HeaderMap::new();
        passed.append_to(&mut map);
        let want = [
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("server", "up"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("x-empty", ""),
            ("x-tabbed", "v w"),
            ("x-tight", "v"),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(pairs(&map), want);
    }

    #[test]
    fn heads_to_rewrite_or_without_a_body_use_the_map() {
        let cases: [(&[u8], bool); 8] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\n", true),
            (b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", false),
            (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false),
            (b"HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\nContent-Length: 0\r\n\r\n", false),
            (b"HTTP/1.1 200 OK\r\nTrailer: x-t\r\nTransfer-Encoding: chunked\r\n\r\n", false),
            (b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n", false),
            (b"HTTP/1.1 200 OK\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n", false),
            (b"HTTP/1.1 200 OK\r\nTE: trailers\r\nContent-Length: 0\r\n\r\n", false),
        ];
        for (head, head_request) in cases {
            let (response, _, passed) = parse(head, head_request);
            assert!(passed.is_none(), "{}", String::from_utf8_lossy(head));
            assert!(!response.headers().is_empty());
        }
        // Without a body the length is passed on as the upstream sent it.
        let (response, _, _) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true);
        assert_eq!(response.headers()[header::CONTENT_LENGTH], "7");
    }

    #[test]
    fn framing_headers_never_pass() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\n\r\n";
        let (_, framing, passed) = parse(head, false);
        // A length beside a transfer coding: ignored, and the connection not reused.
        assert!(matches!(framing, Framing::Chunked(_, false)));
        let mut out = Vec::new();
        passed.expect("passed").write_to(&mut out);
        assert_eq!(out, b"X-A: 1\r\n");
        let (_, framing, passed) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n", false);
        assert!(matches!(framing, Framing::Length(3, true)));
        let mut out = Vec::new();
        passed.expect("passed").write_to(&mut out);
        assert!(out.is_empty());
    }

    /// What httparse lets through, `http` takes: a passed head never loses a header on its
    /// way into a map.
    #[test]
    fn every_byte_httparse_passes_http_takes() {
        for b in 0..=255u8 {
            let mut name = b"HTTP/1.1 200 OK\r\nX-A".to_vec();
            name.push(b);
            name.extend_from_slice(b": v\r\nContent-Length: 0\r\n\r\n");
            let mut value = b"HTTP/1.1 200 OK\r\nX-A: v".to_vec();
            value.push(b);
            value.extend_from_slice(b"w\r\nContent-Length: 0\r\n\r\n");
            for head in [name, value] {
                let mut buf = BytesMut::from(&head[..]);
                if let Ok(Parsed::Response(_, _, Some(passed))) = parse_response(&mut buf, false) {
                    let mut map = HeaderMap::new();
                    passed.append_to(&mut map);
                    assert_eq!(map.len(), 1, "byte {b:#04x} in {head:?}");
                }
            }
        }
    }
}
