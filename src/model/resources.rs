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

/// A certificate for TLS listeners, kept as given until TLS termination lands.
#[derive(Debug, Clone)]
pub struct Ssl {
    pub id: Id,
    pub snis: Vec<String>,
    pub cert: String,
    /// Possibly encrypted with APISIX's keyring; never shown.
    pub key: String,
    pub enabled: bool,
}

impl Ssl {
    pub fn parse(value: &Value, fallback_id: Option<&str>) -> Result<Ssl, String> {
        let o = Obj::new(value)?;
        let cert = o.str("cert")?.ok_or("property \"cert\" is required")?;
        let key = o.str("key")?.ok_or("property \"key\" is required")?;
        let snis = o.one_or_many("sni", "snis")?.unwrap_or_default();
        let is_client = o.str("type")? == Some("client");
        if snis.is_empty() && !is_client {
            return Err("property \"snis\" is required".into());
        }
        Ok(Ssl {
            id: parse_id(&o, fallback_id)?,
            snis: snis.iter().map(|s| s.to_ascii_lowercase()).collect(),
            cert: cert.to_string(),
            key: key.to_string(),
            enabled: o.int("status")?.unwrap_or(1) == 1,
        })
    }
}
