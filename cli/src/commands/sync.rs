//! `connector sync CONNECTOR`: import records into an SQLite file.

use std::sync::Arc;
use std::time::Instant;

use engine::account::{PrepareError, PreparedRun, SignIn, Values};
use engine::credentials::{ConnectMode, SANDBOX_ACCESS_TOKEN};
use engine::events::Totals;
use engine::http::Transport;
use engine::ratelimit::RateLimitRegistry;
use engine::run::{CompiledConnector, SyncRun};
use engine::sandbox::sandbox_config;
use engine::spec;
use engine::store::{IntegrationStatus, RunStatus};
use serde::Serialize;
use serde_json::{Map, Value};

use super::credentials::{Account, cipher, integration_id, sandbox_if};
use super::progress::Progress;
use crate::{Failure, Outcome};

/// Arguments of `connector sync`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The connector: an id (a folder under `--connectors-root`) or a path.
    connector: String,
    /// Use the built-in sandbox (the connector's fixtures) instead of the real API.
    #[arg(long)]
    sandbox: bool,
    /// Send every request to this server instead of the connector's hosts (a recording or
    /// replay proxy, a staging mirror). URLs are still built, and checked against the
    /// connector's allowed hosts, as for the real API; only where they are sent changes.
    #[arg(long, value_name = "URL", conflicts_with = "sandbox")]
    via: Option<url::Url>,
    /// An access token for OAuth connectors (real API). Also read from HYPERNET_ACCESS_TOKEN.
    #[arg(long, env = "HYPERNET_ACCESS_TOKEN", hide_env_values = true)]
    access_token: Option<String>,
    /// A config or secret value, as NAME=VALUE (repeatable). Secrets are better passed through
    /// the environment as HYPERNET_CONFIG_<NAME>.
    #[arg(long = "config", value_name = "NAME=VALUE")]
    config: Vec<String>,
    /// Only these root streams (repeatable); default: all.
    #[arg(long = "stream", value_name = "NAME")]
    streams: Vec<String>,
    /// Store the records only: the content they point at (photos, files, attachments) stays
    /// owed, in the `downloads` table, and the next sync without this flag downloads it.
    #[arg(long)]
    no_content: bool,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    account: Account,
}

/// What a sync or an import did, printed as text or `--json`.
#[derive(Debug, Serialize)]
pub(super) struct Summary<'a> {
    pub(super) connector: &'a str,
    pub(super) database: String,
    pub(super) sandbox: bool,
    /// For an import: the export's files.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) export: Vec<String>,
    /// `succeeded`, `partial` or `failed`.
    pub(super) status: RunStatus,
    pub(super) seconds: f64,
    #[serde(flatten)]
    pub(super) totals: Totals,
    /// Why the run failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) hint: Option<String>,
    /// For a partial run: the streams that failed while the others imported.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) failed_streams: Vec<FailedStream>,
}

/// A stream that failed while the others imported.
#[derive(Debug, Serialize)]
pub(super) struct FailedStream {
    stream: String,
    error: String,
    hint: String,
}

/// The config values given in the environment (`HYPERNET_CONFIG_<NAME>`) and as `--config`.
pub(super) fn config_values(
    spec: &spec::ConnectorSpec,
    pairs: &[String],
) -> Result<Map<String, Value>, String> {
    let mut values = Map::new();
    for name in spec.config.keys() {
        if let Ok(value) = std::env::var(format!("HYPERNET_CONFIG_{}", name.to_uppercase())) {
            values.insert(name.clone(), Value::String(value));
        }
    }
    for pair in pairs {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("`--config {pair}` is not NAME=VALUE"))?;
        // A name the connector does not take would be ignored: a typo that goes unnoticed.
        if !spec.config.contains_key(name) {
            let names: Vec<&str> = spec.config.keys().map(String::as_str).collect();
            let near = spec::did_you_mean(name, names.iter().copied())
                .map(|near| format!(" (did you mean `{near}`?)"))
                .unwrap_or_default();
            return Err(if names.is_empty() {
                format!("`--config {name}`: {} takes no config values", spec.id)
            } else {
                format!(
                    "`--config {name}`: {} has no config value `{name}`{near}; it takes: {}",
                    spec.id,
                    names.join(", ")
                )
            });
        }
        values.insert(name.to_owned(), Value::String(value.to_owned()));
    }
    Ok(values)
}

