//! A gRPC service (tonic's standard health service) guarded by the same layer: calls without
//! a token, with the wrong scope, and with a good token (sent by latchkey-client's tower
//! layer over a tonic channel), and the gRPC status each gets.

use latchkey_client::{BearerLayer, ClientCredentials};
use tonic::Code;
use tonic::transport::{Channel, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::Layer as _;

use crate::helpers::{API, Stack, spawn_stack};

/// Serves the health service behind `layer` and returns its URL.
async fn serve_health(layer: latchkey_guard::GuardLayer) -> String {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        Server::builder()
            .layer(layer)
            .add_service(health)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    url
}

async fn tokens(stack: &Stack, scope: &str) -> ClientCredentials {
    ClientCredentials::builder()
        .issuer(&stack.issuer)
        .client_id(&stack.client_id)
        .client_secret(stack.secret())
        .scope(scope)
        .audience(API)
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_guarded_grpc_service_rejects_and_accepts_with_the_right_status() {
    let stack = spawn_stack().await;
    let url = serve_health(stack.guard.require_scope("read")).await;
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let check = || {
        tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        })
    };

    // No token: UNAUTHENTICATED.
    let status = HealthClient::new(channel.clone())
        .check(check())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // A token without the scope: PERMISSION_DENIED.
    let admin_only = BearerLayer::new(tokens(&stack, "admin").await).layer(channel.clone());
    let status = HealthClient::new(admin_only)
        .check(check())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // A good token: the service answers.
    let reader = BearerLayer::new(tokens(&stack, "read").await).layer(channel);
    let response = HealthClient::new(reader).check(check()).await.unwrap();
    assert_eq!(response.into_inner().status, ServingStatus::Serving as i32);
}
