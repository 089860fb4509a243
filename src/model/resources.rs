//! Services, plugin configs, global rules, consumers and SSLs.

use serde_json::Value;

use super::fields::{failed, Obj};
use super::id::Id;
use super::plugins::Plugins;
use super::route::{parse_hosts, parse_id, parse_ref};
use super::upstream::Upstream;
use crate::plugin::Scope;

/// Defaults that routes referring to the service inherit.
#[derive(Debug, Clone)]
pub struct Service {
    pub id: Id,
    pub plugins: Plugins,
    pub upstream: Option<Upstream>,
    pub upstream_id: Option<Id>,
    pub hosts: Vec<String>,
    pub enable_websocket: Option<bool>,
    pub name: Option<String>,
}

impl Service {
    pub fn parse(value: &Value, fallback_id: Option<&str>) -> Result<Service, String> {
        let o = Obj::new(value)?;
        let id = parse_id(&o, fallback_id)?;
        Ok(Service {
            plugins: Plugins::parse(o.get("plugins"), Scope::Route, &format!("services/{id}"))?,
            id,
            upstream: o
                .get("upstream")
                .map(|u| Upstream::parse(u, None).map_err(|e| failed("upstream", e)))
                .transpose()?,
            upstream_id: parse_ref(&o, "upstream_id")?,
            hosts: parse_hosts(&o)?,
            enable_websocket: o.bool("enable_websocket")?,
            name: o.str("name")?.map(str::to_string),
        })
    }
}

/// A reusable set of plugins that routes refer to by id.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub id: Id,
    pub plugins: Plugins,
}

impl PluginConfig {
    pub fn parse(value: &Value, fallback_id: Option<&str>) -> Result<PluginConfig, String> {
        let o = Obj::new(value)?;
        let id = parse_id(&o, fallback_id)?;
        let plugins = Plugins::parse(
            o.get("plugins"),
            Scope::Route,
            &format!("plugin_configs/{id}"),
        )?;
        if !o.has("plugins") {
            return Err("property \"plugins\" is required".into());
        }
        Ok(PluginConfig { id, plugins })
    }
}

/// Plugins that run for every request.
#[derive(Debug, Clone)]
pub struct GlobalRule {
    pub id: Id,
    pub plugins: Plugins,
}

impl GlobalRule {
    pub fn parse(value: &Value, fallback_id: Option<&str>) -> Result<GlobalRule, String> {
        let o = Obj::new(value)?;
        if !o.has("plugins") {
            return Err("property \"plugins\" is required".into());
        }
        let id = parse_id(&o, fallback_id)?;
        Ok(GlobalRule {
            plugins: Plugins::parse(
                o.get("plugins"),
                Scope::GlobalRule,
                &format!("global_rules/{id}"),
            )?,
            id,
        })
    }
}

/// Plugins shared by the consumers of a group (a consumer's own plugin of the same name wins).
#[derive(Debug, Clone)]
pub struct ConsumerGroup {
    pub id: Id,
    pub plugins: Plugins,
}

impl ConsumerGroup {
    pub fn parse(value: &Value, fallback_id: Option<&str>) -> Result<ConsumerGroup, String> {
        let o = Obj::new(value)?;
        if !o.has("plugins") {
            return Err("property \"plugins\" is required".into());
        }
        let id = parse_id(&o, fallback_id)?;
        Ok(ConsumerGroup {
            plugins: Plugins::parse(
                o.get("plugins"),
                Scope::Route,
                &format!("consumer_groups/{id}"),
            )?,
            id,
        })
    }
}

/// An API consumer, named by `username`.
#[derive(Debug, Clone)]
pub struct Consumer {
    pub username: String,
    pub plugins: Plugins,
    pub group_id: Option<Id>,
    /// `labels.custom_id`, sent upstream as `X-Consumer-Custom-ID`.
    pub custom_id: Option<String>,
}

