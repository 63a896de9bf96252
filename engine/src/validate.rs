//! Validating mapped records against their model's JSON Schema.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::Value;

use crate::models::ModelKind;

static VALIDATORS: LazyLock<HashMap<ModelKind, jsonschema::Validator>> = LazyLock::new(|| {
    ModelKind::ALL
        .iter()
        .map(|&model| {
            let schema =
                serde_json::to_value(model.schema()).expect("model schemas are plain JSON");
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(&schema)
                .expect("generated model schemas are valid JSON Schemas");
            (model, validator)
        })
        .collect()
});

/// Checks a mapped record (provenance included). The error lists what is wrong, field by field.
pub fn validate_record(model: ModelKind, record: &Value) -> Result<(), String> {
    let Some(validator) = VALIDATORS.get(&model) else {
        return Ok(());
    };
    if validator.is_valid(record) {
        return Ok(());
    }
    let reasons: Vec<String> = validator
        .iter_errors(record)
        .take(5)
        .map(|error| {
            let path = error
                .instance_path()
                .as_str()
                .trim_start_matches('/')
                .replace('/', ".");
            if path.is_empty() {
                error.to_string()
            } else {
                format!("{path}: {error}")
            }
        })
        .collect();
    Err(format!(
        "does not fit model `{}`: {}",
        model.name(),
        reasons.join("; ")
    ))
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
}
