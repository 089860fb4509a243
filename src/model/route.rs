//! Routes: what a request must look like, and where it goes.

use std::net::IpAddr;

use serde_json::Value;

use super::fields::{failed, Obj};
use super::id::Id;
use super::plugins::Plugins;
use super::upstream::{Timeout, Upstream};
use crate::router::vars::Vars;

/// An IPv4 or IPv6 network (`10.0.0.0/8`, `::1`, `2001:db8::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("invalid IP address {s:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("invalid prefix length in {s:?}"))?,
        };
        Ok(Cidr { addr, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 client address matches IPv4 networks.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.bits as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.bits as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

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

    pub fn is_any(self) -> bool {
        self.0 == 0
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
            plugins: Plugins::parse(o.get("plugins"))?,
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
    fn cidrs() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.0.0.1".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }

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
