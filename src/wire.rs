//! HTTP/1.1 on the wire, shared by the server's own loop (`server/h1.rs`) and the upstream
//! client (`upstream/lean.rs`): header maps that share the bytes of a parsed head, header
//! writing, and a strict decoder for chunked bodies (RFC 9112 §7.1).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Start and end of a part of a head, as offsets into its bytes.
pub type Span = (usize, usize);

/// The span `part` occupies in `whole` (`part` must be a sub-slice of `whole`).
pub fn span(whole: &[u8], part: &[u8]) -> Span {
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    (start, start + part.len())
}

/// Where each header's name and value are in a head: on the stack for all but large heads.
pub type Spans = smallvec::SmallVec<[(Span, Span); 32]>;

/// Builds a header map whose values share `head`'s memory, with room for `extra` headers
/// more. `None` if `http` refuses a name or a value (httparse is more permissive).
pub fn header_map(head: &Bytes, spans: &[(Span, Span)], extra: usize) -> Option<HeaderMap> {
    let mut headers = spare::map(spans.len() + extra);
    for &(name, value) in spans {
        let name = HeaderName::from_bytes(head.get(name.0..name.1)?).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(value.0..value.1)).ok()?;
        headers.append(name, value);
    }
    Some(headers)
}

/// The headers Stagedoor's HTTP/1.1 code looks at by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Connection,
    ContentLength,
    Date,
    Expect,
    Host,
    KeepAlive,
    ProxyAuthenticate,
    ProxyAuthorization,
    ProxyConnection,
    Te,
    Trailer,
    TransferEncoding,
    Upgrade,
    /// Any other name.
    Other,
}

impl Known {
    /// True for the hop-by-hop headers `headers::strip_hop_by_hop` removes (RFC 9110 §7.6.1),
    /// `Upgrade` among them.
    pub fn is_hop_by_hop(self) -> bool {
        !matches!(
            self,
            Known::ContentLength | Known::Date | Known::Expect | Known::Host | Known::Other
        )
    }
}

/// Which of the [`Known`] headers `name` is (any case): its length picks at most two
/// candidates, so most names cost no comparison at all.
pub fn known(name: &[u8]) -> Known {
    let is = |candidate: &[u8]| name.eq_ignore_ascii_case(candidate);
    match name.len() {
        2 if is(b"te") => Known::Te,
        4 if is(b"host") => Known::Host,
        4 if is(b"date") => Known::Date,
        6 if is(b"expect") => Known::Expect,
        7 if is(b"upgrade") => Known::Upgrade,
        7 if is(b"trailer") => Known::Trailer,
        10 if is(b"connection") => Known::Connection,
        10 if is(b"keep-alive") => Known::KeepAlive,
        14 if is(b"content-length") => Known::ContentLength,
        16 if is(b"proxy-connection") => Known::ProxyConnection,
        17 if is(b"transfer-encoding") => Known::TransferEncoding,
        18 if is(b"proxy-authenticate") => Known::ProxyAuthenticate,
        19 if is(b"proxy-authorization") => Known::ProxyAuthorization,
        _ => Known::Other,
    }
}

/// The length in a `Content-Length` value: one number, or a list of the same number.
pub fn content_length(value: &[u8]) -> Option<u64> {
    // The common case, one short number, without the list's splitting and UTF-8 check.
    if (1..=19).contains(&value.len()) && value.iter().all(u8::is_ascii_digit) {
        return Some(value.iter().fold(0, |n, &b| n * 10 + u64::from(b - b'0')));
    }
    let mut length = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = std::str::from_utf8(part).ok()?.parse::<u64>().ok()?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    length
}

/// True if the comma-separated `value` lists `token` (case-insensitive).
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Appends `name: value` and its line end.
#[inline]
pub fn put_header(out: &mut impl BufMut, name: &[u8], value: &[u8]) {
    put_header_pieces(out, name, &[value]);
}

/// Appends `name: ` with a value made of `pieces`, and its line end.
#[inline]
pub fn put_header_pieces(out: &mut impl BufMut, name: &[u8], pieces: &[&[u8]]) {
    out.put_slice(name);
    out.put_slice(b": ");
    for piece in pieces {
        out.put_slice(piece);
    }
    out.put_slice(b"\r\n");
}

/// The bytes [`put_header`] writes for a name and a value of these lengths.
pub const fn header_line_len(name: usize, value: usize) -> usize {
    name + value + 4
}

/// Appends `name: n` and its line end.
pub fn put_length(out: &mut impl BufMut, name: &[u8], n: u64) {
    put_header(out, name, itoa::Buffer::new().format(n).as_bytes());
}

