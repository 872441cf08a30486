use std::path::{Path, PathBuf};

use ganger_core::run::Phase;

/// Where a local run keeps its files: one workspace per task, logs and
/// outputs under `.ganger/`, out of the way of the tasks' own files.
#[derive(Clone, Debug)]
pub struct Workdir {
    root: PathBuf,
}

impl Workdir {
    pub fn new(root: PathBuf) -> Workdir {
        Workdir { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn workspace(&self, task: &str) -> PathBuf {
        self.root.join(task)
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join(".ganger").join("logs")
    }

    pub fn log(&self, task: &str, attempt: u32, phase: Phase) -> PathBuf {
        self.logs()
            .join(Self::file_name(task, attempt, phase, "log"))
    }

    pub fn output(&self, task: &str, attempt: u32, phase: Phase) -> PathBuf {
        self.root
            .join(".ganger")
            .join("outputs")
            .join(Self::file_name(task, attempt, phase, "env"))
    }

    fn file_name(task: &str, attempt: u32, phase: Phase, ext: &str) -> String {
        match phase {
            Phase::Main => format!("{task}.{attempt}.{ext}"),
            Phase::Undo => format!("{task}.undo.{ext}"),
        }
    }
}
