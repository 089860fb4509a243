//! Consumers as the auth plugins find them: for each auth plugin, the value a request
//! presents (an API key, a user name, a JWT `key`) to the consumer it names, in O(1).
//! Built by the tables from consumers, their credentials and consumer groups.

use ahash::AHashMap as HashMap;
use std::any::Any;
use std::sync::Arc;

use super::chain::Chain;

/// A consumer found by one of its credentials.
pub struct ConsumerMatch {
    pub username: String,
    /// The credential's id, for credentials kept apart from the consumer (APISIX 3.x).
    pub credential_id: Option<String>,
    /// `labels.custom_id` of the consumer (`X-Consumer-Custom-Id`).
    pub custom_id: Option<String>,
    pub group_id: Option<String>,
    /// Its `group_id` names no (valid) consumer group: APISIX answers 503 rather than serve the
    /// consumer without the group's plugins.
    pub group_missing: bool,
    /// The consumer's plugins (over its group's) other than auth: they replace the route's
    /// plugin of the same name for this consumer's requests.
    pub plugins: Arc<Chain>,
    /// The auth plugin's consumer-side settings (its [`super::ConsumerAuth::data`]).
    pub auth: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for ConsumerMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerMatch")
            .field("username", &self.username)
            .field("credential_id", &self.credential_id)
            .finish()
    }
}

impl ConsumerMatch {
    /// The auth plugin's settings, as the type its factory made.
    pub fn auth<T: 'static>(&self) -> Option<&T> {
        self.auth.downcast_ref()
    }
}

/// What an auth plugin does when it found no consumer: its `anonymous_consumer` stands in
/// when set (a 401 "Invalid user authorization" when that consumer is gone), else a 401 with
/// `why`; refusals carry `WWW-Authenticate`.
pub fn anonymous_or_refuse(
    index: &ConsumerIndex,
    anonymous: Option<&str>,
    why: &str,
    www_authenticate: &str,
) -> Result<Arc<ConsumerMatch>, super::Answer> {
    let refuse =
        |m: &str| super::Answer::message(401, m).header("WWW-Authenticate", www_authenticate);
    match anonymous {
        None => Err(refuse(why)),
        Some(name) => index
            .by_name(name)
            .cloned()
            .ok_or_else(|| refuse("Invalid user authorization")),
    }
}

/// Auth plugin name → credential value → consumer.
#[derive(Debug, Default)]
pub struct ConsumerIndex {
    by_plugin: HashMap<String, HashMap<String, Arc<ConsumerMatch>>>,
    /// Every consumer by user name, without a credential (`anonymous_consumer`).
    by_name: HashMap<String, Arc<ConsumerMatch>>,
}

impl ConsumerIndex {
    /// The consumer whose `plugin` credential is `key`.
    pub fn find(&self, plugin: &str, key: &str) -> Option<&Arc<ConsumerMatch>> {
        self.by_plugin.get(plugin)?.get(key)
    }

    /// A consumer by user name.
    pub fn by_name(&self, username: &str) -> Option<&Arc<ConsumerMatch>> {
        self.by_name.get(username)
    }

    /// Files a consumer by user name.
    pub fn insert_name(&mut self, consumer: Arc<ConsumerMatch>) {
        self.by_name.insert(consumer.username.clone(), consumer);
    }

    /// Files a consumer under its credential; a value another consumer already holds is an
    /// error (naming that consumer), and the first one keeps it.
    pub fn insert(
        &mut self,
        plugin: &str,
        key: String,
        consumer: Arc<ConsumerMatch>,
    ) -> Result<(), String> {
        let map = self.by_plugin.entry(plugin.to_string()).or_default();
        if let Some(other) = map.get(&key) {
            return Err(format!(
                "plugin {plugin}: this credential is already used by consumer {}",
                other.username
            ));
        }
        map.insert(key, consumer);
        Ok(())
    }

    /// How many credentials of each auth plugin.
    pub fn counts(&self) -> impl Iterator<Item = (&str, usize)> {
        self.by_plugin.iter().map(|(k, v)| (k.as_str(), v.len()))
    }
}
