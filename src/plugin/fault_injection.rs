//! `fault-injection`: delays or aborts a share of the requests (to test clients).

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::Deserialize;
use serde_json::Value;

use super::template::Template;
use super::{check_range, parse_settings, Answer, Cx, Factory, Flow, Plugin};
use crate::vars::Vars;

pub struct FaultInjectionFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AbortSettings {
    http_status: u16,
    body: Option<String>,
    headers: Option<serde_json::Map<String, Value>>,
    percentage: Option<u8>,
    vars: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DelaySettings {
    duration: f64,
    percentage: Option<u8>,
    vars: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    abort: Option<AbortSettings>,
    delay: Option<DelaySettings>,
}

/// When a fault applies: a percentage of requests, and any of several `vars` expressions.
struct When {
    percentage: Option<u8>,
    vars: Vec<Vars>,
}

impl When {
    fn parse(
        field: &str,
        percentage: Option<u8>,
        vars: &Option<Vec<Value>>,
    ) -> Result<When, String> {
        if let Some(p) = percentage {
            check_range(&format!("{field}.percentage"), p, 0, Some(100))?;
        }
        let vars = vars
            .iter()
            .flatten()
            .map(|v| {
                if !v.as_array().is_some_and(|a| a.iter().all(Value::is_array)) {
                    return Err(format!(
                        "property \"{field}.vars\" validation failed: rule should be wrapped inside brackets"
                    ));
                }
                Vars::parse(v).map_err(|e| format!("property \"{field}.vars\" validation failed: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(When { percentage, vars })
    }

    fn holds(&self, cx: &Cx<'_>) -> bool {
        let sampled = match self.percentage {
            None => true,
            Some(p) => rand::thread_rng().gen_range(1..=100u8) <= p,
        };
        sampled && (self.vars.is_empty() || self.vars.iter().any(|v| cx.matches(v)))
    }
}

struct Abort {
    status: u16,
    body: Option<Template>,
    headers: Vec<(String, Template)>,
    when: When,
}

struct FaultInjection {
    abort: Option<Abort>,
    delay: Option<(Duration, When)>,
}

impl Factory for FaultInjectionFactory {
    fn name(&self) -> &'static str {
        "fault-injection"
    }

    fn priority(&self) -> i32 {
        11000
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        if s.abort.is_none() && s.delay.is_none() {
            return Err("expect object to have at least 1 properties".into());
        }
        let abort =
            s.abort
                .map(|a| {
                    check_range("abort.http_status", a.http_status, 200, Some(599))?;
                    let headers =
                        a.headers
                            .iter()
                            .flatten()
                            .map(|(k, v)| {
                                let v = match v {
                                    Value::String(s) => s.clone(),
                                    Value::Number(n) => n.to_string(),
                                    _ => return Err(
                                        "property \"abort.headers\" validation failed: wrong type"
                                            .to_string(),
                                    ),
                                };
                                Ok((k.clone(), Template::parse(&v)))
                            })
                            .collect::<Result<_, String>>()?;
                    Ok::<_, String>(Abort {
                        status: a.http_status,
                        body: a.body.as_deref().map(Template::parse),
                        headers,
                        when: When::parse("abort", a.percentage, &a.vars)?,
                    })
                })
                .transpose()?;
        let delay = s
            .delay
            .map(|d| {
                if !(0.0..=86_400.0).contains(&d.duration) {
                    return Err("property \"delay.duration\" validation failed: expected a number of seconds from 0 to 86400".to_string());
                }
                Ok((Duration::from_secs_f64(d.duration), When::parse("delay", d.percentage, &d.vars)?))
            })
            .transpose()?;
        Ok(Arc::new(FaultInjection { abort, delay }))
    }
}

impl Plugin for FaultInjection {
    fn rewrite(&self, cx: &mut Cx<'_>) -> Flow {
        let delay = self
            .delay
            .as_ref()
            .filter(|(_, when)| when.holds(cx))
            .map(|(d, _)| *d);
        let answer = self.abort.as_ref().filter(|a| a.when.holds(cx)).map(|a| {
            let mut answer = Answer {
                status: a.status,
                headers: Vec::new(),
                body: a.body.as_ref().map(|b| b.render(cx).into()),
            };
            for (k, v) in &a.headers {
                answer = answer.header(k, v.render(cx));
            }
            answer
        });
        match (delay, answer) {
            (None, None) => Flow::Continue,
            (None, Some(a)) => Flow::Respond(a),
            (Some(d), answer) => Flow::Wait(Box::pin(async move {
                tokio::time::sleep(d).await;
                match answer {
                    Some(a) => Flow::Respond(a),
                    None => Flow::Continue,
                }
            })),
        }
    }
}