/// Runs the command.
pub async fn run(args: &Args) -> Result<Outcome, Failure> {
    let (files, spec) = super::open_connector(&args.connector, &args.account.connectors_root)?;
    super::check_streams(&spec, &args.streams, false)?;
    let spec = Arc::new(spec);
    let mut given = config_values(&spec, &args.config).map_err(Failure::usage)?;
    if args.sandbox {
        for (name, value) in sandbox_config(&spec) {
            given.entry(name).or_insert(value);
        }
    }
    let sandbox = sandbox_if(args.sandbox, &files, &spec)
        .await
        .map_err(Failure::problem)?;
    let store = args.account.open_store().await.map_err(Failure::problem)?;
    let integration_id = integration_id(&spec, &args.account);
    // An OAuth connector uses the tokens `connector auth` stored, unless a token is given.
    let keeps_tokens = ConnectMode::of(&spec.auth).keeps_tokens();
    let stored = match &args.access_token {
        None if keeps_tokens => store
            .integration(&integration_id)
            .await
            .map_err(|error| Failure::problem(error.to_string()))?,
        _ => None,
    };
    if let Some(stored) = &stored
        && stored.status == IntegrationStatus::NeedsReauth
    {
        return Err(Failure::problem(format!(
            "{} needs to be connected again ({}); run `connector auth {}{}`; imported records are kept",
            integration_id,
            stored
                .last_error
                .as_deref()
                .unwrap_or("its tokens were refused"),
            spec.id,
            args.account.flag()
        )));
    }
    let connector = CompiledConnector::compile(Arc::clone(&spec))
        .map_err(|error| Failure::problem(format!("{}: {error}", spec.id)))?;
    let transport = match (&sandbox, &args.via) {
        (Some(sandbox), _) => sandbox.transport(),
        (None, Some(via)) => Transport::Sandbox(via.clone()),
        (None, None) => Transport::Direct,
    };
    let sign_in = match &stored {
        Some(stored) => match cipher(&args.account.key_file) {
            Ok(cipher) => SignIn::Stored {
                stored,
                cipher: Arc::new(cipher),
                client: args.account.oauth_client(&spec, args.sandbox),
                store: &store,
            },
            Err(error) => return Err(Failure::problem(format!("{}: {error}", spec.id))),
        },
        None if sandbox.is_some() && args.access_token.is_none() => SignIn::Sandbox,
        None if keeps_tokens && sandbox.is_none() && args.access_token.is_none() => {
            return Err(Failure::usage(format!(
                "{} is not connected for user {}: run `connector auth {}{}` first (or pass --access-token)",
                spec.id,
                args.account.user,
                spec.id,
                args.account.flag()
            )));
        }
        None if sandbox.is_some() => SignIn::Given(Some(SANDBOX_ACCESS_TOKEN)),
        None => SignIn::Given(args.access_token.as_deref()),
    };
    // The sandbox's placeholders are among the given values (above): in a sandbox run they
    // stand for what the fixtures expect, over anything stored.
    let values = Values {
        given,
        defaults: Map::new(),
    };
    // The provider's own quotas are counted in the database (app-wide ones and daily ones,
    // across runs); a sandbox or `--via` run spends none of them.
    let registry = match &transport {
        engine::http::Transport::Direct => {
            RateLimitRegistry::default().with_shared_windows(std::sync::Arc::new(store.clone()))
        }
        engine::http::Transport::Sandbox(_) => RateLimitRegistry::default(),
    };
    let prepared = engine::account::prepare_run(
        &spec,
        &args.account.user,
        &integration_id,
        values,
        sign_in,
        transport,
        registry.gate(&spec, &integration_id),
    );
    let PreparedRun {
        integration,
        http,
        auth,
    } = match prepared {
        Ok(prepared) => prepared,
        Err(error @ PrepareError::Config(_)) => {
            return Err(Failure::usage(format!(
                "{}: {error}; pass it with --config NAME=VALUE",
                spec.id
            )));
        }
        Err(error @ PrepareError::Credentials(_)) if stored.is_none() => {
            return Err(Failure::usage(format!("{}: {error}", spec.id)));
        }
        Err(error) => return Err(Failure::problem(format!("{}: {error}", spec.id))),
    };

    let blobs = if args.no_content {
        None
    } else {
        Some(args.account.blob_store()?)
    };
    let started = Instant::now();
    let progress = Progress::new(&format!("syncing {}", spec.id), args.json);
    let mut run = SyncRun::new(
        &connector,
        &integration,
        &http,
        auth.as_ref(),
        &progress,
        store.clone(),
    );
    if let Some(blobs) = blobs {
        run = run.with_blobs(blobs);
    }
    let result = run.run(&args.streams).await;
    progress.finish();
    if let (Err(error), Some(_)) = (&result, &stored) {
        // Refused credentials that could not be renewed: the user must connect again. The
        // records imported so far stay.
        if error.credentials_refused() {
            let _ = store
                .mark_needs_reauth(&integration_id, &error.to_string())
                .await;
        }
    }
    // The file alone holds the import afterwards (the log copied in and removed).
    store.close().await;
    let mut summary = Summary::of(&spec.id, &args.account.db, &result, &progress, started);
    summary.sandbox = args.sandbox;
    Ok(summary.report(args.json))
}

