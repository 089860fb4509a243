//! The gateway's own settings (`conf/config.yaml`) and the standalone resource file
//! (`conf/apisix.yaml`).

pub mod standalone;

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `conf/config.yaml`. Every key is documented in the shipped file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub proxy: ProxyConfig,
    #[serde(default)]
    pub status: StatusConfig,
    pub config: SourceConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// HTTP listeners, `addr:port`.
    pub listen: Vec<String>,
    /// Worker threads of the proxy.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Seconds to finish in-flight requests on SIGTERM before stopping.
    #[serde(default = "default_shutdown")]
    pub shutdown_timeout: u64,
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
        if config.proxy.listen.is_empty() {
            return Err(err("proxy.listen: at least one listener is needed".into()));
        }
        for addr in &config.proxy.listen {
            addr.parse::<std::net::SocketAddr>()
                .map_err(|_| err(format!("proxy.listen: {addr:?} is not an address:port")))?;
        }
        if config.proxy.threads == 0 {
            return Err(err("proxy.threads: must be at least 1".into()));
        }
        if !config.status.listen.is_empty() {
            config
                .status
                .listen
                .parse::<std::net::SocketAddr>()
                .map_err(|_| {
                    err(format!(
                        "status.listen: {:?} is not an address:port",
                        config.status.listen
                    ))
                })?;
        }
        let base = path.parent().unwrap_or(Path::new("."));
        if config.config.yaml.is_relative() {
            config.config.yaml = base.join(&config.config.yaml);
        }
        Ok(config)
    }
}
