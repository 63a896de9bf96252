//! A stream's request, compiled once and rendered for each page.

use serde_json::Value;

use crate::http::{HttpRequest, RequestBody};
use crate::spec::{Body, Method, ParamLocation, Request};
use crate::template::{BuildError, RenderError, TemplateId, Templates};

/// A JSON body whose strings are templates.
#[derive(Debug, Clone)]
enum JsonTemplate {
    Literal(Value),
    Text(TemplateId),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

#[derive(Debug, Clone)]
enum BodyPlan {
    None,
    Json(JsonTemplate),
    Form(Vec<(String, TemplateId)>),
}

/// A compiled request.
#[derive(Debug, Clone)]
pub struct RequestPlan {
    method: reqwest::Method,
    path: TemplateId,
    query: Vec<(String, TemplateId)>,
    headers: Vec<(String, TemplateId)>,
    body: BodyPlan,
}

/// A value a paginator or incremental cursor adds to a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    /// Where it goes.
    pub location: ParamLocation,
    /// The parameter or top-level body field.
    pub name: String,
    /// Its value.
    pub value: Value,
}

/// Why a request could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A template failed.
    #[error("{0}")]
    Render(#[from] RenderError),
    /// The rendered URL is not a URL.
    #[error("`{url}` is not a valid URL: {reason}")]
    Url {
        /// The rendered text.
        url: String,
        /// Why.
        reason: String,
    },
}

impl RequestPlan {
    /// Compiles `request`; `headers` are the connector's own, sent first.
    pub fn compile(
        request: &Request,
        connector_headers: &indexmap::IndexMap<String, crate::spec::Template>,
        templates: &mut Templates,
    ) -> Result<Self, BuildError> {
        let pairs = |map: &indexmap::IndexMap<String, crate::spec::Template>,
                     templates: &mut Templates| {
            map.iter()
                .map(|(name, value)| Ok((name.clone(), templates.add(value.as_str())?)))
                .collect::<Result<Vec<_>, BuildError>>()
        };
        let mut headers = pairs(connector_headers, templates)?;
        headers.extend(pairs(&request.headers, templates)?);
        let body = match &request.body {
            None => BodyPlan::None,
            Some(Body::Json(value)) => BodyPlan::Json(compile_json(value, templates)?),
            Some(Body::Form(fields)) => BodyPlan::Form(pairs(fields, templates)?),
        };
        Ok(Self {
            method: match request.method {
                Method::Get => reqwest::Method::GET,
                Method::Post => reqwest::Method::POST,
                Method::Put => reqwest::Method::PUT,
                Method::Patch => reqwest::Method::PATCH,
                Method::Delete => reqwest::Method::DELETE,
            },
            path: templates.add(request.path.as_str())?,
            query: pairs(&request.query, templates)?,
            headers,
            body,
        })
    }

    /// Renders the request with `context`, then adds `injections`.
    pub fn render(
        &self,
        base_url: &str,
        context: &minijinja::Value,
        templates: &Templates,
        injections: &[Injection],
    ) -> Result<HttpRequest, RequestError> {
        let path = templates.render(&self.path, context)?;
        let full = if path.starts_with("https://") || path.starts_with("http://") {
            path
        } else {
            format!("{}{}", base_url.trim_end_matches('/'), path)
        };
        let mut url = url::Url::parse(&full).map_err(|error| RequestError::Url {
            url: full.clone(),
            reason: error.to_string(),
        })?;
        {
            let mut query = Vec::with_capacity(self.query.len() + injections.len());
            for (name, template) in &self.query {
                let value = templates.render(template, context)?;
                // An empty value is left out, so optional parameters can be written as templates.
                if !value.is_empty() {
                    query.push((name.as_str(), value));
                }
            }
            // An injected value replaces the request's own (Drive's `pageToken` starts at the
            // kept position; the paginator's token takes over from the second page), as it does
            // in a JSON body.
            for injection in injections
                .iter()
                .filter(|injection| injection.location == ParamLocation::Query)
            {
                query.retain(|(name, _)| *name != injection.name);
                query.push((injection.name.as_str(), scalar_text(&injection.value)));
            }
            url.query_pairs_mut().extend_pairs(query);
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let headers = self
            .headers
            .iter()
            .map(|(name, template)| Ok((name.clone(), templates.render(template, context)?)))
            .collect::<Result<Vec<_>, RenderError>>()?;
        let body = match &self.body {
            BodyPlan::None => None,
            BodyPlan::Json(template) => {
                let mut value = render_json(template, context, templates)?;
                if let Value::Object(fields) = &mut value {
                    for injection in injections
                        .iter()
                        .filter(|injection| injection.location == ParamLocation::Body)
                    {
                        fields.insert(injection.name.clone(), injection.value.clone());
                    }
                }
                Some(RequestBody::Json(value))
            }
            BodyPlan::Form(fields) => Some(RequestBody::Form(
                fields
                    .iter()
                    .map(|(name, template)| {
                        Ok((name.clone(), templates.render(template, context)?))
                    })
                    .collect::<Result<Vec<_>, RenderError>>()?,
            )),
        };
        Ok(HttpRequest {
            method: self.method.clone(),
            url,
            headers,
            body,
            max_body: None,
        })
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn compile_json(value: &Value, templates: &mut Templates) -> Result<JsonTemplate, BuildError> {
    Ok(match value {
        Value::String(text) if crate::template::is_literal(text) => {
            JsonTemplate::Literal(value.clone())
        }
        Value::String(text) => JsonTemplate::Text(templates.add(text)?),
        Value::Array(items) => JsonTemplate::Array(
            items
                .iter()
                .map(|item| compile_json(item, templates))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(fields) => JsonTemplate::Object(
            fields
                .iter()
                .map(|(name, field)| Ok((name.clone(), compile_json(field, templates)?)))
                .collect::<Result<_, BuildError>>()?,
        ),
        other => JsonTemplate::Literal(other.clone()),
    })
}

fn render_json(
    template: &JsonTemplate,
    context: &minijinja::Value,
    templates: &Templates,
) -> Result<Value, RenderError> {
    Ok(match template {
        JsonTemplate::Literal(value) => value.clone(),
        JsonTemplate::Text(id) => Value::String(templates.render(id, context)?),
        JsonTemplate::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| render_json(item, context, templates))
                .collect::<Result<_, _>>()?,
        ),
        JsonTemplate::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, field)| Ok((name.clone(), render_json(field, context, templates)?)))
                .collect::<Result<_, RenderError>>()?,
        ),
    })
}