/// A chunk-size line or a trailer line longer than this is refused.
const MAX_LINE: usize = 4096;
/// All trailer lines together.
const MAX_TRAILERS: usize = 16 * 1024;

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes to go.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one, and their bytes so far.
    Trailers(usize),
    /// The body is complete.
    Done,
}

/// What [`Chunked::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body data.
    Data(Bytes),
    /// More bytes are needed.
    More,
    /// The body is complete; the buffer holds whatever follows it.
    Done,
}

impl Chunked {
    /// Consumes framing and data from the front of `buf`. Trailers are read and dropped.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, &'static str> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::More);
                    };
                    let size = chunk_size(&line)?;
                    *self = if size == 0 {
                        Chunked::Trailers(0)
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let take = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                    let left = left - take as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF");
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers(seen) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::More);
                    };
                    if line.is_empty() {
                        *self = Chunked::Done;
                    } else if seen + line.len() > MAX_TRAILERS {
                        return Err("chunked trailers too large");
                    } else {
                        *self = Chunked::Trailers(seen + line.len());
                    }
                }
                Chunked::Done => return Ok(Decoded::Done),
            }
        }
    }
}

/// Takes one CRLF-terminated line (without its CRLF) off the front of `buf`.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, &'static str> {
    let window = &buf[..buf.len().min(MAX_LINE + 2)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_LINE {
            Err("chunked framing line too long")
        } else {
            Ok(None)
        };
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err("chunked framing line not ended by CRLF");
    }
    let mut line = buf.split_to(lf + 1);
    line.truncate(lf - 1);
    Ok(Some(line))
}

/// The size in a chunk-size line: hex digits, then optionally `;` and extensions (ignored).
fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 15 {
        return Err("chunk size missing or too large");
    }
    // Optional whitespace, then `;` and extensions (ignored), or the end of the line.
    let rest = &line[digits..];
    let blank = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    if blank < rest.len() && rest[blank] != b';' {
        return Err("chunk size line is malformed");
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| "chunk size is not hex")?;
    u64::from_str_radix(hex, 16).map_err(|_| "chunk size is not hex")
}

/// Read buffers between uses, per thread: an idle connection (client or upstream) holds
/// none, and a busy one takes one here rather than from the allocator, for which buffers of a
/// few KiB are slow to hand out and to take back.
pub mod spare {
    use std::cell::RefCell;

    use bytes::BytesMut;
    use http::HeaderMap;

    /// At most this many of each size are kept per thread.
    const KEEP: usize = 64;

