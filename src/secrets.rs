//! Secrets at rest: what the store keeps that could sign (webhook endpoints'
//! `whsec_` secrets, current and previous, and the browser token-signing
//! key) is sealed with XChaCha20-Poly1305 under a key from configuration
//! (`secrets.encryption_key`), so a database dump, a backup or a logged row
//! alone cannot sign anything. See docs/security.md.
//!
//! A sealed value is text: `bkenc1:<key id>:<base64url(nonce ‖ ciphertext)>`.
//! The key id (16 hex digits of a SHA-256 of the key, which reveals nothing
//! of it) says which key sealed it, so several keys can be configured while
//! one is rotated out: the current one seals, every one opens. The value is
//! bound to where it is stored (`context`, e.g. the endpoint's id and
//! column), so a sealed secret copied to another row does not open there.
//!
//! Values stored before sealing existed (plain `whsec_…`, raw key bytes) are
//! still read, and `serve` seals them at start.
use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::Config;

/// What starts every sealed value.
pub const PREFIX: &str = "bkenc1:";
const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
/// The file the embedded store keeps its key in when none is configured.
pub const KEY_FILE: &str = "secrets.key";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretsError {
    #[error("{0} must be base64 of 32 bytes (make one with `buktor secrets generate-key`)")]
    MalformedKey(String),
    #[error(
        "{context} was sealed with encryption key {key_id}, which is not configured: \
         add it to secrets.old_encryption_keys (or set it as secrets.encryption_key)"
    )]
    UnknownKey { context: String, key_id: String },
    #[error(
        "{context} does not open with encryption key {key_id}: the key is wrong or the \
         stored value was altered"
    )]
    DoesNotOpen { context: String, key_id: String },
    #[error("{0} is not a sealed value")]
    Malformed(String),
    #[error(
        "no encryption key for stored secrets: set secrets.encryption_key \
         (BUKTOR_SECRETS__ENCRYPTION_KEY; make one with `buktor secrets generate-key`)"
    )]
    NoKey,
    #[error("the key file {path}: {error}")]
    KeyFile { path: PathBuf, error: String },
}

struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl Key {
    fn new(bytes: &[u8; KEY_BYTES]) -> Key {
        let mut digest = Sha256::new();
        digest.update(b"buktor secrets key id\0");
        digest.update(bytes);
        Key {
            id: hex::encode(&digest.finalize()[..8]),
            cipher: XChaCha20Poly1305::new_from_slice(bytes).expect("a 32-byte key"),
        }
    }
}

/// The keys that seal and open stored secrets. `Debug` shows key ids only.
pub struct SecretKeys {
    current: Key,
    /// Open only: keys being rotated out.
    old: Vec<Key>,
}

impl fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKeys")
            .field("current", &self.current.id)
            .field(
                "old",
                &self.old.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A stored value, opened.
#[derive(PartialEq, Eq)]
pub struct Opened {
    pub plaintext: Vec<u8>,
    /// Whether it should be sealed again: stored in plaintext, or sealed
    /// under another key than the current one.
    pub stale: bool,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("plaintext", &"<redacted>")
            .field("stale", &self.stale)
            .finish()
    }
}

/// A new random key, as configuration takes it (standard base64).
pub fn generate_key() -> String {
    let mut key = [0u8; KEY_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut key);
    STANDARD.encode(key)
}

/// A key from its base64 text (either alphabet, padded or not); `name` is
/// what an error calls it. The error never shows the text.
pub fn parse_key(name: &str, text: &str) -> Result<[u8; KEY_BYTES], SecretsError> {
    let text = text.trim();
    let bytes = [&STANDARD, &URL_SAFE]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .or_else(|| {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(text)
                .ok()
        })
        .or_else(|| URL_SAFE_NO_PAD.decode(text).ok())
        .ok_or_else(|| SecretsError::MalformedKey(name.into()))?;
    bytes
        .try_into()
        .map_err(|_| SecretsError::MalformedKey(name.into()))
}

impl SecretKeys {
    /// `current` seals and opens; `old` only open.
    pub fn new(current: &[u8; KEY_BYTES], old: &[[u8; KEY_BYTES]]) -> SecretKeys {
        let current = Key::new(current);
        let mut keys = SecretKeys {
            current,
            old: Vec::new(),
        };
        for k in old {
            let k = Key::new(k);
            if k.id != keys.current.id && keys.old.iter().all(|o| o.id != k.id) {
                keys.old.push(k);
            }
        }
        keys
    }

