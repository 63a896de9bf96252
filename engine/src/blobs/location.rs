//! Where the blob store is: a folder, or an S3-compatible bucket, named by one string as an
//! operator writes it (`--blobs PATH` or `--blobs s3://bucket/prefix?endpoint=...`).

use std::path::{Path, PathBuf};

use super::BlobError;

/// Where blobs are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobLocation {
    /// A folder on this machine.
    Folder(PathBuf),
    /// An S3-compatible bucket.
    S3(S3Location),
}

/// An S3-compatible bucket, and where in it blobs go.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// A folder inside the bucket (`""` for its root).
    pub prefix: String,
    /// The service's URL, for storage other than AWS (`http://127.0.0.1:9000`).
    pub endpoint: Option<String>,
    /// The signing region (`us-east-1` unless given).
    pub region: String,
    /// The access key id, from `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// The secret key, from `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Location")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl BlobLocation {
    /// The default for a database: a folder beside an SQLite file (`data.sqlite` →
    /// `data.blobs/`); for a PostgreSQL database, `hypernet-blobs/` in the working folder.
    pub fn beside_database(database: &str) -> Self {
        if database.starts_with("postgres://") || database.starts_with("postgresql://") {
            return Self::Folder(PathBuf::from("hypernet-blobs"));
        }
        let path = Path::new(database.strip_prefix("sqlite://").unwrap_or(database));
        Self::Folder(path.with_extension("blobs"))
    }

    /// Reads a location: `s3://BUCKET[/PREFIX][?endpoint=URL&region=R]` (credentials from
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`), anything else a folder's path.
    pub fn parse(text: &str) -> Result<Self, BlobError> {
        let Some(rest) = text.strip_prefix("s3://") else {
            return Ok(Self::Folder(PathBuf::from(text)));
        };
        let url = url::Url::parse(&format!("s3://{rest}"))
            .map_err(|error| BlobError::Location(format!("`{text}` is not an S3 URL: {error}")))?;
        let bucket = url.host_str().unwrap_or_default().to_owned();
        if bucket.is_empty() {
            return Err(BlobError::Location(format!(
                "`{text}` names no bucket; expected s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION]"
            )));
        }
        let mut location = S3Location {
            bucket,
            prefix: url.path().trim_matches('/').to_owned(),
            endpoint: None,
            region: "us-east-1".to_owned(),
            access_key_id: std::env::var("AWS_ACCESS_KEY_ID").ok(),
            secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").ok(),
        };
        for (key, value) in url.query_pairs() {
            match &*key {
                "endpoint" => location.endpoint = Some(value.into_owned()),
                "region" => location.region = value.into_owned(),
                other => {
                    return Err(BlobError::Location(format!(
                        "`{text}`: unknown option `{other}`; expected `endpoint` or `region`"
                    )));
                }
            }
        }
        Ok(Self::S3(location))
    }
}

impl std::fmt::Display for BlobLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Folder(path) => write!(f, "{}", path.display()),
            Self::S3(s3) => {
                write!(f, "s3://{}", s3.bucket)?;
                if !s3.prefix.is_empty() {
                    write!(f, "/{}", s3.prefix)?;
                }
                if let Some(endpoint) = &s3.endpoint {
                    write!(f, " at {endpoint}")?;
                }
                Ok(())
            }
        }
    }
}

impl S3Location {
    /// The object store for this bucket (and prefix).
    pub(super) fn build(&self) -> Result<Box<dyn object_store::ObjectStore>, BlobError> {
        let mut builder = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_region(&self.region);
        if let Some(endpoint) = &self.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                // Only a local or test server is named with http://; AWS itself is https.
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
        }
        let bucket = builder.build()?;
        if self.prefix.is_empty() {
            return Ok(Box::new(bucket));
        }
        Ok(Box::new(object_store::prefix::PrefixStore::new(
            bucket,
            self.prefix.as_str(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_read_as_operators_write_them() {
        assert_eq!(
            BlobLocation::parse("/var/lib/hypernet/blobs").unwrap(),
            BlobLocation::Folder("/var/lib/hypernet/blobs".into())
        );
        let BlobLocation::S3(s3) = BlobLocation::parse(
            "s3://media/people?endpoint=http://127.0.0.1:9000&region=eu-west-1",
        )
        .unwrap() else {
            panic!("not S3");
        };
        assert_eq!(s3.bucket, "media");
        assert_eq!(s3.prefix, "people");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.region, "eu-west-1");
        assert!(BlobLocation::parse("s3:///x").is_err());
        let error = BlobLocation::parse("s3://b?endpont=x")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown option `endpont`"), "{error}");
        assert_eq!(
            BlobLocation::beside_database("sqlite://data/me.sqlite"),
            BlobLocation::Folder("data/me.blobs".into())
        );
    }
}
