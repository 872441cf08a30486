//! Drives the pure core with real time and real executors.
//!
//! The core decides; this crate acts: it feeds events (task exits, signals,
//! timer ticks) into [`ganger_core::run::RunState::apply`] and carries out
//! the decisions (start a process, kill one). One loop owns the run state,
//! and every input reaches it as an event. Today it drives `ganger run`;
//! the server drives the same core through the same kind of loop.

mod attempt;
mod local;
mod observer;
mod service;
mod workdir;

pub use local::{Control, LocalConfig, run_local};
pub use observer::Observer;
pub use service::{
    AgentReport, Assignment, Engine, EngineConfig, EngineError, KillOrder, LogEvent,
};
pub use workdir::Workdir;

/// A run id that is unique on this machine and sorts by creation time.
pub fn new_run_id() -> String {
    let now = jiff::Timestamp::now();
    format!(
        "{}-{:04x}",
        now.strftime("%Y%m%dT%H%M%S"),
        (now.subsec_nanosecond() as u32 / 1000) ^ std::process::id()
    )
}
