//! Watches: one long-lived POST whose chunked answer carries one JSON message per line.
//!
//! Chunk boundaries do not follow lines, so the bytes go through [`LineSplitter`] and every
//! complete line becomes its own [`WatchMessage`]. What etcd says is a message (including its
//! in-stream errors); what happens to the connection is an `Err`; the end of the body ends the
//! stream. Dropping the stream closes its connection.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures::Stream;
use pingora_core::protocols::http::v1::client::HttpSession;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::client::{snippet, Client, Replay};
use super::codec::{de_i64, Codec};
use super::error::{Error, Result};
use super::transport::Body;
use super::types::{KeyValue, ResponseHeader, WireKv};

/// Server-side event filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFilter {
    NoPut,
    NoDelete,
}

/// Options of `watch` and `watchdir`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// First revision to send (inclusive); `None` is "from now".
    pub start_revision: Option<i64>,
    /// Ask etcd for periodic progress messages on an idle watch.
    pub progress_notify: bool,
    pub filters: Vec<WatchFilter>,
    /// Send each event's previous key-value.
    pub prev_kv: bool,
    pub watch_id: Option<i64>,
    /// Let etcd split very large revisions over several messages.
    pub fragment: bool,
    /// End the stream with [`Error::WatchIdle`] after this long without a byte.
    pub idle_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    /// For a delete, only the key and `mod_revision` (the deleting revision) are set.
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

/// One message etcd sent on a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchMessage {
    /// The watch is in place; events from `header.revision + 1` on will follow (or from the
    /// start revision).
    Created {
        header: ResponseHeader,
        watch_id: i64,
    },
    /// Events of one or more revisions, in order. One txn arrives as one message.
    Events {
        header: ResponseHeader,
        watch_id: i64,
        events: Vec<Event>,
        /// More messages of the same revision follow (when `fragment` was asked for).
        fragment: bool,
    },
    /// No events, just the current revision (progress notification).
    Progress { header: ResponseHeader },
    /// The start revision has been compacted: read everything again, then watch from the
    /// read's revision + 1.
    Compacted { compact_revision: i64 },
    /// etcd canceled the watch, e.g. for lack of permission.
    Canceled { reason: String },
    /// etcd reported an error inside the stream (server shutting down, …).
    ServerError {
        code: Option<i64>,
        http_code: Option<i64>,
        message: String,
    },
}

/// Splits a byte stream into lines, whatever the chunking.
#[derive(Debug)]
pub struct LineSplitter {
    buf: BytesMut,
    /// Where to resume looking for a newline, so long lines are scanned once.
    scanned: usize,
    /// The longest line kept; a longer one is an error (see [`LineTooLong`]).
    max_line: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        LineSplitter::with_limit(super::options::DEFAULT_MAX_RESPONSE_BYTES)
    }
}

/// A line grew past the limit without ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong(pub usize);

impl LineSplitter {
    /// A splitter that refuses lines longer than `max_line` bytes.
    pub fn with_limit(max_line: usize) -> LineSplitter {
        LineSplitter {
            buf: BytesMut::new(),
            scanned: 0,
            max_line: max_line.max(1),
        }
    }

    /// Like [`LineSplitter::push`], but a line that grows past the limit is an error (and
    /// nothing more is kept of it).
    pub fn push_bounded(&mut self, chunk: &[u8]) -> Result<Vec<bytes::Bytes>, LineTooLong> {
        let lines = self.push(chunk);
        if self.buf.len() > self.max_line || lines.iter().any(|l| l.len() > self.max_line) {
            self.buf = BytesMut::new();
            self.scanned = 0;
            return Err(LineTooLong(self.max_line));
        }
        Ok(lines)
    }

    /// Adds bytes and returns every line completed by them, without blank lines.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<bytes::Bytes> {
        self.buf.extend_from_slice(chunk);
        let mut lines = Vec::new();
        while let Some(pos) = self.buf[self.scanned..].iter().position(|b| *b == b'\n') {
            let line = self.buf.split_to(self.scanned + pos + 1).freeze();
            self.scanned = 0;
            let trimmed = line.slice(..line.len() - 1);
            if !trimmed.iter().all(u8::is_ascii_whitespace) {
                lines.push(trimmed);
            }
        }
        self.scanned = self.buf.len();
        lines
    }

    /// What is left when the stream ends: a last line without its newline, if any.
    pub fn finish(&mut self) -> Option<bytes::Bytes> {
        self.scanned = 0;
        let rest = self.buf.split().freeze();
        (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest)
    }
}

