//! Job files: YAML text to validated [`JobFile`], collecting every problem.
//!
//! Two passes, like a compiler: the first decodes each job and task on its
//! own (keys, types, units, regexes, cron); the second resolves names across
//! tasks (needs, routing sugar, cycles, template references).

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;

use crate::decode::{self, Fields, index, join};
use crate::diag::{Diagnostics, Sink, suggestion};
use crate::model::*;
use crate::template::{self, Flavor, ROOTS};
use crate::yaml::{self, Limits, Node, NodeKind, Pos};

static NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$").expect("valid regex"));
static IDENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").expect("valid regex"));
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_./-]+(=.*)?$").expect("valid regex"));

/// Parses and validates one job file. `file` names it in messages.
pub fn parse_job_file(file: &str, src: &str) -> Result<JobFile, Diagnostics> {
    let mut sink = Sink::new(file);
    let root = match yaml::parse(src, Limits::default()) {
        Ok(root) => root,
        Err(e) => {
            sink.err(e.pos, "", e.message);
            return sink.into_result(JobFile { jobs: Vec::new() });
        }
    };
    let mut jobs = Vec::new();
    if let Some(mut top) = Fields::new(&mut sink, &root, "", "key") {
        match top.take("jobs") {
            Some(node) => {
                if let Some(mut entries) = Fields::new(&mut sink, node, "jobs", "job") {
                    let all = entries.drain();
                    if all.is_empty() {
                        sink.err(node.pos, "jobs", "no jobs defined");
                    }
                    for (name, key, value) in all {
                        if let Some(job) = job(&mut sink, name, key.pos, value) {
                            jobs.push(job);
                        }
                    }
                }
            }
            None => sink.err(root.pos, "", "a job file needs a top-level `jobs:` mapping"),
        }
        top.finish(&mut sink);
    }
    sink.into_result(JobFile { jobs })
}

/// A template found while decoding, checked once all tasks are known.
struct TemplateUse {
    flavor: Flavor,
    source: String,
    pos: Pos,
    block: bool,
    path: String,
    /// The task the template belongs to (`None` for job-level fields).
    task: Option<TaskId>,
    /// `undo` may read its own task's outputs.
    reads_self: bool,
    /// An `env` value: rendered before `env` itself exists.
    env_value: bool,
}

/// `{"jobs":{"<name>":<definition>}}` in canonical JSON.
fn canonical_source(name: &str, node: &Node) -> String {
    let mut out = String::from("{\"jobs\":{");
    yaml::write_json_string(name, &mut out);
    out.push(':');
    node.write_json(&mut out);
    out.push_str("}}");
    out
}

/// A task as decoded, before names are resolved.
struct RawTask {
    task: Task,
    needs: Vec<(String, Pos, String, Vec<Condition>)>,
    /// `on_success` / `on_failure` / `on_exit_code` targets: (target, pos, path, condition).
    routes: Vec<(String, Pos, String, Condition)>,
    templates: Vec<TemplateUse>,
}

fn job(sink: &mut Sink, name: &str, pos: Pos, node: &Node) -> Option<Job> {
    let path = join("jobs", name);
    if !NAME.is_match(name) {
        sink.err(
            pos,
            &path,
            format!("job name `{name}` must start with a letter, digit or `_` and use only letters, digits, `_`, `.` and `-` (at most 100)"),
        );
    }
    let mut f = Fields::new(sink, node, &path, "key")?;
    let mut templates = Vec::new();
    let description = f
        .take("description")
        .and_then(|n| decode::string(sink, n, &f.child("description")));
    let params = f
        .take("params")
        .map(|n| params(sink, n, &f.child("params")))
        .unwrap_or_default();
    let env = f
        .take("env")
        .map(|n| env(sink, n, &f.child("env"), None, &mut templates))
        .unwrap_or_default();
    let concurrency = f.take("concurrency").and_then(|n| {
        let p = f.child("concurrency");
        positive(sink, n, &p)
    });
    let concurrency_key = f.take("concurrency_key").and_then(|n| {
        let p = f.child("concurrency_key");
        let s = decode::string(sink, n, &p)?;
        templates.push(TemplateUse {
            flavor: Flavor::Text,
            source: s.clone(),
            pos: n.pos,
            block: false,
            path: p,
            task: None,
            reads_self: false,
            env_value: false,
        });
        Some(s)
    });
    let queue = f
        .take("queue")
        .map(|n| queue(sink, n, &f.child("queue")))
        .unwrap_or_default();
    let priority = f
        .take("priority")
        .and_then(|n| decode::number::<i32>(sink, n, &f.child("priority"), "an integer"))
        .unwrap_or(0);
    let timeout = f
        .take("timeout")
        .and_then(|n| decode::positive_duration(sink, n, &f.child("timeout")));
    let fail_fast = f
        .take("fail_fast")
        .and_then(|n| decode::boolean(sink, n, &f.child("fail_fast")))
        .unwrap_or(false);
    let default_retry = f
        .take("retry")
        .map(|n| retry(sink, n, &f.child("retry"), RetryPolicy::default()))
        .unwrap_or_default();
    let mut schedules = Vec::new();
    if let Some(n) = f.take("schedule") {
        let p = f.child("schedule");
        if let Some(cron) = decode::string(sink, n, &p) {
            check_cron(sink, &cron, n.pos, &p);
            schedules.push(Schedule {
                cron,
                timezone: None,
                params: Vec::new(),
            });
        }
    }
    if let Some(n) = f.take("schedules") {
        let p = f.child("schedules");
        if let Some(key_pos) = f.key_pos("schedule") {
            sink.err(
                key_pos,
                &p,
                "use either `schedule` or `schedules`, not both",
            );
        }
        schedules.extend(schedule_list(sink, n, &p, &params));
    }
    let tasks_node = f.take("tasks");
    let tasks_path = f.child("tasks");
    f.finish(sink);

    let Some(tasks_node) = tasks_node else {
        sink.err(node.pos, &path, "a job needs `tasks:`");
        return None;
    };
    let mut raw = Vec::new();
    if let Some(mut entries) = Fields::new(sink, tasks_node, &tasks_path, "task") {
        let all = entries.drain();
        if all.is_empty() {
            sink.err(tasks_node.pos, &tasks_path, "a job needs at least one task");
        }
        for (task_name, key, value) in all {
            let task_path = join(&tasks_path, task_name);
            if !NAME.is_match(task_name) {
                sink.err(
                    key.pos,
                    &task_path,
                    format!(
                        "task name `{task_name}` must start with a letter, digit or `_` and use only letters, digits, `_`, `.` and `-` (at most 100)"
                    ),
                );
            }
            let id = raw.len();
            if let Some(t) = task(
                sink,
                task_name,
                id,
                key.pos,
                value,
                &task_path,
                default_retry,
            ) {
                raw.push(t);
            }
        }
    }
    for p in &params {
        if let (Some(d), Some(re)) = (&p.default, &p.pattern)
            && !re.is_match(d)
        {
            let pp = join(&join(&path, "params"), &p.name);
            sink.err(
                pos,
                &pp,
                format!("default `{d}` does not match the pattern `{}`", re.as_str()),
            );
        }
    }
    let job = resolve(
        sink,
        Job {
            name: name.to_owned(),
            source: canonical_source(name, node),
            description,
            params,
            env,
            concurrency,
            concurrency_key,
            queue,
            priority,
            timeout,
            fail_fast,
            schedules,
            tasks: Vec::new(),
            dependants: Vec::new(),
        },
        raw,
        templates,
    )?;
    Some(job)
}

