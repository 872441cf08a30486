//! The job endpoint: a small HTTP server through which a running task reads
//! its job and tells how far along it is, with outputs (Foreman's
//! job-container protocol, under ganger's names as well).
//!
//! Every attempt gets a URL of its own, `http://<addr>/job/<secret>`, in
//! `GANGER_JOB_URL` and Foreman's `FOREMAN_GET_JOB_ENDPOINT` and
//! `FOREMAN_PUT_JOB_ENDPOINT`:
//!
//! - `GET` answers `{id, run, task, phase, attempt, params, body}`.
//! - `PUT` with `x-ganger-job-status: running|completed` (or
//!   `x-foreman-job-status`) and, optionally, `x-ganger-job-progress:
//!   0.0–1.0` (or `x-foreman-job-progress`) records progress; a JSON object
//!   body records outputs. `completed` is final: a later `PUT` gets 409.
//!
//! The secret (128 random bits) is the only credential: the server answers
//! nothing else, looks secrets up by their SHA-256 (so a guess's timing
//! tells nothing about the real one), and forgets an attempt's secret when
//! its [`JobHandle`] is dropped. Processes of other attempts on the same
//! host cannot reach another attempt's job without reading its environment.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use ganger_api::{ErrorBody, ErrorDetail, code};
use ganger_core::run::{Phase, TaskSpec};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::task::AbortHandle;

/// The variable a task finds its job endpoint's URL in.
pub const URL_VAR: &str = "GANGER_JOB_URL";
/// Foreman's names for the same URL, so its job images run unchanged.
pub const FOREMAN_VARS: [&str; 2] = ["FOREMAN_GET_JOB_ENDPOINT", "FOREMAN_PUT_JOB_ENDPOINT"];
/// Headers of a `PUT`, ganger's name first, then Foreman's.
const STATUS_HEADERS: [&str; 2] = ["x-ganger-job-status", "x-foreman-job-status"];
const PROGRESS_HEADERS: [&str; 2] = ["x-ganger-job-progress", "x-foreman-job-progress"];
/// Largest request body read: outputs are small, and a task must not be
/// able to make its agent buffer without end.
pub const BODY_LIMIT: usize = 64 << 10;
/// Random bytes in a secret: 128 bits.
const SECRET_BYTES: usize = 16;

/// What a task's `GET` answers: the job it runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobInfo {
    /// The attempt, as `<run>/<task>/<attempt>` (`<run>/<task>/undo/<attempt>`
    /// for a compensation): unique within the installation.
    pub id: String,
    pub run: String,
    pub task: String,
    /// `main` or `undo`.
    pub phase: Phase,
    pub attempt: u32,
    /// The run's params, by their declared names.
    pub params: BTreeMap<String, String>,
    /// The task's `body`, rendered; `null` when it has none.
    pub body: Option<serde_json::Value>,
}

impl JobInfo {
    /// The job of one attempt of a run's task.
    pub fn new(run_id: &str, spec: &TaskSpec) -> JobInfo {
        let id = match spec.phase {
            Phase::Main => format!("{run_id}/{}/{}", spec.name, spec.attempt),
            Phase::Undo => format!("{run_id}/{}/undo/{}", spec.name, spec.attempt),
        };
        JobInfo {
            id,
            run: run_id.to_owned(),
            task: spec.name.clone(),
            phase: spec.phase,
            attempt: spec.attempt,
            params: spec.params.clone(),
            body: spec.body.clone(),
        }
    }
}

/// What one accepted `PUT` said, handed to the attempt's [`Report`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JobProgress {
    /// The progress this `PUT` set (`0.0..=1.0`); `None` when it set none.
    /// `completed` without a progress header sets `1.0`.
    pub progress: Option<f64>,
    /// This `PUT` completed the job (it happens once).
    pub completed: bool,
}

impl JobProgress {
    /// The line the attempt's log shows for it (without time and stream),
    /// or `None` when it told nothing to show.
    pub fn log_text(&self) -> Option<String> {
        let percent = format!("{:.0}%", self.progress? * 100.0);
        Some(if self.completed {
            format!("[ganger] progress {percent} (completed)")
        } else {
            format!("[ganger] progress {percent}")
        })
    }
}

