//! Plugin settings, carried as named JSON until plugins are implemented; names are checked
//! against the plugins APISIX ships, so a typo is an error of that one resource.

use std::collections::BTreeMap;

use serde_json::Value;

use super::fields::{failed, kind_of};

/// Plugin name → its JSON settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plugins(pub BTreeMap<String, Value>);

/// The plugins APISIX 3.x ships.
const KNOWN: &[&str] = &[
    "ai-aws-content-moderation",
    "ai-content-moderation",
    "ai-prompt-decorator",
    "ai-prompt-guard",
    "ai-prompt-template",
    "ai-proxy",
    "ai-proxy-multi",
    "ai-rag",
    "ai-rate-limiting",
    "ai-request-rewrite",
    "api-breaker",
    "attach-consumer-label",
    "authz-casbin",
    "authz-casdoor",
    "authz-keycloak",
    "aws-lambda",
    "azure-functions",
    "basic-auth",
    "batch-requests",
    "body-transformer",
    "brotli",
    "cas-auth",
    "chaitin-waf",
    "clickhouse-logger",
    "client-control",
    "consumer-restriction",
    "cors",
    "csrf",
    "datadog",
    "degraphql",
    "echo",
    "elasticsearch-logger",
    "error-log-logger",
    "example-plugin",
    "ext-plugin-post-req",
    "ext-plugin-post-resp",
    "ext-plugin-pre-req",
    "fault-injection",
    "file-logger",
    "forward-auth",
    "google-cloud-logging",
    "grpc-transcode",
    "grpc-web",
    "gzip",
    "hmac-auth",
    "http-dubbo",
    "http-logger",
    "inspect",
    "ip-restriction",
    "jwe-decrypt",
    "jwt-auth",
    "kafka-logger",
    "kafka-proxy",
    "key-auth",
    "ldap-auth",
    "limit-conn",
    "limit-count",
    "limit-req",
    "log-rotate",
    "loggly",
    "loki-logger",
    "mocking",
    "multi-auth",
    "node-status",
    "opa",
    "openfunction",
    "openid-connect",
    "opentelemetry",
    "openwhisk",
    "prometheus",
    "proxy-cache",
    "proxy-control",
    "proxy-mirror",
    "proxy-rewrite",
    "public-api",
    "real-ip",
    "redirect",
    "referer-restriction",
    "request-id",
    "request-validation",
    "response-rewrite",
    "rocketmq-logger",
    "server-info",
    "serverless-post-function",
    "serverless-pre-function",
    "skywalking",
    "skywalking-logger",
    "sls-logger",
    "splunk-hec-logging",
    "syslog",
    "tcp-logger",
    "tencent-cloud-cls",
    "traffic-split",
    "ua-restriction",
    "udp-logger",
    "uri-blocker",
    "wolf-rbac",
    "workflow",
    "zipkin",
];

pub fn is_known_plugin(name: &str) -> bool {
    KNOWN.binary_search(&name).is_ok()
}

impl Plugins {
    pub fn parse(value: Option<&Value>) -> Result<Plugins, String> {
        let Some(value) = value else {
            return Ok(Plugins::default());
        };
        let Value::Object(map) = value else {
            return Err(failed(
                "plugins",
                format!("wrong type: expected object, got {}", kind_of(value)),
            ));
        };
        let mut out = BTreeMap::new();
        for (name, conf) in map {
            if !is_known_plugin(name) {
                return Err(failed("plugins", format!("unknown plugin [{name}]")));
            }
            if !conf.is_object() {
                return Err(failed(
                    "plugins",
                    format!(
                        "plugin [{name}]: wrong type: expected object, got {}",
                        kind_of(conf)
                    ),
                ));
            }
            out.insert(name.clone(), conf.clone());
        }
        Ok(Plugins(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_list_is_sorted_for_binary_search() {
        assert!(KNOWN.windows(2).all(|w| w[0] < w[1]));
        assert!(is_known_plugin("proxy-rewrite"));
        assert!(!is_known_plugin("proxy-rewrit"));
    }

    #[test]
    fn unknown_names_and_bad_shapes_are_refused() {
        let ok = serde_json::json!({"key-auth": {}});
        assert_eq!(Plugins::parse(Some(&ok)).unwrap().0.len(), 1);
        let bad = serde_json::json!({"nope": {}});
        assert!(Plugins::parse(Some(&bad))
            .unwrap_err()
            .contains("unknown plugin [nope]"));
        let bad = serde_json::json!({"cors": 1});
        assert!(Plugins::parse(Some(&bad)).is_err());
    }
}