fn positive(sink: &mut Sink, node: &Node, path: &str) -> Option<u32> {
    let n = decode::number::<u32>(sink, node, path, "a positive integer")?;
    if n == 0 {
        sink.err(node.pos, path, "must be at least 1");
        return None;
    }
    Some(n)
}

fn params(sink: &mut Sink, node: &Node, path: &str) -> Vec<ParamSpec> {
    let Some(mut f) = Fields::new(sink, node, path, "param") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, key, value) in f.drain() {
        let p = join(path, name);
        if !IDENT.is_match(name) {
            sink.err(key.pos, &p, format!("param name `{name}` must be an identifier (letters, digits, `_`, not starting with a digit)"));
        }
        // Both would be exported as the same GANGER_PARAM_<NAME>.
        if let Some(other) = out
            .iter()
            .find(|o: &&ParamSpec| o.name.eq_ignore_ascii_case(name))
        {
            sink.err(
                key.pos,
                &p,
                format!(
                    "param `{name}` differs from `{}` only by case; both would be GANGER_PARAM_{}",
                    other.name,
                    name.to_ascii_uppercase()
                ),
            );
        }
        let mut spec = ParamSpec {
            name: name.to_owned(),
            description: None,
            default: None,
            required: false,
            pattern: None,
        };
        match &value.kind {
            NodeKind::Null => {}
            NodeKind::Scalar { value: v, .. } => spec.default = Some(v.clone()),
            NodeKind::Map(_) => {
                let Some(mut pf) = Fields::new(sink, value, &p, "key") else { continue };
                spec.description = pf.take("description").and_then(|n| decode::string(sink, n, &pf.child("description")));
                spec.default = pf.take("default").and_then(|n| decode::string(sink, n, &pf.child("default")));
                spec.required = pf.take("required").and_then(|n| decode::boolean(sink, n, &pf.child("required"))).unwrap_or(false);
                if let Some(n) = pf.take("pattern") {
                    let pp = pf.child("pattern");
                    if let Some(src) = decode::string(sink, n, &pp) {
                        match Regex::new(&src) {
                            Ok(re) => spec.pattern = Some(re),
                            Err(e) => sink.err(n.pos, &pp, format!("pattern does not compile: {}", e.to_string().lines().last().unwrap_or("invalid regex"))),
                        }
                    }
                }
                if spec.required && spec.default.is_some() {
                    sink.err(value.pos, &p, "a param cannot be both `required` and have a `default`");
                }
                pf.finish(sink);
            }
            NodeKind::Seq(_) => sink.err(value.pos, &p, "expected a default value or a mapping with default, required, pattern, description"),
        }
        out.push(spec);
    }
    out
}

fn env(
    sink: &mut Sink,
    node: &Node,
    path: &str,
    task: Option<TaskId>,
    templates: &mut Vec<TemplateUse>,
) -> Vec<(String, String)> {
    decode::string_map(sink, node, path)
        .into_iter()
        .filter_map(|(name, value, pos, block)| {
            let p = join(path, &name);
            if !IDENT.is_match(&name) {
                sink.err(
                    pos,
                    &p,
                    format!("`{name}` is not a valid environment variable name"),
                );
                return None;
            }
            templates.push(TemplateUse {
                flavor: Flavor::Text,
                source: value.clone(),
                pos,
                block,
                path: p,
                task,
                reads_self: false,
                env_value: true,
            });
            Some((name, value))
        })
        .collect()
}

fn queue(sink: &mut Sink, node: &Node, path: &str) -> QueuePolicy {
    let Some(mut f) = Fields::new(sink, node, path, "key") else {
        return QueuePolicy::default();
    };
    let limit = f.take("limit").and_then(|n| {
        decode::number::<u32>(sink, n, &f.child("limit"), "a number of waiting runs")
    });
    let strategy = f
        .take("strategy")
        .and_then(|n| {
            let p = f.child("strategy");
            match decode::string(sink, n, &p)?.as_str() {
                "append" => Some(QueueStrategy::Append),
                "replace" => Some(QueueStrategy::Replace),
                "reject" => Some(QueueStrategy::Reject),
                other => {
                    sink.err(
                        n.pos,
                        &p,
                        format!("unknown queue strategy `{other}`; use append, replace or reject"),
                    );
                    None
                }
            }
        })
        .unwrap_or_default();
    f.finish(sink);
    QueuePolicy { limit, strategy }
}

/// `retry: N` or `retry: {attempts, delay, backoff, max_delay}`; fields not
/// given keep the values of `base` (the job's default).
fn retry(sink: &mut Sink, node: &Node, path: &str, base: RetryPolicy) -> RetryPolicy {
    if let NodeKind::Scalar { .. } = node.kind {
        let attempts = decode::number::<u32>(sink, node, path, "a number of retries or a mapping")
            .unwrap_or(0);
        return RetryPolicy { attempts, ..base };
    }
    let Some(mut f) = Fields::new(sink, node, path, "key") else {
        return base;
    };
    let mut policy = base;
    if let Some(n) = f.take("attempts") {
        policy.attempts =
            decode::number::<u32>(sink, n, &f.child("attempts"), "a number of retries")
                .unwrap_or(0);
    }
    if let Some(n) = f.take("delay") {
        policy.delay = decode::duration(sink, n, &f.child("delay")).unwrap_or_default();
    }
    if let Some(n) = f.take("backoff") {
        let p = f.child("backoff");
        match decode::string(sink, n, &p).as_deref() {
            Some("fixed") => policy.backoff = Backoff::Fixed,
            Some("exponential") => policy.backoff = Backoff::Exponential,
            Some(other) => sink.err(
                n.pos,
                &p,
                format!("unknown backoff `{other}`; use fixed or exponential"),
            ),
            None => {}
        }
    }
    if let Some(n) = f.take("max_delay") {
        policy.max_delay = decode::duration(sink, n, &f.child("max_delay"));
    }
    f.finish(sink);
    policy
}