/// Called on every accepted `PUT`, from the endpoint's own task and in the
/// order the `PUT`s were accepted: it must not block.
pub type Report = Arc<dyn Fn(JobProgress) + Send + Sync>;

/// The job endpoint of one agent process. Cheap to clone; it stops serving
/// when the last clone is dropped.
#[derive(Clone)]
pub struct JobApi {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Arc<Registry>,
    addrs: Vec<SocketAddr>,
    servers: Vec<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

/// The attempts the endpoint answers for, by the SHA-256 of their secret.
#[derive(Default)]
struct Registry {
    jobs: Mutex<HashMap<[u8; 32], Arc<Entry>>>,
}

impl Registry {
    fn jobs(&self) -> MutexGuard<'_, HashMap<[u8; 32], Arc<Entry>>> {
        // The map is consistent after any panic (inserts and removes are
        // single calls), so a poisoned lock is still good.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn find(&self, secret: &str) -> Option<Arc<Entry>> {
        self.jobs().get(&digest(secret)).cloned()
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

struct Entry {
    info: JobInfo,
    report: Report,
    state: Mutex<JobState>,
}

impl Entry {
    fn state(&self) -> MutexGuard<'_, JobState> {
        // Every update is applied whole under the lock, before any panic
        // could happen in `report`.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct JobState {
    progress: Option<f64>,
    completed: bool,
    outputs: BTreeMap<String, String>,
}

impl JobApi {
    /// Listens on each of `listen` (port 0 picks a free port) and serves
    /// until the last clone is dropped. The agents' default is
    /// `127.0.0.1:0`; a Docker host adds its bridge's gateway address, which
    /// containers can reach.
    pub async fn start(listen: &[SocketAddr]) -> std::io::Result<JobApi> {
        if listen.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the job endpoint needs at least one address to listen on",
            ));
        }
        let registry = Arc::new(Registry::default());
        let router = Router::new()
            .route("/job/{secret}", any(job))
            .fallback(not_found)
            .with_state(Arc::clone(&registry));
        let mut listeners = Vec::with_capacity(listen.len());
        let mut addrs = Vec::with_capacity(listen.len());
        for addr in listen {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on {addr} for tasks' job endpoint: {e}"),
                )
            })?;
            addrs.push(listener.local_addr()?);
            listeners.push(listener);
        }
        // Started only once every address is bound: a failure leaves
        // nothing running.
        let servers = listeners
            .into_iter()
            .map(|listener| {
                // Serves until the last clone of the `JobApi` is dropped.
                tokio::spawn(accept(listener, router.clone())).abort_handle()
            })
            .collect();
        Ok(JobApi {
            inner: Arc::new(Inner {
                registry,
                addrs,
                servers,
            }),
        })
    }

    /// The addresses listened on, in the order given to [`JobApi::start`],
    /// with the ports chosen.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.inner.addrs
    }

    /// Opens the endpoint of one attempt; it closes when the handle is
    /// dropped. `report` hears of every accepted `PUT`.
    pub fn register(&self, info: JobInfo, report: Report) -> std::io::Result<JobHandle> {
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| {
            std::io::Error::other(format!(
                "no randomness for a job endpoint secret from the operating system: {e}"
            ))
        })?;
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let key = digest(&secret);
        let entry = Arc::new(Entry {
            info,
            report,
            state: Mutex::new(JobState::default()),
        });
        self.inner.registry.jobs().insert(key, Arc::clone(&entry));
        Ok(JobHandle {
            registry: Arc::clone(&self.inner.registry),
            addrs: self.inner.addrs.clone(),
            key,
            secret,
            entry,
        })
    }
}

impl std::fmt::Debug for JobApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobApi")
            .field("addrs", &self.inner.addrs)
            .finish_non_exhaustive()
    }
}

/// One attempt's endpoint: its URLs and what the task said there. Dropping
/// it closes the endpoint (its secret answers 404 from then on).
pub struct JobHandle {
    registry: Arc<Registry>,
    addrs: Vec<SocketAddr>,
    key: [u8; 32],
    secret: String,
    entry: Arc<Entry>,
}

impl JobHandle {
    /// The URL on the `listener`-th address given to [`JobApi::start`].
    pub fn url(&self, listener: usize) -> Option<String> {
        let addr = self.addrs.get(listener)?;
        Some(format!("http://{addr}/job/{}", self.secret))
    }

