//! Configuration (DESIGN §4): built-in defaults, then `ganger.toml`, then
//! `GANGER_<SECTION>_<KEY>` environment variables, then flags; each later
//! layer wins. Every value remembers where it came from, so an error names
//! the file and line or the variable or the flag, and the key.
//!
//! The file is the first that exists of `$GANGER_CONFIG` (which must exist
//! when set), `./ganger.toml`, `/etc/ganger/ganger.toml` and
//! `~/.config/ganger/ganger.toml`; `--config FILE` replaces the search.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use ganger_agent::DEFAULT_NETWORK;
use ganger_core::units::{format_duration, parse_duration, parse_size};
use serde::Deserialize;
use toml::{Spanned, Value};

const FILE_NAME: &str = "ganger.toml";
const CONFIG_VAR: &str = "GANGER_CONFIG";

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    /// A file, with the line of the value.
    File(PathBuf, usize),
    Env(String),
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("the default"),
            Source::File(path, line) => write!(f, "{}:{line}", path.display()),
            Source::Env(var) => write!(f, "environment variable {var}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// A value and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Setting<T> {
    fn default(value: T) -> Self {
        Setting {
            value,
            source: Source::Default,
        }
    }

    /// Replaces the value when a flag gave one.
    pub fn flag(&mut self, flag: &'static str, value: Option<T>) {
        if let Some(value) = value {
            *self = Setting {
                value,
                source: Source::Flag(flag),
            };
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The file read, if any.
    pub file: Option<PathBuf>,
    pub server: ServerConfig,
    pub agent: AgentConfig,
}

/// `[server]`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// `host:port` to listen on.
    pub listen: Setting<String>,
    /// Where the database (by default), task workspaces, logs and the admin
    /// token live.
    pub data: Setting<PathBuf>,
    /// The database; `None`: SQLite in `<data>/ganger.db`.
    pub database: Setting<Option<Database>>,
    pub lease: Setting<Duration>,
    /// How long a replica leads without renewing its lease (PostgreSQL).
    pub leader_lease: Setting<Duration>,
    /// The URL other replicas forward requests to while this one leads;
    /// `None`: `http://` and the address it listens on.
    pub advertise: Setting<Option<String>>,
    pub heartbeat: Setting<Duration>,
    /// Shutdown and kill grace.
    pub grace: Setting<Duration>,
    /// Per-attempt log cap in bytes; `None`: unlimited.
    pub log_cap: Setting<Option<u64>>,
    pub local_agent: Setting<bool>,
    /// Slots of the in-process agent.
    pub slots: Setting<u32>,
    /// The bridge network the in-process agent's containers join.
    pub docker_network: Setting<String>,
}

/// Where a server keeps its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file: one server.
    Sqlite(PathBuf),
    /// A PostgreSQL URL: any number of replicas.
    Postgres(String),
}

impl ServerConfig {
    /// The database to open.
    pub fn database(&self) -> Database {
        self.database
            .value
            .clone()
            .unwrap_or_else(|| Database::Sqlite(self.data.value.join("ganger.db")))
    }

    /// Checks what only holds for the values together; call after flags.
    pub fn check(&self) -> Result<()> {
        if matches!(self.database(), Database::Sqlite(_)) && self.advertise.value.is_some() {
            bail!(
                "advertise ({}) is for replicas on PostgreSQL; with SQLite there is one server: leave it unset",
                self.advertise.source
            );
        }
        if self.heartbeat.value >= self.lease.value {
            bail!(
                "heartbeat {} ({}) must be shorter than lease {} ({}): agents renew their leases every heartbeat",
                format_duration(self.heartbeat.value),
                self.heartbeat.source,
                format_duration(self.lease.value),
                self.lease.source
            );
        }
        Ok(())
    }
}

/// `[agent]`: what `ganger agent` is told by file and environment.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Server URLs (one, or several for failover).
    pub server: Setting<Vec<String>>,
    pub token: Setting<Option<String>>,
    pub name: Setting<Option<String>>,
    /// `key=value` labels.
    pub labels: Setting<Vec<String>>,
    pub slots: Setting<u32>,
    pub workdir: Setting<Option<PathBuf>>,
    /// The bridge network the agent's containers join.
    pub docker_network: Setting<String>,
}

