//! The one place that writes the answers the gateway makes itself: no route, no upstream, an
//! upstream that failed, and every plugin's refusal, redirect or mock. Each goes through the
//! header and body filters of the request's plugins (so CORS headers reach a 401 too), with
//! APISIX's bodies.

use bytes::Bytes;
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::Ctx;
use crate::plugin::answer_page;
use crate::plugin::Answer;
use crate::tables::Unroutable;

/// APISIX's answer when a matched route cannot be proxied (its service, plugin_config or
/// upstream is missing): nginx's page for the status.
pub fn unroutable(why: &Unroutable) -> Answer {
    Answer::status(why.status)
}

/// The longest request target, a header line, and a whole header (nginx's
/// `large_client_header_buffers 4 8k`).
const MAX_TARGET: usize = 8 * 1024;
const MAX_HEADER_LINE: usize = 8 * 1024;
const MAX_HEADER: usize = 32 * 1024;

/// A request too large to take: its target (414), a header or all of them (431), or its
/// declared body (413).
pub fn too_large(req: &pingora_http::RequestHeader, max_body: u64) -> Option<Answer> {
    if req.raw_path().len() > MAX_TARGET {
        return Some(Answer::status(414));
    }
    let mut total = 0;
    for (name, value) in req.headers.iter() {
        let line = name.as_str().len() + value.len() + 4;
        if line > MAX_HEADER_LINE {
            return Some(Answer::status(431));
        }
        total += line;
    }
    if total > MAX_HEADER {
        return Some(Answer::status(431));
    }
    if max_body > 0 {
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body) {
            return Some(Answer::status(413));
        }
    }
    None
}

/// APISIX's answer when no route matches.
pub fn no_route() -> Answer {
    Answer::error_msg(404, "404 Route Not Found")
}

/// Writes `answer`, after the request's header and body filters, keeping the connection usable.
pub async fn send(session: &mut Session, ctx: &mut Ctx, answer: Answer) -> Result<()> {
    let status = answer.status;
    let mut resp = ResponseHeader::build(status, Some(answer.headers.len() + 3))?;
    for (name, value) in &answer.headers {
        if let Err(e) = resp.insert_header(name.clone(), value.as_str()) {
            // From a plugin's settings; the answer still goes out.
            log::warn!("answer {status}: header {name}: {e}");
        }
    }
    // No body of its own: nginx's page from 300 on (redirects too), nothing below.
    let page = answer.body.is_none() && status >= 300;
    let mut body = Some(answer.body.unwrap_or_else(|| {
        if page {
            answer_page(status)
        } else {
            Bytes::new()
        }
    }));
    if page && resp.headers.get(http::header::CONTENT_TYPE).is_none() {
        resp.insert_header("Content-Type", "text/html; charset=utf-8")?;
    }
    resp.insert_header("Server", "portico")?;
    ctx.header_filters(session, &mut resp);
    ctx.body_filters(session, &mut body, true);
    let len = body.as_ref().map_or(0, Bytes::len);
    resp.remove_header(&http::header::TRANSFER_ENCODING);
    resp.insert_header("Content-Length", len.to_string())?;
    ctx.plugins.status = resp.status.as_u16();
    ctx.response_header_bytes = super::finish::response_header_len(&resp);
    let head = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(if head { None } else { body }, true)
        .await
}
