"""Independent interop check of dynamic client registration (RFC 7591) and its management
protocol (RFC 7592), as a plain HTTP client does it: `requests` at its defaults, with the
registered credentials then used by Authlib's OAuth2Session for the client-credentials grant.

Usage: dcr_client.py METADATA_URL AUDIENCE
The initial access token is read from the environment variable INITIAL_ACCESS_TOKEN. Prints one
JSON object with what each step answered, or exits non-zero with the reason.
"""
import json
import os
import sys

import requests
from authlib.integrations.requests_client import OAuth2Session


def check(condition: bool, what: str, response: requests.Response) -> None:
    if not condition:
        sys.exit(f"{what}: HTTP {response.status_code} {response.text}")


def token(metadata: dict, client_id: str, secret: str, audience: str) -> dict:
    """A client-credentials token request with Authlib's defaults (client_secret_basic)."""
    session = OAuth2Session(client_id, secret)
    try:
        return {"ok": True, "token": session.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")}
    except Exception as err:  # Authlib raises on an error response: report it
        return {"ok": False, "error": str(err)}


def main() -> None:
    metadata_url, audience = sys.argv[1:3]
    initial = os.environ["INITIAL_ACCESS_TOKEN"]
    metadata = requests.get(metadata_url, timeout=10).json()
    endpoint = metadata["registration_endpoint"]
    out = {}

    # RFC 7591 §3.1: POST the metadata as JSON with the initial access token.
    sent = {
        "client_name": "inventory sync",
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_basic",
        "scope": "inventory:read",
        "audience": [audience],
        "software_id": "4NRB1-0XZABZI9E6-5SM3R",  # not understood: ignored (§2)
    }
    r = requests.post(endpoint, json=sent, headers={"Authorization": f"Bearer {initial}"}, timeout=10)
    check(r.status_code == 201, "register", r)
    check(r.headers.get("Cache-Control") == "no-store", "register: Cache-Control", r)
    registered = r.json()
    out["registered"] = {k: v for k, v in registered.items() if k not in ("client_secret", "registration_access_token")}
    out["has_secret"] = bool(registered.get("client_secret"))
    client_id = registered["client_id"]
    secret = registered["client_secret"]
    rat = registered["registration_access_token"]
    uri = registered["registration_client_uri"]
    config = {"Authorization": f"Bearer {rat}"}

    out["token"] = token(metadata, client_id, secret, audience)

    # RFC 7592 §2.1: read.
    r = requests.get(uri, headers=config, timeout=10)
    check(r.status_code == 200, "read", r)
    out["read"] = r.json()

    # RFC 7592 §2.2: replace; what is left out returns to its default.
    update = {k: v for k, v in registered.items()
              if k not in ("registration_access_token", "registration_client_uri",
                           "client_id_issued_at", "client_secret_expires_at")}
    update["client_name"] = "inventory sync v2"
    update["scope"] = "inventory:read inventory:write"
    r = requests.put(uri, json=update, headers=config, timeout=10)
    check(r.status_code == 200, "update", r)
    out["updated"] = r.json()
    out["token_after_update"] = token(metadata, client_id, secret, audience)

    # Another client's token, or none, gets 401.
    r = requests.get(uri, headers={"Authorization": f"Bearer {initial}"}, timeout=10)
    out["read_with_initial_token"] = {"status": r.status_code, "www_authenticate": r.headers.get("WWW-Authenticate"), "body": r.json()}

    # RFC 7592 §2.3: delete; the client and its registration access token are gone.
    r = requests.delete(uri, headers=config, timeout=10)
    check(r.status_code == 204, "delete", r)
    out["deleted"] = r.status_code
    r = requests.get(uri, headers=config, timeout=10)
    out["read_after_delete"] = r.status_code
    out["token_after_delete"] = token(metadata, client_id, secret, audience)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
