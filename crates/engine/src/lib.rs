//! Drives the pure core with real time and real executors.
//!
//! The core decides; this crate acts: it feeds events (task exits, signals,
//! timer ticks) into [`ganger_core::run::RunState::apply`] and carries out
//! the decisions (start a process, kill one). One loop owns the run state,
//! and every input reaches it as an event. Today it drives `ganger run`;
//! the server drives the same core through the same kind of loop.

mod local;
mod observer;
mod service;

pub use ganger_agent::Workdir;
pub use local::{Control, LocalConfig, run_local};
pub use observer::Observer;
pub use service::{
    AgentReport, Assignment, Engine, EngineConfig, EngineError, KillOrder, LogEvent, Want,
};

/// A run id that sorts by creation time and is unique: a process-wide
/// counter from a random start, so ids made in one second never collide in
/// one process and almost never across a restart.
pub fn new_run_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static START: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        let mut bytes = [0u8; 4];
        // Without an entropy source, the clock is a fair start.
        if getrandom::fill(&mut bytes).is_err() {
            return jiff::Timestamp::now().subsec_nanosecond() as u32 ^ std::process::id();
        }
        u32::from_le_bytes(bytes)
    });
    let n = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
    format!(
        "{}-{n:08x}",
        jiff::Timestamp::now().strftime("%Y%m%dT%H%M%S")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_ids_are_unique_within_a_process() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| super::new_run_id()).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
