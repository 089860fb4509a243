//! `real-ip`: the client address from a header or argument set by a trusted proxy in front.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::ip_restriction::cidrs;
use super::{parse_settings, Cx, Factory, Flow, Plugin};
use crate::net::Cidr;

pub struct RealIpFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    source: String,
    trusted_addresses: Option<Vec<String>>,
    #[serde(default)]
    recursive: bool,
}

struct RealIp {
    source: String,
    trusted: Option<Vec<Cidr>>,
    recursive: bool,
}

impl Factory for RealIpFactory {
    fn name(&self) -> &'static str {
        "real-ip"
    }

    fn priority(&self) -> i32 {
        23000
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        if s.source.is_empty() {
            return Err(
                "property \"source\" validation failed: string too short, expected at least 1"
                    .into(),
            );
        }
        Ok(Arc::new(RealIp {
            source: s.source,
            trusted: s
                .trusted_addresses
                .as_deref()
                .map(|t| cidrs("trusted_addresses", t))
                .transpose()?,
            recursive: s.recursive,
        }))
    }
}

/// `ip`, `ip:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
fn parse_addr(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        if !after.is_empty() {
            let port: u32 = after.strip_prefix(':')?.parse().ok()?;
            if !(1..=65535).contains(&port) {
                return None;
            }
        }
        return ip.parse().ok();
    }
    let (ip, port) = s.rsplit_once(':')?;
    let port: u32 = port.parse().ok()?;
    if !(1..=65535).contains(&port) {
        return None;
    }
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

impl RealIp {
    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted
            .as_ref()
            .is_some_and(|t| t.iter().any(|c| c.contains(ip)))
    }
}

impl Plugin for RealIp {
    fn rewrite(&self, cx: &mut Cx<'_>) -> Flow {
        if self.trusted.is_some() && !cx.state.client_ip.is_some_and(|ip| self.trusted(ip)) {
            return Flow::Continue;
        }
        let value = if self.source == "http_x_forwarded_for" {
            // The last X-Forwarded-For line, as nginx's variable gives it.
            cx.req()
                .headers
                .get_all("X-Forwarded-For")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .next_back()
                .map(|line| {
                    let parts: Vec<&str> = line.split(',').map(str::trim).collect();
                    if self.recursive && self.trusted.is_some() {
                        parts
                            .iter()
                            .rev()
                            .find(|p| !parse_addr(p).is_some_and(|ip| self.trusted(ip)))
                            .or(parts.first())
                            .map(|s| s.to_string())
                            .unwrap_or_default()
                    } else {
                        parts.last().map(|s| s.to_string()).unwrap_or_default()
                    }
                })
        } else {
            cx.var(&self.source)
        };
        match value.as_deref().map(parse_addr) {
            Some(Some(ip)) => cx.state.client_ip = Some(ip),
            Some(None) => log::warn!("real-ip: bad address {:?} in {}", value, self.source),
            None => log::debug!("real-ip: missing real address in {}", self.source),
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("1.1.1.1:80"), "1.1.1.1".parse().ok());
        assert_eq!(parse_addr("[::2]:80"), "::2".parse().ok());
        assert_eq!(parse_addr("::2"), "::2".parse().ok());
        assert_eq!(parse_addr("1.1.1.1.1"), None);
        assert_eq!(parse_addr("1.1.1.1:65536"), None);
    }
}
