//! The plugins this gateway knows, by APISIX name, and turning one resource's settings into
//! a ready plugin.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use super::chain::Meta;
use super::settings::ConsumerAuth;
use super::Plugin;
use crate::keyring::Keyring;

/// Where a plugin is configured: auth plugins take their consumer-side settings (the key, the
/// password) on consumers and credentials, their route-side settings elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Routes, services, plugin_configs, consumer groups.
    Route,
    GlobalRule,
    Consumer,
    Credential,
}

/// Makes one plugin from its settings. One per plugin name, registered in a [`Registry`].
pub trait Factory: Send + Sync + 'static {
    /// The APISIX name (`key-auth`).
    fn name(&self) -> &'static str;
    /// APISIX's priority: within a phase, higher runs first.
    fn priority(&self) -> i32;
    /// Checks `settings` (with `_meta` left in; see [`super::parse_settings`]) and builds the
    /// plugin. The message names the field that is wrong.
    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String>;
    /// Like [`Factory::build`] for the resource `owner` (`routes/1`, `consumers/jack`), for
    /// plugins that keep state across config versions (counters), keyed by owner and settings.
    fn build_for(&self, settings: &Value, _owner: &str) -> Result<Arc<dyn Plugin>, String> {
        self.build(settings)
    }
    /// For auth plugins: the consumer side of the settings. `None` for other plugins, which
    /// then take their route-side settings on consumers too.
    fn consumer(&self, _settings: &Value) -> Option<Result<ConsumerAuth, String>> {
        None
    }
    /// An auth plugin (APISIX's `type = 'auth'`): it finds the consumer, and `multi-auth`
    /// may combine it with others.
    fn is_auth(&self) -> bool {
        false
    }
    /// Checks and compiles the plugin's `plugin_metadata` (gateway-wide settings);
    /// `None` for plugins that read none.
    fn metadata(&self, _value: &Value) -> Result<Option<super::Metadata>, String> {
        Ok(None)
    }
    /// The fields APISIX's Admin API stores encrypted (`encrypt_fields`; an auth plugin's on
    /// its consumer side): they are decrypted with the keyring before the factory sees them.
    fn encrypt_fields(&self) -> &'static [&'static str] {
        &[]
    }
}

/// One plugin as a resource configured it.
#[derive(Clone)]
pub struct Configured {
    /// The settings as given (for status and equality).
    pub raw: Value,
    pub meta: Meta,
    /// The priority it runs at (`_meta.priority` or the plugin's own).
    pub priority: i32,
    pub built: Built,
}

impl std::fmt::Debug for Configured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Configured")
            .field("priority", &self.priority)
            .field("disable", &self.meta.disable)
            .finish()
    }
}

impl PartialEq for Configured {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

/// What a plugin's settings became.
#[derive(Clone)]
pub enum Built {
    /// A plugin that runs for requests.
    Plugin(Arc<dyn Plugin>),
    /// An auth plugin's consumer side: found by the auth plugin, never run itself.
    Credential(Arc<ConsumerAuth>),
}

/// The plugins a gateway can run, by name, and which of them the operator enabled.
pub struct Registry {
    factories: BTreeMap<&'static str, Arc<dyn Factory>>,
    /// `plugins:` in config.yaml; `None` = all registered.
    enabled: Option<BTreeSet<String>>,
    /// Decrypts the fields APISIX stores encrypted.
    keyring: Keyring,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.enabled_names()).finish()
    }
}

static INSTALLED: OnceLock<Registry> = OnceLock::new();

/// The registry every resource is checked against: the one [`Registry::install`]ed at start,
/// or the built-in plugins, all enabled. One per process, like the plugins an APISIX worker
/// loads, because every config source (file, etcd, saved copy, `-t`) must check alike.
pub fn registry() -> &'static Registry {
    INSTALLED.get_or_init(Registry::builtin)
}

impl Registry {
    /// No plugins.
    pub fn empty() -> Registry {
        Registry {
            factories: BTreeMap::new(),
            enabled: None,
            keyring: Keyring::default(),
        }
    }

    /// Every plugin Portico implements.
    pub fn builtin() -> Registry {
        let mut r = Registry::empty();
        super::register_builtins(&mut r);
        r
    }

    /// Adds (or replaces) a plugin.
    pub fn register(&mut self, factory: impl Factory) {
        self.factories.insert(factory.name(), Arc::new(factory));
    }

    /// The factory of an enabled plugin.
    pub fn factory(&self, name: &str) -> Option<&Arc<dyn Factory>> {
        let enabled = self.enabled.as_ref().is_none_or(|e| e.contains(name));
        self.factories.get(name).filter(|_| enabled)
    }