impl<'a> Summary<'a> {
    /// A run's summary: `result` with the counts `progress` saw, since `started`.
    pub(super) fn of(
        connector: &'a str,
        db: &str,
        result: &Result<engine::run::RunReport, engine::run::SyncError>,
        progress: &Progress,
        started: Instant,
    ) -> Self {
        Summary {
            connector,
            database: engine::store::redact(db),
            sandbox: false,
            export: vec![],
            seconds: started.elapsed().as_secs_f64(),
            status: match result {
                Ok(report) => report.status(),
                Err(_) => RunStatus::Failed,
            },
            totals: progress.counters().totals(),
            error: result.as_ref().err().map(ToString::to_string),
            hint: result.as_ref().err().map(|error| error.hint()),
            failed_streams: result
                .as_ref()
                .map(|report| {
                    report
                        .failed
                        .iter()
                        .map(|error| FailedStream {
                            stream: error.stream.clone(),
                            error: error.to_string(),
                            hint: error.hint(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Prints the summary (as JSON with `json`) and tells how the command ends. A finished run
    /// is reported, error and hints included: not an early exit.
    pub(super) fn report(&self, json: bool) -> Outcome {
        if json {
            say!("{}", serde_json::to_string_pretty(self).unwrap_or_default());
        } else {
            print_summary(self);
        }
        match self.status {
            RunStatus::Succeeded => Outcome::Success,
            RunStatus::Partial => Outcome::Partial,
            RunStatus::Failed => Outcome::Problems,
        }
    }
}

fn print_summary(summary: &Summary<'_>) {
    let totals = &summary.totals;
    let written = &totals.written;
    if let Some(error) = &summary.error {
        eprintln!("error: {error}");
        if let Some(hint) = &summary.hint {
            eprintln!("  what to do: {hint}");
        }
        eprintln!(
            "  records already imported are kept in {}",
            summary.database
        );
    }
    for failed in &summary.failed_streams {
        eprintln!("error: {}", failed.error);
        eprintln!("  what to do: {}", failed.hint);
    }
    if !summary.failed_streams.is_empty() {
        eprintln!(
            "  {} stream{} failed; the others imported (the next sync tries the failed ones again)",
            summary.failed_streams.len(),
            if summary.failed_streams.len() == 1 {
                ""
            } else {
                "s"
            }
        );
    }
    say!(
        "{}{}: {} in {:.1}s → {}",
        summary.connector,
        if summary.sandbox { " (sandbox)" } else { "" },
        counted(totals.records, "record", "records"),
        summary.seconds,
        summary.database
    );
    say!(
        "  new {} · updated {} · unchanged {} · deleted {} · rejected {}",
        written.new,
        written.updated,
        written.unchanged,
        written.deleted,
        written.rejected
    );
    if summary.export.is_empty() {
        say!(
            "  pages {} · requests {} · retries {} · rate-limit waits {} ({:.1}s)",
            totals.pages,
            totals.requests,
            totals.retries,
            totals.rate_limit_waits,
            totals.rate_limit_wait_ms as f64 / 1000.0
        );
    } else {
        say!(
            "  pages {} · from {}",
            totals.pages,
            summary.export.join(", ")
        );
    }
    if totals.contents > 0 || totals.contents_failed > 0 {
        say!(
            "  content: {} stored ({:.1} MB) · {} not downloaded",
            totals.contents,
            totals.content_bytes as f64 / 1e6,
            totals.contents_failed
        );
    }
    if totals.contents_failed > 0 {
        say!(
            "  the content not downloaded stays owed, with the reason, in the `downloads` table; the next sync tries it again"
        );
    }
    if written.rejected > 0 {
        say!(
            "  {} not fit their model; they are kept with the reason in the `rejects` table",
            counted(written.rejected, "record did", "records did")
        );
    }
}

/// `count` with the noun that agrees with it: "1 record", "5 records".
fn counted(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_record_is_one_record() {
        assert_eq!(super::counted(1, "record", "records"), "1 record");
        assert_eq!(super::counted(0, "record", "records"), "0 records");
        assert_eq!(
            super::counted(5, "record did", "records did"),
            "5 records did"
        );
    }
}