    /// The current key's id.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `plaintext` under the current key, bound to `context`.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .current
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals any length we store");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        format!(
            "{PREFIX}{}:{}",
            self.current.id,
            URL_SAFE_NO_PAD.encode(blob)
        )
    }

    /// Opens a stored value: sealed (with any configured key) or, from
    /// before sealing, plaintext (returned as it is, marked stale).
    pub fn open(&self, context: &str, stored: &[u8]) -> Result<Opened, SecretsError> {
        let Some(rest) = stored.strip_prefix(PREFIX.as_bytes()) else {
            return Ok(Opened {
                plaintext: stored.to_vec(),
                stale: true,
            });
        };
        let malformed = || SecretsError::Malformed(context.into());
        let rest = std::str::from_utf8(rest).map_err(|_| malformed())?;
        let (key_id, blob) = rest.split_once(':').ok_or_else(malformed)?;
        let blob = URL_SAFE_NO_PAD.decode(blob).map_err(|_| malformed())?;
        if blob.len() < NONCE_BYTES {
            return Err(malformed());
        }
        let key = std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.id == key_id)
            .ok_or_else(|| SecretsError::UnknownKey {
                context: context.into(),
                key_id: key_id.into(),
            })?;
        let (nonce, sealed) = blob.split_at(NONCE_BYTES);
        let plaintext = key
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretsError::DoesNotOpen {
                context: context.into(),
                key_id: key_id.into(),
            })?;
        Ok(Opened {
            plaintext,
            stale: key.id != self.current.id,
        })
    }

    /// [`SecretKeys::open`] for text columns; the plaintext must be UTF-8.
    pub fn open_text(&self, context: &str, stored: &str) -> Result<(String, bool), SecretsError> {
        let opened = self.open(context, stored.as_bytes())?;
        let text = String::from_utf8(opened.plaintext)
            .map_err(|_| SecretsError::Malformed(context.into()))?;
        Ok((text, opened.stale))
    }

    /// The keys the configuration gives: `secrets.encryption_key` and
    /// `secrets.old_encryption_keys`; on the embedded store without a
    /// configured key, the key in `data_dir/secrets.key` (made on first
    /// use, readable by the owner only); a key file left from before a key
    /// was configured keeps opening what it sealed. `None` on PostgreSQL
    /// without a configured key: `serve` refuses to start then.
    pub fn from_config(config: &Config) -> Result<Option<SecretKeys>, SecretsError> {
        let s = &config.secrets;
        let mut old = Vec::new();
        for (i, k) in s.old_encryption_keys.iter().enumerate() {
            old.push(parse_key(
                &format!("secrets.old_encryption_keys[{i}]"),
                k.expose(),
            )?);
        }
        let embedded = config.database_url.is_none();
        let key_file = config.data_dir.join(KEY_FILE);
        // An empty value (an unset variable in a deployment template) is unset.
        let configured = s
            .encryption_key
            .as_ref()
            .filter(|k| !k.expose().trim().is_empty());
        match configured {
            Some(key) => {
                let current = parse_key("secrets.encryption_key", key.expose())?;
                if embedded && key_file.exists() {
                    old.push(read_key_file(&key_file)?);
                }
                Ok(Some(SecretKeys::new(&current, &old)))
            }
            None if embedded => {
                let current = load_or_make_key_file(&key_file)?;
                Ok(Some(SecretKeys::new(&current, &old)))
            }
            None => Ok(None),
        }
    }
}

fn key_file_error(path: &Path, error: impl fmt::Display) -> SecretsError {
    SecretsError::KeyFile {
        path: path.to_owned(),
        error: error.to_string(),
    }
}

fn read_key_file(path: &Path) -> Result<[u8; KEY_BYTES], SecretsError> {
    let text = std::fs::read_to_string(path).map_err(|e| key_file_error(path, e))?;
    parse_key(&path.display().to_string(), &text)
}

/// Reads the key file, or makes it (mode 0600, never overwriting one another
/// process made first).
fn load_or_make_key_file(path: &Path) -> Result<[u8; KEY_BYTES], SecretsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| key_file_error(path, e))?;
    }
    let key = generate_key();
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            file.write_all(format!("{key}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| key_file_error(path, e))?;
            tracing::warn!(
                path = %path.display(),
                "made an encryption key for stored secrets; back it up apart from the \
                 database (without it the webhook secrets cannot be read), or configure \
                 secrets.encryption_key"
            );
            parse_key("the new key", &key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key_file(path),
        Err(e) => Err(key_file_error(path, e)),
    }
}

/// What a store seals its secrets with. Built by [`crate::store::open`]
/// from the configuration, so the server and every CLI command seal;
/// a store opened without keys (the benches, store-level tests) keeps
/// secrets as given and refuses to read a sealed one.
#[derive(Clone, Default)]
pub struct Sealer(Option<std::sync::Arc<SecretKeys>>);

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(keys) => write!(f, "Sealer({})", keys.current_id()),
            None => f.write_str("Sealer(none)"),
        }
    }
}

impl Sealer {
    pub fn new(keys: std::sync::Arc<SecretKeys>) -> Sealer {
        Sealer(Some(keys))
    }

    pub fn keys(&self) -> Option<&SecretKeys> {
        self.0.as_deref()
    }

