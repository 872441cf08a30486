//! Which server to talk to and with which token.
//!
//! Address: `--addr` > `GANGER_ADDR` > `http://127.0.0.1:7070`; either may
//! list several servers (replicas on one database), comma-separated, tried
//! in turn (`failover`).
//! Token: `--token` > `GANGER_TOKEN` > for a server on this machine, the
//! admin token the server wrote at its first start (`<data>/admin.token`,
//! data being `GANGER_SERVER_DATA` or `./ganger-data`), so that `ganger
//! server` in one terminal and `ganger submit` in another just work.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;
use reqwest::Url;

use super::http::Api;

pub(crate) const DEFAULT_ADDR: &str = "http://127.0.0.1:7070";
const DEFAULT_DATA: &str = "ganger-data";
const TOKEN_FILE: &str = "admin.token";

/// The flags every client command takes.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct ConnArgs {
    /// The server's URL, or the URLs of several replicas, comma-separated:
    /// each request goes to the one that answered last, and to the next
    /// when it cannot answer [env: GANGER_ADDR] [default: http://127.0.0.1:7070].
    #[arg(long, value_name = "URL[,URL...]")]
    addr: Option<String>,
    /// The API token [env: GANGER_TOKEN] [default: the admin token of a
    /// server on this machine, read from ./ganger-data/admin.token].
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

impl ConnArgs {
    /// Resolves the address and token from the flags, the environment and
    /// the file system, and makes a client for them.
    pub(crate) fn connect(&self) -> anyhow::Result<Api> {
        let env = |key: &str| std::env::var(key).ok();
        let conn = resolve(self, env, read_token_file)?;
        Api::new(conn)
    }
}

/// Where the token came from, to say what to fix when it is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TokenSource {
    Flag,
    Env,
    File(PathBuf),
    None,
}

/// A resolved connection.
#[derive(Clone, Debug)]
pub(crate) struct Conn {
    /// The servers, in the order given: at least one, each once.
    pub(crate) bases: Vec<Url>,
    pub(crate) token: Option<String>,
    pub(crate) source: TokenSource,
}

/// The pure part of [`ConnArgs::connect`]: `env` reads a variable and
/// `read_file` a token file (`None` when there is none).
pub(crate) fn resolve(
    args: &ConnArgs,
    env: impl Fn(&str) -> Option<String>,
    read_file: impl Fn(&Path) -> Option<String>,
) -> anyhow::Result<Conn> {
    let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let (addr, from) = match (nonempty(args.addr.clone()), nonempty(env("GANGER_ADDR"))) {
        (Some(a), _) => (a, "--addr"),
        (None, Some(a)) => (a, "GANGER_ADDR"),
        (None, None) => (DEFAULT_ADDR.to_owned(), "the default address"),
    };
    let bases = match parse_addrs(&addr) {
        Ok(urls) => urls,
        Err(e) => bail!("{from}: {e}"),
    };
    // The token file only when no server is elsewhere: one remote replica
    // in the list would be handed the local admin token.
    let loopback = bases.iter().all(is_loopback);
    let (token, source) = if let Some(t) = nonempty(args.token.clone()) {
        (Some(t), TokenSource::Flag)
    } else if let Some(t) = nonempty(env("GANGER_TOKEN")) {
        (Some(t), TokenSource::Env)
    } else if loopback {
        // Only for a server on this machine: a token file found in the
        // current directory says nothing about a remote server, and sending
        // an admin token there would hand it to whoever runs it.
        let data = nonempty(env("GANGER_SERVER_DATA")).unwrap_or_else(|| DEFAULT_DATA.to_owned());
        let path = Path::new(&data).join(TOKEN_FILE);
        match nonempty(read_file(&path)) {
            Some(t) => (Some(t), TokenSource::File(path)),
            None => (None, TokenSource::None),
        }
    } else {
        (None, TokenSource::None)
    };
    Ok(Conn {
        bases,
        token: token.map(|t| t.trim().to_owned()),
        source,
    })
}

/// Reads a token file; a missing file is no token, an unreadable one is
/// said once and then treated alike.
fn read_token_file(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            eprintln!(
                "ganger: warning: cannot read the admin token {}: {e}; going on without a token",
                path.display()
            );
            None
        }
    }
}

/// Parses a comma-separated list of server addresses (whitespace around
/// the commas and empty entries are ignored; an address given twice is
/// tried once). A bad address is named, with its place in a longer list.
pub(crate) fn parse_addrs(text: &str) -> Result<Vec<Url>, String> {
    let items: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return Err(format!(
            "`{}` names no server; write the address like {DEFAULT_ADDR}",
            text.trim()
        ));
    }
    let mut urls: Vec<Url> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let url = parse_addr(item).map_err(|e| {
            if items.len() > 1 {
                format!("address {} of {}: {e}", i + 1, items.len())
            } else {
                e
            }
        })?;
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    Ok(urls)
}

/// Parses a server address. `host:port` alone means `http://host:port`.
pub(crate) fn parse_addr(text: &str) -> Result<Url, String> {
    let text = text.trim();
    let full = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let url = Url::parse(&full).map_err(|e| {
        format!("`{text}` is not a server address ({e}); write it like {DEFAULT_ADDR}")
    })?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(format!(
                "`{text}`: this build of ganger talks to its server over plain http only; \
                 use an http:// address"
            ));
        }
        other => {
            return Err(format!(
                "`{text}`: scheme `{other}` is not supported; write the address like {DEFAULT_ADDR}"
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "`{text}` names no host; write the address like {DEFAULT_ADDR}"
        ));
    }
    Ok(url)
}

