//! The gateway's own settings (`conf/config.yaml`) and the standalone resource file
//! (`conf/apisix.yaml`).

pub mod standalone;

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The largest number of seconds a timeout in config.yaml may take (about 11 days).
const MAX_SECONDS: f64 = 1.0e6;

/// `conf/config.yaml`. Every key is documented in the shipped file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub proxy: ProxyConfig,
    #[serde(default)]
    pub status: StatusConfig,
    pub config: SourceConfig,
    /// Needed with `config.provider: etcd`.
    pub etcd: Option<EtcdSettings>,
    /// The plugins that run (APISIX's `plugins:` list); all that Portico has when absent. A
    /// resource using one left out is served without it, with a warning, as in APISIX.
    pub plugins: Option<Vec<String>>,
    #[serde(default)]
    pub data_encryption: DataEncryption,
    /// APISIX's Admin API (a writer to etcd); off when absent.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The Prometheus exporter (APISIX's `plugin_attr.prometheus`); off when absent.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// One line per request (APISIX's `nginx_config.http.access_log`); off when absent.
    #[serde(default)]
    pub access_log: AccessLogConfig,
}

/// `access_log:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// A file (relative to config.yaml's directory), `stdout`, or empty for none.
    #[serde(default)]
    pub path: String,
    /// nginx's `log_format` language; APISIX's default format when absent.
    #[serde(default = "default_access_format")]
    pub format: String,
    /// Lines waiting for the disk before new ones are dropped (APISIX's access_log_buffer).
    #[serde(default = "default_access_buffer")]
    pub buffer: usize,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            path: String::new(),
            format: default_access_format(),
            buffer: default_access_buffer(),
        }
    }
}

fn default_access_format() -> String {
    crate::logs::access::DEFAULT_FORMAT.into()
}

fn default_access_buffer() -> usize {
    16384
}

impl AccessLogConfig {
    /// Where the lines go; `None`: nowhere.
    pub fn target(&self) -> Option<crate::logs::access::Target> {
        match self.path.as_str() {
            "" => None,
            "stdout" | "/dev/stdout" => Some(crate::logs::access::Target::Stdout),
            p => Some(crate::logs::access::Target::File(p.into())),
        }
    }
}

/// `metrics:`: where the `prometheus` plugin's counters are scraped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `addr:port` (APISIX's is 127.0.0.1:9091); empty: no exporter.
    #[serde(default)]
    pub listen: String,
    /// APISIX's `export_uri`.
    #[serde(default = "default_export_uri")]
    pub export_uri: String,
    /// APISIX's `metric_prefix`.
    #[serde(default = "default_metric_prefix")]
    pub metric_prefix: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: String::new(),
            export_uri: default_export_uri(),
            metric_prefix: default_metric_prefix(),
        }
    }
}

fn default_export_uri() -> String {
    "/apisix/prometheus/metrics".into()
}

fn default_metric_prefix() -> String {
    "apisix_".into()
}

impl MetricsConfig {
    fn check(&self) -> Result<(), String> {
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "metrics.listen: {:?} is not an address:port",
                self.listen
            ));
        }
        if !self.export_uri.starts_with('/') {
            return Err(format!(
                "metrics.export_uri: {:?} must start with /",
                self.export_uri
            ));
        }
        let name_ok = self.metric_prefix.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        });
        if !name_ok {
            return Err(format!(
                "metrics.metric_prefix: {:?} is not the start of a Prometheus metric name",
                self.metric_prefix
            ));
        }
        Ok(())
    }
}

/// `admin:`: APISIX's Admin API on its own listener. It writes to etcd and nothing else, so
/// it is served only with `config.provider: etcd`, and never without a key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `addr:port` (APISIX's is 9180); empty: no Admin API.
    #[serde(default)]
    pub listen: String,
    /// The API keys (`X-API-KEY`), each with a role; at least one with `listen` set.
    #[serde(default)]
    pub keys: Vec<AdminKey>,
    /// Client networks allowed to reach it (APISIX's `allow_admin`); others get 403 before
    /// anything else is looked at.
    #[serde(default = "default_admin_allow")]
    pub allow: Vec<String>,
    /// The networks of `allow`, checked when the config is read.
    #[serde(skip)]
    pub allow_nets: Vec<crate::net::Cidr>,
}

/// One Admin API key.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminKey {
    pub name: String,
    pub key: String,
    pub role: AdminRole,
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key itself never reaches a log.
        f.debug_struct("AdminKey")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish()
    }
}

/// What a key may do: `admin` reads and writes, `viewer` only reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminRole {
    Admin,
    Viewer,
}

fn default_admin_allow() -> Vec<String> {
    // APISIX's allow_admin default.
    vec!["127.0.0.0/24".into()]
}

