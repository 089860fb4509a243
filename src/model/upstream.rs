//! Upstreams: where matched requests go.

use std::time::Duration;

use serde_json::Value;

use super::fields::{failed, kind_of, Obj};
use super::id::Id;

/// How a node is chosen. Only round robin is served for now; the others parse so that
/// APISIX's data loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BalancerKind {
    #[default]
    Roundrobin,
    Chash,
    Ewma,
    LeastConn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

impl Scheme {
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Https)
    }

    fn default_port(self) -> u16 {
        if self.is_tls() {
            443
        } else {
            80
        }
    }
}

/// Which `Host` header goes upstream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PassHost {
    /// The client's.
    #[default]
    Pass,
    /// The chosen node's `host[:port]`.
    Node,
    /// A fixed one.
    Rewrite(String),
}

/// connect/send/read timeouts; each may be fractional seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timeout {
    pub connect: Option<Duration>,
    pub send: Option<Duration>,
    pub read: Option<Duration>,
}

impl Timeout {
    pub fn parse(obj: &Obj<'_>) -> Result<Option<Timeout>, String> {
        let Some(t) = obj.object("timeout")? else {
            return Ok(None);
        };
        let secs = |name: &str| -> Result<Option<Duration>, String> {
            match t.number(name).map_err(|e| format!("timeout: {e}"))? {
                None => Ok(None),
                Some(s) if s > 0.0 && s.is_finite() && s < 1.0e9 => {
                    Ok(Some(Duration::from_secs_f64(s)))
                }
                Some(s) => Err(failed(
                    "timeout",
                    format!(
                        "property \"{name}\" validation failed: expected {s} to be greater than 0"
                    ),
                )),
            }
        };
        Ok(Some(Timeout {
            connect: secs("connect")?,
            send: secs("send")?,
            read: secs("read")?,
        }))
    }

    /// This timeout's values, falling back to `other`'s where unset.
    pub fn or(self, other: Option<Timeout>) -> Timeout {
        let other = other.unwrap_or_default();
        Timeout {
            connect: self.connect.or(other.connect),
            send: self.send.or(other.send),
            read: self.read.or(other.read),
        }
    }
}

/// One backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// IP address or host name (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// 0 = never picked.
    pub weight: u32,
    /// Higher priorities are used first.
    pub priority: i32,
}

impl Node {
    /// `host:port` (IPv6 bracketed), as the node is named in logs and `pass_host: node`.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What a `chash` upstream hashes (`hash_on`): APISIX's five sources of the key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HashOn {
    /// An nginx variable named by `key` (APISIX's default).
    #[default]
    Vars,
    /// The request header named by `key`.
    Header,
    /// The cookie named by `key`.
    Cookie,
    /// The consumer an auth plugin found (the client address without one).
    Consumer,
    /// `key` as a template of `$var`s (`$host-$uri`).
    VarsCombinations,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub id: Option<Id>,
    pub nodes: Vec<Node>,
    pub kind: BalancerKind,
    pub hash_on: HashOn,
    pub key: Option<String>,
    pub retries: Option<u32>,
    pub retry_timeout: Option<Duration>,
    pub timeout: Option<Timeout>,
    pub scheme: Scheme,
    pub pass_host: PassHost,
    /// Health checks (none: off).
    pub checks: super::checks::Checks,
    pub tls: UpstreamTls,
    pub keepalive_pool: KeepalivePool,
    pub name: Option<String>,
}

/// `tls` of an upstream: a client certificate for mTLS to the backend, and whether to verify
/// the backend's certificate (off by default, as in APISIX).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTls {
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    /// An ssl object holding the client certificate instead.
    pub client_cert_id: Option<Id>,
    pub verify: bool,
}

/// `keepalive_pool`: idle connections kept to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepalivePool {
    pub size: u32,
    pub idle_timeout: Duration,
    pub requests: u32,
}

impl Default for KeepalivePool {
    fn default() -> Self {
        KeepalivePool {
            size: 320,
            idle_timeout: Duration::from_secs(60),
            requests: 1000,
        }
    }
}

