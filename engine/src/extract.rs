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
    /// Follow these steps through the tree itself.
    Direct {
        steps: Vec<Step>,
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
    /// `[*]`, `.*`: every element (or member value).
    Wildcard,
    /// `[?@.a.b]`: every element (or member value) in which the relative path selects a node
    /// (RFC 9535's existence test: a `null` there exists).
    Exists(Vec<Step>),
    /// `[?!@.a.b]`: every element (or member value) in which the relative path selects
    /// nothing (Apple Health's category samples: the `Record`s without a `@unit`).
    Missing(Vec<Step>),
    /// `[?@.a.b != null]`: every element (or member value) in which the relative (singular)
    /// path selects nothing or something other than `null` (RFC 9535's comparison).
    NotNull(Vec<Step>),
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
            Some(steps) => Plan::Direct { steps },
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
            Plan::Direct { steps } => {
                let _ = visit(target.node, steps, &mut |node| {
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
            Plan::Direct { steps } => {
                let mut node = target.node;
                for (at, step) in steps.iter().enumerate() {
                    node = match (step, node) {
                        (Step::Key(key), Node::Object(members)) => member(members, key)?,
                        (Step::Index(index), Node::Array(items)) => items.get(*index)?,
                        (
                            Step::Keys(_)
                            | Step::Wildcard
                            | Step::Exists(_)
                            | Step::Missing(_)
                            | Step::NotNull(_),
                            _,
                        ) => {
                            return first_visited(node, &steps[at..]);
                        }
                        _ => return None,
                    };
                }
                Some(node)
            }
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

/// The first node `steps` select from `node`.
fn first_visited<'n, 'a>(node: &'n Node<'a>, steps: &[Step]) -> Option<&'n Node<'a>> {
    let mut found = None;
    let _ = visit(node, steps, &mut |node| {
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

/// Whether the singular path `test` selects nothing or a value other than `null` in `node`.
fn not_null(node: &Node<'_>, test: &[Step]) -> bool {
    first_visited(node, test).is_none_or(|found| !matches!(found, Node::Null))
}

/// Calls `each` with every node `steps` select from `node`, in document order, until it says to
/// stop.
fn visit<'n, 'a>(
    node: &'n Node<'a>,
    steps: &[Step],
    each: &mut dyn FnMut(&'n Node<'a>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let Some((step, rest)) = steps.split_first() else {
        return each(node);
    };
    let mut children = |children: &mut dyn Iterator<Item = &'n Node<'a>>| {
        for child in children {
            visit(child, rest, each)?;
        }
        ControlFlow::Continue(())
    };
    match (step, node) {
        (Step::Key(key), Node::Object(members)) => match member(members, key) {
            Some(child) => visit(child, rest, each),
            None => ControlFlow::Continue(()),
        },
        (Step::Keys(keys), Node::Object(members)) => {
            children(&mut keys.iter().filter_map(|key| member(members, key)))
        }
        (Step::Index(index), Node::Array(items)) => match items.get(*index) {
            Some(child) => visit(child, rest, each),
            None => ControlFlow::Continue(()),
        },
        (Step::Wildcard, Node::Array(items)) => children(&mut items.iter()),
        (Step::Wildcard, Node::Object(members)) => children(&mut members.values()),
        (Step::Exists(test), Node::Array(items)) => children(
            &mut items
                .iter()
                .filter(|item| first_visited(item, test).is_some()),
        ),
        (Step::Exists(test), Node::Object(members)) => children(
            &mut members
                .values()
                .filter(|value| first_visited(value, test).is_some()),
        ),
        (Step::Missing(test), Node::Array(items)) => children(
            &mut items
                .iter()
                .filter(|item| first_visited(item, test).is_none()),
        ),
        (Step::Missing(test), Node::Object(members)) => children(
            &mut members
                .values()
                .filter(|value| first_visited(value, test).is_none()),
        ),
        (Step::NotNull(test), Node::Array(items)) => {
            children(&mut items.iter().filter(|item| not_null(item, test)))
        }
        (Step::NotNull(test), Node::Object(members)) => {
            children(&mut members.values().filter(|value| not_null(value, test)))
        }
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

/// Recognises `$` followed by `.name`, `['name']`, `['a','b']`, `[N]`, `[*]`, `.*` and existence
/// filters of such steps (`[?@.Record['@unit']]`): paths followed through the tree itself.
fn direct_plan(source: &str) -> Option<Vec<Step>> {
    let (steps, rest) = direct_steps(source.strip_prefix('$')?)?;
    rest.is_empty().then_some(steps)
}

/// Steps up to the end of `rest` or a `]` that closes an enclosing filter: the steps and what
/// is left (empty, or starting with that `]`).
fn direct_steps(rest: &str) -> Option<(Vec<Step>, &str)> {
    direct_steps_until(rest, "]")
}

/// Steps up to the end of `rest`, a `]`, or `end`: the steps and what is left.
fn direct_steps_until<'r>(mut rest: &'r str, end: &str) -> Option<(Vec<Step>, &'r str)> {
    let mut steps = Vec::new();
    while !rest.is_empty() && !rest.starts_with(']') && !rest.starts_with(end) {
        if let Some(after) = rest.strip_prefix("[*]").or_else(|| rest.strip_prefix(".*")) {
            steps.push(Step::Wildcard);
            rest = after;
        } else if let Some(after) = rest.strip_prefix("[?!@") {
            let (test, after) = direct_steps(after)?;
            steps.push(Step::Missing(test));
            rest = after.strip_prefix(']')?;
        } else if let Some(after) = rest.strip_prefix("[?@") {
            let (test, after) = direct_steps_until(after, " != null]")?;
            match after.strip_prefix(" != null]") {
                // A comparison takes a singular path: names and indexes only.
                Some(after) => {
                    let singular = test
                        .iter()
                        .all(|step| matches!(step, Step::Key(_) | Step::Index(_)));
                    if !singular {
                        return None;
                    }
                    steps.push(Step::NotNull(test));
                    rest = after;
                }
                None => {
                    steps.push(Step::Exists(test));
                    rest = after.strip_prefix(']')?;
                }
            }
        } else if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[', ']', ' ']).unwrap_or(after.len());
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
    Some((steps, rest))
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
            ("$.items[*]", 2),
            ("$.m['photo','video'].cameraMake", 3),
            ("$.m[ 'photo' , 'video' ]", 2),
            ("$[*].Record", 2),
            ("$[?@.Record['@unit']].Record", 2),
            ("$[?!@.Record['@unit']].Record", 2),
            ("$.items[?@.id].id", 3),
            ("$.map.*", 2),
            ("$[?@.spotify_track_uri != null]", 1),
            ("$.items[?@.a.b != null].id", 3),
        ] {
            let path = CompiledPath::compile(source).unwrap();
            assert!(
                matches!(&path.plan, Plan::Direct { steps: s, .. } if s.len() == steps),
                "{source}"
            );
        }
        for source in [
            "$..id",
            "$.items[?@.id=='y']",
            "$.items[?(@.id)]",
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
            "both": {"video": {"cameraMake": "Apple"}, "photo": {"cameraMake": "Pixel"}},
            "nulls": [{"x": null, "y": 1}, {"x": 0, "y": 2}, {"y": 3}, {"x": {"z": null}, "y": 4}]
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
            "$.items[*].id",
            "$.items[?@.id]",
            "$.items[?@.id].id",
            "$.items[?@.missing].id",
            "$.both[?@.cameraMake].cameraMake",
            "$[?@.cameraMake]",
            "$.map[?@]",
            "$.a[*][*]",
            "$.a.c[?@]",
            "$[*][?@.id].id",
            "$.items[?@.id != null]",
            "$.items[?@.missing != null].id",
            "$[?@.photo != null]",
            "$.both[?@.cameraMake != null].cameraMake",
            "$.nulls[?@.x != null].y",
            "$.nulls[?!@.x].y",
            "$.nulls[?!@.x.z].y",
            "$.items[?!@.id]",
            "$.both[?!@.cameraMake]",
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
