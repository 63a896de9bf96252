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
        let full = self.full_url(base_url, context, templates)?;
        let query = self.query(context, templates, injections)?;
        let url = with_query(full, query)?;
        Ok(HttpRequest {
            method: self.method.clone(),
            url,
            headers: self.headers(context, templates)?,
            body: self.body(context, templates, injections)?,
            max_body: None,
        })
    }

    /// Renders the request to be sent later ([`KeptRequest`]): its URL stays text, parsed
    /// when it is sent, unless query parameters are added to it. Content is owed by the
    /// million with a record's own URL as its request (Google Photos' `baseUrl`, about 200
    /// characters), and parsing each as it was listed cost 6% of the listing's instructions.
    pub fn render_kept(
        &self,
        base_url: &str,
        context: &minijinja::Value,
        templates: &Templates,
    ) -> Result<KeptRequest, RequestError> {
        let full = self.full_url(base_url, context, templates)?;
        let query = self.query(context, templates, &[])?;
        let url = if query.is_empty() {
            full
        } else {
            with_query(full, query)?.into()
        };
        Ok(KeptRequest {
            method: self.method.to_string(),
            url,
            headers: self.headers(context, templates)?,
            json: match self.body(context, templates, &[])? {
                Some(RequestBody::Json(value)) => Some(value),
                Some(RequestBody::Form(_)) | None => None,
            },
        })
    }

    /// The rendered path, after the base URL unless it is a whole URL.
    fn full_url(
        &self,
        base_url: &str,
        context: &minijinja::Value,
        templates: &Templates,
    ) -> Result<String, RenderError> {
        let path = templates.render(&self.path, context)?;
        Ok(
            if path.starts_with("https://") || path.starts_with("http://") {
                path
            } else {
                format!("{}{}", base_url.trim_end_matches('/'), path)
            },
        )
    }

    /// The query parameters, rendered, with the injected ones.
    fn query<'s>(
        &'s self,
        context: &minijinja::Value,
        templates: &Templates,
        injections: &'s [Injection],
    ) -> Result<Vec<(&'s str, String)>, RenderError> {
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
        Ok(query)
    }

    fn headers(
        &self,
        context: &minijinja::Value,
        templates: &Templates,
    ) -> Result<Vec<(String, String)>, RenderError> {
        self.headers
            .iter()
            .map(|(name, template)| Ok((name.clone(), templates.render(template, context)?)))
            .collect()
    }

    fn body(
        &self,
        context: &minijinja::Value,
        templates: &Templates,
        injections: &[Injection],
    ) -> Result<Option<RequestBody>, RenderError> {
        Ok(match &self.body {
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
        })
    }
}

/// `full` parsed, with `query` appended to its own.
fn with_query(full: String, query: Vec<(&str, String)>) -> Result<url::Url, RequestError> {
    let mut url = url::Url::parse(&full).map_err(|error| RequestError::Url {
        reason: error.to_string(),
        url: full,
    })?;
    url.query_pairs_mut().extend_pairs(query);
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url)
}

/// A rendered request as it is kept to be sent later (an owed download): without
/// credentials (the connector's auth and headers are added when it is sent) and with a JSON
/// body only.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeptRequest {
    /// The method.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
    /// The URL, as rendered.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// Headers, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// A JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
}

impl KeptRequest {
    /// `request` as kept.
    pub fn of(request: HttpRequest) -> Self {
        Self {
            method: request.method.to_string(),
            url: request.url.into(),
            headers: request.headers,
            json: match request.body {
                Some(RequestBody::Json(value)) => Some(value),
                Some(RequestBody::Form(_)) | None => None,
            },
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(request: Value) -> (RequestPlan, Templates) {
        let request: Request = serde_json::from_value(request).unwrap();
        let mut templates = Templates::default();
        let plan =
            RequestPlan::compile(&request, &indexmap::IndexMap::new(), &mut templates).unwrap();
        (plan, templates)
    }

    /// A kept request's URL is its rendered text, parsed only to add query parameters; with
    /// them it is the URL a request made now has.
    #[test]
    fn kept_requests_keep_their_url_as_rendered() {
        let context = minijinja::context! { record => minijinja::context! {
            baseUrl => "https://lh3.googleusercontent.com/lr/AAJ1LKc b",
            id => "AF1Qip/x",
        }};
        let (path_only, templates) = plan(serde_json::json!({"path": "{{ record.baseUrl }}=d"}));
        let kept = path_only
            .render_kept("https://photoslibrary.googleapis.com", &context, &templates)
            .unwrap();
        assert_eq!(kept.url, "https://lh3.googleusercontent.com/lr/AAJ1LKc b=d");
        assert_eq!(kept.method, "GET");
        // Sent, it is the URL a request rendered now has.
        let now = path_only
            .render(
                "https://photoslibrary.googleapis.com",
                &context,
                &templates,
                &[],
            )
            .unwrap();
        assert_eq!(url::Url::parse(&kept.url).unwrap(), now.url);

        let (with_query, templates) = plan(serde_json::json!({
            "path": "/drive/v3/files/{{ record.id }}",
            "query": {"alt": "media", "empty": ""},
        }));
        let kept = with_query
            .render_kept("https://www.googleapis.com/", &context, &templates)
            .unwrap();
        let now = with_query
            .render("https://www.googleapis.com/", &context, &templates, &[])
            .unwrap();
        assert_eq!(kept.url, now.url.as_str());
        assert_eq!(
            kept.url,
            "https://www.googleapis.com/drive/v3/files/AF1Qip/x?alt=media"
        );
    }
}
