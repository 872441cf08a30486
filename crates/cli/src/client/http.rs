//! The HTTP client of the API: URLs, the bearer token, failing over
//! between several servers (`failover`), and errors turned into messages
//! that say what to do.

use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use ganger_api::ErrorBody;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, Request, RequestBuilder, Response, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::conn::{Conn, TokenSource, is_loopback};
pub(crate) use super::failover::Replay;
use super::failover::{Failure, RETRY_FOR, next_round, order};

/// A call that is not a stream gets an answer within this, or is given up.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An error answer is read up to this much: enough for every detail line
/// of an invalid job file, and bounded whatever the peer sends.
const ERROR_BODY_CAP: usize = 256 << 10;

/// Header naming the file an uploaded definition came from, so the
/// server's `file:line:col` messages name it as the user does.
pub(crate) const FILE_HEADER: &str = "x-ganger-file";

/// A client of the servers. Cheap to clone: clones share connections and
/// the preferred server.
#[derive(Clone)]
pub(crate) struct Api {
    /// At least one.
    servers: Arc<[Server]>,
    /// The index of the server that answered last, tried first.
    preferred: Arc<AtomicUsize>,
    /// Waiting for the servers to serve again has been said.
    said_waiting: Arc<AtomicBool>,
    conn: Arc<Conn>,
}

/// One server of the list.
struct Server {
    base: Url,
    /// The address as a person wrote it: `http://h:7070`, not `http://h:7070/`.
    shown: String,
    http: reqwest::Client,
}

/// A successful answer, and who gave it.
struct Answer {
    response: Response,
    /// `METHOD /path`, to name the call in later messages.
    what: String,
    server: usize,
}

/// Why a call failed.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// No connection could be made.
    Unreachable { base: String, cause: String },
    /// The server answered with an error status.
    Refused {
        status: StatusCode,
        /// The stable error code (`ganger_api::code`), empty when the
        /// answer was not ganger's error shape.
        code: String,
        message: String,
        details: Vec<String>,
        hint: Option<String>,
    },
    /// The exchange broke off, timed out, or the answer made no sense.
    Broken { what: String, cause: String },
    /// None of several servers could answer: each with what went wrong.
    NoServer {
        what: String,
        tried: Vec<(String, String)>,
        hints: Vec<String>,
    },
}

