//! Endpoint addresses and their health: round robin over the healthy ones.

use parking_lot::Mutex;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::error::{Error, Result};
use super::options::HealthOptions;

const DEFAULT_PORT: u16 = 2379;

/// One parsed `scheme://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    /// Host without brackets (`::1`, `127.0.0.1`, `etcd.example`).
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses `http://host[:port]` or `https://host[:port]`, IPv6 in brackets.
    pub fn parse(s: &str) -> Result<Endpoint> {
        let bad = |why: &str| Error::Config(format!("endpoint {s:?}: {why}"));
        let (tls, rest) = if let Some(rest) = s.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = s.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Err(bad("has no host"));
        }
        if rest.contains('/') {
            return Err(bad("must not have a path"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("IPv6 address without closing ']'"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address between brackets"));
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
            };
            (host, port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err(bad("IPv6 addresses must be written in brackets"))
                }
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("port must be a number from 1 to 65535"))?,
        };
        Ok(Endpoint {
            tls,
            host: host.to_string(),
            port,
        })
    }

    /// The host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// `host:port` as it goes in a `Host` header (IPv6 bracketed).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority())
    }
}

/// Failure bookkeeping for one endpoint.
#[derive(Debug, Default)]
struct Health {
    fails: AtomicU32,
    down_until: Mutex<Option<Instant>>,
}

/// The endpoints of one client, with round robin from a random start over the healthy ones.
#[derive(Debug)]
pub struct EndpointSet {
    endpoints: Vec<Endpoint>,
    health: Vec<Health>,
    next: AtomicUsize,
    options: HealthOptions,
}

impl EndpointSet {
    pub fn new(endpoints: Vec<Endpoint>, options: HealthOptions) -> Self {
        let start = if endpoints.is_empty() {
            0
        } else {
            rand::random::<usize>() % endpoints.len()
        };
        EndpointSet {
            health: endpoints.iter().map(|_| Health::default()).collect(),
            endpoints,
            next: AtomicUsize::new(start),
            options,
        }
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn get(&self, index: usize) -> &Endpoint {
        &self.endpoints[index]
    }

    pub fn retry(&self) -> bool {
        self.options.retry
    }

    fn is_healthy(&self, index: usize, now: Instant) -> bool {
        let mut down = self.health[index].down_until.lock();
        match *down {
            Some(until) if until > now => false,
            Some(_) => {
                // The penalty is over: give it a fresh start.
                *down = None;
                self.health[index].fails.store(0, Ordering::Relaxed);
                true
            }
            None => true,
        }
    }

    /// The next healthy endpoint in round-robin order, skipping the ones in `tried`.
    pub fn pick(&self, tried: &[usize]) -> Result<usize> {
        let n = self.endpoints.len();
        let now = Instant::now();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let index = (start + i) % n;
            if !tried.contains(&index) && self.is_healthy(index, now) {
                return Ok(index);
            }
        }
        Err(Error::NoHealthyEndpoint {
            endpoints: self.endpoints.iter().map(|e| e.to_string()).collect(),
        })
    }

    /// Counts a failure; after `max_fails` in a row the endpoint is skipped for `fail_timeout`.
    pub fn report_failure(&self, index: usize, why: &Error) {
        let fails = self.health[index].fails.fetch_add(1, Ordering::Relaxed) + 1;
        if fails >= self.options.max_fails.max(1) {
            // A fail timeout too long for the clock keeps the endpoint down for good.
            let until = Instant::now()
                .checked_add(self.options.fail_timeout)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
            *self.health[index].down_until.lock() = Some(until);
            log::warn!(
                "etcd endpoint {} marked unhealthy for {:?} after {fails} failure(s): {why}",
                self.endpoints[index],
                self.options.fail_timeout
            );
        }
    }

    pub fn report_success(&self, index: usize) {
        if self.health[index].fails.load(Ordering::Relaxed) != 0 {
            self.health[index].fails.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:2379").unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (false, "127.0.0.1", 2379));
        let e = Endpoint::parse("https://etcd.example").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port),
            (true, "etcd.example", 2379)
        );
        let e = Endpoint::parse("http://[::1]:4001/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 4001));
        assert_eq!(e.to_string(), "http://[::1]:4001");
        let e = Endpoint::parse("http://[fe80::1]").unwrap();
        assert_eq!(e.port, 2379);
        for bad in [
            "127.0.0.1:2379",
            "http://",
            "http://::1:2379",
            "http://[::1",
            "http://h:0",
            "http://h:x",
            "http://h:2379/v3",
            "http://[zz]:1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn skips_unhealthy_until_timeout() {
        let eps = vec![
            Endpoint::parse("http://a:1").unwrap(),
            Endpoint::parse("http://b:1").unwrap(),
        ];
        let set = EndpointSet::new(
            eps,
            HealthOptions {
                fail_timeout: Duration::from_millis(50),
                max_fails: 2,
                retry: true,
            },
        );
        let err = Error::EmptyKey;
        set.report_failure(0, &err);
        // One failure is below max_fails: still picked.
        assert!((0..4).any(|_| set.pick(&[]).unwrap() == 0));
        set.report_failure(0, &err);
        assert!((0..4).all(|_| set.pick(&[]).unwrap() == 1));
        set.report_failure(1, &err);
        set.report_failure(1, &err);
        assert!(matches!(
            set.pick(&[]),
            Err(Error::NoHealthyEndpoint { .. })
        ));
        std::thread::sleep(Duration::from_millis(60));
        assert!(set.pick(&[]).is_ok());
        assert_eq!(set.pick(&[0, 1]).ok(), None);
    }
}