impl Consumer {
    pub fn parse(value: &Value, fallback_id: Option<&str>) -> Result<Consumer, String> {
        let o = Obj::new(value)?;
        let username = match (o.str("username")?, fallback_id) {
            (Some(u), _) => u.to_string(),
            (None, Some(f)) => f.to_string(),
            (None, None) => return Err("property \"username\" is required".into()),
        };
        let ok = !username.is_empty()
            && username.len() <= 100
            && username
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if !ok {
            return Err(failed(
                "username",
                format!("{username:?} does not match [a-zA-Z0-9_-]+"),
            ));
        }
        let owner = format!("consumers/{username}");
        Ok(Consumer {
            username,
            plugins: Plugins::parse(o.get("plugins"), Scope::Consumer, &owner)?,
            group_id: parse_ref(&o, "group_id")?,
            custom_id: o
                .get("labels")
                .and_then(|l| l.get("custom_id"))
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

/// A credential of a consumer: one auth plugin's settings, kept apart from the consumer.
#[derive(Debug, Clone)]
pub struct Credential {
    pub consumer: String,
    pub id: Id,
    pub plugins: Plugins,
}

impl Credential {
    /// `fallback_id` is `username/id`, as the etcd key gives it.
    pub fn parse(value: &Value, fallback_id: Option<&str>) -> Result<Credential, String> {
        let o = Obj::new(value)?;
        let (consumer, id) = fallback_id
            .and_then(|f| f.split_once('/'))
            .ok_or("a credential is named consumers/<username>/credentials/<id>")?;
        // The standalone file names a credential `<username>/credentials/<id>` in `id`.
        let own_id = o
            .get("id")
            .filter(|v| !v.as_str().is_some_and(|s| s.contains("/credentials/")));
        let id = match own_id {
            Some(v) => Id::parse(v).map_err(|e| failed("id", e))?,
            None => Id::parse_str(id)?,
        };
        let plugins = Plugins::parse(
            o.get("plugins"),
            Scope::Credential,
            &format!("consumers/{consumer}/credentials/{id}"),
        )?;
        if o.get("plugins").and_then(Value::as_object).map(|m| m.len()) != Some(1) {
            return Err(failed(
                "plugins",
                "a credential holds exactly one auth plugin",
            ));
        }
        Ok(Credential {
            consumer: consumer.to_string(),
            id,
            plugins,
        })
    }
}

/// A certificate object (`/apisix/ssls/<id>`): for TLS listeners (`type: server`, chosen by
/// SNI) or an upstream's client certificate (`type: client`).
#[derive(Debug, Clone)]
pub struct Ssl {
    pub id: Id,
    pub snis: Vec<String>,
    pub cert: String,
    /// Decrypted with the keyring when APISIX stored it encrypted; never shown.
    pub key: String,
    pub enabled: bool,
    /// `type: client`: never served to clients.
    pub client_only: bool,
    /// The parsed pairs (`cert`/`key`, then `certs`/`keys`), checked when the object loads.
    pub pairs: Vec<std::sync::Arc<CertPair>>,
    /// mTLS: clients must present a certificate signed by one of these CAs.
    pub client: Option<std::sync::Arc<ClientCa>>,
}

/// `client.ca` and `client.depth` of an ssl: the CAs client certificates must chain to.
pub struct ClientCa {
    pub cas: Vec<openssl::x509::X509>,
    /// The longest chain accepted below the CA (APISIX's default: 1).
    pub depth: u32,
}

impl std::fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCa")
            .field("cas", &self.cas.len())
            .field("depth", &self.depth)
            .finish()
    }
}

/// A certificate chain and its private key, parsed and checked once per object version.
pub struct CertPair {
    pub chain: Vec<openssl::x509::X509>,
    pub key: openssl::pkey::PKey<openssl::pkey::Private>,
}

impl std::fmt::Debug for CertPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subject = self
            .chain
            .first()
            .map(|c| format!("{:?}", c.subject_name()))
            .unwrap_or_default();
        f.debug_struct("CertPair")
            .field("subject", &subject)
            .finish()
    }
}