impl ApiError {
    /// Worth trying again later: the server may be restarting.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            ApiError::Unreachable { .. } | ApiError::Broken { .. } | ApiError::NoServer { .. } => {
                true
            }
            ApiError::Refused { status, .. } => {
                *status == StatusCode::SERVICE_UNAVAILABLE || *status == StatusCode::BAD_GATEWAY
            }
        }
    }

    /// What went wrong with one server, for the list of [`ApiError::NoServer`].
    fn line(&self) -> String {
        match self {
            ApiError::Unreachable { cause, .. } => format!("cannot connect: {cause}"),
            // ganger's own error shape carries a message without the status.
            ApiError::Refused {
                status,
                code,
                message,
                ..
            } if !code.is_empty() => format!("answered {status}: {message}"),
            ApiError::Refused { message, .. } => message.clone(),
            ApiError::Broken { cause, .. } => cause.clone(),
            ApiError::NoServer { what, .. } => format!("no server could answer {what}"),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Unreachable { base, cause } => write!(
                f,
                "cannot reach the ganger server at {base}: {cause} \
                 (is `ganger server` running? set GANGER_ADDR or --addr to its address)"
            ),
            ApiError::Refused {
                message,
                details,
                hint,
                ..
            } => {
                f.write_str(message)?;
                for d in details {
                    write!(f, "\n  {d}")?;
                }
                if let Some(hint) = hint {
                    write!(f, "\n  hint: {hint}")?;
                }
                Ok(())
            }
            ApiError::Broken { what, cause } => write!(f, "{what}: {cause}"),
            ApiError::NoServer { what, tried, hints } => {
                write!(f, "no ganger server could answer {what}:")?;
                for (server, failure) in tried {
                    write!(f, "\n  {server}: {failure}")?;
                }
                for hint in hints {
                    write!(f, "\n  hint: {hint}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ApiError {}

impl Api {
    pub(crate) fn new(conn: Conn) -> anyhow::Result<Api> {
        let build = |local: bool| {
            let mut builder = reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .user_agent(concat!("ganger/", env!("CARGO_PKG_VERSION")));
            // A proxy set for the outside world (HTTP_PROXY) must not be
            // asked to reach 127.0.0.1, where it would find itself.
            if local {
                builder = builder.no_proxy();
            }
            builder
                .build()
                .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {}", chain(&e)))
        };
        // One client for the servers on this machine, one for the others;
        // each is made once and shared.
        let (mut local, mut remote) = (None, None);
        let mut servers = Vec::with_capacity(conn.bases.len());
        for base in &conn.bases {
            let is_local = is_loopback(base);
            let slot = if is_local { &mut local } else { &mut remote };
            let http = match slot {
                Some(http) => http,
                None => slot.insert(build(is_local)?),
            }
            .clone();
            servers.push(Server {
                base: base.clone(),
                shown: base.as_str().trim_end_matches('/').to_owned(),
                http,
            });
        }
        if servers.is_empty() {
            anyhow::bail!("no server address to talk to");
        }
        Ok(Api {
            servers: servers.into(),
            preferred: Arc::new(AtomicUsize::new(0)),
            said_waiting: Arc::new(AtomicBool::new(false)),
            conn: Arc::new(conn),
        })
    }

    /// `<base>/api/v1/<segments>`, each segment percent-encoded, so a name
    /// with `/` or `?` in it stays one segment. The URL is on the first
    /// server; a request made of it is sent to whichever answers.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.servers[0].base.clone();
        url.set_query(None);
        url.set_fragment(None);
        // The address was checked to be an http URL with a host, which
        // always has a path to extend.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let builder = self.servers[0].http.request(method, url);
        match &self.conn.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends a request to the preferred server, and when that cannot
    /// answer, to the next (`failover`); the one that answers is preferred
    /// from then on. An error status becomes [`ApiError::Refused`]; when
    /// no server could answer, [`ApiError::NoServer`] lists them (with one
    /// server, its own error is returned).
    async fn send(&self, builder: RequestBuilder, replay: Replay) -> Result<Answer, ApiError> {
        let request = builder.build().map_err(|e| ApiError::Broken {
            what: "cannot build the request".into(),
            cause: chain(&e),
        })?;
        let what = format!("{} {}", request.method(), request.url().path());
        let url = request.url().clone();
        let mut original = Some(request);
        let started = Instant::now();
        loop {
            let mut failed: Vec<(usize, Failure, ApiError)> = Vec::new();
            for i in order(self.preferred.load(Ordering::Relaxed), self.servers.len()) {
                let server = &self.servers[i];
                // A body that cannot be copied is sent once.
                let Some(mut request) = copy(&mut original) else {
                    break;
                };
                if let Some(url) = rebase(&url, &self.servers[0].base, &server.base) {
                    *request.url_mut() = url;
                }
                let (failure, error) = match server.http.execute(request).await {
                    Ok(response) => {
                        let status = response.status();
                        if status.is_success() {
                            self.preferred.store(i, Ordering::Relaxed);
                            return Ok(Answer {
                                response,
                                what,
                                server: i,
                            });
                        }
                        let failure = Failure::of_answer(status, response.headers());
                        let error = self.refused(server, &what, response).await;
                        match failure {
                            Some(failure) => (failure, error),
                            // A final answer from a working server.
                            None => {
                                self.preferred.store(i, Ordering::Relaxed);
                                return Err(error);
                            }
                        }
                    }
                    Err(e) => {
                        let failure = if e.is_connect() {
                            Failure::NotSent
                        } else {
                            Failure::Lost
                        };
                        (failure, self.transport(server, &what, &e))
                    }
                };
                if !failure.fails_over(replay) {
                    return Err(error);
                }
                failed.push((i, failure, error));
            }
            let failures: Vec<Failure> = failed.iter().map(|(_, f, _)| f.clone()).collect();
            let wait = match original {
                Some(_) => next_round(&failures, started.elapsed()),
                None => None,
            };
            let Some(wait) = wait else {
                return Err(self.no_server(what, failed, started.elapsed()));
            };
            if !self.said_waiting.swap(true, Ordering::Relaxed) {
                let (i, _, error) = failed
                    .iter()
                    .find(|(_, f, _)| matches!(f, Failure::Unavailable { .. }))
                    .unwrap_or(&failed[0]);
                eprintln!(
                    "ganger: no server can answer now ({}: {}); trying again for up to {}s",
                    self.servers[*i].shown,
                    error.line(),
                    RETRY_FOR.as_secs()
                );
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// The error when no server could answer: the one server's own, or a
    /// list of every server's with what to do.
    fn no_server(
        &self,
        what: String,
        mut failed: Vec<(usize, Failure, ApiError)>,
        elapsed: Duration,
    ) -> ApiError {
        if failed.len() == 1
            && let Some((_, _, error)) = failed.pop()
        {
            return error;
        }
        let mut hints = Vec::new();
        if failed.iter().any(|(_, f, _)| *f == Failure::NotSent) {
            hints.push(
                "check that `ganger server` runs at each of these addresses \
                 (set GANGER_ADDR or --addr to the servers' addresses, comma-separated)"
                    .to_owned(),
            );
        }
        if failed.iter().any(|(_, f, _)| {
            matches!(f, Failure::Unavailable { status, .. } if *status == StatusCode::SERVICE_UNAVAILABLE)
        }) {
            let waited = if elapsed >= Duration::from_secs(1) {
                format!(" (they still could not after {}s)", elapsed.as_secs())
            } else {
                String::new()
            };
            hints.push(format!(
                "the servers that answered 503 cannot serve now: no replica leads, or their \
                 database is unreachable{waited}; wait a moment and try again"
            ));
        }
        if failed.iter().any(|(_, f, _)| match f {
            Failure::Lost => true,
            Failure::Unavailable { status, .. } => *status != StatusCode::SERVICE_UNAVAILABLE,
            Failure::NotSent => false,
        }) {
            hints.push(
                "a server (or a proxy before it) broke off or took too long; check its logs"
                    .to_owned(),
            );
        }
        ApiError::NoServer {
            what,
            tried: failed
                .iter()
                .map(|(i, _, error)| (self.servers[*i].shown.clone(), error.line()))
                .collect(),
            hints,
        }
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, url: Url) -> Result<T, ApiError> {
        let builder = self.request(Method::GET, url).timeout(CALL_TIMEOUT);
        let answer = self.send(builder, Replay::Safe).await?;
        self.decode(answer).await
    }

    /// A JSON POST. `replay` says whether the body may reach the server
    /// twice (a submission with an idempotency key may), which decides
    /// whether a connection that broke off is tried again elsewhere.
    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        url: Url,
        body: &B,
        replay: Replay,
    ) -> Result<T, ApiError> {
        // Serialized to bytes: the same body goes to each server tried.
        let builder = self
            .request(Method::POST, url)
            .timeout(CALL_TIMEOUT)
            .json(body);
        let answer = self.send(builder, replay).await?;
        self.decode(answer).await
    }

    /// A POST without a body (`cancel`, `retry`), which is not sent again
    /// once it may have been acted on.
    pub(crate) async fn post_empty<T: DeserializeOwned>(&self, url: Url) -> Result<T, ApiError> {
        let builder = self.request(Method::POST, url).timeout(CALL_TIMEOUT);
        let answer = self.send(builder, Replay::Unsafe).await?;
        self.decode(answer).await
    }

    /// Uploads the YAML text of one job file, named `file` in messages.
    /// Storing a file twice stores one version, so it may be sent again.
    pub(crate) async fn post_yaml<T: DeserializeOwned>(
        &self,
        url: Url,
        file: &str,
        text: String,
    ) -> Result<T, ApiError> {
        let builder = self
            .request(Method::POST, url)
            .timeout(CALL_TIMEOUT)
            .header(CONTENT_TYPE, "application/yaml")
            .header(FILE_HEADER, header_value(file))
            .body(text);
        let answer = self.send(builder, Replay::Safe).await?;
        self.decode(answer).await
    }

    /// A text answer (the DOT of a graph) with its content type.
    pub(crate) async fn get_text(
        &self,
        url: Url,
        accept: &str,
    ) -> Result<(String, String), ApiError> {
        let builder = self
            .request(Method::GET, url)
            .timeout(CALL_TIMEOUT)
            .header(ACCEPT, accept);
        let Answer {
            response,
            what,
            server,
        } = self.send(builder, Replay::Safe).await?;
        let kind = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = response
            .text()
            .await
            .map_err(|e| self.transport(&self.servers[server], &what, &e))?;
        Ok((kind, text))
    }

    /// Opens a streamed answer (a log), with no time limit: a followed log
    /// stays open as long as its task runs. Only opening fails over to
    /// another server; a stream that breaks off is opened again by its reader.
    pub(crate) async fn open(&self, url: Url) -> Result<Response, ApiError> {
        let builder = self.request(Method::GET, url).header(ACCEPT, "text/plain");
        Ok(self.send(builder, Replay::Safe).await?.response)
    }

    /// Reads the next piece of a streamed answer.
    pub(crate) async fn chunk(
        &self,
        response: &mut Response,
    ) -> Result<Option<impl AsRef<[u8]> + use<>>, ApiError> {
        let what = format!("GET {}", response.url().path());
        let server = self.server_of(response.url());
        response
            .chunk()
            .await
            .map_err(|e| self.transport(server, &what, &e))
    }

    async fn decode<T: DeserializeOwned>(&self, answer: Answer) -> Result<T, ApiError> {
        let Answer {
            response,
            what,
            server,
        } = answer;
        let server = &self.servers[server];
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport(server, &what, &e))?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Broken {
            what: format!("the server's answer to {what} is not what this ganger expects"),
            cause: format!(
                "{e}; is {} a ganger server of the same version as this client?",
                server.shown
            ),
        })
    }

    /// The server a URL was sent to (the first when none matches).
    fn server_of(&self, url: &Url) -> &Server {
        self.servers
            .iter()
            .find(|s| url.as_str().starts_with(s.base.as_str()))
            .unwrap_or(&self.servers[0])
    }

    fn transport(&self, server: &Server, what: &str, e: &reqwest::Error) -> ApiError {
        if e.is_connect() {
            ApiError::Unreachable {
                base: server.shown.clone(),
                cause: root_cause(e),
            }
        } else if e.is_timeout() {
            ApiError::Broken {
                what: format!("{what} on {}", server.shown),
                cause: "no answer in time; the server may be overloaded or stuck".into(),
            }
        } else {
            ApiError::Broken {
                what: format!("{what} on {} failed", server.shown),
                cause: root_cause(e),
            }
        }
    }

    async fn refused(&self, server: &Server, what: &str, mut response: Response) -> ApiError {
        let status = response.status();
        let mut body = Vec::new();
        while body.len() < ERROR_BODY_CAP {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let (code, message, details) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) if !b.error.message.is_empty() => {
                (b.error.code, b.error.message, b.error.details)
            }
            Ok(b) => (
                b.error.code,
                format!("{what} answered {status}"),
                b.error.details,
            ),
            // Not ganger's error shape: a proxy, or not a ganger server.
            Err(_) => {
                let text = String::from_utf8_lossy(&body);
                let text: String = text.trim().chars().take(300).collect();
                let message = if text.is_empty() {
                    format!("{what} answered {status}")
                } else {
                    format!("{what} answered {status}: {text}")
                };
                (String::new(), message, Vec::new())
            }
        };
        let hint = match status {
            StatusCode::UNAUTHORIZED => Some(self.auth_hint()),
            StatusCode::NOT_FOUND if code.is_empty() => Some(format!(
                "{} does not serve ganger's API here; is GANGER_ADDR the address of a ganger server?",
                server.shown
            )),
            StatusCode::SERVICE_UNAVAILABLE => Some(
                "the server cannot serve now (it is stopping, no replica leads, or its database \
                 is unreachable); try again in a moment"
                    .into(),
            ),
            _ => None,
        };
        ApiError::Refused {
            status,
            code,
            message,
            details,
            hint,
        }
    }

    fn auth_hint(&self) -> String {
        match &self.conn.source {
            TokenSource::None => "no token was sent: set GANGER_TOKEN (or pass --token), or run \
                                  ganger from the directory that holds the server's ganger-data"
                .into(),
            TokenSource::File(path) => format!(
                "the admin token in {} was refused (is it from another server?); set GANGER_TOKEN",
                path.display()
            ),
            TokenSource::Env => "the token in GANGER_TOKEN was refused; check it, or create one \
                                 with `ganger token create`"
                .into(),
            TokenSource::Flag => "the token given with --token was refused; check it, or create \
                                  one with `ganger token create`"
                .into(),
        }
    }
}

/// The next copy of a request to send: a copy while the request can be
/// copied (its body is bytes), else the request itself, once.
fn copy(original: &mut Option<Request>) -> Option<Request> {
    match original.as_ref().and_then(Request::try_clone) {
        Some(copy) => Some(copy),
        None => original.take(),
    }
}

/// `url`, made of the base `from`, moved onto the base `to`: the same API
/// path and query under `to`'s path. `None` when there is nothing to move
/// (`to` is `from`, or `url` is not under `from`).
fn rebase(url: &Url, from: &Url, to: &Url) -> Option<Url> {
    if from == to {
        return None;
    }
    let rest = url.path().strip_prefix(from.path().trim_end_matches('/'))?;
    let mut moved = to.clone();
    moved.set_path(&format!("{}{rest}", to.path().trim_end_matches('/')));
    moved.set_query(url.query());
    moved.set_fragment(None);
    Some(moved)
}

/// A header value naming a file: the path as given when it can travel in a
/// header, otherwise with the bytes it cannot carry escaped.
fn header_value(file: &str) -> HeaderValue {
    HeaderValue::from_str(file).unwrap_or_else(|_| {
        let escaped: String = file.chars().flat_map(char::escape_default).collect();
        HeaderValue::from_str(&escaped).unwrap_or(HeaderValue::from_static("job file"))
    })
}

/// The innermost cause of an error (`Connection refused (os error 111)`),
/// which says more than reqwest's outer "error sending request".
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Every cause of an error, outermost first.
fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::client::conn::{ConnArgs, resolve};
    use crate::client::testserver::{Reply, TestServer, closed_port};

    fn api(addr: &str) -> anyhow::Result<Api> {
        let args: ConnArgs =
            clap::Parser::try_parse_from(["x", "--addr", addr]).map(|w: Wrap| w.conn)?;
        Api::new(resolve(&args, |_| None, |_| None)?)
    }

    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        conn: ConnArgs,
    }

    #[test]
    fn urls_keep_names_in_one_segment() -> anyhow::Result<()> {
        let a = api("http://h:1")?;
        assert_eq!(
            a.url(&["runs", "r1", "tasks", "a/b?c", "logs"]).as_str(),
            "http://h:1/api/v1/runs/r1/tasks/a%2Fb%3Fc/logs"
        );
        // A server behind a path prefix.
        let a = api("http://h:1/ganger/")?;
        assert_eq!(a.url(&["jobs"]).as_str(), "http://h:1/ganger/api/v1/jobs");
        Ok(())
    }

    #[test]
    fn urls_move_onto_each_server() -> anyhow::Result<()> {
        let a = api("http://h:1/ganger/, http://k:2")?;
        let mut url = a.url(&["runs", "a/b"]);
        url.query_pairs_mut().append_pair("follow", "true");
        let moved = rebase(&url, &a.servers[0].base, &a.servers[1].base);
        assert_eq!(
            moved.as_ref().map(Url::as_str),
            Some("http://k:2/api/v1/runs/a%2Fb?follow=true")
        );
        let back = moved.and_then(|m| rebase(&m, &a.servers[1].base, &a.servers[0].base));
        assert_eq!(back.as_ref(), Some(&url));
        assert_eq!(rebase(&url, &a.servers[0].base, &a.servers[0].base), None);
        Ok(())
    }

    #[test]
    fn no_server_lists_each_with_what_to_do() {
        let e = ApiError::NoServer {
            what: "GET /api/v1/runs".into(),
            tried: vec![
                ("http://a:1".into(), "cannot connect: refused".into()),
                (
                    "http://b:2".into(),
                    "answered 503 Service Unavailable: no replica leads".into(),
                ),
            ],
            hints: vec!["wait".into()],
        };
        assert_eq!(
            e.to_string(),
            "no ganger server could answer GET /api/v1/runs:\n  \
             http://a:1: cannot connect: refused\n  \
             http://b:2: answered 503 Service Unavailable: no replica leads\n  hint: wait"
        );
        assert!(e.is_transient());
    }

    #[tokio::test]
    async fn a_down_server_is_passed_over_and_the_next_preferred() -> anyhow::Result<()> {
        let down = closed_port()?;
        let up = TestServer::start(|_| Reply::json(200, r#"{"from":"up"}"#)).await?;
        let a = api(&format!("{down},{}", up.addr))?;
        let answer: Value = a.get(a.url(&["runs"])).await?;
        assert_eq!(answer, json!({"from": "up"}));
        assert_eq!(a.preferred.load(Ordering::Relaxed), 1);
        // Clones share the preference: a followed log goes there too.
        let b = a.clone();
        let _: Value = b.get(b.url(&["runs"])).await?;
        assert_eq!(up.hits(), 2);
        assert_eq!(a.preferred.load(Ordering::Relaxed), 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_503_moves_on_to_the_next_server() -> anyhow::Result<()> {
        let waiting = TestServer::start(|_| Reply::unavailable(Some(1))).await?;
        let leader = TestServer::start(|_| Reply::json(200, r#"{"id":"r1"}"#)).await?;
        let a = api(&format!("{}, {}", waiting.addr, leader.addr))?;
        let started = std::time::Instant::now();
        // Not replayable, yet a 503 says it was not taken: safe to move on.
        let answer: Value = a.post_empty(a.url(&["runs", "r1", "cancel"])).await?;
        assert_eq!(answer, json!({"id": "r1"}));
        assert!(started.elapsed() < Duration::from_secs(1), "no wait");
        let _: Value = a.get(a.url(&["runs", "r1"])).await?;
        assert_eq!((waiting.hits(), leader.hits()), (1, 2));
        let sent = leader
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        assert!(
            sent[0].starts_with("POST /api/v1/runs/r1/cancel "),
            "{}",
            sent[0]
        );
        Ok(())
    }

    #[tokio::test]
    async fn servers_that_all_say_503_are_tried_again_after_retry_after() -> anyhow::Result<()> {
        // A leader takes over after the first round.
        let one = TestServer::start(|n| match n {
            1 => Reply::unavailable(Some(1)),
            _ => Reply::json(200, r#"{"from":"one"}"#),
        })
        .await?;
        let down = closed_port()?;
        let a = api(&format!("{},{down}", one.addr))?;
        let started = std::time::Instant::now();
        let answer: Value = a.get(a.url(&["jobs"])).await?;
        assert_eq!(answer, json!({"from": "one"}));
        assert!(started.elapsed() >= Duration::from_millis(900));
        assert_eq!(one.hits(), 2);
        Ok(())
    }

    #[tokio::test]
    async fn when_no_server_answers_each_is_named() -> anyhow::Result<()> {
        let down = closed_port()?;
        let busy = TestServer::start(|_| Reply::unavailable(None)).await?;
        let a = api(&format!("{down},{}", busy.addr))?;
        let e = a
            .get::<Value>(a.url(&["runs"]))
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("no ganger server could answer GET /api/v1/runs:"),
            "{e}"
        );
        assert!(e.contains(&format!("\n  {down}: cannot connect: ")), "{e}");
        assert!(
            e.contains(&format!(
                "\n  {}: answered 503 Service Unavailable: no replica leads",
                busy.addr
            )),
            "{e}"
        );
        assert!(e.contains("hint: check that `ganger server` runs"), "{e}");
        assert!(e.contains("wait a moment and try again"), "{e}");
        // One server: its own error, as before.
        let a = api(&down)?;
        let e = a.get::<Value>(a.url(&["runs"])).await.err();
        assert!(matches!(e, Some(ApiError::Unreachable { .. })), "{e:?}");
        Ok(())
    }

    #[tokio::test]
    async fn final_answers_and_unsafe_requests_do_not_move_on() -> anyhow::Result<()> {
        let refusing = TestServer::start(|_| {
            Reply::json(
                404,
                r#"{"error":{"code":"not_found","message":"no run r9"}}"#,
            )
        })
        .await?;
        let hanging = TestServer::start(|_| Reply::HangUp).await?;
        let other = TestServer::start(|_| Reply::json(200, "{}")).await?;
        let a = api(&format!("{},{}", refusing.addr, other.addr))?;
        let e = a.get::<Value>(a.url(&["runs", "r9"])).await.err();
        assert!(
            matches!(&e, Some(ApiError::Refused { status, .. }) if *status == StatusCode::NOT_FOUND),
            "{e:?}"
        );
        assert_eq!(other.hits(), 0);
        // Broken off after it was sent: a retry of a run may have happened.
        let a = api(&format!("{},{}", hanging.addr, other.addr))?;
        let e = a
            .post_empty::<Value>(a.url(&["runs", "r1", "retry"]))
            .await
            .err();
        assert!(matches!(e, Some(ApiError::Broken { .. })), "{e:?}");
        assert_eq!(other.hits(), 0);
        // A read may be sent again.
        let _: Value = a.get(a.url(&["runs"])).await?;
        assert_eq!(other.hits(), 1);
        // So may a body of bytes marked safe (a keyed submission).
        a.preferred.store(0, Ordering::Relaxed);
        let _: Value = a
            .post(a.url(&["runs"]), &json!({"job": "j"}), Replay::Safe)
            .await?;
        let sent = other.requests.lock().map(|r| r.clone()).unwrap_or_default();
        assert!(sent[1].ends_with(r#"{"job":"j"}"#), "{}", sent[1]);
        assert_eq!(hanging.hits(), 3);
        Ok(())
    }

    #[test]
    fn header_values_survive_odd_paths() {
        assert_eq!(header_value("jobs/a.yml").to_str().ok(), Some("jobs/a.yml"));
        assert_eq!(
            header_value("bad\nname.yml").to_str().ok(),
            Some("bad\\nname.yml")
        );
    }

    #[test]
    fn refusals_print_message_details_and_hint() {
        let e = ApiError::Refused {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_job".into(),
            message: "a.yml is not a valid job file".into(),
            details: vec!["a.yml:3:5: jobs.x: bad".into()],
            hint: Some("fix it".into()),
        };
        assert_eq!(
            e.to_string(),
            "a.yml is not a valid job file\n  a.yml:3:5: jobs.x: bad\n  hint: fix it"
        );
    }
}
