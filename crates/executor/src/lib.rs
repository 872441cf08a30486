//! Runs one task attempt: as a local process (the `process` executor) or in
//! a container (the `docker` executor, [`DockerEngine`]). Both stream output
//! through the same line splitting, capped log file and [`LogSink`], read
//! `$GANGER_OUTPUT` the same way, and end in the same [`Outcome`]. The
//! `docker` executor's invariants (no container, sidecar or network survives
//! [`DockerEngine::run`]; everything labelled with its agent, run, task and
//! attempt; sidecars on a per-attempt network) are described in [`docker`].
//!
//! ## The process executor
//!
//! [`spawn`] starts the rendered script under a shell (`bash -eo pipefail`, or
//! `sh -e` where bash is missing) in the task's workspace, with exactly the
//! environment the caller composed. [`RunningProcess::wait`] supervises it:
//! it streams stdout and stderr line by line to the attempt's log file and to a
//! [`LogSink`], delivers kill requests, and finally reads the `$GANGER_OUTPUT`
//! file into the attempt's outputs.
//!
//! Invariants the rest of ganger relies on:
//!
//! - **No process survives `wait`.** The script runs as the leader of its own
//!   process group, and once the leader has exited (for any reason) the whole
//!   group is SIGKILLed and `wait` returns only after its members are dead, so
//!   a forgotten `sleep 300 &` cannot outlive its task or hold its slot. After
//!   a normal exit that happens at once; during a graceful kill only when the
//!   grace ends, so that every process of the group gets its grace, not just
//!   the leader (a shell dies on SIGTERM at once, its children may not). The
//!   one exception is a process that deliberately leaves the group (`setsid`);
//!   `wait` then stops reading its output after a bounded drain and says so in
//!   [`Outcome::warnings`].
//! - **Spawning stays on the `posix_spawn` path.** A server holding gigabytes
//!   of memory must start processes in well under a millisecond, which
//!   `fork`+`exec` cannot do (it copies page tables). So the executor never
//!   uses `pre_exec`, uid/gid switching or anything else that makes the
//!   standard library fall back to `fork`; see `process.rs`.
//! - **Memory stays bounded** whatever the task prints: output is streamed,
//!   long lines are split, and the log file can be capped.
//!
//! [`spawn`] and [`DockerEngine`] must be used from within a Tokio runtime.

pub mod docker;
mod error;
mod group;
mod lines;
mod logs;
mod outputs;
mod process;
mod shell;
mod types;

pub use docker::{
    ContainerSpec, DockerEngine, DockerError, OUTPUT_MOUNT, Owner, PullPolicy, Resources,
    ServiceSpec, WORKSPACE_MOUNT,
};
pub use error::SpawnError;
pub use outputs::is_valid_key as is_valid_output_key;
pub use process::{RunningProcess, spawn};
pub use types::{KillMode, LogLine, LogSink, Outcome, ProcessSpec, Stream, Termination};
