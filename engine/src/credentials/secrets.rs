//! Tokens at rest: encrypted with ChaCha20-Poly1305 before they reach the database.
//!
//! The key is 32 bytes, base64-encoded, from `HYPERNET_TOKEN_KEY`, or from a key file (created
//! with mode 0600 on first use by the CLI). Each ciphertext names its key by an id (the first
//! 8 bytes of the key's BLAKE3 hash), so keys can be rotated: put the new key in
//! `HYPERNET_TOKEN_KEY` and the old ones in `HYPERNET_TOKEN_KEYS_OLD` (comma-separated); old
//! ciphertexts still decrypt, and every write re-encrypts with the new key. Once every
//! integration has been written again (after its next refresh or sync), drop the old keys.
//!
//! Layout of a ciphertext: `1` (format) ‖ key id (8 bytes) ‖ nonce (12 bytes) ‖ sealed data. The
//! key id is also the associated data, so a ciphertext cannot be passed off under another key.

use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

const FORMAT: u8 = 1;

/// Why a key or a ciphertext was refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key is not 32 bytes of base64.
    #[error(
        "the token key must be 32 bytes, base64-encoded (generate one with `openssl rand -base64 32`)"
    )]
    BadKey,
    /// No key is configured.
    #[error("no token key: set HYPERNET_TOKEN_KEY (32 bytes, base64) or use a key file")]
    NoKey,
    /// The key file could not be read or written.
    #[error("the token key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The ciphertext was made with a key that is not configured.
    #[error(
        "these tokens were encrypted with a key that is not configured (key id {0}); add it to HYPERNET_TOKEN_KEYS_OLD"
    )]
    UnknownKey(String),
    /// The ciphertext is damaged or was tampered with.
    #[error(
        "the stored tokens could not be decrypted (damaged or tampered with); connect the account again"
    )]
    Corrupt,
}

struct KeyEntry {
    id: [u8; 8],
    cipher: ChaCha20Poly1305,
}

impl KeyEntry {
    fn new(bytes: &[u8]) -> Result<Self, SecretError> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| SecretError::BadKey)?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&blake3::hash(&key).as_bytes()[..8]);
        Ok(Self {
            id,
            cipher: ChaCha20Poly1305::new(&Key::from(key)),
        })
    }

    fn from_base64(text: &str) -> Result<Self, SecretError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| SecretError::BadKey)?;
        Self::new(&bytes)
    }
}

/// Encrypts with the current key; decrypts with it or any old key.
pub struct TokenCipher {
    current: KeyEntry,
    old: Vec<KeyEntry>,
}

impl std::fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCipher")
            .field("keys", &(1 + self.old.len()))
            .finish()
    }
}

impl TokenCipher {
    /// A cipher from base64 keys: the current one and old ones for decryption only.
    pub fn new(current: &str, old: &[&str]) -> Result<Self, SecretError> {
        Ok(Self {
            current: KeyEntry::from_base64(current)?,
            old: old
                .iter()
                .map(|key| KeyEntry::from_base64(key))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The cipher configured by `HYPERNET_TOKEN_KEY` and `HYPERNET_TOKEN_KEYS_OLD`, or else by
    /// `key_file`, which is created with a fresh random key (mode 0600) if it does not exist.
    pub fn from_env_or_file(key_file: &Path) -> Result<Self, SecretError> {
        let old_keys = std::env::var("HYPERNET_TOKEN_KEYS_OLD").unwrap_or_default();
        let old: Vec<&str> = old_keys
            .split(',')
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .collect();
        if let Ok(key) = std::env::var("HYPERNET_TOKEN_KEY") {
            return Self::new(&key, &old);
        }
        let file_error = |reason: String| SecretError::KeyFile {
            path: key_file.display().to_string(),
            reason,
        };
        let key = match std::fs::read_to_string(key_file) {
            Ok(key) => {
                warn_if_shared(key_file);
                key
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate_key();
                write_private(key_file, &key).map_err(|error| file_error(error.to_string()))?;
                key
            }
            Err(error) => return Err(file_error(error.to_string())),
        };
        Self::new(&key, &old)
    }

    /// A fresh random key, base64-encoded.
    pub fn generate_key() -> String {
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    }

    /// Seals `plaintext` with the current key.
    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce: [u8; 12] = rand::random();
        let sealed = self
            .current
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &self.current.id,
                },
            )
            // Encryption only fails for messages over 256 GiB.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + 8 + 12 + sealed.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a ciphertext made by [`Self::encrypt`] with any configured key.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, SecretError> {
        if ciphertext.len() < 1 + 8 + 12 + 16 || ciphertext[0] != FORMAT {
            return Err(SecretError::Corrupt);
        }
        let (id, rest) = ciphertext[1..].split_at(8);
        let (nonce, sealed) = rest.split_at(12);
        let key = std::iter::once(&self.current)
            .chain(&self.old)
            .find(|key| key.id == id)
            .ok_or_else(|| {
                SecretError::UnknownKey(id.iter().map(|byte| format!("{byte:02x}")).collect())
            })?;
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| SecretError::Corrupt)?;
        key.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: id,
                },
            )
            .map_err(|_| SecretError::Corrupt)
    }
}

