//! `connector auth CONNECTOR`: connect an account through OAuth, on this machine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::account::Connection;
use engine::credentials::{self, ConnectError, ConnectMode, Granted};
use engine::sandbox::ConnectorFiles;
use engine::spec;
use serde::Serialize;
use tokio::sync::oneshot;

use super::credentials::{Account, cipher, token_http};
use crate::{Failure, Outcome};

/// Arguments of `connector auth`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The connector: an id (a folder under `--connectors-root`) or a path.
    connector: String,
    /// Authorize against the sandbox's stand-in provider instead of the real one.
    #[arg(long)]
    sandbox: bool,
    /// The loopback port for the redirect (0: any free port). The provider must allow
    /// `http://127.0.0.1:<port>/callback` as a redirect URI.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Do not try to open the browser; only print the URL.
    #[arg(long)]
    no_open: bool,
    /// How long to wait for the authorization, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    account: Account,
}

#[derive(Debug, Serialize)]
struct Connected<'a> {
    connector: &'a str,
    integration: &'a str,
    user: &'a str,
    scopes: Option<&'a str>,
    expires_at: Option<String>,
    captured: Vec<&'a String>,
}

type Callback = Arc<Mutex<Option<oneshot::Sender<HashMap<String, String>>>>>;

async fn callback_server(
    port: u16,
) -> std::io::Result<(String, oneshot::Receiver<HashMap<String, String>>)> {
    let (sender, receiver) = oneshot::channel();
    let slot: Callback = Arc::new(Mutex::new(Some(sender)));
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(move |axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>| {
            let slot = Arc::clone(&slot);
            async move {
                if let Some(sender) = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
                    let _ = sender.send(query);
                }
                axum::response::Html("<!doctype html><title>Hypernet Connect</title><p>Authorization received. You can close this window and return to the terminal.</p>")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let redirect = format!("http://{}/callback", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((redirect, receiver))
}

/// Shows the authorization URL (and tries to open it), then waits for the redirect.
async fn wait_for_browser(
    args: &Args,
    name: &str,
    url: &url::Url,
    receiver: oneshot::Receiver<HashMap<String, String>>,
) -> Result<HashMap<String, String>, String> {
    eprintln!("Open this URL in a browser to connect {name}:");
    eprintln!("{url}");
    eprintln!(
        "Waiting up to {}s for the authorization (Ctrl-C to stop)…",
        args.timeout
    );
    if !args.no_open {
        // Best effort: without a desktop the URL above is the way.
        let _ = std::process::Command::new("xdg-open")
            .arg(url.as_str())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    tokio::time::timeout(Duration::from_secs(args.timeout), receiver)
        .await
        .map_err(|_| "no authorization arrived in time; run the command again".to_owned())?
        .map_err(|_| "the redirect listener stopped".to_owned())
}

/// Seals and stores a new connection, then reports it (never a token).
async fn save_connection(
    args: &Args,
    spec: &spec::ConnectorSpec,
    granted: Granted,
) -> Result<Outcome, Failure> {
    let Granted {
        secret,
        config,
        scopes,
        expires_at,
    } = granted;
    let cipher =
        cipher(&args.account.key_file).map_err(|error| Failure::problem(error.to_string()))?;
    let store = args.account.open_store().await.map_err(Failure::problem)?;
    let captured: Vec<String> = config.keys().cloned().collect();
    let id = engine::account::save_connection(
        &store,
        &cipher,
        Connection {
            user_id: &args.account.user,
            connector: &spec.id,
            account: &args.account.account,
            secret: &secret,
            config,
            scopes: scopes.clone(),
            streams: None,
        },
    )
    .await
    .map_err(|error| Failure::problem(error.to_string()))?;
    let connected = Connected {
        connector: &spec.id,
        integration: &id,
        user: &args.account.user,
        scopes: scopes.as_deref(),
        expires_at: expires_at.map(|at| at.to_string()),
        captured: captured.iter().collect(),
    };
    if args.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&connected).unwrap_or_default()
        );
    } else {
        say!(
            "Connected {} for user {} (integration {id}).",
            spec.name,
            args.account.user
        );
        say!(
            "Granted scopes: {}",
            connected.scopes.unwrap_or("(the provider did not say)")
        );
        // The command to run next, as this one was run: a sandbox account syncs from the
        // sandbox (its tokens are the stand-in provider's, which the real API refuses).
        say!(
            "Tokens are stored encrypted in {}; run `connector sync {}{}{}` to import.",
            engine::store::redact(&args.account.db),
            spec.id,
            if args.sandbox { " --sandbox" } else { "" },
            args.account.flag()
        );
    }
    Ok(Outcome::Success)
}

/// Runs the command.
pub async fn run(args: &Args) -> Result<Outcome, Failure> {
    let files = ConnectorFiles::locate(&args.connector, &args.account.connectors_root)
        .map_err(Failure::usage)?;
    // Unlike `open_connector`, an invalid spec's report is printed after `error: ` here.
    let spec = spec::load(&files.spec).map_err(|error| Failure::problem(error.to_string()))?;
    let mode = ConnectMode::of(&spec.auth);
    if mode == ConnectMode::Config {
        return Err(Failure::usage(format!(
            "{} uses `{}` authentication; `connector auth` is for OAuth connectors (give its config values to `connector sync`)",
            spec.id,
            spec.auth.kind_name()
        )));
    }
    let client = args
        .account
        .oauth_client(&spec, args.sandbox)
        .map_err(Failure::usage)?;
    let (sandbox, http) = token_http(&files, &spec, args.sandbox)
        .await
        .map_err(Failure::problem)?;
    let failed = |error: ConnectError| Failure::problem(format!("{}: {error}", spec.id));
    let granted = if mode == ConnectMode::Client {
        // No person in the loop: the client's own credentials buy the token.
        credentials::connect_client(&spec, &client, &http)
            .await
            .map_err(failed)?
    } else {
        let (redirect, receiver) = callback_server(args.port).await.map_err(|error| {
            Failure::problem(format!("cannot listen for the redirect: {error}"))
        })?;
        let pending = credentials::start(&spec, &client, &http, &redirect)
            .await
            .map_err(failed)?;
        let url = url::Url::parse(pending.url())
            .map_err(|error| Failure::problem(format!("{}: {error}", spec.id)))?;
        let browser_url = match &sandbox {
            Some(sandbox) => sandbox.local_url(&url),
            None => url,
        };
        let callback = wait_for_browser(args, &spec.name, &browser_url, receiver)
            .await
            .map_err(Failure::problem)?;
        credentials::finish(&spec, &client, &http, &pending, &callback)
            .await
            .map_err(failed)?
    };
    save_connection(args, &spec, granted).await
}
