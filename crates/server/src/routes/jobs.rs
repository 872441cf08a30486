//! `/api/v1/jobs`: upload definitions, list them, show one, draw its graph.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ganger_api::{ApplyResponse, ErrorBody, JobDetail, JobList};

use super::plain_text;
use crate::accept;
use crate::error::ApiError;
use crate::extract::{Json, Path, Text};
use crate::state::AppState;

/// Names the uploaded file in diagnostics (`jobs.yml:3:5: …`).
const FILE_HEADER: &str = "x-ganger-file";
/// What diagnostics call a body sent without [`FILE_HEADER`].
const DEFAULT_FILE_NAME: &str = "request body";
const DOT: &str = "text/vnd.graphviz";
const SVG: &str = "image/svg+xml";

/// Upload job definitions.
///
/// The body is one job file, YAML or JSON (which is YAML), holding one or
/// more jobs under `jobs:`. The upload is atomic: when any job is invalid,
/// nothing is stored and `details` lists every problem with
/// `file:line:col`. A job whose definition did not change keeps its version.
#[utoipa::path(
    post,
    path = "/api/v1/jobs",
    operation_id = "apply_jobs",
    tag = "jobs",
    params(
        ("x-ganger-file" = Option<String>, Header,
         description = "The file name diagnostics show; default `request body`."),
    ),
    request_body(
        description = "One job file as text (at most 1 MiB).",
        content(
            (String = "application/yaml"),
            (String = "text/yaml"),
            (String = "application/json"),
            (String = "text/plain"),
        ),
    ),
    responses(
        (status = 201, description = "Stored; at least one job got a new version.", body = ApplyResponse),
        (status = 200, description = "Every job was unchanged; nothing new was stored.", body = ApplyResponse),
        (status = 400, description = "The body is not UTF-8 text.", body = ErrorBody),
        (status = 413, description = "The body is larger than 2 MiB.", body = ErrorBody),
        (status = 415, description = "A multipart form was sent instead of the file itself.", body = ErrorBody),
        (status = 422, description = "A job is invalid (`invalid_job`); `details` lists every problem; nothing was stored.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn apply(
    State(state): State<AppState>,
    headers: HeaderMap,
    Text(body): Text,
) -> Result<(StatusCode, Json<ApplyResponse>), ApiError> {
    let file = headers
        .get(FILE_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| DEFAULT_FILE_NAME.to_owned());
    let jobs = state.engine.apply(vec![(file, body)]).await?;
    let status = if jobs.iter().any(|j| j.created) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(ApplyResponse { jobs })))
}

/// List jobs, each with its latest version.
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    operation_id = "list_jobs",
    tag = "jobs",
    responses((status = 200, description = "Every job.", body = JobList)),
    security(("bearer" = [])),
)]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<JobList>, ApiError> {
    let jobs = state.engine.jobs().await?;
    Ok(Json(JobList { jobs }))
}

/// One job with every version, newest first, and its latest definition.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{name}",
    operation_id = "get_job",
    tag = "jobs",
    params(("name" = String, Path, description = "The job's name.")),
    responses(
        (status = 200, description = "The job.", body = JobDetail),
        (status = 404, description = "No job of this name.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<JobDetail>, ApiError> {
    Ok(Json(state.engine.job(&name).await?))
}

/// The latest version's task graph as Graphviz DOT.
///
/// SVG (`Accept: image/svg+xml`) is not rendered yet: ask for DOT and
/// render it with `dot -Tsvg`.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{name}/graph",
    operation_id = "get_job_graph",
    tag = "jobs",
    params(("name" = String, Path, description = "The job's name.")),
    responses(
        (status = 200, description = "The graph as DOT.", body = String, content_type = "text/vnd.graphviz"),
        (status = 404, description = "No job of this name.", body = ErrorBody),
        (status = 406, description = "Only SVG was acceptable, which is not supported yet.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn graph(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let dot_acceptable = accept::accepts(&headers, DOT) || accept::accepts(&headers, "text/plain");
    if !dot_acceptable && accept::names(&headers, SVG) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            ganger_api::code::INVALID_REQUEST,
            format!(
                "SVG is not supported yet: ask for DOT (`Accept: {DOT}`) and render it with Graphviz (`dot -Tsvg`)"
            ),
        ));
    }
    let dot = state.engine.graph(&name).await?;
    Ok(plain_text(dot, "text/vnd.graphviz; charset=utf-8"))
}