/// `data_encryption:` as in APISIX: the keys that decrypt the plugin fields (and SSL keys) its
/// Admin API stores encrypted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataEncryption {
    #[serde(default = "default_keyring")]
    pub keyring: Vec<String>,
}

impl Default for DataEncryption {
    fn default() -> Self {
        DataEncryption {
            keyring: default_keyring(),
        }
    }
}

fn default_keyring() -> Vec<String> {
    crate::keyring::DEFAULT
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// HTTP listeners, `addr:port`.
    pub listen: Vec<String>,
    /// HTTPS listeners, `addr:port`: certificates chosen by SNI from the `ssls`.
    #[serde(default)]
    pub tls_listen: Vec<String>,
    /// Offer HTTP/2 by ALPN on the HTTPS listeners.
    #[serde(default = "yes")]
    pub http2: bool,
    /// The SNI whose certificate serves clients that send none, or one no ssl has (APISIX's
    /// `fallback_sni`); without it those handshakes fail.
    pub fallback_sni: Option<String>,
    /// Worker threads of the proxy.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Seconds to finish in-flight requests on SIGTERM before stopping.
    #[serde(default = "default_shutdown")]
    pub shutdown_timeout: u64,
    /// CA certificates (PEM file) trusted for upstreams with `tls.verify: true`; the system's
    /// when unset.
    pub upstream_ca: Option<PathBuf>,
    /// The certificates of `upstream_ca`, read and checked once when the config is loaded.
    #[serde(skip)]
    pub upstream_ca_certs: Option<std::sync::Arc<Box<[pingora_core::tls::x509::X509]>>>,
    /// Seconds for a whole request header (a total deadline, not per read).
    #[serde(default = "sixty", deserialize_with = "seconds")]
    pub client_header_timeout: f64,
    /// Seconds between two reads of a request body.
    #[serde(default = "sixty", deserialize_with = "seconds")]
    pub client_body_timeout: f64,
    /// Seconds an idle client connection waits for its next request; 0: no keep-alive.
    #[serde(default = "sixty", deserialize_with = "seconds")]
    pub keepalive_timeout: f64,
    /// Seconds between two writes to a client.
    #[serde(default = "ten", deserialize_with = "seconds")]
    pub send_timeout: f64,
    /// The largest request body, in bytes (`8k`, `1m` also read); 0: no limit. Above: 413.
    #[serde(default, deserialize_with = "bytes")]
    pub client_max_body_size: u64,
    /// Open client connections at most; past it new ones are closed (logged once a minute).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn sixty() -> f64 {
    60.0
}

fn yes() -> bool {
    true
}

fn ten() -> f64 {
    10.0
}

fn default_max_connections() -> usize {
    // APISIX's worker_connections.
    10620
}

/// A number of seconds, or nginx's form (`60s`, `1m`, `500ms`).
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    use serde::de::Error;
    let v = serde_yaml::Value::deserialize(d)?;
    let parsed = match &v {
        serde_yaml::Value::Number(n) => n.as_f64(),
        serde_yaml::Value::String(s) => {
            let s = s.trim();
            let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
                Some(i) => s.split_at(i),
                None => (s, "s"),
            };
            let factor = match unit {
                "ms" => Some(0.001),
                "s" => Some(1.0),
                "m" => Some(60.0),
                "h" => Some(3600.0),
                _ => None,
            };
            num.trim()
                .parse::<f64>()
                .ok()
                .zip(factor)
                .map(|(n, f)| n * f)
        }
        _ => None,
    };
    match parsed {
        Some(x) if (0.0..=MAX_SECONDS).contains(&x) => Ok(x),
        _ => Err(D::Error::custom(format!(
            "expected seconds from 0 to {MAX_SECONDS} (a number, or like 60s, 1m, 500ms), got {v:?}"
        ))),
    }
}

/// A number of bytes, or nginx's form (`8k`, `1m`, `1g`).
fn bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    use serde::de::Error;
    let v = serde_yaml::Value::deserialize(d)?;
    let parsed = match &v {
        serde_yaml::Value::Number(n) => n.as_u64(),
        serde_yaml::Value::String(s) => {
            let s = s.trim().to_ascii_lowercase();
            let (num, factor) = match s.chars().last() {
                Some('k') => (&s[..s.len() - 1], 1u64 << 10),
                Some('m') => (&s[..s.len() - 1], 1 << 20),
                Some('g') => (&s[..s.len() - 1], 1 << 30),
                _ => (s.as_str(), 1),
            };
            num.parse::<u64>().ok().and_then(|n| n.checked_mul(factor))
        }
        _ => None,
    };
    parsed.ok_or_else(|| {
        D::Error::custom(format!(
            "expected a size in bytes (like 0, 8k, 1m), got {v:?}"
        ))
    })
}

