"""Independent interop check: an off-the-shelf OAuth client (Authlib) gets a token from
latchkey with the client-credentials grant, and an independent JWT library (PyJWT) verifies it
against the published JWKS. Prints the token response (without the token) and the verified
header and claims as JSON, or exits non-zero with the reason.

Usage: authlib_client.py METADATA_URL CLIENT_ID AUTH_METHOD SCOPE AUDIENCE
The client secret is read from the environment variable CLIENT_SECRET. With AUTH_METHOD
private_key_jwt, CLIENT_SECRET holds the PEM private key and CLIENT_KEY_ALG its algorithm;
Authlib's PrivateKeyJWT signs the assertion with its own defaults (header `typ: JWT`, an hour
long), addressed to the issuer (draft-ietf-oauth-rfc7523bis).

Usage: authlib_client.py --pyjwt-assertion PEM_FILE ALG CLAIMS_JSON
prints a client assertion that PyJWT's `jwt.encode` signs with its default header.
"""
import json
import os
import sys

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT


def import_key(pem: str, alg: str):
    """The PEM key as the key object Authlib's PrivateKeyJWT signs with: joserfc's, which
    Authlib 1.7+ uses (its own `authlib.jose` keys are deprecated)."""
    from joserfc.jwk import ECKey, OKPKey, RSAKey

    kind = {"ES256": ECKey, "EdDSA": OKPKey, "RS256": RSAKey}[alg]
    return kind.import_key(pem)


def pyjwt_assertion(pem_file: str, alg: str, claims: str) -> None:
    """A client assertion as a PyJWT user writes it: `jwt.encode` with its default header."""
    with open(pem_file, encoding="ascii") as f:
        pem = f.read()
    print(jwt.encode(json.loads(claims), pem, algorithm=alg))


def main() -> None:
    if sys.argv[1] == "--pyjwt-assertion":
        pyjwt_assertion(*sys.argv[2:5])
        return
    metadata_url, client_id, auth_method, scope, audience = sys.argv[1:6]
    metadata = requests.get(metadata_url, timeout=10).json()
    credential = os.environ["CLIENT_SECRET"]
    if auth_method == "private_key_jwt":
        credential = import_key(credential, os.environ["CLIENT_KEY_ALG"])
    session = OAuth2Session(
        client_id,
        credential,
        scope=scope,
        token_endpoint_auth_method=auth_method,
    )
    if auth_method == "private_key_jwt":
        # Authlib's `token_endpoint` argument is the assertion's audience: the issuer here.
        # The algorithm is the key's (Authlib's default is RS256); nothing else is set.
        alg = os.environ["CLIENT_KEY_ALG"]
        if alg == "RS256":
            auth = PrivateKeyJWT(metadata["issuer"])
        else:
            auth = PrivateKeyJWT(metadata["issuer"], alg=alg)
        session.register_client_auth_method(auth)
    token = session.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")
    if auth_method == "private_key_jwt":
        # A second token, so a reused assertion id would show as a failure.
        token = session.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")
    access_token = token["access_token"]

    header = jwt.get_unverified_header(access_token)
    signing_key = jwt.PyJWKClient(metadata["jwks_uri"]).get_signing_key_from_jwt(access_token)
    claims = jwt.decode(
        access_token,
        signing_key.key,
        algorithms=[header["alg"]],
        audience=audience,
        issuer=metadata["issuer"],
        options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
    )
    response = {k: v for k, v in token.items() if k != "access_token"}
    print(json.dumps({"response": response, "header": header, "claims": claims}))


if __name__ == "__main__":
    main()
