//! `/api/v1/agent/…`: the agent protocol (see docs/agent-protocol.md).
//! Only tokens with the `agent` (or `admin`) role may use it.

use axum::extract::State;
use ganger_api::ErrorBody;
use ganger_api::agent::{
    Claim, Claimed, Deregister, Finished, Heartbeat, HeartbeatAck, LogAck, LogChunk, Progress,
    Register, Registered, Started,
};

use crate::error::ApiError;
use crate::extract::Json;
use crate::state::AppState;

/// Register an agent (or register it again under the same name).
#[utoipa::path(
    post,
    path = "/api/v1/agent/register",
    operation_id = "agent_register",
    tag = "agent protocol",
    request_body = Register,
    responses(
        (status = 200, description = "Registered; use `agent_id` in every later message.", body = Registered),
        (status = 400, description = "Invalid name, labels, slots or executors.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn register(
    State(state): State<AppState>,
    Json(body): Json<Register>,
) -> Result<Json<Registered>, ApiError> {
    Ok(Json(state.engine.register(body).await?))
}

/// Long poll for up to `max` tasks: answers as soon as some are assigned,
/// or after `wait_ms` (at most 30 s) with none.
#[utoipa::path(
    post,
    path = "/api/v1/agent/claim",
    operation_id = "agent_claim",
    tag = "agent protocol",
    request_body = Claim,
    responses(
        (status = 200, description = "The tasks assigned (maybe none), and kill orders.", body = Claimed),
        (status = 404, description = "The agent is not registered (the server restarted): register again.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn claim(
    State(state): State<AppState>,
    Json(body): Json<Claim>,
) -> Result<Json<Claimed>, ApiError> {
    Ok(Json(state.engine.agent_claim(body).await?))
}

/// Renew the leases of the agent's running attempts.
#[utoipa::path(
    post,
    path = "/api/v1/agent/heartbeat",
    operation_id = "agent_heartbeat",
    tag = "agent protocol",
    request_body = Heartbeat,
    responses(
        (status = 200, description = "Leases renewed; `stale` attempts must be killed, `kill` orders carried out.", body = HeartbeatAck),
        (status = 404, description = "The agent is not registered (the server restarted): register again.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    Json(body): Json<Heartbeat>,
) -> Result<Json<HeartbeatAck>, ApiError> {
    Ok(Json(state.engine.agent_heartbeat(body).await?))
}

/// An attempt's process started.
#[utoipa::path(
    post,
    path = "/api/v1/agent/started",
    operation_id = "agent_started",
    tag = "agent protocol",
    request_body = Started,
    responses(
        (status = 200, description = "Recorded."),
        (status = 409, description = "The attempt is no longer this agent's (`stale_attempt`): kill it.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn started(
    State(state): State<AppState>,
    Json(body): Json<Started>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.engine.agent_started(body).await?;
    Ok(Json(serde_json::json!({})))
}

/// How far along an attempt is, as its task told the agent.
#[utoipa::path(
    post,
    path = "/api/v1/agent/progress",
    operation_id = "agent_progress",
    tag = "agent protocol",
    request_body = Progress,
    responses(
        (status = 200, description = "Recorded; shown in the run's attempt as `progress`."),
        (status = 400, description = "`progress` is not a number from 0.0 to 1.0, or the message is malformed.", body = ErrorBody),
        (status = 409, description = "The attempt is no longer this agent's (`stale_attempt`): kill it.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn progress(
    State(state): State<AppState>,
    Json(body): Json<Progress>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.engine.agent_progress(body).await?;
    Ok(Json(serde_json::json!({})))
}

/// Output of an attempt, at a byte offset of its log.
#[utoipa::path(
    post,
    path = "/api/v1/agent/logs",
    operation_id = "agent_logs",
    tag = "agent protocol",
    request_body = LogChunk,
    responses(
        (status = 200, description = "Stored (a resent part is not stored twice); `next_offset` is where the next chunk starts.", body = LogAck),
        (status = 409, description = "The attempt is no longer this agent's (`stale_attempt`): kill it.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn logs(
    State(state): State<AppState>,
    Json(body): Json<LogChunk>,
) -> Result<Json<LogAck>, ApiError> {
    Ok(Json(state.engine.agent_log(body).await?))
}

/// An attempt ended.
#[utoipa::path(
    post,
    path = "/api/v1/agent/result",
    operation_id = "agent_result",
    tag = "agent protocol",
    request_body = Finished,
    responses(
        (status = 200, description = "Recorded and durable."),
        (status = 409, description = "The attempt is no longer this agent's (`stale_attempt`): its result is refused.", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn result(
    State(state): State<AppState>,
    Json(body): Json<Finished>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.engine.agent_finished(body).await?;
    Ok(Json(serde_json::json!({})))
}

/// The agent leaves.
#[utoipa::path(
    post,
    path = "/api/v1/agent/deregister",
    operation_id = "agent_deregister",
    tag = "agent protocol",
    request_body = Deregister,
    responses((status = 200, description = "Gone from the agent list.")),
    security(("bearer" = [])),
)]
pub(crate) async fn deregister(
    State(state): State<AppState>,
    Json(body): Json<Deregister>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.engine.deregister(body).await?;
    Ok(Json(serde_json::json!({})))
}
