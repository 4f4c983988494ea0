//! The token endpoint's transport, parameter and client-authentication rules (RFC 6749 §2.3,
//! §3.2, §4.4, §5.2; docs/CONFORMANCE.md, "RFC 6749: client credentials at the token endpoint"
//! and "Request limits and transport") as a table: each row is one request and the exact
//! status, `error` and headers the token endpoint must answer with.

use latchkey_proto::ClientAuthMethod;

use crate::helpers::{TestApp, TestClient, basic, decode_parts, spawn_app};

/// One request and what must come back.
struct Case {
    name: &'static str,
    method: &'static str,
    query: &'static str,
    content_type: Option<&'static str>,
    /// Authorization header templates (zero, one or two).
    auth: Vec<&'static str>,
    body: String,
    status: u16,
    /// `None` for a successful token response.
    error: Option<&'static str>,
    headers: Vec<(&'static str, &'static str)>,
}

/// A POST with a form body and the given Authorization headers, expected to succeed.
fn post(name: &'static str, auth: &[&'static str], body: &str) -> Case {
    Case {
        name,
        method: "POST",
        query: "",
        content_type: Some("application/x-www-form-urlencoded"),
        auth: auth.to_vec(),
        body: body.to_owned(),
        status: 200,
        error: None,
        headers: Vec::new(),
    }
}

impl Case {
    fn fails(mut self, status: u16, error: &'static str) -> Self {
        self.status = status;
        self.error = Some(error);
        self
    }
    fn method(mut self, method: &'static str) -> Self {
        self.method = method;
        self
    }
    fn query(mut self, query: &'static str) -> Self {
        self.query = query;
        self
    }
    fn content_type(mut self, content_type: Option<&'static str>) -> Self {
        self.content_type = content_type;
        self
    }
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }
}

const A: &str = "{A_BASIC}";
const CC: &str = "grant_type=client_credentials";

/// The clients the table refers to by placeholder.
struct Clients {
    a: TestClient,
    post: TestClient,
    no_audience: TestClient,
    no_grant: TestClient,
    disabled: TestClient,
}

