//! A stream's `session`: opened before its listing (created, its page handed to the person,
//! polled until they are done), seen by the stream's requests as `session`, and deleted once
//! the run's downloads no longer need it.

use std::time::Duration;

use super::error::{SyncError, SyncErrorKind};
use super::fetch::Fetcher;
use crate::events::{Event, Observer};
use crate::http::HttpRequest;
use crate::source::http::request::RequestPlan;
use crate::template::{BuildError, TemplateId, Templates};

/// A stream's `session`, compiled.
#[derive(Debug)]
pub(super) struct CompiledSession {
    create: RequestPlan,
    id: serde_json_path::JsonPath,
    url: TemplateId,
    poll: RequestPlan,
    ready: TemplateId,
    interval: Duration,
    /// As the spec writes it, for the person's message.
    timeout: crate::spec::Duration,
    delete: Option<RequestPlan>,
}

/// A session the person completed: what templates see, and the request that deletes it.
pub(super) struct OpenSession {
    /// `session` in templates: `id` and `url`.
    pub(super) value: minijinja::Value,
    delete: Option<HttpRequest>,
    stream: String,
}

impl CompiledSession {
    pub(super) fn compile(
        session: &crate::spec::Session,
        headers: &indexmap::IndexMap<String, crate::spec::Template>,
        templates: &mut Templates,
    ) -> Result<Self, BuildError> {
        Ok(Self {
            create: RequestPlan::compile(&session.create, headers, templates)?,
            id: serde_json_path::JsonPath::parse(session.id.as_str())
                .map_err(|error| BuildError::Invalid(format!("session.id: {error}")))?,
            url: templates.add(session.url.as_str())?,
            poll: RequestPlan::compile(&session.poll, headers, templates)?,
            ready: templates.add_condition(session.ready.as_str())?,
            interval: session.interval.get(),
            timeout: session.timeout,
            delete: session
                .delete
                .as_ref()
                .map(|delete| RequestPlan::compile(delete, headers, templates))
                .transpose()?,
        })
    }
}

impl Fetcher<'_> {
    /// Opens the session of stream `name`: creates it, tells the person where to go (an
    /// [`Event::SessionOpened`]), and polls until it is ready or its time is up.
    pub(super) async fn open_session(
        &self,
        name: &str,
        session: &CompiledSession,
    ) -> Result<OpenSession, SyncError> {
        let templates = &self.connector.templates;
        let base_url = self
            .connector
            .spec
            .base_url
            .as_ref()
            .map_or("", |url| url.as_str());
        let fail = |message: String| self.error(name, None, SyncErrorKind::Session(message));
        let outer = minijinja::context! {
            config => self.config.clone(),
            secrets => self.secrets.clone(),
        };
        let request = session
            .create
            .render(base_url, &outer, templates, &[])
            .map_err(|error| self.error(name, None, error.into()))?;
        let created = self.answer(name, &request).await?;
        let id = match session.id.query(&created).first() {
            Some(serde_json::Value::String(id)) if !id.is_empty() => id.clone(),
            Some(serde_json::Value::Number(id)) => id.to_string(),
            _ => {
                return Err(fail(
                    "the created session's answer has no id (the spec's `session.id`)".to_owned(),
                ));
            }
        };
        let url = templates
            .render(&session.url, &minijinja::context! { answer => minijinja::Value::from(minijinja::value::Serde(&created)) })
            .map_err(|error| fail(format!("session.url: {error}")))?;
        let value = minijinja::context! { id => id, url => url.clone() };
        let with_session = minijinja::context! {
            session => value.clone(),
            config => self.config.clone(),
            secrets => self.secrets.clone(),
        };
        let delete = session
            .delete
            .as_ref()
            .map(|delete| delete.render(base_url, &with_session, templates, &[]))
            .transpose()
            .map_err(|error| self.error(name, None, error.into()))?;
        let opened = OpenSession {
            value: value.clone(),
            delete,
            stream: name.to_owned(),
        };
        tracing::info!(connector = %self.connector.spec.id, stream = name, %url, "waiting for the person to finish on the session's page");
        self.tally.event(&Event::SessionOpened {
            stream: name,
            url: &url,
        });
        let deadline = tokio::time::Instant::now() + session.timeout.get();
        loop {
            let request = session
                .poll
                .render(base_url, &with_session, templates, &[])
                .map_err(|error| self.error(name, None, error.into()))?;
            let answer = self.answer(name, &request).await?;
            let context = minijinja::context! { answer => minijinja::Value::from(minijinja::value::Serde(&answer)) };
            if templates
                .test(&session.ready, &context)
                .map_err(|error| fail(format!("session.ready: {error}")))?
            {
                return Ok(opened);
            }
            if tokio::time::Instant::now() + session.interval > deadline {
                // Not left open: the provider may count open sessions.
                self.close_session(&opened).await;
                return Err(fail(format!(
                    "the session was not completed within {} at {url}",
                    session.timeout
                )));
            }
            tokio::time::sleep(session.interval).await;
        }
    }

    /// Deletes a session the run is done with; a failure is logged, not fatal (the provider
    /// expires sessions on its own).
    pub(super) async fn close_session(&self, session: &OpenSession) {
        let Some(request) = &session.delete else {
            return;
        };
        if let Err(error) = self
            .http
            .fetch(request, self.auth, &self.tally, |_| Ok(()))
            .await
        {
            tracing::warn!(connector = %self.connector.spec.id, stream = %session.stream, %error, "the session could not be deleted; the provider expires it on its own");
        }
    }

    /// A JSON answer to `request`, or the stream's error.
    async fn answer(
        &self,
        name: &str,
        request: &HttpRequest,
    ) -> Result<serde_json::Value, SyncError> {
        let shown = format!("{} {}", request.method, request.url);
        self.http
            .fetch(request, self.auth, &self.tally, |answer| {
                if answer.body.is_empty() {
                    return Ok(serde_json::Value::Null);
                }
                serde_json::from_slice(&answer.body)
                    .map_err(|error| format!("the answer is not JSON: {error}"))
            })
            .await
            .map_err(|error| self.error(name, Some(shown), error.into()))
    }
}
