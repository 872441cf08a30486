use std::io;
use std::path::PathBuf;

/// A failure before the child exists. The message names the path or the
/// variable at fault, because it is shown to the user as the attempt's error.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot create workspace {}: {error}", path.display())]
    Workspace { path: PathBuf, error: io::Error },
    /// A log file left by an earlier use of the path could not be removed,
    /// so it would pass for this attempt's output.
    #[error("cannot remove stale log file {}: {error}", path.display())]
    LogFile { path: PathBuf, error: io::Error },
    #[error("cannot create output file {}: {error}", path.display())]
    OutputFile { path: PathBuf, error: io::Error },
    #[error("cannot write script file {}: {error}", path.display())]
    ScriptFile { path: PathBuf, error: io::Error },
    #[error("invalid environment variable {name:?}: {reason}")]
    InvalidEnv { name: String, reason: &'static str },
    #[error("the script contains a NUL byte")]
    NulInScript,
    #[error("cannot start shell {}: {error}", shell.display())]
    Shell { shell: PathBuf, error: io::Error },
}
