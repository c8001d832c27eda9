//! Session cookie decoding and chunk reassembly: any `Cookie` header opens to a session, a
//! ticket or nothing, without panicking.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use stagedoor::session::{Codec, CookieSettings};

fn codec() -> &'static Codec {
    static CODEC: OnceLock<Codec> = OnceLock::new();
    CODEC.get_or_init(|| {
        Codec::new(
            &[7u8; 32],
            &[vec![9u8; 32]],
            CookieSettings {
                name: "_stagedoor".into(),
                domain: None,
                path: "/".into(),
                secure: true,
                expire: Duration::from_secs(3600),
            },
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, value);
    let codec = codec();
    let _ = codec.read_session(&headers);
    let _ = codec.read_ticket(&headers);
    let _ = codec.clear_all(&headers);
    codec.strip_own(&mut headers);
});