// ------------------------------------------------------------- loading

/// Reads the configuration of this process: its file, its environment.
/// `explicit` is `--config FILE`.
pub fn load(explicit: Option<&Path>) -> Result<Config> {
    let env = |name: &str| std::env::var(name).ok();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let file = find_file(explicit, &env, home.as_deref(), &|p| p.is_file())?;
    let text =
        match &file {
            Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                format!("cannot read the configuration file {}", path.display())
            })?),
            None => None,
        };
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    parse(
        file.as_deref().zip(text.as_deref()),
        &env,
        &names,
        u32::try_from(cores).unwrap_or(u32::MAX),
    )
}

/// The `--database` flag's value, read like the `database` key.
pub fn parse_database_flag(url: &str) -> Result<Option<Database>> {
    // The URL is not repeated: it may hold a password.
    database(&Value::String(url.to_owned())).map_err(|e| anyhow!("flag --database: {e}"))
}

/// The `--advertise` flag's value, read like the `advertise` key.
pub fn parse_advertise_flag(url: &str) -> Result<Option<String>> {
    advertise(&Value::String(url.to_owned())).map_err(|e| anyhow!("flag --advertise: {e}"))
}

/// The configuration file to read, if any.
fn find_file(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<&Path>,
    exists: &dyn Fn(&Path) -> bool,
) -> Result<Option<PathBuf>> {
    if let Some(path) = explicit {
        if !exists(path) {
            bail!(
                "the configuration file {} (flag --config) does not exist",
                path.display()
            );
        }
        return Ok(Some(path.to_owned()));
    }
    if let Some(path) = env(CONFIG_VAR).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !exists(&path) {
            bail!(
                "the configuration file {} (environment variable {CONFIG_VAR}) does not exist; fix or unset {CONFIG_VAR}",
                path.display()
            );
        }
        return Ok(Some(path));
    }
    let mut candidates = vec![
        PathBuf::from(FILE_NAME),
        Path::new("/etc/ganger").join(FILE_NAME),
    ];
    if let Some(home) = home {
        candidates.push(home.join(".config/ganger").join(FILE_NAME));
    }
    Ok(candidates.into_iter().find(|p| exists(p)))
}

/// The file's shape. Values stay untyped here so that the file and the
/// environment go through the same parser per key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    server: RawSection,
    #[serde(default)]
    agent: RawAgent,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSection {
    listen: Option<Spanned<Value>>,
    data: Option<Spanned<Value>>,
    database: Option<Spanned<Value>>,
    lease: Option<Spanned<Value>>,
    leader_lease: Option<Spanned<Value>>,
    advertise: Option<Spanned<Value>>,
    heartbeat: Option<Spanned<Value>>,
    grace: Option<Spanned<Value>>,
    log_cap: Option<Spanned<Value>>,
    local_agent: Option<Spanned<Value>>,
    slots: Option<Spanned<Value>>,
    docker_network: Option<Spanned<Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    server: Option<Spanned<Value>>,
    token: Option<Spanned<Value>>,
    name: Option<Spanned<Value>>,
    labels: Option<Spanned<Value>>,
    slots: Option<Spanned<Value>>,
    workdir: Option<Spanned<Value>>,
    docker_network: Option<Spanned<Value>>,
}

const SERVER_KEYS: &[&str] = &[
    "listen",
    "data",
    "database",
    "lease",
    "leader_lease",
    "advertise",
    "heartbeat",
    "grace",
    "log_cap",
    "local_agent",
    "slots",
    "docker_network",
];
const AGENT_KEYS: &[&str] = &[
    "server",
    "token",
    "name",
    "labels",
    "slots",
    "workdir",
    "docker_network",
];

