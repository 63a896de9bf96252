//! JSON Schema errors → problems an author can act on.
//!
//! A raw validator says "is not valid under any of the schemas listed in the 'oneOf' keyword".
//! Here every error is explained against the schema it failed: a `oneOf`/`anyOf` failure is
//! narrowed to the branch the author evidently meant (the one whose `kind` matches, or whose
//! type fits), unknown keys get a "did you mean", and values of the wrong shape say what shape
//! was expected, using the `x-expected` hints the spec types put in the schema.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use super::diagnostic::{Problem, did_you_mean, one_of};

/// Every problem the schema finds in `instance`.
pub(crate) fn explain(validator: &Validator, schema: &Value, instance: &Value) -> Vec<Problem> {
    let explainer = Explainer {
        schema,
        misspelt: std::cell::RefCell::new(Vec::new()),
    };
    let mut problems = Vec::new();
    for error in validator.iter_errors(instance) {
        explainer.explain(&error, &mut problems);
    }
    // `recods:` is one mistake, not two: the unknown key that suggests `records` already says
    // so, and a separate "missing field `records`" would only repeat it.
    let misspelt = explainer.misspelt.into_inner();
    problems.retain(|problem| {
        !misspelt.iter().any(|(pointer, name)| {
            problem.pointer == *pointer && problem.message == format!("missing field `{name}`")
        })
    });
    problems
}

struct Explainer<'s> {
    schema: &'s Value,
    /// (object pointer, field name) of unknown keys that look like a misspelling of that field.
    misspelt: std::cell::RefCell<Vec<(String, String)>>,
}

