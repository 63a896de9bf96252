//! Selecting values with JSONPath, compiled once per run.
//!
//! Most paths in specs are plain (`$.nextPageToken`, `$.mediaItems[*]`, `$['@odata.nextLink']`,
//! `$.mediaMetadata['photo','video'].cameraMake`); those become direct lookups in the decoded
//! tree, which are several times faster than a general RFC 9535 evaluation. Anything else runs
//! through `serde_json_path`, which reads `serde_json::Value`: over a copy of the node queried
//! (made once per [`Target`], whatever number of general paths run on it), and the nodes it
//! selects are found again in the tree by their normalized paths.

mod bounds;

pub use bounds::{MAX_FAN_OUT, MAX_FILTER_NESTING, MAX_LENGTH as MAX_PATH_LENGTH, MAX_NESTING};

use std::cell::OnceCell;
use std::ops::ControlFlow;

use serde_json_path::PathElement;

use crate::decode::document::{Node, member};

/// A node that paths are run on, with the copy general paths need, made on first use.
pub struct Target<'n, 'a> {
    node: &'n Node<'a>,
    copy: OnceCell<serde_json::Value>,
}

impl<'n, 'a> Target<'n, 'a> {
    /// Paths to be run on `node`.
    pub fn new(node: &'n Node<'a>) -> Self {
        Self {
            node,
            copy: OnceCell::new(),
        }
    }

    /// The node.
    pub fn node(&self) -> &'n Node<'a> {
        self.node
    }
}

/// A compiled JSONPath.
#[derive(Debug, Clone)]
pub struct CompiledPath {
    source: String,
    plan: Plan,
}

#[derive(Debug, Clone)]
enum Plan {
    /// Follow these steps; with `wildcard`, then every element (or member value) of the result.
    Direct {
        steps: Vec<Step>,
        wildcard: bool,
    },
    General(serde_json_path::JsonPath),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// `.name`, `['name']`.
    Key(String),
    /// `['a','b']`: each member that exists, in the order named.
    Keys(Vec<String>),
    /// `[N]`.
    Index(usize),
}

/// A JSONPath that does not compile, or asks for more work than the engine allows.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{}` {}: {reason}", shortened(path, 60), if *.costly { "asks more of the engine than a JSONPath may" } else { "is not a valid JSONPath" })]
pub struct PathError {
    path: String,
    reason: String,
    costly: bool,
}

