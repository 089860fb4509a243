//! The client: endpoint choice, failover, auth tokens and API prefix, shared by every call.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::codec::Codec;
use super::endpoint::{Endpoint, EndpointSet};
use super::error::{Error, Result};
use super::options::ClientOptions;
use super::transport::{Body, Response, Transport};
use super::types::{Version, WireAuthenticate, WireError};

/// An etcd v3 client over the JSON gateway. Cheap to clone; clones share connections,
/// endpoint health and auth tokens.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub endpoints: EndpointSet,
    pub transport: Transport,
    pub codec: Codec,
    pub timeout: Duration,
    credentials: Option<(String, String)>,
    /// Simple tokens live in one member's memory, so each endpoint keeps its own.
    tokens: Vec<TokenSlot>,
    api_prefix: tokio::sync::OnceCell<String>,
    authentications: AtomicU64,
}

/// What we know about auth on one endpoint.
#[derive(Clone)]
enum TokenState {
    Unknown,
    Token(Arc<str>),
    /// etcd said auth is not enabled: send no token.
    NotNeeded,
}

struct TokenSlot {
    state: Mutex<TokenState>,
    /// Held while authenticating, so concurrent callers share one authenticate.
    refresh: tokio::sync::Mutex<()>,
}

/// Which calls may be sent again on another endpoint after a failure that happened after the
/// request may have reached etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    /// Reads, and writes whose repetition leaves the same state.
    Safe,
    /// Only retried when the connection could not even be made.
    ConnectOnly,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.endpoints.len())
            .field("key_prefix", &self.inner.codec.key_prefix)
            .finish()
    }
}

