//! The run and task state machines: `(state, event, now) → (state, decisions)`.
//!
//! Every scheduling rule lives here once. Drivers (`ganger run`, the
//! server) feed events in, act on the decisions, and persist the state.

mod event;
mod machine;
mod record;
mod render;
mod state;

pub use event::{Decision, Event, EventError, ExecSpec, Exit, Phase, TaskSpec};
pub use record::RunRecord;
pub use state::{
    Attempt, Exec, KillReason, RestoreError, RunState, RunStatus, Stop, TaskState, TaskStatus,
};

#[cfg(test)]
mod tests;