    /// The URL on the address listening on `ip` (a Docker bridge's gateway,
    /// say), if there is one.
    pub fn url_on(&self, ip: IpAddr) -> Option<String> {
        let listener = self.addrs.iter().position(|a| a.ip() == ip)?;
        self.url(listener)
    }

    /// `GANGER_JOB_URL` and Foreman's two names, all set to `url`.
    pub fn env(url: &str) -> Vec<(String, String)> {
        std::iter::once(URL_VAR)
            .chain(FOREMAN_VARS)
            .map(|name| (name.to_owned(), url.to_owned()))
            .collect()
    }

    /// The outputs the task sent so far.
    pub fn outputs(&self) -> BTreeMap<String, String> {
        self.entry.state().outputs.clone()
    }

    /// The last progress the task sent.
    pub fn progress(&self) -> Option<f64> {
        self.entry.state().progress
    }

    /// Whether the task said `completed`.
    pub fn completed(&self) -> bool {
        self.entry.state().completed
    }
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        self.registry.jobs().remove(&self.key);
    }
}

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs and panics.
        f.debug_struct("JobHandle")
            .field("job", &self.entry.info.id)
            .finish_non_exhaustive()
    }
}

/// A refused request: its status and a message for whoever wrote the task.
struct Refusal(StatusCode, &'static str, String);

impl Refusal {
    fn bad(message: String) -> Refusal {
        Refusal(StatusCode::BAD_REQUEST, code::INVALID_REQUEST, message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let Refusal(status, code, message) = self;
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
                details: Vec::new(),
            },
        };
        json(status, &body)
    }
}

fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {e}"),
        )
            .into_response(),
    }
}

fn no_such_job() -> Refusal {
    Refusal(
        StatusCode::NOT_FOUND,
        code::NOT_FOUND,
        "no such job here: use the URL in $GANGER_JOB_URL, which works while its attempt runs"
            .into(),
    )
}

async fn not_found() -> Refusal {
    no_such_job()
}

async fn job(
    State(registry): State<Arc<Registry>>,
    Path(secret): Path<String>,
    request: Request,
) -> Result<Response, Refusal> {
    let entry = registry.find(&secret).ok_or_else(no_such_job)?;
    match *request.method() {
        Method::GET => Ok(json(StatusCode::OK, &entry.info)),
        Method::PUT => put(&entry, request).await,
        _ => Ok((
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, HeaderValue::from_static("GET, PUT"))],
            "the job endpoint answers GET (the job) and PUT (status, progress, outputs)",
        )
            .into_response()),
    }
}

/// The answer to an accepted `PUT`: the job's state now.
#[derive(Serialize)]
struct PutAnswer {
    status: &'static str,
    progress: Option<f64>,
}

/// Serves connections for as long as it runs. Not `axum::serve`: a
/// task's simplest client (`printf … | nc host port`) closes its sending
/// side once the request is out, and a server that reads that as the
/// client leaving drops the request half-handled. Half-closed connections
/// are served to the end here.
async fn accept(listener: tokio::net::TcpListener, router: Router) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of file descriptors, say: try again shortly rather than
            // give up the endpoint.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn put(entry: &Entry, request: Request) -> Result<Response, Refusal> {
    let (parts, body) = request.into_parts();
    // Everything is checked before anything is recorded: a refused PUT
    // changes nothing.
    let completed = status(&parts.headers)?;
    let progress = progress(&parts.headers)?;
    let outputs = outputs(body).await?;
    let mut state = entry.state();
    if state.completed {
        return Err(Refusal(
            StatusCode::CONFLICT,
            code::CONFLICT,
            "the job is completed already: `completed` is final and sent once".into(),
        ));
    }
    let progress = progress.or(completed.then_some(1.0));
    if progress.is_some() {
        state.progress = progress;
    }
    state.completed = completed;
    state.outputs.extend(outputs);
    // Under the lock, so reports arrive in the order the PUTs were accepted.
    (entry.report)(JobProgress {
        progress,
        completed,
    });
    let answer = PutAnswer {
        status: if completed { "completed" } else { "running" },
        progress: state.progress,
    };
    Ok(json(StatusCode::OK, &answer))
}