/// Builds the configuration from a file's text and an environment.
fn parse(
    file: Option<(&Path, &str)>,
    env: &dyn Fn(&str) -> Option<String>,
    env_names: &[String],
    cores: u32,
) -> Result<Config> {
    check_env_names(env_names)?;
    let raw: RawFile = match file {
        Some((path, text)) => toml::from_str(text).map_err(|e| {
            anyhow!(
                "{}: invalid configuration: {}",
                path.display(),
                e.to_string().trim_end()
            )
        })?,
        None => RawFile::default(),
    };
    let layer = Layer { file, env };
    let s = raw.server;
    let server = ServerConfig {
        listen: layer.key(
            "server",
            "listen",
            s.listen,
            "127.0.0.1:7070".into(),
            listen,
        )?,
        data: layer.key("server", "data", s.data, "ganger-data".into(), path)?,
        database: layer.key("server", "database", s.database, None, database)?,
        lease: layer.key("server", "lease", s.lease, secs(30), positive_duration)?,
        leader_lease: layer.key(
            "server",
            "leader_lease",
            s.leader_lease,
            secs(10),
            positive_duration,
        )?,
        advertise: layer.key("server", "advertise", s.advertise, None, advertise)?,
        heartbeat: layer.key(
            "server",
            "heartbeat",
            s.heartbeat,
            secs(10),
            positive_duration,
        )?,
        grace: layer.key("server", "grace", s.grace, secs(10), duration)?,
        log_cap: layer.key("server", "log_cap", s.log_cap, Some(100 << 20), log_cap)?,
        local_agent: layer.key("server", "local_agent", s.local_agent, true, boolean)?,
        slots: layer.key("server", "slots", s.slots, cores.max(1), slots)?,
        docker_network: layer.key(
            "server",
            "docker_network",
            s.docker_network,
            DEFAULT_NETWORK.into(),
            network,
        )?,
    };
    let a = raw.agent;
    let agent = AgentConfig {
        server: layer.key("agent", "server", a.server, Vec::new(), list)?,
        token: layer.key("agent", "token", a.token, None, optional_text)?,
        name: layer.key("agent", "name", a.name, None, optional_text)?,
        labels: layer.key("agent", "labels", a.labels, Vec::new(), labels)?,
        slots: layer.key("agent", "slots", a.slots, cores.max(1), slots)?,
        workdir: layer.key("agent", "workdir", a.workdir, None, |v| {
            optional_text(v).map(|t| t.map(PathBuf::from))
        })?,
        docker_network: layer.key(
            "agent",
            "docker_network",
            a.docker_network,
            DEFAULT_NETWORK.into(),
            network,
        )?,
    };
    Ok(Config {
        file: file.map(|(p, _)| p.to_owned()),
        server,
        agent,
    })
}

/// A `GANGER_SERVER_*` or `GANGER_AGENT_*` variable that names no key is
/// a typo that would otherwise be silently ignored.
fn check_env_names(names: &[String]) -> Result<()> {
    for name in names {
        for (prefix, keys) in [
            ("GANGER_SERVER_", SERVER_KEYS),
            ("GANGER_AGENT_", AGENT_KEYS),
        ] {
            if let Some(key) = name.strip_prefix(prefix)
                && !keys.iter().any(|k| k.eq_ignore_ascii_case(key))
            {
                let known: Vec<String> = keys
                    .iter()
                    .map(|k| format!("{prefix}{}", k.to_uppercase()))
                    .collect();
                bail!(
                    "environment variable {name} names no configuration key; the known ones are {}",
                    known.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// One key's value: from the environment, else the file, else the default.
struct Layer<'a> {
    file: Option<(&'a Path, &'a str)>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Layer<'_> {
    fn key<T>(
        &self,
        section: &str,
        key: &str,
        from_file: Option<Spanned<Value>>,
        default: T,
        parse: impl Fn(&Value) -> Result<T, String>,
    ) -> Result<Setting<T>> {
        let var = format!("GANGER_{}_{}", section.to_uppercase(), key.to_uppercase());
        if let Some(text) = (self.env)(&var).filter(|t| !t.is_empty()) {
            let value = parse(&Value::String(text.clone()))
                .map_err(|e| anyhow!("environment variable {var}=`{text}`: {e}"))?;
            return Ok(Setting {
                value,
                source: Source::Env(var),
            });
        }
        if let (Some(spanned), Some((path, text))) = (from_file, self.file) {
            let line = text[..spanned.span().start.min(text.len())]
                .lines()
                .count()
                .max(1);
            let source = Source::File(path.to_owned(), line);
            let value = parse(spanned.get_ref())
                .map_err(|e| anyhow!("{source}: [{section}] {key}: {e}"))?;
            return Ok(Setting { value, source });
        }
        Ok(Setting::default(default))
    }
}

// ------------------------------------------------------- value parsers
//
// Each takes a TOML value; environment values arrive as strings, so every
// parser accepts the string form of its type too.

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A scalar as text (numbers and booleans as written).
fn text(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.trim().to_owned()),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("expected a string, found {}", other.type_str())),
    }
}

fn listen(value: &Value) -> Result<String, String> {
    let addr = text(value)?;
    let port_ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        return Err(format!(
            "`{addr}` is not an address to listen on: write host:port, e.g. 127.0.0.1:7070 or 0.0.0.0:7070"
        ));
    }
    Ok(addr)
}