#[derive(Deserialize)]
struct WireLine {
    result: Option<WireWatchResult>,
    error: Option<WireStreamError>,
}

#[derive(Deserialize)]
struct WireStreamError {
    #[serde(default, alias = "grpc_code")]
    code: Option<i64>,
    #[serde(default)]
    http_code: Option<i64>,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize, Default)]
struct WireWatchResult {
    #[serde(default)]
    header: ResponseHeader,
    #[serde(default, deserialize_with = "de_i64")]
    watch_id: i64,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default, deserialize_with = "de_i64")]
    compact_revision: i64,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default)]
    fragment: bool,
    #[serde(default)]
    events: Vec<WireEvent>,
}

#[derive(Deserialize)]
struct WireEvent {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    kv: WireKv,
    prev_kv: Option<WireKv>,
}

/// Turns one line into a message.
pub fn parse_line(line: &[u8], codec: &Codec) -> std::result::Result<WatchMessage, String> {
    let wire: WireLine = serde_json::from_slice(line)
        .map_err(|e| format!("bad watch message ({e}): {}", snippet(line)))?;
    if let Some(err) = wire.error {
        return Ok(WatchMessage::ServerError {
            code: err.code,
            http_code: err.http_code,
            message: err.message,
        });
    }
    let r = wire.result.ok_or_else(|| {
        format!(
            "watch message with neither result nor error: {}",
            snippet(line)
        )
    })?;
    if r.canceled {
        if r.compact_revision > 0 {
            return Ok(WatchMessage::Compacted {
                compact_revision: r.compact_revision,
            });
        }
        return Ok(WatchMessage::Canceled {
            reason: r.cancel_reason,
        });
    }
    if r.created {
        return Ok(WatchMessage::Created {
            header: r.header,
            watch_id: r.watch_id,
        });
    }
    if r.events.is_empty() {
        return Ok(WatchMessage::Progress { header: r.header });
    }
    let mut events = Vec::with_capacity(r.events.len());
    for e in r.events {
        let kind = match e.kind.as_deref() {
            None | Some("PUT") => EventKind::Put,
            Some("DELETE") => EventKind::Delete,
            Some(other) => return Err(format!("unknown watch event type {other:?}")),
        };
        events.push(Event {
            kind,
            kv: e.kv.decode(codec)?,
            prev_kv: e.prev_kv.map(|kv| kv.decode(codec)).transpose()?,
        });
    }
    Ok(WatchMessage::Events {
        header: r.header,
        watch_id: r.watch_id,
        events,
        fragment: r.fragment,
    })
}

/// The state a watch stream carries between reads.
struct Reader {
    session: Option<HttpSession>,
    splitter: LineSplitter,
    pending: VecDeque<Result<WatchMessage>>,
    codec: Codec,
    endpoint: String,
    key: String,
    idle: Option<Duration>,
    done: bool,
}

impl Reader {
    /// Reads until at least one message (or the end) is queued.
    async fn fill(&mut self) {
        while self.pending.is_empty() && !self.done {
            let Some(session) = self.session.as_mut() else {
                self.done = true;
                return;
            };
            let read = session.read_body_ref();
            let outcome = match self.idle {
                Some(idle) => match tokio::time::timeout(idle, read).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.end(Some(Error::WatchIdle {
                            endpoint: self.endpoint.clone(),
                            key: self.key.clone(),
                            after: idle,
                        }));
                        return;
                    }
                },
                None => read.await,
            };
            match outcome {
                Ok(Some(chunk)) => match self.splitter.push_bounded(chunk) {
                    Ok(lines) => {
                        for line in lines {
                            self.queue_line(&line);
                        }
                    }
                    Err(LineTooLong(limit)) => {
                        self.end(Some(Error::TooLarge {
                            endpoint: self.endpoint.clone(),
                            key: self.key.clone(),
                            limit,
                        }));
                        return;
                    }
                },
                Ok(None) => {
                    if let Some(line) = self.splitter.finish() {
                        self.queue_line(&line);
                    }
                    self.end(None);
                }
                Err(e) => {
                    let err = Error::Transport {
                        endpoint: self.endpoint.clone(),
                        key: self.key.clone(),
                        reason: format!("watch read: {e}"),
                    };
                    self.end(Some(err));
                }
            }
        }
    }

    fn queue_line(&mut self, line: &[u8]) {
        let msg = parse_line(line, &self.codec).map_err(|reason| Error::Decode {
            endpoint: self.endpoint.clone(),
            key: self.key.clone(),
            reason,
        });
        self.pending.push_back(msg);
    }

    fn end(&mut self, err: Option<Error>) {
        if let Some(e) = err {
            self.pending.push_back(Err(e));
        }
        // Dropping the session closes the connection; a watch is never pooled.
        self.session = None;
        self.done = true;
    }

    async fn next(&mut self) -> Option<Result<WatchMessage>> {
        self.fill().await;
        self.pending.pop_front()
    }
}

