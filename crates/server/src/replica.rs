//! Serving as one replica among several on one database.
//!
//! Exactly one replica leads: its engine owns the live runs and answers
//! the API. Every other replica forwards each request, unchanged and
//! streamed both ways, to the leader's address, so agents and clients may
//! talk to any replica. While no replica can lead (the database is
//! unreachable, or a leader died and its lease has not run out yet), every
//! request is answered `503` with `Retry-After`, and clients with several
//! server URLs try the next one.
//!
//! The owner of the process (`ganger server`) decides the role from the
//! leader lease and changes it through a `watch` channel; this module only
//! routes by it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use ganger_api::code;
use ganger_engine::Engine;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::error::{ApiError, chain};
use crate::routes;
use crate::state::AppState;

/// What this replica does with a request.
#[derive(Clone)]
pub enum Role {
    /// It leads: its engine answers.
    Leader(Engine),
    /// Another replica leads, at this base URL (`http://host:port`).
    Follower { leader: String },
    /// Nobody can answer now; `reason` says why, for the 503.
    Unavailable { reason: String },
}

/// Marks a request a replica forwarded: a replica that does not lead
/// either answers 503 rather than forwarding it again, so two replicas
/// that each believe the other leads cannot bounce a request forever.
const FORWARDED: HeaderName = HeaderName::from_static("x-ganger-forwarded");

/// How long forwarding waits to connect to the leader; answers themselves
/// are not bounded (claims long-poll, logs follow).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Routes each request by the current role.
#[derive(Clone)]
pub(crate) struct Switch {
    roles: watch::Receiver<Role>,
    /// The router of the current leading term, built once per engine.
    term: Arc<Mutex<Option<Term>>>,
    stopping: watch::Receiver<bool>,
    http: reqwest::Client,
}

struct Term {
    engine: Engine,
    router: Router,
    /// Ends this term's log streams when it ends (or the server stops).
    stop: watch::Sender<bool>,
}

impl Switch {
    pub(crate) fn new(roles: watch::Receiver<Role>, stopping: watch::Receiver<bool>) -> Switch {
        let http = reqwest::Client::builder()
            // Replicas reach each other directly, never through a proxy
            // named in the environment.
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .unwrap_or_default();
        Switch {
            roles,
            term: Arc::new(Mutex::new(None)),
            stopping,
            http,
        }
    }

    pub(crate) async fn handle(self, request: Request) -> Response {
        let role = self.roles.borrow().clone();
        match role {
            Role::Leader(engine) => {
                let router = self.router_for(engine);
                match router.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }
            Role::Follower { leader } => self.forward(&leader, request).await,
            Role::Unavailable { reason } => local_or_unavailable(&request, &reason),
        }
    }

    /// The router of `engine`'s term; a new engine (this replica leads
    /// again, or reopened its engine) ends the previous term's streams.
    fn router_for(&self, engine: Engine) -> Router {
        let mut term = match self.term.lock() {
            Ok(term) => term,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(t) = term.as_ref()
            && t.engine.same(&engine)
        {
            return t.router.clone();
        }
        if let Some(old) = term.take() {
            old.stop.send_replace(true);
        }
        let (stop, stopping) = watch::channel(*self.stopping.borrow());
        let mut server_stopping = self.stopping.clone();
        let term_stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = server_stopping.wait_for(|s| *s) => { term_stop.send_replace(true); }
                _ = term_stop.closed() => {}
            }
        });
        let router = routes::build(AppState::new(engine.clone(), stopping, None));
        *term = Some(Term {
            engine,
            router: router.clone(),
            stop,
        });
        router
    }

    /// Sends `request` to the leader and streams its answer back.
    async fn forward(&self, leader: &str, request: Request) -> Response {
        if request.headers().contains_key(&FORWARDED) {
            return unavailable(
                "this replica does not lead and was sent a forwarded request: the replicas are changing leader; retry in a moment",
            );
        }
        if is_probe(&request) {
            return local_or_unavailable(&request, "");
        }
        let (parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let url = format!("{leader}{path}");
        let mut outgoing = self.http.request(parts.method, &url);
        for (name, value) in &parts.headers {
            if !is_hop_by_hop(name) && name != header::HOST {
                outgoing = outgoing.header(name, value);
            }
        }
        let body = reqwest::Body::wrap_stream(body.into_data_stream());
        let answer = match outgoing.header(FORWARDED, "1").body(body).send().await {
            Ok(answer) => answer,
            // No connection: the leader surely did nothing, so 503 (retry
            // anywhere). Broken off later, it may have acted: 502, which
            // clients retry only when that is safe.
            Err(e) if e.is_connect() => {
                return unavailable(format!(
                    "cannot reach the leading replica at {leader}: {}; retry in a moment (another replica takes over when its lease runs out)",
                    chain(&e)
                ));
            }
            Err(e) => {
                return ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    code::UNAVAILABLE,
                    format!(
                        "the leading replica at {leader} did not answer: {}; the request may or may not have been carried out",
                        chain(&e)
                    ),
                )
                .into_response();
            }
        };
        let mut response = Response::builder().status(answer.status());
        for (name, value) in answer.headers() {
            if !is_hop_by_hop(name) {
                response = response.header(name, value);
            }
        }
        let stream = answer.bytes_stream().map_err(std::io::Error::other);
        response
            .body(Body::from_stream(stream))
            .unwrap_or_else(|e| unavailable(format!("cannot pass on the leader's answer: {e}")))
    }
}

/// Liveness is this process's own; readiness says whether it can serve.
fn is_probe(request: &Request) -> bool {
    matches!(request.uri().path(), "/healthz" | "/readyz")
}

fn local_or_unavailable(request: &Request, reason: &str) -> Response {
    match request.uri().path() {
        "/healthz" => (StatusCode::OK, "ok\n").into_response(),
        "/readyz" if reason.is_empty() => (StatusCode::OK, "ready\n").into_response(),
        "/readyz" => unavailable(format!("not ready: {reason}")),
        _ => unavailable(reason.to_owned()),
    }
}

fn unavailable(message: impl Into<String>) -> Response {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE, message).into_response()
}

/// Headers that belong to one connection, not to the request.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}
