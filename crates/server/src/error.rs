//! Every error the API answers with: one status, one stable code, a message
//! for people and, when there are several problems, one detail per line.
//! The body is always [`ganger_api::ErrorBody`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ganger_api::{ErrorBody, ErrorDetail, code};
use ganger_engine::EngineError;
use ganger_store::StoreError;

/// How long a client should wait before retrying a 503.
const RETRY_AFTER_SECS: &str = "2";

#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) details: Vec<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::INVALID_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code::NOT_FOUND, message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code::UNAUTHORIZED, message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code::FORBIDDEN, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, code::INTERNAL, message)
    }

    fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::NotFound(message) => ApiError::not_found(message),
            EngineError::InvalidJob { details } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                code::INVALID_JOB,
                format!(
                    "the job definitions are invalid ({}); nothing was stored: fix the file and upload it again",
                    problems(details.len())
                ),
            )
            .with_details(details),
            EngineError::InvalidParams { job, details } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                code::INVALID_PARAMS,
                format!(
                    "invalid parameters for job `{job}` ({}); no run was created",
                    problems(details.len())
                ),
            )
            .with_details(details),
            EngineError::InvalidRequest(message) => ApiError::bad_request(message),
            EngineError::QueueFull(message) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, code::QUEUE_FULL, message)
            }
            EngineError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, code::CONFLICT, message)
            }
            EngineError::Stale(message) => {
                ApiError::new(StatusCode::CONFLICT, code::STALE_ATTEMPT, message)
            }
            err @ EngineError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code::UNAVAILABLE,
                err.to_string(),
            ),
            // A cursor comes from the client: a mangled one is its mistake.
            EngineError::Store(StoreError::InvalidCursor { cursor }) => ApiError::bad_request(
                format!(
                    "invalid page cursor {cursor:?}: pass the `next_cursor` of the previous page unchanged, or omit `cursor` for the first page"
                ),
            ),
            EngineError::Store(err) if err.is_unavailable() => {
                log_internal(&err);
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code::UNAVAILABLE,
                    "the server's database is unreachable; retry in a moment (the server reconnects by itself)",
                )
            }
            EngineError::Store(err) => {
                // The details of a database failure are for the operator,
                // not for whoever happened to send the request.
                log_internal(&err);
                ApiError::internal(
                    "internal error: the server's database failed; the server log has the details",
                )
            }
            err @ EngineError::Internal(_) => {
                log_internal(&err);
                ApiError::internal(err.to_string())
            }
        }
    }
}

fn problems(n: usize) -> String {
    if n == 1 {
        "1 problem".to_owned()
    } else {
        format!("{n} problems")
    }
}

/// The one place the API reports failures that are not the client's.
pub(crate) fn log_internal(err: &dyn std::error::Error) {
    eprintln!("ganger server: internal error: {}", chain(err));
}

/// An error and its causes, `: `-separated.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let unauthorized = status == StatusCode::UNAUTHORIZED;
        let unavailable = status == StatusCode::SERVICE_UNAVAILABLE;
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                details: self.details,
            },
        };
        let mut response = crate::extract::Json(body).into_response();
        *response.status_mut() = status;
        let headers = response.headers_mut();
        if unauthorized {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ganger\""),
            );
        }
        if unavailable {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_map_to_their_status_and_code() {
        let cases = [
            (EngineError::NotFound("no job `x`".into()), 404, "not_found"),
            (
                EngineError::InvalidJob {
                    details: vec!["a.yml:1:1: bad".into()],
                },
                422,
                "invalid_job",
            ),
            (
                EngineError::InvalidParams {
                    job: "j".into(),
                    details: vec!["p".into(), "q".into()],
                },
                422,
                "invalid_params",
            ),
            (
                EngineError::InvalidRequest("x".into()),
                400,
                "invalid_request",
            ),
            (EngineError::QueueFull("x".into()), 429, "queue_full"),
            (EngineError::Conflict("x".into()), 409, "conflict"),
            (EngineError::Stale("x".into()), 409, "stale_attempt"),
            (EngineError::ShuttingDown, 503, "unavailable"),
            (EngineError::Internal("x".into()), 500, "internal"),
            (
                EngineError::Store(StoreError::InvalidCursor {
                    cursor: "zz".into(),
                }),
                400,
                "invalid_request",
            ),
            (
                EngineError::Store(StoreError::Poisoned { op: "list runs" }),
                500,
                "internal",
            ),
        ];
        for (err, status, code) in cases {
            let api = ApiError::from(err);
            assert_eq!((api.status.as_u16(), api.code), (status, code), "{api:?}");
        }
    }

    #[test]
    fn invalid_jobs_keep_every_diagnostic_as_a_detail() {
        let api = ApiError::from(EngineError::InvalidJob {
            details: vec!["a.yml:1:1: one".into(), "a.yml:2:1: two".into()],
        });
        assert_eq!(api.details.len(), 2);
        assert!(api.message.contains("2 problems"), "{}", api.message);
    }

    #[test]
    fn headers_tell_clients_what_to_do() {
        let r = ApiError::unauthorized("no token").into_response();
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        let r = ApiError::from(EngineError::ShuttingDown).into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }
}
