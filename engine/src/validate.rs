//! Validating mapped records against their model's JSON Schema.
//!
//! Records are mapped straight into JSON text, with no tree to validate, so each field's value
//! is checked on its own against the model schema's subschema for that property
//! ([`FieldCheck`]). The schema's object-level keywords hold by construction of the mapper: the
//! record is an object (`type`), it holds only model fields (`additionalProperties: false`), the
//! provenance fields are always written and a required field without a value is refused
//! (`required`). [`ROOT_KEYWORDS`] lists the keywords that argument covers; a test fails if a
//! model schema ever uses another one. [`validate_record`] checks a whole record at once.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::{Map, Value};

use crate::models::ModelKind;

/// The object-level keywords a model schema may use: constraints the mapper keeps by
/// construction (see the module docs), and annotations.
pub const ROOT_KEYWORDS: &[&str] = &[
    "$schema",
    "$defs",
    "title",
    "description",
    "type",
    "properties",
    "required",
    "additionalProperties",
];

fn model_schema(model: ModelKind) -> Map<String, Value> {
    match serde_json::to_value(model.schema()) {
        Ok(Value::Object(schema)) => schema,
        _ => unreachable!("model schemas are generated JSON objects"),
    }
}

fn compile(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .expect("generated model schemas are valid JSON Schemas")
}

static VALIDATORS: LazyLock<HashMap<ModelKind, jsonschema::Validator>> = LazyLock::new(|| {
    ModelKind::ALL
        .iter()
        .map(|&model| (model, compile(&Value::Object(model_schema(model)))))
        .collect()
});

/// Each model field's own validator: the property's subschema, with the model's `$defs` (which
/// its `$ref`s name) and `$schema` beside it.
static FIELD_VALIDATORS: LazyLock<HashMap<(ModelKind, String), FieldSchema>> =
    LazyLock::new(|| {
        let mut validators = HashMap::new();
        for &model in ModelKind::ALL {
            let schema = model_schema(model);
            let Some(Value::Object(properties)) = schema.get("properties") else {
                continue;
            };
            for (name, property) in properties {
                let mut field = match property {
                    Value::Object(field) => field.clone(),
                    other => {
                        Map::from_iter([("allOf".to_owned(), Value::Array(vec![other.clone()]))])
                    }
                };
                for keyword in ["$schema", "$defs"] {
                    if let Some(value) = schema.get(keyword) {
                        field.insert(keyword.to_owned(), value.clone());
                    }
                }
                let any_text = takes_any_text(property);
                let validator = compile(&Value::Object(field));
                validators.insert(
                    (model, name.clone()),
                    FieldSchema {
                        validator,
                        any_text,
                    },
                );
            }
        }
        validators
    });

/// A model field's validator, and whether it takes every string.
struct FieldSchema {
    validator: jsonschema::Validator,
    any_text: bool,
}

/// Whether a property's schema takes every string: it asserts nothing but a `type` that
/// includes `string` (annotations aside). A `format`, `enum`, `pattern`, length or `$ref` is an
/// assertion that has to be checked.
fn takes_any_text(property: &Value) -> bool {
    let Value::Object(keywords) = property else {
        return false;
    };
    let text = |kind: &Value| kind.as_str() == Some("string");
    keywords
        .iter()
        .all(|(keyword, value)| match keyword.as_str() {
            "description" | "title" | "examples" | "$comment" => true,
            "type" => match value {
                Value::Array(kinds) => kinds.iter().any(text),
                kind => text(kind),
            },
            _ => false,
        })
        && keywords.contains_key("type")
}

/// Checks one field's value against the model schema's property `name`.
#[derive(Clone, Copy)]
pub struct FieldCheck {
    name: &'static str,
    schema: Option<&'static FieldSchema>,
}

impl std::fmt::Debug for FieldCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldCheck")
            .field("name", &self.name)
            .finish()
    }
}

impl FieldCheck {
    /// The check of `model`'s field `name`. A name the schema does not have passes nothing
    /// through: every value is refused, as `additionalProperties: false` would.
    pub fn new(model: ModelKind, name: &'static str) -> Self {
        Self {
            name,
            schema: FIELD_VALIDATORS.get(&(model, name.to_owned())),
        }
    }

    /// Whether every string fits the field: a text value then needs no check (mapping writes
    /// such values straight from the page, with no copy).
    pub fn takes_any_text(&self) -> bool {
        self.schema.is_some_and(|schema| schema.any_text)
    }

    /// Checks `value`; the error names the field (and the place inside it) and says what is wrong.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        let Some(FieldSchema { validator, .. }) = self.schema else {
            return Err(format!("{}: the model has no such field", self.name));
        };
        if validator.is_valid(value) {
            return Ok(());
        }
        Err(reasons(validator, value, self.name).join("; "))
    }
}

/// What is wrong with `value` (at most five things), each named by where it is: `at` and the
/// place inside `value`, as a dotted path.
fn reasons(validator: &jsonschema::Validator, value: &Value, at: &str) -> Vec<String> {
    validator
        .iter_errors(value)
        .take(5)
        .map(|error| {
            let inner = error.instance_path().as_str().replace('/', ".");
            let place = format!("{at}{inner}");
            match place.trim_start_matches('.') {
                "" => error.to_string(),
                place => format!("{place}: {error}"),
            }
        })
        .collect()
}

