//! What `auth` and `sync` share: the OAuth client, the token cipher, the integration id.

use engine::store::AnyStore;
use std::path::{Path, PathBuf};

use engine::credentials::oauth2::OAuthClient;
use engine::credentials::secrets::{SecretError, TokenCipher};
use engine::spec::ConnectorSpec;

/// The cipher for tokens at rest: `HYPERNET_TOKEN_KEY`, or the key file beside the database.
pub fn cipher(key_file: &Path) -> Result<TokenCipher, SecretError> {
    TokenCipher::from_env_or_file(key_file)
}

/// The id of the integration these options name: `--user`'s `--account` of `spec`.
pub fn integration_id(spec: &ConnectorSpec, account: &Account) -> String {
    engine::account::integration_id(&spec.id, &account.user, &account.account)
}

/// Where an account's data lives and how its OAuth client is found: shared by `auth` and `sync`.
#[derive(Debug, clap::Args)]
pub struct Account {
    /// The database: an SQLite file (the default) or a PostgreSQL URL (`postgres://...`). It
    /// holds the records, the integration with its encrypted tokens, sync runs, checkpoints and
    /// the audit log.
    #[arg(long, env = "DATABASE_URL", default_value = "hypernet.sqlite")]
    pub db: String,
    /// Where records' content (photos, files, attachments) is kept: a folder, or S3-compatible
    /// storage as s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION] (credentials from
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY). Default: a folder beside an SQLite file
    /// (hypernet.sqlite: hypernet.blobs/).
    #[arg(long, env = "HYPERNET_BLOBS", value_name = "LOCATION")]
    pub blobs: Option<String>,
    /// The token key file, used when HYPERNET_TOKEN_KEY is not set (created if missing).
    #[arg(long, default_value = "hypernet.key")]
    pub key_file: PathBuf,
    /// The Hypernet user the account belongs to.
    #[arg(long, default_value = "local")]
    pub user: String,
    /// Which of the user's accounts of the connector (a second Gmail address, a second bank):
    /// any name, such as `work`; each is its own integration with its own records, runs and
    /// checkpoints. Default: the first account.
    #[arg(long, value_name = "NAME", default_value = "")]
    pub account: String,
    /// The OAuth client id (else HYPERNET_<CLIENT>_CLIENT_ID: the spec's shared `auth.client`,
    /// such as GOOGLE, or the connector id).
    #[arg(long)]
    pub client_id: Option<String>,
    /// The OAuth client secret (else HYPERNET_<CLIENT>_CLIENT_SECRET).
    #[arg(long)]
    pub client_secret: Option<String>,
    /// The folder of connectors.
    #[arg(long, default_value = "connectors")]
    pub connectors_root: PathBuf,
}

impl Account {
    /// The blob store `--blobs` names (or the default beside the database), opened.
    pub fn blob_store(&self) -> Result<engine::blobs::BlobStore, crate::Failure> {
        let location = match &self.blobs {
            Some(text) => engine::blobs::BlobLocation::parse(text)
                .map_err(|error| crate::Failure::usage(format!("--blobs: {error}")))?,
            None => engine::blobs::BlobLocation::beside_database(&self.db),
        };
        engine::blobs::BlobStore::open(&location).map_err(|error| {
            crate::Failure::problem(format!("the blob store at {location}: {error}"))
        })
    }

    /// ` --account NAME` for a named account, to repeat in a suggested command; else nothing.
    pub fn flag(&self) -> String {
        if self.account.is_empty() {
            String::new()
        } else {
            format!(" --account {}", self.account)
        }
    }

    /// Opens (and migrates) the database.
    /// The database `--db` names, for a command that only reads it: an SQLite file that does
    /// not exist is an error, not a new empty database.
    pub async fn open_existing_store(&self) -> Result<AnyStore, crate::Failure> {
        let postgres = self.db.starts_with("postgres://") || self.db.starts_with("postgresql://");
        if !postgres && !std::path::Path::new(&self.db).exists() {
            return Err(crate::Failure::usage(format!(
                "no database at {}: nothing was imported there (pass the `--db` a sync or import used)",
                self.db
            )));
        }
        self.open_store().await.map_err(crate::Failure::problem)
    }

    pub async fn open_store(&self) -> Result<AnyStore, String> {
        AnyStore::open(&self.db).await.map_err(|error| {
            format!(
                "cannot open the database {}: {error}",
                engine::store::redact(&self.db)
            )
        })
    }

    /// The OAuth client for `spec`, from these options, the environment, or the sandbox.
    pub fn oauth_client(&self, spec: &ConnectorSpec, sandbox: bool) -> Result<OAuthClient, String> {
        engine::account::oauth_client(
            spec,
            self.client_id.as_deref(),
            self.client_secret.as_deref(),
            sandbox,
        )
    }
}

/// An HTTP client for token work: to the provider, or to the sandbox's stand-in (which is kept
/// running as long as the returned sandbox lives).
pub async fn token_http(
    files: &engine::sandbox::ConnectorFiles,
    spec: &ConnectorSpec,
    sandbox: bool,
) -> Result<(Option<engine::sandbox::Sandbox>, engine::http::HttpClient), String> {
    let sandbox = sandbox_if(sandbox, files, spec).await?;
    let transport = sandbox.as_ref().map_or(
        engine::http::Transport::Direct,
        engine::sandbox::Sandbox::transport,
    );
    let http = engine::account::token_http(spec, transport)?;
    Ok((sandbox, http))
}

/// The sandbox's replay and stand-in provider for `spec`, started when `wanted` (`--sandbox`);
/// it runs as long as the value lives.
pub async fn sandbox_if(
    wanted: bool,
    files: &engine::sandbox::ConnectorFiles,
    spec: &ConnectorSpec,
) -> Result<Option<engine::sandbox::Sandbox>, String> {
    if wanted {
        engine::sandbox::Sandbox::start(files, spec).await.map(Some)
    } else {
        Ok(None)
    }
}
