//! Request path normalization: the one form of a path that routing, the access policy and the
//! upstream all see, so that no spelling of a path can borrow another path's rule.
//!
//! Unreserved characters (`A-Z a-z 0-9 - . _ ~`) are percent-decoded; other escapes stay
//! encoded, in upper case (an encoded slash is never a separator); raw non-ASCII bytes are
//! escaped; duplicate slashes collapse;
//! `.` and `..` segments are resolved, never above the root. The query string is not touched.

use std::borrow::Cow;

/// The normalized form of `path`, or `None` if it is not an origin-form path or holds a
/// broken percent-escape.
pub fn normalize(path: &str) -> Option<Cow<'_, str>> {
    if is_normal(path) {
        return Some(Cow::Borrowed(path));
    }
    rewrite(path).map(Cow::Owned)
}

/// True for the common path that normalization leaves as it is: ASCII, no escapes, no empty
/// segment but the last, no `.` or `..` segment.
fn is_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    // Most requests take this path, so first one pass without a branch per byte: it flags a
    // byte that is not ASCII, a `%`, and a `/` followed by `/` or `.` (where an empty or dot
    // segment starts, but also `/.well-known`). Only a flagged path is checked exactly.
    let mut flagged = 0u8;
    for (&before, &b) in bytes.iter().zip(&bytes[1..]) {
        flagged |= (b >> 7)
            | u8::from(b == b'%')
            | u8::from((before == b'/') & ((b == b'/') | (b == b'.')));
    }
    flagged == 0 || exactly_normal(bytes)
}

/// [`is_normal`] for a path that starts with `/`, segment by segment.
fn exactly_normal(bytes: &[u8]) -> bool {
    let is_dots = |segment: &[u8]| segment == b"." || segment == b"..";
    let mut start = 1;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        if !b.is_ascii() || b == b'%' {
            return false;
        }
        if b == b'/' {
            let segment = &bytes[start..i];
            if segment.is_empty() || is_dots(segment) {
                return false;
            }
            start = i + 1;
        }
    }
    // The last segment may be empty (a trailing slash), but not a dot segment.
    !is_dots(&bytes[start..])
}

fn rewrite(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let decoded = decode_unreserved(path)?;
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = parts.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, segment) in parts.iter().enumerate() {
        let is_last = i == last;
        match *segment {
            "" | "." => trailing_slash = is_last && !segments.is_empty(),
            ".." => {
                segments.pop();
                trailing_slash = is_last && !segments.is_empty();
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Some(out)
}

fn decode_unreserved(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] >= 0x80 {
            // Raw UTF-8 (which a URI should not carry) is escaped, byte by byte, so the path has
            // one spelling whichever way the client sent it.
            out.push('%');
            out.push(char::from(HEX[usize::from(bytes[i] >> 4)]));
            out.push(char::from(HEX[usize::from(bytes[i] & 0x0f)]));
            i += 1;
            continue;
        }
        if bytes[i] != b'%' {
            out.push(char::from(bytes[i]));
            i += 1;
            continue;
        }
        let hi = hex_value(*bytes.get(i + 1)?)?;
        let lo = hex_value(*bytes.get(i + 2)?)?;
        let byte = hi * 16 + lo;
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(hi)]));
            out.push(char::from(HEX[usize::from(lo)]));
        }
        i += 3;
    }
    Some(out)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_per_path() {
        let table: &[(&str, Option<&str>)] = &[
            ("/", Some("/")),
            ("/catalog/entities", Some("/catalog/entities")),
            ("/public/../admin", Some("/admin")),
            ("/public/./../admin", Some("/admin")),
            ("/public%2f..%2fadmin", Some("/public%2F..%2Fadmin")),
            ("/public%2F..%2Fadmin", Some("/public%2F..%2Fadmin")),
            ("//admin", Some("/admin")),
            ("/a//b///c", Some("/a/b/c")),
            ("/a/./b/", Some("/a/b/")),
            ("/a/b/..", Some("/a/")),
            ("/a/%2e%2e/b", Some("/b")),
            ("/a/%2E%2e/../b", Some("/b")),
            ("/../../etc/passwd", Some("/etc/passwd")),
            ("/..", Some("/")),
            ("/%41dmin", Some("/Admin")),
            ("/%7euser", Some("/~user")),
            ("/a%20b", Some("/a%20b")),
            ("/a%5c..%5cadmin", Some("/a%5C..%5Cadmin")),
            ("/api/", Some("/api/")),
            ("/x%", None),
            ("/x%4", None),
            ("/x%zz", None),
            ("admin", None),
            ("*", None),
        ];
        for (input, want) in table {
            assert_eq!(normalize(input).as_deref(), *want, "{input}");
        }
    }

    #[test]
    fn the_shortcut_agrees_with_the_rewrite() {
        // Every path of up to six pieces from an alphabet of the troublesome ones.
        const PIECES: [&str; 7] = ["/", "a", ".", "..", "%2e", "%41", "\u{e9}"];
        let mut paths = vec![String::new()];
        for _ in 0..6 {
            let longer: Vec<String> = paths
                .iter()
                .flat_map(|p| PIECES.iter().map(move |piece| format!("{p}{piece}")))
                .collect();
            for path in &longer {
                if is_normal(path) {
                    assert_eq!(rewrite(path).as_deref(), Some(path.as_str()), "{path}");
                } else if path.is_ascii() && !path.contains('%') {
                    // And the other way: a plain path the rewrite leaves alone is normal.
                    assert_ne!(rewrite(path).as_deref(), Some(path.as_str()), "{path}");
                }
            }
            paths = longer;
        }
        assert!(is_normal("/api/catalog/entities/"));
        assert!(is_normal("/.well-known/jwks.json"));
        assert!(is_normal("/"));
        assert!(!is_normal("/api//catalog"));
        assert!(!is_normal("/api/./catalog"));
        assert!(!is_normal("/api/.."));
    }

    #[test]
    fn raw_utf8_is_escaped_once_and_for_all() {
        // Found by the path_routing fuzz target: raw UTF-8 was mangled byte by byte, and
        // normalizing the result changed it again.
        let once = normalize("/static-a*\u{41b}").unwrap();
        assert_eq!(once, "/static-a*%D0%9B");
        assert_eq!(normalize(&once).as_deref(), Some(&*once));
        assert_eq!(
            normalize("/caf\u{e9}/%c3%a9").as_deref(),
            Some("/caf%C3%A9/%C3%A9")
        );
    }
}
