//! A `tower::Layer` that adds bearer tokens to requests, for hyper, tonic and any other
//! tower-based HTTP client.

use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::header::AUTHORIZATION;
use tower::{Layer, Service};

use crate::cache::ClientCredentials;
use crate::challenge::{grpc_unauthenticated, rejects_token};

/// The error type of [`BearerService`]: the token fetch's [`Error`](crate::Error) or the inner
/// service's error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Wraps a service so that each request carries `Authorization: Bearer <token>`.
///
/// A 401 answer with `WWW-Authenticate: Bearer error="invalid_token"`, or a gRPC answer whose
/// headers carry `grpc-status: 16` (UNAUTHENTICATED, the trailers-only form that servers and
/// interceptors use to reject a call), evicts the token, so the next request fetches a new
/// one. A status that only arrives in trailers after a streamed body is not seen. Unlike [`BearerMiddleware`](crate::BearerMiddleware), the
/// request itself is not replayed: a tower request body is a stream that may already be
/// consumed. A request that already has an `Authorization` header is passed on unchanged.
///
/// ```
/// use tower::Layer as _;
///
/// // Any tower HTTP client: hyper-util's, a tonic `Channel`, ...
/// fn authenticated<S>(
///     tokens: latchkey_client::ClientCredentials,
///     client: S,
/// ) -> latchkey_client::BearerService<S> {
///     latchkey_client::BearerLayer::new(tokens).layer(client)
/// }
/// ```
#[derive(Debug, Clone)]
pub struct BearerLayer {
    tokens: ClientCredentials,
}

impl BearerLayer {
    /// A layer that takes its tokens from `tokens`.
    pub fn new(tokens: ClientCredentials) -> Self {
        BearerLayer { tokens }
    }
}

impl<S> Layer<S> for BearerLayer {
    type Service = BearerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerService {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// The service [`BearerLayer`] produces.
#[derive(Debug, Clone)]
pub struct BearerService<S> {
    inner: S,
    tokens: ClientCredentials,
}

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for BearerService<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    RequestBody: Send + 'static,
    ResponseBody: Send + 'static,
{
    type Response = http::Response<ResponseBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<RequestBody>) -> Self::Future {
        // The service that was polled ready goes with this request; a clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let tokens = self.tokens.clone();
        Box::pin(async move {
            if request.headers().contains_key(AUTHORIZATION) {
                return inner.call(request).await.map_err(Into::into);
            }
            let token = tokens.token().await?;
            request
                .headers_mut()
                .insert(AUTHORIZATION, token.authorization());
            // A DPoP-bound token needs a proof for this request, whose absolute URI is `htu`.
            if token.token_type() == latchkey_proto::TokenType::DPoP {
                let uri = request.uri();
                if uri.scheme().is_none() || uri.authority().is_none() {
                    return Err("a DPoP-bound token needs requests with an absolute URI".into());
                }
                let url = uri.to_string();
                let method = request.method().as_str().to_owned();
                if let Some(proof) = tokens.dpop_proof(&token, &method, &url)? {
                    request.headers_mut().insert("DPoP", proof);
                }
            }
            let response = inner.call(request).await.map_err(Into::into)?;
            if rejects_token(response.status(), response.headers())
                || grpc_unauthenticated(response.headers())
            {
                tokens.invalidate(&token).await;
            }
            Ok(response)
        })
    }
}
