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
    /// `/plugins/<name>` (and `/schema/plugins/<name>`): one plugin's description.
    Plugin(String),
    /// `/plugins/reload`.
    PluginReload,
}

/// A path the Admin API has nothing at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFound {
    /// Not under `/apisix/admin/`, or not a path APISIX has.
    Path,
    /// `/apisix/admin/<kind>` with a kind APISIX does not have (or Portico does not serve).
    Kind(String),
    /// `stream_routes`: Portico proxies HTTP only, like APISIX without stream mode.
    StreamRoutes,
}

impl Target {
    /// Reads `path` (without the query).
    pub fn parse(path: &str) -> Result<Target, NotFound> {
        let rest = path
            .strip_prefix(ROOT)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or(NotFound::Path)?;
        // Trailing empty segments are dropped, as APISIX splits the path.
        let rest = rest.trim_end_matches('/');
        let mut parts = rest.split('/');
        let dir = parts
            .next()
            .filter(|d| !d.is_empty())
            .ok_or(NotFound::Path)?;
        let tail: Vec<&str> = parts.collect();
        if tail.iter().any(|p| p.is_empty()) {
            return Err(NotFound::Path);
        }
        match (dir, &tail[..]) {
            ("plugins", ["list"]) => return Ok(Target::PluginList),
            ("plugins", ["reload"]) => return Ok(Target::PluginReload),
            ("plugins", [name]) | ("schema", ["plugins", name]) => {
                return Ok(Target::Plugin(name.to_string()))
            }
            ("plugins", _) => return Ok(Target::Plugin(String::new())),
            ("stream_routes", _) => return Err(NotFound::StreamRoutes),
            ("plugin_metadata", []) => {
                return Ok(Target::Collection {
                    dir: Dir::PluginMetadata,
                    consumer: None,
                })
            }
            ("plugin_metadata", [id]) => return Ok(item(Dir::PluginMetadata, None, id, None)),
            ("plugin_metadata", _) => return Err(NotFound::Path),
            _ => {}
        }
        let kind = Kind::from_dir(dir).ok_or_else(|| NotFound::Kind(dir.to_string()))?;
        Ok(match (kind, &tail[..]) {
            (_, []) => Target::Collection {
                dir: Dir::Kind(kind),
                consumer: None,
            },
            (Kind::Consumer, [user, "credentials"]) => Target::Collection {
                dir: Dir::Kind(Kind::Credential),
                consumer: Some(user.to_string()),
            },
            (Kind::Consumer, [user, "credentials", id, sub @ ..]) => item(
                Dir::Kind(Kind::Credential),
                Some(user),
                id,
                (!sub.is_empty()).then(|| sub.join("/")),
            ),
            (_, [id, sub @ ..]) => item(
                Dir::Kind(kind),
                None,
                id,
                (!sub.is_empty()).then(|| sub.join("/")),
            ),
        })
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
            Target::parse("/apisix/admin/routes/"),
            Ok(Target::Collection {
                dir: Dir::Kind(Kind::Route),
                consumer: None
            })
        );
        assert_eq!(
            Target::parse("/apisix/admin/routes/1/methods"),
            Ok(item(
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
            Ok(Target::PluginList)
        );
        assert_eq!(
            Target::parse("/apisix/admin/routs/1"),
            Err(NotFound::Kind("routs".into()))
        );
        assert_eq!(
            Target::parse("/apisix/admin/routes//1"),
            Err(NotFound::Path)
        );
        assert_eq!(Target::parse("/apisix/adminx/routes"), Err(NotFound::Path));
        assert_eq!(
            Target::parse("/apisix/admin/schema/plugins/key-auth"),
            Ok(Target::Plugin("key-auth".into()))
        );
        assert_eq!(
            Target::parse("/apisix/admin/upstreams/").unwrap().key("/p"),
            Some("/p/upstreams/".into())
        );
    }
}
