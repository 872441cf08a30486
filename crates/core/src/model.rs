//! Validated job definitions. Everything here has passed validation: names
//! resolve, the graph is acyclic, durations and templates parse.

use std::collections::BTreeSet;
use std::time::Duration;

/// Index of a task within its job, in declaration order.
pub type TaskId = usize;

#[derive(Clone, Debug)]
pub struct JobFile {
    pub jobs: Vec<Job>,
}

#[derive(Clone, Debug)]
pub struct Job {
    pub name: String,
    /// This job's definition alone, as canonical JSON (which parses as a job
    /// file): what a server stores per version, and compares to tell whether
    /// an upload changed the job.
    pub source: String,
    pub description: Option<String>,
    pub params: Vec<ParamSpec>,
    pub env: Vec<(String, String)>,
    pub concurrency: Option<u32>,
    pub concurrency_key: Option<String>,
    pub queue: QueuePolicy,
    pub priority: i32,
    pub timeout: Option<Duration>,
    pub fail_fast: bool,
    pub schedules: Vec<Schedule>,
    pub tasks: Vec<Task>,
    /// For each task, the tasks that need it (the reverse of `needs`), each
    /// with the index of that need in the dependant's `needs`.
    pub dependants: Vec<Vec<(TaskId, usize)>>,
}

impl Job {
    pub fn task_id(&self, name: &str) -> Option<TaskId> {
        self.tasks.iter().position(|t| t.name == name)
    }

    /// Every task reachable from `task` by following `needs` edges backwards
    /// (the tasks that must settle before it), excluding itself.
    pub fn ancestors(&self, task: TaskId) -> BTreeSet<TaskId> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<TaskId> = self.tasks[task].needs.iter().map(|n| n.task).collect();
        while let Some(t) = stack.pop() {
            if seen.insert(t) {
                stack.extend(self.tasks[t].needs.iter().map(|n| n.task));
            }
        }
        seen
    }

    /// Every task that depends on `task`, directly or transitively.
    pub fn descendants(&self, task: TaskId) -> BTreeSet<TaskId> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<TaskId> = self.dependants[task].iter().map(|&(d, _)| d).collect();
        while let Some(t) = stack.pop() {
            if seen.insert(t) {
                stack.extend(self.dependants[t].iter().map(|&(d, _)| d));
            }
        }
        seen
    }
}

#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: String,
    pub description: Option<String>,
    pub default: Option<String>,
    pub required: bool,
    pub pattern: Option<regex::Regex>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueStrategy {
    #[default]
    Append,
    Replace,
    Reject,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueuePolicy {
    /// Room in the wait list; `None` is unbounded.
    pub limit: Option<u32>,
    pub strategy: QueueStrategy,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub cron: String,
    pub timezone: Option<String>,
    pub params: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backoff {
    Fixed,
    Exponential,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first one: `retry: 2` runs a task at most 3 times.
    pub attempts: u32,
    pub delay: Duration,
    pub backoff: Backoff,
    pub max_delay: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 0,
            delay: Duration::ZERO,
            backoff: Backoff::Fixed,
            max_delay: None,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `failed_attempt + 1`.
    pub fn delay_after(&self, failed_attempt: u32) -> Duration {
        let delay = match self.backoff {
            Backoff::Fixed => self.delay,
            Backoff::Exponential => {
                let factor = 2u32.saturating_pow(failed_attempt.saturating_sub(1));
                self.delay.checked_mul(factor).unwrap_or(Duration::MAX)
            }
        };
        match self.max_delay {
            Some(max) => delay.min(max),
            None => delay,
        }
    }
}

/// What a dependency must have ended as for a dependant to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    Success,
    Failure,
    Always,
    Skipped,
    ExitCodes(Vec<i32>),
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::Success => f.write_str("success"),
            Condition::Failure => f.write_str("failure"),
            Condition::Always => f.write_str("always"),
            Condition::Skipped => f.write_str("skipped"),
            Condition::ExitCodes(codes) => {
                let codes: Vec<String> = codes.iter().map(i32::to_string).collect();
                write!(f, "exit code {}", codes.join("|"))
            }
        }
    }
}

/// One dependency edge. The dependant runs when any of the conditions holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    pub task: TaskId,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    pub cpu: Option<f64>,
    pub memory: Option<u64>,
    pub pids: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    Always,
    #[default]
    IfMissing,
    Never,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Service {
    pub name: String,
    pub image: String,
    pub env: Vec<(String, String)>,
    pub command: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DockerSpec {
    pub image: String,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub pull: PullPolicy,
    pub network: Option<String>,
    pub user: Option<String>,
    pub volumes: Vec<String>,
    pub services: Vec<Service>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HttpSpec {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// A JSON body, kept as JSON text with templates inside string values.
    pub json: Option<String>,
    pub body: Option<String>,
    pub timeout: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChildJobSpec {
    pub job: String,
    pub params: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Executor {
    Process,
    Docker(DockerSpec),
    Http(HttpSpec),
    Job(ChildJobSpec),
}

impl Executor {
    pub fn name(&self) -> &'static str {
        match self {
            Executor::Process => "process",
            Executor::Docker(_) => "docker",
            Executor::Http(_) => "http",
            Executor::Job(_) => "job",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Task {
    pub name: String,
    pub description: Option<String>,
    pub needs: Vec<Need>,
    pub executor: Executor,
    /// The script (`run`, or `script` lines joined); `None` makes a join point.
    pub run: Option<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub tags: Vec<String>,
    pub resources: Option<Resources>,
    pub artifacts: Vec<String>,
    pub undo: Option<String>,
    pub condition: Option<String>,
    pub allow_failure: bool,
    pub always: bool,
    /// Exit codes this task routes through its own `on_exit_code`: a
    /// declared branch, so such an exit does not fail the run.
    pub routed_exit_codes: BTreeSet<i32>,
    pub for_each: Option<String>,
    /// Free-form data for the task's job endpoint (`GET $GANGER_JOB_URL`
    /// answers it as `body`): any YAML value, kept as JSON, whose strings
    /// are text templates.
    pub body: Option<serde_json::Value>,
}
