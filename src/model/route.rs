//! Routes: what a request must look like, and where it goes.

use serde_json::Value;

use super::fields::{failed, Obj};
use super::id::Id;
use super::plugins::Plugins;
use super::upstream::{Timeout, Upstream};
use crate::net::Cidr;
use crate::vars::Vars;

/// A set of HTTP methods; empty means any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Methods(u16);

const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];

impl Methods {
    fn bit(method: &str) -> Option<u16> {
        METHODS.iter().position(|m| *m == method).map(|i| 1 << i)
    }

    pub fn allows(self, method: &str) -> bool {
        self.0 == 0 || Methods::bit(method).is_some_and(|b| self.0 & b != 0)
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub id: Id,
    pub uris: Vec<String>,
    /// Lowercased; empty = not bound to a host (the service's hosts may apply).
    pub hosts: Vec<String>,
    pub remote_addrs: Vec<Cidr>,
    pub methods: Methods,
    pub priority: i64,
    pub vars: Option<Vars>,
    pub plugins: Plugins,
    pub plugin_config_id: Option<Id>,
    pub upstream: Option<Upstream>,
    pub upstream_id: Option<Id>,
    pub service_id: Option<Id>,
    pub enable_websocket: Option<bool>,
    pub timeout: Option<Timeout>,
    /// `status: 0` disables the route.
    pub enabled: bool,
    pub name: Option<String>,
}

pub(crate) fn parse_id(o: &Obj<'_>, fallback: Option<&str>) -> Result<Id, String> {
    match o.get("id") {
        Some(v) => Id::parse(v).map_err(|e| failed("id", e)),
        None => match fallback {
            Some(f) => Id::parse_str(f),
            None => Err("property \"id\" is required".into()),
        },
    }
}

pub(crate) fn parse_ref(o: &Obj<'_>, name: &str) -> Result<Option<Id>, String> {
    o.get(name)
        .map(|v| Id::parse(v).map_err(|e| failed(name, e)))
        .transpose()
}

/// Checks hosts as APISIX's schema does (`*.foo.com`, `foo.com`) and lowercases them.
pub(crate) fn parse_hosts(o: &Obj<'_>) -> Result<Vec<String>, String> {
    let hosts = o.one_or_many("host", "hosts")?.unwrap_or_default();
    hosts
        .into_iter()
        .map(|h| {
            let name = h.strip_prefix("*.").unwrap_or(&h);
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'))
                && !name.contains('*');
            if ok {
                Ok(h.to_ascii_lowercase())
            } else {
                Err(failed("host", format!("invalid host {h:?}")))
            }
        })
        .collect()
}

impl Route {
    pub fn parse(value: &Value, fallback_id: Option<&str>) -> Result<Route, String> {
        let o = Obj::new(value)?;
        for lua in ["filter_func", "script"] {
            if o.has(lua) {
                return Err(format!(
                    "property \"{lua}\" is Lua code, which Portico does not run; remove it"
                ));
            }
        }
        let id = parse_id(&o, fallback_id)?;
        let owner = format!("routes/{id}");
        let uris = o.one_or_many("uri", "uris")?.ok_or(
            "value should match only one schema, but matches none: \"uri\" or \"uris\" is required",
        )?;
        if uris.is_empty() {
            return Err(failed("uris", "expect array to have at least 1 items"));
        }
        for uri in &uris {
            if !uri.starts_with('/') && uri != "*" {
                return Err(failed("uri", format!("{uri:?} must start with /")));
            }
            if let Some(star) = uri.find('*') {
                if star != uri.len() - 1 {
                    return Err(failed(
                        "uri",
                        format!("{uri:?}: '*' is only allowed at the end"),
                    ));
                }
            }
        }
        let remote_addrs = o
            .one_or_many("remote_addr", "remote_addrs")?
            .unwrap_or_default()
            .iter()
            .map(|a| Cidr::parse(a).map_err(|e| failed("remote_addrs", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut methods = Methods::default();
        for m in o.strings("methods", true)?.unwrap_or_default() {
            let bit = Methods::bit(&m).ok_or_else(|| {
                failed("methods", format!("matches none of the enum values: {m:?}"))
            })?;
            methods.0 |= bit;
        }
        let vars = o
            .get("vars")
            .map(|v| Vars::parse(v).map_err(|e| failed("vars", e)))
            .transpose()?;
        let upstream = o
            .get("upstream")
            .map(|u| Upstream::parse(u, None).map_err(|e| failed("upstream", e)))
            .transpose()?;
        let status = o.int("status")?.unwrap_or(1);
        if status != 0 && status != 1 {
            return Err(failed(
                "status",
                format!("matches none of the enum values: {status}"),
            ));
        }
        Ok(Route {
            id,
            uris,
            hosts: parse_hosts(&o)?,
            remote_addrs,
            methods,
            priority: o.int("priority")?.unwrap_or(0),
            vars,
            plugins: Plugins::parse(o.get("plugins"), crate::plugin::Scope::Route, &owner)?,
            plugin_config_id: parse_ref(&o, "plugin_config_id")?,
            upstream,
            upstream_id: parse_ref(&o, "upstream_id")?,
            service_id: parse_ref(&o, "service_id")?,
            enable_websocket: o.bool("enable_websocket")?,
            timeout: Timeout::parse(&o)?,
            enabled: status == 1,
            name: o.str("name")?.map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_apisix_routes() {
        let r = Route::parse(
            &json!({"id": 1, "uri": "/a*", "host": "Foo.COM", "methods": ["GET"], "upstream": {"nodes": {"127.0.0.1:1": 1}}, "create_time": 1, "update_time": 2, "labels": {"a": "b"}}),
            None,
        )
        .unwrap();
        assert_eq!(r.id.as_str(), "1");
        assert_eq!(r.hosts, ["foo.com"]);
        assert!(r.methods.allows("GET") && !r.methods.allows("POST"));
        assert!(r.enabled);
        let e = Route::parse(&json!({"uri": "/", "uris": ["/"]}), Some("1")).unwrap_err();
        assert!(e.contains("only one"), "{e}");
        let e = Route::parse(&json!({"uri": "/", "methods": ["FETCH"]}), Some("1")).unwrap_err();
        assert!(e.contains("property \"methods\" validation failed"), "{e}");
        let e = Route::parse(
            &json!({"uri": "/", "filter_func": "function() end"}),
            Some("1"),
        )
        .unwrap_err();
        assert!(e.contains("Lua"), "{e}");
        let e = Route::parse(&json!({"uri": "/a*b"}), Some("1")).unwrap_err();
        assert!(e.contains("only allowed at the end"), "{e}");
        let r = Route::parse(&json!({"uris": ["/x", "/y"], "status": 0}), Some("r")).unwrap();
        assert!(!r.enabled);
    }
}
