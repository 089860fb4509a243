//! `GET /apisix/prometheus/metrics` on its own listener: the request counters folded from
//! every worker, and the gauges read at scrape time (connections, etcd, upstream health).

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use super::connections;
use super::series::{self, Series, BUCKETS};
use super::text::{bound, Text};
use crate::status::SourceStatus;
use crate::tables::Store;

/// What `metrics:` in config.yaml says about the exporter.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// The path that answers (APISIX's `export_uri`).
    pub uri: String,
    /// Put in front of every name (APISIX's `metric_prefix`).
    pub prefix: String,
    /// The etcd prefix, in etcd mode: APISIX names a health checker by its upstream's key.
    pub etcd_prefix: Option<String>,
}

/// The exporter, a Pingora `ServeHttp`.
pub struct MetricsApp {
    settings: ExportSettings,
    store: Arc<Store>,
    source: Arc<SourceStatus>,
    hostname: String,
}

impl MetricsApp {
    pub fn new(settings: ExportSettings, store: Arc<Store>, source: Arc<SourceStatus>) -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        MetricsApp {
            settings,
            store,
            source,
            hostname,
        }
    }

    /// The whole text body.
    pub fn render(&self) -> String {
        let mut t = Text::new(&self.settings.prefix);
        let series = series::fold();
        http_metrics(&mut t, &series);
        self.gauges(&mut t);
        t.finish()
    }

    fn gauges(&self, t: &mut Text) {
        let c = connections::snapshot();
        t.family(
            "nginx_http_current_connections",
            "gauge",
            "Number of HTTP connections",
        );
        for (state, v) in [
            ("accepted", c.accepted),
            ("active", c.active),
            ("handled", c.handled),
            ("reading", c.reading),
            ("waiting", c.waiting()),
            ("writing", c.writing),
        ] {
            t.sample(
                "nginx_http_current_connections",
                &[("state", state)],
                v as f64,
            );
        }
        t.family(
            "http_requests_total",
            "gauge",
            "The total number of client requests since APISIX started",
        );
        t.sample("http_requests_total", &[], series::requests() as f64);

        if self.source.provider == "etcd" {
            t.family(
                "etcd_reachable",
                "gauge",
                "Config server etcd reachable from APISIX, 0 is unreachable",
            );
            t.sample(
                "etcd_reachable",
                &[],
                if self.source.reachable() { 1.0 } else { 0.0 },
            );
            self.modify_indexes(t);
        }

        t.family("node_info", "gauge", "Info of APISIX node");
        t.sample(
            "node_info",
            &[
                ("hostname", &self.hostname),
                ("version", env!("CARGO_PKG_VERSION")),
            ],
            1.0,
        );

        let tables = self.store.load();
        let root = self.settings.etcd_prefix.as_deref().unwrap_or("/apisix");
        let mut wrote_family = false;
        for (name, b) in tables.balancers() {
            if b.checks.active.is_none() && b.checks.passive.is_none() {
                continue;
            }
            if !wrote_family {
                t.family(
                    "upstream_status",
                    "gauge",
                    "Upstream status from health check",
                );
                wrote_family = true;
            }
            let key = format!("{root}/{}", name.trim_end_matches(" (inline)"));
            for n in b.nodes().iter() {
                let port = n.node.port.to_string();
                t.sample(
                    "upstream_status",
                    &[("name", &key), ("ip", &n.node.host), ("port", &port)],
                    if n.health.is_healthy() { 1.0 } else { 0.0 },
                );
            }
        }
    }

    /// The highest `mod_revision` of each kind, as APISIX reports the ones it watched.
    fn modify_indexes(&self, t: &mut Text) {
        let Some((revision, keys)) = self.source.revisions() else {
            return;
        };
        let root = self.settings.etcd_prefix.as_deref().unwrap_or("/apisix");
        let kinds = [
            "consumers",
            "global_rules",
            "protos",
            "routes",
            "services",
            "ssls",
            "stream_routes",
            "upstreams",
        ];
        let mut max = [0i64; 8];
        for (key, rev) in &keys {
            let Some(rest) = key.strip_prefix(root).and_then(|r| r.strip_prefix('/')) else {
                continue;
            };
            let kind = rest.split('/').next().unwrap_or_default();
            if let Some(i) = kinds.iter().position(|k| *k == kind) {
                max[i] = max[i].max(*rev);
            }
        }
        t.family(
            "etcd_modify_indexes",
            "gauge",
            "Etcd modify index for APISIX keys",
        );
        for (kind, m) in kinds.iter().zip(max) {
            t.sample("etcd_modify_indexes", &[("key", kind)], m as f64);
        }
        let highest = max.iter().copied().max().unwrap_or(0);
        t.sample(
            "etcd_modify_indexes",
            &[("key", "max_modify_index")],
            highest as f64,
        );
        t.sample(
            "etcd_modify_indexes",
            &[("key", "x_etcd_index")],
            revision as f64,
        );
    }
}

