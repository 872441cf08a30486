//! Public routes: liveness, readiness and the OpenAPI document. None holds
//! data, so none needs a token (load balancers and probes have none).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use ganger_api::ErrorBody;

use super::plain_text;
use crate::error::ApiError;
use crate::state::AppState;

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    responses((status = 200, description = "Alive.", body = String, content_type = "text/plain")),
)]
pub(crate) async fn healthz() -> Response {
    plain_text("ok\n", "text/plain; charset=utf-8")
}

/// Readiness: the store answers, so requests can be served.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready.", body = String, content_type = "text/plain"),
        (status = 503, description = "The store does not answer.", body = ErrorBody),
    ),
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    if state.engine.ready().await {
        Ok(plain_text("ready\n", "text/plain; charset=utf-8"))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ganger_api::code::UNAVAILABLE,
            "not ready: the server's database does not answer; the server log says why",
        ))
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "get_openapi",
    tag = "health",
    responses((status = 200, description = "The OpenAPI document of this API.", body = Object, content_type = "application/json")),
)]
pub(crate) async fn openapi_json() -> Response {
    plain_text(super::document_json(), "application/json")
}