fn path(value: &Value) -> Result<PathBuf, String> {
    let p = text(value)?;
    if p.is_empty() {
        return Err("expected a directory, found an empty string".into());
    }
    Ok(PathBuf::from(p))
}

fn database(value: &Value) -> Result<Option<Database>, String> {
    let url = text(value)?;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Some(Database::Postgres(url)));
    }
    if let Some((scheme, _)) = url.split_once("://")
        && scheme != "sqlite"
    {
        return Err(format!(
            "unknown database kind `{scheme}`; name an SQLite file (a path, or sqlite://path) or a PostgreSQL URL (postgres://user@host/db)"
        ));
    }
    let file = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(&url);
    Ok((!file.is_empty()).then(|| Database::Sqlite(PathBuf::from(file))))
}

fn advertise(value: &Value) -> Result<Option<String>, String> {
    let url = text(value)?;
    if url.is_empty() {
        return Ok(None);
    }
    match url.split_once("://") {
        Some(("http", rest)) if !rest.is_empty() => Ok(Some(url.trim_end_matches('/').to_owned())),
        _ => Err(format!(
            "`{url}` is not a URL other replicas can reach this one at: write http://host:port"
        )),
    }
}

fn duration(value: &Value) -> Result<Duration, String> {
    parse_duration(&text(value)?).map_err(|e| e.to_string())
}

fn positive_duration(value: &Value) -> Result<Duration, String> {
    let d = duration(value)?;
    if d.is_zero() {
        return Err("must be longer than 0".into());
    }
    Ok(d)
}

fn log_cap(value: &Value) -> Result<Option<u64>, String> {
    let t = text(value)?;
    if t == "unlimited" {
        return Ok(None);
    }
    match parse_size(&t).map_err(|e| format!("{e}, or `unlimited`"))? {
        0 => Err("must be more than 0 (write `unlimited` for no cap)".into()),
        n => Ok(Some(n)),
    }
}

fn boolean(value: &Value) -> Result<bool, String> {
    match text(value)?.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        other => Err(format!("`{other}` is not true or false")),
    }
}

fn slots(value: &Value) -> Result<u32, String> {
    let t = text(value)?;
    match t.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "`{t}` is not a number of slots: write a whole number from 1"
        )),
    }
}

/// A Docker network name, as the engine accepts them.
fn network(value: &Value) -> Result<String, String> {
    let name = text(value)?;
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        return Err(format!(
            "`{name}` is not a Docker network name: use letters, digits, `_`, `.` and `-`"
        ));
    }
    Ok(name)
}

fn optional_text(value: &Value) -> Result<Option<String>, String> {
    let t = text(value)?;
    Ok((!t.is_empty()).then_some(t))
}