fn check_cron(sink: &mut Sink, cron: &str, pos: Pos, path: &str) {
    if let Err(e) = croner::Cron::from_str(cron) {
        sink.err(pos, path, format!("invalid cron expression `{cron}`: {e}"));
    }
}

fn schedule_list(
    sink: &mut Sink,
    node: &Node,
    path: &str,
    declared: &[ParamSpec],
) -> Vec<Schedule> {
    let NodeKind::Seq(items) = &node.kind else {
        sink.err(
            node.pos,
            path,
            "expected a list of {cron, timezone, params}",
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let Some(mut f) = Fields::new(sink, item, &p, "key") else {
            continue;
        };
        let cron = f.take("cron").and_then(|n| {
            let cp = f.child("cron");
            let c = decode::string(sink, n, &cp)?;
            check_cron(sink, &c, n.pos, &cp);
            Some(c)
        });
        let timezone = f
            .take("timezone")
            .and_then(|n| decode::string(sink, n, &f.child("timezone")));
        let params = f
            .take("params")
            .map(|n| {
                let pp = f.child("params");
                decode::string_map(sink, n, &pp)
                    .into_iter()
                    .filter(|(k, v, vpos, _)| {
                        schedule_param_ok(sink, declared, k, v, *vpos, &join(&pp, k))
                    })
                    .map(|(k, v, _, _)| (k, v))
                    .collect()
            })
            .unwrap_or_default();
        f.finish(sink);
        match cron {
            Some(cron) => out.push(Schedule {
                cron,
                timezone,
                params,
            }),
            None if f_missing(item) => sink.err(item.pos, &p, "a schedule needs `cron`"),
            None => {}
        }
    }
    out
}

/// A schedule's param must be declared and match its pattern, as a run's
/// params must: the schedule will start runs with it.
fn schedule_param_ok(
    sink: &mut Sink,
    declared: &[ParamSpec],
    name: &str,
    value: &str,
    pos: Pos,
    path: &str,
) -> bool {
    match declared.iter().find(|p| p.name == name) {
        None => {
            let hint = suggestion(name, declared.iter().map(|p| p.name.as_str()));
            sink.err(
                pos,
                path,
                format!("the job declares no param `{name}`{hint}"),
            );
            false
        }
        Some(spec) => match &spec.pattern {
            Some(re) if !re.is_match(value) => {
                sink.err(
                    pos,
                    path,
                    format!(
                        "`{value}` does not match the pattern `{}` of param `{name}`",
                        re.as_str()
                    ),
                );
                false
            }
            _ => true,
        },
    }
}

fn f_missing(item: &Node) -> bool {
    match &item.kind {
        NodeKind::Map(pairs) => !pairs.iter().any(|(k, _)| k.as_str() == Some("cron")),
        _ => false,
    }
}

fn condition_name(sink: &mut Sink, node: &Node, path: &str) -> Option<Condition> {
    if let NodeKind::Map(_) = node.kind {
        let mut f = Fields::new(sink, node, path, "key")?;
        let codes = f
            .take("exit_codes")
            .map(|n| exit_codes(sink, n, &f.child("exit_codes")));
        f.finish(sink);
        return match codes {
            Some(codes) if !codes.is_empty() => Some(Condition::ExitCodes(codes)),
            _ => {
                sink.err(node.pos, path, "expected `exit_codes: [codes]`");
                None
            }
        };
    }
    match decode::string(sink, node, path)?.as_str() {
        "success" => Some(Condition::Success),
        "failure" => Some(Condition::Failure),
        "always" => Some(Condition::Always),
        "skipped" => Some(Condition::Skipped),
        other => {
            let hint = suggestion(other, ["success", "failure", "always", "skipped"]);
            sink.err(node.pos, path, format!("unknown condition `{other}`; use success, failure, always, skipped or {{exit_codes: [..]}}{hint}"));
            None
        }
    }
}

fn exit_codes(sink: &mut Sink, node: &Node, path: &str) -> Vec<i32> {
    match &node.kind {
        NodeKind::Seq(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, n)| decode::number::<i32>(sink, n, &index(path, i), "an exit code"))
            .collect(),
        _ => decode::number::<i32>(sink, node, path, "an exit code")
            .into_iter()
            .collect(),
    }
}

/// `needs: a`, `needs: [a, b]` or `needs: {a: success, b: [failure, skipped], c: {exit_codes: [3]}}`.
fn needs(sink: &mut Sink, node: &Node, path: &str) -> Vec<(String, Pos, String, Vec<Condition>)> {
    if let NodeKind::Map(_) = node.kind {
        let Some(mut f) = Fields::new(sink, node, path, "dependency") else {
            return Vec::new();
        };
        return f
            .drain()
            .into_iter()
            .filter_map(|(name, key, value)| {
                let p = join(path, name);
                let conditions: Vec<Condition> = match &value.kind {
                    NodeKind::Seq(items) => items
                        .iter()
                        .enumerate()
                        .filter_map(|(i, n)| condition_name(sink, n, &index(&p, i)))
                        .collect(),
                    _ => condition_name(sink, value, &p).into_iter().collect(),
                };
                if conditions.is_empty() {
                    return None;
                }
                Some((name.to_owned(), key.pos, p, conditions))
            })
            .collect();
    }
    let single = !matches!(node.kind, NodeKind::Seq(_));
    decode::string_list(sink, node, path)
        .into_iter()
        .enumerate()
        .map(|(i, (name, pos))| {
            let p = if single {
                path.to_owned()
            } else {
                index(path, i)
            };
            (name, pos, p, vec![Condition::Success])
        })
        .collect()
}

