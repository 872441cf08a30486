//! The server's HTTP API called directly from tests.

use std::collections::BTreeMap;

use serde_json::Value;

use super::server::Server;

/// The server's HTTP API called directly, with whatever token (or none)
/// and body a test wants, malformed ones included.
pub struct Http {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    /// The server's admin token.
    pub admin: String,
}

impl Http {
    pub fn new(server: &Server) -> Http {
        let admin = std::fs::read_to_string(server.tmp.path().join("data/admin.token"))
            .expect("admin token");
        Http {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            http: reqwest::Client::new(),
            base: server.addr.clone(),
            admin: admin.trim().to_owned(),
        }
    }

    pub fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        self.rt.block_on(async {
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            let text = resp.text().await.expect("body");
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            (status, body)
        })
    }

    /// `auth` is the whole Authorization header, or none.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        self.send(req)
    }

    pub fn post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        self.request(
            reqwest::Method::POST,
            path,
            Some(&auth),
            Some(&body.to_string()),
        )
    }

    pub fn post_raw(&self, path: &str, token: &str, body: &str) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        self.request(reqwest::Method::POST, path, Some(&auth), Some(body))
    }

    /// A body of another type than JSON (`application/yaml`, say).
    pub fn post_as(&self, path: &str, token: &str, content_type: &str, body: &str) -> (u16, Value) {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body.to_owned());
        self.send(req)
    }

    pub fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        self.request(reqwest::Method::GET, path, Some(&auth), None)
    }

    /// What the API says about every run and about each one: to compare
    /// before and after messages that must change nothing.
    pub fn snapshot(&self) -> (Value, BTreeMap<String, Value>) {
        let (status, list) = self.get("/api/v1/runs?limit=1000", &self.admin);
        assert_eq!(status, 200, "{list}");
        let mut runs = BTreeMap::new();
        for run in list["runs"].as_array().expect("runs") {
            let id = run["id"].as_str().expect("id");
            let (status, detail) = self.get(&format!("/api/v1/runs/{id}"), &self.admin);
            assert_eq!(status, 200, "{detail}");
            runs.insert(id.to_owned(), detail);
        }
        (list, runs)
    }
}