/// A running watch: a `Stream` of messages. Dropping it (or [`WatchStream::cancel`]) closes
/// the connection, which cancels the watch on etcd's side.
pub struct WatchStream {
    endpoint: String,
    inner: Pin<Box<dyn Stream<Item = Result<WatchMessage>> + Send>>,
}

impl WatchStream {
    /// The endpoint this watch runs on.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Stops the watch and closes its connection (lua-resty-etcd's `watchcancel`).
    pub fn cancel(self) {}
}

impl Stream for WatchStream {
    type Item = Result<WatchMessage>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

fn is_auth_cancel(msg: &Result<WatchMessage>) -> bool {
    matches!(msg, Ok(WatchMessage::Canceled { reason })
        if reason.contains("Unauthenticated") || reason.contains("invalid auth token"))
}

impl Client {
    /// Watches one key.
    pub async fn watch(&self, key: &str, opts: WatchOptions) -> Result<WatchStream> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        self.open_watch(key, false, opts).await
    }

    /// Watches every key starting with `dir` (a plain prefix, as for `readdir`).
    pub async fn watchdir(&self, dir: &str, opts: WatchOptions) -> Result<WatchStream> {
        self.open_watch(dir, true, opts).await
    }

    fn watch_body(&self, key: &str, dir: bool, opts: &WatchOptions) -> Value {
        let codec = &self.inner.codec;
        let mut req = Map::new();
        req.insert("key".into(), codec.key(key).into());
        if dir {
            req.insert("range_end".into(), codec.dir_range_end(key).into());
        }
        if let Some(rev) = opts.start_revision.filter(|r| *r > 0) {
            req.insert("start_revision".into(), rev.to_string().into());
        }
        if opts.progress_notify {
            req.insert("progress_notify".into(), true.into());
        }
        if !opts.filters.is_empty() {
            let filters: Vec<Value> = opts
                .filters
                .iter()
                .map(|f| match f {
                    WatchFilter::NoPut => "NOPUT".into(),
                    WatchFilter::NoDelete => "NODELETE".into(),
                })
                .collect();
            req.insert("filters".into(), filters.into());
        }
        if opts.prev_kv {
            req.insert("prev_kv".into(), true.into());
        }
        if let Some(id) = opts.watch_id.filter(|id| *id != 0) {
            req.insert("watch_id".into(), id.to_string().into());
        }
        if opts.fragment {
            req.insert("fragment".into(), true.into());
        }
        json!({ "create_request": Value::Object(req) })
    }

