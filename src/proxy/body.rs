//! Request bodies that plugins read whole (`hmac-auth`'s digest, `request-validation`'s
//! schema) before the upstream may have them.
//!
//! A body Pingora can replay (a `Content-Length` within its 64 KiB retry buffer) is read
//! before the request phases, so the plugins decide on it before any upstream is asked, and
//! Pingora forwards it unchanged. A bigger or chunked one cannot be read early without being
//! lost; it is held back instead: the upstream request starts, no body byte goes out until the
//! body has all arrived and the plugins agreed, and a refusal aborts the upstream request.

use bytes::{Bytes, BytesMut};
use pingora_proxy::Session;

use crate::plugin::{Answer, RequestState};

/// The most body Pingora replays after it was read (its retry buffer, `BODY_BUF_LIMIT`).
const REPLAYABLE: u64 = 64 * 1024;

/// APISIX's answer for a body above what a plugin reads.
pub(super) fn too_big(size: u64, max: u64) -> Answer {
    Answer::message(
        413,
        &format!("request size {size} is greater than the maximum size {max} allowed"),
    )
}

/// Gets the body ready for plugins that read up to `wants` bytes of it whole (no more than
/// `client_max_body_size`, 0: none): read now, or held back into `held` until it has arrived.
pub(super) async fn prepare(
    session: &mut Session,
    state: &mut RequestState,
    held: &mut Option<Held>,
    wants: u64,
    max_body: u64,
) -> Result<(), Answer> {
    let max = match max_body {
        0 => wants,
        m => wants.min(m),
    };
    read_early(session, state, max).await?;
    if state.body_later && held.is_none() {
        *held = Some(Held::new(max));
    }
    Ok(())
}

/// Reads the body into `state.body` if it is small enough to replay; otherwise marks it to be
/// checked when it has arrived (`state.body_later`). A body above `max` is refused at once
/// when its length says so.
async fn read_early(
    session: &mut Session,
    state: &mut RequestState,
    max: u64,
) -> Result<(), Answer> {
    if state.body.is_some() || state.body_later {
        return Ok(());
    }
    if session.is_body_empty() {
        state.body = Some(Bytes::new());
        return Ok(());
    }
    let length = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(n) if n > max => Err(too_big(n, max)),
        Some(n) if n <= REPLAYABLE => {
            // Kept by Pingora as it is read, and sent upstream from there.
            session.enable_retry_buffering();
            let mut buf = BytesMut::with_capacity(n as usize);
            loop {
                match session.read_request_body().await {
                    Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                    Ok(None) => break,
                    // A client that stopped sending (client_body_timeout) or went away.
                    Err(e) => {
                        log::info!("reading the request body for plugins: {e}");
                        return Err(Answer::status(400));
                    }
                }
            }
            state.body = Some(buf.freeze());
            Ok(())
        }
        _ => {
            state.body_later = true;
            Ok(())
        }
    }
}

/// A body held back until it has all arrived (see the module doc).
pub(super) struct Held {
    buf: BytesMut,
    /// The most it may hold.
    max: u64,
}

impl Held {
    pub(super) fn new(max: u64) -> Held {
        Held {
            buf: BytesMut::new(),
            max,
        }
    }

    /// Takes `body`'s piece in; the whole body once `end`, or an empty piece before (Pingora
    /// sends nothing for it). Above the limit, APISIX's 413.
    pub(super) fn take(
        &mut self,
        body: &mut Option<Bytes>,
        end: bool,
    ) -> Result<Option<Bytes>, Answer> {
        if let Some(b) = body.take() {
            self.buf.extend_from_slice(&b);
        }
        if self.buf.len() as u64 > self.max {
            return Err(too_big(self.buf.len() as u64, self.max));
        }
        if !end {
            *body = Some(Bytes::new());
            return Ok(None);
        }
        Ok(Some(std::mem::take(&mut self.buf).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_bodies_come_out_whole_and_bounded() {
        let mut h = Held::new(10);
        let mut piece = Some(Bytes::from_static(b"abcd"));
        assert_eq!(h.take(&mut piece, false).ok(), Some(None));
        assert_eq!(piece.as_deref(), Some(&b""[..]), "nothing goes out yet");
        let mut piece = Some(Bytes::from_static(b"efg"));
        assert_eq!(
            h.take(&mut piece, true).ok(),
            Some(Some(Bytes::from_static(b"abcdefg")))
        );
        let mut h = Held::new(3);
        let mut piece = Some(Bytes::from_static(b"abcd"));
        assert_eq!(h.take(&mut piece, false).err().map(|a| a.status), Some(413));
    }
}
