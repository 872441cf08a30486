//! A typed HTTP client of the agent protocol (`/api/v1/agent/…`).
//!
//! Every answer is sorted into what the agent loop must do with it (see
//! [`ClientError`]): drop an attempt, stop, register again, give up one
//! message, or retry later. Several servers may be given; a call that finds
//! one unavailable tries the next, and the last server that answered is
//! asked first next time, so a failover costs one refused connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ganger_api::agent::{
    Claim, Claimed, Deregister, Finished, Heartbeat, HeartbeatAck, LogAck, LogChunk, Progress,
    Register, Registered, Started,
};
use ganger_api::{ErrorBody, code};
use reqwest::{StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How long to wait for a TCP connection before trying the next server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A call that is not a long poll is answered within this, or given up
/// (and retried): a hung server must not hold a result forever.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to a claim's `wait_ms` for its answer to travel back.
const CLAIM_SLACK: Duration = Duration::from_secs(15);
/// An error answer is read up to this much; the message is what matters.
const ERROR_BODY_CAP: usize = 64 << 10;

/// Why a call failed, sorted by what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// 409 `stale_attempt`: the attempt is no longer this agent's (fenced,
    /// reaped, cancelled, given to another agent). Kill its processes and
    /// forget it.
    #[error("the server no longer assigns this attempt to this agent: {0}")]
    Stale(String),
    /// 401: the token is missing, unknown or revoked. Fatal.
    #[error(
        "the server refused the agent's token: {0} (create one with `ganger token create --role agent` on the server and pass it as GANGER_AGENT_TOKEN or --token)"
    )]
    Unauthorized(String),
    /// 403: the token's role may not speak the agent protocol. Fatal.
    #[error(
        "the server does not let this token run an agent: {0} (use a token made with `ganger token create --role agent`)"
    )]
    Forbidden(String),
    /// 404 on an agent's message: the server does not know this agent
    /// (it restarted and forgot it). Register again.
    #[error("the server does not know this agent: {0}")]
    NotRegistered(String),
    /// Another 4xx: the server will not accept this message as it is;
    /// sending it again changes nothing.
    #[error("the server refused the message ({0}): {1}")]
    Rejected(u16, String),
    /// No server could be reached, or each answered with a 5xx, a timeout
    /// or something that is not the protocol: try again later.
    #[error("no server answered: {0}")]
    Unavailable(String),
}

/// A client of one or more servers of one ganger installation, shared by
/// reference: its connections are pooled.
pub struct Client {
    http: reqwest::Client,
    servers: Vec<Url>,
    token: String,
    /// The server asked first: the last one that answered.
    preferred: AtomicUsize,
}

impl Client {
    /// A client of `servers`, tried in order. Each must be an `http://`
    /// URL (see [`parse_server`]).
    pub fn new(servers: Vec<Url>, token: String) -> Result<Client, String> {
        if servers.is_empty() {
            return Err("no server address given".into());
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("ganger-agent/", env!("CARGO_PKG_VERSION")));
        // A proxy set for the outside world must not be asked to reach
        // 127.0.0.1, where it would find itself.
        if servers.iter().all(is_loopback) {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {}", chain(&e)))?;
        Ok(Client {
            http,
            servers,
            token,
            preferred: AtomicUsize::new(0),
        })
    }

    /// The server that answered last (or the first one).
    pub fn current(&self) -> &Url {
        let i = self.preferred.load(Ordering::Relaxed);
        &self.servers[i % self.servers.len()]
    }

    /// Registers, and says which server answered.
    pub async fn register(&self, body: &Register) -> Result<(Registered, Url), ClientError> {
        let (answer, i) = self.call("register", body, CALL_TIMEOUT).await?;
        Ok((parse(&answer)?, self.servers[i].clone()))
    }

    /// A long poll: the answer may take `wait_ms`.
    pub async fn claim(&self, body: &Claim) -> Result<Claimed, ClientError> {
        let wait = Duration::from_millis(body.wait_ms.unwrap_or(30_000));
        let (answer, _) = self.call("claim", body, wait + CLAIM_SLACK).await?;
        parse(&answer)
    }

    pub async fn heartbeat(&self, body: &Heartbeat) -> Result<HeartbeatAck, ClientError> {
        let (answer, _) = self.call("heartbeat", body, CALL_TIMEOUT).await?;
        parse(&answer)
    }

    pub async fn started(&self, body: &Started) -> Result<(), ClientError> {
        self.call("started", body, CALL_TIMEOUT).await.map(drop)
    }

    /// How far along an attempt is, as its task said through its job
    /// endpoint.
    pub async fn progress(&self, body: &Progress) -> Result<(), ClientError> {
        self.call("progress", body, CALL_TIMEOUT).await.map(drop)
    }

    pub async fn log(&self, body: &LogChunk) -> Result<LogAck, ClientError> {
        let (answer, _) = self.call("logs", body, CALL_TIMEOUT).await?;
        parse(&answer)
    }

    pub async fn finished(&self, body: &Finished) -> Result<(), ClientError> {
        self.call("result", body, CALL_TIMEOUT).await.map(drop)
    }

    pub async fn deregister(&self, body: &Deregister) -> Result<(), ClientError> {
        self.call("deregister", body, CALL_TIMEOUT).await.map(drop)
    }

    /// Posts `body` to `/api/v1/agent/<endpoint>` on each server in turn,
    /// starting with the preferred one, until one gives an answer that is
    /// not [`ClientError::Unavailable`]. Returns the body and the server.
    async fn call(
        &self,
        endpoint: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<(Vec<u8>, usize), ClientError> {
        let first = self.preferred.load(Ordering::Relaxed);
        let n = self.servers.len();
        let mut failures = Vec::new();
        for k in 0..n {
            let i = (first + k) % n;
            match self.post(&self.servers[i], endpoint, body, timeout).await {
                Err(ClientError::Unavailable(why)) => failures.push(why),
                other => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return other.map(|answer| (answer, i));
                }
            }
        }
        Err(ClientError::Unavailable(failures.join("; ")))
    }

    async fn post(
        &self,
        server: &Url,
        endpoint: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        let url = endpoint_url(server, endpoint);
        let at = format!("POST {url}");
        let response = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| ClientError::Unavailable(format!("{at}: {}", chain(&e))))?;
        let status = response.status();
        if status.is_success() {
            return response.bytes().await.map(|b| b.to_vec()).map_err(|e| {
                ClientError::Unavailable(format!("{at}: reading the answer: {}", chain(&e)))
            });
        }
        let text = read_capped(response).await;
        Err(classify(status, &text, &at))
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs and panics.
        f.debug_struct("Client")
            .field("servers", &self.servers)
            .field("preferred", &self.preferred)
            .finish_non_exhaustive()
    }
}

