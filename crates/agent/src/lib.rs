//! Runs task attempts on this machine, for whoever assigns them.
//!
//! - [`attempt`] runs one rendered task as a process in its run's
//!   [`Workdir`]; `ganger run`, the server's in-process agent and remote
//!   agents all use it, so a task behaves the same wherever it runs.
//! - [`job_api`] is the endpoint a running task reads its job from and
//!   reports progress and outputs to (`$GANGER_JOB_URL`).
//! - [`client`] speaks the agent protocol (`/api/v1/agent/…`) over HTTP.
//! - [`remote`] is the loop of `ganger agent`: register, claim (long
//!   poll), heartbeat, run attempts, ship their logs and results, drain.
//!
//! A remote agent talks to its server over HTTP only, outbound: it never
//! reads or writes the server's database.

pub mod attempt;
mod backoff;
pub mod client;
mod container;
pub mod job_api;
mod notice;
mod orphans;
pub mod remote;
mod ship;
mod task;
pub mod workdir;

pub use client::{Client, ClientError, parse_server};
pub use container::{DEFAULT_NETWORK, Docker};
pub use job_api::{JobApi, JobHandle, JobInfo, JobProgress};
pub use notice::Notice;
pub use orphans::ProcessRecords;
pub use remote::{AgentConfig, AgentError, check_label, check_name, run, run_until};
pub use workdir::Workdir;