fn parse_tls(o: &Obj<'_>) -> Result<UpstreamTls, String> {
    let Some(t) = o.object("tls")? else {
        return Ok(UpstreamTls::default());
    };
    let at = |e: String| failed("tls", e);
    let tls = UpstreamTls {
        client_cert: t.str("client_cert").map_err(at)?.map(str::to_string),
        // APISIX's Admin API stores it encrypted with the keyring.
        client_key: t
            .str("client_key")
            .map_err(at)?
            .map(|k| super::resources::reveal_key("tls.client_key", k))
            .transpose()
            .map_err(at)?,
        client_cert_id: t
            .get("client_cert_id")
            .map(|v| Id::parse(v).map_err(|e| failed("tls", e)))
            .transpose()?,
        verify: t.bool("verify").map_err(at)?.unwrap_or(false),
    };
    match (&tls.client_cert, &tls.client_key) {
        (Some(_), None) | (None, Some(_)) => {
            return Err(failed("tls", "client_cert and client_key go together"))
        }
        (Some(cert), Some(key)) if tls.client_cert_id.is_none() => {
            cert_key(cert, key).map_err(|e| failed("tls", e))?;
        }
        (Some(_), Some(_)) if tls.client_cert_id.is_some() => {
            return Err(failed(
                "tls",
                "client_cert_id and client_cert are exclusive",
            ))
        }
        _ => {}
    }
    Ok(tls)
}

/// A certificate chain and private key from PEM text, ready for Pingora's TLS client.
pub fn cert_key(cert: &str, key: &str) -> Result<pingora_core::utils::tls::CertKey, String> {
    use pingora_core::tls::{pkey::PKey, x509::X509};
    let certs = X509::stack_from_pem(cert.as_bytes())
        .map_err(|e| format!("client_cert is not a valid PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("client_cert holds no certificate".into());
    }
    let key = PKey::private_key_from_pem(key.as_bytes())
        .map_err(|e| format!("client_key is not a valid PEM private key: {e}"))?;
    Ok(pingora_core::utils::tls::CertKey::new(certs, key))
}

fn parse_pool(o: &Obj<'_>) -> Result<KeepalivePool, String> {
    let Some(p) = o.object("keepalive_pool")? else {
        return Ok(KeepalivePool::default());
    };
    let d = KeepalivePool::default();
    let at = |e: String| failed("keepalive_pool", e);
    let size = p.int("size").map_err(at)?.unwrap_or(d.size as i64);
    let requests = p.int("requests").map_err(at)?.unwrap_or(d.requests as i64);
    let idle = p.number("idle_timeout").map_err(at)?.unwrap_or(60.0);
    if size < 1 || requests < 1 || !(idle >= 0.0 && idle.is_finite()) {
        return Err(failed(
            "keepalive_pool",
            "size and requests must be at least 1, idle_timeout at least 0",
        ));
    }
    Ok(KeepalivePool {
        size: size.min(u32::MAX as i64) as u32,
        idle_timeout: Duration::from_secs_f64(idle.min(1.0e6)),
        requests: requests.min(u32::MAX as i64) as u32,
    })
}

/// Splits `host:port`, `[v6]:port`, `host` (default port).
fn split_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let bad = || failed("nodes", format!("invalid node address {s:?}"));
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => default_port,
            p => p.strip_prefix(':').and_then(nonzero_port).ok_or_else(bad)?,
        };
        return Ok((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, _)) if h.contains(':') => Ok((s.to_string(), default_port)), // bare IPv6
        Some((h, p)) => Ok((h.to_string(), nonzero_port(p).ok_or_else(bad)?)),
        None => Ok((s.to_string(), default_port)),
    }
}

/// A port from 1 to 65535, as the array form of `nodes` requires.
fn nonzero_port(p: &str) -> Option<u16> {
    p.parse().ok().filter(|p| *p > 0)
}