fn task(
    sink: &mut Sink,
    name: &str,
    id: TaskId,
    pos: Pos,
    node: &Node,
    path: &str,
    default_retry: RetryPolicy,
) -> Option<RawTask> {
    let mut f = Fields::new(sink, node, path, "key")?;
    let mut templates = Vec::new();
    let shell_template = |sink: &mut Sink,
                          f: &mut Fields<'_>,
                          key: &'static str,
                          reads_self: bool,
                          templates: &mut Vec<TemplateUse>| {
        let n = f.take(key)?;
        let p = f.child(key);
        let s = decode::lines(sink, n, &p)?;
        let block = matches!(n.kind, NodeKind::Scalar { block: true, .. });
        templates.push(TemplateUse {
            flavor: Flavor::Shell,
            source: s.clone(),
            pos: n.pos,
            block,
            path: p,
            task: Some(id),
            reads_self,
            env_value: false,
        });
        Some(s)
    };
    let description = f
        .take("description")
        .and_then(|n| decode::string(sink, n, &f.child("description")));
    let mut run = shell_template(sink, &mut f, "run", false, &mut templates);
    if let Some(script) = shell_template(sink, &mut f, "script", false, &mut templates) {
        if run.is_some() {
            sink.err(
                f.key_pos("script").unwrap_or(pos),
                &f.child("script"),
                "`script` is an alias of `run`; give only one of them",
            );
        }
        run = Some(script);
    }
    let undo = shell_template(sink, &mut f, "undo", true, &mut templates);
    let mut need_list = f
        .take("needs")
        .map(|n| needs(sink, n, &f.child("needs")))
        .unwrap_or_default();
    if let Some(n) = f.take("depends_on") {
        if f.key_pos("needs").is_some() {
            sink.err(
                f.key_pos("depends_on").unwrap_or(pos),
                &f.child("depends_on"),
                "`depends_on` is an alias of `needs`; give only one of them",
            );
        }
        need_list.extend(needs(sink, n, &f.child("depends_on")));
    }
    let mut routes = Vec::new();
    let mut routed_exit_codes = BTreeSet::new();
    for (key, condition) in [
        ("on_success", Condition::Success),
        ("on_failure", Condition::Failure),
    ] {
        if let Some(n) = f.take(key) {
            let p = f.child(key);
            let single = !matches!(n.kind, NodeKind::Seq(_));
            for (i, (target, tpos)) in decode::string_list(sink, n, &p).into_iter().enumerate() {
                let tp = if single { p.clone() } else { index(&p, i) };
                routes.push((target, tpos, tp, condition.clone()));
            }
        }
    }
    if let Some(n) = f.take("on_exit_code") {
        let p = f.child("on_exit_code");
        if let Some(mut codes) = Fields::new(sink, n, &p, "exit code") {
            for (code, key, value) in codes.drain() {
                let cp = join(&p, code);
                let Ok(code) = code.parse::<i32>() else {
                    sink.err(key.pos, &cp, format!("`{code}` is not an exit code"));
                    continue;
                };
                if code == 0 {
                    sink.err(key.pos, &cp, "exit code 0 is success: use `on_success`");
                    continue;
                }
                if !(1..=255).contains(&code) {
                    sink.err(
                        key.pos,
                        &cp,
                        format!("exit code {code} can never happen: exit codes run from 1 to 255"),
                    );
                    continue;
                }
                routed_exit_codes.insert(code);
                let single = !matches!(value.kind, NodeKind::Seq(_));
                for (i, (target, tpos)) in decode::string_list(sink, value, &cp)
                    .into_iter()
                    .enumerate()
                {
                    let tp = if single { cp.clone() } else { index(&cp, i) };
                    routes.push((target, tpos, tp, Condition::ExitCodes(vec![code])));
                }
            }
        }
    }
    let condition = f.take("if").and_then(|n| {
        let p = f.child("if");
        let s = decode::string(sink, n, &p)?;
        templates.push(TemplateUse {
            flavor: Flavor::Condition,
            source: s.clone(),
            pos: n.pos,
            block: false,
            path: p,
            task: Some(id),
            reads_self: false,
            env_value: false,
        });
        Some(s)
    });
    let allow_failure = f
        .take("allow_failure")
        .and_then(|n| decode::boolean(sink, n, &f.child("allow_failure")))
        .unwrap_or(false);
    let always = f
        .take("always")
        .and_then(|n| decode::boolean(sink, n, &f.child("always")))
        .unwrap_or(false);
    let env = f
        .take("env")
        .map(|n| env(sink, n, &f.child("env"), Some(id), &mut templates))
        .unwrap_or_default();
    let timeout = f
        .take("timeout")
        .and_then(|n| decode::positive_duration(sink, n, &f.child("timeout")));
    let retry = f
        .take("retry")
        .map(|n| retry(sink, n, &f.child("retry"), default_retry))
        .unwrap_or(default_retry);
    let tags = f
        .take("tags")
        .map(|n| {
            let p = f.child("tags");
            decode::string_list(sink, n, &p)
                .into_iter()
                .filter(|(t, tpos)| {
                    let ok = TAG.is_match(t);
                    if !ok {
                        sink.err(*tpos, &p, format!("tag `{t}` must be `key=value` or `key` (letters, digits, `_./-` in the key)"));
                    }
                    ok
                })
                .map(|(t, _)| t)
                .collect()
        })
        .unwrap_or_default();
    let resources = f
        .take("resources")
        .and_then(|n| resources(sink, n, &f.child("resources")));
    let artifacts = f
        .take("artifacts")
        .map(|n| artifacts(sink, n, &f.child("artifacts")))
        .unwrap_or_default();
    let for_each = f.take("for_each").and_then(|n| {
        let p = f.child("for_each");
        let s = decode::string(sink, n, &p)?;
        templates.push(TemplateUse {
            flavor: Flavor::Text,
            source: s.clone(),
            pos: n.pos,
            block: false,
            path: p,
            task: Some(id),
            reads_self: false,
            env_value: false,
        });
        Some(s)
    });
    let body = f
        .take("body")
        .map(|n| json_value(sink, n, &f.child("body"), id, &mut templates));
    let executor = executor(sink, &mut f, pos, run.is_some(), id, &mut templates);
    if body.is_some()
        && let Executor::Http(_) | Executor::Job(_) = executor
    {
        sink.err(
            f.key_pos("body").unwrap_or(pos),
            &f.child("body"),
            format!(
                "`body` is what a task reads from its job endpoint ($GANGER_JOB_URL), which only process and docker tasks have; executor `{}` has none (an http call sends `http.json` or `http.body`)",
                executor.name()
            ),
        );
    }
    f.finish(sink);
    Some(RawTask {
        task: Task {
            name: name.to_owned(),
            description,
            needs: Vec::new(),
            executor,
            run,
            env,
            timeout,
            retry,
            tags,
            resources,
            artifacts,
            undo,
            condition,
            allow_failure,
            always,
            routed_exit_codes,
            for_each,
            body,
        },
        needs: need_list,
        routes,
        templates,
    })
}

fn resources(sink: &mut Sink, node: &Node, path: &str) -> Option<Resources> {
    let mut f = Fields::new(sink, node, path, "key")?;
    let cpu = f.take("cpu").and_then(|n| {
        let p = f.child("cpu");
        let c = decode::number::<f64>(sink, n, &p, "a number of CPUs")?;
        if !(c > 0.0 && c.is_finite()) {
            sink.err(n.pos, &p, "cpu must be more than 0");
            return None;
        }
        Some(c)
    });
    let memory = f.take("memory").and_then(|n| {
        let p = f.child("memory");
        let m = decode::size(sink, n, &p)?;
        if m == 0 {
            sink.err(n.pos, &p, "memory must be more than 0");
            return None;
        }
        Some(m)
    });
    let pids = f
        .take("pids")
        .and_then(|n| positive(sink, n, &f.child("pids")).map(u64::from));
    f.finish(sink);
    Some(Resources { cpu, memory, pids })
}

