#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/seeds/<target>/: a few small realistic inputs and edge
cases per target, in the input formats of docs/FUZZING.md. Run it again after changing a
fixture (fuzz/fixtures/) or a format; seeds that came from crashes are kept by hand under
names starting with `crash-` and are not touched here. Needs the `cryptography` package (the
CI installs it) for the signed tokens the guard seeds carry."""

import base64
import hashlib
import hmac
import json
import os
import shutil

from cryptography.hazmat.primitives.serialization import load_der_private_key

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")
NOW = 1_767_225_600
ISSUER = "https://as.example"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fixture(name: str) -> bytes:
    with open(os.path.join(HERE, "fixtures", name), "rb") as f:
        return f.read()


def compact(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


ED_KEY = load_der_private_key(fixture("ed25519.pk8"), None)
ED_X = b64url(ED_KEY.public_key().public_bytes_raw())
ED_JWK = {"kty": "OKP", "crv": "Ed25519", "x": ED_X}
ED_JKT = b64url(hashlib.sha256(compact({"crv": "Ed25519", "kty": "OKP", "x": ED_X}).encode()).digest())
EC_NUMBERS = load_der_private_key(fixture("es256.pk8"), None).public_key().public_numbers()
EC_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": b64url(EC_NUMBERS.x.to_bytes(32, "big")),
    "y": b64url(EC_NUMBERS.y.to_bytes(32, "big")),
}
EC_JKT = b64url(hashlib.sha256(compact({"crv": "P-256", "kty": "EC", "x": EC_JWK["x"], "y": EC_JWK["y"]}).encode()).digest())
CERT = fixture("client-cert.der")
CERT_X5T = b64url(hashlib.sha256(CERT).digest())
CERT_B64 = base64.b64encode(CERT).decode()
CERT_PEM = "-----BEGIN CERTIFICATE-----\n" + "\n".join(
    CERT_B64[i : i + 64] for i in range(0, len(CERT_B64), 64)
) + "\n-----END CERTIFICATE-----\n"
# The RSA key of RFC 7638 §3.1.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
    "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
    "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
    "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)


def sign(header, payload) -> str:
    """A compact JWS signed with the fixed Ed25519 key, as the targets' templates are."""
    signing_input = b64url(compact(header).encode()) + "." + b64url(compact(payload).encode())
    return signing_input + "." + b64url(ED_KEY.sign(signing_input.encode()))


def dpop_nonce(now: int) -> str:
    """The DPoP nonce a server whose signing key is the fixed Ed25519 key issues at `now`
    (crates/latchkey-server/src/protocol/dpop_nonce.rs): the nonce key is HMAC-SHA256 of a
    label under the key's PKCS#8, the nonce the minute's window and 16 bytes of its MAC."""
    nonce_key = hmac.new(fixture("ed25519.pk8"), b"latchkey DPoP nonce key v1", hashlib.sha256).digest()
    window = (now // 60).to_bytes(8, "big", signed=True)
    return b64url(window + hmac.new(nonce_key, window, hashlib.sha256).digest()[:16])


def template(header, payload) -> str:
    """A template HEADER<TAB>PAYLOAD (fuzz/src/lib.rs, `jws`)."""
    h = header if isinstance(header, str) else compact(header)
    p = payload if isinstance(payload, str) else compact(payload)
    return h + "\t" + p


def write(target: str, seeds: dict):
    folder = os.path.join(SEEDS, target)
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if not name.startswith("crash-"):
            os.remove(os.path.join(folder, name))
    for name, data in seeds.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)


def basic(user: str, password: str, pad=True) -> str:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return "Basic " + (encoded if pad else encoded.rstrip("="))


ASSERTION_CLAIMS = {
    "iss": "client-1",
    "sub": "client-1",
    "aud": ISSUER,
    "exp": NOW + 300,
    "iat": NOW,
    "jti": "a-1",
}
AT_CLAIMS = {
    "iss": ISSUER,
    "sub": "client-1",
    "client_id": "client-1",
    "aud": "https://api.example",
    "iat": NOW - 10,
    "exp": NOW + 3600,
    "jti": "t-1",
    "scope": "read write",
}
AT_HEADER = {"alg": "EdDSA", "kid": "ed", "typ": "at+jwt"}