fn check_host(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && (host.parse::<std::net::IpAddr>().is_ok()
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    if ok {
        Ok(())
    } else {
        Err(failed("nodes", format!("invalid host {host:?}")))
    }
}

/// The largest node weight.
const MAX_WEIGHT: u64 = 100_000_000;

fn weight_of(v: &Value, what: &str) -> Result<u32, String> {
    v.as_u64()
        .filter(|w| *w <= MAX_WEIGHT)
        .map(|w| w as u32)
        .ok_or_else(|| {
            failed(
                "nodes",
                format!("{what}: weight must be an integer from 0 to {MAX_WEIGHT}, got {v}"),
            )
        })
}

fn parse_nodes(value: &Value, scheme: Scheme) -> Result<Vec<Node>, String> {
    let default_port = scheme.default_port();
    let mut nodes = Vec::new();
    match value {
        // {"127.0.0.1:80": 1}
        Value::Object(map) => {
            for (addr, weight) in map {
                let (host, port) = split_host_port(addr, default_port)?;
                check_host(&host)?;
                nodes.push(Node {
                    host,
                    port,
                    weight: weight_of(weight, addr)?,
                    priority: 0,
                });
            }
        }
        // [{"host": "127.0.0.1", "port": 80, "weight": 1, "priority": 0}]
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let o = Obj::new(item).map_err(|e| failed("nodes", format!("node {i}: {e}")))?;
                let at = |e: String| failed("nodes", format!("node {i}: {e}"));
                let host = o.str("host").map_err(at)?.ok_or_else(|| {
                    failed("nodes", format!("node {i}: property \"host\" is required"))
                })?;
                let (host, port_in_host) = split_host_port(host, default_port)?;
                check_host(&host)?;
                let port = match o.int("port").map_err(at)? {
                    None => port_in_host,
                    Some(p) if (1..=65535).contains(&p) => p as u16,
                    Some(p) => {
                        return Err(failed(
                            "nodes",
                            format!("node {i}: port {p} is out of range"),
                        ))
                    }
                };
                let weight = match o.get("weight") {
                    None => {
                        return Err(failed(
                            "nodes",
                            format!("node {i}: property \"weight\" is required"),
                        ))
                    }
                    Some(w) => weight_of(w, &format!("node {i}"))?,
                };
                let priority = o.int("priority").map_err(at)?.unwrap_or(0);
                nodes.push(Node {
                    host,
                    port,
                    weight,
                    priority: priority.clamp(i32::MIN as i64, i32::MAX as i64) as i32,
                });
            }
        }
        other => {
            return Err(failed(
                "nodes",
                format!(
                    "wrong type: expected object or array, got {}",
                    kind_of(other)
                ),
            ))
        }
    }
    Ok(nodes)
}

