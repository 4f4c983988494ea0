"""Independent interop check: an off-the-shelf OAuth client (Authlib) gets a token from
latchkey with the client-credentials grant, and an independent JWT library (PyJWT) verifies it
against the published JWKS. Prints the token response (without the token) and the verified
header and claims as JSON, or exits non-zero with the reason.

Usage: authlib_client.py METADATA_URL CLIENT_ID AUTH_METHOD SCOPE AUDIENCE
The client secret is read from the environment variable CLIENT_SECRET. With AUTH_METHOD
private_key_jwt, CLIENT_SECRET holds the PEM private key and CLIENT_KEY_ALG its algorithm;
Authlib signs the assertion, addressed to the issuer (draft-ietf-oauth-rfc7523bis) and typed
client-authentication+jwt.
"""
import json
import os
import sys

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign


class ShortLivedPrivateKeyJWT(PrivateKeyJWT):
    """Authlib's private_key_jwt with a 60-second assertion: Authlib's default lifetime is an
    hour, and latchkey accepts at most five minutes (an assertion id is remembered until its
    expiry, and a captured assertion should be useless soon)."""

    def sign(self, auth, token_endpoint):
        return private_key_jwt_sign(
            auth.client_secret,
            client_id=auth.client_id,
            token_endpoint=token_endpoint,
            alg=self.alg,
            header=self.headers,
            expires_in=60,
        )


def import_key(pem: str, alg: str):
    """The PEM key as the key object Authlib's PrivateKeyJWT signs with: joserfc's, which
    Authlib 1.7+ uses (its own `authlib.jose` keys are deprecated)."""
    from joserfc.jwk import ECKey, OKPKey, RSAKey

    kind = {"ES256": ECKey, "EdDSA": OKPKey, "RS256": RSAKey}[alg]
    return kind.import_key(pem)


def main() -> None:
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
        session.register_client_auth_method(
            ShortLivedPrivateKeyJWT(
                metadata["issuer"],
                headers={"typ": "client-authentication+jwt"},
                alg=os.environ["CLIENT_KEY_ALG"],
            )
        )
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