impl Client {
    /// Checks the options and loads TLS material; connects lazily.
    pub fn new(options: ClientOptions) -> Result<Client> {
        if options.endpoints.is_empty() {
            return Err(Error::Config("at least one endpoint is needed".into()));
        }
        let endpoints = options
            .endpoints
            .iter()
            .map(|e| Endpoint::parse(e))
            .collect::<Result<Vec<_>>>()?;
        let credentials = match (options.user, options.password) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            _ => {
                return Err(Error::Config(
                    "user and password go together: give both or neither".into(),
                ))
            }
        };
        if options.timeout.is_zero() {
            return Err(Error::Config("timeout must be above zero".into()));
        }
        let api_prefix = tokio::sync::OnceCell::new();
        if let Some(prefix) = options.api_prefix {
            let prefix = format!("/{}", prefix.trim_matches('/'));
            api_prefix
                .set(prefix)
                .map_err(|_| Error::Config("api prefix set twice".into()))?;
        }
        if options.tls.verify && options.tls.sni.is_none() {
            for ep in endpoints.iter().filter(|e| e.tls && e.ip().is_some()) {
                log::warn!(
                    "etcd {ep}: the certificate chain is verified but not the name; \
                     set the TLS sni to a name in etcd's certificate to check it too"
                );
            }
        }
        let transport = Transport::new(
            endpoints.len(),
            &options.tls,
            options.unix_socket,
            &options.extra_headers,
            options.max_response_bytes.max(1),
        )?;
        let tokens = endpoints
            .iter()
            .map(|_| TokenSlot {
                state: Mutex::new(TokenState::Unknown),
                refresh: tokio::sync::Mutex::new(()),
            })
            .collect();
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints: EndpointSet::new(endpoints, options.health),
                transport,
                codec: Codec {
                    key_prefix: options.key_prefix,
                    serializer: options.serializer,
                },
                timeout: options.timeout,
                credentials,
                tokens,
                api_prefix,
                authentications: AtomicU64::new(0),
            }),
        })
    }

    /// How many times this client has authenticated: a sign of token churn when it climbs.
    pub fn authentications(&self) -> u64 {
        self.inner.authentications.load(Ordering::Relaxed)
    }

    /// The API prefix in use (`/v3`, …), detecting it if needed.
    pub async fn api_prefix(&self) -> Result<String> {
        self.call_with(Replay::Safe, "", |index| async move {
            self.inner.api_prefix_via(index).await
        })
        .await
    }

    /// etcd's server and cluster versions (`GET /version`).
    pub async fn version(&self) -> Result<Version> {
        self.call_with(Replay::Safe, "", |index| async move {
            self.inner.fetch_version(index).await
        })
        .await
    }

    /// Posts `body` to `{api_prefix}{path}` with endpoint choice, failover, auth and timeout,
    /// and decodes a 200 answer as `T`.
    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
        key: &str,
        replay: Replay,
    ) -> Result<T> {
        self.post_decoded(path, body, key, replay, |w: T, _| Ok(w))
            .await
    }

    /// Like [`Client::post`], then turns the wire answer into the caller's type with `convert`;
    /// a failure there names the endpoint that answered.
    pub(crate) async fn post_decoded<W, T, F>(
        &self,
        path: &str,
        body: &serde_json::Value,
        key: &str,
        replay: Replay,
        convert: F,
    ) -> Result<T>
    where
        W: DeserializeOwned,
        F: Fn(W, &Codec) -> Result<T, String>,
    {
        let body = serde_json::to_vec(body).map_err(|e| Error::Encode {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        let (body, convert) = (&body, &convert);
        self.call_with(replay, key, |index| async move {
            let inner = &self.inner;
            let resp = inner.post_authed(index, path, body, key).await?;
            let wire: W = inner.decode(index, key, resp)?;
            convert(wire, &inner.codec).map_err(|reason| Error::Decode {
                endpoint: inner.endpoint_name(index),
                key: key.to_string(),
                reason,
            })
        })
        .await
    }

    /// Runs `attempt` on a healthy endpoint under the request timeout, moving on to the next
    /// endpoint after a failure when retry is on.
    pub(crate) async fn call_with<'a, T, F, Fut>(
        &'a self,
        replay: Replay,
        key: &str,
        attempt: F,
    ) -> Result<T>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + 'a,
    {
        self.call_limited(replay, key, Some(self.inner.timeout), attempt)
            .await
    }

    /// [`Client::call_with`] with a chosen time limit per attempt; `None` for long polls.
    pub(crate) async fn call_limited<'a, T, F, Fut>(
        &'a self,
        replay: Replay,
        key: &str,
        limit: Option<Duration>,
        attempt: F,
    ) -> Result<T>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + 'a,
    {
        let inner = &self.inner;
        let mut tried = Vec::new();
        let mut last_error = None;
        loop {
            let index = match inner.endpoints.pick(&tried) {
                Ok(i) => i,
                Err(e) => return Err(last_error.unwrap_or(e)),
            };
            let result = match limit {
                None => attempt(index).await,
                Some(limit) => match tokio::time::timeout(limit, attempt(index)).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::Timeout {
                        endpoint: inner.endpoints.get(index).to_string(),
                        key: key.to_string(),
                        after: limit,
                    }),
                },
            };
            match result {
                Ok(v) => {
                    inner.endpoints.report_success(index);
                    return Ok(v);
                }
                Err(e) if e.is_endpoint_failure() => {
                    inner.endpoints.report_failure(index, &e);
                    let connect_failed = matches!(&e, Error::Transport { reason, .. } if reason.starts_with("connect"));
                    let may_retry =
                        inner.endpoints.retry() && (replay == Replay::Safe || connect_failed);
                    if !may_retry {
                        return Err(e);
                    }
                    log::info!("{e}; trying the next endpoint");
                    tried.push(index);
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Inner {
    pub fn endpoint_name(&self, index: usize) -> String {
        self.endpoints.get(index).to_string()
    }

    pub fn transport_error(&self, index: usize, key: &str, reason: String) -> Error {
        if reason == super::transport::TOO_LARGE {
            return Error::TooLarge {
                endpoint: self.endpoint_name(index),
                key: key.to_string(),
                limit: self.transport.max_body,
            };
        }
        Error::Transport {
            endpoint: self.endpoint_name(index),
            key: key.to_string(),
            reason,
        }
    }

    async fn fetch_version(&self, index: usize) -> Result<Version> {
        let ep = self.endpoints.get(index);
        let resp = self
            .transport
            .request(index, ep, "GET", "/version", Body::empty(), None)
            .await
            .map_err(|r| self.transport_error(index, "", r))?;
        self.decode(index, "", resp)
    }

    pub async fn api_prefix_via(&self, index: usize) -> Result<String> {
        self.api_prefix
            .get_or_try_init(|| async {
                let v = self.fetch_version(index).await?;
                let prefix = api_prefix_for(&v.etcdserver);
                log::info!(
                    "etcd {} is version {}: using API prefix {prefix}",
                    self.endpoint_name(index),
                    v.etcdserver
                );
                Ok(prefix.to_string())
            })
            .await
            .cloned()
    }

    /// The token to send to this endpoint, authenticating once if none is cached.
    pub async fn token(&self, index: usize) -> Result<Option<Arc<str>>> {
        let Some((user, password)) = &self.credentials else {
            return Ok(None);
        };
        let slot = &self.tokens[index];
        let cached = || match &*slot.state.lock() {
            TokenState::Token(t) => Some(Some(t.clone())),
            TokenState::NotNeeded => Some(None),
            TokenState::Unknown => None,
        };
        if let Some(t) = cached() {
            return Ok(t);
        }
        let _guard = slot.refresh.lock().await;
        if let Some(t) = cached() {
            return Ok(t);
        }
        let state = self.authenticate(index, user, password).await?;
        let token = match &state {
            TokenState::Token(t) => Some(t.clone()),
            _ => None,
        };
        *slot.state.lock() = state;
        Ok(token)
    }

    /// `Authorization: Basic …` for the v2 API, when credentials are set.
    pub fn basic_auth(&self) -> Option<String> {
        use base64::Engine;
        self.credentials.as_ref().map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        })
    }

    /// Drops the cached token if it is still the one that was refused.
    pub fn invalidate_token(&self, index: usize, used: Option<&Arc<str>>) {
        let mut state = self.tokens[index].state.lock();
        let same = match (&*state, used) {
            (TokenState::Token(t), Some(u)) => Arc::ptr_eq(t, u),
            (TokenState::NotNeeded, None) => true,
            _ => false,
        };
        if same {
            *state = TokenState::Unknown;
        }
    }

    async fn authenticate(&self, index: usize, user: &str, password: &str) -> Result<TokenState> {
        self.authentications.fetch_add(1, Ordering::Relaxed);
        let prefix = self.api_prefix_via(index).await?;
        let body = serde_json::to_vec(&serde_json::json!({"name": user, "password": password}))
            .map_err(|e| Error::Encode {
                key: String::new(),
                reason: e.to_string(),
            })?;
        let ep = self.endpoints.get(index);
        let resp = self
            .transport
            .request(
                index,
                ep,
                "POST",
                &format!("{prefix}/auth/authenticate"),
                Body::json(&body),
                None,
            )
            .await
            .map_err(|r| self.transport_error(index, "", r))?;
        if resp.status == 412 {
            let err = parse_error(&resp.body);
            if err.message.contains("authentication is not enabled") {
                log::info!(
                    "etcd {}: auth is not enabled; sending requests without a token",
                    self.endpoint_name(index)
                );
                return Ok(TokenState::NotNeeded);
            }
        }
        if resp.status == 400 || resp.status == 401 || resp.status == 403 || resp.status == 412 {
            let err = parse_error(&resp.body);
            return Err(Error::Auth {
                endpoint: self.endpoint_name(index),
                message: format!("user {user:?}: {}", err.best_message()),
            });
        }
        let auth: WireAuthenticate = self.decode(index, "", resp)?;
        if auth.token.is_empty() {
            return Err(Error::Auth {
                endpoint: self.endpoint_name(index),
                message: "etcd returned an empty token".into(),
            });
        }
        Ok(TokenState::Token(auth.token.into()))
    }

    /// A POST with the endpoint's token; on "invalid auth token" (expiry, restart) it
    /// re-authenticates once and sends again.
    pub async fn post_authed(
        &self,
        index: usize,
        path: &str,
        body: &[u8],
        key: &str,
    ) -> Result<Response> {
        let prefix = self.api_prefix_via(index).await?;
        let url = format!("{prefix}{path}");
        let ep = self.endpoints.get(index);
        let mut retried = false;
        loop {
            let token = self.token(index).await?;
            let resp = self
                .transport
                .request(index, ep, "POST", &url, Body::json(body), token.as_deref())
                .await
                .map_err(|r| self.transport_error(index, key, r))?;
            log::debug!(
                "etcd {} {url}: HTTP {}",
                self.endpoint_name(index),
                resp.status
            );
            if resp.status == 401 && self.credentials.is_some() && !retried {
                log::info!(
                    "etcd {}: token refused ({}); authenticating again",
                    self.endpoint_name(index),
                    parse_error(&resp.body).best_message()
                );
                self.invalidate_token(index, token.as_ref());
                retried = true;
                continue;
            }
            return Ok(resp);
        }
    }

    /// Turns an answer into `T`, or into the error etcd described.
    pub fn decode<T: DeserializeOwned>(
        &self,
        index: usize,
        key: &str,
        resp: Response,
    ) -> Result<T> {
        if resp.status == 200 {
            return serde_json::from_slice(&resp.body).map_err(|e| Error::Decode {
                endpoint: self.endpoint_name(index),
                key: key.to_string(),
                reason: format!("{e}: {}", snippet(&resp.body)),
            });
        }
        Err(self.status_error(index, key, resp.status, &resp.body))
    }

    pub fn status_error(&self, index: usize, key: &str, status: u16, body: &[u8]) -> Error {
        let err = parse_error(body);
        let message = err.best_message();
        let endpoint = self.endpoint_name(index);
        if err.code == Some(11) && message.contains("compacted") {
            return Error::Compacted {
                endpoint,
                key: key.to_string(),
                compact_revision: None,
            };
        }
        if status == 401
            || (status == 403 && err.code == Some(7))
            || message.contains("user name is empty")
        {
            return Error::Auth {
                endpoint,
                message: if key.is_empty() {
                    message
                } else {
                    format!("key {key:?}: {message}")
                },
            };
        }
        Error::Status {
            endpoint,
            key: key.to_string(),
            status,
            code: err.code,
            message: if message.is_empty() {
                snippet(body)
            } else {
                message
            },
        }
    }
}

impl WireError {
    fn best_message(&self) -> String {
        if !self.message.is_empty() {
            self.message.clone()
        } else {
            self.error.clone()
        }
    }
}

fn parse_error(body: &[u8]) -> WireError {
    serde_json::from_slice(body).unwrap_or_default()
}

/// The start of a body, for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    if body.len() > MAX {
        format!("{text}…")
    } else {
        text.into_owned()
    }
}

/// 3.2 → `/v3alpha`, 3.3 → `/v3beta`, 3.4 and later → `/v3`.
pub fn api_prefix_for(server_version: &str) -> &'static str {
    let mut parts = server_version
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    match (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) {
        (3, 0..=2) => "/v3alpha",
        (3, 3) => "/v3beta",
        _ => "/v3",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_prefix_from_version() {
        assert_eq!(api_prefix_for("3.2.32"), "/v3alpha");
        assert_eq!(api_prefix_for("3.3.27"), "/v3beta");
        assert_eq!(api_prefix_for("3.4.23"), "/v3");
        assert_eq!(api_prefix_for("3.5.9"), "/v3");
        assert_eq!(api_prefix_for("4.0.0"), "/v3");
    }
}