fn default_threads() -> usize {
    2
}

fn default_shutdown() -> u64 {
    2
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// Where `GET /status` and `GET /status/ready` are served; empty to turn off.
    pub listen: String,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            listen: "127.0.0.1:7085".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Yaml,
    Etcd,
}

/// `etcd:` in config.yaml: where the resources live and how to reach them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSettings {
    /// `http://host:port` or `https://host:port`, several for a cluster.
    pub endpoints: Vec<String>,
    /// The key prefix of APISIX's layout.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Seconds per request; the watch has its own idle timeout.
    #[serde(default = "default_etcd_timeout")]
    pub timeout: f64,
    /// Seconds without a byte on the watch before it is opened again (same revision).
    #[serde(default = "default_watch_idle")]
    pub watch_idle_timeout: f64,
    pub user: Option<String>,
    pub password: Option<String>,
    #[serde(default)]
    pub tls: EtcdTls,
    /// Seconds an endpoint that failed is skipped before it is tried again.
    #[serde(default = "default_fail_timeout")]
    pub fail_timeout: f64,
    /// The largest answer body or watch message taken from an endpoint (bytes; `16m`); a bigger
    /// one ends that connection with an error naming the endpoint.
    #[serde(default = "default_max_response", deserialize_with = "bytes")]
    pub max_response_size: u64,
    /// The last config seen, saved after changes so that a start without etcd can serve it
    /// (relative to this file; empty to turn off).
    #[serde(default = "default_saved")]
    pub saved_config: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTls {
    #[serde(default = "default_true")]
    pub verify: bool,
    /// CA, client certificate and key: file paths.
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub sni: Option<String>,
}

