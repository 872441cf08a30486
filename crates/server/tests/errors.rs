//! Every failure answers `{"error": {"code", "message"}}` with a fitting
//! status, whether the engine, an extractor or the router refused.

mod common;

use axum::http::{StatusCode, header};
use common::{Api, error_of};

#[tokio::test]
async fn malformed_json_names_line_and_column() {
    let api = Api::start(0).await;
    let (status, body) = api
        .call_json(
            "POST",
            "/api/v1/runs",
            &api.operator,
            "{\"job\": \"hello\",\n  oops}",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (code, message) = error_of(&body);
    assert_eq!(code, "invalid_request");
    assert!(message.contains("line 2 column"), "{message}");
}

#[tokio::test]
async fn unknown_fields_are_refused_by_name() {
    let api = Api::start(0).await;
    let (status, body) = api
        .call_json(
            "POST",
            "/api/v1/runs",
            &api.operator,
            r#"{"job": "hello", "parms": {}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (code, message) = error_of(&body);
    assert_eq!(code, "invalid_request");
    assert!(message.contains("parms"), "{message}");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let api = Api::start(0).await;
    let (status, body) = api.call_json("GET", "/api/v1/nope", &api.admin, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&body).0, "not_found");

    let (status, body) = api.call_json("GET", "/nope", "", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&body).0, "not_found");

    let response = api
        .send(Api::request("DELETE", "/api/v1/jobs", &api.admin, ""))
        .await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(response.headers().contains_key(header::ALLOW));
    let body: serde_json::Value =
        serde_json::from_str(&common::text(response).await).expect("json");
    assert_eq!(error_of(&body).0, "invalid_request");
}

#[tokio::test]
async fn bad_queries_are_400() {
    let api = Api::start(0).await;
    for uri in [
        "/api/v1/runs?limit=many",
        "/api/v1/runs?limit=0",
        "/api/v1/runs?limit=100000",
        "/api/v1/runs?bogus=1",
        "/api/v1/runs?status=sleeping",
        "/api/v1/runs?cursor=not-a-cursor",
    ] {
        let (status, body) = api.call_json("GET", uri, &api.viewer, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(error_of(&body).0, "invalid_request", "{uri}");
    }
}

#[tokio::test]
async fn invalid_jobs_are_422_with_every_diagnostic() {
    let api = Api::start(0).await;
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/api/v1/jobs")
        .header(header::AUTHORIZATION, format!("Bearer {}", api.operator))
        .header("x-ganger-file", "broken.yml")
        .header(header::CONTENT_TYPE, "application/yaml")
        .body(axum::body::Body::from(
            "jobs:\n  j:\n    tasks:\n      a: { needs: [nope], run: x }\n      b: { bogus: 1 }\n",
        ))
        .expect("request");
    let response = api.send(request).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value =
        serde_json::from_str(&common::text(response).await).expect("json");
    assert_eq!(error_of(&body).0, "invalid_job");
    let details = body["error"]["details"].as_array().expect("details");
    assert!(details.len() >= 2, "{body}");
    assert!(
        details
            .iter()
            .all(|d| d.as_str().is_some_and(|d| d.starts_with("broken.yml:"))),
        "{body}"
    );
}

#[tokio::test]
async fn oversized_bodies_are_413_json() {
    let api = Api::start(0).await;
    let big = "#".repeat(ganger_server::BODY_LIMIT + 1);
    let (status, body) = api
        .call_json("POST", "/api/v1/jobs", &api.operator, &big)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_of(&body).0, "invalid_request");
}

#[tokio::test]
async fn missing_things_are_404() {
    let api = Api::start(0).await;
    for uri in [
        "/api/v1/jobs/nope",
        "/api/v1/jobs/nope/graph",
        "/api/v1/runs/nope",
        "/api/v1/runs/nope/tasks/t/logs",
    ] {
        let (status, body) = api.call_json("GET", uri, &api.viewer, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
        assert_eq!(error_of(&body).0, "not_found", "{uri}");
    }
    let (status, body) = api
        .call_json("POST", "/api/v1/runs/nope/cancel", &api.operator, "")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = api
        .call_json("POST", "/api/v1/runs", &api.operator, r#"{"job": "nope"}"#)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn svg_only_is_406_with_advice() {
    let api = Api::start(0).await;
    api.apply_hello().await;
    let request = axum::http::Request::builder()
        .uri("/api/v1/jobs/hello/graph")
        .header(header::AUTHORIZATION, format!("Bearer {}", api.viewer))
        .header(header::ACCEPT, "image/svg+xml")
        .body(axum::body::Body::empty())
        .expect("request");
    let response = api.send(request).await;
    assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);
    let body: serde_json::Value =
        serde_json::from_str(&common::text(response).await).expect("json");
    let (_, message) = error_of(&body);
    assert!(message.contains("SVG is not supported yet"), "{message}");
}
