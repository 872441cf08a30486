//! Typed readers over YAML nodes that report, rather than stop at, problems.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use crate::diag::{Sink, suggestion};
use crate::units::{parse_duration, parse_size};
use crate::yaml::{Node, NodeKind, Pos};

/// The entries of one YAML mapping, consumed key by key. Whatever is left
/// when the mapping is finished is an unknown key.
pub(crate) struct Fields<'n> {
    pub(crate) path: String,
    entries: Vec<Entry<'n>>,
    known: Vec<&'static str>,
}

struct Entry<'n> {
    name: &'n str,
    key: &'n Node,
    value: &'n Node,
    used: bool,
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

impl<'n> Fields<'n> {
    /// Reads a mapping (`null` reads as an empty one). `what` names the
    /// entries in duplicate-key messages ("key", "task", "job").
    pub(crate) fn new(
        sink: &mut Sink,
        node: &'n Node,
        path: &str,
        what: &str,
    ) -> Option<Fields<'n>> {
        let pairs: &[(Node, Node)] = match &node.kind {
            NodeKind::Map(pairs) => pairs,
            NodeKind::Null => &[],
            _ => {
                sink.err(
                    node.pos,
                    path,
                    format!("expected a mapping, found {}", node.kind_name()),
                );
                return None;
            }
        };
        let mut first: HashMap<&str, Pos> = HashMap::new();
        let mut entries = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            let Some(name) = key.as_str() else {
                sink.err(
                    key.pos,
                    path,
                    format!("keys must be strings, found {}", key.kind_name()),
                );
                continue;
            };
            if let Some(prev) = first.get(name) {
                sink.err(
                    key.pos,
                    &join(path, name),
                    format!(
                        "duplicate {what} `{name}`; the first one is at line {}",
                        prev.line
                    ),
                );
                continue;
            }
            first.insert(name, key.pos);
            entries.push(Entry {
                name,
                key,
                value,
                used: false,
            });
        }
        Some(Fields {
            path: path.to_owned(),
            entries,
            known: Vec::new(),
        })
    }

    pub(crate) fn take(&mut self, key: &'static str) -> Option<&'n Node> {
        self.known.push(key);
        let entry = self.entries.iter_mut().find(|e| e.name == key)?;
        entry.used = true;
        Some(entry.value)
    }

    /// The key node of an entry (for positions of messages about the key itself).
    pub(crate) fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|e| e.name == key)
            .map(|e| e.key.pos)
    }

    pub(crate) fn child(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// All entries, for mappings whose keys are names (tasks, params, env).
    pub(crate) fn drain(&mut self) -> Vec<(&'n str, &'n Node, &'n Node)> {
        self.entries
            .iter_mut()
            .filter(|e| !e.used)
            .map(|e| {
                e.used = true;
                (e.name, e.key, e.value)
            })
            .collect()
    }

    pub(crate) fn finish(self, sink: &mut Sink) {
        for e in self.entries.iter().filter(|e| !e.used) {
            let hint = suggestion(e.name, self.known.iter().copied());
            sink.err(
                e.key.pos,
                &join(&self.path, e.name),
                format!("unknown key `{}`{hint}", e.name),
            );
        }
    }
}

pub(crate) fn string(sink: &mut Sink, node: &Node, path: &str) -> Option<String> {
    match &node.kind {
        NodeKind::Scalar { value, .. } => Some(value.clone()),
        _ => {
            sink.err(
                node.pos,
                path,
                format!("expected a string, found {}", node.kind_name()),
            );
            None
        }
    }
}

/// A string, or a list of strings joined by newlines (`script: [lines]`).
pub(crate) fn lines(sink: &mut Sink, node: &Node, path: &str) -> Option<String> {
    match &node.kind {
        NodeKind::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(string(sink, item, &index(path, i))?);
            }
            Some(out.join("\n"))
        }
        _ => string(sink, node, path),
    }
}

/// One string or a list of them.
pub(crate) fn string_list(sink: &mut Sink, node: &Node, path: &str) -> Vec<(String, Pos)> {
    match &node.kind {
        NodeKind::Null => Vec::new(),
        NodeKind::Seq(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| string(sink, item, &index(path, i)).map(|s| (s, item.pos)))
            .collect(),
        _ => string(sink, node, path)
            .map(|s| (s, node.pos))
            .into_iter()
            .collect(),
    }
}

pub(crate) fn boolean(sink: &mut Sink, node: &Node, path: &str) -> Option<bool> {
    match node.as_str() {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => {
            sink.err(node.pos, path, "expected true or false");
            None
        }
    }
}

pub(crate) fn number<T: FromStr>(
    sink: &mut Sink,
    node: &Node,
    path: &str,
    what: &str,
) -> Option<T> {
    match node.as_str().map(str::parse::<T>) {
        Some(Ok(n)) => Some(n),
        _ => {
            let found = node
                .as_str()
                .map_or_else(|| node.kind_name().to_owned(), |s| format!("`{s}`"));
            sink.err(node.pos, path, format!("expected {what}, found {found}"));
            None
        }
    }
}

pub(crate) fn duration(sink: &mut Sink, node: &Node, path: &str) -> Option<Duration> {
    let text = string(sink, node, path)?;
    match parse_duration(&text) {
        Ok(d) => Some(d),
        Err(e) => {
            sink.err(node.pos, path, e.to_string());
            None
        }
    }
}

/// A duration that must be more than zero (timeouts).
pub(crate) fn positive_duration(sink: &mut Sink, node: &Node, path: &str) -> Option<Duration> {
    let d = duration(sink, node, path)?;
    if d.is_zero() {
        sink.err(node.pos, path, "must be more than 0");
        return None;
    }
    Some(d)
}

pub(crate) fn size(sink: &mut Sink, node: &Node, path: &str) -> Option<u64> {
    let text = string(sink, node, path)?;
    match parse_size(&text) {
        Ok(n) => Some(n),
        Err(e) => {
            sink.err(node.pos, path, e.to_string());
            None
        }
    }
}

/// A mapping of names to scalar values (`env`, child-job `params`, headers).
pub(crate) fn string_map(
    sink: &mut Sink,
    node: &Node,
    path: &str,
) -> Vec<(String, String, Pos, bool)> {
    let Some(mut fields) = Fields::new(sink, node, path, "key") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, _, value) in fields.drain() {
        let child = join(path, name);
        match &value.kind {
            NodeKind::Scalar { value: v, block } => {
                out.push((name.to_owned(), v.clone(), value.pos, *block))
            }
            NodeKind::Null => out.push((name.to_owned(), String::new(), value.pos, false)),
            _ => sink.err(
                value.pos,
                &child,
                format!("expected a string, found {}", value.kind_name()),
            ),
        }
    }
    out
}

/// Converts a node to JSON (a task's `body`, an http call's `json`).
pub(crate) fn to_json(node: &Node) -> serde_json::Value {
    match &node.kind {
        NodeKind::Null => serde_json::Value::Null,
        NodeKind::Scalar { value, .. } => {
            if let Ok(n) = value.parse::<i64>() {
                serde_json::Value::from(n)
            } else if let Ok(b) = value.parse::<bool>() {
                serde_json::Value::from(b)
            } else {
                serde_json::Value::from(value.as_str())
            }
        }
        NodeKind::Seq(items) => items.iter().map(to_json).collect(),
        NodeKind::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}
