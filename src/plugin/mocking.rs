//! `mocking`: answers with a fixed or generated example instead of asking the upstream.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};

use super::template::Template;
use super::{check_range, parse_settings, Answer, Cx, Factory, Flow, Plugin};

pub struct MockingFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    delay: u64,
    #[serde(default = "default_status")]
    response_status: u16,
    #[serde(default = "default_type")]
    content_type: String,
    response_example: Option<String>,
    response_schema: Option<Value>,
    #[serde(default = "yes")]
    with_mock_header: bool,
    response_headers: Option<serde_json::Map<String, Value>>,
}

fn default_status() -> u16 {
    200
}

fn default_type() -> String {
    "application/json;charset=utf8".into()
}

fn yes() -> bool {
    true
}

struct Mocking {
    delay: Duration,
    status: u16,
    content_type: String,
    example: Option<Template>,
    schema: Option<Value>,
    xml: bool,
    mock_header: bool,
    headers: Vec<(String, Template)>,
}

impl Factory for MockingFactory {
    fn name(&self) -> &'static str {
        "mocking"
    }

    fn priority(&self) -> i32 {
        10900
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        check_range("response_status", s.response_status, 100, Some(599))?;
        check_range("delay", s.delay, 0, Some(86_400))?;
        if s.response_example.is_none() && s.response_schema.is_none() {
            return Err("object matches none of the required: [\"response_example\"] or [\"response_schema\"]".into());
        }
        let kind = s
            .content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if ![
            "application/xml",
            "application/json",
            "text/plain",
            "text/html",
            "text/xml",
        ]
        .contains(&kind.as_str())
        {
            return Err("unsupported content type!".into());
        }
        let headers = s
            .response_headers
            .iter()
            .flatten()
            .map(|(k, v)| match v {
                Value::String(t) => Ok((k.clone(), Template::parse(t))),
                Value::Number(n) => Ok((k.clone(), Template::parse(&n.to_string()))),
                _ => Err("property \"response_headers\" validation failed: wrong type".to_string()),
            })
            .collect::<Result<_, _>>()?;
        Ok(Arc::new(Mocking {
            delay: Duration::from_secs(s.delay),
            status: s.response_status,
            xml: kind.ends_with("xml"),
            content_type: s.content_type,
            example: s.response_example.as_deref().map(Template::parse),
            schema: s.response_schema,
            mock_header: s.with_mock_header,
            headers,
        }))
    }
}

/// A value shaped by a JSON schema: its examples, or random values of its types.
fn generate(schema: &Value, depth: usize) -> Value {
    let mut rng = rand::thread_rng();
    let example = schema.get("example");
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => match example {
            Some(Value::String(s)) => json!(s),
            _ => {
                let n = rng.gen_range(1..=10);
                json!((0..n)
                    .map(|_| rng.gen_range(b'a'..=b'z') as char)
                    .collect::<String>())
            }
        },
        Some("number") => example
            .filter(|e| e.is_number())
            .cloned()
            .unwrap_or_else(|| json!(rng.gen::<f64>() * 10000.0)),
        Some("integer") => example
            .and_then(Value::as_f64)
            .map(|f| json!(f.floor() as i64))
            .unwrap_or_else(|| json!(rng.gen_range(1..=10000))),
        Some("boolean") => example
            .filter(|e| e.is_boolean())
            .cloned()
            .unwrap_or_else(|| json!(rng.gen::<bool>())),
        Some("array") if depth < 16 => {
            let items = schema.get("items").cloned().unwrap_or(Value::Null);
            let n = rng.gen_range(1..=3);
            Value::Array((0..n).map(|_| generate(&items, depth + 1)).collect())
        }
        Some("object") | None if depth < 16 => {
            let mut out = serde_json::Map::new();
            if let Some(Value::Object(props)) = schema.get("properties") {
                for (k, v) in props {
                    let g = generate(v, depth + 1);
                    if !g.is_null() {
                        out.insert(k.clone(), g);
                    }
                }
            }
            Value::Object(out)
        }
        _ => Value::Null,
    }
}

fn to_xml(name: &str, v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            out.push_str(&format!("<{name}>"));
            for (k, v) in m {
                to_xml(k, v, out);
            }
            out.push_str(&format!("</{name}>"));
        }
        Value::Array(a) => a.iter().for_each(|v| to_xml(name, v, out)),
        Value::String(s) => out.push_str(&format!(
            "<{name}>{}</{name}>",
            s.replace('&', "&amp;").replace('<', "&lt;")
        )),
        other => out.push_str(&format!("<{name}>{other}</{name}>")),
    }
}

impl Plugin for Mocking {
    fn access(&self, cx: &mut Cx<'_>) -> Flow {
        let body = match (&self.example, &self.schema) {
            (Some(t), _) => t.render(cx),
            (None, Some(schema)) => {
                let v = generate(schema, 0);
                if self.xml {
                    let mut s = String::new();
                    to_xml("data", &v, &mut s);
                    s
                } else {
                    v.to_string()
                }
            }
            (None, None) => String::new(),
        };
        let mut answer = Answer {
            status: self.status,
            headers: vec![("Content-Type".into(), self.content_type.clone())],
            body: Some(body.into()),
        };
        if self.mock_header {
            answer = answer.header("x-mock-by", concat!("Portico/", env!("CARGO_PKG_VERSION")));
        }
        for (k, t) in &self.headers {
            answer = answer.header(k, t.render(cx));
        }
        if self.delay.is_zero() {
            return Flow::Respond(answer);
        }
        let delay = self.delay;
        Flow::Wait(Box::pin(async move {
            tokio::time::sleep(delay).await;
            Flow::Respond(answer)
        }))
    }
}
