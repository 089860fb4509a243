//! APISIX's `data_encryption.keyring`: fields its Admin API stores encrypted (key-auth `key`,
//! basic-auth `password`, jwt-auth `secret`, SSL private keys) are AES-CBC encrypted with the
//! first entry and base64-encoded; each entry is both key and IV (16 bytes: AES-128, 32
//! bytes: AES-256). Decryption tries every entry in turn, so an etcd that APISIX filled works
//! unchanged.

use base64::Engine;
use openssl::symm::{decrypt, encrypt, Cipher};

/// The process's keyring (config.yaml's `data_encryption.keyring`), for the model's own
/// encrypted fields (SSL private keys); APISIX's default until the config is read.
static CURRENT: std::sync::LazyLock<arc_swap::ArcSwap<Keyring>> =
    std::sync::LazyLock::new(|| arc_swap::ArcSwap::from_pointee(Keyring::default()));

/// Makes `keyring` the process's.
pub fn install(keyring: Keyring) {
    CURRENT.store(std::sync::Arc::new(keyring));
}

/// The process's keyring.
pub fn current() -> std::sync::Arc<Keyring> {
    CURRENT.load_full()
}

/// APISIX's default keyring.
pub const DEFAULT: [&str; 2] = ["qeddd145sfvddff3", "edd1c9f0985e76a2"];

/// The keys, checked once when the config is read.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<Vec<u8>>,
}

impl Default for Keyring {
    fn default() -> Self {
        Keyring {
            keys: DEFAULT.iter().map(|k| k.as_bytes().to_vec()).collect(),
        }
    }
}

fn cipher(key: &[u8]) -> Option<Cipher> {
    match key.len() {
        16 => Some(Cipher::aes_128_cbc()),
        32 => Some(Cipher::aes_256_cbc()),
        _ => None,
    }
}

impl Keyring {
    /// Entries of 16 or 32 bytes; any other length is an error naming it.
    pub fn new(entries: &[String]) -> Result<Keyring, String> {
        for e in entries {
            if cipher(e.as_bytes()).is_none() {
                return Err(format!(
                    "data_encryption.keyring: an entry of {} bytes; each must be 16 or 32",
                    e.len()
                ));
            }
        }
        Ok(Keyring {
            keys: entries.iter().map(|k| k.as_bytes().to_vec()).collect(),
        })
    }

    /// The plain text of `value`, or `None` when no entry decrypts it (then APISIX uses the
    /// value as it is: it was stored in clear).
    pub fn decrypt(&self, value: &str) -> Option<String> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()?;
        if raw.is_empty() || raw.len() % 16 != 0 {
            return None;
        }
        self.keys.iter().find_map(|k| {
            let plain = decrypt(cipher(k)?, k, Some(k), &raw).ok()?;
            String::from_utf8(plain).ok()
        })
    }

    /// `value` decrypted when it is encrypted, else as given.
    pub fn reveal(&self, value: &str) -> String {
        self.decrypt(value).unwrap_or_else(|| value.to_string())
    }

    /// Encrypts with the first entry (as APISIX's Admin API does); `None` without entries.
    pub fn encrypt(&self, value: &str) -> Option<String> {
        let k = self.keys.first()?;
        let out = encrypt(cipher(k)?, k, Some(k), value.as_bytes()).ok()?;
        Some(base64::engine::general_purpose::STANDARD.encode(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apisix_vectors() {
        let k = Keyring::default();
        assert_eq!(
            k.decrypt("fsFPtg7BtXMXkvSnS9e1zw==").as_deref(),
            Some("p7a3k6r4t9")
        );
        assert_eq!(
            k.decrypt("JCX7x1qN5e9kHt0GuJfWpw==").as_deref(),
            Some("the-key")
        );
        // Encrypted with the second entry.
        assert_eq!(
            k.decrypt("IRWpPjbDq5BCgHyIllnOMA==").as_deref(),
            Some("my-secret-key")
        );
        assert_eq!(
            k.encrypt("the-password").as_deref(),
            Some("WvF5kpaLvIzjuk4GNIMTJg==")
        );
        // Clear text stays as it is.
        assert_eq!(k.reveal("jack-key"), "jack-key");
        assert!(Keyring::new(&["short".into()]).is_err());
    }
}
