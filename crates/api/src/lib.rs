//! The wire types of ganger's HTTP API (DESIGN §5): what the server sends
//! and accepts, what the CLI and agents read and write. One definition per
//! shape, so the server, its OpenAPI document and its clients cannot drift
//! apart.
//!
//! Times are RFC 3339 strings (UTC). Optional fields are omitted when absent.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error answer: `{"error": {"code": "…", "message": "…"}}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code: `unauthorized`, `forbidden`,
    /// `not_found`, `invalid_job`, `invalid_params`, `invalid_request`,
    /// `queue_full`, `conflict`, `stale_attempt`, `unavailable`, `internal`.
    pub code: String,
    /// For people: what was wrong, where, and what to do.
    pub message: String,
    /// One line per problem when there are several (for job files:
    /// `file:line:col: key.path: message`, as `ganger validate` prints).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// Error codes, so the server and clients spell them alike.
pub mod code {
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const FORBIDDEN: &str = "forbidden";
    pub const NOT_FOUND: &str = "not_found";
    pub const INVALID_JOB: &str = "invalid_job";
    pub const INVALID_PARAMS: &str = "invalid_params";
    pub const INVALID_REQUEST: &str = "invalid_request";
    pub const QUEUE_FULL: &str = "queue_full";
    pub const CONFLICT: &str = "conflict";
    pub const STALE_ATTEMPT: &str = "stale_attempt";
    pub const UNAVAILABLE: &str = "unavailable";
    pub const INTERNAL: &str = "internal";
}

// ---------------------------------------------------------------- jobs

/// One stored version of a job definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobVersion {
    pub name: String,
    pub version: u32,
    /// Digest of the definition's canonical form: equal definitions, equal digest.
    pub digest: String,
    /// True in an upload's answer when this upload created the version.
    #[serde(default)]
    pub created: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// Answer of `POST /api/v1/jobs`: every job of the upload, in file order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ApplyResponse {
    pub jobs: Vec<JobVersion>,
}

/// A job as listed: its latest version.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobSummary {
    pub name: String,
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Task names in declaration order.
    pub tasks: Vec<String>,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobSummary>,
}

/// A job with every version, newest first, and its latest definition.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobDetail {
    pub name: String,
    pub versions: Vec<JobVersion>,
    /// The latest definition in canonical JSON form.
    #[schema(value_type = Object)]
    pub definition: serde_json::Value,
}

// ---------------------------------------------------------------- runs

/// Body of `POST /api/v1/runs`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    pub job: String,
    /// Parameter values as strings (`-p key=value`); each is checked
    /// against the job's declared type and pattern.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Higher runs first when runs wait for room; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Not started before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub scheduled_at: Option<Timestamp>,
    /// A second submission with the same key returns the first run and
    /// creates nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Answer of `POST /api/v1/runs`: 201 for a new run, 200 when the
/// idempotency key named an existing one (`existing: true`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SubmitResponse {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub existing: bool,
}

/// A run as listed.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunSummary {
    pub id: String,
    pub job: String,
    pub version: u32,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub priority: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub scheduled_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
}

/// Answer of `GET /api/v1/runs`: newest first; pass `next_cursor` as
/// `cursor` for the next page (absent on the last page).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A run with its tasks: `GET /api/v1/runs/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub summary: RunSummary,
    /// For a queued run, why it has not started: "queued behind 3 runs",
    /// "concurrency full (2 of 2 running)", "scheduled for …".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    pub params: BTreeMap<String, String>,
    /// In the job's declaration order.
    pub tasks: Vec<TaskRun>,
}

/// One task of a run: its current state and every attempt.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskRun {
    pub name: String,
    /// `pending`, `ready`, `claimed`, `running`, `succeeded`, `failed`,
    /// `timed_out`, `cancelled`, `skipped` or `lost`.
    pub status: String,
    /// The current attempt number (0 before the first).
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
    /// When a retry is due, while the task waits out its delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub retry_at: Option<Timestamp>,
    pub attempts: Vec<AttemptView>,
    /// The task's compensation step, once it was scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<UndoView>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    pub number: u32,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The agent that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
    /// How far along the task last said it was, from 0.0 to 1.0 (through
    /// its job endpoint, `$GANGER_JOB_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct UndoView {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub attempts: Vec<AttemptView>,
}

// ---------------------------------------------------------------- agents

/// An agent as listed by `GET /api/v1/agents`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentView {
    pub name: String,
    /// `online`, `draining` or `lost`.
    pub state: String,
    pub labels: Vec<String>,
    pub executors: Vec<String>,
    pub slots: u32,
    pub slots_in_use: u32,
    #[schema(value_type = String, format = DateTime)]
    pub last_heartbeat: Timestamp,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<AgentView>,
}

// ---------------------------------------------------------------- logs

/// One Server-Sent Event of a followed log (`Accept: text/event-stream`):
/// event `line` carries one output line as data; event `end` closes the
/// stream with the task's final status as data.
pub mod sse {
    pub const LINE: &str = "line";
    pub const END: &str = "end";
}

/// Header naming the attempt whose output follows a log response's headers.
pub const ATTEMPT_HEADER: &str = "x-ganger-attempt";

