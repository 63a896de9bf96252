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

use crate::convert::Output;
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
                let takes = takes(property);
                let validator = compile(&Value::Object(field));
                validators.insert((model, name.clone()), FieldSchema { validator, takes });
            }
        }
        validators
    });

/// A model field's validator, and the kinds of converted value it takes whole.
struct FieldSchema {
    validator: jsonschema::Validator,
    takes: Vec<Output>,
}

/// The kinds of converted value (see [`Output`]) every one of which a property's schema takes:
/// the schema asserts nothing but a `type` and a `format` that every value of the kind meets
/// (annotations aside). An `enum`, `pattern`, length, range, `$ref` or any other format is an
/// assertion that has to be checked.
fn takes(property: &Value) -> Vec<Output> {
    let Value::Object(keywords) = property else {
        return Vec::new();
    };
    let mut types = Vec::new();
    let mut format = None;
    for (keyword, value) in keywords {
        match (keyword.as_str(), value) {
            ("description" | "title" | "examples" | "$comment", _) => {}
            ("type", Value::Array(kinds)) => types.extend(kinds.iter().filter_map(Value::as_str)),
            ("type", Value::String(kind)) => types.push(kind.as_str()),
            ("format", Value::String(name)) => format = Some(name.as_str()),
            _ => return Vec::new(),
        }
    }
    let typed = |name: &str| types.contains(&name);
    let formatted = |name: &str| format.is_none_or(|format| format == name);
    Output::ALL
        .iter()
        .copied()
        .filter(|output| match output {
            Output::Text => typed("string") && format.is_none(),
            Output::DateTime => typed("string") && formatted("date-time"),
            Output::Date => typed("string") && formatted("date"),
            Output::Integer => (typed("integer") || typed("number")) && formatted("int64"),
            Output::Number => typed("number") && formatted("double"),
            Output::Boolean => typed("boolean") && format.is_none(),
            Output::Any => false,
        })
        .collect()
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

    /// Whether every value of kind `output` fits the field: a value a converter gives back as
    /// that kind then needs no check (and a string that the conversion keeps is written
    /// straight from the page when the field takes any [`Output::Text`]).
    pub(crate) fn takes(&self, output: Output) -> bool {
        self.schema
            .is_some_and(|schema| schema.takes.contains(&output))
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

    /// Values of each kind a converter gives back, at the edges of what it gives.
    fn outputs(kind: Output) -> Vec<Value> {
        use crate::convert::convert;
        use crate::spec::Conversion;
        let converted = |conversion, inputs: &[Value]| -> Vec<Value> {
            inputs
                .iter()
                .map(|input| convert(conversion, input).expect("converts"))
                .collect()
        };
        match kind {
            Output::Text => [
                "",
                "text",
                "2026-01-02",
                "not a date",
                "ünïcödé ✓",
                "line\nbreak \"quoted\" \\",
                "\u{0}",
            ]
            .map(|text| json!(text))
            .to_vec(),
            Output::DateTime => {
                let mut values = converted(
                    Conversion::Rfc3339,
                    &[
                        json!("0000-01-01T00:00:00Z"),
                        json!("9999-12-30T21:59:59.999999999Z"),
                        json!("2024-02-29T12:00:00.5+05:30"),
                        json!("0001-01-01T00:00:00-23:59"),
                    ],
                );
                values.extend(converted(
                    Conversion::EpochSeconds,
                    &[
                        json!(0),
                        json!("1512085950.000216"),
                        json!(-62_167_219_200_i64),
                    ],
                ));
                values.extend(converted(
                    Conversion::EpochMillis,
                    &[json!(253_402_207_199_999_i64)],
                ));
                values.extend(converted(
                    Conversion::Rfc2822,
                    &[json!("Tue, 1 Jul 2003 10:52:37 +0200")],
                ));
                values
            }
            Output::Date => converted(
                Conversion::Date,
                &[
                    json!("0000-01-01"),
                    json!("9999-12-31"),
                    json!("2024-02-29"),
                ],
            ),
            Output::Integer => vec![json!(i64::MIN), json!(0), json!(i64::MAX)],
            Output::Number => vec![
                json!(f64::MIN),
                json!(-1.5),
                json!(0),
                json!(1e-300),
                json!(u64::MAX),
                json!(f64::MAX),
            ],
            Output::Boolean => vec![json!(true), json!(false)],
            Output::Any => vec![json!(null), json!([]), json!({})],
        }
    }

    /// A field said to take a kind of value whole takes every value of that kind its validator
    /// is shown; and the fields with an enumeration or a reference, or whose format a kind may
    /// not meet, are not said to take it.
    #[test]
    fn fields_take_whole_only_kinds_their_validators_accept() {
        let mut taking = std::collections::HashMap::<Output, usize>::new();
        for &model in ModelKind::ALL {
            for field in model.fields() {
                let check = FieldCheck::new(model, field.name);
                for &kind in Output::ALL {
                    if !check.takes(kind) {
                        continue;
                    }
                    *taking.entry(kind).or_default() += 1;
                    for value in outputs(kind) {
                        assert!(
                            check.check(&value).is_ok(),
                            "{}.{} takes {kind:?}, but not {value}",
                            model.name(),
                            field.name
                        );
                    }
                }
            }
        }
        for kind in [
            Output::Text,
            Output::DateTime,
            Output::Date,
            Output::Integer,
            Output::Number,
            Output::Boolean,
        ] {
            assert!(
                taking.get(&kind).is_some_and(|&fields| fields > 3),
                "{kind:?}: {taking:?}"
            );
        }
        assert!(!taking.contains_key(&Output::Any));
        let media = |name| FieldCheck::new(ModelKind::Media, name);
        assert!(media("mime_type").takes(Output::Text));
        assert!(media("file_path").takes(Output::Text));
        assert!(media("taken_at").takes(Output::DateTime));
        assert!(!media("taken_at").takes(Output::Text));
        assert!(!media("taken_at").takes(Output::Date));
        assert!(media("width").takes(Output::Integer));
        assert!(!media("width").takes(Output::Number));
        assert!(!media("width").takes(Output::Text));
        for name in ["media_type", "colour"] {
            for &kind in Output::ALL {
                assert!(!media(name).takes(kind), "{name}: {kind:?}");
            }
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
