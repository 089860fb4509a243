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

use crate::model::{CertPair, ClientCa, Id, Ssl};
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
    /// mTLS: the CAs a client certificate must chain to.
    pub client: Option<Arc<ClientCa>>,
}

/// What a TLS connection was served with, kept in its digest for the requests on it.
#[derive(Debug)]
pub struct Handshake {
    /// The ssl whose certificate the connection got.
    pub ssl: Option<Id>,
}

/// Whether a request may go on over its connection: a Host whose ssl asks for client
/// certificates must have come over a connection made for that ssl, else (400) a client
/// could skip mTLS by sending another SNI than the Host it asks for.
pub fn host_allowed(certs: &CertIndex, connection: Option<&Handshake>, host: Option<&str>) -> bool {
    let Some(wanted) = host.and_then(|h| certs.find(h)) else {
        return true;
    };
    if wanted.client.is_none() {
        return true;
    }
    connection.and_then(|c| c.ssl.as_ref()) == Some(&wanted.ssl)
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
                    client: ssl.client.clone(),
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
        if let Some(client) = &served.client {
            if let Err(e) = require_client_cert(ssl, client) {
                // Without the check the SNI must not serve: no certificate, no handshake.
                log::error!(
                    "ssls/{}: cannot ask for client certificates: {e}",
                    served.ssl
                );
                let _ = ext::clear_error_stack();
                return;
            }
        }
        self.remember(ssl, served.ssl.clone());
    }

    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let id = handshake_index().and_then(|i| ssl.ex_data(i).cloned());
        Some(Arc::new(Handshake { ssl: id }))
    }
}

impl SniCerts {
    /// Notes on the connection which ssl served it (read back when the handshake completes).
    fn remember(&self, ssl: &mut TlsRef, id: Id) {
        if let Some(index) = handshake_index() {
            ssl.set_ex_data(index, id);
        }
    }
}

/// Where the serving ssl's id is kept on an OpenSSL connection (`None` if OpenSSL could not
/// make the index: then no connection counts as made for an mTLS ssl, failing closed).
fn handshake_index() -> Option<openssl::ex_data::Index<openssl::ssl::Ssl, Id>> {
    static INDEX: std::sync::OnceLock<Option<openssl::ex_data::Index<openssl::ssl::Ssl, Id>>> =
        std::sync::OnceLock::new();
    *INDEX.get_or_init(|| openssl::ssl::Ssl::new_ex_index().ok())
}

/// Asks the client for a certificate that chains to `client.cas` within `client.depth`, and
/// fails the handshake without one.
fn require_client_cert(
    ssl: &mut TlsRef,
    client: &ClientCa,
) -> Result<(), pingora_core::tls::error::ErrorStack> {
    use pingora_core::tls::ssl::SslVerifyMode;
    let mut store = pingora_core::tls::x509::store::X509StoreBuilder::new()?;
    for ca in &client.cas {
        store.add_cert(ca.clone())?;
    }
    ssl.set_verify_cert_store(store.build())?;
    let depth = client.depth;
    ssl.set_verify_callback(
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        move |ok, ctx| ok && ctx.error_depth() <= depth + 1,
    );
    Ok(())
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
            client: None,
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
