//! `csrf`: unsafe methods need a header token equal to the cookie the gateway handed out,
//! signed with the route's key (the double-submit cookie pattern, APISIX's token format).

use std::sync::Arc;

use base64::Engine;
use pingora_http::ResponseHeader;
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse_settings, Answer, Cx, Factory, Flow, Plugin};

pub struct CsrfFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    key: String,
    #[serde(default = "default_expires")]
    expires: i64,
    #[serde(default = "default_name")]
    name: String,
}

fn default_expires() -> i64 {
    7200
}

fn default_name() -> String {
    "apisix-csrf-token".into()
}

struct Csrf {
    s: Settings,
}

impl Factory for CsrfFactory {
    fn name(&self) -> &'static str {
        "csrf"
    }

    fn priority(&self) -> i32 {
        2980
    }

    fn encrypt_fields(&self) -> &'static [&'static str] {
        &["key"]
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        super::check_range("expires", s.expires, i64::MIN, Some(10 * 365 * 86_400))?;
        if http::HeaderName::from_bytes(s.name.as_bytes()).is_err() {
            return Err(format!(
                "property \"name\" validation failed: {:?} is not a header name",
                s.name
            ));
        }
        Ok(Arc::new(Csrf { s }))
    }
}

/// A number as Lua prints it (`%.14g`), which is what APISIX's signature covers.
fn g14(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let sci = format!("{x:.13e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if !(-4..14).contains(&exp) {
        let m = trim(mantissa.to_string());
        format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        let decimals = (13 - exp).max(0) as usize;
        trim(format!("{x:.decimals$}"))
    }
}

fn sign(random: f64, expires: f64, key: &str) -> String {
    let text = format!(
        "{{expires:{},random:{},key:{key}}}",
        g14(expires),
        g14(random)
    );
    let digest = openssl::sha::sha256(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// nginx's `ngx.cookie_time`: `Thu, 18-Nov-10 11:27:35 GMT` (4-digit years past 2037).
fn cookie_time(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    let year = if y <= 2037 {
        format!("{:02}", y % 100)
    } else {
        y.to_string()
    };
    format!(
        "{weekday}, {d:02}-{month}-{year} {:02}:{:02}:{:02} GMT",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

impl Csrf {
    fn token(&self) -> String {
        // Fourteen significant digits at most, so the number reads back as it was signed.
        let random = rand::thread_rng().gen_range(1..100_000_000_000_000u64) as f64 / 1e14;
        let expires = now();
        let t = json!({"random": random, "expires": expires, "sign": sign(random, expires as f64, &self.s.key)});
        base64::engine::general_purpose::STANDARD.encode(t.to_string())
    }

    fn valid(&self, token: &str) -> bool {
        let Some(t) = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        else {
            return false;
        };
        let (Some(random), Some(expires)) = (
            t.get("random").and_then(Value::as_f64),
            t.get("expires").and_then(Value::as_f64),
        ) else {
            return false;
        };
        if self.s.expires > 0 && now() as f64 - expires > self.s.expires as f64 {
            return false;
        }
        let want = sign(random, expires, &self.s.key);
        t.get("sign").and_then(Value::as_str).is_some_and(|s| {
            // Lengths first: memcmp::eq asserts they are equal.
            s.len() == want.len() && openssl::memcmp::eq(s.as_bytes(), want.as_bytes())
        })
    }
}

impl Plugin for Csrf {
    fn access(&self, cx: &mut Cx<'_>) -> Flow {
        if matches!(
            cx.req().method,
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        ) {
            return Flow::Continue;
        }
        let refuse = |m: &str| Flow::Respond(Answer::error_msg(401, m));
        let Some(header) = cx
            .header(&self.s.name)
            .filter(|h| !h.is_empty())
            .map(str::to_string)
        else {
            return refuse("no csrf token in headers");
        };
        let Some(cookie) = cx.var(&format!("cookie_{}", self.s.name)) else {
            return refuse("no csrf cookie");
        };
        if header != cookie {
            return refuse("csrf token mismatch");
        }
        if !self.valid(&cookie) {
            return refuse("Failed to verify the csrf token signature");
        }
        Flow::Continue
    }

    fn header_filter(&self, _cx: &mut Cx<'_>, resp: &mut ResponseHeader) {
        let cookie = format!(
            "{}={};path=/;SameSite=Lax;Expires={}",
            self.s.name,
            self.token(),
            cookie_time(now().saturating_add(self.s.expires.max(0)))
        );
        let _ = resp.append_header("Set-Cookie", cookie);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_numbers_and_apisix_signature() {
        assert_eq!(g14(0.42986319716139), "0.42986319716139");
        assert_eq!(g14(2643119624.0), "2643119624");
        assert_eq!(g14(0.5), "0.5");
        assert_eq!(g14(1e-5), "1e-05");
        // The token in APISIX's own tests.
        assert!(sign(0.42986319716139, 2643119624.0, "userkey").starts_with("484e0685"));
        assert_eq!(cookie_time(1_290_079_655), "Thu, 18-Nov-10 11:27:35 GMT");
        let c = Csrf {
            s: Settings {
                key: "k".into(),
                expires: 7200,
                name: default_name(),
            },
        };
        assert!(c.valid(&c.token()));
        assert!(!c.valid("bm9wZQ=="));
    }
}
