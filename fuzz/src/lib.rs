//! What the fuzz targets share: fixed keys and a certificate (in `fixtures/`, made once with
//! openssl for fuzzing alone), the fixed `now` they check times against, and the one input
//! convention of the targets that read signed tokens (docs/FUZZING.md, "Input formats").

use std::sync::OnceLock;

use latchkey_jose::{PrivateKey, VerifyingKey};
use latchkey_proto::SigningAlg;

/// The `now` of every target, in seconds since the Unix epoch (2026-01-01T00:00:00Z). Seeds
/// carry `iat` and `exp` around it.
pub const NOW: i64 = 1_767_225_600;

/// The issuer identifier the server-side targets act as.
pub const ISSUER: &str = "https://as.example";

/// A self-signed client certificate (DER, EC P-256) whose subject is
/// `C=DE, O=Example Org, CN=worker-1+OU=Payments` and whose SANs are `DNS:worker.example`,
/// `IP:192.0.2.7`, `URI:spiffe://example/worker` and `email:ops@example.com`.
pub const CLIENT_CERTIFICATE: &[u8] = include_bytes!("../fixtures/client-cert.der");

/// The PKCS#8 DER of the fixed Ed25519 key: it signs every template (see [`jws`]).
pub const ED25519_PKCS8: &[u8] = include_bytes!("../fixtures/ed25519.pk8");

/// The PKCS#8 DER of a second fixed key (ES256, and the client certificate's key).
pub const ES256_PKCS8: &[u8] = include_bytes!("../fixtures/es256.pk8");

/// The key id under which targets register the Ed25519 key; seeds' headers name it.
pub const ED25519_KID: &str = "ed";

/// The key id under which targets register the ES256 key.
pub const ES256_KID: &str = "es";

/// The fixed Ed25519 signing key, kid [`ED25519_KID`].
pub fn ed25519_key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        PrivateKey::from_pkcs8(SigningAlg::EdDsa, ED25519_PKCS8)
            .expect("the Ed25519 fixture is a PKCS#8 key")
            .with_kid(ED25519_KID)
    })
}

/// The fixed ES256 signing key, kid [`ES256_KID`].
pub fn es256_key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        PrivateKey::from_pkcs8(SigningAlg::Es256, ES256_PKCS8)
            .expect("the ES256 fixture is a PKCS#8 key")
            .with_kid(ES256_KID)
    })
}

/// The verifying keys of both fixed keys, as a client registers them.
pub fn verifying_keys() -> &'static [VerifyingKey] {
    static KEYS: OnceLock<Vec<VerifyingKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        [ed25519_key(), es256_key()]
            .into_iter()
            .map(|key| key.verifying_key().expect("a fixed key has a public key"))
            .collect()
    })
}

/// A compact JWS from a target's input. Random bytes almost never carry a valid signature, so
/// a fuzzer alone would stop at the signature check; with this convention it also reaches
/// everything after it:
///
/// - input that starts with `{` is a template, `HEADER<TAB>PAYLOAD` (two JSON texts, or any
///   bytes), signed here with the fixed Ed25519 key, whatever the header says;
/// - any other input is the token itself, as it would arrive on the wire.
pub fn jws(input: &str) -> String {
    match input.strip_prefix('{') {
        Some(_) => {
            let (header, payload) = input.split_once('\t').unwrap_or((input, ""));
            ed25519_key()
                .sign_jws(header.as_bytes(), payload.as_bytes())
                .expect("Ed25519 signing does not fail")
        }
        None => input.to_owned(),
    }
}

/// Splits an input into at most `n` lines (`\n`); missing lines are empty.
pub fn lines(input: &str, n: usize) -> Vec<&str> {
    let mut out: Vec<&str> = input.splitn(n, '\n').collect();
    out.resize(n, "");
    out
}

/// With `FUZZ_EXPLAIN=1` in the environment, prints what an input led to (to check that a
/// seed reaches what it is meant to: `FUZZ_EXPLAIN=1 target/<triple>/release/<target>
/// seeds/<target>/<seed>`). Silent otherwise, at the cost of one load.
pub fn explain(what: &dyn std::fmt::Debug) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("FUZZ_EXPLAIN").is_some()) {
        eprintln!("FUZZ_EXPLAIN: {what:?}");
    }
}
