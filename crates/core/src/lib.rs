//! The pure heart of ganger: the job model, YAML job files with positioned
//! errors, validation, templating, and the run state machine.
//!
//! **This crate does no I/O**: no files, processes, network, clock or async
//! runtime. Callers pass the current time in and act on the decisions that
//! come out, so the same rules drive `ganger run`, the server and tests.

pub mod admission;
pub mod claiming;
mod decode;
pub mod diag;
pub mod graph;
pub mod model;
mod parse;
pub mod routing;
mod shell;
pub mod template;
pub mod units;
pub mod yaml;

pub use diag::{Diagnostic, Diagnostics};
pub use parse::parse_job_file;
pub use shell::Script;
pub mod params;
pub mod run;
