//! `/api/v1/runs`: submit, list, show, cancel, retry, and task logs.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ganger_api::{ErrorBody, RunDetail, RunList, RunSummary, SubmitRequest, SubmitResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::accept;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::logs;
use crate::state::AppState;

const DEFAULT_PAGE: u32 = 50;
const EVENT_STREAM: &str = "text/event-stream";

/// Submit a run of a job.
///
/// The run is durable before the answer. With an `idempotency_key` that
/// names an earlier run, that run is returned (200, `existing: true`) and
/// nothing is created.
#[utoipa::path(
    post,
    path = "/api/v1/runs",
    operation_id = "submit_run",
    tag = "runs",
    request_body = SubmitRequest,
    responses(
        (status = 201, description = "A new run (queued or running).", body = SubmitResponse),
        (status = 200, description = "The idempotency key named an existing run; nothing was created.", body = SubmitResponse),
        (status = 400, description = "The body is not a valid submission (malformed JSON, unknown field).", body = ErrorBody),
        (status = 404, description = "No job of this name.", body = ErrorBody),
        (status = 422, description = "The parameters do not match the job (`invalid_params`); `details` lists every problem.", body = ErrorBody),
        (status = 429, description = "The job's queue refused the run (`queue_full`); nothing was created.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn submit(
    State(state): State<AppState>,
    Json(request): Json<SubmitRequest>,
) -> Result<(StatusCode, Json<SubmitResponse>), ApiError> {
    let answer = state.engine.submit(request).await?;
    let status = if answer.existing {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(answer)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only runs of this job.
    job: Option<String>,
    /// Only runs in this status: queued, running, succeeded, failed or cancelled.
    status: Option<String>,
    /// Runs per page, 1 to 1000; default 50.
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List runs, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/runs",
    operation_id = "list_runs",
    tag = "runs",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of runs; `next_cursor` is absent on the last.", body = RunList),
        (status = 400, description = "An unknown parameter, status, limit or cursor.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<RunList>, ApiError> {
    // The engine checks `status` and `cursor`; the page size is ours.
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=ganger_store::MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "invalid query string: limit {limit} is out of range; use 1 to {}",
            ganger_store::MAX_PAGE
        )));
    }
    let runs = state
        .engine
        .runs(query.job, query.status, query.cursor, limit)
        .await?;
    Ok(Json(runs))
}

/// One run with its tasks and every attempt.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}",
    operation_id = "get_run",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id.")),
    responses(
        (status = 200, description = "The run.", body = RunDetail),
        (status = 404, description = "No run with this id.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    Ok(Json(state.engine.run(&id).await?))
}

/// Cancel a run: running tasks are stopped, pending ones cancelled.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/cancel",
    operation_id = "cancel_run",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id.")),
    responses(
        (status = 200, description = "The run as it is now.", body = RunSummary),
        (status = 404, description = "No run with this id.", body = ErrorBody),
        (status = 409, description = "The run has already finished; nothing changed.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunSummary>, ApiError> {
    Ok(Json(state.engine.cancel(&id).await?))
}

/// Retry a finished run: re-run its failed, cancelled and skipped tasks.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/retry",
    operation_id = "retry_run",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id.")),
    responses(
        (status = 200, description = "The run as it is now.", body = RunSummary),
        (status = 404, description = "No run with this id.", body = ErrorBody),
        (status = 409, description = "The run has not finished, or has nothing to retry.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunSummary>, ApiError> {
    Ok(Json(state.engine.retry(&id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogsQuery {
    /// Keep streaming until the task ends; default false.
    #[serde(default)]
    follow: bool,
}

/// A task's output from the beginning, every attempt in order.
///
/// Plain text by default: the stored lines, each
/// `<RFC 3339 time> <out|err> <text>`, with `--- attempt N ---` (or
/// `--- undo ---`) before the output of each later attempt. With `Accept: text/event-stream`, Server-Sent
/// Events: `line` per line, then `end` with the task's final status when
/// followed to the end.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/tasks/{task}/logs",
    operation_id = "get_task_logs",
    tag = "runs",
    params(
        ("id" = String, Path, description = "The run's id."),
        ("task" = String, Path, description = "The task's name."),
        LogsQuery,
    ),
    responses(
        (status = 200, description = "The log, streamed.", content(
            (String = "text/plain"),
            (String = "text/event-stream"),
        )),
        (status = 400, description = "An unknown parameter or a `follow` that is not true or false.", body = ErrorBody),
        (status = 404, description = "No such run or task.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn logs(
    State(state): State<AppState>,
    Path((id, task)): Path<(String, String)>,
    Query(query): Query<LogsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rx = state.engine.logs(&id, &task, query.follow).await?;
    let stop = state.stopped();
    if accept::names(&headers, EVENT_STREAM) {
        return Ok(logs::events(rx, stop).into_response());
    }
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            // A followed log grows: never serve it from a cache.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        logs::plain(rx, stop),
    )
        .into_response())
}
