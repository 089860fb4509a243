//! One function per Admin API method: read, check, write in a transaction, answer, with
//! APISIX 3.x's rules (read `apisix/admin/*.lua` and `t/admin/*.t` for the source of each).

use std::sync::Arc;

use http::Method;
use serde_json::{json, Map, Value};

use super::answer::Answer;
use super::check::{self, noun};
use super::path::{item_key, Dir, Target};
use super::store::{Expect, Lease, Store, Stored, Written};
use super::{Query, Request};
use crate::model::Kind;

/// How often a write whose key changed under it is tried again on the new value.
const ATTEMPTS: usize = 5;

/// How many locks the writes of one gateway share, chosen by the key's hash.
const KEY_LOCKS: usize = 64;

/// The operations, over one etcd store.
pub struct Ops {
    store: Store,
    /// The gateway's own compiled config, for what only it knows (which consumer holds an
    /// auth key); `None` in an Admin API without a gateway beside it.
    tables: Option<Arc<crate::tables::Store>>,
    /// Writes to one key from this gateway take turns, so concurrent PATCHes merge in
    /// order instead of racing each other to the retry limit; writers elsewhere (another
    /// gateway, etcdctl) are caught by the transaction's revision check and retried.
    locks: Vec<tokio::sync::Mutex<()>>,
}

/// Which resource a write is for.
struct Place<'a> {
    dir: Dir,
    consumer: Option<&'a str>,
    id: String,
}

impl Place<'_> {
    fn key(&self, prefix: &str) -> String {
        item_key(prefix, self.dir, self.consumer, &self.id)
    }

    /// The id the model knows it by (a credential's is `consumer/id`).
    fn model_id(&self) -> String {
        match self.consumer {
            Some(u) => format!("{u}/{}", self.id),
            None => self.id.clone(),
        }
    }
}

fn now() -> i64 {
    crate::status::now_secs() as i64
}

/// An id from JSON (string or integer) as text.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The field that holds a resource's own id in its body.
fn id_field(dir: Dir) -> &'static str {
    if dir == Dir::Kind(Kind::Consumer) {
        "username"
    } else {
        "id"
    }
}

/// `missing route id`, `missing plugin name`.
fn missing_id(dir: Dir) -> Answer {
    match dir {
        Dir::PluginMetadata => Answer::bad_request("missing plugin name"),
        Dir::Kind(Kind::Consumer) => {
            Answer::bad_request("invalid configuration: property \"username\" is required")
        }
        _ => Answer::bad_request(format!("missing {} id", noun(dir))),
    }
}

fn wrong_id(dir: Dir) -> Answer {
    match dir {
        Dir::Kind(Kind::Consumer) => Answer::bad_request("wrong username"),
        _ => Answer::bad_request(format!("wrong {} id", noun(dir))),
    }
}

/// `create_time` and `update_time` are the server's in a PUT or POST (at the top, in the
/// upstream, in the plugins).
fn forbidden_times(body: &Map<String, Value>) -> Result<(), Answer> {
    for t in ["create_time", "update_time"] {
        if body.contains_key(t) {
            return Err(Answer::bad_request(format!(
                "the property is forbidden:  {t}"
            )));
        }
        for inner in ["upstream", "plugins"] {
            if body.get(inner).and_then(|v| v.get(t)).is_some() {
                return Err(Answer::bad_request(format!(
                    "the property is forbidden:  {inner}.{t}"
                )));
            }
        }
    }
    Ok(())
}

/// APISIX's PATCH merge: objects merge key by key and `null` deletes; arrays, scalars and
/// an empty object (which APISIX cannot tell from an empty array) replace.
fn merge(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(patch) if !patch.is_empty() => {
            let stored_empty = target.as_object().is_none_or(|t| t.is_empty());
            if stored_empty {
                // APISIX sees an empty or missing object as an array: the patch replaces it
                let mut clean = Map::new();
                for (k, v) in patch {
                    if !v.is_null() {
                        clean.insert(k, v);
                    }
                }
                *target = Value::Object(clean);
                return;
            }
            if let Value::Object(t) = target {
                for (k, v) in patch {
                    if v.is_null() {
                        t.remove(&k);
                    } else {
                        match t.get_mut(&k) {
                            Some(old) => merge(old, v),
                            None => {
                                let mut fresh = Value::Null;
                                merge(&mut fresh, v);
                                t.insert(k, fresh);
                            }
                        }
                    }
                }
            }
        }
        other => *target = other,
    }
}