/// A private key APISIX may have stored encrypted: a value starting with `---` is PEM as it
/// is, anything else is decrypted with the keyring (every entry tried).
pub(crate) fn reveal_key(field: &str, key: &str) -> Result<String, String> {
    if key.trim_start().starts_with("---") {
        return Ok(key.to_string());
    }
    crate::keyring::current().decrypt(key).ok_or_else(|| {
        format!(
            "property \"{field}\": not a PEM key and no data_encryption.keyring entry decrypts it"
        )
    })
}

/// Parses one pair and checks that it can serve: the key is the certificate's, and the
/// certificate has not expired.
fn cert_pair(cert_field: &str, key_field: &str, cert: &str, key: &str) -> Result<CertPair, String> {
    use openssl::asn1::Asn1Time;
    let chain = openssl::x509::X509::stack_from_pem(cert.as_bytes())
        .map_err(|e| format!("property \"{cert_field}\": not a PEM certificate: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err(format!("property \"{cert_field}\": holds no certificate"));
    };
    let key = openssl::pkey::PKey::private_key_from_pem(key.as_bytes())
        .map_err(|_| format!("property \"{key_field}\": not a PEM private key"))?;
    let matches = leaf
        .public_key()
        .map(|p| p.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        return Err(format!(
            "property \"{key_field}\": the private key does not match the certificate of \"{cert_field}\""
        ));
    }
    let now = Asn1Time::days_from_now(0).map_err(|e| e.to_string())?;
    if leaf.not_after() < now {
        return Err(format!(
            "property \"{cert_field}\": the certificate expired on {}",
            leaf.not_after()
        ));
    }
    Ok(CertPair { chain, key })
}

