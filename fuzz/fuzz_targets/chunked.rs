//! The chunked-body decoder that reads upstream responses: it never panics, never yields more
//! bytes than it was given, and gives the same answer however the input is split across reads.
//! Data it encodes itself always decodes back.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use stagedoor::wire::{Chunked, Decoded};

/// Decodes `input` fed in pieces of `step` bytes: the body, or `None` on an error or if the
/// input ends before the body does.
fn decode(input: &[u8], step: usize) -> Option<Vec<u8>> {
    let mut state = Chunked::Size;
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    for piece in input.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match state.decode(&mut buf).ok()? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::More => break,
                Decoded::Done => return Some(body),
            }
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let whole = decode(input, input.len());
    if let Some(body) = &whole {
        assert!(body.len() <= input.len());
    }
    assert_eq!(decode(input, usize::from(step)), whole);

    // Encode the input as chunks whose sizes come from its bytes; it must decode back.
    let mut encoded = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let size = usize::from(rest[0]).clamp(1, rest.len());
        encoded.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        encoded.extend_from_slice(&rest[..size]);
        encoded.extend_from_slice(b"\r\n");
        rest = &rest[size..];
    }
    encoded.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(decode(&encoded, usize::from(step)).as_deref(), Some(input));
});