/// Artifact paths are relative to the task workspace and may not leave it.
fn artifacts(sink: &mut Sink, node: &Node, path: &str) -> Vec<String> {
    decode::string_list(sink, node, path)
        .into_iter()
        .filter(|(a, pos)| {
            let escapes = a.starts_with('/') || a.split('/').any(|c| c == "..");
            if escapes || a.is_empty() {
                sink.err(*pos, path, format!("artifact `{a}` must be a relative path inside the workspace (no leading `/`, no `..`)"));
            }
            !escapes && !a.is_empty()
        })
        .map(|(a, _)| a)
        .collect()
}

const DOCKER_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "workdir",
    "pull",
    "network",
    "user",
    "volumes",
    "services",
];

fn executor(
    sink: &mut Sink,
    f: &mut Fields<'_>,
    pos: Pos,
    has_run: bool,
    id: TaskId,
    templates: &mut Vec<TemplateUse>,
) -> Executor {
    let declared = f.take("executor").and_then(|n| {
        let p = f.child("executor");
        let s = decode::string(sink, n, &p)?;
        match s.as_str() {
            "process" | "docker" | "http" | "job" => Some(s),
            other => {
                let hint = suggestion(other, ["process", "docker", "http", "job"]);
                sink.err(
                    n.pos,
                    &p,
                    format!("unknown executor `{other}`; use process, docker, http or job{hint}"),
                );
                None
            }
        }
    });
    // The executor is implied by its own keys when not named.
    let kind = declared.unwrap_or_else(|| {
        if f.key_pos("image").is_some() {
            "docker".into()
        } else if f.key_pos("http").is_some() {
            "http".into()
        } else if f.key_pos("job").is_some() {
            "job".into()
        } else {
            "process".into()
        }
    });
    let misplaced = |sink: &mut Sink, f: &mut Fields<'_>, keys: &[&'static str], kind: &str| {
        for key in keys {
            if let Some(kpos) = f.key_pos(key) {
                f.take(key);
                sink.err(
                    kpos,
                    &f.child(key),
                    format!("`{key}` does not apply to executor `{kind}`"),
                );
            }
        }
    };
    let text = |sink: &mut Sink,
                f: &mut Fields<'_>,
                key: &'static str,
                templates: &mut Vec<TemplateUse>| {
        let n = f.take(key)?;
        let p = f.child(key);
        let s = decode::string(sink, n, &p)?;
        templates.push(TemplateUse {
            flavor: Flavor::Text,
            source: s.clone(),
            pos: n.pos,
            block: false,
            path: p,
            task: Some(id),
            reads_self: false,
            env_value: false,
        });
        Some(s)
    };
    match kind.as_str() {
        "docker" => {
            misplaced(sink, f, &["http", "job", "params"], "docker");
            let image = text(sink, f, "image", templates);
            let argv = |sink: &mut Sink, f: &mut Fields<'_>, key: &'static str| {
                f.take(key).map(|n| {
                    decode::string_list(sink, n, &f.child(key))
                        .into_iter()
                        .map(|(s, _)| s)
                        .collect::<Vec<_>>()
                })
            };
            let command = argv(sink, f, "command");
            let entrypoint = argv(sink, f, "entrypoint");
            if command.is_some() && has_run {
                sink.err(
                    f.key_pos("command").unwrap_or(pos),
                    &f.child("command"),
                    "give either `run` (a script) or `command` (an argv), not both",
                );
            }
            let workdir = text(sink, f, "workdir", templates);
            let pull = f
                .take("pull")
                .and_then(|n| {
                    let p = f.child("pull");
                    match decode::string(sink, n, &p)?.as_str() {
                        "always" => Some(PullPolicy::Always),
                        "if-missing" => Some(PullPolicy::IfMissing),
                        "never" => Some(PullPolicy::Never),
                        other => {
                            sink.err(
                                n.pos,
                                &p,
                                format!(
                                    "unknown pull policy `{other}`; use always, if-missing or never"
                                ),
                            );
                            None
                        }
                    }
                })
                .unwrap_or_default();
            let network = text(sink, f, "network", templates);
            let user = text(sink, f, "user", templates);
            let volumes = f
                .take("volumes")
                .map(|n| {
                    let p = f.child("volumes");
                    decode::string_list(sink, n, &p)
                        .into_iter()
                        .filter(|(v, vpos)| {
                            let parts: Vec<&str> = v.split(':').collect();
                            let ok = (2..=3).contains(&parts.len())
                                && !parts[0].is_empty()
                                && parts[1].starts_with('/')
                                && parts.get(2).is_none_or(|m| matches!(*m, "ro" | "rw"));
                            if !ok {
                                sink.err(*vpos, &p, format!("volume `{v}` must be `source:/container/path` with an optional `:ro` or `:rw`"));
                            }
                            ok
                        })
                        .map(|(v, _)| v)
                        .collect()
                })
                .unwrap_or_default();
            let services = f
                .take("services")
                .map(|n| services(sink, n, &f.child("services")))
                .unwrap_or_default();
            if image.is_none() && f.key_pos("image").is_none() {
                sink.err(pos, &f.path, "a docker task needs `image`");
            }
            Executor::Docker(DockerSpec {
                image: image.unwrap_or_default(),
                command,
                entrypoint,
                workdir,
                pull,
                network,
                user,
                volumes,
                services,
            })
        }
        "http" => {
            misplaced(sink, f, DOCKER_KEYS, "http");
            misplaced(sink, f, &["job", "params"], "http");
            if has_run {
                sink.err(
                    f.key_pos("run").or(f.key_pos("script")).unwrap_or(pos),
                    &f.child("run"),
                    "an http task has no `run`; describe the call under `http:`",
                );
            }
            match f.take("http") {
                Some(n) => http(sink, n, &f.child("http"), id, templates)
                    .map_or(Executor::Process, Executor::Http),
                None => {
                    sink.err(pos, &f.path, "an http task needs `http: {method, url}`");
                    Executor::Process
                }
            }
        }
        "job" => {
            misplaced(sink, f, DOCKER_KEYS, "job");
            misplaced(sink, f, &["http"], "job");
            if has_run {
                sink.err(
                    f.key_pos("run").or(f.key_pos("script")).unwrap_or(pos),
                    &f.child("run"),
                    "a job task has no `run`; it starts the job named by `job`",
                );
            }
            let job = text(sink, f, "job", templates);
            let params = f
                .take("params")
                .map(|n| {
                    let p = f.child("params");
                    decode::string_map(sink, n, &p)
                        .into_iter()
                        .map(|(k, v, vpos, block)| {
                            templates.push(TemplateUse {
                                flavor: Flavor::Text,
                                source: v.clone(),
                                pos: vpos,
                                block,
                                path: join(&p, &k),
                                task: Some(id),
                                reads_self: false,
                                env_value: false,
                            });
                            (k, v)
                        })
                        .collect()
                })
                .unwrap_or_default();
            if job.is_none() && f.key_pos("job").is_none() {
                sink.err(pos, &f.path, "a job task needs `job: <name>`");
            }
            Executor::Job(ChildJobSpec {
                job: job.unwrap_or_default(),
                params,
            })
        }
        _ => {
            misplaced(sink, f, DOCKER_KEYS, "process");
            misplaced(sink, f, &["http", "job", "params"], "process");
            Executor::Process
        }
    }
}

