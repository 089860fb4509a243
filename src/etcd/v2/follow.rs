//! Following a v2 directory: read it, then wait recursively from each next index, so that no
//! event is lost or repeated, across endpoint failures and cleared history.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;

use super::{Node, V2GetOptions, V2Response, V2WaitOptions, V2};
use crate::etcd::error::{Error, V2Code};

/// What a follower reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    /// The directory as read: first, and again after etcd's history no longer reached back
    /// to the next index (`resynced`). Changes follow from its `etcd_index + 1`.
    Snapshot {
        response: V2Response,
        resynced: bool,
    },
    /// One change, in index order.
    Change(V2Response),
}

/// A `Stream` of [`FollowEvent`]s that never ends on its own: failures are logged and retried
/// from the last index, on whichever endpoint is healthy.
pub struct Follow {
    inner: Pin<Box<dyn Stream<Item = FollowEvent> + Send>>,
}

impl Stream for Follow {
    type Item = FollowEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FollowEvent>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for Follow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Follow")
    }
}

struct State {
    v2: V2,
    dir: String,
    /// The next index to wait from; `None` when the directory must be read (again).
    next: Option<u64>,
    resync: bool,
    backoff: Duration,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl State {
    async fn pause(&mut self, what: &str, e: &Error) {
        log::warn!(
            "following {}: {what}: {e}; retrying in {:?}",
            self.dir,
            self.backoff
        );
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    async fn step(&mut self) -> FollowEvent {
        loop {
            match self.next {
                None => {
                    let opts = V2GetOptions {
                        recursive: true,
                        sorted: true,
                    };
                    let response = match self.v2.get(&self.dir, opts).await {
                        Ok(r) => r,
                        // Not there yet: an empty directory as of the index etcd gave.
                        Err(Error::V2 {
                            code: V2Code::KeyNotFound,
                            index,
                            ..
                        }) => V2Response {
                            action: super::Action::Get,
                            node: Node {
                                key: self.dir.clone(),
                                dir: true,
                                ..Default::default()
                            },
                            prev_node: None,
                            etcd_index: Some(index),
                        },
                        Err(e) => {
                            self.pause("reading", &e).await;
                            continue;
                        }
                    };
                    let index = response.etcd_index.unwrap_or(response.node.modified_index);
                    // At the end of the index space there is nothing to wait for: read again.
                    self.next = index.checked_add(1);
                    self.backoff = FIRST_BACKOFF;
                    let resynced = std::mem::take(&mut self.resync);
                    return FollowEvent::Snapshot { response, resynced };
                }
                Some(next) => {
                    let opts = V2WaitOptions {
                        recursive: true,
                        wait_index: Some(next),
                    };
                    match self.v2.wait(&self.dir, opts).await {
                        Ok(change) => {
                            self.next = change.node.modified_index.checked_add(1);
                            self.backoff = FIRST_BACKOFF;
                            return FollowEvent::Change(change);
                        }
                        Err(Error::V2 {
                            code: V2Code::EventIndexCleared,
                            ..
                        }) => {
                            log::info!(
                                "following {}: index {next} left etcd's history; reading again",
                                self.dir
                            );
                            self.next = None;
                            self.resync = true;
                        }
                        Err(e) => self.pause("waiting", &e).await,
                    }
                }
            }
        }
    }
}

impl V2 {
    /// Follows `dir`: a snapshot, then every change below it.
    pub fn follow(&self, dir: &str) -> Follow {
        let state = State {
            v2: self.clone(),
            dir: dir.to_string(),
            next: None,
            resync: false,
            backoff: FIRST_BACKOFF,
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            let event = state.step().await;
            Some((event, state))
        });
        Follow {
            inner: Box::pin(stream),
        }
    }
}