pub(crate) fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn args(addr: Option<&str>, token: Option<&str>) -> ConnArgs {
        ConnArgs {
            addr: addr.map(str::to_owned),
            token: token.map(str::to_owned),
        }
    }

    fn run(a: &ConnArgs, env: &[(&str, &str)], files: &[(&str, &str)]) -> anyhow::Result<Conn> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let files: HashMap<PathBuf, String> = files
            .iter()
            .map(|(k, v)| (PathBuf::from(k), (*v).to_owned()))
            .collect();
        resolve(a, |k| env.get(k).cloned(), |p| files.get(p).cloned())
    }

    #[test]
    fn address_flag_beats_env_beats_default() -> anyhow::Result<()> {
        let c = run(&args(None, None), &[], &[])?;
        assert_eq!(c.bases[0].as_str(), "http://127.0.0.1:7070/");
        let c = run(&args(None, None), &[("GANGER_ADDR", "http://h:1")], &[])?;
        assert_eq!(c.bases[0].as_str(), "http://h:1/");
        let c = run(
            &args(Some("h2:2"), None),
            &[("GANGER_ADDR", "http://h:1")],
            &[],
        )?;
        assert_eq!(c.bases[0].as_str(), "http://h2:2/");
        // An empty variable is no setting.
        let c = run(&args(None, None), &[("GANGER_ADDR", "")], &[])?;
        assert_eq!(c.bases[0].as_str(), "http://127.0.0.1:7070/");
        Ok(())
    }

    #[test]
    fn bad_addresses_say_where_they_came_from() {
        let e = run(&args(None, None), &[("GANGER_ADDR", "https://h")], &[])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("GANGER_ADDR: "), "{e}");
        assert!(e.contains("plain http"), "{e}");
        let e = run(&args(Some("ftp://h"), None), &[], &[])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("--addr: "), "{e}");
        assert!(parse_addr("http://").is_err());
        assert!(parse_addr("http://[::1]:7070").is_ok());
    }

    #[test]
    fn several_addresses_are_kept_in_order() -> anyhow::Result<()> {
        let c = run(
            &args(None, None),
            &[("GANGER_ADDR", " http://a:1 , b:2,,http://a:1,")],
            &[],
        )?;
        let bases: Vec<&str> = c.bases.iter().map(Url::as_str).collect();
        assert_eq!(bases, ["http://a:1/", "http://b:2/"]);
        let c = run(&args(Some("h:1,h:2"), None), &[("GANGER_ADDR", "x:9")], &[])?;
        assert_eq!(c.bases.len(), 2);
        assert!(parse_addrs(" , ").is_err());
        Ok(())
    }

    #[test]
    fn a_bad_address_in_a_list_is_named() {
        let e = run(&args(Some("http://a:1, https://b:2"), None), &[], &[])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("--addr: address 2 of 2: `https://b:2`"),
            "{e}"
        );
        let e = run(&args(None, None), &[("GANGER_ADDR", "a:1,ftp://c")], &[])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("GANGER_ADDR: address 2 of 2: `ftp://c`"),
            "{e}"
        );
    }

    #[test]
    fn the_token_file_is_sent_only_when_every_server_is_local() -> anyhow::Result<()> {
        let file = [("ganger-data/admin.token", "file-token")];
        let c = run(
            &args(Some("http://127.0.0.1:7070,http://localhost:7071"), None),
            &[],
            &file,
        )?;
        assert_eq!(c.token.as_deref(), Some("file-token"));
        let c = run(
            &args(
                Some("http://127.0.0.1:7070,http://db.example.org:7070"),
                None,
            ),
            &[],
            &file,
        )?;
        assert_eq!((c.token, c.source), (None, TokenSource::None));
        Ok(())
    }

    #[test]
    fn token_flag_beats_env_beats_local_file() -> anyhow::Result<()> {
        let file = [("ganger-data/admin.token", "file-token\n")];
        let c = run(&args(None, None), &[], &file)?;
        assert_eq!(c.token.as_deref(), Some("file-token"));
        assert_eq!(
            c.source,
            TokenSource::File(PathBuf::from("ganger-data/admin.token"))
        );
        let c = run(&args(None, None), &[("GANGER_TOKEN", "env")], &file)?;
        assert_eq!(
            (c.token.as_deref(), c.source),
            (Some("env"), TokenSource::Env)
        );
        let c = run(&args(None, Some("flag")), &[("GANGER_TOKEN", "env")], &file)?;
        assert_eq!(
            (c.token.as_deref(), c.source),
            (Some("flag"), TokenSource::Flag)
        );
        let c = run(
            &args(None, None),
            &[("GANGER_SERVER_DATA", "/srv/g")],
            &[("/srv/g/admin.token", "srv")],
        )?;
        assert_eq!(c.token.as_deref(), Some("srv"));
        Ok(())
    }

    #[test]
    fn token_file_is_only_for_a_server_on_this_machine() -> anyhow::Result<()> {
        let file = [("ganger-data/admin.token", "file-token")];
        for local in [
            "http://localhost:7070",
            "http://127.0.0.2:1",
            "http://[::1]:7070",
        ] {
            let c = run(&args(Some(local), None), &[], &file)?;
            assert!(c.bases.iter().all(is_loopback), "{local}");
            assert_eq!(c.token.as_deref(), Some("file-token"), "{local}");
        }
        let c = run(&args(Some("http://ci.example.org:7070"), None), &[], &file)?;
        assert!(!is_loopback(&c.bases[0]));
        assert_eq!((c.token, c.source), (None, TokenSource::None));
        Ok(())
    }
}