fn services(sink: &mut Sink, node: &Node, path: &str) -> Vec<Service> {
    let NodeKind::Seq(items) = &node.kind else {
        sink.err(node.pos, path, "expected a list of {name, image}");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let Some(mut f) = Fields::new(sink, item, &p, "key") else {
            continue;
        };
        let name = f
            .take("name")
            .and_then(|n| decode::string(sink, n, &f.child("name")));
        let image = f
            .take("image")
            .and_then(|n| decode::string(sink, n, &f.child("image")));
        let env = f
            .take("env")
            .map(|n| {
                decode::string_map(sink, n, &f.child("env"))
                    .into_iter()
                    .map(|(k, v, _, _)| (k, v))
                    .collect()
            })
            .unwrap_or_default();
        let command = f.take("command").map(|n| {
            decode::string_list(sink, n, &f.child("command"))
                .into_iter()
                .map(|(s, _)| s)
                .collect()
        });
        f.finish(sink);
        match (name, image) {
            (Some(name), Some(image)) => out.push(Service {
                name,
                image,
                env,
                command,
            }),
            _ => sink.err(item.pos, &p, "a service needs `name` and `image`"),
        }
    }
    out
}

fn http(
    sink: &mut Sink,
    node: &Node,
    path: &str,
    id: TaskId,
    templates: &mut Vec<TemplateUse>,
) -> Option<HttpSpec> {
    let mut f = Fields::new(sink, node, path, "key")?;
    let method = f
        .take("method")
        .and_then(|n| {
            let p = f.child("method");
            let m = decode::string(sink, n, &p)?.to_ascii_uppercase();
            if !matches!(
                m.as_str(),
                "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD"
            ) {
                sink.err(n.pos, &p, format!("unknown HTTP method `{m}`"));
            }
            Some(m)
        })
        .unwrap_or_else(|| "GET".into());
    let url = f.take("url").and_then(|n| {
        let p = f.child("url");
        let u = decode::string(sink, n, &p)?;
        if !(u.starts_with("http://") || u.starts_with("https://") || u.starts_with("{{")) {
            sink.err(
                n.pos,
                &p,
                format!("url `{u}` must start with http:// or https://"),
            );
        }
        templates.push(TemplateUse {
            flavor: Flavor::Text,
            source: u.clone(),
            pos: n.pos,
            block: false,
            path: p,
            task: Some(id),
            reads_self: false,
            env_value: false,
        });
        Some(u)
    });
    let headers = f
        .take("headers")
        .map(|n| {
            decode::string_map(sink, n, &f.child("headers"))
                .into_iter()
                .map(|(k, v, _, _)| (k, v))
                .collect()
        })
        .unwrap_or_default();
    let json = f
        .take("json")
        .map(|n| json_value(sink, n, &f.child("json"), id, templates).to_string());
    let body = f
        .take("body")
        .and_then(|n| decode::string(sink, n, &f.child("body")));
    let timeout = f
        .take("timeout")
        .and_then(|n| decode::positive_duration(sink, n, &f.child("timeout")));
    if json.is_some() && body.is_some() {
        sink.err(node.pos, path, "give either `json` or `body`, not both");
    }
    let url_missing = url.is_none() && f.key_pos("url").is_none();
    f.finish(sink);
    if url_missing {
        sink.err(node.pos, path, "an http call needs `url`");
    }
    Some(HttpSpec {
        method,
        url: url.unwrap_or_default(),
        headers,
        json,
        body,
        timeout,
    })
}

/// A free-form JSON value (a task's `body`, an http call's `json`): the
/// YAML as [`decode::to_json`] reads it, each string a text template,
/// checked with the task's other templates at the string's own position.
fn json_value(
    sink: &mut Sink,
    node: &Node,
    path: &str,
    id: TaskId,
    templates: &mut Vec<TemplateUse>,
) -> serde_json::Value {
    fn walk(
        sink: &mut Sink,
        node: &Node,
        path: &str,
        id: TaskId,
        templates: &mut Vec<TemplateUse>,
    ) {
        match &node.kind {
            NodeKind::Null => {}
            NodeKind::Scalar { value, block } => {
                if template::is_template(value) && decode::to_json(node).is_string() {
                    templates.push(TemplateUse {
                        flavor: Flavor::Text,
                        source: value.clone(),
                        pos: node.pos,
                        block: *block,
                        path: path.to_owned(),
                        task: Some(id),
                        reads_self: false,
                        env_value: false,
                    });
                }
            }
            NodeKind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(sink, item, &index(path, i), id, templates);
                }
            }
            NodeKind::Map(pairs) => {
                for (key, value) in pairs {
                    match key.as_str() {
                        Some(name) => walk(sink, value, &join(path, name), id, templates),
                        None => sink.err(
                            key.pos,
                            path,
                            format!(
                                "keys must be strings (JSON has no other), found {}",
                                key.kind_name()
                            ),
                        ),
                    }
                }
            }
        }
    }
    walk(sink, node, path, id, templates);
    decode::to_json(node)
}

