//! The body of a POST to the token, introspection or revocation endpoint, as the server reads
//! it (`RequestParams::from_form`, which `http/endpoint.rs` calls): strict form decoding
//! (`form::parse`), the parameters (`RequestParams::from_pairs`, RFC 6749 §3.2), the
//! credentials they present without an `Authorization` header (`presented_credentials`), and
//! the syntax checks of the token request (grant type, scope, resources, client id).
#![no_main]

use latchkey_fuzz::explain;
use latchkey_server::protocol::client_auth::presented_credentials;
use latchkey_server::protocol::client_credentials::check_grant_type;
use latchkey_server::protocol::request::RequestParams;
use latchkey_server::protocol::syntax::{is_client_id, is_resource_uri, parse_scope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let request = RequestParams::from_form(body);
    explain(&request.as_ref().map_err(|e| format!("{e:?}")));
    let Ok(request) = request else {
        return;
    };
    let _ = check_grant_type(request.grant_type.as_deref());
    if let Some(scope) = &request.scope {
        let _ = parse_scope(scope);
    }
    for resource in &request.resources {
        let _ = is_resource_uri(resource);
    }
    if let Some(client_id) = &request.client_id {
        let _ = is_client_id(client_id);
    }
    explain(&presented_credentials(None, &request).map(|p| p.client_id().to_owned()));
});