/// An array of strings, or one comma-separated string (the environment's form).
fn list(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.trim().to_owned()),
                other => Err(format!(
                    "expected a list of strings, found a {} in it",
                    other.type_str()
                )),
            })
            .collect(),
        other => Ok(text(other)?
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()),
    }
}

/// Labels, `key=value` or a bare `key`: a list (`["os=linux", "gpu"]`), a
/// table (`{ os = "linux" }`) or a comma-separated string.
fn labels(value: &Value) -> Result<Vec<String>, String> {
    let labels = match value {
        Value::Table(table) => table
            .iter()
            .map(|(k, v)| text(v).map(|v| format!("{k}={v}")))
            .collect::<Result<Vec<_>, _>>()?,
        other => list(other)?,
    };
    if let Some(bad) = labels.iter().find(|l| {
        let key = l.split_once('=').map_or(l.as_str(), |(k, _)| k);
        key.trim().is_empty() || l.chars().any(char::is_whitespace)
    }) {
        return Err(format!(
            "label `{bad}` is not key=value or key, e.g. os=linux or gpu"
        ));
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> (impl Fn(&str) -> Option<String>, Vec<String>) {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let names = map.keys().cloned().collect();
        (move |k: &str| map.get(k).cloned(), names)
    }

    fn load(file: Option<&str>, vars: &[(&str, &str)]) -> Result<Config> {
        let (lookup, names) = env(vars);
        let path = Path::new("/etc/ganger/ganger.toml");
        parse(file.map(|t| (path, t)), &lookup, &names, 4)
    }

    fn err(file: Option<&str>, vars: &[(&str, &str)]) -> String {
        format!("{:#}", load(file, vars).expect_err("should fail"))
    }

    #[test]
    fn defaults_apply_without_file_or_environment() -> Result<()> {
        let c = load(None, &[])?;
        let s = &c.server;
        assert_eq!(s.listen.value, "127.0.0.1:7070");
        assert_eq!(s.data.value, PathBuf::from("ganger-data"));
        assert_eq!(
            s.database(),
            Database::Sqlite(PathBuf::from("ganger-data/ganger.db"))
        );
        assert_eq!(s.lease.value, secs(30));
        assert_eq!(s.heartbeat.value, secs(10));
        assert_eq!(s.grace.value, secs(10));
        assert_eq!(s.log_cap.value, Some(100 * 1024 * 1024));
        assert!(s.local_agent.value);
        assert_eq!(s.slots.value, 4);
        assert_eq!(s.listen.source, Source::Default);
        assert!(c.agent.server.value.is_empty());
        s.check()
    }

    #[test]
    fn the_file_overrides_defaults_and_remembers_its_line() -> Result<()> {
        let c = load(
            Some(
                "[server]\nlisten = \"0.0.0.0:9000\"\nlease = \"1m\"\nlog_cap = \"1Gi\"\nslots = 2\nlocal_agent = false\n",
            ),
            &[],
        )?;
        assert_eq!(c.server.listen.value, "0.0.0.0:9000");
        assert_eq!(
            c.server.listen.source,
            Source::File(PathBuf::from("/etc/ganger/ganger.toml"), 2)
        );
        assert_eq!(c.server.lease.value, secs(60));
        assert_eq!(c.server.log_cap.value, Some(1 << 30));
        assert_eq!(c.server.slots.value, 2);
        assert!(!c.server.local_agent.value);
        Ok(())
    }

    #[test]
    fn the_environment_overrides_the_file_and_flags_override_both() -> Result<()> {
        let mut c = load(
            Some("[server]\nlisten = \"0.0.0.0:9000\"\ndata = \"/srv/file\"\n"),
            &[
                ("GANGER_SERVER_LISTEN", "127.0.0.1:1"),
                ("GANGER_SERVER_LOG_CAP", "5Mi"),
                ("GANGER_SERVER_LOCAL_AGENT", "no"),
            ],
        )?;
        assert_eq!(c.server.listen.value, "127.0.0.1:1");
        assert_eq!(
            c.server.listen.source,
            Source::Env("GANGER_SERVER_LISTEN".into())
        );
        assert_eq!(c.server.data.value, PathBuf::from("/srv/file"));
        assert_eq!(c.server.log_cap.value, Some(5 << 20));
        assert!(!c.server.local_agent.value);

        c.server.listen.flag("--listen", Some("127.0.0.1:0".into()));
        c.server.data.flag("--data", None);
        assert_eq!(c.server.listen.value, "127.0.0.1:0");
        assert_eq!(c.server.listen.source, Source::Flag("--listen"));
        assert_eq!(c.server.data.value, PathBuf::from("/srv/file"));
        Ok(())
    }

    #[test]
    fn an_empty_variable_counts_as_unset() -> Result<()> {
        let c = load(None, &[("GANGER_SERVER_LISTEN", "")])?;
        assert_eq!(c.server.listen.value, "127.0.0.1:7070");
        Ok(())
    }

    #[test]
    fn unknown_keys_name_the_file_and_the_key() {
        let e = err(Some("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n"), &[]);
        assert!(
            e.starts_with("/etc/ganger/ganger.toml: invalid configuration"),
            "{e}"
        );
        assert!(e.contains("lisen"), "{e}");
        assert!(e.contains("line 3"), "{e}");

        let e = err(Some("[sever]\n"), &[]);
        assert!(e.contains("sever"), "{e}");
    }

    #[test]
    fn bad_values_name_where_they_came_from() {
        let e = err(Some("\n[server]\nlease = \"soon\"\n"), &[]);
        assert!(
            e.starts_with("/etc/ganger/ganger.toml:3: [server] lease: "),
            "{e}"
        );
        assert!(e.contains("not a duration"), "{e}");

        let e = err(None, &[("GANGER_SERVER_GRACE", "10 parsecs")]);
        assert!(
            e.starts_with("environment variable GANGER_SERVER_GRACE="),
            "{e}"
        );

        let e = err(None, &[("GANGER_SERVER_SLOTS", "0")]);
        assert!(
            e.contains("GANGER_SERVER_SLOTS") && e.contains("from 1"),
            "{e}"
        );

        let e = err(Some("[server]\nlisten = 7070\n"), &[]);
        assert!(e.contains("host:port"), "{e}");
    }

    #[test]
    fn databases_are_postgres_urls_or_sqlite_files() -> Result<()> {
        let c = load(None, &[("GANGER_SERVER_DATABASE", "postgres://db/ganger")])?;
        assert_eq!(
            c.server.database(),
            Database::Postgres("postgres://db/ganger".into())
        );
        let e = err(None, &[("GANGER_SERVER_DATABASE", "mysql://db/ganger")]);
        assert!(e.contains("unknown database kind `mysql`"), "{e}");

        let c = load(
            Some("[server]\ndatabase = \"sqlite:///var/lib/g.db\"\n"),
            &[],
        )?;
        assert_eq!(
            c.server.database(),
            Database::Sqlite(PathBuf::from("/var/lib/g.db"))
        );
        let c = load(None, &[("GANGER_SERVER_DATABASE", "here.db")])?;
        assert_eq!(
            c.server.database(),
            Database::Sqlite(PathBuf::from("here.db"))
        );
        Ok(())
    }

    #[test]
    fn advertise_is_an_http_url_for_replicas_only() -> Result<()> {
        let c = load(
            None,
            &[
                ("GANGER_SERVER_DATABASE", "postgres://db/ganger"),
                ("GANGER_SERVER_ADVERTISE", "http://10.0.0.5:7070/"),
            ],
        )?;
        assert_eq!(
            c.server.advertise.value.as_deref(),
            Some("http://10.0.0.5:7070")
        );
        c.server.check()?;
        let e = err(None, &[("GANGER_SERVER_ADVERTISE", "10.0.0.5:7070")]);
        assert!(e.contains("write http://host:port"), "{e}");
        let c = load(None, &[("GANGER_SERVER_ADVERTISE", "http://h:1")])?;
        let e = c
            .server
            .check()
            .map_err(|e| e.to_string())
            .err()
            .unwrap_or_default();
        assert!(e.contains("for replicas on PostgreSQL"), "{e}");
        Ok(())
    }

    #[test]
    fn unknown_variables_are_typos() {
        let e = err(None, &[("GANGER_SERVER_LISTN", "x")]);
        assert!(e.contains("GANGER_SERVER_LISTN"), "{e}");
        assert!(e.contains("GANGER_SERVER_LISTEN"), "{e}");
        // Other GANGER_ variables are not configuration keys.
        assert!(load(None, &[("GANGER_TOKEN", "t"), ("GANGER_ADDR", "a")]).is_ok());
    }

    #[test]
    fn heartbeat_must_be_shorter_than_lease() {
        let c = load(None, &[("GANGER_SERVER_LEASE", "5s")]).expect("loads");
        let e = format!("{:#}", c.server.check().expect_err("10s >= 5s"));
        assert!(
            e.contains("GANGER_SERVER_LEASE") && e.contains("the default"),
            "{e}"
        );
    }

    #[test]
    fn agent_section_parses_lists_and_labels() -> Result<()> {
        let c = load(
            Some(
                "[agent]\nserver = [\"http://a:7070\", \"http://b:7070\"]\nlabels = { os = \"linux\", gpu = true }\nslots = 3\n",
            ),
            &[("GANGER_AGENT_TOKEN", "secret")],
        )?;
        assert_eq!(c.agent.server.value, ["http://a:7070", "http://b:7070"]);
        assert_eq!(c.agent.labels.value, ["gpu=true", "os=linux"]);
        assert_eq!(c.agent.slots.value, 3);
        assert_eq!(c.agent.token.value.as_deref(), Some("secret"));

        let c = load(None, &[("GANGER_AGENT_LABELS", "os=linux, queue=high")])?;
        assert_eq!(c.agent.labels.value, ["os=linux", "queue=high"]);
        let c = load(None, &[("GANGER_AGENT_LABELS", "gpu, os=linux")])?;
        assert_eq!(
            c.agent.labels.value,
            ["gpu", "os=linux"],
            "a bare key is a label"
        );
        let e = err(None, &[("GANGER_AGENT_LABELS", "=linux")]);
        assert!(e.contains("key=value"), "{e}");
        Ok(())
    }

    #[test]
    fn the_search_takes_the_first_file_that_exists() -> Result<()> {
        let none = |_: &str| None;
        let home = Path::new("/home/u");
        let exists_only = |wanted: &'static str| move |p: &Path| p == Path::new(wanted);

        let found = find_file(
            None,
            &none,
            Some(home),
            &exists_only("/home/u/.config/ganger/ganger.toml"),
        )?;
        assert_eq!(
            found,
            Some(PathBuf::from("/home/u/.config/ganger/ganger.toml"))
        );
        let found = find_file(None, &none, Some(home), &|p: &Path| {
            p == Path::new("ganger.toml") || p == Path::new("/etc/ganger/ganger.toml")
        })?;
        assert_eq!(found, Some(PathBuf::from("ganger.toml")));
        assert_eq!(find_file(None, &none, Some(home), &|_: &Path| false)?, None);

        // $GANGER_CONFIG wins, and must exist.
        let var = |k: &str| (k == CONFIG_VAR).then(|| "/x/g.toml".to_owned());
        let found = find_file(None, &var, Some(home), &|_: &Path| true)?;
        assert_eq!(found, Some(PathBuf::from("/x/g.toml")));
        let e = find_file(None, &var, Some(home), &|_: &Path| false).expect_err("missing");
        assert!(e.to_string().contains("GANGER_CONFIG"), "{e}");

        // --config wins over everything, and must exist.
        let found = find_file(Some(Path::new("/y.toml")), &var, Some(home), &|_: &Path| {
            true
        })?;
        assert_eq!(found, Some(PathBuf::from("/y.toml")));
        let e = find_file(Some(Path::new("/y.toml")), &var, Some(home), &|_: &Path| {
            false
        })
        .expect_err("missing");
        assert!(e.to_string().contains("--config"), "{e}");
        Ok(())
    }
}