/// Second pass: resolve names, apply routing sugar, reject cycles, check templates.
fn resolve(
    sink: &mut Sink,
    mut job: Job,
    mut raw: Vec<RawTask>,
    mut job_templates: Vec<TemplateUse>,
) -> Option<Job> {
    let n = raw.len();
    let mut needs: Vec<Vec<Need>> = vec![Vec::new(); n];
    // Where each need was written (parallel to `needs`), for cycle reports.
    let mut origins: Vec<Vec<(Pos, String)>> = vec![Vec::new(); n];
    let written: Vec<_> = raw
        .iter_mut()
        .map(|t| (std::mem::take(&mut t.needs), std::mem::take(&mut t.routes)))
        .collect();
    {
        let ids: HashMap<&str, TaskId> = raw
            .iter()
            .enumerate()
            .map(|(i, t)| (t.task.name.as_str(), i))
            .collect();
        let lookup =
            |sink: &mut Sink, name: &str, pos: Pos, path: &str, me: TaskId| match ids.get(name) {
                Some(&id) if id == me => {
                    sink.err(pos, path, format!("task `{name}` cannot depend on itself"));
                    None
                }
                Some(&id) => Some(id),
                None => {
                    let hint = suggestion(name, ids.keys().copied());
                    sink.err(pos, path, format!("unknown task `{name}`{hint}"));
                    None
                }
            };
        // (dependant, dependency) → index in needs[dependant]: an edge written
        // twice (in `needs` and through `on_*` sugar) merges its conditions.
        let mut edge: HashMap<(TaskId, TaskId), usize> = HashMap::new();
        let mut add =
            |dependant: TaskId, dep: TaskId, conditions: Vec<Condition>, origin: (Pos, String)| {
                match edge.entry((dependant, dep)) {
                    Entry::Occupied(i) => {
                        let need = &mut needs[dependant][*i.get()];
                        for c in conditions {
                            if !need.conditions.contains(&c) {
                                need.conditions.push(c);
                            }
                        }
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(needs[dependant].len());
                        needs[dependant].push(Need {
                            task: dep,
                            conditions,
                        });
                        origins[dependant].push(origin);
                    }
                }
            };
        for (me, (task_needs, routes)) in written.into_iter().enumerate() {
            for (name, pos, path, conditions) in task_needs {
                if let Some(dep) = lookup(sink, &name, pos, &path, me) {
                    add(me, dep, conditions, (pos, path));
                }
            }
            for (target, pos, path, condition) in routes {
                if let Some(dependant) = lookup(sink, &target, pos, &path, me) {
                    add(dependant, me, vec![condition], (pos, path));
                }
            }
        }
    }
    let mut templates: Vec<TemplateUse> = Vec::new();
    let mut tasks = Vec::with_capacity(n);
    for (t, n) in raw.into_iter().zip(needs) {
        let mut task = t.task;
        task.needs = n;
        templates.extend(t.templates);
        tasks.push(task);
    }
    let mut dependants = vec![Vec::new(); tasks.len()];
    for (i, t) in tasks.iter().enumerate() {
        for (k, n) in t.needs.iter().enumerate() {
            dependants[n.task].push((i, k));
        }
    }
    job.tasks = tasks;
    job.dependants = dependants;
    report_cycles(sink, &job, &origins);
    templates.append(&mut job_templates);
    for use_ in &templates {
        check_template(sink, &job, use_);
    }
    Some(job)
}

/// Reports each cycle once, at the `needs` entry that closes it.
fn report_cycles(sink: &mut Sink, job: &Job, origins: &[Vec<(Pos, String)>]) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let n = job.tasks.len();
    let mut mark = vec![Mark::New; n];
    for start in 0..n {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS along needs edges; `stack` holds (task, next need index).
        let mut stack: Vec<(TaskId, usize)> = vec![(start, 0)];
        mark[start] = Mark::Active;
        while let Some(&mut (t, ref mut i)) = stack.last_mut() {
            if let Some(need) = job.tasks[t].needs.get(*i) {
                let k = *i;
                *i += 1;
                let dep = need.task;
                match mark[dep] {
                    Mark::New => {
                        mark[dep] = Mark::Active;
                        stack.push((dep, 0));
                    }
                    Mark::Active => {
                        let from = stack.iter().position(|(s, _)| *s == dep).unwrap_or(0);
                        let mut cycle: Vec<&str> = stack[from..]
                            .iter()
                            .map(|(s, _)| job.tasks[*s].name.as_str())
                            .collect();
                        cycle.push(job.tasks[dep].name.as_str());
                        let text = cycle
                            .windows(2)
                            .map(|w| format!("`{}` needs `{}`", w[0], w[1]))
                            .collect::<Vec<_>>()
                            .join(", ");
                        let (pos, path) = origins[t].get(k).cloned().unwrap_or_default();
                        sink.err(pos, &path, format!("dependency cycle: {text}"));
                    }
                    Mark::Done => {}
                }
            } else {
                mark[t] = Mark::Done;
                stack.pop();
            }
        }
    }
}

