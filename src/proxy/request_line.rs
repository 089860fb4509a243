//! What nginx refuses or rewrites about a request before anything else looks at it: TRACE,
//! an absolute-form target (routed by its own host, sent upstream in origin form), and a
//! missing or malformed Host.

use pingora_http::RequestHeader;

/// Checks `req` and rewrites an absolute-form target; the status to answer when refused.
pub fn check(req: &mut RequestHeader) -> Result<(), u16> {
    if req.method == http::Method::TRACE {
        return Err(405);
    }
    let raw = req.raw_path();
    if !raw.starts_with(b"/") && raw != b"*" && req.method != http::Method::CONNECT {
        let authority = http::Uri::try_from(raw)
            .ok()
            .and_then(|u| u.authority().map(|a| a.as_str().to_string()));
        let Some(authority) = authority else {
            return Err(400);
        };
        // As nginx: the target's host wins over the Host header.
        req.insert_header(http::header::HOST, authority.as_str())
            .map_err(|_| 400u16)?;
        let origin = req.uri.clone();
        req.set_uri(origin);
    }
    let hosts: Vec<&[u8]> = req
        .headers
        .get_all(http::header::HOST)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    match hosts.as_slice() {
        [] if req.version == http::Version::HTTP_11 => Err(400),
        [] => Ok(()),
        [one] if valid_host(one) => Ok(()),
        _ => Err(400),
    }
}

/// A Host value nginx accepts: a name or address (`[v6]` too) and an optional port.
fn valid_host(h: &[u8]) -> bool {
    let (host, port) = if h.starts_with(b"[") {
        let Some(end) = h.iter().position(|b| *b == b']') else {
            return false;
        };
        let rest = &h[end + 1..];
        let port = match rest {
            [] => None,
            [b':', p @ ..] => Some(p),
            _ => return false,
        };
        (&h[..=end], port)
    } else {
        match h.iter().position(|b| *b == b':') {
            Some(i) => (&h[..i], Some(&h[i + 1..])),
            None => (h, None),
        }
    };
    let name_ok = !host.is_empty()
        && !host.windows(2).any(|w| w == b"..")
        && host
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=[]:".contains(b));
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(p)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
                .is_some_and(|n| n <= 65535)
    });
    name_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &[u8], host: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target, None).unwrap();
        if let Some(h) = host {
            r.insert_header("Host", h).unwrap();
        }
        r
    }

    #[test]
    fn nginx_rules() {
        assert_eq!(check(&mut req(b"/", None)), Err(400));
        assert_eq!(check(&mut req(b"/", Some(""))), Err(400));
        assert_eq!(check(&mut req(b"/", Some("t/admin"))), Err(400));
        assert_eq!(check(&mut req(b"/", Some("t:99999999"))), Err(400));
        assert_eq!(check(&mut req(b"/", Some("t:8080"))), Ok(()));
        assert_eq!(check(&mut req(b"/", Some("[::1]:80"))), Ok(()));
        let mut r = req(b"http://good.example/h/x?q=1", Some("other"));
        assert_eq!(check(&mut r), Ok(()));
        assert_eq!(r.raw_path(), b"/h/x?q=1");
        assert_eq!(r.headers["host"], "good.example");
        let mut t = RequestHeader::build("TRACE", b"/", None).unwrap();
        assert_eq!(check(&mut t), Err(405));
    }
}
