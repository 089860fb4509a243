//! HTTPS for clients: the certificate for each handshake, chosen by SNI from the `ssls` of the
//! current config snapshot.
//!
//! The tables keep a [`CertIndex`] (rebuilt when an ssl changes; the certificates themselves
//! were parsed and checked once, when their object loaded), and the listener's certificate
//! callback looks the client's SNI up in it: an exact name wins over a wildcard, `*.foo.com`
//! matches exactly one label, names are lowercased and a trailing dot is dropped. An unknown
//! SNI, or none, fails the handshake (no default certificate) unless `fallback_sni` names
//! one. A change applies to the next handshake; open connections keep their session.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use pingora_core::tls::ext;
use pingora_core::tls::ssl::NameType;

use crate::model::{CertPair, Id, Ssl};
use crate::tables::Store;

/// The certificates of the enabled server ssls, by SNI.
#[derive(Debug, Default)]
pub struct CertIndex {
    exact: HashMap<String, Served>,
    /// `*.foo.com` under `foo.com`.
    wildcard: HashMap<String, Served>,
}

/// The pairs an SNI is served with (one per key type: OpenSSL picks by what the client
/// supports), and the ssl they come from.
#[derive(Debug, Clone)]
pub struct Served {
    pub ssl: Id,
    pub pairs: Vec<Arc<CertPair>>,
}

impl CertIndex {
    /// Files every enabled server ssl under its SNIs; where two name the same SNI, the one
    /// loaded first keeps it (`ssls` come in load order).
    pub fn build<'a>(ssls: impl IntoIterator<Item = &'a Ssl>) -> CertIndex {
        let mut index = CertIndex::default();
        for ssl in ssls {
            if !ssl.enabled || ssl.client_only || ssl.pairs.is_empty() {
                continue;
            }
            for sni in &ssl.snis {
                let served = Served {
                    ssl: ssl.id.clone(),
                    pairs: ssl.pairs.clone(),
                };
                match sni.strip_prefix("*.") {
                    Some(parent) => index.wildcard.entry(parent.to_string()).or_insert(served),
                    None => index.exact.entry(sni.clone()).or_insert(served),
                };
            }
        }
        index
    }

    /// The certificate for a client's SNI.
    pub fn find(&self, sni: &str) -> Option<&Served> {
        let sni = sni.trim_end_matches('.');
        let lower;
        let sni = if sni.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = sni.to_ascii_lowercase();
            lower.as_str()
        } else {
            sni
        };
        if let Some(s) = self.exact.get(sni) {
            return Some(s);
        }
        let (first, parent) = sni.split_once('.')?;
        if first.is_empty() {
            return None;
        }
        self.wildcard.get(parent)
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The TLS listeners' certificate callback.
pub struct SniCerts {
    store: Arc<Store>,
    /// The SNI to serve when the client sends none or one no ssl has.
    fallback_sni: Option<String>,
}

impl SniCerts {
    pub fn new(store: Arc<Store>, fallback_sni: Option<String>) -> SniCerts {
        SniCerts {
            store,
            fallback_sni,
        }
    }
}

#[async_trait]
impl TlsAccept for SniCerts {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let tables = self.store.load();
        let certs = tables.certs();
        let sni = ssl.servername(NameType::HOST_NAME).map(str::to_string);
        let served = sni
            .as_deref()
            .and_then(|s| certs.find(s))
            .or_else(|| self.fallback_sni.as_deref().and_then(|f| certs.find(f)));
        let Some(served) = served else {
            // No certificate set: the handshake fails, as APISIX's does.
            log::info!(
                "TLS handshake refused: no certificate for SNI {:?}",
                sni.as_deref().unwrap_or("")
            );
            return;
        };
        for pair in &served.pairs {
            let Some(leaf) = pair.chain.first() else {
                continue;
            };
            if let Err(e) = ext::ssl_use_certificate(ssl, leaf) {
                log::error!("ssls/{}: cannot use the certificate: {e}", served.ssl);
                return;
            }
            if let Err(e) = ext::ssl_use_private_key(ssl, &pair.key) {
                log::error!("ssls/{}: cannot use the private key: {e}", served.ssl);
                return;
            }
            for c in &pair.chain[1..] {
                if let Err(e) = ext::ssl_add_chain_cert(ssl, c) {
                    log::error!("ssls/{}: cannot add a chain certificate: {e}", served.ssl);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssl(id: &str, snis: &[&str]) -> Ssl {
        Ssl {
            id: Id::parse_str(id).unwrap(),
            snis: snis.iter().map(|s| s.to_string()).collect(),
            cert: String::new(),
            key: String::new(),
            enabled: true,
            client_only: false,
            pairs: vec![Arc::new(CertPair {
                chain: vec![],
                key: openssl::pkey::PKey::generate_ed25519()
                    .and_then(|k| {
                        openssl::pkey::PKey::private_key_from_raw_bytes(
                            &k.raw_private_key()?,
                            openssl::pkey::Id::ED25519,
                        )
                    })
                    .unwrap(),
            })],
        }
    }

    #[test]
    fn exact_wins_and_wildcards_match_one_label() {
        let all = [
            ssl("w", &["*.foo.com"]),
            ssl("e", &["a.foo.com"]),
            ssl("x", &["x.test"]),
        ];
        let idx = CertIndex::build(&all);
        let id = |sni: &str| idx.find(sni).map(|s| s.ssl.to_string());
        assert_eq!(id("a.foo.com").as_deref(), Some("e"));
        assert_eq!(id("b.foo.com").as_deref(), Some("w"));
        assert_eq!(
            id("B.Foo.Com.").as_deref(),
            Some("w"),
            "lowercased, dot dropped"
        );
        assert_eq!(id("foo.com"), None, "a wildcard is one label");
        assert_eq!(id("a.b.foo.com"), None, "exactly one label");
        assert_eq!(id(".foo.com"), None);
        assert_eq!(id("x.test").as_deref(), Some("x"));
        assert_eq!(id("y.test"), None);
    }
}