fn check_template(sink: &mut Sink, job: &Job, use_: &TemplateUse) {
    let vars = match template::variables(use_.flavor, &use_.source) {
        Ok(vars) => vars,
        Err(e) => {
            let mut pos = use_.pos;
            if let (true, Some(line)) = (use_.block, e.line) {
                pos.line += u32::try_from(line).unwrap_or(0);
                pos.col = 1;
            }
            sink.err(
                pos,
                &use_.path,
                format!("template does not compile: {}", e.message),
            );
            return;
        }
    };
    let task = use_.task.map(|id| &job.tasks[id]);
    // Computed only for templates that read other tasks: it walks the graph.
    let mut ancestors = None;
    for var in vars {
        let mut parts = var.split('.');
        let root = parts.next().unwrap_or_default();
        let second = parts.next();
        match root {
            "params" => {
                if let Some(name) = second
                    && !job.params.iter().any(|p| p.name == name)
                {
                    let declared: Vec<&str> = job.params.iter().map(|p| p.name.as_str()).collect();
                    let hint = suggestion(name, declared.iter().copied());
                    let list = if declared.is_empty() {
                        "none".to_owned()
                    } else {
                        declared.join(", ")
                    };
                    sink.err(
                        use_.pos,
                        &use_.path,
                        format!("template uses undeclared param `{name}` (declared: {list}){hint}"),
                    );
                }
            }
            "item" => {
                if task.is_none_or(|t| t.for_each.is_none()) {
                    sink.err(
                        use_.pos,
                        &use_.path,
                        "`item` is only defined in a task with `for_each`",
                    );
                }
            }
            "tasks" => {
                let Some(name) = second else { continue };
                match (job.task_id(name), use_.task) {
                    (None, _) => {
                        let hint = suggestion(name, job.tasks.iter().map(|t| t.name.as_str()));
                        sink.err(
                            use_.pos,
                            &use_.path,
                            format!("template refers to unknown task `{name}`{hint}"),
                        );
                    }
                    (Some(_), None) => sink.err(
                        use_.pos,
                        &use_.path,
                        "job-level fields cannot read task results",
                    ),
                    (Some(id), Some(me)) => {
                        let own = id == me && use_.reads_self;
                        if !own
                            && !ancestors
                                .get_or_insert_with(|| job.ancestors(me))
                                .contains(&id)
                        {
                            let me = &job.tasks[me].name;
                            sink.err(use_.pos, &use_.path, format!("task `{name}` is not upstream of `{me}`, so its results are not known when `{me}` runs; add it to `needs`"));
                        }
                    }
                }
            }
            "env" => {
                let Some(name) = second else { continue };
                if use_.env_value {
                    sink.err(use_.pos, &use_.path, "an `env` value cannot read `env.*`: env is rendered first; use the value itself or a param");
                    continue;
                }
                let declared = job.env.iter().chain(task.map_or(&[][..], |t| &t.env[..]));
                if !declared.clone().any(|(k, _)| k == name) {
                    let hint = suggestion(name, declared.map(|(k, _)| k.as_str()));
                    sink.err(use_.pos, &use_.path, format!("template reads `env.{name}`, which neither the job nor the task declares under `env:`{hint}"));
                }
            }
            "secrets" => sink.err(
                use_.pos,
                &use_.path,
                "`secrets.*` is not available in this version of ganger yet",
            ),
            r if ROOTS.contains(&r) => {}
            other => {
                let hint = suggestion(other, ROOTS.iter().copied());
                sink.err(
                    use_.pos,
                    &use_.path,
                    format!(
                        "template uses unknown variable `{other}`; templates can read {}{hint}",
                        ROOTS.join(", ")
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<String> {
        match parse_job_file("t.yml", yaml) {
            Ok(_) => Vec::new(),
            Err(d) => d.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn assert_error(yaml: &str, fragment: &str) {
        let errs = errors(yaml);
        assert!(
            errs.iter().any(|e| e.contains(fragment)),
            "expected `{fragment}` in {errs:#?}"
        );
    }

    #[test]
    fn env_reads_must_be_declared() {
        assert_error(
            "jobs:\n j:\n  tasks:\n   a: {run: 'echo {{ env.HOME }}'}\n",
            "neither the job nor the task declares",
        );
        assert!(errors("jobs:\n j:\n  env: {A: x}\n  tasks:\n   a: {run: 'echo {{ env.A }}', env: {B: y}}\n   b: {run: 'echo {{ env.B }}', env: {B: y}}\n").is_empty());
        assert_error(
            "jobs:\n j:\n  env: {A: x, B: '{{ env.A }}'}\n  tasks:\n   a: {run: x}\n",
            "cannot read `env.*`",
        );
    }

    #[test]
    fn secrets_are_not_available_yet() {
        assert_error(
            "jobs:\n j:\n  tasks:\n   a: {run: 'echo {{ secrets.T }}'}\n",
            "not available in this version",
        );
    }

    #[test]
    fn impossible_values_are_refused() {
        assert_error(
            "jobs:\n j:\n  tasks:\n   a: {run: x, on_exit_code: {256: b}}\n   b: {run: x}\n",
            "can never happen",
        );
        assert_error(
            "jobs:\n j:\n  tasks:\n   a: {run: x, timeout: 0s}\n",
            "must be more than 0",
        );
        assert_error(
            "jobs:\n j:\n  tasks:\n   a: {run: x, resources: {memory: 0}}\n",
            "memory must be more than 0",
        );
        assert_error(
            "jobs:\n j:\n  params: {ab: 1, AB: 2}\n  tasks:\n   a: {run: x}\n",
            "only by case",
        );
    }

    #[test]
    fn a_jobs_source_parses_back_to_the_same_job() {
        let yaml = r#"jobs:
 first: {tasks: {x: {run: 'true'}}}
 build:
  params: {v: {default: "a\tb\"c", pattern: '^.*$'}}
  env: &e {A: '1'}
  tasks:
   t:
    run: |
      echo {{ params.v }}
      echo done
    env: *e
    retry: 2
    needs: [u]
   u: {run: x, timeout: 5s, on_exit_code: {3: t}}
"#;
        let file = parse_job_file("t.yml", yaml).unwrap_or_else(|e| panic!("{e}"));
        let build = &file.jobs[1];
        let again = parse_job_file("stored", &build.source)
            .unwrap_or_else(|e| panic!("{e}\n{}", build.source));
        assert_eq!(again.jobs.len(), 1);
        assert_eq!(format!("{:?}", again.jobs[0]), format!("{build:?}"));
        // The same definition in another YAML style has the same source.
        let flow = "jobs:\n  first: {tasks: {x: {run: 'true'}}}";
        let block = "jobs:\n  first:\n    tasks:\n      x:\n        run: \"true\"\n";
        let a = parse_job_file("a", flow).unwrap_or_else(|e| panic!("{e}"));
        let b = parse_job_file("b", block).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.jobs[0].source, b.jobs[0].source);
    }

    #[test]
    fn a_task_body_is_any_value_with_templates_in_its_strings() {
        let yaml = "jobs:\n j:\n  params: {n: {default: '1'}}\n  tasks:\n   a:\n    run: x\n    body:\n     size: 3\n     on: true\n     items: [a, '{{ params.n }}']\n     none: ~\n";
        let file = parse_job_file("t.yml", yaml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            file.jobs[0].tasks[0].body,
            Some(serde_json::json!({
                "size": 3, "on": true, "items": ["a", "{{ params.n }}"], "none": null
            }))
        );
        // Each string is checked where it stands, with its own key path.
        let bad = "jobs:\n j:\n  tasks:\n   a:\n    run: x\n    body:\n     items: [a, '{{ params.nope }}']\n";
        assert_eq!(
            errors(bad),
            vec![
                "t.yml:7:17: jobs.j.tasks.a.body.items[1]: template uses undeclared param `nope` (declared: none)"
            ]
        );
        assert_error(
            "jobs:\n j:\n  tasks:\n   a: {run: x, body: {v: '{{ tasks.b.outputs.x }}'}}\n   b: {run: x}\n",
            "task `b` is not upstream of `a`",
        );
        assert_error(
            "jobs:\n j:\n  tasks:\n   a: {run: x, body: {v: '{{ params.x '}}\n",
            "body.v: template does not compile",
        );
        assert_error(
            "jobs:\n j:\n  tasks:\n   a: {body: {x: 1}, http: {url: 'http://x'}}\n",
            "executor `http` has none",
        );
        assert_error(
            "jobs:\n j:\n  tasks:\n   a: {run: x, body: {[1]: 2}}\n",
            "keys must be strings",
        );
    }

    #[test]
    fn http_json_templates_are_checked() {
        assert_error(
            "jobs:\n j:\n  tasks:\n   a: {http: {url: 'http://x', method: POST, json: {v: '{{ params.nope }}'}}}\n",
            "jobs.j.tasks.a.http.json.v: template uses undeclared param `nope`",
        );
    }

    #[test]
    fn schedule_params_are_checked() {
        let yaml = "jobs:\n j:\n  params: {env: {pattern: '^(dev|prod)$', default: dev}}\n  schedules:\n   - {cron: '0 * * * *', params: {env: test, nope: 1}}\n  tasks:\n   a: {run: x}\n";
        assert_error(yaml, "does not match the pattern");
        assert_error(yaml, "declares no param `nope`");
    }
}
