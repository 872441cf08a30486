//! A real engine on a temporary SQLite file, its router, and tokens of
//! every role, for driving the API in-process (`oneshot`, no socket).

#![allow(dead_code)] // Each test file uses its own part of these helpers.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use ganger_engine::{Engine, EngineConfig};
use ganger_server::token::{self, Role};
use ganger_store::{SqliteStore, Store, TokenRow};
use tower::ServiceExt;

pub struct Api {
    pub router: Router,
    pub engine: Engine,
    pub admin: String,
    pub operator: String,
    pub viewer: String,
    pub agent: String,
    _dir: tempfile::TempDir,
}

pub const HELLO: &str = r#"
jobs:
  hello:
    tasks:
      greet: { run: echo hello }
      after: { needs: [greet], run: echo after }
      broken: { needs: { greet: failure }, run: echo broken }
"#;

impl Api {
    /// `slots`: the in-process agent's slots (0: no agent, nothing runs).
    pub async fn start(slots: u32) -> Api {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path().join("ganger.db"))
            .await
            .expect("open store");
        let store: Arc<dyn Store> = Arc::new(store);
        let mut tokens = Vec::new();
        for role in Role::ALL {
            let secret = token::generate().expect("random token");
            store
                .put_token(TokenRow {
                    hash: token::hash(&secret),
                    role: role.as_str().to_owned(),
                    name: format!("test-{role}"),
                    created_at: 0,
                })
                .await
                .expect("store token");
            tokens.push(secret);
        }
        let config = EngineConfig {
            data_dir: dir.path().to_owned(),
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            kill_grace: Duration::from_secs(5),
            log_cap: Some(1 << 20),
            local_slots: (slots > 0).then_some(slots),
            base_env: std::env::vars().collect(),
            docker: None,
            fence: None,
        };
        let engine = Engine::open(store, config).await.expect("engine opens");
        let [admin, operator, viewer, agent] = <[String; 4]>::try_from(tokens).expect("4 roles");
        Api {
            router: ganger_server::router(engine.clone()),
            engine,
            admin,
            operator,
            viewer,
            agent,
            _dir: dir,
        }
    }

    pub async fn send(&self, request: Request<Body>) -> Response<Body> {
        self.router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible")
    }

    /// A request with `token` as bearer (none when empty).
    pub fn request(method: &str, uri: &str, token: &str, body: impl Into<Body>) -> Request<Body> {
        let mut builder = Request::builder().method(method).uri(uri);
        if !token.is_empty() {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        builder.body(body.into()).expect("valid request")
    }

    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        token: &str,
        body: &str,
    ) -> (StatusCode, String) {
        let response = self
            .send(Self::request(method, uri, token, body.to_owned()))
            .await;
        let status = response.status();
        (status, text(response).await)
    }

    pub async fn call_json(
        &self,
        method: &str,
        uri: &str,
        token: &str,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let (status, text) = self.call(method, uri, token, body).await;
        let json = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{method} {uri}: {status} answer is not JSON ({e}): {text}")
        });
        (status, json)
    }

    /// Uploads [`HELLO`] as the operator.
    pub async fn apply_hello(&self) {
        let (status, body) = self
            .call("POST", "/api/v1/jobs", &self.operator, HELLO)
            .await;
        assert!(status.is_success(), "{status}: {body}");
    }
}

pub async fn text(response: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    String::from_utf8(bytes.to_vec()).expect("utf-8 body")
}

/// Asserts the JSON error shape and returns (code, message).
pub fn error_of(body: &serde_json::Value) -> (String, String) {
    let error = &body["error"];
    let code = error["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code in {body}"));
    let message = error["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.message in {body}"));
    assert!(!message.is_empty(), "empty message in {body}");
    (code.to_owned(), message.to_owned())
}