    /// Enables only `names` (config.yaml's `plugins:`); a name no plugin has is an error.
    pub fn enable_only(&mut self, names: &[String]) -> Result<(), String> {
        for n in names {
            if !self.factories.contains_key(n.as_str()) {
                return Err(if is_known_plugin(n) {
                    format!("plugins: {n} is an APISIX plugin that Portico does not implement; leave it out of the list, and resources that use it are served without it, with a warning")
                } else {
                    format!("plugins: unknown plugin {n}")
                });
            }
        }
        self.enabled = Some(names.iter().cloned().collect());
        Ok(())
    }

    /// The keyring of config.yaml's `data_encryption` (APISIX's default otherwise).
    pub fn set_keyring(&mut self, keyring: Keyring) {
        self.keyring = keyring;
    }

    /// Makes this the process's registry; fails when resources were already checked against
    /// another one.
    pub fn install(self) -> Result<(), Registry> {
        INSTALLED.set(self)
    }

    /// The enabled plugins, by name.
    pub fn enabled_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.factories
            .keys()
            .copied()
            .filter(|n| self.enabled.as_ref().is_none_or(|e| e.contains(*n)))
    }

    /// Checks one plugin's settings. `Ok(None)`: the operator left it out of `plugins:`, so it
    /// is skipped (with a warning), as APISIX does. A plugin Portico does not have rejects the
    /// resource: serving it without would drop a protection it asks for.
    pub fn configure(
        &self,
        name: &str,
        settings: &Value,
        scope: Scope,
    ) -> Result<Option<Configured>, String> {
        self.configure_for(name, settings, scope, "")
    }

    /// Like [`Registry::configure`] for the resource `owner` (`routes/1`).
    pub fn configure_for(
        &self,
        name: &str,
        settings: &Value,
        scope: Scope,
        owner: &str,
    ) -> Result<Option<Configured>, String> {
        if let Some(enabled) = &self.enabled {
            // The operator's choice, also for an APISIX plugin Portico does not have (a typo
            // of a name stays an error: it may be a protection misspelled).
            let known = self.factories.contains_key(name) || is_known_plugin(name);
            if known && !enabled.contains(name) {
                log::warn!("plugin {name} is not enabled in config.yaml plugins: skipped");
                return Ok(None);
            }
        }
        let Some(factory) = self.factories.get(name) else {
            return Err(missing(name));
        };
        let err =
            |e: String| format!("failed to check the configuration of plugin {name} err: {e}");
        if !settings.is_object() {
            return Err(err("wrong type: expected object".into()));
        }
        let meta = Meta::parse(settings).map_err(err)?;
        let consumer_side = matches!(scope, Scope::Consumer | Scope::Credential);
        // An auth plugin's encrypted fields are on its consumer side; other plugins' wherever
        // they are configured (csrf's `key` on a route).
        let reveal_here = consumer_side || !factory.is_auth();
        let revealed;
        let settings = if reveal_here {
            revealed = reveal(settings, factory.encrypt_fields(), &self.keyring).map_err(err)?;
            &revealed
        } else {
            settings
        };
        let built = match (scope, factory.consumer(settings)) {
            (Scope::Consumer | Scope::Credential, Some(auth)) => {
                Built::Credential(Arc::new(auth.map_err(err)?))
            }
            (Scope::Credential, None) => {
                return Err(format!(
                    "plugin {name} is not an auth plugin; a credential holds one auth plugin"
                ))
            }
            _ => Built::Plugin(factory.build_for(settings, owner).map_err(err)?),
        };
        Ok(Some(Configured {
            raw: settings.clone(),
            priority: meta.priority.unwrap_or_else(|| factory.priority()),
            meta,
            built,
        }))
    }
}

/// A consumer's settings with encrypted fields decrypted and `$env://NAME` references resolved
/// (a reference to a variable that is not set is an error: never a key nobody can know).
fn reveal(settings: &Value, encrypted: &[&str], keyring: &Keyring) -> Result<Value, String> {
    let mut out = settings.clone();
    let Value::Object(map) = &mut out else {
        return Ok(out);
    };
    for (name, v) in map.iter_mut() {
        let Value::String(text) = v else { continue };
        if let Some(var) = text.strip_prefix("$env://") {
            let value = std::env::var(var).map_err(|_| {
                format!("property \"{name}\": environment variable {var} is not set")
            })?;
            *text = value;
        } else if encrypted.contains(&name.as_str()) {
            *text = keyring.reveal(text);
        }
    }
    Ok(out)
}

/// Why a plugin name cannot be served.
fn missing(name: &str) -> String {
    if name.starts_with("serverless-") || name == "script" {
        format!(
            "plugin {name} runs Lua code, which Portico does not run; the resource is not served"
        )
    } else if is_known_plugin(name) {
        format!(
            "plugin {name} is not implemented by Portico; the resource is not served without it"
        )
    } else {
        format!("unknown plugin [{name}]")
    }
}

