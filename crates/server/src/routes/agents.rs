//! `/api/v1/agents`: who executes tasks.

use axum::extract::State;
use ganger_api::AgentList;

use crate::error::ApiError;
use crate::extract::Json;
use crate::state::AppState;

/// List agents with their labels, slots and last heartbeat.
#[utoipa::path(
    get,
    path = "/api/v1/agents",
    operation_id = "list_agents",
    tag = "agents",
    responses((status = 200, description = "Every known agent.", body = AgentList)),
    security(("bearer" = [])),
)]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<AgentList>, ApiError> {
    let agents = state.engine.agents().await?;
    Ok(Json(AgentList { agents }))
}