/// Parses a server address as users write it: `host:port` alone means
/// `http://host:port`. Only plain `http` is spoken (no TLS in this build).
pub fn parse_server(text: &str) -> Result<Url, String> {
    let text = text.trim();
    let full = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let example = "http://ganger.example.org:7070";
    let url = Url::parse(&full)
        .map_err(|e| format!("`{text}` is not a server address ({e}); write it like {example}"))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(format!(
                "`{text}`: this build of ganger talks to its server over plain http only; use an http:// address (behind a TLS tunnel or proxy if the network is not trusted)"
            ));
        }
        other => {
            return Err(format!(
                "`{text}`: scheme `{other}` is not supported; write the address like {example}"
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "`{text}` names no host; write the address like {example}"
        ));
    }
    Ok(url)
}

/// `<base>/api/v1/agent/<endpoint>`, keeping a path prefix the base may
/// have (a server behind a reverse proxy at `/ganger/`).
fn endpoint_url(base: &Url, endpoint: &str) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    // An http URL with a host always has a path to extend.
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(["api", "v1", "agent", endpoint]);
    }
    url
}

/// Sorts an error answer. 5xx, 408 and 429 mean "not now"; the other 4xx
/// are the server's final word on this message.
fn classify(status: StatusCode, text: &str, at: &str) -> ClientError {
    let (code, message) = match serde_json::from_str::<ErrorBody>(text) {
        Ok(body) => (body.error.code, body.error.message),
        // Not ganger's error shape (a proxy's page, say): show its start.
        Err(_) => (String::new(), snippet(text)),
    };
    let message = if message.is_empty() {
        format!("{at} answered {status}")
    } else {
        message
    };
    match status {
        StatusCode::CONFLICT if code == code::STALE_ATTEMPT => ClientError::Stale(message),
        StatusCode::UNAUTHORIZED => ClientError::Unauthorized(message),
        StatusCode::FORBIDDEN => ClientError::Forbidden(message),
        StatusCode::NOT_FOUND => ClientError::NotRegistered(message),
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => {
            ClientError::Unavailable(format!("{at}: {status}: {message}"))
        }
        s if s.is_client_error() => ClientError::Rejected(s.as_u16(), message),
        s => ClientError::Unavailable(format!("{at}: {s}: {message}")),
    }
}

fn parse<T: DeserializeOwned>(answer: &[u8]) -> Result<T, ClientError> {
    // A 2xx that is not the protocol comes from something in between (a
    // captive portal, a misrouted proxy) or a server of another version:
    // another server, or a later try, may do better.
    serde_json::from_slice(answer).map_err(|e| {
        ClientError::Unavailable(format!(
            "the server's answer is not what the agent protocol says ({e}): {}",
            snippet(&String::from_utf8_lossy(answer))
        ))
    })
}

async fn read_capped(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_CAP {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(ERROR_BODY_CAP);
    String::from_utf8_lossy(&body).into_owned()
}

fn snippet(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// An error with its causes: reqwest's own message alone ("error sending
/// request") does not say that the connection was refused.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
