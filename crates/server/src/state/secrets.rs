//! Secret environment values (`secret_env`): sealed with XChaCha20-Poly1305 under a key kept
//! outside the journal (`<data-dir>/secrets.key`, 0600, made at first start), so that the
//! journal, its snapshots and any copy of the database hold only ciphertext. They are opened
//! only to build a node's assignments (its own agent's heartbeat answer) and are never
//! returned by any view.
//!
//! A sealed value is `x1:<nonce hex>:<ciphertext hex>`; the plaintext is the JSON of the
//! name → value map. Servers sharing a journal (standbys) must share the key file.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::collections::BTreeMap;
use std::path::Path;

/// The prefix of format 1 of a sealed value.
const SEALED_PREFIX: &str = "x1:";

/// Why secrets cannot be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key file cannot be read, made, or is not a key.
    #[error("secrets key {path}: {reason}")]
    Key {
        /// The key file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A sealed value is damaged, or was sealed under another key.
    #[error("a sealed secret does not open: {0}")]
    Open(String),
    /// No randomness for a nonce.
    #[error("no randomness: {0}")]
    Random(String),
}

/// The key secrets are sealed under.
#[derive(Clone)]
pub struct SecretKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// The key in `path` (64 hex digits), made with mode 0600 if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<SecretKey, SecretError> {
        let fail = |reason: String| SecretError::Key {
            path: path.display().to_string(),
            reason,
        };
        let hex_key = match std::fs::read_to_string(path) {
            Ok(text) => text.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::getrandom(&mut key).map_err(|e| fail(e.to_string()))?;
                let text = hex(&key);
                write_private(path, &text).map_err(|e| fail(e.to_string()))?;
                text
            }
            Err(e) => return Err(fail(e.to_string())),
        };
        let key = unhex(&hex_key)
            .filter(|k| k.len() == 32)
            .ok_or_else(|| fail("not 64 hex digits".into()))?;
        let cipher = XChaCha20Poly1305::new_from_slice(&key).map_err(|e| fail(e.to_string()))?;
        Ok(SecretKey { cipher })
    }

    /// A key from raw bytes (tests).
    pub fn from_bytes(key: [u8; 32]) -> SecretKey {
        SecretKey {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// `values` sealed, under a fresh random nonce.
    pub fn seal(&self, values: &BTreeMap<String, String>) -> Result<String, SecretError> {
        let mut nonce = [0u8; 24];
        getrandom::getrandom(&mut nonce).map_err(|e| SecretError::Random(e.to_string()))?;
        let plain = serde_json::to_vec(values).map_err(|e| SecretError::Open(e.to_string()))?;
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plain.as_slice())
            .map_err(|e| SecretError::Open(e.to_string()))?;
        Ok(format!("{SEALED_PREFIX}{}:{}", hex(&nonce), hex(&sealed)))
    }

    /// The values a sealed string holds.
    pub fn open(&self, sealed: &str) -> Result<BTreeMap<String, String>, SecretError> {
        let bad = |why: &str| SecretError::Open(why.to_string());
        let rest = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or_else(|| bad("unknown format"))?;
        let (nonce, data) = rest.split_once(':').ok_or_else(|| bad("no nonce"))?;
        let nonce = unhex(nonce)
            .filter(|n| n.len() == 24)
            .ok_or_else(|| bad("bad nonce"))?;
        let data = unhex(data).ok_or_else(|| bad("bad ciphertext"))?;
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(&nonce), data.as_slice())
            .map_err(|_| bad("wrong key, or damaged"))?;
        serde_json::from_slice(&plain).map_err(|e| SecretError::Open(e.to_string()))
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_key_file_is_made_private_once_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let key = SecretKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let values = BTreeMap::from([("API_KEY".to_string(), "sk-123".to_string())]);
        let sealed = key.seal(&values).unwrap();
        assert!(!sealed.contains("sk-123"));
        let again = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), values);
        // Another key, a damaged value, or a damaged key file: refused, never garbage.
        assert!(SecretKey::from_bytes([7; 32]).open(&sealed).is_err());
        let mut damaged = sealed.clone();
        damaged.pop();
        damaged.push('0');
        assert!(key.open(&damaged).is_err() || damaged == sealed);
        std::fs::write(&path, "xyz").unwrap();
        assert!(SecretKey::load_or_create(&path).is_err());
    }

    proptest! {
        #[test]
        fn anything_sealed_opens_to_itself_and_garbage_never_opens(
            values in proptest::collection::btree_map("[A-Z_]{1,8}", ".{0,40}", 0..5),
            garbage in ".{0,200}",
        ) {
            let key = SecretKey::from_bytes([1; 32]);
            let sealed = key.seal(&values).unwrap();
            prop_assert_eq!(key.open(&sealed).unwrap(), values);
            prop_assert!(key.open(&garbage).is_err());
        }
    }
}