write("form_body", {
    "token-request": "grant_type=client_credentials&scope=read+write&resource=https%3A%2F%2Fapi.example",
    "secret-post": "grant_type=client_credentials&client_id=client-1&client_secret=s%2Bx%3D",
    "assertion": "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=eyJhbGciOiJFZERTQSJ9.e30.AAAA",
    "introspect": "token=lkat_abc&token_type_hint=access_token",
    "repeated": "scope=a&scope=b&resource=x&resource=y",
    "bad-escape": "a=%zz&b=%4",
    "empty-pairs": "&&=&a&=b&",
    "utf8": "client_id=%C3%A9t%C3%A9&scope=%F0%9F%94%91",
})
write("basic_header", {
    "padded": basic("client-1", "secret"),
    "unpadded": basic("client-1", "s3cret!", pad=False),
    "encoded": basic("client%3A1", "p%40ss+word"),
    "no-colon": "Basic " + base64.b64encode(b"client-1").decode(),
    "empty-secret": basic("client-1", ""),
    "lowercase-spaces": "basic   " + base64.b64encode(b"a:b").decode() + "  ",
    "bad-base64": "Basic !!!",
    "bearer": "Bearer abc",
})
write("client_assertion", {
    "valid": template({"alg": "EdDSA", "kid": "ed", "typ": "client-authentication+jwt"}, ASSERTION_CLAIMS),
    "audience-list": template({"alg": "EdDSA"}, {**ASSERTION_CLAIMS, "aud": [ISSUER]}),
    "federated": template({"alg": "EdDSA", "typ": "JWT"}, {**ASSERTION_CLAIMS, "iss": "https://ci.example"}),
    "huge-numbers": template({"alg": "EdDSA"}, {**ASSERTION_CLAIMS, "exp": 9223372036854775807, "iat": -9223372036854775808, "nbf": 1e400}),
    "duplicate-members": template('{"alg":"EdDSA","alg":"none"}', '{"iss":"a","iss":"b","sub":"a","aud":"x","exp":1}'),
    "crit": template({"alg": "EdDSA", "crit": ["exp"]}, ASSERTION_CLAIMS),
    "wrong-typ": template({"alg": "EdDSA", "typ": "dpop+jwt"}, ASSERTION_CLAIMS),
    "nested": template({"alg": "EdDSA"}, "[" * 200 + "]" * 200),
    "raw": sign({"alg": "EdDSA", "kid": "ed"}, ASSERTION_CLAIMS),
    "four-dots": "a.b.c.d.e",
})
write("jwk_set", {
    "ed25519": compact({"keys": [{**ED_JWK, "kid": "ed", "use": "sig"}]}),
    "ec-with-x5c": compact({"keys": [{**EC_JWK, "alg": "ES256", "x5c": [CERT_B64]}]}),
    "rsa": compact({"keys": [{"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}]}),
    "private": compact({"keys": [{**ED_JWK, "d": "AAAA"}]}),
    "duplicate-kid": compact({"keys": [{**ED_JWK, "kid": "k"}, {**EC_JWK, "kid": "k"}]}),
    "wrong-alg": compact({"keys": [{**EC_JWK, "alg": "HS256"}]}),
    "padded": compact({"keys": [{**ED_JWK, "x": ED_X + "="}]}),
    "not-a-set": '{"keys":{}}',
})
write("jwks_response", {
    "issuer": "public, max-age=3600\n" + compact({"keys": [{**ED_JWK, "kid": "ed", "use": "sig"}, {**EC_JWK, "kid": "es", "alg": "ES256"}]}),
    # A key this code cannot use comes first: the keys after it are read all the same.
    "skipped-keys": "max-age=60\n" + compact({"keys": [{"kty": "oct", "k": "AAAA", "kid": "h"}, 42, {"kty": "EC"}, {**ED_JWK, "kid": "ed"}, {"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "kid": "rsa"}]}),
    "quoted-max-age": 'no-cache, MAX-AGE="5"\n' + compact({"keys": [{**EC_JWK, "kid": "k", "use": "enc"}]}),
    "huge-max-age": "max-age=99999999999999999999\n" + compact({"keys": []}),
    "no-header": "\n" + compact({"keys": [{**ED_JWK, "kid": "k"}, {**ED_JWK, "kid": "k"}]}),
    "not-a-set": "max-age=300\n" + '{"keys":{}}',
})
DPOP_HEADER = {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": ED_JWK}
write("dpop_proof", {
    "token-endpoint": template(DPOP_HEADER, {"jti": "j-1", "htm": "POST", "htu": "https://as.example/oauth2/token", "iat": NOW}),
    "server-nonce": template(DPOP_HEADER, {"jti": "j-4", "htm": "POST", "htu": "https://as.example/oauth2/token", "iat": NOW, "nonce": dpop_nonce(NOW - 120)}),
    "old-nonce": template(DPOP_HEADER, {"jti": "j-5", "htm": "POST", "htu": "https://as.example/oauth2/token", "iat": NOW, "nonce": dpop_nonce(NOW - 300)}),
    "foreign-nonce": template(DPOP_HEADER, {"jti": "j-6", "htm": "POST", "htu": "https://as.example/oauth2/token", "iat": NOW, "nonce": "n-1"}),
    "resource": template(DPOP_HEADER, {"jti": "j-2", "htm": "GET", "htu": "https://api.example:443/v1/items", "iat": NOW - 5, "ath": b64url(hashlib.sha256(b"an-access-token").digest())}),
    "userinfo-htu": template(DPOP_HEADER, {"jti": "j-3", "htm": "POST", "htu": "https://u:p@as.example/oauth2/token", "iat": NOW}),
    "private-jwk": template({**DPOP_HEADER, "jwk": {**ED_JWK, "d": "AAAA"}}, {}),
    "ec-jwk": template({**DPOP_HEADER, "alg": "ES256", "jwk": EC_JWK}, {"jti": "j", "htm": "POST", "htu": "x", "iat": NOW}),
    "huge-iat": template(DPOP_HEADER, {"jti": "j", "htm": "POST", "htu": "https://as.example/oauth2/token", "iat": 9223372036854775807}),
    "raw": sign(DPOP_HEADER, {"jti": "j-1", "htm": "POST", "htu": "https://as.example/oauth2/token", "iat": NOW, "nonce": "n-1"}),
})
write("subject_dn", {
    "dn": "CN=worker-1+OU=Payments,O=Example Org,C=DE",
    "dn-with-certificate": b"CN=worker-1+OU=Payments,O=Example Org,C=DE\n" + CERT,
    "escapes": "CN=a\\,b\\2B\\C3\\A9,O=\\ x ",
    "lone-backslash": "CN=x\\",
    "oid": "2.5.4.3=worker-1, 0.9.2342.19200300.100.1.25=example",
    "hex-value": "CN=#04024869",
    "ip": "192.0.2.7",
    "dns": "worker.example",
    "uri": "spiffe://example/worker",
})
# The server names its keys by their RFC 7638 thumbprints.
SERVER_AT_HEADER = {**AT_HEADER, "kid": ED_JKT}
write("introspection_token", {
    "jwt": template(SERVER_AT_HEADER, AT_CLAIMS),
    "dpop-bound": template(SERVER_AT_HEADER, {**AT_CLAIMS, "cnf": {"jkt": ED_JKT}, "lk_epoch": 3}),
    "audiences": template(SERVER_AT_HEADER, {**AT_CLAIMS, "aud": ["https://api.example", "https://b.example"], "nbf": NOW}),
    "es256-kid": template({**AT_HEADER, "kid": EC_JKT}, AT_CLAIMS),
    "float-exp": template(SERVER_AT_HEADER, {**AT_CLAIMS, "exp": 1.5e300}),
    "escaped-kid": template('{"alg":"EdDSA","kid":"\\u%04x%s","typ":"at+jwt"}' % (ord(ED_JKT[0]), ED_JKT[1:]), AT_CLAIMS),
    "opaque": "lkat_" + "A" * 43,
    "raw": sign(SERVER_AT_HEADER, AT_CLAIMS),
})
write("pem_import", {
    "certificate": CERT_PEM,
    "two-certificates": CERT_PEM + CERT_PEM,
    "ec-private-key": "-----BEGIN PRIVATE KEY-----\n" + base64.b64encode(fixture("es256.pk8")).decode() + "\n-----END PRIVATE KEY-----\n",
    "ed25519-private-key": "-----BEGIN PRIVATE KEY-----\n" + base64.b64encode(fixture("ed25519.pk8")).decode() + "\n-----END PRIVATE KEY-----\n",
    "truncated": CERT_PEM[: len(CERT_PEM) // 2],
    "encrypted": "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    "text-around": "subject=CN=x\n" + CERT_PEM + "trailing text\n",
})
write("gate_path", {
    "plain": "/v1/items?page=2",
    "dot-dot": "/a/../admin",
    "encoded-dots": "/a/%2e%2E/admin",
    "semicolon": "/a/..;/admin",
    "encoded-slash": "/a/..%2Fadmin",
    "backslash": "/a/..\\admin",
    "asterisk": "*",
    "absolute": "http://upstream.example/a/b",
    "double-slash": "//a//b/",
    "query": "/v1/items?q=%2e%2e/x&next=/a/../b",
    "empty-query": "/a?",
})
TOKEN = sign(AT_HEADER, AT_CLAIMS)
BOUND = sign(AT_HEADER, {**AT_CLAIMS, "cnf": {"jkt": ED_JKT}})
CERT_BOUND = {**AT_CLAIMS, "cnf": {"x5t#S256": CERT_X5T}}
write("guard_request", {
    "bearer": "GET\n/v1/items\nBearer " + TOKEN,
    "bearer-template": "GET\n/v1/items\nBearer " + template(AT_HEADER, AT_CLAIMS),
    "dpop": "GET\n/v1/items?page=2\nDPoP " + BOUND + "\n" + template(DPOP_HEADER, {"jti": "g-1", "htm": "GET", "htu": "https://api.example/v1/items", "iat": NOW, "ath": b64url(hashlib.sha256(BOUND.encode()).digest())}),
    "certificate-bound": "POST\n/v1/items\nBearer " + template(AT_HEADER, CERT_BOUND) + "\n\n:" + CERT_B64 + ":",
    "certificate-pem": "POST\n/v1/items\nBearer " + template(AT_HEADER, CERT_BOUND) + "\n\n" + CERT_PEM.replace("\n", "%0A").replace(" ", "%20"),
    "query-token": "GET\n/v1/items?access_token=x\nBearer abc",
    "unknown-kid": "GET\n/\nBearer " + template({**AT_HEADER, "kid": "other"}, AT_CLAIMS),
    "basic": "GET\n/\nBasic Y2xpZW50OnNlY3JldA==",
})
print("seeds written to", SEEDS)