impl Default for EtcdTls {
    fn default() -> Self {
        EtcdTls {
            verify: true,
            ca: None,
            cert: None,
            key: None,
            sni: None,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_prefix() -> String {
    "/apisix".into()
}

fn default_etcd_timeout() -> f64 {
    30.0
}

fn default_watch_idle() -> f64 {
    60.0
}

fn default_fail_timeout() -> f64 {
    2.0
}

fn default_max_response() -> u64 {
    crate::etcd::DEFAULT_MAX_RESPONSE_BYTES as u64
}

fn default_saved() -> PathBuf {
    PathBuf::from("etcd-saved.json")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub provider: Provider,
    /// The standalone resource file, relative to the config file.
    #[serde(default = "default_yaml")]
    pub yaml: PathBuf,
}

fn default_yaml() -> PathBuf {
    PathBuf::from("apisix.yaml")
}

impl AdminConfig {
    /// Whether the Admin API is on.
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }

    /// Refuses an Admin API that would be open (no key, an empty key) or could not work
    /// (no etcd to write to), and reads `allow`.
    fn check(&mut self, provider: Provider) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        self.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|_| format!("admin.listen: {:?} is not an address:port", self.listen))?;
        if provider != Provider::Etcd {
            return Err(
                "admin.listen: the Admin API writes to etcd; it needs config.provider: etcd".into(),
            );
        }
        if self.keys.is_empty() {
            return Err("admin.keys: the Admin API needs at least one key (it is never served open); add {name, key, role: admin}".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            if k.key.trim().is_empty() {
                return Err(format!("admin.keys[{i}] ({}): key is empty", k.name));
            }
            if !seen.insert(k.key.as_str()) {
                return Err(format!(
                    "admin.keys[{i}] ({}): the same key as another entry",
                    k.name
                ));
            }
        }
        if self.allow.is_empty() {
            return Err("admin.allow: empty refuses every client; list the networks allowed (0.0.0.0/0 and ::/0 for any)".into());
        }
        self.allow_nets = self
            .allow
            .iter()
            .map(|a| crate::net::Cidr::parse(a).map_err(|e| format!("admin.allow: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(())
    }
}

/// A config file that cannot be used, with the file and what is wrong.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

impl std::error::Error for ConfigError {}

impl GatewayConfig {
    /// Reads and checks `path`; relative paths inside are made relative to its directory.
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
        let err = |message: String| ConfigError {
            file: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let mut config: GatewayConfig =
            serde_yaml::from_str(&text).map_err(|e| err(e.to_string()))?;
        // Every problem of the file at once, not only the first.
        let mut problems: Vec<String> = Vec::new();
        let address = |field: &str, addr: &str, problems: &mut Vec<String>| {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                problems.push(format!("{field}: {addr:?} is not an address:port"));
            }
        };
        if config.proxy.listen.is_empty() {
            problems.push("proxy.listen: at least one listener is needed".into());
        }
        for addr in &config.proxy.tls_listen {
            address("proxy.tls_listen", addr, &mut problems);
        }
        for addr in &config.proxy.listen {
            address("proxy.listen", addr, &mut problems);
        }
        if let Err(e) = crate::keyring::Keyring::new(&config.data_encryption.keyring) {
            problems.push(e);
        }
        if config.proxy.threads == 0 {
            problems.push("proxy.threads: must be at least 1".into());
        }
        if !config.status.listen.is_empty() {
            address("status.listen", &config.status.listen, &mut problems);
        }
        if let Err(e) = config.admin.check(config.config.provider) {
            problems.push(e);
        }
        if let Err(e) = config.metrics.check() {
            problems.push(e);
        }
        if config.access_log.buffer == 0 {
            problems.push("access_log.buffer: must be at least 1".into());
        }

        let base = path.parent().unwrap_or(Path::new("."));
        let access = &mut config.access_log.path;
        if !access.is_empty() && access != "stdout" && Path::new(access.as_str()).is_relative() {
            *access = base.join(access.as_str()).display().to_string();
        }
        if let Some(ca) = &mut config.proxy.upstream_ca {
            if ca.is_relative() {
                *ca = base.join(&*ca);
            }
            match std::fs::read(&*ca) {
                Err(e) => problems.push(format!(
                    "proxy.upstream_ca: cannot read {}: {e}",
                    ca.display()
                )),
                Ok(pem) => match pingora_core::tls::x509::X509::stack_from_pem(&pem)
                    .ok()
                    .filter(|c| !c.is_empty())
                {
                    Some(certs) => {
                        config.proxy.upstream_ca_certs =
                            Some(std::sync::Arc::new(certs.into_boxed_slice()))
                    }
                    None => problems.push(format!(
                        "proxy.upstream_ca: {} holds no PEM certificate",
                        ca.display()
                    )),
                },
            }
        }
        if config.config.yaml.is_relative() {
            config.config.yaml = base.join(&config.config.yaml);
        }
        match (&mut config.etcd, config.config.provider) {
            (None, Provider::Etcd) => {
                problems.push("config.provider is etcd but there is no etcd: section".into())
            }
            (Some(etcd), _) => {
                if etcd.endpoints.is_empty() {
                    problems.push("etcd.endpoints: at least one endpoint is needed".into());
                }
                // Bounded so every one of them makes a Duration (and an Instant ahead).
                let seconds =
                    |v: f64, zero_ok: bool| (v > 0.0 || (zero_ok && v == 0.0)) && v <= MAX_SECONDS;
                if !seconds(etcd.timeout, false) {
                    problems.push(format!(
                        "etcd.timeout: must be a number of seconds above 0, at most {MAX_SECONDS}"
                    ));
                }
                if !seconds(etcd.fail_timeout, true) {
                    problems.push(format!(
                        "etcd.fail_timeout: must be a number of seconds from 0 to {MAX_SECONDS}"
                    ));
                }
                if !seconds(etcd.watch_idle_timeout, false) {
                    problems.push(format!(
                        "etcd.watch_idle_timeout: must be a number of seconds above 0, at most {MAX_SECONDS}"
                    ));
                }
                if !etcd.prefix.starts_with('/') {
                    problems.push(format!("etcd.prefix: {:?} must start with /", etcd.prefix));
                }
                etcd.prefix = etcd.prefix.trim_end_matches('/').to_string();
                let saved = &mut etcd.saved_config;
                if !saved.as_os_str().is_empty() && saved.is_relative() {
                    *saved = base.join(&*saved);
                }
                for f in [&mut etcd.tls.ca, &mut etcd.tls.cert, &mut etcd.tls.key]
                    .into_iter()
                    .flatten()
                {
                    if f.is_relative() {
                        *f = base.join(&*f);
                    }
                }
            }
            (None, Provider::Yaml) => {}
        }
        if !problems.is_empty() {
            return Err(err(problems.join("\n  ")));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_of_the_file_is_named_at_once() {
        let path = std::env::temp_dir().join(format!("portico-config-{}.yaml", std::process::id()));
        std::fs::write(
            &path,
            "proxy:\n  listen: [\"nowhere\"]\n  threads: 0\nstatus:\n  listen: \"x:y\"\naccess_log:\n  buffer: 0\nconfig:\n  provider: yaml\n  yaml: apisix.yaml\n",
        )
        .unwrap();
        let e = GatewayConfig::load(&path).err().unwrap().to_string();
        let _ = std::fs::remove_file(&path);
        for want in [
            "proxy.listen: \"nowhere\"",
            "proxy.threads",
            "status.listen",
            "access_log.buffer",
        ] {
            assert!(e.contains(want), "{want} missing from: {e}");
        }
    }
}