impl Explainer<'_> {
    fn explain(&self, error: &ValidationError<'_>, out: &mut Vec<Problem>) {
        let pointer = error.instance_path().as_str().to_owned();
        let schema_path = error.schema_path().as_str();
        let instance = error.instance();
        match error.kind() {
            ValidationErrorKind::OneOfNotValid { context }
            | ValidationErrorKind::AnyOf { context } => {
                self.explain_alternatives(&pointer, schema_path, instance, context, out);
            }
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let owner = self.node(parent_path(schema_path));
                let allowed: Vec<&str> = owner
                    .and_then(|node| node.get("properties"))
                    .and_then(Value::as_object)
                    .map(|properties| properties.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                let expected = format!("one of the fields here: {}", allowed.join(", "));
                for name in unexpected {
                    let mut message = format!("unknown field `{name}`");
                    if let Some(close) = did_you_mean(name, allowed.iter().copied()) {
                        message = format!("{message} (did you mean `{close}`?)");
                        self.misspelt
                            .borrow_mut()
                            .push((pointer.clone(), close.to_owned()));
                    }
                    out.push(
                        Problem::at(child_pointer(&pointer, name), message)
                            .on_key()
                            .expected(expected.clone()),
                    );
                }
            }
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                // A field required by a condition (`then`) is described beside the condition.
                let mut owner_path = parent_path(schema_path);
                if let Some(outer) = owner_path.strip_suffix("/then") {
                    owner_path = outer;
                }
                let owner = self.node(owner_path);
                let hint = owner
                    .and_then(|node| node.pointer(&format!("/properties/{name}")))
                    .and_then(|node| self.describe(node));
                let mut problem = Problem::at(pointer, format!("missing field `{name}`")).on_key();
                if let Some(hint) = hint {
                    problem = problem.expected(format!("`{name}`: {hint}"));
                }
                out.push(problem);
            }
            ValidationErrorKind::Type { kind } => {
                let mut expected = self
                    .hint(parent_path(schema_path))
                    .unwrap_or_else(|| type_names(kind));
                // `version: 1.0` and `param: 2` are text to the author but numbers to YAML.
                let wants_text = matches!(kind, TypeKind::Single(jsonschema::JsonType::String));
                if wants_text && (instance.is_number() || instance.is_boolean()) {
                    expected = format!(
                        "{expected}: YAML reads this as a {}, quote it (\"{}\")",
                        if instance.is_number() {
                            "number"
                        } else {
                            "boolean"
                        },
                        instance
                    );
                }
                out.push(
                    Problem::at(pointer, format!("found {}", describe_value(instance)))
                        .expected(expected),
                );
            }
            ValidationErrorKind::Pattern { pattern } => {
                let expected = self
                    .hint(parent_path(schema_path))
                    .unwrap_or_else(|| format!("text matching `{pattern}`"));
                out.push(
                    Problem::at(
                        pointer,
                        format!("{} is not valid here", describe_value(instance)),
                    )
                    .expected(expected),
                );
            }
            ValidationErrorKind::Enum { options } => {
                let choices = strings_of(options);
                out.push(self.not_a_choice(pointer, instance, &choices));
            }
            ValidationErrorKind::Constant { expected_value } => {
                let choices = strings_of(&Value::Array(vec![(**expected_value).clone()]));
                out.push(self.not_a_choice(pointer, instance, &choices));
            }
            ValidationErrorKind::MinLength { limit: 1 }
            | ValidationErrorKind::MinItems { limit: 1 }
            | ValidationErrorKind::MinProperties { limit: 1 } => {
                let what = self
                    .hint(parent_path(schema_path))
                    .unwrap_or_else(|| "at least one entry".to_owned());
                out.push(Problem::at(pointer, "is empty").expected(what));
            }
            ValidationErrorKind::Minimum { limit } => {
                out.push(
                    Problem::at(
                        pointer,
                        format!("{} is too small", describe_value(instance)),
                    )
                    .expected(format!("at least {limit}")),
                );
            }
            ValidationErrorKind::Maximum { limit } => {
                out.push(
                    Problem::at(
                        pointer,
                        format!("{} is too large", describe_value(instance)),
                    )
                    .expected(format!("at most {limit}")),
                );
            }
            ValidationErrorKind::MaxLength { limit } => {
                out.push(
                    Problem::at(pointer, "is too long")
                        .expected(format!("at most {limit} characters")),
                );
            }
            _ => out.push(Problem::at(pointer, error.to_string())),
        }
    }

    /// Explains a failed `oneOf`/`anyOf` by the branch the author meant.
    fn explain_alternatives(
        &self,
        pointer: &str,
        schema_path: &str,
        instance: &Value,
        branches: &[Vec<ValidationError<'static>>],
        out: &mut Vec<Problem>,
    ) {
        let alternatives: Vec<&Value> = self
            .node(schema_path)
            .and_then(Value::as_array)
            .map(|items| items.iter().collect())
            .unwrap_or_default();

        // A tagged variant (`kind: oauth2`) is picked by its tag: a property whose value is a
        // `const` in every alternative.
        if let Some(tag) = tag_property(&alternatives) {
            let tags: Vec<String> = alternatives
                .iter()
                .filter_map(|alternative| alternative.pointer(&format!("/properties/{tag}/const")))
                .filter_map(|value| value.as_str().map(str::to_owned))
                .collect();
            match instance.get(&tag) {
                None if instance.is_object() => {
                    out.push(
                        Problem::at(pointer, format!("missing field `{tag}`"))
                            .on_key()
                            .expected(format!("`{tag}`: {}", one_of(&tags))),
                    );
                    return;
                }
                Some(value) => {
                    let chosen = alternatives.iter().position(|alternative| {
                        alternative.pointer(&format!("/properties/{tag}/const")) == Some(value)
                    });
                    match chosen.and_then(|index| branches.get(index)) {
                        Some(errors) => {
                            for error in errors {
                                self.explain(error, out);
                            }
                        }
                        None => {
                            out.push(self.not_a_choice(child_pointer(pointer, &tag), value, &tags))
                        }
                    }
                    return;
                }
                None => {}
            }
        }

        // Plain choices (an enum whose variants are documented becomes a `oneOf` of consts).
        let constants: Vec<String> = alternatives
            .iter()
            .filter_map(|alternative| {
                alternative
                    .get("const")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        if !constants.is_empty() && constants.len() == alternatives.len() {
            out.push(self.not_a_choice(pointer.to_owned(), instance, &constants));
            return;
        }

        // Otherwise keep the alternatives whose type fits and explain the one with the fewest
        // errors: `map: {title: 3}` is a wrong type, `{from: .., as: bogus}` a wrong conversion.
        let fitting: Vec<&Vec<ValidationError<'static>>> = branches
            .iter()
            .filter(|errors| {
                !errors.iter().any(|error| {
                    error.instance_path().as_str() == pointer
                        && matches!(error.kind(), ValidationErrorKind::Type { .. })
                })
            })
            .collect();
        match fitting.into_iter().min_by_key(|errors| errors.len()) {
            Some(errors) => {
                for error in errors {
                    self.explain(error, out);
                }
            }
            None => {
                let expected = self
                    .hint(
                        schema_path
                            .rsplit_once('/')
                            .map_or("", |(parent, _)| parent),
                    )
                    .unwrap_or_else(|| {
                        let mut names: Vec<String> = Vec::new();
                        for error in branches.iter().flatten() {
                            if let ValidationErrorKind::Type { kind } = error.kind() {
                                names.push(type_names(kind));
                            }
                        }
                        names.dedup();
                        names.join(" or ")
                    });
                out.push(
                    Problem::at(pointer, format!("found {}", describe_value(instance)))
                        .expected(expected),
                );
            }
        }
    }

    fn not_a_choice(&self, pointer: String, value: &Value, choices: &[String]) -> Problem {
        let mut message = format!("{} is not allowed here", describe_value(value));
        if let Some(text) = value.as_str()
            && let Some(close) = did_you_mean(text, choices.iter().map(String::as_str))
        {
            message = format!(
                "{} is not allowed here (did you mean `{close}`?)",
                describe_value(value)
            );
        }
        Problem::at(pointer, message).expected(one_of(choices))
    }

    /// The schema node at a canonical schema path (the validator's paths do not pass `$ref`).
    fn node(&self, path: &str) -> Option<&Value> {
        self.schema.pointer(path)
    }

    /// The `x-expected` hint of the node at `path`, following a `$ref` it may be.
    fn hint(&self, path: &str) -> Option<String> {
        let node = self.node(path)?;
        self.resolve(node)
            .get("x-expected")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// A short description of what a property holds: its hint, or its description's first
    /// sentence.
    fn describe(&self, node: &Value) -> Option<String> {
        let node = self.resolve(node);
        if let Some(hint) = node.get("x-expected").and_then(Value::as_str) {
            return Some(hint.to_owned());
        }
        let description = node.get("description").and_then(Value::as_str)?;
        let sentence = description
            .split_inclusive(". ")
            .next()
            .unwrap_or(description)
            .trim();
        Some(sentence.trim_end_matches('.').to_lowercase())
    }

    fn resolve<'a>(&'a self, node: &'a Value) -> &'a Value {
        node.get("$ref")
            .and_then(Value::as_str)
            .and_then(|reference| reference.strip_prefix('#'))
            .and_then(|path| self.schema.pointer(path))
            .unwrap_or(node)
    }
}

/// The property that is a `const` in every alternative, if there is one (the enum's tag).
fn tag_property(alternatives: &[&Value]) -> Option<String> {
    let first = alternatives.first()?.get("properties")?.as_object()?;
    first
        .iter()
        .filter(|(_, schema)| schema.get("const").is_some())
        .map(|(name, _)| name)
        .find(|name| {
            alternatives.len() > 1
                && alternatives.iter().all(|alternative| {
                    alternative
                        .pointer(&format!("/properties/{name}/const"))
                        .is_some()
                })
        })
        .cloned()
}

fn parent_path(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

fn child_pointer(pointer: &str, name: &str) -> String {
    format!("{pointer}/{}", super::yaml::pointer_segment(name))
}

fn strings_of(options: &Value) -> Vec<String> {
    options
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map_or_else(|| item.to_string(), str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A value as a message shows it: short text quoted, containers by their kind.
fn describe_value(value: &Value) -> String {
    match value {
        Value::Null => "nothing".to_owned(),
        Value::Bool(flag) => format!("`{flag}`"),
        Value::Number(number) => format!("the number `{number}`"),
        Value::String(text) if text.chars().count() > 40 => {
            format!("`{}…`", text.chars().take(40).collect::<String>())
        }
        Value::String(text) => format!("`{text}`"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a mapping".to_owned(),
    }
}

fn type_names(kind: &TypeKind) -> String {
    let name = |json_type: jsonschema::JsonType| match json_type {
        jsonschema::JsonType::Array => "a list",
        jsonschema::JsonType::Boolean => "true or false",
        jsonschema::JsonType::Integer => "a whole number",
        jsonschema::JsonType::Null => "nothing",
        jsonschema::JsonType::Number => "a number",
        jsonschema::JsonType::Object => "a mapping",
        jsonschema::JsonType::String => "text",
    };
    match kind {
        TypeKind::Single(json_type) => name(*json_type).to_owned(),
        TypeKind::Multiple(types) => types
            .iter()
            .filter(|t| *t != jsonschema::JsonType::Null)
            .map(name)
            .collect::<Vec<_>>()
            .join(" or "),
    }
}
