"""Independent interop check: an off-the-shelf OAuth client (Authlib) gets a token from
latchkey with the client-credentials grant, and an independent JWT library (PyJWT) verifies it
against the published JWKS. Prints the token response (without the token) and the verified
header and claims as JSON, or exits non-zero with the reason.

Usage: authlib_client.py METADATA_URL CLIENT_ID AUTH_METHOD SCOPE AUDIENCE
The client secret is read from the environment variable CLIENT_SECRET.
"""
import json
import os
import sys

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session


def main() -> None:
    metadata_url, client_id, auth_method, scope, audience = sys.argv[1:6]
    metadata = requests.get(metadata_url, timeout=10).json()
    session = OAuth2Session(
        client_id,
        os.environ["CLIENT_SECRET"],
        scope=scope,
        token_endpoint_auth_method=auth_method,
    )
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
