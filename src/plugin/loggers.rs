//! APISIX's logger plugins over [`super::logger::Logger`]: `http-logger`, `file-logger`,
//! `tcp-logger`, `udp-logger`. Each checks where it sends, then shares the entry and the
//! batch processor.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::logger::{known_fields, Common, Logger};
use super::Metadata;
use super::{parse_settings, Factory, Plugin};
use crate::logs::batch::{BatchSettings, Sink};
use crate::logs::sink::{
    Encoding, Endpoint, Entry, FileSink, HttpPost, HttpSink, TcpSink, UdpSink,
};

/// A batched logger of `settings` (its entry and batch fields) sending to `sink`.
fn batched(
    name: &'static str,
    settings: &Value,
    sink: Arc<dyn Sink<Entry>>,
) -> Result<Logger, String> {
    let common: Common = parse_settings(settings)?;
    let batch: BatchSettings = parse_settings(settings)?;
    Logger::new(name, common, batch, sink)
}

fn positive(field: &str, v: f64) -> Result<Duration, String> {
    if v.is_finite() && v > 0.0 && v < 1e6 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!(
            "property \"{field}\" validation failed: expected > 0"
        ))
    }
}

pub struct HttpLoggerFactory;

#[derive(Deserialize)]
struct HttpSettings {
    uri: String,
    auth_header: Option<String>,
    #[serde(default = "three")]
    timeout: f64,
    #[serde(default = "json_concat")]
    concat_method: String,
    #[serde(default)]
    ssl_verify: bool,
}

fn three() -> f64 {
    3.0
}

fn json_concat() -> String {
    "json".into()
}

impl Factory for HttpLoggerFactory {
    fn name(&self) -> &'static str {
        "http-logger"
    }
    fn metadata(&self, value: &Value) -> Result<Option<Metadata>, String> {
        super::logger::metadata(value)
    }
    fn priority(&self) -> i32 {
        410
    }
    fn encrypt_fields(&self) -> &'static [&'static str] {
        &["auth_header"]
    }
    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        known_fields(
            settings,
            &[
                "uri",
                "auth_header",
                "timeout",
                "concat_method",
                "ssl_verify",
            ],
            true,
        )?;
        let s: HttpSettings = parse_settings(settings)?;
        let encoding = match s.concat_method.as_str() {
            "json" => Encoding::JsonArray,
            "new_line" => Encoding::Lines,
            other => {
                return Err(format!(
                    "property \"concat_method\" validation failed: matches none of the enum values (json, new_line): {other:?}"
                ))
            }
        };
        let mut headers = Vec::new();
        if let Some(auth) = &s.auth_header {
            let value = http::HeaderValue::from_str(auth).map_err(|_| {
                "property \"auth_header\" validation failed: not a valid header value".to_string()
            })?;
            headers.push((http::header::AUTHORIZATION, value));
        }
        let sink = HttpSink {
            post: HttpPost {
                endpoint: Endpoint::parse(&s.uri)?,
                headers,
                timeout: positive("timeout", s.timeout)?,
                verify: s.ssl_verify,
                connector: pingora_core::connectors::http::v1::Connector::new(None),
            },
            encoding,
        };
        Ok(Arc::new(batched("http-logger", settings, Arc::new(sink))?))
    }
}

pub struct FileLoggerFactory;

#[derive(Deserialize)]
struct FileSettings {
    path: String,
}

impl Factory for FileLoggerFactory {
    fn name(&self) -> &'static str {
        "file-logger"
    }
    fn metadata(&self, value: &Value) -> Result<Option<Metadata>, String> {
        super::logger::metadata(value)
    }
    fn priority(&self) -> i32 {
        399
    }
    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        known_fields(settings, &["path"], false)?;
        let s: FileSettings = parse_settings(settings)?;
        if s.path.is_empty() {
            return Err("property \"path\" validation failed: string too short".into());
        }
        let common: Common = parse_settings(settings)?;
        // APISIX writes each entry as the request ends: a batch of what arrived in a second.
        let batch = BatchSettings {
            inactive_timeout: 1,
            buffer_duration: 1,
            ..BatchSettings::default()
        };
        Ok(Arc::new(Logger::new(
            "file-logger",
            common,
            batch,
            Arc::new(FileSink::new(s.path.into())),
        )?))
    }
}