/// The reason a record that failed `reasons` is refused, as [`validate_record`] words it.
pub fn misfit(model: ModelKind, reasons: &[String]) -> String {
    format!(
        "does not fit model `{}`: {}",
        model.name(),
        reasons.join("; ")
    )
}

/// Checks a whole mapped record (provenance included). The error lists what is wrong, field by
/// field.
pub fn validate_record(model: ModelKind, record: &Value) -> Result<(), String> {
    let Some(validator) = VALIDATORS.get(&model) else {
        return Ok(());
    };
    if validator.is_valid(record) {
        return Ok(());
    }
    Err(misfit(model, &reasons(validator, record, "")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn media(extra: Value) -> Value {
        let mut record = json!({
            "user_id": "u", "source_integration_id": "i", "source_platform": "p", "source_object_id": "o",
            "media_type": "photo", "file_path": "https://example.com/a.jpg"
        });
        record
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        record
    }

    #[test]
    fn valid_records_pass_and_bad_ones_say_why() {
        assert!(validate_record(ModelKind::Media, &media(json!({"width": 4032}))).is_ok());
        let error = validate_record(ModelKind::Media, &media(json!({"media_type": "hologram"})))
            .unwrap_err();
        assert!(error.contains("media_type"), "{error}");
        let error = validate_record(ModelKind::Media, &media(json!({"taken_at": "yesterday"})))
            .unwrap_err();
        assert!(error.contains("taken_at"), "{error}");
        let error =
            validate_record(ModelKind::Media, &media(json!({"colour": "red"}))).unwrap_err();
        assert!(error.contains("colour"), "{error}");
    }

    /// A field said to take any text takes every string its validator is shown, and the fields
    /// with a format, an enumeration or a reference are not said to.
    #[test]
    fn fields_that_take_any_text_accept_every_string() {
        let texts = [
            "",
            "text",
            "2026-01-02",
            "not a date",
            "ünïcödé ✓",
            "line\nbreak \"quoted\" \\",
            "\u{0}",
        ];
        let mut taking = 0;
        for &model in ModelKind::ALL {
            for field in model.fields() {
                let check = FieldCheck::new(model, field.name);
                if !check.takes_any_text() {
                    continue;
                }
                taking += 1;
                for text in texts {
                    assert!(
                        check.check(&json!(text)).is_ok(),
                        "{}.{}: {text:?}",
                        model.name(),
                        field.name
                    );
                }
            }
        }
        assert!(taking > 10, "{taking}");
        assert!(FieldCheck::new(ModelKind::Media, "mime_type").takes_any_text());
        assert!(FieldCheck::new(ModelKind::Media, "file_path").takes_any_text());
        for name in ["taken_at", "media_type", "width", "colour"] {
            assert!(
                !FieldCheck::new(ModelKind::Media, name).takes_any_text(),
                "{name}"
            );
        }
    }

    /// Field by field checks refuse exactly the values the whole schema refuses at that field.
    #[test]
    fn each_field_is_checked_as_the_whole_schema_checks_it() {
        let samples = [
            json!(null),
            json!("text"),
            json!("2024-05-01T10:00:00Z"),
            json!("2024-05-01"),
            json!("photo"),
            json!(12),
            json!(1.5),
            json!(true),
            json!([]),
            json!(["a"]),
            json!([1]),
            json!({}),
            json!({"a": 1}),
        ];
        let mut refused = 0;
        for &model in ModelKind::ALL {
            for field in model.fields() {
                let check = FieldCheck::new(model, field.name);
                for sample in &samples {
                    let record = json!({ field.name: sample });
                    let whole = VALIDATORS[&model].iter_errors(&record).any(|error| {
                        error.instance_path().as_str().split('/').nth(1) == Some(field.name)
                    });
                    assert_eq!(
                        check.check(sample).is_err(),
                        whole,
                        "{}.{} = {sample}",
                        model.name(),
                        field.name
                    );
                    refused += usize::from(whole);
                }
            }
        }
        assert!(refused > 100, "the samples exercise refusals ({refused})");
    }

    /// The mapper keeps the object-level keywords by construction; any other would go unchecked.
    #[test]
    fn model_schemas_use_only_the_object_keywords_the_mapper_keeps() {
        for &model in ModelKind::ALL {
            let schema = model_schema(model);
            for keyword in schema.keys() {
                assert!(
                    ROOT_KEYWORDS.contains(&keyword.as_str()),
                    "model `{}` uses `{keyword}`: make the mapper keep it, then list it",
                    model.name()
                );
            }
            assert_eq!(schema["type"], "object");
            assert_eq!(schema["additionalProperties"], false);
        }
    }

    #[test]
    fn a_field_the_model_lacks_is_refused() {
        let error = FieldCheck::new(ModelKind::Media, "colour")
            .check(&json!("red"))
            .unwrap_err();
        assert!(error.contains("colour"), "{error}");
    }
}
