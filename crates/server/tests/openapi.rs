//! The OpenAPI document describes every route, and every route it
//! describes exists.

mod common;

use axum::http::StatusCode;
use common::Api;

/// Every route of DESIGN §5 built so far.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/jobs"),
    ("get", "/api/v1/jobs"),
    ("get", "/api/v1/jobs/{name}"),
    ("get", "/api/v1/jobs/{name}/graph"),
    ("post", "/api/v1/runs"),
    ("get", "/api/v1/runs"),
    ("get", "/api/v1/runs/{id}"),
    ("post", "/api/v1/runs/{id}/cancel"),
    ("post", "/api/v1/runs/{id}/retry"),
    ("get", "/api/v1/runs/{id}/tasks/{task}/logs"),
    ("get", "/api/v1/agents"),
    ("post", "/api/v1/agent/register"),
    ("post", "/api/v1/agent/claim"),
    ("post", "/api/v1/agent/heartbeat"),
    ("post", "/api/v1/agent/started"),
    ("post", "/api/v1/agent/progress"),
    ("post", "/api/v1/agent/logs"),
    ("post", "/api/v1/agent/result"),
    ("post", "/api/v1/agent/deregister"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/api/openapi.json"),
];

fn document() -> serde_json::Value {
    let json = ganger_server::openapi()
        .to_json()
        .expect("document encodes");
    serde_json::from_str(&json).expect("document is JSON")
}

#[test]
fn every_route_is_documented_with_its_answers() {
    let doc = document();
    for (method, path) in ROUTES {
        let op = &doc["paths"][path][method];
        assert!(
            op.is_object(),
            "{method} {path} is missing from the document"
        );
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path} documents no success"
        );
        assert!(responses.contains_key("500"), "{method} {path}: no 500");
        if path.starts_with("/api/v1/") {
            assert!(op["security"].is_array(), "{method} {path}: no security");
            assert!(responses.contains_key("401"), "{method} {path}: no 401");
            assert!(responses.contains_key("403"), "{method} {path}: no 403");
        }
    }
    let documented: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| item.as_object().map_or(0, |ops| ops.len()))
        .sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "routes documented but not listed here"
    );
}

#[test]
fn operation_ids_are_unique() {
    let doc = document();
    let mut ids: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().expect("operations").values())
        .map(|op| op["operationId"].as_str().expect("operationId"))
        .collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total, "duplicate operation ids: {ids:?}");
}

#[test]
fn schemas_and_the_bearer_scheme_are_present() {
    let doc = document();
    for schema in [
        "ErrorBody",
        "ErrorDetail",
        "ApplyResponse",
        "JobList",
        "JobDetail",
        "SubmitRequest",
        "SubmitResponse",
        "RunList",
        "RunDetail",
        "RunSummary",
        "AgentList",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema} is missing"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

/// Every documented path answers on the router: without a token, a
/// secured route says 401, never 404 or 405.
#[tokio::test]
async fn every_documented_route_is_served() {
    let api = Api::start(0).await;
    let doc = document();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let uri = path
            .replace("{name}", "hello")
            .replace("{id}", "r1")
            .replace("{task}", "greet");
        for method in item.as_object().expect("operations").keys() {
            let (status, body) = api.call(&method.to_uppercase(), &uri, "", "").await;
            assert!(
                status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {uri}: {status} {body}"
            );
            if path.starts_with("/api/v1/") {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
            }
        }
    }
}