    thread_local! {
        /// Buffers of at least 4 KiB, and of at least 8 KiB.
        static SPARE: RefCell<[Vec<BytesMut>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
    }

    fn class(capacity: usize) -> Option<usize> {
        match capacity {
            c if c >= 8192 => Some(1),
            c if c >= 4096 => Some(0),
            _ => None,
        }
    }

    /// An empty buffer with room for at least `capacity` bytes: a kept one of 4 or 8 KiB
    /// when that is enough, else a new one.
    pub fn take(capacity: usize) -> BytesMut {
        let size = match capacity {
            0..=4096 => 4096,
            4097..=8192 => 8192,
            _ => return BytesMut::with_capacity(capacity),
        };
        class(size)
            .and_then(|c| SPARE.with_borrow_mut(|spare| spare[c].pop()))
            .filter(|buf| buf.capacity() >= size)
            .unwrap_or_else(|| BytesMut::with_capacity(size))
    }

    /// Most heads, and what the proxy adds to them, fit a map of this capacity; maps are
    /// made at least this large so that any kept one serves any head.
    const MAP_CAPACITY: usize = 24;
    /// Maps that grew larger than this are not kept.
    const MAP_KEEP_LIMIT: usize = 96;

    thread_local! {
        static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
    }

    /// An empty header map with room for `capacity` headers: a kept one when it is large
    /// enough, else a new one.
    pub fn map(capacity: usize) -> HeaderMap {
        MAPS.with_borrow_mut(Vec::pop)
            .filter(|map| map.capacity() >= capacity)
            .unwrap_or_else(|| HeaderMap::with_capacity(capacity.max(MAP_CAPACITY)))
    }

    /// Empties `map` and keeps it for a later [`map`] on this thread, if there is room.
    pub fn give_back_map(mut map: HeaderMap) {
        if map.capacity() < MAP_CAPACITY || map.capacity() > MAP_KEEP_LIMIT {
            return;
        }
        map.clear();
        MAPS.with_borrow_mut(|maps| {
            if maps.len() < KEEP {
                maps.push(map);
            }
        });
    }

    /// Keeps `buf` for a later [`take`] on this thread, if it is empty, whole again (no
    /// part of it is still shared, as a frozen head or body frame), and there is room.
    pub fn give_back(mut buf: BytesMut) {
        // An empty buffer only; and not one made for an unusually large head.
        if !buf.is_empty() || buf.capacity() > 16 * 1024 {
            return;
        }
        let whole = buf.try_reclaim(8192) || buf.try_reclaim(4096);
        let Some(c) = class(buf.capacity()).filter(|_| whole) else {
            return;
        };
        SPARE.with_borrow_mut(|spare| {
            if spare[c].len() < KEEP {
                spare[c].push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_header_map_comes_back_empty() {
        let mut map = spare::map(4);
        map.insert("x-secret", HeaderValue::from_static("previous request"));
        spare::give_back_map(map);
        let again = spare::map(4);
        assert!(again.is_empty());
        assert!(again.capacity() >= 24);
        assert!(again.get("x-secret").is_none());
    }

    #[test]
    fn known_names_in_any_case() {
        use http::header;
        let names: [(&[u8], Known); 15] = [
            (b"te", Known::Te),
            (b"Host", Known::Host),
            (b"DATE", Known::Date),
            (b"Expect", Known::Expect),
            (b"upgrade", Known::Upgrade),
            (b"Trailer", Known::Trailer),
            (b"Connection", Known::Connection),
            (b"keep-Alive", Known::KeepAlive),
            (b"Content-Length", Known::ContentLength),
            (b"Proxy-Connection", Known::ProxyConnection),
            (b"transfer-encoding", Known::TransferEncoding),
            (b"Proxy-Authenticate", Known::ProxyAuthenticate),
            (b"proxy-authorization", Known::ProxyAuthorization),
            (b"x-host", Known::Other),
            (b"hosts", Known::Other),
        ];
        for (name, want) in names {
            assert_eq!(known(name), want, "{}", String::from_utf8_lossy(name));
        }
        // Every name `http` has a constant for, and only those listed, is known.
        for name in [
            header::CONNECTION,
            header::CONTENT_LENGTH,
            header::DATE,
            header::EXPECT,
            header::HOST,
            header::PROXY_AUTHENTICATE,
            header::PROXY_AUTHORIZATION,
            header::TE,
            header::TRAILER,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
        ] {
            assert_ne!(known(name.as_str().as_bytes()), Known::Other, "{name}");
        }
        assert_eq!(
            known(header::CONTENT_TYPE.as_str().as_bytes()),
            Known::Other
        );
        assert_eq!(known(header::ACCEPT.as_str().as_bytes()), Known::Other);
    }

    #[test]
    fn content_lengths_are_read_strictly() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b"1234"), Some(1234));
        assert_eq!(content_length(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(
            content_length(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        assert_eq!(content_length(b"12, 12"), Some(12));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"-1",
            b"+1",
            b"1 2",
            b"12, 13",
            b"0x10",
            b"1,",
        ] {
            assert_eq!(content_length(bad), None, "{bad:?}");
        }
    }

    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), &'static str> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            fed += piece.len();
            loop {
                match state.decode(&mut buf)? {
                    Decoded::Data(d) => body.extend_from_slice(&d),
                    Decoded::More => break,
                    Decoded::Done => {
                        buf.extend_from_slice(&input[fed..]);
                        return Ok((body, buf.to_vec()));
                    }
                }
            }
        }
        Err("incomplete")
    }

    #[test]
    fn decodes_whole_and_byte_by_byte() {
        let input = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, input.len()] {
            let (body, rest) = decode_all(input, step).unwrap();
            assert_eq!(body, b"hello, world");
            assert_eq!(rest, b"NEXT");
        }
    }

    #[test]
    fn refuses_malformed_framing() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],  // bare LF
            b"5\r\nhelloX\r\n0\r\n\r\n",    // data longer than its size
            b"g\r\n",                       // not hex
            b"\r\n",                        // no size
            b"1234567890abcdef0\r\n",       // overflows
            b"5 x\r\nhello\r\n0\r\n\r\n",   // junk after the size
            b"5\x0b\r\nhello\r\n0\r\n\r\n", // not a blank
            b"-5\r\n",                      // sign
        ] {
            assert!(
                decode_all(bad, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b'1'; MAX_LINE + 10];
        assert!(decode_all(&long, 1).is_err());
    }

    #[test]
    fn size_lines_may_have_whitespace_and_extensions() {
        assert_eq!(chunk_size(b"1a ; name=value").unwrap(), 26);
        assert_eq!(chunk_size(b"A;x").unwrap(), 10);
        assert_eq!(chunk_size(b"5 \t").unwrap(), 5);
    }

    #[test]
    fn token_lists() {
        assert!(has_token(b"keep-alive, Close", b"close"));
        assert!(!has_token(b"closed", b"close"));
    }
}
