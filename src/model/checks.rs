//! An upstream's `checks`: APISIX's active probes and passive thresholds, parsed once with
//! APISIX's defaults and limits, every field checked (a misspelled probe `type` is an error
//! naming it, never a silent HTTP probe).

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// When a node changes state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    pub healthy_statuses: Vec<u16>,
    pub successes: u32,
    pub unhealthy_statuses: Vec<u16>,
    pub http_failures: u32,
    pub tcp_failures: u32,
    pub timeouts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Http,
    Https,
    Tcp,
}

/// `checks.active`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCheck {
    pub kind: ProbeKind,
    pub http_path: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub timeout: Duration,
    pub concurrency: usize,
    pub req_headers: Vec<String>,
    pub healthy_interval: Duration,
    pub unhealthy_interval: Duration,
    pub thresholds: Thresholds,
}

/// The checks of one upstream (none: both off).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checks {
    pub active: Option<ActiveCheck>,
    pub passive: Option<Thresholds>,
}

const ACTIVE_HEALTHY: &[u16] = &[200, 302];
const ACTIVE_UNHEALTHY: &[u16] = &[429, 404, 500, 501, 502, 503, 504, 505];
const PASSIVE_HEALTHY: &[u16] = &[
    200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 306, 307, 308,
];
const PASSIVE_UNHEALTHY: &[u16] = &[429, 500, 503];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChecks {
    active: Option<RawActive>,
    passive: Option<RawPassive>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActive {
    #[serde(rename = "type")]
    kind: Option<ProbeKind>,
    timeout: Option<f64>,
    concurrency: Option<u64>,
    host: Option<String>,
    port: Option<u64>,
    http_path: Option<String>,
    /// Only `false`: probes check liveness, not identity.
    https_verify_certificate: Option<bool>,
    req_headers: Option<Vec<String>>,
    healthy: Option<RawSide>,
    unhealthy: Option<RawSide>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPassive {
    #[serde(rename = "type")]
    #[allow(dead_code)]
    kind: Option<ProbeKind>,
    healthy: Option<RawSide>,
    unhealthy: Option<RawSide>,
}

/// `healthy` or `unhealthy` (which fields each may have is checked by [`side`]).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSide {
    interval: Option<f64>,
    http_statuses: Option<Vec<u64>>,
    successes: Option<u64>,
    http_failures: Option<u64>,
    tcp_failures: Option<u64>,
    timeouts: Option<u64>,
}

fn failed(field: &str, why: impl std::fmt::Display) -> String {
    super::fields::failed(&format!("checks.{field}"), why)
}

fn statuses(field: &str, v: &Option<Vec<u64>>, default: &[u16]) -> Result<Vec<u16>, String> {
    let Some(list) = v else {
        return Ok(default.to_vec());
    };
    if list.is_empty() {
        return Err(failed(field, "expect array to have at least 1 items"));
    }
    let mut out = Vec::with_capacity(list.len());
    for s in list {
        match u16::try_from(*s) {
            Ok(s) if (200..=599).contains(&s) => {
                if out.contains(&s) {
                    return Err(failed(
                        field,
                        "expected unique items but items are duplicated",
                    ));
                }
                out.push(s);
            }
            _ => {
                return Err(failed(
                    field,
                    format!("{s} is not a status from 200 to 599"),
                ))
            }
        }
    }
    Ok(out)
}

fn count(field: &str, v: Option<u64>, min: u64, default: u32) -> Result<u32, String> {
    match v {
        None => Ok(default),
        Some(n) if (min..=254).contains(&n) => Ok(n as u32),
        Some(n) => Err(failed(field, format!("{n} is not from {min} to 254"))),
    }
}

fn seconds(field: &str, v: Option<f64>, min: f64, default: f64) -> Result<Duration, String> {
    let s = v.unwrap_or(default);
    if !s.is_finite() || s < min || s > 86_400.0 {
        return Err(failed(field, format!("{s} is not from {min} to 86400")));
    }
    Ok(Duration::from_secs_f64(s))
}

impl Checks {
    /// Parses `checks` with APISIX's schema, or says which field is wrong.
    pub fn parse(value: &Value) -> Result<Checks, String> {
        let raw: RawChecks = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." { String::new() } else { path };
            if at.is_empty() {
                super::fields::failed("checks", e.inner())
            } else {
                failed(&at, e.inner())
            }
        })?;
        if raw.passive.is_some() && raw.active.is_none() {
            return Err(super::fields::failed(
                "checks",
                "passive checks need active checks too (nothing else brings a node back)",
            ));
        }
        let active = raw.active.map(active).transpose()?;
        let passive = raw.passive.map(passive).transpose()?;
        Ok(Checks { active, passive })
    }
}

