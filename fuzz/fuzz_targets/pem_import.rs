//! PEM documents latchkey imports: the certificates a `self_signed_tls_client_auth` client
//! registers (`certificates_from_pem`, through the admin API and `latchkey client`), each then
//! read for its public key (`certificate_jwk`: x509-parser, then the key as a JWK that must
//! verify); and private keys read from PEM files (`PrivateKey::from_pem`: PKCS#8, SEC1,
//! PKCS#1), as `latchkey token` and the client library read them.
#![no_main]

use latchkey_fuzz::explain;
use latchkey_jose::{PrivateKey, VerifyingKey, thumbprint};
use latchkey_server::protocol::mutual_tls::certificate_jwk;
use latchkey_server::service::admin::certificates_from_pem;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|pem: &[u8]| {
    let certificates = certificates_from_pem(pem).map_err(|e| e.to_string());
    explain(&certificates.as_ref().map(Vec::len));
    if let Ok(certificates) = certificates {
        for der in &certificates {
            let jwk = certificate_jwk(der);
            explain(&jwk);
            if let Ok(jwk) = jwk {
                let _ = thumbprint(&jwk);
                let _ = VerifyingKey::from_jwk(&jwk);
            }
        }
    }
    let key = PrivateKey::from_pem(pem);
    explain(&key);
    if let Ok(key) = key {
        // A key that reads signs, and its own public key verifies what it signed.
        let jws = key
            .sign_jws(br#"{"alg":"x"}"#, b"{}")
            .expect("a parsed key signs");
        let (signed, signature) = jws.rsplit_once('.').expect("a compact JWS");
        let signature =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
                .expect("base64url");
        let verifier = key.verifying_key().expect("a parsed key has a public key");
        assert!(verifier.verify(signed.as_bytes(), &signature));
    }
});