pub struct TcpLoggerFactory;

#[derive(Deserialize)]
struct TcpSettings {
    host: String,
    port: u16,
    #[serde(default)]
    tls: bool,
    tls_options: Option<String>,
    /// Milliseconds.
    #[serde(default = "thousand")]
    timeout: f64,
}

fn thousand() -> f64 {
    1000.0
}

impl Factory for TcpLoggerFactory {
    fn name(&self) -> &'static str {
        "tcp-logger"
    }
    fn metadata(&self, value: &Value) -> Result<Option<Metadata>, String> {
        super::logger::metadata(value)
    }
    fn priority(&self) -> i32 {
        405
    }
    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        known_fields(
            settings,
            &["host", "port", "tls", "tls_options", "timeout"],
            true,
        )?;
        let s: TcpSettings = parse_settings(settings)?;
        let sink = TcpSink {
            encoding: Encoding::JsonArray,
            host: s.host,
            port: s.port,
            tls: s.tls,
            tls_server_name: s.tls_options,
            timeout: positive("timeout", s.timeout / 1000.0)?,
        };
        Ok(Arc::new(batched("tcp-logger", settings, Arc::new(sink))?))
    }
}

pub struct UdpLoggerFactory;

#[derive(Deserialize)]
struct UdpSettings {
    host: String,
    port: u16,
    /// Seconds.
    #[serde(default = "three")]
    timeout: f64,
}

impl Factory for UdpLoggerFactory {
    fn name(&self) -> &'static str {
        "udp-logger"
    }
    fn metadata(&self, value: &Value) -> Result<Option<Metadata>, String> {
        super::logger::metadata(value)
    }
    fn priority(&self) -> i32 {
        400
    }
    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        known_fields(settings, &["host", "port", "timeout"], true)?;
        let s: UdpSettings = parse_settings(settings)?;
        let sink = UdpSink {
            encoding: Encoding::JsonArray,
            host: s.host,
            port: s.port,
            timeout: positive("timeout", s.timeout)?,
        };
        Ok(Arc::new(batched("udp-logger", settings, Arc::new(sink))?))
    }
}

pub struct SyslogFactory;

#[derive(Deserialize)]
struct SyslogSettings {
    host: String,
    port: u16,
    #[serde(default = "flush_limit")]
    flush_limit: u64,
    #[serde(default = "drop_limit")]
    drop_limit: u64,
    /// Milliseconds.
    #[serde(default = "three_thousand")]
    timeout: f64,
    #[serde(default = "tcp")]
    sock_type: String,
    #[serde(default = "five")]
    pool_size: u64,
    #[serde(default)]
    tls: bool,
}

fn flush_limit() -> u64 {
    4096
}
fn drop_limit() -> u64 {
    1_048_576
}
fn three_thousand() -> f64 {
    3000.0
}
fn tcp() -> String {
    "tcp".into()
}
fn five() -> u64 {
    5
}

/// APISIX's RFC 5424 frame: facility SYSLOG, severity INFO, the request's host, app
/// `apisix`, the process id, no structured data.
fn rfc5424(cx: &super::Cx<'_>, entry: Entry) -> Entry {
    let host = cx.with_vars(|v| v.var("host").map(|h| h.into_owned()));
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
    format!(
        "<46>1 {now} {} apisix {} - - {entry}\n",
        host.as_deref().filter(|h| !h.is_empty()).unwrap_or("-"),
        std::process::id()
    )
    .into()
}