fn active(a: RawActive) -> Result<ActiveCheck, String> {
    let h = a.healthy.unwrap_or_default();
    let u = a.unhealthy.unwrap_or_default();
    for (field, bad) in [
        ("active.healthy.http_failures", h.http_failures.is_some()),
        ("active.healthy.tcp_failures", h.tcp_failures.is_some()),
        ("active.healthy.timeouts", h.timeouts.is_some()),
        ("active.unhealthy.successes", u.successes.is_some()),
    ] {
        if bad {
            return Err(failed(field, "additional properties forbidden"));
        }
    }
    let port = match a.port {
        None => None,
        Some(p) => match u16::try_from(p) {
            Ok(p) if p >= 1 => Some(p),
            _ => return Err(failed("active.port", format!("{p} is not from 1 to 65535"))),
        },
    };
    let concurrency = match a.concurrency {
        None => 10,
        Some(c) if (1..=1000).contains(&c) => c as usize,
        Some(c) => {
            return Err(failed(
                "active.concurrency",
                format!("{c} is not from 1 to 1000"),
            ))
        }
    };
    if a.https_verify_certificate == Some(true) {
        return Err(failed(
            "active.https_verify_certificate",
            "Portico's probes do not verify certificates: set false or leave it out",
        ));
    }
    if a.req_headers.as_ref().is_some_and(Vec::is_empty) {
        return Err(failed(
            "active.req_headers",
            "expect array to have at least 1 items",
        ));
    }
    Ok(ActiveCheck {
        kind: a.kind.unwrap_or(ProbeKind::Http),
        http_path: a.http_path.unwrap_or_else(|| "/".into()),
        host: a.host,
        port,
        timeout: seconds("active.timeout", a.timeout, 0.001, 1.0)?,
        concurrency,
        req_headers: a.req_headers.unwrap_or_default(),
        // APISIX takes whole seconds from 1; fractions are Portico's (tests, fast failover).
        healthy_interval: seconds("active.healthy.interval", h.interval, 0.01, 1.0)?,
        unhealthy_interval: seconds("active.unhealthy.interval", u.interval, 0.01, 1.0)?,
        thresholds: Thresholds {
            healthy_statuses: statuses(
                "active.healthy.http_statuses",
                &h.http_statuses,
                ACTIVE_HEALTHY,
            )?,
            successes: count("active.healthy.successes", h.successes, 1, 2)?,
            unhealthy_statuses: statuses(
                "active.unhealthy.http_statuses",
                &u.http_statuses,
                ACTIVE_UNHEALTHY,
            )?,
            http_failures: count("active.unhealthy.http_failures", u.http_failures, 1, 5)?,
            tcp_failures: count("active.unhealthy.tcp_failures", u.tcp_failures, 1, 2)?,
            timeouts: count("active.unhealthy.timeouts", u.timeouts, 1, 3)?,
        },
    })
}