impl Upstream {
    pub fn parse(value: &Value, fallback_id: Option<&str>) -> Result<Upstream, String> {
        let o = Obj::new(value)?;
        let id = match o.get("id") {
            Some(v) => Some(Id::parse(v).map_err(|e| failed("id", e))?),
            None => fallback_id.map(Id::parse_str).transpose()?,
        };
        let scheme = match o.str("scheme")? {
            None | Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            // Fail closed: proxied as HTTP/1.1 they would break every gRPC call.
            Some(g @ ("grpc" | "grpcs")) => {
                return Err(failed(
                    "scheme",
                    format!(
                        "{g:?} is not supported by Portico yet (gRPC needs HTTP/2 to the upstream)"
                    ),
                ))
            }
            Some(other) => {
                return Err(failed(
                    "scheme",
                    format!("matches none of the enum values: {other:?}"),
                ))
            }
        };
        let kind = match o.str("type")? {
            None | Some("roundrobin") => BalancerKind::Roundrobin,
            Some("chash") => BalancerKind::Chash,
            Some("ewma") => BalancerKind::Ewma,
            Some("least_conn") => BalancerKind::LeastConn,
            Some(other) => {
                return Err(failed(
                    "type",
                    format!("matches none of the enum values: {other:?}"),
                ))
            }
        };
        let nodes = match o.get("nodes") {
            Some(v) => parse_nodes(v, scheme)?,
            None if o.has("service_name") || o.has("discovery_type") => {
                return Err(
                    "service discovery (service_name/discovery_type) is not supported".into(),
                )
            }
            None => return Err("property \"nodes\" is required".into()),
        };
        let hash_on = match o.str("hash_on")? {
            None | Some("vars") => HashOn::Vars,
            Some("header") => HashOn::Header,
            Some("cookie") => HashOn::Cookie,
            Some("consumer") => HashOn::Consumer,
            Some("vars_combinations") => HashOn::VarsCombinations,
            Some(h) => {
                return Err(failed(
                    "hash_on",
                    format!("matches none of the enum values: {h:?}"),
                ))
            }
        };
        let key = o.str("key")?.map(str::to_string);
        if kind == BalancerKind::Chash && key.is_none() && hash_on != HashOn::Consumer {
            return Err("property \"key\" is required when type is chash".into());
        }
        let retries = match o.int("retries")? {
            None => None,
            Some(r) if r >= 0 => Some(r.min(u32::MAX as i64) as u32),
            Some(r) => return Err(failed("retries", format!("expected {r} to be at least 0"))),
        };
        let retry_timeout = match o.number("retry_timeout")? {
            None => None,
            Some(s) if s >= 0.0 && s.is_finite() && s < 1.0e9 => Some(Duration::from_secs_f64(s)),
            Some(s) => {
                return Err(failed(
                    "retry_timeout",
                    format!("expected {s} to be at least 0"),
                ))
            }
        };
        let pass_host = match o.str("pass_host")? {
            None | Some("pass") => PassHost::Pass,
            Some("node") => PassHost::Node,
            Some("rewrite") => match o.str("upstream_host")? {
                Some(h) if !h.is_empty() => PassHost::Rewrite(h.to_string()),
                _ => {
                    return Err(
                        "property \"upstream_host\" is required when pass_host is rewrite".into(),
                    )
                }
            },
            Some(other) => {
                return Err(failed(
                    "pass_host",
                    format!("matches none of the enum values: {other:?}"),
                ))
            }
        };
        Ok(Upstream {
            id,
            nodes,
            kind,
            hash_on,
            key,
            retries,
            retry_timeout,
            timeout: Timeout::parse(&o)?,
            scheme,
            pass_host,
            checks: match o.get("checks") {
                None | Some(Value::Null) => super::checks::Checks::default(),
                Some(c) => super::checks::Checks::parse(c)?,
            },
            tls: parse_tls(&o)?,
            keepalive_pool: parse_pool(&o)?,
            name: o.str("name")?.map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_upstreams_are_refused_not_proxied_as_http1() {
        for scheme in ["grpc", "grpcs"] {
            let e = Upstream::parse(
                &json!({"scheme": scheme, "nodes": {"127.0.0.1:50051": 1}}),
                None,
            )
            .err()
            .unwrap();
            assert!(e.contains("scheme") && e.contains("not supported"), "{e}");
        }
    }
    use serde_json::json;

    #[test]
    fn both_node_forms() {
        let u = Upstream::parse(
            &json!({"nodes": {"127.0.0.1:8080": 2, "[::1]:81": 1, "h.example": 0}}),
            None,
        )
        .unwrap();
        let mut got: Vec<_> = u
            .nodes
            .iter()
            .map(|n| (n.host.as_str(), n.port, n.weight))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [("127.0.0.1", 8080, 2), ("::1", 81, 1), ("h.example", 80, 0)]
        );
        let u = Upstream::parse(
            &json!({"scheme": "https", "nodes": [{"host": "a.example", "weight": 1, "priority": -1}, {"host": "10.0.0.1", "port": 9000, "weight": 3}]}),
            Some("7"),
        )
        .unwrap();
        assert_eq!(u.id.unwrap().as_str(), "7");
        assert_eq!((u.nodes[0].port, u.nodes[0].priority), (443, -1));
        assert_eq!(u.nodes[1].port, 9000);
    }

    #[test]
    fn errors_name_the_property() {
        let e = Upstream::parse(&json!({"nodes": "x"}), None).unwrap_err();
        assert!(e.contains("property \"nodes\" validation failed"), "{e}");
        let e = Upstream::parse(&json!({}), None).unwrap_err();
        assert!(e.contains("\"nodes\" is required"), "{e}");
        let e = Upstream::parse(&json!({"nodes": {}, "pass_host": "rewrite"}), None).unwrap_err();
        assert!(e.contains("upstream_host"), "{e}");
        let e =
            Upstream::parse(&json!({"nodes": {}, "timeout": {"connect": -1}}), None).unwrap_err();
        assert!(e.contains("timeout"), "{e}");
        let t = Upstream::parse(
            &json!({"nodes": {}, "timeout": {"connect": 0.5, "read": 3}}),
            None,
        )
        .unwrap();
        assert_eq!(t.timeout.unwrap().connect, Some(Duration::from_millis(500)));
        // Port 0 is refused in the map form as in the array form.
        assert!(Upstream::parse(&json!({"nodes": {"127.0.0.1:0": 1}}), None).is_err());
        assert!(Upstream::parse(&json!({"nodes": {"[::1]:0": 1}}), None).is_err());
        // A top-level upstream needs an id (an inline one does not).
        let e = crate::model::Resource::parse(
            crate::model::Kind::Upstream,
            &json!({"nodes": {}}),
            None,
        )
        .err()
        .unwrap_or_default();
        assert!(e.contains("\"id\" is required"), "{e}");
    }
}
