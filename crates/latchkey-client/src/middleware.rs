//! `reqwest-middleware` integration: every request gets `Authorization: Bearer <token>`, and a
//! request the API rejects with `invalid_token` is retried once with a new token.

use http::Extensions;
use http::header::AUTHORIZATION;
use reqwest_middleware::{Middleware, Next};

use crate::cache::ClientCredentials;
use crate::challenge::rejects_token;

/// Adds a bearer token from a [`ClientCredentials`] to each request.
///
/// When the API answers 401 with `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750
/// §3.1), the token is evicted and, if the request body can be replayed (anything but a
/// stream), the request is sent once more with a newly fetched token. The second answer is
/// returned whatever it is. A request that already has an `Authorization` header is sent as
/// it is.
///
/// Add it only to a client that talks to the APIs the token is meant for: every request it
/// sends carries the token.
///
/// ```no_run
/// # async fn example(tokens: latchkey_client::ClientCredentials) -> Result<(), Box<dyn std::error::Error>> {
/// let api = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(latchkey_client::BearerMiddleware::new(tokens))
///     .build();
/// let invoices = api.get("https://api.example.com/invoices").send().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BearerMiddleware {
    tokens: ClientCredentials,
}

impl BearerMiddleware {
    /// Middleware that takes its tokens from `tokens`.
    pub fn new(tokens: ClientCredentials) -> Self {
        BearerMiddleware { tokens }
    }
}

impl BearerMiddleware {
    /// Puts a token on `request` and returns it.
    async fn authorize(
        &self,
        request: &mut reqwest::Request,
    ) -> reqwest_middleware::Result<crate::AccessToken> {
        let token = self
            .tokens
            .token()
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        request
            .headers_mut()
            .insert(AUTHORIZATION, token.authorization());
        // A DPoP-bound token needs a fresh proof for this very request (RFC 9449 §7.1).
        let proof = self
            .tokens
            .dpop_proof(&token, request.method().as_str(), request.url().as_str())
            .map_err(reqwest_middleware::Error::middleware)?;
        if let Some(proof) = proof {
            request.headers_mut().insert("DPoP", proof);
        }
        Ok(token)
    }
}

#[async_trait::async_trait]
impl Middleware for BearerMiddleware {
    async fn handle(
        &self,
        mut request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        if request.headers().contains_key(AUTHORIZATION) {
            return next.run(request, extensions).await;
        }
        let replay = request.try_clone();
        let token = self.authorize(&mut request).await?;
        let response = next.clone().run(request, extensions).await?;
        if !rejects_token(response.status(), response.headers()) {
            return Ok(response);
        }
        self.tokens.invalidate(&token).await;
        let Some(mut again) = replay else {
            return Ok(response);
        };
        self.authorize(&mut again).await?;
        tracing::debug!(url = %again.url(), "retrying once with a new token after invalid_token");
        next.run(again, extensions).await
    }
}