/// The plugins APISIX 3.x ships.
const KNOWN: &[&str] = &[
    "ai-aws-content-moderation",
    "ai-content-moderation",
    "ai-prompt-decorator",
    "ai-prompt-guard",
    "ai-prompt-template",
    "ai-proxy",
    "ai-proxy-multi",
    "ai-rag",
    "ai-rate-limiting",
    "ai-request-rewrite",
    "api-breaker",
    "attach-consumer-label",
    "authz-casbin",
    "authz-casdoor",
    "authz-keycloak",
    "aws-lambda",
    "azure-functions",
    "basic-auth",
    "batch-requests",
    "body-transformer",
    "brotli",
    "cas-auth",
    "chaitin-waf",
    "clickhouse-logger",
    "client-control",
    "consumer-restriction",
    "cors",
    "csrf",
    "datadog",
    "degraphql",
    "echo",
    "elasticsearch-logger",
    "error-log-logger",
    "example-plugin",
    "ext-plugin-post-req",
    "ext-plugin-post-resp",
    "ext-plugin-pre-req",
    "fault-injection",
    "file-logger",
    "forward-auth",
    "google-cloud-logging",
    "grpc-transcode",
    "grpc-web",
    "gzip",
    "hmac-auth",
    "http-dubbo",
    "http-logger",
    "inspect",
    "ip-restriction",
    "jwe-decrypt",
    "jwt-auth",
    "kafka-logger",
    "kafka-proxy",
    "key-auth",
    "ldap-auth",
    "limit-conn",
    "limit-count",
    "limit-req",
    "log-rotate",
    "loggly",
    "loki-logger",
    "mocking",
    "multi-auth",
    "node-status",
    "opa",
    "openfunction",
    "openid-connect",
    "opentelemetry",
    "openwhisk",
    "prometheus",
    "proxy-cache",
    "proxy-control",
    "proxy-mirror",
    "proxy-rewrite",
    "public-api",
    "real-ip",
    "redirect",
    "referer-restriction",
    "request-id",
    "request-validation",
    "response-rewrite",
    "rocketmq-logger",
    "server-info",
    "serverless-post-function",
    "serverless-pre-function",
    "skywalking",
    "skywalking-logger",
    "sls-logger",
    "splunk-hec-logging",
    "syslog",
    "tcp-logger",
    "tencent-cloud-cls",
    "traffic-split",
    "ua-restriction",
    "udp-logger",
    "uri-blocker",
    "wolf-rbac",
    "workflow",
    "zipkin",
];

/// Whether APISIX ships a plugin of this name (for messages).
pub fn is_known_plugin(name: &str) -> bool {
    KNOWN.binary_search(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_list_is_sorted_for_binary_search() {
        assert!(KNOWN.windows(2).all(|w| w[0] < w[1]));
        assert!(is_known_plugin("proxy-rewrite"));
        assert!(!is_known_plugin("proxy-rewrit"));
    }

    #[test]
    fn names_not_served_are_refused_with_why() {
        let r = Registry::builtin();
        let e = r
            .configure("nope", &serde_json::json!({}), Scope::Route)
            .unwrap_err();
        assert!(e.contains("unknown plugin [nope]"), "{e}");
        let e = r
            .configure("opa", &serde_json::json!({}), Scope::Route)
            .unwrap_err();
        assert!(e.contains("not implemented by Portico"), "{e}");
        let e = r
            .configure(
                "serverless-pre-function",
                &serde_json::json!({}),
                Scope::Route,
            )
            .unwrap_err();
        assert!(e.contains("Lua"), "{e}");
        let e = r
            .configure("cors", &serde_json::json!(1), Scope::Route)
            .unwrap_err();
        assert!(e.contains("plugin cors"), "{e}");
    }

    #[test]
    fn disabled_plugins_are_skipped() {
        let mut r = Registry::builtin();
        r.enable_only(&["key-auth".to_string()]).unwrap();
        assert!(r
            .configure("cors", &serde_json::json!({}), Scope::Route)
            .unwrap()
            .is_none());
        // Left out: skipped even though Portico has no such plugin; a typo stays an error.
        assert!(r
            .configure("prometheus", &serde_json::json!({}), Scope::GlobalRule)
            .unwrap()
            .is_none());
        assert!(r
            .configure("key-aut", &serde_json::json!({}), Scope::Route)
            .is_err());
        assert!(r
            .enable_only(&["opa".to_string()])
            .unwrap_err()
            .contains("does not implement"));
    }
}