/// Warns when the key file may be read by users other than its owner: anyone who can read it
/// can unseal every token in the database.
fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(metadata) = std::fs::metadata(path)
            && metadata.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", metadata.permissions().mode() & 0o777),
                "the token key file is readable by other users, who could unseal every stored token; run `chmod 600` on it"
            );
        }
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_without_plaintext_in_the_ciphertext() {
        let cipher = TokenCipher::new(&TokenCipher::generate_key(), &[]).unwrap();
        let secret = b"ya29.a0AfH6SMBx-the-access-token";
        let sealed = cipher.encrypt(secret);
        assert!(!sealed.windows(secret.len()).any(|window| window == secret));
        assert_eq!(cipher.decrypt(&sealed).unwrap(), secret);
        assert_ne!(cipher.encrypt(secret), sealed, "a fresh nonce each time");
    }

    #[test]
    fn rotation_keeps_old_ciphertexts_readable() {
        let (old_key, new_key) = (TokenCipher::generate_key(), TokenCipher::generate_key());
        let sealed = TokenCipher::new(&old_key, &[]).unwrap().encrypt(b"token");
        assert!(matches!(
            TokenCipher::new(&new_key, &[]).unwrap().decrypt(&sealed),
            Err(SecretError::UnknownKey(_))
        ));
        let rotated = TokenCipher::new(&new_key, &[&old_key]).unwrap();
        assert_eq!(rotated.decrypt(&sealed).unwrap(), b"token");
        let resealed = rotated.encrypt(b"token");
        assert_eq!(
            TokenCipher::new(&new_key, &[])
                .unwrap()
                .decrypt(&resealed)
                .unwrap(),
            b"token"
        );
    }

    #[test]
    fn tampering_and_bad_keys_are_refused() {
        let cipher = TokenCipher::new(&TokenCipher::generate_key(), &[]).unwrap();
        let mut sealed = cipher.encrypt(b"token");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(cipher.decrypt(&sealed), Err(SecretError::Corrupt)));
        assert!(matches!(
            TokenCipher::new("c2hvcnQ=", &[]),
            Err(SecretError::BadKey)
        ));
    }

    #[test]
    fn a_key_file_is_created_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("hypernet-key-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token.key");
        // A key in the environment takes precedence over the file; then this test has nothing to check.
        if std::env::var("HYPERNET_TOKEN_KEY").is_ok() {
            return;
        }
        let first = TokenCipher::from_env_or_file(&path).unwrap();
        let sealed = first.encrypt(b"token");
        let second = TokenCipher::from_env_or_file(&path).unwrap();
        assert_eq!(second.decrypt(&sealed).unwrap(), b"token");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        std::fs::remove_dir_all(dir).ok();
    }
}