/// Text as quoted in a message: whole when it has at most `shown` characters, else its start.
pub(crate) fn shortened(text: &str, shown: usize) -> String {
    match text.char_indices().nth(shown) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

impl CompiledPath {
    /// Compiles `source`.
    pub fn compile(source: &str) -> Result<Self, PathError> {
        bounds::check(source).map_err(|reason| PathError {
            path: source.to_owned(),
            reason,
            costly: true,
        })?;
        let general = serde_json_path::JsonPath::parse(source).map_err(|error| PathError {
            path: source.to_owned(),
            reason: error.to_string(),
            costly: false,
        })?;
        let plan = match direct_plan(source) {
            Some((steps, wildcard)) => Plan::Direct { steps, wildcard },
            None => Plan::General(general),
        };
        Ok(Self {
            source: source.to_owned(),
            plan,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Calls `each` with every node the path selects in `target`, in document order.
    pub fn for_each<'n, 'a>(&self, target: &Target<'n, 'a>, mut each: impl FnMut(&'n Node<'a>)) {
        match &self.plan {
            Plan::Direct { steps, wildcard } => {
                let _ = visit(target.node, steps, *wildcard, &mut |node| {
                    each(node);
                    ControlFlow::Continue(())
                });
            }
            Plan::General(path) => {
                let copy = target
                    .copy
                    .get_or_init(|| serde_json::Value::from(target.node));
                for located in path.query_located(copy) {
                    if let Some(node) = locate(target.node, located.location().iter()) {
                        each(node);
                    }
                }
            }
        }
    }

    /// The first node the path selects in `target`.
    pub fn first<'n, 'a>(&self, target: &Target<'n, 'a>) -> Option<&'n Node<'a>> {
        match &self.plan {
            // Most mapped fields are a chain of names: followed in a loop, with no callback.
            Plan::Direct {
                steps,
                wildcard: false,
            } => {
                let mut node = target.node;
                for (at, step) in steps.iter().enumerate() {
                    node = match (step, node) {
                        (Step::Key(key), Node::Object(members)) => member(members, key)?,
                        (Step::Index(index), Node::Array(items)) => items.get(*index)?,
                        (Step::Keys(_), _) => return first_visited(node, &steps[at..], false),
                        _ => return None,
                    };
                }
                Some(node)
            }
            Plan::Direct { steps, wildcard } => first_visited(target.node, steps, *wildcard),
            Plan::General(_) => {
                let mut found = None;
                self.for_each(target, |node| {
                    if found.is_none() {
                        found = Some(node);
                    }
                });
                found
            }
        }
    }

    /// The first node the path selects in `node` (which is queried once).
    pub fn first_in<'n, 'a>(&self, node: &'n Node<'a>) -> Option<&'n Node<'a>> {
        self.first(&Target::new(node))
    }
}

/// The first node `steps` (then, with `wildcard`, `[*]`) select from `node`.
fn first_visited<'n, 'a>(
    node: &'n Node<'a>,
    steps: &[Step],
    wildcard: bool,
) -> Option<&'n Node<'a>> {
    let mut found = None;
    let _ = visit(node, steps, wildcard, &mut |node| {
        found = Some(node);
        ControlFlow::Break(())
    });
    found
}

/// The node at a normalized path (names and indexes from the root).
fn locate<'n, 'a, 'p>(
    mut node: &'n Node<'a>,
    path: impl Iterator<Item = &'p PathElement<'p>>,
) -> Option<&'n Node<'a>> {
    for element in path {
        node = match (element, node) {
            (PathElement::Name(name), Node::Object(members)) => member(members, name)?,
            (PathElement::Index(index), Node::Array(items)) => items.get(*index)?,
            _ => return None,
        };
    }
    Some(node)
}

/// Calls `each` with every node `steps` (then, with `wildcard`, `[*]`) select from `node`, in
/// order, until it says to stop.
fn visit<'n, 'a>(
    node: &'n Node<'a>,
    steps: &[Step],
    wildcard: bool,
    each: &mut dyn FnMut(&'n Node<'a>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let Some((step, rest)) = steps.split_first() else {
        if !wildcard {
            return each(node);
        }
        return match node {
            Node::Array(items) => items.iter().try_for_each(each),
            Node::Object(members) => members.values().try_for_each(each),
            _ => ControlFlow::Continue(()),
        };
    };
    match (step, node) {
        (Step::Key(key), Node::Object(members)) => match member(members, key) {
            Some(child) => visit(child, rest, wildcard, each),
            None => ControlFlow::Continue(()),
        },
        (Step::Keys(keys), Node::Object(members)) => keys
            .iter()
            .filter_map(|key| member(members, key))
            .try_for_each(|child| visit(child, rest, wildcard, each)),
        (Step::Index(index), Node::Array(items)) => match items.get(*index) {
            Some(child) => visit(child, rest, wildcard, each),
            None => ControlFlow::Continue(()),
        },
        _ => ControlFlow::Continue(()),
    }
}

/// Reads `'name'` or `'a', 'b'` up to the closing `]`: the names and what follows the bracket.
/// A name with a quote or backslash (an escape) is left to the general evaluator.
fn quoted_names(mut rest: &str) -> Option<(Vec<String>, &str)> {
    let mut names = Vec::new();
    loop {
        let after = rest.trim_start().strip_prefix('\'')?;
        let end = after.find('\'')?;
        let name = &after[..end];
        if name.contains('\\') {
            return None;
        }
        names.push(name.to_owned());
        rest = after[end + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(']') {
            return Some((names, after));
        }
        rest = rest.strip_prefix(',')?;
    }
}

/// Recognises `$`, `.name`, `['name']`, `['a','b']`, `[N]` steps and an optional final `[*]` or
/// `.*`.
fn direct_plan(source: &str) -> Option<(Vec<Step>, bool)> {
    let mut rest = source.strip_prefix('$')?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if rest == "[*]" || rest == ".*" {
            return Some((steps, true));
        }
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let name = &after[..end];
            let mut chars = name.chars();
            let plain = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !plain {
                return None;
            }
            steps.push(Step::Key(name.to_owned()));
            rest = &after[end..];
        } else if let Some((mut names, after)) = rest
            .strip_prefix('[')
            .filter(|inner| inner.trim_start().starts_with('\''))
            .and_then(quoted_names)
        {
            steps.push(match names.len() {
                1 => Step::Key(names.remove(0)),
                _ => Step::Keys(names),
            });
            rest = after;
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let digits = &after[..end];
            if digits.is_empty()
                || !digits.bytes().all(|b| b.is_ascii_digit())
                || (digits.len() > 1 && digits.starts_with('0'))
            {
                return None;
            }
            steps.push(Step::Index(digits.parse().ok()?));
            rest = &after[end + 1..];
        } else {
            return None;
        }
    }
    Some((steps, false))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::decode::document::Document;

    fn general(source: &str, value: &Value) -> Vec<Value> {
        serde_json_path::JsonPath::parse(source)
            .unwrap()
            .query(value)
            .all()
            .into_iter()
            .cloned()
            .collect()
    }

    fn compiled(source: &str, value: &Value) -> Vec<Value> {
        let document = Document::from_value(value.clone());
        let mut out = Vec::new();
        CompiledPath::compile(source)
            .unwrap()
            .for_each(&Target::new(document.root()), |node| {
                out.push(Value::from(node))
            });
        out
    }

    #[test]
    fn plain_paths_take_the_direct_plan() {
        for (source, steps) in [
            ("$", 0),
            ("$.a.b", 2),
            ("$['@odata.nextLink']", 1),
            ("$.items[0].id", 3),
            ("$.items[*]", 1),
            ("$.m['photo','video'].cameraMake", 3),
            ("$.m[ 'photo' , 'video' ]", 2),
        ] {
            let path = CompiledPath::compile(source).unwrap();
            assert!(
                matches!(&path.plan, Plan::Direct { steps: s, .. } if s.len() == steps),
                "{source}"
            );
        }
        for source in [
            "$..id",
            "$.items[?@.id]",
            "$.a[\"b\",'c']",
            "$.a['b\\'c']",
            "$.items[-1]",
            "$.items[0:2]",
        ] {
            assert!(
                matches!(
                    CompiledPath::compile(source).unwrap().plan,
                    Plan::General(_)
                ),
                "{source}"
            );
        }
    }

    #[test]
    fn paths_agree_with_rfc_9535_on_the_tree() {
        let document = json!({
            "a": {"b": 1, "c": [10, 20]},
            "items": [{"id": "x"}, {"id": "y"}],
            "@odata.nextLink": "https://example.com/next",
            "map": {"k1": 1, "k2": 2},
            "empty": [],
            "scalar": 3,
            "m": {"photo": {"cameraMake": "Pixel"}},
            "v": {"video": {"cameraMake": "Apple"}},
            "both": {"video": {"cameraMake": "Apple"}, "photo": {"cameraMake": "Pixel"}}
        });
        for source in [
            "$",
            "$.a",
            "$.a.b",
            "$.a.c[1]",
            "$.a.c[5]",
            "$.items[*]",
            "$.items[1].id",
            "$['@odata.nextLink']",
            "$.map[*]",
            "$.map.*",
            "$.empty[*]",
            "$.scalar[*]",
            "$.missing",
            "$.missing[*]",
            "$.a.b.c",
            "$.a['b','c']",
            "$.a['c','b']",
            "$.a['b','b']",
            "$.a['b','missing','c'][*]",
            "$.m['photo','video'].cameraMake",
            "$.v['photo','video'].cameraMake",
            "$.both['photo','video'].cameraMake",
            "$.items['photo','video']",
            "$['a', 'map'].k1",
            // General paths: evaluated on a copy, the selected nodes found again in the tree.
            "$..id",
            "$.items[?@.id=='y']",
            "$.items[?@.id=='y'].id",
            "$.items[-1]",
            "$.a.c[0:2]",
            "$..[?@.cameraMake=='Apple']",
            "$.map[?@ > 1]",
        ] {
            let expected = general(source, &document);
            assert_eq!(compiled(source, &document), expected, "{source}");
            let tree = Document::from_value(document.clone());
            let first = CompiledPath::compile(source)
                .unwrap()
                .first_in(tree.root())
                .map(Value::from);
            assert_eq!(first.as_ref(), expected.first(), "first of {source}");
        }
    }

    #[test]
    fn first_returns_the_first_node() {
        let document = Document::from_value(json!({"m": {"photo": {"cameraMake": "Pixel"}}}));
        let path = CompiledPath::compile("$.m['photo','video'].cameraMake").unwrap();
        assert_eq!(
            path.first_in(document.root()).map(Value::from),
            Some(json!("Pixel"))
        );
        assert_eq!(
            CompiledPath::compile("$.nothing")
                .unwrap()
                .first_in(document.root()),
            None
        );
    }

    #[test]
    fn invalid_paths_are_errors() {
        assert!(CompiledPath::compile("$.items[*").is_err());
        assert!(CompiledPath::compile("items").is_err());
    }
}
