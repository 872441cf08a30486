//! Bearer-token authentication and role checks for `/api/v1/…`.
//!
//! Every request looks its token up in the store: nothing is cached, so a
//! token deleted from the store stops working with the next request.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, log_internal};
use crate::state::AppState;
use crate::token::{self, Role};

const HOW_TO_AUTHENTICATE: &str = "send `Authorization: Bearer <token>`; on the server's machine the admin token is in the file admin.token of the server's data directory (./ganger-data/admin.token by default), and `ganger token create --role operator` makes more";

pub(crate) async fn require_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    match authenticate(&state, req.headers(), |role| permit(role, &method)).await {
        Ok(()) => next.run(req).await,
        Err(err) => err.into_response(),
    }
}

/// The agent protocol's check: only `agent` (and `admin`) tokens.
pub(crate) async fn require_agent_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    match authenticate(&state, req.headers(), permit_agent).await {
        Ok(()) => next.run(req).await,
        Err(err) => err.into_response(),
    }
}

fn permit_agent(role: Role) -> Result<(), ApiError> {
    match role {
        Role::Agent | Role::Admin => Ok(()),
        other => Err(ApiError::forbidden(format!(
            "this token has the role `{other}`; the agent protocol needs an `agent` token (`ganger token create --role agent`)"
        ))),
    }
}

async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    permit: impl FnOnce(Role) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let secret = bearer(headers)?;
    let row = state
        .engine
        .store()
        .token(&token::hash(secret))
        .await
        .map_err(|e| {
            if e.is_unavailable() {
                // 503 with Retry-After: clients wait and come back.
                ApiError::from(ganger_engine::EngineError::Store(e))
            } else {
                log_internal(&e);
                ApiError::internal(
                    "internal error: cannot check the token against the server's database; the server log has the details",
                )
            }
        })?
        .ok_or_else(|| {
            ApiError::unauthorized(format!(
                "the token is not valid (unknown or revoked): {HOW_TO_AUTHENTICATE}"
            ))
        })?;
    let role: Role = row.role.parse().map_err(|_| {
        ApiError::forbidden(format!(
            "token `{}` has the role `{}`, which this server does not know; create a new token with `ganger token create --role R`",
            row.name, row.role
        ))
    })?;
    permit(role)
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(format!(
            "this request needs a token: {HOW_TO_AUTHENTICATE}"
        )));
    };
    let malformed = || {
        ApiError::unauthorized(format!(
            "the Authorization header is not of the form `Bearer <token>`: {HOW_TO_AUTHENTICATE}"
        ))
    };
    let value = value.to_str().map_err(|_| malformed())?.trim();
    let (scheme, secret) = value.split_once(' ').ok_or_else(malformed)?;
    let secret = secret.trim();
    // RFC 7235: the scheme is case-insensitive.
    if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() {
        return Err(malformed());
    }
    Ok(secret)
}

/// What each role may do on the routes behind this check.
fn permit(role: Role, method: &Method) -> Result<(), ApiError> {
    let reads = *method == Method::GET || *method == Method::HEAD;
    match role {
        Role::Admin | Role::Operator => Ok(()),
        Role::Viewer if reads => Ok(()),
        Role::Viewer => Err(ApiError::forbidden(
            "this token has the role `viewer`, which may only read; this request needs an `operator` or `admin` token",
        )),
        Role::Agent => Err(ApiError::forbidden(
            "this token has the role `agent`, which may only use the agent protocol (/api/v1/agent/…); use an `operator` or `viewer` token (`ganger token create --role operator`)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(auth).expect("valid header"),
        );
        h
    }

    #[test]
    fn bearer_accepts_any_case_of_the_scheme() {
        assert_eq!(bearer(&headers("Bearer abc")).ok(), Some("abc"));
        assert_eq!(bearer(&headers("bearer  abc ")).ok(), Some("abc"));
    }

    #[test]
    fn bearer_rejects_missing_and_malformed_headers() {
        assert!(bearer(&HeaderMap::new()).is_err());
        for bad in ["Basic abc", "Bearer", "Bearer ", "abc"] {
            let err = bearer(&headers(bad)).expect_err(bad);
            assert_eq!(err.status.as_u16(), 401);
            assert!(err.message.contains("Bearer <token>"), "{}", err.message);
        }
    }

    #[test]
    fn roles_decide_what_a_token_may_do() {
        assert!(permit(Role::Admin, &Method::POST).is_ok());
        assert!(permit(Role::Operator, &Method::POST).is_ok());
        assert!(permit(Role::Viewer, &Method::GET).is_ok());
        assert!(permit(Role::Viewer, &Method::HEAD).is_ok());
        assert_eq!(
            permit(Role::Viewer, &Method::POST).map_err(|e| e.status.as_u16()),
            Err(403)
        );
        assert_eq!(
            permit(Role::Agent, &Method::GET).map_err(|e| e.status.as_u16()),
            Err(403)
        );
    }
}
