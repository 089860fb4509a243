//! One function per Admin API method: read, check, write in a transaction, answer.

use http::Method;
use serde_json::{json, Map, Value};

use super::answer::Answer;
use super::check;
use super::path::{item_key, Dir, Target};
use super::store::{Expect, Store, Stored, Written};
use super::{Query, Request};
use crate::model::Kind;

/// How often a write whose key changed under it is tried again on the new value.
const ATTEMPTS: usize = 5;

/// The operations, over one etcd store.
pub struct Ops {
    store: Store,
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

/// APISIX's singular name of a directory, for messages (`wrong route id`).
fn noun(dir: Dir) -> &'static str {
    match dir {
        Dir::Kind(k) => k.name(),
        Dir::PluginMetadata => "plugin_metadata",
    }
}

fn now() -> i64 {
    crate::status::now_secs() as i64
}

/// The body as a JSON object.
fn object_body(body: &[u8]) -> Result<Map<String, Value>, Answer> {
    match any_body(body)? {
        Value::Object(map) => Ok(map),
        _ => Err(Answer::bad_request(
            "invalid configuration: wrong type: expected object",
        )),
    }
}

fn any_body(body: &[u8]) -> Result<Value, Answer> {
    if body.is_empty() {
        return Err(Answer::bad_request(
            "invalid request body: empty request body",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| Answer::bad_request(format!("invalid request body: {e}")))
}

/// An id from JSON (string or integer) as text.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `?ttl=N`: a positive number of seconds.
fn ttl(query: &Query) -> Result<Option<i64>, Answer> {
    match query.get("ttl") {
        None => Ok(None),
        Some(t) => match t.parse::<i64>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(Answer::bad_request(format!(
                "invalid ttl {t:?}: a positive number of seconds"
            ))),
        },
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

/// RFC 7386 merge: objects merge key by key, `null` deletes, anything else replaces.
fn merge(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in patch {
                    if v.is_null() {
                        t.remove(&k);
                    } else {
                        merge(t.entry(k).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other,
    }
}

/// Sets `path` (`upstream/nodes`) inside `target` to `value`; the objects on the way must
/// exist, as in APISIX.
fn set_path(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let parts: Vec<&str> = path.split('/').collect();
    let (last, walk) = parts.split_last().ok_or("empty sub path")?;
    let mut at = target;
    for p in walk {
        at = at
            .get_mut(*p)
            .filter(|v| v.is_object())
            .ok_or_else(|| format!("sub path {path} does not exist"))?;
    }
    match at {
        Value::Object(map) => {
            if value.is_null() {
                map.remove(*last);
            } else {
                map.insert(last.to_string(), value);
            }
            Ok(())
        }
        _ => Err(format!("sub path {path} does not exist")),
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
    pub fn new(store: Store) -> Ops {
        Ops { store }
    }

    fn prefix(&self) -> &str {
        self.store.prefix()
    }

    pub async fn run(&self, req: Request) -> Answer {
        let m = &req.method;
        match &req.target {
            Target::PluginList if *m == Method::GET => plugin_list(),
            Target::Plugin(name) if *m == Method::GET => plugin(name),
            Target::PluginList | Target::Plugin(_) => {
                Answer::method_not_allowed(m.as_str(), "plugins")
            }
            Target::Collection { dir, consumer } => {
                let consumer = consumer.as_deref();
                match *m {
                    Method::GET => self.list(*dir, consumer, &req.query).await,
                    Method::POST => self.post(*dir, consumer, &req).await,
                    // `PUT /consumers` with the username in the body; `PUT /routes` with the id
                    Method::PUT => self.put(*dir, consumer, None, &req).await,
                    _ => Answer::method_not_allowed(m.as_str(), noun(*dir)),
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
                match (m.clone(), sub_path) {
                    (Method::GET, None) => self.get(&place).await,
                    (Method::PUT, None) => self.put(*dir, place.consumer, Some(id), &req).await,
                    (Method::PATCH, sub) => self.patch(&place, sub.as_deref(), &req).await,
                    (Method::DELETE, None) => self.delete(&place, &req.query).await,
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
        let items = match self.store.list(&key).await {
            Ok(items) => items,
            Err(e) => return Answer::etcd("cannot read from etcd", &e),
        };
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
        if dir == Dir::Kind(Kind::Credential) && path_id.is_none() {
            return Answer::method_not_allowed("PUT", "credentials without an id");
        }
        let mut body = match object_body(&req.body) {
            Ok(b) => b,
            Err(a) => return a,
        };
        let field = id_field(dir);
        let body_id = body.get(field).and_then(id_text);
        let id = match (path_id, body_id) {
            (Some(p), Some(b)) if p != b => {
                return Answer::bad_request(format!("wrong {} {field}", noun(dir)))
            }
            (Some(p), _) => p.to_string(),
            (None, Some(b)) => b,
            (None, None) => return Answer::bad_request(format!("missing {} {field}", noun(dir))),
        };
        for t in ["create_time", "update_time"] {
            if body.contains_key(t) {
                return Answer::bad_request(format!("the property is forbidden: {t}"));
            }
        }
        body.insert(field.into(), Value::String(id.clone()));
        let lease = match ttl(&req.query) {
            Ok(t) => t,
            Err(a) => return a,
        };
        let place = Place { dir, consumer, id };
        self.save(&place, Value::Object(body), lease, false).await
    }

    async fn post(&self, dir: Dir, consumer: Option<&str>, req: &Request) -> Answer {
        let refused = matches!(
            dir,
            Dir::Kind(Kind::Consumer | Kind::Credential | Kind::GlobalRule | Kind::PluginConfig)
                | Dir::PluginMetadata
        );
        if refused {
            return Answer::method_not_allowed("POST", noun(dir));
        }
        let mut body = match object_body(&req.body) {
            Ok(b) => b,
            Err(a) => return a,
        };
        if body.contains_key("id") {
            return Answer::bad_request(format!("wrong {} id, do not need it", noun(dir)));
        }
        for t in ["create_time", "update_time"] {
            if body.contains_key(t) {
                return Answer::bad_request(format!("the property is forbidden: {t}"));
            }
        }
        let lease = match ttl(&req.query) {
            Ok(t) => t,
            Err(a) => return a,
        };
        let id = match self.store.gen_id().await {
            Ok(id) => id,
            Err(e) => return Answer::etcd("cannot make an id in etcd", &e),
        };
        body.insert("id".into(), Value::String(id.clone()));
        let place = Place { dir, consumer, id };
        self.save(&place, Value::Object(body), lease, true).await
    }

    /// Checks `value` and its references, seals its secrets and writes it with its times,
    /// keeping `create_time` of the value it replaces.
    async fn save(
        &self,
        place: &Place<'_>,
        value: Value,
        lease: Option<i64>,
        only_new: bool,
    ) -> Answer {
        if let Err(a) = self.check(place, &value).await {
            return a;
        }
        let mut sealed = value;
        check::encrypt(place.dir, &mut sealed);
        let key = place.key(self.prefix());
        let lease = match lease {
            Some(ttl) => match self.store.lease(ttl).await {
                Ok(id) => Some(id),
                Err(e) => return Answer::etcd("cannot grant a lease in etcd", &e),
            },
            None => None,
        };
        for _ in 0..ATTEMPTS {
            let prev = match self.store.get(&key).await {
                Ok(p) => p,
                Err(e) => return Answer::etcd("cannot read from etcd", &e),
            };
            if only_new && prev.is_some() {
                return Answer::error(409, format!("key {key} already exists"));
            }
            let mut v = sealed.clone();
            let now = now();
            let created = prev
                .as_ref()
                .and_then(|p| p.value.get("create_time").cloned())
                .filter(Value::is_number)
                .unwrap_or_else(|| now.into());
            v["create_time"] = created;
            v["update_time"] = now.into();
            let expect = prev
                .as_ref()
                .map_or(Expect::Absent, |p| Expect::At(p.modified));
            match self.store.write_if(&key, &v, expect, lease).await {
                Ok(Written::Done(_)) => {
                    let status = if prev.is_none() { 201 } else { 200 };
                    return Answer::new(
                        status,
                        json!({"key": key, "value": check::shown(place.dir, v)}),
                    );
                }
                Ok(Written::Conflict) => continue,
                Err(e) => return Answer::etcd("cannot write to etcd", &e),
            }
        }
        conflict(&key)
    }

    /// The model's checks, then every referenced resource must exist.
    async fn check(&self, place: &Place<'_>, value: &Value) -> Result<(), Answer> {
        check::validate(place.dir, &place.model_id(), value).map_err(Answer::bad_request)?;
        if let Some(user) = place.consumer {
            let key = item_key(self.prefix(), Dir::Kind(Kind::Consumer), None, user);
            match self.store.get(&key).await {
                Ok(Some(_)) => {}
                Ok(None) => return Err(Answer::bad_request(format!("consumer not found: {user}"))),
                Err(e) => return Err(Answer::etcd("cannot read from etcd", &e)),
            }
        }
        for (kind, id, _field) in check::references(place.dir, value) {
            let key = item_key(self.prefix(), Dir::Kind(kind), None, &id);
            match self.store.get(&key).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    let what = kind.name().replace('_', " ");
                    return Err(Answer::bad_request(format!(
                        "failed to fetch {what} info by {what} id [{id}], response code: 404"
                    )));
                }
                Err(e) => return Err(Answer::etcd("cannot read from etcd", &e)),
            }
        }
        Ok(())
    }

    async fn patch(&self, place: &Place<'_>, sub_path: Option<&str>, req: &Request) -> Answer {
        if matches!(place.dir, Dir::Kind(Kind::Consumer | Kind::Credential)) {
            return Answer::method_not_allowed("PATCH", noun(place.dir));
        }
        let patch = match any_body(&req.body) {
            Ok(p) => p,
            Err(a) => return a,
        };
        if sub_path.is_none() && !patch.is_object() {
            return Answer::bad_request("invalid configuration: wrong type: expected object");
        }
        let key = place.key(self.prefix());
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
            match sub_path {
                Some(path) => {
                    if let Err(e) = set_path(&mut v, path, patch.clone()) {
                        return Answer::bad_request(e);
                    }
                }
                None => merge(&mut v, patch.clone()),
            }
            let field = id_field(place.dir);
            if v.get(field).and_then(id_text).as_deref() != Some(place.id.as_str()) {
                if patch.get(field).is_some() && sub_path.is_none() {
                    return Answer::bad_request(format!("wrong {} {field}", noun(place.dir)));
                }
                v[field] = Value::String(place.id.clone());
            }
            // A PATCH may carry update_time; otherwise (and with a sub path) it is now.
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
                .write_if(&key, &v, Expect::At(prev.modified), None)
                .await
            {
                Ok(Written::Done(_)) => {
                    return Answer::ok(json!({"key": key, "value": check::shown(place.dir, v)}))
                }
                // Someone else wrote in between: merge again onto what they wrote.
                Ok(Written::Conflict) => continue,
                Err(e) => return Answer::etcd("cannot write to etcd", &e),
            }
        }
        conflict(&key)
    }

    async fn delete(&self, place: &Place<'_>, query: &Query) -> Answer {
        let key = place.key(self.prefix());
        let force = query.get("force") == Some("true");
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
            // A consumer's credentials go with it.
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
        conflict(&key)
    }

    /// Refuses to delete a resource another still refers to.
    async fn still_used(&self, kind: Kind, id: &str) -> Result<(), Answer> {
        for (referrer, field) in check::referrers(kind) {
            let dir = format!("{}/{}/", self.prefix(), referrer.dir());
            let items = self
                .store
                .list(&dir)
                .await
                .map_err(|e| Answer::etcd("cannot read from etcd", &e))?;
            for s in items {
                if s.value.get(*field).and_then(id_text).as_deref() == Some(id) {
                    let user = s.key.rsplit('/').next().unwrap_or_default().to_string();
                    return Err(Answer::bad_request(format!(
                        "can not delete this {}, {} [{user}] is still using it now",
                        kind.name().replace('_', " "),
                        referrer.name().replace('_', " "),
                    )));
                }
            }
        }
        Ok(())
    }
}

fn conflict(key: &str) -> Answer {
    Answer::error(
        409,
        format!("{key} kept changing while this request was written; try again"),
    )
}

/// `GET /plugins/list`: the plugins this gateway runs, highest priority first.
fn plugin_list() -> Answer {
    let registry = crate::plugin::registry();
    let mut names: Vec<(i32, &str)> = registry
        .enabled_names()
        .filter_map(|n| registry.factory(n).map(|f| (f.priority(), n)))
        .collect();
    names.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    Answer::ok(json!(names.into_iter().map(|(_, n)| n).collect::<Vec<_>>()))
}

/// `GET /plugins/<name>`: what Portico knows of one plugin it runs.
fn plugin(name: &str) -> Answer {
    match crate::plugin::registry().factory(name) {
        Some(f) => Answer::ok(json!({
            "name": f.name(),
            "priority": f.priority(),
            "type": if f.is_auth() { "auth" } else { "" },
            "schema": {"type": "object"},
        })),
        None => Answer::error(404, format!("plugin not found: {name}")),
    }
}

/// The list filters and paging of `GET /<kind>`.
struct Filter {
    name: Option<regex::Regex>,
    uri: Option<regex::Regex>,
    label: Option<(String, Option<String>)>,
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
        let label = q
            .get("label")
            .filter(|s| !s.is_empty())
            .map(|l| match l.split_once(':') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (l.to_string(), None),
            });
        let number = |name: &str| -> Result<Option<usize>, Answer> {
            q.get(name)
                .map(|s| {
                    s.parse::<usize>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| Answer::bad_request(format!("invalid {name}: {s}")))
                })
                .transpose()
        };
        let page = match (number("page")?, number("page_size")?) {
            (Some(p), Some(s)) => Some((p, s)),
            _ => None,
        };
        Ok(Filter {
            name: regex("name")?,
            uri: regex("uri")?,
            label,
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
        if let Some((k, want)) = &self.label {
            let got = v
                .get("labels")
                .and_then(|l| l.get(k))
                .and_then(Value::as_str);
            match (got, want) {
                (None, _) => return false,
                (Some(g), Some(w)) if g != w => return false,
                _ => {}
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_deletes_with_null_and_replaces_arrays() {
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
        assert!(set_path(&mut v, "nothing/here", json!(1)).is_err());
    }

    #[test]
    fn filters_and_pages() {
        let q = Query::parse(Some("name=^api&label=env:prod&page=2&page_size=10"));
        let f = Filter::parse(&q).unwrap();
        assert_eq!(f.page, Some((2, 10)));
        assert!(f.keeps(&json!({"name": "api-1", "labels": {"env": "prod"}})));
        assert!(!f.keeps(&json!({"name": "web", "labels": {"env": "prod"}})));
        assert!(!f.keeps(&json!({"name": "api-1", "labels": {"env": "dev"}})));
        let f = Filter::parse(&Query::parse(Some("uri=/v1&page=1"))).unwrap();
        assert_eq!(f.page, None, "paging needs both page and page_size");
        assert!(f.keeps(&json!({"uris": ["/x", "/v1/y"]})));
        assert!(Filter::parse(&Query::parse(Some("name=("))).is_err());
    }
}