/// The labels APISIX 3.17+ puts on every HTTP series after its own.
const TAIL: [(&str, &str); 3] = [
    ("request_type", "traditional_http"),
    ("request_llm_model", ""),
    ("llm_model", ""),
];

fn http_metrics(t: &mut Text, series: &[Series]) {
    t.family(
        "http_status",
        "counter",
        "HTTP status codes per service in APISIX",
    );
    for s in series {
        let l = &s.labels;
        for (st, n) in &s.statuses {
            let code = st.code.to_string();
            let mut labels = vec![
                ("code", code.as_str()),
                ("route", &*l.route),
                ("matched_uri", &*st.matched_uri),
                ("matched_host", &*st.matched_host),
                ("service", &*l.service),
                ("consumer", &*l.consumer),
                ("node", &*l.node),
            ];
            labels.extend(TAIL);
            labels.push(("response_source", st.source.as_str()));
            t.sample("http_status", &labels, *n as f64);
        }
    }
    t.family(
        "http_latency",
        "histogram",
        "HTTP request latency in milliseconds per service in APISIX",
    );
    let bounds: Vec<String> = BUCKETS.iter().map(|b| bound(*b)).collect();
    for s in series {
        let l = &s.labels;
        for (kind, h) in ["request", "upstream", "apisix"].iter().zip(&s.latency) {
            if h.count() == 0 {
                continue;
            }
            let mut labels = vec![
                ("type", *kind),
                ("route", &*l.route),
                ("service", &*l.service),
                ("consumer", &*l.consumer),
                ("node", &*l.node),
            ];
            labels.extend(TAIL);
            let mut running = 0u64;
            for (b, n) in bounds.iter().zip(h.buckets) {
                running += n;
                labels.push(("le", b));
                t.sample("http_latency_bucket", &labels, running as f64);
                labels.pop();
            }
            labels.push(("le", "+Inf"));
            t.sample("http_latency_bucket", &labels, h.count() as f64);
            labels.pop();
            t.sample("http_latency_count", &labels, h.count() as f64);
            t.sample("http_latency_sum", &labels, h.sum);
        }
    }
    t.family(
        "bandwidth",
        "counter",
        "Total bandwidth in bytes consumed per service in APISIX",
    );
    for s in series {
        let l = &s.labels;
        for (kind, v) in [("ingress", s.ingress), ("egress", s.egress)] {
            let mut labels = vec![
                ("type", kind),
                ("route", &*l.route),
                ("service", &*l.service),
                ("consumer", &*l.consumer),
                ("node", &*l.node),
            ];
            labels.extend(TAIL);
            t.sample("bandwidth", &labels, v as f64);
        }
    }
}

fn reply(status: u16, content_type: &str, body: String) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Content-Length", body.len())
        .body(body.into_bytes())
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.uri.path() != self.settings.uri {
            return reply(404, "text/plain", "404 Not Found\n".into());
        }
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return reply(405, "text/plain", "405 Method Not Allowed\n".into());
        }
        reply(200, "text/plain; version=0.0.4", self.render())
    }
}
