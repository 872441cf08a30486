//! Request extractors whose rejections are [`ApiError`]s, so a malformed
//! body, query or path answers in the same JSON shape as everything else,
//! with serde's own words (and line and column for JSON).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, log_internal};

/// A JSON body in, a JSON body out.
///
/// The request's content type is not checked: `curl -d` sends
/// `application/x-www-form-urlencoded` by default, and the body is what
/// matters. Bearer tokens already rule out cross-site form posts.
pub(crate) struct Json<T>(pub(crate) T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        serde_json::from_slice(&bytes).map(Json).map_err(|e| {
            ApiError::bad_request(format!(
                "the request body is not valid JSON for this endpoint: {e}"
            ))
        })
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            Err(e) => {
                log_internal(&e);
                // Not through ApiError: that would serialize again.
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    r#"{"error":{"code":"internal","message":"internal error: the answer could not be encoded; the server log has the details"}}"#,
                )
                    .into_response()
            }
        }
    }
}

/// The whole body as UTF-8 text, within [`crate::BODY_LIMIT`].
pub(crate) struct Text(pub(crate) String);

impl<S: Send + Sync> FromRequest<S> for Text {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(kind) = req.headers().get(header::CONTENT_TYPE)
            && kind
                .to_str()
                .is_ok_and(|k| k.trim_start().starts_with("multipart/"))
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ganger_api::code::INVALID_REQUEST,
                "send the job file itself as the request body (e.g. `curl --data-binary @jobs.yml -H 'Content-Type: application/yaml'`), not as a multipart form",
            ));
        }
        let bytes = body_bytes(req, state).await?;
        String::from_utf8(bytes.into())
            .map(Text)
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "the request body is not UTF-8 text (invalid byte at offset {}); send the YAML or JSON job file as UTF-8",
                    e.utf8_error().valid_up_to()
                ))
            })
    }
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state)
        .await
        .map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(_)
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ganger_api::code::INVALID_REQUEST,
                    format!(
                        "the request body is larger than the limit of {} MiB (a job file may be at most 1 MiB); split the upload into several files",
                        crate::BODY_LIMIT / (1024 * 1024)
                    ),
                )
            }
            other => ApiError::new(
                other.status(),
                ganger_api::code::INVALID_REQUEST,
                format!("cannot read the request body: {}", other.body_text()),
            ),
        })
}

/// Query parameters; an unknown parameter or a value of the wrong type is a
/// 400 that names it.
pub(crate) struct Query<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection| {
                ApiError::bad_request(format!(
                    "invalid query string: {}",
                    strip_axum_prefix(&rejection.body_text())
                ))
            })
    }
}

/// Path parameters (percent-decoded).
pub(crate) struct Path<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| {
                let status = rejection.status();
                let message = format!("invalid path: {}", rejection.body_text());
                if status.is_server_error() {
                    ApiError::internal(message)
                } else {
                    ApiError::new(status, ganger_api::code::INVALID_REQUEST, message)
                }
            })
    }
}

/// axum words its query rejections "Failed to deserialize query string:
/// <serde's message>"; ours already say it is the query string.
fn strip_axum_prefix(text: &str) -> &str {
    text.strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(text)
}
