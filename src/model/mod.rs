//! APISIX resources as Rust types: parsed from APISIX's JSON (as its Admin API, etcdctl or a
//! standalone YAML file write it) and validated like APISIX's schema, one item at a time.
//!
//! This is the buffer between the outside formats and the request path: routers and upstream
//! tables are compiled from these types, never from JSON.

pub mod checks;
mod fields;
mod id;
mod plugins;
mod resources;
mod route;
mod upstream;

pub use fields::kind_of;
pub use id::Id;
pub use plugins::Plugins;
pub use resources::{
    CertPair, ClientCa, Consumer, ConsumerGroup, Credential, GlobalRule, PluginConfig,
    PluginMetadata, Service, Ssl,
};
pub use route::{Methods, Route};
pub use upstream::{
    cert_key, BalancerKind, HashOn, KeepalivePool, Node, PassHost, Scheme, Timeout, Upstream,
    UpstreamTls,
};

use std::fmt;

/// The kinds of resource Portico serves, with their directory names under the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Route,
    Service,
    Upstream,
    PluginConfig,
    GlobalRule,
    Consumer,
    ConsumerGroup,
    /// A consumer's credential (`consumers/<username>/credentials/<id>`), id `username/id`.
    Credential,
    Ssl,
    /// A plugin's settings for the whole gateway (`plugin_metadata/<plugin>`, id the
    /// plugin's name): the loggers' `log_format`.
    PluginMetadata,
}

impl Kind {
    /// The kinds with their own top-level directory (credentials live under consumers).
    pub const ALL: [Kind; 9] = [
        Kind::Route,
        Kind::Service,
        Kind::Upstream,
        Kind::PluginConfig,
        Kind::GlobalRule,
        Kind::Consumer,
        Kind::ConsumerGroup,
        Kind::Ssl,
        Kind::PluginMetadata,
    ];

    /// The directory (and standalone YAML key) of this kind: `routes`, `services`, …
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Route => "routes",
            Kind::Service => "services",
            Kind::Upstream => "upstreams",
            Kind::PluginConfig => "plugin_configs",
            Kind::GlobalRule => "global_rules",
            Kind::Consumer => "consumers",
            Kind::ConsumerGroup => "consumer_groups",
            Kind::Credential => "credentials",
            Kind::Ssl => "ssls",
            Kind::PluginMetadata => "plugin_metadata",
        }
    }

    pub fn from_dir(dir: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.dir() == dir)
    }

    /// Singular name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Route => "route",
            Kind::Service => "service",
            Kind::Upstream => "upstream",
            Kind::PluginConfig => "plugin_config",
            Kind::GlobalRule => "global_rule",
            Kind::Consumer => "consumer",
            Kind::ConsumerGroup => "consumer_group",
            Kind::Credential => "credential",
            Kind::Ssl => "ssl",
            Kind::PluginMetadata => "plugin_metadata",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A resource that failed validation: which one, and what is wrong with it, in APISIX's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub kind: Kind,
    /// The id (or the position in a YAML array when there is no usable id).
    pub id: String,
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: invalid configuration: {}",
            self.kind, self.id, self.message
        )
    }
}

/// Parses resources of one kind from JSON values (each with the id its place gives it, if
/// any): every item is parsed or named as invalid (and logged), so one bad item never blocks
/// the rest.
pub fn parse_items<'a>(
    kind: Kind,
    items: impl IntoIterator<Item = (Option<String>, &'a serde_json::Value)>,
) -> Vec<Result<Resource, Invalid>> {
    items
        .into_iter()
        .map(|(fallback_id, value)| {
            Resource::parse(kind, value, fallback_id.as_deref()).map_err(|message| {
                let id = value
                    .get("id")
                    .or_else(|| value.get("username"))
                    .map(|v| v.to_string().trim_matches('"').to_string())
                    .or(fallback_id)
                    .unwrap_or_else(|| "(no id)".to_string());
                let invalid = Invalid { kind, id, message };
                log::error!("{invalid}");
                invalid
            })
        })
        .collect()
}

/// One validated resource of any kind.
#[derive(Debug, Clone)]
pub enum Resource {
    Route(Box<Route>),
    Service(Service),
    Upstream(Upstream),
    PluginConfig(PluginConfig),
    GlobalRule(GlobalRule),
    Consumer(Consumer),
    ConsumerGroup(ConsumerGroup),
    Credential(Credential),
    Ssl(Ssl),
    PluginMetadata(PluginMetadata),
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Route(_) => Kind::Route,
            Resource::Service(_) => Kind::Service,
            Resource::Upstream(_) => Kind::Upstream,
            Resource::PluginConfig(_) => Kind::PluginConfig,
            Resource::GlobalRule(_) => Kind::GlobalRule,
            Resource::Consumer(_) => Kind::Consumer,
            Resource::ConsumerGroup(_) => Kind::ConsumerGroup,
            Resource::Credential(_) => Kind::Credential,
            Resource::Ssl(_) => Kind::Ssl,
            Resource::PluginMetadata(_) => Kind::PluginMetadata,
        }
    }

    /// Parses and validates one resource of `kind` from APISIX's JSON. `fallback_id` is the id
    /// taken from the etcd key (or a YAML position) when the JSON has none.
    pub fn parse(
        kind: Kind,
        value: &serde_json::Value,
        fallback_id: Option<&str>,
    ) -> Result<Resource, String> {
        Ok(match kind {
            Kind::Route => Resource::Route(Box::new(Route::parse(value, fallback_id)?)),
            Kind::Service => Resource::Service(Service::parse(value, fallback_id)?),
            Kind::Upstream => {
                // Inline upstreams have none; a top-level one without an id cannot be used.
                let u = Upstream::parse(value, fallback_id)?;
                if u.id.is_none() {
                    return Err("property \"id\" is required".into());
                }
                Resource::Upstream(u)
            }
            Kind::PluginConfig => Resource::PluginConfig(PluginConfig::parse(value, fallback_id)?),
            Kind::GlobalRule => Resource::GlobalRule(GlobalRule::parse(value, fallback_id)?),
            Kind::Consumer => Resource::Consumer(Consumer::parse(value, fallback_id)?),
            Kind::ConsumerGroup => {
                Resource::ConsumerGroup(ConsumerGroup::parse(value, fallback_id)?)
            }
            Kind::Credential => Resource::Credential(Credential::parse(value, fallback_id)?),
            Kind::Ssl => Resource::Ssl(Ssl::parse(value, fallback_id)?),
            Kind::PluginMetadata => {
                Resource::PluginMetadata(PluginMetadata::parse(value, fallback_id)?)
            }
        })
    }
}
