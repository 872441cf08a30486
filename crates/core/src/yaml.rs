//! A YAML document as a tree of nodes that remember where they came from.
//!
//! Built on saphyr-parser's event stream rather than a serde deserializer so
//! that validation can report every problem in one pass with its position,
//! and so that hostile input is refused instead of expanded: aliases are
//! copied under a node budget (an alias bomb hits the budget, not the heap),
//! nesting depth is bounded, and oversized files are rejected up front.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// 1-based line and column of a node in its source file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    fn of(span: &Span) -> Pos {
        Pos {
            line: u32::try_from(span.start.line()).unwrap_or(u32::MAX),
            col: u32::try_from(span.start.col() + 1).unwrap_or(u32::MAX),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    Null,
    /// A scalar and whether it was written as a block (`|` or `>`), whose
    /// content starts on the line after the node's position.
    Scalar {
        value: String,
        block: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub pos: Pos,
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            NodeKind::Null => "nothing",
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// Writes the node as JSON, which is YAML too: every scalar as a string
    /// (the decoder reads scalars by their text), mappings in their order.
    /// Equal definitions give equal text, whatever their YAML style.
    pub fn write_json(&self, out: &mut String) {
        match &self.kind {
            NodeKind::Null => out.push_str("null"),
            NodeKind::Scalar { value, .. } => write_json_string(value, out),
            NodeKind::Seq(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_json(out);
                }
                out.push(']');
            }
            NodeKind::Map(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_string(k.as_str().unwrap_or_default(), out);
                    out.push(':');
                    v.write_json(out);
                }
                out.push('}');
            }
        }
    }

    fn size(&self) -> usize {
        match &self.kind {
            NodeKind::Null | NodeKind::Scalar { .. } => 1,
            NodeKind::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            NodeKind::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
        }
    }
}

/// Bounds applied while reading a document.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_depth: usize,
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1024 * 1024,
            max_depth: 64,
            max_nodes: 500_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

struct Builder {
    limits: Limits,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    root: Option<Node>,
    documents: usize,
}