impl Factory for SyslogFactory {
    fn name(&self) -> &'static str {
        "syslog"
    }
    fn metadata(&self, value: &Value) -> Result<Option<Metadata>, String> {
        super::logger::metadata(value)
    }
    fn priority(&self) -> i32 {
        401
    }
    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        known_fields(
            settings,
            &[
                "host",
                "port",
                "flush_limit",
                "drop_limit",
                "timeout",
                "sock_type",
                "pool_size",
                "tls",
            ],
            true,
        )?;
        let s: SyslogSettings = parse_settings(settings)?;
        if s.flush_limit < 1 {
            return Err("property \"flush_limit\" validation failed: expected >= 1".into());
        }
        if s.pool_size < 5 {
            return Err("property \"pool_size\" validation failed: expected >= 5".into());
        }
        let _ = s.drop_limit;
        let timeout = positive("timeout", s.timeout / 1000.0)?;
        let sink: Arc<dyn Sink<Entry>> =
            match s.sock_type.as_str() {
                "tcp" => Arc::new(TcpSink {
                    encoding: Encoding::Concat,
                    host: s.host,
                    port: s.port,
                    tls: s.tls,
                    tls_server_name: None,
                    timeout,
                }),
                "udp" if s.tls => {
                    return Err("property \"tls\" validation failed: syslog over UDP has no TLS".into())
                }
                "udp" => Arc::new(UdpSink {
                    encoding: Encoding::Concat,
                    host: s.host,
                    port: s.port,
                    timeout,
                }),
                other => {
                    return Err(format!(
                        "property \"sock_type\" validation failed: matches none of the enum values (tcp, udp): {other:?}"
                    ))
                }
            };
        Ok(Arc::new(batched("syslog", settings, sink)?.framed(rfc5424)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(f: &dyn Factory, v: Value) -> String {
        f.build(&v).err().unwrap_or_default()
    }

    #[test]
    fn settings_are_checked_by_field() {
        assert!(HttpLoggerFactory
            .build(&json!({"uri": "http://127.0.0.1:1/x"}))
            .is_ok());
        assert!(err(&HttpLoggerFactory, json!({})).contains("uri"));
        assert!(err(&HttpLoggerFactory, json!({"uri": "ftp://x"})).contains("uri"));
        assert!(err(
            &HttpLoggerFactory,
            json!({"uri": "http://a", "concat_method": "xml"})
        )
        .contains("concat_method"));
        assert!(err(
            &HttpLoggerFactory,
            json!({"uri": "http://a", "batch_max_size": 0})
        )
        .contains("batch_max_size"));
        assert!(
            err(&HttpLoggerFactory, json!({"uri": "http://a", "colour": 1})).contains("colour")
        );
        assert!(
            err(&HttpLoggerFactory, json!({"uri": "http://a", "timeout": 0})).contains("timeout")
        );
        assert!(err(&FileLoggerFactory, json!({"path": ""})).contains("path"));
        assert!(err(
            &FileLoggerFactory,
            json!({"path": "a", "batch_max_size": 3})
        )
        .contains("batch_max_size"));
        assert!(err(&TcpLoggerFactory, json!({"host": "a"})).contains("port"));
        assert!(SyslogFactory
            .build(&json!({"host": "127.0.0.1", "port": 514, "sock_type": "udp"}))
            .is_ok());
        assert!(err(
            &SyslogFactory,
            json!({"host": "a", "port": 1, "sock_type": "sctp"})
        )
        .contains("sock_type"));
        assert!(err(
            &SyslogFactory,
            json!({"host": "a", "port": 1, "pool_size": 1})
        )
        .contains("pool_size"));
        assert!(err(&UdpLoggerFactory, json!({"host": "a", "port": 70000})).contains("port"));
        assert!(err(
            &UdpLoggerFactory,
            json!({"host": "a", "port": 1, "include_req_body_expr": [["x"]]})
        )
        .contains("include_req_body_expr"));
    }
}