fn passive(p: RawPassive) -> Result<Thresholds, String> {
    let h = p.healthy.unwrap_or_default();
    let u = p.unhealthy.unwrap_or_default();
    for (field, bad) in [
        ("passive.healthy.interval", h.interval.is_some()),
        ("passive.healthy.http_failures", h.http_failures.is_some()),
        ("passive.healthy.tcp_failures", h.tcp_failures.is_some()),
        ("passive.healthy.timeouts", h.timeouts.is_some()),
        ("passive.unhealthy.interval", u.interval.is_some()),
        ("passive.unhealthy.successes", u.successes.is_some()),
    ] {
        if bad {
            return Err(failed(field, "additional properties forbidden"));
        }
    }
    Ok(Thresholds {
        healthy_statuses: statuses(
            "passive.healthy.http_statuses",
            &h.http_statuses,
            PASSIVE_HEALTHY,
        )?,
        successes: count("passive.healthy.successes", h.successes, 0, 5)?,
        unhealthy_statuses: statuses(
            "passive.unhealthy.http_statuses",
            &u.http_statuses,
            PASSIVE_UNHEALTHY,
        )?,
        http_failures: count("passive.unhealthy.http_failures", u.http_failures, 0, 5)?,
        tcp_failures: count("passive.unhealthy.tcp_failures", u.tcp_failures, 0, 2)?,
        timeouts: count("passive.unhealthy.timeouts", u.timeouts, 0, 7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        Checks::parse(&v).unwrap_err()
    }

    #[test]
    fn apisix_defaults() {
        let c = Checks::parse(&json!({"active": {}, "passive": {}})).unwrap();
        let a = c.active.unwrap();
        assert_eq!(a.kind, ProbeKind::Http);
        assert_eq!(a.http_path, "/");
        assert_eq!(a.timeout, Duration::from_secs(1));
        assert_eq!(a.concurrency, 10);
        assert_eq!(a.thresholds.healthy_statuses, [200, 302]);
        assert_eq!(
            (
                a.thresholds.successes,
                a.thresholds.http_failures,
                a.thresholds.tcp_failures,
                a.thresholds.timeouts
            ),
            (2, 5, 2, 3)
        );
        let p = c.passive.unwrap();
        assert_eq!(p.unhealthy_statuses, [429, 500, 503]);
        assert_eq!((p.successes, p.timeouts), (5, 7));
        assert_eq!(Checks::parse(&json!({})).unwrap(), Checks::default());
    }

    #[test]
    fn every_field_is_checked_by_name() {
        assert!(err(json!({"active": {"type": "htpp"}})).contains("checks.active.type"));
        assert!(err(json!({"active": {"tyep": "http"}})).contains("tyep"));
        assert!(err(json!({"active": {"healthy": {"successes": 0}}}))
            .contains("checks.active.healthy.successes"));
        assert!(
            err(json!({"active": {"unhealthy": {"http_statuses": [99]}}}))
                .contains("checks.active.unhealthy.http_statuses")
        );
        assert!(
            err(json!({"active": {"healthy": {"http_statuses": [200, 200]}}}))
                .contains("duplicated")
        );
        assert!(err(json!({"active": {"port": 70000}})).contains("checks.active.port"));
        assert!(err(json!({"active": {"healthy": {"interval": 0.001}}}))
            .contains("checks.active.healthy.interval"));
        assert!(err(json!({"active": {"timeout": "1"}})).contains("checks.active.timeout"));
        assert!(
            err(json!({"active": {}, "passive": {"healthy": {"interval": 1}}}))
                .contains("checks.passive.healthy.interval")
        );
        assert!(err(json!({"passive": {}})).contains("need active checks"));
        assert!(err(json!({"active": 1})).contains("checks.active"));
        assert!(err(json!({"active": {"req_headers": []}})).contains("req_headers"));
        assert!(err(json!({"active": {"https_verify_certificate": true}}))
            .contains("checks.active.https_verify_certificate"));
        assert!(Checks::parse(&json!({"active": {"https_verify_certificate": false}})).is_ok());
    }
}