impl Builder {
    fn count(&mut self, n: usize, pos: Pos) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > self.limits.max_nodes {
            return Err(YamlError {
                pos,
                message: format!(
                    "document expands to more than {} nodes, counting each use of an alias; refusing it (an alias bomb?)",
                    self.limits.max_nodes
                ),
            });
        }
        Ok(())
    }

    fn push_frame(&mut self, frame: Frame, pos: Pos) -> Result<(), YamlError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(YamlError {
                pos,
                message: format!("nesting deeper than {} levels", self.limits.max_depth),
            });
        }
        self.count(1, pos)?;
        self.stack.push(frame);
        Ok(())
    }

    fn complete(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

pub(crate) fn write_json_string(value: &str, out: &mut String) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn scalar_node(value: &str, style: ScalarStyle, pos: Pos) -> Node {
    let plain_null =
        style == ScalarStyle::Plain && matches!(value, "" | "~" | "null" | "Null" | "NULL");
    let kind = if plain_null {
        NodeKind::Null
    } else {
        NodeKind::Scalar {
            value: value.to_owned(),
            block: matches!(style, ScalarStyle::Literal | ScalarStyle::Folded),
        }
    };
    Node { kind, pos }
}

/// Reads one YAML document. An empty document is `Null`.
pub fn parse(src: &str, limits: Limits) -> Result<Node, YamlError> {
    if src.len() > limits.max_bytes {
        return Err(YamlError {
            pos: Pos { line: 1, col: 1 },
            message: format!("file is more than the limit of {} bytes", limits.max_bytes),
        });
    }
    let mut b = Builder {
        limits,
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        root: None,
        documents: 0,
    };
    for item in Parser::new_from_str(src) {
        let (event, span) = item.map_err(|e| YamlError {
            pos: Pos {
                line: u32::try_from(e.marker().line()).unwrap_or(u32::MAX),
                col: u32::try_from(e.marker().col() + 1).unwrap_or(u32::MAX),
            },
            message: format!("invalid YAML: {}", e.info()),
        })?;
        let pos = Pos::of(&span);
        match event {
            Event::DocumentStart(_) => {
                b.documents += 1;
                if b.documents > 1 {
                    return Err(YamlError {
                        pos,
                        message: "more than one YAML document in the file; put all jobs under one `jobs:`".into(),
                    });
                }
            }
            Event::Scalar(value, style, anchor, _) => {
                b.count(1, pos)?;
                let node = scalar_node(&value, style, pos);
                b.complete(node, anchor);
            }
            Event::Alias(id) => {
                let Some(target) = b.anchors.get(&id).cloned() else {
                    return Err(YamlError {
                        pos,
                        message: "alias refers to an unknown anchor".into(),
                    });
                };
                b.count(target.size(), pos)?;
                b.complete(target, 0);
            }
            Event::SequenceStart(anchor, _) => b.push_frame(
                Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                },
                pos,
            )?,
            Event::MappingStart(anchor, _) => b.push_frame(
                Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                },
                pos,
            )?,
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match b.stack.pop() {
                    Some(Frame::Seq { pos, anchor, items }) => (
                        Node {
                            kind: NodeKind::Seq(items),
                            pos,
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        pos,
                        anchor,
                        entries,
                        ..
                    }) => (
                        Node {
                            kind: NodeKind::Map(entries),
                            pos,
                        },
                        anchor,
                    ),
                    None => continue,
                };
                b.complete(node, anchor);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
    Ok(b.root.unwrap_or(Node {
        kind: NodeKind::Null,
        pos: Pos { line: 1, col: 1 },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> Result<Node, YamlError> {
        parse(src, Limits::default())
    }

    #[test]
    fn positions_are_one_based() {
        let node = p("a:\n  b: c\n").expect("valid");
        let NodeKind::Map(entries) = node.kind else {
            panic!("map expected")
        };
        let (_, inner) = &entries[0];
        let NodeKind::Map(inner) = &inner.kind else {
            panic!("map expected")
        };
        assert_eq!(inner[0].0.pos, Pos { line: 2, col: 3 });
        assert_eq!(inner[0].1.pos, Pos { line: 2, col: 6 });
    }

    #[test]
    fn plain_null_forms_are_null_but_quoted_are_strings() {
        let node = p("a:\nb: ~\nc: ''\n").expect("valid");
        let NodeKind::Map(entries) = node.kind else {
            panic!("map expected")
        };
        assert_eq!(entries[0].1.kind, NodeKind::Null);
        assert_eq!(entries[1].1.kind, NodeKind::Null);
        assert_eq!(entries[2].1.as_str(), Some(""));
    }

    #[test]
    fn small_aliases_are_expanded() {
        let node = p("a: &x [1, 2]\nb: *x\n").expect("valid");
        let NodeKind::Map(entries) = node.kind else {
            panic!("map expected")
        };
        assert_eq!(entries[0].1.kind, entries[1].1.kind);
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..14 {
            let prev = format!("*a{}", i - 1);
            let row = [prev.as_str(); 10].join(", ");
            src.push_str(&format!("a{i}: &a{i} [{row}]\n"));
        }
        let err = p(&src).expect_err("bomb must be refused");
        assert!(err.message.contains("more than 500000 nodes"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let src = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let err = p(&src).expect_err("too deep");
        assert!(err.message.contains("nesting deeper"), "{err}");
    }

    #[test]
    fn oversized_input_is_refused() {
        let limits = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        let err = parse("a: 0123456789", limits).expect_err("too big");
        assert!(err.message.contains("limit of 10 bytes"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = p("a: [1, 2\nb: 3\n").expect_err("unclosed");
        assert!(err.pos.line >= 1);
        assert!(err.message.starts_with("invalid YAML"));
    }

    #[test]
    fn second_document_is_refused() {
        let err = p("a: 1\n---\nb: 2\n").expect_err("two docs");
        assert!(err.message.contains("more than one YAML document"));
    }
}