/// Sets `path` (`upstream/nodes`) inside `target` to `value`, making the objects on the
/// way; one on the way that is not an object is APISIX's `invalid sub-path`.
fn set_path(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let parts: Vec<&str> = path.split('/').collect();
    let (last, walk) = parts.split_last().ok_or("invalid sub-path: /")?;
    let mut at = target;
    let mut so_far = String::new();
    for p in walk {
        so_far.push('/');
        so_far.push_str(p);
        let Value::Object(map) = at else {
            return Err(format!("invalid sub-path: {so_far}"));
        };
        at = map
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !at.is_object() {
            return Err(format!("invalid sub-path: {so_far}"));
        }
    }
    match at {
        Value::Object(map) => {
            map.insert(last.to_string(), value);
            Ok(())
        }
        _ => Err(format!("invalid sub-path: {so_far}")),
    }
}

/// One stored resource in a GET or list answer.
fn entry(dir: Dir, s: Stored) -> Value {
    json!({
        "key": s.key,
        "value": check::shown(dir, s.value),
        "createdIndex": s.created,
        "modifiedIndex": s.modified,
    })
}

impl Ops {
    pub fn new(store: Store, tables: Option<Arc<crate::tables::Store>>) -> Ops {
        Ops {
            store,
            tables,
            locks: (0..KEY_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// This gateway's turn to write `key`.
    async fn turn(&self, key: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        self.locks[(h.finish() as usize) % KEY_LOCKS].lock().await
    }

    fn prefix(&self) -> &str {
        self.store.prefix()
    }

    pub async fn run(&self, req: Request) -> Answer {
        let m = &req.method;
        match &req.target {
            Target::PluginList if *m == Method::GET => plugin_list(&req.query),
            Target::Plugin(name) if *m == Method::GET => plugin(name, &req.query),
            Target::PluginReload if *m == Method::PUT => {
                // The plugins are config.yaml's, fixed at start: nothing to reload.
                Answer::text(200, "done")
            }
            Target::PluginReload => Answer::error(
                405,
                format!(
                    "please use PUT method to reload the plugins, {} method is not allowed.",
                    m.as_str()
                ),
            ),
            Target::PluginList | Target::Plugin(_) => Answer::error(404, "not found"),
            Target::Collection { dir, consumer } => {
                let consumer = consumer.as_deref();
                match *m {
                    Method::GET => self.list(*dir, consumer, &req.query).await,
                    Method::POST => self.post(*dir, consumer, &req).await,
                    // `PUT /consumers` with the username in the body; `PUT /routes` with the id
                    Method::PUT => self.put(*dir, consumer, None, &req).await,
                    Method::PATCH if !patchable(*dir) => {
                        Answer::method_not_allowed(m.as_str(), noun(*dir))
                    }
                    _ => missing_id(*dir),
                }
            }
            Target::Item {
                dir,
                consumer,
                id,
                sub_path,
            } => {
                let place = Place {
                    dir: *dir,
                    consumer: consumer.as_deref(),
                    id: id.clone(),
                };
                match *m {
                    // a sub path is only PATCH's
                    Method::GET => self.get(&place).await,
                    Method::PUT => self.put(*dir, place.consumer, Some(id), &req).await,
                    Method::POST if postable(*dir) => {
                        Answer::bad_request(format!("wrong {} id, do not need it", noun(*dir)))
                    }
                    Method::PATCH => self.patch(&place, sub_path.as_deref(), &req).await,
                    Method::DELETE => self.delete(&place, &req.query).await,
                    _ => Answer::method_not_allowed(m.as_str(), noun(*dir)),
                }
            }
        }
    }

    async fn get(&self, place: &Place<'_>) -> Answer {
        let key = place.key(self.prefix());
        match self.store.get(&key).await {
            Ok(Some(s)) => Answer::ok(entry(place.dir, s)),
            Ok(None) => Answer::key_not_found(),
            Err(e) => Answer::etcd("cannot read from etcd", &e),
        }
    }

    async fn list(&self, dir: Dir, consumer: Option<&str>, query: &Query) -> Answer {
        let key = Target::Collection {
            dir,
            consumer: consumer.map(str::to_string),
        }
        .key(self.prefix())
        .unwrap_or_default();
        let filter = match Filter::parse(query) {
            Ok(f) => f,
            Err(a) => return a,
        };
        let items = match self.store.list(&key, filter.page.is_some()).await {
            Ok(items) => items,
            Err(e) => return Answer::etcd("cannot read from etcd", &e),
        };
        if consumer.is_some() && items.is_empty() {
            // APISIX keeps no directory marker for credentials
            return Answer::key_not_found();
        }
        let kept: Vec<Stored> = items
            .into_iter()
            .filter(|s| filter.keeps(&s.value))
            .collect();
        let total = kept.len();
        let page: Vec<Value> = match filter.page {
            Some((page, size)) => kept
                .into_iter()
                .skip((page - 1).saturating_mul(size))
                .take(size)
                .map(|s| entry(dir, s))
                .collect(),
            None => kept.into_iter().map(|s| entry(dir, s)).collect(),
        };
        Answer::ok(json!({"list": page, "total": total}))
    }

    async fn put(
        &self,
        dir: Dir,
        consumer: Option<&str>,
        path_id: Option<&str>,
        req: &Request,
    ) -> Answer {
        let mut body = match object_body(req) {
            Ok(b) => b,
            Err(a) => return a,
        };
        let field = id_field(dir);
        let body_id = body.get(field).and_then(id_text);
        let id = match (path_id, body_id) {
            (Some(p), Some(b)) if p != b => return wrong_id(dir),
            (Some(p), _) => {
                // the path's id, as a string
                body.insert(field.into(), Value::String(p.to_string()));
                p.to_string()
            }
            // the body's id, as the body typed it
            (None, Some(b)) => b,
            (None, None) => return missing_id(dir),
        };
        if let Err(a) = forbidden_times(&body) {
            return a;
        }
        let place = Place { dir, consumer, id };
        self.save(&place, Value::Object(body), req.ttl, false).await
    }

    async fn post(&self, dir: Dir, consumer: Option<&str>, req: &Request) -> Answer {
        if !postable(dir) {
            return Answer::method_not_allowed("POST", noun(dir));
        }
        let mut body = match object_body(req) {
            Ok(b) => b,
            Err(a) => return a,
        };
        if body.contains_key("id") {
            return Answer::bad_request(format!("wrong {} id, do not need it", noun(dir)));
        }
        if let Err(a) = forbidden_times(&body) {
            return a;
        }
        let id = match self.store.gen_id().await {
            Ok(id) => id,
            Err(e) => return Answer::etcd("cannot make an id in etcd", &e),
        };
        body.insert("id".into(), Value::String(id.clone()));
        let place = Place { dir, consumer, id };
        self.save(&place, Value::Object(body), req.ttl, true).await
    }

    /// A lease for `?ttl=`.
    async fn lease(&self, ttl: Option<i64>, otherwise: Lease) -> Result<Lease, Answer> {
        match ttl {
            Some(ttl) if ttl > 0 => match self.store.lease(ttl).await {
                Ok(id) => Ok(Lease::New(id)),
                Err(e) => Err(Answer::etcd("cannot grant a lease in etcd", &e)),
            },
            Some(_) => Err(Answer::bad_request(
                "invalid argument ttl: should be a positive number of seconds",
            )),
            None => Ok(otherwise),
        }
    }

    /// Checks `value` and its references, seals its secrets and writes it with its times,
    /// keeping `create_time` of the value it replaces.
    async fn save(
        &self,
        place: &Place<'_>,
        value: Value,
        ttl: Option<i64>,
        only_new: bool,
    ) -> Answer {
        if let Err(a) = self.check(place, &value).await {
            return a;
        }
        let mut sealed = value;
        check::encrypt(place.dir, &mut sealed);
        let key = place.key(self.prefix());
        let lease = match self.lease(ttl, Lease::None).await {
            Ok(l) => l,
            Err(a) => return a,
        };
        let timed = place.dir != Dir::PluginMetadata;
        let _turn = self.turn(&key).await;
        for _ in 0..ATTEMPTS {
            let prev = match self.store.get(&key).await {
                Ok(p) => p,
                Err(e) => return Answer::etcd("cannot read from etcd", &e),
            };
            if only_new && prev.is_some() {
                return Answer::error(409, format!("key {key} already exists"));
            }
            let mut v = sealed.clone();
            if timed {
                let now = now();
                let created = prev
                    .as_ref()
                    .and_then(|p| p.value.get("create_time").cloned())
                    .filter(Value::is_number)
                    .unwrap_or_else(|| now.into());
                v["create_time"] = created;
                v["update_time"] = now.into();
            }
            let expect = prev
                .as_ref()
                .map_or(Expect::Absent, |p| Expect::At(p.modified));
            match self.store.write_if(&key, &v, expect, lease).await {
                Ok(Written::Done(_)) => {
                    let status = if prev.is_none() { 201 } else { 200 };
                    // A write's answer shows the value as stored (secrets sealed).
                    return Answer::new(status, json!({"key": key, "value": v}));
                }
                Ok(Written::Conflict) => continue,
                Err(e) => return Answer::etcd("cannot write to etcd", &e),
            }
        }
        changed()
    }

    /// The model's checks, then every referenced resource must exist.
    async fn check(&self, place: &Place<'_>, value: &Value) -> Result<(), Answer> {
        if let Some(user) = place.consumer {
            let key = item_key(self.prefix(), Dir::Kind(Kind::Consumer), None, user);
            match self.store.get(&key).await {
                Ok(Some(_)) => {}
                Ok(None) => return Err(Answer::error(404, "consumer not found")),
                Err(e) => return Err(Answer::etcd("cannot read from etcd", &e)),
            }
        }
        check::validate(place.dir, &place.model_id(), value).map_err(Answer::bad_request)?;
        self.duplicate_key(place, value)?;
        if place.dir == Dir::Kind(Kind::GlobalRule) {
            self.one_global_rule_per_plugin(&place.id, value).await?;
        }
        for (kind, id, _field) in check::references(place.dir, value) {
            let key = item_key(self.prefix(), Dir::Kind(kind), None, &id);
            match self.store.get(&key).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    let what = noun(Dir::Kind(kind));
                    return Err(Answer::bad_request(format!(
                        "failed to fetch {what} info by {what} id [{id}], response code: 404"
                    )));
                }
                Err(e) => return Err(Answer::etcd("cannot read from etcd", &e)),
            }
        }
        Ok(())
    }

    /// Refuses an auth key another consumer or credential already holds, in APISIX 3.x's
    /// words: requests could not tell the two apart. Like APISIX, it asks the gateway's loaded
    /// consumers (a write not yet synced is not seen; the sync then rejects the later one).
    fn duplicate_key(&self, place: &Place<'_>, value: &Value) -> Result<(), Answer> {
        let (user, credential) = match place.dir {
            Dir::Kind(Kind::Consumer) => (place.id.as_str(), None),
            Dir::Kind(Kind::Credential) => (place.consumer.unwrap_or_default(), Some(&*place.id)),
            _ => return Ok(()),
        };
        let (Some(tables), Some(plugins)) = (
            &self.tables,
            value.get("plugins").and_then(Value::as_object),
        ) else {
            return Ok(());
        };
        let tables = tables.load();
        let index = tables.consumers();
        for (name, conf) in plugins {
            let attr = match name.as_str() {
                "key-auth" | "jwt-auth" => "key",
                "basic-auth" => "username",
                "hmac-auth" => "key_id",
                _ => continue,
            };
            let Some(key) = conf.get(attr).and_then(Value::as_str) else {
                continue;
            };
            // A reference is resolved when it loads, not here.
            if key.starts_with("$env://") || key.starts_with("$secret://") {
                continue;
            }
            let Some(owner) = index.find(name, key) else {
                continue;
            };
            let is_self = owner.username == user
                && (credential.is_none() || owner.credential_id.as_deref() == credential);
            if !is_self {
                let owner_desc = match &owner.credential_id {
                    Some(c) => format!("credential: {c} of consumer: {}", owner.username),
                    None => format!("consumer: {}", owner.username),
                };
                return Err(Answer::bad_request(format!(
                    "duplicate {attr} of plugin {name} found with {owner_desc}"
                )));
            }
        }
        Ok(())
    }

    /// A plugin runs in one global rule only (APISIX 3.15+): two would run it twice.
    async fn one_global_rule_per_plugin(&self, id: &str, value: &Value) -> Result<(), Answer> {
        let Some(mine) = value.get("plugins").and_then(Value::as_object) else {
            return Ok(());
        };
        let dir = format!("{}/{}/", self.prefix(), Kind::GlobalRule.dir());
        let others = self
            .store
            .list(&dir, false)
            .await
            .map_err(|e| Answer::etcd("cannot read from etcd", &e))?;
        for other in others {
            let other_id = other.key.rsplit('/').next().unwrap_or_default();
            if other_id == id {
                continue;
            }
            let theirs = other.value.get("plugins").and_then(Value::as_object);
            if let Some(name) = mine
                .keys()
                .find(|n| theirs.is_some_and(|t| t.contains_key(*n)))
            {
                return Err(Answer::bad_request(format!(
                    "plugin '{name}' already exists in global rule with id '{other_id}'"
                )));
            }
        }
        Ok(())
    }

    async fn patch(&self, place: &Place<'_>, sub_path: Option<&str>, req: &Request) -> Answer {
        if !patchable(place.dir) {
            return Answer::method_not_allowed("PATCH", noun(place.dir));
        }
        let Some(patch) = &req.body else {
            return Answer::bad_request("missing new configuration");
        };
        if sub_path.is_none() && !(patch.is_object() || patch.is_array()) {
            return Answer::bad_request("invalid configuration");
        }
        let lease = match self.lease(req.ttl, Lease::Keep).await {
            Ok(l) => l,
            Err(a) => return a,
        };
        let key = place.key(self.prefix());
        let field = id_field(place.dir);
        let _turn = self.turn(&key).await;
        for _ in 0..ATTEMPTS {
            let prev = match self.store.get(&key).await {
                Ok(Some(p)) => p,
                Ok(None) => return Answer::key_not_found(),
                Err(e) => return Answer::etcd("cannot read from etcd", &e),
            };
            let mut v = prev.value.clone();
            if !v.is_object() {
                return Answer::bad_request(format!(
                    "the value stored at {key} is not a JSON object; PUT a new one"
                ));
            }
            // Merged in the clear, sealed again once.
            check::reveal(place.dir, &mut v);
            match sub_path {
                Some(path) => {
                    if let Err(e) = set_path(&mut v, path, patch.clone()) {
                        return Answer::bad_request(e);
                    }
                }
                None => merge(&mut v, patch.clone()),
            }
            if let Some(merged) = v.get(field).and_then(id_text) {
                if merged != place.id {
                    return wrong_id(place.dir);
                }
            }
            if let Value::Object(map) = &mut v {
                map.insert(field.into(), Value::String(place.id.clone()));
            }
            // A whole-body PATCH may set update_time; otherwise it is now.
            let given = sub_path.is_none() && patch.get("update_time").is_some();
            if !given {
                v["update_time"] = now().into();
            }
            if let Err(a) = self.check(place, &v).await {
                return a;
            }
            check::encrypt(place.dir, &mut v);
            match self
                .store
                .write_if(&key, &v, Expect::At(prev.modified), lease)
                .await
            {
                Ok(Written::Done(_)) => return Answer::ok(json!({"key": key, "value": v})),
                // Someone else wrote in between: merge again onto what they wrote, so
                // neither change is lost (APISIX answers 503 here at once).
                Ok(Written::Conflict) => continue,
                Err(e) => return Answer::etcd("cannot write to etcd", &e),
            }
        }
        changed()
    }

    async fn delete(&self, place: &Place<'_>, query: &Query) -> Answer {
        let key = place.key(self.prefix());
        let force = query.get("force") == Some("true");
        let _turn = self.turn(&key).await;
        for _ in 0..ATTEMPTS {
            let prev = match self.store.get(&key).await {
                Ok(Some(p)) => p,
                Ok(None) => return Answer::key_not_found(),
                Err(e) => return Answer::etcd("cannot read from etcd", &e),
            };
            if !force {
                if let Dir::Kind(kind) = place.dir {
                    if let Err(a) = self.still_used(kind, &place.id).await {
                        return a;
                    }
                }
            }
            // A consumer's credentials go with it, in the same transaction.
            let credentials = (place.dir == Dir::Kind(Kind::Consumer))
                .then(|| format!("{}/consumers/{}/credentials/", self.prefix(), place.id));
            match self
                .store
                .delete_if(&key, prev.modified, credentials.as_deref())
                .await
            {
                Ok(Written::Done(_)) => return Answer::ok(json!({"deleted": "1", "key": key})),
                Ok(Written::Conflict) => continue,
                Err(e) => return Answer::etcd("cannot delete in etcd", &e),
            }
        }
        changed()
    }

    /// Refuses to delete a resource another still refers to, in APISIX's words.
    async fn still_used(&self, kind: Kind, id: &str) -> Result<(), Answer> {
        let read = |dir: String| async move {
            self.store
                .list(&dir, false)
                .await
                .map_err(|e| Answer::etcd("cannot read from etcd", &e))
        };
        let last = |key: &str| key.rsplit('/').next().unwrap_or_default().to_string();
        let (what, referrers) = check::referrers(kind);
        for (referrer, field) in referrers {
            for s in read(format!("{}/{}/", self.prefix(), referrer.dir())).await? {
                if s.value.get(*field).and_then(id_text).as_deref() == Some(id) {
                    return Err(Answer::bad_request(format!(
                        "can not delete this {what}, {} [{}] is still using it now",
                        noun(Dir::Kind(*referrer)),
                        last(&s.key)
                    )));
                }
            }
        }
        if kind == Kind::Upstream {
            for (holder, word) in check::PLUGIN_HOLDERS {
                for s in read(format!("{}/{}/", self.prefix(), holder.dir())).await? {
                    if check::plugins_use_upstream(&s.value, id) {
                        return Err(Answer::bad_request(format!(
                            "can not delete this upstream, plugin in {word} [{}] is still using it now",
                            last(&s.key)
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether APISIX takes POST for a directory.
fn postable(dir: Dir) -> bool {
    matches!(
        dir,
        Dir::Kind(Kind::Route | Kind::Service | Kind::Upstream | Kind::Ssl)
    )
}

/// Whether APISIX takes PATCH for a directory.
fn patchable(dir: Dir) -> bool {
    !matches!(
        dir,
        Dir::Kind(Kind::Consumer | Kind::Credential) | Dir::PluginMetadata
    )
}

/// A PUT or POST body: a JSON object.
fn object_body(req: &Request) -> Result<Map<String, Value>, Answer> {
    match &req.body {
        None => Err(Answer::bad_request("missing configurations")),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(other) => Err(Answer::bad_request(format!(
            "invalid configuration: wrong type: expected object, got {}",
            crate::model::kind_of(other)
        ))),
    }
}

/// The key kept changing under a write.
fn changed() -> Answer {
    Answer::error(503, "value changed before overwritten")
}

/// `GET /plugins/list`: the plugins this gateway runs, highest priority first.
fn plugin_list(query: &Query) -> Answer {
    match query.get("subsystem").unwrap_or("http") {
        "http" => {}
        // Portico proxies HTTP only.
        "stream" => return Answer::ok(json!([])),
        _ => return Answer::text(400, "invalid subsystem passed"),
    }
    let registry = crate::plugin::registry();
    let mut names: Vec<(i32, &str)> = registry
        .enabled_names()
        .filter_map(|n| registry.factory(n).map(|f| (f.priority(), n)))
        .collect();
    names.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    Answer::ok(json!(names.into_iter().map(|(_, n)| n).collect::<Vec<_>>()))
}

/// `GET /plugins/<name>`: what Portico knows of one plugin it runs. Portico checks settings
/// in code, not with a JSON Schema, so the schema given is only the settings' shape.
fn plugin(name: &str, query: &Query) -> Answer {
    let subsystem = query.get("subsystem").unwrap_or("http");
    if subsystem != "http" && subsystem != "stream" {
        return Answer::bad_request(format!("unsupported subsystem: {subsystem}"));
    }
    match crate::plugin::registry().factory(name) {
        Some(f) if subsystem == "http" => Answer::ok(json!({
            "type": "object",
            "$comment": format!("{} (priority {}): Portico checks its settings when a resource is written", f.name(), f.priority()),
        })),
        _ => Answer::error(404, format!("plugin not found in subsystem {subsystem}")),
    }
}

/// The list filters and paging of `GET /<kind>`.
struct Filter {
    name: Option<regex::Regex>,
    uri: Option<regex::Regex>,
    /// `label=<key>`: the labels must have that key.
    label: Option<String>,
    /// `filter=service_id=1&upstream_id=2`: those fields must be those strings.
    fields: Vec<(String, String)>,
    /// (page from 1, page size)
    page: Option<(usize, usize)>,
}

impl Filter {
    fn parse(q: &Query) -> Result<Filter, Answer> {
        let regex = |name: &str| -> Result<Option<regex::Regex>, Answer> {
            q.get(name)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    regex::Regex::new(s)
                        .map_err(|e| Answer::bad_request(format!("invalid {name} filter: {e}")))
                })
                .transpose()
        };
        let fields = q
            .get("filter")
            .map(|f| {
                Query::parse(Some(f))
                    .pairs
                    .into_iter()
                    .filter(|(k, _)| k == "service_id" || k == "upstream_id")
                    .collect()
            })
            .unwrap_or_default();
        let number = |name: &str| q.get(name).and_then(|s| s.parse::<i64>().ok());
        let page = match (number("page"), number("page_size")) {
            (Some(p), Some(s)) => {
                if !(10..=500).contains(&s) {
                    return Err(Answer::text(400, "page_size must be between 10 and 500"));
                }
                Some((p.max(1) as usize, s as usize))
            }
            _ => None,
        };
        Ok(Filter {
            name: regex("name")?,
            uri: regex("uri")?,
            label: q.get("label").map(str::to_string),
            fields,
            page,
        })
    }

    fn keeps(&self, v: &Value) -> bool {
        if let Some(re) = &self.name {
            if !v
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| re.is_match(n))
            {
                return false;
            }
        }
        if let Some(re) = &self.uri {
            let one = v
                .get("uri")
                .and_then(Value::as_str)
                .is_some_and(|u| re.is_match(u));
            let many = v
                .get("uris")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().filter_map(Value::as_str).any(|u| re.is_match(u)));
            if !one && !many {
                return false;
            }
        }
        if let Some(k) = &self.label {
            if v.get("labels").and_then(|l| l.get(k)).is_none() {
                return false;
            }
        }
        self.fields
            .iter()
            .all(|(k, want)| v.get(k).and_then(Value::as_str) == Some(want.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_deletes_with_null_and_replaces_arrays() {
        let mut v = json!({"plugins": {"a": {}, "b": {}}});
        merge(&mut v, json!({"plugins": {}}));
        assert_eq!(v, json!({"plugins": {}}), "an empty object replaces");
        let mut v = json!({"uri": "/a", "methods": ["GET", "POST"], "upstream": {"type": "roundrobin", "nodes": {"a:1": 1}}, "desc": "x"});
        merge(
            &mut v,
            json!({"methods": ["PUT"], "desc": null, "upstream": {"nodes": {"b:1": 1}}}),
        );
        assert_eq!(
            v,
            json!({"uri": "/a", "methods": ["PUT"], "upstream": {"type": "roundrobin", "nodes": {"a:1": 1, "b:1": 1}}})
        );
    }

    #[test]
    fn sub_paths_set_one_field() {
        let mut v = json!({"uri": "/a", "upstream": {"nodes": {"a:1": 1}}});
        set_path(&mut v, "upstream/nodes", json!({"b:2": 1})).unwrap();
        assert_eq!(v["upstream"]["nodes"], json!({"b:2": 1}));
        set_path(&mut v, "methods", json!(["GET"])).unwrap();
        assert_eq!(v["methods"], json!(["GET"]));
        set_path(&mut v, "new/deeper", json!(1)).unwrap();
        assert_eq!(
            v["new"],
            json!({"deeper": 1}),
            "objects on the way are made"
        );
        assert_eq!(
            set_path(&mut v, "uri/x", json!(1)),
            Err("invalid sub-path: /uri".to_string())
        );
    }

    #[test]
    fn filters_and_pages() {
        let q = Query::parse(Some("name=^api&label=env&page=2&page_size=10"));
        let f = Filter::parse(&q).unwrap();
        assert_eq!(f.page, Some((2, 10)));
        assert!(f.keeps(&json!({"name": "api-1", "labels": {"env": "prod"}})));
        assert!(!f.keeps(&json!({"name": "web", "labels": {"env": "prod"}})));
        assert!(!f.keeps(&json!({"name": "api-1", "labels": {"team": "a"}})));
        let f = Filter::parse(&Query::parse(Some("filter=service_id%3D1"))).unwrap();
        assert!(f.keeps(&json!({"service_id": "1"})));
        assert!(!f.keeps(&json!({"service_id": 1})), "a number never equals");
        assert!(Filter::parse(&Query::parse(Some("page=1&page_size=5"))).is_err());
        let f = Filter::parse(&Query::parse(Some("uri=/v1&page=1"))).unwrap();
        assert_eq!(f.page, None, "paging needs both page and page_size");
        assert!(f.keeps(&json!({"uris": ["/x", "/v1/y"]})));
        assert!(Filter::parse(&Query::parse(Some("name=("))).is_err());
    }
}
