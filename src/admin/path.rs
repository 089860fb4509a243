//! What an Admin API path names: `/apisix/admin/<kind>[/<id>[/<sub path>]]`, a consumer's
//! credentials, plugin metadata, and the read-only plugin endpoints.

use crate::model::Kind;

/// The path's prefix, as in APISIX.
pub const ROOT: &str = "/apisix/admin";

/// A resource directory the Admin API writes: a model kind, or plugin metadata (which the
/// gateway does not serve yet, but APISIX's tools write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Kind(Kind),
    PluginMetadata,
}

impl Dir {
    /// The directory under the etcd prefix (`routes`, `plugin_metadata`).
    pub fn name(self) -> &'static str {
        match self {
            Dir::Kind(k) => k.dir(),
            Dir::PluginMetadata => "plugin_metadata",
        }
    }
}

/// One Admin API target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every resource of a directory (`/routes`); for credentials, those of one consumer.
    Collection { dir: Dir, consumer: Option<String> },
    /// One resource; for credentials `consumer` names its consumer.
    Item {
        dir: Dir,
        consumer: Option<String>,
        id: String,
        /// `/routes/1/methods`: the part of the resource PATCH replaces.
        sub_path: Option<String>,
    },
    /// `/plugins/list`: the plugins this gateway runs.
    PluginList,
    /// `/plugins/<name>`: one plugin's description.
    Plugin(String),
}

impl Target {
    /// Reads `path` (without the query); `None` when the Admin API has nothing there.
    pub fn parse(path: &str) -> Option<Target> {
        let rest = path.strip_prefix(ROOT)?.strip_prefix('/')?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut parts = rest.split('/');
        let dir = parts.next()?;
        let tail: Vec<&str> = parts.collect();
        if tail.iter().any(|p| p.is_empty()) {
            return None;
        }
        if dir == "plugins" {
            return match tail[..] {
                ["list"] => Some(Target::PluginList),
                [name] => Some(Target::Plugin(name.to_string())),
                _ => None,
            };
        }
        if dir == "plugin_metadata" {
            let dir = Dir::PluginMetadata;
            return match tail[..] {
                [] => Some(Target::Collection {
                    dir,
                    consumer: None,
                }),
                [id] => Some(item(dir, None, id, None)),
                _ => None,
            };
        }
        let kind = Kind::from_dir(dir)?;
        match (kind, &tail[..]) {
            (_, []) => Some(Target::Collection {
                dir: Dir::Kind(kind),
                consumer: None,
            }),
            (Kind::Consumer, [user, "credentials"]) => Some(Target::Collection {
                dir: Dir::Kind(Kind::Credential),
                consumer: Some(user.to_string()),
            }),
            (Kind::Consumer, [user, "credentials", id]) => {
                Some(item(Dir::Kind(Kind::Credential), Some(user), id, None))
            }
            (Kind::Consumer, [user, "credentials", id, sub @ ..]) => Some(item(
                Dir::Kind(Kind::Credential),
                Some(user),
                id,
                Some(sub.join("/")),
            )),
            (_, [id]) => Some(item(Dir::Kind(kind), None, id, None)),
            (_, [id, sub @ ..]) => Some(item(Dir::Kind(kind), None, id, Some(sub.join("/")))),
        }
    }

    /// The etcd key (or directory, for a collection, with its trailing `/`) under `prefix`.
    pub fn key(&self, prefix: &str) -> Option<String> {
        match self {
            Target::Collection { dir, consumer } => Some(match consumer {
                Some(u) => format!("{prefix}/consumers/{u}/credentials/"),
                None => format!("{prefix}/{}/", dir.name()),
            }),
            Target::Item {
                dir, consumer, id, ..
            } => Some(item_key(prefix, *dir, consumer.as_deref(), id)),
            _ => None,
        }
    }
}

fn item(dir: Dir, consumer: Option<&str>, id: &str, sub_path: Option<String>) -> Target {
    Target::Item {
        dir,
        consumer: consumer.map(str::to_string),
        id: id.to_string(),
        sub_path,
    }
}

/// The etcd key of one resource.
pub fn item_key(prefix: &str, dir: Dir, consumer: Option<&str>, id: &str) -> String {
    match consumer {
        Some(u) => format!("{prefix}/consumers/{u}/credentials/{id}"),
        None => format!("{prefix}/{}/{id}", dir.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            Target::parse("/apisix/admin/routes"),
            Some(Target::Collection {
                dir: Dir::Kind(Kind::Route),
                consumer: None
            })
        );
        assert_eq!(
            Target::parse("/apisix/admin/routes/1/methods"),
            Some(item(
                Dir::Kind(Kind::Route),
                None,
                "1",
                Some("methods".into())
            ))
        );
        assert_eq!(
            Target::parse("/apisix/admin/consumers/jack/credentials/c1")
                .unwrap()
                .key("/apisix")
                .unwrap(),
            "/apisix/consumers/jack/credentials/c1"
        );
        assert_eq!(
            Target::parse("/apisix/admin/plugins/list"),
            Some(Target::PluginList)
        );
        assert_eq!(Target::parse("/apisix/admin/nothing/1"), None);
        assert_eq!(Target::parse("/apisix/admin/routes//1"), None);
        assert_eq!(Target::parse("/apisix/adminx/routes"), None);
        assert_eq!(
            Target::parse("/apisix/admin/upstreams/").unwrap().key("/p"),
            Some("/p/upstreams/".into())
        );
    }
}