    /// Opens the watch on a healthy endpoint and waits for etcd's first message, so that a
    /// refused token is renewed (once) and a dead endpoint is skipped before returning.
    async fn open_watch(&self, key: &str, dir: bool, opts: WatchOptions) -> Result<WatchStream> {
        let body =
            serde_json::to_vec(&self.watch_body(key, dir, &opts)).map_err(|e| Error::Encode {
                key: key.to_string(),
                reason: e.to_string(),
            })?;
        let body = Arc::new(body);
        let opts = &opts;
        self.call_with(Replay::Safe, key, |index| {
            let body = body.clone();
            async move {
                let inner = &self.inner;
                let mut renewed = false;
                loop {
                    let prefix = inner.api_prefix_via(index).await?;
                    let token = inner.token(index).await?;
                    let ep = inner.endpoints.get(index);
                    let (open, _peer) = inner
                        .transport
                        .open(
                            index,
                            ep,
                            "POST",
                            &format!("{prefix}/watch"),
                            Body::json(&body),
                            token.as_deref(),
                        )
                        .await
                        .map_err(|r| inner.transport_error(index, key, r))?;
                    let mut session = open.session;
                    if open.status != 200 {
                        // An error body is short; what is past 64 KiB is not read.
                        let mut buf = Vec::new();
                        while let Ok(Some(chunk)) = session.read_body_ref().await {
                            buf.extend_from_slice(chunk);
                            if buf.len() > 64 * 1024 {
                                break;
                            }
                        }
                        if open.status == 401 && token.is_some() && !renewed {
                            inner.invalidate_token(index, token.as_ref());
                            renewed = true;
                            continue;
                        }
                        return Err(inner.status_error(index, key, open.status, &buf));
                    }
                    let mut reader = Reader {
                        session: Some(session),
                        splitter: LineSplitter::with_limit(inner.transport.max_body),
                        pending: VecDeque::new(),
                        codec: inner.codec.clone(),
                        endpoint: inner.endpoint_name(index),
                        key: key.to_string(),
                        idle: opts.idle_timeout,
                        done: false,
                    };
                    let first = reader.next().await;
                    match &first {
                        Some(msg) if is_auth_cancel(msg) && token.is_some() && !renewed => {
                            inner.invalidate_token(index, token.as_ref());
                            renewed = true;
                            continue;
                        }
                        // Connection-level failures before any message count against the
                        // endpoint, so the next endpoint gets a chance.
                        Some(Err(e)) if e.is_endpoint_failure() => return Err(e.clone()),
                        _ => {}
                    }
                    if let Some(first) = first {
                        reader.pending.push_front(first);
                    }
                    let endpoint = reader.endpoint.clone();
                    let stream = futures::stream::unfold(reader, |mut reader| async move {
                        reader.next().await.map(|msg| (msg, reader))
                    });
                    return Ok(WatchStream {
                        endpoint,
                        inner: Box::pin(stream),
                    });
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::options::Serializer;

    #[test]
    fn splits_lines_whatever_the_chunking() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"{\"a\"").is_empty());
        assert!(s.push(b":1}").is_empty());
        let lines = s.push(b"\n{\"b\":2}\n\n{\"c\"");
        assert_eq!(lines, vec![&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]]);
        assert!(s.push(b"\n").len() == 1);
        assert!(s.push(b"\n").is_empty());
        assert!(s.push(b"\r\n").is_empty());
        s.push(b"{\"tail\":true}");
        assert_eq!(s.finish().as_deref(), Some(&b"{\"tail\":true}"[..]));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn parses_each_kind_of_message() {
        let codec = Codec {
            key_prefix: String::new(),
            serializer: Serializer::Json,
        };
        let p = |s: &str| parse_line(s.as_bytes(), &codec).unwrap();
        assert!(matches!(
            p(r#"{"result":{"header":{"revision":"11"},"created":true}}"#),
            WatchMessage::Created { header, .. } if header.revision == 11
        ));
        assert!(matches!(
            p(r#"{"result":{"header":{},"canceled":true,"compact_revision":"13"}}"#),
            WatchMessage::Compacted {
                compact_revision: 13
            }
        ));
        assert!(matches!(
            p(
                r#"{"result":{"created":true,"canceled":true,"cancel_reason":"rpc error: code = Unauthenticated"}}"#
            ),
            WatchMessage::Canceled { .. }
        ));
        assert!(matches!(
            p(
                r#"{"error":{"grpc_code":1,"http_code":408,"message":"grpc: the client connection is closing"}}"#
            ),
            WatchMessage::ServerError {
                code: Some(1),
                http_code: Some(408),
                ..
            }
        ));
        assert!(matches!(
            p(r#"{"error":{"code":14,"message":"unavailable"}}"#),
            WatchMessage::ServerError {
                code: Some(14),
                http_code: None,
                ..
            }
        ));
        assert!(matches!(
            p(r#"{"result":{"header":{"revision":"20"}}}"#),
            WatchMessage::Progress { header } if header.revision == 20
        ));
        // "a" = YQ==, "1" = MQ==
        match p(
            r#"{"result":{"header":{"revision":"5"},"events":[{"kv":{"key":"YQ==","value":"MQ==","mod_revision":"5"}},{"type":"DELETE","kv":{"key":"YQ==","mod_revision":"5"}}]}}"#,
        ) {
            WatchMessage::Events { events, .. } => {
                assert_eq!(events.len(), 2);
                assert_eq!(events[0].kind, EventKind::Put);
                assert_eq!(events[0].kv.value, Ok(serde_json::json!(1)));
                assert_eq!(events[1].kind, EventKind::Delete);
                assert_eq!(events[1].kv.key, "a");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse_line(b"{not json", &codec).is_err());
    }
}
