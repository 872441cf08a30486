//! Runs through the API with the in-process agent: submit, watch, logs,
//! cancel, retry; and `serve` on a real socket.

mod common;

use std::time::Duration;

use axum::http::{StatusCode, header};
use common::{Api, error_of};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn wait_finished(api: &Api, id: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, run) = api
            .call_json("GET", &format!("/api/v1/runs/{id}"), &api.viewer, "")
            .await;
        assert_eq!(status, StatusCode::OK, "{run}");
        if matches!(
            run["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            return run;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn submit_run_and_read_its_log() {
    let api = Api::start(2).await;
    api.apply_hello().await;

    let (status, submitted) = api
        .call_json(
            "POST",
            "/api/v1/runs",
            &api.operator,
            r#"{"job": "hello", "idempotency_key": "k1"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{submitted}");
    let id = submitted["id"].as_str().expect("id").to_owned();

    // The same key again returns the same run and creates nothing.
    let (status, again) = api
        .call_json(
            "POST",
            "/api/v1/runs",
            &api.operator,
            r#"{"job": "hello", "idempotency_key": "k1"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["existing"], true);

    let run = wait_finished(&api, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");

    let (status, log) = api
        .call(
            "GET",
            &format!("/api/v1/runs/{id}/tasks/greet/logs"),
            &api.viewer,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(log.contains(" out hello\n"), "{log:?}");

    let request = axum::http::Request::builder()
        .uri(format!("/api/v1/runs/{id}/tasks/greet/logs?follow=true"))
        .header(header::AUTHORIZATION, format!("Bearer {}", api.viewer))
        .header(header::ACCEPT, "text/event-stream")
        .body(axum::body::Body::empty())
        .expect("request");
    let response = api.send(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let events = tokio::time::timeout(Duration::from_secs(10), common::text(response))
        .await
        .expect("a followed log of a finished task ends");
    assert!(events.contains("event: line\ndata: "), "{events}");
    assert!(events.contains(" out hello\n"), "{events}");
    assert!(
        events.ends_with("event: end\ndata: succeeded\n\n"),
        "{events}"
    );

    let (status, list) = api
        .call_json(
            "GET",
            "/api/v1/runs?job=hello&status=succeeded&limit=10",
            &api.viewer,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["runs"][0]["id"], id.as_str(), "{list}");

    // A finished run cannot be cancelled.
    let (status, body) = api
        .call_json(
            "POST",
            &format!("/api/v1/runs/{id}/cancel"),
            &api.operator,
            "",
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_of(&body).0, "conflict");
}

#[tokio::test]
async fn graph_is_dot() {
    let api = Api::start(0).await;
    api.apply_hello().await;
    let response = api
        .send(Api::request(
            "GET",
            "/api/v1/jobs/hello/graph",
            &api.viewer,
            "",
        ))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/vnd.graphviz")
    );
    let dot = common::text(response).await;
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(dot.contains(r#""greet" -> "after""#), "{dot}");
}

#[tokio::test]
async fn invalid_params_are_422() {
    let api = Api::start(0).await;
    let (status, body) = api
        .call_json(
            "POST",
            "/api/v1/runs",
            &api.operator,
            r#"{"job": "hello", "params": {"nope": "1"}}"#,
        )
        .await;
    // The job does not exist yet: 404 first.
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    api.apply_hello().await;
    let (status, body) = api
        .call_json(
            "POST",
            "/api/v1/runs",
            &api.operator,
            r#"{"job": "hello", "params": {"nope": "1"}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_of(&body).0, "invalid_params");
}

/// One HTTP/1.1 request on a fresh connection; the whole answer.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
}

#[tokio::test]
async fn serve_answers_and_stops_on_shutdown() {
    let api = Api::start(0).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ganger_server::serve(listener, api.engine.clone(), async {
        let _ = stopped.await;
    }));

    let answer = raw_get(addr, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    stop.send(()).expect("server alive");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returns after shutdown")
        .expect("server task")
        .expect("serve succeeded");
}
