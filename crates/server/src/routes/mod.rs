//! The router: which path goes to which handler, behind which checks.
//!
//! Routes are registered from their `#[utoipa::path]` declarations
//! (`utoipa_axum::routes!`), so the OpenAPI document is built from the very
//! table that routes requests.

mod agent_protocol;
mod agents;
mod health;
mod jobs;
mod runs;

use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use ganger_api::code;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AppState;

/// The routes behind a user's token, the agent protocol (behind an agent's
/// token), then the public ones. Built without state so the document can
/// be produced without an engine.
fn table() -> (
    OpenApiRouter<AppState>,
    OpenApiRouter<AppState>,
    OpenApiRouter<AppState>,
) {
    let secured = OpenApiRouter::new()
        .routes(routes!(jobs::apply, jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::graph))
        .routes(routes!(runs::submit, runs::list))
        .routes(routes!(runs::get))
        .routes(routes!(runs::cancel))
        .routes(routes!(runs::retry))
        .routes(routes!(runs::logs))
        .routes(routes!(agents::list));
    let agent = OpenApiRouter::new()
        .routes(routes!(agent_protocol::register))
        .routes(routes!(agent_protocol::claim))
        .routes(routes!(agent_protocol::heartbeat))
        .routes(routes!(agent_protocol::started))
        .routes(routes!(agent_protocol::progress))
        .routes(routes!(agent_protocol::logs))
        .routes(routes!(agent_protocol::result))
        .routes(routes!(agent_protocol::deregister));
    let public = OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::openapi_json));
    (secured, agent, public)
}

/// The OpenAPI document (computed once).
pub(crate) fn openapi() -> OpenApi {
    document().clone()
}

fn document() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let (secured, agent, public) = table();
        let (_, doc) = secured.merge(agent).merge(public).split_for_parts();
        crate::api_doc::finish(doc)
    })
}

/// The document as served, serialized once.
pub(crate) fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| match document().to_json() {
        Ok(json) => json,
        Err(e) => {
            crate::error::log_internal(&e);
            r#"{"error":{"code":"internal","message":"the OpenAPI document could not be encoded"}}"#
                .to_owned()
        }
    })
}

pub(crate) fn build(state: AppState) -> Router {
    let (secured, agent, public) = table();
    let secured = secured.route_layer(middleware::from_fn_with_state(
        state.clone(),
        crate::auth::require_token,
    ));
    let agent = agent.route_layer(middleware::from_fn_with_state(
        state.clone(),
        crate::auth::require_agent_token,
    ));
    let (router, _) = secured.merge(agent).merge(public).split_for_parts();
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(crate::BODY_LIMIT))
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route for {method} {}; the API lives under /api/v1, and /api/openapi.json lists every route",
        uri.path()
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        code::INVALID_REQUEST,
        format!(
            "{} does not accept {method} (the Allow header lists what it does accept; /api/openapi.json describes every route)",
            uri.path()
        ),
    )
}

/// The guarantee behind "every error is JSON": an error answer that did not
/// come from [`ApiError`] (a layer's own rejection, a default of axum) is
/// rewritten into the same shape, keeping its status, headers and words.
async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Such bodies are short texts; anything longer is not worth quoting.
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase()
    } else {
        text
    };
    let mut rewritten = ApiError::new(status, code_for(status), message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewritten
}

fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => code::UNAUTHORIZED,
        StatusCode::FORBIDDEN => code::FORBIDDEN,
        StatusCode::NOT_FOUND => code::NOT_FOUND,
        StatusCode::CONFLICT => code::CONFLICT,
        StatusCode::SERVICE_UNAVAILABLE => code::UNAVAILABLE,
        s if s.is_server_error() => code::INTERNAL,
        _ => code::INVALID_REQUEST,
    }
}

/// A `200 text/plain` answer.
fn plain_text(body: impl Into<Body>, content_type: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body.into(),
    )
        .into_response()
}
