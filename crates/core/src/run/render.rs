//! Renders a task's templates against the run as it stands.

use std::collections::BTreeMap;

use minijinja::Value;
use serde_json::Value as Json;

use super::event::{ExecSpec, Phase, TaskSpec};
use super::state::RunState;
use crate::model::{Executor, Task, TaskId};
use crate::params::param_env_name;
use crate::template::{self, Flavor, TemplateError};

/// A template failure, named by the field it came from.
pub(crate) struct RenderError {
    pub(crate) field: &'static str,
    pub(crate) error: TemplateError,
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "template error in `{}`", self.field)?;
        if let Some(line) = self.error.line {
            write!(f, " (line {line})")?;
        }
        write!(f, ": {}", self.error.message)
    }
}

fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// Whether any string inside a JSON value passes `test`.
fn any_string(value: &Json, test: &impl Fn(&str) -> bool) -> bool {
    match value {
        Json::String(s) => test(s),
        Json::Array(items) => items.iter().any(|v| any_string(v, test)),
        Json::Object(map) => map.values().any(|v| any_string(v, test)),
        _ => false,
    }
}

fn uses_templates(task: &Task) -> bool {
    let has = is_template;
    task.run.as_deref().is_some_and(has)
        || task.undo.as_deref().is_some_and(has)
        || task.condition.is_some()
        || task.env.iter().any(|(_, v)| has(v))
        || task.body.as_ref().is_some_and(|b| any_string(b, &has))
        || !matches!(task.executor, Executor::Process)
}

fn reads_tasks(task: &Task) -> bool {
    let reads = |s: &str| s.contains("tasks");
    task.run.as_deref().is_some_and(reads)
        || task.undo.as_deref().is_some_and(reads)
        || task.condition.as_deref().is_some_and(reads)
        || task.env.iter().any(|(_, v)| reads(v))
        || task.body.as_ref().is_some_and(|b| any_string(b, &reads))
        || !matches!(task.executor, Executor::Process)
}

struct Renderer<'a> {
    run: &'a RunState,
    task: &'a Task,
    ctx: Option<Value>,
    env: Vec<(String, String)>,
}

impl<'a> Renderer<'a> {
    fn new(run: &'a RunState, id: TaskId, attempt: u32) -> Result<Renderer<'a>, RenderError> {
        let task = &run.job.tasks[id];
        if !uses_templates(task) && !run.job.env.iter().any(|(_, v)| is_template(v)) {
            let env = run.job.env.iter().chain(&task.env).cloned().collect();
            return Ok(Renderer {
                run,
                task,
                ctx: None,
                env,
            });
        }
        let strings = |m: &BTreeMap<String, String>| {
            Value::from_pairs(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        };
        let mut base: Vec<(&str, Value)> = vec![
            ("params", strings(&run.params)),
            (
                "run",
                Value::from_pairs([
                    ("id", Value::from(run.id.as_str())),
                    ("attempt", Value::from(attempt)),
                ]),
            ),
            ("job", Value::from_pairs([("name", run.job.name.as_str())])),
            (
                "secrets",
                Value::from_pairs(std::iter::empty::<(&str, &str)>()),
            ),
        ];
        if reads_tasks(task) {
            let tasks = run.job.tasks.iter().zip(&run.tasks).map(|(def, state)| {
                let entry = Value::from_pairs([
                    ("status", Value::from(state.main.status.as_str())),
                    ("outputs", strings(&state.outputs)),
                    ("exit_code", Value::from(state.main.exit_code())),
                ]);
                (def.name.as_str(), entry)
            });
            base.push(("tasks", Value::from_pairs(tasks)));
        }
        let base_ctx = Value::from_pairs(base.iter().cloned());
        let mut env = Vec::with_capacity(run.job.env.len() + task.env.len());
        for (k, v) in run.job.env.iter().chain(&task.env) {
            let rendered =
                template::render(Flavor::Text, v, &base_ctx).map_err(|error| RenderError {
                    field: "env",
                    error,
                })?;
            env.push((k.clone(), rendered));
        }
        base.push((
            "env",
            Value::from_pairs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        ));
        Ok(Renderer {
            run,
            task,
            ctx: Some(Value::from_pairs(base)),
            env,
        })
    }

    fn ctx(&self) -> Value {
        self.ctx.clone().unwrap_or_default()
    }

    fn render(
        &self,
        flavor: Flavor,
        field: &'static str,
        source: &str,
    ) -> Result<String, RenderError> {
        template::render(flavor, source, &self.ctx()).map_err(|error| RenderError { field, error })
    }

    /// Renders every string of a free-form JSON value (`body`, `http.json`)
    /// on its own, so a value can never change the JSON's structure.
    fn render_json(&self, field: &'static str, value: &Json) -> Result<Json, RenderError> {
        Ok(match value {
            Json::String(s) => Json::String(self.render(Flavor::Text, field, s)?),
            Json::Array(items) => items
                .iter()
                .map(|v| self.render_json(field, v))
                .collect::<Result<_, _>>()?,
            Json::Object(map) => map
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.render_json(field, v)?)))
                .collect::<Result<serde_json::Map<_, _>, RenderError>>()?
                .into(),
            other => other.clone(),
        })
    }
}

