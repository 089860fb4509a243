//! `traffic-split`: sends a weighted share of the requests (all of them, or those a `vars`
//! rule picks) to other upstreams: the canary plugin.
//!
//! Inline upstreams are checked and given balancers by the tables (which know upstreams);
//! this plugin only picks, and the proxy sends where it picked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::{parse_settings, Cx, Factory, Flow, Plugin};
use crate::vars::Vars;

pub struct TrafficSplitFactory;

/// Where a request goes instead of the route's upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamChoice {
    /// A top-level upstream by id.
    Id(String),
    /// The n-th inline upstream of the route's traffic-split.
    Inline(usize),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    #[serde(rename = "match")]
    matches: Option<Vec<Match>>,
    #[serde(default = "default_weighted")]
    weighted_upstreams: Vec<Weighted>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Match {
    vars: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Weighted {
    upstream_id: Option<Value>,
    upstream: Option<Value>,
    #[serde(default = "one")]
    weight: u32,
}

fn default_weighted() -> Vec<Weighted> {
    vec![Weighted {
        upstream_id: None,
        upstream: None,
        weight: 1,
    }]
}

fn one() -> u32 {
    1
}

/// One weighted target; `None` is the route's own upstream.
struct Target {
    choice: Option<UpstreamChoice>,
    weight: u32,
}

struct CompiledRule {
    /// Any of these holds (none: always).
    matches: Vec<Vars>,
    targets: Vec<Target>,
    total: u64,
    next: AtomicUsize,
}

struct TrafficSplit {
    rules: Vec<CompiledRule>,
    inline: Vec<Value>,
}

impl Factory for TrafficSplitFactory {
    fn name(&self) -> &'static str {
        "traffic-split"
    }

    fn priority(&self) -> i32 {
        966
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        let mut inline = Vec::new();
        let mut rules = Vec::new();
        for (r, rule) in s.rules.into_iter().enumerate() {
            let matches = rule
                .matches
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| m.vars)
                .map(|v| {
                    Vars::parse(&v).map_err(|e| {
                        format!("property \"rules[{r}].match.vars\" validation failed: {e}")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if rule.weighted_upstreams.is_empty() || rule.weighted_upstreams.len() > 20 {
                return Err(format!("property \"rules[{r}].weighted_upstreams\" validation failed: expect 1 to 20 items"));
            }
            let mut targets = Vec::new();
            for w in rule.weighted_upstreams {
                let choice = match (w.upstream_id, w.upstream) {
                    (Some(_), Some(_)) => {
                        return Err(format!("property \"rules[{r}].weighted_upstreams\": upstream_id and upstream are exclusive"))
                    }
                    (Some(id), None) => Some(UpstreamChoice::Id(match id {
                        Value::String(s) => s,
                        Value::Number(n) => n.to_string(),
                        _ => return Err(format!("property \"rules[{r}].weighted_upstreams.upstream_id\": expected a string or integer")),
                    })),
                    (None, Some(u)) => {
                        inline.push(u);
                        Some(UpstreamChoice::Inline(inline.len() - 1))
                    }
                    (None, None) => None,
                };
                targets.push(Target {
                    choice,
                    weight: w.weight,
                });
            }
            let total = targets.iter().map(|t| u64::from(t.weight)).sum();
            rules.push(CompiledRule {
                matches,
                targets,
                total,
                next: AtomicUsize::new(0),
            });
        }
        Ok(Arc::new(TrafficSplit { rules, inline }))
    }
}

impl CompiledRule {
    /// Weighted, in turn: each target gets its weight's share of every `total` requests.
    fn pick(&self) -> Option<UpstreamChoice> {
        if self.total == 0 {
            return None;
        }
        let mut n = (self.next.fetch_add(1, Ordering::Relaxed) as u64) % self.total;
        for t in &self.targets {
            if n < u64::from(t.weight) {
                return t.choice.clone();
            }
            n -= u64::from(t.weight);
        }
        None
    }
}

impl Plugin for TrafficSplit {
    fn access(&self, cx: &mut Cx<'_>) -> Flow {
        let rule = self
            .rules
            .iter()
            .find(|r| r.matches.is_empty() || r.matches.iter().any(|m| cx.matches(m)));
        if let Some(rule) = rule {
            cx.state.upstream = rule.pick();
        }
        Flow::Continue
    }

    fn upstreams(&self) -> &[Value] {
        &self.inline
    }
}
