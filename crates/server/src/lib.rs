//! ganger's HTTP API (DESIGN §5) over an [`Engine`]: routes, bearer-token
//! auth, every error as `{"error": {"code", "message"}}` JSON, streamed
//! logs, and the OpenAPI document at `/api/openapi.json`.
//!
//! This crate translates; it decides nothing. Each handler parses the
//! request, calls one engine method and maps the answer (or the
//! [`ganger_engine::EngineError`]) to a status and a body. Token handling
//! that the CLI shares (generating, hashing, roles) lives in [`token`].
//!
//! ```no_run
//! # async fn demo(engine: ganger_engine::Engine) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7070").await?;
//! ganger_server::serve(listener, engine, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

mod accept;
mod api_doc;
mod auth;
mod error;
mod extract;
mod logs;
mod replica;
mod routes;
mod state;
pub mod token;

use std::future::Future;

use axum::Router;
use ganger_engine::Engine;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use crate::replica::Role;
use crate::replica::Switch;
use crate::state::AppState;

/// The largest request body accepted. A job file is at most 1 MiB; the
/// rest leaves room for JSON escaping when a client wraps one.
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The whole API as a router, for tests (`tower::ServiceExt::oneshot`) and
/// for embedding. Streams it serves (followed logs) end only when their
/// task does; [`serve`] also ends them at shutdown.
pub fn router(engine: Engine) -> Router {
    let (stop, stopping) = watch::channel(false);
    // Nobody will ever signal this router to stop; keeping the sender alive
    // keeps its streams from reading a dropped sender as "stop now".
    routes::build(AppState::new(engine, stopping, Some(stop)))
}

/// The OpenAPI document of every route, as served at `/api/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::openapi()
}

/// Serves the API on `listener` until `shutdown` completes, then stops
/// accepting connections, ends open log streams, and returns once the
/// requests in flight have been answered. The caller shuts the engine down
/// afterwards (or meanwhile) and bounds the wait with its own grace period.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopping) = watch::channel(false);
    let app = routes::build(AppState::new(engine, stopping, None));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Followed logs would otherwise hold their connections open
            // until their tasks end, and graceful shutdown waits for them.
            let _ = stop.send(true);
        })
        .await
}

/// Serves the API as one replica among several on one database: by
/// whatever role `roles` holds at each request (see [`Role`]): the
/// leader's engine answers, a follower forwards to the leader, and an
/// unavailable replica answers 503 with `Retry-After`. Stops like
/// [`serve`].
pub async fn serve_replica(
    listener: TcpListener,
    roles: watch::Receiver<Role>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopping) = watch::channel(false);
    let switch = Switch::new(roles, stopping);
    let app = Router::new().fallback(move |request: axum::extract::Request| {
        let switch = switch.clone();
        async move { switch.handle(request).await }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop.send(true);
        })
        .await
}
