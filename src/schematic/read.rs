//! The event tree of a schematic body: `saphyr-parser`'s events for the first document
//! turned into [`Node`]s, refusing anchors, aliases, merge keys, tags other than
//! `!!str`/`!!map`/`!!seq` and nesting deeper than [`super::MAX_DEPTH`] before anything
//! is built. A scalar keeps whether it is a string regardless of its look (quoted, block
//! or `!!str`), which go-yaml's decoding rules ([`super::decode`]) depend on.

use saphyr_parser::{Event, Parser, ScalarStyle};

use super::{MAX_DEPTH, SchematicError, invalid};
use crate::goyaml::{Resolved, resolve};

/// A YAML node with what go-yaml's decoding needs to know about scalars.
#[derive(Debug)]
pub(super) enum Node {
    /// Text, whether it is a string regardless of its look (quoted, block, `!!str`),
    /// line (1-based).
    Scalar {
        value: String,
        string: bool,
        line: usize,
    },
    Seq {
        items: Vec<Node>,
        line: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        line: usize,
    },
}

impl Node {
    pub(super) fn line(&self) -> usize {
        match self {
            Node::Scalar { line, .. } | Node::Seq { line, .. } | Node::Map { line, .. } => *line,
        }
    }

    /// go-yaml's short tag of the node, for messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Node::Scalar { string: true, .. } => "!!str",
            Node::Scalar { .. } => match self.resolved().expect("a scalar resolves") {
                Resolved::Null => "!!null",
                Resolved::Bool(_) => "!!bool",
                Resolved::Int(_) => "!!int",
                Resolved::Float(_) => "!!float",
                Resolved::Timestamp => "!!timestamp",
                Resolved::Merge => "!!merge",
                Resolved::Str => "!!str",
            },
            Node::Seq { .. } => "!!seq",
            Node::Map { .. } => "!!map",
        }
    }

    /// The scalar's resolution as go-yaml's decoder sees it.
    pub(super) fn resolved(&self) -> Option<Resolved> {
        match self {
            Node::Scalar { string: true, .. } => Some(Resolved::Str),
            Node::Scalar { value, .. } if value == "<<" => Some(Resolved::Merge),
            Node::Scalar { value, .. } => Some(resolve(value)),
            _ => None,
        }
    }

    pub(super) fn is_null(&self) -> bool {
        self.resolved() == Some(Resolved::Null)
    }
}

/// Reads the events of the first document into a tree, refusing aliases, anchors,
/// tags other than the core `!!str`/`!!map`/`!!seq`, and nesting beyond [`MAX_DEPTH`].
pub(super) fn read_first_document(text: &str) -> Result<Option<Node>, SchematicError> {
    enum Open {
        Seq(Vec<Node>, usize),
        Map(Vec<(Node, Node)>, Option<Node>, usize),
    }
    let mut stack: Vec<Open> = Vec::new();
    let syntax = |e: saphyr_parser::ScanError| invalid(format!("YAML syntax: {e}"));
    for ev in Parser::new_from_str(text) {
        let (ev, span) = ev.map_err(syntax)?;
        let line = span.start.line();
        let tag_ok = |tag: &Option<std::borrow::Cow<'_, saphyr_parser::Tag>>, want: &str| match tag
        {
            None => Ok(false),
            Some(t) if t.is_yaml_core_schema() && t.suffix == want => Ok(true),
            Some(t) => Err(invalid(format!(
                "line {line}: tag {}{} is not supported",
                t.handle, t.suffix
            ))),
        };
        let node = match ev {
            Event::StreamStart | Event::Nothing => continue,
            Event::StreamEnd => return Ok(None),
            Event::DocumentStart(_) => continue,
            Event::DocumentEnd => return Ok(None),
            Event::Alias(_) => {
                return Err(invalid(format!("line {line}: aliases are not allowed")));
            }
            Event::Scalar(value, style, anchor, tag) => {
                if anchor != 0 {
                    return Err(invalid(format!("line {line}: anchors are not allowed")));
                }
                let tagged = tag_ok(&tag, "str")?;
                Node::Scalar {
                    value: value.into_owned(),
                    string: tagged || style != ScalarStyle::Plain,
                    line,
                }
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                if anchor != 0 {
                    return Err(invalid(format!("line {line}: anchors are not allowed")));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(invalid(format!(
                        "line {line}: nesting deeper than {MAX_DEPTH}"
                    )));
                }
                if matches!(ev, Event::SequenceStart(..)) {
                    tag_ok(tag, "seq")?;
                    stack.push(Open::Seq(Vec::new(), line));
                } else {
                    tag_ok(tag, "map")?;
                    stack.push(Open::Map(Vec::new(), None, line));
                }
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Open::Seq(items, line)) => Node::Seq { items, line },
                _ => return Err(invalid("unbalanced sequence")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Open::Map(entries, None, line)) => Node::Map { entries, line },
                _ => return Err(invalid("unbalanced mapping")),
            },
        };
        // Attach the finished node to its parent, or return it as the document root.
        match stack.last_mut() {
            None => return Ok(Some(node)),
            Some(Open::Seq(items, _)) => items.push(node),
            Some(Open::Map(entries, key, _)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
    Ok(None)
}
