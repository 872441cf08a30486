//! Who may do what: tokens, roles, and the public routes.

mod common;

use axum::http::{StatusCode, header};
use common::{Api, error_of};

#[tokio::test]
async fn no_token_is_401_with_how_to_get_one() {
    let api = Api::start(0).await;
    let response = api.send(Api::request("GET", "/api/v1/jobs", "", "")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .expect("ascii");
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let body: serde_json::Value =
        serde_json::from_str(&common::text(response).await).expect("json");
    let (code, message) = error_of(&body);
    assert_eq!(code, "unauthorized");
    assert!(message.contains("Authorization: Bearer"), "{message}");
    assert!(message.contains("admin.token"), "{message}");
}

#[tokio::test]
async fn unknown_and_malformed_tokens_are_401() {
    let api = Api::start(0).await;
    let (status, body) = api
        .call_json("GET", "/api/v1/runs", "not-a-token", "")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(&body).0, "unauthorized");

    let request = axum::http::Request::builder()
        .uri("/api/v1/runs")
        .header(header::AUTHORIZATION, format!("Basic {}", api.admin))
        .body(axum::body::Body::empty())
        .expect("request");
    let response = api.send(request).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn viewer_reads_but_may_not_write() {
    let api = Api::start(0).await;
    let (status, _) = api.call_json("GET", "/api/v1/jobs", &api.viewer, "").await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = api
        .call_json("POST", "/api/v1/jobs", &api.viewer, common::HELLO)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (code, message) = error_of(&body);
    assert_eq!(code, "forbidden");
    assert!(message.contains("viewer"), "{message}");

    // Nothing was stored.
    let (_, jobs) = api.call_json("GET", "/api/v1/jobs", &api.viewer, "").await;
    assert_eq!(jobs["jobs"], serde_json::json!([]));
}

#[tokio::test]
async fn agent_tokens_may_not_use_the_client_api() {
    let api = Api::start(0).await;
    for (method, uri) in [
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/runs"),
        ("POST", "/api/v1/jobs"),
    ] {
        let (status, body) = api.call_json(method, uri, &api.agent, common::HELLO).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}: {body}");
        assert_eq!(error_of(&body).0, "forbidden");
    }
}

#[tokio::test]
async fn operator_and_admin_may_write() {
    let api = Api::start(0).await;
    let (status, body) = api
        .call_json("POST", "/api/v1/jobs", &api.operator, common::HELLO)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The same definition again creates nothing.
    let (status, body) = api
        .call_json("POST", "/api/v1/jobs", &api.admin, common::HELLO)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["jobs"][0]["created"], false);
}

#[tokio::test]
async fn health_and_the_document_need_no_token() {
    let api = Api::start(0).await;
    assert_eq!(api.call("GET", "/healthz", "", "").await.0, StatusCode::OK);
    assert_eq!(api.call("GET", "/readyz", "", "").await.0, StatusCode::OK);
    let (status, doc) = api.call_json("GET", "/api/openapi.json", "", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"].is_object(), "{doc}");
}
