//! The tower layer that guards a service, and the axum extractor for the caller.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::FromRequestParts;
use axum::response::IntoResponse;
use futures_util::future::BoxFuture;
use http::header::CONTENT_TYPE;
use tower::{Layer, Service};

use crate::caller::Caller;
use crate::guard::Guard;
use crate::rejection::Rejection;

/// Guards a service: requests without a valid token for this resource, or without the
/// required scopes, get the RFC 6750 error and never reach it; the others carry the
/// [`Caller`] in their extensions.
#[derive(Debug, Clone)]
pub struct GuardLayer {
    guard: Guard,
    required: Arc<[String]>,
}

impl Guard {
    /// A layer that lets through requests with a valid token.
    pub fn layer(&self) -> GuardLayer {
        GuardLayer {
            guard: self.clone(),
            required: Arc::from(Vec::new()),
        }
    }

    /// A layer that also requires `scope` (for one route: `route_layer(guard.require_scope(..))`).
    pub fn require_scope(&self, scope: impl Into<String>) -> GuardLayer {
        self.layer().require_scope(scope)
    }
}

impl GuardLayer {
    /// Also requires `scope`; call again for more.
    pub fn require_scope(mut self, scope: impl Into<String>) -> Self {
        let mut required = self.required.to_vec();
        required.push(scope.into());
        self.required = Arc::from(required);
        self
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService {
            inner,
            guard: self.guard.clone(),
            required: Arc::clone(&self.required),
        }
    }
}

/// The service [`GuardLayer`] produces.
#[derive(Debug, Clone)]
pub struct GuardService<S> {
    inner: S,
    guard: Guard,
    required: Arc<[String]>,
}

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for GuardService<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    RequestBody: Send + 'static,
    ResponseBody: Default + Send + 'static,
{
    type Response = http::Response<ResponseBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<RequestBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        let required = Arc::clone(&self.required);
        Box::pin(async move {
            let grpc = request
                .headers()
                .get(CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            // An outer layer of a guard for this same resource has done the work already.
            let known = request
                .extensions()
                .get::<Caller>()
                .filter(|caller| guard.verified(caller))
                .cloned();
            let caller = match known {
                Some(caller) => caller,
                None => match guard
                    .authenticate_request(
                        request.method(),
                        request.headers(),
                        request.uri(),
                        request.extensions(),
                    )
                    .await
                {
                    Ok(caller) => {
                        request.extensions_mut().insert(caller.clone());
                        caller
                    }
                    Err(rejection) => return Ok(rejection.into_response(guard.realm(), grpc)),
                },
            };
            if required.iter().any(|scope| !caller.has_scope(scope)) {
                // RFC 6750 §3.1: name the scope needed.
                let rejection = Rejection::InsufficientScope(required.join(" "));
                return Ok(rejection.into_response(guard.realm(), grpc));
            }
            inner.call(request).await
        })
    }
}

/// The axum extractor: `async fn handler(caller: Caller)`. The route must be behind a
/// [`GuardLayer`]; without one, the request is refused with 500 (a server misconfiguration,
/// never a request let through unauthenticated).
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            tracing::error!("the Caller extractor is used on a route without a GuardLayer");
            http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        })
    }
}
