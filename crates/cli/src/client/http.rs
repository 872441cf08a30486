//! The HTTP client of the API: URLs, the bearer token, and errors turned
//! into messages that say what to do.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use ganger_api::ErrorBody;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::conn::{Conn, TokenSource};

/// A call that is not a stream gets an answer within this, or is given up.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An error answer is read up to this much: enough for every detail line
/// of an invalid job file, and bounded whatever the peer sends.
const ERROR_BODY_CAP: usize = 256 << 10;

/// Header naming the file an uploaded definition came from, so the
/// server's `file:line:col` messages name it as the user does.
pub(crate) const FILE_HEADER: &str = "x-ganger-file";

/// A client of one server. Cheap to clone: clones share connections.
#[derive(Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    conn: Arc<Conn>,
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
}

impl ApiError {
    /// Worth trying again later: the server may be restarting.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            ApiError::Unreachable { .. } | ApiError::Broken { .. } => true,
            ApiError::Refused { status, .. } => {
                *status == StatusCode::SERVICE_UNAVAILABLE || *status == StatusCode::BAD_GATEWAY
            }
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
        }
    }
}

impl std::error::Error for ApiError {}

impl Api {
    pub(crate) fn new(conn: Conn) -> anyhow::Result<Api> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("ganger/", env!("CARGO_PKG_VERSION")));
        // A proxy set for the outside world (HTTP_PROXY) must not be asked
        // to reach 127.0.0.1, where it would find itself.
        if conn.loopback {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {}", chain(&e)))?;
        Ok(Api {
            http,
            conn: Arc::new(conn),
        })
    }

    /// `<base>/api/v1/<segments>`, each segment percent-encoded, so a name
    /// with `/` or `?` in it stays one segment.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.conn.base.clone();
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
        let builder = self.http.request(method, url);
        match &self.conn.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends a request; an error status becomes [`ApiError::Refused`].
    /// Also returns `METHOD /path`, to name the call in later messages.
    async fn send(&self, builder: RequestBuilder) -> Result<(Response, String), ApiError> {
        let request = builder.build().map_err(|e| ApiError::Broken {
            what: "cannot build the request".into(),
            cause: chain(&e),
        })?;
        let what = format!("{} {}", request.method(), request.url().path());
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| self.transport(&what, &e))?;
        if response.status().is_success() {
            Ok((response, what))
        } else {
            Err(self.refused(&what, response).await)
        }
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, url: Url) -> Result<T, ApiError> {
        let builder = self.request(Method::GET, url).timeout(CALL_TIMEOUT);
        let (response, what) = self.send(builder).await?;
        self.decode(response, &what).await
    }

    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        url: Url,
        body: &B,
    ) -> Result<T, ApiError> {
        let builder = self
            .request(Method::POST, url)
            .timeout(CALL_TIMEOUT)
            .json(body);
        let (response, what) = self.send(builder).await?;
        self.decode(response, &what).await
    }

    /// A POST without a body (`cancel`, `retry`).
    pub(crate) async fn post_empty<T: DeserializeOwned>(&self, url: Url) -> Result<T, ApiError> {
        let builder = self.request(Method::POST, url).timeout(CALL_TIMEOUT);
        let (response, what) = self.send(builder).await?;
        self.decode(response, &what).await
    }

    /// Uploads the YAML text of one job file, named `file` in messages.
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
        let (response, what) = self.send(builder).await?;
        self.decode(response, &what).await
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
        let (response, what) = self.send(builder).await?;
        let kind = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = response
            .text()
            .await
            .map_err(|e| self.transport(&what, &e))?;
        Ok((kind, text))
    }

    /// Opens a streamed answer (a log), with no time limit: a followed log
    /// stays open as long as its task runs.
    pub(crate) async fn open(&self, url: Url) -> Result<Response, ApiError> {
        let builder = self.request(Method::GET, url).header(ACCEPT, "text/plain");
        Ok(self.send(builder).await?.0)
    }

    /// Reads the next piece of a streamed answer.
    pub(crate) async fn chunk(
        &self,
        response: &mut Response,
    ) -> Result<Option<impl AsRef<[u8]> + use<>>, ApiError> {
        let what = format!("GET {}", response.url().path());
        response
            .chunk()
            .await
            .map_err(|e| self.transport(&what, &e))
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        response: Response,
        what: &str,
    ) -> Result<T, ApiError> {
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport(what, &e))?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Broken {
            what: format!("the server's answer to {what} is not what this ganger expects"),
            cause: format!(
                "{e}; is {} a ganger server of the same version as this client?",
                self.shown_base()
            ),
        })
    }

    /// The address as a person wrote it: `http://h:7070`, not `http://h:7070/`.
    fn shown_base(&self) -> String {
        self.conn.base.as_str().trim_end_matches('/').to_owned()
    }

    fn transport(&self, what: &str, e: &reqwest::Error) -> ApiError {
        if e.is_connect() {
            ApiError::Unreachable {
                base: self.shown_base(),
                cause: root_cause(e),
            }
        } else if e.is_timeout() {
            ApiError::Broken {
                what: format!("{what} on {}", self.shown_base()),
                cause: "no answer in time; the server may be overloaded or stuck".into(),
            }
        } else {
            ApiError::Broken {
                what: format!("{what} on {} failed", self.shown_base()),
                cause: root_cause(e),
            }
        }
    }

    async fn refused(&self, what: &str, mut response: Response) -> ApiError {
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
                self.shown_base()
            )),
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
    use super::*;
    use crate::client::conn::{ConnArgs, resolve};

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