impl Clients {
    async fn register(app: &TestApp) -> Self {
        let disabled = app.client(|_| {}).await;
        latchkey_server::service::admin::update_client(
            app.store.as_ref(),
            &app.clock,
            &latchkey_server::model::Actor::Cli("test".into()),
            disabled.id(),
            latchkey_server::model::ClientUpdate {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        Clients {
            a: app.client(|_| {}).await,
            post: app
                .client(|c| c.auth_method = ClientAuthMethod::ClientSecretPost)
                .await,
            no_audience: app.client(|c| c.audience.clear()).await,
            no_grant: app.client(|c| c.grant_types.clear()).await,
            disabled,
        }
    }

    fn fill(&self, template: &str) -> String {
        let a = &self.a;
        let pairs = [
            ("{A_BASIC}", a.basic()),
            ("{A_SECRET}", a.secret.clone()),
            ("{A}", a.id().to_owned()),
            ("{P_BASIC}", self.post.basic()),
            ("{P_SECRET}", self.post.secret.clone()),
            ("{P}", self.post.id().to_owned()),
            ("{N_BASIC}", self.no_audience.basic()),
            ("{G_BASIC}", self.no_grant.basic()),
            ("{D_BASIC}", self.disabled.basic()),
            ("{WRONG_BASIC}", basic(a.id(), "not-the-secret")),
            ("{UNKNOWN_BASIC}", basic("no-such-client", &a.secret)),
            (
                "{ENCODED_BASIC}",
                basic(&percent_encode_all(a.id()), &percent_encode_all(&a.secret)),
            ),
            ("{LONG_BASIC}", basic(&"x".repeat(2000), "secret")),
            ("{EMPTY_USER_BASIC}", basic("", &a.secret)),
            ("{EMPTY_SECRET_BASIC}", basic(a.id(), "")),
        ];
        let mut out = template.to_owned();
        for (placeholder, value) in pairs {
            out = out.replace(placeholder, &value);
        }
        out
    }
}

/// Form-encodes every byte, which RFC 6749 §2.3.1 allows for Basic credentials.
fn percent_encode_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

fn cases() -> Vec<Case> {
    let many_params_small = "a=&".repeat(5000);
    let many_params_large = format!("{CC}&{}", "a=1&".repeat(10_000));
    vec![
        // A. HTTP and transport.
        post("GET is refused", &[A], CC).method("GET").fails(405, "invalid_request").header("allow", "POST"),
        post("PUT is refused", &[A], CC).method("PUT").fails(405, "invalid_request").header("allow", "POST"),
        post("JSON body is refused", &[A], r#"{"grant_type":"client_credentials"}"#)
            .content_type(Some("application/json"))
            .fails(400, "invalid_request"),
        post("no Content-Type is refused", &[A], CC).content_type(None).fails(400, "invalid_request"),
        post("text/plain is refused", &[A], CC).content_type(Some("text/plain")).fails(400, "invalid_request"),
        post("charset parameter is fine", &[A], CC)
            .content_type(Some("application/x-www-form-urlencoded; charset=UTF-8")),
        post("media type is case-insensitive", &[A], CC).content_type(Some("Application/X-WWW-Form-URLEncoded")),
        post("body over 16 KiB is 413", &[A], &format!("{CC}&pad={}", "x".repeat(16 * 1024))).fails(413, "invalid_request"),
        post("10,000 parameters is 413", &[A], &many_params_large).fails(413, "invalid_request"),
        post("5,000 parameters under 16 KiB is 400", &[A], &many_params_small).fails(400, "invalid_request"),
        post("bad escape %zz", &[A], "grant_type=client_credentials&scope=%zz").fails(400, "invalid_request"),
        post("truncated escape %4", &[A], "grant_type=client_credentials&scope=%4").fails(400, "invalid_request"),
        post("non-UTF-8 after decoding", &[A], "grant_type=client_credentials&scope=%FF").fails(400, "invalid_request"),
        post("secret in the query string", &[], "grant_type=client_credentials&client_id={P}")
            .query("?client_secret={P_SECRET}")
            .fails(400, "invalid_request"),
        post("any query string", &[A], CC).query("?grant_type=client_credentials").fails(400, "invalid_request"),
        // B. Parameters.
        post("missing grant_type", &[A], "scope=read").fails(400, "invalid_request"),
        post("empty grant_type counts as missing", &[A], "grant_type=").fails(400, "invalid_request"),
        post("other grant", &[A], "grant_type=password").fails(400, "unsupported_grant_type"),
        post("grant type is case-sensitive", &[A], "grant_type=Client_Credentials").fails(400, "unsupported_grant_type"),
        post("client not registered for the grant", &["{G_BASIC}"], CC).fails(400, "unauthorized_client"),
        post("repeated grant_type, same value", &[A], "grant_type=client_credentials&grant_type=client_credentials")
            .fails(400, "invalid_request"),
        post("repeated scope", &[A], "grant_type=client_credentials&scope=read&scope=read").fails(400, "invalid_request"),
        post("repeated unknown parameter", &[A], "grant_type=client_credentials&x=1&x=1").fails(400, "invalid_request"),
        post("repeated client_id", &[], "grant_type=client_credentials&client_id={P}&client_id={P}&client_secret={P_SECRET}")
            .fails(400, "invalid_request"),
        post("repeated resource is allowed", &[A], "grant_type=client_credentials&resource=https%3A%2F%2Fapi.example.com&resource=https%3A%2F%2Fother.example.com"),
        post("empty scope is omitted", &[A], "grant_type=client_credentials&scope="),
        post("unknown parameters are ignored", &[A], "grant_type=client_credentials&foo=bar"),
        post("allowed scope", &[A], "grant_type=client_credentials&scope=read"),
        post("scope not allowed", &[A], "grant_type=client_credentials&scope=admin").fails(400, "invalid_scope"),
        post("one of two scopes not allowed", &[A], "grant_type=client_credentials&scope=read+admin").fails(400, "invalid_scope"),
        post("scope with a tab", &[A], "grant_type=client_credentials&scope=read%09write").fails(400, "invalid_scope"),
        post("scope with a double space", &[A], "grant_type=client_credentials&scope=read++write").fails(400, "invalid_scope"),
        post("scope with a leading space", &[A], "grant_type=client_credentials&scope=+read").fails(400, "invalid_scope"),
        post("scope with a quote", &[A], "grant_type=client_credentials&scope=re%22ad").fails(400, "invalid_scope"),
        post("scope with a backslash", &[A], "grant_type=client_credentials&scope=re%5Cad").fails(400, "invalid_scope"),
        post("scope with a control character", &[A], "grant_type=client_credentials&scope=re%01ad").fails(400, "invalid_scope"),
        post("64 scope tokens, repeats counted", &[A], &format!("grant_type=client_credentials&scope={}", ["read"; 64].join("+"))),
        post("65 scope tokens", &[A], &format!("grant_type=client_credentials&scope={}", ["read"; 65].join("+")))
            .fails(400, "invalid_scope"),
        post("resource not allowed", &[A], "grant_type=client_credentials&resource=https%3A%2F%2Fevil.example.com")
            .fails(400, "invalid_target"),
        post("resource not absolute", &[A], "grant_type=client_credentials&resource=api.example.com").fails(400, "invalid_target"),
        post("resource with a fragment", &[A], "grant_type=client_credentials&resource=https%3A%2F%2Fapi.example.com%23x")
            .fails(400, "invalid_target"),
        post("no resource and no registered audience", &["{N_BASIC}"], CC).fails(400, "invalid_target"),
        // C. Client authentication with a secret.
        post("no authentication", &[], CC).fails(401, "invalid_client"),
        post("client_id alone", &[], "grant_type=client_credentials&client_id={P}").fails(401, "invalid_client"),
        post("client_secret alone", &[], "grant_type=client_credentials&client_secret={P_SECRET}").fails(401, "invalid_client"),
        post("Basic and a body secret", &[A], "grant_type=client_credentials&client_secret={A_SECRET}").fails(400, "invalid_request"),
        post("Basic and an assertion", &[A], "grant_type=client_credentials&client_assertion=x.y.z&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer")
            .fails(400, "invalid_request"),
        post("Basic user differs from body client_id", &[A], "grant_type=client_credentials&client_id={P}").fails(400, "invalid_request"),
        post("Basic user equals body client_id", &[A], "grant_type=client_credentials&client_id={A}"),
        post("two Authorization headers", &[A, A], CC).fails(400, "invalid_request"),
        post("fully percent-encoded Basic credentials", &["{ENCODED_BASIC}"], CC),
        post("lower-case basic scheme", &["basic {A_BASIC_RAW}"], CC),
        post("Basic with bad base64", &["Basic !!!notbase64"], CC).fails(401, "invalid_client"),
        post("Basic without a colon", &["Basic Zm9vYmFy"], CC).fails(401, "invalid_client"),
        post("Basic with an empty user", &["{EMPTY_USER_BASIC}"], CC).fails(401, "invalid_client"),
        post("Basic with an empty secret", &["{EMPTY_SECRET_BASIC}"], CC).fails(401, "invalid_client"),
        post("Basic with no value", &["Basic"], CC).fails(401, "invalid_client"),
        post("Bearer instead of Basic", &["Bearer abc"], CC).fails(401, "invalid_client"),
        post("wrong secret", &["{WRONG_BASIC}"], CC).fails(401, "invalid_client"),
        post("unknown client", &["{UNKNOWN_BASIC}"], CC).fails(401, "invalid_client"),
        post("disabled client", &["{D_BASIC}"], CC).fails(401, "invalid_client"),
        post("Basic client sends its secret in the body", &[], "grant_type=client_credentials&client_id={A}&client_secret={A_SECRET}")
            .fails(401, "invalid_client"),
        post("post client sends Basic", &["{P_BASIC}"], CC).fails(401, "invalid_client"),
        post("post client sends its secret in the body", &[], "grant_type=client_credentials&client_id={P}&client_secret={P_SECRET}"),
        post("2,000-character client_id", &["{LONG_BASIC}"], CC).fails(401, "invalid_client"),
        post("client_id with NUL", &[], "grant_type=client_credentials&client_id=a%00b&client_secret=x").fails(401, "invalid_client"),
        post("client_id with control characters", &[], "grant_type=client_credentials&client_id=a%0D%0Ab&client_secret=x")
            .fails(401, "invalid_client"),
    ]
}

#[tokio::test]
async fn token_endpoint_answers_every_checklist_case_exactly() {
    let app = spawn_app().await;
    let clients = Clients::register(&app).await;
    let mut failures = Vec::new();
    for case in cases() {
        let url = format!("{}{}", app.token_url(), clients.fill(case.query));
        let mut request = app
            .http
            .request(case.method.parse().unwrap(), url)
            .body(clients.fill(&case.body));
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        for auth in &case.auth {
            let raw = clients.a.basic().trim_start_matches("Basic ").to_owned();
            request = request.header(
                "authorization",
                clients.fill(&auth.replace("{A_BASIC_RAW}", &raw)),
            );
        }
        let response = request.send().await.unwrap();
        if let Err(problem) = check(&case, response).await {
            failures.push(format!("{}: {problem}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

async fn check(case: &Case, response: reqwest::Response) -> Result<(), String> {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let body = response.text().await.unwrap();
    if status != case.status {
        return Err(format!(
            "status {status}, expected {}; body {body}",
            case.status
        ));
    }
    // Conventions for every answer of an OAuth endpoint.
    if header("content-type") != "application/json" {
        return Err(format!("content-type {:?}", header("content-type")));
    }
    if header("cache-control") != "no-store" || header("pragma") != "no-cache" {
        return Err("missing Cache-Control: no-store / Pragma: no-cache".into());
    }
    let json: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("body is not JSON ({e}): {body}"))?;
    match case.error {
        Some(error) => {
            if json["error"] != error {
                return Err(format!("error {}, expected {error}", json["error"]));
            }
            if !json["error_description"].is_string() {
                return Err("no error_description".into());
            }
            if status == 401 && header("www-authenticate") != "Basic realm=\"latchkey\"" {
                return Err(format!(
                    "401 without the Basic challenge: {:?}",
                    header("www-authenticate")
                ));
            }
            let text = body.to_lowercase();
            if text.contains("sqlite") || text.contains("database") || text.contains("sql") {
                return Err(format!("error body leaks storage details: {body}"));
            }
        }
        None => {
            if json["token_type"] != "Bearer" || !json["access_token"].is_string() {
                return Err(format!("not a token response: {body}"));
            }
        }
    }
    for (name, value) in &case.headers {
        if header(name) != *value {
            return Err(format!(
                "header {name} is {:?}, expected {value:?}",
                header(name)
            ));
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_invalid_client_failure_has_the_same_body() {
    let app = spawn_app().await;
    let clients = Clients::register(&app).await;
    let mut bodies = Vec::new();
    for auth in ["{WRONG_BASIC}", "{UNKNOWN_BASIC}", "{D_BASIC}", "{P_BASIC}"] {
        let response = app
            .http
            .post(app.token_url())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", clients.fill(auth))
            .body(CC)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        bodies.push(response.text().await.unwrap());
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "bodies differ: {bodies:?}"
    );
}

#[tokio::test]
async fn default_and_requested_scope_and_audience_reach_the_token() {
    let app = spawn_app().await;
    let client = app.client(|_| {}).await;

    let all: serde_json::Value = app.token_basic(&client, CC).await.json().await.unwrap();
    assert_eq!(all["scope"], "read write");
    let (_, claims) = decode_parts(all["access_token"].as_str().unwrap());
    assert_eq!(claims["scope"], "read write");
    assert_eq!(
        claims["aud"],
        serde_json::json!(["https://api.example.com", "https://other.example.com"])
    );

    let one: serde_json::Value = app
        .token_basic(&client, "grant_type=client_credentials&scope=write+read+write&resource=https%3A%2F%2Fother.example.com")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["scope"], "write read", "requested order, repeats once");
    let (_, claims) = decode_parts(one["access_token"].as_str().unwrap());
    assert_eq!(
        claims["aud"], "https://other.example.com",
        "one audience is a string"
    );

    let both: serde_json::Value = app
        .token_basic(&client, "grant_type=client_credentials&resource=https%3A%2F%2Fapi.example.com&resource=https%3A%2F%2Fother.example.com")
        .await
        .json()
        .await
        .unwrap();
    let (_, claims) = decode_parts(both["access_token"].as_str().unwrap());
    assert_eq!(
        claims["aud"],
        serde_json::json!(["https://api.example.com", "https://other.example.com"])
    );
}

#[tokio::test]
async fn storage_failure_is_503_never_401() {
    let app = spawn_app().await;
    let client = app.client(|_| {}).await;
    let other = app.client(|_| {}).await;
    assert_eq!(app.token_basic(&client, CC).await.status(), 200);
    // Break the schema underneath the running server, through a connection of our own: the
    // cache poll and every client read now fail.
    let pool = sqlx::SqlitePool::connect(&app.database_url).await.unwrap();
    sqlx::query("ALTER TABLE clients RENAME TO clients_gone")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE generation RENAME TO generation_gone")
        .execute(&pool)
        .await
        .unwrap();
    // Until the snapshot is stale, known clients are served from memory; after, it fails closed.
    app.clock.advance(60);
    for client in [&client, &other] {
        let response = app.token_basic(client, CC).await;
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body = response.text().await.unwrap();
        assert!(
            !body.contains("clients"),
            "no storage detail in the body: {body}"
        );
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], "temporarily_unavailable");
    }
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "the schema version is intact, only tables are gone"
    );
}

#[tokio::test]
async fn a_rotated_out_secret_works_in_its_overlap_window_and_fails_after() {
    let app = spawn_app().await;
    let old = app.client(|_| {}).await;
    let rotated = latchkey_server::service::admin::rotate_secret(
        app.store.as_ref(),
        &app.clock,
        &latchkey_server::model::Actor::Cli("test".into()),
        old.id(),
        3600,
    )
    .await
    .unwrap();
    assert!(rotated.unconfirmed_servers.is_empty());
    let new = TestClient {
        record: old.record.clone(),
        secret: rotated.value.1.expose().to_owned(),
    };
    let wrong = TestClient {
        record: old.record.clone(),
        secret: "wrong".into(),
    };
    assert_eq!(app.token_basic(&old, CC).await.status(), 200);
    assert_eq!(app.token_basic(&new, CC).await.status(), 200);

    app.clock.advance(3599);
    assert_eq!(
        app.token_basic(&old, CC).await.status(),
        200,
        "inside the overlap"
    );

    app.clock.advance(1);
    let expired = app.token_basic(&old, CC).await;
    assert_eq!(expired.status(), 401, "after the overlap");
    let wrong_body = app.token_basic(&wrong, CC).await.text().await.unwrap();
    assert_eq!(
        expired.text().await.unwrap(),
        wrong_body,
        "an expired secret fails exactly like a wrong one"
    );
    assert_eq!(app.token_basic(&new, CC).await.status(), 200);

    // At most five live secrets.
    for _ in 0..4 {
        latchkey_server::service::admin::rotate_secret(
            app.store.as_ref(),
            &app.clock,
            &latchkey_server::model::Actor::Cli("test".into()),
            old.id(),
            3600,
        )
        .await
        .unwrap();
    }
    let sixth = latchkey_server::service::admin::rotate_secret(
        app.store.as_ref(),
        &app.clock,
        &latchkey_server::model::Actor::Cli("test".into()),
        old.id(),
        3600,
    )
    .await;
    assert!(
        matches!(
            sixth,
            Err(latchkey_server::service::admin::AdminError::Invalid(_))
        ),
        "{sixth:?}"
    );
}