/// `ssl_protocols`: Portico serves TLS 1.2 and 1.3 on every SNI, so only that set can be
/// honoured; another (TLS 1.3 only, or TLS 1.1 too) is refused rather than ignored.
fn check_ssl_protocols(v: Option<&Value>) -> Result<(), String> {
    let Some(v) = v else {
        return Ok(());
    };
    let field = "property \"ssl_protocols\" validation failed";
    let list = v
        .as_array()
        .ok_or_else(|| format!("{field}: wrong type: expected array"))?;
    let mut set = std::collections::BTreeSet::new();
    for p in list {
        match p.as_str() {
            Some(p @ ("TLSv1.1" | "TLSv1.2" | "TLSv1.3")) => {
                if !set.insert(p) {
                    return Err(format!(
                        "{field}: expected unique items but items are duplicated"
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "{field}: matches none of the enum values (TLSv1.1, TLSv1.2, TLSv1.3): {p}"
                ))
            }
        }
    }
    if set != std::collections::BTreeSet::from(["TLSv1.2", "TLSv1.3"]) {
        return Err(format!(
            "property \"ssl_protocols\": Portico serves TLSv1.2 and TLSv1.3 on every SNI and cannot apply {list:?}; the ssl is not served",
            list = set.into_iter().collect::<Vec<_>>()
        ));
    }
    Ok(())
}

impl Ssl {
    pub fn parse(value: &Value, fallback_id: Option<&str>) -> Result<Ssl, String> {
        let o = Obj::new(value)?;
        let cert = o.str("cert")?.ok_or("property \"cert\" is required")?;
        let key = o.str("key")?.ok_or("property \"key\" is required")?;
        let snis = o.one_or_many("sni", "snis")?.unwrap_or_default();
        let client_only = match o.str("type")? {
            None | Some("server") => false,
            Some("client") => true,
            Some(other) => {
                return Err(format!(
                "property \"type\" validation failed: matches none of the enum values ({other:?})"
            ))
            }
        };
        if snis.is_empty() && !client_only {
            return Err("property \"snis\" is required".into());
        }
        check_ssl_protocols(o.get("ssl_protocols"))?;
        let client = match o.object("client")? {
            Some(c) if !client_only => {
                if c.get("skip_mtls_uri_regex").is_some() {
                    // Fail closed: never serve without the client check it asks for.
                    return Err("property \"client.skip_mtls_uri_regex\" is not supported by Portico yet; the ssl is not served".into());
                }
                let ca = c
                    .str("ca")
                    .map_err(|e| format!("client: {e}"))?
                    .ok_or("property \"client.ca\" is required")?;
                let cas = openssl::x509::X509::stack_from_pem(ca.as_bytes())
                    .ok()
                    .filter(|c| !c.is_empty())
                    .ok_or("property \"client.ca\": not a PEM certificate")?;
                let depth = c
                    .int("depth")
                    .map_err(|e| format!("client: {e}"))?
                    .unwrap_or(1);
                if depth < 0 {
                    return Err(
                        "property \"client.depth\" validation failed: expected at least 0".into(),
                    );
                }
                Some(std::sync::Arc::new(ClientCa {
                    cas,
                    depth: depth.min(100) as u32,
                }))
            }
            _ => None,
        };
        let key = reveal_key("key", key)?;
        let mut pairs = vec![std::sync::Arc::new(cert_pair("cert", "key", cert, &key)?)];
        let certs = o.strings("certs", false)?.unwrap_or_default();
        let keys = o.strings("keys", false)?.unwrap_or_default();
        if certs.len() != keys.len() {
            return Err("properties \"certs\" and \"keys\" must have as many items".into());
        }
        for (i, (c, k)) in certs.iter().zip(&keys).enumerate() {
            let k = reveal_key(&format!("keys[{i}]"), k)?;
            pairs.push(std::sync::Arc::new(cert_pair(
                &format!("certs[{i}]"),
                &format!("keys[{i}]"),
                c,
                &k,
            )?));
        }
        Ok(Ssl {
            id: parse_id(&o, fallback_id)?,
            snis: snis
                .iter()
                .map(|s| s.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            cert: cert.to_string(),
            key,
            enabled: o.int("status")?.unwrap_or(1) == 1,
            client_only,
            pairs,
            client,
        })
    }
}

/// A plugin's settings for the whole gateway (`plugin_metadata/<plugin>`, the id being the
/// plugin's name), checked and compiled by the plugin when it keeps any (the loggers'
/// `log_format`); metadata of other plugins is kept and unused, as APISIX's data plane does.
#[derive(Clone)]
pub struct PluginMetadata {
    pub id: Id,
    /// What the plugin made of it.
    pub built: Option<crate::plugin::Metadata>,
}

impl std::fmt::Debug for PluginMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginMetadata")
            .field("id", &self.id)
            .field("used", &self.built.is_some())
            .finish()
    }
}

impl PluginMetadata {
    pub fn parse(value: &Value, fallback_id: Option<&str>) -> Result<PluginMetadata, String> {
        let o = Obj::new(value)?;
        let id = parse_id(&o, fallback_id)?;
        let built = match crate::plugin::registry().factory(&id.to_string()) {
            Some(f) => f.metadata(value)?,
            None => None,
        };
        Ok(PluginMetadata { id, built })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ssl_protocols_portico_cannot_apply_are_refused() {
        assert!(check_ssl_protocols(None).is_ok());
        assert!(check_ssl_protocols(Some(&json!(["TLSv1.3", "TLSv1.2"]))).is_ok());
        for bad in [
            json!(["TLSv1.3"]),
            json!(["TLSv1.1", "TLSv1.2", "TLSv1.3"]),
            json!(["TLSv1.2", "TLSv1.2"]),
            json!(["SSLv3"]),
            json!("TLSv1.2"),
        ] {
            let e = check_ssl_protocols(Some(&bad)).unwrap_err();
            assert!(e.contains("ssl_protocols"), "{bad}: {e}");
        }
    }
}
