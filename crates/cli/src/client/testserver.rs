//! A tiny HTTP/1.1 server on a local port for the client's tests: it
//! answers each request as told and keeps what it was sent.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server does with the `n`th request (from 1).
pub(crate) enum Reply {
    /// An answer with this status, extra headers and JSON body.
    Answer {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Reads the request, then closes the connection without an answer.
    HangUp,
}

impl Reply {
    pub(crate) fn json(status: u16, body: &str) -> Reply {
        Reply::Answer {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
        }
    }

    /// ganger's `503`, with `Retry-After`.
    pub(crate) fn unavailable(retry_after: Option<u64>) -> Reply {
        Reply::Answer {
            status: 503,
            headers: retry_after
                .map(|s| ("retry-after", s.to_string()))
                .into_iter()
                .collect(),
            body: r#"{"error":{"code":"unavailable","message":"no replica leads"}}"#.to_owned(),
        }
    }
}

/// A running test server.
pub(crate) struct TestServer {
    pub(crate) addr: String,
    /// Each request as received: head and body.
    pub(crate) requests: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    pub(crate) async fn start(
        reply: impl Fn(usize) -> Reply + Send + Sync + 'static,
    ) -> std::io::Result<TestServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = format!("http://{}", listener.local_addr()?);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let reply = Arc::new(reply);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, reply) = (Arc::clone(&seen), Arc::clone(&reply));
                tokio::spawn(async move {
                    let _ = serve(stream, &seen, &*reply).await;
                });
            }
        });
        Ok(TestServer { addr, requests })
    }

    pub(crate) fn hits(&self) -> usize {
        self.requests.lock().map_or(0, |r| r.len())
    }
}

/// An address where nothing listens: a port that was free a moment ago.
pub(crate) fn closed_port() -> std::io::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(format!("http://{}", listener.local_addr()?))
}

/// Answers the requests of one connection (keep-alive) until it closes.
async fn serve(
    mut stream: TcpStream,
    seen: &Mutex<Vec<String>>,
    reply: &(dyn Fn(usize) -> Reply + Send + Sync),
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let request = String::from_utf8_lossy(&buf[..head_end + length]).into_owned();
        buf.drain(..head_end + length);
        let n = {
            let mut seen = seen.lock().map_err(|_| std::io::Error::other("poisoned"))?;
            seen.push(request);
            seen.len()
        };
        match reply(n) {
            Reply::HangUp => return Ok(()),
            Reply::Answer {
                status,
                headers,
                body,
            } => {
                let mut text = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    text.push_str(&format!("{k}: {v}\r\n"));
                }
                text.push_str("\r\n");
                text.push_str(&body);
                stream.write_all(text.as_bytes()).await?;
            }
        }
    }
}