/// A header given under ganger's name or Foreman's (both must agree).
fn header<'h>(headers: &'h HeaderMap, names: [&str; 2]) -> Result<Option<&'h str>, Refusal> {
    let mut found: Option<(&str, &str)> = None;
    for name in names {
        let Some(value) = headers.get(name) else {
            continue;
        };
        let value = value
            .to_str()
            .map_err(|_| Refusal::bad(format!("header {name} is not text")))?
            .trim();
        match found {
            Some((first, earlier)) if earlier != value => {
                return Err(Refusal::bad(format!(
                    "headers {first} (`{earlier}`) and {name} (`{value}`) disagree; send one of them"
                )));
            }
            Some(_) => {}
            None => found = Some((name, value)),
        }
    }
    Ok(found.map(|(_, value)| value))
}

/// The `x-ganger-job-status` header: whether the PUT completes the job.
fn status(headers: &HeaderMap) -> Result<bool, Refusal> {
    match header(headers, STATUS_HEADERS)? {
        Some(s) if s.eq_ignore_ascii_case("running") => Ok(false),
        Some(s) if s.eq_ignore_ascii_case("completed") => Ok(true),
        Some(other) => Err(Refusal::bad(format!(
            "{} is `{other}`; it must be `running` or `completed`",
            STATUS_HEADERS[0]
        ))),
        None => Err(Refusal::bad(format!(
            "a PUT needs the header {}: `running` or `completed`",
            STATUS_HEADERS[0]
        ))),
    }
}

fn progress(headers: &HeaderMap) -> Result<Option<f64>, Refusal> {
    let Some(text) = header(headers, PROGRESS_HEADERS)? else {
        return Ok(None);
    };
    match text.parse::<f64>() {
        // `contains` is false for NaN; infinities are out of range.
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(Some(p)),
        _ => Err(Refusal::bad(format!(
            "{} is `{text}`; it must be a number from 0.0 to 1.0 (0.45 for 45%)",
            PROGRESS_HEADERS[0]
        ))),
    }
}

