//! `key-auth`: a consumer is found by the API key in a header or query argument.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::{parse_settings, Answer, ConsumerAuth, Cx, Factory, Flow, Plugin};

pub struct KeyAuthFactory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_name")]
    header: String,
    #[serde(default = "default_name")]
    query: String,
    #[serde(default = "default_realm")]
    realm: String,
    #[serde(default)]
    hide_credentials: bool,
    anonymous_consumer: Option<String>,
}

fn default_name() -> String {
    "apikey".into()
}

fn default_realm() -> String {
    "key".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumerSettings {
    key: String,
}

struct KeyAuth {
    s: Settings,
    www_authenticate: String,
}

impl Factory for KeyAuthFactory {
    fn name(&self) -> &'static str {
        "key-auth"
    }

    fn priority(&self) -> i32 {
        2500
    }

    fn build(&self, settings: &Value) -> Result<Arc<dyn Plugin>, String> {
        let s: Settings = parse_settings(settings)?;
        Ok(Arc::new(KeyAuth {
            www_authenticate: format!("apikey realm=\"{}\"", s.realm),
            s,
        }))
    }

    fn is_auth(&self) -> bool {
        true
    }

    fn encrypt_fields(&self) -> &'static [&'static str] {
        &["key"]
    }

    fn consumer(&self, settings: &Value) -> Option<Result<ConsumerAuth, String>> {
        Some(
            parse_settings::<ConsumerSettings>(settings).map(|c| ConsumerAuth {
                lookup: c.key,
                data: Arc::new(()),
            }),
        )
    }
}

impl Plugin for KeyAuth {
    fn rewrite(&self, cx: &mut Cx<'_>) -> Flow {
        let query_key;
        let (key, from_header) = match cx.header(&self.s.header) {
            Some(k) => (Some(k), true),
            None => {
                query_key = cx.query_arg(&self.s.query);
                (query_key.as_deref(), false)
            }
        };
        let had_key = key.is_some();
        let found = key.and_then(|k| cx.state.consumers().find("key-auth", k).cloned());
        let hide = |cx: &mut Cx<'_>| {
            if self.s.hide_credentials {
                if from_header {
                    cx.req_mut().remove_header(self.s.header.as_str());
                } else {
                    cx.remove_query_arg(&self.s.query);
                }
            }
        };
        let consumer = match found {
            Some(c) => {
                hide(cx);
                c
            }
            None => {
                let why = if !had_key {
                    "Missing API key in request"
                } else {
                    "Invalid API key in request"
                };
                let Some(anonymous) = &self.s.anonymous_consumer else {
                    return Flow::Respond(
                        Answer::message(401, why)
                            .header("WWW-Authenticate", &*self.www_authenticate),
                    );
                };
                if had_key {
                    hide(cx);
                }
                match cx.state.consumers().by_name(anonymous).cloned() {
                    Some(c) => c,
                    None => {
                        log::error!("key-auth: anonymous consumer {anonymous} not found");
                        return Flow::Respond(
                            Answer::message(401, "Invalid user authorization")
                                .header("WWW-Authenticate", &*self.www_authenticate),
                        );
                    }
                }
            }
        };
        cx.attach_consumer(consumer);
        Flow::Continue
    }
}