    /// The value to store for `plaintext`.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        match &self.0 {
            Some(keys) => keys.seal(context, plaintext).into_bytes(),
            None => plaintext.to_vec(),
        }
    }

    /// [`Sealer::seal`] for text columns.
    pub fn seal_text(&self, context: &str, plaintext: &str) -> String {
        match &self.0 {
            Some(keys) => keys.seal(context, plaintext.as_bytes()),
            None => plaintext.to_owned(),
        }
    }

    /// The plaintext of a stored value.
    pub fn open(&self, context: &str, stored: &[u8]) -> Result<Vec<u8>, SecretsError> {
        match &self.0 {
            Some(keys) => Ok(keys.open(context, stored)?.plaintext),
            None if stored.starts_with(PREFIX.as_bytes()) => Err(SecretsError::NoKey),
            None => Ok(stored.to_vec()),
        }
    }

    /// [`Sealer::open`] for text columns.
    pub fn open_text(&self, context: &str, stored: &str) -> Result<String, SecretsError> {
        String::from_utf8(self.open(context, stored.as_bytes())?)
            .map_err(|_| SecretsError::Malformed(context.into()))
    }

    /// What a re-seal pass stores instead of `stored`: `None` when it is
    /// already sealed under the current key (or there are no keys).
    pub fn reseal(&self, context: &str, stored: &[u8]) -> Result<Option<Vec<u8>>, SecretsError> {
        let Some(keys) = &self.0 else {
            return Ok(None);
        };
        let opened = keys.open(context, stored)?;
        Ok(opened
            .stale
            .then(|| keys.seal(context, &opened.plaintext).into_bytes()))
    }
}

/// Counts one stored value into a re-seal report.
impl ResealReport {
    pub fn count(&mut self, stored: &[u8], changed: bool) {
        self.total += 1;
        if changed {
            if stored.starts_with(PREFIX.as_bytes()) {
                self.resealed += 1;
            } else {
                self.sealed += 1;
            }
        }
    }
}

/// How many stored secrets a re-seal pass saw and changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Stored secrets (every current and previous webhook secret, every
    /// server secret).
    pub total: usize,
    /// Found in plaintext, now sealed.
    pub sealed: usize,
    /// Found sealed under an old key, now sealed under the current one.
    pub resealed: usize,
}

/// The context a webhook endpoint's secret is bound to.
pub fn endpoint_context(endpoint: uuid::Uuid, previous: bool) -> String {
    let column = if previous {
        "previous_secret"
    } else {
        "secret"
    };
    format!("webhook_endpoints.{column}:{endpoint}")
}

/// The context a server secret is bound to.
pub fn server_secret_context(name: &str) -> String {
    format!("server_secrets:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn seals_and_opens_bound_to_its_context_and_key() {
        let k = SecretKeys::new(&keys(1), &[]);
        let sealed = k.seal("a", b"whsec_hello");
        assert!(sealed.starts_with(PREFIX), "{sealed}");
        assert!(!sealed.contains("hello"));
        assert_ne!(
            sealed,
            k.seal("a", b"whsec_hello"),
            "a fresh nonce each time"
        );
        let opened = k.open("a", sealed.as_bytes()).unwrap();
        assert_eq!(
            (opened.plaintext.as_slice(), opened.stale),
            (&b"whsec_hello"[..], false)
        );
        assert!(matches!(
            k.open("b", sealed.as_bytes()),
            Err(SecretsError::DoesNotOpen { .. })
        ));
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(k.open("a", &tampered).is_err());
        // Another key: unknown, named by its id.
        let other = SecretKeys::new(&keys(2), &[]);
        assert_eq!(
            other.open("a", sealed.as_bytes()).unwrap_err(),
            SecretsError::UnknownKey {
                context: "a".into(),
                key_id: k.current_id().into()
            }
        );
        // Rotation: the old key still opens, and says the value is stale.
        let rotated = SecretKeys::new(&keys(2), &[keys(1)]);
        let opened = rotated.open("a", sealed.as_bytes()).unwrap();
        assert!(opened.stale);
        assert_eq!(opened.plaintext, b"whsec_hello");
        // Plaintext from before sealing is read, and stale.
        let legacy = k.open("a", b"whsec_plain").unwrap();
        assert_eq!(
            (legacy.plaintext.as_slice(), legacy.stale),
            (&b"whsec_plain"[..], true)
        );
        assert!(!format!("{k:?}{legacy:?}").contains("whsec_plain"));
    }

    #[test]
    fn keys_parse_from_base64_of_32_bytes_only_and_errors_hide_them() {
        let text = generate_key();
        assert_eq!(parse_key("k", &text).unwrap().len(), 32);
        assert_eq!(
            parse_key("k", &URL_SAFE_NO_PAD.encode([7u8; 32])).unwrap(),
            [7u8; 32]
        );
        let short = STANDARD.encode([1u8; 16]);
        let err = parse_key("secrets.encryption_key", &short).unwrap_err();
        assert!(err.to_string().contains("secrets.encryption_key"));
        assert!(!err.to_string().contains(&short));
        assert!(parse_key("k", "not base64!").is_err());
    }

    #[test]
    fn the_embedded_store_makes_its_key_file_once_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join(KEY_FILE);
        let a = load_or_make_key_file(&path).unwrap();
        let b = load_or_make_key_file(&path).unwrap();
        assert_eq!(a, b);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