/// The body's outputs: a JSON object of strings (numbers and booleans are
/// written as text); an empty body has none.
async fn outputs(body: Body) -> Result<BTreeMap<String, String>, Refusal> {
    let bytes = axum::body::to_bytes(body, BODY_LIMIT).await.map_err(|e| {
        Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            code::INVALID_REQUEST,
            format!(
                "the body could not be read whole ({e}); it may hold at most {} KiB of outputs",
                BODY_LIMIT >> 10
            ),
        )
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(BTreeMap::new());
    }
    let shape = r#"a JSON object of outputs, like {"version": "1.2"}"#;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Refusal::bad(format!("the body is not JSON ({e}); send {shape}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(Refusal::bad(format!(
            "the body is {}; send {shape}",
            kind(&value)
        )));
    };
    let mut outputs = BTreeMap::new();
    for (key, value) in map {
        if !ganger_executor::is_valid_output_key(&key) {
            return Err(Refusal::bad(format!(
                "output name `{key}` must start with a letter or `_` and hold only letters, digits, `_`, `.` and `-`"
            )));
        }
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => {
                return Err(Refusal::bad(format!(
                    "output `{key}` is {}: outputs are text (numbers and booleans are turned into text); send nested data encoded as a JSON string",
                    kind(&other)
                )));
            }
        };
        outputs.insert(key, text);
    }
    Ok(outputs)
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::Ipv4Addr;

    const LOCAL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

    fn info() -> JobInfo {
        JobInfo {
            id: "r1/build/2".into(),
            run: "r1".into(),
            task: "build".into(),
            phase: Phase::Main,
            attempt: 2,
            params: BTreeMap::from([("branch".to_owned(), "main".to_owned())]),
            body: Some(serde_json::json!({"n": 1})),
        }
    }

    /// A job endpoint with one job whose reports are collected.
    async fn one_job() -> (JobApi, JobHandle, Arc<Mutex<Vec<JobProgress>>>) {
        let api = JobApi::start(&[LOCAL]).await.expect("listens");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let report: Report = Arc::new(move |p| sink.lock().expect("not poisoned").push(p));
        let handle = api.register(info(), report).expect("registers");
        (api, handle, seen)
    }

    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
    }

    async fn put(url: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
        let mut request = http().put(url).body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    fn running(progress: &str) -> Vec<(&'static str, String)> {
        vec![
            ("x-ganger-job-status", "running".into()),
            ("x-ganger-job-progress", progress.into()),
        ]
    }

    fn refs<'a>(h: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        h.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    #[tokio::test]
    async fn a_client_that_closes_its_sending_side_still_gets_its_put_done() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (api, handle, seen) = one_job().await;
        let url = handle.url(0).expect("one listener");
        let path = url
            .split_once("/job/")
            .map(|(_, s)| format!("/job/{s}"))
            .expect("path");
        // What `printf … | nc host port` does.
        let mut stream = tokio::net::TcpStream::connect(api.addrs()[0])
            .await
            .expect("connects");
        let request = format!(
            "PUT {path} HTTP/1.0\r\nx-ganger-job-status: running\r\nx-ganger-job-progress: 0.5\r\ncontent-length: 0\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("sends");
        stream.shutdown().await.expect("half-closes");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("reads");
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
        assert_eq!(seen.lock().expect("not poisoned").len(), 1);
    }

    #[tokio::test]
    async fn get_answers_the_job() {
        let (_api, handle, _) = one_job().await;
        let url = handle.url(0).expect("one listener");
        let got: serde_json::Value = http()
            .get(&url)
            .send()
            .await
            .expect("answers")
            .json()
            .await
            .expect("JSON");
        assert_eq!(
            got,
            serde_json::json!({
                "id": "r1/build/2", "run": "r1", "task": "build", "phase": "main",
                "attempt": 2, "params": {"branch": "main"}, "body": {"n": 1}
            })
        );
        let env = JobHandle::env(&url);
        assert_eq!(
            env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            vec![
                "GANGER_JOB_URL",
                "FOREMAN_GET_JOB_ENDPOINT",
                "FOREMAN_PUT_JOB_ENDPOINT"
            ]
        );
        assert!(env.iter().all(|(_, v)| *v == url));
    }

    #[tokio::test]
    async fn progress_is_recorded_and_reported_then_completed_is_final() {
        let (_api, handle, seen) = one_job().await;
        let url = handle.url(0).expect("one listener");
        let (status, answer) = put(&url, &refs(&running("0.45")), "").await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(handle.progress(), Some(0.45));
        // Foreman's headers mean the same.
        let foreman = [("x-foreman-job-status", "running")];
        assert_eq!(put(&url, &foreman, "").await.0, 200);
        assert_eq!(handle.progress(), Some(0.45), "no progress: unchanged");
        let done = [("x-foreman-job-status", "completed")];
        assert_eq!(put(&url, &done, "").await.0, 200);
        assert!(handle.completed());
        assert_eq!(handle.progress(), Some(1.0), "completed means all done");
        let reports = seen.lock().expect("not poisoned").clone();
        assert_eq!(
            reports,
            vec![
                JobProgress {
                    progress: Some(0.45),
                    completed: false
                },
                JobProgress {
                    progress: None,
                    completed: false
                },
                JobProgress {
                    progress: Some(1.0),
                    completed: true
                },
            ]
        );
        assert_eq!(
            reports[0].log_text().as_deref(),
            Some("[ganger] progress 45%")
        );
        assert_eq!(reports[1].log_text(), None);
        assert_eq!(
            reports[2].log_text().as_deref(),
            Some("[ganger] progress 100% (completed)")
        );
        // Nothing after `completed`, not even `completed` again.
        let (status, answer) = put(&url, &refs(&running("0.5")), "").await;
        assert_eq!(status, 409, "{answer}");
        assert!(answer.contains("completed already"), "{answer}");
        assert_eq!(put(&url, &done, "").await.0, 409);
        assert_eq!(handle.progress(), Some(1.0));
        assert_eq!(seen.lock().expect("not poisoned").len(), 3);
    }

    #[tokio::test]
    async fn bad_headers_are_refused_and_change_nothing() {
        let (_api, handle, seen) = one_job().await;
        let url = handle.url(0).expect("one listener");
        for bad in ["1.5", "abc", "-0.1", "NaN", "inf", ""] {
            let (status, answer) = put(&url, &refs(&running(bad)), r#"{"a": "1"}"#).await;
            assert_eq!(status, 400, "progress `{bad}`: {answer}");
            assert!(answer.contains("from 0.0 to 1.0"), "{answer}");
        }
        let (status, answer) = put(&url, &[], "").await;
        assert_eq!(status, 400);
        assert!(
            answer.contains("needs the header x-ganger-job-status"),
            "{answer}"
        );
        let (status, answer) = put(&url, &[("x-ganger-job-status", "done")], "").await;
        assert_eq!(status, 400);
        assert!(
            answer.contains("must be `running` or `completed`"),
            "{answer}"
        );
        let both = [
            ("x-ganger-job-status", "running"),
            ("x-foreman-job-status", "completed"),
        ];
        let (status, answer) = put(&url, &both, "").await;
        assert_eq!(status, 400);
        assert!(answer.contains("disagree"), "{answer}");
        assert_eq!(handle.progress(), None);
        assert!(handle.outputs().is_empty());
        assert!(!handle.completed());
        assert!(seen.lock().expect("not poisoned").is_empty());
    }

    #[tokio::test]
    async fn outputs_are_text_and_nested_values_are_refused() {
        let (_api, handle, _) = one_job().await;
        let url = handle.url(0).expect("one listener");
        let status = [("x-ganger-job-status", "running")];
        let body = r#"{"version": "1.2", "count": 3, "ratio": 0.5, "ok": true}"#;
        assert_eq!(put(&url, &status, body).await.0, 200);
        assert_eq!(put(&url, &status, r#"{"version": "1.3"}"#).await.0, 200);
        let expected = BTreeMap::from(
            [
                ("version", "1.3"),
                ("count", "3"),
                ("ratio", "0.5"),
                ("ok", "true"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        assert_eq!(handle.outputs(), expected);
        for (bad, says) in [
            (
                r#"{"x": "1", "deep": {"a": 1}}"#,
                "output `deep` is an object",
            ),
            (r#"{"list": [1]}"#, "output `list` is an array"),
            (r#"{"gone": null}"#, "output `gone` is null"),
            (r#"["a"]"#, "the body is an array"),
            ("version=1", "the body is not JSON"),
            (r#"{"a b": "1"}"#, "output name `a b`"),
        ] {
            let (code, answer) = put(&url, &status, bad).await;
            assert_eq!(code, 400, "{bad}: {answer}");
            assert!(answer.contains(says), "{bad}: {answer}");
        }
        let huge = format!(r#"{{"x": "{}"}}"#, "a".repeat(BODY_LIMIT));
        assert_eq!(put(&url, &status, &huge).await.0, 413);
        assert_eq!(handle.outputs(), expected, "refused bodies record nothing");
    }

    #[tokio::test]
    async fn only_the_secret_of_a_live_attempt_answers() {
        let (api, handle, _) = one_job().await;
        let url = handle.url(0).expect("one listener");
        let addr = api.addrs()[0];
        let client = http();
        for other in [
            format!("http://{addr}/job/00000000000000000000000000000000"),
            format!("http://{addr}/job/"),
            format!("http://{addr}/"),
            format!("{url}/more"),
        ] {
            let status = client.get(&other).send().await.expect("answers").status();
            assert_eq!(status, 404, "{other}");
        }
        let post = client.post(&url).send().await.expect("answers");
        assert_eq!(post.status(), 405);
        // Another attempt has another secret.
        let report: Report = Arc::new(|_| {});
        let second = api.register(info(), report).expect("registers");
        assert_ne!(second.url(0), handle.url(0));
        drop(handle);
        let gone = client.get(&url).send().await.expect("answers");
        assert_eq!(gone.status(), 404, "a dropped handle's secret is dead");
        let alive = second.url(0).expect("one listener");
        let status = client.get(&alive).send().await.expect("answers").status();
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn serves_on_every_address_given() {
        let api = JobApi::start(&[LOCAL, LOCAL]).await.expect("listens");
        assert_eq!(api.addrs().len(), 2);
        assert_ne!(api.addrs()[0].port(), api.addrs()[1].port());
        let report: Report = Arc::new(|_| {});
        let handle = api.register(info(), report).expect("registers");
        for i in 0..2 {
            let url = handle.url(i).expect("a listener");
            let status = http().get(&url).send().await.expect("answers").status();
            assert_eq!(status, 200, "{url}");
        }
        assert_eq!(handle.url(2), None);
        assert_eq!(
            handle.url_on(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            handle.url(0)
        );
        assert!(JobApi::start(&[]).await.is_err());
    }
}