/// Evaluates a task's `if:`; `Ok(true)` when it has none.
pub(crate) fn condition(run: &RunState, id: TaskId) -> Result<bool, RenderError> {
    let Some(source) = &run.job.tasks[id].condition else {
        return Ok(true);
    };
    let r = Renderer::new(run, id, 1)?;
    template::condition(source, &r.ctx()).map_err(|error| RenderError { field: "if", error })
}

pub(crate) fn task_spec(
    run: &RunState,
    id: TaskId,
    attempt: u32,
    phase: Phase,
) -> Result<TaskSpec, RenderError> {
    let r = Renderer::new(run, id, attempt)?;
    let task = r.task;
    // Values the scripts read through variables (see `shell::place`).
    let mut script_env = Vec::new();
    let mut script_of =
        |field: &'static str, source: &Option<String>| -> Result<Option<String>, RenderError> {
            let Some(source) = source else {
                return Ok(None);
            };
            let script = template::render_script(source, &r.ctx())
                .map_err(|error| RenderError { field, error })?;
            script_env.extend(script.env);
            Ok(Some(script.text))
        };
    let executor = match phase {
        Phase::Undo => ExecSpec::Process {
            script: script_of("undo", &task.undo)?.unwrap_or_default(),
        },
        Phase::Main => match &task.executor {
            Executor::Process => ExecSpec::Process {
                script: script_of("run", &task.run)?.unwrap_or_default(),
            },
            Executor::Docker(d) => {
                let mut spec = d.clone();
                spec.image = r.render(Flavor::Text, "image", &d.image)?;
                if let Some(w) = &d.workdir {
                    spec.workdir = Some(r.render(Flavor::Text, "workdir", w)?);
                }
                ExecSpec::Docker {
                    spec,
                    script: script_of("run", &task.run)?,
                }
            }
            Executor::Http(h) => {
                let mut spec = h.clone();
                spec.url = r.render(Flavor::Text, "http.url", &h.url)?;
                if let Some(body) = &h.body {
                    spec.body = Some(r.render(Flavor::Text, "http.body", body)?);
                }
                if let Some(json) = &h.json {
                    // The parser wrote this text; it is JSON.
                    let value = serde_json::from_str(json).map_err(|e| RenderError {
                        field: "http.json",
                        error: TemplateError {
                            line: None,
                            message: format!("the stored JSON does not parse: {e}"),
                        },
                    })?;
                    spec.json = Some(r.render_json("http.json", &value)?.to_string());
                }
                ExecSpec::Http(spec)
            }
            Executor::Job(j) => {
                let mut spec = j.clone();
                spec.job = r.render(Flavor::Text, "job", &j.job)?;
                for (_, v) in &mut spec.params {
                    *v = r.render(Flavor::Text, "params", v)?;
                }
                ExecSpec::Job(spec)
            }
        },
    };
    let mut env = r.env.clone();
    env.extend(
        r.run
            .params
            .iter()
            .map(|(k, v)| (param_env_name(k), v.clone())),
    );
    env.push(("GANGER_RUN_ID".into(), r.run.id.clone()));
    env.push(("GANGER_JOB".into(), r.run.job.name.clone()));
    env.push(("GANGER_TASK".into(), task.name.clone()));
    env.push(("GANGER_ATTEMPT".into(), attempt.to_string()));
    env.extend(script_env);
    let body = match &task.body {
        Some(body) => Some(r.render_json("body", body)?),
        None => None,
    };
    Ok(TaskSpec {
        task: id,
        name: task.name.clone(),
        attempt,
        phase,
        executor,
        env,
        timeout: task.timeout,
        tags: task.tags.clone(),
        resources: task.resources.clone(),
        params: r.run.params.clone(),
        body,
    })
}