// ---------------------------------------------------------------- agent protocol

/// The agent protocol (`/api/v1/agent/…`): what `ganger agent` and the
/// server say to each other. See `docs/agent-protocol.md`.
pub mod agent {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};
    use utoipa::ToSchema;

    /// `POST /api/v1/agent/register`: an agent introduces itself. A name
    /// registered again (an agent restarting) is the same agent.
    #[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct Register {
        pub name: String,
        /// `key=value` or bare `key`; a task runs here only when all its
        /// `tags` are among them.
        #[serde(default)]
        pub labels: Vec<String>,
        pub slots: u32,
        /// Executors this agent can run (`process`, later `docker`, `http`).
        pub executors: Vec<String>,
        /// The agent's ganger version.
        pub version: String,
    }

    #[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
    pub struct Registered {
        /// Names this agent in every later message.
        pub agent_id: String,
        /// How long a claim holds without a heartbeat.
        pub lease_ms: u64,
        /// How often to heartbeat.
        pub heartbeat_ms: u64,
    }

    /// `POST /api/v1/agent/claim`: a long poll for up to `max` tasks. It
    /// answers as soon as at least one is assigned, or after `wait_ms`
    /// (at most 30 000) with none.
    #[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct Claim {
        pub agent_id: String,
        pub max: u32,
        #[serde(default)]
        pub wait_ms: Option<u64>,
        /// The agent's slots are all busy: what this claim gets waits there
        /// for a slot to free. The server serves such claims only after
        /// those of agents with free slots, so work is claimed ahead without
        /// keeping it from an idle agent.
        #[serde(default)]
        pub ahead: bool,
    }

    /// One task attempt: its identity and fencing token. Every message
    /// about an attempt carries it; a stale one is refused with 409.
    #[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct AttemptRef {
        pub run_id: String,
        /// The task's index in the run's job.
        pub task: u32,
        /// `main` or `undo`.
        pub phase: String,
        /// The attempt number: the fencing token.
        pub attempt: u32,
    }

    /// A task assigned to the agent.
    #[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
    pub struct Assigned {
        pub attempt: AttemptRef,
        /// The task's name, for logs and workspaces.
        pub name: String,
        /// Everything needed to run it (the rendered task: executor and
        /// script, environment, timeout), as the core's `TaskSpec`.
        #[schema(value_type = Object)]
        pub spec: serde_json::Value,
    }

    #[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
    pub struct Claimed {
        pub tasks: Vec<Assigned>,
        /// Attempts this agent holds that it must stop (cancel, timeout).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub kill: Vec<Kill>,
    }

    /// Stop an attempt: SIGTERM then SIGKILL after the grace, or SIGKILL
    /// at once when `force`.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
    pub struct Kill {
        pub attempt: AttemptRef,
        pub force: bool,
    }

    /// `POST /api/v1/agent/heartbeat`: renews the leases of every attempt
    /// listed (the agent's running ones).
    #[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct Heartbeat {
        pub agent_id: String,
        #[serde(default)]
        pub running: Vec<AttemptRef>,
        /// The agent is shutting down: it takes no new work.
        #[serde(default)]
        pub draining: bool,
    }

    #[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
    pub struct HeartbeatAck {
        /// Listed attempts that are no longer this agent's (fenced, lost,
        /// finished): kill their processes and drop their results.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub stale: Vec<AttemptRef>,
        /// Attempts to stop (cancel, timeout).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub kill: Vec<Kill>,
    }

    /// `POST /api/v1/agent/started`: the attempt's process runs.
    #[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct Started {
        pub agent_id: String,
        pub attempt: AttemptRef,
    }

    /// `POST /api/v1/agent/progress`: how far along the attempt says it is
    /// (0.0 to 1.0), as its task told the agent's job endpoint. Shown to
    /// people; it changes no scheduling.
    #[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct Progress {
        pub agent_id: String,
        pub attempt: AttemptRef,
        pub progress: f64,
    }

    /// `POST /api/v1/agent/logs`: output of an attempt, as stored lines
    /// (`<RFC 3339 time> <out|err> <text>\n`). `offset` is where `data`
    /// starts in the attempt's log: a resent chunk overlapping what is
    /// stored is not stored twice.
    #[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct LogChunk {
        pub agent_id: String,
        pub attempt: AttemptRef,
        pub offset: u64,
        pub data: String,
    }

    #[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
    pub struct LogAck {
        /// The log's length now: where the next chunk starts.
        pub next_offset: u64,
    }

    /// How an attempt ended: exactly one of the fields.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct Exit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub signal: Option<i32>,
        /// It could not be started or run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub error: Option<String>,
        /// The agent cut it off for reasons of its own (it was stopped):
        /// the attempt runs again without using the task's retry budget.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub interrupted: Option<String>,
    }

    /// `POST /api/v1/agent/result`: the attempt ended.
    #[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct Finished {
        pub agent_id: String,
        pub attempt: AttemptRef,
        pub exit: Exit,
        #[serde(default)]
        pub outputs: BTreeMap<String, String>,
    }

    /// `POST /api/v1/agent/deregister`: the agent leaves (drained).
    #[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct Deregister {
        pub agent_id: String,
    }
}
