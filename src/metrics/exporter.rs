//! `GET /apisix/prometheus/metrics` on its own listener: the request counters folded from
//! every worker, and the gauges read at scrape time (connections, etcd, upstream health).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_http::ResponseHeader;

use super::connections;
use super::series::{self, Series, BUCKETS};
use super::text::{bound, label, Text};
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
}

impl MetricsApp {
    pub fn new(settings: ExportSettings, store: Arc<Store>, source: Arc<SourceStatus>) -> Self {
        MetricsApp {
            settings,
            store,
            source,
        }
    }

    /// The whole body, handed to `out` in pieces of about [`CHUNK`] bytes: a scrape of
    /// 10k routes is ~100 MB of text, which is never held whole.
    pub fn write_body(&self, out: &mut dyn FnMut(String)) {
        let started = std::time::Instant::now();
        let series = series::fold();
        let folded = started.elapsed();
        let mut w = Chunks {
            text: Text::with_capacity(&self.settings.prefix, CHUNK + 64 * 1024),
            out,
            bytes: 0,
        };
        http_metrics(&mut w, &series);
        self.gauges(&mut w.text);
        w.flush();
        log::debug!(
            "scrape: {} series folded in {folded:?}, {} bytes written in {:?}",
            series.len(),
            w.bytes,
            started.elapsed()
        );
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
                ("hostname", crate::net::hostname()),
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
const TAIL: &str = "request_type=\"traditional_http\",request_llm_model=\"\",llm_model=\"\"";

/// A series' label text, written once per scrape and shared by its samples.
struct SeriesText {
    /// `route="…"`
    route: String,
    /// `service="…",consumer="…",node="…",request_type=…,llm_model=""`
    rest: String,
}

impl SeriesText {
    fn new(s: &Series) -> SeriesText {
        let l = &s.labels;
        let mut route = String::new();
        label(&mut route, "route", &l.route);
        let mut rest = String::new();
        label(&mut rest, "service", &l.service);
        rest.push(',');
        label(&mut rest, "consumer", &l.consumer);
        rest.push(',');
        label(&mut rest, "node", &l.node);
        rest.push(',');
        rest.push_str(TAIL);
        SeriesText { route, rest }
    }
}

/// How big a piece of the body is before it is sent.
const CHUNK: usize = 1 << 20;

/// The text written so far, handed on once it is [`CHUNK`] bytes.
struct Chunks<'a> {
    text: Text,
    out: &'a mut dyn FnMut(String),
    bytes: usize,
}

impl Chunks<'_> {
    fn maybe_flush(&mut self) {
        if self.text.len() >= CHUNK {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let piece = self.text.take();
        self.bytes += piece.len();
        if !piece.is_empty() {
            (self.out)(piece);
        }
    }
}

fn http_metrics(w: &mut Chunks<'_>, series: &[Series]) {
    let texts: Vec<SeriesText> = series.iter().map(SeriesText::new).collect();
    w.text.family(
        "http_status",
        "counter",
        "HTTP status codes per service in APISIX",
    );
    let mut buf = String::new();
    for (s, x) in series.iter().zip(&texts) {
        for (st, n) in &s.statuses {
            buf.clear();
            buf.push_str("code=\"");
            buf.push_str(&st.code.to_string());
            buf.push_str("\",");
            buf.push_str(&x.route);
            buf.push(',');
            label(&mut buf, "matched_uri", &st.matched_uri);
            buf.push(',');
            label(&mut buf, "matched_host", &st.matched_host);
            let source = format!("response_source=\"{}\"", st.source.as_str());
            w.text
                .sample_raw("http_status", &[&buf, &x.rest, &source], *n as f64);
        }
        w.maybe_flush();
    }
    w.text.family(
        "http_latency",
        "histogram",
        "HTTP request latency in milliseconds per service in APISIX",
    );
    let les: Vec<String> = BUCKETS
        .iter()
        .map(|b| format!("le=\"{}\"", bound(*b)))
        .chain(std::iter::once("le=\"+Inf\"".to_string()))
        .collect();
    for (s, x) in series.iter().zip(&texts) {
        for (kind, h) in ["type=\"request\"", "type=\"upstream\"", "type=\"apisix\""]
            .iter()
            .zip(&s.latency)
        {
            if h.count() == 0 {
                continue;
            }
            let mut running = 0u64;
            for (le, n) in les
                .iter()
                .zip(h.buckets.iter().chain(std::iter::once(&h.over)))
            {
                running += n;
                w.text.sample_raw(
                    "http_latency_bucket",
                    &[kind, &x.route, &x.rest, le],
                    running as f64,
                );
            }
            w.text.sample_raw(
                "http_latency_count",
                &[kind, &x.route, &x.rest],
                h.count() as f64,
            );
            w.text
                .sample_raw("http_latency_sum", &[kind, &x.route, &x.rest], h.sum);
        }
        w.maybe_flush();
    }
    w.text.family(
        "bandwidth",
        "counter",
        "Total bandwidth in bytes consumed per service in APISIX",
    );
    for (s, x) in series.iter().zip(&texts) {
        for (kind, v) in [
            ("type=\"ingress\"", s.ingress),
            ("type=\"egress\"", s.egress),
        ] {
            w.text
                .sample_raw("bandwidth", &[kind, &x.route, &x.rest], v as f64);
        }
        w.maybe_flush();
    }
}

fn plain(status: u16, body: &'static str) -> Option<ResponseHeader> {
    let mut resp = ResponseHeader::build(status, Some(2)).ok()?;
    resp.insert_header("Content-Type", "text/plain").ok()?;
    resp.insert_header("Content-Length", body.len().to_string())
        .ok()?;
    Some(resp)
}

impl MetricsApp {
    /// Answers one request; `Err` ends the connection.
    async fn serve(self: &Arc<Self>, http: &mut ServerSession) -> pingora_core::Result<()> {
        let req = http.req_header();
        let head = req.method == http::Method::HEAD;
        let refusal = if req.uri.path() != self.settings.uri {
            Some((404, "404 Not Found\n"))
        } else if req.method != http::Method::GET && !head {
            Some((405, "405 Method Not Allowed\n"))
        } else {
            None
        };
        if let Some((status, body)) = refusal {
            if let Some(resp) = plain(status, body) {
                http.write_response_header(Box::new(resp)).await?;
                http.write_response_body(Bytes::from_static(body.as_bytes()), true)
                    .await?;
            }
            return Ok(());
        }
        let mut resp = ResponseHeader::build(200, Some(2))?;
        resp.insert_header("Content-Type", "text/plain; version=0.0.4")?;
        if head {
            http.write_response_header(Box::new(resp)).await?;
            return http.finish_body().await;
        }
        resp.insert_header("Transfer-Encoding", "chunked")?;
        http.write_response_header(Box::new(resp)).await?;
        // Written on a blocking thread, a piece at a time, while this task sends the last.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(2);
        let app = self.clone();
        let writer = tokio::task::spawn_blocking(move || {
            app.write_body(&mut |piece| {
                let _ = tx.blocking_send(piece);
            })
        });
        while let Some(piece) = rx.recv().await {
            http.write_response_body(Bytes::from(piece), false).await?;
        }
        let _ = writer.await;
        http.finish_body().await
    }
}

#[async_trait]
impl HttpServerApp for MetricsApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !matches!(http.read_request().await, Ok(true)) {
            return None;
        }
        http.set_keepalive((!*shutdown.borrow()).then_some(60));
        if let Err(e) = self.serve(&mut http).await {
            log::debug!("metrics scrape: {e}");
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&http);
        match http.finish().await {
            Ok(reusable) => reusable.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(_) => None,
        }
    }
}
