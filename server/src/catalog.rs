//! The connectors the service offers: every valid spec under the connectors folder, compiled
//! once, and in sandbox mode each with the replay of its own fixtures.

use std::path::Path;
use std::sync::Arc;

use engine::credentials::ConnectMode;
use engine::http::Transport;
use engine::run::CompiledConnector;
use engine::sandbox::{ConnectorFiles, Sandbox};
use engine::spec::ConnectorSpec;
use indexmap::IndexMap;
use serde::Serialize;

/// One connector, ready to run.
pub struct Entry {
    /// Its spec.
    pub spec: Arc<ConnectorSpec>,
    /// Its compiled streams.
    pub compiled: Arc<CompiledConnector>,
    /// In sandbox mode: the replay of its fixtures and its stand-in OAuth provider.
    pub sandbox: Option<Sandbox>,
    /// The server every request goes to instead of the provider's hosts, when the operator
    /// says so (a recording proxy, a staging mirror).
    pub via: Option<url::Url>,
}

impl Entry {
    /// Where its requests go.
    pub fn transport(&self) -> Transport {
        match (&self.sandbox, &self.via) {
            (Some(sandbox), _) => sandbox.transport(),
            (None, Some(via)) => Transport::Sandbox(via.clone()),
            (None, None) => Transport::Direct,
        }
    }

    /// Whether it has streams that read the provider's API: only those are synced.
    pub fn syncs(&self) -> bool {
        self.spec.root_streams().any(|name| {
            self.spec
                .streams
                .get(name)
                .is_some_and(|stream| stream.archive.is_none())
        })
    }

    /// Whether it has streams that read a data export: only those are imported from one.
    pub fn imports(&self) -> bool {
        self.spec.root_streams().any(|name| {
            self.spec
                .streams
                .get(name)
                .is_some_and(|stream| stream.archive.is_some())
        })
    }

    /// What `GET /connectors` shows of it.
    pub fn listing(&self) -> Listing {
        let spec = &self.spec;
        let mut models: Vec<&'static str> = spec
            .streams
            .values()
            .filter_map(|stream| stream.model.map(|model| model.name()))
            .collect();
        models.sort_unstable();
        models.dedup();
        Listing {
            id: spec.id.clone(),
            name: spec.name.clone(),
            category: serde_json::to_value(spec.category)
                .ok()
                .and_then(|value| value.as_str().map(str::to_owned))
                .unwrap_or_default(),
            description: spec.description.clone(),
            models,
            auth: spec.auth.kind_name(),
            // The page sends "oauth" connectors to the browser round trip and the others to
            // `POST /integrations` (with their config values, if any).
            connect: match ConnectMode::of(&spec.auth) {
                ConnectMode::Browser => "oauth",
                ConnectMode::Client | ConnectMode::Config => "config",
            },
            docs_url: spec.docs_url.as_str().to_owned(),
            sync_every_secs: spec.schedule.every.get().as_secs(),
            syncs: self.syncs(),
            imports: self.imports(),
            streams: spec
                .root_streams()
                .map(|name| StreamChoice {
                    name: name.to_owned(),
                    description: spec
                        .streams
                        .get(name)
                        .and_then(|stream| stream.description.clone()),
                    scopes: spec.scopes_of(name),
                    session: spec
                        .streams
                        .get(name)
                        .is_some_and(|stream| stream.session.is_some()),
                })
                .collect(),
        }
    }
}

/// A connector as the catalog lists it (`Connector` in the OpenAPI document).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Connector)]
pub struct Listing {
    /// Its id.
    pub id: String,
    /// The provider's name.
    pub name: String,
    /// Its catalog section.
    pub category: String,
    /// What it imports.
    pub description: String,
    /// The models its records become.
    pub models: Vec<&'static str>,
    /// How it authenticates (`oauth2`, `oauth1`, `api_key`, ...).
    pub auth: &'static str,
    /// How a user connects it: `oauth` (the authorize redirect) or `config` (`POST
    /// /integrations` with its config values).
    pub connect: &'static str,
    /// The provider's API documentation.
    pub docs_url: String,
    /// The default time between syncs, in seconds.
    pub sync_every_secs: u64,
    /// Whether it reads the provider's API, on a schedule (`false`: it only imports exports).
    pub syncs: bool,
    /// Whether it imports data exports (`POST /integrations/{id}/imports`).
    pub imports: bool,
    /// The streams a person chooses among (their substreams come with them).
    pub streams: Vec<StreamChoice>,
}

/// A stream a person may choose to import or leave out.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StreamChoice {
    /// Its name.
    pub name: String,
    /// What it imports.
    pub description: Option<String>,
    /// The OAuth scopes it (with its substreams) needs.
    pub scopes: Vec<String>,
    /// Whether it waits for the person (a session, such as Google Photos' Picker): it runs
    /// only when a sync names it (`POST /integrations/{id}/sync` with `streams`), never on the
    /// schedule.
    pub session: bool,
}

/// Every connector the service offers, by id.
#[derive(Default)]
pub struct Catalog {
    entries: IndexMap<String, Entry>,
}

impl Catalog {
    /// Loads every `connector.yaml` under `root`. A spec with problems is left out with a
    /// warning (run `connector validate` for the details) rather than stopping the service.
    pub async fn load(root: &Path, sandbox: bool, via: Option<&url::Url>) -> Result<Self, String> {
        let folders = std::fs::read_dir(root).map_err(|error| {
            format!(
                "cannot read the connectors folder {}: {error}",
                root.display()
            )
        })?;
        let mut names: Vec<String> = folders
            .filter_map(Result::ok)
            .filter(|entry| entry.path().join("connector.yaml").is_file())
            .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
            .collect();
        names.sort();
        let mut entries = IndexMap::new();
        for name in names {
            let files = ConnectorFiles::locate(&name, root)?;
            let spec = match engine::spec::load(&files.spec) {
                Ok(spec) => Arc::new(spec),
                Err(error) => {
                    tracing::warn!(connector = %name, %error, "left out: the spec has problems (run `connector validate`)");
                    continue;
                }
            };
            let compiled = match CompiledConnector::compile(Arc::clone(&spec)) {
                Ok(compiled) => Arc::new(compiled),
                Err(error) => {
                    tracing::warn!(connector = %name, %error, "left out: the spec does not compile");
                    continue;
                }
            };
            let sandbox = if sandbox && files.fixtures().is_dir() {
                Some(Sandbox::start(&files, &spec).await?)
            } else if sandbox {
                continue; // nothing stands in for its provider
            } else {
                None
            };
            entries.insert(
                spec.id.clone(),
                Entry {
                    spec,
                    compiled,
                    sandbox,
                    via: via.cloned(),
                },
            );
        }
        Ok(Self { entries })
    }

    /// The connector `id`.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// Every connector, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }
}
