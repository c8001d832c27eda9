//! JWT and JWKS parsing: headers, unverified issuers and key sets from attacker bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = jsonwebtoken::decode_header(token);
        let _ = stagedoor::providers::oidc::unverified_issuer(token);
    }
    if let Ok(set) = serde_json::from_slice::<jsonwebtoken::jwk::JwkSet>(data) {
        for key in &set.keys {
            let _ = jsonwebtoken::DecodingKey::from_jwk(key);
        }
    }
});
